//! Why a role changed, and why a request was refused: typed, so that the runtime picks the
//! journal's MESSAGE_ID by kind, and displayed with the texts users read in the journal
//! (`PROMD_REASON=`, the D-Bus `RoleChanged` signal, `promctl watch`). Keep the texts stable:
//! scripts and the system tests grep for them.

use std::fmt;
use std::time::Duration;

/// Why [`Action::RoleChanged`](super::Action::RoleChanged) happened.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Promotion: this node won the leader key (`passive -> promoting`).
    WonElection,
    /// The active target's start job succeeded (`promoting -> active`).
    ActiveStarted,
    /// An operator's or a preempting node's switchover request names another node.
    Switchover {
        /// The node the role is handed to.
        to: String,
    },
    /// The fence deadline passed without an acknowledged renewal: the units stop before the
    /// lease can expire anywhere else (docs/safety.md). The one reason journald logs under
    /// the `FENCED` MESSAGE_ID.
    LeaseNotRenewed,
    /// The key is held, but this node is not promoting or active (a demotion, a unit started
    /// behind its back).
    NotActive,
    /// At start-up: whatever a previous incarnation left running is stopped.
    Starting,
    /// The store reported this node's lease gone, and every key bound to it.
    LeaseLost,
    /// Another node holds the leader key.
    HeldBy {
        /// The key's holder.
        node: String,
    },
    /// The leader key vanished (expired, or deleted by hand).
    KeyGone,
    /// The key shows this node's name at another term, or the key is not known to be ours.
    NotHolding,
    /// The agent is stopping (SIGTERM): stop, release, exit.
    PromdStopping,
    /// A reload removed the group, or changed it so that it restarts: stop, release, close.
    Retired,
    /// The active target's start job failed.
    StartFailed,
    /// More failures than `max-restarts` within `restart-window`: handing over.
    FailingOver {
        /// Failures counted within the window.
        count: usize,
        /// The configured `restart-window`.
        window: Duration,
        /// The eligible standby the role goes to.
        to: String,
    },
    /// Start-up finished: units stopped, passive target up (`starting -> passive`).
    StartedPassive,
    /// Start-up finished with the units stopped, but the passive target failed to start
    /// (`starting -> passive`, ineligible until a retry of the start succeeds).
    StartedPassiveFailed,
    /// A failed node's cooldown ended (`failed -> passive`).
    CooldownOver,
    /// A demotion after failing over ends in `failed`.
    FailedCooldown,
    /// A demotion finished: the units are down (`demoting -> passive`).
    Demoted,
}

/// Which catalogued journal message (MESSAGE_ID) a [`Reason`] is logged under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReasonKind {
    /// The node fenced itself: its lease was not renewed in time.
    Fenced,
    /// Any other role change.
    RoleChanged,
}

impl Reason {
    /// The journal message this reason is catalogued under.
    pub fn kind(&self) -> ReasonKind {
        match self {
            Reason::LeaseNotRenewed => ReasonKind::Fenced,
            _ => ReasonKind::RoleChanged,
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::WonElection => f.write_str("won the election"),
            Reason::ActiveStarted => f.write_str("active target started"),
            Reason::Switchover { to } => write!(f, "switchover to {to}"),
            Reason::LeaseNotRenewed => {
                f.write_str("lease not renewed in time: fencing before it can expire")
            }
            Reason::NotActive => f.write_str("not active: the active units must not run"),
            Reason::Starting => f.write_str("starting: the active units must not run"),
            Reason::LeaseLost => f.write_str("lease lost"),
            Reason::HeldBy { node } => write!(f, "{node} holds the role"),
            Reason::KeyGone => f.write_str("the leader key is gone"),
            Reason::NotHolding => f.write_str("not holding the role"),
            Reason::PromdStopping => f.write_str("promd is stopping"),
            Reason::Retired => {
                f.write_str("retired by a reload (removed, or changed so that it restarts)")
            }
            Reason::StartFailed => f.write_str("the active target failed to start"),
            Reason::FailingOver { count, window, to } => write!(
                f,
                "{count} failures within {}: failing over to {to}",
                humantime::format_duration(*window)
            ),
            Reason::StartedPassive => f.write_str("started: units stopped, passive target up"),
            Reason::StartedPassiveFailed => f.write_str(
                "started: units stopped, but the passive target failed to start (retrying)",
            ),
            Reason::CooldownOver => f.write_str("failure cooldown over"),
            Reason::FailedCooldown => f.write_str("failed: ineligible until the cooldown ends"),
            Reason::Demoted => f.write_str("demoted: active units stopped"),
        }
    }
}

