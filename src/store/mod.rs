//! The coordination store: who holds each group's leader key, who the members are.
//!
//! A backend runs one task per group. The runtime sends it `StoreCommand`s and receives
//! [`StoreEvent`]s; the backend keeps the group's lease alive on its own and reports each
//! successful renewal with the monotonic time at which the renewal was *sent*, which is what
//! the self-fencing deadline is counted from. (The etcd backend shares one lease among the
//! groups of one lease length, and reports each of its renewals to every one of them: see
//! [`etcd`].)
//!
//! What both backends owe the runtime (the store contract) lives once, beside them:
//! - `report`: the up/down edges and the order of events;
//! - `view`: the view, and which events tell it (everything after a (re)connection, then
//!   changes only);
//! - `queue`: queued writes, their retry after a reconnection, what is answered at once;
//! - `policy`: what an unreadable value means;
//! - `error`: typed errors for `Down` and `Corrupt`.
//!
//! A backend only talks to its store: connecting, leases, reading and watching the group's
//! values, carrying out writes. `tests/store_contract.rs` runs one suite against both.
#![deny(missing_docs)]

pub mod dir;
pub mod error;
pub mod etcd;
mod policy;
mod queue;
pub mod record;
mod report;
mod view;

use std::sync::Arc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use crate::agent::GroupId;

pub use error::{Cause, DirError, EndpointError, EtcdError, StoreError, ValueError};
pub use record::{
    AddressRecord, HostId, HostIdError, LeaderRecord, MaintenanceRecord, MemberRecord, RecordError,
    SwitchoverRecord, TermRecord, other_host,
};

/// What a backend needs to know to serve one group.
#[derive(Debug, Clone)]
pub struct GroupSpec {
    /// The group's name (`[a-z0-9_-]`, checked by config): a key or directory component.
    pub group: String,
    /// This node's name (checked by config), as written in its records.
    pub node: String,
    /// This host, written into our records so that another host using the same `node` is
    /// recognised (see [`HostId`]); `None` if the host has no machine-id.
    pub host: Option<HostId>,
    /// The group's lease: a leader that stops renewing loses the key after this.
    pub lease: Duration,
    /// The floating addresses the group's role holds (config `addresses`), each with a key
    /// of its own in the store ([`AddressRecord`]): a campaign takes them with the leader
    /// key, and is lost while another group holds one; a release frees them with the key.
    /// Fixed for the session (a change of `addresses` restarts the group).
    pub addresses: Vec<std::net::IpAddr>,
    /// Beaten by the backend's task on every turn of its loop, connected or not; the runtime
    /// pings the systemd watchdog only while every backend task keeps beating.
    pub progress: Progress,
}

/// A liveness beacon for a driver task: the monotonic time of its last turn.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<AtomicU64>);

fn origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

impl Progress {
    /// The task turned now.
    pub fn beat(&self) {
        let ns = u64::try_from(origin().elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.0.store(ns.max(1), Ordering::Relaxed);
    }

    /// How long ago the task last beat; `None` if it never did.
    pub fn age(&self) -> Option<Duration> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(origin().elapsed().saturating_sub(Duration::from_nanos(ns))),
        }
    }
}

impl GroupSpec {
    /// [`GroupSpec::addresses`] sorted and each once, as both backends key them (etcd
    /// refuses a transaction that writes one key twice).
    pub fn address_set(&self) -> Vec<std::net::IpAddr> {
        let mut ips = self.addresses.clone();
        ips.sort();
        ips.dedup();
        ips
    }

    /// Renew three times per lease, so one lost renewal does not cost the role.
    pub fn renew_interval(&self) -> Duration {
        self.lease / 3
    }
}

/// The leader key as seen in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    /// The node named in the key's value; [`UNREADABLE_NODE`] if the value is corrupt or foreign
    /// (the key still blocks the election: an unreadable leader is a leader).
    pub node: String,
    /// The fencing token: the term in the key's value (etcd; the create revision for a value
    /// without one, as older promd versions wrote), or in the leader file (dir).
    pub term: u64,
    /// The holder's host, from the record ([`LeaderRecord::host`]).
    pub host: Option<String>,
}

