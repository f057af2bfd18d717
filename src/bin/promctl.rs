//! `promctl`: the operator's command for promd.
//!
//! It talks only D-Bus (the system bus, name `org.promd1`; `PROMD_BUS_ADDRESS` overrides the
//! address for tests) and holds no state of its own: every answer comes from the daemon.
//! Exit status: 0 success, 1 refused or failed (the message says why), 2 usage.
//!
//! The pure parts (argument parsing, the status table, the JSON document, the watch line and
//! the error messages) are plain functions so that the unit tests at the bottom cover them
//! without a bus.

use std::collections::HashMap;
use std::ffi::OsString;
use std::io::{self, Write};
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use serde::Serialize;
use zbus::message::Type as MessageType;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::{
    Connection, DBusError, DeserializeDict, MatchRule, MessageStream, OwnedObjectPath, Type,
};

const SERVICE: &str = "org.promd1";
const MANAGER_PATH: &str = "/org/promd1";
const MANAGER_IFACE: &str = "org.promd1.Manager";
const GROUP_IFACE: &str = "org.promd1.Group";
/// Every group object lives under this path; the last element is the daemon's encoding of the
/// group name, which is why the paths come from `ListGroups` rather than being built here.
const GROUP_PATH_NS: &str = "/org/promd1/group";

/// Reads answer at once; anything slower means the daemon is stuck.
const READ_TIMEOUT: Duration = Duration::from_secs(25);
/// A switchover stops units on one host and starts them on another; the daemon bounds it
/// itself (and answers `org.promd1.Error.Timeout`), so this only catches a daemon that never
/// answers.
const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);
/// A name lookup inside `watch` must not hold up the lines behind it for long.
const WATCH_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Room for a burst of role changes while `watch` waits for a name lookup: a full queue stops
/// zbus reading the socket, the lookup's reply included.
const WATCH_QUEUE: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

// ---------------------------------------------------------------------------------------------
// D-Bus proxies, written by hand after dbus/org.promd1.Manager.xml and dbus/org.promd1.Group.xml.
// ---------------------------------------------------------------------------------------------

