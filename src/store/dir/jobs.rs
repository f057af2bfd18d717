//! The jobs: the file operations of the group task, run one at a time on the blocking pool.

use std::time::{Duration, Instant};

use crate::store::error::DirError;
use crate::store::policy::releasable;
use crate::store::record::{self, LeaderRecord, MaintenanceRecord, MemberRecord};
use crate::store::view::{Findings, View};
use crate::store::{HostId, Op, other_host};

use tracing::warn;

use super::addresses;
use super::files::{
    Files, GroupLock, Paths, Slot, ensure_dirs, live, remove, sync_dir, write_atomic,
};
use super::format::{DIR_FORMAT, TermFile, encode_durable, encode_entry, new_session_id, wall_us};

/// What every job needs; shared with the blocking pool.
#[derive(Debug)]
pub(super) struct Ctx {
    pub(super) paths: Paths,
    /// The group's name, as its address files say it.
    pub(super) group: String,
    /// The group's floating addresses (see [`addresses`](super::addresses)).
    pub(super) addresses: Vec<std::net::IpAddr>,
    pub(super) node: String,
    /// This host, as written in our records (see [`HostId`]).
    pub(super) host: Option<HostId>,
    pub(super) lease_us: u64,
    pub(super) lock_wait: Duration,
}

/// This process's lease on the group.
#[derive(Debug, Clone)]
pub(super) struct Session {
    pub(super) id: String,
    /// Wall-clock unix microseconds.
    pub(super) expires: u64,
}

