//! The command line, declared once with clap: `promctl --help` and each command's `--help`, the
//! usage errors, the shell completions and promctl(1) are all rendered from these types (the
//! last two into `packaging/` by `make generate`, see `generate.rs`).
//!
//! One rule clap does not have is added by [`parse`]: `--help` anywhere before `--` wins over
//! whatever else is wrong with the line, so that a half-typed command still gets its help.

use std::ffi::OsString;
use std::time::Duration;

use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, CommandFactory, Parser, Subcommand};
use clap_complete::engine::{
    ArgValueCandidates, ArgValueCompleter, CompletionCandidate, PathCompleter,
};

/// The variable through which the shell completions call promctl back: `PROMCTL_COMPLETE=bash
/// promctl -- WORDS...` prints the candidates for the last word, `PROMCTL_COMPLETE=bash promctl`
/// the script that `packaging/completions/` holds. (clap's default name, `COMPLETE`, is too
/// likely to be set for something else in an operator's shell.)
pub(super) const COMPLETE_VAR: &str = "PROMCTL_COMPLETE";

/// How long completing a group name may wait for promd before it offers nothing.
const GROUP_COMPLETION_TIMEOUT: Duration = Duration::from_secs(2);

/// promctl's command line: one command.
#[derive(Debug, Parser)]
#[command(
    name = "promctl",
    version,
    about = ABOUT,
    long_about = LONG_ABOUT,
    after_help = AFTER_HELP,
    after_long_help = AFTER_LONG_HELP,
    subcommand_value_name = "COMMAND",
    arg_required_else_help = true
)]
pub(super) struct Cli {
    #[command(subcommand)]
    pub(super) command: Command,
}

/// What promctl is asked to do.
#[derive(Debug, Clone, PartialEq, Eq, Subcommand)]
pub(super) enum Command {
    #[command(
        about = "Show roles, leader, term and members of each group",
        long_about = STATUS_LONG,
        after_help = "Exit status: 0 success, 1 failed (promd not running, no such group), 2 bad usage."
    )]
    Status {
        #[arg(
            value_name = "GROUP",
            help = "Show only this group",
            add = ArgValueCandidates::new(group_candidates)
        )]
        group: Option<String>,
        #[arg(
            long,
            help = "Print one JSON document instead of the table",
            long_help = JSON_LONG
        )]
        json: bool,
        #[arg(
            long,
            short = 'b',
            conflicts_with = "json",
            help = "One line per group: its role here, leader, term, maintenance, eligibility",
            long_help = BRIEF_LONG
        )]
        brief: bool,
    },
    #[command(
        about = "Make this host the active one in GROUP (a switchover)",
        long_about = PROMOTE_LONG,
        after_help = "Exit status: 0 this host is active, 1 refused or failed, 2 bad usage."
    )]
    Promote {
        #[arg(
            value_name = "GROUP",
            help = GROUP_HELP,
            add = ArgValueCandidates::new(group_candidates)
        )]
        group: String,
    },
    #[command(
        about = "Hand GROUP over to the best other host",
        long_about = DEMOTE_LONG,
        after_help = "Exit status: 0 this host is passive, 1 refused or failed, 2 bad usage."
    )]
    Demote {
        #[arg(
            value_name = "GROUP",
            help = GROUP_HELP,
            add = ArgValueCandidates::new(group_candidates)
        )]
        group: String,
    },
    #[command(
        about = "Pause (on) or resume (off) failover of GROUP, cluster-wide",
        long_about = MAINTENANCE_LONG,
        after_help = "Exit status: 0 done, 1 refused or failed, 2 bad usage."
    )]
    Maintenance {
        #[arg(
            value_name = "GROUP",
            help = GROUP_HELP,
            add = ArgValueCandidates::new(group_candidates)
        )]
        group: String,
        // `on` is true.
        #[arg(
            value_name = "on|off",
            help = "Whether maintenance mode is on",
            action = ArgAction::Set,
            value_parser = on_off()
        )]
        on: bool,
    },
    #[command(
        about = "Clear this host's failed state in GROUP",
        long_about = RESET_LONG,
        after_help = "Exit status: 0 done, 1 refused or failed, 2 bad usage."
    )]
    Reset {
        #[arg(
            value_name = "GROUP",
            help = GROUP_HELP,
            add = ArgValueCandidates::new(group_candidates)
        )]
        group: String,
    },
    #[command(
        about = "Print role changes as they happen, until interrupted",
        long_about = WATCH_LONG,
        after_help = "Exit status: 0 interrupted, 1 the bus went away, 2 bad usage."
    )]
    Watch {
        #[arg(
            long,
            help = "Print one JSON object per line for every change",
            long_help = WATCH_JSON_LONG
        )]
        json: bool,
    },
    #[command(
        about = "Convert a PROM/HAL config.json into promd.toml and units",
        long_about = IMPORT_PROM_LONG,
        after_help = "Exit status: 0 written, 1 unreadable or invalid input, or a file exists, 2 bad usage."
    )]
    ImportProm {
        #[arg(
            value_name = "CONFIG.json",
            help = "The PROM or HAL configuration file",
            add = ArgValueCompleter::new(PathCompleter::any().filter(|p| {
                p.is_dir() || p.extension().is_some_and(|e| e == "json")
            }))
        )]
        config: String,
        #[arg(
            long,
            value_name = "ID",
            help = "The replica id this host runs (0 to N-1)"
        )]
        replica: String,
        #[arg(
            long,
            value_name = "DIR",
            help = "The folder to write the files into [default: the current directory]",
            add = ArgValueCompleter::new(PathCompleter::dir())
        )]
        out: Option<String>,
    },
}

