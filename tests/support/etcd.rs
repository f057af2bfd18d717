//! A real etcd cluster on this machine, for integration tests.
//!
//! Every member gets its own free ports (found by binding port 0), its own data dir under one
//! temporary directory (on `/dev/shm` when it exists: etcd fsyncs every write, and tmpfs keeps
//! that from adding disk latency to timing tests), a unique name and cluster token, so several
//! test binaries can run clusters side by side. Dropping the value SIGKILLs every member this
//! value started (by pid) and removes the data.
//!
//! The calls block the calling thread (`start` and `restart_member` until the member serves,
//! a few seconds at most). In a `current_thread` tokio test that also stalls every task on the
//! runtime for that long; call them before starting the code under test, or accept the stall.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
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

pub struct EtcdCluster {
    members: Vec<Member>,
    extra_ips: Vec<Ipv4Addr>,
    // Last: removed after the members are killed (fields drop in order, after `Drop::drop`).
    _dir: tempfile::TempDir,
}

struct Member {
    dir: PathBuf,
    client_port: u16,
    args: Vec<String>,
    child: Option<Child>,
}

impl Member {
    fn log_path(&self) -> PathBuf {
        self.dir.join("etcd.log")
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
        http(self.client_port, "GET", "/health", "")
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
        assert!(members > 0, "an etcd cluster needs at least one member");
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            match Self::try_start(members, extra_listen_ips) {
                Ok(cluster) => return cluster,
                Err(e) => last = e,
            }
        }
        panic!("etcd cluster did not start ({START_ATTEMPTS} attempts):\n{last}");
    }

    fn try_start(n: usize, extra_ips: &[Ipv4Addr]) -> Result<EtcdCluster, String> {
        let dir = temp_root();
        let serial = CLUSTERS.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let id = format!("{}-{serial}", std::process::id());
        let token = format!("promd-test-{id}-{nanos}");
        let ports = free_ports(2 * n);
        let (client_ports, peer_ports) = ports.split_at(n);
        let name = |i: usize| format!("promd-{id}-m{i}");
        let initial_cluster = (0..n)
            .map(|i| format!("{}=http://127.0.0.1:{}", name(i), peer_ports[i]))
            .collect::<Vec<_>>()
            .join(",");

        let mut members = Vec::new();
        for i in 0..n {
            let member_dir = dir.path().join(format!("m{i}"));
            std::fs::create_dir_all(&member_dir).map_err(|e| e.to_string())?;
            let client_urls = std::iter::once(Ipv4Addr::LOCALHOST)
                .chain(extra_ips.iter().copied())
                .map(|ip| format!("http://{ip}:{}", client_ports[i]))
                .collect::<Vec<_>>()
                .join(",");
            let peer_url = format!("http://127.0.0.1:{}", peer_ports[i]);
            let args = vec![
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
                "--election-timeout=1000".to_string(),
                "--logger=zap".to_string(),
                "--log-outputs=stderr".to_string(),
            ];
            members.push(Member {
                dir: member_dir,
                client_port: client_ports[i],
                args,
                child: None,
            });
        }
        let mut cluster = EtcdCluster {
            members,
            extra_ips: extra_ips.to_vec(),
            _dir: dir,
        };
        for m in &mut cluster.members {
            m.spawn()?;
        }
        let all: Vec<usize> = (0..n).collect();
        cluster.wait_ready(&all)?;
        Ok(cluster)
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

    /// Client URLs on loopback, in member order.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| format!("http://127.0.0.1:{}", m.client_port))
            .collect()
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
            .map(|m| format!("http://{ip}:{}", m.client_port))
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
