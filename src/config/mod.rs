//! `/etc/promd/promd.toml`: parsing and validation.
//!
//! The file is parsed into toml's spanned document (`DeTable`) and walked by hand rather than
//! deserialized with serde: serde stops at the first error, while `promd check-config` must
//! print every problem, each with its line and column.
//!
//! The module is split by job: `names` holds the name rules shared with other modules,
//! `validate` walks the document section by section, and `values` checks single keys.

mod address;
mod fixed;
mod http;
mod names;
mod secure;
mod validate;
mod values;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

use crate::core::Timing;
pub use address::{Address, AddressError};
pub use fixed::{Fixed, RESTART_HINT, restart_needed};
pub use http::HttpConfig;
pub use names::{
    instantiate, is_unit_template, valid_group_name, valid_node_name, valid_slot_name,
    valid_unit_name,
};
pub use secure::{
    CREDENTIALS_DIRECTORY, Password, PasswordFile, SecretError, credentials_directory,
    read_certificates, read_identity, read_password,
};
use validate::Checker;

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

/// Where promd and `promd check-config` read the configuration unless given a path
/// (`--config PATH`, `check-config PATH`).
pub const DEFAULT_PATH: &str = "/etc/promd/promd.toml";

/// A valid `promd.toml`, every default filled in. Only [`parse`] (and [`load`]) make one, so
/// every value here has passed the checks its key documents.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// This host's name in the cluster (`node`, default: the host name): a valid node name
    /// ([`valid_node_name`]), unique among the hosts that share the store.
    pub node: String,
    /// The coordination store (`[store]`, default: `kind = "dir"` at `/var/lib/promd`).
    pub store: StoreConfig,
    /// The `[[group]]` tables, in file order; names and targets are unique across them.
    pub groups: Vec<GroupConfig>,
    /// The state endpoint (`[http]`, default: none).
    pub http: HttpConfig,
}

/// `[store]`: where the groups elect their active host. Serialized (tagged by `kind`) into
/// `/run/promd/running.json`, so that a reload can tell that it changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    /// `kind = "etcd"`: several hosts, one etcd cluster.
    Etcd {
        /// `endpoints`: at least one, in order of preference, normalized to `http://HOST:PORT` or
        /// `https://HOST:PORT` (all of them the same scheme; `HOST:PORT` as written takes the
        /// scheme the rest of `[store]` implies).
        endpoints: Vec<String>,
        /// `connect-timeout` (default 2s, not zero): how long one connection attempt may
        /// take (the endpoints are tried side by side, see `store::etcd`).
        connect_timeout: Duration,
        /// `prefix` (default `/promd`): the key prefix, starting with `/` and not ending with
        /// one (unless it is `/`).
        prefix: String,
        /// The TLS settings: `Some` exactly when the endpoints are `https://`. (Boxed, as is
        /// `auth`: a configuration travels in messages, which should stay small.)
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tls: Option<Box<TlsConfig>>,
        /// `user` and `password-file`, both or neither.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        auth: Option<Box<AuthConfig>>,
    },
    /// `kind = "dir"`: one host, or hosts sharing a directory over NFS (docs/dir-store.md).
    Dir {
        /// `path` (default `/var/lib/promd`): an absolute path; it must exist when promd runs.
        path: PathBuf,
    },
}

/// How promd talks TLS to etcd (`https://` endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// `ca-file`: the PEM certificates that sign etcd's server certificates; `None`: the
    /// system's trusted roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// `cert-file` and `key-file`: the client certificate, for etcd's `--client-cert-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<ClientCert>,
    /// `server-name`: the name checked against etcd's certificates instead of each
    /// endpoint's host (a DNS name or an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// `cert-file` and `key-file`: absolute paths of PEM files, the key unencrypted and the
/// certificate's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientCert {
    /// `cert-file`: the client certificate (and any intermediates after it).
    pub cert_file: PathBuf,
    /// `key-file`: its private key.
    pub key_file: PathBuf,
}

/// `user` and `password-file`: etcd authentication. The password is read from the file when
/// promd starts; it is in no configuration record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthConfig {
    /// `user`: the etcd user.
    pub user: String,
    /// `password-file`: where its password is.
    pub password_file: PasswordFile,
}

