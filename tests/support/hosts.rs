//! Real systemd hosts for system tests: each host is a `systemd-nspawn --boot` container of
//! this machine's own `/usr` (`--volatile=yes`), with systemd as PID 1, its own system bus and
//! journald, in a network namespace of its own joined to the machine by a veth pair
//! (see `shared/testing.md`).
//!
//! ```ignore
//! let net = Net::new(2);
//! let mut spec = HostSpec::new("n1");
//! spec.file("/etc/systemd/system/web.service", span_unit("web", "web", "/var/lib/spans/n1.log"));
//! spec.bind_rw(&spans_dir, "/var/lib/spans");
//! let h = net.boot(0, spec);
//! h.run_ok(&["systemctl", "start", "web"]);
//! ```
//!
//! Ownership: a [`Net`] owns its network namespaces and veth links (removed by `Drop`, after the
//! last [`Host`] booted in them is gone too); a [`Host`] owns its container (halted by `Drop`) and
//! its per-host directory (removed by `Drop`). Only processes this test started are signalled,
//! always by pid. Names (netns, links, machines) carry this process's pid and a counter, so test
//! binaries may run at the same time; subnets are /24s of 10.200.0.0/16 that no interface of the
//! machine uses yet, chosen under a lock file. A dual-stack [`Net`] ([`Net::new_dual_stack`])
//! also puts `fd70:726d:64:X::/64` (a unique local prefix, same `X`) on each link.
//!
//! Each container runs in a cgroup of its own (`promd-test-MACHINE`), not in nspawn's default
//! `/payload`, which all containers would share (see `CgroupDir`).
//!
//! If the test process dies without unwinding (SIGKILL, abort), each container's guardian
//! process gets SIGTERM through the parent-death signal and halts it (see `GUARDIAN`); its netns,
//! links, cgroups and temp dirs stay behind (named `pm<pid hex>-...`; `ip netns del NAME`).

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::fs;
use std::io::{self, Write as _};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddrV4};
use std::os::unix::fs::{PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock, mpsc};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use nix::sys::signal::Signal;
use nix::sys::signal::kill;
use nix::unistd::Pid;

/// How long [`Net::boot`] waits for a host to come up unless [`HostSpec::boot_timeout`] says
/// otherwise (a boot takes well under a second on an idle machine; CI machines are busy).
pub const DEFAULT_BOOT_TIMEOUT: Duration = Duration::from_secs(90);
/// How long [`Host::exec`] lets a command run before it is killed (inside, with `timeout`).
pub const DEFAULT_EXEC_TIMEOUT: Duration = Duration::from_secs(120);

const CONTAINER_IF: &str = "eth0";
/// `PATH` of commands run inside a host.
pub const CONTAINER_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const LOCK_FILE: &str = "/tmp/promd-test-net.lock";
const CUT_TABLE: &str = "promd_cut";
/// `busctl call ... GetId`: a call that succeeds once a system bus answers.
pub const BUS_GET_ID: [&str; 6] = [
    "busctl",
    "call",
    "org.freedesktop.DBus",
    "/org/freedesktop/DBus",
    "org.freedesktop.DBus",
    "GetId",
];

static NET_COUNTER: AtomicU32 = AtomicU32::new(0);

// ---------------------------------------------------------------------------------------------
// Small process helpers (machine side), also used by `installhost.rs`

/// Runs a machine command to completion (stdin from /dev/null); panics if it cannot start.
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (is it installed? see scripts/deps.sh)")
        })
}

/// [`run`]; panics with its output unless it exits 0. Returns stdout.
pub fn run_must(program: &str, args: &[&str]) -> String {
    let out = run(program, args);
    if !out.status.success() {
        panic!(
            "`{program} {}` failed ({}):\n{}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run_with_stdin(program: &str, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write to {program}: {e}"));
    }
    child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("cannot wait for {program}: {e}"))
}

/// Spawns `cmd` from one long-lived thread with `PR_SET_PDEATHSIG = SIGTERM`, so that the child
/// gets SIGTERM if this test process dies. (The parent-death signal follows the *thread* that
/// forked, hence one thread that lives as long as the process.)
pub fn spawn_with_parent_death_signal(mut cmd: Command) -> io::Result<Child> {
    type Job = (Command, mpsc::Sender<io::Result<Child>>);
    static SPAWNER: OnceLock<mpsc::Sender<Job>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hosts-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("cannot start the spawner thread");
        tx
    });
    // SAFETY: prctl(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(io::Error::from));
    }
    let (reply_tx, reply_rx) = mpsc::channel();
    spawner
        .send((cmd, reply_tx))
        .map_err(|_| io::Error::other("spawner thread is gone"))?;
    reply_rx
        .recv()
        .map_err(|_| io::Error::other("spawner thread is gone"))?
}

