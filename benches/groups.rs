//! Many groups per agent (issue 13): what hundreds of groups cost promd, on three real systemd
//! hosts (nspawn) with a real 3-member etcd. Prints markdown tables.
//!
//! `flock /tmp/promd-system-tests.lock cargo bench --bench groups` (root).
//! `PROMD_BENCH_GROUPS` (default "1,10,100") sets the group counts; each count gets a fresh
//! etcd and fresh hosts; `PROMD_BENCH_PERF=DIR` also profiles one host's idle promd's CPU
//! ([`perf_record`]), `PROMD_BENCH_HEAP=DIR` its heap ([`heap_profile_start`]),
//! `PROMD_BENCH_JOURNAL=DIR` keeps each host's journal (`DIR/GROUPS-HOST.journal`, monotonic
//! time stamps) for a look at the cut. Every group `gN` has its own (empty) targets `gN-active.target` and
//! `gN-passive.target`, a 4 s lease (`PROMD_BENCH_LEASE` seconds), and promd runs as the shipped `promd.service` (its
//! watchdog, which promd fits to the lease itself). Per count:
//! - start-up: from `systemctl start promd` on all hosts (issued at once) to promd READY on
//!   each (`ActiveEnterTimestampMonotonic` of promd.service), and to "every group has one host
//!   with its active target up, the others with the passive target up, and etcd's leader key
//!   names the active host" (the latest `ActiveEnterTimestampMonotonic` of those targets);
//! - promd's RSS (VmRSS) and CPU (utime+stime, % of one core) per host over 10 s once settled;
//! - etcd's gRPC counters over the same 10 s, summed over members and divided by the 3 hosts:
//!   RPCs handled (`grpc_server_handled_total`) and lease keep-alives received
//!   (`grpc_server_msg_received_total` of `LeaseKeepAlive`);
//! - promd restarts (`NRestarts` of promd.service, and "Watchdog timeout" in its journal);
//! - a silent cut (`Host::cut`) of the host that holds the most groups: the time until every
//!   one of its groups is elected elsewhere (etcd's leader key names another host: the
//!   issue's goal, within the lease + 1 s), until each is active on another host (the latest
//!   `ActiveEnterTimestampMonotonic` of those active targets), and until the cut host
//!   stopped all its active targets (polled, every ~0.1 s plus three `systemctl list-units`).
//!
//! Every wait has a bound (longer for more groups); a figure that could not be taken is
//! printed as "—" with the reason, and the next count goes on.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use support::etcd::EtcdCluster;
use support::groups::{ROLES_COMMAND, mono_us, parse_roles, start_promd_everywhere};
use support::hosts::{Host, Net};

/// Every group's lease: 4 s (the issue's), or `PROMD_BENCH_LEASE` whole seconds (promd asks
/// for 5 s at 1,000 groups, `Timing::fence_load_for`).
fn lease() -> Duration {
    std::env::var("PROMD_BENCH_LEASE")
        .ok()
        .and_then(|s| s.parse().ok())
        .map_or(Duration::from_secs(4), Duration::from_secs)
}
const HOSTS: usize = 3;
const POLL: Duration = Duration::from_millis(100);
/// The idle window for footprint and store load.
const WINDOW: Duration = Duration::from_secs(10);

/// A figure, or why it could not be taken.
type Fig<T> = Result<T, String>;

/// With `PROMD_BENCH_PERF=DIR`, a `perf record -g` of the first host's promd over the idle
/// window, into `DIR/promd-GROUPS.perf` (read it with `perf report -i`; build with
/// `RUSTFLAGS="-C force-frame-pointers=yes" CARGO_PROFILE_RELEASE_DEBUG=1` for whole stacks).
fn perf_record(pid: Option<u32>, groups: usize) -> Option<std::process::Child> {
    let dir = std::env::var_os("PROMD_BENCH_PERF")?;
    let out = std::path::Path::new(&dir).join(format!("promd-{groups}.perf"));
    let pid = pid?.to_string();
    let window = WINDOW.as_secs().to_string();
    let args = ["record", "-F", "999", "-g", "-p", &pid, "-o"];
    std::process::Command::new("perf")
        .args(args)
        .arg(&out)
        .args(["--", "sleep", &window])
        .stdout(std::process::Stdio::null())
        .spawn()
        .inspect_err(|e| eprintln!("perf record: {e}"))
        .ok()
}