/// One `[[group]]`: a service of which exactly one host runs the active target.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    /// `name`: `[a-z0-9_-]`, 1 to 64 characters ([`valid_group_name`]); unique in the file.
    pub name: String,
    /// `active-target`: the unit started on the active host (a valid unit name, usually a
    /// `.target`); no other group's active or passive target.
    pub active_target: String,
    /// `passive-target`: the unit started on the other hosts, if any; differs from
    /// `active_target` and is no other group's active target (groups may share one).
    pub passive_target: Option<String>,
    /// `members`: the only nodes that may be active, without duplicates; `None` when the key
    /// is absent: any node may.
    pub members: Option<Vec<String>>,
    /// `lease` (default 10s, at least 1s): an active host that cannot renew loses the role
    /// after this; promd's own watchdog and fencing deadlines derive from it.
    pub lease: Duration,
    /// `priority` (default 100): the highest eligible node wins; ties go to the lowest name.
    pub priority: i32,
    /// `preempt` (default false): a node with a higher priority takes the role from a healthy
    /// active host.
    pub preempt: bool,
    /// `max-restarts` (default 3): watched-unit failures within `restart_window` that are
    /// handled in place; one more fails the host over.
    pub max_restarts: u32,
    /// `restart-window` (default 5min, not zero): the sliding window of `max_restarts`.
    pub restart_window: Duration,
    /// `restart-backoff` (default 1s, may be zero): how long promd waits before it restarts a
    /// failed watched unit that has no `Restart=` of its own.
    pub restart_backoff: Duration,
    /// `failure-cooldown` (default 10min, may be zero): how long a node that failed over stays
    /// ineligible (`promctl reset` ends it early).
    pub failure_cooldown: Duration,
    /// `watch`: the units whose failures count, valid unit names without duplicates; `None`
    /// when the key is absent: the units of the active target's closure but targets.
    pub watch: Option<Vec<String>>,
    /// `health-command`: argv of a check run on every host, exit 0 meaning healthy; the
    /// program is an absolute path. `None`: no check.
    pub health_command: Option<Vec<String>>,
    /// `health-interval` (default 2s, not zero): from the start of one check to the next.
    pub health_interval: Duration,
    /// `health-timeout` (default 1s, not zero, shorter than `health_interval`): a check that
    /// runs longer is killed and counts as failed.
    pub health_timeout: Duration,
    /// `addresses`: the group's floating service addresses, each `ADDRESS/PREFIX dev
    /// INTERFACE` ([`Address`]), on the active host only; empty when the key is absent. No
    /// address twice, in a group or across groups; none with `actives` above 1.
    pub addresses: Vec<Address>,
    /// `actives` (default 1, 1 to [`MAX_ACTIVES`]): how many hosts run the active target at
    /// once, each in a *slot* of its own (`0..actives`) with its own leader key, lease and
    /// term (docs/slots.md). At most the number of `members` when they are listed.
    pub actives: u32,
    /// `standbys`: at most this many of the hosts that hold no slot run the passive target
    /// (the best by priority); the others run neither target. `None` (the key absent, or
    /// `0`): no limit, every such host runs it. Only with a `passive-target`; `actives` plus
    /// `standbys` is at most the number of `members` when they are listed.
    pub standbys: Option<NonZeroU32>,
    /// Which slot of which group this is, on the per-slot configurations promd derives
    /// from a group with `actives` above 1 ([`GroupConfig::slots`]); `None` on what the
    /// file says.
    pub slot: Option<SlotOf>,
}

/// One slot of a group with `actives` above 1 (docs/slots.md, "Keys in the store").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotOf {
    /// The group's name, as the file gives it: the name of its env file, D-Bus object and
    /// `maintenance` key.
    pub group: String,
    /// The slot, `0..of`.
    pub index: u32,
    /// How many slots the group has (its `actives`).
    pub of: u32,
}

