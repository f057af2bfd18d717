//! The group task: an offline phase that waits for the store's connection, the group's shared
//! lease and the shared watch and then reads the group; an online phase that reports the
//! lease's renewals, follows the watch and carries out commands, all from one `select!` loop.
//! What the runtime is told, and when queued writes are answered, is the shared
//! [`Reporter`]'s and [`OpQueue`]'s business.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::KeyValue;
use tokio::sync::{mpsc, watch};
use tokio::time::MissedTickBehavior;
use tracing::{debug, warn};

use super::connect::CallError;
use super::hub::{Batch, HubState, Registration};
use super::lease::{LeaseRef, Leaving, Orphan};
use super::link::{Conn, LinkState};
use super::ops::{Done, OpFuture, Owned, publish_member, start_op};
use super::view::{ReadFuture, Values, read_group};
use super::{GroupCfg, Shared};
use crate::store::error::EtcdError;
use crate::store::queue::OpQueue;
use crate::store::record::MemberRecord;
use crate::store::report::Reporter;
use crate::store::{GroupSpec, Op, StoreCommand, StoreEvent};

/// Await an optional future; never completes if there is none (for `select!`).
async fn maybe<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// How the online phase ended.
enum Exit {
    /// Shutdown done, or nobody listens any more.
    End,
    /// The connection was found bad (by this group or anyone else): wait for the next.
    Down,
    /// The lease is gone (for every group on it).
    LeaseLost,
    /// Something went wrong for this group alone (a compare-and-swap that kept losing): say
    /// so and read the group again on the same connection.
    Reset(EtcdError),
}

/// What the group needs to read itself: a connection, a live lease on it, the watch live on it.
struct Go {
    conn: Arc<Conn>,
    lease: i64,
    renewed_at: Instant,
    epoch: u64,
}

/// The group read (after its member record was written) on a connection.
struct Established {
    revision: i64,
    snapshot: Vec<KeyValue>,
    /// The member record written, and the revision it was written at (`None`: another host's).
    published: Option<(MemberRecord, Option<i64>)>,
}

type Establishing = Pin<Box<dyn Future<Output = Result<Established, CallError>> + Send>>;

/// A connection with a live lease, the group read, and the watch it follows.
struct Session {
    go: Go,
    established: Established,
    /// Changes of the watch's epoch that came while the group was read.
    pending: Vec<Batch>,
}

pub(super) struct GroupTask {
    pub(super) spec: GroupSpec,
    pub(super) report: Reporter,
    pub(super) commands: mpsc::UnboundedReceiver<Box<StoreCommand>>,
    pub(super) cfg: Arc<GroupCfg>,
    pub(super) renew: Duration,
    pub(super) queue: OpQueue,
    /// Keeps the store's connection and watch tasks alive while the group runs.
    pub(super) shared: Arc<Shared>,
    pub(super) links: watch::Receiver<LinkState>,
    pub(super) hub: watch::Receiver<HubState>,
    pub(super) watch: Registration,
    pub(super) lease: LeaseRef,
    /// The lease our keys are bound to, until it is known gone.
    pub(super) bound: Option<i64>,
    /// A lease a write of ours found gone: not used again, whatever its task says meanwhile.
    pub(super) dead: Option<i64>,
    pub(super) owned: Owned,
}

impl GroupTask {
    /// The task turns at least this often, to show it is not hung (the agent takes a task
    /// silent for a lease, at least 5 s, as hung): every half lease. Not every half renewal:
    /// with hundreds of groups those wake-ups were most of an idle promd's CPU.
    fn beat_ticker(&self) -> tokio::time::Interval {
        let mut beat = tokio::time::interval(self.renew * 3 / 2);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        beat
    }

