//! The group task: an offline phase that connects, an online phase that renews, follows the
//! watch and carries out commands, all from one `select!` loop.

use std::collections::VecDeque;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{Client, EventType};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::MAX_RETRY_DELAY;
use super::connect::{CallError, Connector, Session, establish};
use super::ops::{Done, OpFuture, start_op};
use super::view::{ResyncFuture, Touched, View, next_watch, read_and_watch};
use crate::store::record::{MaintenanceRecord, MemberRecord};
use crate::store::{GroupId, GroupSpec, Op, StoreCommand, StoreEvent};

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
    /// The connection is not trusted any more; reconnect (and keep the lease if it lives).
    Down(String),
    /// etcd says the lease is gone; the connection itself is fine.
    LeaseLost(Box<Client>),
}

pub(super) struct GroupTask {
    pub(super) spec: GroupSpec,
    pub(super) index: GroupId,
    pub(super) events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    pub(super) commands: mpsc::UnboundedReceiver<StoreCommand>,
    pub(super) cfg: Arc<Connector>,
    pub(super) renew: Duration,
    /// The lease we hold (or held, until etcd says it is gone).
    pub(super) lease: Option<i64>,
    /// The last member record the runtime published: re-written under every new lease.
    pub(super) member: Option<MemberRecord>,
    /// Commands waiting for the store, in order.
    pub(super) queue: VecDeque<Op>,
    /// The last maintenance change asked for and not yet known to be written (queued or in
    /// flight): a graceful shutdown writes it before it leaves.
    pub(super) maintenance: Option<MaintenanceRecord>,
    /// `Down` was sent and no `Up` since.
    pub(super) down_reported: bool,
}

impl GroupTask {
    pub(super) fn emit(&self, event: StoreEvent) {
        // A closed receiver ends the task at its next turn (see `listening`).
        let _ = self.events.send((self.index, event));
    }

    fn listening(&self) -> bool {
        !self.events.is_closed()
    }

    fn beat_ticker(&self) -> tokio::time::Interval {
        let mut beat = tokio::time::interval(self.renew / 2);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        beat
    }

    pub(super) async fn run(mut self) {
        let mut reuse = None;
        loop {
            let Some(session) = self.offline(reuse.take()).await else {
                return;
            };
            match self.online(session).await {
                Exit::End => return,
                Exit::Down(reason) => self.went_down(reason),
                Exit::LeaseLost(client) => {
                    self.lease_lost();
                    reuse = Some(*client);
                }
            }
        }
    }

    fn went_down(&mut self, reason: String) {
        warn!(group = %self.spec.group, %reason, "etcd store down");
        self.down_reported = true;
        self.emit(StoreEvent::Down(reason));
        // Commands that need a live store: a campaign cannot win while it is down.
        self.answer_campaigns();
    }

    fn answer_campaigns(&mut self) {
        for op in std::mem::take(&mut self.queue) {
            match op {
                Op::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
                other => self.queue.push_back(other),
            }
        }
    }

    /// Every key bound to the lease went with it: answer what depended on it.
    fn lease_lost(&mut self) {
        info!(group = %self.spec.group, "etcd lease lost");
        self.lease = None;
        self.emit(StoreEvent::LeaseLost);
        for op in std::mem::take(&mut self.queue) {
            match op {
                Op::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
                // Our leader key was bound to the lost lease: it is gone.
                Op::Release { .. } => self.emit(StoreEvent::Released),
                other => self.queue.push_back(other),
            }
        }
    }

    /// A command while no session is up. Returns false if the task must end.
    fn offline_command(&mut self, command: StoreCommand) -> bool {
        match command {
            StoreCommand::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
            StoreCommand::Publish(rec) => self.member = Some(rec),
            StoreCommand::SetMaintenance(rec) => self.set_maintenance(rec),
            // Nothing to clean up that etcd would hear about; the lease expires on its own.
            StoreCommand::Shutdown => {
                if let Some(rec) = &self.maintenance {
                    warn!(group = %self.spec.group, on = rec.on, "etcd unreachable at shutdown; maintenance change not written");
                }
                return false;
            }
            other => self.queue.extend(other.into_op()),
        }
        true
    }