impl GroupConfig {
    /// The configuration of each slot of this group, slot k at index k: the group itself
    /// when `actives` is 1 and `standbys` not set; else slot k is named `GROUP@k` (slot 0
    /// keeps `GROUP`, whose keys stay where they are: docs/slots.md), starts the instance `k`
    /// of a template `active-target` (a plain target is every slot's), runs no health check
    /// of its own beyond slot 0 (the host's check, told to every slot), and has
    /// [`GroupConfig::slot`] set. Every slot keeps the `passive-target` in its configuration;
    /// the agent, not the slot's machine, starts it (docs/slots.md, "Units").
    pub fn slots(&self) -> Vec<GroupConfig> {
        // `standbys` alone makes a family of one slot: the host's passive target is then the
        // family's to start or not (docs/slots.md, "Units").
        if self.actives <= 1 && self.standbys.is_none() {
            return vec![self.clone()];
        }
        (0..self.actives)
            .map(|k| GroupConfig {
                name: slot_name(&self.name, k),
                active_target: instantiate(&self.active_target, k),
                // The health check is the host's: slot 0 runs it and the agent tells every
                // slot its result.
                health_command: if k == 0 {
                    self.health_command.clone()
                } else {
                    None
                },
                slot: Some(SlotOf {
                    group: self.name.clone(),
                    index: k,
                    of: self.actives,
                }),
                ..self.clone()
            })
            .collect()
    }

    /// The name of the group this configuration is of: the slot's group, or its own.
    pub fn group_name(&self) -> &str {
        self.slot.as_ref().map_or(&self.name, |s| &s.group)
    }
}

/// The store name of slot `k` of `group`: `group` for slot 0, `group@k` beyond. `@` is not
/// allowed in a group name, so no slot name is a group's.
pub fn slot_name(group: &str, k: u32) -> String {
    if k == 0 {
        group.to_owned()
    } else {
        format!("{group}@{k}")
    }
}

/// The most slots (`actives`) a group may have: each is a leader key, a lease-bound machine
/// on every host and a watch of its own, and no service asked for more than a few.
pub const MAX_ACTIVES: u32 = 32;

const DEFAULT_DIR: &str = "/var/lib/promd";
const DEFAULT_PREFIX: &str = "/promd";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
const DEFAULT_PRIORITY: i32 = 100;
const DEFAULT_MAX_RESTARTS: u32 = 3;
const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(5 * 60);
const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_FAILURE_COOLDOWN: Duration = Duration::from_secs(10 * 60);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; `None` when the problem is not tied to a place in the file.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    /// What is wrong and, where there is one, how to fix it; one line, no position.
    pub message: String,
}

/// Every problem found in a configuration file; `Display` prints one per line as
/// `ORIGIN:LINE:COLUMN: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    origin: String,
    problems: Vec<Problem>,
}

impl ConfigError {
    /// The problems, in the order they appear in the file (unplaced ones first).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The file name the messages refer to.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl ConfigError {
    /// The problems as notes rather than errors: `ORIGIN:LINE:COLUMN: note: message`.
    pub fn notes(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = self.write(&mut out, "note: ");
        out
    }

    fn write(&self, f: &mut impl fmt::Write, kind: &str) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let origin = &self.origin;
            let message = &problem.message;
            match (problem.line, problem.column) {
                (Some(line), Some(column)) => {
                    write!(f, "{origin}:{line}:{column}: {kind}{message}")?
                }
                (Some(line), None) => write!(f, "{origin}:{line}: {kind}{message}")?,
                _ => write!(f, "{origin}: {kind}{message}")?,
            }
        }
        Ok(())
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write(f, "")
    }
}

impl std::error::Error for ConfigError {}

/// What a valid configuration does that an operator should hear about, one sentence each:
/// a file `[store]` names under a directory promd.service does not see (`/tmp`, `/var/tmp`,
/// `/home`, `/root`, `/run/user`); a `key-file` or `password-file` that users other than root
/// may read; an etcd user whose password would go over plain `http://` (etcd's `Authenticate` carries
/// it in the clear); a client certificate that has expired, is not valid yet or expires within
/// 14 days, an expired CA. `check-config` prints them as notes, and promd journals them as
/// warnings when it starts.
pub fn warnings(config: &Config) -> Vec<String> {
    warnings_at(config, crate::certs::now())
}

/// [`warnings`] at `now` (seconds since the Unix epoch).
pub fn warnings_at(config: &Config, now: i64) -> Vec<String> {
    notes_at(config, now, secure::UNSEEN)
}

/// [`warnings_at`], with `unseen` as the directories promd.service does not see, each with
/// the setting that hides it (tests name others: their files are in temporary directories).
fn notes_at(config: &Config, now: i64, unseen: &[(&str, &str)]) -> Vec<String> {
    let files = secure::named_files(&config.store);
    let mut out = secure::unseen_notes(&files, unseen);
    out.extend(secure::exposure_notes(&files));
    if let StoreConfig::Etcd { tls: Some(tls), .. } = &config.store {
        out.extend(secure::certificate_notes(tls, now));
    }
    if let StoreConfig::Etcd {
        endpoints,
        auth: Some(auth),
        ..
    } = &config.store
        && endpoints.iter().any(|e| e.starts_with("http://"))
    {
        out.push(format!(
            "etcd user {:?} logs in over plain http://: its password crosses the network in \
             the clear; use https:// endpoints (ca-file)",
            auth.user
        ));
    }
    out.extend(short_lease_notes(config));
    out
}

