//! The group task: an offline phase that connects, an online phase that renews, follows the
//! watch and carries out commands, all from one `select!` loop. What the runtime is told, and
//! when queued writes are answered, is the shared [`Reporter`]'s and [`OpQueue`]'s business.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::Client;
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info, warn};

use super::connect::{CallError, Connector, Session, establish};
use super::ops::{Done, OpFuture, start_op};
use super::secure::explain_plain;
use super::view::{ResyncFuture, Values, next_watch, read_and_watch};
use super::{MAX_AUTH_RETRY_DELAY, MAX_KEEPALIVE_WAIT, MAX_RETRY_DELAY};
use crate::store::error::{Cause, EtcdError};
use crate::store::queue::OpQueue;
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
    /// The connection is not trusted any more; reconnect (and keep the lease if it lives).
    Down(EtcdError),
    /// etcd says the lease is gone; the connection itself (a client and its endpoint) is
    /// fine.
    LeaseLost(Box<(Client, String)>),
}

pub(super) struct GroupTask {
    pub(super) spec: GroupSpec,
    pub(super) report: Reporter,
    pub(super) commands: mpsc::UnboundedReceiver<StoreCommand>,
    pub(super) cfg: Arc<Connector>,
    pub(super) renew: Duration,
    /// The lease we hold (or held, until etcd says it is gone).
    pub(super) lease: Option<i64>,
    pub(super) queue: OpQueue,
}

impl GroupTask {
    /// How long a keepalive may go unanswered before the member counts as silent and the
    /// task reconnects (another member first, the lease kept): half a renew interval, at
    /// most [`MAX_KEEPALIVE_WAIT`]. An answer takes milliseconds; waiting for the next
    /// renewal instead would spend `2L/3` of the lease, past the fence, before even trying
    /// another member, and one silent etcd member would fail the active host over.
    fn keepalive_wait(&self) -> Duration {
        (self.renew / 2).min(MAX_KEEPALIVE_WAIT)
    }

    fn beat_ticker(&self) -> tokio::time::Interval {
        let mut beat = tokio::time::interval(self.renew / 2);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        beat
    }

    pub(super) async fn run(mut self) {
        let mut reuse = None;
        // The member the last session failed on: tried last when reconnecting.
        let mut avoid = None;
        loop {
            let Some(session) = self.offline(reuse.take(), avoid.take()).await else {
                return;
            };
            let endpoint = session.endpoint.clone();
            match self.online(session).await {
                Exit::End => return,
                Exit::Down(reason) => {
                    let reason = EtcdError::Session {
                        endpoint: endpoint.clone(),
                        error: Box::new(reason),
                    };
                    avoid = Some(endpoint);
                    self.report.down(reason.into(), &mut self.queue);
                }
                Exit::LeaseLost(client) => {
                    self.lease_lost();
                    reuse = Some(*client);
                }
            }
        }
    }

    /// Every key bound to the lease went with it.
    fn lease_lost(&mut self) {
        self.lease = None;
        self.report.lease_lost(&mut self.queue);
    }

    /// A command, `online` or not. Returns false if the task must end (a `Shutdown` while
    /// offline: nothing to clean up that etcd would hear about; the lease expires on its own).
    fn command(&mut self, command: StoreCommand, online: bool) -> bool {
        let Some(op) = command.into_op() else {
            if let Some(rec) = self.queue.unwritten_maintenance() {
                warn!(group = %self.spec.group, on = rec.on, "etcd unreachable at shutdown; maintenance change not written");
            }
            return false;
        };
        if let Some(answer) = self.queue.push(op, online) {
            self.report.emit(answer);
        }
        true
    }

