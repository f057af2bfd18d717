//! The directory backend: the group's state in files under `ROOT/GROUP/`, for several promd
//! processes on one host, or hosts that share an NFS mount.
//!
//! Files, under `ROOT/GROUP/` (see `docs/dir-store.md`):
//! - `lock`: every write happens under an exclusive OFD (`fcntl`) lock on this file; OFD
//!   locks exclude other open files in the same process too, and go through the NFS lock
//!   manager on NFS;
//! - `leader`: a [`LeaderRecord`] in a [`Stored`] envelope with the term, the holder's session
//!   id and the expiry of that session (wall-clock unix microseconds);
//! - `term`: a [`TermFile`], the counter that makes terms grow (the fencing token);
//! - `members/NODE`: a [`MemberRecord`] in a [`Stored`] envelope;
//! - `switchover`: a [`SwitchoverRecord`] in a [`Stored`] envelope (the requester's session);
//! - `maintenance`: a [`MaintenanceRecord`] in a [`Durable`] envelope, bound to no session: it
//!   outlives the process that wrote it. Maintenance off is the file's absence.
//!
//! A *session* plays the part of etcd's lease: a random id and a wall-clock expiry that the
//! task pushes to `now + lease` on every renewal, in every file bound to it. A file whose
//! expiry has passed counts as absent, whatever its content; a holder that finds its session
//! expired starts a new one (and reports [`StoreEvent::LeaseLost`]).
//!
//! Each group runs one task ([`GroupTask`]). Its file operations run one at a time on
//! tokio's blocking pool ([`Job`]), so a hung NFS server can stall a job but never the task's
//! loop: the loop keeps beating its [`Progress`](super::Progress), reports `Down` once a job
//! outlives its timeout, and answers commands meanwhile. Every job ends with a fresh read of
//! the group; the task reports what changed since the last report. It learns of changes from
//! inotify (prompt on a local filesystem), from polling every `min(renew, 100ms)` (NFS, where
//! inotify sees only local writes), and from a timer at the next expiry in view, so a dead
//! leader is noticed right when its session runs out.

use std::collections::{BTreeMap, VecDeque};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, fcntl};
use nix::libc;
use rustix::fs::inotify;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use super::record::{
    self, LeaderRecord, MaintenanceRecord, MemberRecord, RecordError, SwitchoverRecord, Versioned,
};
use super::{GroupSession, GroupSpec, Leader, Store, StoreCommand, StoreEvent, UNREADABLE_NODE};

/// A store of groups in a directory (`/var/lib/promd` by default).
pub struct DirStore {
    root: PathBuf,
}

impl DirStore {
    /// `root` must exist (systemd's `StateDirectory=` makes it); group directories are created
    /// under it. A missing root is not created: on a host that shares the store over NFS it
    /// most likely means the share is not mounted, and state written underneath the mount
    /// point would split the cluster.
    pub fn new(root: PathBuf) -> DirStore {
        DirStore { root }
    }
}

impl Store for DirStore {
    fn open_group(
        &self,
        spec: GroupSpec,
        index: usize,
        events: mpsc::UnboundedSender<(usize, StoreEvent)>,
    ) -> GroupSession {
        let (commands, rx) = mpsc::unbounded_channel();
        let renew = spec.renew_interval().max(MIN_RENEW);
        let ctx = Arc::new(Ctx {
            paths: Paths::new(&self.root, &spec.group, &spec.node),
            node: spec.node.clone(),
            lease_us: micros(spec.lease),
            // Give up on a busy lock in time to report it, before the task's own timeout.
            lock_wait: renew / 2,
        });
        let now = Instant::now();
        let task = GroupTask {
            renew,
            poll: renew.min(MAX_POLL),
            spec,
            index,
            events,
            commands: rx,
            ctx,
            session: None,
            member: None,
            held: None,
            up: false,
            down_reported: false,
            queue: VecDeque::new(),
            inflight: None,
            last: None,
            corrupt: BTreeMap::new(),
            watcher: None,
            retry_at: now,
            renew_at: now,
            poll_at: now,
            expiry_at: None,
        };
        tokio::spawn(task.run());
        GroupSession { commands }
    }
}

/// Floor for the renew interval (and every job timeout), so a tiny lease cannot turn the task
/// into a busy loop. Config refuses leases under 1s, so this never binds there.
const MIN_RENEW: Duration = Duration::from_millis(20);

/// The longest gap between two reads of the group: a standby notices a change made on another
/// NFS client (which inotify does not see) within this.
const MAX_POLL: Duration = Duration::from_millis(100);

/// The longest pause between two attempts to make the directory usable.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The longest a graceful shutdown waits: for the job in flight, then for its own cleanup.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(1);

/// Wake this long after a computed expiry, so the read that follows finds it passed.
const EXPIRY_SLACK: Duration = Duration::from_millis(1);

/// Every file we write is a few hundred bytes; anything much larger is not ours.
const MAX_FILE: u64 = 64 * 1024;

/// Mode of the files (the directories are 0750): the group may read them, as may promctl.
const FILE_MODE: u32 = 0o640;

// ---------------------------------------------------------------------------------------
// On-disk format
// ---------------------------------------------------------------------------------------

/// Version of the envelopes and of the term file (the record inside an envelope carries its
/// own version, checked by [`record::decode`]).
const DIR_FORMAT: u32 = 1;

/// A record bound to a session, as written: `leader`, `members/NODE`, `switchover`.
#[derive(Serialize)]
struct Stored<'a, T> {
    v: u32,
    /// The leader file's term; absent in the other files.
    #[serde(skip_serializing_if = "Option::is_none")]
    term: Option<u64>,
    session: &'a str,
    /// Wall-clock unix microseconds after which the file counts as absent.
    expires: u64,
    record: &'a T,
}