/// Notes on leases too short for what the file asks of the fence
/// ([`Timing::holds_fence_load`]):
/// [`one_unit_notes`] and [`group_count_notes`]. The units still die before the lease can
/// end (through the watchdog and `promd fence`), so these are notes, not errors; the running
/// promd warns again with the load its groups' units make (`src/agent/fence_load.rs`).
fn short_lease_notes(config: &Config) -> Vec<String> {
    let by_count = group_count_notes(config);
    // A lease short of the groups' load is short of one unit's too, and the lease the count
    // asks for holds one unit: one note per lease, naming the figure that is enough.
    let mut notes: Vec<String> = one_unit_notes(config)
        .into_iter()
        .filter(|(lease, _)| !by_count.iter().any(|(l, _)| l == lease))
        .map(|(_, note)| note)
        .collect();
    notes.extend(by_count.into_iter().map(|(_, note)| note));
    notes
}

/// The groups of `config` whose lease does not hold the fence load `load`, by lease.
fn leases_short_of(config: &Config, load: Duration) -> BTreeMap<Duration, Vec<&str>> {
    let mut short: BTreeMap<Duration, Vec<&str>> = BTreeMap::new();
    for g in &config.groups {
        if !Timing::new(g.lease)
            .with_fence_load(load)
            .holds_fence_load()
        {
            short.entry(g.lease).or_default().push(&g.name);
        }
    }
    short
}

/// `group web`, `groups web, db`, or past five names `groups a, b, c, d, e and 495 more`: a
/// note about 500 groups stays one readable line.
fn group_names(groups: &[&str]) -> String {
    const SHOWN: usize = 5;
    match groups {
        [one] => format!("group {one}"),
        _ if groups.len() <= SHOWN => format!("groups {}", groups.join(", ")),
        _ => format!(
            "groups {} and {} more",
            groups[..SHOWN].join(", "),
            groups.len() - SHOWN
        ),
    }
}

fn fmt_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A note per lease too short for even one unit with processes to be stopped and killed
/// within the fence's deadlines (at the smallest load, [`crate::core::FENCE_LOAD_STEP`]): at
/// 1 s the fence kills 50 ms after it asks the units to stop, and the kill leaves PID 1 no
/// time before the hang deadline. Such a lease suits a role without processes, or one whose
/// units die at once.
fn one_unit_notes(config: &Config) -> Vec<(Duration, String)> {
    use crate::core::FENCE_LOAD_STEP;
    leases_short_of(config, FENCE_LOAD_STEP)
        .into_iter()
        .map(|(lease, groups)| {
            let t = Timing::new(lease);
            let note = format!(
                "lease {} ({}) holds no unit with processes: the fence kills {} after \
                 it asks the units to stop and leaves PID 1 {} after the kill, so if a unit \
                 of such a role must be killed, promd is restarted by its watchdog (the unit \
                 still dies before the lease ends); use it for roles whose units stop at \
                 once, or make lease at least {} (docs/safety.md, \"What is assumed about the \
                 host\")",
                fmt_duration(lease),
                group_names(&groups),
                fmt_duration(t.margin().saturating_sub(t.kill_margin())),
                fmt_duration(t.kill_window()),
                Timing::lease_for_fence_load_in_steps(FENCE_LOAD_STEP, FENCE_LOAD_STEP)
                    .map_or("an hour".into(), fmt_duration),
            );
            (lease, note)
        })
        .collect()
}

