//! The group's files: paths, atomic writes, bounded reads, reading the group, and the OFD lock.
//! What the files mean to the runtime is the shared [`policy`](crate::store::policy)'s call:
//! [`Files::reading`] only says which of them still count.

use std::collections::BTreeMap;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use serde::de::DeserializeOwned;

use crate::store::error::{DirError, ValueError};
use crate::store::policy::{self, Reading};
use crate::store::record::{
    LeaderRecord, MaintenanceRecord, MemberRecord, SwitchoverRecord, Versioned,
};

use super::format::{Entry, decode_durable, decode_entry, decode_term, unix_micros};
use super::{FILE_MODE, MAX_FILE};

#[derive(Debug, Clone)]
pub(super) struct Paths {
    pub(super) root: PathBuf,
    pub(super) dir: PathBuf,
    pub(super) members: PathBuf,
    pub(super) lock: PathBuf,
    pub(super) leader: PathBuf,
    pub(super) term: PathBuf,
    pub(super) switchover: PathBuf,
    pub(super) maintenance: PathBuf,
    /// This node's member file.
    pub(super) member: PathBuf,
}

impl Paths {
    /// `group` and `node` are valid names (checked by config): safe as path components.
    pub(super) fn new(root: &Path, group: &str, node: &str) -> Paths {
        let dir = root.join(group);
        let members = dir.join("members");
        Paths {
            root: root.to_path_buf(),
            lock: dir.join("lock"),
            leader: dir.join("leader"),
            term: dir.join("term"),
            switchover: dir.join("switchover"),
            maintenance: dir.join("maintenance"),
            member: members.join(node),
            members,
            dir,
        }
    }
}

/// Create the group's directories (mode 0750) under an existing root.
pub(super) fn ensure_dirs(paths: &Paths) -> Result<(), DirError> {
    match fs::metadata(&paths.root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(DirError::NotADirectory(paths.root.clone())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DirError::Missing(paths.root.clone()));
        }
        Err(e) => return Err(DirError::io(&paths.root)(e)),
    }
    make_dir(&paths.dir)?;
    make_dir(&paths.members)
}

pub(super) fn make_dir(path: &Path) -> Result<(), DirError> {
    match DirBuilder::new().mode(0o750).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(DirError::io(path)(e)),
    }
}

/// Replace `path` atomically: readers (which take no lock) see the old or the new content,
/// never a part. The temporary name starts with a dot, so it is never taken for a member, and
/// is fixed, because every write happens under the group lock.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), DirError> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        // Not a file path: cannot happen for the paths of [`Paths`].
        return Err(DirError::io(path)(io::ErrorKind::InvalidInput.into()));
    };
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(&tmp)
        .map_err(DirError::io(&tmp))?;
    file.write_all(bytes).map_err(DirError::io(&tmp))?;
    file.sync_all().map_err(DirError::io(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(DirError::io(path))?;
    if durable {
        // Make the rename itself survive a crash (the term must never go back).
        sync_dir(dir)?;
    }
    Ok(())
}

/// Make a rename or a deletion in `dir` survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), DirError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(DirError::io(dir))
}

pub(super) fn remove(path: &Path) -> Result<(), DirError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(DirError::io(path)(e)),
    }
}

