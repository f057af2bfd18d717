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
//! and whenever the machine learns of a higher one. The runtime writes them through a
//! [`TermWriter`], on a thread of its own and in batches: a file and its folder fsynced take
//! 5–15 ms on a virtual disk, and a failover of hundreds of groups, kept one after the other
//! on promd's loop, held it for seconds on every host (passive hosts keep the terms they see
//! too). A start waits for its own group's term only.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::mpsc as std_mpsc;
use std::thread::JoinHandle;

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
    /// The thread that writes terms ([`TermWriter`]) has ended: nothing more is kept.
    #[error("cannot keep the term: the thread that writes terms has ended")]
    WriterGone,
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
#[derive(Debug, Clone)]
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
            // Temporary files of an interrupted write, and anything not named like a group
            // or a slot of one (`GROUP@k`: each slot has its own terms, docs/slots.md).
            if !crate::config::valid_slot_name(&group) {
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
        match self
            .keep_batch(BTreeMap::from([(group.to_string(), term)]))
            .pop()
        {
            Some(kept) => kept.result,
            None => Ok(()),
        }
    }
}

/// Files written side by side in a batch: a journalling file system commits concurrent fsyncs
/// together, so a batch of hundreds costs a few commits, not hundreds.
const WRITERS: usize = 8;

/// What became of one term asked of a [`TermWriter`].
#[derive(Debug)]
pub struct Kept {
    /// The group.
    pub group: String,
    /// The term asked for (the highest asked for the group when its batch began).
    pub term: u64,
    /// `Ok`: the term is on disk, durable; the group's floor is at least `term`.
    pub result: Result<(), TermFloorError>,
}

impl TermFloors {
    /// Keep every `(group, term)` of `batch` that is above the term on disk: the files written
    /// [`WRITERS`] at a time (each atomically, its data fsynced), then the folder fsynced once.
    /// One [`Kept`] per group asked for, in name order; a failed folder fsync fails them all.
    pub fn keep_batch(&mut self, batch: BTreeMap<String, u64>) -> Vec<Kept> {
        let todo: Vec<(String, u64)> = batch
            .into_iter()
            .filter(|(g, t)| self.kept.get(g).is_none_or(|k| k < t))
            .collect();
        if todo.is_empty() {
            return Vec::new();
        }
        // Each writer takes one contiguous share, so the results come back in `todo`'s order.
        let share = todo.len().div_ceil(WRITERS);
        let this: &TermFloors = self;
        let written: Vec<Result<(), TermFloorError>> = std::thread::scope(|scope| {
            let workers: Vec<_> = todo
                .chunks(share)
                .map(|chunk| {
                    let handle = scope.spawn(move || {
                        chunk
                            .iter()
                            .map(|(group, term)| this.write(group, *term))
                            .collect::<Vec<_>>()
                    });
                    (chunk, handle)
                })
                .collect();
            workers
                .into_iter()
                .flat_map(|(chunk, handle)| {
                    // A writer that panicked (it cannot: writes only return errors) kept none
                    // of its share.
                    handle.join().unwrap_or_else(|_| {
                        chunk
                            .iter()
                            .map(|(group, _)| Err(this.thread_failed(group)))
                            .collect()
                    })
                })
                .collect()
        });
        let synced = self.sync_dir();
        let mut out = Vec::with_capacity(todo.len());
        for ((group, term), result) in todo.into_iter().zip(written) {
            let result = match (result, &synced) {
                (Ok(()), Ok(())) => {
                    self.kept.insert(group.clone(), term);
                    Ok(())
                }
                (Err(e), _) => Err(e),
                (Ok(()), Err(e)) => Err(TermFloorError::Write {
                    path: self.dir.clone(),
                    source: SystemdError::Io {
                        path: self.dir.clone(),
                        error: std::io::Error::new(e.kind(), e.to_string()),
                    },
                }),
            };
            out.push(Kept {
                group,
                term,
                result,
            });
        }
        out
    }

    /// `group`'s file, atomically, its data fsynced (not yet its folder).
    fn write(&self, group: &str, term: u64) -> Result<(), TermFloorError> {
        let path = self.path(group);
        let bytes = record::encode(&TermRecord {
            v: FORMAT_VERSION,
            term,
        });
        write_atomically(&path, &bytes).map_err(|source| TermFloorError::Write { path, source })
    }

    /// The error of a write whose thread died.
    fn thread_failed(&self, group: &str) -> TermFloorError {
        let path = self.path(group);
        TermFloorError::Write {
            path: path.clone(),
            source: SystemdError::Io {
                path,
                error: std::io::Error::other("the writer thread failed"),
            },
        }
    }

    /// fsync the folder, so that the renames in it are durable.
    fn sync_dir(&self) -> std::io::Result<()> {
        std::fs::File::open(&self.dir).and_then(|d| d.sync_all())
    }
}