/// Waits for `child` at most `timeout`; `Some(status)` once it has exited.
pub fn wait_child(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) => {}
            Err(e) => panic!("cannot wait for pid {}: {e}", child.id()),
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` every 20 ms until it is true; panics naming `what` after `timeout`.
pub fn wait_until(timeout: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    loop {
        if cond() {
            return;
        }
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting until {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Realtime clock in ns since the epoch: the clock `span_unit` records with (`date +%s%N`).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// 128 random bits in hex (a machine-id).
pub fn random_hex128() -> String {
    let uuid = fs::read_to_string("/proc/sys/kernel/random/uuid")
        .unwrap_or_else(|e| panic!("cannot read /proc/sys/kernel/random/uuid: {e}"));
    uuid.trim().replace('-', "")
}

/// `pid:[4026531836]` for `/proc/PID/ns/pid`, if the process exists.
fn pid_ns(pid: u32) -> Option<PathBuf> {
    fs::read_link(format!("/proc/{pid}/ns/pid")).ok()
}

/// What `/proc/PID/status` says of a process.
pub struct ProcStatus {
    pub name: String,
    pub state: char,
    pub ppid: u32,
    /// Its pid in each pid namespace it is in, outermost first.
    pub nspid: Vec<u32>,
}

pub fn proc_status(pid: u32) -> Option<ProcStatus> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let mut st = ProcStatus {
        name: String::new(),
        state: '?',
        ppid: 0,
        nspid: Vec::new(),
    };
    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key {
            "Name" => st.name = value.to_string(),
            "State" => st.state = value.chars().next().unwrap_or('?'),
            "PPid" => st.ppid = value.parse().unwrap_or(0),
            "NSpid" => {
                st.nspid = value
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect()
            }
            _ => {}
        }
    }
    Some(st)
}

/// Start time of a process in clock ticks since boot (field 22 of /proc/PID/stat).
fn proc_start_ticks(pid: u32) -> u64 {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return u64::MAX;
    };
    // The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return u64::MAX;
    };
    rest.split_whitespace()
        .nth(19)
        .and_then(|v| v.parse().ok())
        .unwrap_or(u64::MAX)
}

/// The pids of every process of the machine.
pub fn all_pids() -> Vec<u32> {
    let Ok(dir) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect()
}

// ---------------------------------------------------------------------------------------------
// A container started through the guardian, also used by `installhost.rs`

/// One pass over the machine's processes: notes nspawn (the guardian's child named
/// `systemd-nspawn`) in `nspawn_pid` while that is 0, and returns the container's init (the child
/// of nspawn that is PID 1 in a pid namespace of its own) once there is one.
pub fn find_container_init(guardian: u32, nspawn_pid: &mut u32) -> Option<u32> {
    for pid in all_pids() {
        let Some(st) = proc_status(pid) else { continue };
        if *nspawn_pid == 0 && st.ppid == guardian && st.name == "systemd-nspawn" {
            *nspawn_pid = pid;
        }
        let is_init = *nspawn_pid != 0 && st.ppid == *nspawn_pid && st.nspid.len() >= 2;
        if is_init && st.nspid.last() == Some(&1) {
            return Some(pid);
        }
    }
    None
}

/// `nsenter -t INIT -a -- timeout -k 5 SECS ARGS...`: runs `args` in all the namespaces of the
/// container whose init is `init_pid`, killed (exit status 124) after `timeout`, with a clean
/// environment (`PATH`, `LANG`), in `/`, stdin from /dev/null.
pub fn nsenter_command(init_pid: u32, args: &[&str], timeout: Duration) -> Command {
    let secs = format!("{:.3}", timeout.as_secs_f64().max(0.001));
    let mut cmd = Command::new("nsenter");
    cmd.args([
        "-t",
        &init_pid.to_string(),
        "-a",
        "--",
        "timeout",
        "-k",
        "5",
        &secs,
    ])
    .args(args)
    .env_clear()
    .env("PATH", CONTAINER_PATH)
    .env("LANG", "C.UTF-8")
    .current_dir("/")
    .stdin(Stdio::null());
    cmd
}

/// The stdout of `args` run on `host`; panics with its output unless it exited 0.
pub fn stdout_if_ok(host: &str, args: &[&str], out: Output) -> String {
    if !out.status.success() {
        let why = if out.status.code() == Some(124) {
            " (timed out)"
        } else {
            ""
        };
        panic!(
            "{host}: `{}` failed ({}{why}):\nstderr: {}\nstdout: {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim_end(),
            String::from_utf8_lossy(&out.stdout).trim_end()
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// If the guardian `child` has exited: empties `child` and returns what to panic with (saying
/// `during` what, with the container console written to `console`).
pub fn guardian_exited(
    name: &str,
    during: &str,
    child: &mut Option<Child>,
    console: &Path,
) -> Option<String> {
    let status = child.as_mut()?.try_wait().ok()??;
    *child = None;
    let console = fs::read_to_string(console).unwrap_or_default();
    Some(format!(
        "{name}: systemd-nspawn exited while {during} ({status}):\n{console}"
    ))
}

/// Whether `state` (from `systemctl is-system-running --wait`) means the system is up
/// (`running`, `degraded`); panics on `maintenance` and `stopping`, which no boot ends in.
pub fn system_is_up(name: &str, state: &str, console_log: impl FnOnce() -> String) -> bool {
    match state {
        "running" | "degraded" => true,
        "maintenance" | "stopping" => panic!("{name}: system is {state}:\n{}", console_log()),
        _ => false,
    }
}

/// The end of a halt, once the guardian `child` has been told to halt its container (or its
/// init was killed): waits up to 40 s for the guardian; then SIGKILL to the container's init
/// `init_pid` (if `init_alive()`: still that process) and up to 15 s more; then SIGKILL to
/// nspawn (while it is still the guardian's child) and to the guardian, and reaps it.
pub fn finish_halt(
    name: &str,
    child: &mut Child,
    init_pid: u32,
    nspawn_pid: u32,
    init_alive: impl Fn() -> bool,
) {
    if wait_child(child, Duration::from_secs(40)).is_some() {
        return;
    }
    eprintln!("{name}: container did not halt within 40 s; killing its init");
    if init_alive() {
        let _ = kill(Pid::from_raw(init_pid as i32), Signal::SIGKILL);
    }
    if wait_child(child, Duration::from_secs(15)).is_none() {
        eprintln!("{name}: systemd-nspawn did not exit; killing it");
        let nspawn_is_ours = proc_status(nspawn_pid)
            .is_some_and(|st| st.ppid == child.id() && st.name == "systemd-nspawn");
        if nspawn_pid != 0 && nspawn_is_ours {
            let _ = kill(Pid::from_raw(nspawn_pid as i32), Signal::SIGKILL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Net: network namespaces and veth links

/// One host's network: a netns with `eth0` (`ip`/24) and `lo`, joined by a veth pair to the
/// machine side `link` (`gateway`/24), and on a dual-stack net also `ip6`/64 and `gateway6`/64.
/// Removed on drop, once neither the [`Net`] nor a [`Host`] booted in it holds it.
struct HostNet {
    index: usize,
    netns: String,
    /// `--net=/run/netns/NETNS`, for `nsenter`.
    nsenter_net: String,
    link: String,
    gateway: Ipv4Addr,
    ip: Ipv4Addr,
    /// `(gateway6, ip6)` on a dual-stack net.
    v6: Option<(Ipv6Addr, Ipv6Addr)>,
    in_use: AtomicBool,
}

impl HostNet {
    /// Runs `args` in the host's network namespace. `nsenter --net=` rather than
    /// `ip netns exec`: the latter also unshares the mount namespace and remounts `/sys`,
    /// which took up to a second on a CI machine carrying hundreds of nspawn units — a
    /// second during which a cut was not yet in force.
    fn netns_exec(&self, args: &[&str]) -> String {
        run_must("nsenter", &self.nsenter_args(args))
    }

    /// `nsenter`'s arguments to run `args` in the host's network namespace.
    fn nsenter_args<'a>(&'a self, args: &[&'a str]) -> Vec<&'a str> {
        let mut full = vec![self.nsenter_net.as_str()];
        full.extend_from_slice(args);
        full
    }
}

impl Drop for HostNet {
    fn drop(&mut self) {
        // Deleting the netns destroys eth0 and with it the veth pair; delete the machine side
        // explicitly too in case a process still holds the namespace open.
        let _ = run("ip", &["netns", "del", &self.netns]);
        if Path::new(&format!("/sys/class/net/{}", self.link)).exists() {
            let _ = run("ip", &["link", "del", &self.link]);
        }
    }
}

/// The network of one test: `n` hosts, each with its own netns, veth pair and /24.
pub struct Net {
    tag: String,
    hosts: Vec<Arc<HostNet>>,
}

impl Net {
    /// Creates `n` (1..=16) host networks. Host `i` gets `10.200.X.2/24` on `eth0` in its netns
    /// and the machine gets `10.200.X.1/24` (`gateway_ip(i)`) on the other end; each netns also
    /// has host routes to every other gateway IP of this `Net` (so any host can reach an etcd
    /// member listening on any gateway IP), but none to other hosts' container IPs.
    pub fn new(n: usize) -> Net {
        Net::create(n, false)
    }

    /// Like [`Net::new`], and each link carries IPv6 too: host `i` gets `fd70:726d:64:X::2/64`
    /// and the machine `fd70:726d:64:X::1/64` (`gateway_ip6(i)`), with host routes to the other
    /// gateways as for IPv4. No router solicitations, no DAD: only what tests send.
    pub fn new_dual_stack(n: usize) -> Net {
        Net::create(n, true)
    }

    fn create(n: usize, dual_stack: bool) -> Net {
        assert!((1..=16).contains(&n), "Net::new: 1 to 16 hosts, not {n}");
        let pid = std::process::id();
        let counter = NET_COUNTER.fetch_add(1, Ordering::SeqCst);
        let tag = format!("pm{pid:x}-{counter:x}");
        let mut net = Net {
            tag,
            hosts: Vec::with_capacity(n),
        };
        {
            let _lock = SubnetLock::acquire();
            let mut used = used_subnets();
            let mut seed =
                (pid as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (counter as u64 * 7919);
            for i in 0..n {
                let name = format!("{}-{i:x}", net.tag);
                assert!(
                    name.len() <= 15,
                    "interface name {name} too long (too many Nets?)"
                );
                let octet = (0..254u64)
                    .map(|k| (1 + (seed.wrapping_add(k)) % 254) as u8)
                    .find(|o| !used.contains(o))
                    .expect("no free /24 left in 10.200.0.0/16");
                used.insert(octet);
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let hn = Arc::new(HostNet {
                    index: i,
                    netns: name.clone(),
                    nsenter_net: format!("--net=/run/netns/{name}"),
                    link: name,
                    gateway: Ipv4Addr::new(10, 200, octet, 1),
                    ip: Ipv4Addr::new(10, 200, octet, 2),
                    v6: dual_stack.then(|| (ula(octet, 1), ula(octet, 2))),
                    in_use: AtomicBool::new(false),
                });
                // Registered before anything is created, so a failure below still cleans up.
                net.hosts.push(hn.clone());
                create_host_net(&hn);
            }
        }
        for hn in &net.hosts {
            for other in &net.hosts {
                if other.index != hn.index {
                    let dst = format!("{}/32", other.gateway);
                    let via = hn.gateway.to_string();
                    hn.netns_exec(&["ip", "route", "add", &dst, "via", &via, "dev", CONTAINER_IF]);
                    if let (Some((gw6, _)), Some((other6, _))) = (hn.v6, other.v6) {
                        let dst = format!("{other6}/128");
                        let via = gw6.to_string();
                        hn.netns_exec(&[
                            "ip",
                            "-6",
                            "route",
                            "add",
                            &dst,
                            "via",
                            &via,
                            "dev",
                            CONTAINER_IF,
                        ]);
                    }
                }
            }
        }
        net
    }

    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// The unique prefix of this Net's names (`pm<pid hex>-<counter hex>`).
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Machine-side address of host `i`'s veth (`10.200.X.1`): where the test's servers listen.
    pub fn gateway_ip(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].gateway
    }

    pub fn gateway_ips(&self) -> Vec<Ipv4Addr> {
        self.hosts.iter().map(|h| h.gateway).collect()
    }

    /// Container-side address of host `i` (`10.200.X.2`).
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        self.hosts[i].ip
    }

    /// Machine-side IPv6 address of host `i`'s veth (`fd70:726d:64:X::1`), on a dual-stack net.
    pub fn gateway_ip6(&self, i: usize) -> Ipv6Addr {
        match self.hosts[i].v6 {
            Some((gateway, _)) => gateway,
            None => panic!("not a dual-stack Net: use Net::new_dual_stack"),
        }
    }

    pub fn gateway_ips6(&self) -> Vec<Ipv6Addr> {
        (0..self.len()).map(|i| self.gateway_ip6(i)).collect()
    }

    /// Names of the network namespaces (`/run/netns/NAME`), for cleanup checks.
    pub fn netns_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.netns.clone()).collect()
    }

    /// Names of the machine-side veth links, for cleanup checks.
    pub fn link_names(&self) -> Vec<String> {
        self.hosts.iter().map(|h| h.link.clone()).collect()
    }

    /// Boots host `i` from `spec` and waits until it is up (see [`Host`]).
    pub fn boot(&self, i: usize, spec: HostSpec) -> Host {
        let mut host = self.start(i, spec);
        host.wait_ready();
        host
    }

    /// Boots `specs[i]` as host `i`, all at once, and waits until every one is up.
    pub fn boot_all(&self, specs: Vec<HostSpec>) -> Vec<Host> {
        assert!(specs.len() <= self.len(), "boot_all: more specs than hosts");
        let mut hosts: Vec<Host> = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| self.start(i, spec))
            .collect();
        for h in &mut hosts {
            h.wait_ready();
        }
        hosts
    }

    fn start(&self, i: usize, spec: HostSpec) -> Host {
        assert!(
            i < self.len(),
            "host index {i} out of range (Net of {})",
            self.len()
        );
        let hn = self.hosts[i].clone();
        assert!(
            !hn.in_use.swap(true, Ordering::SeqCst),
            "host {i} of this Net is still running: power it off first"
        );
        Host::start(hn, format!("{}-{}", self.tag, i), spec)
    }
}

fn create_host_net(hn: &HostNet) {
    let gw = format!("{}/24", hn.gateway);
    let ip = format!("{}/24", hn.ip);
    run_must("ip", &["netns", "add", &hn.netns]);
    // The peer is created directly inside the netns, so its name cannot clash with the machine's.
    run_must(
        "ip",
        &[
            "link",
            "add",
            &hn.link,
            "type",
            "veth",
            "peer",
            "name",
            CONTAINER_IF,
            "netns",
            &hn.netns,
        ],
    );
    // IPv6 only on a dual-stack net, and then without router solicitations or DAD traffic:
    // only what tests send.
    let machine_v6 = format!("/proc/sys/net/ipv6/conf/{}", hn.link);
    let container_v6 = format!("/proc/sys/net/ipv6/conf/{CONTAINER_IF}");
    let quiet_v6 = |dir: &str| match hn.v6 {
        None => format!("f={dir}/disable_ipv6; if [ -e $f ]; then echo 1 > $f; fi"),
        Some(_) => format!(
            "echo 0 > {dir}/accept_ra && echo 0 > {dir}/router_solicitations && \
             echo 0 > {dir}/accept_dad && echo 0 > {dir}/disable_ipv6"
        ),
    };
    run_must("sh", &["-c", &quiet_v6(&machine_v6)]);
    run_must("ip", &["addr", "add", &gw, "dev", &hn.link]);
    if let Some((gateway6, _)) = hn.v6 {
        let gw6 = format!("{gateway6}/64");
        run_must("ip", &["-6", "addr", "add", &gw6, "dev", &hn.link, "nodad"]);
    }
    run_must("ip", &["link", "set", &hn.link, "up"]);
    hn.netns_exec(&["sh", "-c", &quiet_v6(&container_v6)]);
    hn.netns_exec(&["ip", "addr", "add", &ip, "dev", CONTAINER_IF]);
    if let Some((_, ip6)) = hn.v6 {
        let ip6 = format!("{ip6}/64");
        hn.netns_exec(&[
            "ip",
            "-6",
            "addr",
            "add",
            &ip6,
            "dev",
            CONTAINER_IF,
            "nodad",
        ]);
    }
    hn.netns_exec(&["ip", "link", "set", CONTAINER_IF, "up"]);
    hn.netns_exec(&["ip", "link", "set", "lo", "up"]);
}

/// `fd70:726d:64:X::HOST`: the IPv6 twin of `10.200.X.HOST`.
fn ula(octet: u8, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd70, 0x726d, 0x64, u16::from(octet), 0, 0, 0, host)
}

/// Third octets of 10.200.X.0/24 that an address or route of the machine already uses.
fn used_subnets() -> BTreeSet<u8> {
    let mut used = BTreeSet::new();
    let addrs = run_must("ip", &["-4", "-o", "addr", "show"]);
    let routes = run_must("ip", &["-4", "route", "show", "table", "all"]);
    let words = addrs.split_whitespace().chain(routes.split_whitespace());
    for word in words {
        let addr = word.split('/').next().unwrap_or("");
        if let Ok(a) = addr.parse::<Ipv4Addr>() {
            let o = a.octets();
            if o[0] == 10 && o[1] == 200 {
                used.insert(o[2]);
            }
        }
    }
    used
}

/// Serialises subnet choice between test processes (flock on a file in /tmp).
struct SubnetLock(fs::File);

impl SubnetLock {
    fn acquire() -> SubnetLock {
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(LOCK_FILE)
            .unwrap_or_else(|e| panic!("cannot open {LOCK_FILE}: {e}"));
        file.lock()
            .unwrap_or_else(|e| panic!("cannot lock {LOCK_FILE}: {e}"));
        SubnetLock(file)
    }
}

impl Drop for SubnetLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

// ---------------------------------------------------------------------------------------------
// HostSpec

#[derive(Clone, Debug)]
struct SpecFile {
    path: String,
    contents: Vec<u8>,
    mode: u32,
}

#[derive(Clone, Debug)]
struct SpecBind {
    source: PathBuf,
    target: String,
    writable: bool,
}

/// What a host boots with. `/etc` of the host is a per-host directory on the machine (bound
/// read-write over `/etc`, so later tests can add files with [`Host::write_file`]); files
/// elsewhere are written under the per-host directory and their parent folder is bound in.
#[derive(Clone, Debug)]
pub struct HostSpec {
    name: String,
    files: Vec<SpecFile>,
    links: Vec<(String, String)>,
    binds: Vec<SpecBind>,
    bins: Vec<PathBuf>,
    boot_timeout: Duration,
    /// Capabilities granted beyond nspawn's default set (`--capability=`).
    capabilities: Vec<String>,
}

impl HostSpec {
    /// `name` is the container's hostname (promd's default node name): `[a-z0-9-]`, at most 63.
    pub fn new(name: &str) -> HostSpec {
        assert!(
            !name.is_empty()
                && name.len() <= 63
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !name.starts_with('-'),
            "host name {name:?}: use [a-z0-9-], at most 63 characters"
        );
        HostSpec {
            name: name.to_string(),
            files: Vec::new(),
            links: Vec::new(),
            binds: Vec::new(),
            bins: Vec::new(),
            boot_timeout: DEFAULT_BOOT_TIMEOUT,
            capabilities: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The contents the host will find at `path` (the last file given for it), if any.
    pub fn file_contents(&self, path: &str) -> Option<&[u8]> {
        self.files
            .iter()
            .rev()
            .find(|f| f.path == path)
            .map(|f| f.contents.as_slice())
    }

    /// A file (mode 0644) at absolute `path` inside the host. Not under `/usr` (read-only).
    pub fn file(&mut self, path: &str, contents: impl AsRef<[u8]>) -> &mut Self {
        self.file_mode(path, contents, 0o644)
    }

    /// An executable file (mode 0755), e.g. a health-check script under `/opt`.
    pub fn executable(&mut self, path: &str, contents: impl AsRef<[u8]>) -> &mut Self {
        self.file_mode(path, contents, 0o755)
    }

    pub fn file_mode(&mut self, path: &str, contents: impl AsRef<[u8]>, mode: u32) -> &mut Self {
        check_container_path(path);
        assert!(
            path != "/usr" && !path.starts_with("/usr/"),
            "{path}: /usr is read-only in the host; use HostSpec::bin or a bind"
        );
        self.files.push(SpecFile {
            path: path.to_string(),
            contents: contents.as_ref().to_vec(),
            mode,
        });
        self
    }

    /// `systemctl enable` by hand: `/etc/systemd/system/TARGET.wants/UNIT` as a symlink.
    pub fn enable(&mut self, unit: &str, target: &str) -> &mut Self {
        check_unit_name(unit);
        check_unit_name(target);
        let link = format!("/etc/systemd/system/{target}.wants/{unit}");
        self.links
            .push((link, format!("/etc/systemd/system/{unit}")));
        self
    }

    /// Masks a unit (`/etc/systemd/system/UNIT -> /dev/null`).
    pub fn mask(&mut self, unit: &str) -> &mut Self {
        check_unit_name(unit);
        self.links.push((
            format!("/etc/systemd/system/{unit}"),
            "/dev/null".to_string(),
        ));
        self
    }

    /// Binds a machine directory (or file) read-write at `target` inside the host.
    pub fn bind_rw(&mut self, source: impl AsRef<Path>, target: &str) -> &mut Self {
        self.bind(source.as_ref(), target, true)
    }

    pub fn bind_ro(&mut self, source: impl AsRef<Path>, target: &str) -> &mut Self {
        self.bind(source.as_ref(), target, false)
    }

    fn bind(&mut self, source: &Path, target: &str, writable: bool) -> &mut Self {
        check_container_path(target);
        let s = source
            .to_str()
            .unwrap_or_else(|| panic!("bind source {source:?} is not UTF-8"));
        assert!(
            !s.contains(':') && source.is_absolute(),
            "bind source {s}: absolute, no ':'"
        );
        assert!(source.exists(), "bind source {s} does not exist");
        self.binds.push(SpecBind {
            source: source.to_path_buf(),
            target: target.to_string(),
            writable,
        });
        self
    }

    /// Copies a machine binary into the host's `/usr/local/bin` (a per-host folder bound over it).
    pub fn bin(&mut self, path: impl AsRef<Path>) -> &mut Self {
        let path = path.as_ref();
        assert!(path.is_file(), "binary {path:?} does not exist");
        self.bins.push(path.to_path_buf());
        self
    }

    pub fn boot_timeout(&mut self, timeout: Duration) -> &mut Self {
        self.boot_timeout = timeout;
        self
    }

    /// Grants the host's processes `cap` (e.g. `CAP_NET_ADMIN`, which nspawn withholds from a
    /// container in a network namespace it did not make: promd's address units need it).
    pub fn capability(&mut self, cap: &str) -> &mut Self {
        self.capabilities.push(cap.to_string());
        self
    }
}

fn check_container_path(path: &str) {
    assert!(
        path.starts_with('/')
            && !path.ends_with('/')
            && !path.contains(':')
            && !path.split('/').any(|c| c == ".." || c == "."),
        "{path:?}: an absolute, normalised path without ':'"
    );
}

fn check_unit_name(unit: &str) {
    assert!(
        !unit.is_empty() && !unit.contains('/') && unit.contains('.'),
        "{unit:?} is not a unit name"
    );
}

// ---------------------------------------------------------------------------------------------
// Host

/// A booted container. Dropping it halts the container (SIGTERM to nspawn, then SIGKILL to the
/// container's init if it does not halt in time) and removes the per-host directory.
pub struct Host {
    name: String,
    machine: String,
    net: Arc<HostNet>,
    dir: tempfile::TempDir,
    child: Option<Child>,
    nspawn_pid: u32,
    init_pid: u32,
    pid_ns: PathBuf,
    started: Instant,
    boot_time: Duration,
    boot_timeout: Duration,
    cgroup: Option<CgroupDir>,
}

impl Host {
    /// promd's restarts here: (`NRestarts` of `promd.service`, `u64::MAX` if unreadable;
    /// watchdog timeouts in its journal).
    pub fn promd_restarts(&self) -> (u64, usize) {
        let n = self
            .run_ok(&["systemctl", "show", "-P", "NRestarts", "promd"])
            .trim()
            .parse()
            .unwrap_or(u64::MAX);
        let timeouts = self
            .journal(&["-u", "promd.service", "-o", "cat"])
            .matches("Watchdog timeout")
            .count();
        (n, timeouts)
    }

    fn start(net: Arc<HostNet>, machine: String, spec: HostSpec) -> Host {
        let dir = tempfile::Builder::new()
            .prefix(&format!("promd-host-{}-", spec.name))
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot make a temp dir: {e}"));
        let root = dir.path();
        let etc = root.join("etc");
        let bin = root.join("bin");
        let extra = root.join("root");
        for d in [
            "etc/systemd/system",
            "etc/promd",
            "etc/dbus-1/system.d",
            "bin",
            "root",
        ] {
            fs::create_dir_all(root.join(d)).unwrap_or_else(|e| panic!("mkdir {d}: {e}"));
        }
        // A machine-id of its own: distinct journals, and (because /etc/machine-id exists) not a
        // "first boot", so systemd does not run `preset-all`, which would enable and start every
        // unit installed on the machine (etcd, nftables, ...).
        let machine_id = random_hex128();
        write_file_mode(
            &etc.join("machine-id"),
            format!("{machine_id}\n").as_bytes(),
            0o444,
        );
        // Servers do not need graphical.target.
        symlink(
            "/usr/lib/systemd/system/multi-user.target",
            etc.join("systemd/system/default.target"),
        )
        .unwrap_or_else(|e| panic!("default.target: {e}"));

        let mut extra_dirs = BTreeSet::new();
        for f in &spec.files {
            let local = match f.path.strip_prefix("/etc/") {
                Some(rest) => etc.join(rest),
                None => {
                    let parent = Path::new(&f.path).parent().map(Path::to_path_buf);
                    let parent = parent.filter(|p| p != Path::new("/"));
                    let parent =
                        parent.unwrap_or_else(|| panic!("{}: not in the root folder", f.path));
                    extra_dirs.insert(parent);
                    extra.join(&f.path[1..])
                }
            };
            write_file_mode(&local, &f.contents, f.mode);
        }
        for (link, target) in &spec.links {
            // An enabled unit that the spec does not provide is one of the machine's own.
            let mut target = target.clone();
            if let Some(unit) = target.strip_prefix("/etc/systemd/system/") {
                let stock = format!("/usr/lib/systemd/system/{unit}");
                if !spec.files.iter().any(|f| f.path == target) && Path::new(&stock).exists() {
                    target = stock;
                }
            }
            let local = etc.join(link.strip_prefix("/etc/").unwrap_or(link));
            if let Some(parent) = local.parent() {
                fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
            }
            let _ = fs::remove_file(&local);
            symlink(&target, &local).unwrap_or_else(|e| panic!("symlink {link}: {e}"));
        }
        for b in &spec.bins {
            let name = b
                .file_name()
                .unwrap_or_else(|| panic!("{b:?}: no file name"));
            let dest = bin.join(name);
            fs::copy(b, &dest).unwrap_or_else(|e| panic!("copy {b:?}: {e}"));
            fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))
                .unwrap_or_else(|e| panic!("chmod {dest:?}: {e}"));
        }

        // Its own cgroup, or every container would share nspawn's "payload" cgroup (see CgroupDir).
        let cgroup = CgroupDir::create(&machine);
        let mut cmd = CgroupDir::guardian(cgroup.as_ref(), "systemd-nspawn");
        cmd.args([
            "--quiet",
            "--directory=/",
            "--volatile=yes",
            &format!("--machine={machine}"),
            &format!("--hostname={}", spec.name),
            &format!("--uuid={machine_id}"),
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            &format!("--network-namespace-path=/run/netns/{}", net.netns),
            &format!("--bind={}:/etc", etc.display()),
            &format!("--bind-ro={}:/usr/local/bin", bin.display()),
        ]);
        // /proc/sys/net writable, as on a machine of its own: the network namespace is the
        // test's, made for this host alone (promd's address units turn on an interface's
        // `promote_secondaries` there).
        cmd.env("SYSTEMD_NSPAWN_API_VFS_WRITABLE", "network");
        // Only the outermost folders: a bound folder already shows everything below it.
        let outermost: Vec<&PathBuf> = extra_dirs
            .iter()
            .filter(|d| !extra_dirs.iter().any(|o| o != *d && d.starts_with(o)))
            .collect();
        for d in outermost {
            let local = extra.join(d.strip_prefix("/").unwrap_or(d));
            cmd.arg(format!("--bind={}:{}", local.display(), d.display()));
        }
        for b in &spec.binds {
            let opt = if b.writable { "--bind" } else { "--bind-ro" };
            cmd.arg(format!("{opt}={}:{}", b.source.display(), b.target));
        }
        for cap in &spec.capabilities {
            cmd.arg(format!("--capability={cap}"));
        }
        cmd.args(["--", "systemd.firstboot=off"]);
        let console = fs::File::create(root.join("console.log"))
            .unwrap_or_else(|e| panic!("console.log: {e}"));
        let console2 = console
            .try_clone()
            .unwrap_or_else(|e| panic!("console.log: {e}"));
        cmd.stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .current_dir("/");

        let started = Instant::now();
        let child = spawn_with_parent_death_signal(cmd)
            .unwrap_or_else(|e| panic!("cannot start systemd-nspawn: {e} (see scripts/deps.sh)"));
        let mut host = Host {
            name: spec.name.clone(),
            machine,
            net,
            dir,
            child: Some(child),
            nspawn_pid: 0,
            init_pid: 0,
            pid_ns: PathBuf::new(),
            started,
            boot_time: Duration::ZERO,
            boot_timeout: spec.boot_timeout,
            cgroup,
        };
        host.find_init();
        host
    }

    /// nspawn (the guardian's child) and the container's systemd: the child of nspawn that is
    /// PID 1 in its own pid namespace.
    fn find_init(&mut self) {
        let deadline = self.started + self.boot_timeout;
        let guardian = self.child.as_ref().map_or(0, |c| c.id());
        loop {
            if let Some(pid) = find_container_init(guardian, &mut self.nspawn_pid)
                && let Some(ns) = pid_ns(pid)
            {
                self.init_pid = pid;
                self.pid_ns = ns;
                return;
            }
            self.check_nspawn_alive("starting");
            if Instant::now() >= deadline {
                panic!(
                    "{}: no container init after {:?}\n{}",
                    self.name,
                    self.boot_timeout,
                    self.console_log()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn check_nspawn_alive(&mut self, during: &str) {
        let console = self.dir.path().join("console.log");
        if let Some(why) = guardian_exited(&self.name, during, &mut self.child, &console) {
            self.net.in_use.store(false, Ordering::SeqCst);
            panic!("{why}");
        }
    }

    fn wait_ready(&mut self) {
        let deadline = self.started + self.boot_timeout;
        let remaining = || deadline.saturating_duration_since(Instant::now());
        // 1. systemd finished starting up (its private socket answers `--wait`).
        let mut last = String::new();
        loop {
            self.check_nspawn_alive("booting");
            if remaining().is_zero() {
                panic!(
                    "{}: not up after {:?} (is-system-running: {last:?})\nconsole:\n{}\njobs:\n{}",
                    self.name,
                    self.boot_timeout,
                    self.console_log(),
                    String::from_utf8_lossy(
                        &self.exec(&["systemctl", "list-jobs", "--no-pager"]).stdout
                    )
                );
            }
            let out = self.exec_timeout(&["systemctl", "is-system-running", "--wait"], remaining());
            last = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if system_is_up(&self.name, &last, || self.console_log()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // 2. The system bus answers.
        loop {
            let out = self.exec_timeout(&BUS_GET_ID, remaining().max(Duration::from_secs(1)));
            if out.status.success() {
                break;
            }
            self.check_nspawn_alive("waiting for the system bus");
            if remaining().is_zero() {
                panic!(
                    "{}: system bus does not answer: {}",
                    self.name,
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.boot_time = self.started.elapsed();
    }

    /// The hostname (`HostSpec::new` name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The nspawn machine name (unique on the machine).
    pub fn machine_name(&self) -> &str {
        &self.machine
    }

    /// Index of this host in its [`Net`].
    pub fn index(&self) -> usize {
        self.net.index
    }

    /// The container's address (`10.200.X.2`).
    pub fn ip(&self) -> Ipv4Addr {
        self.net.ip
    }

    /// The machine's end of this host's veth (`10.200.X.1`).
    pub fn gateway_ip(&self) -> Ipv4Addr {
        self.net.gateway
    }

    /// The machine-side end of the host's veth (its gateway address is on it).
    pub fn link(&self) -> &str {
        &self.net.link
    }

    /// The container's IPv6 address (`fd70:726d:64:X::2`), on a dual-stack net.
    pub fn ip6(&self) -> Option<Ipv6Addr> {
        self.net.v6.map(|(_, ip)| ip)
    }

    pub fn netns(&self) -> &str {
        &self.net.netns
    }

    /// Machine pid of the container's systemd (PID 1 inside).
    pub fn init_pid(&self) -> u32 {
        self.init_pid
    }

    pub fn nspawn_pid(&self) -> u32 {
        self.nspawn_pid
    }

    /// From starting nspawn until the system was up and its bus answered.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// The per-host directory on the machine (`etc/` is the host's `/etc`, `bin/` its
    /// `/usr/local/bin`, `console.log` the container console).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// The container's console output (nspawn's stdout and stderr) so far.
    pub fn console_log(&self) -> String {
        fs::read_to_string(self.dir.path().join("console.log")).unwrap_or_default()
    }

    /// Runs a command inside the host (all its namespaces, `nsenter -t INIT -a`), with a clean
    /// environment, killed after [`DEFAULT_EXEC_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_timeout(args, DEFAULT_EXEC_TIMEOUT)
    }

    /// Like [`Host::exec`], killed (exit status 124) after `timeout`.
    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        assert!(!args.is_empty(), "exec: no command");
        assert!(self.init_pid != 0, "{}: not started", self.name);
        nsenter_command(self.init_pid, args, timeout)
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// Runs a command inside; panics with its output unless it exits 0. Returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        stdout_if_ok(&self.name, args, self.exec(args))
    }

    /// `systemctl is-active UNIT` (`active`, `inactive`, `failed`, `activating`, ...).
    pub fn unit_state(&self, unit: &str) -> String {
        let out = self.exec(&["systemctl", "is-active", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn is_active(&self, unit: &str) -> bool {
        self.unit_state(unit) == "active"
    }

    /// Waits up to `timeout` until `journalctl ARGS...` inside shows `text` (what it waits
    /// for is named after the text in the panic).
    pub fn wait_for_journal(&self, args: &[&str], text: &str, timeout: Duration) {
        wait_until(
            timeout,
            &format!("{}: {text:?} in the journal", self.name),
            || self.journal(args).contains(text),
        );
    }

    /// `journalctl --no-pager -q ARGS...` inside; its stdout.
    pub fn journal(&self, args: &[&str]) -> String {
        let mut full = vec!["journalctl", "--no-pager", "-q"];
        full.extend_from_slice(args);
        let out = self.exec(&full);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// D-Bus address of the host's system bus, usable from the test process (zbus, busctl).
    pub fn bus_address(&self) -> String {
        format!(
            "unix:path=/proc/{}/root/run/dbus/system_bus_socket",
            self.init_pid
        )
    }

    /// Where a path inside the host is on the machine: `/proc/INIT/root/...`, with symlinks inside
    /// the host resolved within the host (through `/proc/INIT/root`, an absolute symlink such as
    /// `/var/run -> /run` would otherwise lead to the machine's own `/run`).
    pub fn path(&self, path: &str) -> PathBuf {
        self.resolve(path, true)
    }

    fn resolve(&self, path: &str, follow_last: bool) -> PathBuf {
        check_container_path(path);
        let root = PathBuf::from(format!("/proc/{}/root", self.init_pid));
        let mut done: Vec<String> = Vec::new();
        let mut todo: Vec<String> = path
            .split('/')
            .rev()
            .filter(|c| !c.is_empty())
            .map(String::from)
            .collect();
        let mut hops = 0;
        while let Some(comp) = todo.pop() {
            match comp.as_str() {
                "." => continue,
                ".." => {
                    done.pop();
                    continue;
                }
                _ => {}
            }
            let here = root.join(done.join("/")).join(&comp);
            let is_last = todo.is_empty();
            let link = fs::symlink_metadata(&here)
                .ok()
                .filter(|m| m.file_type().is_symlink());
            if link.is_some() && (follow_last || !is_last) {
                hops += 1;
                assert!(hops <= 40, "{}: too many symlinks in {path}", self.name);
                let target =
                    fs::read_link(&here).unwrap_or_else(|e| panic!("readlink {here:?}: {e}"));
                let target = target.to_string_lossy().into_owned();
                if target.starts_with('/') {
                    done.clear();
                }
                todo.extend(
                    target
                        .split('/')
                        .rev()
                        .filter(|c| !c.is_empty())
                        .map(String::from),
                );
            } else {
                done.push(comp);
            }
        }
        root.join(done.join("/"))
    }

    /// Writes a file inside the running host (parents created; written to a temporary file and
    /// renamed, so readers see old or new contents). Files under `/etc` stay in the per-host dir.
    pub fn write_file(&self, path: &str, contents: impl AsRef<[u8]>) {
        let dest = self.resolve(path, false);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("{}: mkdir for {path}: {e}", self.name));
        }
        let tmp = dest.with_extension("hosts-tmp");
        write_file_mode(&tmp, contents.as_ref(), 0o644);
        fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("{}: rename to {path}: {e}", self.name));
    }

    /// Reads a file inside the running host, if it exists.
    pub fn read_file(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.path(path)).ok()
    }

    /// Whether a TCP connection from inside the host to `addr` succeeds within `timeout`.
    pub fn can_connect(&self, addr: SocketAddrV4, timeout: Duration) -> bool {
        let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
        self.exec_timeout(&["bash", "-c", &script], timeout)
            .status
            .success()
    }

    /// Silent partition: inside the host's netns, drop every packet that is not on loopback. The
    /// link stays up; packets vanish.
    pub fn cut(&self) {
        self.cut_with("", "");
    }

    /// [`Host::cut`], except TCP to and from the host's own `port`: the host loses the store and
    /// every peer while clients of that port (a balancer's checks, a flood of them) still reach
    /// it, as when a host's back-end network fails and its front-end one does not. Healed by
    /// [`Host::heal`].
    pub fn cut_except_tcp_port(&self, port: u16) {
        self.cut_with(
            &format!(" tcp dport {port} accept;"),
            &format!(" tcp sport {port} accept;"),
        );
    }

    /// The cut's table, with `input` and `output` (nft statements, each ending in `;`) also
    /// accepted.
    fn cut_with(&self, input: &str, output: &str) {
        let rules = format!(
            "table inet {CUT_TABLE} {{\n\
             \tchain i {{ type filter hook input priority 0; policy drop; iif lo accept;{input} }}\n\
             \tchain o {{ type filter hook output priority 0; policy drop; oif lo accept;{output} }}\n\
             }}\n"
        );
        if self.is_cut() {
            return;
        }
        let out = run_with_stdin(
            "nsenter",
            &self.net.nsenter_args(&["nft", "-f", "-"]),
            &rules,
        );
        assert!(
            out.status.success(),
            "{}: nft cut failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Ends a [`Host::cut`].
    pub fn heal(&self) {
        if self.is_cut() {
            self.net
                .netns_exec(&["nft", "delete", "table", "inet", CUT_TABLE]);
        }
    }

    pub fn is_cut(&self) -> bool {
        let out = run(
            "nsenter",
            &self.net.nsenter_args(&["nft", "list", "tables"]),
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l.trim() == format!("table inet {CUT_TABLE}"))
    }

    /// Takes the machine side of the veth down: the host sees its carrier drop.
    pub fn link_down(&self) {
        run_must("ip", &["link", "set", &self.net.link, "down"]);
    }

    pub fn link_up(&self) {
        run_must("ip", &["link", "set", &self.net.link, "up"]);
    }

    /// Whether the host's `eth0` has carrier (read from the machine: inside the host, `/sys` shows
    /// the machine's network devices, not the host's).
    pub fn has_carrier(&self) -> bool {
        let out = run_must(
            "ip",
            &["-n", &self.net.netns, "-o", "link", "show", CONTAINER_IF],
        );
        out.contains("LOWER_UP") && !out.contains("NO-CARRIER")
    }

    /// Whether `pid` (as the machine sees it) is a live process inside this container.
    pub fn owns_pid(&self, pid: u32) -> bool {
        !self.pid_ns.as_os_str().is_empty() && pid_ns(pid).as_ref() == Some(&self.pid_ns)
    }

    /// Machine-side pids of this container's live (not zombie) processes whose name (comm,
    /// 15 characters at most) is `name`, oldest first.
    pub fn pids_on_machine(&self, name: &str) -> Vec<u32> {
        let mut found: Vec<(u64, u32)> = all_pids()
            .into_iter()
            .filter(|&pid| self.owns_pid(pid))
            .filter(|&pid| {
                proc_status(pid).is_some_and(|st| st.name == name && !matches!(st.state, 'Z' | 'X'))
            })
            .map(|pid| (proc_start_ticks(pid), pid))
            .collect();
        found.sort();
        found.into_iter().map(|(_, pid)| pid).collect()
    }

    /// The machine-side pid of the container's (oldest live) process named `name`.
    pub fn pid_on_machine(&self, name: &str) -> Option<u32> {
        self.pids_on_machine(name).into_iter().next()
    }

    /// The pid of a process inside the container as the container sees it.
    pub fn pid_inside(&self, pid: u32) -> Option<u32> {
        proc_status(pid).and_then(|st| st.nspid.last().copied())
    }

    /// Sends `signal` to a process of this container (a pid from [`Host::pid_on_machine`]);
    /// panics if the pid is not a process inside this container.
    pub fn signal(&self, pid: u32, signal: Signal) {
        assert!(
            self.owns_pid(pid),
            "{}: pid {pid} is not a process of this host",
            self.name
        );
        kill(Pid::from_raw(pid as i32), signal)
            .unwrap_or_else(|e| panic!("{}: kill -{signal} {pid}: {e}", self.name));
    }

    /// Halts the host: SIGTERM to nspawn (the container shuts down cleanly: units stop, their
    /// `ExecStopPost=` run), and waits for it; a second SIGTERM after 20 s, SIGKILL to the
    /// container's init after 40 s. Idempotent. The per-host dir stays until drop.
    pub fn poweroff(&mut self) {
        self.stop(false);
    }

    /// Ends the host at once, like a power cut: SIGKILL to the container's init (every process
    /// in the container dies with it, no `ExecStop`), then waits for nspawn.
    pub fn crash(&mut self) {
        self.stop(true);
    }

    fn stop(&mut self, hard: bool) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let init_alive = |h: &Host| h.init_pid != 0 && h.owns_pid(h.init_pid);
        if matches!(child.try_wait(), Ok(None)) {
            if hard && init_alive(self) {
                let _ = kill(Pid::from_raw(self.init_pid as i32), Signal::SIGKILL);
            } else {
                // The guardian halts the container (and insists after 20 s).
                let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            }
        }
        finish_halt(
            &self.name,
            &mut child,
            self.init_pid,
            self.nspawn_pid,
            || init_alive(self),
        );
        drop(self.cgroup.take());
        // nspawn may leave its (empty) propagation folder behind when /run is not a tmpfs.
        for d in [
            "/run/systemd/nspawn/propagate",
            "/run/systemd/nspawn/unix-export",
        ] {
            let _ = fs::remove_dir_all(Path::new(d).join(&self.machine));
        }
        self.net.in_use.store(false, Ordering::SeqCst);
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() && self.is_running() {
            let out = self.exec_timeout(
                &[
                    "journalctl",
                    "--no-pager",
                    "-q",
                    "-n",
                    "60",
                    "-o",
                    "short-monotonic",
                ],
                Duration::from_secs(10),
            );
            let tail = String::from_utf8_lossy(&out.stdout);
            eprintln!(
                "---- journal of {} (last 60 lines) ----\n{tail}---- end of {} ----",
                self.name, self.name
            );
            // The whole journal, for a failure the last lines do not explain.
            if let Some(dir) = std::env::var_os("PROMD_TEST_JOURNAL_DIR") {
                let out = self.exec_timeout(
                    &["journalctl", "--no-pager", "-q", "-o", "short-monotonic"],
                    Duration::from_secs(30),
                );
                let path = Path::new(&dir).join(format!("{}.journal", self.name));
                if fs::write(&path, &out.stdout).is_ok() {
                    eprintln!("whole journal of {}: {}", self.name, path.display());
                }
            }
        }
        self.stop(false);
    }
}

