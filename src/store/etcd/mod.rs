//! The etcd backend: per store (one promd), one connection, one lease per lease length and
//! one watch, shared by every group; one task per group on top of them.
//!
//! Keys, under `PREFIX/GROUP/`:
//! - `leader`: a [`LeaderRecord`](crate::store::LeaderRecord) bound to the holder's lease,
//!   with its term (a value of an older promd without one has its create revision as term);
//! - `term`: a [`TermRecord`](crate::store::TermRecord), the highest term handed out, bound
//!   to no lease; a campaign hands out a term above it, above every create revision, and
//!   above the campaigner's floor (docs/store-format.md, docs/safety.md);
//! - `members/NODE`: a [`MemberRecord`](crate::store::MemberRecord) bound to that node's
//!   lease;
//! - `switchover`: a [`SwitchoverRecord`](crate::store::SwitchoverRecord) bound to the
//!   requester's lease;
//! - `maintenance`: a [`MaintenanceRecord`](crate::store::MaintenanceRecord) bound to no
//!   lease: it outlives the node that set it. Maintenance off is the key's absence.
//!
//! "A node's lease" is the lease its host holds for the group's lease length: every group of
//! one promd with the same `lease` binds its keys to one etcd lease (issue 13: store traffic
//! per host that does not grow with the group count). Why each group's fence still holds,
//! and what one lease loss now costs: docs/safety.md, "Groups that share a lease".
//!
//! Shared by the groups of a store, each a task of its own:
//! - `link`: the connection (endpoints side by side, in order of preference, the member the
//!   last connection failed on last); a connection found bad is ended once, whoever finds it
//!   so, and replaced once;
//! - `lease`: one task per lease length keeps its lease alive (renewals every `L/3`, an answer
//!   awaited `min(L/6, 500 ms)`), tells every group on it each acknowledged renewal's send
//!   time, and grants one new lease when etcd says it is gone;
//! - `hub`: one watch over the whole prefix, dispatched by group; each watch it creates is an
//!   epoch, after which the groups read their keys again.
//!
//! Each group runs one task (`GroupTask`) that alternates between two phases: *offline*,
//! where it waits for the connection, its lease and the watch, writes its member record and
//! reads the group's keys; and *online*, where it reports the lease's renewals, follows the
//! watch and carries out commands. Every network call has a timeout and runs as a future
//! polled from the task's one `select!` loop, so the loop turns (and beats its
//! [`Progress`](super::Progress)) at least every half lease whatever the network
//! does, and a slow command never delays a renewal (renewals are not the group's to send).
//!
//! The code is split by responsibility:
//! - `connect`: connecting to one of the endpoints, a call's failure in words;
//! - `link`, `lease`, `hub`: what the groups share (above);
//! - `view`: reading the group's keys, and handing their values to the shared corrupt-value
//!   policy;
//! - `ops`: the commands that write (campaign, release, publish, switchover, maintenance),
//!   the revisions a group wrote its own keys at, and a group's shutdown;
//! - `task`: the group task and its `select!` loop.
//!
//! What the runtime is told and when queued writes are answered is not decided here but in
//! the code both backends share (see [`store`](super)).

mod connect;
mod hub;
mod lease;
mod link;
mod ops;
mod secure;
mod task;
mod view;

pub use secure::{EtcdTls, EtcdUser, PemFile, ReadSecrets};

use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::queue::OpQueue;
use super::report::Reporter;
use super::{GroupId, GroupSession, GroupSpec, HostId, Store, StoreEvent};
use connect::Connector;
use hub::Hub;
use lease::{LeaseKey, Leases};
use link::Link;
use ops::Owned;
use secure::Secrets;
use task::GroupTask;

/// A store of groups in an etcd cluster (v3 API).
pub struct EtcdStore {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    prefix: String,
    tls: Option<EtcdTls>,
    user: Option<EtcdUser>,
    reader: Option<ReadSecrets>,
    /// Built at the first group's opening and shared by all: one last good reading, and a
    /// file that cannot be used is journalled once, not once per group.
    secrets: OnceLock<Arc<Secrets>>,
    /// The connection, leases and watch of the groups that run; built again (a new
    /// connection) when a group opens after every group ended.
    shared: Mutex<Weak<Shared>>,
}

