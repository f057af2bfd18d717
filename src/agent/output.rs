//! What the agent asks the runtime to do: [`Output`], and the journal records and sd_notify
//! messages among them.

use crate::config::GroupConfig;
use crate::core::{Cancels, Job, Role};
use crate::store::StoreCommand;
use crate::systemd::Closure;
use crate::watch::Followed;

use super::{CallError, CallId, GroupId, GroupView};

/// One thing for the runtime to carry out. [`super::Agent::handle`] returns them in the order
/// they must happen; none of them feeds anything back into the agent synchronously (results
/// come back as later [`super::Input`]s).
#[derive(Debug, Clone)]
pub enum Output {
    /// Open the group's drivers: its store session, the binding of its active target's
    /// closure to promd (the closure comes back as [`super::Input::Closure`]), its health
    /// check. The configuration is the group's for the life of its id.
    Open(GroupId, GroupConfig),
    /// Serve a group that a reload added on D-Bus. The groups of the start-up configuration
    /// are served with the service itself ([`super::Agent::views`]).
    Serve(GroupId, GroupView),
    /// The group is leaving (a reload removed or changed it): stop following its units and
    /// running its health check; its last stop still runs.
    Quiet(GroupId),
    /// The group has exited: stop serving it on D-Bus and drop its drivers (its store task's
    /// shutdown is still awaited when promd exits). `unbind`: it is gone for good, so its
    /// units' drop-ins go too (not when a changed version of it starts next).
    Close {
        /// The group.
        id: GroupId,
        /// Its name: its D-Bus object's path and its drop-ins' names derive from it.
        name: String,
        /// Gone for good: remove its units' drop-ins.
        unbind: bool,
        /// The passive target to stop: the group's, when no group of the configuration now
        /// in force starts it (a removed group, or one changed to another passive target).
        /// Its hand-over started it (rule 3b); nothing would ever stop it otherwise.
        stop_passive: Option<String>,
    },
    /// A reload changed the group's configuration in place ([`super::reload`]): the group's
    /// drivers take `cfg` from now on (what a start expects up, what a restart covers), and
    /// `health`: the health check changed, so it restarts (or stops, without a command).
    Retune {
        /// The group.
        id: GroupId,
        /// Its configuration now; the same name, targets and lease.
        cfg: GroupConfig,
        /// The health settings changed.
        health: bool,
    },
    /// Rewrite `/run/promd/GROUP.env` (atomically) with these values: on a host that does not
    /// hold the role, whenever the leader or the term it knows changes, so that units of the
    /// passive target (and `PathChanged=` units) follow the leader. Comes after the step's
    /// other outputs: it never goes before a stop or a kill.
    Env(GroupId, EnvFile),
    /// A command for the group's store session.
    Store(GroupId, StoreCommand),
    /// Abort the group's work in flight that the next job or kill supersedes (the core's
    /// rule, [`crate::core::Action::cancels`]); always comes right before that job or kill.
    Cancel(GroupId, Cancels),
    /// Keep `term` on disk as the group's floor ([`crate::termfloor`]): the highest term this
    /// host has seen or handed out in it. Comes before any [`Output::Job`] that hands the
    /// units a term (the runtime also refuses such a start unless the term is kept).
    KeepTerm {
        /// The group's name.
        group: String,
        /// The term.
        term: u64,
    },
    /// Run a systemd job for the group; its result comes back as [`super::Input::Job`].
    Job(GroupId, JobOrder),
    /// SIGKILL whatever of the group's active units still runs: `known` (the closure as last
    /// found, and the active target) at once, and whatever a fresh walk finds besides. Once
    /// the `KillUnit` calls of the known part are on the bus, the runtime answers
    /// [`super::Input::KillSent`] with `kill`.
    Kill {
        /// The group.
        id: GroupId,
        /// The closure as last found.
        known: Closure,
        /// The group's kills asked so far, this one included: its number.
        kill: u64,
    },
    /// Restart these failed units in place; a unit that is not up afterwards comes back as
    /// [`crate::watch::WatchEvent::Stopped`].
    Restart(GroupId, Vec<String>),
    /// Stop the group's passive target: a host that is a spare of a group with several
    /// active hosts (docs/slots.md) runs neither target.
    StopPassive(GroupId),
    /// (Re)start following the group's units with these interests, replacing any follower it
    /// had; the runtime adds the passive target's units.
    Follow(GroupId, Followed),
    /// Answer a D-Bus call.
    Reply(CallId, Result<(), CallError>),
    /// Emit the group object's `RoleChanged(old, new, term, reason)` D-Bus signal.
    RoleSignal {
        /// The group's name (its object's path derives from it).
        group: String,
        /// The role it had.
        old: Role,
        /// The role it has now.
        new: Role,
        /// The term the change happened under.
        term: u64,
        /// Why, as the machine says it.
        reason: String,
    },
    /// Write a journal record.
    Log(Record),
    /// Tell systemd (sd_notify).
    Notify(Notify),
}

