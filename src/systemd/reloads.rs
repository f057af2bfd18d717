//! Which of PID 1's reloads promd did not ask for itself.
//!
//! A unit added to an active role by a drop-in and `systemctl daemon-reload` belongs to the
//! role from that reload on, so promd must walk its groups' closures again then (bind the new
//! units to promd, count them in the fence load). PID 1 says when a reload ends
//! (`Reloading(false)` of `org.freedesktop.systemd1.Manager`), but promd reloads it too,
//! every time it writes drop-ins ([`super::Systemd::reload`]), hundreds of times at the
//! start of hundreds of groups: walking every group again after each of those would be a
//! storm. So the signals of promd's own reloads are told apart and only the others count
//! ([`Reloads::foreign`]).
//!
//! Telling them apart by a count of promd's reloads in flight alone is racy: the end of a
//! reload of ours is signalled before the reply to our `Reload()` (systemd sends
//! `Reloading(false)` and then the pending reply, in one pass of its bus queue,
//! `manager_dispatch_dbus_queue`), but the signal and the reply are handled by different
//! tasks here, in either order. A count of ours in flight taken when the signal is handled
//! may be 0 already (our reply was handled first), and a count of "done, signal not seen
//! yet" can be eaten by a foreign signal if ours is never seen (PID 1 away from the bus
//! meanwhile): a foreign reload missed. Instead the [`Ledger`] compares where each signal and
//! each reply came in on the connection (zbus's receive sequence, one total order): the end
//! of a reload of ours is the latest `Reloading(false)` received before the reply to it, as
//! systemd sends them back to back (and runs one reload per `Reload()` call: it keeps one
//! pending reply, `method_reload`, so no other caller's reload hides in ours). A signal is
//! judged only once none of our calls is in flight, when every reply that can claim it is
//! known.
//!
//! When in doubt it errs towards "foreign": an extra walk of every group only costs calls,
//! a missed one leaves a unit unbound. A `Reload()` of ours that timed out here but ran in
//! PID 1, or whose signal came after a foreign one's reply had been judged, counts as foreign.
//! Every foreign reload is still counted: if a foreign signal is taken for ours (a reply
//! handled before its own signal claims an earlier, foreign one), the signal of ours that
//! comes after it is left over and counted instead, later by the time the tasks lag.

use std::sync::{Arc, Mutex};

use crate::sync::lock;
use tokio::sync::watch;
use zbus::message::Sequence;

/// Pairs the ends of reloads (`Reloading(false)`) with the replies to promd's own
/// `Reload()` calls, by where each came in (`P`: a position in one connection's stream of
/// received messages). Pure; see the module's documentation.
#[derive(Debug)]
pub struct Ledger<P> {
    /// Our `Reload()` calls sent and not yet answered (or given up on).
    in_flight: usize,
    /// Replies to ours that claimed no signal yet, in the order received.
    replies: Vec<P>,
    /// Reload ends not judged yet, in the order received.
    ends: Vec<P>,
    /// The latest reload end seen: a reply before it can no longer claim a later one.
    latest_end: Option<P>,
}

impl<P> Default for Ledger<P> {
    fn default() -> Ledger<P> {
        Ledger {
            in_flight: 0,
            replies: Vec::new(),
            ends: Vec::new(),
            latest_end: None,
        }
    }
}

impl<P: Ord + Copy> Ledger<P> {
    /// A `Reload()` of ours is about to be sent.
    pub fn sent(&mut self) {
        self.in_flight += 1;
    }

    /// A `Reload()` of ours is over: answered at `reply`, or `None` (an error, a timeout: a
    /// reload it may have caused counts as foreign). Returns how many reloads are judged
    /// foreign now.
    pub fn done(&mut self, reply: Option<P>) -> usize {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(reply) = reply {
            self.replies.push(reply);
            self.replies.sort();
        }
        self.judge()
    }

    /// PID 1 ended a reload (`Reloading(false)` received at `at`). Returns how many reloads
    /// are judged foreign now.
    pub fn ended(&mut self, at: P) -> usize {
        self.ends.push(at);
        self.ends.sort();
        self.latest_end = self.latest_end.max(Some(at));
        self.judge()
    }

    /// Once none of ours is in flight, every reply that can claim a pending end is known:
    /// each claims the latest unclaimed end received before it, and the ends left over are
    /// foreign. Replies that claimed nothing wait for their end (their signal not handled
    /// yet), unless an end received after them was seen: theirs can no longer come.
    fn judge(&mut self) -> usize {
        if self.in_flight > 0 {
            return 0;
        }
        let mut unclaimed = Vec::new();
        for reply in std::mem::take(&mut self.replies) {
            match self.ends.iter().rposition(|end| *end < reply) {
                Some(i) => {
                    self.ends.remove(i);
                }
                None => unclaimed.push(reply),
            }
        }
        let latest = self.latest_end;
        unclaimed.retain(|reply| latest.is_none_or(|end| *reply > end));
        self.replies = unclaimed;
        let foreign = self.ends.len();
        self.ends.clear();
        foreign
    }
}

/// The shared side of the [`Ledger`] of one connection to PID 1, and the count of foreign
/// reloads that the runtime follows. Cheap to clone.
#[derive(Clone)]
pub struct Reloads {
    ledger: Arc<Mutex<Ledger<Sequence>>>,
    foreign: Arc<watch::Sender<u64>>,
}

impl Default for Reloads {
    fn default() -> Reloads {
        Reloads {
            ledger: Arc::default(),
            foreign: Arc::new(watch::Sender::new(0)),
        }
    }
}

