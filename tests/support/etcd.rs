//! A real etcd cluster on this machine, for integration tests.
//!
//! Every member gets its own free ports (found by binding port 0), its own data dir under one
//! temporary directory (on `/dev/shm` when it exists: etcd fsyncs every write, and tmpfs keeps
//! that from adding disk latency to timing tests), a unique name and cluster token, so several
//! test binaries can run clusters side by side. Dropping the value SIGKILLs every member this
//! value started (by pid) and removes the data.
//!
//! [`EtcdCluster::start_with`] starts a cluster that serves clients over TLS (https on the
//! same loopback addresses; peers stay http), optionally requiring client certificates, and
//! with a short `--auth-token-ttl`; [`EtcdCluster::enable_auth`] and
//! [`EtcdCluster::add_prefix_user`] turn etcd's authentication on and add an RBAC user, with
//! etcdctl. Members are checked for health on a plain-http metrics listener of their own.
//! [`EtcdCluster::save_snapshot`], [`EtcdCluster::stop_and_wipe`] and
//! [`EtcdCluster::restore_all`] lose the cluster's data and bring it back from an older
//! snapshot, as an operator's disaster recovery would.
//!
//! The calls block the calling thread (`start` and `restart_member` until the member serves,
//! a few seconds at most). In a `current_thread` tokio test that also stalls every task on the
//! runtime for that long; call them before starting the code under test, or accept the stall.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const ETCD: &str = "etcd";
/// How long a (re)started member may take to serve.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Start attempts: a free port found by binding port 0 can be taken by another process before
/// etcd binds it; the start is then retried with new ports.
const START_ATTEMPTS: usize = 3;

static CLUSTERS: AtomicUsize = AtomicUsize::new(0);

/// TLS for the client URLs: files every member reads.
#[derive(Debug, Clone)]
pub struct ServerTls {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// `--trusted-ca-file` and `--client-cert-auth`: clients need a certificate it signed.
    pub client_ca: Option<PathBuf>,
    /// What etcdctl (the test's admin) presents: the CA of the server certificate, and a
    /// client certificate and key when `client_ca` is set.
    pub admin_ca: PathBuf,
    pub admin_cert: Option<(PathBuf, PathBuf)>,
}

/// How a cluster serves its clients.
#[derive(Debug, Clone, Default)]
pub struct Options {
    pub tls: Option<ServerTls>,
    /// `--auth-token-ttl`, in seconds (etcd's default: 300).
    pub auth_token_ttl: Option<u64>,
    /// IPv6 addresses to serve clients on too (`::1`, a dual-stack test net's gateways; see
    /// [`EtcdCluster::endpoints_via_v6`]).
    pub listen_v6: Vec<Ipv6Addr>,
    /// `--election-timeout` in ms (with `--heartbeat-interval=100`); the tests' default is
    /// etcd's, 1000 ms, whose minimum lease TTL is 2 s. 700 ms or less lets a 1 s lease be
    /// granted as asked (README, "Short leases").
    pub election_timeout_ms: Option<u32>,
}

impl Options {
    /// TLS on the client URLs with client certificates required, from the files
    /// `[server cert, server key, CA, client cert, client key]` (a test PKI's; the CA signed
    /// the others); etcdctl presents the client certificate.
    pub fn mutual_tls([cert, key, ca, client, client_key]: [PathBuf; 5]) -> Options {
        Options {
            tls: Some(ServerTls {
                cert,
                key,
                client_ca: Some(ca.clone()),
                admin_ca: ca,
                admin_cert: Some((client, client_key)),
            }),
            ..Options::default()
        }
    }
}

pub struct EtcdCluster {
    members: Vec<Member>,
    extra_ips: Vec<Ipv4Addr>,
    options: Options,
    /// root's password, once [`Self::enable_auth`] ran.
    root_password: Option<String>,
    // Last: removed after the members are killed (fields drop in order, after `Drop::drop`).
    _dir: tempfile::TempDir,
}

