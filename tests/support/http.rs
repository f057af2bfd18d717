//! promd's HTTP endpoint on nspawn hosts (tests/system_http*.rs, tests/system_metrics.rs):
//! the cluster they share, and a request from inside a host.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::cluster::{Cluster, StoreKind};
use super::etcd::EtcdCluster;
use super::hosts::{Host, HostSpec, Net};

/// The port every test host's promd listens on.
pub const PORT: u16 = 8008;

/// Three hosts (n1, n2, n3) on links of their own, a 3-member etcd on the machine, and on
/// each host promd with a `lease` and `[http] listen = [LISTEN]` (e.g. `"0.0.0.0:8008"`: in
/// each host's own network namespace, its loopback and its own address). Keep all three
/// bindings (`let (_net, _etcd, c) = ...`): dropping them removes everything.
pub fn boot(listen: &str, lease: Duration) -> (Net, EtcdCluster, Cluster) {
    boot_with(listen, lease, |_, _| {})
}

/// [`boot`], with a last word on each host's files (as [`Cluster::boot_with`]).
pub fn boot_with(
    listen: &str,
    lease: Duration,
    customize: impl Fn(usize, &mut HostSpec),
) -> (Net, EtcdCluster, Cluster) {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    // After the group's keys: a table of its own.
    let http = format!("\n[http]\nlisten = [\"{listen}\"]\n");
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), lease, &http, customize);
    (net, etcd, c)
}

/// `curl` inside the host on its loopback, port [`PORT`]: (status code, body); code 0 when
/// no answer came within 5 s.
pub fn curl(h: &Host, method: &str, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{PORT}{path}");
    let out = h.exec(&[
        "curl",
        "--silent",
        "--noproxy",
        "*",
        "--max-time",
        "5",
        "--request",
        method,
        "--write-out",
        "\n%{http_code}",
        &url,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `GET path` from this machine to the host's own address on [`PORT`], as a balancer or a
/// scraper would: (status code, body). Panics if no answer comes within 5 s.
pub fn get_from_machine(h: &Host, path: &str) -> (u16, String) {
    try_get_from_machine(h, path).unwrap_or_else(|e| panic!("{}: GET {path}: {e}", h.name()))
}

/// [`get_from_machine`], or why it got no answer.
pub fn try_get_from_machine(h: &Host, path: &str) -> Result<(u16, String), String> {
    let addr = SocketAddr::from((h.ip(), PORT));
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line from {addr}: {raw:?}"))?;
    let body = raw.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    Ok((code, body.to_string()))
}
