//! The etcd store against a real three-member etcd cluster, through its public interface only:
//! `open_group`, commands in, events out. Each test starts its own cluster.

#[allow(dead_code)]
#[path = "support/etcd.rs"]
mod etcd_support;

#[path = "support/records.rs"]
mod records;

use std::net::{Ipv4Addr, SocketAddr, TcpListener as StdListener};
use std::time::{Duration, Instant};

use etcd_client::{Client, PutOptions};
use promd::agent::GroupId;
use promd::store::etcd::EtcdStore;
use promd::store::{
    GroupSpec, HostId, Leader, LeaderRecord, MaintenanceRecord, MemberRecord, Progress, Store,
    StoreCommand, StoreEvent, UNREADABLE_NODE,
};
use records::{HOST_A, HOST_B, member, member_on};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use etcd_support::EtcdCluster;

const PREFIX: &str = "/promd-test";
/// All of 127.0.0.0/8 is local on Linux: an extra listen address that needs no setup.
const SECOND_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

// ---------------------------------------------------------------------------------------------
// A node: one `open_group` session and every event it reported, with the time it arrived.

struct Node {
    name: String,
    commands: mpsc::UnboundedSender<StoreCommand>,
    events: mpsc::UnboundedReceiver<(Instant, GroupId, StoreEvent)>,
    /// Every event so far, stamped when the store task sent it.
    log: Vec<(Instant, StoreEvent)>,
    /// Events before this index were consumed by `wait_for`.
    cursor: usize,
    progress: Progress,
}

fn store(endpoints: Vec<String>, connect_timeout: Duration) -> EtcdStore {
    EtcdStore::new(endpoints, connect_timeout, PREFIX.to_string())
}

impl Node {
    fn open(store: &EtcdStore, group: &str, name: &str, lease: Duration) -> Node {
        Node::open_on(store, group, name, lease, None)
    }

    /// A node on the host with machine-id `host`.
    fn open_on(
        store: &EtcdStore,
        group: &str,
        name: &str,
        lease: Duration,
        host: Option<&str>,
    ) -> Node {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let (stamped_tx, events) = mpsc::unbounded_channel();
        // Stamp each event as it leaves the store task (the test reads them later).
        tokio::spawn(async move {
            while let Some((index, event)) = rx.recv().await {
                if stamped_tx.send((Instant::now(), index, event)).is_err() {
                    break;
                }
            }
        });
        let progress = Progress::default();
        let spec = GroupSpec {
            group: group.to_string(),
            node: name.to_string(),
            host: host.map(|h| HostId::parse(h).expect("a machine-id")),
            lease,
            progress: progress.clone(),
        };
        let session = store.open_group(spec, GroupId(7), tx);
        Node {
            name: name.to_string(),
            commands: session.commands,
            events,
            log: Vec::new(),
            cursor: 0,
            progress,
        }
    }

    fn send(&self, command: StoreCommand) {
        self.commands.send(command).expect("store task alive");
    }

    fn campaign(&self) {
        self.send(StoreCommand::Campaign(LeaderRecord {
            v: 1,
            node: self.name.clone(),
            priority: 100,
            host: None,
        }));
    }

    fn publish(&self) {
        self.send(StoreCommand::Publish(member(&self.name)));
    }

    fn receive(&mut self, (at, id, event): (Instant, GroupId, StoreEvent)) {
        assert_eq!(id, GroupId(7), "events carry the id given to open_group");
        self.log.push((at, event));
    }

    /// Take in everything that has arrived so far.
    fn drain(&mut self) {
        while let Ok(item) = self.events.try_recv() {
            self.receive(item);
        }
    }

    fn dump(&self, from: usize) -> Vec<&(Instant, StoreEvent)> {
        self.log[from..]
            .iter()
            .filter(|(_, e)| !matches!(e, StoreEvent::Renewed { .. }))
            .collect()
    }