pub(super) enum Job {
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
pub(super) enum Answer {
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

pub(super) struct Done {
    pub(super) answer: Result<Answer, DirError>,
    /// The group as read at the end of the job, if the job got that far.
    pub(super) snapshot: Option<Snapshot>,
}

/// The group as read at the end of a job, through the shared policy.
pub(super) struct Snapshot {
    pub(super) view: View,
    /// Unreadable files: path → why.
    pub(super) corrupt: Findings,
    /// Time from `taken` until the next file in view expires.
    pub(super) next_expiry: Option<Duration>,
    /// The monotonic time that goes with the wall time the view was computed for.
    pub(super) taken: Instant,
}

pub(super) fn run_job(ctx: &Ctx, job: Job) -> Done {
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
    pub(super) fn failed(reason: DirError) -> Done {
        Done {
            answer: Err(reason),
            snapshot: None,
        }
    }
}

/// Read the group and compute the view. The wall time is taken *before* reading: a file
/// then counts as live if it was when we started looking, so a renewal that lands while we
/// read can never be mistaken for an expiry.
pub(super) fn read_view(ctx: &Ctx) -> Result<Snapshot, DirError> {
    let now = wall_us()?;
    let taken = Instant::now();
    let files = Files::read(&ctx.paths)?;
    let (reading, expires) = files.reading(&ctx.paths, now, ctx.lease_us);
    let (view, corrupt) = reading.judge();
    Ok(Snapshot {
        view,
        corrupt,
        next_expiry: expires.map(|exp| Duration::from_micros(exp.saturating_sub(now))),
        taken,
    })
}

/// Run `f` under the group lock on a fresh read of the group, then read the group again
/// (still under the lock) for the report.
pub(super) fn locked(ctx: &Ctx, f: impl FnOnce(&Files, u64) -> Result<Answer, DirError>) -> Done {
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

pub(super) fn renew(
    ctx: &Ctx,
    files: &Files,
    now: u64,
    sent_at: Instant,
    session: Option<Session>,
    member: Option<&MemberRecord>,
    held: Option<u64>,
) -> Result<Answer, DirError> {
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
        write_member(ctx, files, now, &id, expires, rec)?;
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

/// Write our member file, unless another host's promd holds it (live, another session,
/// another host): two hosts share one `node`. The view shows that record and the runtime
/// refuses to go on; overwriting it would hide the conflict. Our own earlier run's file, an
/// older promd's (no host), an expired or an unreadable one is replaced. Runs under the group
/// lock, so the read and the write are one step.
fn write_member(
    ctx: &Ctx,
    files: &Files,
    now: u64,
    session: &str,
    expires: u64,
    rec: &MemberRecord,
) -> Result<(), DirError> {
    let held_elsewhere = files
        .members
        .get(&ctx.node)
        .and_then(|slot| live(slot, now))
        .is_some_and(|e| {
            e.session != session
                && other_host(e.record.host.as_deref(), ctx.host.as_ref()).is_some()
        });
    if held_elsewhere {
        return Ok(());
    }
    write_atomic(
        &ctx.paths.member,
        &encode_entry(None, session, expires, rec),
        false,
    )
}

/// Delete what a lost session left: its leader and switchover files, and the address files
/// of its leader file's term. (The member file is rewritten under the new session, or
/// expires.)
pub(super) fn drop_session_files(ctx: &Ctx, files: &Files, id: &str) -> Result<(), DirError> {
    if let Some(e) = files.leader.owned_by(id) {
        remove(&ctx.paths.leader)?;
        if let Some(term) = e.term {
            free_addresses(ctx, term)?;
        }
    }
    if files.switchover.owned_by(id).is_some() {
        remove(&ctx.paths.switchover)?;
    }
    Ok(())
}

/// Shutdown: delete every file of this session, so the others need not wait for expiries.
pub(super) fn leave(ctx: &Ctx, files: &Files, id: &str) -> Result<(), DirError> {
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

/// Remove the leader file if it is ours at `term` (terms are never handed out twice); anything
/// else is someone else's key, or already gone: either way it is no longer ours.
fn release(ctx: &Ctx, files: &Files, term: u64) -> Result<(), DirError> {
    if let Slot::Valid(e) = &files.leader
        && e.term == Some(term)
        && releasable(&e.record, &ctx.node, ctx.host.as_ref())
    {
        remove(&ctx.paths.leader)?;
        free_addresses(ctx, term)?;
    }
    Ok(())
}

/// The address files of `term` after its leader file is gone (see [`addresses::free`]).
fn free_addresses(ctx: &Ctx, term: u64) -> Result<(), DirError> {
    let _lock = addresses::lock(ctx)?;
    addresses::free(ctx, term)
}

pub(super) fn carry_out(
    ctx: &Ctx,
    files: &Files,
    now: u64,
    op: &Op,
    s: &Session,
) -> Result<Answer, DirError> {
    match op {
        Op::Campaign {
            record,
            floor,
            claim,
        } => {
            let answer = campaign(ctx, files, now, record, *floor, s)?;
            // The claim right after the key, before the answer (and the snapshot that goes
            // with it): the files change one at a time anyway, but the winner needs no write
            // of its own before its units may start.
            if let Answer::Campaigned {
                term: Some(term), ..
            } = answer
            {
                write_member(ctx, files, now, &s.id, s.expires, &claim.with_term(term))?;
            }
            Ok(answer)
        }
        Op::Release { term } => {
            release(ctx, files, *term)?;
            Ok(Answer::Released)
        }
        // One after the other: the files change one at a time anyway.
        Op::Retire { term, record } => {
            release(ctx, files, *term)?;
            write_member(ctx, files, now, &s.id, s.expires, record)?;
            Ok(Answer::Released)
        }
        Op::Publish(rec) => {
            write_member(ctx, files, now, &s.id, s.expires, rec)?;
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
pub(super) fn set_maintenance(ctx: &Ctx, rec: &MaintenanceRecord) -> Result<(), DirError> {
    if rec.on {
        write_atomic(&ctx.paths.maintenance, &encode_durable(rec), true)
    } else {
        remove(&ctx.paths.maintenance)?;
        sync_dir(&ctx.paths.dir)
    }
}

pub(super) fn campaign(
    ctx: &Ctx,
    files: &Files,
    now: u64,
    rec: &LeaderRecord,
    floor: u64,
    s: &Session,
) -> Result<Answer, DirError> {
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
    let Some(term) = files.next_term(floor) else {
        return refuse(false);
    };
    // Held until the leader file is written: another group's campaign for one of our
    // addresses sees either no file of ours, or one whose leader file is live.
    let _addresses = addresses::lock(ctx)?;
    if let Some(holder) = addresses::held_elsewhere(ctx, now)? {
        warn!(group = %ctx.group, "campaign lost: {holder}; retrying while it is");
        return refuse(false);
    }
    // The counter first: should we crash between the two writes, a term is skipped, never
    // handed out twice.
    let counter = record::encode(&TermFile {
        v: DIR_FORMAT,
        term,
    });
    write_atomic(&ctx.paths.term, &counter, true)?;
    addresses::take(ctx, term)?;
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
