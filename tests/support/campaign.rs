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

use super::cluster::{Cluster, StoreKind};
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
const SETTLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The group's leader key in etcd (promd's default prefix `/promd`).
const LEADER_KEY: &str = "/promd/web/leader";
/// How soon after `etcdctl del` of its key the holder must have every zoo service down: the
/// watch reports the delete within milliseconds and a key gone means SIGKILL in the same step
/// (docs/safety.md), not a stop that waits for the drain; so well under DRAIN (3 s), and with
/// a second of slack for a loaded machine.
const DELKEY_DOWN: Duration = Duration::from_millis(1500);
/// The longest random gap between a settled cluster and the next fault.
const MAX_GAP: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// The schedule

/// xorshift64* seeded through splitmix64 (so that seeds 1, 2, 3 give unrelated streams).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        Rng(if z == 0 { 1 } else { z })
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (the modulo bias is below 2^-50 for the small `n` used here).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in `lo..=hi`, to the millisecond.
    pub fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        let (lo, hi) = (lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(lo + self.below(hi - lo + 1))
    }
}

/// A kind of fault. To add one: a variant here, its [`Kind::key`] and [`Kind::name`], its
/// random ranges ([`Kind::durations`], [`Kind::delays`]) if it has any, its bound with the
/// reason ([`Kind::bound`]), which host it hits ([`Schedule::next_plan`]), what it does
/// (`Engine::fault`), and [`Kind::ALL`] if the default schedule should draw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    KillPromd,
    StopPromd,
    KillWeb,
    Cut,
    EtcdMember,
    EtcdQuorum,
    Promote,
    Demote,
    RestartPromd,
    /// `systemctl daemon-reload` on every host while a hand-over (Demote on the active host,
    /// or Promote on a passive one) is in flight.
    Reload,
    /// The same with `systemctl daemon-reexec`.
    Reexec,
    /// The active host turns unhealthy; while the health restart runs, its promd is killed
    /// (kill -9) or the host is cut off.
    Health,
    /// Demote the active host; kill -9 its promd while the drain (`ExecStop=`) runs.
    DrainKill,
    /// Demote the active host; SIGSTOP its promd (longer than the lease) while the drain runs.
    DrainStop,
    /// `etcdctl del` of the group's leader key: the holder kills its units at once.
    DelKey,
    /// Two faults at once, not in the default schedule (`PROMD_CAMPAIGN_KINDS=cut+stop`): cut
    /// the active host off, and while its renewals go unanswered, hang its promd (SIGSTOP)
    /// shortly before its fence deadline.
    CutThenStop,
}

impl Kind {
    pub const ALL: [Kind; 15] = [
        Kind::KillPromd,
        Kind::StopPromd,
        Kind::KillWeb,
        Kind::Cut,
        Kind::EtcdMember,
        Kind::EtcdQuorum,
        Kind::Promote,
        Kind::Demote,
        Kind::RestartPromd,
        Kind::Reload,
        Kind::Reexec,
        Kind::Health,
        Kind::DrainKill,
        Kind::DrainStop,
        Kind::DelKey,
    ];

    /// The short name `PROMD_CAMPAIGN_KINDS` uses.
    pub fn key(self) -> &'static str {
        match self {
            Kind::KillPromd => "kill",
            Kind::StopPromd => "stop",
            Kind::KillWeb => "web",
            Kind::Cut => "cut",
            Kind::EtcdMember => "member",
            Kind::EtcdQuorum => "quorum",
            Kind::Promote => "promote",
            Kind::Demote => "demote",
            Kind::RestartPromd => "restart",
            Kind::Reload => "reload",
            Kind::Reexec => "reexec",
            Kind::Health => "health",
            Kind::DrainKill => "drain-kill",
            Kind::DrainStop => "drain-stop",
            Kind::DelKey => "delkey",
            Kind::CutThenStop => "cut+stop",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillPromd => "kill -9 promd",
            Kind::StopPromd => "SIGSTOP promd > lease",
            Kind::KillWeb => "kill -9 web.service",
            Kind::Cut => "cut a host's link",
            Kind::EtcdMember => "kill an etcd member",
            Kind::EtcdQuorum => "lose etcd quorum",
            Kind::Promote => "D-Bus Promote (passive)",
            Kind::Demote => "D-Bus Demote (active)",
            Kind::RestartPromd => "systemctl restart promd",
            Kind::Reload => "daemon-reload in a hand-over",
            Kind::Reexec => "daemon-reexec in a hand-over",
            Kind::Health => "health restart, then kill/cut",
            Kind::DrainKill => "kill -9 promd in a drain",
            Kind::DrainStop => "SIGSTOP promd in a drain",
            Kind::DelKey => "etcdctl del the leader key",
            Kind::CutThenStop => "cut, then SIGSTOP promd",
        }
    }

    /// The range of the fault's random duration (zero: an instant fault).
    fn durations(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            // "Longer than the lease": the watchdog (750 ms for a 2 s lease) fires first.
            Kind::StopPromd => (LEASE + ms(200), LEASE + ms(3000)),
            // From shorter than the fence deadline (L - L/4) to well past the lease.
            Kind::Cut => (ms(300), LEASE * 3),
            Kind::EtcdMember => (ms(500), ms(5000)),
            Kind::EtcdQuorum => (ms(1000), ms(6000)),
            // From the cut to the SIGSTOP: the last acknowledged renewal was sent up to L/3
            // before the cut, and the fence is due L - L/4 after it.
            Kind::CutThenStop => (LEASE / 2, LEASE * 4 / 5),
            // As SIGSTOP promd.
            Kind::DrainStop => (LEASE + ms(200), LEASE + ms(3000)),
            // The cut (if the health fault cuts): from shorter than the fence deadline to past
            // the lease.
            Kind::Health => (ms(300), LEASE * 2),
            _ => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// The range of the random moment at which the second part of a compound fault lands,
    /// counted from the first part being under way (zero: none).
    fn delays(self) -> (Duration, Duration) {
        let ms = Duration::from_millis;
        match self {
            // Into the hand-over: it drains DRAIN at least, so mostly during the drain.
            Kind::Reload | Kind::Reexec => (Duration::ZERO, DRAIN),
            // Into the health restart (web-fork alone takes 2 s to restart, the drain 3 s).
            Kind::Health => (Duration::ZERO, ms(2000)),
            // Into the drain, leaving it at least 0.5 s to run.
            Kind::DrainKill | Kind::DrainStop => (Duration::ZERO, DRAIN - ms(500)),
            _ => (Duration::ZERO, Duration::ZERO),
        }
    }

    /// Within how long after the heal exactly one host must be active, and why.
    ///
    /// Common ground (lease L = 2 s): a lease that is not renewed lapses at most L after its
    /// last renewal was sent, plus 0.5 s (etcd checks expiry every 500 ms); a standby sees the
    /// key vanish through its watch and the best one campaigns at once, a lower-ranked one
    /// after one grace period (L/4) per rank; starting `web.service` takes ~0.1 s. Every bound
    /// carries 1 s or more of slack for this test's polling (one `systemctl is-active` per host
    /// through nsenter) on a loaded 2-core machine.
    pub fn bound(self) -> (Duration, &'static str) {
        let s = Duration::from_secs;
        match self {
            Kind::KillPromd => (
                LEASE + s(3),
                "from the kill: BindsTo stops web with promd; the restarted promd releases the old key \
                 (else it lapses within L + 0.5 s); a standby campaigns at once or after L/4 per rank",
            ),
            Kind::StopPromd => (
                LEASE + s(3),
                "from SIGCONT (after > L): the watchdog (750 ms) killed promd long before, so as kill -9",
            ),
            // The zoo made the hand-over DRAIN (3 s) longer: the bound grows by as much, and
            // keeps the slack it had.
            Kind::KillWeb => (
                DRAIN + s(3),
                "from the last kill: restart in place after the 300 ms backoff, or after the third \
                 failure a hand-over (stop, which drains web-drain.service for DRAIN = 3 s, release, \
                 the best standby campaigns at once)",
            ),
            Kind::Cut => (
                LEASE + s(3),
                "from the heal: a cut active host fenced itself by s + L - L/4; its key lapses by \
                 s + L + 0.5 s, or it renews again after the heal and stays",
            ),
            Kind::EtcdMember => (
                LEASE + s(3),
                "from the member serving again: two members kept quorum; a client on the dead member \
                 moves to the next endpoint (500 ms connect timeout); a raft election extends leases",
            ),
            Kind::EtcdQuorum => (
                LEASE * 2 + s(3),
                "from quorum back (the first member restarted serves): the new raft leader renews every \
                 lease, so a fenced holder's key may live L more (+0.5 s); promd retries the store at \
                 least every 1 s, then campaigns (grace L/4 per rank)",
            ),
            Kind::Promote | Kind::Demote => (
                LEASE + s(3),
                "from the call's return (it returns once the hand-over is done or refused)",
            ),
            Kind::RestartPromd => (
                LEASE + s(3),
                "from the command's return: the stop hands over at once (stop, release, campaign)",
            ),
            Kind::CutThenStop => (
                LEASE + s(3),
                "from the heal (once another host is active): as a cut",
            ),
            Kind::Reload | Kind::Reexec => (
                LEASE + s(3),
                "from the call's return (done or refused): a job whose JobRemoved the reload lost is \
                 judged by the unit's state, so the hand-over ends as without the reload",
            ),
            Kind::Health => (
                DRAIN + s(3),
                "from the heal (the kill, or the cut's end): as kill -9 promd or a cut (a restart \
                 still in flight is aborted by the stop); after a cut too short to fence, the host \
                 stays unhealthy and fails over by a hand-over, which drains DRAIN = 3 s first",
            ),
            Kind::DrainKill => (
                LEASE + s(3),
                "from the kill: `promd fence` SIGKILLs the draining units at once; the key is released \
                 by the restarted promd or lapses within L + 0.5 s; then as kill -9 promd",
            ),
            Kind::DrainStop => (
                LEASE + s(3),
                "from SIGCONT (after > L): the watchdog killed promd long before; as SIGSTOP promd",
            ),
            Kind::DelKey => (
                LEASE + s(3),
                "from the del: the holder sees the key gone through its watch and kills its units at \
                 once; the best eligible host (the old holder too) campaigns at once, others after L/4 \
                 per rank",
            ),
        }
    }
}

