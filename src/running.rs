//! `/run/promd/running.json`: what the running promd keeps until it restarts (`node` and
//! `[store]`, see [`Fixed`]), so that `promd check-config --reload` can refuse a file that a
//! reload could not apply before `systemctl reload` signals promd.
//!
//! promd writes the record atomically at start-up, before it reports `READY=1`. `/run` is
//! emptied at boot, but `RuntimeDirectoryPreserve=yes` keeps the record of a promd that is
//! gone (crashed, stopped); so the record names the process that wrote it by its pid and its
//! start time (field 22 of `/proc/PID/stat`, clock ticks since boot), and a record whose
//! process is gone, or whose pid now belongs to another process, is stale and ignored.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::{Config, Fixed};

/// The record's file name in promd's runtime directory ([`crate::runtime::RUN_DIR`]).
pub const RECORD_FILE: &str = "running.json";

/// A running promd, as it recorded itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// The process that wrote the record.
    pub pid: u32,
    /// That process's start time, in clock ticks since boot (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// The configuration file it was started with.
    pub config_path: PathBuf,
    /// What a reload may not change.
    pub fixed: Fixed,
}

/// What the runtime directory says about a running promd.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// The record of a promd that is running now.
    Running(Record),
    /// No record: no promd has started since boot (or it could not write one).
    Absent,
    /// A record whose process is gone, or whose pid another process has now.
    Stale(Record),
}

/// Why the record could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum RunningError {
    /// This process's own start time could not be read.
    #[error("cannot read /proc/self/stat: {0}")]
    SelfStat(std::io::Error),
    /// Writing the record failed.
    #[error("cannot write {path}: {error}")]
    Write {
        /// The file (or its temporary sibling) that failed.
        path: PathBuf,
        /// The reason.
        error: std::io::Error,
    },
    /// Reading the record failed (other than its absence).
    #[error("cannot read {path}: {error}")]
    Read {
        /// The record.
        path: PathBuf,
        /// The reason.
        error: std::io::Error,
    },
    /// The record is not what promd writes.
    #[error("{path} is not a promd record: {error}")]
    Format {
        /// The record.
        path: PathBuf,
        /// The reason.
        error: serde_json::Error,
    },
}

/// Record this process as the running promd with `config`, read from `config_path`, in
/// `dir`; returns the record's path. Readers see the old record or the new one, never a mix.
pub fn write(dir: &Path, config_path: &Path, config: &Config) -> Result<PathBuf, RunningError> {
    let pid = std::process::id();
    let start_time = start_time_of("self").map_err(RunningError::SelfStat)?;
    let record = Record {
        pid,
        start_time,
        config_path: config_path.to_path_buf(),
        fixed: Fixed::of(config),
    };
    let path = dir.join(RECORD_FILE);
    let mut text = serde_json::to_string_pretty(&record).map_err(|error| RunningError::Format {
        path: path.clone(),
        error,
    })?;
    text.push('\n');
    let tmp = dir.join(format!(".{RECORD_FILE}.{pid}.tmp"));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            // Anyone may compare a file with it (`promd check-config` as a user): it holds
            // names and addresses, no secret.
            .mode(0o644)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    })();
    written.map_err(|error| {
        let _ = std::fs::remove_file(&tmp);
        RunningError::Write {
            path: path.clone(),
            error,
        }
    })?;
    Ok(path)
}

/// Read the record in `dir` and tell whether its promd still runs.
pub fn read(dir: &Path) -> Result<Found, RunningError> {
    let path = dir.join(RECORD_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Found::Absent),
        Err(error) => return Err(RunningError::Read { path, error }),
    };
    let record: Record =
        serde_json::from_str(&text).map_err(|error| RunningError::Format { path, error })?;
    let alive = start_time_of(&record.pid.to_string()).is_ok_and(|t| t == record.start_time);
    Ok(if alive {
        Found::Running(record)
    } else {
        Found::Stale(record)
    })
}

/// The start time of process `pid` ("self" for this one), in clock ticks since boot.
fn start_time_of(pid: &str) -> std::io::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_start_time(&stat).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("unexpected /proc/{pid}/stat"),
        )
    })
}

/// Field 22 of a `/proc/PID/stat` line. The command name (field 2) is in parentheses and
/// may hold spaces and parentheses itself, so fields are counted after the last `)`.
fn parse_start_time(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    // `rest` starts with field 3 (the state); field 22 is the 20th after it.
    rest.split_whitespace().nth(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    fn config() -> Config {
        parse(
            "node = \"a\"\n[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\n",
            "t.toml",
        )
        .unwrap()
    }

    #[test]
    fn start_time_is_field_22_even_with_odd_command_names() {
        let stat = "42 (a) b (c)) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 123 4";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("42 (x) S 1"), None);
        assert!(start_time_of("self").is_ok_and(|t| t > 0));
    }

    #[test]
    fn a_record_of_this_process_is_running() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), Found::Absent);
        let path = write(dir.path(), Path::new("/etc/promd/promd.toml"), &config()).unwrap();
        assert_eq!(path, dir.path().join(RECORD_FILE));
        let Found::Running(record) = read(dir.path()).unwrap() else {
            panic!("not running");
        };
        assert_eq!(record.pid, std::process::id());
        assert_eq!(record.fixed, Fixed::of(&config()));
        assert_eq!(record.config_path, Path::new("/etc/promd/promd.toml"));
        let mode = std::fs::metadata(&path).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o644
        );
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_record_of_another_process_or_another_start_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        write(dir.path(), Path::new("/p.toml"), &config()).unwrap();
        let path = dir.path().join(RECORD_FILE);
        let mut record: Record =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        // The same pid, started at another time: the pid was reused.
        record.start_time += 1;
        std::fs::write(&path, serde_json::to_string(&record).unwrap()).unwrap();
        assert!(matches!(read(dir.path()).unwrap(), Found::Stale(_)));
        // A pid that no process has (above the kernel's maximum).
        record.pid = 1 << 23;
        std::fs::write(&path, serde_json::to_string(&record).unwrap()).unwrap();
        assert!(matches!(read(dir.path()).unwrap(), Found::Stale(r) if r.pid == 1 << 23));
    }

    #[test]
    fn a_garbled_record_is_an_error_that_names_it() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(RECORD_FILE), "{\"pid\": 1").unwrap();
        let err = read(dir.path()).unwrap_err();
        assert!(
            err.to_string()
                .contains("running.json is not a promd record"),
            "{err}"
        );
    }
}