/// `org.promd1.Manager` on `/org/promd1`.
#[zbus::proxy(
    interface = "org.promd1.Manager",
    default_service = "org.promd1",
    default_path = "/org/promd1"
)]
trait Manager {
    #[zbus(property)]
    fn node(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn store_connected(&self) -> zbus::Result<bool>;

    /// Every group: name, this host's role, leader, term, object path.
    fn list_groups(&self) -> zbus::Result<Vec<(String, String, String, u64, OwnedObjectPath)>>;

    fn promote(&self, group: &str) -> zbus::Result<()>;

    fn demote(&self, group: &str) -> zbus::Result<()>;

    fn set_maintenance(&self, group: &str, on: bool) -> zbus::Result<()>;

    fn reset_failed(&self, group: &str) -> zbus::Result<()>;
}

/// `org.promd1.Group` on `/org/promd1/group/NAME` (the path is per group, so no default).
/// promctl reads it through `Snapshot` (one `GetAll`) and decodes `watch`'s signals with the
/// `RoleChanged` type generated here; the rest keeps the proxy a full copy of the contract.
#[zbus::proxy(interface = "org.promd1.Group", default_service = "org.promd1")]
trait Group {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn role(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn leader(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn term(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn priority(&self) -> zbus::Result<i32>;

    #[zbus(property)]
    fn healthy(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn maintenance(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn failures(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn since(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn members(&self) -> zbus::Result<Vec<(String, String, i32, bool)>>;

    fn promote(&self) -> zbus::Result<()>;

    fn demote(&self) -> zbus::Result<()>;

    fn set_maintenance(&self, on: bool) -> zbus::Result<()>;

    fn reset_failed(&self) -> zbus::Result<()>;

    // Renamed in Rust only: the `Role` property already generates `receive_role_changed`.
    #[zbus(signal, name = "RoleChanged")]
    fn role_change(&self, old: &str, new: &str, term: u64, reason: &str) -> zbus::Result<()>;
}

/// `org.freedesktop.DBus.Properties.GetAll`, typed: one call gives a consistent snapshot of an
/// object, where one `Get` per property could straddle a role change.
#[zbus::proxy(
    interface = "org.freedesktop.DBus.Properties",
    default_service = "org.promd1"
)]
trait Snapshot {
    #[zbus(name = "GetAll")]
    fn manager(&self, interface: &str) -> zbus::Result<ManagerProps>;

    #[zbus(name = "GetAll")]
    fn group(&self, interface: &str) -> zbus::Result<GroupProps>;
}

/// The properties of `org.promd1.Manager`; a missing one is an error, not a default.
#[derive(Debug, Clone, PartialEq, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
struct ManagerProps {
    node: String,
    version: String,
    store_connected: bool,
}

/// The properties of `org.promd1.Group`; a missing one is an error, not a default.
#[derive(Debug, Clone, PartialEq, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
struct GroupProps {
    name: String,
    role: String,
    leader: String,
    term: u64,
    priority: i32,
    healthy: bool,
    maintenance: bool,
    failures: u32,
    since: u64,
    members: Vec<(String, String, i32, bool)>,
}

// ---------------------------------------------------------------------------------------------
// Arguments.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    Status,
    Promote,
    Demote,
    Maintenance,
    Reset,
    Watch,
    ImportProm,
}

impl Topic {
    fn from_name(name: &str) -> Option<Topic> {
        Some(match name {
            "status" => Topic::Status,
            "promote" => Topic::Promote,
            "demote" => Topic::Demote,
            "maintenance" => Topic::Maintenance,
            "reset" => Topic::Reset,
            "watch" => Topic::Watch,
            "import-prom" => Topic::ImportProm,
            _ => return None,
        })
    }

    fn help(self) -> &'static str {
        match self {
            Topic::Status => HELP_STATUS,
            Topic::Promote => HELP_PROMOTE,
            Topic::Demote => HELP_DEMOTE,
            Topic::Maintenance => HELP_MAINTENANCE,
            Topic::Reset => HELP_RESET,
            Topic::Watch => HELP_WATCH,
            Topic::ImportProm => HELP_IMPORT_PROM,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Command {
    Status {
        group: Option<String>,
        json: bool,
    },
    Promote {
        group: String,
    },
    Demote {
        group: String,
    },
    Maintenance {
        group: String,
        on: bool,
    },
    Reset {
        group: String,
    },
    Watch,
    ImportProm {
        config: String,
        replica: String,
        out: Option<String>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Invocation {
    Run(Command),
    /// `--help`, `help [COMMAND]` or `COMMAND --help`: print to stdout, exit 0.
    Help(Option<Topic>),
    Version,
}

/// A usage error: the message, and which command's usage to print after it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct UsageError {
    topic: Option<Topic>,
    message: String,
}

impl UsageError {
    fn new(topic: Option<Topic>, message: impl Into<String>) -> Self {
        UsageError {
            topic,
            message: message.into(),
        }
    }
}

fn is_help(arg: &str) -> bool {
    arg == "-h" || arg == "--help"
}

/// Parses the arguments after the program name.
fn parse_args(args: &[String]) -> Result<Invocation, UsageError> {
    let Some((first, rest)) = args.split_first() else {
        return Err(UsageError::new(None, "no command given"));
    };
    match first.as_str() {
        "-h" | "--help" => return Ok(Invocation::Help(None)),
        "help" => {
            return match rest {
                [] => Ok(Invocation::Help(None)),
                [name] => Topic::from_name(name)
                    .map(|t| Invocation::Help(Some(t)))
                    .ok_or_else(|| UsageError::new(None, format!("unknown command '{name}'"))),
                [_, extra, ..] => Err(UsageError::new(
                    None,
                    format!("unexpected argument '{extra}'"),
                )),
            };
        }
        "-V" | "--version" => {
            return match rest.first() {
                None => Ok(Invocation::Version),
                Some(extra) => Err(UsageError::new(
                    None,
                    format!("unexpected argument '{extra}'"),
                )),
            };
        }
        _ => {}
    }
    if first.starts_with('-') {
        return Err(UsageError::new(None, format!("unknown option '{first}'")));
    }
    let Some(topic) = Topic::from_name(first) else {
        return Err(UsageError::new(None, format!("unknown command '{first}'")));
    };

    // `--help` anywhere before `--` wins, so that a half-typed command still gets its help.
    let before_dashes = rest.iter().take_while(|a| a.as_str() != "--");
    if before_dashes.clone().any(|a| is_help(a)) {
        return Ok(Invocation::Help(Some(topic)));
    }

    if topic == Topic::ImportProm {
        return parse_import_prom(rest).map(Invocation::Run);
    }

    let mut json = false;
    let mut positional: Vec<&str> = Vec::new();
    let mut options_done = false;
    for arg in rest {
        if options_done {
            positional.push(arg);
        } else if arg == "--" {
            options_done = true;
        } else if topic == Topic::Status && arg == "--json" {
            json = true;
        } else if arg.starts_with('-') && arg.len() > 1 {
            return Err(UsageError::new(
                Some(topic),
                format!("unknown option '{arg}'"),
            ));
        } else {
            positional.push(arg);
        }
    }

    let extra = |arg: &str| {
        Err(UsageError::new(
            Some(topic),
            format!("unexpected argument '{arg}'"),
        ))
    };
    let command = match topic {
        Topic::Status => match positional.as_slice() {
            [] => Command::Status { group: None, json },
            [group] => Command::Status {
                group: Some((*group).to_owned()),
                json,
            },
            [_, more, ..] => return extra(more),
        },
        Topic::Promote | Topic::Demote | Topic::Reset => match positional.as_slice() {
            [] => return Err(UsageError::new(Some(topic), "missing GROUP")),
            [group] => {
                let group = (*group).to_owned();
                match topic {
                    Topic::Promote => Command::Promote { group },
                    Topic::Demote => Command::Demote { group },
                    _ => Command::Reset { group },
                }
            }
            [_, more, ..] => return extra(more),
        },
        Topic::Maintenance => match positional.as_slice() {
            [] => return Err(UsageError::new(Some(topic), "missing GROUP and on|off")),
            [_] => return Err(UsageError::new(Some(topic), "missing on|off")),
            [group, switch] => {
                let on = match *switch {
                    "on" => true,
                    "off" => false,
                    other => {
                        return Err(UsageError::new(
                            Some(topic),
                            format!("expected 'on' or 'off', not '{other}'"),
                        ));
                    }
                };
                Command::Maintenance {
                    group: (*group).to_owned(),
                    on,
                }
            }
            [_, _, more, ..] => return extra(more),
        },
        Topic::Watch => match positional.as_slice() {
            [] => Command::Watch,
            [more, ..] => return extra(more),
        },
        Topic::ImportProm => return parse_import_prom(rest).map(Invocation::Run),
    };
    Ok(Invocation::Run(command))
}

/// `import-prom CONFIG.json --replica ID [--out DIR]`, options in any order.
fn parse_import_prom(args: &[String]) -> Result<Command, UsageError> {
    let topic = Some(Topic::ImportProm);
    let (mut config, mut replica, mut out) = (None, None, None);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let slot = match arg.as_str() {
            "--replica" => &mut replica,
            "--out" => &mut out,
            a if a.starts_with('-') && a.len() > 1 => {
                return Err(UsageError::new(topic, format!("unknown option '{a}'")));
            }
            _ => {
                if config.is_some() {
                    return Err(UsageError::new(
                        topic,
                        format!("unexpected argument '{arg}'"),
                    ));
                }
                config = Some(arg.clone());
                continue;
            }
        };
        match it.next() {
            Some(v) => *slot = Some(v.clone()),
            None => return Err(UsageError::new(topic, format!("{arg} needs a value"))),
        }
    }
    let config = config.ok_or_else(|| UsageError::new(topic, "missing CONFIG.json"))?;
    let replica = replica.ok_or_else(|| UsageError::new(topic, "missing --replica ID"))?;
    Ok(Command::ImportProm {
        config,
        replica,
        out,
    })
}

const USAGE: &str = "\
Usage: promctl COMMAND [ARGS]

Control promd, which keeps exactly one host active per group.

Commands:
  status [GROUP] [--json]    show roles, leader, term and members of each group
  promote GROUP              make this host the active one in GROUP (a switchover)
  demote GROUP               hand GROUP over to the best other host
  maintenance GROUP on|off   pause (on) or resume (off) failover of GROUP, cluster-wide
  reset GROUP                clear this host's failed state in GROUP
  watch                      print role changes as they happen, until interrupted
  import-prom CONFIG.json --replica ID [--out DIR]
                             convert a PROM/HAL config.json into promd.toml and units

Options:
  -h, --help                 show this help; 'promctl COMMAND --help' for a command
  -V, --version              show the version

Exit status: 0 success, 1 refused or failed (the message says why), 2 bad usage.
promctl talks to promd on the system D-Bus (name org.promd1).
";

const HELP_STATUS: &str = "\
Usage: promctl status [GROUP] [--json]

Show every group on this host (or just GROUP): this host's role, the leader, the term
(fencing token), maintenance, and each member's role, priority and health; '*' marks
this host.

  --json    print one JSON document instead of the table

Exit status: 0 success, 1 failed (promd not running, no such group), 2 bad usage.
";

const HELP_PROMOTE: &str = "\
Usage: promctl promote GROUP

Make this host the active one in GROUP: the current active host stops its units first,
then this host starts them. Returns once this host is active (or promd says why not).

Exit status: 0 this host is active, 1 refused or failed, 2 bad usage.
";

const HELP_DEMOTE: &str = "\
Usage: promctl demote GROUP

Stop GROUP's units on this host and hand the role to the best eligible other host.
Returns once this host is passive (or promd says why not, e.g. no other host can take over).

Exit status: 0 this host is passive, 1 refused or failed, 2 bad usage.
";

const HELP_MAINTENANCE: &str = "\
Usage: promctl maintenance GROUP on|off

Cluster-wide: while on, no host starts or stops GROUP's units and no failover happens,
so the units can be worked on by hand. 'off' resumes normal operation.

Exit status: 0 done, 1 refused or failed, 2 bad usage.
";

const HELP_RESET: &str = "\
Usage: promctl reset GROUP

Clear this host's failed state in GROUP (the failure count and the cool-down after a
failover), so that it may become active again.

Exit status: 0 done, 1 refused or failed, 2 bad usage.
";

const HELP_WATCH: &str = "\
Usage: promctl watch

Print one line per role change of any group on this host, as it happens:
  TIME GROUP OLD -> NEW term TERM: REASON
until interrupted (SIGINT or SIGTERM). If promd is not running, wait for it.

Exit status: 0 interrupted, 1 the bus went away, 2 bad usage.
";

const HELP_IMPORT_PROM: &str = "\
Usage: promctl import-prom CONFIG.json --replica ID [--out DIR]

Convert a PROM/HAL config.json for the host that runs replica ID: writes promd.toml,
APP-active.target, APP-passive.target, APP-ensure-active.service and
APP-ensure-passive.service into DIR (default: the current directory; existing files are
never overwritten), then lists every key not carried over, with the reason, and what to
check before starting promd (see docs/migrating-from-prom.md). Does not need promd.

Exit status: 0 written, 1 unreadable or invalid input, or a file exists, 2 bad usage.
";

/// Writes the migration; runs without D-Bus.
fn import_prom(config: &str, replica: &str, out: Option<&str>) -> Result<(), Failure> {
    let text = std::fs::read_to_string(config)
        .map_err(|e| Failure(format!("cannot read {config}: {e}")))?;
    let m = promd::migrate::import_prom(&text, replica)
        .map_err(|e| Failure(format!("{config}: {e}")))?;
    let dir = std::path::Path::new(out.unwrap_or("."));
    let written = promd::migrate::write_files(dir, &m).map_err(|e| Failure(e.to_string()))?;
    let mut lines: Vec<String> = written
        .iter()
        .map(|p| format!("wrote {}", p.display()))
        .collect();
    lines.extend(m.notes.iter().cloned());
    lines.push(format!(
        "node {} of group {}: promd.toml goes to /etc/promd/, the units to /etc/systemd/system/",
        m.node, m.group
    ));
    print_line(&lines.join("\n"))
}

// ---------------------------------------------------------------------------------------------
// Status: the data, the table and the JSON document.
// ---------------------------------------------------------------------------------------------

/// The `--json` document; field order and names are the contract.
#[derive(Debug, Clone, PartialEq, Serialize)]
struct StatusReport {
    node: String,
    version: String,
    store_connected: bool,
    groups: Vec<GroupStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct GroupStatus {
    name: String,
    role: String,
    leader: String,
    term: u64,
    priority: i32,
    healthy: bool,
    maintenance: bool,
    failures: u32,
    since_usec: u64,
    members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct MemberStatus {
    node: String,
    role: String,
    priority: i32,
    healthy: bool,
}

impl From<GroupProps> for GroupStatus {
    fn from(p: GroupProps) -> Self {
        GroupStatus {
            name: p.name,
            role: p.role,
            leader: p.leader,
            term: p.term,
            priority: p.priority,
            healthy: p.healthy,
            maintenance: p.maintenance,
            failures: p.failures,
            since_usec: p.since,
            members: p
                .members
                .into_iter()
                .map(|(node, role, priority, healthy)| MemberStatus {
                    node,
                    role,
                    priority,
                    healthy,
                })
                .collect(),
        }
    }
}

fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The human-readable status: one header line per group, then its members aligned.
fn render_table(report: &StatusReport) -> String {
    let mut out = format!(
        "node {}, promd {}, store {}\n",
        report.node,
        report.version,
        if report.store_connected {
            "connected"
        } else {
            "NOT connected"
        }
    );
    if report.groups.is_empty() {
        out.push_str("\nno groups are configured on this host\n");
        return out;
    }
    for g in &report.groups {
        let leader = if g.leader.is_empty() {
            "none"
        } else {
            &g.leader
        };
        out.push_str(&format!(
            "\n{}: this host {}, leader {}, term {}, maintenance {}\n",
            g.name,
            g.role,
            leader,
            g.term,
            on_off(g.maintenance)
        ));
        if g.members.is_empty() {
            out.push_str("    (no members known)\n");
            continue;
        }
        let node_w = column_width("NODE", g.members.iter().map(|m| m.node.len()));
        let role_w = column_width("ROLE", g.members.iter().map(|m| m.role.len()));
        let prio_w = column_width(
            "PRIORITY",
            g.members.iter().map(|m| m.priority.to_string().len()),
        );
        out.push_str(&format!(
            "    {:<node_w$}  {:<role_w$}  {:>prio_w$}  HEALTHY\n",
            "NODE", "ROLE", "PRIORITY"
        ));
        for m in &g.members {
            let mark = if m.node == report.node { '*' } else { ' ' };
            out.push_str(&format!(
                "  {mark} {:<node_w$}  {:<role_w$}  {:>prio_w$}  {}\n",
                m.node,
                m.role,
                m.priority,
                yes_no(m.healthy)
            ));
        }
    }
    out
}

fn column_width(header: &str, values: impl Iterator<Item = usize>) -> usize {
    values.fold(header.len(), usize::max)
}

fn render_json(report: &StatusReport) -> Result<String, Failure> {
    serde_json::to_string_pretty(report)
        .map(|s| s + "\n")
        .map_err(|e| Failure(format!("cannot encode the status as JSON: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Errors in plain words.
// ---------------------------------------------------------------------------------------------

/// A refusal or failure: printed as `promctl: MESSAGE`, exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure(String);

const NOT_RUNNING: &str = "promd is not running (is promd.service started?)";
const DENIED: &str = "permission denied: run as root or as a member of the promd group";

/// The D-Bus error name and message of `err`, if it is an error reply.
fn error_reply(err: &zbus::Error) -> Option<(String, Option<String>)> {
    match err {
        zbus::Error::MethodError(name, message, _) => {
            Some((name.as_str().to_owned(), message.clone()))
        }
        // zbus 6 turns error replies with a standard name (ServiceUnknown, AccessDenied, ...)
        // into `fdo::Error`, not `MethodError`.
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ZBus(inner) => error_reply(inner),
            other => Some((
                other.name().as_str().to_owned(),
                other.description().map(str::to_owned),
            )),
        },
        _ => None,
    }
}

/// `what` followed by the daemon's own words, if it gave any.
fn with_detail(what: String, detail: Option<&str>) -> String {
    match detail.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => format!("{what}: {d}"),
        None => what,
    }
}

/// The plain-words message for an error reply named `name`, about `group` if the call had one.
fn explain_reply(name: &str, detail: Option<&str>, group: Option<&str>) -> String {
    let g = group.unwrap_or("the group");
    match name {
        "org.promd1.Error.NotEligible" => {
            with_detail(format!("this host cannot become active in {g}"), detail)
        }
        "org.promd1.Error.NoStandby" => {
            with_detail(format!("no other host can take over {g}"), detail)
        }
        "org.promd1.Error.Timeout" => with_detail(
            format!("the switchover of {g} did not finish in time"),
            detail,
        ),
        "org.promd1.Error.UnknownGroup" => match group {
            Some(g) => format!("no group {g} on this host"),
            None => with_detail("no such group on this host".to_owned(), detail),
        },
        "org.promd1.Error.AccessDenied" | "org.freedesktop.DBus.Error.AccessDenied" => {
            DENIED.to_owned()
        }
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => NOT_RUNNING.to_owned(),
        "org.freedesktop.DBus.Error.NoReply"
        | "org.freedesktop.DBus.Error.Timeout"
        | "org.freedesktop.DBus.Error.TimedOut" => {
            "promd did not answer in time; it may still be working on it (see promctl status)"
                .to_owned()
        }
        "org.freedesktop.DBus.Error.UnknownObject"
        | "org.freedesktop.DBus.Error.UnknownInterface"
        | "org.freedesktop.DBus.Error.UnknownMethod"
        | "org.freedesktop.DBus.Error.UnknownProperty"
        | "org.freedesktop.DBus.Error.InvalidArgs" => with_detail(
            "promd did not understand the request (are promd and promctl the same version?)"
                .to_owned(),
            detail,
        ),
        "org.promd1.Error.Failed" => match group {
            Some(g) => with_detail(format!("{g}: promd could not do it"), detail),
            None => with_detail("promd could not do it".to_owned(), detail),
        },
        other => with_detail(format!("promd refused ({other})"), detail),
    }
}

/// The plain-words message for any error of a call to promd about `group`; `waited` is the
/// method-call timeout that was in force.
fn explain(err: &zbus::Error, group: Option<&str>, waited: Duration) -> String {
    if let Some((name, detail)) = error_reply(err) {
        return explain_reply(&name, detail.as_deref(), group);
    }
    match err {
        zbus::Error::InputOutput(io) if io.kind() == io::ErrorKind::TimedOut => format!(
            "promd did not answer within {} s; it may still be working on it (see promctl status)",
            waited.as_secs()
        ),
        zbus::Error::InputOutput(io) => format!("lost the connection to the D-Bus: {io}"),
        other => format!("unexpected answer from promd: {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Talking to promd.
// ---------------------------------------------------------------------------------------------

/// Connects to the bus with `method_timeout` on every method call (zbus 6 has no timeout
/// unless one is set, and none per proxy).
async fn connect(method_timeout: Duration) -> Result<Connection, Failure> {
    let (builder, which) = match std::env::var_os("PROMD_BUS_ADDRESS") {
        Some(addr) if !addr.is_empty() => {
            let addr = addr
                .into_string()
                .map_err(|_| Failure("PROMD_BUS_ADDRESS is not valid UTF-8".to_owned()))?;
            let which = format!("the D-Bus at {addr} (PROMD_BUS_ADDRESS)");
            (zbus::connection::Builder::address(addr.as_str()), which)
        }
        _ => (
            zbus::connection::Builder::system(),
            "the system D-Bus".to_owned(),
        ),
    };
    let build = builder.method_timeout(method_timeout).build();
    // The handshake has no timeout of its own; a wedged bus must not hang promctl.
    match tokio::time::timeout(READ_TIMEOUT, build).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failure(format!("cannot connect to {which}: {e}"))),
        Err(_) => Err(Failure(format!(
            "cannot connect to {which}: no answer within {} s",
            READ_TIMEOUT.as_secs()
        ))),
    }
}

async fn manager(conn: &Connection) -> Result<ManagerProxy<'static>, Failure> {
    ManagerProxy::builder(conn)
        // One-shot reads; a cache would cost a GetAll and a match rule per proxy.
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure(explain(&e, None, READ_TIMEOUT)))
}

async fn snapshot(conn: &Connection, path: &str) -> Result<SnapshotProxy<'static>, Failure> {
    SnapshotProxy::builder(conn)
        .path(path.to_owned())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure(explain(&e, None, READ_TIMEOUT)))
}

/// The object path of `group`, from `ListGroups` (the daemon encodes names into paths).
async fn group_path(manager: &ManagerProxy<'_>, group: &str) -> Result<String, Failure> {
    let groups = manager
        .list_groups()
        .await
        .map_err(|e| Failure(explain(&e, Some(group), READ_TIMEOUT)))?;
    groups
        .into_iter()
        .find(|g| g.0 == group)
        .map(|g| g.4.as_str().to_owned())
        .ok_or_else(|| Failure(format!("no group {group} on this host")))
}

async fn fetch_status(conn: &Connection, only: Option<&str>) -> Result<StatusReport, Failure> {
    let manager = manager(conn).await?;
    let props = snapshot(conn, MANAGER_PATH)
        .await?
        .manager(MANAGER_IFACE)
        .await
        .map_err(|e| Failure(explain(&e, only, READ_TIMEOUT)))?;
    let listed = manager
        .list_groups()
        .await
        .map_err(|e| Failure(explain(&e, only, READ_TIMEOUT)))?;
    let paths: Vec<(String, String)> = match only {
        None => listed
            .into_iter()
            .map(|g| (g.0, g.4.as_str().to_owned()))
            .collect(),
        Some(name) => {
            let found = listed.into_iter().find(|g| g.0 == name);
            match found {
                Some(g) => vec![(g.0, g.4.as_str().to_owned())],
                None => return Err(Failure(format!("no group {name} on this host"))),
            }
        }
    };
    let mut groups = Vec::with_capacity(paths.len());
    for (name, path) in paths {
        let props = snapshot(conn, &path)
            .await?
            .group(GROUP_IFACE)
            .await
            .map_err(|e| Failure(explain(&e, Some(&name), READ_TIMEOUT)))?;
        groups.push(GroupStatus::from(props));
    }
    Ok(StatusReport {
        node: props.node,
        version: props.version,
        store_connected: props.store_connected,
        groups,
    })
}

/// What a group looks like after an operator's request, for the one-line answer.
#[derive(Debug, Clone, PartialEq, Eq)]
struct After {
    role: String,
    leader: String,
    term: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Promote,
    Demote,
    Maintenance(bool),
    Reset,
}

/// The one line printed after a successful request.
fn outcome_line(action: Action, group: &str, after: Option<&After>) -> String {
    let Some(a) = after else {
        // The request succeeded but the state could not be read back; say what was done.
        return match action {
            Action::Promote => format!("{group}: promoted"),
            Action::Demote => format!("{group}: demoted"),
            Action::Maintenance(on) => format!("{group}: maintenance is now {}", on_off(on)),
            Action::Reset => format!("{group}: failed state cleared"),
        };
    };
    match action {
        Action::Promote if a.role == "active" => {
            format!("{group}: this host is now active (term {})", a.term)
        }
        Action::Promote => format!(
            "{group}: promote done; this host is {} (term {})",
            a.role, a.term
        ),
        Action::Demote => {
            let leader = if a.leader.is_empty() {
                "no host is active".to_owned()
            } else {
                format!("{} is active", a.leader)
            };
            format!(
                "{group}: this host is now {}; {leader} (term {})",
                a.role, a.term
            )
        }
        Action::Maintenance(on) => format!(
            "{group}: maintenance is now {} (cluster-wide); this host is {} (term {})",
            on_off(on),
            a.role,
            a.term
        ),
        Action::Reset => format!(
            "{group}: failed state cleared; this host is {} (term {})",
            a.role, a.term
        ),
    }
}

async fn read_after(
    conn: &Connection,
    manager: &ManagerProxy<'_>,
    group: &str,
) -> Result<After, Failure> {
    let path = group_path(manager, group).await?;
    // One GetAll rather than a Get per property: role and term from the same moment.
    let props = snapshot(conn, &path)
        .await?
        .group(GROUP_IFACE)
        .await
        .map_err(|e| Failure(explain(&e, Some(group), READ_TIMEOUT)))?;
    Ok(After {
        role: props.role,
        leader: props.leader,
        term: props.term,
    })
}

async fn request(action: Action, group: &str) -> Result<(), Failure> {
    let waited = match action {
        Action::Promote | Action::Demote => SWITCH_TIMEOUT,
        Action::Maintenance(_) | Action::Reset => READ_TIMEOUT,
    };
    let conn = connect(waited).await?;
    let manager = manager(&conn).await?;
    let result = match action {
        Action::Promote => manager.promote(group).await,
        Action::Demote => manager.demote(group).await,
        Action::Maintenance(on) => manager.set_maintenance(group, on).await,
        Action::Reset => manager.reset_failed(group).await,
    };
    result.map_err(|e| Failure(explain(&e, Some(group), waited)))?;
    let after = match read_after(&conn, &manager, group).await {
        Ok(after) => Some(after),
        Err(Failure(why)) => {
            eprintln!("promctl: done, but cannot read the new state: {why}");
            None
        }
    };
    print_line(&outcome_line(action, group, after.as_ref()))
}

async fn status(group: Option<&str>, json: bool) -> Result<(), Failure> {
    let conn = connect(READ_TIMEOUT).await?;
    let report = fetch_status(&conn, group).await?;
    let text = if json {
        render_json(&report)?
    } else {
        render_table(&report)
    };
    write_stdout(&text)
}

fn print_line(line: &str) -> Result<(), Failure> {
    write_stdout(&format!("{line}\n"))
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A reader that went away (`| head`) is not promctl's failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure(format!("cannot write to stdout: {e}"))),
    }
}

// ---------------------------------------------------------------------------------------------
// Watch.
// ---------------------------------------------------------------------------------------------

/// One line of `watch`.
fn watch_line(
    at: SystemTime,
    group: &str,
    old: &str,
    new: &str,
    term: u64,
    reason: &str,
) -> String {
    let stamp = humantime::format_rfc3339_millis(at);
    let head = format!("{stamp} {group} {old} -> {new} term {term}");
    if reason.is_empty() {
        head
    } else {
        format!("{head}: {reason}")
    }
}

/// The group name in a group object path, for when `ListGroups` cannot say: the last element,
/// with systemd-style `_XX` hex escapes decoded (names may hold `-`, paths may not).
fn name_from_path(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or(path);
    let bytes = last.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'_', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| last.to_owned())
}

/// Group names by object path, filled from `ListGroups` when a path is first seen.
struct Names {
    by_path: HashMap<String, String>,
}

impl Names {
    async fn lookup(&mut self, conn: &Connection, path: &str) -> String {
        if let Some(name) = self.by_path.get(path) {
            return name.clone();
        }
        let listed = async {
            let proxy = ManagerProxy::builder(conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            proxy.list_groups().await
        };
        if let Ok(Ok(groups)) = tokio::time::timeout(WATCH_LOOKUP_TIMEOUT, listed).await {
            for g in groups {
                self.by_path.insert(g.4.as_str().to_owned(), g.0);
            }
        }
        match self.by_path.get(path) {
            Some(name) => name.clone(),
            None => name_from_path(path),
        }
    }
}

async fn watch() -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};

    let sig = |kind| signal(kind).map_err(|e| Failure(format!("cannot handle signals: {e}")));
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sigterm = sig(SignalKind::terminate())?;

    let conn = connect(READ_TIMEOUT).await?;
    let bus_err = |e: zbus::Error| Failure(format!("cannot subscribe on the D-Bus: {e}"));

    // One stream for every group's RoleChanged keeps the lines in the order the bus delivers
    // them. `sender` is the well-known name: the bus (dbus-daemon, dbus-broker) matches it
    // against whoever owns it at the time, so the rule survives promd restarts and nobody else
    // can inject role changes.
    let roles_rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SERVICE)
        .interface(GROUP_IFACE)
        .member("RoleChanged")
        .path_namespace(GROUP_PATH_NS)
        .build()
        .map_err(bus_err)?;
    let mut roles = MessageStream::for_match_rule(roles_rule, &conn, Some(WATCH_QUEUE))
        .await
        .map_err(bus_err)?;
    let owner_rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .add_arg(SERVICE)
        .build()
        .map_err(bus_err)?;
    let mut owners = MessageStream::for_match_rule(owner_rule, &conn, None)
        .await
        .map_err(bus_err)?;

    // Asked only after both subscriptions are in place, so that no start is missed in between.
    let dbus = zbus::fdo::DBusProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(bus_err)?;
    let service = BusName::try_from(SERVICE).map_err(bus_err)?;
    let running = dbus
        .name_has_owner(service)
        .await
        .map_err(|e| Failure(format!("cannot ask the D-Bus who runs {SERVICE}: {e}")))?;
    if !running {
        eprintln!("promctl: promd is not running; waiting for it to start");
    }
    // Subscribed: from here on no role change is missed (scripts and tests wait for this).
    eprintln!("promctl: watching role changes; Ctrl-C ends");

    let mut names = Names {
        by_path: HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            msg = roles.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        eprintln!("promctl: skipped a bad message: {e}");
                        continue;
                    }
                    None => return Err(Failure("lost the connection to the D-Bus".to_owned())),
                };
                let at = SystemTime::now();
                let Some(signal) = RoleChanged::from_message(msg) else { continue };
                let Ok(args) = signal.args() else {
                    eprintln!("promctl: skipped a RoleChanged signal with unexpected arguments");
                    continue;
                };
                let path = signal
                    .message()
                    .header()
                    .path()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let group = names.lookup(&conn, &path).await;
                let line = watch_line(at, &group, args.old, args.new, args.term, args.reason);
                let mut out = io::stdout().lock();
                // Flushed line by line: tests and operators read through a pipe.
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    return match e.kind() {
                        io::ErrorKind::BrokenPipe => Ok(()),
                        _ => Err(Failure(format!("cannot write to stdout: {e}"))),
                    };
                }
            }
            msg = owners.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(_)) => continue,
                    None => return Err(Failure("lost the connection to the D-Bus".to_owned())),
                };
                let Some(changed) = zbus::fdo::NameOwnerChanged::from_message(msg) else { continue };
                let Ok(args) = changed.args() else { continue };
                if args.new_owner().is_none() {
                    // A restarted promd may have another configuration: forget the names.
                    names.by_path.clear();
                    eprintln!("promctl: promd stopped; waiting for it to start again");
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Main.
// ---------------------------------------------------------------------------------------------

fn args_as_strings(args: impl Iterator<Item = OsString>) -> Result<Vec<String>, UsageError> {
    args.map(|a| {
        a.into_string()
            .map_err(|bad| UsageError::new(None, format!("argument {bad:?} is not valid UTF-8")))
    })
    .collect()
}

fn main() -> ExitCode {
    let invocation = args_as_strings(std::env::args_os().skip(1)).and_then(|a| parse_args(&a));
    let command = match invocation {
        Ok(Invocation::Run(command)) => command,
        Ok(Invocation::Help(topic)) => {
            let text = topic.map_or(USAGE, Topic::help);
            return match write_stdout(text) {
                Ok(()) => ExitCode::SUCCESS,
                Err(Failure(why)) => fail(&why),
            };
        }
        Ok(Invocation::Version) => {
            return match print_line(&format!("promctl {}", env!("CARGO_PKG_VERSION"))) {
                Ok(()) => ExitCode::SUCCESS,
                Err(Failure(why)) => fail(&why),
            };
        }
        Err(usage) => {
            eprint!(
                "promctl: {}\n\n{}",
                usage.message,
                usage.topic.map_or(USAGE, Topic::help)
            );
            return ExitCode::from(2);
        }
    };

    if let Command::ImportProm {
        config,
        replica,
        out,
    } = &command
    {
        return match import_prom(config, replica, out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure(why)) => fail(&why),
        };
    }

    // One thread is plenty for a client, and keeps signal lines in arrival order trivially.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    let result = runtime.block_on(async {
        match command {
            Command::Status { group, json } => status(group.as_deref(), json).await,
            Command::Promote { group } => request(Action::Promote, &group).await,
            Command::Demote { group } => request(Action::Demote, &group).await,
            Command::Maintenance { group, on } => request(Action::Maintenance(on), &group).await,
            Command::Reset { group } => request(Action::Reset, &group).await,
            Command::Watch => watch().await,
            Command::ImportProm { .. } => Ok(()), // handled above, without a bus
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(why)) => fail(&why),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("promctl: {why}");
    ExitCode::from(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_owned).collect()
    }

    fn parse(line: &str) -> Result<Invocation, UsageError> {
        parse_args(&args(line))
    }

    fn run(line: &str) -> Command {
        match parse(line) {
            Ok(Invocation::Run(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn import_prom_arguments() {
        let cmd = |config: &str, replica: &str, out: Option<&str>| Command::ImportProm {
            config: config.into(),
            replica: replica.into(),
            out: out.map(String::from),
        };
        assert_eq!(
            run("import-prom c.json --replica 1"),
            cmd("c.json", "1", None)
        );
        assert_eq!(
            run("import-prom --out /tmp/x --replica 0 c.json"),
            cmd("c.json", "0", Some("/tmp/x"))
        );
        assert_eq!(
            usage_err("import-prom c.json").message,
            "missing --replica ID"
        );
        assert_eq!(
            usage_err("import-prom --replica 0").message,
            "missing CONFIG.json"
        );
        assert_eq!(
            usage_err("import-prom c.json --replica").message,
            "--replica needs a value"
        );
        assert_eq!(
            usage_err("import-prom c.json d.json --replica 0").message,
            "unexpected argument 'd.json'"
        );
        assert_eq!(
            usage_err("import-prom c.json --replica 0 --force").topic,
            Some(Topic::ImportProm)
        );
        assert_eq!(
            parse("import-prom --help"),
            Ok(Invocation::Help(Some(Topic::ImportProm)))
        );
    }

    fn usage_err(line: &str) -> UsageError {
        match parse(line) {
            Err(e) => e,
            other => panic!("{line}: expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn parses_status() {
        assert_eq!(
            run("status"),
            Command::Status {
                group: None,
                json: false
            }
        );
        assert_eq!(
            run("status web"),
            Command::Status {
                group: Some("web".into()),
                json: false
            }
        );
        assert_eq!(
            run("status --json"),
            Command::Status {
                group: None,
                json: true
            }
        );
        assert_eq!(
            run("status --json web"),
            Command::Status {
                group: Some("web".into()),
                json: true
            }
        );
        assert_eq!(
            run("status web --json"),
            Command::Status {
                group: Some("web".into()),
                json: true
            }
        );
        // `--` lets a group name start with a dash.
        assert_eq!(
            run("status -- -odd"),
            Command::Status {
                group: Some("-odd".into()),
                json: false
            }
        );
    }

    #[test]
    fn status_errors() {
        let e = usage_err("status web db");
        assert_eq!(e.topic, Some(Topic::Status));
        assert_eq!(e.message, "unexpected argument 'db'");
        let e = usage_err("status --yaml");
        assert_eq!(e.topic, Some(Topic::Status));
        assert_eq!(e.message, "unknown option '--yaml'");
        // `--` ends options, so `--json` after it is a group name.
        assert_eq!(
            run("status -- --json"),
            Command::Status {
                group: Some("--json".into()),
                json: false
            }
        );
    }

    #[test]
    fn parses_group_commands() {
        assert_eq!(
            run("promote web"),
            Command::Promote {
                group: "web".into()
            }
        );
        assert_eq!(
            run("demote web"),
            Command::Demote {
                group: "web".into()
            }
        );
        assert_eq!(
            run("reset web"),
            Command::Reset {
                group: "web".into()
            }
        );
        assert_eq!(
            run("maintenance web on"),
            Command::Maintenance {
                group: "web".into(),
                on: true
            }
        );
        assert_eq!(
            run("maintenance web off"),
            Command::Maintenance {
                group: "web".into(),
                on: false
            }
        );
        assert_eq!(run("watch"), Command::Watch);
    }

    #[test]
    fn group_command_errors() {
        for (line, topic, message) in [
            ("promote", Topic::Promote, "missing GROUP"),
            ("demote", Topic::Demote, "missing GROUP"),
            ("reset", Topic::Reset, "missing GROUP"),
            ("promote web db", Topic::Promote, "unexpected argument 'db'"),
            ("demote web db", Topic::Demote, "unexpected argument 'db'"),
            ("reset web db", Topic::Reset, "unexpected argument 'db'"),
            (
                "promote --json web",
                Topic::Promote,
                "unknown option '--json'",
            ),
            ("demote -f web", Topic::Demote, "unknown option '-f'"),
            (
                "maintenance",
                Topic::Maintenance,
                "missing GROUP and on|off",
            ),
            ("maintenance web", Topic::Maintenance, "missing on|off"),
            (
                "maintenance web yes",
                Topic::Maintenance,
                "expected 'on' or 'off', not 'yes'",
            ),
            (
                "maintenance web ON",
                Topic::Maintenance,
                "expected 'on' or 'off', not 'ON'",
            ),
            (
                "maintenance web on now",
                Topic::Maintenance,
                "unexpected argument 'now'",
            ),
            ("watch web", Topic::Watch, "unexpected argument 'web'"),
            ("watch --json", Topic::Watch, "unknown option '--json'"),
        ] {
            let e = usage_err(line);
            assert_eq!(e.topic, Some(topic), "{line}");
            assert_eq!(e.message, message, "{line}");
        }
    }

    #[test]
    fn top_level_errors() {
        for (line, message) in [
            ("", "no command given"),
            ("frobnicate", "unknown command 'frobnicate'"),
            ("Status", "unknown command 'Status'"),
            ("--json", "unknown option '--json'"),
            ("-x status", "unknown option '-x'"),
            ("--version extra", "unexpected argument 'extra'"),
            ("help frobnicate", "unknown command 'frobnicate'"),
            ("help status web", "unexpected argument 'web'"),
        ] {
            let e = usage_err(line);
            assert_eq!(e.topic, None, "{line:?}");
            assert_eq!(e.message, message, "{line:?}");
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse("--help"), Ok(Invocation::Help(None)));
        assert_eq!(parse("-h"), Ok(Invocation::Help(None)));
        assert_eq!(parse("help"), Ok(Invocation::Help(None)));
        assert_eq!(parse("--help status"), Ok(Invocation::Help(None)));
        assert_eq!(
            parse("help watch"),
            Ok(Invocation::Help(Some(Topic::Watch)))
        );
        assert_eq!(parse("--version"), Ok(Invocation::Version));
        assert_eq!(parse("-V"), Ok(Invocation::Version));
        for (line, topic) in [
            ("status --help", Topic::Status),
            ("status web --json -h", Topic::Status),
            ("promote --help", Topic::Promote),
            ("demote web --help", Topic::Demote),
            // Help wins over what is wrong with the rest.
            ("maintenance web maybe --help", Topic::Maintenance),
            ("reset -h", Topic::Reset),
            ("watch --help", Topic::Watch),
        ] {
            assert_eq!(parse(line), Ok(Invocation::Help(Some(topic))), "{line}");
        }
        // After `--`, `--help` is a group name.
        assert_eq!(
            run("promote -- --help"),
            Command::Promote {
                group: "--help".into()
            }
        );
    }

    #[test]
    fn every_command_has_help_with_exit_codes() {
        for topic in [
            Topic::Status,
            Topic::Promote,
            Topic::Demote,
            Topic::Maintenance,
            Topic::Reset,
            Topic::Watch,
        ] {
            let help = topic.help();
            assert!(help.starts_with("Usage: promctl "), "{topic:?}");
            assert!(help.contains("Exit status:"), "{topic:?}");
        }
        assert!(USAGE.contains("Exit status: 0 success, 1 refused or failed"));
    }

    #[test]
    fn non_utf8_argument_is_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'w', 0xff]);
        let e = match args_as_strings(vec![OsString::from("status"), bad].into_iter()) {
            Err(e) => e,
            Ok(v) => panic!("accepted {v:?}"),
        };
        assert_eq!(e.topic, None);
        assert!(e.message.contains("not valid UTF-8"), "{}", e.message);
    }

    fn sample() -> StatusReport {
        StatusReport {
            node: "db-a".into(),
            version: "0.1.0".into(),
            store_connected: true,
            groups: vec![
                GroupStatus {
                    name: "web".into(),
                    role: "active".into(),
                    leader: "db-a".into(),
                    term: 42,
                    priority: 100,
                    healthy: true,
                    maintenance: false,
                    failures: 0,
                    since_usec: 1_795_813_445_123_456,
                    members: vec![
                        MemberStatus {
                            node: "db-a".into(),
                            role: "active".into(),
                            priority: 100,
                            healthy: true,
                        },
                        MemberStatus {
                            node: "db-b".into(),
                            role: "passive".into(),
                            priority: 90,
                            healthy: true,
                        },
                        MemberStatus {
                            node: "db-long-name".into(),
                            role: "down".into(),
                            priority: -5,
                            healthy: false,
                        },
                    ],
                },
                GroupStatus {
                    name: "queue".into(),
                    role: "maintenance".into(),
                    leader: "".into(),
                    term: 7,
                    priority: 1,
                    healthy: false,
                    maintenance: true,
                    failures: 3,
                    since_usec: 0,
                    members: vec![],
                },
            ],
        }
    }

    #[test]
    fn status_table() {
        let expected = "\
node db-a, promd 0.1.0, store connected

web: this host active, leader db-a, term 42, maintenance off
    NODE          ROLE     PRIORITY  HEALTHY
  * db-a          active        100  yes
    db-b          passive        90  yes
    db-long-name  down           -5  no

queue: this host maintenance, leader none, term 7, maintenance on
    (no members known)
";
        assert_eq!(render_table(&sample()), expected);
    }

    #[test]
    fn status_table_without_groups_or_store() {
        let report = StatusReport {
            node: "solo".into(),
            version: "0.1.0".into(),
            store_connected: false,
            groups: vec![],
        };
        assert_eq!(
            render_table(&report),
            "node solo, promd 0.1.0, store NOT connected\n\nno groups are configured on this host\n"
        );
    }

    #[test]
    fn status_json_shape() {
        let text = match render_json(&sample()) {
            Ok(t) => t,
            Err(e) => panic!("{e:?}"),
        };
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let expected = serde_json::json!({
            "node": "db-a",
            "version": "0.1.0",
            "store_connected": true,
            "groups": [
                {
                    "name": "web", "role": "active", "leader": "db-a", "term": 42,
                    "priority": 100, "healthy": true, "maintenance": false, "failures": 0,
                    "since_usec": 1_795_813_445_123_456u64,
                    "members": [
                        {"node": "db-a", "role": "active", "priority": 100, "healthy": true},
                        {"node": "db-b", "role": "passive", "priority": 90, "healthy": true},
                        {"node": "db-long-name", "role": "down", "priority": -5, "healthy": false}
                    ]
                },
                {
                    "name": "queue", "role": "maintenance", "leader": "", "term": 7,
                    "priority": 1, "healthy": false, "maintenance": true, "failures": 3,
                    "since_usec": 0, "members": []
                }
            ]
        });
        assert_eq!(v, expected);
        // Key order is stable too (declaration order), for readers that diff the output.
        let keys = [
            "\"node\"",
            "\"version\"",
            "\"store_connected\"",
            "\"groups\"",
        ];
        let pos: Vec<usize> = keys.iter().filter_map(|k| text.find(k)).collect();
        assert_eq!(pos.len(), keys.len());
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    }

    /// The typed `GetAll` decodes exactly what the daemon's properties carry.
    #[test]
    fn group_props_decode_from_getall_reply() {
        use zbus::Variant;
        use zbus::wire::{LE, serialized::Context};
        let members: Vec<(String, String, i32, bool)> =
            vec![("db-a".into(), "active".into(), 100, true)];
        let mut dict: HashMap<&str, Variant<'_>> = HashMap::new();
        dict.insert("Name", Variant::from("web"));
        dict.insert("Role", Variant::from("active"));
        dict.insert("Leader", Variant::from("db-a"));
        dict.insert("Term", Variant::from(u64::MAX));
        dict.insert("Priority", Variant::from(-3i32));
        dict.insert("Healthy", Variant::from(true));
        dict.insert("Maintenance", Variant::from(false));
        dict.insert("Failures", Variant::from(2u32));
        dict.insert("Since", Variant::from(17u64));
        dict.insert("Members", Variant::from(members.clone()));
        let ctxt = Context::new(LE, 0);
        let data = match zbus::wire::to_bytes(ctxt, &dict) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let decoded: GroupProps = match data.deserialize() {
            Ok((p, _)) => p,
            Err(e) => panic!("{e}"),
        };
        let status = GroupStatus::from(decoded);
        assert_eq!(status.term, u64::MAX);
        assert_eq!(status.priority, -3);
        assert_eq!(status.failures, 2);
        assert_eq!(status.since_usec, 17);
        assert_eq!(status.members.len(), 1);
        assert_eq!(status.members[0].node, "db-a");

        // A property the daemon forgot is an error, not a silent default.
        dict.remove("Members");
        let data = match zbus::wire::to_bytes(ctxt, &dict) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert!(data.deserialize::<GroupProps>().is_err());
    }

    #[test]
    fn error_names_in_plain_words() {
        let web = Some("web");
        assert_eq!(
            explain_reply(
                "org.promd1.Error.NotEligible",
                Some("failed 3 times, cooling down"),
                web
            ),
            "this host cannot become active in web: failed 3 times, cooling down"
        );
        assert_eq!(
            explain_reply("org.promd1.Error.NoStandby", Some("db-b is down"), web),
            "no other host can take over web: db-b is down"
        );
        assert_eq!(
            explain_reply("org.promd1.Error.Timeout", Some(""), web),
            "the switchover of web did not finish in time"
        );
        assert_eq!(
            explain_reply("org.promd1.Error.UnknownGroup", Some("unknown group"), web),
            "no group web on this host"
        );
        for name in [
            "org.promd1.Error.AccessDenied",
            "org.freedesktop.DBus.Error.AccessDenied",
        ] {
            assert_eq!(
                explain_reply(name, Some("Rejected send message"), web),
                "permission denied: run as root or as a member of the promd group"
            );
        }
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
        ] {
            assert_eq!(
                explain_reply(name, Some("The name is not activatable"), None),
                "promd is not running (is promd.service started?)"
            );
        }
        assert_eq!(
            explain_reply("org.promd1.Error.Failed", Some("store unreachable"), web),
            "web: promd could not do it: store unreachable"
        );
        assert_eq!(
            explain_reply("org.example.Weird", None, web),
            "promd refused (org.example.Weird)"
        );
    }

    #[test]
    fn zbus_errors_in_plain_words() {
        use zbus::fdo;
        let wait = Duration::from_secs(120);
        let e = zbus::Error::FDO(Box::new(fdo::Error::ServiceUnknown(
            "The name org.promd1 was not provided by any .service files".into(),
        )));
        assert_eq!(explain(&e, Some("web"), wait), NOT_RUNNING);
        let e = zbus::Error::FDO(Box::new(fdo::Error::NameHasNoOwner("no".into())));
        assert_eq!(explain(&e, None, wait), NOT_RUNNING);
        let e = zbus::Error::FDO(Box::new(fdo::Error::AccessDenied(
            "Rejected send message, 2 matched rules".into(),
        )));
        assert_eq!(explain(&e, Some("web"), wait), DENIED);
        // zbus may wrap its own error inside an fdo one.
        let inner = zbus::Error::FDO(Box::new(fdo::Error::AccessDenied("x".into())));
        let e = zbus::Error::FDO(Box::new(fdo::Error::ZBus(inner)));
        assert_eq!(explain(&e, Some("web"), wait), DENIED);
        // The method-call timeout of the connection.
        let e = zbus::Error::InputOutput(std::sync::Arc::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "timed out",
        )));
        assert_eq!(
            explain(&e, Some("web"), wait),
            "promd did not answer within 120 s; it may still be working on it (see promctl status)"
        );
    }

    #[test]
    fn promd_error_replies_come_through_zbus() {
        // An error reply as the daemon sends it, decoded the way the proxies decode it.
        let call = zbus::message::Message::method_call(MANAGER_PATH, "Promote")
            .destination(SERVICE)
            .interface(MANAGER_IFACE)
            .build(&("web",));
        let call = match call {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let reply = zbus::message::Message::error(&call.header(), "org.promd1.Error.NoStandby")
            .build(&("db-b and db-c are down",));
        let reply = match reply {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let err = zbus::Error::from(reply);
        assert_eq!(
            explain(&err, Some("web"), SWITCH_TIMEOUT),
            "no other host can take over web: db-b and db-c are down"
        );
    }

    #[test]
    fn outcome_lines() {
        let after = |role: &str, leader: &str, term| After {
            role: role.into(),
            leader: leader.into(),
            term,
        };
        assert_eq!(
            outcome_line(Action::Promote, "web", Some(&after("active", "db-a", 42))),
            "web: this host is now active (term 42)"
        );
        assert_eq!(
            outcome_line(Action::Promote, "web", Some(&after("promoting", "", 42))),
            "web: promote done; this host is promoting (term 42)"
        );
        assert_eq!(
            outcome_line(Action::Demote, "web", Some(&after("passive", "db-b", 43))),
            "web: this host is now passive; db-b is active (term 43)"
        );
        assert_eq!(
            outcome_line(Action::Demote, "web", Some(&after("passive", "", 43))),
            "web: this host is now passive; no host is active (term 43)"
        );
        assert_eq!(
            outcome_line(
                Action::Maintenance(true),
                "web",
                Some(&after("maintenance", "db-a", 43))
            ),
            "web: maintenance is now on (cluster-wide); this host is maintenance (term 43)"
        );
        assert_eq!(
            outcome_line(Action::Reset, "web", Some(&after("passive", "db-b", 43))),
            "web: failed state cleared; this host is passive (term 43)"
        );
        assert_eq!(
            outcome_line(Action::Maintenance(false), "web", None),
            "web: maintenance is now off"
        );
        assert_eq!(outcome_line(Action::Promote, "web", None), "web: promoted");
    }

    #[test]
    fn watch_lines() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_813_445_123_456);
        assert_eq!(
            watch_line(at, "web", "passive", "promoting", 42, "won the election"),
            "2026-11-27T21:04:05.123Z web passive -> promoting term 42: won the election"
        );
        assert_eq!(
            watch_line(SystemTime::UNIX_EPOCH, "web", "starting", "passive", 0, ""),
            "1970-01-01T00:00:00.000Z web starting -> passive term 0"
        );
    }

    #[test]
    fn group_names_from_paths() {
        assert_eq!(name_from_path("/org/promd1/group/web"), "web");
        assert_eq!(name_from_path("/org/promd1/group/web_2dfront"), "web-front");
        assert_eq!(name_from_path("/org/promd1/group/a_5fb"), "a_b");
        // Not an escape: kept as it is.
        assert_eq!(name_from_path("/org/promd1/group/a_b"), "a_b");
        assert_eq!(name_from_path("/org/promd1/group/x_"), "x_");
    }
}