/// heaptrack's preload library and interpreter (Debian's `heaptrack`), as the hosts see them
/// (they share the machine's `/usr`).
const HEAPTRACK_PRELOAD: &str = "/usr/lib/heaptrack/libheaptrack_preload.so";
const HEAPTRACK_INTERPRET: &str = "/usr/lib/heaptrack/libexec/heaptrack_interpret";

/// With `PROMD_BENCH_HEAP=DIR`, the first host's promd runs with heaptrack's preload library
/// (a drop-in; its sandbox loosened as the library needs), recording every allocation to
/// `/run/promd/heap.raw`. Returns `DIR`. That promd runs slower: the run's figures are for
/// the profile, not for the tables.
fn heap_profile_start(host: &Host) -> Option<std::path::PathBuf> {
    let dir = std::env::var_os("PROMD_BENCH_HEAP")?;
    if !std::path::Path::new(HEAPTRACK_PRELOAD).exists() {
        eprintln!("PROMD_BENCH_HEAP: {HEAPTRACK_PRELOAD} not found (apt install heaptrack)");
        return None;
    }
    host.write_file(
        "/etc/systemd/system/promd.service.d/heaptrack.conf",
        format!(
            "[Service]\nEnvironment=LD_PRELOAD={HEAPTRACK_PRELOAD} \
             DUMP_HEAPTRACK_OUTPUT=/run/promd/heap.raw\n\
             MemoryDenyWriteExecute=no\nSystemCallFilter=\n"
        ),
    );
    host.run_ok(&["systemctl", "daemon-reload"]);
    Some(dir.into())
}

