//! A promd cluster on nspawn hosts: each host runs promd (as promd.service, from the unit file
//! in `units/`) and a protected `web.service` that records its own run spans, so tests and
//! benchmarks can check "never two actives" and measure failover on one clock.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::etcd::EtcdCluster;
use super::hosts::{self, Host, HostSpec, Net, Span};

/// The promd binary the hosts run: Cargo's for tests and benchmarks, else `PROMD_BIN`
/// (the demo), else the release build.
pub fn promd_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_promd") {
        Some(p) => PathBuf::from(p),
        None => std::env::var_os("PROMD_BIN")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/promd")),
    }
}

/// promctl, found like [`promd_bin`].
pub fn promctl_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_promctl") {
        Some(p) => PathBuf::from(p),
        None => promd_bin().with_file_name("promctl"),
    }
}

/// The D-Bus policy as shipped.
pub fn bus_policy() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("dbus/org.promd1.conf"))
        .expect("dbus/org.promd1.conf")
}

/// promd.service as shipped, pointing at the test binary.
pub fn promd_unit() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("units/promd.service"))
        .expect("units/promd.service")
        .replace("/usr/bin/promd", "/usr/local/bin/promd")
}

/// The longest watchdog promd accepts for `lease`, rounded down to whole milliseconds, at
/// most the shipped 3s.
fn watchdog_for(lease: Duration) -> Duration {
    let margin = (lease / 4).max(Duration::from_millis(250));
    let limit = (lease - margin) / 2;
    Duration::from_millis(limit.as_millis().min(3000) as u64)
}

/// Targets and the protected service, wired as an operator would.
pub fn web_units(spec: &mut HostSpec) {
    spec.file(
        "/etc/systemd/system/web-active.target",
        "[Unit]\nDescription=web: active\nWants=web.service\nConflicts=web-passive.target\n",
    );
    spec.file(
        "/etc/systemd/system/web-passive.target",
        "[Unit]\nDescription=web: passive\nConflicts=web-active.target\n",
    );
    spec.file(
        "/etc/systemd/system/web.service",
        hosts::span_unit("web.service", "web", "/spans/spans.log"),
    );
}

