//! The etcd backend of the contract suite: a real three-member cluster on loopback. Each node
//! reaches one member (in turn) through a TCP proxy of its own, which cuts it off silently
//! (packets vanish, connections stay open) without touching etcd. The proxies reach etcd
//! through a second loopback address, as containers reach it over their veth link.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::Client;
use promd::store::Store;
use promd::store::etcd::EtcdStore;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::etcd_cluster::EtcdCluster;
use super::{Backend, Key, Link, Raw, secs};

/// The key prefix of every test group.
pub const PREFIX: &str = "/promd-test";
/// All of 127.0.0.0/8 is local on Linux: an extra listen address that needs no setup.
pub const SECOND_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

pub struct Etcd {
    pub cluster: EtcdCluster,
    /// A client of the test's own, for raw reads and writes.
    pub raw: Client,
    proxies: Vec<Proxy>,
}

/// `PREFIX/GROUP/…`
pub fn key(group: &str, key: Key) -> String {
    format!("{PREFIX}{}", key.suffix(group))
}

/// An etcd store with these endpoints, the contract's prefix and `connect_timeout`.
pub fn store(endpoints: Vec<String>, connect_timeout: Duration) -> EtcdStore {
    EtcdStore::new(endpoints, connect_timeout, PREFIX.to_string())
}

impl Backend for Etcd {
    const NAME: &'static str = "etcd";
    // etcd's leases are whole seconds, at least 1.5 election timeouts (2s here).
    const LEASE: Duration = Duration::from_secs(3);
    const PROMPT: Duration = Duration::from_millis(500);
    // Two calls (delete the member record, revoke the lease), then the watch.
    const HANDOVER: Duration = Duration::from_secs(1);
    const UP: Duration = Duration::from_secs(10);
    // etcd checks for expired leases every 500ms and revokes them through raft.
    const EXPIRY_SLACK: Duration = Duration::from_millis(1500);

    async fn start() -> Etcd {
        let cluster = EtcdCluster::start(3, &[SECOND_LOOPBACK]);
        let raw = Client::connect(cluster.endpoints(), None)
            .await
            .expect("connect");
        Etcd {
            cluster,
            raw,
            proxies: Vec::new(),
        }
    }

    async fn link(&mut self) -> (Arc<dyn Store>, Link) {
        let endpoints = self.cluster.endpoints_via(SECOND_LOOPBACK);
        let upstream = &endpoints[self.proxies.len() % endpoints.len()];
        let proxy = Proxy::start(upstream).await;
        let store = store(vec![proxy.endpoint()], secs(1.0));
        self.proxies.push(proxy);
        (Arc::new(store), Link(self.proxies.len() - 1))
    }

    async fn cut(&mut self, link: Link) {
        self.proxies[link.0].freeze();
    }

    async fn heal(&mut self, link: Link) {
        self.proxies[link.0].heal();
    }

    async fn put(&mut self, group: &str, k: Key<'_>, raw: Raw<'_>) -> u64 {
        let (Raw::Bytes(bytes) | Raw::Record(bytes)) = raw;
        let key = key(group, k);
        self.raw.put(key.as_str(), bytes, None).await.expect("put");
        let got = self.raw.get(key.as_str(), None).await.expect("get");
        got.kvs()[0].create_revision() as u64
    }

    async fn get(&mut self, group: &str, k: Key<'_>) -> Option<Vec<u8>> {
        let got = self.raw.get(key(group, k), None).await.expect("get");
        got.kvs().first().map(|kv| kv.value().to_vec())
    }

    async fn delete(&mut self, group: &str, k: Key<'_>) {
        self.raw.delete(key(group, k), None).await.expect("delete");
    }

    async fn lease_of(&mut self, group: &str, node: &str) -> Option<String> {
        let got = self
            .raw
            .get(key(group, Key::Member(node)), None)
            .await
            .expect("get");
        got.kvs().first().map(|kv| kv.lease().to_string())
    }

    async fn revoke(&mut self, group: &str, node: &str) {
        let lease = self.lease_of(group, node).await.expect("a member record");
        let lease = lease.parse().expect("a lease id");
        self.raw.lease_revoke(lease).await.expect("revoke");
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of one etcd member, to cut a session off without touching etcd.

pub struct Proxy {
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
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

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A silent partition: connections stay open, nothing gets through either way, and new
    /// connections are accepted and held the same way.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Forward again; connections held while frozen are closed, so clients notice at once.
    pub fn heal(&self) {
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
