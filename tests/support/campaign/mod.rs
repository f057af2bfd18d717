//! The fault campaign: three nspawn hosts running promd (etcd store, lease 2s) and a zoo of
//! units under `web-active.target` ([`zoo_units`]: a nested target, a service pulled in by a
//! service, a forking service with a TERM-ignoring child, a draining `ExecStop=`, a
//! socket-activated service, a tmpfs mount, a `RefuseManualStop=yes` unit, a `Wants=` on a
//! missing unit), a 3-member etcd, and a seeded random schedule of faults ([`Kind`]).
//!
//! Each fault starts from a settled cluster (the whole zoo up on one active host, the other
//! two passive and eligible with nothing of the zoo running, every promd running), after a
//! random gap so that it lands at a random phase of the renewal cycle. It is injected, lasts
//! its random duration, and heals; then
//! - every unit of the zoo expected up must run on one and the same host, and on no other,
//!   within the fault's bound, counted from the heal (each bound is stated with its reason in
//!   [`Kind::bound`]);
//! - on the other hosts no process may be left in any zoo unit's cgroup, and the tmpfs must
//!   not be mounted;
//! - no span of any zoo service on one host may overlap a span of any zoo service on another
//!   host, and the term must grow on every hand-over ([`check_zoo`], after every fault and at
//!   the end).
//!
//! The schedule depends on the seed only (fault kinds, which role is hit, durations, delays,
//! gaps), not on what happened before, so `PROMD_CAMPAIGN_SEED=S PROMD_CAMPAIGN_FAULTS=N`
//! replays the first N faults of seed S. Which host is "the active one" is decided at run time.
//!
//! Two figures per fault, from the span logs (one clock for every host):
//! - **recovery**: from the heal until the last zoo service started on the host found active
//!   afterwards (0 if the whole zoo was already running there) — the figure the bound applies to;
//! - **downtime**: how long, between the fault's start and that moment, no host ran
//!   `web.service` at all.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::sys::signal::kill;
use nix::unistd::Pid;

use super::cluster::{Cluster, StoreKind, assert_terms_grow};
use super::etcd::EtcdCluster;
use super::hosts::{self, Host, HostSpec, Net, Signal, Span};

/// The group's lease in the campaign.
pub const LEASE: Duration = Duration::from_secs(2);
/// Escalation settings: a crash loop fails over after the third failure, and the failed host
/// is ineligible for 5 s only, so escalations do not starve the cluster of standbys.
pub const GROUP_EXTRA: &str =
    "max-restarts = 2\nrestart-backoff = \"300ms\"\nfailure-cooldown = \"5s\"\n";
/// How long the cluster may take to settle after a fault (promd back, the failed host's
/// cooldown over, every passive host passive again) before the next one. Not a bound of the
/// issue's; a cluster that never settles is a finding all the same.
pub(super) const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// promd's configuration on every host.
const CONFIG: &str = "/etc/promd/promd.toml";
/// The leader key of the group's slot `k` in etcd (promd's default prefix `/promd`; slot 0
/// is the group's own key, slot k > 0 is `GROUP@k`'s: docs/slots.md).
pub(super) fn leader_key(slot: Option<u32>) -> String {
    match slot {
        None | Some(0) => "/promd/web/leader".into(),
        Some(k) => format!("/promd/web@{k}/leader"),
    }
}
/// How soon after `etcdctl del` of its key the holder must have every zoo service down: the
/// watch reports the delete within milliseconds and a key gone means SIGKILL in the same step
/// (docs/safety.md), not a stop that waits for the drain; so well under DRAIN (3 s), and with
/// a second of slack for a loaded machine.
pub(super) const DELKEY_DOWN: Duration = Duration::from_millis(1500);
/// The longest random gap between a settled cluster and the next fault.
pub(super) const MAX_GAP: Duration = Duration::from_millis(1500);

mod config;
mod engine;
mod faults;
pub mod report;
mod schedule;
mod zoo;

pub use config::Config;
use engine::*;
pub use report::{Outcome, Report};
// `Rng` is for the tests that draw a schedule of their own (system_slots).
#[allow(unused_imports)]
pub use schedule::{Kind, Plan, Rng, Schedule};
use zoo::*;
pub use zoo::{
    DRAIN, HEALTH_EXTRA, Outlived, ZOO_SERVICES, ZOO_UP, check_zoo, zoo_timeline, zoo_units,
};

/// Runs the campaign of `cfg`, seed after seed (a fresh cluster for each); panics at the first
/// failure, after printing the seed, the fault log, the command that replays it, and where the
/// journals went.
pub fn run(cfg: &Config) -> Report {
    let started = Instant::now();
    let mut report = Report {
        outcomes: Vec::new(),
        spans: 0,
        outlived: Outlived::default(),
        seeds: cfg.seeds.clone(),
        elapsed: Duration::ZERO,
        actives: cfg.actives,
    };
    for (i, &seed) in cfg.seeds.iter().enumerate() {
        let faults = cfg.faults_of(i);
        if faults == 0 {
            continue;
        }
        let (outcomes, spans, outlived) = run_seed(seed, faults, &cfg.kinds, cfg.actives, &report);
        report.outcomes.extend(outcomes);
        report.spans += spans;
        report.outlived.stops += outlived.stops;
        report.outlived.of += outlived.of;
        report.outlived.longest = report.outlived.longest.max(outlived.longest);
        report.outlived.lost += outlived.lost;
    }
    report.elapsed = started.elapsed();
    report
}

pub(super) fn run_seed(
    seed: u64,
    faults: usize,
    kinds: &[Kind],
    actives: usize,
    so_far: &Report,
) -> (Vec<Outcome>, usize, Outlived) {
    let t0 = Instant::now();
    eprintln!("== campaign seed {seed}: {faults} faults, lease {LEASE:?}, actives = {actives} ==");
    // A group of one active host is configured as today's (no `actives` key at all).
    let slots = if actives > 1 {
        format!("actives = {actives}\n")
    } else {
        String::new()
    };
    let net = Net::new(3);
    let mut etcd = EtcdCluster::start(3, &net.gateway_ips());
    let cluster = Cluster::boot_with(
        &net,
        StoreKind::Etcd(&etcd),
        LEASE,
        &format!("{GROUP_EXTRA}{HEALTH_EXTRA}{slots}"),
        |_, spec| zoo_units(spec),
    );
    let mut engine = Engine {
        seed,
        c: &cluster,
        etcd: &mut etcd,
        start: Instant::now(),
        log: Vec::new(),
        outcomes: Vec::new(),
        last_seen: String::new(),
        kinds: kinds.to_vec(),
        current: 0,
        actives,
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let a = engine.settle();
        for active in a {
            engine.check_claims(active.host);
        }
        let mut schedule = Schedule::new(seed, kinds);
        for index in 0..faults {
            let plan = schedule.next_plan();
            engine.fault(index, &plan);
        }
        check_zoo(&cluster)
    }));
    match result {
        Ok((spans, outlived)) => {
            eprintln!(
                "== seed {seed}: {faults} faults passed in {:.0} s; {spans} spans, none overlapping; \
                 web-fork's TERM-ignoring child outlived ExecStopPost= in {} of {} stops (by up to {} ms); \
                 {} stop lines lost to a kill, closed where systemd says the unit went inactive ==",
                t0.elapsed().as_secs_f64(),
                outlived.stops,
                outlived.of,
                outlived.longest.as_millis(),
                outlived.lost
            );
            (engine.outcomes, spans, outlived)
        }
        Err(panic) => {
            engine.report_failure(faults, so_far);
            resume_unwind(panic)
        }
    }
}