    /// Receive events until `done` says so, at most `within`.
    async fn until<T>(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&Node) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.drain();
            if let Some(v) = done(self) {
                return v;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(item)) => self.receive(item),
                Ok(None) => panic!("{}: event stream ended waiting for {what}", self.name),
                Err(_) => panic!(
                    "{}: no {what} within {within:?}; events (renewals left out): {:#?}",
                    self.name,
                    self.dump(0)
                ),
            }
        }
    }

    /// The first event after the cursor that matches, waiting at most `within` for it.
    async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&StoreEvent) -> bool,
    ) -> (Instant, StoreEvent) {
        let found = self
            .until(within, what, |n| {
                (n.cursor..n.log.len()).find(|&i| pred(&n.log[i].1))
            })
            .await;
        self.cursor = found + 1;
        self.log[found].clone()
    }

    async fn up(&mut self, within: Duration) -> Instant {
        self.wait_for(within, "Up", |e| *e == StoreEvent::Up)
            .await
            .0
    }

    async fn campaigned(&mut self) -> Option<u64> {
        match self
            .wait_for(Duration::from_secs(5), "Campaigned", |e| {
                matches!(e, StoreEvent::Campaigned(_))
            })
            .await
            .1
        {
            StoreEvent::Campaigned(term) => term,
            _ => unreachable!(),
        }
    }

    /// The last `Leader` event, and when it was sent.
    fn leader(&self) -> Option<(Instant, Option<&Leader>)> {
        self.log.iter().rev().find_map(|(at, e)| match e {
            StoreEvent::Leader(l) => Some((*at, l.as_ref())),
            _ => None,
        })
    }

    /// Wait until the last `Leader` event matches; when it was sent.
    async fn leader_where(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(Option<&Leader>) -> bool,
    ) -> Instant {
        self.until(within, what, |n| {
            n.leader().and_then(|(at, l)| pred(l).then_some(at))
        })
        .await
    }

    async fn leader_is(&mut self, node: &str, term: u64) -> Instant {
        self.leader_where(
            Duration::from_secs(5),
            &format!("Leader({node}, {term})"),
            |l| l.is_some_and(|l| l.node == node && l.term == term),
        )
        .await
    }

    async fn leader_none(&mut self, within: Duration) -> Instant {
        self.leader_where(within, "Leader(None)", |l| l.is_none())
            .await
    }

    /// Wait until the last `Members` event matches.
    async fn members_where(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[MemberRecord]) -> bool,
    ) {
        self.until(within, what, |n| {
            n.log
                .iter()
                .rev()
                .find_map(|(_, e)| match e {
                    StoreEvent::Members(m) => Some(pred(m)),
                    _ => None,
                })
                .filter(|ok| *ok)
        })
        .await;
    }

    /// Collect events for `period` (an observation window, not a synchronisation).
    async fn watch_for(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.receive(item);
        }
    }

    /// Wait until the store task has ended (its event channel closes), at most `within`.
    async fn ended(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(item)) => self.receive(item),
                Ok(None) => return,
                Err(_) => panic!("{}: task still running after {within:?}", self.name),
            }
        }
    }

    /// The next `Maintenance` event after the cursor, and when it was sent.
    async fn next_maintenance(&mut self, within: Duration) -> (Instant, Option<MaintenanceRecord>) {
        match self
            .wait_for(within, "Maintenance", |e| {
                matches!(e, StoreEvent::Maintenance(_))
            })
            .await
        {
            (at, StoreEvent::Maintenance(m)) => (at, m),
            _ => unreachable!(),
        }
    }

    fn renewals(&self) -> Vec<Instant> {
        self.log
            .iter()
            .filter_map(|(_, e)| match e {
                StoreEvent::Renewed { sent_at } => Some(*sent_at),
                _ => None,
            })
            .collect()
    }

    fn events_since(&self, t: Instant) -> Vec<&StoreEvent> {
        self.log
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, e)| e)
            .collect()
    }
}

/// `node`'s record in `members` is the one from `host` with `priority`.
fn shows(members: &[MemberRecord], node: &str, host: &str, priority: i32) -> bool {
    members
        .iter()
        .any(|m| m.node == node && m.host.as_deref() == Some(host) && m.priority == priority)
}

fn maintenance(on: bool, by: &str) -> MaintenanceRecord {
    MaintenanceRecord {
        v: 1,
        on,
        by: by.to_string(),
    }
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of one etcd member, to cut a session off without touching etcd.

struct Proxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .parse()
            .expect("endpoint is ip:port");
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy addr");
        let (frozen, rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) aborts every connection.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        if let Ok((inbound, _)) = accepted {
                            connections.spawn(relay(inbound, upstream, rx.clone()));
                        }
                    }
                    Some(_) = connections.join_next() => {}
                }
            }
        });
        Proxy { addr, frozen, task }
    }

    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A silent partition: connections stay open, nothing gets through either way, and new
    /// connections are accepted and held the same way.
    fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forward again; connections held while frozen are closed, so clients notice at once.
    fn heal(&self) {
        self.frozen.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(mut inbound: TcpStream, upstream: SocketAddr, mut frozen: watch::Receiver<bool>) {
    if *frozen.borrow() {
        let _ = frozen.wait_for(|f| !*f).await;
        return;
    }
    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = async { frozen.wait_for(|f| *f).await.map(|_| ()) } => {
            // Hold both sockets, read nothing, send nothing, until healed.
            let _ = frozen.wait_for(|f| !*f).await;
        }
    }
}

// ---------------------------------------------------------------------------------------------

