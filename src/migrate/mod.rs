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
use std::time::Duration;

use serde_json::Value;

/// etcd's client port: the endpoints are MUSIC's hosts with this port.
const ETCD_PORT: u16 = 2379;
/// Priority of a replica that PROM started active (`start-active-i` = true).
const PREFERRED_PRIORITY: i32 = 200;
/// Priority of the other replicas (promd's default).
const DEFAULT_PRIORITY: i32 = 100;
/// promd refuses leases shorter than this (see `config.rs`).
const MIN_LEASE_MS: u64 = 1000;
/// The `WatchdogSec=` of the shipped `promd.service`.
const SHIPPED_WATCHDOG: Duration = Duration::from_secs(3);
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
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the configuration must be a JSON object ({{\"app-name\": ..., \"replica-id-list\": ...}}), found {found}"
    )]
    NotAnObject { found: &'static str },
    #[error("`{key}` is missing: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("{first} and {second} are the same setting with different values: keep one")]
    Conflict { first: String, second: String },
    #[error("{key} must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{key} = {value}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "{key}: the replica ids must be 0 to N-1, each once (PROM and HAL require it): {reason}"
    )]
    ReplicaIds { key: String, reason: String },
    #[error("--replica {replica:?} is not a replica id: give a whole number such as 0")]
    BadReplicaArg { replica: String },
    #[error("replica {replica} is not in {key} (the ids are {ids})")]
    UnknownReplica {
        replica: u64,
        key: String,
        ids: String,
    },
    #[error("{key}: {reason}")]
    BadCommand { key: String, reason: String },
    #[error("{path}: {reason}")]
    Write { path: PathBuf, reason: String },
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