/// One planned fault; everything random about it, drawn from the seed.
#[derive(Clone, Debug)]
pub struct Plan {
    pub kind: Kind,
    /// Hit the active host (else a passive one), where the kind leaves a choice.
    pub at_active: bool,
    /// Selects the passive host, the etcd member(s).
    pub pick: u64,
    /// kill -9 web.service: how many kills in a row (each once it runs again); health: kill -9
    /// promd if odd, cut the host off if even.
    pub count: u32,
    pub duration: Duration,
    /// When the second part of a compound fault lands (see [`Kind::delays`]).
    pub delay: Duration,
    /// Wait this long after the cluster settled before the fault (a random phase).
    pub gap: Duration,
}

/// The seeded schedule: kinds come from a shuffled bag of all kinds (so every kind occurs
/// once in every `kinds.len()` consecutive faults of a bag, in random order); every fault draws the same number of
/// random values, so a schedule's first N faults do not depend on its length.
pub struct Schedule {
    rng: Rng,
    kinds: Vec<Kind>,
    bag: Vec<Kind>,
}

impl Schedule {
    pub fn new(seed: u64, kinds: &[Kind]) -> Schedule {
        assert!(!kinds.is_empty(), "no fault kinds");
        Schedule {
            rng: Rng::new(seed),
            kinds: kinds.to_vec(),
            bag: Vec::new(),
        }
    }

    pub fn next_plan(&mut self) -> Plan {
        if self.bag.is_empty() {
            self.bag = self.kinds.clone();
            for i in (1..self.bag.len()).rev() {
                let j = self.rng.below(i as u64 + 1) as usize;
                self.bag.swap(i, j);
            }
        }
        let kind = self.bag.pop().unwrap_or(Kind::KillPromd);
        let side = self.rng.below(4);
        let pick = self.rng.next_u64();
        let count = self.rng.below(3) as u32 + 1;
        let (lo, hi) = kind.durations();
        let duration = self.rng.between(lo, hi);
        let (lo, hi) = kind.delays();
        let delay = self.rng.between(lo, hi);
        let gap = self.rng.between(Duration::ZERO, MAX_GAP);
        let at_active = match kind {
            // Mostly the active host, where a fault matters; sometimes a passive one.
            Kind::KillPromd | Kind::StopPromd => side < 3,
            // Half Demote on the active host, half Promote on a passive one.
            Kind::Cut | Kind::RestartPromd | Kind::Reload | Kind::Reexec => side < 2,
            Kind::KillWeb | Kind::Demote | Kind::CutThenStop => true,
            Kind::Health | Kind::DrainKill | Kind::DrainStop | Kind::DelKey => true,
            Kind::Promote | Kind::EtcdMember | Kind::EtcdQuorum => false,
        };
        Plan {
            kind,
            at_active,
            pick,
            count,
            duration,
            delay,
            gap,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration from the environment

pub struct Config {
    pub seeds: Vec<u64>,
    /// Faults in total, shared out over the seeds.
    pub faults: usize,
    /// The kinds the schedule draws from: [`Kind::ALL`] unless `PROMD_CAMPAIGN_KINDS` says
    /// otherwise (a comma list of [`Kind::key`]s).
    pub kinds: Vec<Kind>,
}

impl Config {
    /// `PROMD_CAMPAIGN_SEED` (one seed) or `PROMD_CAMPAIGN_SEEDS` (a comma list) override
    /// `seeds`; `PROMD_CAMPAIGN_FAULTS` (the total, shared out over the seeds) overrides `faults`.
    pub fn from_env(seeds: &[u64], faults: usize) -> Config {
        let list = |v: String| -> Vec<u64> {
            v.split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("bad seed {s:?} in {v:?}"))
                })
                .collect()
        };
        let seeds = match (
            std::env::var("PROMD_CAMPAIGN_SEED"),
            std::env::var("PROMD_CAMPAIGN_SEEDS"),
        ) {
            (Ok(one), _) => list(one),
            (_, Ok(many)) => list(many),
            _ => seeds.to_vec(),
        };
        assert!(!seeds.is_empty(), "no seeds");
        let faults = std::env::var("PROMD_CAMPAIGN_FAULTS")
            .ok()
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad PROMD_CAMPAIGN_FAULTS {v:?}"))
            })
            .unwrap_or(faults);
        let all: Vec<Kind> = Kind::ALL.into_iter().chain([Kind::CutThenStop]).collect();
        let kinds = match std::env::var("PROMD_CAMPAIGN_KINDS") {
            Ok(v) => v
                .split(',')
                .map(|k| {
                    let k = k.trim();
                    *all.iter().find(|x| x.key() == k).unwrap_or_else(|| {
                        let keys: Vec<&str> = all.iter().map(|x| x.key()).collect();
                        panic!("PROMD_CAMPAIGN_KINDS: unknown kind {k:?} (known: {keys:?})")
                    })
                })
                .collect(),
            Err(_) => Kind::ALL.to_vec(),
        };
        Config {
            seeds,
            faults,
            kinds,
        }
    }

    /// The faults of the `i`th seed.
    pub fn faults_of(&self, i: usize) -> usize {
        let n = self.seeds.len();
        self.faults / n + usize::from(i < self.faults % n)
    }
}

// ---------------------------------------------------------------------------------------------
// The zoo: the units the campaign's hosts run under web-active.target