/// A cgroup of its own for one nspawn. With `--keep-unit`, nspawn puts the container in a
/// `payload` cgroup below the cgroup nspawn itself runs in (its cgroup2 path, mirrored into the
/// v1 `name=systemd` hierarchy on this hybrid machine). Every nspawn started from the machine's
/// root cgroup would share `/payload`, so the containers' systemds would manage the same
/// `/payload/system.slice/UNIT` cgroups: stopping a unit on one host kills or breaks it on
/// another (seen: `status=219/CGROUP` for `ExecStopPost=`, "Failed to kill control group").
/// So nspawn is started through a wrapper that first moves itself into `promd-test-MACHINE`.
/// The trees are removed on drop, once the container is gone.
pub struct CgroupDir {
    name: String,
    /// The v1 `name=systemd` hierarchy is mounted (cgroup2 is not mounted on the machine).
    hybrid: bool,
}

const CGROUP_V1: &str = "/sys/fs/cgroup/systemd";
const CGROUP_V2: &str = "/sys/fs/cgroup";

/// The parent of every nspawn, run as `sh -c GUARDIAN sh CGROUP systemd-nspawn ARGS...` (in a
/// private mount namespace on a hybrid machine, where it mounts cgroup2 just to join a cgroup).
/// It joins cgroup `CGROUP` (if not empty), starts nspawn, and on SIGTERM (from the test, or
/// the parent-death signal if the test process dies) halts the container: SIGTERM to nspawn
/// (orderly halt), and if nspawn has not exited 20 s later a second SIGTERM, on which nspawn
/// kills the container at once (a halt request that reaches the container's systemd before it
/// has set up its signal handlers is lost, so the second one matters). It signals nspawn only
/// while nspawn is still its own live child.
const GUARDIAN: &str = r#"
cg=$1; shift
if [ -n "$cg" ]; then
  if [ -e /sys/fs/cgroup/systemd/cgroup.procs ]; then
    d=$(mktemp -d) || exit 90
    if mount -t cgroup2 none "$d"; then
      mkdir -p "$d/$cg" && echo $$ > "$d/$cg/cgroup.procs"; r=$?
      umount "$d"
    else
      r=1
    fi
    rmdir "$d"
    [ "$r" -eq 0 ] || exit 91
    echo $$ > "/sys/fs/cgroup/systemd/$cg/cgroup.procs" || exit 92
  else
    echo $$ > "/sys/fs/cgroup/$cg/cgroup.procs" || exit 93
  fi
