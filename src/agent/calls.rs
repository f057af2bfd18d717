//! D-Bus method calls: carried out on the group's machine at once, answered once the group
//! gets where the call asked (or refused at once, or timed out).
//!
//! When a call settles, by the machine's state after each input:
//! - `Promote`: `active` → ok; `failed` → `NotEligible` (it failed while taking over);
//!   maintenance mode on → `Maintenance`;
//! - `Demote`: ok once the node holds no key and its units are known stopped;
//! - `SetMaintenance(on)`: ok once the store reports the mode as asked;
//! - `ResetFailed`: ok at once;
//! - any: `Timeout` after [`call_timeout`] of the group's lease.

use std::time::Duration;

use super::output::{Level, Output};
use super::{Agent, CallId, GroupId, Now};
use crate::core::{Mono, Refusal, Request, Role};
use crate::store::{MaintenanceRecord, StoreCommand, record::FORMAT_VERSION};

/// A method call that changes something, as the agent carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `Promote`: become active, through a switchover.
    Promote,
    /// `Demote`: hand the role to the best eligible other member.
    Demote,
    /// `SetMaintenance(on)`: the group's cluster-wide maintenance mode.
    SetMaintenance(bool),
    /// `ResetFailed`: clear this node's failed state.
    ResetFailed,
}

/// Why a call failed; each is a D-Bus error `org.promd1.Error.<variant>` whose message is the
/// string (see [`crate::dbus::PromdError`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// This node may not become active (the machine's reason).
    NotEligible(String),
    /// No other member is eligible to take over.
    NoStandby(String),
    /// The group's maintenance mode is on.
    Maintenance(String),
    /// The call did not complete within [`call_timeout`].
    Timeout(String),
    /// The group is not (or no longer) on this host.
    UnknownGroup(String),
    /// Anything else (the store is unreachable).
    Failed(String),
}

impl Call {
    /// The D-Bus method's name, e.g. `"Promote"` (the `method` label of
    /// `promd_dbus_calls_total`).
    pub fn method(&self) -> &'static str {
        match self {
            Call::Promote => "Promote",
            Call::Demote => "Demote",
            Call::SetMaintenance(_) => "SetMaintenance",
            Call::ResetFailed => "ResetFailed",
        }
    }
}

impl CallError {
    /// The error's name without `org.promd1.Error.`, e.g. `"NotEligible"` (the `result`
    /// label of `promd_dbus_calls_total`).
    pub fn name(&self) -> &'static str {
        match self {
            CallError::NotEligible(_) => "NotEligible",
            CallError::NoStandby(_) => "NoStandby",
            CallError::Maintenance(_) => "Maintenance",
            CallError::Timeout(_) => "Timeout",
            CallError::UnknownGroup(_) => "UnknownGroup",
            CallError::Failed(_) => "Failed",
        }
    }
}

/// A call carried out and waiting for its group to get there.
#[derive(Debug)]
pub(super) struct Pending {
    id: CallId,
    group: GroupId,
    call: Call,
    pub(super) deadline: Mono,
}

/// How long a call may take: a hand-over stops units, so give it a few leases (at least 30s).
pub fn call_timeout(lease: Duration) -> Duration {
    (lease * 3).max(Duration::from_secs(30))
}

impl Agent {
    /// Carry out a call on its group's machine; refused calls are answered at once, the
    /// others wait in `pending`.
    pub(super) fn on_call(
        &mut self,
        id: CallId,
        group: GroupId,
        call: Call,
        now: Now,
        out: &mut Vec<Output>,
    ) {
        let node = self.node.clone();
        let group = self.route_call(group, call, now, out);
        let Some(g) = self.groups.get_mut(&group) else {
            let why = "this group was removed from the configuration".to_string();
            out.push(Output::Reply(id, Err(CallError::UnknownGroup(why))));
            return;
        };
        let timeout = call_timeout(g.cfg.lease);
        let outcome = match call {
            Call::Promote => g.machine.request(Request::Promote, now.mono),
            Call::Demote => g.machine.request(Request::Demote, now.mono),
            Call::ResetFailed => g.machine.request(Request::ResetFailed, now.mono),
            Call::SetMaintenance(on) => {
                if g.machine.maintenance() != on {
                    if !g.machine.store_up() {
                        let why = "the store is unreachable".to_string();
                        out.push(Output::Reply(id, Err(CallError::Failed(why))));
                        return;
                    }
                    let rec = MaintenanceRecord {
                        v: FORMAT_VERSION,
                        on,
                        by: node,
                    };
                    out.push(Output::Store(group, StoreCommand::SetMaintenance(rec)));
                }
                Ok(Vec::new())
            }
        };
        match outcome {
            Err(refusal) => {
                let error = match refusal {
                    Refusal::NotEligible(_) => CallError::NotEligible(refusal.to_string()),
                    Refusal::NoStandby => CallError::NoStandby(refusal.to_string()),
                    Refusal::Maintenance => CallError::Maintenance(refusal.to_string()),
                };
                out.push(Output::Reply(id, Err(error)));
            }
            Ok(actions) => {
                let what = match call {
                    Call::Promote => "promote requested".to_string(),
                    Call::Demote => "demote requested".to_string(),
                    Call::ResetFailed => "failed state reset".to_string(),
                    Call::SetMaintenance(on) => {
                        format!("maintenance {} requested", if on { "on" } else { "off" })
                    }
                };
                out.push(Output::Log(g.record(Level::Info, &what)));
                self.carry_actions(group, actions, now, out);
                self.settle_family(group, now, out);
                self.pending.push(Pending {
                    id,
                    group,
                    call,
                    deadline: now.mono + timeout,
                });
            }
        }
    }

    /// Answer the calls whose outcome is now known. A call whose group has since closed can
    /// only time out (its machine had settled it already, or never would).
    pub(super) fn settle_calls(&mut self, now: Now, out: &mut Vec<Output>) {
        for p in std::mem::take(&mut self.pending) {
            let done = self
                .groups
                .get(&p.group)
                .and_then(|g| settled(&g.machine, p.call));
            let done = done.or_else(|| {
                (now.mono >= p.deadline).then(|| {
                    Err(CallError::Timeout(format!(
                        "{:?} did not complete in time",
                        p.call
                    )))
                })
            });
            match done {
                Some(result) => out.push(Output::Reply(p.id, result)),
                None => self.pending.push(p),
            }
        }
    }
}

/// A call's answer, if the machine's state gives it.
fn settled(m: &crate::core::GroupMachine, call: Call) -> Option<Result<(), CallError>> {
    match call {
        Call::Promote => match m.role() {
            Role::Active => Some(Ok(())),
            Role::Failed => Some(Err(CallError::NotEligible(
                "this host failed while taking over".into(),
            ))),
            _ if m.maintenance() => {
                Some(Err(CallError::Maintenance("maintenance mode is on".into())))
            }
            _ => None,
        },
        Call::Demote => m.settled_passive().then_some(Ok(())),
        Call::SetMaintenance(on) => (m.maintenance() == on).then_some(Ok(())),
        Call::ResetFailed => Some(Ok(())),
    }
}
