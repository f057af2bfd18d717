//! Leases shared by the groups of a store: one etcd lease, and one keepalive stream, per lease
//! length (and node and host: one promd has one of each, tests run several in one process).
//!
//! A task per lease keeps it alive on the store's connection: it renews every renew interval
//! of that lease length (`L/3`), waits `min(L/6, 500 ms)` for the answer (see
//! [`keepalive_wait`]), and publishes each acknowledged renewal's *send* time in its
//! [`LeaseState`]; every group on the lease reports that time as its own renewal, so each
//! group's fence counts from the same `s` the store counts the lease from. A keepalive
//! answered with TTL 0, or a group's write that etcd refused with "requested lease not found"
//! ([`LeaseRef::gone`]), ends the lease for every group on it (the state's `id` changes, which
//! each group reports as its own lease loss) and one new lease is granted for all. An
//! unanswered keepalive or a broken stream ends the *connection* instead
//! ([`Link::broken`]); the lease is kept, if etcd still has it, on the next one.
//!
//! Groups join with [`Leases::join`] and leave with [`LeaseRef::leave`]. The last group to
//! leave by a shutdown revokes the lease (as one group's shutdown revoked its own lease); the
//! others delete only their own keys. A group whose task ends without a shutdown (its runtime
//! gone) marks the lease *abandoned*: its units may still run, so its keys must not be
//! deleted early, and no later shutdown revokes the lease; it runs out on its own once nobody
//! renews it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{LeaseKeepAliveStream, LeaseKeeper};
use tokio::sync::{mpsc, watch};
use tokio::task::AbortHandle;
use tracing::{debug, info, warn};

use super::connect::{CallError, call};
use super::link::{Conn, Link, LinkState};
use super::ops::{Owned, delete_own};
use super::secure::explain_plain;
use super::{Keys, MAX_KEEPALIVE_WAIT, MIN_RENEW, ttl_secs};
use crate::store::error::{Cause, EtcdError};
use crate::sync::lock;

/// Which groups share a lease: those of one node and host with the same `lease`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) struct LeaseKey {
    pub(super) node: String,
    pub(super) host: Option<String>,
    pub(super) lease: Duration,
}

impl LeaseKey {
    /// Renew three times per lease ([`GroupSpec::renew_interval`](crate::store::GroupSpec)),
    /// at least every [`MIN_RENEW`].
    fn renew(&self) -> Duration {
        (self.lease / 3).max(MIN_RENEW)
    }
}

/// How long a keepalive may go unanswered before the member counts as silent and the
/// connection is replaced (another member first, the lease kept): half a renew interval, at
/// most [`MAX_KEEPALIVE_WAIT`]. An answer takes milliseconds; waiting for the next renewal
/// instead would spend `2L/3` of the lease, past the fence, before even trying another
/// member, and one silent etcd member would fail the active host over.
pub(super) fn keepalive_wait(renew: Duration) -> Duration {
    (renew / 2).min(MAX_KEEPALIVE_WAIT)
}

/// The lease as its groups see it.
#[derive(Debug, Clone, Default)]
pub(super) struct LeaseState {
    /// The lease, as long as it is known alive: `None` before the first grant, and from its
    /// loss until a new one is kept alive. A group bound to another id has lost its lease.
    pub(super) id: Option<i64>,
    /// The connection the lease's keepalive stream runs on.
    pub(super) generation: u64,
    /// Send time of the last acknowledged renewal of `id` (the monotonic clock, taken before
    /// the request left).
    pub(super) renewed_at: Option<Instant>,
}

/// Keys a group left behind when it was shut down without a connection: deleted by the
/// lease's task at its next connection, unless the lease is gone by then (and they with it).
#[derive(Debug)]
pub(super) struct Orphan {
    pub(super) group: String,
    pub(super) keys: Keys,
    pub(super) lease: i64,
    pub(super) owned: Owned,
}

enum Ctl {
    /// etcd said this lease does not exist.
    Gone(i64),
    /// Delete these keys when connected.
    Orphan(Orphan),
    /// A cleanup that failed: tried again at the next connection.
    Retry(Orphan),
}

/// How a group leaves its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Leaving {
    /// `StoreCommand::Shutdown`: its units are down, its keys may go.
    Shutdown,
    /// The task ended without a shutdown (its runtime is gone): nothing may be deleted early.
    Abandon,
}

/// What leaving told.
#[derive(Debug, Default)]
pub(super) struct Left {
    /// The lease to revoke: this was the last group on it, by a shutdown, and no group
    /// abandoned it.
    pub(super) revoke: Option<i64>,
    /// No other group of the same name is left on the lease (a reload may have opened the
    /// group again beside the one leaving): every key of the group bound to the lease is the
    /// leaving group's own.
    pub(super) alone: bool,
}

