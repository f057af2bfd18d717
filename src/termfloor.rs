//! The highest term (`PROMD_TERM`) this host has seen or handed out in each group, kept on
//! disk so that it survives restarts of promd and of the host, and a store that loses its
//! history (etcd restored from an older snapshot, a recreated dir-store group): the floor the
//! group machine starts from ([`crate::core::GroupParams::term_floor`]).
//!
//! One file per group, `STATE/.terms/NODE/GROUP`, holding `{"v":1,"term":N}` (a
//! [`TermRecord`], read like every store value: unknown fields ignored, another version
//! refused). `STATE` is `$STATE_DIRECTORY` (what `StateDirectory=promd` sets: `/var/lib/promd`),
//! so the runtime and the tests can point it elsewhere. The leading dot keeps the folder apart
//! from the dir store's group folders (group names never start with one), and `NODE` keeps two
//! hosts apart should `/var/lib/promd` be a shared mount.
//!
//! Written atomically and durably (file and folder fsynced) before a unit is handed a term,
//! and whenever the machine learns of a higher one.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::store::record::{self, FORMAT_VERSION, RecordError, TermRecord};
use crate::systemd::{SystemdError, write_atomically};

/// The state folder when `$STATE_DIRECTORY` is not set (promd run outside its unit).
pub const DEFAULT_STATE_DIR: &str = "/var/lib/promd";

/// Why a kept term cannot be read or written.
#[derive(Debug, Error)]
pub enum TermFloorError {
    /// The file exists but cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file holds no term this promd reads: it is not trusted (and is replaced by the
    /// next term kept).
    #[error("{}: {error}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// Why.
        error: RecordError,
    },
    /// The term could not be written (or made durable).
    #[error("cannot keep the term: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        source: SystemdError,
    },
}

/// The kept terms of this node's groups, and what is known to be on disk.
#[derive(Debug)]
pub struct TermFloors {
    dir: PathBuf,
    /// Group → the term on disk (as loaded, or last written).
    kept: BTreeMap<String, u64>,
}

impl TermFloors {
    /// The state folder: the first path of `$STATE_DIRECTORY`, else [`DEFAULT_STATE_DIR`].
    pub fn state_dir() -> PathBuf {
        std::env::var_os("STATE_DIRECTORY")
            .and_then(|v| {
                let first = v.to_str()?.split(':').next()?.to_string();
                (!first.is_empty()).then(|| PathBuf::from(first))
            })
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
    }

    /// The kept terms of `node` under `state`, none loaded yet.
    pub fn new(state: &Path, node: &str) -> TermFloors {
        TermFloors {
            dir: state.join(".terms").join(node),
            kept: BTreeMap::new(),
        }
    }

    /// The file of `group`.
    pub fn path(&self, group: &str) -> PathBuf {
        self.dir.join(group)
    }

    /// Load every group's kept term; a missing folder is no terms. Files that cannot be
    /// trusted are left out (their groups start from 0) and returned as errors, for the
    /// journal.
    pub fn load_all(&mut self) -> (BTreeMap<String, u64>, Vec<TermFloorError>) {
        let mut errors = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return (BTreeMap::new(), errors);
            }
            Err(source) => {
                let path = self.dir.clone();
                errors.push(TermFloorError::Read { path, source });
                return (BTreeMap::new(), errors);
            }
        };
        for entry in entries.flatten() {
            let Some(group) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            // Temporary files of an interrupted write, and anything not named like a group.
            if !crate::config::valid_group_name(&group) {
                continue;
            }
            match self.load(&group) {
                Ok(term) => {
                    self.kept.insert(group, term);
                }
                Err(e) => errors.push(e),
            }
        }
        (self.kept.clone(), errors)
    }

    /// `group`'s kept term: 0 if there is none.
    pub fn load(&self, group: &str) -> Result<u64, TermFloorError> {
        let path = self.path(group);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(source) => return Err(TermFloorError::Read { path, source }),
        };
        record::decode::<TermRecord>(&bytes)
            .map(|r| r.term)
            .map_err(|error| TermFloorError::Invalid { path, error })
    }

    /// Keep `term` for `group` if it is above the term on disk: written atomically, and
    /// durable (file and folder fsynced) when this returns `Ok`.
    pub fn keep(&mut self, group: &str, term: u64) -> Result<(), TermFloorError> {
        if self.kept.get(group).is_some_and(|&kept| kept >= term) {
            return Ok(());
        }
        let path = self.path(group);
        let bytes = record::encode(&TermRecord {
            v: FORMAT_VERSION,
            term,
        });
        let fail = |source| TermFloorError::Write {
            path: path.clone(),
            source,
        };
        write_atomically(&path, &bytes).map_err(fail)?;
        std::fs::File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(|error| {
                fail(SystemdError::Io {
                    path: self.dir.clone(),
                    error,
                })
            })?;
        self.kept.insert(group.to_string(), term);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_term_survives_and_only_grows() {
        let state = tempfile::tempdir().unwrap();
        let mut floors = TermFloors::new(state.path(), "db-a");
        floors.keep("web", 7).unwrap();
        floors.keep("web", 5).unwrap();
        floors.keep("db", 3).unwrap();
        let text = std::fs::read_to_string(state.path().join(".terms/db-a/web")).unwrap();
        assert_eq!(text, r#"{"v":1,"term":7}"#);

        let mut again = TermFloors::new(state.path(), "db-a");
        let (kept, errors) = again.load_all();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(kept, BTreeMap::from([("db".into(), 3), ("web".into(), 7)]));
        assert_eq!(
            TermFloors::new(state.path(), "db-b").load("web").unwrap(),
            0
        );
    }

    #[test]
    fn an_untrusted_file_is_reported_and_replaced() {
        let state = tempfile::tempdir().unwrap();
        let mut floors = TermFloors::new(state.path(), "a");
        let dir = state.path().join(".terms/a");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("web"), r#"{"v":2,"term":9}"#).unwrap();
        std::fs::write(dir.join("db"), r#"{"v":1,"term":4,"newer":true}"#).unwrap();
        std::fs::write(dir.join("web.promd-tmp"), "half").unwrap();
        let (kept, errors) = floors.load_all();
        assert_eq!(kept, BTreeMap::from([("db".into(), 4)]));
        let errors: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert_eq!(
            errors,
            [format!(
                "{}: format version 2 is not supported (this promd reads version 1)",
                dir.join("web").display()
            )]
        );
        floors.keep("web", 1).unwrap();
        assert_eq!(floors.load("web").unwrap(), 1);
    }
}
