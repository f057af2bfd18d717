//! `GET /metrics`: promd's [`Metrics`] and the [`Snapshot`]'s roles and terms in the
//! Prometheus text format (0.0.4), or OpenMetrics 1.0 when the scraper asks for it
//! (`Accept: application/openmetrics-text`, as Prometheus itself does).
//!
//! Rendered on the HTTP thread, per scrape, by one [`Collector`] over the metrics (atomics,
//! read without a lock but the brief one that copies the groups' `Arc`s) and the snapshot
//! (immutable): the event loop never waits for a scrape. A group's series come and go with
//! the group: role and term with the snapshot, the rest when a reload removes the group for
//! good ([`Metrics::remove_group`]). The series, their types, labels and units are listed
//! in the README ("Metrics").

use std::sync::Arc;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::Snapshot;
use crate::core::Role;
use crate::metrics::{GroupMetrics, Metrics};

/// `Content-Type` of the Prometheus text format 0.0.4 (the default answer).
pub const PROMETHEUS_TEXT: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// `Content-Type` of OpenMetrics 1.0 text (answered when the `Accept` header names it).
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Every role a group can report, for the state-set `promd_group_role`.
pub const ROLES: [Role; 7] = [
    Role::Starting,
    Role::Passive,
    Role::Promoting,
    Role::Active,
    Role::Demoting,
    Role::Failed,
    Role::Maintenance,
];

/// Whether an `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The exposition of `metrics` and `snapshot` and its `Content-Type`: OpenMetrics text if
/// `openmetrics`, else the Prometheus text format 0.0.4. Errors never happen in practice
/// (the encoders only fail on a failing writer, and a `String` does not fail); one would be
/// answered as a short comment line rather than a partial document.
pub fn render(
    metrics: &Metrics,
    snapshot: Arc<Snapshot>,
    openmetrics: bool,
) -> (String, &'static str) {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Scrape {
        metrics: metrics.clone(),
        snapshot,
    }));
    let mut text = String::new();
    let (result, content_type) = if openmetrics {
        (
            prometheus_client::encoding::text::encode(&mut text, &registry),
            OPENMETRICS,
        )
    } else {
        (
            prometheus_client::encoding::prometheus_text::encode(&mut text, &registry),
            PROMETHEUS_TEXT,
        )
    };
    if result.is_err() {
        text = "# promd: the metrics could not be encoded\n".into();
    }
    (text, content_type)
}

/// Which of a group's counters a family shows.
type CounterOf = fn(&GroupMetrics) -> &Counter;

/// One scrape's view: the metrics and the snapshot of that moment.
#[derive(Debug)]
struct Scrape {
    metrics: Metrics,
    snapshot: Arc<Snapshot>,
}

