//! Issue 13: the groups of one `EtcdStore` (one promd) share one connection, one lease per
//! lease length and one watch, so the store's traffic does not grow with the group count.
//! What a user can check from outside: `etcdctl lease list`, etcd's own count of keepalives,
//! the process's TCP connections; and what sharing must not change: a revoked lease is a loss
//! for every group on it and each goes on under a new one; one group's release or removal
//! leaves the others alone. Each test starts its own cluster.

#[path = "support/contract/mod.rs"]
mod contract;

use std::collections::{BTreeSet, HashSet};
use std::time::{Duration, Instant};

use contract::etcd::{PREFIX, store};
use contract::etcd_cluster::EtcdCluster;
use contract::{Link, Node, Opening, SOON, secs};
use futures_util::future::join_all;
use promd::store::etcd::EtcdStore;
use promd::store::{StoreCommand, StoreEvent};

/// `count` groups `g0`, `g1`, … of node `n1` on `store`, all with `lease`, each up.
async fn groups(store: &EtcdStore, count: usize, lease: Duration, from: usize) -> Vec<Node> {
    let mut nodes: Vec<Node> = (from..from + count)
        .map(|i| {
            let group = format!("g{i}");
            Node::open(
                store,
                Link::NONE,
                Opening {
                    group: &group,
                    name: "n1",
                    lease,
                    host: None,
                    addresses: &[],
                },
            )
        })
        .collect();
    join_all(nodes.iter_mut().map(|n| n.up(secs(10.0)))).await;
    nodes
}

/// The leases etcd has, as `etcdctl lease list` shows them (hex ids).
fn lease_list(cluster: &EtcdCluster) -> BTreeSet<String> {
    cluster
        .etcdctl(&["lease", "list"])
        .lines()
        .skip(1)
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// etcd's count of the keepalive requests it received (over every member).
const KEEPALIVES: &str = "grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\"";

/// Established TCP connections of this process to the cluster's client ports, from
/// `/proc/self/net/tcp{,6}` and the sockets among `/proc/self/fd`.
fn connections_to(cluster: &EtcdCluster) -> usize {
    let ports: HashSet<u16> = cluster
        .endpoints()
        .iter()
        .filter_map(|e| e.rsplit(':').next()?.parse().ok())
        .collect();
    let ours: HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|entry| {
            let link = std::fs::read_link(entry.ok()?.path()).ok()?;
            let link = link.to_string_lossy();
            Some(
                link.strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_string(),
            )
        })
        .collect();
    ["/proc/self/net/tcp", "/proc/self/net/tcp6"]
        .iter()
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let fields: Vec<&str> = line.split_whitespace().collect();
                    // sl local rem st tx:rx tr:when retrnsmt uid timeout inode
                    let (Some(remote), Some(state), Some(inode)) =
                        (fields.get(2), fields.get(3), fields.get(9))
                    else {
                        return false;
                    };
                    let port = remote
                        .rsplit(':')
                        .next()
                        .and_then(|p| u16::from_str_radix(p, 16).ok());
                    *state == "01"
                        && port.is_some_and(|p| ports.contains(&p))
                        && ours.contains(*inode)
                })
                .count()
        })
        .sum()
}