const GROUP_HELP: &str = "The group, as promd.toml names it";

fn on_off() -> impl TypedValueParser<Value = bool> {
    PossibleValuesParser::new([
        PossibleValue::new("on").help("No host starts or stops the units, no failover"),
        PossibleValue::new("off").help("Normal operation"),
    ])
    .map(|s| s == "on")
}

/// The whole command line, for the completions and the man page.
pub(super) fn cli() -> clap::Command {
    Cli::command()
}

/// Parses the whole command line (the program name first). `Err` is clap's, to print with its
/// exit code: 0 for help and version (on stdout), 2 for a usage error (on stderr).
pub(super) fn parse<I, T>(args: I) -> Result<Command, clap::Error>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString>,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => Ok(cli.command),
        Err(e) if !e.use_stderr() => Err(e),
        Err(e) => Err(help_instead(&args).unwrap_or(e)),
    }
}

/// `promctl COMMAND ... --help ...` that clap refused for something else: the command's help,
/// as if the line had been `promctl COMMAND --help` (`-h` likewise). After `--`, `--help` is a
/// name like any other.
fn help_instead(args: &[OsString]) -> Option<clap::Error> {
    let program = args.first()?;
    let name = args.get(1)?;
    cli().find_subcommand(name)?;
    let flag = args
        .get(2..)?
        .iter()
        .take_while(|a| *a != "--")
        .find(|a| *a == "-h" || *a == "--help")?;
    Cli::try_parse_from([program, name, flag]).err()
}

/// The groups of this host's promd, for completion: nothing if it does not answer in time.
fn group_candidates() -> Vec<CompletionCandidate> {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return Vec::new();
    };
    runtime.block_on(async {
        let list = async {
            let conn = super::bus::connect(GROUP_COMPLETION_TIMEOUT).await.ok()?;
            let manager = super::bus::manager(&conn).await.ok()?;
            manager.list_groups().await.ok()
        };
        let groups = tokio::time::timeout(GROUP_COMPLETION_TIMEOUT, list)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        groups
            .into_iter()
            .map(|(name, role, leader, term, _)| {
                let help = format!("{role}, leader {leader}, term {term}");
                CompletionCandidate::new(name).help(Some(help.into()))
            })
            .collect()
    })
}

// ---------------------------------------------------------------------------------------------
// The long texts. Lines stay under 92 columns (clap prints them as they are); a paragraph is
// separated by a blank line; lines indented by two spaces are an example, set as such in
// promctl(1); 'quoted' words are set in bold there, and argument names (GROUP, ID, ...) in
// italics.
// ---------------------------------------------------------------------------------------------

const ABOUT: &str = "Show and steer promd, which keeps one host active per group";

const LONG_ABOUT: &str = "\
Show and steer promd, which keeps exactly one host active per group.

promctl is the command-line client of promd(8). It talks only D-Bus: every answer comes from
the promd of this host, on the system bus (name 'org.promd1'), and it keeps no state of its
own. Anyone may read ('status', 'watch'); changing anything ('promote', 'demote',
'maintenance', 'reset') needs root or membership of the group 'promd'.

'import-prom' is different: it reads a PROM or HAL configuration file and writes promd's
files; it needs no running promd.";