/// Five nodes campaign for one vacant key at the same moment: exactly one wins, and everyone
/// sees that one as the leader. Graceful shutdown of the winner frees the key at once.
#[tokio::test(flavor = "current_thread")]
async fn five_contenders_one_winner() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let lease = secs(3.0);
    let mut nodes: Vec<Node> = (1..=5)
        .map(|i| Node::open(&store, "race", &format!("n{i}"), lease))
        .collect();
    for n in &mut nodes {
        n.up(secs(10.0)).await;
        n.leader_none(secs(1.0)).await;
        n.publish();
    }
    for n in &mut nodes {
        n.members_where(secs(5.0), "all five members", |m| m.len() == 5)
            .await;
    }

    for n in &nodes {
        n.campaign();
    }
    let mut winners = Vec::new();
    for n in &mut nodes {
        if let Some(term) = n.campaigned().await {
            winners.push((n.name.clone(), term));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let (winner, term) = winners[0].clone();
    for n in &mut nodes {
        n.leader_is(&winner, term).await;
    }

    // Graceful stop: the lease is revoked, so the key goes now, not after the lease.
    let w = nodes
        .iter()
        .position(|n| n.name == winner)
        .expect("winner is a node");
    let stopped_at = Instant::now();
    nodes[w].send(StoreCommand::Shutdown);
    for (i, n) in nodes.iter_mut().enumerate() {
        if i == w {
            continue;
        }
        let seen = n.leader_none(secs(2.0)).await;
        assert!(
            seen - stopped_at < secs(1.0),
            "shutdown hands over at once, took {:?}",
            seen - stopped_at
        );
        n.members_where(secs(2.0), "members without the winner", |m| {
            m.len() == 4 && m.iter().all(|m| m.node != winner)
        })
        .await;
    }
}

/// The term (the leader key's create revision) grows with every change of leader, a held key
/// refuses other campaigns, and a released key is reported gone within milliseconds.
#[tokio::test(flavor = "current_thread")]
async fn term_grows_with_every_change_of_leader() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let mut nodes: Vec<Node> = ["a", "b", "c"]
        .iter()
        .map(|name| Node::open(&store, "terms", name, secs(3.0)))
        .collect();
    for n in &mut nodes {
        n.up(secs(10.0)).await;
    }

    let mut last_term = 0;
    let mut release_latency = Vec::new();
    for round in 0..6 {
        let (w, other) = (round % 3, (round + 1) % 3);
        nodes[w].campaign();
        let term = nodes[w].campaigned().await.expect("a vacant key is won");
        assert!(
            term > last_term,
            "round {round}: term {term} after {last_term}"
        );
        last_term = term;
        let name = nodes[w].name.clone();
        for n in &mut nodes {
            n.leader_is(&name, term).await;
        }

        nodes[other].campaign();
        assert_eq!(
            nodes[other].campaigned().await,
            None,
            "a held key is refused"
        );

        nodes[w].send(StoreCommand::Release { term });
        let (released, _) = nodes[w]
            .wait_for(secs(5.0), "Released", |e| *e == StoreEvent::Released)
            .await;
        let seen = nodes[other].leader_none(secs(2.0)).await;
        release_latency.push(seen.saturating_duration_since(released));
        for n in &mut nodes {
            n.leader_none(secs(2.0)).await;
        }
    }
    // Releasing a term that is no longer ours is answered too, and deletes nothing.
    nodes[0].campaign();
    let term = nodes[0].campaigned().await.expect("won");
    nodes[1].leader_is("a", term).await;
    nodes[1].send(StoreCommand::Release { term: term - 1 });
    nodes[1]
        .wait_for(secs(5.0), "Released", |e| *e == StoreEvent::Released)
        .await;
    nodes[1].watch_for(secs(0.3)).await;
    assert!(
        nodes[1]
            .leader()
            .is_some_and(|(_, l)| l.is_some_and(|l| l.node == "a" && l.term == term)),
        "a stale release deleted the key"
    );

    let worst = release_latency.iter().max().copied().unwrap_or_default();
    eprintln!("watch latency after Released: {release_latency:?}");
    assert!(
        worst < secs(0.5),
        "a deleted key is seen within milliseconds: {worst:?}"
    );
}

