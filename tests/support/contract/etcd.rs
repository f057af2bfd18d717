//! The etcd backend of the contract suite: a real three-member cluster on loopback. Each node
//! reaches one member (in turn) through a TCP proxy of its own, which cuts it off silently
//! (packets vanish, connections stay open) without touching etcd. The proxies reach etcd
//! through a second loopback address, as containers reach it over their veth link.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use promd::store::Store;
use promd::store::etcd::{EtcdStore, EtcdTls, EtcdUser, PemFile};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::etcd_cluster::{EtcdCluster, Options};
use super::pki::{self, Pki};
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
    /// TLS and the user the nodes' stores use, on a secure cluster.
    secure: Option<(EtcdTls, EtcdUser)>,
}

/// The RBAC user of a secure cluster, limited to [`PREFIX`], and its password.
pub const USER: &str = "promd";
pub const PASSWORD: &str = "promd-secret";
pub const ROOT_PASSWORD: &str = "root-secret";

/// etcd's options for a cluster with TLS on the client URLs and client certificates
/// required, all from `pki`.
pub fn tls_options(pki: &Pki) -> Options {
    Options::mutual_tls(pki.mutual_tls())
}

/// `name` of `pki`, as the store reads it.
pub fn pem(pki: &Pki, name: &str) -> PemFile {
    PemFile {
        path: pki.path(name),
        pem: pki.pem(name),
    }
}

/// The store's TLS with `pki`'s CA and client certificate.
pub fn client_tls(pki: &Pki) -> EtcdTls {
    EtcdTls {
        ca: Some(pem(pki, pki::CA)),
        client: Some((pem(pki, pki::CLIENT), pem(pki, pki::CLIENT_KEY))),
        server_name: None,
    }
}

/// A client of the test's own on a TLS cluster with client certificates, as `user`.
pub async fn raw_client(endpoints: Vec<String>, pki: &Pki, user: Option<(&str, &str)>) -> Client {
    let tls = TlsOptions::new()
        .ca_certificate(Certificate::from_pem(pki.pem(pki::CA)))
        .identity(Identity::from_pem(
            pki.pem(pki::CLIENT),
            pki.pem(pki::CLIENT_KEY),
        ));
    let mut options = ConnectOptions::new().with_tls(tls);
    if let Some((name, password)) = user {
        options = options
            .with_user(name, password)
            .with_auto_token_refresh(true);
    }
    Client::connect(endpoints, Some(options))
        .await
        .expect("connect")
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
    const WALL_CLOCK: bool = false;

    async fn start() -> Etcd {
        let cluster = EtcdCluster::start(3, &[SECOND_LOOPBACK]);
        let raw = Client::connect(cluster.endpoints(), None)
            .await
            .expect("connect");
        Etcd {
            cluster,
            raw,
            proxies: Vec::new(),
            secure: None,
        }
    }

    async fn link(&mut self) -> (Arc<dyn Store>, Link) {
        let endpoints = self.cluster.endpoints_via(SECOND_LOOPBACK);
        let upstream = &endpoints[self.proxies.len() % endpoints.len()];
        let proxy = Proxy::start(upstream).await;
        let mut store = store(vec![proxy.endpoint()], secs(1.0));
        if let Some((tls, user)) = &self.secure {
            store = store.with_tls(tls.clone()).with_user(user.clone());
        }
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
        // etcd's values have no envelope.
        let (Raw::Bytes(bytes) | Raw::Record(bytes) | Raw::Extended(bytes)) = raw;
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

/// The contract's etcd with everything a production etcd has: TLS on the client URLs,
/// client certificates required, authentication on with a short `--auth-token-ttl`, and the
/// nodes connecting as an RBAC user whose one role may use only [`PREFIX`].
pub struct EtcdSecure {
    inner: Etcd,
    _pki: Pki,
}

/// etcd's simple tokens expire after this many seconds without use; short, so that tokens
/// expire during the tests.
pub const TOKEN_TTL: u64 = 2;

impl Backend for EtcdSecure {
    const NAME: &'static str = "etcd (TLS, client certificates, RBAC user)";
    const LEASE: Duration = Etcd::LEASE;
    const PROMPT: Duration = Etcd::PROMPT;
    const HANDOVER: Duration = Etcd::HANDOVER;
    const UP: Duration = Etcd::UP;
    const EXPIRY_SLACK: Duration = Etcd::EXPIRY_SLACK;
    const WALL_CLOCK: bool = false;

    async fn start() -> EtcdSecure {
        let pki = Pki::new();
        let options = Options {
            auth_token_ttl: Some(TOKEN_TTL),
            ..tls_options(&pki)
        };
        let mut cluster = EtcdCluster::start_with(3, &[SECOND_LOOPBACK], &options);
        cluster.enable_auth(ROOT_PASSWORD);
        cluster.add_prefix_user(USER, PASSWORD, PREFIX);
        let raw = raw_client(cluster.endpoints(), &pki, Some(("root", ROOT_PASSWORD))).await;
        let user = EtcdUser {
            name: USER.to_string(),
            password: PASSWORD.to_string(),
        };
        let inner = Etcd {
            cluster,
            raw,
            proxies: Vec::new(),
            secure: Some((client_tls(&pki), user)),
        };
        EtcdSecure { inner, _pki: pki }
    }

    async fn link(&mut self) -> (Arc<dyn Store>, Link) {
        self.inner.link().await
    }

    async fn cut(&mut self, link: Link) {
        self.inner.cut(link).await
    }

    async fn heal(&mut self, link: Link) {
        self.inner.heal(link).await
    }

    async fn put(&mut self, group: &str, k: Key<'_>, raw: Raw<'_>) -> u64 {
        self.inner.put(group, k, raw).await
    }

    async fn get(&mut self, group: &str, k: Key<'_>) -> Option<Vec<u8>> {
        self.inner.get(group, k).await
    }

    async fn delete(&mut self, group: &str, k: Key<'_>) {
        self.inner.delete(group, k).await
    }

    async fn lease_of(&mut self, group: &str, node: &str) -> Option<String> {
        self.inner.lease_of(group, node).await
    }

    async fn revoke(&mut self, group: &str, node: &str) {
        self.inner.revoke(group, node).await
    }
}

// ---------------------------------------------------------------------------------------------
// A TCP proxy in front of one etcd member, to cut a session off without touching etcd.

pub struct Proxy {
    scheme: String,
    addr: SocketAddr,
    frozen: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: &str) -> Proxy {
        let (scheme, address) = upstream.split_once("://").expect("a URL");
        let upstream: SocketAddr = address.parse().expect("endpoint is ip:port");
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
        Proxy {
            scheme: scheme.to_string(),
            addr,
            frozen,
            task,
        }
    }

    /// The proxy's URL on 127.0.0.1 (a name the test certificates hold), with the scheme
    /// of the member behind it.
    pub fn endpoint(&self) -> String {
        format!("{}://{}", self.scheme, self.addr)
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
