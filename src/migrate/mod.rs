//! Migration from PROM / HAL: `promctl import-prom CONFIG.json --replica ID [--out DIR]`.
//!
//! PROM and HAL (Java daemons over the MUSIC store) describe a replica set in one `config.json`
//! shared by every host; each host runs one replica, named by its id. [`import_prom`] turns that
//! file into what the host that runs one replica needs under promd: a `promd.toml` and the
//! systemd units that run the host's `ensure-active-ID` / `ensure-passive-ID` commands, so a
//! site can switch to promd before it rewrites its scripts as real units. Every key that is not
//! carried over is listed in [`Migration::notes`] with the reason.
//!
//! Everything here is pure except [`write_files`].
//!
//! The work is split by stage: `keys` reads the JSON in either spelling, `names` and
//! `commands` derive promd's names and `ExecStart=` lines, `importer` decides what is carried
//! over (with `notes` on what is not), and `units` writes `promd.toml` and the unit files.

mod commands;
mod importer;
mod keys;
mod names;
mod notes;
mod units;

use importer::Importer;
use keys::{Keys, json_error, type_name};

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// etcd's client port: the endpoints are MUSIC's hosts with this port.
const ETCD_PORT: u16 = 2379;
/// Priority of a replica that PROM started active (`start-active-i` = true).
const PREFERRED_PRIORITY: i32 = 200;
/// Priority of the other replicas (promd's default).
const DEFAULT_PRIORITY: i32 = 100;
/// promd refuses leases shorter than this (see `config.rs`).
const MIN_LEASE_MS: u64 = 1000;
/// Where promd writes the units' environment (`PROMD_*`), per group.
const ENV_DIR: &str = "/run/promd";

/// What `promctl import-prom` writes for one replica, and what it could not carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The files to write, by path relative to the output directory: `promd.toml` (for
    /// `/etc/promd/`) and the units (for `/etc/systemd/system/`).
    pub files: Vec<(PathBuf, String)>,
    /// One line per key not carried over, with the reason; then warnings (`warning: ...`),
    /// which say what the operator must check or do before starting promd.
    pub notes: Vec<String>,
    /// The node name given to this replica (`node` in `promd.toml`).
    pub node: String,
    /// The group name (from the application name).
    pub group: String,
}

/// Why a PROM / HAL configuration could not be converted. The messages name the key as it is
/// written in the file; they never quote a command or a credential.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The file is not JSON.
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Json {
        /// 1-based, as serde_json counts.
        line: usize,
        /// 1-based, as serde_json counts.
        column: usize,
        /// serde_json's description, without the position.
        message: String,
    },
    /// The JSON is an array, a string or another non-object at the top.
    #[error(
        "the configuration must be a JSON object ({{\"app-name\": ..., \"replica-id-list\": ...}}), found {found}"
    )]
    NotAnObject {
        /// What was found instead: "an array", "a string", ...
        found: &'static str,
    },
    /// A key promd cannot do without (`app-name`, `replica-id-list`) is in neither spelling.
    #[error("`{key}` is missing: {hint}")]
    Missing {
        /// PROM's name of the key.
        key: &'static str,
        /// How to write it, in both spellings.
        hint: &'static str,
    },
    /// Two spellings of one key (`app-name` and `appName`) with different values.
    #[error("{first} and {second} are the same setting with different values: keep one")]
    Conflict {
        /// One spelling, as written (in backquotes, or quoted if it has odd characters), the first in byte order.
        first: String,
        /// The other spelling, as written.
        second: String,
    },
    /// A key with a value of the wrong JSON type.
    #[error("{key} must be {expected}, found {found}")]
    WrongType {
        /// The key as written (in backquotes), with the index for an array element.
        key: String,
        /// What it must be: "a string", "a whole number", ...
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },
    /// A value of the right type that promd cannot use (a timeout under 1 s, a retry count
    /// past u32, a MUSIC location that is not a host, ...).
    #[error("{key} = {value}: {reason}")]
    BadValue {
        /// The key as written (in backquotes).
        key: String,
        /// The value as written (a command or a credential is never shown).
        value: String,
        /// Why it cannot be used, and what would do.
        reason: String,
    },
    /// The replica id list is not 0 to N-1, each once.
    #[error(
        "{key}: the replica ids must be 0 to N-1, each once (PROM and HAL require it): {reason}"
    )]
    ReplicaIds {
        /// The key as written (in backquotes).
        key: String,
        /// Which id is missing, repeated or not a number.
        reason: String,
    },
    /// `--replica` is not a whole number.
    #[error("--replica {replica:?} is not a replica id: give a whole number such as 0")]
    BadReplicaArg {
        /// The argument as given.
        replica: String,
    },
    /// `--replica` names an id the list does not have.
    #[error("replica {replica} is not in {key} (the ids are {ids})")]
    UnknownReplica {
        /// The id asked for.
        replica: u64,
        /// The list's key as written (in backquotes).
        key: String,
        /// The ids the list has, as "0 to N-1".
        ids: String,
    },
    /// The host's `ensure-active-ID` / `ensure-passive-ID` command is missing, empty, or
    /// cannot be written as an `ExecStart=` line.
    #[error("{key}: {reason}")]
    BadCommand {
        /// The key as written (in backquotes).
        key: String,
        /// What is wrong with the command (the command itself is not shown).
        reason: String,
    },
    /// [`write_files`] could not write, or found a file in the way.
    #[error("{path}: {reason}")]
    Write {
        /// The file or directory concerned.
        path: PathBuf,
        /// The system's error, or that the file exists already (then nothing was written).
        reason: String,
    },
}

/// Converts a PROM / HAL `config.json` into promd's files for the host that runs `replica`.
///
/// Accepts both spellings of the keys (PROM's `app-name`, `prom-timeout`,
/// `no-of-retry-attempts`, `replica-id-list`, `music-location`, `restart-prom-i`; HAL's
/// `appName`, `timeout`/`hal-timeout`, `noOfRetryAttempts`, `replicaIdList`, `musicLocation`,
/// `restart-hal-i`, `start-as-active-i`; any camelCase form of a PROM key), and numbers written
/// as JSON numbers or as strings of digits.
pub fn import_prom(json: &str, replica: &str) -> Result<Migration, ImportError> {
    let value: Value = serde_json::from_str(json).map_err(json_error)?;
    let Value::Object(object) = value else {
        return Err(ImportError::NotAnObject {
            found: type_name(&value),
        });
    };
    let keys = Keys::read(&object)?;
    Importer::new(&keys, replica)?.run()
}

/// Writes the files of `migration` into `out_dir` (created if needed). Refuses to overwrite:
/// if any of the files exists, nothing is written. Returns the paths written.
pub fn write_files(out_dir: &Path, migration: &Migration) -> Result<Vec<PathBuf>, ImportError> {
    let write_error = |path: &Path, err: std::io::Error| ImportError::Write {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| write_error(out_dir, e))?;
    let paths: Vec<PathBuf> = migration
        .files
        .iter()
        .map(|(relative, _)| out_dir.join(relative))
        .collect();
    for path in &paths {
        if path.symlink_metadata().is_ok() {
            return Err(ImportError::Write {
                path: path.clone(),
                reason: "exists already; nothing was written (remove it or choose another --out)"
                    .to_owned(),
            });
        }
    }
    for (path, (_, text)) in paths.iter().zip(&migration.files) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| write_error(path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| write_error(path, e))?;
    }
    Ok(paths)
}