fi
n=
# Whether nspawn still runs (not a zombie) as this shell's child. The shell may reap it on its
# own (while running `sleep`), after which its pid could belong to another process.
ours() {
  st=$(cat "/proc/$n/stat" 2>/dev/null) || return 1
  set -- ${st##*) }
  [ "$1" != Z ] && [ "$2" = "$$" ]
}
halt() {
  [ -n "$n" ] || exit 143
  ours && kill -TERM "$n"
  i=0
  while [ "$i" -lt 200 ] && ours; do
    sleep 0.1; i=$((i + 1))
  done
  ours && kill -TERM "$n"
}
trap halt TERM INT HUP
"$@" &
n=$!
while :; do
  wait "$n"; s=$?
  ours || break
done
wait "$n" 2>/dev/null; r=$?
[ "$r" -eq 127 ] || s=$r
exit "$s"
"#;

/// Removes the cgroup2 tree NAME in a private mount namespace (hybrid).
const REMOVE_HYBRID_V2: &str = "d=$(mktemp -d) || exit 1; \
    if mount -t cgroup2 none \"$d\"; then \
      if [ -d \"$d/$1\" ]; then find \"$d/$1\" -depth -type d -exec rmdir {} + ; fi; \
      umount \"$d\"; \
    fi; rmdir \"$d\"";

impl CgroupDir {
    /// `promd-test-MACHINE`, or `None` if no cgroup hierarchy is mounted.
    pub fn create(machine: &str) -> Option<CgroupDir> {
        let name = format!("promd-test-{machine}");
        let hybrid = Path::new(CGROUP_V1).join("cgroup.procs").exists();
        if hybrid {
            // nspawn attaches to the v1 mirror of payload/supervisor but does not create it.
            for sub in ["payload", "supervisor"] {
                let path = Path::new(CGROUP_V1).join(&name).join(sub);
                fs::create_dir_all(&path)
                    .unwrap_or_else(|e| panic!("cannot create cgroup {path:?}: {e}"));
            }
        } else if Path::new(CGROUP_V2).join("cgroup.procs").exists() {
            let path = Path::new(CGROUP_V2).join(&name);
            fs::create_dir(&path).unwrap_or_else(|e| panic!("cannot create cgroup {path:?}: {e}"));
        } else {
            return None;
        }
        Some(CgroupDir { name, hybrid })
    }

    /// The guardian command (see [`GUARDIAN`]) for `program`, joining this cgroup if any.
    pub fn guardian(cgroup: Option<&CgroupDir>, program: &str) -> Command {
        let mut c;
        if cgroup.is_some_and(|cg| cg.hybrid) {
            c = Command::new("unshare");
            c.args(["-m", "--propagation", "private", "sh", "-c", GUARDIAN]);
        } else {
            c = Command::new("sh");
            c.args(["-c", GUARDIAN]);
        }
        c.args(["sh", cgroup.map_or("", |cg| cg.name.as_str()), program]);
        c
    }
}

fn remove_cgroup_tree(dir: &Path) {
    if let Ok(entries) = fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                remove_cgroup_tree(&e.path());
            }
        }
    }
    let _ = fs::remove_dir(dir);
}