    /// Offline phase: retry [`establish`] until it succeeds, answering commands meanwhile.
    /// `None` means the task must end.
    async fn offline(
        &mut self,
        mut reuse: Option<(Client, String)>,
        avoid: Option<String>,
    ) -> Option<Session> {
        let mut beat = self.beat_ticker();
        // Consecutive attempts whose credentials or rights etcd refused.
        let mut refusals = 0u32;
        loop {
            let attempt = establish(
                self.cfg.clone(),
                reuse.take(),
                avoid.clone(),
                self.lease,
                self.queue.member().cloned(),
            );
            tokio::pin!(attempt);
            let result = loop {
                self.spec.progress.beat();
                if !self.report.listening() {
                    return None;
                }
                tokio::select! {
                    result = &mut attempt => break result,
                    command = self.commands.recv() => {
                        if !command.is_some_and(|c| self.command(c, false)) {
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
            // Refused credentials or rights are retried after 1 s, doubling up to a limit: a
            // password or a role is not fixed in a second, and each attempt costs etcd a
            // password hash.
            let delay = if failure.reason.access_refused() {
                refusals += 1;
                (MAX_RETRY_DELAY * 2u32.saturating_pow(refusals - 1)).min(MAX_AUTH_RETRY_DELAY)
            } else {
                refusals = 0;
                self.renew.min(MAX_RETRY_DELAY)
            };
            self.report.down(failure.reason.into(), &mut self.queue);
            let retry_at = tokio::time::Instant::now() + delay;
            // While refused, the files are looked at every second: a fixed password file
            // ends the backoff at once instead of up to 30 s later.
            let mut look = tokio::time::interval(MAX_RETRY_DELAY);
            look.set_missed_tick_behavior(MissedTickBehavior::Delay);
            look.reset();
            loop {
                self.spec.progress.beat();
                if !self.report.listening() {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(retry_at) => break,
                    _ = look.tick(), if refusals > 0 => {
                        if self.cfg.secrets.renewed() {
                            refusals = 0;
                            break;
                        }
                    }
                    command = self.commands.recv() => {
                        if !command.is_some_and(|c| self.command(c, false)) {
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
            // Answered by the lease-lost or down edge if the lease or the store is gone.
            self.queue.requeue(op);
        }
        exit
    }

    fn report_view(&mut self, values: &Values) {
        let (view, corrupt) = values.reading(&self.cfg.keys).judge();
        self.report.view(view, corrupt);
    }

    async fn serve_session(&mut self, session: Session, in_flight: &mut Option<Op>) -> Exit {
        let Session {
            client,
            endpoint,
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
        info!(group = %self.spec.group, lease, "etcd store up");
        self.report.up(renewed_at);
        let mut values = Values::from_snapshot(&self.cfg.keys, &snapshot);
        self.report_view(&values);
        if let Some(rec) = &published {
            // Written while connecting; a newer one published meanwhile stays queued.
            self.queue.published(rec);
        }

        let mut watch = Some(watch);
        let mut resync: Option<ResyncFuture> = None;
        let mut inflight: Option<OpFuture> = None;
        // A keepalive in flight: its send time. Only one at a time, so answers pair up.
        let mut outstanding: Option<Instant> = None;
        let mut next_renewal = renewed_at + self.renew;
        let mut beat = self.beat_ticker();
        // In words: the client's own text of a broken stream is a debug dump of gRPC's status.
        let keepalive = |cause| EtcdError::Failed {
            call: "lease keepalive",
            cause: Cause::new(explain_plain(cause)),
        };

        loop {
            self.spec.progress.beat();
            if !self.report.listening() {
                return Exit::End;
            }
            if inflight.is_none()
                && let Some(op) = self.queue.pop()
            {
                *in_flight = Some(op.clone());
                inflight = Some(start_op(op, &client, lease, &self.cfg));
            }
            // Either the next renewal is due, or the one in flight has run out of time.
            let timer = outstanding.map_or(next_renewal, |sent| sent + self.keepalive_wait());

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
                            match done {
                                Done::Campaigned(term) => {
                                    if let Some(term) = term {
                                        info!(group = %self.spec.group, term, "won the leader key");
                                    }
                                    self.report.emit(StoreEvent::Campaigned(term));
                                }
                                Done::Released => self.report.emit(StoreEvent::Released),
                                Done::Written => {}
                            }
                        }
                        Err(CallError::LeaseGone) => {
                            // A write with a dead lease changes nothing (etcd rejects the
                            // whole transaction): a campaign lost; the rest is redone.
                            self.queue.requeue(op);
                            return Exit::LeaseLost(Box::new((client, endpoint)));
                        }
                        Err(CallError::Broken(reason)) => {
                            self.queue.requeue(op);
                            return Exit::Down(reason);
                        }
                    }
                }

                _ = tokio::time::sleep_until(timer.into()) => {
                    if outstanding.is_some() {
                        // A silent member: reconnect, to another one, while the lease lives.
                        return Exit::Down(EtcdError::Timeout {
                            call: "lease keepalive",
                            after: self.keepalive_wait(),
                        });
                    }
                    // The send time is taken *before* the request leaves: the store can only
                    // have renewed the lease after it.
                    let sent = Instant::now();
                    if let Err(e) = keeper.keep_alive().await {
                        return Exit::Down(keepalive(e));
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
                            self.report.renewed(sent_at);
                        } else {
                            return Exit::LeaseLost(Box::new((client, endpoint)));
                        }
                    }
                    Ok(None) => {
                        return Exit::Down(EtcdError::StreamClosed { stream: "lease keepalive" });
                    }
                    Err(e) => return Exit::Down(keepalive(e)),
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
                            values.apply(&self.cfg.keys, &response);
                            self.report_view(&values);
                        }
                        Ok(None) => return Exit::Down(EtcdError::StreamClosed { stream: "watch" }),
                        Err(e) => {
                            return Exit::Down(EtcdError::Failed {
                                call: "watch",
                                cause: Cause::new(explain_plain(e)),
                            });
                        }
                    }
                }

                result = maybe(&mut resync) => {
                    resync = None;
                    match result {
                        Ok((snapshot, new_watch)) => {
                            values = Values::from_snapshot(&self.cfg.keys, &snapshot);
                            self.report_view(&values);
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