/// A file's bytes (at most [`MAX_FILE`] + 1) and mtime, or `None` if it does not exist.
pub(super) fn read_small(path: &Path) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut tries = 0;
    loop {
        match read_once(path) {
            // NFS: the file was replaced between open and read. Its successor is there.
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

pub(super) fn read_once(path: &Path) -> io::Result<Option<(Vec<u8>, u64)>> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mtime = unix_micros(file.metadata()?.modified()?).unwrap_or(0);
    let mut bytes = Vec::new();
    file.take(MAX_FILE + 1).read_to_end(&mut bytes)?;
    Ok(Some((bytes, mtime)))
}

/// One session-bound file as found.
#[derive(Debug, Clone)]
pub(super) enum Slot<T> {
    Absent,
    /// There, but not to be trusted. `mtime` (wall microseconds) stands in for the expiry
    /// the file does not tell.
    Corrupt {
        error: ValueError,
        mtime: u64,
    },
    Valid(Entry<T>),
}

impl<T> Slot<T> {
    pub(super) fn owned_by(&self, session: &str) -> Option<&Entry<T>> {
        match self {
            Slot::Valid(e) if e.session == session => Some(e),
            _ => None,
        }
    }
}

/// Read one session-bound file; `check` may refuse a decoded entry (it stays corrupt, with
/// its mtime, like any unreadable file).
pub(super) fn read_slot<T: DeserializeOwned + Versioned>(
    path: &Path,
    check: impl FnOnce(&Entry<T>) -> Result<(), ValueError>,
) -> Result<Slot<T>, DirError> {
    let Some((bytes, mtime)) = read_small(path).map_err(DirError::io(path))? else {
        return Ok(Slot::Absent);
    };
    let decoded = if bytes.len() as u64 > MAX_FILE {
        Err(ValueError::TooLarge { limit: MAX_FILE })
    } else {
        decode_entry(&bytes)
            .map_err(ValueError::from)
            .and_then(|entry| check(&entry).map(|()| entry))
    };
    Ok(match decoded {
        Ok(entry) => Slot::Valid(entry),
        Err(error) => Slot::Corrupt { error, mtime },
    })
}

pub(super) fn any<T>(_: &Entry<T>) -> Result<(), ValueError> {
    Ok(())
}

/// A file bound to no session, as found.
#[derive(Debug, Clone)]
pub(super) enum Kept<T> {
    Absent,
    Corrupt(ValueError),
    Valid(T),
}

pub(super) fn read_kept<T: DeserializeOwned + Versioned>(path: &Path) -> Result<Kept<T>, DirError> {
    let Some((bytes, _)) = read_small(path).map_err(DirError::io(path))? else {
        return Ok(Kept::Absent);
    };
    if bytes.len() as u64 > MAX_FILE {
        return Ok(Kept::Corrupt(ValueError::TooLarge { limit: MAX_FILE }));
    }
    Ok(match decode_durable(&bytes) {
        Ok(rec) => Kept::Valid(rec),
        Err(e) => Kept::Corrupt(e.into()),
    })
}

/// Everything in the group's directory, as read at one moment.
pub(super) struct Files {
    pub(super) leader: Slot<LeaderRecord>,
    /// The `term` file's counter (0 if there is none yet), or why it cannot be read.
    pub(super) term: Result<u64, ValueError>,
    /// Member files named like nodes, by node name.
    pub(super) members: BTreeMap<String, Slot<MemberRecord>>,
    pub(super) switchover: Slot<SwitchoverRecord>,
    pub(super) maintenance: Kept<MaintenanceRecord>,
}

impl Files {
    pub(super) fn read(paths: &Paths) -> Result<Files, DirError> {
        let leader = read_slot::<LeaderRecord>(&paths.leader, |e| match e.term {
            Some(_) => Ok(()),
            None => Err(ValueError::NoTerm),
        })?;
        let term = match read_small(&paths.term).map_err(DirError::io(&paths.term))? {
            None => Ok(0),
            Some((bytes, _)) => decode_term(&bytes).map_err(ValueError::from),
        };
        Ok(Files {
            leader,
            term,
            members: read_members(paths)?,
            switchover: read_slot(&paths.switchover, any)?,
            maintenance: read_kept(&paths.maintenance)?,
        })
    }

    /// When the leader file stops counting: its session's expiry, or for an unreadable one,
    /// its mtime plus a lease (the longest a live holder goes without rewriting it).
    pub(super) fn leader_expiry(&self, lease_us: u64) -> Option<u64> {
        match &self.leader {
            Slot::Absent => None,
            Slot::Corrupt { mtime, .. } => Some(mtime.saturating_add(lease_us)),
            Slot::Valid(e) => Some(e.expires),
        }
    }

    pub(super) fn leader_live(&self, now: u64, lease_us: u64) -> bool {
        self.leader_expiry(lease_us).is_some_and(|exp| now < exp)
    }

    /// The term a new leader gets: above the counter, above the leader file's term should
    /// the counter have been lost, and above the campaigner's `floor` (the highest term it
    /// knows to have been handed out) should both have been lost with the group's directory.
    /// `None` if the counter cannot be read: guessing could hand out a term twice.
    pub(super) fn next_term(&self, floor: u64) -> Option<u64> {
        let counter = *self.term.as_ref().ok()?;
        let in_file = match &self.leader {
            Slot::Valid(e) => e.term.unwrap_or(0),
            _ => 0,
        };
        counter.max(in_file).max(floor).checked_add(1)
    }

    /// The files that count at wall time `now`, for the shared policy, and when the first of
    /// them stops counting (wall microseconds). A leader file counts until its expiry (an
    /// unreadable one: see [`Self::leader_expiry`]; its term is then the counter, the best
    /// guess); the other session-bound files until their expiry, or while unreadable (the
    /// policy leaves those out, and reports them).
    pub(super) fn reading(&self, paths: &Paths, now: u64, lease_us: u64) -> (Reading, Option<u64>) {
        let key = |path: &Path| path.display().to_string();
        let mut reading = Reading::default();
        let mut expiries = Vec::new();
        match (&self.leader, self.leader_expiry(lease_us)) {
            (Slot::Valid(e), Some(exp)) if now < exp => {
                let read = policy::Read::new(key(&paths.leader), Ok(e.record.clone()));
                reading.leader = Some((read, e.term.unwrap_or(0)));
                expiries.push(exp);
            }
            (Slot::Corrupt { error, .. }, Some(exp)) if now < exp => {
                let read = policy::Read::new(key(&paths.leader), Err(error.clone()));
                reading.leader = Some((read, *self.term.as_ref().unwrap_or(&0)));
                expiries.push(exp);
            }
            (Slot::Corrupt { error, .. }, _) => {
                reading.ignored.insert(key(&paths.leader), error.clone());
            }
            _ => {}
        }
        if let Err(error) = &self.term {
            reading.ignored.insert(key(&paths.term), error.clone());
        }
        for (node, slot) in &self.members {
            let value = match slot {
                Slot::Corrupt { error, .. } => Err(error.clone()),
                Slot::Valid(e) if now < e.expires => {
                    expiries.push(e.expires);
                    Ok(e.record.clone())
                }
                _ => continue,
            };
            let read = policy::Read::new(key(&paths.members.join(node)), value);
            reading.members.push((node.clone(), read));
        }
        let switchover = key(&paths.switchover);
        reading.switchover = match &self.switchover {
            Slot::Corrupt { error, .. } => Some(policy::Read::new(switchover, Err(error.clone()))),
            Slot::Valid(e) if now < e.expires => {
                expiries.push(e.expires);
                Some(policy::Read::new(switchover, Ok(e.record.clone())))
            }
            _ => None,
        };
        let maintenance = key(&paths.maintenance);
        reading.maintenance = match &self.maintenance {
            Kept::Absent => None,
            Kept::Corrupt(error) => Some(policy::Read::new(maintenance, Err(error.clone()))),
            Kept::Valid(rec) => Some(policy::Read::new(maintenance, Ok(rec.clone()))),
        };
        (reading, expiries.into_iter().min())
    }
}

/// A readable entry that has not expired at `now`; expired ones count as absent.
pub(super) fn live<T>(slot: &Slot<T>, now: u64) -> Option<&Entry<T>> {
    match slot {
        Slot::Valid(e) if now < e.expires => Some(e),
        _ => None,
    }
}

/// Every member file named like a node. The `members` directory must exist (the session
/// made it): without it the group's directory is gone (deleted, or the share unmounted), and
/// that is an unusable store, not an empty group.
pub(super) fn read_members(
    paths: &Paths,
) -> Result<BTreeMap<String, Slot<MemberRecord>>, DirError> {
    let entries = match fs::read_dir(&paths.members) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(DirError::Missing(paths.members.clone()));
        }
        Err(e) => return Err(DirError::io(&paths.members)(e)),
    };
    let mut members = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(DirError::io(&paths.members))?;
        let Some(node) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // Temporary files (".NODE.tmp") and anything else not named like a node.
        if !crate::config::valid_node_name(&node) {
            continue;
        }
        // Checked here, not only by the policy, so that a file under our name that names
        // another node is never taken for a record of ours or another host's.
        let named = |e: &Entry<MemberRecord>| policy::check_member(&node, &e.record);
        // One unreadable file (a stray file with the wrong owner, say) is left out like a
        // corrupt one; it must not make the whole group unusable.
        let slot =
            read_slot::<MemberRecord>(&entry.path(), named).unwrap_or_else(|e| Slot::Corrupt {
                error: e.into(),
                mtime: 0,
            });
        members.insert(node, slot);
    }
    Ok(members)
}

