//! Argument parsing and the help texts.

use std::ffi::OsString;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Topic {
    Status,
    Promote,
    Demote,
    Maintenance,
    Reset,
    Watch,
    ImportProm,
}

impl Topic {
    pub(super) fn from_name(name: &str) -> Option<Topic> {
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

    pub(super) fn help(self) -> &'static str {
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
pub(super) enum Command {
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
pub(super) enum Invocation {
    Run(Command),
    /// `--help`, `help [COMMAND]` or `COMMAND --help`: print to stdout, exit 0.
    Help(Option<Topic>),
    Version,
}

/// A usage error: the message, and which command's usage to print after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct UsageError {
    pub(super) topic: Option<Topic>,
    pub(super) message: String,
}

impl UsageError {
    pub(super) fn new(topic: Option<Topic>, message: impl Into<String>) -> Self {
        UsageError {
            topic,
            message: message.into(),
        }
    }
}

pub(super) fn is_help(arg: &str) -> bool {
    arg == "-h" || arg == "--help"
}

/// Parses the arguments after the program name.
pub(super) fn parse_args(args: &[String]) -> Result<Invocation, UsageError> {
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
pub(super) fn parse_import_prom(args: &[String]) -> Result<Command, UsageError> {
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

pub(super) const USAGE: &str = "\
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

pub(super) const HELP_STATUS: &str = "\
Usage: promctl status [GROUP] [--json]

Show every group on this host (or just GROUP): this host's role, the leader, the term
(fencing token), maintenance, and each member's role, priority and health; '*' marks
this host.

  --json    print one JSON document instead of the table

Exit status: 0 success, 1 failed (promd not running, no such group), 2 bad usage.
";

pub(super) const HELP_PROMOTE: &str = "\
Usage: promctl promote GROUP

Make this host the active one in GROUP: the current active host stops its units first,
then this host starts them. Returns once this host is active (or promd says why not).

Exit status: 0 this host is active, 1 refused or failed, 2 bad usage.
";

pub(super) const HELP_DEMOTE: &str = "\
Usage: promctl demote GROUP

Stop GROUP's units on this host and hand the role to the best eligible other host.
Returns once this host is passive (or promd says why not, e.g. no other host can take over).

Exit status: 0 this host is passive, 1 refused or failed, 2 bad usage.
";

pub(super) const HELP_MAINTENANCE: &str = "\
Usage: promctl maintenance GROUP on|off

Cluster-wide: while on, no host starts or stops GROUP's units and no failover happens,
so the units can be worked on by hand. 'off' resumes normal operation.

Exit status: 0 done, 1 refused or failed, 2 bad usage.
";

pub(super) const HELP_RESET: &str = "\
Usage: promctl reset GROUP

Clear this host's failed state in GROUP (the failure count and the cool-down after a
failover), so that it may become active again.

Exit status: 0 done, 1 refused or failed, 2 bad usage.
";

pub(super) const HELP_WATCH: &str = "\
Usage: promctl watch

Print one line per role change of any group on this host, as it happens:
  TIME GROUP OLD -> NEW term TERM: REASON
until interrupted (SIGINT or SIGTERM). If promd is not running, wait for it.

Exit status: 0 interrupted, 1 the bus went away, 2 bad usage.
";

pub(super) const HELP_IMPORT_PROM: &str = "\
Usage: promctl import-prom CONFIG.json --replica ID [--out DIR]

Convert a PROM/HAL config.json for the host that runs replica ID: writes promd.toml,
APP-active.target, APP-passive.target, APP-ensure-active.service and
APP-ensure-passive.service into DIR (default: the current directory; existing files are
never overwritten), then lists every key not carried over, with the reason, and what to
check before starting promd (see docs/migrating-from-prom.md). Does not need promd.

Exit status: 0 written, 1 unreadable or invalid input, or a file exists, 2 bad usage.
";

pub(super) fn args_as_strings(
    args: impl Iterator<Item = OsString>,
) -> Result<Vec<String>, UsageError> {
    args.map(|a| {
        a.into_string()
            .map_err(|bad| UsageError::new(None, format!("argument {bad:?} is not valid UTF-8")))
    })
    .collect()
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
}
