//! The directory backend: the group's state in files under `ROOT/GROUP/`, for several promd
//! processes on one host, or hosts that share an NFS mount.
//!
//! Files, under `ROOT/GROUP/` (see `docs/dir-store.md`):
//! - `lock`: every write happens under an exclusive OFD (`fcntl`) lock on this file; OFD
//!   locks exclude other open files in the same process too, and go through the NFS lock
//!   manager on NFS;
//! - `leader`: a [`LeaderRecord`](crate::store::LeaderRecord) in a `Stored` envelope with
//!   the term, the holder's session id and the expiry of that session (wall-clock unix
//!   microseconds);
//! - `term`: a `TermFile`, the counter that makes terms grow (the fencing token);
//! - `members/NODE`: a [`MemberRecord`](crate::store::MemberRecord) in a `Stored` envelope;
//! - `switchover`: a [`SwitchoverRecord`](crate::store::SwitchoverRecord) in a `Stored`
//!   envelope (the requester's session);
//! - `maintenance`: a [`MaintenanceRecord`](crate::store::MaintenanceRecord) in a `Durable`
//!   envelope, bound to no session: it outlives the process that wrote it. Maintenance off
//!   is the file's absence.
//!
//! Beside the groups, `ROOT/.addresses/ADDRESS`: which group's role holds each floating
//! address, written by a won campaign and counted while the leader file it names is live at
//! its term (see `addresses`).
//!
//! A *session* plays the part of etcd's lease: a random id and a wall-clock expiry that the
//! task pushes to `now + lease` on every renewal, in every file bound to it. A file whose
//! expiry has passed counts as absent, whatever its content; a holder that finds its session
//! expired starts a new one (and reports `StoreEvent::LeaseLost`).
//!
//! Each group runs one task (`GroupTask`). Its file operations run one at a time on tokio's
//! blocking pool (`Job`), so a hung NFS server can stall a job but never the task's loop: the
//! loop keeps beating its [`Progress`](super::Progress), reports `Down` once a job outlives
//! its timeout, and answers commands meanwhile. Every job ends with a fresh read of the
//! group, which the shared corrupt-value policy turns into the view; the shared reporter
//! tells the runtime what changed (see [`store`](super)). The task learns of changes from
//! inotify (prompt on a local filesystem), from polling every `min(renew, 100ms)` (NFS, where
//! inotify sees only local writes), and from a timer at the next expiry in view, so a dead
//! leader is noticed right when its session runs out.

mod addresses;
mod files;
mod format;
mod jobs;
mod notify;
mod task;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::queue::OpQueue;
use super::report::Reporter;
use super::{GroupId, GroupSession, GroupSpec, Store, StoreEvent};
use files::Paths;
use format::micros;
use jobs::Ctx;
use task::GroupTask;

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
        id: GroupId,
        events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    ) -> GroupSession {
        let (commands, rx) = mpsc::unbounded_channel();
        let renew = spec.renew_interval().max(MIN_RENEW);
        let ctx = Arc::new(Ctx {
            paths: Paths::new(&self.root, &spec.group, &spec.node),
            group: spec.group.clone(),
            addresses: spec.address_set(),
            node: spec.node.clone(),
            host: spec.host.clone(),
            lease_us: micros(spec.lease),
            // Give up on a busy lock in time to report it, before the task's own timeout.
            lock_wait: renew / 2,
        });
        let now = Instant::now();
        let task = GroupTask {
            renew,
            poll: renew.min(MAX_POLL),
            report: Reporter::new("directory", &spec, id, events),
            spec,
            commands: rx,
            ctx,
            session: None,
            held: None,
            up: false,
            queue: OpQueue::default(),
            inflight: None,
            watcher: None,
            retry_at: now,
            renew_at: now,
            poll_at: now,
            expiry_at: None,
        };
        let task = tokio::spawn(task.run());
        GroupSession { commands, task }
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