/// What the groups of a store share: one connection, one lease per lease length, one watch.
/// The connection's and the watch's tasks run while a group holds this, and end with it.
struct Shared {
    link: Arc<Link>,
    leases: Arc<Leases>,
    hub: Arc<Hub>,
    /// The gate the groups' own calls (reads, writes) pass: at most [`GROUP_CALLS`] in flight.
    calls: Arc<tokio::sync::Semaphore>,
    /// The gate of the calls an election waits for (campaigns, releases): at most
    /// [`ELECTION_CALLS`] in flight, so that they never queue behind member records. In a
    /// take-over of 160 groups every group also republished its member record, and the
    /// campaigns, queued behind them, were won over 0.66 s instead of at once.
    elections: Arc<tokio::sync::Semaphore>,
    tasks: [AbortHandle; 2],
}

/// How many of the groups' own calls (a group's read, its member record) may be in flight on
/// the connection at once. Without a gate, 1,000 groups that
/// start (or a host that takes over hundreds of groups) sent 1,000 calls at once; on a busy
/// machine some missed their timeout, and one call's timeout ends the connection for every
/// group, which fenced every active group and started it all again. A call's timeout counts
/// from the moment it passes the gate; the lease's renewals and the watch do not pass it.
const GROUP_CALLS: usize = 32;

/// How many of the calls an election waits for (campaigns, releases, retirements;
/// [`Shared::elections`]) may be in flight at once. A campaign is one transaction, and etcd
/// commits the transactions in flight together (one raft round for a batch): the cap sets how
/// many rounds a take-over of hundreds of groups takes. At 32, the 200 groups of a cut host
/// were won over 0.8 s (7 rounds on a loaded machine), which left the last of them 0.1 s
/// inside `L` + 1 s.
const ELECTION_CALLS: usize = 128;

impl Drop for Shared {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// What a group's writes need: its keys, and who it is.
#[derive(Debug)]
struct GroupCfg {
    keys: Keys,
    /// The group's name, as its address keys' values name it.
    group: String,
    /// The group's lease in milliseconds, as its address keys' values say it.
    lease_ms: u64,
    /// This node, to tell our leader key from another node's (see `release`).
    node: String,
    /// This host, to tell our node's records from another host's (see `publish_member`).
    host: Option<HostId>,
    /// Timeout of every request of the group's: one renew interval.
    call_timeout: Duration,
}

impl EtcdStore {
    /// `endpoints` are tried in this order, each for at most `connect_timeout`; `prefix` is
    /// the key prefix of every group (a trailing `/` is ignored).
    pub fn new(endpoints: Vec<String>, connect_timeout: Duration, prefix: String) -> EtcdStore {
        EtcdStore {
            endpoints,
            connect_timeout,
            prefix,
            tls: None,
            user: None,
            reader: None,
            secrets: OnceLock::new(),
            shared: Mutex::new(Weak::new()),
        }
    }

    /// Talk TLS to the (`https://`) endpoints.
    pub fn with_tls(mut self, tls: EtcdTls) -> EtcdStore {
        self.tls = Some(tls);
        self
    }

    /// Authenticate as `user`.
    pub fn with_user(mut self, user: EtcdUser) -> EtcdStore {
        self.user = Some(user);
        self
    }

    /// Read the TLS files and the password again with `read` before every round of
    /// connection attempts (a renewed certificate, a changed password file: no restart);
    /// what [`EtcdStore::with_tls`] and [`EtcdStore::with_user`] gave is used until then, and
    /// whenever `read` fails.
    pub fn rereading_secrets(mut self, read: ReadSecrets) -> EtcdStore {
        self.reader = Some(read);
        self
    }