/// The allocations of the first host's promd so far, interpreted in the host (where its
/// binaries' paths resolve), into `DIR/promd-GROUPS.heaptrack`: `heaptrack_print -f FILE
/// --print-leaks 1` lists what is still allocated ("leaked") by call stack. A copy is read,
/// so promd goes on (the allocations still buffered in it are missing).
fn heap_profile_take(host: &Host, dir: &std::path::Path, groups: usize) {
    let script = format!(
        "cp /run/promd/heap.raw /run/heap.raw && {HEAPTRACK_INTERPRET} < /run/heap.raw \
         > /run/heap.txt && rm /run/heap.raw"
    );
    let out = host.exec(&["sh", "-c", &script]);
    if !out.status.success() {
        eprintln!(
            "PROMD_BENCH_HEAP: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        return;
    }
    let text = host.exec(&["cat", "/run/heap.txt"]).stdout;
    let file = dir.join(format!("promd-{groups}.heaptrack"));
    match std::fs::write(&file, text) {
        Ok(()) => eprintln!("{groups} groups: heap profile in {}", file.display()),
        Err(e) => eprintln!("PROMD_BENCH_HEAP: {}: {e}", file.display()),
    }
}

/// A duration from `t0` to `t`, both µs of CLOCK_MONOTONIC.
fn since(t0: u64, t: u64) -> Duration {
    Duration::from_micros(t.saturating_sub(t0))
}

/// Per-group times: (first, median, last).
type Spread = (Duration, Duration, Duration);

fn spread(mut v: Vec<Duration>) -> Fig<Spread> {
    v.sort();
    match (v.first(), v.last()) {
        (Some(&first), Some(&last)) => Ok((first, v[v.len() / 2], last)),
        _ => Err("no groups".into()),
    }
}

fn show_spread((first, median, last): &Spread) -> String {
    format!("{} / {} / {}", secs(*first), secs(*median), secs(*last))
}

/// The group number of `gN-active.target` or `gN-passive.target`.
fn group_of(unit: &str) -> Option<usize> {
    let rest = unit.strip_prefix('g')?;
    rest.strip_suffix("-active.target")
        .or_else(|| rest.strip_suffix("-passive.target"))?
        .parse()
        .ok()
}

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn cell<T>(f: &Fig<T>, show: impl Fn(&T) -> String) -> String {
    match f {
        Ok(v) => show(v),
        Err(why) => format!("— ({why})"),
    }
}

/// Stdout of `args` inside `h`, or the reason it failed.
fn exec(h: &Host, args: &[&str], timeout: Duration) -> Fig<String> {
    let out = h.exec_timeout(args, timeout);
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{}: `{}` failed ({}): {}",
            h.name(),
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `systemctl show -p PROPS UNITS...` inside `h`: per unit (`Id`), its properties.
fn show(
    h: &Host,
    units: &[&str],
    props: &[&str],
) -> Fig<BTreeMap<String, BTreeMap<String, String>>> {
    let mut args = vec!["systemctl", "show", "-p", "Id"];
    for p in props {
        args.extend(["-p", p]);
    }
    args.push("--");
    args.extend(units);
    let text = exec(h, &args, Duration::from_secs(30))?;
    let mut all = BTreeMap::new();
    for block in text.split("\n\n") {
        let kv: BTreeMap<String, String> = block
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        if let Some(id) = kv.get("Id").cloned() {
            all.insert(id, kv);
        }
    }
    Ok(all)
}

fn mono_prop(props: Option<&BTreeMap<String, String>>, name: &str) -> u64 {
    props
        .and_then(|p| p.get(name))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The active `gN-active.target`s and `gN-passive.target`s of a host, as group numbers.
#[derive(Default, Clone)]
struct Roles {
    active: BTreeSet<usize>,
    passive: BTreeSet<usize>,
}

fn roles(h: &Host) -> Fig<Roles> {
    let text = exec(h, &ROLES_COMMAND, Duration::from_secs(30))?;
    let (active, passive) = parse_roles(&text);
    Ok(Roles { active, passive })
}

/// Leader of each group (number → node) from etcd's `/promd/gN/leader` keys.
fn leaders(etcd: &EtcdCluster) -> BTreeMap<usize, String> {
    let text = etcd.etcdctl(&["get", "--prefix", "/promd/"]);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = BTreeMap::new();
    for pair in lines.chunks(2) {
        let [key, value] = pair else { continue };
        let Some(n) = key
            .strip_prefix("/promd/g")
            .and_then(|k| k.strip_suffix("/leader"))
            .and_then(|n| n.parse::<usize>().ok())
        else {
            continue;
        };
        if let Some(node) = serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .and_then(|v| v["node"].as_str().map(String::from))
        {
            found.insert(n, node);
        }
    }
    found
}

/// Polls `step` every [`POLL`] until it gives `Some`, at most `bound`; else `Err(what)` with
/// the last word `step` left in `last`.
fn poll<T>(bound: Duration, what: &str, mut step: impl FnMut(&mut String) -> Option<T>) -> Fig<T> {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(v) = step(&mut last) {
            return Ok(v);
        }
        if start.elapsed() >= bound {
            return Err(format!("no {what} within {} s; {last}", bound.as_secs()));
        }
        std::thread::sleep(POLL);
    }
}

fn boot(net: &Net, etcd: &EtcdCluster, groups: usize) -> Vec<Host> {
    let specs = (0..HOSTS)
        .map(|i| support::groups::host_spec(net, i, etcd, groups, lease(), None, false))
        .collect();
    net.boot_all(specs)
}

/// One count's figures.
struct Row {
    groups: usize,
    /// READY per host, from the start.
    ready: Vec<Fig<Duration>>,
    /// Per group, until its last target came up.
    settled: Fig<Spread>,
    /// Per host: (active groups once settled, RSS KiB, CPU % of a core).
    foot: Vec<Fig<(usize, u64, f64)>>,
    /// etcd per host: (RPCs handled /s, lease keep-alives /s).
    store: Fig<(f64, f64)>,
    /// (NRestarts summed over hosts, "Watchdog timeout" journal lines), once idle, and at the end.
    restarts_idle: Fig<(u64, usize)>,
    restarts_end: Fig<(u64, usize)>,
    /// The cut host, its groups, until each was elected elsewhere (its claim written), until
    /// all were active elsewhere, until it stopped them all.
    cut: Fig<Cut>,
}

/// What became of the groups of the host the bench cut off.
#[derive(Debug)]
struct Cut {
    /// The cut host.
    host: String,
    /// How many groups it held.
    groups: usize,
    /// From the cut until each was elected elsewhere (its claim written).
    elected: Fig<Spread>,
    /// From the cut until each active target was up elsewhere.
    active: Spread,
    /// From the cut until the cut host had stopped them all.
    fenced: Fig<Duration>,
}

impl Row {
    fn empty(groups: usize, why: &str) -> Row {
        fn no<T>(why: &str) -> Fig<T> {
            Err(why.to_string())
        }
        Row {
            groups,
            ready: (0..HOSTS).map(|_| no(why)).collect(),
            settled: no(why),
            foot: (0..HOSTS).map(|_| no(why)).collect(),
            store: no(why),
            restarts_idle: no(why),
            restarts_end: no(why),
            cut: no(why),
        }
    }
}

/// Group → CLOCK_MONOTONIC µs of the first "won the election" `h`'s promd logged after `after`
/// (journal lines `[ SECONDS.MICROS] HOST promd[PID]: gN: passive -> promoting (term T): won
/// the election`).
fn wins_after(h: &Host, after: u64) -> BTreeMap<usize, u64> {
    let log = h.journal(&[
        "-u",
        "promd.service",
        "-o",
        "short-monotonic",
        "--grep",
        "won the election",
    ]);
    let mut wins = BTreeMap::new();
    for line in log.lines() {
        let Some((stamp, rest)) = line.strip_prefix('[').and_then(|l| l.split_once(']')) else {
            continue;
        };
        let Ok(secs) = stamp.trim().parse::<f64>() else {
            continue;
        };
        let at = (secs * 1e6) as u64;
        let Some(g) = rest
            .split_once(": g")
            .and_then(|(_, r)| r.split_once(':'))
            .and_then(|(n, _)| n.parse::<usize>().ok())
        else {
            continue;
        };
        if at >= after {
            wins.entry(g).or_insert(at);
        }
    }
    wins
}

fn ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.rsplit_once(')').map(|x| x.1).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat, 12 and 13 after the comm.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

fn rss_kib(pid: u32) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| {
            l.strip_prefix("VmRSS:")
                .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        })
}