struct Member {
    dir: PathBuf,
    client_port: u16,
    /// A plain-http listener for `/health` (`--listen-metrics-urls`), whatever the clients get.
    metrics_port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
    }

    /// The value of `--NAME=` in the member's arguments.
    fn flag(&self, name: &str) -> String {
        let prefix = format!("--{name}=");
        self.args
            .iter()
            .find_map(|a| a.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("etcd member started without --{name}"))
            .to_string()
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("cannot open {}: {e}", self.log_path().display()))?;
        let log2 = log
            .try_clone()
            .map_err(|e| format!("cannot dup log file: {e}"))?;
        let mut command = Command::new(ETCD);
        command
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // Settings inherited from the environment would override the flags.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("ETCD") {
                command.env_remove(key);
            }
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot run {ETCD}: {e}"))?;
        self.child = Some(child);
        Ok(())
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill is SIGKILL, aimed at this pid only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The member exited (it never should on its own).
    fn exited(&mut self) -> Option<String> {
        let child = self.child.as_mut()?;
        match child.try_wait() {
            Ok(Some(status)) => Some(format!("etcd exited: {status}")),
            Ok(None) => None,
            Err(e) => Some(format!("cannot wait for etcd: {e}")),
        }
    }

    fn tail_of_log(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = File::open(self.log_path()) {
            let _ = f.read_to_string(&mut text);
        }
        let start = text.len().saturating_sub(6000);
        let start = (start..text.len())
            .find(|i| text.is_char_boundary(*i))
            .unwrap_or(text.len());
        format!(
            "--- {} (last {} bytes) ---\n{}",
            self.log_path().display(),
            text.len() - start,
            &text[start..]
        )
    }

    fn healthy(&self) -> bool {
        http(self.metrics_port, "GET", "/health", "")
            .is_some_and(|body| body.replace(' ', "").contains("\"health\":\"true\""))
    }
}

/// A minimal HTTP/1.0 request to etcd's client port on loopback; the body of a 200 answer.
fn http(port: u16, method: &str, path: &str, body: &str) -> Option<String> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(3))).ok()?;
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let (head, body) = answer.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200")
        .then(|| body.to_string())
        .or_else(|| head.starts_with("HTTP/1.1 200").then(|| body.to_string()))
}

/// `n` distinct ports that are free on every address right now.
fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::UNSPECIFIED, 0)).expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

fn temp_root() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    builder.prefix("promd-etcd-");
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(dir) = builder.tempdir_in(shm)
    {
        return dir;
    }
    builder.tempdir().expect("create a temporary directory")
}

impl EtcdCluster {
    /// Start `members` members, serving clients on 127.0.0.1 and on every `extra_listen_ips`
    /// (which must exist on this machine), and wait until every member is healthy.
    pub fn start(members: usize, extra_listen_ips: &[Ipv4Addr]) -> EtcdCluster {
        Self::start_with(members, extra_listen_ips, &Options::default())
    }

    /// [`Self::start`], serving clients as `options` say.
    pub fn start_with(
        members: usize,
        extra_listen_ips: &[Ipv4Addr],
        options: &Options,
    ) -> EtcdCluster {
        assert!(members > 0, "an etcd cluster needs at least one member");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(members, extra_listen_ips, options) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("etcd cluster did not start ({START_ATTEMPTS} attempts):\n{last}");
    }