/// A note per lease too short for the number of groups (each slot counted) the file runs on
/// this host, were none of their roles to run a process: PID 1 stops every group's target
/// at a cut, and promd confirms every stop before the hang deadline
/// ([`crate::core::STOP_COST_PER_GROUP`] each past [`crate::core::GROUPS_FREE`]; 1,000 empty
/// groups at 4 s had promd restarted by its watchdog at every cut of the bench). A load of
/// one step is left to [`one_unit_notes`]; each note comes with its lease.
fn group_count_notes(config: &Config) -> Vec<(Duration, String)> {
    use crate::core::{FENCE_LOAD_STEP, GROUPS_FREE, STOP_COST_PER_GROUP};
    let slots: usize = config.groups.iter().map(|g| g.slots().len()).sum();
    let load = Timing::fence_load_for(slots, 0, 0);
    let raw = Timing::fence_cost_for(slots, 0, 0);
    if load <= FENCE_LOAD_STEP {
        return Vec::new(); // one unit's load: the one-unit note says it
    }
    let counted = if slots == config.groups.len() {
        format!("the {slots} groups")
    } else {
        format!("the {slots} slots of the {} groups", config.groups.len())
    };
    leases_short_of(config, load)
        .into_iter()
        .map(|(lease, names)| {
            let rounded = if raw == load {
                String::new()
            } else {
                format!(
                    ", rounded up to a {} step: {}",
                    fmt_duration(FENCE_LOAD_STEP),
                    fmt_duration(load)
                )
            };
            let note = format!(
                "lease {} ({}) is too short for {counted} of this file on one host: even \
                 without a unit with processes, PID 1 stops every one's target at a cut and \
                 promd confirms each stop before the hang deadline ({} a group past the \
                 first {}: {}{rounded}), so promd would be restarted by its watchdog first \
                 (the units still die before the lease ends); make lease at least {}, or run \
                 fewer groups here (docs/safety.md, \"What is assumed about the host\")",
                fmt_duration(lease),
                group_names(&names),
                fmt_duration(STOP_COST_PER_GROUP),
                GROUPS_FREE.as_millis() / STOP_COST_PER_GROUP.as_millis().max(1),
                fmt_duration(raw),
                Timing::lease_for_fence_load_in_steps(load, FENCE_LOAD_STEP)
                    .map_or("an hour".into(), fmt_duration),
            );
            (lease, note)
        })
        .collect()
}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_source(path).map(|(config, _)| config)
}

/// [`load`], also returning the text that was read, to place later messages in it (see
/// [`restart_needed`]).
pub fn load_source(path: &Path) -> Result<(Config, String), ConfigError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &origin).map(|config| (config, text)),
        Err(err) => Err(ConfigError {
            origin,
            problems: vec![Problem {
                line: None,
                column: None,
                message: format!("cannot read the configuration: {err}"),
            }],
        }),
    }
}

/// Parses and validates a configuration; `origin` names the file in messages.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_in(text, origin, system_hostname, credentials_directory())
}

/// This host's name, for the `node` default.
fn system_hostname() -> Result<String, String> {
    // uname's nodename is what gethostname(2) returns on Linux; nix's `gethostname` needs
    // the "hostname" feature, which this crate does not enable.
    let uts =
        nix::sys::utsname::uname().map_err(|err| format!("cannot read the host name: {err}"))?;
    uts.nodename()
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the host name {:?} is not UTF-8", uts.nodename()))
}

/// `parse` with the host name supplied by the caller, so that tests do not depend on the host,
/// and no `$CREDENTIALS_DIRECTORY`.
#[cfg(test)]
fn parse_with_hostname(
    text: &str,
    origin: &str,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<Config, ConfigError> {
    parse_in(text, origin, hostname, None)
}

/// `parse` with the host name and `$CREDENTIALS_DIRECTORY` supplied by the caller.
fn parse_in(
    text: &str,
    origin: &str,
    hostname: impl FnOnce() -> Result<String, String>,
    credentials: Option<PathBuf>,
) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
        credentials,
    };
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    let config = if syntax_errors.is_empty() {
        checker.document(document.get_ref(), hostname)
    } else {
        // A document that is not TOML is reported as such only: checking what the parser
        // recovered would add noise about values the user did not write that way.
        for err in &syntax_errors {
            checker.syntax_error(err);
        }
        None
    };
    let mut problems = checker.problems;
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            // Every path that rejects a section reports why; this only guards against a
            // silent rejection, which would print nothing and still fail.
            if problems.is_empty() {
                problems.push(Problem {
                    line: None,
                    column: None,
                    message: "the configuration is invalid".to_owned(),
                });
            }
            problems.sort_by_key(|p| (p.line.unwrap_or(0), p.column.unwrap_or(0)));
            problems.dedup();
            Err(ConfigError {
                origin: origin.to_owned(),
                problems,
            })
        }
    }
}