const HANDLED: &str = "grpc_server_handled_total{";
const KEEPALIVES: &str = "grpc_server_msg_received_total{grpc_method=\"LeaseKeepAlive\"";

/// NRestarts summed over the hosts, and the journal's "Watchdog timeout" lines for promd.
fn restarts(hosts: &[Host]) -> Fig<(u64, usize)> {
    let mut n = 0;
    let mut wd = 0;
    for h in hosts {
        let p = show(h, &["promd.service"], &["NRestarts"])?;
        n += mono_prop(p.get("promd.service"), "NRestarts");
        wd += h
            .journal(&["-u", "promd.service", "-o", "cat"])
            .lines()
            .filter(|l| l.contains("Watchdog timeout"))
            .count();
    }
    Ok((n, wd))
}

/// Whether every group 1..=groups has exactly one host with its active target up, the others
/// with the passive target up, and etcd's leader is the active host. `Err`: what is missing.
fn settled(
    names: &[String],
    roles: &[Roles],
    leaders: &BTreeMap<usize, String>,
    groups: usize,
) -> Result<(), String> {
    let mut bad = 0;
    let mut first = String::new();
    for g in 1..=groups {
        let active: Vec<usize> = (0..roles.len())
            .filter(|&i| roles[i].active.contains(&g))
            .collect();
        let passive = (0..roles.len())
            .filter(|&i| roles[i].passive.contains(&g))
            .count();
        let leader = leaders.get(&g);
        let ok =
            active.len() == 1 && passive == roles.len() - 1 && leader == Some(&names[active[0]]);
        if !ok {
            bad += 1;
            if first.is_empty() {
                let neither: Vec<&String> = (0..roles.len())
                    .filter(|&i| !roles[i].active.contains(&g) && !roles[i].passive.contains(&g))
                    .map(|i| &names[i])
                    .collect();
                first = format!(
                    "g{g}: active on {:?}, passive on {passive}, neither on {neither:?}, leader {leader:?}",
                    active.iter().map(|&i| &names[i]).collect::<Vec<_>>()
                );
            }
        }
    }
    if bad == 0 {
        Ok(())
    } else {
        Err(format!("{bad} groups unsettled, e.g. {first}"))
    }
}