/// A leader cut off silently (packets vanish) keeps the key exactly as long as the lease
/// counted from the send time of its last acknowledged renewal, and not much longer. When it
/// comes back, etcd says the lease is gone: `LeaseLost`, a new lease, `Up`.
#[tokio::test(flavor = "current_thread")]
async fn silent_leader_loses_the_key_after_the_lease() {
    let cluster = EtcdCluster::start(3, &[]);
    let lease = secs(2.0);
    let proxy = Proxy::start(&cluster.endpoints()[0]).await;
    let cut_store = store(vec![proxy.endpoint()], secs(0.3));
    let direct = store(cluster.endpoints(), secs(1.0));
    let mut leader = Node::open(&cut_store, "cut", "lead", lease);
    let mut other = Node::open(&direct, "cut", "other", lease);
    leader.up(secs(10.0)).await;
    other.up(secs(10.0)).await;
    leader.campaign();
    let term = leader.campaigned().await.expect("won");
    other.leader_is("lead", term).await;
    // A couple of renewals, so the cut falls in the steady state.
    for _ in 0..2 {
        leader
            .wait_for(secs(2.0), "Renewed", |e| {
                matches!(e, StoreEvent::Renewed { .. })
            })
            .await;
    }

    proxy.freeze();
    let frozen_at = Instant::now();
    let gone = other.leader_none(lease + secs(3.0)).await;
    let (down_at, _) = leader
        .wait_for(secs(1.0), "Down", |e| matches!(e, StoreEvent::Down(_)))
        .await;
    leader.drain();
    let last_sent = *leader
        .renewals()
        .iter()
        .max()
        .expect("renewed at least once");
    assert!(last_sent <= frozen_at, "no renewal gets through the cut");
    let held = gone - last_sent;
    eprintln!(
        "key gone {held:?} after the last renewal was sent (lease {lease:?}); \
         leader saw Down {:?} after it",
        down_at - last_sent
    );
    assert!(
        held >= lease,
        "the key outlived no lease: gone after {held:?}"
    );
    assert!(
        held <= lease + secs(1.5),
        "an expired lease frees the key promptly: {held:?}"
    );
    // The keepalive that goes unanswered is noticed within about two renew intervals.
    assert!(
        down_at - last_sent < lease,
        "Down reported {:?} after the last renewal",
        down_at - last_sent
    );
    // While cut off, a campaign is answered at once.
    let asked = Instant::now();
    leader.campaign();
    assert_eq!(leader.campaigned().await, None);
    assert!(asked.elapsed() < secs(0.2), "answered at once while down");
    // The task keeps beating while it cannot reach etcd.
    let age = leader.progress.age().expect("beaten");
    assert!(age < lease / 3, "progress beaten {age:?} ago");
    // A release cannot be confirmed while cut off: no answer until etcd says more.
    leader.send(StoreCommand::Release { term });
    leader.watch_for(secs(0.5)).await;
    assert!(
        !leader.log.iter().any(|(_, e)| *e == StoreEvent::Released),
        "Released while unreachable"
    );

    proxy.heal();
    // Back in touch: etcd says the lease is gone, and with it the key, so the release is done.
    leader
        .wait_for(secs(5.0), "LeaseLost", |e| *e == StoreEvent::LeaseLost)
        .await;
    leader
        .wait_for(secs(1.0), "Released", |e| *e == StoreEvent::Released)
        .await;
    leader.up(secs(5.0)).await;
    leader
        .wait_for(secs(2.0), "Renewed", |e| {
            matches!(e, StoreEvent::Renewed { .. })
        })
        .await;
    leader.leader_none(secs(2.0)).await;
    leader.campaign();
    let next = leader.campaigned().await.expect("the key is free again");
    assert!(next > term, "new term {next} > {term}");
}

/// A cut shorter than the lease costs nothing: the session reports `Down`, reconnects with
/// the same lease (no `LeaseLost`), and the leader key and term survive.
#[tokio::test(flavor = "current_thread")]
async fn short_cut_keeps_the_lease_and_the_key() {
    let cluster = EtcdCluster::start(3, &[]);
    let lease = secs(9.0);
    let proxy = Proxy::start(&cluster.endpoints()[1]).await;
    let cut_store = store(vec![proxy.endpoint()], secs(0.3));
    let direct = store(cluster.endpoints(), secs(1.0));
    let mut leader = Node::open(&cut_store, "blip", "lead", lease);
    let mut other = Node::open(&direct, "blip", "other", lease);
    leader.up(secs(10.0)).await;
    other.up(secs(10.0)).await;
    leader.campaign();
    let term = leader.campaigned().await.expect("won");
    other.leader_is("lead", term).await;

    proxy.freeze();
    let frozen_at = Instant::now();
    let (down_at, _) = leader
        .wait_for(lease, "Down", |e| matches!(e, StoreEvent::Down(_)))
        .await;
    // A record published while cut off is written once the session is back.
    leader.publish();
    proxy.heal();
    let back = leader.up(secs(4.0)).await;
    leader
        .wait_for(secs(2.0), "Renewed", |e| {
            matches!(e, StoreEvent::Renewed { .. })
        })
        .await;
    eprintln!(
        "down {:?} after the freeze, up again {:?} after it (lease {lease:?})",
        down_at - frozen_at,
        back - frozen_at
    );
    leader.leader_is("lead", term).await;
    assert!(
        !leader.log.iter().any(|(_, e)| *e == StoreEvent::LeaseLost),
        "the lease survived a short cut"
    );
    other.watch_for(secs(0.5)).await;
    assert!(
        !other
            .events_since(frozen_at)
            .iter()
            .any(|e| matches!(e, StoreEvent::Leader(None))),
        "the key never went away"
    );
    other.campaign();
    assert_eq!(other.campaigned().await, None);
    other
        .members_where(secs(2.0), "Members = [lead]", |m| {
            m.len() == 1 && m[0].node == "lead"
        })
        .await;
}