/// Why an operator's request was refused; nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Promote: this node cannot become active now.
    NotEligible(Ineligible),
    /// Demote: no other member is eligible to take over.
    NoStandby,
    /// Promote or demote while the group's maintenance mode is on.
    Maintenance,
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::NotEligible(why) => why.fmt(f),
            Refusal::NoStandby => f.write_str("no other member is eligible to take over"),
            Refusal::Maintenance => f.write_str("maintenance mode is on"),
        }
    }
}

/// Why this node cannot become active now ([`GroupMachine::ineligibility`]), in the order
/// it is checked: the first that applies is reported.
///
/// [`GroupMachine::ineligibility`]: super::GroupMachine::ineligibility
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ineligible {
    /// The agent is stopping.
    Stopping,
    /// The configured `members` do not name this node.
    NotMember,
    /// The node failed over and waits for `failure-cooldown` (or `promctl reset`).
    Cooldown,
    /// The passive target, or one of its units, failed.
    PassiveFailed,
    /// The health command fails.
    Unhealthy,
    /// The store is down, or the lease was lost.
    StoreUnreachable,
    /// No renewal was acknowledged within the fence bound (docs/safety.md).
    LeaseNotRenewed,
    /// The node is not `passive` with its passive target up (starting, demoting, ...).
    NotPassive,
    /// A group with several slots (`actives`): this node holds, claims or is after another
    /// slot of the group, and a node holds at most one (`core::slots`, docs/slots.md).
    OtherSlot,
    /// A group with several slots: this node holds none and stands by for another slot (a
    /// vacant one, or the weakest holder's); it goes for this one when this one falls
    /// vacant, so a node deciding when to campaign here counts it among its rivals.
    StandbyElsewhere,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.text())
    }
}

impl Ineligible {
    /// The refusal's text, about this node (what [`Display`](fmt::Display) writes).
    fn text(self) -> &'static str {
        match self {
            Ineligible::Stopping => "promd is stopping",
            Ineligible::NotMember => "this node is not in the group's members",
            Ineligible::Cooldown => {
                "this node failed and is in its failure cooldown (promctl reset clears it)"
            }
            Ineligible::PassiveFailed => "the passive target failed",
            Ineligible::Unhealthy => "the health check fails",
            Ineligible::StoreUnreachable => "the store is unreachable",
            Ineligible::LeaseNotRenewed => "the store lease is not renewed",
            Ineligible::NotPassive => "this node is not passive yet",
            Ineligible::OtherSlot => "this node holds or is after another slot of the group",
            Ineligible::StandbyElsewhere => {
                "this node holds no slot of the group and stands by for another one"
            }
        }
    }

    /// Every variant, in the order [`GroupMachine::ineligibility`] checks them.
    ///
    /// [`GroupMachine::ineligibility`]: super::GroupMachine::ineligibility
    pub const ALL: [Ineligible; 10] = [
        Ineligible::Stopping,
        Ineligible::NotMember,
        Ineligible::Cooldown,
        Ineligible::PassiveFailed,
        Ineligible::Unhealthy,
        Ineligible::StoreUnreachable,
        Ineligible::LeaseNotRenewed,
        Ineligible::NotPassive,
        Ineligible::OtherSlot,
        Ineligible::StandbyElsewhere,
    ];
}

