//! The store contract's test harness: a [`Backend`] is a store the contract suite
//! (`tests/store_contract.rs`) can start, open nodes on, cut nodes off from, and write raw
//! values into, as another program (or an operator) would. [`Etcd`] is a real three-member
//! etcd cluster on loopback, [`Dir`] a temporary directory. The per-backend test files use
//! the same [`Node`].
#![allow(dead_code)]

pub mod dir;
pub mod etcd;
pub mod node;

#[path = "../etcd.rs"]
pub mod etcd_cluster;
#[path = "../pki.rs"]
pub mod pki;
#[path = "../records.rs"]
pub mod records;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promd::store::Store;

pub use node::{Node, Opening, secs};

/// The deadline for what must happen but whose timing is not under test.
pub const SOON: Duration = Duration::from_secs(5);

/// How far this machine's realtime clock has stepped against its monotonic clock between two
/// points: what a wall-clock lease (see [`Backend::WALL_CLOCK`]) is shortened (positive) or
/// lengthened (negative) by. VMs here step realtime by a few milliseconds now and then when
/// the hypervisor resynchronises it; NTP slews change both clocks' rate alike.
pub struct ClockSteps {
    mono: Instant,
    wall: SystemTime,
}

impl ClockSteps {
    /// Start counting from now.
    pub fn start() -> ClockSteps {
        ClockSteps {
            mono: Instant::now(),
            wall: SystemTime::now(),
        }
    }

    /// Wall-clock time passed minus monotonic time passed since [`ClockSteps::start`], in
    /// microseconds (positive: realtime stepped forward).
    pub fn stepped_us(&self) -> i128 {
        let mono = self.mono.elapsed().as_micros() as i128;
        let wall =
            |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros() as i128;
        wall(SystemTime::now()) - wall(self.wall) - mono
    }

    /// `d` moved by the realtime step since the start, for a backend whose leases are on the
    /// wall clock; `d` as is otherwise. A forward step makes a wall-clock lease end earlier.
    pub fn on_store_clock<B: Backend>(&self, d: Duration) -> Duration {
        if !B::WALL_CLOCK {
            return d;
        }
        let step = self.stepped_us();
        let d_us = d.as_micros() as i128;
        Duration::from_micros(u64::try_from((d_us + step).max(0)).unwrap_or(u64::MAX))
    }
}

/// A node's own way to the store, which [`Backend::cut`] and [`Backend::heal`] act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link(pub usize);

impl Link {
    /// A node opened on a store of the test's own making, with no link to cut.
    pub const NONE: Link = Link(usize::MAX);
}

/// A key of a group, as the contract names it.
#[derive(Debug, Clone, Copy)]
pub enum Key<'a> {
    Leader,
    Member(&'a str),
    Switchover,
    Maintenance,
    /// The highest term handed out: etcd's `term` key, the dir store's `term` file.
    Term,
}

impl Key<'_> {
    /// The end of the key's name in every backend: `/GROUP/leader`, `/GROUP/members/NODE`, …
    /// (etcd: `PREFIX/GROUP/leader`; dir: `ROOT/GROUP/leader`). `Corrupt` events name keys so.
    pub fn suffix(&self, group: &str) -> String {
        match self {
            Key::Leader => format!("/{group}/leader"),
            Key::Member(node) => format!("/{group}/members/{node}"),
            Key::Switchover => format!("/{group}/switchover"),
            Key::Maintenance => format!("/{group}/maintenance"),
            Key::Term => format!("/{group}/term"),
        }
    }
}

/// A value to write under a key.
#[derive(Debug, Clone, Copy)]
pub enum Raw<'a> {
    /// Exactly these bytes.
    Bytes(&'a [u8]),
    /// A record's JSON as promd would store it: in the backend's envelope, if it has one
    /// (the dir store's: a session that expires in a minute; a leader file gets the term
    /// counter + 1).
    Record(&'a [u8]),
    /// As [`Raw::Record`], as a newer promd of the same format version might write it: the
    /// backend's envelope, if it has one, carries a field this promd does not know too.
    Extended(&'a [u8]),
}

/// A store the contract suite runs against. Times are the backend's: tests derive their
/// leases and latency bounds from them.
#[allow(async_fn_in_trait)]
pub trait Backend: Sized {
    /// `etcd` or `dir`.
    const NAME: &'static str;
    /// The lease most tests give their nodes.
    const LEASE: Duration;
    /// A change made by one session is seen by the others within this ("at once").
    const PROMPT: Duration;
    /// A graceful shutdown frees the leaving node's keys for the others within this.
    const HANDOVER: Duration;
    /// A session comes up within this.
    const UP: Duration;
    /// The store frees the keys of an expired lease at most this long after the lease.
    const EXPIRY_SLACK: Duration;
    /// Leases are counted on the wall clock (the dir store's files hold a wall-clock
    /// expiry), so a step of the machine's realtime clock moves when they end, measured on
    /// the monotonic clock, by the step. etcd counts on its leader's monotonic clock.
    const WALL_CLOCK: bool;

    /// A fresh, empty store.
    async fn start() -> Self;

    /// A new way to the store for one node, and the store as seen through it.
    async fn link(&mut self) -> (Arc<dyn Store>, Link);

    /// Cut `link` off from the store (its node's store calls fail or go unanswered).
    async fn cut(&mut self, link: Link);

    /// Restore `link`.
    async fn heal(&mut self, link: Link);

    /// Write `raw` under `key` of `group`, bound to no lease. Returns the term an unreadable
    /// leader value there is reported with: etcd's create revision of the key, the dir
    /// store's term counter.
    async fn put(&mut self, group: &str, key: Key<'_>, raw: Raw<'_>) -> u64;

    /// The stored bytes under `key` of `group` (with the backend's envelope, if any).
    async fn get(&mut self, group: &str, key: Key<'_>) -> Option<Vec<u8>>;

    /// Delete `key` of `group`, as an operator may.
    async fn delete(&mut self, group: &str, key: Key<'_>);

    /// The lease (etcd) or session (dir) that `node`'s member record is bound to.
    async fn lease_of(&mut self, group: &str, node: &str) -> Option<String>;

    /// End `node`'s lease behind its back, as if it had expired: every key bound to it goes.
    async fn revoke(&mut self, group: &str, node: &str);

    /// A node on its own link, with the backend's lease.
    async fn node(&mut self, group: &str, name: &str) -> Node {
        self.node_with(Opening {
            group,
            name,
            lease: Self::LEASE,
            host: None,
            addresses: &[],
        })
        .await
    }

    /// A node on its own link.
    async fn node_with(&mut self, how: Opening<'_>) -> Node {
        let (store, link) = self.link().await;
        Node::open(store.as_ref(), link, how)
    }

    /// [`Backend::detached`], opened as `how` says.
    async fn detached_with(&mut self, how: Opening<'_>) -> Node {
        let (store, link) = self.link().await;
        Node::detached(store, link, how)
    }

    /// A node on its own link and its own runtime (it can be frozen and killed).
    async fn detached(&mut self, group: &str, name: &str) -> Node {
        let (store, link) = self.link().await;
        let how = Opening {
            group,
            name,
            lease: Self::LEASE,
            host: None,
            addresses: &[],
        };
        Node::detached(store, link, how)
    }
}