/// A systemd job with what carrying it out needs besides the group's configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct JobOrder {
    /// The job the machine asked for.
    pub job: Job,
    /// What `/run/promd/GROUP.env` says, written before a start is even queued so that the
    /// units read this term; `None` for a stop.
    pub env: Option<EnvFile>,
    /// The closure of the active target as last found: what a stop covers at once (a fresh
    /// walk adds whatever the target gained since).
    pub known: Closure,
    /// Whether a walk found `known` (else it is empty because no walk succeeded yet): a start
    /// with a closure known only to be empty must find and bind it first.
    pub walked: bool,
}

/// The values of a group's environment file that change with the role (`PROMD_GROUP` and
/// `PROMD_NODE` are the group's and the node's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvFile {
    /// `PROMD_ROLE`.
    pub role: Role,
    /// `PROMD_TERM`, the fencing token.
    pub term: u64,
    /// `PROMD_LEADER`; empty when no leader is known.
    pub leader: String,
    /// `PROMD_SLOT`, for a group with `actives` above 1 only (docs/slots.md).
    pub slot: SlotLine,
}

/// What `/run/promd/GROUP.env` says of the slot (docs/slots.md, "`PROMD_SLOT`").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SlotLine {
    /// A group with one active host: no `PROMD_SLOT` line, the file as it always was.
    #[default]
    Absent,
    /// `PROMD_SLOT=k`: this host holds slot k (`PROMD_TERM` is slot k's).
    Holds(u32),
    /// `PROMD_SLOT=` (empty): this host holds no slot; term and leader are slot 0's.
    Without,
}

impl SlotLine {
    /// What the env file of a group says on a host that holds slot `held` (`None`: no slot)
    /// of the group `slot` is one of: no line for a group with one active host (`slot` not
    /// set, or a family of one slot for `standbys`).
    pub fn of(slot: Option<&crate::config::SlotOf>, held: Option<u32>) -> SlotLine {
        match (slot, held) {
            (None, _) => SlotLine::Absent,
            (Some(s), _) if s.of < 2 => SlotLine::Absent,
            (Some(_), Some(k)) => SlotLine::Holds(k),
            (Some(_), None) => SlotLine::Without,
        }
    }

    /// The value of `PROMD_SLOT`, or `None` for no line.
    pub fn value(self) -> Option<String> {
        match self {
            SlotLine::Absent => None,
            SlotLine::Holds(k) => Some(k.to_string()),
            SlotLine::Without => Some(String::new()),
        }
    }
}

/// A message to systemd's notify socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notify {
    /// `READY=1` with this `STATUS=`.
    Ready(String),
    /// `STATUS=`, sent only when it changed.
    Status(String),
    /// `RELOADING=1` (with a status saying so).
    Reloading,
    /// `STOPPING=1` (with a status saying so).
    Stopping,
    /// `WATCHDOG_USEC=`: the watchdog lowered to fit a shorter lease (never raised); sent by
    /// the watchdog keeper ([`crate::watchdog`]), which also pings.
    Watchdog(std::time::Duration),
}

/// A journal record's priority.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// `info`: what promd does as it should.
    Info,
    /// `warning`: something failed that promd handles (a unit, the store, a check).
    Warn,
    /// `err`: something an operator must fix.
    Error,
}

/// A journal record: priority, catalogued `MESSAGE_ID` (see [`crate::logging`]), text and
/// `PROMD_*` fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The record's priority.
    pub level: Level,
    /// Set for the records `packaging/promd.catalog` explains (role changes, fencing, node
    /// conflicts, refused reloads).
    pub message_id: Option<&'static str>,
    /// `MESSAGE=`; a group's records start with `GROUP: `.
    pub text: String,
    /// The `PROMD_*` fields.
    pub fields: Fields,
}

/// The `PROMD_*` journal fields of a record; those that are `None` are left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fields {
    /// `PROMD_GROUP`: the group's name in the file (a slot's group's, too).
    pub group: Option<String>,
    /// `PROMD_SLOT`: the slot of a group with several active hosts the record is about.
    pub slot: Option<u32>,
    /// `PROMD_ROLE`: the role at the time of the record (the new one for a role change).
    pub role: Option<Role>,
    /// `PROMD_TERM`.
    pub term: Option<u64>,
    /// `PROMD_LEADER`: empty when no leader is known.
    pub leader: Option<String>,
    /// `PROMD_OLD_ROLE`: a role change's old role.
    pub old_role: Option<Role>,
    /// `PROMD_REASON`: why the role changed.
    pub reason: Option<String>,
    /// `PROMD_NODE`: this node, where the record is about the node itself.
    pub node: Option<String>,
}

impl Record {
    /// A record with no `PROMD_*` field and no `MESSAGE_ID`.
    pub fn plain(level: Level, text: impl Into<String>) -> Record {
        Record {
            level,
            message_id: None,
            text: text.into(),
            fields: Fields::default(),
        }
    }
}
