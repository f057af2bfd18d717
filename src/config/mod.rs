//! `/etc/promd/promd.toml`: parsing and validation.
//!
//! The file is parsed into toml's spanned document (`DeTable`) and walked by hand rather than
//! deserialized with serde: serde stops at the first error, while `promd check-config` must
//! print every problem, each with its line and column.
//!
//! The module is split by job: `names` holds the name rules shared with other modules,
//! `validate` walks the document section by section, and `values` checks single keys.

mod fixed;
mod names;
mod validate;
mod values;

#[cfg(test)]
mod tests;

pub use fixed::{Fixed, RESTART_HINT, restart_needed};
pub use names::{valid_group_name, valid_node_name, valid_unit_name};
use validate::Checker;

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use toml::de::DeTable;

pub const DEFAULT_PATH: &str = "/etc/promd/promd.toml";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: String,
    pub store: StoreConfig,
    pub groups: Vec<GroupConfig>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum StoreConfig {
    Etcd {
        endpoints: Vec<String>,
        connect_timeout: Duration,
        prefix: String,
    },
    Dir {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub active_target: String,
    pub passive_target: Option<String>,
    pub members: Option<Vec<String>>,
    pub lease: Duration,
    pub priority: i32,
    pub preempt: bool,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub restart_backoff: Duration,
    pub failure_cooldown: Duration,
    pub watch: Option<Vec<String>>,
    pub health_command: Option<Vec<String>>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
}

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
    parse_with_hostname(text, origin, system_hostname)
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

/// `parse` with the host name supplied by the caller, so that tests do not depend on the host.
fn parse_with_hostname(
    text: &str,
    origin: &str,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
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
