//! The seeded schedule: the fault kinds with their bounds, and the plan of each fault.

use super::*;

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
    /// A passive host restarted with the active host's `node` (two hosts, one name): its
    /// promd must refuse (exit 78) without disturbing the active host; then it gets its own
    /// name back.
    DupNode,
    /// Two faults at once, not in the default schedule (`PROMD_CAMPAIGN_KINDS=cut+stop`): cut
    /// the active host off, and while its renewals go unanswered, hang its promd (SIGSTOP)
    /// shortly before its fence deadline.
    CutThenStop,
}

impl Kind {
    pub const ALL: [Kind; 16] = [
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
        Kind::DupNode,
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
            Kind::DupNode => "dup",
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
            Kind::DupNode => "a passive host takes the active's node",
            Kind::CutThenStop => "cut, then SIGSTOP promd",
        }
    }

    /// The range of the fault's random duration (zero: an instant fault).
    pub(super) fn durations(self) -> (Duration, Duration) {
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
    pub(super) fn delays(self) -> (Duration, Duration) {
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
            Kind::DupNode => (
                LEASE + s(3),
                "none: the active host keeps its run of the zoo (checked); the renamed host's promd \
                 finds the node's member record written on another machine and exits 78",
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
            Kind::Promote | Kind::EtcdMember | Kind::EtcdQuorum | Kind::DupNode => false,
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
