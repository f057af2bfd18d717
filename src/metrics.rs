//! What promd counts for `GET /metrics` (the exposition is [`crate::http::metrics`]).
//!
//! The agent owns a [`Metrics`] and counts where the events already pass: its machines'
//! actions (promotions, demotions, fences, kills, restarts in place), the driver events it
//! turns into machine events (leader changes, unit failures, health results, renewals), the
//! D-Bus answers, and the store's connectivity after each input. Nothing is counted inside
//! [`crate::core`], which stays pure and model-checked.
//!
//! Cost: each group's metrics are created once, when the group opens, and its handle kept in
//! the agent's group table, so counting an event is an atomic add (a histogram observation a
//! few), with no lookup and no lock. The table of groups by name is behind a mutex taken only
//! when a group opens or goes for good, and by a scrape for as long as it takes to copy its
//! `Arc`s. Values that depend on "now" (time since the last renewal, the fence headroom) are
//! kept as monotonic instants and computed at scrape time on the HTTP thread.
//!
//! Role and term are not counted here: a scrape reads them from the snapshot the HTTP
//! endpoint already serves, so they always agree with `/v1/status` and D-Bus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;

use crate::core::Mono;

/// An instant kept in an [`AtomicU64`]: µs since the origin; this value means none.
const NONE: u64 = u64::MAX;

/// Buckets of the health check's duration, in seconds (a check is killed at its
/// `health-timeout`, 1 s by default).
pub const HEALTH_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// Buckets of a lease renewal's round trip, in seconds: a healthy etcd answers within a few
/// ms; promd fences at 1/4..1/2 of the lease without an answer.
pub const RENEWAL_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// promd's metrics, shared by the agent (which counts) and the HTTP thread (which renders).
/// Cloning is an `Arc` clone.
#[derive(Debug, Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// The instant [`Mono`] counts from (the agent's origin).
    origin: Instant,
    /// Every open group's metrics, by group name.
    groups: Mutex<BTreeMap<String, Arc<GroupMetrics>>>,
    agent: AgentMetrics,
}

/// The metrics of promd as a whole.
#[derive(Debug, Default)]
pub struct AgentMetrics {
    /// The store became reachable again after an outage (not the first connection).
    pub store_reconnects: Counter,
    /// D-Bus method calls answered, by `(method, result)`: `Promote`, `Demote`,
    /// `SetMaintenance`, `ResetFailed`; `ok` or the error's name (`NotEligible`, ...).
    pub dbus_calls: Family<[(&'static str, &'static str); 2], Counter>,
}

/// One group's counters, histograms and instants.
#[derive(Debug)]
pub struct GroupMetrics {
    /// A different leader (a new term of the leader key) seen.
    pub leader_changes: Counter,
    /// This host became `active`.
    pub promotions: Counter,
    /// This host left `active` (for whatever reason, fences included).
    pub demotions: Counter,
    /// This host demoted itself because its lease could not be renewed in time.
    pub fences: Counter,
    /// The role's units were SIGKILLed (a stop that did not finish in time, or what an
    /// earlier run left at start-up).
    pub kills: Counter,
    /// A watched unit failed (or stopped on its own) while this host was active.
    pub unit_failures: Counter,
    /// Failed units restarted in place by promd.
    pub unit_restarts: Counter,
    /// Health checks that passed.
    pub health_ok: Counter,
    /// Health checks that failed (non-zero exit, timeout, cannot run).
    pub health_failed: Counter,
    /// How long each health check ran, seconds.
    pub health_seconds: Histogram,
    /// From sending a lease renewal to the loop handling its acknowledgement, seconds.
    pub renewal_seconds: Histogram,
    /// Send time of the latest acknowledged renewal (µs since the origin, or [`NONE`]).
    last_renewal_us: AtomicU64,
    /// When the fence would fire (µs since the origin, or [`NONE`]: not armed).
    fence_at_us: AtomicU64,
    /// The term of the last leader seen ([`NONE`]: none yet).
    leader_term: AtomicU64,
}