/// Fifty groups with the same lease hold one etcd lease, and etcd receives the keepalives of
/// one group, not fifty; a second lease length is a second lease.
#[tokio::test(flavor = "current_thread")]
async fn fifty_groups_with_one_lease_length_hold_one_lease_and_renew_it_once() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let lease = secs(3.0);
    let mut nodes = groups(&store, 50, lease, 0).await;
    let leases = lease_list(&cluster);
    assert_eq!(
        leases.len(),
        1,
        "one etcd lease for fifty groups: {leases:?}"
    );

    // Over a few renew intervals (1 s at a 3 s lease), etcd gets one renewal per interval.
    let window = secs(6.0);
    let before = cluster.metric(KEEPALIVES);
    let started = Instant::now();
    join_all(nodes.iter_mut().map(|n| n.watch_for(window))).await;
    let received = cluster.metric(KEEPALIVES) - before;
    let elapsed = started.elapsed();
    let one_group = elapsed.as_secs_f64() / (lease / 3).as_secs_f64();
    eprintln!(
        "50 groups, lease {lease:?}: {received} keepalives in {elapsed:?} ({:.2}/s; one group \
         renews {one_group:.1} times in that time)",
        received / elapsed.as_secs_f64()
    );
    assert!(
        received <= one_group + 2.0,
        "{received} keepalives in {elapsed:?}: more than one group's {one_group:.1}"
    );
    assert!(
        received >= one_group - 2.0,
        "{received} keepalives: renewing?"
    );
    // Every group reported those renewals as its own.
    for n in &nodes {
        let renewed = n.renewals().into_iter().filter(|t| *t >= started).count();
        assert!(renewed >= 4, "{}: {renewed} renewals in {window:?}", n.name);
    }

    // Another lease length: another lease, shared by the groups of that length.
    let _others = groups(&store, 5, secs(5.0), 50).await;
    let now = lease_list(&cluster);
    assert_eq!(now.len(), 2, "two lease lengths, two leases: {now:?}");
    assert!(now.is_superset(&leases), "the first lease stays: {now:?}");
}

/// One connection per store, whatever the number of groups.
#[tokio::test(flavor = "current_thread")]
async fn groups_share_one_connection() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let mut first = groups(&store, 1, secs(3.0), 0).await;
    let alone = connections_to(&cluster);
    let mut more = groups(&store, 49, secs(3.0), 1).await;
    more.extend(groups(&store, 10, secs(4.0), 50).await);
    first[0].watch_for(secs(1.0)).await;
    let sixty = connections_to(&cluster);
    eprintln!("TCP connections to etcd: {alone} with one group, {sixty} with sixty");
    assert_eq!(alone, 1, "one connection for one group");
    assert_eq!(sixty, 1, "one connection for sixty groups");
}

/// Revoking the shared lease by hand is a lease loss for every group on it (its keys went
/// with it); each is up again on one new shared lease, and wins its key again.
#[tokio::test(flavor = "current_thread")]
async fn a_revoked_shared_lease_is_lost_by_every_group_and_replaced_once() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let lease = secs(3.0);
    let mut nodes = groups(&store, 20, lease, 0).await;
    let mut terms = Vec::new();
    for n in &mut nodes {
        n.publish();
        terms.push(n.try_campaign().await.expect("the only campaigner wins"));
    }
    let old = lease_list(&cluster);
    assert_eq!(old.len(), 1, "{old:?}");
    let id = old.iter().next().expect("one lease").clone();
    for n in &mut nodes {
        n.skip();
    }

    let revoked = Instant::now();
    cluster.etcdctl(&["lease", "revoke", &id]);
    let lost = join_all(nodes.iter_mut().map(|n| n.lease_lost(lease))).await;
    let latest = lost.iter().max().copied().expect("lost") - revoked;
    eprintln!("every group of 20 reported the revoked lease lost within {latest:?}");
    assert!(
        latest <= lease / 3 + secs(0.5),
        "noticed at the next renewal: {latest:?}"
    );
    join_all(nodes.iter_mut().map(|n| n.up(SOON))).await;
    for (n, term) in nodes.iter_mut().zip(&terms) {
        n.leader_none(SOON).await;
        let next = n.try_campaign().await.expect("won again");
        assert!(next > *term, "{}: {next} after {term}", n.name);
    }
    let new = lease_list(&cluster);
    assert_eq!(new.len(), 1, "one new lease for all: {new:?}");
    assert!(new.is_disjoint(&old), "a new lease: {new:?} after {old:?}");
    // Every group's leader key and member record are bound to it.
    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    let keys = raw
        .get(
            format!("{PREFIX}/"),
            Some(etcd_client::GetOptions::new().with_prefix()),
        )
        .await
        .expect("get");
    let new_id = i64::from_str_radix(new.iter().next().expect("one"), 16).expect("hex");
    let bound: Vec<(String, i64)> = keys
        .kvs()
        .iter()
        .filter(|kv| kv.lease() != 0)
        .map(|kv| (String::from_utf8_lossy(kv.key()).into_owned(), kv.lease()))
        .collect();
    assert_eq!(
        bound.len(),
        40,
        "20 leader keys and 20 member records: {bound:?}"
    );
    assert!(bound.iter().all(|(_, l)| *l == new_id), "{bound:?}");
}

