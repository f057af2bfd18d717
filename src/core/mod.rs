//! The sans-I/O core: one pure state machine per group.
//!
//! `GroupMachine::handle(event, now) -> actions`. Nothing in here reads a clock, touches a
//! socket or spawns a task: the runtime feeds it events with the current monotonic time and
//! carries out the actions it returns. That is what lets the tests drive every transition
//! with a fake clock.

mod machine;
mod slots;
mod timing;

pub use machine::{
    Action, Cancels, Event, GroupMachine, GroupParams, Ineligibility, Ineligible, Job, Member,
    Reason, ReasonKind, Refusal, Request, Timer, Timers, Tunables,
};
pub use slots::{Arbiter, Arbitration, SlotError, SlotGroup, SlotView, arbitrate};
pub use timing::{
    AFTER_WATCHDOG, FENCE_LOAD_STEP, GROUPS_FREE, KILL_ROOM, Mono, STOP_COST_PER_COMMAND,
    STOP_COST_PER_GROUP, STOP_COST_PER_UNIT, STOP_ROOM, Timing, WATCHDOG_ACCURACY, WATCHDOG_REACH,
    WATCHDOG_SLACK,
};

use serde::{Deserialize, Serialize};

/// A host's role in one group, as reported over D-Bus, journald and in the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Just started: whatever a previous incarnation left running is stopped first.
    Starting,
    /// The active units are down (and the passive target up); may campaign if eligible.
    Passive,
    /// Holds the leader key and starts the active target.
    Promoting,
    /// Holds the leader key and the active target started.
    Active,
    /// Stopping the active units (hand-over, fence, failure, SIGTERM); the key is released
    /// once they are down.
    Demoting,
    /// Failed over: passive and ineligible until `failure-cooldown` ends or `promctl reset`.
    Failed,
    /// The name design.md reserves for maintenance mode. This version never reports it: a
    /// host in maintenance mode keeps reporting its role (an active host's units still run,
    /// and a proxy routing by role must still find it), with `Maintenance` true beside it.
    Maintenance,
}

impl Role {
    /// The lowercase name used in the store, on D-Bus and in the journal, e.g. `"active"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Starting => "starting",
            Role::Passive => "passive",
            Role::Promoting => "promoting",
            Role::Active => "active",
            Role::Demoting => "demoting",
            Role::Failed => "failed",
            Role::Maintenance => "maintenance",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