/// An exclusive OFD lock on the group's `lock` file, released when dropped (closing the only
/// descriptor of the open file releases an OFD lock).
pub(super) struct GroupLock {
    pub(super) _file: File,
}

impl GroupLock {
    /// Try for at most `wait`: a holder that does not let go (a stopped process, a hung NFS
    /// server) makes this job fail, and the task report the store down, rather than hang.
    pub(super) fn acquire(path: &Path, wait: Duration) -> Result<GroupLock, DirError> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(DirError::io(path))?;
        let deadline = Instant::now() + wait;
        let mut pause = Duration::from_millis(1);
        loop {
            // Whole file (l_len 0), exclusive. OFD rather than classic POSIX locks: those are
            // per process, and two groups' tasks (or tests) in one process would not exclude
            // each other.
            let request = libc::flock {
                l_type: libc::F_WRLCK as libc::c_short,
                l_whence: libc::SEEK_SET as libc::c_short,
                l_start: 0,
                l_len: 0,
                l_pid: 0,
            };
            match fcntl(&file, FcntlArg::F_OFD_SETLK(&request)) {
                Ok(_) => return Ok(GroupLock { _file: file }),
                Err(Errno::EAGAIN | Errno::EACCES | Errno::EINTR) if Instant::now() < deadline => {
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(10));
                }
                Err(Errno::EAGAIN | Errno::EACCES) => {
                    return Err(DirError::LockBusy {
                        path: path.to_path_buf(),
                        waited: wait,
                    });
                }
                Err(errno) => {
                    return Err(DirError::Lock {
                        path: path.to_path_buf(),
                        errno,
                    });
                }
            }
        }
    }
}
