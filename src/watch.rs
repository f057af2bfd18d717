//! Follows a group's units through systemd's property-change signals (no polling).
//!
//! One follower per unit reports its `ActiveState` changes and its restarts; it gets them from
//! the bus connection's one [`UnitSignals`] hub, so that a followed unit costs the bus no match
//! rule and no call while nothing changes. The group's forwarder turns them into
//! [`WatchEvent`]s by what the unit is to the group:
//! - a *watched* unit that fails, is restarted by systemd, or — if it should stay up — goes
//!   inactive without a job of systemd's in flight (exit 0, `systemctl stop` by hand) is a
//!   failure of the role;
//! - a unit of the role's *closure* that becomes active is reported, so that a host that does
//!   not hold the role stops it, whoever started it;
//! - the *passive* target's units report whether any of them is failed.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::sync::mpsc;
use zbus::{OwnedObjectPath, OwnedVariant};

use crate::agent::GroupId;
use crate::systemd::signals::{Changed, SERVICE_INTERFACE, UNIT_INTERFACE, UnitSignals};
use crate::systemd::{Systemd, SystemdError, is_up};

/// The first wait before following a unit is tried again; it doubles up to [`FOLLOW_RETRY_MAX`].
const FOLLOW_RETRY: Duration = Duration::from_secs(1);
/// The longest wait between two tries to follow a unit.
const FOLLOW_RETRY_MAX: Duration = Duration::from_secs(30);

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
    /// Which steady units (watched, expected to stay up) are not up now: in neither `active`
    /// nor `reloading` (so a unit being restarted in place counts as down). Sent once every
    /// steady unit's state is known, then whenever the set changes; sorted.
    SteadyUnits {
        /// The steady units that are down; empty when all are up (or there are none).
        down: Vec<String>,
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
        let mut steady = Steady::new(units.iter().filter(|(_, i)| i.steady).map(|(u, _)| u));
        if let Some(down) = steady.report(&last)
            && tx.send((id, WatchEvent::SteadyUnits { down })).is_err()
        {
            return;
        }
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
                    if interest.steady
                        && let Some(down) = steady.report(&last)
                    {
                        events.push(WatchEvent::SteadyUnits { down });
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

/// Which steady units are down, for [`WatchEvent::SteadyUnits`], from the last state of each
/// unit as the forwarder keeps it: nothing is reported before every steady unit has a state
/// (a group that starts to follow its units must not look down for the moment they take to
/// answer), then only when the set changes.
#[derive(Debug)]
struct Steady {
    /// The group's steady units.
    units: Vec<String>,
    /// What was last reported.
    reported: Option<Vec<String>>,
}

impl Steady {
    fn new<'a>(units: impl Iterator<Item = &'a String>) -> Steady {
        Steady {
            units: units.cloned().collect(),
            reported: None,
        }
    }

    /// The steady units not `active` or `reloading` in `last` (each unit's last state), if
    /// every one has a state and the set is not the one last reported.
    fn report(&mut self, last: &BTreeMap<String, String>) -> Option<Vec<String>> {
        let mut down = Vec::new();
        for unit in &self.units {
            match last.get(unit).map(String::as_str) {
                None => return None,
                Some("active" | "reloading") => {}
                Some(_) => down.push(unit.clone()),
            }
        }
        if self.reported.as_ref() == Some(&down) {
            return None;
        }
        self.reported = Some(down.clone());
        Some(down)
    }
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

/// Report a unit's failures and states until the receiver is gone. Following that cannot
/// start (systemd does not answer, the bus refuses a call) is tried again, less and less often.
async fn follow(systemd: &Systemd, unit: &str, tx: mpsc::UnboundedSender<(String, Change)>) {
    let tx = Tagged { unit, tx };
    let mut wait = FOLLOW_RETRY;
    loop {
        match follow_inner(systemd, unit, &tx).await {
            Ok(()) => return,
            Err(e) => tracing::error!("cannot follow {unit}: {e}; trying again in {wait:?}"),
        }
        tokio::time::sleep(wait).await;
        if tx.tx.is_closed() {
            return;
        }
        wait = (wait * 2).min(FOLLOW_RETRY_MAX);
    }
}

/// Follow one unit through the connection's [`UnitSignals`] hub: no match rule and no call of
/// its own while nothing changes. Errors only while starting (nothing was reported yet);
/// returns `Ok` when the receiver is gone or the signals end.
async fn follow_inner(systemd: &Systemd, unit: &str, tx: &Tagged<'_>) -> Result<(), SystemdError> {
    let hub = UnitSignals::of(systemd.connection()).await?;
    let path = hub.load_unit(unit).await?;
    // Subscribe before reading the current values, so no change falls in between; a signal
    // that came in before a read's reply is older than the value read, and is skipped.
    let mut signals = hub.subscribe(&path);
    let (state, mut unit_read) = hub
        .property::<String>(&path, UNIT_INTERFACE, "ActiveState")
        .await?;
    let service = unit.ends_with(".service");
    let (mut last_restarts, service_read) = if service {
        // As ever, a count that cannot be read starts from 0.
        hub.property::<u32>(&path, SERVICE_INTERFACE, "NRestarts")
            .await
            .unwrap_or((0, unit_read))
    } else {
        (0, unit_read)
    };
    let mut states = States::new(state.clone());
    let initial = Change::State {
        state,
        job_queued: false,
    };
    if tx.send(initial).is_err() {
        return Ok(());
    }
    // A unit with Restart= passes through `failed` on its way to an automatic restart, which
    // NRestarts reports: `failed` counts only if no restart follows within RestartSec.
    let mut failed_check: Option<tokio::time::Instant> = None;
    // An `inactive` held for its job (see [`States`]) that no signal settled yet.
    let mut held_check: Option<tokio::time::Instant> = None;
    loop {
        let failed_due = due(failed_check);
        let held_due = due(held_check);
        let was_held = states.held();
        let changes = tokio::select! {
            signal = signals.recv() => {
                let Some(signal) = signal else {
                    tracing::warn!("{unit} is no longer followed: systemd's signals ended");
                    return Ok(());
                };
                match signal.interface.as_str() {
                    UNIT_INTERFACE if signal.position > unit_read => {
                        let Some(state) =
                            sent_or_read::<String>(&hub, &path, &signal, "ActiveState").await
                        else {
                            continue;
                        };
                        let job = match signal.value::<(u32, OwnedObjectPath)>("Job") {
                            Some((id, _)) => id,
                            None => read_job(&hub, &path).await,
                        };
                        states.next(&state, job)
                    }
                    SERVICE_INTERFACE if signal.position > service_read => {
                        let Some(n) = sent_or_read::<u32>(&hub, &path, &signal, "NRestarts").await
                        else {
                            continue;
                        };
                        // The counter restarts from 0 when the unit is started by hand or by promd.
                        let grew = n > last_restarts;
                        last_restarts = n;
                        if grew { vec![Change::Restarted] } else { continue }
                    }
                    _ => continue,
                }
            }
            () = failed_due => {
                failed_check = None;
                if states.last() == "failed" { vec![Change::Failed] } else { continue }
            }
            () = held_due => {
                // The signal that settles a held `inactive` follows at once; in case it got
                // lost, ask. Signals older than this answer are stale now.
                held_check = None;
                let Ok((state, at)) =
                    hub.property::<String>(&path, UNIT_INTERFACE, "ActiveState").await
                else {
                    continue;
                };
                unit_read = at;
                states.next(&state, read_job(&hub, &path).await)
            }
        };
        // Checked once for a newly held `inactive`; after that, signals alone settle it (a
        // start job may wait long, and asking again would cost calls while nothing changes).
        if !states.held() {
            held_check = None;
        } else if !was_held {
            held_check = Some(tokio::time::Instant::now() + HELD_CHECK);
        }
        for change in changes {
            let failed = matches!(&change, Change::State { state, .. } if state == "failed");
            let left_failed = matches!(&change, Change::State { .. }) && !failed;
            if tx.send(change).is_err() {
                return Ok(());
            }
            if failed {
                match restart_delay(&hub, &path, service).await {
                    Some(delay) => failed_check = Some(tokio::time::Instant::now() + delay),
                    None => {
                        if tx.send(Change::Failed).is_err() {
                            return Ok(());
                        }
                    }
                }
            } else if left_failed {
                failed_check = None; // left `failed`: restarted (NRestarts tells) or reset
            }
        }
    }
}

/// How long a held `inactive` waits for its settling signal before the follower asks.
const HELD_CHECK: Duration = Duration::from_secs(1);

/// Sleeps until `at`; never without one.
async fn due(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The id of the unit's job now (0: none, or it cannot be read).
async fn read_job(hub: &UnitSignals, path: &OwnedObjectPath) -> u32 {
    hub.property::<(u32, OwnedObjectPath)>(path, UNIT_INTERFACE, "Job")
        .await
        .map_or(0, |((id, _), _)| id)
}

/// A unit's `ActiveState` changes, as the follower reports them from what systemd sends: a
/// state and the id of the unit's job (0: none) with it.
///
/// A restart (promd's or `systemctl restart`) passes through `inactive` with its job still
/// queued (it becomes the start): that is no stop. But a stopped unit's `inactive` comes with its
/// stop job too: systemd flushes the unit's pending signal just before it removes a finished
/// job (`bus_job_send_removed_signal`), then signals the unit again without it. So an
/// `inactive` with a job is held until a later signal tells: still `inactive` and no job is a
/// stop (`job_queued: false`); any other state was a restart passing through
/// (`job_queued: true`). A job read after the signal would not do: by then a quick restart may
/// be over, and look like a stop.
#[derive(Debug)]
struct States {
    last: String,
    held: bool,
}

impl States {
    fn new(state: String) -> States {
        States {
            last: state,
            held: false,
        }
    }

    fn last(&self) -> &str {
        &self.last
    }

    /// Whether an `inactive` waits for the signal that tells a stop from a restart.
    fn held(&self) -> bool {
        self.held
    }

    /// The changes to report for `state` and `job` as systemd sent them.
    fn next(&mut self, state: &str, job: u32) -> Vec<Change> {
        let mut changes = Vec::new();
        if self.held {
            if state == "inactive" {
                if job == 0 {
                    self.held = false;
                    changes.push(Change::State {
                        state: state.to_owned(),
                        job_queued: false,
                    });
                }
                return changes;
            }
            self.held = false;
            changes.push(Change::State {
                state: "inactive".into(),
                job_queued: true,
            });
        }
        if state == self.last {
            return changes;
        }
        self.last = state.to_owned();
        if state == "inactive" && job != 0 {
            self.held = true;
            return changes;
        }
        changes.push(Change::State {
            state: state.to_owned(),
            job_queued: false,
        });
        changes
    }
}

/// `name` as the signal sent it, or read once where the signal only says it changed; `None`
/// if the signal is not about it (or the read failed).
async fn sent_or_read<T>(
    hub: &UnitSignals,
    path: &OwnedObjectPath,
    signal: &Changed,
    name: &str,
) -> Option<T>
where
    T: TryFrom<OwnedVariant, Error = zbus::Error>,
{
    if let Some(value) = signal.value(name) {
        return Some(value);
    }
    if !signal.invalidates(name) {
        return None;
    }
    let read = hub.property(path, &signal.interface, name).await;
    read.ok().map(|(value, _)| value)
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
/// Both settings are constant between reloads, so systemd never signals them: read them now.
async fn restart_delay(
    hub: &UnitSignals,
    path: &OwnedObjectPath,
    service: bool,
) -> Option<Duration> {
    if !service {
        return None;
    }
    let (policy, _) = hub
        .property::<String>(path, SERVICE_INTERFACE, "Restart")
        .await
        .ok()?;
    if policy == "no" {
        return None;
    }
    let usec = hub
        .property::<u64>(path, SERVICE_INTERFACE, "RestartUSec")
        .await
        .map_or(100_000, |(usec, _)| usec);
    Some(Duration::from_micros(usec) + Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(state: &str, job_queued: bool) -> Change {
        Change::State {
            state: state.into(),
            job_queued,
        }
    }

    #[test]
    fn a_stop_is_inactive_once_its_job_is_gone() {
        let mut s = States::new("active".into());
        assert_eq!(
            s.next("deactivating", 7),
            vec![state("deactivating", false)]
        );
        // Flushed just before the stop job goes: it still names the job.
        assert_eq!(s.next("inactive", 7), vec![]);
        assert!(s.held());
        assert_eq!(s.next("inactive", 0), vec![state("inactive", false)]);
        assert!(!s.held());
        assert_eq!(s.next("inactive", 0), vec![]);
    }

    #[test]
    fn a_restart_passes_through_inactive_with_its_job_queued() {
        let mut s = States::new("active".into());
        assert_eq!(s.next("inactive", 9), vec![]);
        assert_eq!(
            s.next("activating", 9),
            vec![state("inactive", true), state("activating", false)]
        );
        assert_eq!(s.next("active", 0), vec![state("active", false)]);
        // Straight to failed (its start failed): the restart still passed through.
        let mut s = States::new("active".into());
        s.next("inactive", 9);
        assert_eq!(
            s.next("failed", 0),
            vec![state("inactive", true), state("failed", false)]
        );
    }

    #[test]
    fn inactive_without_a_job_is_reported_at_once() {
        let mut s = States::new("active".into());
        assert_eq!(s.next("inactive", 0), vec![state("inactive", false)]);
        // A reset from failed has no job either.
        let mut s = States::new("failed".into());
        assert_eq!(s.next("inactive", 0), vec![state("inactive", false)]);
        assert_eq!(s.last(), "inactive");
    }

    #[test]
    fn a_held_inactive_waits_while_a_job_is_queued() {
        let mut s = States::new("active".into());
        s.next("inactive", 3);
        // The stop job went and a start job came in the same breath: still no stop.
        assert_eq!(s.next("inactive", 4), vec![]);
        assert!(s.held());
        assert_eq!(
            s.next("active", 0),
            vec![state("inactive", true), state("active", false)]
        );
    }

    #[test]
    fn repeated_states_are_reported_once() {
        let mut s = States::new("active".into());
        assert_eq!(s.next("active", 0), vec![]);
        assert_eq!(s.next("failed", 0), vec![state("failed", false)]);
        assert_eq!(s.next("failed", 0), vec![]);
    }

    #[test]
    fn steady_units_are_reported_once_all_are_known_then_on_change() {
        let units = ["api.service".to_string(), "web.service".to_string()];
        let mut s = Steady::new(units.iter());
        let mut last = BTreeMap::new();
        let mut note = |unit: &str, state: &str| {
            last.insert(unit.to_string(), state.to_string());
            last.clone()
        };
        assert_eq!(s.report(&BTreeMap::new()), None, "nothing known yet");
        let l = note("web.service", "active");
        assert_eq!(s.report(&l), None, "api.service not known yet");
        let l = note("api.service", "activating");
        assert_eq!(s.report(&l), Some(vec!["api.service".to_string()]));
        assert_eq!(s.report(&l), None, "unchanged");
        let l = note("api.service", "active");
        assert_eq!(s.report(&l), Some(vec![]));
        // A restart in place: down while it passes through inactive and activating.
        let l = note("web.service", "deactivating");
        assert_eq!(s.report(&l), Some(vec!["web.service".to_string()]));
        let l = note("web.service", "activating");
        assert_eq!(s.report(&l), None);
        let l = note("web.service", "reloading");
        assert_eq!(s.report(&l), Some(vec![]));
        let l = note("other.service", "failed");
        assert_eq!(s.report(&l), None, "not a steady unit");
    }

    #[test]
    fn a_group_without_steady_units_reports_all_up_at_once() {
        let mut s = Steady::new(std::iter::empty());
        assert_eq!(s.report(&BTreeMap::new()), Some(vec![]));
        assert_eq!(s.report(&BTreeMap::new()), None);
    }
}