/// Keeps terms on disk from a thread of its own (see the module documentation): asking never
/// blocks, and whatever is asked while a batch is written goes into the next one. Each
/// batch's [`Kept`]s go to the channel given to [`TermWriter::start`].
#[derive(Debug)]
pub struct TermWriter {
    asks: Option<std_mpsc::Sender<(String, u64)>>,
    thread: Option<JoinHandle<()>>,
}

impl TermWriter {
    /// Start the thread, writing into `floors` (loaded already) and reporting to `done`.
    /// Errors: the thread cannot be spawned.
    pub fn start(
        mut floors: TermFloors,
        done: tokio::sync::mpsc::UnboundedSender<Vec<Kept>>,
    ) -> std::io::Result<TermWriter> {
        let (asks, rx) = std_mpsc::channel::<(String, u64)>();
        let thread = std::thread::Builder::new()
            .name("promd-terms".into())
            .spawn(move || {
                // Ends once the runtime drops its sender, after the last batch asked for.
                while let Ok((group, term)) = rx.recv() {
                    let mut batch = BTreeMap::from([(group, term)]);
                    while let Ok((group, term)) = rx.try_recv() {
                        let t = batch.entry(group).or_insert(term);
                        *t = (*t).max(term);
                    }
                    let kept = floors.keep_batch(batch);
                    if !kept.is_empty() && done.send(kept).is_err() {
                        return;
                    }
                }
            })?;
        Ok(TermWriter {
            asks: Some(asks),
            thread: Some(thread),
        })
    }

    /// Ask for `term` to be kept for `group` (a term not above the one on disk is answered
    /// by nothing). `false`: the thread is gone, nothing will be kept.
    pub fn keep(&self, group: &str, term: u64) -> bool {
        self.asks
            .as_ref()
            .is_some_and(|a| a.send((group.to_string(), term)).is_ok())
    }

    /// Write what was asked, then end the thread; asking afterwards keeps nothing.
    pub fn finish(&mut self) {
        self.asks = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
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
        floors.keep("sched@1", 9).unwrap();
        let text = std::fs::read_to_string(state.path().join(".terms/db-a/web")).unwrap();
        assert_eq!(text, r#"{"v":1,"term":7}"#);

        let mut again = TermFloors::new(state.path(), "db-a");
        let (kept, errors) = again.load_all();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            kept,
            BTreeMap::from([("db".into(), 3), ("sched@1".into(), 9), ("web".into(), 7)])
        );
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

    #[test]
    fn a_batch_is_kept_and_answered_per_group() {
        let state = tempfile::tempdir().unwrap();
        let mut floors = TermFloors::new(state.path(), "a");
        floors.keep("db", 9).unwrap();
        let batch: BTreeMap<String, u64> = (0..20)
            .map(|i| (format!("g{i}"), 100 + i))
            .chain([("db".to_string(), 4)])
            .collect();
        let kept = floors.keep_batch(batch);
        assert_eq!(kept.len(), 20, "db's 4 is below its 9: nothing to write");
        assert!(kept.iter().all(|k| k.result.is_ok()), "{kept:?}");
        // Answered in name order, each with its own term, whichever writer wrote it.
        let answered: Vec<(String, u64)> = kept.iter().map(|k| (k.group.clone(), k.term)).collect();
        let mut expected: Vec<(String, u64)> =
            (0..20).map(|i| (format!("g{i}"), 100 + i)).collect();
        expected.sort();
        assert_eq!(answered, expected);
        let (loaded, errors) = TermFloors::new(state.path(), "a").load_all();
        assert!(errors.is_empty());
        assert_eq!(loaded.get("g7"), Some(&107));
        assert_eq!(loaded.get("db"), Some(&9));
    }

    #[tokio::test]
    async fn the_writer_reports_each_batch_and_a_failure_per_group() {
        let state = tempfile::tempdir().unwrap();
        // A file where the node's folder should be: nothing can be written under it.
        std::fs::create_dir_all(state.path().join(".terms")).unwrap();
        std::fs::write(state.path().join(".terms/broken"), "").unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut good = TermWriter::start(TermFloors::new(state.path(), "a"), tx.clone()).unwrap();
        let mut bad = TermWriter::start(TermFloors::new(state.path(), "broken"), tx).unwrap();
        assert!(good.keep("web", 5));
        assert!(good.keep("web", 6));
        assert!(bad.keep("web", 5));
        let mut seen = Vec::new();
        while !(seen.contains(&(5, false)) && seen.contains(&(6, true))) {
            for k in rx.recv().await.unwrap() {
                seen.push((k.term, k.result.is_ok()));
            }
        }
        good.finish();
        bad.finish();
        // The good writer kept 6 (in one batch with 5, or after it); the bad one failed.
        assert_eq!(
            TermFloors::new(state.path(), "a").load("web").unwrap(),
            6,
            "{seen:?}"
        );
    }
}
