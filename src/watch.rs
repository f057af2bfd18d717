//! Follows units through systemd's property-change signals (no polling): failures of the
//! units an active host runs, and failed units of the passive target.

use std::collections::BTreeSet;

use futures_util::StreamExt;
use futures_util::future::join_all;
use tokio::sync::mpsc;
use zbus_systemd::systemd1::{ServiceProxy, UnitProxy};

use crate::systemd::Systemd;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// The unit entered `failed` (`restarted: false`), or systemd restarted it (`NRestarts`
    /// grew: `Restart=` and watchdog restarts).
    Failed { unit: String, restarted: bool },
    /// Whether none of the passive target's units is failed.
    PassiveUnits { ok: bool },
}

/// What one unit did, as its watcher saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Change {
    Failed,
    Restarted,
    /// Its `ActiveState`, for the passive side.
    State(String),
}

/// Follow each unit for failures; events go to `tx` tagged with `index`. Runs until `tx`
/// is closed or the future is dropped, which ends every subscription with it.
pub async fn watch_active(
    systemd: &Systemd,
    index: usize,
    units: &[String],
    tx: mpsc::UnboundedSender<(usize, WatchEvent)>,
) {
    let (followers, mut rx) = follow_all(systemd, units);
    let forward = async move {
        while let Some((unit, change)) = rx.recv().await {
            let restarted = match change {
                Change::Failed => false,
                Change::Restarted => true,
                Change::State(_) => continue,
            };
            if tx
                .send((index, WatchEvent::Failed { unit, restarted }))
                .is_err()
            {
                return;
            }
        }
    };
    tokio::join!(followers, forward);
}

/// Follow the passive target's units; report whether any of them is failed, on each change.
/// Runs until `tx` is closed or the future is dropped.
pub async fn watch_passive(
    systemd: &Systemd,
    index: usize,
    units: &[String],
    tx: mpsc::UnboundedSender<(usize, WatchEvent)>,
) {
    let (followers, mut rx) = follow_all(systemd, units);
    let report = async move {
        let mut failed: BTreeSet<String> = BTreeSet::new();
        let mut reported: Option<bool> = None;
        while let Some((unit, change)) = rx.recv().await {
            match change {
                Change::State(s) if s == "failed" => failed.insert(unit),
                Change::State(_) => failed.remove(&unit),
                _ => continue,
            };
            let ok = failed.is_empty();
            if reported != Some(ok) {
                reported = Some(ok);
                if tx.send((index, WatchEvent::PassiveUnits { ok })).is_err() {
                    return;
                }
            }
        }
    };
    tokio::join!(followers, report);
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
    if tx.send(Change::State(last_state.clone())).is_err() {
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
                if tx.send(Change::State(state)).is_err() {
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