/// `[("group", name)]`, the label set of a group's series.
fn group(name: &str) -> [(&'static str, &str); 1] {
    [("group", name)]
}

impl Scrape {
    /// A counter family with one series per group.
    fn group_counters(
        &self,
        encoder: &mut DescriptorEncoder,
        groups: &[(String, Arc<GroupMetrics>)],
        name: &str,
        help: &str,
        counter: CounterOf,
    ) -> Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
        for (g, m) in groups {
            let labels = group(g);
            counter(m).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// A gauge family in seconds, one series per group that has a value.
    fn group_seconds(
        &self,
        encoder: &mut DescriptorEncoder,
        groups: &[(String, Arc<GroupMetrics>)],
        name: &str,
        help: &str,
        value: impl Fn(&GroupMetrics) -> Option<f64>,
    ) -> Result<(), std::fmt::Error> {
        let mut family =
            encoder.encode_descriptor(name, help, Some(&Unit::Seconds), MetricType::Gauge)?;
        for (g, m) in groups {
            if let Some(v) = value(m) {
                let labels = group(g);
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}

impl prometheus_client::collector::Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = &self.snapshot;
        let served: Vec<_> = s.groups.iter().filter(|v| !v.retired).collect();
        let agent = self.metrics.agent();

        // promd as a whole.
        {
            let mut f = encoder.encode_descriptor(
                "promd_build_info",
                "promd's version (always 1).",
                None,
                MetricType::Gauge,
            )?;
            let labels = [("version", env!("CARGO_PKG_VERSION"))];
            ConstGauge::new(1i64).encode(f.encode_family(&labels)?)?;
        }
        {
            let f = encoder.encode_descriptor(
                "promd_store_connected",
                "1 while every group's store session is up (D-Bus StoreConnected), else 0.",
                None,
                MetricType::Gauge,
            )?;
            ConstGauge::new(i64::from(s.store_connected)).encode(f)?;
        }
        {
            let f = encoder.encode_descriptor(
                "promd_store_reconnects",
                "Times the store became reachable again after an outage.",
                None,
                MetricType::Counter,
            )?;
            agent.store_reconnects.encode(f)?;
        }
        {
            let f = encoder.encode_descriptor(
                "promd_journal_lines_dropped",
                "Log lines dropped because journald did not take them within 500 ms.",
                None,
                MetricType::Counter,
            )?;
            ConstCounter::new(crate::logging::dropped_lines()).encode(f)?;
        }
        {
            let f = encoder.encode_descriptor(
                "promd_dbus_calls",
                "D-Bus method calls answered, by method and result (ok or the error's name).",
                None,
                MetricType::Counter,
            )?;
            agent.dbus_calls.encode(f)?;
        }

        // Role and term: from the snapshot, as /v1/status and D-Bus say them.
        {
            let mut f = encoder.encode_descriptor(
                "promd_group_role",
                "1 for the group's current role on this host, 0 for the others.",
                None,
                MetricType::Gauge,
            )?;
            for v in &served {
                for role in ROLES {
                    let labels = [("group", v.name.as_str()), ("role", role.as_str())];
                    ConstGauge::new(i64::from(v.role == role.as_str()))
                        .encode(f.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut f = encoder.encode_descriptor(
                "promd_group_term",
                "The group's term as this host knows it (PROMD_TERM on the active host).",
                None,
                MetricType::Gauge,
            )?;
            for v in &served {
                let labels = group(&v.name);
                let term = i64::try_from(v.term).unwrap_or(i64::MAX);
                ConstGauge::new(term).encode(f.encode_family(&labels)?)?;
            }
        }

        // Counted by the agent.
        let groups = self.metrics.all_groups();
        let counters: [(&str, &str, CounterOf); 7] = [
            (
                "promd_group_leader_changes",
                "Times another term of the leader key was seen.",
                |m| &m.leader_changes,
            ),
            (
                "promd_group_promotions",
                "Times this host became active.",
                |m| &m.promotions,
            ),
            (
                "promd_group_demotions",
                "Times this host left the active role (fences included).",
                |m| &m.demotions,
            ),
            (
                "promd_group_fences",
                "Times this host demoted itself because its lease could not be renewed in time.",
                |m| &m.fences,
            ),
            (
                "promd_group_kills",
                "Times the role's units were SIGKILLed (a stop too slow, or leftovers at start).",
                |m| &m.kills,
            ),
            (
                "promd_group_unit_failures",
                "Watched units that failed or stopped on their own while this host was active.",
                |m| &m.unit_failures,
            ),
            (
                "promd_group_unit_restarts",
                "Failed units promd restarted in place.",
                |m| &m.unit_restarts,
            ),
        ];
        for (name, help, counter) in counters {
            self.group_counters(&mut encoder, &groups, name, help, counter)?;
        }
        {
            let mut f = encoder.encode_descriptor(
                "promd_group_health_checks",
                "Health command runs, by result (ok, failed).",
                None,
                MetricType::Counter,
            )?;
            for (g, m) in &groups {
                for (result, c) in [("ok", &m.health_ok), ("failed", &m.health_failed)] {
                    let labels = [("group", g.as_str()), ("result", result)];
                    c.encode(f.encode_family(&labels)?)?;
                }
            }
        }
        {
            let mut f = encoder.encode_descriptor(
                "promd_group_health_check_duration",
                "How long the health command ran.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (g, m) in &groups {
                let labels = group(g);
                m.health_seconds.encode(f.encode_family(&labels)?)?;
            }
        }
        {
            let mut f = encoder.encode_descriptor(
                "promd_group_lease_renewal_duration",
                "From sending a lease renewal to handling the store's acknowledgement.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?;
            for (g, m) in &groups {
                let labels = group(g);
                m.renewal_seconds.encode(f.encode_family(&labels)?)?;
            }
        }
        let now = self.metrics.now();
        self.group_seconds(
            &mut encoder,
            &groups,
            "promd_group_lease_renewal_age",
            "Time since the last acknowledged lease renewal was sent (absent before the first).",
            |m| m.renewal_age(now),
        )?;
        self.group_seconds(
            &mut encoder,
            &groups,
            "promd_group_fence_headroom",
            "Time left before the fence would fire; only while units run under this host's lease.",
            |m| m.fence_headroom(now),
        )?;
        Ok(())
    }
}
