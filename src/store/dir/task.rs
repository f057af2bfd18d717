//! The per-group task: its loop, its commands, and the report of what changed.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::store::record::MemberRecord;
use crate::store::{GroupId, GroupSpec, Op, StoreCommand, StoreEvent};

use super::jobs::{Answer, Ctx, Done, Job, Session, Snapshot, View, run_job};
use super::notify::{Notice, Watcher, notice};
use super::{EXPIRY_SLACK, MAX_RETRY_DELAY, SHUTDOWN_TIMEOUT};

/// What the job in flight is for, so its result can be put to use.
#[derive(Debug)]
pub(super) enum Pending {
    Renew,
    Op(Op),
    Poll,
}

pub(super) struct Inflight {
    pub(super) pending: Pending,
    pub(super) handle: JoinHandle<Done>,
    /// Past this, the store is reported down (the job may still finish later).
    pub(super) deadline: Instant,
    pub(super) overdue: bool,
}

pub(super) async fn finished(inflight: &mut Option<Inflight>) -> Done {
    match inflight {
        Some(job) => match (&mut job.handle).await {
            Ok(done) => done,
            Err(e) => Done::failed(format!("file operation failed: {e}")),
        },
        None => std::future::pending().await,
    }
}

pub(super) struct GroupTask {
    pub(super) spec: GroupSpec,
    pub(super) index: GroupId,
    pub(super) events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    pub(super) commands: mpsc::UnboundedReceiver<StoreCommand>,
    pub(super) ctx: Arc<Ctx>,
    pub(super) renew: Duration,
    pub(super) poll: Duration,
    /// Our session; `None` until the directory was first usable.
    pub(super) session: Option<Session>,
    /// The last member record the runtime published: rewritten on every renewal.
    pub(super) member: Option<MemberRecord>,
    /// The term of the leader file we won and have not released.
    pub(super) held: Option<u64>,
    /// `Up` was reported and no `Down` since.
    pub(super) up: bool,
    /// `Down` was reported and no `Up` since.
    pub(super) down_reported: bool,
    pub(super) queue: VecDeque<Op>,
    pub(super) inflight: Option<Inflight>,
    /// What the runtime was last told; `None` after a (re)connection: tell it everything.
    pub(super) last: Option<View>,
    /// Unreadable files already reported, so a poll does not report them again.
    pub(super) corrupt: BTreeMap<String, String>,
    pub(super) watcher: Option<Watcher>,
    pub(super) retry_at: Instant,
    pub(super) renew_at: Instant,
    pub(super) poll_at: Instant,
    /// The next expiry in view (plus a little): read the group then.
    pub(super) expiry_at: Option<Instant>,
}

impl GroupTask {
    fn emit(&self, event: StoreEvent) {
        // A closed receiver ends the task at its next turn (see `listening`).
        let _ = self.events.send((self.index, event));
    }

    fn listening(&self) -> bool {
        !self.events.is_closed()
    }

    pub(super) async fn run(mut self) {
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
            StoreCommand::SetMaintenance(rec) => {
                // Only the newest change matters.
                self.queue.retain(|op| !matches!(op, Op::SetMaintenance(_)));
                self.queue.push_back(Op::SetMaintenance(rec));
            }
            // `Shutdown` is handled by `run`.
            other => self.queue.extend(other.into_op()),
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
