//! The per-group task: its loop and its jobs. What the runtime is told, and when queued
//! writes are answered, is the shared [`Reporter`]'s and [`OpQueue`]'s business.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{debug, info, warn};

use crate::store::error::{Cause, DirError};
use crate::store::queue::OpQueue;
use crate::store::record::MemberRecord;
use crate::store::report::Reporter;
use crate::store::{GroupSpec, Op, StoreCommand, StoreEvent};

use super::jobs::{Answer, Ctx, Done, Job, Session, Snapshot, run_job};
use super::notify::{Notice, Watcher, notice};
use super::{EXPIRY_SLACK, MAX_RETRY_DELAY, SHUTDOWN_TIMEOUT};

/// What the job in flight is for, so its result can be put to use.
#[derive(Debug)]
pub(super) enum Pending {
    /// A renewal, writing this member record.
    Renew(Option<MemberRecord>),
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
            Err(e) => Done::failed(DirError::Job(Cause::new(e))),
        },
        None => std::future::pending().await,
    }
}

pub(super) struct GroupTask {
    pub(super) spec: GroupSpec,
    pub(super) report: Reporter,
    pub(super) commands: mpsc::UnboundedReceiver<Box<StoreCommand>>,
    pub(super) ctx: Arc<Ctx>,
    pub(super) renew: Duration,
    pub(super) poll: Duration,
    /// Our session; `None` until the directory was first usable.
    pub(super) session: Option<Session>,
    /// The term of the leader file we won and have not released.
    pub(super) held: Option<u64>,
    /// `Up` was reported and no `Down` since.
    pub(super) up: bool,
    pub(super) queue: OpQueue,
    pub(super) inflight: Option<Inflight>,
    pub(super) watcher: Option<Watcher>,
    pub(super) retry_at: Instant,
    pub(super) renew_at: Instant,
    pub(super) poll_at: Instant,
    /// The next expiry in view (plus a little): read the group then.
    pub(super) expiry_at: Option<Instant>,
}

impl GroupTask {
    pub(super) async fn run(mut self) {
        loop {
            self.spec.progress.beat();
            if !self.report.listening() {
                return;
            }
            let now = Instant::now();
            if self.inflight.is_none() {
                self.start_next(now);
            }
            let wake = tokio::time::Instant::from_std(self.next_wake(now));
            tokio::select! {
                command = self.commands.recv() => match command.map(|c| c.into_op()) {
                    None => return,
                    Some(None) => {
                        self.shutdown().await;
                        return;
                    }
                    Some(Some(op)) => {
                        if let Some(answer) = self.queue.push(op, self.up) {
                            self.report.emit(answer);
                        }
                    }
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

    /// Start the most urgent job that is due: renewals first, then commands, then reads.
    fn start_next(&mut self, now: Instant) {
        let (pending, job) = if !self.up {
            if now < self.retry_at {
                return;
            }
            self.renew_job(true)
        } else if now >= self.renew_at {
            self.renew_job(false)
        } else if !self.queue.is_empty() {
            let Some(session) = self.session.clone() else {
                // Up implies a session; should it not, get one first.
                self.renew_at = now;
                return;
            };
            let Some(op) = self.queue.pop() else { return };
            (Pending::Op(op.clone()), Job::Op(op, session))
        } else if now >= self.poll_at || self.expiry_at.is_some_and(|t| now >= t) {
            (Pending::Poll, Job::Poll)
        } else {
            return;
        };
        let ctx = self.ctx.clone();
        self.inflight = Some(Inflight {
            pending,
            handle: tokio::task::spawn_blocking(move || run_job(&ctx, job)),
            deadline: now + self.renew,
            overdue: false,
        });
    }

    fn renew_job(&self, setup: bool) -> (Pending, Job) {
        let member = self.queue.member().cloned();
        let job = Job::Renew {
            session: self.session.clone(),
            member: member.clone(),
            held: self.held,
            setup,
        };
        (Pending::Renew(member), job)
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
        self.went_down(DirError::Stalled {
            dir: self.ctx.paths.dir.clone(),
            after: self.renew,
        });
    }

    fn finish(&mut self, pending: Pending, done: Done) {
        let answer = match done.answer {
            Ok(answer) => answer,
            Err(reason) => {
                if let Pending::Op(op) = pending {
                    self.queue.requeue(op);
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
            } => {
                self.renewed(sent_at, session, lost);
                if let Pending::Renew(Some(member)) = &pending {
                    self.queue.published(member);
                }
            }
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
                    if let Pending::Op(op) = &pending {
                        self.queue.claimed(op, term);
                    }
                }
                self.report.emit(StoreEvent::Campaigned(term));
            }
            Answer::Released => {
                if let Pending::Op(Op::Release { term } | Op::Retire { term, .. }) = pending
                    && self.held == Some(term)
                {
                    self.held = None;
                }
                self.report.emit(StoreEvent::Released);
            }
            Answer::Nothing => {
                if let Pending::Op(op) = &pending {
                    self.queue.done(op);
                }
            }
        }
        if let (true, Some(snapshot)) = (self.up, done.snapshot) {
            self.report_view(snapshot);
        }
    }

    fn renewed(&mut self, sent_at: Instant, session: Session, lost: bool) {
        if lost {
            // Our session is gone, and the files bound to it.
            self.held = None;
            self.report.lease_lost(&mut self.queue);
        }
        let reconnected = !self.up || lost;
        self.session = Some(session);
        self.renew_at = sent_at + self.renew;
        if reconnected {
            debug!(group = %self.spec.group, dir = %self.ctx.paths.dir.display(), "directory store up");
            self.up = true;
            self.report.up(sent_at);
        } else {
            self.report.renewed(sent_at);
        }
        if self.watcher.is_none() {
            match Watcher::new(&self.ctx.paths) {
                Ok(watcher) => self.watcher = Some(watcher),
                // Polling still notices every change, a little later.
                Err(e) => debug!(group = %self.spec.group, error = %e, "no inotify watch"),
            }
        }
    }

    /// Tell the runtime what changed since the last report, and plan the next read.
    fn report_view(&mut self, snapshot: Snapshot) {
        let Snapshot {
            view,
            corrupt,
            next_expiry,
            taken,
        } = snapshot;
        self.report.view(view, corrupt);
        self.poll_at = taken + self.poll;
        self.expiry_at = next_expiry.map(|d| taken + d + EXPIRY_SLACK);
    }

    fn went_down(&mut self, reason: DirError) {
        self.report.down(reason.into(), &mut self.queue);
        self.up = false;
        self.retry_at = Instant::now() + self.renew.min(MAX_RETRY_DELAY);
    }

    /// Delete our files, bounded in time: a store that does not answer is left to expire.
    /// A maintenance change still owed is written first: it is the operator's, not this
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
                Ok(Ok(Done { answer: Ok(_), .. })) => {
                    if let Pending::Op(op) = &job.pending {
                        self.queue.done(op);
                    }
                }
                // Failed: a maintenance change it carried stays owed.
                Ok(_) => {}
            }
        }
        let maintenance = self.queue.unwritten_maintenance().cloned();
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