/// A lease revoked behind a session's back (as if it had expired) is reported as `LeaseLost`
/// at the next keepalive; the session takes a new lease, writes its member record again and
/// is `Up`; the old key is gone for everyone at once.
#[tokio::test(flavor = "current_thread")]
async fn revoked_lease_is_reported_and_replaced() {
    let cluster = EtcdCluster::start(3, &[]);
    let lease = secs(3.0);
    let store = store(cluster.endpoints(), secs(1.0));
    let mut a = Node::open(&store, "revoke", "a", lease);
    let mut b = Node::open(&store, "revoke", "b", lease);
    a.up(secs(10.0)).await;
    b.up(secs(10.0)).await;
    a.publish();
    a.campaign();
    let term = a.campaigned().await.expect("won");
    b.leader_is("a", term).await;
    b.members_where(secs(2.0), "Members = [a]", |m| m.len() == 1)
        .await;

    let mut raw = Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    let member_key = format!("{PREFIX}/revoke/members/a");
    let old_lease = raw.get(member_key.as_str(), None).await.expect("get").kvs()[0].lease();
    raw.lease_revoke(old_lease).await.expect("revoke");
    let revoked = Instant::now();

    let gone = b.leader_none(secs(1.0)).await;
    assert!(
        gone - revoked < secs(0.5),
        "watch-driven: {:?}",
        gone - revoked
    );
    let (lost, _) = a
        .wait_for(lease, "LeaseLost", |e| *e == StoreEvent::LeaseLost)
        .await;
    assert!(
        lost - revoked <= lease / 3 + secs(0.5),
        "noticed at the next keepalive: {:?}",
        lost - revoked
    );
    a.up(secs(2.0)).await;
    a.wait_for(secs(2.0), "Renewed", |e| {
        matches!(e, StoreEvent::Renewed { .. })
    })
    .await;
    b.members_where(secs(2.0), "Members = [a] again", |m| {
        m.len() == 1 && m[0].node == "a"
    })
    .await;
    let new_lease = raw.get(member_key.as_str(), None).await.expect("get").kvs()[0].lease();
    assert_ne!(new_lease, old_lease, "the record is bound to the new lease");
    a.campaign();
    let next = a.campaigned().await.expect("won again");
    assert!(next > term);
}

/// Killing the etcd member a leader is connected to, which is also the raft leader, changes
/// nothing a user sees: the leader keeps renewing (from another member), nobody else gets the
/// key, the term stays.
#[tokio::test(flavor = "current_thread")]
async fn killing_an_etcd_member_under_the_leader_changes_nothing() {
    let mut cluster = EtcdCluster::start(3, &[]);
    let lease = secs(5.0);
    let raft_leader = cluster.leader().expect("the cluster has a leader");
    let endpoints = cluster.endpoints();
    // The leader's session connects to the raft leader first (the configured order).
    let mut ordered = vec![endpoints[raft_leader].clone()];
    ordered.extend(
        endpoints
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != raft_leader)
            .map(|(_, e)| e.clone()),
    );
    let others: Vec<String> = ordered[1..].to_vec();
    let lead_store = store(ordered, secs(1.0));
    let other_store = store(others, secs(1.0));
    let mut leader = Node::open(&lead_store, "kill", "lead", lease);
    let mut other = Node::open(&other_store, "kill", "other", lease);
    leader.up(secs(10.0)).await;
    other.up(secs(10.0)).await;
    leader.campaign();
    let term = leader.campaigned().await.expect("won");
    other.leader_is("lead", term).await;
    leader
        .wait_for(secs(3.0), "Renewed", |e| {
            matches!(e, StoreEvent::Renewed { .. })
        })
        .await;

    let killed_at = Instant::now();
    cluster.kill_member(raft_leader);
    // Two lease periods.
    tokio::join!(leader.watch_for(2 * lease), other.watch_for(2 * lease));

    let renewals = leader.renewals();
    let after: Vec<&Instant> = renewals.iter().filter(|t| **t > killed_at).collect();
    assert!(
        after.len() >= 3,
        "renewals went on after the kill: {after:?}"
    );
    let worst_gap = renewals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    eprintln!(
        "longest gap between renewals' send times: {worst_gap:?} (lease {lease:?}); leader events after the kill: {:?}",
        leader.events_since(killed_at)
    );
    assert!(
        worst_gap < lease * 4 / 5,
        "the leader would have had to demote: renewal gap {worst_gap:?}"
    );
    assert!(
        !leader
            .events_since(killed_at)
            .contains(&&StoreEvent::LeaseLost),
        "lease kept"
    );
    for n in [&leader, &other] {
        for e in n.events_since(killed_at) {
            if let StoreEvent::Leader(l) = e {
                assert_eq!(
                    l.as_ref().map(|l| (l.node.as_str(), l.term)),
                    Some(("lead", term)),
                    "{}: leader changed",
                    n.name
                );
            }
        }
    }
    other.campaign();
    assert_eq!(other.campaigned().await, None, "the key is still held");

    // The harness brings the member back on its data dir (this blocks the runtime meanwhile).
    assert_eq!(cluster.member_pid(raft_leader), None);
    cluster.restart_member(raft_leader);
    assert!(cluster.member_pid(raft_leader).is_some());
    assert!(cluster.leader().is_some());
}