/// Stands for the holder of a leader key whose value could not be read. Not a valid node name.
pub const UNREADABLE_NODE: &str = "(unreadable)";

/// What the runtime asks of a group's backend task.
#[derive(Debug, Clone)]
pub enum StoreCommand {
    /// Take the leader key if nobody holds it, at a term above every term the store handed
    /// out and above `floor`, and with it the key of each of the group's addresses
    /// ([`GroupSpec::addresses`]); lost while another group holds one of those (the backend
    /// logs which, and who holds it). Answered by [`StoreEvent::Campaigned`].
    Campaign {
        /// The key's value (the store fills in its term).
        record: LeaderRecord,
        /// The highest term the campaigner knows to have been handed out: what a store that
        /// lost its history (restored from an older snapshot) must still exceed.
        floor: u64,
        /// This node's member record claiming the role (the store fills in the won term),
        /// written with the key: in the same transaction where the store can (etcd, when the
        /// record is bound to the group's lease), else right after it, before the answer.
        /// A won campaign so needs no write of the claim of its own before the units may
        /// start (a round trip of every switchover and failover). Lost: nothing is written.
        claim: MemberRecord,
    },
    /// Delete the leader key if it is still ours (it names this node, was not written on
    /// another host) at this term, and with it the group's address keys. Answered by
    /// [`StoreEvent::Released`] either way.
    Release {
        /// The term the key was won at.
        term: u64,
    },
    /// Write (or overwrite) this node's member record, bound to the group's lease.
    Publish(MemberRecord),
    /// [`StoreCommand::Release`] and then [`StoreCommand::Publish`] of `record`, as one
    /// write where the store can (etcd: one transaction), else one after the other: a
    /// demoted holder's `passive` record and its released key reach the standbys together, and
    /// the best of them campaigns one round trip sooner (it waits while a record still
    /// claims the role). Answered by [`StoreEvent::Released`].
    Retire {
        /// The term the key was won at.
        term: u64,
        /// This node's member record once the key is released.
        record: MemberRecord,
    },
    /// Ask the current leader to hand over to `record.to`.
    RequestSwitchover(SwitchoverRecord),
    /// Remove the switchover request (the new leader does this once it holds the key).
    ClearSwitchover,
    /// Turn the group's maintenance mode on or off, cluster-wide: a key that outlives every
    /// lease (`PREFIX/GROUP/maintenance`), written by any node. Answered by the
    /// [`StoreEvent::Maintenance`] that follows the change.
    SetMaintenance(MaintenanceRecord),
    /// Delete this node's keys, revoke the lease and end the task.
    Shutdown,
}

/// A write that needs the store, queued by a backend until it can carry it out: every
/// [`StoreCommand`] but `Shutdown`, which ends the task instead.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    Campaign {
        record: LeaderRecord,
        floor: u64,
        claim: MemberRecord,
    },
    Release {
        term: u64,
    },
    Publish(MemberRecord),
    Retire {
        term: u64,
        record: MemberRecord,
    },
    PutSwitchover(SwitchoverRecord),
    ClearSwitchover,
    SetMaintenance(MaintenanceRecord),
}

impl Op {
    /// Whether an election waits for this write (a campaign, a release, a retirement): such
    /// writes pass a gate of their own, never queued behind member records.
    pub(crate) fn elects(&self) -> bool {
        matches!(
            self,
            Op::Campaign { .. } | Op::Release { .. } | Op::Retire { .. }
        )
    }
}

impl StoreCommand {
    /// The write this command asks for; `None` for `Shutdown`.
    pub(crate) fn into_op(self) -> Option<Op> {
        Some(match self {
            StoreCommand::Campaign {
                record,
                floor,
                claim,
            } => Op::Campaign {
                record,
                floor,
                claim,
            },
            StoreCommand::Release { term } => Op::Release { term },
            StoreCommand::Publish(rec) => Op::Publish(rec),
            StoreCommand::Retire { term, record } => Op::Retire { term, record },
            StoreCommand::RequestSwitchover(rec) => Op::PutSwitchover(rec),
            StoreCommand::ClearSwitchover => Op::ClearSwitchover,
            StoreCommand::SetMaintenance(rec) => Op::SetMaintenance(rec),
            StoreCommand::Shutdown => return None,
        })
    }
}