/// How long `web-drain.service`'s `ExecStop=` drains: longer than the lease, so a graceful
/// demotion drains while promd keeps renewing, and a fence must kill the drain.
pub const DRAIN: Duration = Duration::from_secs(3);
const UNITS: &str = "/etc/systemd/system";
/// The loopback port of `web-api.socket` (each host has its own network namespace).
const API_PORT: u16 = 8099;
/// The tmpfs of `srv-webcache.mount`.
const MOUNT_POINT: &str = "/srv/webcache";
const MOUNT_UNIT: &str = "srv-webcache.mount";
/// Heartbeats (realtime ns) of web-fork.service's child that ignores SIGTERM.
const FORK_BEAT: &str = "web-fork.beat";
/// The flag the health command checks (`! test -e`).
const UNHEALTHY: &str = "/run/web-unhealthy";
/// The group's health check: the campaign's `health` fault makes the active host unhealthy.
/// The timeout is generous (a loaded 2-core machine must not fail a `test -e`); it must be
/// shorter than the interval.
pub const HEALTH_EXTRA: &str = "health-command = [\"/bin/sh\", \"-c\", \"! test -e /run/web-unhealthy\"]\n\
     health-interval = \"1s\"\nhealth-timeout = \"800ms\"\n";

/// The zoo's services and their span logs (the name of the log in the host's `/spans`).
/// `web.service` logs to `spans.log`, as [`Cluster`] writes it.
pub const ZOO_SERVICES: [(&str, &str); 6] = [
    ("web.service", "spans.log"),
    ("web-worker.service", "web-worker.log"),
    ("web-fork.service", "web-fork.log"),
    ("web-drain.service", "web-drain.log"),
    ("web-api.service", "web-api.log"),
    ("web-refuse.service", "web-refuse.log"),
];

/// Every unit of the zoo that runs on the active host, and on no other host.
pub const ZOO_UP: [&str; 9] = [
    "web.service",
    "web-worker.service",
    "web-fork.service",
    "web-drain.service",
    "web-api.service",
    "web-refuse.service",
    "web-api.socket",
    MOUNT_UNIT,
    "web-stack.target",
];

/// The units of the zoo that own a cgroup when they run (processes, mount helpers).
const ZOO_CGROUPS: [&str; 8] = [
    "web.service",
    "web-worker.service",
    "web-fork.service",
    "web-drain.service",
    "web-api.service",
    "web-refuse.service",
    "web-api.socket",
    MOUNT_UNIT,
];

/// web-fork.service's main process: it forks two children and waits; one child ignores
/// SIGTERM and writes a heartbeat every 0.2 s (its `sleep`s inherit the ignored signal).
const FORK_SCRIPT: &str = "#!/bin/sh\n\
    # A main process that forks: one child ignores SIGTERM, the other does not.\n\
    /bin/sh -c 'trap \"\" TERM; while :; do date +%s%N >> /spans/web-fork.beat; sleep 0.2; done' &\n\
    sleep infinity &\n\
    wait\n";

/// The zoo, on top of [`super::cluster::web_units`] (later files at the same path replace
/// earlier ones):
///
/// ```text
/// web-active.target  Wants= web-stack.target                      (a nested target)
/// web-stack.target   Wants= web.service web-fork.service web-drain.service web-api.socket
///                           srv-webcache.mount web-refuse.service web-missing.service
/// web.service        Wants= web-worker.service                    (a service pulls one in)
/// web-worker.service ExecStartPost= connects to web-api.socket    (so it triggers web-api)
/// web-fork.service   main forks; one child ignores SIGTERM        (killed after 2 s)
/// web-drain.service  ExecStop= drains for DRAIN (3 s > the 2 s lease)
/// web-api.socket     127.0.0.1:8099, starts web-api.service on a connection
/// srv-webcache.mount a tmpfs on /srv/webcache
/// web-refuse.service RefuseManualStop=yes
/// web-missing.service does not exist
/// ```
///
/// Every service records its run spans like [`hosts::span_unit`] (`ExecStartPre=` /
/// `ExecStopPost=`, one log per unit in the host's `/spans`). Does a span cover every process
/// of the unit, not only the main one? promd's drop-in keeps `KillMode=control-group`
/// ([`Engine::check_claims`] checks it on the host), and the claim was that systemd then runs
/// `ExecStopPost=` only once the unit's cgroup is empty. Verified on this machine: **false**
/// (cgroup v1 inside nspawn; see [`zoo_view`]). So web-fork.service's TERM-ignoring child
/// writes heartbeats, and the span checker extends the unit's spans to them.
pub fn zoo_units(spec: &mut HostSpec) {
    let span = |unit: &str, log: &str| hosts::span_unit(unit, "web", &format!("/spans/{log}"));
    let log_of = |unit: &str| {
        ZOO_SERVICES
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, l)| *l)
            .unwrap_or_default()
    };
    spec.file(
        &format!("{UNITS}/web-active.target"),
        "[Unit]\nDescription=web: active (the zoo)\nWants=web-stack.target\nConflicts=web-passive.target\n",
    );
    spec.file(
        &format!("{UNITS}/web-stack.target"),
        format!(
            "[Unit]\nDescription=web: the stack\nWants=web.service web-fork.service web-drain.service \
             web-api.socket {MOUNT_UNIT} web-refuse.service web-missing.service\n"
        ),
    );
    // web.service itself is Cluster's span unit (spans.log).
    spec.file(
        &format!("{UNITS}/web.service.d/zoo.conf"),
        "[Unit]\nWants=web-worker.service\n",
    );
    for unit in [
        "web-worker.service",
        "web-fork.service",
        "web-drain.service",
        "web-api.service",
        "web-refuse.service",
    ] {
        spec.file(&format!("{UNITS}/{unit}"), span(unit, log_of(unit)));
    }
    // The worker is the socket's client: its connection starts web-api.service. A refused
    // connection ("-") does not fail the worker; the campaign then sees web-api down.
    spec.file(
        &format!("{UNITS}/web-worker.service.d/zoo.conf"),
        format!(
            "[Unit]\nAfter=web-api.socket\n[Service]\n\
             ExecStartPost=-/bin/bash -c 'exec 3<>/dev/tcp/127.0.0.1/{API_PORT}'\n"
        ),
    );
    spec.executable("/etc/zoo/fork", FORK_SCRIPT);
    spec.file(
        &format!("{UNITS}/web-fork.service.d/zoo.conf"),
        "[Service]\nExecStart=\nExecStart=/etc/zoo/fork\nTimeoutStopSec=2s\n",
    );
    spec.file(
        &format!("{UNITS}/web-drain.service.d/zoo.conf"),
        format!(
            "[Service]\nExecStop=/bin/sleep {}\nTimeoutStopSec=30s\n",
            DRAIN.as_secs()
        ),
    );
    spec.file(
        &format!("{UNITS}/web-api.socket"),
        format!(
            "[Unit]\nDescription=web api (socket)\n[Socket]\nListenStream=127.0.0.1:{API_PORT}\n"
        ),
    );
    spec.file(
        &format!("{UNITS}/{MOUNT_UNIT}"),
        format!(
            "[Unit]\nDescription=web cache (tmpfs)\n[Mount]\nWhat=tmpfs\nWhere={MOUNT_POINT}\n\
             Type=tmpfs\nOptions=size=1m,mode=0755\n"
        ),
    );
    spec.file(
        &format!("{UNITS}/web-refuse.service.d/zoo.conf"),
        "[Unit]\nRefuseManualStop=yes\n",
    );
}