fn run_count(groups: usize) -> Row {
    let mut row = Row::empty(groups, "not reached");
    let net = Net::new(HOSTS);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    let hosts = boot(&net, &etcd, groups);
    let names: Vec<String> = hosts.iter().map(|h| h.name().to_string()).collect();
    let g = groups as u64;

    // Start-up: `systemctl start --no-block promd` on every host at once.
    let t0 = mono_us();
    let heap = heap_profile_start(&hosts[0]);
    start_promd_everywhere(&hosts);
    let ready_bound = Duration::from_secs(30 + g * 60 / 1000);
    row.ready = hosts
        .iter()
        .map(|h| {
            poll(ready_bound, "READY", |last| {
                let p = show(
                    h,
                    &["promd.service"],
                    &["ActiveState", "ActiveEnterTimestampMonotonic"],
                );
                let p = match p {
                    Ok(p) => p,
                    Err(e) => {
                        *last = e;
                        return None;
                    }
                };
                let p = p.get("promd.service");
                let state = p
                    .and_then(|p| p.get("ActiveState"))
                    .cloned()
                    .unwrap_or_default();
                *last = format!("{}: promd.service {state}", h.name());
                (state == "active")
                    .then(|| since(t0, mono_prop(p, "ActiveEnterTimestampMonotonic")))
            })
        })
        .collect();
    eprintln!("{groups} groups: READY {:?}", row.ready);
    if row.ready.iter().any(Result::is_err) {
        row.settled = Err("promd not READY everywhere".into());
        row.restarts_idle = restarts(&hosts);
        // Where start-up got to: the end of the first host's promd journal, on stderr.
        let tail = hosts[0].journal(&["-u", "promd.service", "-o", "short-monotonic", "-n", "25"]);
        eprintln!(
            "{groups} groups: end of {}'s promd journal:\n{tail}",
            names[0]
        );
        return row;
    }

    let settle_bound = Duration::from_secs(60 + g * 300 / 1000);
    let settled_roles = poll(settle_bound, "settled roles", |last| {
        let mut all = Vec::new();
        for h in &hosts {
            match roles(h) {
                Ok(r) => all.push(r),
                Err(e) => {
                    *last = e;
                    return None;
                }
            }
        }
        match settled(&names, &all, &leaders(&etcd), groups) {
            Ok(()) => Some(all),
            Err(e) => {
                *last = e;
                None
            }
        }
    });
    let roles_now = match settled_roles {
        Ok(r) => r,
        Err(e) => {
            // What promd said of the first unsettled group (stderr only).
            let g = e
                .split_once(", e.g. g")
                .and_then(|(_, r)| r.split_once(':'))
                .map(|(n, _)| n.to_string());
            if let Some(g) = g {
                for h in &hosts {
                    let log = h.journal(&["-u", "promd.service", "-o", "short-monotonic"]);
                    let mine: Vec<&str> = log
                        .lines()
                        .filter(|l| l.contains(&format!(" g{g}:")))
                        .collect();
                    eprintln!(
                        "{groups} groups: {} on g{g}:\n{}",
                        h.name(),
                        mine[mine.len().saturating_sub(8)..].join("\n")
                    );
                    let units = h.journal(&[
                        "-u",
                        &format!("g{g}-active.target"),
                        "-u",
                        &format!("g{g}-passive.target"),
                        "-o",
                        "short-monotonic",
                    ]);
                    eprintln!(
                        "{groups} groups: {}'s systemd on g{g}'s targets:\n{units}",
                        h.name()
                    );
                }
            }
            row.settled = Err(e);
            // Still worth knowing: did the watchdog kill promd while it started the groups,
            // and how much memory does it hold while still busy?
            row.restarts_idle = restarts(&hosts);
            row.foot = hosts
                .iter()
                .map(|h| {
                    let rss = h.pid_on_machine("promd").and_then(rss_kib);
                    Err(match rss {
                        Some(kib) => format!("start-up did not settle; RSS then {kib} KiB"),
                        None => "start-up did not settle; promd not running".into(),
                    })
                })
                .collect();
            row.store = Err("start-up did not settle".into());
            row.restarts_end = Err("start-up did not settle".into());
            row.cut = Err("start-up did not settle".into());
            return row;
        }
    };
    // Per group, the moment the last of its targets came up.
    row.settled = (|| {
        let mut per_group: BTreeMap<usize, u64> = BTreeMap::new();
        for h in &hosts {
            let p = show(
                h,
                &["g*-active.target", "g*-passive.target"],
                &["ActiveState", "ActiveEnterTimestampMonotonic"],
            )?;
            for (unit, props) in p
                .iter()
                .filter(|(_, p)| p.get("ActiveState").is_some_and(|s| s == "active"))
            {
                let Some(g) = group_of(unit) else { continue };
                let at = mono_prop(Some(props), "ActiveEnterTimestampMonotonic");
                let e = per_group.entry(g).or_insert(t0);
                *e = (*e).max(at);
            }
        }
        spread(per_group.values().map(|&t| since(t0, t)).collect())
    })();
    eprintln!("{groups} groups: settled {:?}", row.settled);

    // Idle: footprint and store load over one window.
    std::thread::sleep(Duration::from_secs(2));
    let pids: Vec<Option<u32>> = hosts.iter().map(|h| h.pid_on_machine("promd")).collect();
    let before: Vec<Option<u64>> = pids.iter().map(|p| p.and_then(ticks)).collect();
    let (h0, k0) = (etcd.metric(HANDLED), etcd.metric(KEEPALIVES));
    let start = Instant::now();
    let perf = perf_record(pids[0], groups);
    std::thread::sleep(WINDOW); // the measuring window: nothing to await
    let (h1, k1) = (etcd.metric(HANDLED), etcd.metric(KEEPALIVES));
    let took = start.elapsed().as_secs_f64();
    if let Some(dir) = &heap {
        heap_profile_take(&hosts[0], dir, groups);
    }
    if let Some(mut perf) = perf {
        // It ends itself after the window (`-- sleep`); this only waits for it.
        let _ = perf.wait();
    }
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    row.foot = (0..HOSTS)
        .map(|i| {
            let pid = pids[i].ok_or("promd not running")?;
            let (Some(b), Some(a)) = (before[i], ticks(pid)) else {
                return Err("promd restarted while measured".to_string());
            };
            let rss = rss_kib(pid).ok_or("no VmRSS")?;
            Ok((
                roles_now[i].active.len(),
                rss,
                a.saturating_sub(b) as f64 / hz / took * 100.0,
            ))
        })
        .collect();
    row.store = Ok((
        (h1 - h0) / took / HOSTS as f64,
        (k1 - k0) / took / HOSTS as f64,
    ));
    row.restarts_idle = restarts(&hosts);
    eprintln!(
        "{groups} groups: footprint {:?}, store {:?}",
        row.foot, row.store
    );

    // Silent cut of the host with the most groups.
    let victim = (0..HOSTS)
        .max_by_key(|&i| roles_now[i].active.len())
        .unwrap_or(0);
    let theirs = roles_now[victim].active.clone();
    let others: Vec<usize> = (0..HOSTS).filter(|&i| i != victim).collect();
    // From the moment the cut is in force (`nft` commits at its end).
    hosts[victim].cut();
    let t_cut = mono_us();
    let cut_bound = lease() * 3 + Duration::from_secs(20 + g * 60 / 1000);
    // One loop watches both: the other hosts taking the groups over, and the cut host
    // stopping its active targets (polled: a stopped target with nothing else referring to
    // it is unloaded, and its timestamps go with it).
    let mut fenced_at: Option<u64> = None;
    let moved = poll(
        cut_bound,
        "take-over of every group of the cut host",
        |last| {
            if fenced_at.is_none()
                && roles(&hosts[victim]).is_ok_and(|r| theirs.is_disjoint(&r.active))
            {
                fenced_at = Some(mono_us());
            }
            let mut elsewhere = BTreeSet::new();
            for &i in &others {
                match roles(&hosts[i]) {
                    Ok(r) => elsewhere.extend(r.active),
                    Err(e) => {
                        *last = e;
                        return None;
                    }
                }
            }
            let missing = theirs.difference(&elsewhere).count();
            *last = format!("{missing} of {} groups not active elsewhere", theirs.len());
            (missing == 0).then_some(())
        },
    );
    let fenced = match fenced_at {
        Some(t) => Ok(t),
        None => poll(
            cut_bound,
            "stop of the cut host's active targets",
            |last| match roles(&hosts[victim]) {
                Ok(r) => {
                    let left = theirs.intersection(&r.active).count();
                    *last = format!("{left} still active");
                    (left == 0).then(mono_us)
                }
                Err(e) => {
                    *last = e;
                    None
                }
            },
        ),
    };
    row.cut = moved.and_then(|()| {
        let units: Vec<String> = theirs
            .iter()
            .map(|g| format!("g{g}-active.target"))
            .collect();
        let units: Vec<&str> = units.iter().map(String::as_str).collect();
        let mut took = Vec::new();
        // (time, host, group) of the slowest take-over, for the timeline below.
        let mut slowest: Option<(Duration, usize, usize)> = None;
        for &i in &others {
            let p = show(
                &hosts[i],
                &units,
                &["ActiveState", "ActiveEnterTimestampMonotonic"],
            )?;
            for (unit, props) in p
                .iter()
                .filter(|(_, p)| p.get("ActiveState").is_some_and(|s| s == "active"))
            {
                let d = since(
                    t_cut,
                    mono_prop(Some(props), "ActiveEnterTimestampMonotonic"),
                );
                took.push(d);
                if let Some(g) = group_of(unit)
                    && slowest.is_none_or(|(s, _, _)| d > s)
                {
                    slowest = Some((d, i, g));
                }
            }
        }
        if let Some((d, i, g)) = slowest {
            // Where the slowest take-over spent its time (stderr only): promd's log of that
            // group on the host that took it, on the clock of the cut.
            let log = hosts[i].journal(&["-u", "promd.service", "-o", "short-monotonic"]);
            let mine: Vec<&str> = log
                .lines()
                .filter(|l| l.contains(&format!(" g{g}:")) || l.contains(&format!("g{g} ")))
                .collect();
            eprintln!(
                "{groups} groups: slowest take-over g{g} on {} after {}; cut at {:.3} (monotonic s); its log:\n{}",
                names[i],
                secs(d),
                t_cut as f64 / 1e6,
                mine[mine.len().saturating_sub(12)..].join("\n")
            );
            let unit = hosts[i].journal(&[
                "-u",
                &format!("g{g}-active.target"),
                "-o",
                "short-monotonic",
            ]);
            eprintln!("{groups} groups: {}'s systemd on g{g}-active.target:\n{unit}", names[i]);
        }
        // Elected: the journal's "won the election" (the key won and the claim written), the
        // first after the cut on any other host.
        let mut won: BTreeMap<usize, u64> = BTreeMap::new();
        for &i in &others {
            for (g, at) in wins_after(&hosts[i], t_cut) {
                let first = won.entry(g).or_insert(at);
                *first = (*first).min(at);
            }
        }
        let elected: Vec<Duration> = theirs
            .iter()
            .filter_map(|g| won.get(g).map(|&at| since(t_cut, at)))
            .collect();
        let elected = if elected.len() == theirs.len() {
            spread(elected)
        } else {
            Err(format!(
                "{} of {} elections not in the journal",
                theirs.len() - elected.len(),
                theirs.len()
            ))
        };
        Ok(Cut {
            host: names[victim].clone(),
            groups: theirs.len(),
            elected,
            active: spread(took)?,
            fenced: fenced.map(|t| since(t_cut, t)),
        })
    });
    eprintln!("{groups} groups: cut {:?}", row.cut);
    row.restarts_end = restarts(&hosts);
    hosts[victim].heal();
    // Hints at where the time went (stderr only): store trouble and fencing promd logged.
    for h in &hosts {
        if let Some(dir) = std::env::var_os("PROMD_BENCH_JOURNAL") {
            let file = std::path::Path::new(&dir).join(format!("{groups}-{}.journal", h.name()));
            let all = h.journal(&["-o", "short-monotonic"]);
            if let Err(e) = std::fs::write(&file, all) {
                eprintln!("PROMD_BENCH_JOURNAL: {}: {e}", file.display());
            }
        }
        let log = h.journal(&["-u", "promd.service", "-o", "cat"]);
        let count = |s: &str| log.lines().filter(|l| l.contains(s)).count();
        eprintln!(
            "{groups} groups: {}'s promd logged \"store unreachable\" {} times, \"lease not renewed in time\" {} times, \"won the election\" {} times",
            h.name(),
            count("store unreachable"),
            count("lease not renewed in time"),
            count("won the election"),
        );
        // PID 1 drops its bus connection, failing every call in flight, when it is refused a
        // match rule (one per job a client queued: `NORMAL_JOBS`).
        let dropped = h
            .journal(&["-t", "systemd", "-o", "cat"])
            .matches("Got disconnect on API bus")
            .count();
        eprintln!(
            "{groups} groups: {}'s PID 1 lost its bus connection {dropped} times",
            h.name()
        );
        // What promd said last before each watchdog kill (stderr only).
        let lines: Vec<&str> = log.lines().collect();
        for (i, _) in lines
            .iter()
            .enumerate()
            .filter(|(_, l)| l.contains("Watchdog timeout"))
        {
            eprintln!(
                "{groups} groups: {}'s watchdog kill, after:\n{}",
                h.name(),
                lines[i.saturating_sub(8)..=i].join("\n")
            );
        }
    }
    row
}