const AFTER_HELP: &str = "\
Exit status: 0 success, 1 refused or failed (the message says why), 2 bad usage.
'promctl COMMAND --help' shows more about a command.";

macro_rules! dashdash {
    () => {
        "'--' ends the options: an argument after it is a name even if it starts with '-'."
    };
}

/// What `--` does, for promctl(1)'s OPTIONS.
#[cfg(test)]
pub(super) const DASHDASH: &str = dashdash!();

const AFTER_LONG_HELP: &str = concat!(
    dashdash!(),
    "

Exit status: 0 success, 1 refused or failed (the message says why), 2 bad usage.
'promctl COMMAND --help' shows more about a command; 'man promctl' has examples."
);

const STATUS_LONG: &str = "\
Show every group on this host (or just GROUP): this host's role, the leader, the term
(fencing token), maintenance mode, and each member with its role, priority, health,
failures in its restart window, and whether it could become active now; '*' marks this
host. An ineligible member's reason follows ('no: the health check fails'), on a line of
its own when it does not fit in 80 columns; a reason the role already says (a 'down'
member, an active one that is not passive) is left out. The first line names this host,
promd's version, and whether the store is connected. A group's slots (GROUP@1, GROUP@2,
...) follow their group.";

const BRIEF_LONG: &str = "\
One line per group instead of the table: the group, this host's role in it, the leader,
the term, maintenance mode, and whether this host could become active now (or why not),
for a host that runs hundreds of groups. A group's slots (GROUP@1, GROUP@2, ...) follow
their group.";

const JSON_LONG: &str = r#"Print one JSON document instead of the table:

  {"node": "db-a", "version": "0.1.0", "store_connected": true,
   "groups": [{"name": "web", "role": "active", "leader": "db-a",
     "term": 42, "priority": 100, "healthy": true,
     "maintenance": false, "failures": 0,
     "since_usec": 1795000000000000,
     "members": [{"node": "db-a", "role": "active",
                  "priority": 100, "healthy": true, "eligible": false,
                  "why": "not-passive", "failures": 0,
                  "since_usec": 1795000000000000, "term": 42}],
     "eligible": false, "why": "not-passive"}]}

'since_usec' is the CLOCK_REALTIME time of the last role change, in microseconds (0: not
known). 'why' says why a member (or, beside 'members', this host) cannot become active
now, as a word: stopping, not-member, cooldown, passive-failed, unhealthy,
store-unreachable, lease-not-renewed, not-passive, other-slot (it holds or is after
another slot of the group), standby-elsewhere (it holds no slot and stands by for
another one), defer-once (it just lost the role in a crash and lets the
others go first), unknown (a reason a newer promd gave, or an older promd's record that
gives none), down (no record in the store); "" when eligible. This
host's entry is its state now, the others' their store records. A group with several
active hosts (actives) also has 'slots': each slot with its holder, term and this host's
role in it ("slot", "holder", "term", "role"). A group with floating addresses also has
'addresses' (sorted; also a line under the group in the text): each written as in promd.toml
and whether this host holds it now ("address", "held").
The field names and their order are stable; new fields are only ever appended."#;

const PROMOTE_LONG: &str = "\
Make this host the active one in GROUP (a switchover): the active host stops its units
first, then this host starts them. Returns once this host is active, or says why not (the
host is failed, unhealthy or not a member, maintenance mode is on, or the switchover timed
out). A no-op on the active host. promd bounds the switchover itself; promctl gives up
after 120 s only if promd never answers (a promd that hangs is killed by its watchdog
within seconds, and the call then fails at once).";

const DEMOTE_LONG: &str = "\
Stop GROUP's units on this host and hand the role to the best eligible other host. Returns
once this host is passive, or says why not (e.g. no other host can take over). As with
promote, promctl gives up after 120 s only if promd never answers.";

const MAINTENANCE_LONG: &str = "\
Cluster-wide: while on, no host starts or stops GROUP's units and no failover happens, so
the units can be worked on by hand (a unit that fails or is stopped is neither counted nor
restarted); roles stay as they are. 'off' resumes normal operation: the active host starts
again the units of its role that are down.";

const RESET_LONG: &str = "\
Clear this host's failed state in GROUP (the failure count and the cool-down after a
failover), so that it may become active again.";

const WATCH_LONG: &str = "\
Print one line per role change of any group on this host, as it happens, until interrupted
(SIGINT or SIGTERM):

  TIME GROUP OLD -> NEW term TERM: REASON