/// What a group's backend task tells the runtime.
///
/// After every (re)connection: `Up`, `Renewed`, then the whole view in this order: `Leader`,
/// `Members`, `Switchover`, `Maintenance` (unreadable values first, as `Corrupt`). After that,
/// each change once, in the same order.
#[derive(Debug, Clone, PartialEq)]
pub enum StoreEvent {
    /// The backend reached the store and holds a live lease.
    Up,
    /// The store cannot be reached; the backend keeps retrying. Reported once per outage.
    Down(StoreError),
    /// A renewal of the group's lease, sent at this instant, was acknowledged.
    Renewed {
        /// When the renewal was sent (the fencing deadline counts from here).
        sent_at: Instant,
    },
    /// The lease is gone (expired or revoked): every key bound to it is gone too.
    /// The backend grants a new lease and reports [`StoreEvent::Up`] again when it has one.
    LeaseLost,
    /// The leader key, after any change (and once after every (re)connection, followed by
    /// `Members`, `Switchover` and `Maintenance`, in that order).
    Leader(Option<Leader>),
    /// Every readable member record, after any change (and once after every (re)connection).
    Members(Vec<MemberRecord>),
    /// The pending switchover request, after any change.
    Switchover(Option<SwitchoverRecord>),
    /// The maintenance record, after any change (`None`: off). An unreadable value is
    /// reported as [`StoreEvent::Corrupt`] and taken as *on* (the safe reading: nothing acts).
    Maintenance(Option<MaintenanceRecord>),
    /// Result of a [`StoreCommand::Campaign`]: `Some(term)` if this node now holds the key.
    Campaigned(Option<u64>),
    /// Result of a [`StoreCommand::Release`]: the key is no longer ours.
    Released,
    /// A value in the store could not be trusted; it was ignored (or, for the leader key,
    /// taken as held by [`UNREADABLE_NODE`]; for maintenance, taken as on). Reported once
    /// until it changes, and again after a (re)connection.
    Corrupt {
        /// The etcd key, or the dir store's file path.
        key: String,
        /// Why it is not trusted.
        error: ValueError,
    },
}

impl StoreEvent {
    /// The event's name without its data (for logs and for checking the order of events).
    pub fn kind(&self) -> &'static str {
        match self {
            StoreEvent::Up => "Up",
            StoreEvent::Down(_) => "Down",
            StoreEvent::Renewed { .. } => "Renewed",
            StoreEvent::LeaseLost => "LeaseLost",
            StoreEvent::Leader(_) => "Leader",
            StoreEvent::Members(_) => "Members",
            StoreEvent::Switchover(_) => "Switchover",
            StoreEvent::Maintenance(_) => "Maintenance",
            StoreEvent::Campaigned(_) => "Campaigned",
            StoreEvent::Released => "Released",
            StoreEvent::Corrupt { .. } => "Corrupt",
        }
    }
}

/// A running backend for one group.
pub struct GroupSession {
    /// Where the runtime sends its commands ([`GroupSession::send`]). Boxed: a tokio channel
    /// holds a block of 32 slots from its creation, and 32 commands of 184 bytes were most of
    /// an idle group's memory (one channel per group).
    pub commands: mpsc::UnboundedSender<Box<StoreCommand>>,
    /// The backend's task: awaited after `Shutdown`, so that its last writes (release, lease
    /// revoke, member record) reach the store before promd exits.
    pub task: tokio::task::JoinHandle<()>,
}

impl GroupSession {
    /// Hand the backend a command; `false` if its task has ended (only after `Shutdown`).
    pub fn send(&self, command: StoreCommand) -> bool {
        self.commands.send(Box::new(command)).is_ok()
    }
}

/// A coordination store backend (etcd or a directory).
pub trait Store: Send + Sync {
    /// Start serving one group: the backend's task sends events (tagged with the group's
    /// `id`) to `events` until it is told to shut down or the receiver is gone.
    fn open_group(
        &self,
        spec: GroupSpec,
        id: GroupId,
        events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    ) -> GroupSession;
}
