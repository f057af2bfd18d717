//! One promd per host. Two promd processes on one host would each take the other's units
//! for leftovers of an earlier run and kill them at start-up, and each take the other's store
//! records (same host, same `node`) for its own. So the first thing promd does is take an
//! exclusive lock on [`LOCK_PATH`]; a second promd finds it taken and refuses to start.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use thiserror::Error;

/// The lock file, in `promd.service`'s `RuntimeDirectory=`. It holds the pid of the promd
/// that holds the lock, for the message of the one that is refused.
pub const LOCK_PATH: &str = "/run/promd/promd.lock";

/// Why [`HostLock::acquire`] failed; promd exits on either.
#[derive(Debug, Error)]
pub enum HostLockError {
    /// Another process holds the lock: another promd runs on this host.
    #[error(
        "another promd already runs on this host{} (it holds {path}); one promd per host serves every group",
        .pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Taken {
        /// The lock file.
        path: String,
        /// The pid the holder wrote into the file, if it could be read.
        pid: Option<u32>,
    },
    /// The directory or the file could not be created or opened, or flock(2) failed for
    /// another reason than a holder.
    #[error("cannot lock {path}: {error}")]
    Io {
        /// The lock file.
        path: String,
        /// The system's error.
        error: String,
    },
}

/// The host lock, held until dropped (the process exits).
#[derive(Debug)]
pub struct HostLock {
    _lock: Flock<File>,
}

impl HostLock {
    /// Take the lock at `path`, creating its directory (0755) and the file (0644) if needed,
    /// without waiting. Errors: [`HostLockError::Taken`] if another process holds it,
    /// [`HostLockError::Io`] if it cannot be opened or locked.
    pub fn acquire(path: &Path) -> Result<HostLock, HostLockError> {
        let io = |e: &dyn std::fmt::Display| HostLockError::Io {
            path: path.display().to_string(),
            error: e.to_string(),
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io(&e))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .open(path)
            .map_err(|e| io(&e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, Errno::EWOULDBLOCK)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(HostLockError::Taken {
                    path: path.display().to_string(),
                    pid: text.trim().parse().ok(),
                });
            }
            Err((_, e)) => return Err(io(&e)),
        };
        let pid = std::process::id();
        let written = lock
            .set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{pid}"));
        written.map_err(|e| io(&e))?;
        Ok(HostLock { _lock: lock })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_with_the_holders_pid_and_free_again_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/promd.lock");
        let first = HostLock::acquire(&path).unwrap();
        match HostLock::acquire(&path) {
            Err(HostLockError::Taken { pid, .. }) => assert_eq!(pid, Some(std::process::id())),
            other => panic!("expected Taken, got {other:?}"),
        }
        let msg = HostLock::acquire(&path).unwrap_err().to_string();
        assert!(
            msg.starts_with("another promd already runs on this host (pid "),
            "{msg}"
        );
        drop(first);
        HostLock::acquire(&path).unwrap();
    }
}
