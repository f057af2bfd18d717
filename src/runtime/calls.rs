//! D-Bus calls: carried out on the group machine, answered once the group gets there.

use std::time::Duration;

use tokio::sync::mpsc;

use super::Runtime;
use crate::core::{Mono, Refusal, Request, Role};
use crate::dbus::{Call, CallRequest, PromdError};
use crate::store::{MaintenanceRecord, StoreCommand, record::FORMAT_VERSION};

impl Runtime {
    pub(super) fn on_call(&mut self, req: CallRequest) {
        let CallRequest {
            group: i,
            call,
            reply,
        } = req;
        let now = self.now();
        let g = &mut self.groups[i];
        let timeout = call_timeout(g.cfg.lease);
        let outcome = match call {
            Call::Promote => g.machine.request(Request::Promote, now),
            Call::Demote => g.machine.request(Request::Demote, now),
            Call::ResetFailed => g.machine.request(Request::ResetFailed, now),
            Call::SetMaintenance(on) => {
                if g.machine.maintenance() != on {
                    if !g.machine.store_up() {
                        let _ =
                            reply.send(Err(PromdError::Failed("the store is unreachable".into())));
                        return;
                    }
                    let rec = MaintenanceRecord {
                        v: FORMAT_VERSION,
                        on,
                        by: self.node.clone(),
                    };
                    let _ = g.session.commands.send(StoreCommand::SetMaintenance(rec));
                }
                Ok(Vec::new())
            }
        };
        match outcome {
            Err(refusal) => {
                let _ = reply.send(Err(match refusal {
                    Refusal::NotEligible(m) => PromdError::NotEligible(m.to_string()),
                    r @ Refusal::NoStandby => PromdError::NoStandby(r.to_string()),
                    r @ Refusal::Maintenance => PromdError::Maintenance(r.to_string()),
                }));
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
                self.log(i, tracing::Level::INFO, &what);
                for action in actions {
                    self.execute(i, action);
                }
                self.pending.push(Pending {
                    group: i,
                    call,
                    deadline: now + timeout,
                    reply,
                });
            }
        }
    }

    /// Answer the calls whose outcome is now known.
    pub(super) fn settle_calls(&mut self) {
        let now = self.now();
        let mut still = Vec::new();
        for p in std::mem::take(&mut self.pending) {
            let m = &self.groups[p.group].machine;
            let done = match p.call {
                Call::Promote => match m.role() {
                    Role::Active => Some(Ok(())),
                    Role::Failed => Some(Err(PromdError::NotEligible(
                        "this host failed while taking over".into(),
                    ))),
                    _ if m.maintenance() => Some(Err(PromdError::Maintenance(
                        "maintenance mode is on".into(),
                    ))),
                    _ => None,
                },
                Call::Demote => m.settled_passive().then_some(Ok(())),
                Call::SetMaintenance(on) => (m.maintenance() == on).then_some(Ok(())),
                Call::ResetFailed => Some(Ok(())),
            };
            let done = done.or_else(|| {
                (now >= p.deadline).then(|| {
                    Err(PromdError::Timeout(format!(
                        "{:?} did not complete in time",
                        p.call
                    )))
                })
            });
            match done {
                Some(result) => {
                    let _ = p.reply.send(result);
                }
                None => still.push(p),
            }
        }
        self.pending = still;
    }
}

/// A D-Bus call that completes when the group gets there (or times out).
pub(super) struct Pending {
    group: usize,
    call: Call,
    pub(super) deadline: Mono,
    reply: tokio::sync::oneshot::Sender<Result<(), PromdError>>,
}

/// How long a Promote or Demote may take: a hand-over stops units, so give it a few leases.
pub(super) fn call_timeout(lease: Duration) -> Duration {
    (lease * 3).max(Duration::from_secs(30))
}

pub(super) async fn recv_call(
    calls: &mut Option<mpsc::UnboundedReceiver<CallRequest>>,
) -> Option<CallRequest> {
    match calls {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