/// One host's spans: (unit, span) for every zoo service.
type HostSpans = (String, Vec<(&'static str, Span)>);

/// Every host's spans of every zoo service, on the one clock the hosts share: a consistent
/// snapshot. The logs are read one after the other, so one pass could see host A's unit still
/// open and then host B's start that came after A's stop; the logs only grow, so two passes
/// that read the same show every log as it was at the moment between them.
fn zoo_spans(c: &Cluster) -> Vec<HostSpans> {
    let mut last = read_zoo_spans(c);
    for _ in 0..20 {
        let again = read_zoo_spans(c);
        if again == last {
            break;
        }
        last = again;
    }
    last
}

fn read_zoo_spans(c: &Cluster) -> Vec<HostSpans> {
    (0..c.hosts.len())
        .map(|i| {
            let dir = c.span_dir(i);
            let spans = ZOO_SERVICES
                .iter()
                .flat_map(|(unit, log)| {
                    hosts::read_spans(dir.join(log))
                        .into_iter()
                        .map(move |s| (*unit, s))
                })
                .collect();
            (c.hosts[i].name().to_string(), spans)
        })
        .collect()
}

fn describe_span(unit: &str, s: &Span) -> String {
    let term = s.term.map_or("-".to_string(), |t| t.to_string());
    match s.stop_ns {
        Some(stop) => format!("{unit} [{} .. {stop}] term {term}", s.start_ns),
        None => format!("{unit} [{} .. open] term {term}", s.start_ns),
    }
}

/// Every unit's spans on one timeline, in ms from the first event.
pub fn zoo_timeline(all: &[HostSpans]) -> String {
    let mut events: Vec<(u64, &str, String)> = Vec::new();
    for (host, spans) in all {
        for (unit, s) in spans {
            let term = s.term.map_or("-".to_string(), |t| t.to_string());
            events.push((s.start_ns, host, format!("start {unit} term {term}")));
            events.push((
                s.end_ns(),
                host,
                match s.stop_ns {
                    Some(_) => format!("stop  {unit}"),
                    None => format!("(never stopped) {unit}"),
                },
            ));
        }
    }
    events.sort();
    let t0 = events.first().map_or(0, |e| e.0);
    let mut out = String::new();
    for (ns, host, what) in &events {
        let at = if *ns == u64::MAX {
            "end".to_string()
        } else {
            format!("{:.3} ms", (ns - t0) as f64 / 1e6)
        };
        let _ = writeln!(out, "{at:>14}  {host:<6} {what}");
    }
    out
}

/// What [`zoo_view`] saw of web-fork.service's TERM-ignoring child.
#[derive(Clone, Copy, Debug, Default)]
pub struct Outlived {
    /// Stops of web-fork.service after which the child still beat.
    pub stops: usize,
    /// Stops of web-fork.service in all.
    pub of: usize,
    /// By how much the child outlived `ExecStopPost=` at most.
    pub longest: Duration,
}

/// Every host's spans of every zoo service (a consistent snapshot, see [`zoo_spans`]), with
/// web-fork.service's spans extended to the last heartbeat of its TERM-ignoring child.
///
/// The span recorder's `stop` comes from `ExecStopPost=`, and systemd does not wait for an
/// empty cgroup before it on this machine: systemd (252) waits for the cgroup to empty before
/// `ExecStopPost=` only on the unified (v2) hierarchy; on the legacy v1 hierarchy inside a
/// container, where cgroup-empty notifications do not work, it enters `stop-post` as soon as
/// the main and control processes are gone and kills what is left of the cgroup only after
/// `ExecStopPost=` (`final-sigterm`). The campaign's first run saw it: the child beat 1.06 s
/// after the recorded stop. So the recorder alone does not cover every process; the child's
/// heartbeats do (a beat is taken before it is written, so the last one is at most the child's
/// death), and [`zoo_leftovers`] looks at the processes themselves.
fn zoo_view(c: &Cluster) -> (Vec<HostSpans>, Outlived) {
    // The heartbeats first: each one read was written before the spans are read, so the span
    // it belongs to is in what is read next.
    let beats: Vec<String> = (0..c.hosts.len())
        .map(|i| std::fs::read_to_string(c.span_dir(i).join(FORK_BEAT)).unwrap_or_default())
        .collect();
    let mut all = zoo_spans(c);
    let mut outlived = Outlived::default();
    for (i, (host, spans)) in all.iter_mut().enumerate() {
        let mut fork: Vec<&mut Span> = spans
            .iter_mut()
            .filter(|(u, _)| *u == "web-fork.service")
            .map(|(_, s)| s)
            .collect();
        fork.sort_by_key(|s| s.start_ns);
        let mut last_beat = vec![0u64; fork.len()];
        // Whole lines only: the last one may be half written.
        let whole = beats[i].split_inclusive('\n').filter(|l| l.ends_with('\n'));
        for beat in whole.filter_map(|l| l.trim().parse::<u64>().ok()) {
            // The span it belongs to: the last one that started before it.
            let k = fork.partition_point(|s| s.start_ns <= beat);
            assert!(
                k > 0,
                "{host}: web-fork.service's child beat at {beat}, before any start of the unit"
            );
            last_beat[k - 1] = last_beat[k - 1].max(beat);
        }
        for (s, beat) in fork.iter_mut().zip(last_beat) {
            let Some(stop) = s.stop_ns else { continue };
            outlived.of += 1;
            if beat > stop {
                outlived.stops += 1;
                outlived.longest = outlived.longest.max(Duration::from_nanos(beat - stop));
                s.stop_ns = Some(beat);
            }
        }
    }
    (all, outlived)
}

/// The span checker over every process of the closure, on one clock ([`zoo_view`]):
/// - no span of one host overlaps a span of another host, any unit against any unit;
/// - the term (`PROMD_TERM`, which every zoo service records) never goes back, and grows
///   whenever a unit starts on another host than the unit that started before it.
///
/// Returns the number of spans and what web-fork.service's child did.
pub fn check_zoo(c: &Cluster) -> (usize, Outlived) {
    let (all, outlived) = zoo_view(c);
    let mut overlaps = Vec::new();
    for (a, (host_a, spans_a)) in all.iter().enumerate() {
        for (host_b, spans_b) in all.iter().skip(a + 1) {
            for (ua, sa) in spans_a {
                for (ub, sb) in spans_b {
                    if sa.start_ns < sb.end_ns() && sb.start_ns < sa.end_ns() {
                        overlaps.push(format!(
                            "{host_a} {} and {host_b} {} overlap",
                            describe_span(ua, sa),
                            describe_span(ub, sb)
                        ));
                    }
                }
            }
        }
    }
    assert!(
        overlaps.is_empty(),
        "two hosts ran units of the zoo at the same time:\n  {}\ntimeline:\n{}",
        overlaps.join("\n  "),
        zoo_timeline(&all)
    );
    let mut starts: Vec<(u64, u64, &str, &str)> = all
        .iter()
        .flat_map(|(h, spans)| {
            spans.iter().map(move |(u, s)| {
                let term = s
                    .term
                    .unwrap_or_else(|| panic!("{h} {u}: no PROMD_TERM in the unit's environment"));
                (s.start_ns, term, h.as_str(), *u)
            })
        })
        .collect();
    starts.sort();
    for w in starts.windows(2) {
        let (before, after) = (w[0], w[1]);
        if after.2 == before.2 {
            assert!(
                after.1 >= before.1,
                "term went back: {before:?} then {after:?}"
            );
        } else {
            assert!(
                after.1 > before.1,
                "term did not grow across a hand-over: {before:?} then {after:?}"
            );
        }
    }
    (starts.len(), outlived)
}

/// What of the zoo is left on host `h`: processes in a zoo unit's cgroup (`unit: pid (name)`),
/// and the tmpfs if it is mounted. The cgroup of each live process of the host comes from
/// `/proc/PID/cgroup` (as the machine sees it): this machine runs the legacy cgroup v1
/// hierarchy (`name=systemd`), where `/sys/fs/cgroup/system.slice/UNIT/cgroup.procs` does not
/// exist, and the per-process view works with v1 and v2 alike.
fn zoo_leftovers(h: &Host) -> Vec<String> {
    let mut found: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for pid in hosts::all_pids().into_iter().filter(|&p| h.owns_pid(p)) {
        let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else {
            continue;
        };
        let Some(unit) = ZOO_CGROUPS.iter().find(|unit| {
            let dir = format!("/system.slice/{unit}");
            cgroups
                .lines()
                .any(|l| l.ends_with(&dir) || l.contains(&format!("{dir}/")))
        }) else {
            continue;
        };
        let Some(st) = hosts::proc_status(pid).filter(|st| !matches!(st.state, 'Z' | 'X')) else {
            continue;
        };
        found
            .entry(unit)
            .or_default()
            .push(format!("{pid} ({})", st.name));
    }
    let mut left: Vec<String> = found
        .iter()
        .map(|(unit, pids)| format!("{unit}: {}", pids.join(", ")))
        .collect();
    if is_mounted(h) {
        left.push(format!("{MOUNT_POINT} is mounted"));
    }
    left
}

/// Whether the zoo's tmpfs is mounted on host `h` (its init's mount table).
fn is_mounted(h: &Host) -> bool {
    std::fs::read_to_string(format!("/proc/{}/mountinfo", h.init_pid()))
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(MOUNT_POINT))
}

/// `systemctl is-active` of every unit of [`ZOO_UP`] on each host.
fn zoo_states(c: &Cluster) -> Vec<Vec<String>> {
    c.hosts
        .iter()
        .map(|h| {
            let mut args = vec!["systemctl", "is-active"];
            args.extend(ZOO_UP);
            let out = h.exec_timeout(&args, Duration::from_secs(20));
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(|l| l.trim().to_string())
                .collect()
        })
        .collect()
}

fn all_up(states: &[String]) -> bool {
    states.len() == ZOO_UP.len() && states.iter().all(|s| s == "active")
}

/// The zoo units of `states` that are not inactive or failed, with their state.
fn not_down(states: &[String]) -> Vec<String> {
    ZOO_UP
        .iter()
        .zip(states)
        .filter(|(_, s)| !matches!(s.as_str(), "inactive" | "failed"))
        .map(|(u, s)| format!("{u}={s}"))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Outcomes and figures

#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub index: usize,
    pub kind: Kind,
    /// What was done, to whom, and how it ended (e.g. a refusal's message).
    pub what: String,
    pub result: String,
    pub from: String,
    pub to: String,
    pub recovery: Duration,
    pub downtime: Duration,
}

pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub spans: usize,
    pub outlived: Outlived,
    pub seeds: Vec<u64>,
    pub elapsed: Duration,
}