/// A group that releases its role deletes its leader key only; a group closed (a reload
/// removing it) deletes its own keys only. The other groups keep their keys and the lease, and
/// lose nothing; the last group's shutdown revokes the lease.
#[tokio::test(flavor = "current_thread")]
async fn one_groups_release_or_removal_leaves_the_others_alone() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let mut nodes = groups(&store, 5, secs(3.0), 0).await;
    let mut terms = Vec::new();
    for n in &mut nodes {
        n.publish();
        n.members_are(SOON, &["n1"]).await;
        terms.push(n.try_campaign().await.expect("won"));
    }
    let lease = lease_list(&cluster);
    let mut raw = etcd_client::Client::connect(cluster.endpoints(), None)
        .await
        .expect("connect");
    let mut keys = async || -> BTreeSet<String> {
        let got = raw
            .get(
                format!("{PREFIX}/"),
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_keys_only(),
                ),
            )
            .await
            .expect("get");
        got.kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect()
    };
    let all = keys().await;
    let since = Instant::now();

    // g0 releases: its leader key goes, nothing else.
    nodes[0].release(terms[0]).await;
    nodes[0].leader_none(SOON).await;
    let after_release = keys().await;
    let gone: Vec<&String> = all.difference(&after_release).collect();
    assert_eq!(gone, [&format!("{PREFIX}/g0/leader")], "{after_release:?}");
    assert_eq!(lease_list(&cluster), lease, "the lease stays");

    // g1 is removed (a reload): its keys go, the others' and the lease stay.
    let mut removed = nodes.remove(1);
    removed.send(StoreCommand::Shutdown);
    removed.ended(SOON).await;
    let after_removal = keys().await;
    let gone: Vec<&String> = after_release.difference(&after_removal).collect();
    assert_eq!(
        gone,
        [
            &format!("{PREFIX}/g1/leader"),
            &format!("{PREFIX}/g1/members/n1"),
        ],
        "{after_removal:?}"
    );
    assert_eq!(lease_list(&cluster), lease, "the lease stays");
    for n in &mut nodes {
        n.watch_for(secs(0.1)).await;
        let events = n.events_since(since);
        assert!(
            !events.contains(&&StoreEvent::LeaseLost),
            "{}: lease lost: {events:?}",
            n.name
        );
    }
    for (n, term) in nodes[1..].iter_mut().zip(&terms[2..]) {
        assert_eq!(n.leader().and_then(|(_, l)| l).map(|l| l.term), Some(*term));
    }

    // The others shut down (promd stops): the last one revokes the lease.
    for n in &nodes {
        n.send(StoreCommand::Shutdown);
    }
    join_all(nodes.iter_mut().map(|n| n.ended(SOON))).await;
    assert!(
        lease_list(&cluster).is_empty(),
        "revoked at the full shutdown"
    );
    let left: Vec<String> = keys()
        .await
        .into_iter()
        .filter(|k| !k.ends_with("/term"))
        .collect();
    assert!(
        left.is_empty(),
        "every key bound to the lease went: {left:?}"
    );
}

/// A reload that replaces a group opens it again beside the one closing, on the same lease:
/// the closing one's shutdown must not delete what the new one wrote.
#[tokio::test(flavor = "current_thread")]
async fn a_closing_group_leaves_the_keys_of_its_replacement() {
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let how = Opening {
        group: "twin",
        name: "n1",
        lease: secs(3.0),
        host: None,
        addresses: &[],
    };
    let mut old = Node::open(&store, Link::NONE, how.clone());
    // Another group keeps the lease from being revoked by the old one's shutdown.
    let mut _other = groups(&store, 1, secs(3.0), 0).await;
    old.up(secs(10.0)).await;
    old.publish();
    old.members_are(SOON, &["n1"]).await;
    let mut new = Node::open(&store, Link::NONE, how);
    new.up(secs(10.0)).await;
    let mut rec = contract::records::member("n1");
    rec.priority = 7;
    new.send(StoreCommand::Publish(rec.clone()));
    new.members_where(SOON, "the new record", |m| m == [rec.clone()])
        .await;

    old.send(StoreCommand::Shutdown);
    old.ended(SOON).await;
    new.never(
        secs(0.5),
        |e| matches!(e, StoreEvent::Members(m) if m.is_empty()),
    )
    .await;
    let stored = cluster.etcdctl(&[
        "get",
        &format!("{PREFIX}/twin/members/n1"),
        "--print-value-only",
    ]);
    assert!(stored.contains("\"priority\":7"), "{stored:?}");
}