/// An endpoint that accepts connections but never answers (and one that refuses them) is
/// passed over after the connect timeout; the session comes up on the next endpoint. With no
/// reachable endpoint at all, the session reports `Down`, answers campaigns at once and keeps
/// beating.
#[tokio::test(flavor = "current_thread")]
async fn unreachable_first_endpoint_falls_through() {
    let cluster = EtcdCluster::start(3, &[]);
    // A listener that never accepts: the kernel completes the handshake, nobody answers.
    let blackhole = StdListener::bind("127.0.0.1:0").expect("bind");
    let blackhole_url = format!("http://{}", blackhole.local_addr().expect("addr"));
    let refused_url = {
        let l = StdListener::bind("127.0.0.1:0").expect("bind");
        format!("http://{}", l.local_addr().expect("addr"))
    };
    let connect_timeout = secs(0.7);
    let mut endpoints = vec![refused_url, blackhole_url.clone()];
    endpoints.extend(cluster.endpoints());
    let store = store(endpoints, connect_timeout);

    let opened = Instant::now();
    let mut node = Node::open(&store, "fall", "n1", secs(3.0));
    let up = node.up(secs(10.0)).await - opened;
    eprintln!("up after {up:?} (connect timeout {connect_timeout:?})");
    assert!(
        up >= connect_timeout,
        "the silent endpoint was tried first, for the connect timeout: {up:?}"
    );
    assert!(
        up < connect_timeout + secs(1.0),
        "then the next one at once: {up:?}"
    );
    assert!(
        !node
            .log
            .iter()
            .any(|(_, e)| matches!(e, StoreEvent::Down(_))),
        "falling through is not an outage"
    );
    node.campaign();
    assert!(node.campaigned().await.is_some());

    // Nothing reachable: Down, and campaigns are answered without waiting for the network.
    let dead = self::store(vec![blackhole_url], connect_timeout);
    let mut lonely = Node::open(&dead, "fall", "n2", secs(3.0));
    let (down_at, down) = lonely
        .wait_for(secs(3.0), "Down", |e| matches!(e, StoreEvent::Down(_)))
        .await;
    eprintln!("{down:?}");
    assert!(down_at - opened < secs(10.0));
    let asked = Instant::now();
    lonely.campaign();
    assert_eq!(lonely.campaigned().await, None);
    assert!(asked.elapsed() < secs(0.2), "answered at once while down");
    lonely.watch_for(secs(2.0)).await;
    let age = lonely.progress.age().expect("beaten");
    assert!(age < secs(1.0), "progress beaten {age:?} ago while down");
    assert!(
        lonely
            .log
            .iter()
            .filter(|(_, e)| matches!(e, StoreEvent::Down(_)))
            .count()
            == 1,
        "Down is reported once per outage, not per attempt"
    );
}