    fn try_start(
        n: usize,
        extra_ips: &[Ipv4Addr],
        options: &Options,
    ) -> Result<EtcdCluster, String> {
        let dir = temp_root();
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("{}-{serial}", std::process::id());
        let token = format!("promd-test-{id}-{nanos}");
        let ports = free_ports(3 * n);
        let (client_ports, rest) = ports.split_at(n);
        let (peer_ports, metrics_ports) = rest.split_at(n);
        let scheme = if options.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let name = |i: usize| format!("promd-{id}-m{i}");
        let initial_cluster = (0..n)
            .map(|i| format!("{}=http://127.0.0.1:{}", name(i), peer_ports[i]))
            .collect::<Vec<_>>()
            .join(",");

        let mut members = Vec::new();
        for i in 0..n {
            let member_dir = dir.path().join(format!("m{i}"));
            std::fs::create_dir_all(&member_dir).map_err(|e| e.to_string())?;
            let mut client_urls = std::iter::once(Ipv4Addr::LOCALHOST)
                .chain(extra_ips.iter().copied())
                .map(|ip| format!("{scheme}://{ip}:{}", client_ports[i]))
                .collect::<Vec<_>>();
            for ip in &options.listen_v6 {
                client_urls.push(format!("{scheme}://[{ip}]:{}", client_ports[i]));
            }
            let client_urls = client_urls.join(",");
            let peer_url = format!("http://127.0.0.1:{}", peer_ports[i]);
            let mut args = vec![
                format!("--name={}", name(i)),
                format!("--data-dir={}", member_dir.join("data").display()),
                format!("--listen-client-urls={client_urls}"),
                format!("--advertise-client-urls={client_urls}"),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial_cluster}"),
                format!("--initial-cluster-token={token}"),
                "--initial-cluster-state=new".to_string(),
                "--heartbeat-interval=100".to_string(),
                format!(
                    "--election-timeout={}",
                    options.election_timeout_ms.unwrap_or(1000)
                ),
                "--logger=zap".to_string(),
                "--log-outputs=stderr".to_string(),
                format!(
                    "--listen-metrics-urls=http://127.0.0.1:{}",
                    metrics_ports[i]
                ),
            ];
            if let Some(tls) = &options.tls {
                args.push(format!("--cert-file={}", tls.cert.display()));
                args.push(format!("--key-file={}", tls.key.display()));
                if let Some(ca) = &tls.client_ca {
                    args.push("--client-cert-auth".to_string());
                    args.push(format!("--trusted-ca-file={}", ca.display()));
                }
            }
            if let Some(ttl) = options.auth_token_ttl {
                args.push(format!("--auth-token-ttl={ttl}"));
            }
            members.push(Member {
                dir: member_dir,
                client_port: client_ports[i],
                metrics_port: metrics_ports[i],
                args,
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            members,
            extra_ips: extra_ips.to_vec(),
            options: options.clone(),
            root_password: None,
            _dir: dir,
        };
        for m in &mut cluster.members {
            m.spawn()?;
        }
        let all: Vec<usize> = (0..n).collect();
        cluster.wait_ready(&all)?;
        Ok(cluster)
    }

    /// Wait until members `which` serve again (a raft leader known, a quorum read works),
    /// e.g. after another member was killed; panics with the members' logs if they do not
    /// within the start-up bound.
    pub fn wait_serving(&mut self, which: &[usize]) {
        if let Err(e) = self.wait_ready(which) {
            panic!("etcd members {which:?} do not serve: {e}");
        }
    }

    /// Wait until the given members answer `/health` with true (a leader is known and a
    /// quorum read works); the error carries every member's log.
    fn wait_ready(&mut self, which: &[usize]) -> Result<(), String> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut pending: Vec<usize> = which.to_vec();
        while !pending.is_empty() {
            for &i in which {
                if let Some(why) = self.members[i].exited() {
                    return Err(format!("member {i}: {why}\n{}", self.logs()));
                }
            }
            pending.retain(|&i| !self.members[i].healthy());
            if pending.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "members {pending:?} not healthy within {READY_TIMEOUT:?}\n{}",
                    self.logs()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn logs(&self) -> String {
        self.members
            .iter()
            .map(Member::tail_of_log)
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// Client URLs at one of the IPv6 listen addresses (`Options::listen_v6`), in member order.
    pub fn endpoints_via_v6(&self, ip: Ipv6Addr) -> Vec<String> {
        assert!(
            self.options.listen_v6.contains(&ip),
            "etcd does not listen on {ip} (listen_v6: {:?})",
            self.options.listen_v6
        );
        self.members
            .iter()
            .map(|m| format!("{}://[{ip}]:{}", self.scheme(), m.client_port))
            .collect()
    }

    fn scheme(&self) -> &'static str {
        if self.options.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The sum over the running members of the Prometheus samples whose line starts with
    /// `series` (a metric name and the first of its labels, which etcd writes in
    /// alphabetical order), e.g. `grpc_server_handled_total{grpc_code="OK",grpc_method="Authenticate"`.
    pub fn metric(&self, series: &str) -> f64 {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .filter_map(|m| http(m.metrics_port, "GET", "/metrics", ""))
            .flat_map(|body| {
                body.lines()
                    .filter(|l| l.starts_with(series))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .collect::<Vec<_>>()
            })
            .sum()
    }

    /// Client URLs on loopback, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("{}://127.0.0.1:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// Run etcdctl against the cluster as its admin (root, once authentication is on);
    /// its output, or a panic with its error.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        self.etcdctl_with_input(args, "")
    }

    /// [`Self::etcdctl`] with `input` on its standard input.
    pub fn etcdctl_with_input(&self, args: &[&str], input: &str) -> String {
        self.etcdctl_at(&self.endpoints(), args, input)
    }

    /// [`Self::etcdctl_with_input`] against the given endpoints only.
    fn etcdctl_at(&self, endpoints: &[String], args: &[&str], input: &str) -> String {
        let mut command = Command::new("etcdctl");
        command
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", endpoints.join(",")))
            .arg("--dial-timeout=5s")
            .arg("--command-timeout=10s");
        if let Some(tls) = &self.options.tls {
            command.arg(format!("--cacert={}", tls.admin_ca.display()));
            if let Some((cert, key)) = &tls.admin_cert {
                command.arg(format!("--cert={}", cert.display()));
                command.arg(format!("--key={}", key.display()));
            }
        }
        if let Some(password) = &self.root_password {
            command.arg(format!("--user=root:{password}"));
        }
        command
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(input.as_bytes()).expect("etcdctl's input");
        }
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("cannot wait for etcdctl: {e}"));
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Turn authentication on, with `root` having `root_password`.
    pub fn enable_auth(&mut self, root_password: &str) {
        self.etcdctl(&["user", "add", &format!("root:{root_password}")]);
        self.etcdctl(&["auth", "enable"]);
        self.root_password = Some(root_password.to_string());
    }

    /// A user whose one role may read and write the keys under `prefix` and nothing else
    /// (`role grant-permission --prefix ROLE readwrite PREFIX`).
    pub fn add_prefix_user(&self, user: &str, password: &str, prefix: &str) {
        let role = format!("{user}-role");
        self.etcdctl(&["role", "add", &role]);
        self.etcdctl(&[
            "role",
            "grant-permission",
            "--prefix=true",
            &role,
            "readwrite",
            prefix,
        ]);
        self.etcdctl(&["user", "add", &format!("{user}:{password}")]);
        self.etcdctl(&["user", "grant-role", user, &role]);
    }

    /// Give `user` a new password.
    pub fn change_password(&self, user: &str, password: &str) {
        self.etcdctl_with_input(
            &["user", "passwd", user, "--interactive=false"],
            &format!("{password}\n"),
        );
    }

    /// Client URLs at one of the extra listen addresses, in member order.
    pub fn endpoints_via(&self, ip: Ipv4Addr) -> Vec<String> {
        assert!(
            self.extra_ips.contains(&ip),
            "etcd does not listen on {ip} (extra listen ips: {:?})",
            self.extra_ips
        );
        self.members
            .iter()
            .map(|m| format!("{}://{ip}:{}", self.scheme(), m.client_port))
            .collect()
    }

    /// SIGKILL member `i` and reap it. Its data dir stays for [`Self::restart_member`].
    pub fn kill_member(&mut self, i: usize) {
        self.members[i].kill();
    }

    /// Start member `i` again on its data dir and ports; waits until it serves.
    pub fn restart_member(&mut self, i: usize) {
        self.members[i].kill();
        if let Err(e) = self.members[i].spawn() {
            panic!("member {i}: {e}");
        }
        if let Err(e) = self.wait_ready(&[i]) {
            panic!("member {i} did not come back: {e}");
        }
    }

    /// `etcdctl snapshot save` to `path`, from member 0 (etcdctl saves from one endpoint):
    /// the cluster's whole keyspace as it is now, for [`Self::restore_all`].
    pub fn save_snapshot(&self, path: &Path) {
        let endpoint = self.endpoints().swap_remove(0);
        self.etcdctl_at(
            &[endpoint],
            &["snapshot", "save", &path.display().to_string()],
            "",
        );
    }

    /// Lose the cluster's data: every member SIGKILLed (by pid) and its data dir wiped. The
    /// cluster stays down until [`Self::restore_all`].
    pub fn stop_and_wipe(&mut self) {
        for (i, m) in self.members.iter_mut().enumerate() {
            m.kill();
            let data = m.flag("data-dir");
            if let Err(e) = std::fs::remove_dir_all(&data)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                panic!("member {i}: cannot wipe {data}: {e}");
            }
        }
    }