struct Entry {
    /// The names of the groups on the lease, once per group (a name may be there twice while
    /// a reload replaces a group).
    names: Arc<Mutex<Vec<String>>>,
    abandoned: bool,
    state: watch::Receiver<LeaseState>,
    ctl: mpsc::UnboundedSender<Ctl>,
    task: AbortHandle,
}

/// The leases of a store.
#[derive(Default)]
pub(super) struct Leases {
    map: Mutex<HashMap<LeaseKey, Entry>>,
}

impl Drop for Leases {
    fn drop(&mut self) {
        let map = self.map.get_mut().unwrap_or_else(|p| p.into_inner());
        for entry in map.values() {
            entry.task.abort();
        }
    }
}

impl Leases {
    /// Join `group` to the lease of `key`, starting its task (on the current runtime) if no
    /// group holds it yet.
    pub(super) fn join(self: &Arc<Self>, key: LeaseKey, group: &str, link: &Arc<Link>) -> LeaseRef {
        let mut map = lock(&self.map);
        let entry = map.entry(key.clone()).or_insert_with(|| {
            let (state_tx, state) = watch::channel(LeaseState::default());
            let (ctl, ctl_rx) = mpsc::unbounded_channel();
            let names = Arc::new(Mutex::new(Vec::new()));
            let task = LeaseTask {
                link: link.clone(),
                ttl: ttl_secs(key.lease),
                renew: key.renew(),
                key: key.clone(),
                state: state_tx,
                ctl: ctl_rx,
                retry: ctl.clone(),
                names: names.clone(),
                id: None,
                orphans: Vec::new(),
                stretched: None,
            };
            Entry {
                names,
                abandoned: false,
                state,
                ctl,
                task: tokio::spawn(task.run()).abort_handle(),
            }
        });
        lock(&entry.names).push(group.to_owned());
        LeaseRef {
            leases: self.clone(),
            key,
            group: group.to_owned(),
            state: entry.state.clone(),
            ctl: entry.ctl.clone(),
            left: false,
        }
    }

    fn leave(&self, key: &LeaseKey, group: &str, how: Leaving) -> Left {
        let mut map = lock(&self.map);
        let Some(entry) = map.get_mut(key) else {
            return Left::default();
        };
        let (alone, empty) = {
            let mut names = lock(&entry.names);
            if let Some(at) = names.iter().position(|n| n == group) {
                names.swap_remove(at);
            }
            (!names.iter().any(|n| n == group), names.is_empty())
        };
        if how == Leaving::Abandon {
            entry.abandoned = true;
        }
        if !empty {
            return Left {
                revoke: None,
                alone,
            };
        }
        let Some(entry) = map.remove(key) else {
            return Left::default();
        };
        // Nobody renews it from now on: revoked below, or left to run out.
        entry.task.abort();
        let id = entry.state.borrow().id;
        Left {
            revoke: id.filter(|_| how == Leaving::Shutdown && !entry.abandoned),
            alone,
        }
    }
}

/// A group's hold on its shared lease. Dropped without [`LeaseRef::leave`], it leaves as
/// [`Leaving::Abandon`].
pub(super) struct LeaseRef {
    leases: Arc<Leases>,
    key: LeaseKey,
    group: String,
    /// The lease's state, for this group.
    pub(super) state: watch::Receiver<LeaseState>,
    ctl: mpsc::UnboundedSender<Ctl>,
    left: bool,
}

impl LeaseRef {
    /// etcd said lease `id` does not exist (a write of this group's was refused so): the
    /// lease is lost for every group on it, and a new one is granted, once.
    pub(super) fn gone(&self, id: i64) {
        let _ = self.ctl.send(Ctl::Gone(id));
    }

    /// Leave the lease (once; later calls tell nothing).
    pub(super) fn leave(&mut self, how: Leaving) -> Left {
        if std::mem::replace(&mut self.left, true) {
            return Left::default();
        }
        self.leases.leave(&self.key, &self.group, how)
    }

    /// Keys to delete once connected (see [`Orphan`]); dropped if the lease's task ended.
    pub(super) fn orphan(&self, orphan: Orphan) {
        let _ = self.ctl.send(Ctl::Orphan(orphan));
    }
}

impl Drop for LeaseRef {
    fn drop(&mut self) {
        self.leave(Leaving::Abandon);
    }
}

/// How serving a lease on one connection ended.
enum Served {
    /// The lease is gone: grant a new one on the same connection.
    Lost,
    /// The connection is bad, for this reason.
    Broken(EtcdError),
    /// The connection was replaced (found bad elsewhere).
    Moved,
}