/// Why a member may not become active now, as its member record says: one of the machine's
/// own checks ([`Ineligible`]), or the deferral of a node that just lost the role in a crash.
/// Carried in the store (`why`), on D-Bus (`Ineligible`, `MemberStates`) and in the status
/// document (`why`) as a stable kebab-case [`word`](Self::word), e.g. `"unhealthy"`;
/// displayed with the texts promctl prints.
///
/// Informative only: whether a member may win an election is its record's `eligible`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Ineligibility {
    /// One of [`GroupMachine::ineligibility`](super::GroupMachine::ineligibility)'s checks
    /// fails.
    Checked(Ineligible),
    /// An earlier run of this node held the key (it lost the role in a crash): it lets the
    /// others go first, once.
    DeferOnce,
    /// A word this promd does not know (a newer promd's), or an ineligible record of an older
    /// promd that gives no reason.
    Unknown,
}

impl Ineligibility {
    /// The stable word: `stopping`, `not-member`, `cooldown`, `passive-failed`, `unhealthy`,
    /// `store-unreachable`, `lease-not-renewed`, `not-passive`, `other-slot`,
    /// `standby-elsewhere`, `defer-once` or `unknown`.
    pub fn word(self) -> &'static str {
        match self {
            Ineligibility::Checked(i) => match i {
                Ineligible::Stopping => "stopping",
                Ineligible::NotMember => "not-member",
                Ineligible::Cooldown => "cooldown",
                Ineligible::PassiveFailed => "passive-failed",
                Ineligible::Unhealthy => "unhealthy",
                Ineligible::StoreUnreachable => "store-unreachable",
                Ineligible::LeaseNotRenewed => "lease-not-renewed",
                Ineligible::NotPassive => "not-passive",
                Ineligible::OtherSlot => "other-slot",
                Ineligible::StandbyElsewhere => "standby-elsewhere",
            },
            Ineligibility::DeferOnce => "defer-once",
            Ineligibility::Unknown => "unknown",
        }
    }

    /// The reason as it reads about any member, in a table of members (`promctl status`):
    /// the [`Display`](fmt::Display) texts speak of "this node", which would read as the
    /// host promctl runs on. E.g. `cooldown` → "failed and in its failure cooldown (promctl
    /// reset clears it)".
    pub fn about_member(self) -> &'static str {
        match self {
            // Only the texts that speak of "this node" read otherwise.
            Ineligibility::Checked(Ineligible::NotMember) => "not in the group's members",
            Ineligibility::Checked(Ineligible::Cooldown) => {
                "failed and in its failure cooldown (promctl reset clears it)"
            }
            Ineligibility::Checked(Ineligible::NotPassive) => "not passive yet",
            Ineligibility::Checked(Ineligible::OtherSlot) => {
                "holds or is after another slot of the group"
            }
            Ineligibility::Checked(Ineligible::StandbyElsewhere) => {
                "holds no slot of the group and stands by for another one"
            }
            Ineligibility::Checked(i) => i.text(),
            Ineligibility::DeferOnce => {
                "just lost the role in a crash and lets the others go first"
            }
            Ineligibility::Unknown => "for a reason this promd does not know",
        }
    }

    /// The reason a [`word`](Self::word) names; [`Ineligibility::Unknown`] for any other
    /// word (never an error: a newer promd may know more reasons).
    pub fn from_word(word: &str) -> Ineligibility {
        Ineligible::ALL
            .into_iter()
            .map(Ineligibility::Checked)
            .chain([Ineligibility::DeferOnce])
            .find(|w| w.word() == word)
            .unwrap_or(Ineligibility::Unknown)
    }
}

impl From<Ineligible> for Ineligibility {
    fn from(i: Ineligible) -> Ineligibility {
        Ineligibility::Checked(i)
    }
}

