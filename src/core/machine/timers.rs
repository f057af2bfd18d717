//! The machine's deadlines, by name, in one table.
//!
//! Some timers are owned: a transition sets them (a failed stop sets [`Timer::StopRetry`]) and
//! they stay set, due or not, until a transition clears them; the rules read them by name
//! (`self.timers.get(Timer::StopRetry)`). The others follow from the state (the fence from the
//! last renewal, the kill from the stop under way, the campaign from the vacancy and the
//! ranking, a restart from the earliest pending one): [`GroupMachine::timers`] fills them in, so
//! that [`GroupMachine::next_deadline`] is the table's earliest entry. The machine stays
//! level-triggered: every step applies every rule, and a rule whose timer is due acts on it.

use super::{GroupMachine, Key, Mono};

/// A named deadline of the group machine. All are points on the runtime's monotonic clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Timer {
    /// Derived: `fence_at(s)` of the last acknowledged renewal `s` (docs/safety.md): units
    /// stop before the lease can expire anywhere else, and the node stops being eligible.
    Fence,
    /// Derived: SIGKILL what a stop under way has not stopped (`fence::kill_due`).
    Kill,
    /// Owned: a failed stop is issued again at this time (backoff doubling per failure).
    StopRetry,
    /// Derived: the key was seen vacant; campaign after one grace period per better candidate
    /// (not set while the first election waits for a member still starting).
    Campaign,
    /// Owned: after a lost campaign, campaign again at this time unless the watch shows the
    /// winner first (one grace period).
    CampaignRetry,
    /// Owned: a node that failed over is ineligible until this time (`failure-cooldown`).
    Cooldown,
    /// Derived: the earliest restart in place waiting for its `restart-backoff`.
    Restart,
    /// Owned: a start of the active target that left watched units down is tried again at
    /// this time (`restart-backoff`).
    StartRetry,
    /// Owned: a passive target that failed to start is started again at this time
    /// (`Timing::passive_retry_backoff`); the node is ineligible until it is up.
    PassiveRetry,
    /// Owned: a preempting node asks for a switchover again only after this time (one lease
    /// after its last request).
    SwitchoverRetry,
    /// Owned: the end of this node's first election, set when it first sees the leader key
    /// vacant (`first_election_wait` after that) and cleared once it sees the key held or the
    /// time is up. Until then its campaign also waits for members that may outrank it but are
    /// still starting (`election.rs`).
    FirstElection,
}

impl Timer {
    /// Every timer, in the table's order.
    pub const ALL: [Timer; 11] = [
        Timer::Fence,
        Timer::Kill,
        Timer::StopRetry,
        Timer::Campaign,
        Timer::CampaignRetry,
        Timer::Cooldown,
        Timer::Restart,
        Timer::StartRetry,
        Timer::PassiveRetry,
        Timer::SwitchoverRetry,
        Timer::FirstElection,
    ];
}

/// One optional deadline per [`Timer`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Timers([Option<Mono>; Timer::ALL.len()]);

impl Timers {
    /// The timer's deadline, if set (a set timer stays set once due, until cleared).
    pub fn get(&self, timer: Timer) -> Option<Mono> {
        self.0[timer as usize]
    }

    /// Set (or move) the timer's deadline.
    pub fn set(&mut self, timer: Timer, at: Mono) {
        self.0[timer as usize] = Some(at);
    }

    /// Set the timer's deadline, or clear it with `None`.
    pub fn put(&mut self, timer: Timer, at: Option<Mono>) {
        self.0[timer as usize] = at;
    }

    /// Unset the timer.
    pub fn clear(&mut self, timer: Timer) {
        self.0[timer as usize] = None;
    }

    /// Whether the timer is set and its deadline has come (`at <= now`).
    pub fn due(&self, timer: Timer, now: Mono) -> bool {
        self.get(timer).is_some_and(|at| at <= now)
    }

    /// Whether the timer is set and its deadline has not come yet (`now < at`).
    pub fn pending(&self, timer: Timer, now: Mono) -> bool {
        self.get(timer).is_some_and(|at| now < at)
    }

    /// The earliest deadline later than `after` (ties: the first in [`Timer::ALL`]).
    pub fn next_after(&self, after: Mono) -> Option<(Timer, Mono)> {
        Timer::ALL
            .into_iter()
            .filter_map(|t| self.get(t).map(|at| (t, at)))
            .filter(|(_, at)| *at > after)
            .min_by_key(|(_, at)| *at)
    }
}

impl GroupMachine {
    /// The whole table: the owned timers as set, and the derived ones as the state implies.
    pub fn timers(&self) -> Timers {
        let mut t = self.timers;
        t.put(
            Timer::Fence,
            self.renewed_sent().map(|s| self.p.timing.fence_at(s)),
        );
        t.put(Timer::Kill, self.next_kill());
        let campaign = match self.key {
            Key::Vacant { since } if !self.campaigning() => {
                self.campaign_at(since, self.stepped_at)
            }
            _ => None,
        };
        t.put(Timer::Campaign, campaign);
        t.put(
            Timer::Restart,
            // The earliest not yet stepped past, as each pending restart is a deadline of its own.
            self.pending_restarts
                .iter()
                .map(|r| r.1)
                .filter(|at| *at > self.stepped_at)
                .min(),
        );
        t
    }

    /// The timer a `Tick` is next due for, and when, if any: see [`Self::next_deadline`].
    pub fn next_timer(&self) -> Option<(Timer, Mono)> {
        self.timers().next_after(self.stepped_at)
    }
}