    pub(super) async fn run(mut self) {
        loop {
            let Some(session) = self.offline().await else {
                return;
            };
            let conn = session.go.conn.clone();
            match self.online(session).await {
                Exit::End => return,
                Exit::Down => self.report_ended(&conn),
                Exit::LeaseLost => self.lease_lost(),
                Exit::Reset(reason) => self.report.down(reason.into(), &mut self.queue),
            }
        }
    }

    /// The connection `conn` was found bad: say why (the link may have moved on already).
    fn report_ended(&mut self, conn: &Conn) {
        if let Some(reason) = conn.ended() {
            self.report.down(reason.clone().into(), &mut self.queue);
        }
    }

    /// Every key bound to the lease went with it.
    fn lease_lost(&mut self) {
        self.bound = None;
        self.owned = Owned::default();
        self.report.lease_lost(&mut self.queue);
    }

    /// A command, `online` or not. Returns false if the task must end (a `Shutdown` while
    /// offline: nothing etcd would hear of now; see [`Self::leave_offline`]).
    fn command(&mut self, command: StoreCommand, online: bool) -> bool {
        let Some(op) = command.into_op() else {
            if let Some(rec) = self.queue.unwritten_maintenance() {
                warn!(group = %self.spec.group, on = rec.on, "etcd unreachable at shutdown; maintenance change not written");
            }
            self.leave_offline();
            return false;
        };
        if let Some(answer) = self.queue.push(op, online) {
            self.report.emit(answer);
        }
        true
    }

    /// A shutdown without a connection. The last group on the lease leaves it to run out (no
    /// one renews it any more); any other hands its keys to the lease's task, which deletes
    /// them at its next connection — the lease lives on for the others, and the keys with it.
    fn leave_offline(&mut self) {
        let left = self.lease.leave(Leaving::Shutdown);
        if left.revoke.is_some() {
            return;
        }
        if let Some(lease) = self.bound {
            self.lease.orphan(Orphan {
                group: self.spec.group.clone(),
                keys: self.cfg.keys.clone(),
                lease,
                owned: self.owned,
            });
        }
    }

    /// The lease state says our lease is gone: a lease loss.
    fn check_lease(&mut self) {
        let id = self.lease.state.borrow().id;
        if self.bound.is_some() && id != self.bound {
            self.lease_lost();
        }
    }

    /// Whether the group can be read now; reports the connection's failure if it is down.
    fn ready(&mut self) -> Option<Go> {
        let link = self.links.borrow_and_update().clone();
        let lease = self.lease.state.borrow_and_update().clone();
        let hub = *self.hub.borrow_and_update();
        self.check_lease();
        let conn = match link {
            LinkState::Connecting => return None,
            LinkState::Down(reason) => {
                self.report.down(reason.into(), &mut self.queue);
                return None;
            }
            LinkState::Up(conn) => conn,
        };
        let (Some(id), Some(renewed_at)) = (lease.id, lease.renewed_at) else {
            return None;
        };
        if lease.generation != conn.generation || self.dead == Some(id) {
            return None;
        }
        self.dead = None;
        if !(hub.live && hub.generation == conn.generation) {
            return None;
        }
        Some(Go {
            conn,
            lease: id,
            renewed_at,
            epoch: hub.epoch,
        })
    }

    /// Write the member record (if one was published) under the lease, then read the group.
    fn establish(&self, go: &Go) -> Establishing {
        let client = go.conn.client.clone();
        let (cfg, lease) = (self.cfg.clone(), go.lease);
        let member = self.queue.member().cloned();
        let gate = self.shared.calls.clone();
        Box::pin(async move {
            // Never closed; were it closed, the read goes ahead ungated rather than failing.
            let _permit = gate.acquire_owned().await.ok();
            let t = cfg.call_timeout;
            let published = match member {
                Some(rec) => {
                    let mut kv = client.kv_client();
                    // Not written if another host holds our node's key: the read below shows
                    // its record, and the runtime refuses to go on.
                    let at = publish_member(
                        &mut kv,
                        &cfg.keys.member,
                        &rec,
                        cfg.host.as_ref(),
                        lease,
                        t,
                    )
                    .await?;
                    Some((rec, at))
                }
                None => None,
            };
            let (revision, snapshot) = read_group(&client, &cfg.keys, t)
                .await
                .map_err(CallError::Broken)?;
            Ok(Established {
                revision,
                snapshot,
                published,
            })
        })
    }