/// A [`Stored`] envelope as read; the record is decoded (and checked) on its own.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredIn {
    #[allow(dead_code)] // checked by `check_version` before this is parsed
    v: u32,
    #[serde(default)]
    term: Option<u64>,
    session: String,
    expires: u64,
    record: serde_json::Value,
}

/// A record bound to no session, as written: `maintenance`.
#[derive(Serialize)]
struct Durable<'a, T> {
    v: u32,
    record: &'a T,
}

/// A [`Durable`] envelope as read.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DurableIn {
    #[allow(dead_code)] // checked by `check_version` before this is parsed
    v: u32,
    record: serde_json::Value,
}

/// The `term` file: the highest term ever handed out in the group.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct TermFile {
    v: u32,
    term: u64,
}

/// A decoded envelope.
#[derive(Debug, Clone)]
struct Entry<T> {
    term: Option<u64>,
    session: String,
    expires: u64,
    record: T,
}

fn json_error(e: serde_json::Error) -> RecordError {
    RecordError::Json(e.to_string())
}

/// Read the version first, as [`record::decode`] does, so that a newer format is reported as
/// such and not as a schema error.
fn check_version(bytes: &[u8]) -> Result<(), RecordError> {
    #[derive(Deserialize)]
    struct Probe {
        v: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(json_error)?;
    match probe.v {
        Some(DIR_FORMAT) => Ok(()),
        Some(other) => Err(RecordError::Version(other)),
        None => Err(RecordError::Invalid("no format version \"v\"".into())),
    }
}

fn valid_session(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn decode_entry<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<Entry<T>, RecordError> {
    check_version(bytes)?;
    let raw: StoredIn = serde_json::from_slice(bytes).map_err(json_error)?;
    if !valid_session(&raw.session) {
        return Err(RecordError::Invalid(format!(
            "{:?} is not a session id",
            raw.session
        )));
    }
    // Through bytes again so that the record gets exactly the checks etcd's values get.
    let inner = serde_json::to_vec(&raw.record).map_err(json_error)?;
    let record = record::decode::<T>(&inner)?;
    Ok(Entry {
        term: raw.term,
        session: raw.session,
        expires: raw.expires,
        record,
    })
}

fn encode_entry<T: Serialize>(term: Option<u64>, session: &str, expires: u64, rec: &T) -> Vec<u8> {
    record::encode(&Stored {
        v: DIR_FORMAT,
        term,
        session,
        expires,
        record: rec,
    })
}

fn decode_durable<T: DeserializeOwned + Versioned>(bytes: &[u8]) -> Result<T, RecordError> {
    check_version(bytes)?;
    let raw: DurableIn = serde_json::from_slice(bytes).map_err(json_error)?;
    let inner = serde_json::to_vec(&raw.record).map_err(json_error)?;
    record::decode::<T>(&inner)
}

fn encode_durable<T: Serialize>(rec: &T) -> Vec<u8> {
    record::encode(&Durable {
        v: DIR_FORMAT,
        record: rec,
    })
}

fn decode_term(bytes: &[u8]) -> Result<u64, RecordError> {
    check_version(bytes)?;
    let file: TermFile = serde_json::from_slice(bytes).map_err(json_error)?;
    Ok(file.term)
}

// ---------------------------------------------------------------------------------------
// Clocks and ids
// ---------------------------------------------------------------------------------------

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

fn unix_micros(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(micros)
}

/// The wall clock, which is what expiries are written in: the files are shared with other
/// processes and, over NFS, other hosts, so no process's monotonic clock would do.
fn wall_us() -> Result<u64, String> {
    unix_micros(SystemTime::now()).ok_or_else(|| "the wall clock is before 1970".to_string())
}

/// A fresh session id: 128 random bits in hex.
fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom (a strange chroot): std's hasher keys are random per process and
        // differ per instance, which is all a session id needs.
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------------------------------
// Files
// ---------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
struct Paths {
    root: PathBuf,
    dir: PathBuf,
    members: PathBuf,
    lock: PathBuf,
    leader: PathBuf,
    term: PathBuf,
    switchover: PathBuf,
    maintenance: PathBuf,
    /// This node's member file.
    member: PathBuf,
}

impl Paths {
    /// `group` and `node` are valid names (checked by config): safe as path components.
    fn new(root: &Path, group: &str, node: &str) -> Paths {
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

fn at(path: &Path) -> impl FnOnce(io::Error) -> String + '_ {
    move |e| format!("{}: {e}", path.display())
}

/// Create the group's directories (mode 0750) under an existing root.
fn ensure_dirs(paths: &Paths) -> Result<(), String> {
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

fn make_dir(path: &Path) -> Result<(), String> {
    match DirBuilder::new().mode(0o750).create(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && path.is_dir() => Ok(()),
        Err(e) => Err(at(path)(e)),
    }
}

/// Replace `path` atomically: readers (which take no lock) see the old or the new content,
/// never a part. The temporary name starts with a dot, so it is never taken for a member, and
/// is fixed, because every write happens under the group lock.
fn write_atomic(path: &Path, bytes: &[u8], durable: bool) -> Result<(), String> {
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
fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(at(dir))
}

fn remove(path: &Path) -> Result<(), String> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(at(path)(e)),
    }
}

/// A file's bytes (at most [`MAX_FILE`] + 1) and mtime, or `None` if it does not exist.
fn read_small(path: &Path) -> io::Result<Option<(Vec<u8>, u64)>> {
    let mut tries = 0;
    loop {
        match read_once(path) {
            // NFS: the file was replaced between open and read. Its successor is there.
            Err(e) if e.raw_os_error() == Some(libc::ESTALE) && tries < 3 => tries += 1,
            other => return other,
        }
    }
}

fn read_once(path: &Path) -> io::Result<Option<(Vec<u8>, u64)>> {
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
enum Slot<T> {
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
    fn owned_by(&self, session: &str) -> Option<&Entry<T>> {
        match self {
            Slot::Valid(e) if e.session == session => Some(e),
            _ => None,
        }
    }
}

/// Read one session-bound file; `check` may refuse a decoded entry (it stays corrupt, with
/// its mtime, like any unreadable file).
fn read_slot<T: DeserializeOwned + Versioned>(
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

fn any<T>(_: &Entry<T>) -> Result<(), String> {
    Ok(())
}

/// A file bound to no session, as found.
#[derive(Debug, Clone)]
enum Kept<T> {
    Absent,
    Corrupt(String),
    Valid(T),
}

fn read_kept<T: DeserializeOwned + Versioned>(path: &Path) -> Result<Kept<T>, String> {
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
fn unreadable_maintenance() -> MaintenanceRecord {
    MaintenanceRecord {
        v: record::FORMAT_VERSION,
        on: true,
        by: UNREADABLE_NODE.to_string(),
    }
}

/// Everything in the group's directory, as read at one moment.
struct Files {
    leader: Slot<LeaderRecord>,
    /// The `term` file's counter (0 if there is none yet), or why it cannot be read.
    term: Result<u64, String>,
    /// Member files named like nodes, by node name.
    members: BTreeMap<String, Slot<MemberRecord>>,
    switchover: Slot<SwitchoverRecord>,
    maintenance: Kept<MaintenanceRecord>,
}

impl Files {
    fn read(paths: &Paths) -> Result<Files, String> {
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
    fn leader_expiry(&self, lease_us: u64) -> Option<u64> {
        match &self.leader {
            Slot::Absent => None,
            Slot::Corrupt { mtime, .. } => Some(mtime.saturating_add(lease_us)),
            Slot::Valid(e) => Some(e.expires),
        }
    }

    fn leader_live(&self, now: u64, lease_us: u64) -> bool {
        self.leader_expiry(lease_us).is_some_and(|exp| now < exp)
    }

    /// The term a new leader gets: above the counter, and above the leader file's term should
    /// the counter have been lost. `None` if the counter cannot be read: guessing could hand
    /// out a term twice.
    fn next_term(&self) -> Option<u64> {
        let counter = *self.term.as_ref().ok()?;
        let in_file = match &self.leader {
            Slot::Valid(e) => e.term.unwrap_or(0),
            _ => 0,
        };
        counter.max(in_file).checked_add(1)
    }

    /// The leader in view at `now`, and when it stops counting.
    fn leader_at(&self, now: u64, lease_us: u64) -> Option<(Leader, u64)> {
        let expires = self.leader_expiry(lease_us).filter(|&exp| now < exp)?;
        let leader = match &self.leader {
            Slot::Valid(e) => Leader {
                node: e.record.node.clone(),
                term: e.term.unwrap_or(0),
            },
            // Still a leader: nobody may campaign while it may be someone's. The counter is
            // the best guess at its term.
            _ => Leader {
                node: UNREADABLE_NODE.to_string(),
                term: *self.term.as_ref().unwrap_or(&0),
            },
        };
        Some((leader, expires))
    }

    /// Unreadable files: path → why.
    fn corrupt(&self, paths: &Paths) -> BTreeMap<String, String> {
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
    fn view(&self, paths: &Paths, now: u64, lease_us: u64, taken: Instant) -> Snapshot {
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
fn live<T>(slot: &Slot<T>, now: u64) -> Option<&Entry<T>> {
    match slot {
        Slot::Valid(e) if now < e.expires => Some(e),
        _ => None,
    }
}

fn read_members(paths: &Paths) -> Result<BTreeMap<String, Slot<MemberRecord>>, String> {
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
struct GroupLock {
    _file: File,
}

impl GroupLock {
    /// Try for at most `wait`: a holder that does not let go (a stopped process, a hung NFS
    /// server) makes this job fail, and the task report the store down, rather than hang.
    fn acquire(path: &Path, wait: Duration) -> Result<GroupLock, String> {
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

// ---------------------------------------------------------------------------------------
// Jobs: the file operations, run on the blocking pool
// ---------------------------------------------------------------------------------------

/// What every job needs; shared with the blocking pool.
#[derive(Debug)]
struct Ctx {
    paths: Paths,
    node: String,
    lease_us: u64,
    lock_wait: Duration,
}

/// This process's lease on the group.
#[derive(Debug, Clone)]
struct Session {
    id: String,
    /// Wall-clock unix microseconds.
    expires: u64,
}

/// A command that needs the store, queued until the task can carry it out.
#[derive(Debug, Clone)]
enum Op {
    Campaign(LeaderRecord),
    Release { term: u64 },
    Publish(MemberRecord),
    PutSwitchover(SwitchoverRecord),
    ClearSwitchover,
    SetMaintenance(MaintenanceRecord),
}

enum Job {
    /// Push the session's expiry (or start a session). `setup`: create the directories first.
    Renew {
        session: Option<Session>,
        member: Option<MemberRecord>,
        held: Option<u64>,
        setup: bool,
    },
    Op(Op, Session),
    Poll,
    /// Leave the group: write the maintenance change still pending, if any, then delete the
    /// session's files.
    Shutdown {
        session: Option<Session>,
        maintenance: Option<MaintenanceRecord>,
    },
}

#[derive(Debug)]
enum Answer {
    Renewed {
        sent_at: Instant,
        session: Session,
        /// The old session was gone; `session` is a new one.
        lost: bool,
    },
    Campaigned {
        term: Option<u64>,
        /// Refused because our session has expired: renew now, which starts a new one.
        session_expired: bool,
    },
    Released,
    Nothing,
}

struct Done {
    answer: Result<Answer, String>,
    /// The group as read at the end of the job, if the job got that far.
    snapshot: Option<Snapshot>,
}

/// The group as the runtime is told it.
#[derive(Debug, Clone, PartialEq)]
struct View {
    leader: Option<Leader>,
    members: Vec<MemberRecord>,
    switchover: Option<SwitchoverRecord>,
    maintenance: Option<MaintenanceRecord>,
}

struct Snapshot {
    view: View,
    /// Unreadable files: path → why.
    corrupt: BTreeMap<String, String>,
    /// Time from `taken` until the next file in view expires.
    next_expiry: Option<Duration>,
    /// The monotonic time that goes with the wall time the view was computed for.
    taken: Instant,
}

fn run_job(ctx: &Ctx, job: Job) -> Done {
    match job {
        Job::Poll => match read_view(ctx) {
            Ok(snapshot) => Done {
                answer: Ok(Answer::Nothing),
                snapshot: Some(snapshot),
            },
            Err(e) => Done::failed(e),
        },
        Job::Renew {
            session,
            member,
            held,
            setup,
        } => {
            if setup && let Err(e) = ensure_dirs(&ctx.paths) {
                return Done::failed(e);
            }
            // Taken before the lock: the expiry written below is counted from a later time.
            let sent_at = Instant::now();
            locked(ctx, |files, now| {
                renew(ctx, files, now, sent_at, session, member.as_ref(), held)
            })
        }
        Job::Op(op, session) => locked(ctx, |files, now| carry_out(ctx, files, now, &op, &session)),
        Job::Shutdown {
            session,
            maintenance,
        } => locked(ctx, |files, _| {
            if let Some(rec) = &maintenance {
                set_maintenance(ctx, rec)?;
            }
            if let Some(session) = &session {
                leave(ctx, files, &session.id)?;
            }
            Ok(Answer::Nothing)
        }),
    }
}

impl Done {
    fn failed(reason: String) -> Done {
        Done {
            answer: Err(reason),
            snapshot: None,
        }
    }
}

/// Read the group and compute the view. The wall time is taken *before* reading: a file
/// then counts as live if it was when we started looking, so a renewal that lands while we
/// read can never be mistaken for an expiry.
fn read_view(ctx: &Ctx) -> Result<Snapshot, String> {
    let now = wall_us()?;
    let taken = Instant::now();
    let files = Files::read(&ctx.paths)?;
    Ok(files.view(&ctx.paths, now, ctx.lease_us, taken))
}

/// Run `f` under the group lock on a fresh read of the group, then read the group again
/// (still under the lock) for the report.
fn locked(ctx: &Ctx, f: impl FnOnce(&Files, u64) -> Result<Answer, String>) -> Done {
    let lock = match GroupLock::acquire(&ctx.paths.lock, ctx.lock_wait) {
        Ok(lock) => lock,
        Err(e) => return Done::failed(e),
    };
    let result = wall_us().and_then(|now| {
        let files = Files::read(&ctx.paths)?;
        f(&files, now)
    });
    let done = match result {
        // The answer stands even if the read for the report fails: a won campaign must be
        // reported won. The next poll reports the failure.
        Ok(answer) => Done {
            answer: Ok(answer),
            snapshot: read_view(ctx).ok(),
        },
        Err(e) => Done::failed(e),
    };
    drop(lock);
    done
}

fn renew(
    ctx: &Ctx,
    files: &Files,
    now: u64,
    sent_at: Instant,
    session: Option<Session>,
    member: Option<&MemberRecord>,
    held: Option<u64>,
) -> Result<Answer, String> {
    let lost = session.as_ref().is_some_and(|s| {
        let expired = now >= s.expires;
        // The leader file we hold was deleted or taken over (by someone who found it
        // expired, or by hand): whatever we did under it is void.
        let usurped = held.is_some_and(|term| {
            files
                .leader
                .owned_by(&s.id)
                .is_none_or(|e| e.term != Some(term))
        });
        expired || usurped
    });
    let id = match session {
        Some(s) if !lost => s.id,
        Some(old) => {
            // Like etcd's keys bound to a lost lease: gone with it.
            drop_session_files(ctx, files, &old.id)?;
            new_session_id()
        }
        None => new_session_id(),
    };
    let expires = now.saturating_add(ctx.lease_us);
    if let Some(rec) = member {
        write_atomic(
            &ctx.paths.member,
            &encode_entry(None, &id, expires, rec),
            false,
        )?;
    }
    if let Some(e) = files.leader.owned_by(&id) {
        let bytes = encode_entry(e.term, &id, expires, &e.record);
        write_atomic(&ctx.paths.leader, &bytes, false)?;
    }
    if let Some(e) = files.switchover.owned_by(&id) {
        let bytes = encode_entry(None, &id, expires, &e.record);
        write_atomic(&ctx.paths.switchover, &bytes, false)?;
    }
    Ok(Answer::Renewed {
        sent_at,
        session: Session { id, expires },
        lost,
    })
}

/// Delete what a lost session left: its leader and switchover files. (The member file is
/// rewritten under the new session, or expires.)
fn drop_session_files(ctx: &Ctx, files: &Files, id: &str) -> Result<(), String> {
    if files.leader.owned_by(id).is_some() {
        remove(&ctx.paths.leader)?;
    }
    if files.switchover.owned_by(id).is_some() {
        remove(&ctx.paths.switchover)?;
    }
    Ok(())
}

/// Shutdown: delete every file of this session, so the others need not wait for expiries.
fn leave(ctx: &Ctx, files: &Files, id: &str) -> Result<(), String> {
    drop_session_files(ctx, files, id)?;
    if files
        .members
        .get(&ctx.node)
        .is_some_and(|slot| slot.owned_by(id).is_some())
    {
        remove(&ctx.paths.member)?;
    }
    Ok(())
}

fn carry_out(ctx: &Ctx, files: &Files, now: u64, op: &Op, s: &Session) -> Result<Answer, String> {
    match op {
        Op::Campaign(rec) => campaign(ctx, files, now, rec, s),
        Op::Release { term } => {
            // Ours at that term (terms are never handed out twice); anything else is someone
            // else's key, or already gone: either way it is no longer ours.
            if let Slot::Valid(e) = &files.leader
                && e.term == Some(*term)
                && e.record.node == ctx.node
            {
                remove(&ctx.paths.leader)?;
            }
            Ok(Answer::Released)
        }
        Op::Publish(rec) => {
            let bytes = encode_entry(None, &s.id, s.expires, rec);
            write_atomic(&ctx.paths.member, &bytes, false)?;
            Ok(Answer::Nothing)
        }
        Op::PutSwitchover(rec) => {
            let bytes = encode_entry(None, &s.id, s.expires, rec);
            write_atomic(&ctx.paths.switchover, &bytes, false)?;
            Ok(Answer::Nothing)
        }
        Op::ClearSwitchover => {
            remove(&ctx.paths.switchover)?;
            Ok(Answer::Nothing)
        }
        Op::SetMaintenance(rec) => {
            set_maintenance(ctx, rec)?;
            Ok(Answer::Nothing)
        }
    }
}

/// On: write the record, durably (it must survive a crash of this host). Off: delete the
/// file, whatever it holds (a corrupt one too: that is how an operator clears it).
fn set_maintenance(ctx: &Ctx, rec: &MaintenanceRecord) -> Result<(), String> {
    if rec.on {
        write_atomic(&ctx.paths.maintenance, &encode_durable(rec), true)
    } else {
        remove(&ctx.paths.maintenance)?;
        sync_dir(&ctx.paths.dir)
    }
}

fn campaign(
    ctx: &Ctx,
    files: &Files,
    now: u64,
    rec: &LeaderRecord,
    s: &Session,
) -> Result<Answer, String> {
    let refuse = |session_expired| {
        Ok(Answer::Campaigned {
            term: None,
            session_expired,
        })
    };
    if now >= s.expires {
        return refuse(true);
    }
    if files.leader_live(now, ctx.lease_us) {
        return refuse(false);
    }
    // An unreadable counter is reported as corrupt with the snapshot; no term can be trusted.
    let Some(term) = files.next_term() else {
        return refuse(false);
    };
    // The counter first: should we crash between the two writes, a term is skipped, never
    // handed out twice.
    let counter = record::encode(&TermFile {
        v: DIR_FORMAT,
        term,
    });
    write_atomic(&ctx.paths.term, &counter, true)?;
    // Bound to the session as it stands: the next renewal pushes both together. The expiry
    // is that of the last renewal, so the holder's fencing deadline (counted from that
    // renewal's send time) falls before it.
    let bytes = encode_entry(Some(term), &s.id, s.expires, rec);
    write_atomic(&ctx.paths.leader, &bytes, false)?;
    Ok(Answer::Campaigned {
        term: Some(term),
        session_expired: false,
    })
}

// ---------------------------------------------------------------------------------------
// Change notification
// ---------------------------------------------------------------------------------------

/// inotify on the group directory and `members/`: prompt notice of local changes.
struct Watcher {
    fd: AsyncFd<OwnedFd>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Notice {
    /// Only our own temporary files and the lock moved.
    Quiet,
    Changed,
    /// A watched directory went away (or the queue broke): read, and watch again later.
    Broken,
}

impl Watcher {
    fn new(paths: &Paths) -> io::Result<Watcher> {
        use inotify::{CreateFlags, WatchFlags};
        let fd = inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC)?;
        // Files are replaced by rename (MOVED_TO) or deleted; CLOSE_WRITE catches a file
        // written in place (by hand).
        let mask = WatchFlags::MOVED_TO
            | WatchFlags::MOVED_FROM
            | WatchFlags::DELETE
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF;
        inotify::add_watch(&fd, &paths.dir, mask)?;
        inotify::add_watch(&fd, &paths.members, mask)?;
        // SAFETY: the `OwnedFd` is moved into the `AsyncFd` and owned by it alone, so the
        // descriptor stays open, and `as_raw_fd` returns the same number, until it is dropped.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Watcher { fd })
    }

    async fn next(&self) -> Notice {
        loop {
            let mut guard = match self.fd.readable().await {
                Ok(guard) => guard,
                Err(_) => return Notice::Broken,
            };
            let notice = drain(self.fd.get_ref());
            // `drain` read until EAGAIN (or gave up on the descriptor).
            guard.clear_ready();
            if notice != Notice::Quiet {
                return notice;
            }
        }
    }
}

/// Read every pending inotify event.
fn drain(fd: &OwnedFd) -> Notice {
    use inotify::ReadFlags;
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut reader = inotify::Reader::new(fd, &mut buf);
    let mut notice = Notice::Quiet;
    loop {
        match reader.next() {
            Ok(event) => {
                let flags = event.events();
                if flags.intersects(
                    ReadFlags::IGNORED
                        | ReadFlags::DELETE_SELF
                        | ReadFlags::MOVE_SELF
                        | ReadFlags::UNMOUNT,
                ) {
                    notice = Notice::Broken;
                } else if notice == Notice::Quiet
                    && (flags.contains(ReadFlags::QUEUE_OVERFLOW) || relevant(event.file_name()))
                {
                    notice = Notice::Changed;
                }
            }
            Err(rustix::io::Errno::AGAIN) => return notice,
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => return Notice::Broken,
        }
    }
}

/// Our temporary files and the lock file change on every write: not news in themselves
/// (the rename that follows is).
fn relevant(name: Option<&std::ffi::CStr>) -> bool {
    name.is_none_or(|n| {
        let n = n.to_bytes();
        !n.is_empty() && !n.starts_with(b".") && n != b"lock"
    })
}

async fn notice(watcher: &Option<Watcher>) -> Notice {
    match watcher {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

// ---------------------------------------------------------------------------------------
// The task
// ---------------------------------------------------------------------------------------

/// What the job in flight is for, so its result can be put to use.
#[derive(Debug)]
enum Pending {
    Renew,
    Op(Op),
    Poll,
}

struct Inflight {
    pending: Pending,
    handle: JoinHandle<Done>,
    /// Past this, the store is reported down (the job may still finish later).
    deadline: Instant,
    overdue: bool,
}

async fn finished(inflight: &mut Option<Inflight>) -> Done {
    match inflight {
        Some(job) => match (&mut job.handle).await {
            Ok(done) => done,
            Err(e) => Done::failed(format!("file operation failed: {e}")),
        },
        None => std::future::pending().await,
    }
}

struct GroupTask {
    spec: GroupSpec,
    index: usize,
    events: mpsc::UnboundedSender<(usize, StoreEvent)>,
    commands: mpsc::UnboundedReceiver<StoreCommand>,
    ctx: Arc<Ctx>,
    renew: Duration,
    poll: Duration,
    /// Our session; `None` until the directory was first usable.
    session: Option<Session>,
    /// The last member record the runtime published: rewritten on every renewal.
    member: Option<MemberRecord>,
    /// The term of the leader file we won and have not released.
    held: Option<u64>,
    /// `Up` was reported and no `Down` since.
    up: bool,
    /// `Down` was reported and no `Up` since.
    down_reported: bool,
    queue: VecDeque<Op>,
    inflight: Option<Inflight>,
    /// What the runtime was last told; `None` after a (re)connection: tell it everything.
    last: Option<View>,
    /// Unreadable files already reported, so a poll does not report them again.
    corrupt: BTreeMap<String, String>,
    watcher: Option<Watcher>,
    retry_at: Instant,
    renew_at: Instant,
    poll_at: Instant,
    /// The next expiry in view (plus a little): read the group then.
    expiry_at: Option<Instant>,
}

impl GroupTask {
    fn emit(&self, event: StoreEvent) {
        // A closed receiver ends the task at its next turn (see `listening`).
        let _ = self.events.send((self.index, event));
    }

    fn listening(&self) -> bool {
        !self.events.is_closed()
    }

    async fn run(mut self) {
        loop {
            self.spec.progress.beat();
            if !self.listening() {
                return;
            }
            let now = Instant::now();
            if self.inflight.is_none() {
                self.start_next(now);
            }
            let wake = tokio::time::Instant::from_std(self.next_wake(now));
            tokio::select! {
                command = self.commands.recv() => match command {
                    None => return,
                    Some(StoreCommand::Shutdown) => {
                        self.shutdown().await;
                        return;
                    }
                    Some(command) => self.command(command),
                },
                done = finished(&mut self.inflight) => {
                    if let Some(job) = self.inflight.take() {
                        self.finish(job.pending, done);
                    }
                }
                notice = notice(&self.watcher) => {
                    if notice == Notice::Broken {
                        self.watcher = None;
                    }
                    self.poll_at = Instant::now();
                }
                _ = tokio::time::sleep_until(wake) => self.check_overdue(),
            }
        }
    }

    fn command(&mut self, command: StoreCommand) {
        match command {
            StoreCommand::Campaign(rec) if self.up => self.queue.push_back(Op::Campaign(rec)),
            // Nothing can be won while the directory is unusable.
            StoreCommand::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
            StoreCommand::Publish(rec) => {
                // Only the newest record matters; a renewal writes it too.
                self.queue.retain(|op| !matches!(op, Op::Publish(_)));
                self.member = Some(rec.clone());
                self.queue.push_back(Op::Publish(rec));
            }
            StoreCommand::Release { term } => self.queue.push_back(Op::Release { term }),
            StoreCommand::RequestSwitchover(rec) => self.queue.push_back(Op::PutSwitchover(rec)),
            StoreCommand::ClearSwitchover => self.queue.push_back(Op::ClearSwitchover),
            StoreCommand::SetMaintenance(rec) => {
                // Only the newest change matters.
                self.queue.retain(|op| !matches!(op, Op::SetMaintenance(_)));
                self.queue.push_back(Op::SetMaintenance(rec));
            }
            StoreCommand::Shutdown => {} // handled by `run`
        }
    }

    /// Start the most urgent job that is due: renewals first, then commands, then reads.
    fn start_next(&mut self, now: Instant) {
        let job = if !self.up {
            if now < self.retry_at {
                return;
            }
            self.renew_job(true)
        } else if now >= self.renew_at {
            self.renew_job(false)
        } else if let Some(op) = self.queue.pop_front() {
            let Some(session) = self.session.clone() else {
                // Up implies a session; should it not, get one first.
                self.queue.push_front(op);
                self.renew_at = now;
                return;
            };
            (Pending::Op(op.clone()), Job::Op(op, session))
        } else if now >= self.poll_at || self.expiry_at.is_some_and(|t| now >= t) {
            (Pending::Poll, Job::Poll)
        } else {
            return;
        };
        let (pending, job) = job;
        let ctx = self.ctx.clone();
        self.inflight = Some(Inflight {
            pending,
            handle: tokio::task::spawn_blocking(move || run_job(&ctx, job)),
            deadline: now + self.renew,
            overdue: false,
        });
    }

    fn renew_job(&self, setup: bool) -> (Pending, Job) {
        let job = Job::Renew {
            session: self.session.clone(),
            member: self.member.clone(),
            held: self.held,
            setup,
        };
        (Pending::Renew, job)
    }

    /// When the loop must turn next, at the latest one poll interval away (so it beats).
    fn next_wake(&self, now: Instant) -> Instant {
        let mut wake = now + self.poll;
        match &self.inflight {
            Some(job) if !job.overdue => wake = wake.min(job.deadline),
            Some(_) => {}
            None if !self.up => wake = wake.min(self.retry_at),
            None => {
                wake = wake.min(self.renew_at).min(self.poll_at);
                if let Some(t) = self.expiry_at {
                    wake = wake.min(t);
                }
            }
        }
        wake.max(now)
    }

    fn check_overdue(&mut self) {
        let now = Instant::now();
        let Some(job) = &mut self.inflight else {
            return;
        };
        if job.overdue || now < job.deadline {
            return;
        }
        job.overdue = true;
        let reason = format!(
            "{}: no answer from the filesystem within {:?}",
            self.ctx.paths.dir.display(),
            self.renew
        );
        self.went_down(reason);
    }

    fn finish(&mut self, pending: Pending, done: Done) {
        let answer = match done.answer {
            Ok(answer) => answer,
            Err(reason) => {
                if let Pending::Op(op) = pending {
                    self.requeue(op);
                }
                self.went_down(reason);
                return;
            }
        };
        match answer {
            Answer::Renewed {
                sent_at,
                session,
                lost,
            } => self.renewed(sent_at, session, lost),
            Answer::Campaigned {
                term,
                session_expired,
            } => {
                if session_expired {
                    self.renew_at = Instant::now();
                }
                if let Some(term) = term {
                    info!(group = %self.spec.group, term, "won the leader file");
                    self.held = Some(term);
                }
                self.emit(StoreEvent::Campaigned(term));
            }
            Answer::Released => {
                if let Pending::Op(Op::Release { term }) = pending
                    && self.held == Some(term)
                {
                    self.held = None;
                }
                self.emit(StoreEvent::Released);
            }
            Answer::Nothing => {}
        }
        if let (true, Some(snapshot)) = (self.up, done.snapshot) {
            self.report(snapshot);
        }
    }

    fn renewed(&mut self, sent_at: Instant, session: Session, lost: bool) {
        if lost {
            self.lease_lost();
        }
        let reconnected = !self.up || lost;
        self.session = Some(session);
        self.renew_at = sent_at + self.renew;
        if reconnected {
            info!(group = %self.spec.group, dir = %self.ctx.paths.dir.display(), "directory store up");
            self.up = true;
            self.down_reported = false;
            self.last = None;
            self.corrupt.clear();
            self.emit(StoreEvent::Up);
        }
        self.emit(StoreEvent::Renewed { sent_at });
        if self.watcher.is_none() {
            match Watcher::new(&self.ctx.paths) {
                Ok(watcher) => self.watcher = Some(watcher),
                // Polling still notices every change, a little later.
                Err(e) => debug!(group = %self.spec.group, error = %e, "no inotify watch"),
            }
        }
    }

    /// Tell the runtime what changed since the last report.
    fn report(&mut self, snapshot: Snapshot) {
        let Snapshot {
            view,
            corrupt,
            next_expiry,
            taken,
        } = snapshot;
        for (key, error) in &corrupt {
            if self.corrupt.get(key) != Some(error) {
                warn!(group = %self.spec.group, key, %error, "corrupt file in the store ignored");
                self.emit(StoreEvent::Corrupt {
                    key: key.clone(),
                    error: error.clone(),
                });
            }
        }
        self.corrupt = corrupt;
        let last = self.last.take();
        if last.as_ref().is_none_or(|l| l.leader != view.leader) {
            self.emit(StoreEvent::Leader(view.leader.clone()));
        }
        if last.as_ref().is_none_or(|l| l.members != view.members) {
            self.emit(StoreEvent::Members(view.members.clone()));
        }
        if last
            .as_ref()
            .is_none_or(|l| l.switchover != view.switchover)
        {
            self.emit(StoreEvent::Switchover(view.switchover.clone()));
        }
        if last
            .as_ref()
            .is_none_or(|l| l.maintenance != view.maintenance)
        {
            self.emit(StoreEvent::Maintenance(view.maintenance.clone()));
        }
        self.last = Some(view);
        self.poll_at = taken + self.poll;
        self.expiry_at = next_expiry.map(|d| taken + d + EXPIRY_SLACK);
    }

    fn went_down(&mut self, reason: String) {
        if self.down_reported {
            debug!(group = %self.spec.group, %reason, "directory store still unusable");
        } else {
            warn!(group = %self.spec.group, %reason, "directory store down");
            self.down_reported = true;
            self.emit(StoreEvent::Down(reason));
        }
        self.up = false;
        self.last = None;
        self.retry_at = Instant::now() + self.renew.min(MAX_RETRY_DELAY);
        // A campaign cannot be won while the directory is unusable.
        self.answer_queued(false);
    }

    /// Our session is gone, and the files bound to it: answer what depended on it.
    fn lease_lost(&mut self) {
        info!(group = %self.spec.group, "directory store session lost");
        self.held = None;
        self.emit(StoreEvent::LeaseLost);
        self.answer_queued(true);
    }

    /// Answer queued campaigns "not won"; with `released`, queued releases too (the leader
    /// file went with the session).
    fn answer_queued(&mut self, released: bool) {
        let mut kept = VecDeque::new();
        for op in std::mem::take(&mut self.queue) {
            match op {
                Op::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
                Op::Release { .. } if released => self.emit(StoreEvent::Released),
                other => kept.push_back(other),
            }
        }
        self.queue = kept;
    }

    /// Put back a command whose job failed; `went_down` then answers what cannot wait.
    fn requeue(&mut self, op: Op) {
        match op {
            // Rewritten from `self.member` by the next renewal.
            Op::Publish(_) => {}
            other => self.queue.push_front(other),
        }
    }

    /// Delete our files, bounded in time: a store that does not answer is left to expire.
    /// A maintenance change still pending is written first: it is the operator's, not this
    /// process's, and must not go with it.
    async fn shutdown(&mut self) {
        let deadline = tokio::time::Instant::now() + SHUTDOWN_TIMEOUT;
        // A write in flight could otherwise land after our cleanup.
        if let Some(job) = self.inflight.take() {
            match tokio::time::timeout_at(deadline, job.handle).await {
                Err(_) => {
                    warn!(group = %self.spec.group, "directory store busy; our files expire on their own");
                    return;
                }
                Ok(Ok(Done { answer: Ok(_), .. })) => {}
                Ok(_) => {
                    if let Pending::Op(op @ Op::SetMaintenance(_)) = job.pending
                        && !self
                            .queue
                            .iter()
                            .any(|op| matches!(op, Op::SetMaintenance(_)))
                    {
                        self.queue.push_back(op);
                    }
                }
            }
        }
        let maintenance = self.queue.iter().rev().find_map(|op| match op {
            Op::SetMaintenance(rec) => Some(rec.clone()),
            _ => None,
        });
        let session = self.session.take();
        if session.is_none() && maintenance.is_none() {
            return;
        }
        let ctx = self.ctx.clone();
        let job = Job::Shutdown {
            session,
            maintenance,
        };
        let cleanup = tokio::task::spawn_blocking(move || run_job(&ctx, job));
        match tokio::time::timeout_at(deadline, cleanup).await {
            Ok(Ok(Done { answer: Ok(_), .. })) => {
                info!(group = %self.spec.group, "left the directory store")
            }
            Ok(Ok(Done {
                answer: Err(reason),
                ..
            })) => {
                warn!(group = %self.spec.group, %reason, "our files were not removed; they expire on their own")
            }
            Ok(Err(_)) | Err(_) => {
                warn!(group = %self.spec.group, "our files were not removed; they expire on their own")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Role;

    fn member(node: &str) -> MemberRecord {
        MemberRecord {
            v: 1,
            node: node.into(),
            priority: 1,
            eligible: true,
            healthy: true,
            role: Role::Passive,
        }
    }

    #[test]
    fn envelope_round_trip() {
        let bytes = encode_entry(Some(4), "abc123", 99, &member("db-a"));
        let entry = decode_entry::<MemberRecord>(&bytes).map_err(|e| e.to_string());
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.term, Some(4));
        assert_eq!(entry.session, "abc123");
        assert_eq!(entry.expires, 99);
        assert_eq!(entry.record, member("db-a"));
    }

    #[test]
    fn foreign_envelopes_are_refused() {
        let inner = String::from_utf8(record::encode(&member("db-a"))).unwrap_or_default();
        let cases = [
            (
                format!(r#"{{"v":2,"session":"a","expires":1,"record":{inner}}}"#),
                "version 2",
            ),
            (
                format!(r#"{{"session":"a","expires":1,"record":{inner}}}"#),
                "no format version",
            ),
            (
                format!(r#"{{"v":1,"session":"../x","expires":1,"record":{inner}}}"#),
                "session",
            ),
            (
                format!(r#"{{"v":1,"session":"a","expires":1,"x":0,"record":{inner}}}"#),
                "unknown field",
            ),
            (
                r#"{"v":1,"session":"a","expires":1,"record":{"v":2,"node":"a"}}"#.to_string(),
                "version 2",
            ),
            ("garbage".to_string(), "not promd JSON"),
        ];
        for (text, expected) in cases {
            let error = decode_entry::<MemberRecord>(text.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(expected), "{text}: {error:?}");
        }
    }

    #[test]
    fn session_ids_differ() {
        let a = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(valid_session(&a));
        assert_ne!(a, new_session_id());
    }

    #[test]
    fn temporary_files_and_the_lock_are_not_news() {
        assert!(!relevant(Some(c".leader.tmp")));
        assert!(!relevant(Some(c"lock")));
        assert!(relevant(Some(c"leader")));
        assert!(relevant(None));
    }
}