impl Default for GroupMetrics {
    fn default() -> GroupMetrics {
        GroupMetrics {
            leader_changes: Counter::default(),
            promotions: Counter::default(),
            demotions: Counter::default(),
            fences: Counter::default(),
            kills: Counter::default(),
            unit_failures: Counter::default(),
            unit_restarts: Counter::default(),
            health_ok: Counter::default(),
            health_failed: Counter::default(),
            health_seconds: Histogram::new(HEALTH_BUCKETS),
            renewal_seconds: Histogram::new(RENEWAL_BUCKETS),
            last_renewal_us: AtomicU64::new(NONE),
            fence_at_us: AtomicU64::new(NONE),
            leader_term: AtomicU64::new(NONE),
        }
    }
}

fn us(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(NONE - 1)
}

impl GroupMetrics {
    /// A renewal sent at `sent` (agent's clock) was acknowledged, handled at `now`.
    pub fn renewed(&self, sent: Mono, now: Mono) {
        let sent_us = us(sent.0);
        // Answers may arrive out of order: keep the latest send time. The agent is the only
        // writer, so a load and a store do.
        let last = self.last_renewal_us.load(Ordering::Relaxed);
        if last == NONE || sent_us > last {
            self.last_renewal_us.store(sent_us, Ordering::Relaxed);
        }
        self.renewal_seconds
            .observe(now.0.saturating_sub(sent.0).as_secs_f64());
    }

    /// The fence's deadline as the machine has it after a step (`None`: not armed).
    pub fn set_fence_at(&self, at: Option<Mono>) {
        self.fence_at_us
            .store(at.map_or(NONE, |m| us(m.0)), Ordering::Relaxed);
    }

    /// The leader key is held under `term`: a change if another term was seen before.
    pub fn leader_seen(&self, term: u64) {
        let old = self.leader_term.swap(term, Ordering::Relaxed);
        if old != NONE && old != term {
            self.leader_changes.inc();
        }
    }

    /// A health check's result.
    pub fn health(&self, ok: bool, took: Duration) {
        if ok {
            self.health_ok.inc();
        } else {
            self.health_failed.inc();
        }
        self.health_seconds.observe(took.as_secs_f64());
    }

    /// Seconds since the latest acknowledged renewal was sent, at `now` (`None`: none yet).
    pub fn renewal_age(&self, now: Duration) -> Option<f64> {
        let sent = self.last_renewal_us.load(Ordering::Relaxed);
        (sent != NONE).then(|| {
            now.saturating_sub(Duration::from_micros(sent))
                .as_secs_f64()
        })
    }

    /// Seconds left before the fence would fire, at `now` (0 once due; `None`: not armed,
    /// i.e. no units run under this host's lease).
    pub fn fence_headroom(&self, now: Duration) -> Option<f64> {
        let at = self.fence_at_us.load(Ordering::Relaxed);
        (at != NONE).then(|| Duration::from_micros(at).saturating_sub(now).as_secs_f64())
    }
}

impl Metrics {
    /// Empty metrics whose instants count from `origin` (the agent's [`Mono`] origin).
    pub fn new(origin: Instant) -> Metrics {
        Metrics {
            inner: Arc::new(Inner {
                origin,
                groups: Mutex::new(BTreeMap::new()),
                agent: AgentMetrics::default(),
            }),
        }
    }

    fn groups(&self) -> MutexGuard<'_, BTreeMap<String, Arc<GroupMetrics>>> {
        crate::sync::lock(&self.inner.groups)
    }

    /// The metrics of group `name`, made if it has none: a group that a reload replaces keeps
    /// counting where its previous version stopped.
    pub fn group(&self, name: &str) -> Arc<GroupMetrics> {
        self.groups()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(GroupMetrics::default()))
            .clone()
    }

    /// Group `name` is gone for good: its series leave the exposition.
    pub fn remove_group(&self, name: &str) {
        self.groups().remove(name);
    }

    /// Every group's metrics, by name (a copy of the `Arc`s).
    pub fn all_groups(&self) -> Vec<(String, Arc<GroupMetrics>)> {
        self.groups()
            .iter()
            .map(|(n, m)| (n.clone(), m.clone()))
            .collect()
    }

    /// promd's own metrics.
    pub fn agent(&self) -> &AgentMetrics {
        &self.inner.agent
    }

    /// Now on the agent's monotonic clock (time since the origin).
    pub fn now(&self) -> Duration {
        self.inner.origin.elapsed()
    }
}