    /// Offline phase: retry [`establish`] until it succeeds, answering commands meanwhile.
    /// `None` means the task must end.
    async fn offline(&mut self, mut reuse: Option<Client>) -> Option<Session> {
        let mut beat = self.beat_ticker();
        loop {
            let attempt = establish(
                self.cfg.clone(),
                reuse.take(),
                self.lease,
                self.member.clone(),
            );
            tokio::pin!(attempt);
            let result = loop {
                self.spec.progress.beat();
                if !self.listening() {
                    return None;
                }
                tokio::select! {
                    result = &mut attempt => break result,
                    command = self.commands.recv() => {
                        if !command.is_some_and(|c| self.offline_command(c)) {
                            return None;
                        }
                    }
                    _ = beat.tick() => {}
                }
            };
            let failure = match result {
                Ok(session) => return Some(session),
                Err(failure) => failure,
            };
            if failure.lost {
                self.lease_lost();
            }
            // Possibly a lease granted before the failure: the next attempt keeps it.
            self.lease = failure.lease;
            if self.down_reported {
                debug!(group = %self.spec.group, reason = %failure.reason, "etcd still unreachable");
            } else {
                self.went_down(failure.reason);
            }
            let retry_at = tokio::time::Instant::now() + self.renew.min(MAX_RETRY_DELAY);
            loop {
                self.spec.progress.beat();
                if !self.listening() {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(retry_at) => break,
                    command = self.commands.recv() => {
                        if !command.is_some_and(|c| self.offline_command(c)) {
                            return None;
                        }
                    }
                    _ = beat.tick() => {}
                }
            }
        }
    }

    /// Online phase: renew, follow the watch, carry out commands one at a time. A write still
    /// in flight when the session drops (a keepalive timed out, the watch broke) is queued
    /// again, so that a Release, a switchover or a maintenance change is retried after the
    /// reconnection (or answered, if the lease went with it) instead of being lost.
    async fn online(&mut self, session: Session) -> Exit {
        let mut in_flight: Option<Op> = None;
        let exit = self.serve_session(session, &mut in_flight).await;
        if let Some(op) = in_flight
            && !matches!(exit, Exit::End)
        {
            // Answered by lease_lost() or went_down() if the lease or the store is gone.
            self.requeue(op);
        }
        exit
    }