With --json, one JSON object per line for every role change and every change of a group's
properties. If promd is not running, it waits for it.";

const WATCH_JSON_LONG: &str = r#"Print one JSON object per line, flushed as it is written (for jq --unbuffered and
scripts), for every role change:

  {"time": "2026-11-27T21:04:05.123Z", "group": "web", "event": "role-changed",
   "old": "passive", "new": "promoting", "term": 42, "reason": "won the election"}

and for every change of a group's properties, with the fields that changed, named as in
'promctl status --json' (role, leader, term, priority, healthy, maintenance, failures,
since_usec, members, eligible, why):

  {"time": "2026-11-27T21:04:05.125Z", "group": "web", "event": "properties-changed",
   "role": "promoting", "eligible": false, "why": "not-passive"}

'members' is the whole list, as in the status document. 'time' is when promctl received
the signal (UTC, milliseconds). A role change's role-changed comes before the
properties-changed that shows it."#;

const IMPORT_PROM_LONG: &str = "\
Convert the config.json of a PROM or HAL replica set (either spelling of the keys:
'app-name' or 'appName', 'prom-timeout' or 'timeout', 'replica-id-list' or 'replicaIdList',
...) into promd's files for the host that runs replica ID, written into DIR (default: the
current directory). It needs no running promd. It writes:

'promd.toml', for /etc/promd/promd.toml: the group named after the application, 'lease'
from the timeout, 'max-restarts' and 'restart-backoff' from the retry keys, 'priority'
favouring the replica that 'start-active-ID' names, the replica ids as 'members', and store
endpoints from the MUSIC locations (they must now point at etcd).

'APP-active.target', 'APP-passive.target', 'APP-ensure-active.service' and
'APP-ensure-passive.service', for /etc/systemd/system/: targets and services that run the
host's 'ensure-active-ID' and 'ensure-passive-ID' commands, so that a site can switch to
promd before it rewrites its scripts as real units.

Every key that is not carried over is listed with the reason (e.g. 'restart-prom-ID':
systemd's 'Restart=' and watchdog replace it; 'core-monitor-sleep-time': promd follows
signals, it does not poll; MUSIC credentials), followed by warnings about what to check
before starting promd (see docs/migrating-from-prom.md). Existing files are never
overwritten: if one exists, nothing is written. Malformed JSON, missing or misnumbered
replica ids (they must be 0 to N-1) and unknown replicas are errors that name the key.";

#[cfg(test)]
mod tests {
    use clap::error::ErrorKind;

    use super::*;

    fn line(line: &str) -> Vec<String> {
        std::iter::once("promctl")
            .chain(line.split_whitespace())
            .map(str::to_owned)
            .collect()
    }

    fn parse_line(text: &str) -> Result<Command, clap::Error> {
        parse(line(text))
    }

    fn run(text: &str) -> Command {
        match parse_line(text) {
            Ok(c) => c,
            Err(e) => panic!("{text}: {e}"),
        }
    }