/// Which store the hosts use.
pub enum StoreKind<'a> {
    Etcd(&'a EtcdCluster),
    /// etcd reached by `endpoints[i]` from host `i` (names, IPv6, as the test wrote them; an
    /// `/etc/hosts` of its own comes through `customize`), with more `[store]` keys (TLS, a
    /// user).
    EtcdAt {
        endpoints: Vec<Vec<String>>,
        store_extra: &'a str,
    },
    /// A directory on this machine, bound into every host.
    Dir(&'a Path),
}

pub struct Cluster {
    pub hosts: Vec<Host>,
    pub lease: Duration,
    spans: Vec<PathBuf>,
    span_dirs: Vec<tempfile::TempDir>,
}

impl Cluster {
    /// Boots one host per network slot of `net`, named n1, n2, ...
    pub fn boot(net: &Net, store: StoreKind, lease: Duration) -> Cluster {
        Cluster::boot_with(net, store, lease, "", |_, _| {})
    }

    /// Like [`Cluster::boot`], with more keys for the `[[group]]` and a last word on each
    /// host's files (a later file at the same path replaces an earlier one).
    pub fn boot_with(
        net: &Net,
        store: StoreKind,
        lease: Duration,
        group_extra: &str,
        customize: impl Fn(usize, &mut HostSpec),
    ) -> Cluster {
        let span_dirs: Vec<tempfile::TempDir> = (0..net.len())
            .map(|_| tempfile::tempdir().unwrap())
            .collect();
        let specs = (0..net.len())
            .map(|i| {
                let name = format!("n{}", i + 1);
                let store_toml = match &store {
                    StoreKind::Etcd(etcd) => {
                        let eps: Vec<String> =
                            etcd.endpoints_via(net.gateway_ip(i)).iter().map(|e| format!("\"{e}\"")).collect();
                        format!("[store]\nkind = \"etcd\"\nendpoints = [{}]\nconnect-timeout = \"500ms\"\n", eps.join(", "))
                    }
                    StoreKind::EtcdAt { endpoints, store_extra } => {
                        let eps: Vec<String> = endpoints[i].iter().map(|e| format!("\"{e}\"")).collect();
                        format!("[store]\nkind = \"etcd\"\nendpoints = [{}]\nconnect-timeout = \"500ms\"\n{store_extra}", eps.join(", "))
                    }
                    StoreKind::Dir(_) => "[store]\nkind = \"dir\"\npath = \"/var/lib/promd\"\n".to_string(),
                };
                let mut spec = HostSpec::new(&name);
                spec.file(
                    "/etc/promd/promd.toml",
                    format!(
                        "node = \"{name}\"\n{store_toml}\n[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\n\
                         passive-target = \"web-passive.target\"\nlease = \"{}ms\"\n{group_extra}\n",
                        lease.as_millis()
                    ),
                );
                spec.file("/etc/systemd/system/promd.service", promd_unit());
                spec.file(
                    "/etc/systemd/system/promd.service.d/test.conf",
                    format!("[Service]\nWatchdogSec={}ms\nRestartSec=200ms\n", watchdog_for(lease).as_millis()),
                );
                spec.enable("promd.service", "multi-user.target");
                web_units(&mut spec);
                spec.bind_rw(span_dirs[i].path(), "/spans");
                if let StoreKind::Dir(dir) = &store {
                    spec.bind_rw(dir, "/var/lib/promd");
                }
                customize(i, &mut spec);
                spec.bin(promd_bin());
                spec.bin(promctl_bin());
                spec.file("/etc/dbus-1/system.d/org.promd1.conf", bus_policy());
                spec
            })
            .collect();
        let hosts = net.boot_all(specs);
        let spans = span_dirs
            .iter()
            .map(|d| d.path().join("spans.log"))
            .collect();
        Cluster {
            hosts,
            lease,
            spans,
            span_dirs,
        }
    }

    pub fn active_hosts(&self) -> Vec<usize> {
        (0..self.hosts.len())
            .filter(|&i| self.hosts[i].is_active("web.service"))
            .collect()
    }

    /// Waits until exactly one host, other than `not`, runs the service; returns it.
    pub fn wait_one_active(&self, not: Option<usize>, timeout: Duration) -> usize {
        let mut found = None;
        hosts::wait_until(timeout, "exactly one active host", || {
            let a = self.active_hosts();
            found = (a.len() == 1 && Some(a[0]) != not).then(|| a[0]);
            found.is_some()
        });
        found.unwrap_or_default()
    }

    /// The first start of the service on host `i` at or after `t0` (realtime ns).
    pub fn start_after(&self, i: usize, t0: u64) -> u64 {
        hosts::read_spans(&self.spans[i])
            .iter()
            .map(|s| s.start_ns)
            .find(|&s| s >= t0)
            .unwrap_or_else(|| panic!("no start on host {i} after {t0}"))
    }

    /// The folder bound to `/spans` on host `i` (span logs, seen from the machine).
    pub fn span_dir(&self, i: usize) -> &Path {
        self.span_dirs[i].path()
    }

    pub fn spans(&self) -> Vec<(String, Vec<Span>)> {
        self.hosts
            .iter()
            .zip(&self.spans)
            .map(|(h, p)| {
                let mut spans = hosts::read_spans(p);
                close_lost_stops(h, &mut spans);
                (h.name().to_string(), spans)
            })
            .collect()
    }

    /// No two hosts' spans overlap, and the term never goes back and grows whenever another
    /// host takes over (a restart in place keeps its term). Returns the number of spans.
    pub fn check_history(&self) -> usize {
        let all = self.spans();
        hosts::assert_no_overlap(&all);
        let starts: Vec<(u64, u64, &str, &str)> = all
            .iter()
            .flat_map(|(h, spans)| {
                spans.iter().map(move |s| {
                    (
                        s.start_ns,
                        s.term.expect("PROMD_TERM in the service's environment"),
                        h.as_str(),
                        "web.service",
                    )
                })
            })
            .collect();
        assert_terms_grow(starts)
    }

    pub fn promd_pid(&self, i: usize) -> u32 {
        self.hosts[i].pid_on_machine("promd").expect("promd runs")
    }

    /// A planned switchover away from host `active`: waits until the next host is passive,
    /// then calls D-Bus Promote there (busctl, as an operator would). Returns the realtime ns
    /// just before the call.
    pub fn promote_next(&self, active: usize) -> u64 {
        let target = (active + 1) % self.hosts.len();
        hosts::wait_until(Duration::from_secs(60), "the target is passive", || {
            self.hosts[target].is_active("web-passive.target")
        });
        let t0 = hosts::now_ns();
        let argv = super::bus::manager_call_argv("Promote", "web", "60");
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        self.hosts[target].run_ok(&argv);
        t0
    }

    /// Waits until host `i`, faulted, is passive again with its service stopped; with
    /// `restarted`, also that promd runs with another pid than `old_pid`.
    pub fn wait_passive_again(&self, i: usize, old_pid: u32, restarted: bool) {
        hosts::wait_until(
            Duration::from_secs(60),
            "the old active host is passive again",
            || {
                self.hosts[i]
                    .pid_on_machine("promd")
                    .is_some_and(|p| !restarted || p != old_pid)
                    && self.hosts[i].is_active("web-passive.target")
                    && !self.hosts[i].is_active("web.service")
            },
        );
    }

    /// Waits until promd on host `i` runs again (a new pid) and the host is passive.
    pub fn wait_promd_back(&self, i: usize, old_pid: u32) {
        hosts::wait_until(
            Duration::from_secs(60),
            "promd restarted and passive",
            || {
                self.hosts[i]
                    .pid_on_machine("promd")
                    .is_some_and(|p| p != old_pid)
                    && self.hosts[i].is_active("web-passive.target")
            },
        );
    }
}

/// Runs `(start_ns, term, host, unit)` on one clock: the term never goes back, and grows
/// whenever a run starts on another host than the run before it (a restart in place keeps
/// its term). Returns how many runs there were.
pub fn assert_terms_grow(mut starts: Vec<(u64, u64, &str, &str)>) -> usize {
    starts.sort();
    for w in starts.windows(2) {
        let (before, after) = (w[0], w[1]);
        if after.2 == before.2 {
            assert!(
                after.1 >= before.1,
                "term went back: {before:?} then {after:?}"
            );
        } else {
            assert!(
                after.1 > before.1,
                "term did not grow across a hand-over: {before:?} then {after:?}"
            );
        }
    }
    starts.len()
}

/// The command that reads a property of the `web` group's D-Bus object on a host.
pub fn group_prop_command(prop: &str) -> [&str; 6] {
    [
        "busctl",
        "get-property",
        "org.promd1",
        "/org/promd1/group/web",
        "org.promd1.Group",
        prop,
    ]
}

/// A property of the `web` group's D-Bus object on a host, as busctl prints it (`s "active"`).
pub fn group_prop(h: &Host, prop: &str) -> String {
    h.run_ok(&group_prop_command(prop)).trim().to_string()
}

/// Time from `t0` to `started`, both realtime ns.
pub fn elapsed(t0: u64, started: u64) -> Duration {
    Duration::from_nanos(started.saturating_sub(t0))
}

/// Closes the runs of web.service on `host` whose `stop` line never came although the service
/// started again later: the fence's `KillUnit` (`promd fence`, after promd was killed) also
/// kills a control process, and so the recorder's `ExecStopPost=` when the kill lands during
/// it. Such a run ended where systemd's journal says web.service stopped between its start and
/// the next one (an upper bound: systemd logs it once every process is gone); if the journal
/// does not say, the run stays open and the overlap check reports it.
fn close_lost_stops(host: &Host, spans: &mut [Span]) {
    let lost: Vec<usize> = (0..spans.len().saturating_sub(1))
        .filter(|&k| spans[k].stop_ns.is_none())
        .collect();
    let Some(&first) = lost.first() else {
        return;
    };
    let stops = hosts::journal_stops(host, "web.service", spans[first].start_ns);
    for k in lost {
        let (start, next) = (spans[k].start_ns, spans[k + 1].start_ns);
        if let Some(&end) = stops.iter().find(|&&t| t >= start && t <= next) {
            spans[k].stop_ns = Some(end);
            eprintln!(
                "{}: web.service's run from {start} lost its stop line (killed in \
                 ExecStopPost=); the journal says it stopped at {end}",
                host.name()
            );
        }
    }
}