    async fn serve_session(&mut self, session: Session, in_flight: &mut Option<Op>) -> Exit {
        let Session {
            client,
            lease,
            mut keeper,
            mut renewals,
            renewed_at,
            lost,
            published,
            snapshot,
            watch,
        } = session;
        if lost {
            // Learned while connecting: the keys bound to the old lease are gone.
            self.lease_lost();
        }
        self.lease = Some(lease);
        self.down_reported = false;
        info!(group = %self.spec.group, lease, "etcd store up");
        self.emit(StoreEvent::Up);
        self.emit(StoreEvent::Renewed {
            sent_at: renewed_at,
        });
        let mut view = View::default();
        self.apply_snapshot(&mut view, &snapshot);
        if self.member.is_some() && self.member != published {
            // Published while we were connecting.
            self.queue.extend(self.member.clone().map(Op::Publish));
        }

        let mut watch = Some(watch);
        let mut resync: Option<ResyncFuture> = None;
        let mut inflight: Option<OpFuture> = None;
        // A keepalive in flight: its send time. Only one at a time, so answers pair up.
        let mut outstanding: Option<Instant> = None;
        let mut next_renewal = renewed_at + self.renew;
        let mut beat = self.beat_ticker();

        loop {
            self.spec.progress.beat();
            if !self.listening() {
                return Exit::End;
            }
            if inflight.is_none()
                && let Some(op) = self.queue.pop_front()
            {
                *in_flight = Some(op.clone());
                inflight = Some(start_op(op, &client, lease, &self.cfg));
            }
            // Either the next renewal is due, or the one in flight has run out of time.
            let timer = outstanding.map_or(next_renewal, |sent| sent + self.renew);

            tokio::select! {
                command = self.commands.recv() => match command {
                    // The runtime is gone without a shutdown: do not revoke. Its units may
                    // still run; the lease must run out before anyone else may take over.
                    None => return Exit::End,
                    Some(StoreCommand::Shutdown) => {
                        drop(inflight);
                        self.shutdown(&client, lease).await;
                        return Exit::End;
                    }
                    Some(StoreCommand::Publish(rec)) => {
                        self.member = Some(rec.clone());
                        self.queue.push_back(Op::Publish(rec));
                    }
                    Some(StoreCommand::SetMaintenance(rec)) => self.set_maintenance(rec),
                    Some(other) => self.queue.extend(other.into_op()),
                },

                (op, result) = maybe(&mut inflight) => {
                    inflight = None;
                    *in_flight = None;
                    match result {
                        Ok(Done::Campaigned(term)) => {
                            if let Some(term) = term {
                                info!(group = %self.spec.group, term, "won the leader key");
                            }
                            self.emit(StoreEvent::Campaigned(term));
                        }
                        Ok(Done::Released) => self.emit(StoreEvent::Released),
                        Ok(Done::Written) => {
                            if let Op::SetMaintenance(rec) = op
                                && self.maintenance.as_ref() == Some(&rec)
                            {
                                self.maintenance = None;
                            }
                        }
                        Err(CallError::LeaseGone) => {
                            // A write with a dead lease changes nothing (etcd rejects the
                            // whole transaction): a campaign lost; the rest is redone.
                            self.requeue(op);
                            return Exit::LeaseLost(Box::new(client));
                        }
                        Err(CallError::Broken(reason)) => {
                            self.requeue(op);
                            return Exit::Down(reason);
                        }
                    }
                }

                _ = tokio::time::sleep_until(timer.into()) => {
                    if outstanding.is_some() {
                        return Exit::Down(format!(
                            "lease keepalive not answered within {:?}",
                            self.renew
                        ));
                    }
                    // The send time is taken *before* the request leaves: the store can only
                    // have renewed the lease after it.
                    let sent = Instant::now();
                    if let Err(e) = keeper.keep_alive().await {
                        return Exit::Down(format!("lease keepalive: {e}"));
                    }
                    outstanding = Some(sent);
                    next_renewal = sent + self.renew;
                }

                answer = renewals.message() => match answer {
                    Ok(Some(answer)) => {
                        let Some(sent_at) = outstanding.take() else {
                            debug!(group = %self.spec.group, "unexpected keepalive answer");
                            continue;
                        };
                        if answer.ttl() > 0 {
                            self.emit(StoreEvent::Renewed { sent_at });
                        } else {
                            return Exit::LeaseLost(Box::new(client));
                        }
                    }
                    Ok(None) => return Exit::Down("lease keepalive stream closed".to_string()),
                    Err(e) => return Exit::Down(format!("lease keepalive: {e}")),
                },

                message = next_watch(&mut watch) => {
                    match message {
                        Ok(Some(response)) if response.canceled() => {
                            // Compacted past our revision, or canceled by etcd: read again.
                            warn!(
                                group = %self.spec.group,
                                compact_revision = response.compact_revision(),
                                reason = response.cancel_reason(),
                                "etcd watch canceled; reading the group again"
                            );
                            watch = None;
                            let client = client.clone();
                            let keys = self.cfg.keys.clone();
                            let t = self.cfg.call_timeout;
                            resync = Some(Box::pin(async move {
                                read_and_watch(&client, &keys, t).await
                            }));
                        }
                        Ok(Some(response)) => {
                            let mut touched = Touched::default();
                            for event in response.events() {
                                let Some(kv) = event.kv() else { continue };
                                match event.event_type() {
                                    EventType::Put => self.absorb(&mut view, kv, &mut touched),
                                    EventType::Delete => self.forget(&mut view, kv, &mut touched),
                                }
                            }
                            self.report(&view, touched);
                        }
                        Ok(None) => return Exit::Down("watch stream closed".to_string()),
                        Err(e) => return Exit::Down(format!("watch: {e}")),
                    }
                }

                result = maybe(&mut resync) => {
                    resync = None;
                    match result {
                        Ok((snapshot, new_watch)) => {
                            self.apply_snapshot(&mut view, &snapshot);
                            watch = Some(new_watch);
                        }
                        Err(reason) => return Exit::Down(reason),
                    }
                }

                _ = beat.tick() => {}
            }
        }
    }
}