impl Drop for CgroupDir {
    fn drop(&mut self) {
        let main = Path::new(if self.hybrid { CGROUP_V1 } else { CGROUP_V2 }).join(&self.name);
        // The last tasks of a container that just died may take a moment to leave its cgroups.
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            remove_cgroup_tree(&main);
            if !main.exists() || Instant::now() >= deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if self.hybrid {
            let args = [
                "-m",
                "--propagation",
                "private",
                "sh",
                "-c",
                REMOVE_HYBRID_V2,
                "sh",
                &self.name,
            ];
            let _ = run("unshare", &args);
        }
    }
}

fn write_file_mode(path: &Path, contents: &[u8], mode: u32) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
    }
    // Never write through a symlink (default.target points into the machine's /usr).
    let _ = fs::remove_file(path);
    fs::write(path, contents).unwrap_or_else(|e| panic!("write {path:?}: {e}"));
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {path:?}: {e}"));
}

// ---------------------------------------------------------------------------------------------
// Span recorder: when did the protected service run, on which host, with which term?

/// Text of a unit file for `service` that runs `sleep infinity` and records its run time in
/// `log_path` (a path inside the host, e.g. in a folder bound from the machine): `start <ns>
/// <PROMD_TERM>` from `ExecStartPre=` (before the service starts) and `stop <ns>` from
/// `ExecStopPost=` (after it died, also on SIGKILL or failure), in realtime ns (`date +%s%N`).
/// So recorded spans cover at least the real run time. `PROMD_TERM` comes from
/// `EnvironmentFile=-/run/promd/<group>.env`; it is empty if the file does not exist.
pub fn span_unit(service: &str, group: &str, log_path: &str) -> String {
    span_unit_running(service, group, log_path, "/usr/bin/sleep infinity")
}