    /// The shared connection, leases and watch; started (on the current runtime) if no group
    /// runs.
    fn shared(&self) -> Arc<Shared> {
        let mut shared = crate::sync::lock(&self.shared);
        if let Some(running) = shared.upgrade() {
            return running;
        }
        let secrets = self
            .secrets
            .get_or_init(|| {
                Arc::new(Secrets::new(
                    self.tls.clone(),
                    self.user.clone(),
                    &self.prefix,
                    self.reader.clone(),
                ))
            })
            .clone();
        let connector = Arc::new(Connector {
            endpoints: self.endpoints.clone(),
            connect_timeout: self.connect_timeout,
            secrets,
            probe_key: format!("{}/", self.prefix.trim_end_matches('/')),
        });
        let link = Arc::new(Link::new());
        let hub = Arc::new(Hub::new(&self.prefix));
        let tasks = [
            tokio::spawn(link::run(link.clone(), connector)).abort_handle(),
            tokio::spawn(hub::run(hub.clone(), link.clone())).abort_handle(),
        ];
        let running = Arc::new(Shared {
            link,
            leases: Arc::new(Leases::default()),
            hub,
            calls: Arc::new(tokio::sync::Semaphore::new(GROUP_CALLS)),
            elections: Arc::new(tokio::sync::Semaphore::new(ELECTION_CALLS)),
            tasks,
        });
        *shared = Arc::downgrade(&running);
        running
    }
}

impl Store for EtcdStore {
    fn open_group(
        &self,
        spec: GroupSpec,
        id: GroupId,
        events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    ) -> GroupSession {
        let (commands, rx) = mpsc::unbounded_channel();
        let renew = spec.renew_interval().max(MIN_RENEW);
        let shared = self.shared();
        shared.link.retry_within(renew);
        let key = LeaseKey {
            node: spec.node.clone(),
            host: spec.host.as_ref().map(|h| h.as_str().to_owned()),
            lease: spec.lease,
        };
        let lease = shared.leases.join(key, &spec.group, &shared.link);
        let cfg = Arc::new(GroupCfg {
            keys: Keys::new(&self.prefix, &spec.group, &spec.node)
                .with_addresses(&spec.address_set()),
            group: spec.group.clone(),
            lease_ms: u64::try_from(spec.lease.as_millis()).unwrap_or(u64::MAX),
            node: spec.node.clone(),
            host: spec.host.clone(),
            call_timeout: renew,
        });
        let task = GroupTask {
            renew,
            report: Reporter::new("etcd", &spec, id, events),
            commands: rx,
            cfg,
            queue: OpQueue::default(),
            links: shared.link.subscribe(),
            hub: shared.hub.subscribe(),
            watch: shared.hub.register(&spec.group),
            lease,
            bound: None,
            dead: None,
            owned: Owned::default(),
            shared,
            spec,
        };
        let task = tokio::spawn(task.run());
        GroupSession { commands, task }
    }
}

/// Floor for the renew interval (and thus every call timeout), so that a tiny lease cannot
/// turn the task into a busy loop. Config refuses leases under 1s, so this never binds there.
const MIN_RENEW: Duration = Duration::from_millis(100);

/// The longest a graceful shutdown waits for each of its two calls.
const SHUTDOWN_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest a keepalive waits for its answer before the member counts as silent (see
/// `lease::keepalive_wait`): etcd answers in milliseconds, and beyond this the
/// reconnection would eat into the fence margin of a 2 s lease.
const MAX_KEEPALIVE_WAIT: Duration = Duration::from_millis(500);

/// The longest pause between two rounds of connection attempts that etcd answered by
/// refusing the credentials or the rights (they double from [`MAX_RETRY_DELAY`]: 1, 2, 4, ... 30 s).
const MAX_AUTH_RETRY_DELAY: Duration = Duration::from_secs(30);

/// The longest pause between two rounds of connection attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// etcd leases are whole seconds: round *up*, so the store never expires the key before the
/// lease the timing argument counts with. (etcd may raise it further to its minimum TTL,
/// 1.5 election timeouts; that only makes standbys wait longer, and the journal says so.)
fn ttl_secs(lease: Duration) -> i64 {
    let secs = lease.as_secs() + u64::from(lease.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone)]
struct Keys {
    /// `PREFIX/GROUP/`: the trailing slash keeps group `web` from seeing group `web2`.
    group: String,
    leader: String,
    switchover: String,
    maintenance: String,
    /// The highest term handed out.
    term: String,
    /// This node's member key.
    member: String,
    /// The group's floating addresses and their keys, `PREFIX/.addresses/ADDRESS` (outside
    /// every group: `.` never starts a group name), sorted.
    addresses: Vec<(std::net::IpAddr, String)>,
}

impl Keys {
    fn new(prefix: &str, group: &str, node: &str) -> Keys {
        let group = format!("{}/{group}/", prefix.trim_end_matches('/'));
        Keys {
            leader: format!("{group}leader"),
            switchover: format!("{group}switchover"),
            maintenance: format!("{group}maintenance"),
            term: format!("{group}term"),
            member: format!("{group}members/{node}"),
            group,
            addresses: Vec::new(),
        }
    }

    /// With the keys of the group's floating `addresses` (sorted, each once:
    /// [`GroupSpec::address_set`]; see [`AddressRecord`]).
    ///
    /// [`AddressRecord`]: crate::store::AddressRecord
    fn with_addresses(mut self, addresses: &[std::net::IpAddr]) -> Keys {
        let root = self
            .group
            .trim_end_matches('/')
            .rsplit_once('/')
            .map_or(String::new(), |(prefix, _)| prefix.to_owned());
        self.addresses = addresses
            .iter()
            .map(|ip| (*ip, format!("{root}/.addresses/{ip}")))
            .collect();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_the_lease_rounded_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_secs(10)), 10);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(ttl_secs(Duration::from_millis(200)), 1);
    }