    /// Bring the cluster back from `snapshot`, as etcd's disaster-recovery guide says: every
    /// member stopped and wiped ([`Self::stop_and_wipe`], if it was not), `etcdctl snapshot
    /// restore` into a new data dir with the member's own `--name`, `--initial-cluster`,
    /// `--initial-cluster-token` and `--initial-advertise-peer-urls`, then every member started
    /// again on its ports; waits until they all serve. Keys, leases and the revision go back
    /// to the snapshot's. A panic on failure leaves the members to `Drop`.
    pub fn restore_all(&mut self, snapshot: &Path) {
        self.stop_and_wipe();
        for (i, m) in self.members.iter().enumerate() {
            let mut command = Command::new("etcdctl");
            for (key, _) in std::env::vars_os() {
                if key.to_string_lossy().starts_with("ETCD") {
                    command.env_remove(key);
                }
            }
            let out = command
                .env("ETCDCTL_API", "3")
                .args(["snapshot", "restore", &snapshot.display().to_string()])
                .args(
                    [
                        "name",
                        "initial-cluster",
                        "initial-cluster-token",
                        "initial-advertise-peer-urls",
                        "data-dir",
                    ]
                    .map(|flag| format!("--{flag}={}", m.flag(flag))),
                )
                .output()
                .unwrap_or_else(|e| panic!("cannot run etcdctl: {e}"));
            assert!(
                out.status.success(),
                "member {i}: etcdctl snapshot restore {}: {}\n{}",
                snapshot.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for (i, m) in self.members.iter_mut().enumerate() {
            if let Err(e) = m.spawn() {
                panic!("member {i}: {e}");
            }
        }
        let all: Vec<usize> = (0..self.members.len()).collect();
        if let Err(e) = self.wait_ready(&all) {
            panic!("etcd did not come back from the snapshot: {e}");
        }
    }

    pub fn member_pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// The member that is the raft leader now, as the running members see it (through etcd's
    /// JSON gateway, `/v3/maintenance/status`). `None` while there is none.
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().position(|m| {
            m.child.is_some()
                && http(m.client_port, "POST", "/v3/maintenance/status", "{}").is_some_and(|body| {
                    let Ok(json) = serde_json::from_str::<serde_json::Value>(&body) else {
                        return false;
                    };
                    let me = &json["header"]["member_id"];
                    !me.is_null() && *me == json["leader"]
                })
        })
    }

    /// A probe, for another thread, that says whether a member other than `old` has been
    /// elected raft leader, as the running members other than `old` report it: for tests
    /// that pause `old` and need to know when etcd could serve again. Each call asks each of
    /// them once (`/v3/maintenance/status`, answered without a leader).
    pub fn new_leader_probe(&self, old: usize) -> impl Fn() -> bool + Send + 'static {
        let status = |port| {
            let body = http(port, "POST", "/v3/maintenance/status", "{}")?;
            serde_json::from_str::<serde_json::Value>(&body).ok()
        };
        let old_id = status(self.members[old].client_port)
            .map(|json| json["header"]["member_id"].clone())
            .expect("the old leader answers before it is paused");
        let ports: Vec<u16> = (0..self.members.len())
            .filter(|i| *i != old && self.members[*i].child.is_some())
            .map(|i| self.members[i].client_port)
            .collect();
        move || {
            ports.iter().any(|port| {
                status(*port).is_some_and(|json| {
                    let leader = &json["leader"];
                    !leader.is_null() && *leader != old_id && *leader != serde_json::json!("0")
                })
            })
        }
    }

    /// The log file of member `i`.
    pub fn log_path(&self, i: usize) -> PathBuf {
        self.members[i].log_path()
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill();
        }
    }
}