    /// A usage error: exit 2, on stderr, and its text.
    fn usage_err(text: &str) -> (ErrorKind, String) {
        match parse_line(text) {
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{text}: {e}");
                assert!(e.use_stderr(), "{text}");
                (e.kind(), e.render().to_string())
            }
            Ok(c) => panic!("{text}: expected a usage error, got {c:?}"),
        }
    }

    /// Help (or the version): exit 0, on stdout, and its text.
    fn help(text: &str) -> String {
        match parse_line(text) {
            Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) => {
                assert_eq!(e.exit_code(), 0, "{text}");
                assert!(!e.use_stderr(), "{text}");
                e.render().to_string()
            }
            other => panic!("{text}: expected help, got {other:?}"),
        }
    }

    #[test]
    fn clap_accepts_the_declaration() {
        cli().debug_assert();
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
            run("import-prom --replica=2 --out=o c.json"),
            cmd("c.json", "2", Some("o"))
        );
        let (kind, text) = usage_err("import-prom c.json");
        assert_eq!(kind, ErrorKind::MissingRequiredArgument);
        assert!(text.contains("--replica <ID>"), "{text}");
        let (kind, text) = usage_err("import-prom --replica 0");
        assert_eq!(kind, ErrorKind::MissingRequiredArgument);
        assert!(text.contains("<CONFIG.json>"), "{text}");
        let (kind, text) = usage_err("import-prom c.json --replica");
        assert_eq!(kind, ErrorKind::InvalidValue);
        assert!(text.contains("--replica <ID>"), "{text}");
        let (kind, text) = usage_err("import-prom c.json d.json --replica 0");
        assert_eq!(kind, ErrorKind::UnknownArgument);
        assert!(text.contains("'d.json'"), "{text}");
        let (kind, text) = usage_err("import-prom c.json --replica 0 --force");
        assert_eq!(kind, ErrorKind::UnknownArgument);
        assert!(text.contains("promctl import-prom"), "{text}");
        assert!(help("import-prom --help").contains("Usage: promctl import-prom"));
    }

    #[test]
    fn parses_status() {
        let status = |group: Option<&str>, json| Command::Status {
            group: group.map(String::from),
            json,
            brief: false,
        };
        assert_eq!(run("status"), status(None, false));
        assert_eq!(run("status web"), status(Some("web"), false));
        assert_eq!(run("status --json"), status(None, true));
        assert_eq!(run("status --json web"), status(Some("web"), true));
        assert_eq!(run("status web --json"), status(Some("web"), true));
        // `--` lets a group name start with a dash.
        assert_eq!(run("status -- -odd"), status(Some("-odd"), false));
        let brief = |group: Option<&str>| Command::Status {
            group: group.map(String::from),
            json: false,
            brief: true,
        };
        assert_eq!(run("status --brief"), brief(None));
        assert_eq!(run("status -b web"), brief(Some("web")));
    }

    #[test]
    fn status_errors() {
        let (kind, text) = usage_err("status web db");
        assert_eq!(kind, ErrorKind::UnknownArgument);
        assert!(
            text.contains("'db'") && text.contains("promctl status"),
            "{text}"
        );
        let (kind, text) = usage_err("status --yaml");
        assert_eq!(kind, ErrorKind::UnknownArgument);
        assert!(text.contains("'--yaml'"), "{text}");
        // `--` ends options, so `--json` after it is a group name.
        assert_eq!(
            run("status -- --json"),
            Command::Status {
                group: Some("--json".into()),
                json: false,
                brief: false,
            }
        );
        // The brief form and JSON are two answers to one question: one at a time.
        let (kind, text) = usage_err("status --brief --json");
        assert_eq!(kind, ErrorKind::ArgumentConflict);
        assert!(text.contains("--json"), "{text}");
    }

    #[test]
    fn parses_group_commands() {
        let group = || "web".to_owned();
        assert_eq!(run("promote web"), Command::Promote { group: group() });
        assert_eq!(run("demote web"), Command::Demote { group: group() });
        assert_eq!(run("reset web"), Command::Reset { group: group() });
        assert_eq!(
            run("maintenance web on"),
            Command::Maintenance {
                group: group(),
                on: true
            }
        );
        assert_eq!(
            run("maintenance web off"),
            Command::Maintenance {
                group: group(),
                on: false
            }
        );
        assert_eq!(run("watch"), Command::Watch { json: false });
        assert_eq!(run("watch --json"), Command::Watch { json: true });
    }

    #[test]
    fn group_command_errors() {
        use ErrorKind::{InvalidValue, MissingRequiredArgument, UnknownArgument};
        for (text, kind, command, token) in [
            ("promote", MissingRequiredArgument, "promote", "<GROUP>"),
            ("demote", MissingRequiredArgument, "demote", "<GROUP>"),
            ("reset", MissingRequiredArgument, "reset", "<GROUP>"),
            ("promote web db", UnknownArgument, "promote", "'db'"),
            ("demote web db", UnknownArgument, "demote", "'db'"),
            ("reset web db", UnknownArgument, "reset", "'db'"),
            ("promote --json web", UnknownArgument, "promote", "'--json'"),
            ("demote -f web", UnknownArgument, "demote", "'-f'"),
            (
                "maintenance",
                MissingRequiredArgument,
                "maintenance",
                "<GROUP>",
            ),
            (
                "maintenance web",
                MissingRequiredArgument,
                "maintenance",
                "<on|off>",
            ),
            ("maintenance web yes", InvalidValue, "maintenance", "'yes'"),
            ("maintenance web ON", InvalidValue, "maintenance", "'ON'"),
            (
                "maintenance web on now",
                UnknownArgument,
                "maintenance",
                "'now'",
            ),
            ("watch web", UnknownArgument, "watch", "'web'"),
            ("watch --jsn", UnknownArgument, "watch", "'--jsn'"),
        ] {
            let (got, message) = usage_err(text);
            assert_eq!(got, kind, "{text}: {message}");
            assert!(message.contains(token), "{text}: {message}");
            // clap shows the usage with every error but an invalid value.
            assert!(
                kind == InvalidValue || message.contains(&format!("Usage: promctl {command}")),
                "{text}: {message}"
            );
        }
        let (_, message) = usage_err("maintenance web yes");
        assert!(message.contains("[possible values: on, off]"), "{message}");
    }

    #[test]
    fn top_level_errors() {
        use ErrorKind::{
            DisplayHelpOnMissingArgumentOrSubcommand, InvalidSubcommand, UnknownArgument,
        };
        for (text, kind, token) in [
            ("", DisplayHelpOnMissingArgumentOrSubcommand, "Commands:"),
            ("frobnicate", InvalidSubcommand, "'frobnicate'"),
            ("Status", InvalidSubcommand, "'Status'"),
            ("--json", UnknownArgument, "'--json'"),
            ("-x status", UnknownArgument, "'-x'"),
            ("help frobnicate", InvalidSubcommand, "'frobnicate'"),
            ("help status web", InvalidSubcommand, "'web'"),
        ] {
            let (got, message) = usage_err(text);
            assert_eq!(got, kind, "{text:?}: {message}");
            assert!(message.contains(token), "{text:?}: {message}");
        }
        // A near miss is named.
        let (_, message) = usage_err("stauts");
        assert!(message.contains("'status'"), "{message}");
    }

    #[test]
    fn help_and_version() {
        let top = help("--help");
        assert!(top.contains("Usage: promctl <COMMAND>"), "{top}");
        assert!(
            top.contains("Exit status: 0 success, 1 refused or failed"),
            "{top}"
        );
        // -h: the summary; --help: all of it.
        assert!(help("-h").starts_with(ABOUT), "{}", help("-h"));
        assert!(top.starts_with(LONG_ABOUT), "{top}");
        assert_eq!(help("help"), top);
        assert_eq!(help("--help status"), top);
        assert!(help("help watch").starts_with("Print one line per role change"));
        let version = format!("promctl {}\n", env!("CARGO_PKG_VERSION"));
        assert_eq!(help("--version"), version);
        assert_eq!(help("-V"), version);
        for (text, command) in [
            ("status --help", "status"),
            ("status web --json -h", "status"),
            ("promote --help", "promote"),
            ("demote web --help", "demote"),
            // Help wins over what is wrong with the rest, before or after it.
            ("maintenance web maybe --help", "maintenance"),
            ("promote web db --help", "promote"),
            ("demote --force -h", "demote"),
            ("import-prom --help --replica", "import-prom"),
            ("reset -h", "reset"),
            ("watch --help", "watch"),
        ] {
            let out = help(text);
            assert!(
                out.contains(&format!("Usage: promctl {command}")),
                "{text}: {out}"
            );
        }
        // After `--`, `--help` is a group name.
        assert_eq!(
            run("promote -- --help"),
            Command::Promote {
                group: "--help".into()
            }
        );
        // and so not a request for help when something else is wrong.
        assert_eq!(
            usage_err("promote web -- --help").0,
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn every_command_has_help_with_exit_codes() {
        let mut cli = cli();
        cli.build();
        let names: Vec<String> = cli
            .get_subcommands()
            .map(|c| c.get_name().to_owned())
            .collect();
        assert_eq!(
            names,
            [
                "status",
                "promote",
                "demote",
                "maintenance",
                "reset",
                "watch",
                "import-prom",
                "help"
            ]
        );
        for name in names.iter().filter(|n| *n != "help") {
            let short = help(&format!("{name} -h"));
            let long = help(&format!("{name} --help"));
            for text in [&short, &long] {
                assert!(
                    text.contains(&format!("Usage: promctl {name}")),
                    "{name}: {text}"
                );
                assert!(text.contains("Exit status: 0 "), "{name}: {text}");
            }
        }
    }

    #[test]
    fn non_utf8_argument_is_a_usage_error() {
        use std::os::unix::ffi::OsStringExt;
        let bad = OsString::from_vec(vec![b'w', 0xff]);
        let e = match parse([OsString::from("promctl"), OsString::from("status"), bad]) {
            Err(e) => e,
            Ok(c) => panic!("accepted {c:?}"),
        };
        assert_eq!(e.kind(), ErrorKind::InvalidUtf8);
        assert_eq!(e.exit_code(), 2);
    }
}