/// [`span_unit`] with `exec_start` as its `ExecStart=` (unit-file syntax: `%%` for `%`, `$$`
/// for `$`), e.g. processes that ignore SIGTERM.
pub fn span_unit_running(service: &str, group: &str, log_path: &str, exec_start: &str) -> String {
    check_container_path(log_path);
    assert!(
        !log_path.contains(['\'', '"', ' ', '$', '%', '\\']),
        "span log path {log_path:?}: no quotes, spaces, '$', '%' or '\\'"
    );
    let dir = Path::new(log_path)
        .parent()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "/".into());
    // In unit files `%%` is a literal `%` and `$$` a literal `$` (systemd expands both itself).
    // No start limit: tests and benches switch over faster than systemd's default (5 starts
    // in 10 s) lets one service start, and a start refused with `start-limit-hit` is a
    // failure promd handles (retries, then fails over) but not what they measure.
    format!(
        "[Unit]\n\
         Description=span recorder for {service} (promd tests)\n\
         StartLimitIntervalSec=0\n\
         \n\
         [Service]\n\
         Type=exec\n\
         EnvironmentFile=-/run/promd/{group}.env\n\
         ExecStartPre=/bin/sh -c 'mkdir -p {dir} && echo \"start $$(date +%%s%%N) $${{PROMD_TERM:-}} $${{PROMD_SLOT:+slot=$$PROMD_SLOT}}\" >> {log_path}'\n\
         ExecStart={exec_start}\n\
         ExecStopPost=/bin/sh -c 'echo \"stop $$(date +%%s%%N)\" >> {log_path}'\n\
         TimeoutStopSec=10s\n"
    )
}