/// A leader value that is not promd's is reported and still blocks the election; a corrupt
/// or mislabelled member record is reported and left out of `Members`.
#[tokio::test(flavor = "current_thread")]
async fn corrupt_values_are_reported_and_the_leader_key_still_blocks() {
    let cluster = EtcdCluster::start(3, &[SECOND_LOOPBACK]);
    let mut raw = Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    let key = |k: &str| format!("{PREFIX}/bad/{k}");
    let put = raw.put(key("leader"), "not json", None).await.expect("put");
    let created = put.header().expect("header").revision() as u64;
    raw.put(key("members/junk"), r#"{"v":9}"#, None)
        .await
        .expect("put");
    raw.put(
        key("members/liar"),
        serde_json::to_vec(&member("someone-else")).expect("json"),
        None,
    )
    .await
    .expect("put");
    // Another group's keys are not this group's business.
    raw.put(format!("{PREFIX}/bad2/leader"), "x", None)
        .await
        .expect("put");

    // Through a second listen address, as containers reach etcd over their veth link.
    let store = store(cluster.endpoints_via(SECOND_LOOPBACK), secs(1.0));
    let mut node = Node::open(&store, "bad", "good", secs(3.0));
    node.up(secs(10.0)).await;
    node.leader_where(secs(2.0), "unreadable leader", |l| {
        l.is_some_and(|l| l.node == UNREADABLE_NODE && l.term == created)
    })
    .await;
    node.drain();
    let corrupt: Vec<String> = node
        .log
        .iter()
        .filter_map(|(_, e)| match e {
            StoreEvent::Corrupt { key, .. } => Some(key.clone()),
            _ => None,
        })
        .collect();
    assert!(corrupt.contains(&key("leader")), "{corrupt:?}");
    assert!(corrupt.contains(&key("members/junk")), "{corrupt:?}");
    assert!(corrupt.contains(&key("members/liar")), "{corrupt:?}");
    assert_eq!(corrupt.len(), 3, "{corrupt:?}");

    node.campaign();
    assert_eq!(
        node.campaigned().await,
        None,
        "an unreadable leader is a leader"
    );

    node.publish();
    node.members_where(secs(3.0), "Members = [good]", |m| {
        m.len() == 1 && m[0].node == "good"
    })
    .await;
    // A corrupt value written while watching is reported the same way.
    let lease = raw.lease_grant(30, None).await.expect("grant").id();
    raw.put(
        key("switchover"),
        "{}",
        Some(PutOptions::new().with_lease(lease)),
    )
    .await
    .expect("put");
    node.wait_for(
        secs(2.0),
        "Corrupt switchover",
        |e| matches!(e, StoreEvent::Corrupt { key: k, .. } if *k == key("switchover")),
    )
    .await;
    node.wait_for(secs(2.0), "Switchover(None)", |e| {
        *e == StoreEvent::Switchover(None)
    })
    .await;

    // Once the foreign key is gone, the election is open again.
    raw.delete(key("leader"), None).await.expect("delete");
    node.leader_none(secs(2.0)).await;
    node.campaign();
    let term = node.campaigned().await.expect("won");
    node.leader_is("good", term).await;
}

/// Maintenance mode is a key bound to no lease: set by one session, seen by every session of
/// the group, still there after its setter shut down and revoked its lease, reported to a new
/// session after `Switchover`, and cleared (deleted) by anyone. An unreadable value is
/// reported and taken as on; clearing deletes it too. A change asked for right before a
/// shutdown is written before the session leaves.
#[tokio::test(flavor = "current_thread")]
async fn maintenance_outlives_the_session_that_set_it() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let lease = secs(3.0);
    let within = secs(2.0);
    let mut raw = Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    let key = format!("{PREFIX}/maint/maintenance");

    let mut a = Node::open(&store, "maint", "a", lease);
    let mut b = Node::open(&store, "maint", "b", lease);
    for n in [&mut a, &mut b] {
        n.up(secs(10.0)).await;
        assert_eq!(n.next_maintenance(within).await.1, None, "off at first");
    }
    a.publish();
    b.members_where(within, "Members = [a]", |m| m.len() == 1)
        .await;

    let on = maintenance(true, "a");
    a.send(StoreCommand::SetMaintenance(on.clone()));
    for n in [&mut a, &mut b] {
        assert_eq!(n.next_maintenance(within).await.1, Some(on.clone()));
    }
    let stored = raw.get(key.as_str(), None).await.expect("get");
    assert_eq!(stored.kvs()[0].lease(), 0, "bound to no lease");

    // A leaves: member record deleted, lease revoked, task ended.
    let member_key = format!("{PREFIX}/maint/members/a");
    let a_lease = raw.get(member_key.as_str(), None).await.expect("get").kvs()[0].lease();
    a.send(StoreCommand::Shutdown);
    a.ended(within).await;
    let ttl = raw.lease_time_to_live(a_lease, None).await.expect("ttl");
    assert_eq!(ttl.ttl(), -1, "a's lease is revoked");
    b.members_where(within, "Members = []", |m| m.is_empty())
        .await;
    let stored = raw.get(key.as_str(), None).await.expect("get");
    assert_eq!(
        stored.kvs().len(),
        1,
        "the maintenance key outlived a's lease"
    );

    // A new session: the key is reported after connecting, in the contract's order.
    let mut c = Node::open(&store, "maint", "c", lease);
    c.up(secs(10.0)).await;
    assert_eq!(c.next_maintenance(within).await.1, Some(on.clone()));
    let order: Vec<&str> = c
        .log
        .iter()
        .map(|(_, e)| e.kind())
        .filter(|k| *k != "Renewed")
        .collect();
    assert_eq!(
        order,
        ["Up", "Leader", "Members", "Switchover", "Maintenance"]
    );

    let off_sent = Instant::now();
    c.send(StoreCommand::SetMaintenance(maintenance(false, "c")));
    for n in [&mut b, &mut c] {
        let (at, m) = n.next_maintenance(within).await;
        assert_eq!(m, None, "{}", n.name);
        // The first change b saw since `on` is c's: a's shutdown deleted nothing.
        assert!(at >= off_sent, "{}: off before it was asked for", n.name);
    }
    let stored = raw.get(key.as_str(), None).await.expect("get");
    assert!(stored.kvs().is_empty(), "off is the key's absence");

    // An unreadable value: reported, and taken as on, by the watch and by a fresh read.
    raw.put(key.as_str(), "not json", None).await.expect("put");
    let unreadable = Some(maintenance(true, UNREADABLE_NODE));
    for n in [&mut b, &mut c] {
        n.wait_for(
            within,
            "Corrupt maintenance",
            |e| matches!(e, StoreEvent::Corrupt { key: k, .. } if *k == key),
        )
        .await;
        assert_eq!(n.next_maintenance(within).await.1, unreadable);
    }
    let mut d = Node::open(&store, "maint", "d", lease);
    d.up(secs(10.0)).await;
    d.wait_for(
        within,
        "Corrupt maintenance",
        |e| matches!(e, StoreEvent::Corrupt { key: k, .. } if *k == key),
    )
    .await;
    assert_eq!(d.next_maintenance(within).await.1, unreadable);
    // Turning maintenance off clears an unreadable value too.
    d.send(StoreCommand::SetMaintenance(maintenance(false, "d")));
    for n in [&mut b, &mut c, &mut d] {
        assert_eq!(n.next_maintenance(within).await.1, None, "{}", n.name);
    }

    // Asked for right before a shutdown: written before the session leaves.
    let on_d = maintenance(true, "d");
    d.send(StoreCommand::SetMaintenance(on_d.clone()));
    d.send(StoreCommand::Shutdown);
    d.ended(within).await;
    let stored = raw.get(key.as_str(), None).await.expect("get");
    assert_eq!(
        stored.kvs().first().map(|kv| kv.value().to_vec()),
        Some(serde_json::to_vec(&on_d).expect("json")),
    );
    assert_eq!(b.next_maintenance(within).await.1, Some(on_d));
}

