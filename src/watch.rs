//! Follows a group's units through systemd's property-change signals (no polling).
//!
//! One follower per unit reports its `ActiveState` changes and its restarts; the group's
//! forwarder turns them into [`WatchEvent`]s by what the unit is to the group:
//! - a *watched* unit that fails, is restarted by systemd, or — if it should stay up — goes
//!   inactive without a job of systemd's in flight (exit 0, `systemctl stop` by hand) is a
//!   failure of the role;
//! - a unit of the role's *closure* that becomes active is reported, so that a host that does
//!   not hold the role stops it, whoever started it;
//! - the *passive* target's units report whether any of them is failed.

use std::collections::{BTreeMap, BTreeSet};

use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::sync::mpsc;
use zbus_systemd::systemd1::{ServiceProxy, UnitProxy};

use crate::agent::GroupId;
use crate::systemd::{Systemd, is_up};

/// What a group's forwarder reports to the runtime about its units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// A watched unit entered `failed` (`restarted: false`), or systemd restarted it
    /// (`NRestarts` grew: `Restart=` and watchdog restarts).
    Failed {
        /// The unit's name.
        unit: String,
        /// systemd already restarted it (so promd must not); false: it is `failed`.
        restarted: bool,
    },
    /// A watched unit that should stay up went inactive without failing and with no job
    /// queued for it: stopped by hand, or its main process exited 0.
    Stopped {
        /// The unit's name.
        unit: String,
    },
    /// A unit of the role's closure became active (or activating).
    Started {
        /// The unit's name.
        unit: String,
    },
    /// Whether none of the passive target's units is failed.
    PassiveUnits {
        /// True when none is `failed`.
        ok: bool,
    },
}

/// What a followed unit is to its group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    /// In the closure of the active target: its starts are reported.
    pub role: bool,
    /// Its failures count against the role.
    pub watched: bool,
    /// Watched, and expected to stay up while the role runs.
    pub steady: bool,
    /// A unit of the passive target.
    pub passive: bool,
}

/// The units a group follows, with what each is to it.
pub type Followed = BTreeMap<String, Interest>;

/// What one unit did, as its follower saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Failed,
    Restarted,
    /// Its new `ActiveState`; for `inactive`, whether a job is queued for it (a restart).
    State {
        state: String,
        job_queued: bool,
    },
}

/// Follow every unit of `units`; events go to `tx` tagged with the group's `id`. Runs until `tx` is
/// closed or the future is dropped, which ends every subscription with it.
pub async fn watch_group(
    systemd: &Systemd,
    id: GroupId,
    units: &Followed,
    tx: mpsc::UnboundedSender<(GroupId, WatchEvent)>,
) {
    let names: Vec<String> = units.keys().cloned().collect();
    let (followers, mut rx) = follow_all(systemd, &names);
    let forward = async move {
        let mut last: BTreeMap<String, String> = BTreeMap::new();
        let mut failed_passive: BTreeSet<String> = BTreeSet::new();
        let mut reported_passive: Option<bool> = None;
        while let Some((unit, change)) = rx.recv().await {
            let Some(interest) = units.get(&unit).copied() else {
                continue;
            };
            let mut events = Vec::new();
            match change {
                Change::Failed if interest.watched => events.push(WatchEvent::Failed {
                    unit: unit.clone(),
                    restarted: false,
                }),
                Change::Restarted if interest.watched => events.push(WatchEvent::Failed {
                    unit: unit.clone(),
                    restarted: true,
                }),
                Change::State { state, job_queued } => {
                    let before = last.insert(unit.clone(), state.clone());
                    let was_up = before
                        .as_deref()
                        .is_some_and(|s| is_up(s) || s == "deactivating");
                    if interest.role && is_up(&state) && !before.as_deref().is_some_and(is_up) {
                        events.push(WatchEvent::Started { unit: unit.clone() });
                    }
                    // From failed to inactive is a reset, not a stop; a restart queues a job.
                    if interest.steady && state == "inactive" && was_up && !job_queued {
                        events.push(WatchEvent::Stopped { unit: unit.clone() });
                    }
                    if interest.passive {
                        if state == "failed" {
                            failed_passive.insert(unit.clone());
                        } else {
                            failed_passive.remove(&unit);
                        }
                        let ok = failed_passive.is_empty();
                        if reported_passive != Some(ok) {
                            reported_passive = Some(ok);
                            events.push(WatchEvent::PassiveUnits { ok });
                        }
                    }
                }
                _ => {}
            }
            for event in events {
                if tx.send((id, event)).is_err() {
                    return;
                }
            }
        }
    };
    tokio::join!(followers, forward);
}