/// One run of a span-recorded service, in realtime ns. `stop_ns` is `None` if the service has
/// not stopped (or its host died without running `ExecStopPost=`); `term` is `None` if no
/// `PROMD_TERM` was set; `slot` is the `PROMD_SLOT` the run started with (`None` in a group of
/// one active host, where promd writes none).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    pub start_ns: u64,
    pub stop_ns: Option<u64>,
    pub term: Option<u64>,
    pub slot: Option<u32>,
}

impl Span {
    /// End of the span; an open span lasts forever.
    pub fn end_ns(&self) -> u64 {
        self.stop_ns.unwrap_or(u64::MAX)
    }
}

/// Reads a span log (machine-side path); a missing file is no spans. A `start` while a span is
/// still open leaves the earlier one open (its host died without `ExecStopPost=`).
pub fn read_spans(path: impl AsRef<Path>) -> Vec<Span> {
    let path = path.as_ref();
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("cannot read span log {path:?}: {e}"),
    };
    let mut spans: Vec<Span> = Vec::new();
    let mut open: Option<usize> = None;
    for (n, line) in text.lines().enumerate() {
        let bad = || -> ! { panic!("span log {path:?} line {}: {line:?}", n + 1) };
        let number =
            |w: Option<&str>| -> u64 { w.and_then(|w| w.parse().ok()).unwrap_or_else(|| bad()) };
        let mut words = line.split_whitespace();
        match words.next() {
            Some("start") => {
                let start_ns = number(words.next());
                // `start NS [TERM] [slot=K]`.
                let (mut term, mut slot) = (None, None);
                for w in words {
                    match w.strip_prefix("slot=") {
                        Some(k) => slot = Some(k.parse().unwrap_or_else(|_| bad())),
                        None => term = Some(number(Some(w))),
                    }
                }
                spans.push(Span {
                    start_ns,
                    stop_ns: None,
                    term,
                    slot,
                });
                open = Some(spans.len() - 1);
            }
            Some("stop") => {
                let stop_ns = number(words.next());
                // A stop without a start (the log began mid-run) closes nothing.
                if let Some(i) = open.take() {
                    spans[i].stop_ns = Some(stop_ns);
                }
            }
            None => {}
            Some(_) => bad(),
        }
    }
    spans
}

