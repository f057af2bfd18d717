//! The group's files: paths, atomic writes, bounded reads, reading the group, and the OFD lock.

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

use crate::store::record::{
    self, LeaderRecord, MaintenanceRecord, MemberRecord, SwitchoverRecord, Versioned,
};
use crate::store::{Leader, UNREADABLE_NODE};

use super::format::{Entry, decode_durable, decode_entry, decode_term, unix_micros};
use super::jobs::{Snapshot, View};
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

pub(super) fn at(path: &Path) -> impl FnOnce(io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Create the group's directories (mode 0750) under an existing root.
pub(super) fn ensure_dirs(paths: &Paths) -> Result<(), String> {
    match fs::metadata(&paths.root) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(format!("{} is not a directory", paths.root.display())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("{} does not exist", paths.root.display()));
        }
        Err(e) => return Err(at(&paths.root)(e)),
    }
    make_dir(&paths.dir)?;
    make_dir(&paths.members)
}

pub(super) fn make_dir(path: &Path) -> Result<(), String> {
    match DirBuilder::new().mode(0o750).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(at(path)(e)),
    }
}

/// Replace `path` atomically: readers (which take no lock) see the old or the new content,
/// never a part. The temporary name starts with a dot, so it is never taken for a member, and
/// is fixed, because every write happens under the group lock.
pub(super) fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), String> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(format!("{}: not a file path", path.display()));
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
        .map_err(at(&tmp))?;
    file.write_all(bytes).map_err(at(&tmp))?;
    file.sync_all().map_err(at(&tmp))?;
    drop(file);
    fs::rename(&tmp, path).map_err(at(path))?;
    if durable {
        // Make the rename itself survive a crash (the term must never go back).
        sync_dir(dir)?;
    }
    Ok(())
}

/// Make a rename or a deletion in `dir` survive a crash.
pub(super) fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

pub(super) fn remove(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at(path)(e)),
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
        error: String,
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
    check: impl FnOnce(&Entry<T>) -> Result<(), String>,
) -> Result<Slot<T>, String> {
    let Some((bytes, mtime)) = read_small(path).map_err(at(path))? else {
        return Ok(Slot::Absent);
    };
    let decoded = if bytes.len() as u64 > MAX_FILE {
        Err(format!("larger than {MAX_FILE} bytes"))
    } else {
        decode_entry(&bytes)
            .map_err(|e| e.to_string())
            .and_then(|entry| check(&entry).map(|()| entry))
    };
    Ok(match decoded {
        Ok(entry) => Slot::Valid(entry),
        Err(error) => Slot::Corrupt { error, mtime },
    })
}

pub(super) fn any<T>(_: &Entry<T>) -> Result<(), String> {
    Ok(())
}

/// A file bound to no session, as found.
#[derive(Debug, Clone)]
pub(super) enum Kept<T> {
    Absent,
    Corrupt(String),
    Valid(T),
}

pub(super) fn read_kept<T: DeserializeOwned + Versioned>(path: &Path) -> Result<Kept<T>, String> {
    let Some((bytes, _)) = read_small(path).map_err(at(path))? else {
        return Ok(Kept::Absent);
    };
    if bytes.len() as u64 > MAX_FILE {
        return Ok(Kept::Corrupt(format!("larger than {MAX_FILE} bytes")));
    }
    Ok(match decode_durable(&bytes) {
        Ok(rec) => Kept::Valid(rec),
        Err(e) => Kept::Corrupt(e.to_string()),
    })
}

/// How an unreadable maintenance file is reported: on (the safe reading: nothing acts), set
/// by nobody known.
pub(super) fn unreadable_maintenance() -> MaintenanceRecord {
    MaintenanceRecord {
        v: record::FORMAT_VERSION,
        on: true,
        by: UNREADABLE_NODE.to_string(),
    }
}

/// Everything in the group's directory, as read at one moment.
pub(super) struct Files {
    pub(super) leader: Slot<LeaderRecord>,
    /// The `term` file's counter (0 if there is none yet), or why it cannot be read.
    pub(super) term: Result<u64, String>,
    /// Member files named like nodes, by node name.
    pub(super) members: BTreeMap<String, Slot<MemberRecord>>,
    pub(super) switchover: Slot<SwitchoverRecord>,
    pub(super) maintenance: Kept<MaintenanceRecord>,
}