    /// Offline phase: wait until the connection, the lease and the watch are up, then read the
    /// group, answering commands meanwhile. `None` means the task must end.
    async fn offline(&mut self) -> Option<Session> {
        let mut beat = self.beat_ticker();
        let mut attempt: Option<(Go, Establishing)> = None;
        let mut pending: Vec<Batch> = Vec::new();
        let mut evaluate = true;
        // After a failure of this group's own, the next read waits a retry pause (the
        // connection's failures are paced by the link task).
        let mut pause: Option<tokio::time::Instant> = None;
        loop {
            self.spec.progress.beat();
            if !self.report.listening() {
                return None;
            }
            if evaluate && attempt.is_none() && pause.is_none() {
                evaluate = false;
                if let Some(go) = self.ready() {
                    pending.clear();
                    let establishing = self.establish(&go);
                    attempt = Some((go, establishing));
                }
            }
            tokio::select! {
                result = async {
                    match &mut attempt {
                        Some((_, establishing)) => establishing.await,
                        None => std::future::pending().await,
                    }
                } => {
                    evaluate = true;
                    let Some((go, _)) = attempt.take() else { continue };
                    match result {
                        Ok(established) => {
                            return Some(Session {
                                go,
                                established,
                                pending: std::mem::take(&mut pending),
                            });
                        }
                        Err(CallError::LeaseGone) => self.found_gone(go.lease),
                        Err(CallError::Broken(reason)) if alone(&reason) => {
                            self.report.down(reason.into(), &mut self.queue);
                            pause = Some(tokio::time::Instant::now() + self.shared.link.retry());
                        }
                        Err(CallError::Broken(reason)) => {
                            self.shared.link.broken(go.conn.generation, reason);
                            self.report_ended(&go.conn);
                        }
                    }
                }
                _ = async {
                    match pause {
                        Some(at) => tokio::time::sleep_until(at).await,
                        None => std::future::pending().await,
                    }
                } => {
                    pause = None;
                    evaluate = true;
                }
                changed = self.links.changed() => {
                    if changed.is_err() {
                        return None;
                    }
                    // A read on a connection found bad meanwhile is not waited for.
                    if let Some((go, _)) = &attempt
                        && !self.links.borrow().is_up(go.conn.generation)
                    {
                        attempt = None;
                    }
                    evaluate = true;
                }
                _ = self.lease.state.changed() => evaluate = true,
                _ = self.hub.changed() => evaluate = true,
                batch = self.watch.batches.recv() => {
                    // Kept for the read in flight; otherwise the next read holds it.
                    if let (Some(batch), Some((go, _))) = (batch, &attempt)
                        && batch.epoch == go.epoch
                    {
                        pending.push(batch);
                    }
                }
                command = self.commands.recv() => {
                    if !command.is_some_and(|c| self.command(*c, false)) {
                        return None;
                    }
                }
                _ = beat.tick() => {}
            }
        }
    }

    /// etcd said lease `id` is gone: every group on it loses it, and we do not use it again.
    fn found_gone(&mut self, id: i64) {
        self.dead = Some(id);
        self.lease.gone(id);
        if self.bound == Some(id) {
            self.lease_lost();
        }
    }

    /// Online phase: report renewals, follow the watch, carry out commands one at a time. A
    /// write still in flight when the session drops (the connection found bad, the lease lost)
    /// is queued again, so that a Release, a switchover or a maintenance change is retried on
    /// the next connection (or answered, if the lease went with it) instead of being lost.
    async fn online(&mut self, session: Session) -> Exit {
        let mut in_flight: Option<Op> = None;
        let exit = self.serve_session(session, &mut in_flight).await;
        if let Some(op) = in_flight
            && !matches!(exit, Exit::End)
        {
            // Answered by the lease-lost or down edge if the lease or the store is gone.
            self.queue.requeue(op);
        }
        exit
    }