impl fmt::Display for Ineligibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligibility::Checked(i) => i.fmt(f),
            Ineligibility::DeferOnce => {
                f.write_str("this node just lost the role in a crash and lets the others go first")
            }
            Ineligibility::Unknown => f.write_str("for a reason this promd does not know"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The texts are what the journal showed before the reasons were typed: users and the
    /// system tests read them.
    #[test]
    fn reasons_read_as_they_always_did() {
        let texts = [
            (Reason::WonElection, "won the election"),
            (Reason::ActiveStarted, "active target started"),
            (Reason::Switchover { to: "b".into() }, "switchover to b"),
            (
                Reason::LeaseNotRenewed,
                "lease not renewed in time: fencing before it can expire",
            ),
            (
                Reason::NotActive,
                "not active: the active units must not run",
            ),
            (Reason::Starting, "starting: the active units must not run"),
            (Reason::LeaseLost, "lease lost"),
            (Reason::HeldBy { node: "b".into() }, "b holds the role"),
            (Reason::KeyGone, "the leader key is gone"),
            (Reason::NotHolding, "not holding the role"),
            (Reason::PromdStopping, "promd is stopping"),
            (
                Reason::Retired,
                "retired by a reload (removed, or changed so that it restarts)",
            ),
            (Reason::StartFailed, "the active target failed to start"),
            (
                Reason::FailingOver {
                    count: 4,
                    window: Duration::from_secs(300),
                    to: "b".into(),
                },
                "4 failures within 5m: failing over to b",
            ),
            (
                Reason::StartedPassive,
                "started: units stopped, passive target up",
            ),
            (
                Reason::StartedPassiveFailed,
                "started: units stopped, but the passive target failed to start (retrying)",
            ),
            (Reason::CooldownOver, "failure cooldown over"),
            (
                Reason::FailedCooldown,
                "failed: ineligible until the cooldown ends",
            ),
            (Reason::Demoted, "demoted: active units stopped"),
        ];
        for (reason, text) in texts {
            assert_eq!(reason.to_string(), text);
            let fence = reason == Reason::LeaseNotRenewed;
            assert_eq!(reason.kind() == ReasonKind::Fenced, fence, "{reason}");
        }
    }

    #[test]
    fn refusals_read_as_they_always_did() {
        assert_eq!(Refusal::Maintenance.to_string(), "maintenance mode is on");
        assert_eq!(
            Refusal::NoStandby.to_string(),
            "no other member is eligible to take over"
        );
        assert_eq!(
            Refusal::NotEligible(Ineligible::Cooldown).to_string(),
            "this node failed and is in its failure cooldown (promctl reset clears it)"
        );
        assert_eq!(
            Refusal::NotEligible(Ineligible::NotPassive).to_string(),
            "this node is not passive yet"
        );
    }
    #[test]
    fn ineligibility_words_are_stable_and_unknown_words_read_as_unknown() {
        let words: Vec<&str> = Ineligible::ALL
            .into_iter()
            .map(Ineligibility::Checked)
            .chain([Ineligibility::DeferOnce, Ineligibility::Unknown])
            .map(Ineligibility::word)
            .collect();
        assert_eq!(
            words,
            [
                "stopping",
                "not-member",
                "cooldown",
                "passive-failed",
                "unhealthy",
                "store-unreachable",
                "lease-not-renewed",
                "not-passive",
                "other-slot",
                "standby-elsewhere",
                "defer-once",
                "unknown",
            ]
        );
        for w in words {
            assert_eq!(Ineligibility::from_word(w).word(), w);
        }
        assert_eq!(
            Ineligibility::from_word("quorum-lost"),
            Ineligibility::Unknown
        );
        assert_eq!(Ineligibility::from_word(""), Ineligibility::Unknown);
        assert_eq!(
            Ineligibility::from(Ineligible::Unhealthy).to_string(),
            "the health check fails"
        );
    }
}