struct LeaseTask {
    link: Arc<Link>,
    key: LeaseKey,
    ttl: i64,
    renew: Duration,
    state: watch::Sender<LeaseState>,
    ctl: mpsc::UnboundedReceiver<Ctl>,
    /// For cleanups that fail, to come back as [`Ctl::Retry`].
    retry: mpsc::UnboundedSender<Ctl>,
    names: Arc<Mutex<Vec<String>>>,
    /// The lease as the task knows it: granted, perhaps not yet kept alive.
    id: Option<i64>,
    orphans: Vec<Orphan>,
    /// The TTL etcd last granted beyond the one asked for, once the journal said so.
    stretched: Option<i64>,
}

impl LeaseTask {
    async fn run(mut self) {
        let mut links = self.link.subscribe();
        // The connection the lease was last served on: it waits for a newer one.
        let mut served = 0;
        loop {
            let conn = loop {
                let newer = links.borrow_and_update().newer_than(served);
                if let Some(conn) = newer {
                    break conn;
                }
                tokio::select! {
                    changed = links.changed() => if changed.is_err() { return },
                    ctl = self.ctl.recv() => match ctl {
                        Some(ctl) => self.take(ctl),
                        None => return,
                    },
                }
            };
            served = conn.generation;
            loop {
                let (keeper, renewals, sent_at) = match self.open(&conn).await {
                    Ok(opened) => opened,
                    Err(reason) => {
                        self.link.broken(conn.generation, reason);
                        break;
                    }
                };
                conn.prove();
                self.state.send_replace(LeaseState {
                    id: self.id,
                    generation: conn.generation,
                    renewed_at: Some(sent_at),
                });
                self.clean(&conn);
                match self
                    .serve(&conn, keeper, renewals, sent_at, &mut links)
                    .await
                {
                    Served::Lost => self.lost(),
                    Served::Broken(reason) => {
                        let reason = EtcdError::Session {
                            endpoint: conn.endpoint.clone(),
                            error: Box::new(reason),
                        };
                        self.link.broken(conn.generation, reason);
                        break;
                    }
                    Served::Moved => break,
                }
            }
        }
    }

    /// A control message while not serving.
    fn take(&mut self, ctl: Ctl) {
        match ctl {
            Ctl::Gone(id) if self.id == Some(id) => self.lost(),
            Ctl::Gone(_) => {}
            Ctl::Orphan(orphan) | Ctl::Retry(orphan) => self.orphans.push(orphan),
        }
    }

    /// The lease is gone, and every key bound to it: every group on it sees `id` change.
    fn lost(&mut self) {
        info!(lease = ?self.id, ttl = self.ttl, "etcd lease lost");
        self.id = None;
        self.orphans.clear();
        self.state.send_modify(|s| {
            s.id = None;
            s.renewed_at = None;
        });
    }

    /// Keep the lease if etcd still has it (after a short cut it may well), or grant a new
    /// one; open its keepalive stream. The stream's first answer is a renewal too: its send
    /// time is returned.
    async fn open(
        &mut self,
        conn: &Conn,
    ) -> Result<(LeaseKeeper, LeaseKeepAliveStream, Instant), EtcdError> {
        let t = self.renew;
        let mut leases = conn.client.lease_client();
        if let Some(id) = self.id {
            let sent_at = Instant::now();
            match call("lease keepalive", t, leases.keep_alive(id)).await {
                Ok((keeper, renewals)) => return Ok((keeper, renewals, sent_at)),
                Err(CallError::LeaseGone) => self.lost(),
                Err(CallError::Broken(reason)) => return Err(reason),
            }
        }
        let granted = call("lease grant", t, leases.grant(self.ttl, None))
            .await
            .map_err(EtcdError::from)?;
        let id = granted.id();
        // Kept for the next attempt should the stream not open.
        self.id = Some(id);
        debug!(lease = id, ttl = granted.ttl(), node = %self.key.node, "etcd lease granted");
        self.check_granted(granted.ttl());
        let sent_at = Instant::now();
        let (keeper, renewals) = call("lease keepalive", t, leases.keep_alive(id))
            .await
            .map_err(EtcdError::from)?;
        Ok((keeper, renewals, sent_at))
    }

    /// etcd raises a TTL under its minimum, `1.5 × --election-timeout` rounded up to whole
    /// seconds (2 s with etcd's defaults), without an error. Safe — standbys only wait
    /// longer — but failover then takes that long, not `lease`: the journal says so, once per
    /// TTL, with the setting that fixes it (README, "Short leases").
    fn check_granted(&mut self, granted: i64) {
        if granted <= self.ttl {
            if self.stretched.take().is_some() {
                info!(ttl = granted, "etcd grants the lease asked for again");
            }
            return;
        }
        if self.stretched == Some(granted) {
            return;
        }
        self.stretched = Some(granted);
        let groups = lock(&self.names).join(", ");
        warn!(
            asked = self.ttl,
            ttl = granted,
            "etcd granted a {granted} s lease where {} s was asked (groups {groups}): its minimum \
             TTL is 1.5 × its --election-timeout, rounded up to whole seconds; a silent active \
             host is replaced after up to {granted}.5 s, not {}.5 s. For this lease, run etcd \
             with --election-timeout={} or less",
            self.ttl,
            self.ttl,
            max_election_timeout_ms(self.ttl),
        );
    }

