//! Driver events (store, unit watches, health checks) turned into machine events.

use super::{JobDone, Runtime};
use crate::core::{Event, Member, Role};
use crate::health::HealthResult;
use crate::store::{StoreEvent, other_host};
use crate::watch::WatchEvent;

impl Runtime {
    pub(super) fn on_store(&mut self, i: usize, ev: StoreEvent) {
        let event = match ev {
            StoreEvent::Up => {
                if let Some(reason) = self.groups[i].store_down.take() {
                    self.log(
                        i,
                        tracing::Level::INFO,
                        &format!("store reachable again (was: {reason})"),
                    );
                }
                Event::StoreUp
            }
            StoreEvent::Down(reason) => {
                let reason = reason.to_string();
                let g = &mut self.groups[i];
                if g.store_down.as_deref() != Some(&reason) {
                    g.store_down = Some(reason.clone());
                    self.log(
                        i,
                        tracing::Level::WARN,
                        &format!("store unreachable: {reason}"),
                    );
                }
                Event::StoreDown
            }
            StoreEvent::Renewed { sent_at } => Event::Renewed {
                sent_at: self.mono(sent_at),
            },
            StoreEvent::LeaseLost => {
                self.log(i, tracing::Level::WARN, "store lease lost");
                Event::LeaseLost
            }
            StoreEvent::Leader(l) => Event::Leader(l.map(|l| {
                match other_host(l.host.as_deref(), self.host.as_ref()) {
                    Some(other) if l.node == self.node => {
                        let other = other.to_string();
                        self.refuse_node_conflict(i, "the leader key", &other);
                        // Not ours, whatever the name says: never released as a key of
                        // ours from an earlier run.
                        (format!("{} (machine {other})", l.node), l.term)
                    }
                    _ => (l.node, l.term),
                }
            })),
            StoreEvent::Members(ms) => {
                let conflict = ms.iter().find_map(|m| {
                    other_host(m.host.as_deref(), self.host.as_ref())
                        .filter(|_| m.node == self.node)
                        .map(str::to_string)
                });
                if let Some(other) = conflict {
                    self.refuse_node_conflict(i, "this node's member record", &other);
                }
                Event::Members(
                    ms.into_iter()
                        .map(|m| Member {
                            node: m.node,
                            priority: m.priority,
                            eligible: m.eligible,
                            healthy: m.healthy,
                            role: m.role,
                        })
                        .collect(),
                )
            }
            StoreEvent::Switchover(s) => Event::Switchover(s.map(|s| s.to)),
            StoreEvent::Campaigned(t) => Event::Campaigned(t),
            StoreEvent::Released => Event::Released,
            StoreEvent::Maintenance(m) => {
                let on = m.as_ref().is_some_and(|m| m.on);
                if on != self.groups[i].machine.maintenance() {
                    let by = m.map(|m| m.by).unwrap_or_default();
                    let msg = if on {
                        format!("maintenance mode on (set by {by})")
                    } else {
                        "maintenance mode off".into()
                    };
                    self.log(i, tracing::Level::INFO, &msg);
                }
                Event::Maintenance(on)
            }
            StoreEvent::Corrupt { key, error } => {
                self.log(
                    i,
                    tracing::Level::WARN,
                    &format!("ignoring unreadable store value {key}: {error}"),
                );
                return;
            }
        };
        self.feed(i, event);
    }

    pub(super) fn on_watch(&mut self, i: usize, ev: WatchEvent) {
        let event = match ev {
            WatchEvent::Failed { unit, restarted } => Event::UnitFailed { unit, restarted },
            WatchEvent::Stopped { unit } => {
                if self.groups[i].machine.role() == Role::Active {
                    self.log(
                        i,
                        tracing::Level::WARN,
                        &format!(
                            "{unit} is not running, though nobody failed it: counted as a failure"
                        ),
                    );
                }
                Event::UnitFailed {
                    unit,
                    restarted: false,
                }
            }
            WatchEvent::Started { unit } => Event::UnitStarted { unit },
            WatchEvent::PassiveUnits { ok } => Event::PassiveUnits { ok },
        };
        self.feed(i, event);
    }

    /// A systemd job finished. A start of the active target that left watched units down
    /// (only a start that succeeded is checked) is a failed start: `StartIncomplete`.
    pub(super) fn on_job(&mut self, done: JobDone) {
        let JobDone { i, job, ok, not_up } = done;
        if not_up.is_empty() {
            self.feed(i, Event::Job { job, ok });
            return;
        }
        for (unit, state) in &not_up {
            self.log(
                i,
                tracing::Level::WARN,
                &format!("{unit} is {state} after the active target started: a failed start"),
            );
        }
        let units = not_up.into_iter().map(|(u, _)| u).collect();
        self.feed(i, Event::StartIncomplete { units });
    }

    pub(super) fn on_health(&mut self, i: usize, result: HealthResult) {
        if !result.ok && self.groups[i].health_ok {
            self.log(
                i,
                tracing::Level::WARN,
                &format!("health check failed: {}", result.detail),
            );
        }
        self.groups[i].health_ok = result.ok;
        self.feed(i, Event::Health { ok: result.ok });
    }
}