/// Follow every unit: the future runs the followers, the receiver gets each unit's changes
/// (and closes once every follower has ended).
fn follow_all<'a>(
    systemd: &'a Systemd,
    units: &'a [String],
) -> (
    impl Future<Output = Vec<()>> + Send + 'a,
    mpsc::UnboundedReceiver<(String, Change)>,
) {
    let (changes, rx) = mpsc::unbounded_channel();
    let followers = join_all(units.iter().map(|u| follow(systemd, u, changes.clone())));
    (followers, rx)
}

/// Report a unit's failures and states until the receiver is gone.
async fn follow(systemd: &Systemd, unit: &str, tx: mpsc::UnboundedSender<(String, Change)>) {
    let tx = Tagged { unit, tx };
    if let Err(e) = follow_inner(systemd, unit, &tx).await {
        tracing::error!("cannot follow {unit}: {e}");
    }
}

async fn follow_inner(systemd: &Systemd, unit: &str, tx: &Tagged<'_>) -> zbus::Result<()> {
    let path = systemd.manager().load_unit(unit.to_string()).await?;
    let conn = systemd.connection();
    let unit_proxy = UnitProxy::builder(conn).path(path.clone()).build().await?;
    // Read uncached: the Job property must be what systemd says now, not what a signal said.
    let fresh = UnitProxy::builder(conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    // Subscribe before reading the current values, so no change falls in between.
    let mut states = unit_proxy.receive_active_state_changed().await;
    let service = if unit.ends_with(".service") {
        Some(ServiceProxy::builder(conn).path(path).build().await?)
    } else {
        None
    };
    let mut restarts = match &service {
        Some(s) => Some(s.receive_n_restarts_changed().await),
        None => None,
    };
    let mut last_restarts = match &service {
        Some(s) => s.n_restarts().await.unwrap_or(0),
        None => 0,
    };
    let mut last_state = unit_proxy.active_state().await?;
    let initial = Change::State {
        state: last_state.clone(),
        job_queued: false,
    };
    if tx.send(initial).is_err() {
        return Ok(());
    }
    // A unit with Restart= passes through `failed` on its way to an automatic restart, which
    // NRestarts reports: `failed` counts only if no restart follows within RestartSec.
    let mut failed_check: Option<tokio::time::Instant> = None;
    loop {
        let failed_due = async {
            match failed_check {
                Some(at) => tokio::time::sleep_until(at).await,
                None => std::future::pending().await,
            }
        };
        let next_restart = async {
            match &mut restarts {
                Some(r) => r.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            change = states.next() => {
                let Some(change) = change else { return Ok(()) };
                let state = change.get().await?;
                if state == last_state {
                    continue;
                }
                let failed = state == "failed";
                last_state = state.clone();
                // A restart (promd's or `systemctl restart`) passes through inactive with
                // its start job already queued: that is no stop.
                let job_queued = state == "inactive"
                    && fresh.job().await.is_ok_and(|(id, _)| id != 0);
                if tx.send(Change::State { state, job_queued }).is_err() {
                    return Ok(());
                }
                if failed {
                    match restart_delay(&service).await {
                        Some(delay) => failed_check = Some(tokio::time::Instant::now() + delay),
                        None => {
                            if tx.send(Change::Failed).is_err() {
                                return Ok(());
                            }
                        }
                    }
                } else {
                    failed_check = None; // left `failed`: restarted (NRestarts tells) or reset
                }
            }
            () = failed_due => {
                failed_check = None;
                if last_state == "failed" && tx.send(Change::Failed).is_err() {
                    return Ok(());
                }
            }
            change = next_restart => {
                let Some(change) = change else { return Ok(()) };
                let n = change.get().await?;
                // The counter restarts from 0 when the unit is started by hand or by promd.
                let grew = n > last_restarts;
                last_restarts = n;
                if grew && tx.send(Change::Restarted).is_err() {
                    return Ok(());
                }
            }
        }
    }
}

/// A sender that tags each change with its unit.
struct Tagged<'a> {
    unit: &'a str,
    tx: mpsc::UnboundedSender<(String, Change)>,
}

impl Tagged<'_> {
    fn send(&self, change: Change) -> Result<(), ()> {
        self.tx.send((self.unit.to_owned(), change)).map_err(drop)
    }
}

/// How long to wait for systemd's own restart of a failed unit: `None` if it has no `Restart=`.
async fn restart_delay(service: &Option<ServiceProxy<'_>>) -> Option<std::time::Duration> {
    let service = service.as_ref()?;
    let policy = service.restart().await.ok()?;
    if policy == "no" {
        return None;
    }
    let usec = service.restart_u_sec().await.unwrap_or(100_000);
    Some(std::time::Duration::from_micros(usec) + std::time::Duration::from_secs(1))
}