/// Two hosts configured with one `node`: the second host's promd never overwrites the first's
/// member record, so both views keep showing the first host's record (and the runtime of the
/// second, seeing its node's record written on another host, refuses to run). A later run on
/// the first host itself, whose old lease is still alive as after a kill -9, replaces the
/// record at once.
#[tokio::test(flavor = "current_thread")]
async fn a_node_name_held_by_another_host_is_never_taken_over() {
    let cluster = EtcdCluster::start(1, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let mut a = Node::open_on(&store, "dup", "n1", secs(3.0), Some(HOST_A));
    a.up(secs(10.0)).await;
    a.send(StoreCommand::Publish(member_on("n1", HOST_A, 100)));
    a.members_where(secs(5.0), "n1 from host A", |m| shows(m, "n1", HOST_A, 100))
        .await;

    // Published before the session is up (written by `establish`), and again once up.
    let mut b = Node::open_on(&store, "dup", "n1", secs(3.0), Some(HOST_B));
    b.send(StoreCommand::Publish(member_on("n1", HOST_B, 50)));
    b.up(secs(10.0)).await;
    b.send(StoreCommand::Publish(member_on("n1", HOST_B, 51)));
    b.members_where(secs(5.0), "n1 from host A in B's view", |m| {
        shows(m, "n1", HOST_A, 100)
    })
    .await;
    b.watch_for(secs(0.5)).await;
    a.watch_for(secs(0.1)).await;
    for n in [&a, &b] {
        let overwritten = n.log.iter().any(|(_, e)| {
            matches!(e, StoreEvent::Members(m) if m.iter().any(|r| r.host.as_deref() == Some(HOST_B)))
        });
        assert!(
            !overwritten,
            "{}: saw host B's record: {:#?}",
            n.name,
            n.dump(0)
        );
    }

    // The same host again (a restarted promd), while the first run's lease still lives.
    let mut a2 = Node::open_on(&store, "dup", "n1", secs(3.0), Some(HOST_A));
    a2.send(StoreCommand::Publish(member_on("n1", HOST_A, 70)));
    a2.up(secs(10.0)).await;
    a2.members_where(secs(5.0), "the new run's record", |m| {
        shows(m, "n1", HOST_A, 70)
    })
    .await;
}

/// A refused duplicate leaves the first host's member record alone when it shuts down. The
/// second host's promd (same `node`, another machine) finds the first host's record, refuses
/// and shuts its store session down; that shutdown must delete only a record of its own. Were
/// the first host's record deleted, the first host would drop out of every view (standbys,
/// `promctl status`, demote) without knowing, and the duplicate's next start would find the
/// key free, write its own record there, and make the legitimate host refuse and exit.
#[tokio::test(flavor = "current_thread")]
async fn a_refused_duplicate_leaves_the_first_hosts_member_record_at_shutdown() {
    let cluster = EtcdCluster::start(1, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let mut a = Node::open_on(&store, "dup2", "n1", secs(3.0), Some(HOST_A));
    a.send(StoreCommand::Publish(member_on("n1", HOST_A, 100)));
    a.up(secs(10.0)).await;
    a.members_where(secs(5.0), "n1 from host A", |m| shows(m, "n1", HOST_A, 100))
        .await;

    let mut b = Node::open_on(&store, "dup2", "n1", secs(3.0), Some(HOST_B));
    b.send(StoreCommand::Publish(member_on("n1", HOST_B, 50)));
    b.up(secs(10.0)).await;
    b.members_where(secs(5.0), "n1 from host A in B's view", |m| {
        shows(m, "n1", HOST_A, 100)
    })
    .await;
    // B's runtime refuses: it shuts its session down, as on SIGTERM.
    b.send(StoreCommand::Shutdown);
    b.ended(secs(5.0)).await;

    let mut raw = Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    let key = format!("{PREFIX}/dup2/members/n1");
    let stored = raw.get(key.as_str(), None).await.expect("get");
    let value = stored
        .kvs()
        .first()
        .map(|kv| kv.value_str().unwrap_or("?").to_string());
    assert!(
        value.as_deref().is_some_and(|v| v.contains(HOST_A)),
        "host A's member record after B's shutdown: {value:?}"
    );
    a.watch_for(secs(0.3)).await;
    a.members_where(secs(1.0), "n1 from host A still in A's view", |m| {
        shows(m, "n1", HOST_A, 100)
    })
    .await;
}