/// The `p` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

/// `median / p99 / max` in ms.
pub fn distribution(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    format!(
        "{} / {} / {}",
        ms(percentile(&s, 0.5)),
        ms(percentile(&s, 0.99)),
        ms(s.last().copied().unwrap_or_default())
    )
}

impl Report {
    /// The per-kind table (markdown) and the totals.
    pub fn summary(&self) -> String {
        let mut by_kind: BTreeMap<Kind, Vec<&Outcome>> = BTreeMap::new();
        for o in &self.outcomes {
            by_kind.entry(o.kind).or_default().push(o);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n| fault | count | hand-overs | outcomes | recovery after heal ms (median / p99 / max) | \
             downtime ms (median / p99 / max) | bound ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for (kind, os) in &by_kind {
            let mut results: BTreeMap<&str, usize> = BTreeMap::new();
            for o in os {
                *results.entry(o.result.as_str()).or_default() += 1;
            }
            let results = results
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rec: Vec<Duration> = os.iter().map(|o| o.recovery).collect();
            let down: Vec<Duration> = os.iter().map(|o| o.downtime).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                kind.name(),
                os.len(),
                os.iter().filter(|o| o.from != o.to).count(),
                results,
                distribution(&rec),
                distribution(&down),
                ms(kind.bound().0),
            );
        }
        out
    }

    /// The totals of a campaign that passed.
    pub fn totals(&self) -> String {
        format!(
            "{} faults over seeds {:?} in {:.0} s: {} spans of the zoo's {} services checked, 0 \
             overlaps between hosts (any unit against any unit), the term grew on every hand-over; \
             after every fault the whole zoo ran on exactly one host within its bound, with nothing \
             of it left on the others. web-fork.service's TERM-ignoring child outlived the unit's \
             ExecStopPost= in {} of {} stops, by up to {} ms (counted in its spans).",
            self.outcomes.len(),
            self.seeds,
            self.elapsed.as_secs_f64(),
            self.spans,
            ZOO_SERVICES.len(),
            self.outlived.stops,
            self.outlived.of,
            self.outlived.longest.as_millis(),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Running it

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
    };
    for (i, &seed) in cfg.seeds.iter().enumerate() {
        let faults = cfg.faults_of(i);
        if faults == 0 {
            continue;
        }
        let (outcomes, spans, outlived) = run_seed(seed, faults, &cfg.kinds, &report);
        report.outcomes.extend(outcomes);
        report.spans += spans;
        report.outlived.stops += outlived.stops;
        report.outlived.of += outlived.of;
        report.outlived.longest = report.outlived.longest.max(outlived.longest);
    }
    report.elapsed = started.elapsed();
    report
}

fn run_seed(
    seed: u64,
    faults: usize,
    kinds: &[Kind],
    so_far: &Report,
) -> (Vec<Outcome>, usize, Outlived) {
    let t0 = Instant::now();
    eprintln!("== campaign seed {seed}: {faults} faults, lease {LEASE:?} ==");
    let net = Net::new(3);
    let mut etcd = EtcdCluster::start(3, &net.gateway_ips());
    let cluster = Cluster::boot_with(
        &net,
        StoreKind::Etcd(&etcd),
        LEASE,
        &format!("{GROUP_EXTRA}{HEALTH_EXTRA}"),
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
    };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let a = engine.settle();
        engine.check_claims(a);
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
                 web-fork's TERM-ignoring child outlived ExecStopPost= in {} of {} stops (by up to {} ms) ==",
                t0.elapsed().as_secs_f64(),
                outlived.stops,
                outlived.of,
                outlived.longest.as_millis()
            );
            (engine.outcomes, spans, outlived)
        }
        Err(panic) => {
            engine.report_failure(faults, so_far);
            resume_unwind(panic)
        }
    }
}

struct Engine<'a> {
    seed: u64,
    c: &'a Cluster,
    etcd: &'a mut EtcdCluster,
    start: Instant,
    log: Vec<String>,
    outcomes: Vec<Outcome>,
    /// The cluster as the last settle poll saw it (printed if it never settles).
    last_seen: String,
    kinds: Vec<Kind>,
    /// The fault in progress.
    current: usize,
}

/// One host as `systemctl` and promd's D-Bus API show it.
#[derive(Default)]
struct HostState {
    promd: String,
    passive: String,
    role: String,
    /// `systemctl is-active` of each unit of [`ZOO_UP`].
    zoo: Vec<String>,
}

impl std::fmt::Debug for HostState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let zoo = if all_up(&self.zoo) {
            "all up".to_string()
        } else {
            let up = not_down(&self.zoo);
            if up.is_empty() {
                "all down".to_string()
            } else {
                up.join(" ")
            }
        };
        write!(
            f,
            "promd {}, role {}, passive target {}, zoo: {zoo}",
            self.promd, self.role, self.passive
        )
    }
}

fn host_state(h: &Host) -> HostState {
    let script = format!(
        "systemctl is-active promd.service web-passive.target {}; \
         busctl --timeout=5 get-property org.promd1 /org/promd1/group/web org.promd1.Group Role \
         2>/dev/null || echo unknown",
        ZOO_UP.join(" ")
    );
    let out = h.exec_timeout(&["sh", "-c", &script], Duration::from_secs(20));
    let text = String::from_utf8_lossy(&out.stdout);
    let mut lines = text.lines().map(|l| l.trim().to_string());
    let mut next = || lines.next().unwrap_or_default();
    let promd = next();
    let passive = next();
    let zoo = ZOO_UP.iter().map(|_| next()).collect();
    HostState {
        promd,
        passive,
        zoo,
        role: next()
            .trim_start_matches("s ")
            .trim_matches('"')
            .to_string(),
    }
}

/// ` PROMD_CAMPAIGN_KINDS=...` unless `kinds` is the default.
fn kinds_env(kinds: &[Kind]) -> String {
    if kinds == Kind::ALL {
        return String::new();
    }
    let keys: Vec<&str> = kinds.iter().map(|k| k.key()).collect();
    format!(" PROMD_CAMPAIGN_KINDS={}", keys.join(","))
}