fn main() {
    if support::bench::only_listing() {
        return;
    }
    let counts: Vec<usize> = std::env::var("PROMD_BENCH_GROUPS")
        .unwrap_or_else(|_| "1,10,100".into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .filter(|&n| n > 0)
        .collect();
    let bench_start = Instant::now();
    let rows: Vec<Row> = counts
        .iter()
        .map(|&groups| {
            catch_unwind(AssertUnwindSafe(|| run_count(groups))).unwrap_or_else(|e| {
                let why = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panicked".into());
                let why = why.lines().next().unwrap_or_default().to_string();
                eprintln!("{groups} groups: {why}");
                Row::empty(groups, &why)
            })
        })
        .collect();

    println!(
        "\n3 hosts, 3 etcd members, lease {} s, {:.0} s in all. Start-up from `systemctl start promd` \
         on all hosts; settled: every group active on one host, passive on the others, etcd's \
         leader key naming the active host.\n",
        lease().as_secs(),
        bench_start.elapsed().as_secs_f64()
    );
    println!(
        "| groups | READY (slowest host) | groups settled: first / median / last | promd restarts / watchdog timeouts (idle; end) | cut host: groups | its groups elected elsewhere: first / median / last | active elsewhere: first / median / last | cut host stopped them after (polled) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let ready: Fig<Duration> = r
            .ready
            .iter()
            .try_fold(Duration::ZERO, |m, f| f.clone().map(|d| m.max(d)));
        let rs = |f: &Fig<(u64, usize)>| cell(f, |(n, w)| format!("{n} / {w}"));
        println!(
            "| {} | {} | {} | {}; {} | {} | {} | {} | {} |",
            r.groups,
            cell(&ready, |d| secs(*d)),
            cell(&r.settled, show_spread),
            rs(&r.restarts_idle),
            rs(&r.restarts_end),
            cell(&r.cut, |c| format!("{}: {}", c.host, c.groups)),
            cell(&r.cut, |c| cell(&c.elected, show_spread)),
            cell(&r.cut, |c| show_spread(&c.active)),
            cell(&r.cut, |c| cell(&c.fenced, |d| secs(*d))),
        );
    }
    println!(
        "\n| groups | host | READY after | active groups | promd RSS idle (MiB) | CPU idle (% of a core, {} s) |",
        WINDOW.as_secs()
    );
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        for i in 0..HOSTS {
            let f = &r.foot[i];
            println!(
                "| {} | n{} | {} | {} | {} | {} |",
                r.groups,
                i + 1,
                cell(&r.ready[i], |d| secs(*d)),
                cell(f, |(a, _, _)| a.to_string()),
                cell(f, |(_, rss, _)| format!("{:.1}", *rss as f64 / 1024.0)),
                cell(f, |(_, _, cpu)| format!("{cpu:.2}")),
            );
        }
    }
    println!(
        "\nRestarts: promd restarts / of them by its own watchdog, from the start to the end of \
         the idle window; and at the end, after the cut (the cut host fencing all its groups at once). Elected: etcd's leader \
         key names another host; active: that host's active target is up. The cut is silent \
         (every packet of the host dropped); the goal is every group re-elected (elected) \
         within the lease + 1 s = {} s; active adds the time systemd takes to start the targets \
         there, and is reported beside it.",
        lease().as_secs() + 1
    );
    println!(
        "\n| groups | etcd RPCs handled /s per host | lease keep-alives /s per host | RPCs /s per host per group | keep-alives /s per host per group |"
    );
    println!("|---|---|---|---|---|");
    for r in &rows {
        let g = r.groups as f64;
        println!(
            "| {} | {} | {} | {} | {} |",
            r.groups,
            cell(&r.store, |(h, _)| format!("{h:.2}")),
            cell(&r.store, |(_, k)| format!("{k:.2}")),
            cell(&r.store, |(h, _)| format!("{:.3}", h / g)),
            cell(&r.store, |(_, k)| format!("{:.3}", k / g)),
        );
    }
    println!(
        "\nIdle, over {} s: etcd's count of unary requests (reads, writes, transactions) and of \
         lease keep-alives, per host. 0 requests: an idle promd does not poll (leaders and \
         members come by watch); keep-alives: one per lease length shared by all its groups, \
         every third of it.",
        WINDOW.as_secs()
    );
}