    fn report_view(&mut self, values: &Values) {
        let (view, corrupt) = values.reading(&self.cfg.keys).judge();
        self.report.view(view, corrupt);
    }

    /// Read the group again (the watch was created anew).
    fn resync(&self, conn: &Conn) -> ReadFuture {
        let client = conn.client.clone();
        let cfg = self.cfg.clone();
        let gate = self.shared.calls.clone();
        Box::pin(async move {
            let _permit = gate.acquire_owned().await.ok();
            read_group(&client, &cfg.keys, cfg.call_timeout).await
        })
    }

    async fn serve_session(&mut self, session: Session, in_flight: &mut Option<Op>) -> Exit {
        let Session {
            go,
            established,
            pending,
        } = session;
        let Go {
            conn,
            lease,
            renewed_at,
            mut epoch,
        } = go;
        let Established {
            mut revision,
            snapshot,
            published,
        } = established;
        self.bound = Some(lease);
        debug!(group = %self.spec.group, lease, "etcd store up");
        self.report.up(renewed_at);
        let mut last_renewal = renewed_at;
        let mut values = Values::from_snapshot(&self.cfg.keys, &snapshot, revision);
        for batch in &pending {
            values.apply(&self.cfg.keys, &batch.changes, revision);
        }
        self.report_view(&values);
        if let Some((rec, at)) = &published {
            // Written while connecting; a newer one published meanwhile stays queued.
            self.queue.published(rec);
            self.owned.member = *at;
        }

        // A read in flight after the watch was created anew, for this epoch, and the changes of
        // that epoch that came meanwhile.
        let mut resync: Option<(u64, ReadFuture)> = None;
        let mut held: Vec<Batch> = Vec::new();
        let mut inflight: Option<OpFuture> = None;
        let mut beat = self.beat_ticker();

        loop {
            self.spec.progress.beat();
            if !self.report.listening() {
                return Exit::End;
            }
            if inflight.is_none()
                && let Some(op) = self.queue.pop()
            {
                *in_flight = Some(op.clone());
                let gate = if op.elects() {
                    self.shared.elections.clone()
                } else {
                    self.shared.calls.clone()
                };
                // A campaign starts from the view, unless a read is under way to replace it.
                let view = (resync.is_none() && matches!(op, Op::Campaign { .. }))
                    .then(|| values.campaign_view(&self.cfg.keys));
                inflight = Some(start_op(
                    op,
                    &conn.client,
                    lease,
                    &self.owned,
                    view,
                    &self.cfg,
                    gate,
                ));
            }
            // The watch was created anew (it read nothing we saw): read the group again.
            let hub = *self.hub.borrow_and_update();
            if resync.is_none()
                && hub.generation == conn.generation
                && hub.live
                && hub.epoch != epoch
            {
                held.clear();
                resync = Some((hub.epoch, self.resync(&conn)));
            }

            tokio::select! {
                command = self.commands.recv() => match command.map(|c| *c) {
                    // The runtime is gone without a shutdown: do not revoke. Its units may
                    // still run; the lease must run out before anyone else may take over.
                    None => return Exit::End,
                    Some(StoreCommand::Shutdown) => {
                        drop(inflight);
                        // Boxed: awaited once, at the end, it would otherwise size this
                        // task's future (5 KiB of 9, per group) for all of its life.
                        Box::pin(self.shutdown(&conn.client, lease)).await;
                        return Exit::End;
                    }
                    Some(command) => {
                        self.command(command, true);
                    }
                },

                (op, result) = maybe(&mut inflight) => {
                    inflight = None;
                    *in_flight = None;
                    match result {
                        Ok(done) => {
                            self.queue.done(&op);
                            self.owned.note(&done);
                            match done {
                                Done::Campaigned(won) => {
                                    if let Some(won) = won {
                                        debug!(group = %self.spec.group, term = won.term, "won the leader key");
                                        if won.claim.is_some() {
                                            self.queue.claimed(&op, won.term);
                                        }
                                    }
                                    self.report.emit(StoreEvent::Campaigned(won.map(|w| w.term)));
                                }
                                Done::Released | Done::Retired(_) => self.report.emit(StoreEvent::Released),
                                Done::Published(_) | Done::Requested(_) | Done::Cleared | Done::Written => {}
                            }
                        }
                        Err(CallError::LeaseGone) => {
                            // A write with a dead lease changes nothing (etcd rejects the
                            // whole transaction): a campaign lost; the rest is redone.
                            self.queue.requeue(op);
                            self.dead = Some(lease);
                            self.lease.gone(lease);
                            return Exit::LeaseLost;
                        }
                        Err(CallError::Broken(reason)) if alone(&reason) => {
                            self.queue.requeue(op);
                            return Exit::Reset(reason);
                        }
                        Err(CallError::Broken(reason)) => {
                            self.queue.requeue(op);
                            self.broken(&conn, reason);
                            return Exit::Down;
                        }
                    }
                }

                changed = self.links.changed() => {
                    if changed.is_err() || !self.links.borrow_and_update().is_up(conn.generation) {
                        return Exit::Down;
                    }
                }

                _ = self.lease.state.changed() => {
                    let state = self.lease.state.borrow_and_update().clone();
                    if state.id != Some(lease) {
                        return Exit::LeaseLost;
                    }
                    if let Some(sent_at) = state.renewed_at
                        && sent_at > last_renewal
                    {
                        last_renewal = sent_at;
                        self.report.renewed(sent_at);
                    }
                }

                // Looked at before the next turn's `select!`.
                _ = self.hub.changed() => {}

                batch = self.watch.batches.recv() => {
                    let Some(batch) = batch else { return Exit::End };
                    match &resync {
                        // Kept for the read in flight.
                        Some((next, _)) if batch.epoch == *next => held.push(batch),
                        None if batch.epoch == epoch => {
                            values.apply(&self.cfg.keys, &batch.changes, revision);
                            self.report_view(&values);
                        }
                        // Of a watch no read of ours follows.
                        _ => {}
                    }
                }

                result = async {
                    match &mut resync {
                        Some((_, read)) => read.await,
                        None => std::future::pending().await,
                    }
                } => {
                    let Some((next, _)) = resync.take() else { continue };
                    match result {
                        Ok((read_at, snapshot)) => {
                            epoch = next;
                            revision = read_at;
                            values = Values::from_snapshot(&self.cfg.keys, &snapshot, read_at);
                            for batch in held.drain(..) {
                                values.apply(&self.cfg.keys, &batch.changes, revision);
                            }
                            self.report_view(&values);
                        }
                        Err(reason) => {
                            self.broken(&conn, reason);
                            return Exit::Down;
                        }
                    }
                }

                _ = beat.tick() => {}
            }
        }
    }

    /// A call of ours on `conn` failed: the connection is bad for everyone.
    fn broken(&self, conn: &Conn, reason: EtcdError) {
        debug!(group = %self.spec.group, %reason, "etcd call failed");
        let reason = EtcdError::Session {
            endpoint: conn.endpoint.clone(),
            error: Box::new(reason),
        };
        self.shared.link.broken(conn.generation, reason);
    }
}

/// A failure of one group's, not of the connection: a compare-and-swap that kept losing, an
/// answer without a header. Reading the group again is the cure, not a new connection for
/// every group.
fn alone(reason: &EtcdError) -> bool {
    matches!(
        reason,
        EtcdError::Contended { .. } | EtcdError::NoHeader { .. }
    )
}