/// After a SIGSTOP: SIGCONT the promd if it still exists, else the watchdog killed it. Says
/// which, for the fault log.
fn resume_unless_killed(host: &Host, pid: u32) -> &'static str {
    if host.pids_on_machine("promd").contains(&pid) {
        let _ = kill(Pid::from_raw(pid as i32), Signal::SIGCONT);
        "resumed"
    } else {
        "killed by the watchdog"
    }
}

/// "Exactly one active" over the zoo: the one host on which every unit of [`ZOO_UP`] runs, if
/// each of them runs there and on no other host, with the latest start of an open span of a
/// zoo service there (when the last of them came up).
fn one_active(c: &Cluster) -> Option<(usize, u64)> {
    let states = zoo_states(c);
    let up: Vec<usize> = (0..states.len()).filter(|&i| all_up(&states[i])).collect();
    let [a] = up[..] else { return None };
    let others_down = (0..states.len())
        .filter(|&i| i != a)
        .all(|i| states[i].iter().all(|s| s != "active"));
    if !others_down {
        return None;
    }
    let dir = c.span_dir(a);
    let mut latest = 0;
    for (_, log) in ZOO_SERVICES {
        let spans = hosts::read_spans(dir.join(log));
        let open = spans.last().filter(|s| s.stop_ns.is_none())?;
        latest = latest.max(open.start_ns);
    }
    Some((a, latest))
}

/// Time in `[from, to]` during which no host's span was open.
fn uncovered(all: &[(String, Vec<Span>)], from: u64, to: u64) -> Duration {
    let mut iv: Vec<(u64, u64)> = all
        .iter()
        .flat_map(|(_, spans)| spans.iter())
        .map(|s| (s.start_ns.max(from), s.end_ns().min(to)))
        .filter(|(a, b)| a < b)
        .collect();
    iv.sort();
    let (mut covered, mut reach) = (0u64, from);
    for (a, b) in iv {
        let a = a.max(reach);
        if b > a {
            covered += b - a;
            reach = b;
        }
    }
    Duration::from_nanos(to.saturating_sub(from).saturating_sub(covered))
}

impl Engine<'_> {
    fn say(&mut self, line: String) {
        let line = format!(
            "[seed {} +{:7.1}s] {line}",
            self.seed,
            self.start.elapsed().as_secs_f64()
        );
        eprintln!("{line}");
        self.log.push(line);
    }

    fn name(&self, i: usize) -> &str {
        self.c.hosts[i].name()
    }

    /// Waits until one host is active and the others passive and eligible, promd running
    /// everywhere; returns the active host.
    fn settle(&mut self) -> usize {
        let mut active = 0;
        let mut seen = String::new();
        let c = self.c;
        let result = catch_unwind(AssertUnwindSafe(|| {
            hosts::wait_until(
                SETTLE_TIMEOUT,
                "the cluster settles (the zoo up on one active host, the others passive with the \
                 zoo down, promd running everywhere)",
                || {
                    let states: Vec<HostState> = c.hosts.iter().map(host_state).collect();
                    seen = states
                        .iter()
                        .zip(&c.hosts)
                        .map(|(s, h)| format!("{}: {s:?}", h.name()))
                        .collect::<Vec<_>>()
                        .join("; ");
                    let actives: Vec<usize> = (0..states.len())
                        .filter(|&i| all_up(&states[i].zoo))
                        .collect();
                    let [a] = actives[..] else { return false };
                    active = a;
                    states.iter().enumerate().all(|(i, s)| {
                        s.promd == "active"
                            && if i == a {
                                s.role == "active"
                            } else {
                                s.role == "passive"
                                    && s.passive == "active"
                                    && not_down(&s.zoo).is_empty()
                            }
                    })
                },
            )
        }));
        self.last_seen = seen;
        if let Err(panic) = result {
            let seen = self.last_seen.clone();
            self.say(format!("the cluster did not settle; last seen: {seen}"));
            resume_unwind(panic);
        }
        active
    }

    fn passive_host(&self, active: usize, pick: u64) -> usize {
        let others: Vec<usize> = (0..self.c.hosts.len()).filter(|&i| i != active).collect();
        others[(pick % others.len() as u64) as usize]
    }

    /// busctl call ... Manager METHOD s web on host `h`: "ok" or the refusal's message.
    fn manager_call(&self, h: usize, method: &str) -> String {
        manager_call(&self.c.hosts[h], method)
    }

    /// What the campaign relies on, checked once on the first active host `a`:
    /// - the span logs are where [`check_zoo`] reads them, and the cgroup probe of
    ///   [`zoo_leftovers`] sees the processes of a running unit (so that an empty answer on a
    ///   passive host means something);
    /// - promd's drop-in leaves every zoo service with `KillMode=control-group` (whether
    ///   `ExecStopPost=` waits for the cgroup to empty is another matter, see [`zoo_view`]);
    /// - the socket got its service started by the worker's connection.
    fn check_claims(&mut self, a: usize) {
        let h = &self.c.hosts[a];
        let left = zoo_leftovers(h);
        for unit in ["web.service", "web-fork.service", "web-api.service"] {
            assert!(
                left.iter().any(|l| l.starts_with(&format!("{unit}: "))),
                "{}: no process seen in {unit}'s cgroup on the active host: {left:?}",
                h.name()
            );
        }
        assert!(
            is_mounted(h),
            "{MOUNT_POINT} not mounted on the active host"
        );
        for (unit, _) in ZOO_SERVICES {
            let out = h.run_ok(&[
                "systemctl",
                "show",
                "-p",
                "KillMode",
                "-p",
                "DropInPaths",
                unit,
            ]);
            assert!(
                out.contains("KillMode=control-group") && out.contains("50-promd-web.conf"),
                "{}: {unit} is not under promd's drop-in with KillMode=control-group: {out}",
                h.name()
            );
        }
        let triggered = h.run_ok(&["systemctl", "show", "-p", "TriggeredBy", "web-api.service"]);
        assert!(
            triggered.contains("web-api.socket"),
            "web-api.service: {triggered}"
        );
        let fork = zoo_leftovers(h)
            .into_iter()
            .find(|l| l.starts_with("web-fork.service"))
            .unwrap_or_default();
        self.say(format!(
            "checked on {}: the zoo's processes visible in their cgroups ({fork}), {MOUNT_POINT} \
             mounted, KillMode=control-group under promd's drop-in, web-api.service triggered by \
             its socket",
            h.name()
        ));
    }
}

/// busctl call ... Manager METHOD s web on `h`: "ok" or the refusal's message.
fn manager_call(h: &Host, method: &str) -> String {
    let out = h.exec_timeout(
        &[
            "busctl",
            "--timeout=45",
            "call",
            "org.promd1",
            "/org/promd1",
            "org.promd1.Manager",
            method,
            "s",
            "web",
        ],
        Duration::from_secs(60),
    );
    if out.status.success() {
        return "ok".into();
    }
    let err = String::from_utf8_lossy(&out.stderr);
    let msg = err.lines().next().unwrap_or("").trim();
    let msg = msg.strip_prefix("Call failed: ").unwrap_or(msg);
    format!("refused ({msg})")
}

/// Whether every zoo service that ran on host `h` at `t` (realtime ns) has stopped since.
fn stopped_since(c: &Cluster, h: usize, t: u64) -> bool {
    ZOO_SERVICES.iter().all(|(_, log)| {
        hosts::read_spans(c.span_dir(h).join(log))
            .iter()
            .all(|s| s.start_ns >= t || s.stop_ns.is_some())
    })
}