impl Reloads {
    /// The number of reloads so far that promd did not cause (and returns of PID 1 to the
    /// bus, see [`Reloads::pid1_returned`]); it changes with each.
    pub fn foreign(&self) -> watch::Receiver<u64> {
        self.foreign.subscribe()
    }

    /// The number [`Reloads::foreign`] holds now.
    pub fn foreign_now(&self) -> u64 {
        *self.foreign.borrow()
    }

    /// A `Reload()` of ours is sent now; the guard says when it is over
    /// ([`InFlight::answered`] at its reply, or dropped without one).
    pub fn sent(&self) -> InFlight {
        lock(&self.ledger).sent();
        InFlight {
            reloads: self.clone(),
            reply: None,
        }
    }

    /// PID 1 sent `Reloading(false)`, received at `at`.
    pub fn ended(&self, at: Sequence) {
        let foreign = lock(&self.ledger).ended(at);
        self.count(foreign);
    }

    /// PID 1 came back on the bus: whatever it reloaded while it was away (a
    /// `daemon-reexec`, a crash) was never signalled to promd, so it counts as foreign.
    pub fn pid1_returned(&self) {
        self.count(1);
    }

    fn count(&self, foreign: usize) {
        if foreign > 0 {
            let n = u64::try_from(foreign).unwrap_or(u64::MAX);
            self.foreign
                .send_modify(|count| *count = count.wrapping_add(n));
        }
    }
}

/// A `Reload()` of ours in flight ([`Reloads::sent`]). Dropped unanswered (an error, or the
/// call's timeout dropped the future that held it), its reload counts as foreign if PID 1 ran
/// it after all.
pub struct InFlight {
    reloads: Reloads,
    reply: Option<Sequence>,
}

impl InFlight {
    /// PID 1 answered the call at `at`: the reload ended just before.
    pub fn answered(mut self, at: Sequence) {
        self.reply = Some(at);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let foreign = lock(&self.reloads.ledger).done(self.reply);
        self.reloads.count(foreign);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reload_of_nobody_in_flight_is_foreign_at_once() {
        let mut l = Ledger::<u64>::default();
        assert_eq!(l.ended(5), 1);
        assert_eq!(l.ended(9), 1);
    }

    #[test]
    fn our_reload_is_ours_whichever_of_its_signal_and_reply_is_handled_first() {
        // The signal first, while the call is in flight.
        let mut l = Ledger::<u64>::default();
        l.sent();
        assert_eq!(l.ended(10), 0);
        assert_eq!(l.done(Some(11)), 0);
        // The reply first (the signal's task lagged): it waits for its signal.
        l.sent();
        assert_eq!(l.done(Some(21)), 0);
        assert_eq!(l.ended(20), 0);
        // A later foreign one is still seen.
        assert_eq!(l.ended(30), 1);
    }

    #[test]
    fn a_foreign_reload_beside_ours_is_counted() {
        // Foreign before ours, both ends handled before our reply.
        let mut l = Ledger::<u64>::default();
        l.sent();
        assert_eq!(l.ended(10), 0);
        assert_eq!(l.ended(12), 0);
        assert_eq!(l.done(Some(13)), 1, "12 is ours, 10 foreign");
        // Foreign after ours.
        l.sent();
        assert_eq!(l.ended(20), 0);
        assert_eq!(l.done(Some(21)), 0);
        assert_eq!(l.ended(22), 1);
        // Foreign before ours, our reply handled before our own end: the foreign end is taken
        // for ours, and ours is counted in its place.
        l.sent();
        assert_eq!(l.ended(30), 0);
        assert_eq!(l.done(Some(33)), 0);
        assert_eq!(l.ended(32), 1);
    }

    #[test]
    fn a_reply_whose_signal_never_came_claims_no_later_reload() {
        let mut l = Ledger::<u64>::default();
        l.sent();
        assert_eq!(l.done(Some(5)), 0);
        // PID 1's end of it was lost; a foreign one later is foreign.
        assert_eq!(l.ended(8), 1);
        assert!(l.replies.is_empty(), "nothing left to claim anything");
    }

    #[test]
    fn a_call_given_up_on_leaves_its_reload_foreign() {
        let mut l = Ledger::<u64>::default();
        l.sent();
        assert_eq!(l.done(None), 0);
        assert_eq!(l.ended(4), 1, "PID 1 ran it after all: walk again");
    }

    #[test]
    fn several_of_ours_in_flight_claim_their_own() {
        let mut l = Ledger::<u64>::default();
        l.sent();
        l.sent();
        assert_eq!(l.ended(10), 0);
        assert_eq!(l.done(Some(11)), 0, "the other is still in flight");
        assert_eq!(l.ended(15), 0);
        assert_eq!(l.ended(17), 0);
        assert_eq!(l.done(Some(18)), 1, "10 and 17 ours, 15 foreign");
    }

    #[test]
    fn the_shared_count_moves_only_for_foreign_reloads() {
        let r = Reloads::default();
        let seen = r.foreign();
        // Sequences cannot be made outside zbus but the first: every signal and reply here
        // compares equal, and an end never precedes a reply at the same place.
        let ours = r.sent();
        r.ended(Sequence::default());
        assert_eq!(*seen.borrow(), 0);
        drop(ours);
        assert_eq!(*seen.borrow(), 1, "unanswered: its end counts as foreign");
        r.pid1_returned();
        assert_eq!(*seen.borrow(), 2);
    }
}