    /// Renew every renew interval, one keepalive at a time (so answers pair up with their
    /// send times), until the lease or the connection ends.
    async fn serve(
        &mut self,
        conn: &Conn,
        mut keeper: LeaseKeeper,
        mut renewals: LeaseKeepAliveStream,
        renewed_at: Instant,
        links: &mut watch::Receiver<LinkState>,
    ) -> Served {
        let wait = keepalive_wait(self.renew);
        // A keepalive in flight: its send time.
        let mut outstanding: Option<Instant> = None;
        let mut next_renewal = renewed_at + self.renew;
        // In words: the client's own text of a broken stream is a debug dump of gRPC's status.
        let keepalive = |cause| EtcdError::Failed {
            call: "lease keepalive",
            cause: Cause::new(explain_plain(cause)),
        };
        loop {
            // Either the next renewal is due, or the one in flight has run out of time.
            let timer = outstanding.map_or(next_renewal, |sent| sent + wait);
            tokio::select! {
                changed = links.changed() => {
                    if changed.is_err() || !links.borrow_and_update().is_up(conn.generation) {
                        return Served::Moved;
                    }
                }
                ctl = self.ctl.recv() => match ctl {
                    Some(Ctl::Gone(id)) if self.id == Some(id) => return Served::Lost,
                    Some(Ctl::Orphan(orphan)) => {
                        self.orphans.push(orphan);
                        self.clean(conn);
                    }
                    Some(ctl) => self.take(ctl),
                    None => return Served::Moved,
                },
                _ = tokio::time::sleep_until(timer.into()) => {
                    if outstanding.is_some() {
                        // A silent member: reconnect, to another one, while the lease lives.
                        return Served::Broken(EtcdError::Timeout {
                            call: "lease keepalive",
                            after: wait,
                        });
                    }
                    // The send time is taken *before* the request leaves: the store can only
                    // have renewed the lease after it.
                    let sent = Instant::now();
                    if let Err(e) = keeper.keep_alive().await {
                        return Served::Broken(keepalive(e));
                    }
                    outstanding = Some(sent);
                    next_renewal = sent + self.renew;
                }
                answer = renewals.message() => match answer {
                    Ok(Some(answer)) => {
                        let Some(sent_at) = outstanding.take() else {
                            debug!(lease = ?self.id, "unexpected keepalive answer");
                            continue;
                        };
                        if answer.ttl() <= 0 {
                            return Served::Lost;
                        }
                        self.state.send_modify(|s| s.renewed_at = Some(sent_at));
                    }
                    Ok(None) => {
                        return Served::Broken(EtcdError::StreamClosed { stream: "lease keepalive" });
                    }
                    Err(e) => return Served::Broken(keepalive(e)),
                },
            }
        }
    }

    /// Delete the keys of groups that left while offline, if they are still bound to the
    /// lease (the cleanup runs beside the renewals, never in their way).
    fn clean(&mut self, conn: &Conn) {
        let id = self.id;
        self.orphans.retain(|o| Some(o.lease) == id);
        for orphan in self.orphans.drain(..) {
            let alone = !lock(&self.names).contains(&orphan.group);
            let mut kv = conn.client.kv_client();
            let (t, retry) = (self.renew, self.retry.clone());
            tokio::spawn(async move {
                let deleted =
                    delete_own(&mut kv, &orphan.keys, orphan.lease, &orphan.owned, alone, t).await;
                match deleted {
                    Ok(()) => info!(group = %orphan.group, "keys of a closed group deleted"),
                    Err(e) => {
                        let error = EtcdError::from(e);
                        warn!(group = %orphan.group, %error, "keys of a closed group not deleted yet");
                        let _ = retry.send(Ctl::Retry(orphan));
                    }
                }
            });
        }
    }
}

/// The longest etcd `--election-timeout` (ms, with the default 100 ms heartbeat) under which
/// etcd grants a TTL of `ttl` seconds: etcd's minimum TTL is `⌊3 × ticks / 2⌋` heartbeats,
/// `ticks = election-timeout / heartbeat`, rounded up to whole seconds
/// (`lessor.minLeaseTTL`, etcd's `server/config.go`).
pub(super) fn max_election_timeout_ms(ttl: i64) -> i64 {
    // ⌊3t/2⌋ × 100 ms ≤ ttl s  ⇔  ⌊3t/2⌋ ≤ 10 × ttl  ⇔  t ≤ ⌊(20 × ttl + 1) / 3⌋.
    ttl.saturating_mul(20).saturating_add(1) / 3 * 100
}