/// The figures of docs/safety.md ("Groups that share a lease"), not a check: `GROUPS` groups
/// (default 500) with a 4 s lease on one store: how soon all are up and what etcd handled
/// meanwhile, leases, connections, and etcd's load while idle.
/// `cargo test --test etcd_shared -- --ignored --nocapture`
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement: run by hand"]
async fn figures_for_many_groups() {
    let count: usize = std::env::var("GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(500);
    const RPCS: &str = "grpc_server_handled_total{";
    let cluster = EtcdCluster::start(3, &[]);
    let store = store(cluster.endpoints(), secs(1.0));
    let lease = secs(4.0);
    let opened = Instant::now();
    let rpcs = cluster.metric(RPCS);
    let mut nodes = groups(&store, count, lease, 0).await;
    let startup = opened.elapsed();
    let startup_rpcs = cluster.metric(RPCS) - rpcs;
    let (leases, connections) = (lease_list(&cluster).len(), connections_to(&cluster));
    let window = secs(12.0);
    let (keepalives, rpcs) = (cluster.metric(KEEPALIVES), cluster.metric(RPCS));
    let started = Instant::now();
    join_all(nodes.iter_mut().map(|n| n.watch_for(window))).await;
    let elapsed = started.elapsed().as_secs_f64();
    let keepalives = (cluster.metric(KEEPALIVES) - keepalives) / elapsed;
    let rpcs = (cluster.metric(RPCS) - rpcs) / elapsed;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let rss = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ");
    eprintln!(
        "{count} groups, lease {lease:?}: all up {startup:?} after opening ({startup_rpcs} RPCs \
         handled by etcd meanwhile); {leases} etcd leases; {connections} TCP connections; \
         idle: {keepalives:.2} keep-alives/s and {rpcs:.2} RPCs/s at etcd; test process {rss}"
    );
}

/// A group closed while etcd is unreachable cannot delete its keys, and the other groups keep
/// the shared lease — and so those keys — alive: the lease's task deletes them once connected
/// again, well before the lease could have run out (the others never lose it).
#[tokio::test(flavor = "current_thread")]
async fn a_group_closed_while_cut_off_has_its_keys_deleted_once_connected() {
    use contract::Backend;
    let mut b = contract::etcd::Etcd::start().await;
    // Long enough that the lease outlives the cut and the reconnection by far.
    let lease = secs(15.0);
    let (store, link) = b.link().await;
    let opening = |group| Opening {
        group,
        name: "n1",
        lease,
        host: None,
        addresses: &[],
    };
    let mut closing = Node::open(store.as_ref(), link, opening("closing"));
    let mut staying = Node::open(store.as_ref(), link, opening("staying"));
    let mut observer = b
        .node_with(Opening {
            group: "closing",
            name: "watcher",
            lease,
            host: None,
            addresses: &[],
        })
        .await;
    for n in [&mut closing, &mut staying, &mut observer] {
        n.up(secs(10.0)).await;
    }
    closing.publish();
    let term = closing.try_campaign().await.expect("won");
    observer.leader_is(SOON, "n1", term).await;
    observer.members_are(SOON, &["n1"]).await;

    b.cut(link).await;
    closing.down(lease).await;
    staying.down(lease).await;
    closing.send(StoreCommand::Shutdown);
    closing.ended(SOON).await;
    let healed = Instant::now();
    b.heal(link).await;
    staying.up(SOON).await;
    observer.leader_none(SOON).await;
    observer.members_are(SOON, &[]).await;
    eprintln!(
        "the closed group's keys went {:?} after the heal",
        healed.elapsed()
    );
    staying.watch_for(secs(0.1)).await;
    assert!(
        !staying.log.iter().any(|(_, e)| *e == StoreEvent::LeaseLost),
        "the shared lease survived the cut: the keys were deleted, not expired"
    );
}