/// When systemd's journal on `host` says `unit` stopped (realtime ns, in order), from
/// `since_ns` on.
pub fn journal_stops(host: &Host, unit: &str, since_ns: u64) -> Vec<u64> {
    let since = format!("--since=@{}", since_ns / 1_000_000_000);
    let out = host.exec_timeout(
        &[
            "journalctl",
            "-q",
            "-o",
            "short-unix",
            "_PID=1",
            &format!("UNIT={unit}"),
            &since,
        ],
        Duration::from_secs(20),
    );
    let stopped = [
        format!("Stopped {unit}"),
        format!("{unit}: Deactivated successfully"),
        format!("{unit}: Failed with result"),
    ];
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| stopped.iter().any(|s| l.contains(s.as_str())))
        .filter_map(|l| {
            let (secs, frac) = l.split_whitespace().next()?.split_once('.')?;
            let us = format!("{frac:0<6}");
            Some(
                secs.parse::<u64>().ok()? * 1_000_000_000
                    + us.get(..6)?.parse::<u64>().ok()? * 1000,
            )
        })
        .collect()
}

/// Closes every open span at `at_ns` (e.g. the time the test crashed that host: after
/// [`Host::crash`] returns, nothing of the host runs any more).
pub fn close_open_spans(spans: &mut [Span], at_ns: u64) {
    for s in spans.iter_mut().filter(|s| s.stop_ns.is_none()) {
        s.stop_ns = Some(at_ns);
    }
}

/// Every pair of spans of two different hosts that overlap, described. `hosts`: (host name,
/// its spans), e.g. `[("n1", read_spans(p1)), ("n2", read_spans(p2))]`; names may be `String`s.
pub fn find_overlaps<S: AsRef<str>>(hosts: &[(S, Vec<Span>)]) -> Vec<String> {
    let mut found = Vec::new();
    for (a, (host_a, spans_a)) in hosts.iter().enumerate() {
        let host_a = host_a.as_ref();
        for (host_b, spans_b) in hosts.iter().skip(a + 1) {
            let host_b = host_b.as_ref();
            for sa in spans_a {
                for sb in spans_b {
                    if sa.start_ns < sb.end_ns() && sb.start_ns < sa.end_ns() {
                        let (from, to) =
                            (sa.start_ns.max(sb.start_ns), sa.end_ns().min(sb.end_ns()));
                        let by = if to == u64::MAX {
                            "both still open".to_string()
                        } else {
                            format!("{:.3} ms", (to - from) as f64 / 1e6)
                        };
                        found.push(format!(
                            "{host_a} {} and {host_b} {} overlap: {by}",
                            describe_span(sa),
                            describe_span(sb),
                        ));
                    }
                }
            }
        }
    }
    found
}

fn describe_span(s: &Span) -> String {
    let term = s.term.map_or("-".to_string(), |t| t.to_string());
    let slot = s.slot.map_or(String::new(), |k| format!(" slot {k}"));
    match s.stop_ns {
        Some(stop) => format!("[{} .. {}] term {term}{slot}", s.start_ns, stop),
        None => format!("[{} .. open] term {term}{slot}", s.start_ns),
    }
}

/// All spans on one timeline, in ms from the first event.
pub fn timeline<S: AsRef<str>>(hosts: &[(S, Vec<Span>)]) -> String {
    let mut events: Vec<(u64, &str, String)> = Vec::new();
    for (host, spans) in hosts {
        let host = host.as_ref();
        for s in spans {
            let term = s.term.map_or("-".to_string(), |t| t.to_string());
            events.push((s.start_ns, host, format!("start  term {term}")));
            match s.stop_ns {
                Some(stop) => events.push((stop, host, format!("stop   term {term}"))),
                None => events.push((u64::MAX, host, format!("(never stopped) term {term}"))),
            }
        }
    }
    events.sort();
    let t0 = events.first().map_or(0, |e| e.0);
    let mut out = String::new();
    let mut active: BTreeSet<&str> = BTreeSet::new();
    for (ns, host, what) in &events {
        if what.starts_with("start") {
            active.insert(host);
        } else {
            active.remove(host);
        }
        let at = if *ns == u64::MAX {
            "end".to_string()
        } else {
            format!("{:.3} ms", (ns - t0) as f64 / 1e6)
        };
        let mark = if what.starts_with("start") && active.len() > 1 {
            "   <-- OVERLAP"
        } else {
            ""
        };
        let _ = writeln!(out, "{at:>14}  {host:<12} {what}{mark}");
    }
    out
}

/// Panics with the overlaps and the timeline if spans of two hosts overlap.
pub fn assert_no_overlap<S: AsRef<str>>(hosts: &[(S, Vec<Span>)]) {
    let overlaps = find_overlaps(hosts);
    if !overlaps.is_empty() {
        panic!(
            "two hosts ran the protected service at the same time:\n  {}\ntimeline:\n{}",
            overlaps.join("\n  "),
            timeline(hosts)
        );
    }
}