impl Files {
    pub(super) fn read(paths: &Paths) -> Result<Files, String> {
        let leader = read_slot::<LeaderRecord>(&paths.leader, |e| match e.term {
            Some(_) => Ok(()),
            None => Err("invalid value: no term".to_string()),
        })?;
        let term = match read_small(&paths.term).map_err(at(&paths.term))? {
            None => Ok(0),
            Some((bytes, _)) => decode_term(&bytes).map_err(|e| e.to_string()),
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

    /// The term a new leader gets: above the counter, and above the leader file's term should
    /// the counter have been lost. `None` if the counter cannot be read: guessing could hand
    /// out a term twice.
    pub(super) fn next_term(&self) -> Option<u64> {
        let counter = *self.term.as_ref().ok()?;
        let in_file = match &self.leader {
            Slot::Valid(e) => e.term.unwrap_or(0),
            _ => 0,
        };
        counter.max(in_file).checked_add(1)
    }

    /// The leader in view at `now`, and when it stops counting.
    pub(super) fn leader_at(&self, now: u64, lease_us: u64) -> Option<(Leader, u64)> {
        let expires = self.leader_expiry(lease_us).filter(|&exp| now < exp)?;
        let leader = match &self.leader {
            Slot::Valid(e) => Leader {
                node: e.record.node.clone(),
                term: e.term.unwrap_or(0),
                host: e.record.host.clone(),
            },
            // Still a leader: nobody may campaign while it may be someone's. The counter is
            // the best guess at its term.
            _ => Leader {
                node: UNREADABLE_NODE.to_string(),
                term: *self.term.as_ref().unwrap_or(&0),
                host: None,
            },
        };
        Some((leader, expires))
    }

    /// Unreadable files: path → why.
    pub(super) fn corrupt(&self, paths: &Paths) -> BTreeMap<String, String> {
        let mut found = BTreeMap::new();
        let mut add = |path: &Path, error: &String| {
            found.insert(path.display().to_string(), error.clone());
        };
        if let Slot::Corrupt { error, .. } = &self.leader {
            add(&paths.leader, error);
        }
        if let Err(error) = &self.term {
            add(&paths.term, error);
        }
        for (node, slot) in &self.members {
            if let Slot::Corrupt { error, .. } = slot {
                add(&paths.members.join(node), error);
            }
        }
        if let Slot::Corrupt { error, .. } = &self.switchover {
            add(&paths.switchover, error);
        }
        if let Kept::Corrupt(error) = &self.maintenance {
            add(&paths.maintenance, error);
        }
        found
    }

    /// What the runtime is told, as of wall time `now` (which goes with `taken`).
    pub(super) fn view(&self, paths: &Paths, now: u64, lease_us: u64, taken: Instant) -> Snapshot {
        let leader = self.leader_at(now, lease_us);
        let members: Vec<&Entry<MemberRecord>> =
            self.members.values().filter_map(|m| live(m, now)).collect();
        let switchover = live(&self.switchover, now);
        let next_expiry = leader
            .iter()
            .map(|(_, exp)| *exp)
            .chain(members.iter().map(|e| e.expires))
            .chain(switchover.map(|e| e.expires))
            .min()
            .map(|exp| Duration::from_micros(exp.saturating_sub(now)));
        Snapshot {
            view: View {
                leader: leader.map(|(l, _)| l),
                members: members.iter().map(|e| e.record.clone()).collect(),
                switchover: switchover.map(|e| e.record.clone()),
                maintenance: match &self.maintenance {
                    Kept::Absent => None,
                    Kept::Corrupt(_) => Some(unreadable_maintenance()),
                    Kept::Valid(rec) => Some(rec.clone()),
                },
            },
            corrupt: self.corrupt(paths),
            next_expiry,
            taken,
        }
    }
}

/// A readable entry that has not expired at `now`; expired ones count as absent.
pub(super) fn live<T>(slot: &Slot<T>, now: u64) -> Option<&Entry<T>> {
    match slot {
        Slot::Valid(e) if now < e.expires => Some(e),
        _ => None,
    }
}

pub(super) fn read_members(paths: &Paths) -> Result<BTreeMap<String, Slot<MemberRecord>>, String> {
    let entries = match fs::read_dir(&paths.members) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(at(&paths.members)(e)),
    };
    let mut members = BTreeMap::new();
    for entry in entries {
        let entry = entry.map_err(at(&paths.members))?;
        let Some(node) = entry.file_name().to_str().map(str::to_string) else {
            continue;
        };
        // Temporary files (".NODE.tmp") and anything else not named like a node.
        if !crate::config::valid_node_name(&node) {
            continue;
        }
        let named = |e: &Entry<MemberRecord>| {
            if e.record.node == node {
                Ok(())
            } else {
                Err(format!(
                    "the record names node {:?}, the file {node:?}",
                    e.record.node
                ))
            }
        };
        // One unreadable file (a stray file with the wrong owner, say) is left out like a
        // corrupt one; it must not make the whole group unusable.
        let slot = read_slot::<MemberRecord>(&entry.path(), named)
            .unwrap_or_else(|error| Slot::Corrupt { error, mtime: 0 });
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
    pub(super) fn acquire(path: &Path, wait: Duration) -> Result<GroupLock, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(FILE_MODE)
            .open(path)
            .map_err(at(path))?;
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
                    return Err(format!(
                        "{}: held by another process for more than {wait:?}",
                        path.display()
                    ));
                }
                Err(e) => return Err(format!("{}: cannot lock: {e}", path.display())),
            }
        }
    }
}