/// Polls `cond` every 20 ms for at most `timeout`; whether it became true.
fn poll(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Starts a hand-over call (`busctl call ... METHOD s web`) on `h` and runs `during` while it
/// runs; `during` gets a probe that says whether the call is still in flight. Returns the
/// call's result and `during`'s.
fn during_call<T>(
    h: &Host,
    method: &str,
    during: impl FnOnce(&dyn Fn() -> bool) -> T,
) -> (String, T) {
    std::thread::scope(|s| {
        let call = s.spawn(|| manager_call(h, method));
        let in_flight = || !call.is_finished();
        let t = during(&in_flight);
        let result = call.join().unwrap_or_else(|p| resume_unwind(p));
        (result, t)
    })
}

impl Engine<'_> {
    fn fault(&mut self, index: usize, plan: &Plan) {
        let c = self.c;
        self.current = index;
        let from = self.settle();
        std::thread::sleep(plan.gap); // a random phase of the renewal cycle, not a synchronisation
        let t_fault = hosts::now_ns();
        let mut result = "done".to_string();
        let target = if plan.at_active {
            from
        } else {
            self.passive_host(from, plan.pick)
        };
        let role = if target == from { "active" } else { "passive" };
        let tname = format!("{} ({role})", self.name(target));
        let what = match plan.kind {
            Kind::KillPromd => {
                let pid = c.promd_pid(target);
                c.hosts[target].signal(pid, Signal::SIGKILL);
                format!("kill -9 promd on {tname}")
            }
            Kind::StopPromd => {
                let pid = c.promd_pid(target);
                c.hosts[target].signal(pid, Signal::SIGSTOP);
                std::thread::sleep(plan.duration); // the fault's duration
                // The watchdog has usually killed it by now; resume it only if it still exists.
                result = resume_unless_killed(&c.hosts[target], pid).into();
                format!(
                    "SIGSTOP promd on {tname} for {} ms",
                    plan.duration.as_millis()
                )
            }
            Kind::KillWeb => {
                let mut kills = 0;
                for k in 0..plan.count {
                    if k > 0 {
                        // The next crash only once it runs again (in place or elsewhere).
                        hosts::wait_until(
                            Duration::from_secs(15),
                            "web.service runs again after a crash",
                            || one_active(c).is_some(),
                        );
                        if one_active(c).map(|(a, _)| a) != Some(from) {
                            break; // failed over: the crash loop is over
                        }
                    }
                    let out =
                        c.hosts[from].exec(&["systemctl", "kill", "--signal=KILL", "web.service"]);
                    kills += u32::from(out.status.success());
                }
                format!("kill -9 web.service on {tname} x{kills}")
            }
            Kind::Cut => {
                c.hosts[target].cut();
                std::thread::sleep(plan.duration); // the fault's duration
                c.hosts[target].heal();
                format!("cut {tname} for {} ms", plan.duration.as_millis())
            }
            Kind::EtcdMember => {
                let m = (plan.pick % 3) as usize;
                self.etcd.kill_member(m);
                std::thread::sleep(plan.duration); // the fault's duration
                self.etcd.restart_member(m);
                format!("kill etcd member {m} for {} ms", plan.duration.as_millis())
            }
            Kind::EtcdQuorum => {
                let m1 = (plan.pick % 3) as usize;
                let m2 = (m1 + 1 + ((plan.pick / 3) % 2) as usize) % 3;
                self.etcd.kill_member(m1);
                self.etcd.kill_member(m2);
                std::thread::sleep(plan.duration); // the fault's duration
                self.etcd.restart_member(m1);
                format!(
                    "kill etcd members {m1} and {m2} for {} ms",
                    plan.duration.as_millis()
                )
            }
            Kind::Promote => {
                result = self.manager_call(target, "Promote");
                format!("Promote on {tname}")
            }
            Kind::Demote => {
                result = self.manager_call(target, "Demote");
                format!("Demote on {tname}")
            }
            Kind::RestartPromd => {
                c.hosts[target].run_ok(&["systemctl", "restart", "promd.service"]);
                format!("systemctl restart promd on {tname}")
            }
            Kind::Reload | Kind::Reexec => {
                let (method, on) = if target == from {
                    ("Demote", from)
                } else {
                    ("Promote", target)
                };
                let cmd = if plan.kind == Kind::Reload {
                    "daemon-reload"
                } else {
                    "daemon-reexec"
                };
                let (call, (in_flight, failed)) = during_call(&c.hosts[on], method, |in_flight| {
                    std::thread::sleep(plan.delay); // a random moment of the hand-over
                    let was = in_flight();
                    // Every host at once: the one handing over and whichever takes over. A
                    // command that fails is systemd's business, not promd's: counted, not fatal.
                    let failed = std::thread::scope(|s| {
                        let runs: Vec<_> = c
                            .hosts
                            .iter()
                            .map(|h| {
                                s.spawn(move || {
                                    h.exec_timeout(&["systemctl", cmd], Duration::from_secs(60))
                                        .status
                                        .success()
                                })
                            })
                            .collect();
                        runs.into_iter()
                            .map(|r| r.join().unwrap_or(false))
                            .filter(|ok| !ok)
                            .count()
                    });
                    (was, failed)
                });
                let failed = if failed > 0 {
                    format!(" ({cmd} failed on {failed} hosts)")
                } else {
                    String::new()
                };
                result = if in_flight {
                    format!("{call}, {cmd} in flight{failed}")
                } else {
                    format!("{call}, {cmd} after it{failed}")
                };
                format!(
                    "{method} on {tname}, systemctl {cmd} on every host {} ms into it",
                    plan.delay.as_millis()
                )
            }
            Kind::Health => {
                let h = &c.hosts[from];
                let pid = c.promd_pid(from);
                h.write_file(UNHEALTHY, "");
                // The check fails within its interval; promd then restarts the steady units one
                // after the other (web-fork takes 2 s, web-drain drains 3 s): a job in flight.
                let restarting = poll(Duration::from_secs(10), || {
                    !h.run_ok(&["systemctl", "list-jobs", "--no-legend"])
                        .trim()
                        .is_empty()
                });
                std::thread::sleep(plan.delay); // a random moment of the restart
                let still = !h
                    .run_ok(&["systemctl", "list-jobs", "--no-legend"])
                    .trim()
                    .is_empty();
                // An odd count kills promd, an even one cuts the host off.
                let how = if plan.count % 2 == 1 {
                    h.signal(pid, Signal::SIGKILL);
                    "kill -9 promd".to_string()
                } else {
                    h.cut();
                    std::thread::sleep(plan.duration); // the fault's duration
                    h.heal();
                    format!("cut for {} ms", plan.duration.as_millis())
                };
                let _ = std::fs::remove_file(h.path(UNHEALTHY));
                result = match (restarting, still) {
                    (false, _) => "no restart seen".into(),
                    (true, true) => "restart in flight".into(),
                    (true, false) => "restart over".into(),
                };
                format!(
                    "{tname} unhealthy, {how} {} ms into the restart",
                    plan.delay.as_millis()
                )
            }
            Kind::DrainKill | Kind::DrainStop => {
                let h = &c.hosts[from];
                let pid = c.promd_pid(from);
                let (call, (draining, fate)) = during_call(h, "Demote", |_| {
                    let draining = poll(Duration::from_secs(10), || {
                        h.unit_state("web-drain.service") == "deactivating"
                    });
                    std::thread::sleep(plan.delay); // a random moment of the drain
                    let fate = if plan.kind == Kind::DrainKill {
                        h.signal(pid, Signal::SIGKILL);
                        "killed"
                    } else {
                        h.signal(pid, Signal::SIGSTOP);
                        std::thread::sleep(plan.duration); // the fault's duration
                        resume_unless_killed(h, pid)
                    };
                    (draining, fate)
                });
                result = if draining {
                    format!("{fate} in the drain, Demote {call}")
                } else {
                    format!("{fate}, no drain seen, Demote {call}")
                };
                if plan.kind == Kind::DrainKill {
                    format!(
                        "Demote {tname}, kill -9 its promd {} ms into the drain",
                        plan.delay.as_millis()
                    )
                } else {
                    format!(
                        "Demote {tname}, SIGSTOP its promd {} ms into the drain for {} ms",
                        plan.delay.as_millis(),
                        plan.duration.as_millis()
                    )
                }
            }
            Kind::DelKey => {
                let eps = self.etcd.endpoints().join(",");
                let out = std::process::Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .args(["--endpoints", &eps, "del", LEADER_KEY])
                    .output()
                    .expect("etcdctl");
                assert!(
                    out.status.success(),
                    "etcdctl del {LEADER_KEY}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                result = format!("deleted {}", String::from_utf8_lossy(&out.stdout).trim());
                format!("etcdctl del {LEADER_KEY} (held by {tname})")
            }
            Kind::CutThenStop => {
                let pid = c.promd_pid(target);
                c.hosts[target].cut();
                std::thread::sleep(plan.duration); // the fault's timing
                c.hosts[target].signal(pid, Signal::SIGSTOP);
                // Both last until another host took over.
                hosts::wait_until(
                    LEASE * 2 + Duration::from_secs(5),
                    "another host takes over from the cut, hung one",
                    || one_active(c).is_some_and(|(a, _)| a != target),
                );
                c.hosts[target].heal();
                result = resume_unless_killed(&c.hosts[target], pid).into();
                format!(
                    "cut {tname}, SIGSTOP its promd {} ms later",
                    plan.duration.as_millis()
                )
            }
        };
        // Quorum is back once the first member serves again; the bound counts from there.
        let healed = Instant::now();
        let t_heal = hosts::now_ns();
        if plan.kind == Kind::EtcdQuorum {
            let m2 = (plan.pick % 3 + 1 + (plan.pick / 3) % 2) % 3;
            self.etcd.restart_member(m2 as usize);
        }
        let (bound, why) = plan.kind.bound();
        let mut found = None;
        let waited = catch_unwind(AssertUnwindSafe(|| {
            hosts::wait_until(
                bound.saturating_sub(healed.elapsed()),
                &format!(
                    "exactly one host active within {} ms of the heal of fault #{index} ({what}); \
                     bound: {why}",
                    bound.as_millis()
                ),
                || {
                    // After a deleted key, the holder must first have stopped what ran then
                    // (it may win the key again): until then, its running zoo is no recovery.
                    if plan.kind == Kind::DelKey && !stopped_since(c, from, t_fault) {
                        return false;
                    }
                    found = one_active(c);
                    found.is_some()
                },
            )
        }));
        if let Err(panic) = waited {
            let active = c.active_hosts();
            self.say(format!(
                "#{index} {what}: {result}; NOT recovered within {} ms (active now: {active:?})",
                bound.as_millis()
            ));
            resume_unwind(panic);
        }
        let t_ok = hosts::now_ns();
        let (to, open_start) = found.unwrap_or_default();
        let recovery = Duration::from_nanos(open_start.saturating_sub(t_heal));
        let downtime = uncovered(&c.spans(), t_fault, t_ok);
        let outcome = Outcome {
            seed: self.seed,
            index,
            kind: plan.kind,
            what: what.clone(),
            result: result.clone(),
            from: self.name(from).to_string(),
            to: self.name(to).to_string(),
            recovery,
            downtime,
        };
        self.say(format!(
            "#{index} {what}: {result}; {} -> {} active, recovery {} ms after the heal (bound {} ms), \
             downtime {} ms",
            outcome.from,
            outcome.to,
            recovery.as_millis(),
            bound.as_millis(),
            downtime.as_millis()
        ));
        assert!(
            recovery <= bound,
            "fault #{index} ({what}): the service started {recovery:?} after the heal, bound {bound:?}"
        );
        self.outcomes.push(outcome);
        // Nothing of the zoo on the other hosts: no process in any zoo unit's cgroup, the tmpfs
        // not mounted.
        for i in (0..c.hosts.len()).filter(|&i| i != to) {
            let left = zoo_leftovers(&c.hosts[i]);
            assert!(
                left.is_empty(),
                "fault #{index} ({what}): {} is active, yet {} still has: {}",
                self.name(to),
                self.name(i),
                left.join("; ")
            );
        }
        if plan.kind == Kind::DelKey {
            self.check_holder_killed(from, t_fault);
        }
        check_zoo(c);
    }

    /// After `etcdctl del` of the key at `t_fault`: every zoo service that ran on the holder
    /// then stopped within [`DELKEY_DOWN`].
    fn check_holder_killed(&mut self, holder: usize, t_fault: u64) {
        let (all, _) = zoo_view(self.c);
        let mut slowest = Duration::ZERO;
        for (unit, s) in &all[holder].1 {
            if s.start_ns < t_fault && s.end_ns() > t_fault {
                let took = Duration::from_nanos(s.end_ns().saturating_sub(t_fault));
                assert!(
                    took <= DELKEY_DOWN,
                    "{unit} on {} (the key's holder) ran until {} ms after the key was deleted \
                     (bound {} ms): {s:?}",
                    self.name(holder),
                    if s.stop_ns.is_some() {
                        took.as_millis().to_string()
                    } else {
                        "now".into()
                    },
                    DELKEY_DOWN.as_millis()
                );
                slowest = slowest.max(took);
            }
        }
        self.say(format!(
            "   the holder {} had every zoo service down {} ms after the del",
            self.name(holder),
            slowest.as_millis()
        ));
    }

    /// Prints what reproduces the failure and saves the journals, spans and etcd logs.
    fn report_failure(&self, faults: usize, so_far: &Report) {
        let failed_at = self.current;
        let dir = PathBuf::from(format!(
            "/tmp/promd-campaign-seed{}-{}",
            self.seed,
            hosts::now_ns() / 1_000_000_000
        ));
        let _ = std::fs::create_dir_all(&dir);
        for h in &self.c.hosts {
            let out = h.exec_timeout(
                &[
                    "journalctl",
                    "--no-pager",
                    "-q",
                    "-o",
                    "short-precise",
                    "-u",
                    "promd.service",
                    "-u",
                    "web*",
                    "-u",
                    MOUNT_UNIT,
                    "-u",
                    "web-active.target",
                    "-u",
                    "web-passive.target",
                ],
                Duration::from_secs(30),
            );
            let _ = std::fs::write(dir.join(format!("{}.journal", h.name())), &out.stdout);
        }
        for m in 0..3 {
            let _ = std::fs::copy(self.etcd.log_path(m), dir.join(format!("etcd-{m}.log")));
        }
        let spans = self.c.spans();
        let _ = std::fs::write(dir.join("timeline.txt"), hosts::timeline(&spans));
        let _ = std::fs::write(
            dir.join("zoo-timeline.txt"),
            zoo_timeline(&read_zoo_spans(self.c)),
        );
        for (i, h) in self.c.hosts.iter().enumerate() {
            let to = dir.join(format!("spans-{}", h.name()));
            let _ = std::fs::create_dir_all(&to);
            if let Ok(rd) = std::fs::read_dir(self.c.span_dir(i)) {
                for e in rd.flatten() {
                    let _ = std::fs::copy(e.path(), to.join(e.file_name()));
                }
            }
        }
        let _ = std::fs::write(dir.join("faults.log"), self.log.join("\n") + "\n");
        let mut partial = Report {
            outcomes: so_far.outcomes.clone(),
            spans: 0,
            outlived: Outlived::default(),
            seeds: so_far.seeds.clone(),
            elapsed: Duration::ZERO,
        };
        partial.outcomes.extend(self.outcomes.iter().cloned());
        eprintln!(
            "\n==== CAMPAIGN FAILED: seed {}, fault #{failed_at} of {faults} ====\n\
             fault log:\n{}\n\
             spans:\n{}\n\
             figures of the faults that passed:{}\n\
             journals (promd, the zoo), spans and timelines (web.service, every zoo unit), etcd \
             logs: {}\n\
             replay: PROMD_CAMPAIGN_SEED={} PROMD_CAMPAIGN_FAULTS={}{} \
             cargo test --release --test system_campaign -- --nocapture\n",
            self.seed,
            self.log.join("\n"),
            hosts::timeline(&spans),
            partial.summary(),
            dir.display(),
            self.seed,
            failed_at + 1,
            kinds_env(&self.kinds),
        );
    }
}