    #[test]
    fn the_longest_election_timeout_etcd_grants_a_ttl_under() {
        // etcd: min TTL = ⌊3 × ticks / 2⌋ × 100 ms, rounded up to whole seconds.
        let min_ttl = |timeout_ms: i64| {
            let ticks = timeout_ms / 100;
            ((3 * ticks) / 2 * 100 + 999) / 1000
        };
        for ttl in 1..=30 {
            let t = lease::max_election_timeout_ms(ttl);
            assert!(min_ttl(t) <= ttl, "ttl {ttl}: {t} ms");
            assert!(
                min_ttl(t + 100) > ttl,
                "ttl {ttl}: {t} ms is not the longest"
            );
        }
        assert_eq!(lease::max_election_timeout_ms(1), 700);
        assert_eq!(min_ttl(1000), 2, "etcd's defaults raise a 1 s lease to 2 s");
    }

    #[test]
    fn keys_of_one_group_never_match_another() {
        let k = Keys::new("/promd/", "web", "db-a");
        assert_eq!(k.group, "/promd/web/");
        assert_eq!(k.leader, "/promd/web/leader");
        assert_eq!(k.member, "/promd/web/members/db-a");
        assert_eq!(k.switchover, "/promd/web/switchover");
        assert_eq!(k.maintenance, "/promd/web/maintenance");
        assert_eq!(k.term, "/promd/web/term");
        assert!(!"/promd/web2/leader".starts_with(&k.group));
    }

    #[test]
    fn address_keys_sit_beside_the_groups_under_the_prefix() {
        let (v6, v4) = (
            "2001:db8::10".parse().unwrap(),
            "192.0.2.10".parse().unwrap(),
        );
        let spec = GroupSpec {
            group: "web".into(),
            node: "db-a".into(),
            host: None,
            lease: Duration::from_secs(10),
            addresses: vec![v6, v4, v6],
            progress: Default::default(),
        };
        let k = Keys::new("/promd/", "web", "db-a").with_addresses(&spec.address_set());
        let keys: Vec<&str> = k.addresses.iter().map(|(_, key)| key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "/promd/.addresses/192.0.2.10",
                "/promd/.addresses/2001:db8::10"
            ]
        );
        assert!(!keys[0].starts_with(&k.group));
    }
}
