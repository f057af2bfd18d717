//! The packages, used as an operator would (root; run with the other system tests,
//! `--test-threads=1`).
//!
//! Builds the .deb and the .rpm with `make deb` and `make rpm` (so they are always built from
//! these sources; with a fresh release build, as `scripts/test.sh` leaves it, that only
//! packages), checks that both install the same files and that lintian finds nothing to
//! warn about, then installs the .deb with `dpkg -i` on two fresh hosts, each a copy-on-write
//! copy of this machine booted with systemd in a network namespace of its own
//! (`support/installhost.rs`), with a real etcd listening on the hosts' gateway addresses. There, like an operator: the example units, a promd.toml,
//! `systemctl enable --now promd`, one host active, `busctl ... Promote` moves the role,
//! `journalctl -x` explains the role change with the catalog text, `man` renders the pages,
//! `systemd-analyze security` rates the unit, and `dpkg -r` stops promd (handing the role
//! over), removes it and keeps the conffile; `dpkg --purge` then removes the rest.
//!
//! Reloading (`systemctl reload promd`) is tested with the daemon, not here.

#[allow(dead_code)]
#[path = "support/etcd.rs"]
mod etcd;
#[allow(dead_code)]
#[path = "support/hosts.rs"]
mod hosts;
#[allow(dead_code)]
#[path = "support/installhost.rs"]
mod installhost;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use etcd::EtcdCluster;
use hosts::{Net, wait_until};
use installhost::InstallHost;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const GROUP: &str = "web";
/// Files that Debian policy adds to every package and an RPM has no counterpart for.
const DEBIAN_ONLY: &[&str] = &[
    "/usr/share/doc/promd/copyright",
    "/usr/share/doc/promd/changelog.gz",
    "/usr/share/doc/promd/changelog.Debian.gz",
];
/// `MESSAGE_ID` of a role change (packaging/promd.catalog).
const ROLE_CHANGED: &str = "3ba961b1cce44bc28764c67b3a86f614";
const ROLE_TIMEOUT: Duration = Duration::from_secs(60);

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn dist_dir() -> PathBuf {
    manifest_dir().join("target/dist")
}

struct Packages {
    deb: PathBuf,
    rpm: PathBuf,
}

/// `make deb` and `make rpm`, once per test process.
fn packages() -> &'static Packages {
    static PACKAGES: OnceLock<Result<Packages, String>> = OnceLock::new();
    let built = PACKAGES.get_or_init(|| {
        make("deb")?;
        make("rpm")?;
        let arch = output("dpkg", &["--print-architecture"])?;
        let machine = output("uname", &["-m"])?;
        let deb = dist_dir().join(format!("promd_{VERSION}_{}.deb", arch.trim()));
        let rpm = dist_dir().join(format!("promd-{VERSION}-1.{}.rpm", machine.trim()));
        for p in [&deb, &rpm] {
            if !p.is_file() {
                return Err(format!("{} was not built", p.display()));
            }
        }
        Ok(Packages { deb, rpm })
    });
    match built {
        Ok(p) => p,
        Err(e) => panic!("building the packages failed:\n{e}"),
    }
}

/// Runs `make TARGET` in the source tree, in the environment a developer would have: the
/// variables cargo sets for a test process are not passed on to the cargo that make runs.
fn make(target: &str) -> Result<(), String> {
    let mut cmd = Command::new("make");
    cmd.arg("-C").arg(manifest_dir()).arg(target);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let keep = key == "CARGO_HOME" || key == "CARGO_TARGET_DIR";
        if (key.starts_with("CARGO_") && !keep)
            || matches!(key.as_str(), "MAKEFLAGS" | "MFLAGS" | "MAKELEVEL")
        {
            cmd.env_remove(&key);
        }
    }
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run make: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let tail_start = text.len().saturating_sub(8000);
    let tail_start = (tail_start..text.len())
        .find(|&i| text.is_char_boundary(i))
        .unwrap_or(0);
    Err(format!(
        "`make {target}` failed ({}); last lines:\n{}",
        out.status,
        &text[tail_start..]
    ))
}

fn output(program: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn must(program: &str, args: &[&str]) -> String {
    output(program, args).unwrap_or_else(|e| panic!("{e}"))
}

/// The files (not directories) of a listing in `ls -l` form (`dpkg-deb -c`, `rpm -qlvp`):
/// the mode comes first, the path last (before ` -> TARGET` for a symlink).
fn files_of_listing(listing: &str, strip: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('d'))
        .map(|l| {
            let l = l.split(" -> ").next().unwrap_or(l);
            let path = l.split_whitespace().last().unwrap_or("");
            format!(
                "/{}",
                path.trim_start_matches(strip).trim_start_matches('/')
            )
        })
        .collect()
}

#[test]
fn rpm_installs_the_same_files_as_the_deb() {
    let p = packages();
    let deb_files: BTreeSet<String> =
        files_of_listing(&must("dpkg-deb", &["-c", p.deb.to_str().unwrap()]), "./")
            .into_iter()
            .filter(|f| !DEBIAN_ONLY.contains(&f.as_str()))
            .collect();
    let rpm_files = files_of_listing(&must("rpm", &["-qlvp", p.rpm.to_str().unwrap()]), "");
    assert_eq!(
        deb_files,
        rpm_files,
        "the .deb and the .rpm install different files:\nonly in the .deb: {:?}\nonly in the .rpm: {:?}",
        deb_files.difference(&rpm_files).collect::<Vec<_>>(),
        rpm_files.difference(&deb_files).collect::<Vec<_>>()
    );
    for f in [
        "/usr/bin/promd",
        "/usr/bin/promctl",
        "/usr/lib/systemd/system/promd.service",
        "/usr/share/dbus-1/system.d/org.promd1.conf",
        "/usr/share/dbus-1/interfaces/org.promd1.Manager.xml",
        "/usr/share/dbus-1/interfaces/org.promd1.Group.xml",
        "/usr/lib/systemd/catalog/promd.catalog",
        "/usr/lib/sysusers.d/promd.conf",
        "/usr/lib/tmpfiles.d/promd.conf",
        "/etc/promd/promd.toml",
        "/usr/share/doc/promd/examples/web-active.target",
        "/usr/share/doc/promd/examples/web-passive.target",
        "/usr/share/doc/promd/examples/web.service",
        "/usr/share/doc/promd/examples/web-follower.service",
        "/usr/share/doc/promd/examples/web-follow-leader.path",
        "/usr/share/doc/promd/examples/web-follow-leader.service",
        "/usr/share/doc/promd/examples/haproxy.cfg",
        "/usr/share/doc/promd/examples/prometheus.yml",
        "/usr/share/doc/promd/examples/promd-alerts.yml",
        "/usr/share/doc/promd/examples/web-floating-ip.service",
        "/usr/share/man/man8/promd.8.gz",
        "/usr/share/man/man1/promctl.1.gz",
        "/usr/share/man/man5/promd.toml.5.gz",
        "/usr/share/bash-completion/completions/promctl",
        "/usr/share/zsh/vendor-completions/_promctl",
        "/usr/share/fish/vendor_completions.d/promctl.fish",
    ] {
        assert!(
            rpm_files.contains(f),
            "{f} is not in the packages: {rpm_files:?}"
        );
    }

    // The configuration survives upgrades in both: a conffile, %config(noreplace).
    let conffiles = must("dpkg-deb", &["-I", p.deb.to_str().unwrap(), "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/promd/promd.toml");
    let flags = must(
        "rpm",
        &[
            "-qp",
            "--qf",
            "[%{FILEFLAGS:fflags} %{FILENAMES}\n]",
            p.rpm.to_str().unwrap(),
        ],
    );
    assert!(
        flags.lines().any(|l| l == "cn /etc/promd/promd.toml"),
        "promd.toml is not %config(noreplace) in the rpm:\n{flags}"
    );
    // The RPM's scriptlets do what the Debian ones do.
    let scripts = must("rpm", &["-qp", "--scripts", p.rpm.to_str().unwrap()]);
    for needle in [
        "systemd-sysusers promd.conf",
        "systemd-tmpfiles --create promd.conf",
        "preset promd.service",
        "disable --now promd.service",
        "try-restart promd.service",
        "journalctl --update-catalog",
    ] {
        assert!(
            scripts.contains(needle),
            "rpm scriptlets lack {needle:?}:\n{scripts}"
        );
    }
}

#[test]
fn deb_is_lintian_clean() {
    let p = packages();
    // Errors and warnings fail; the informational tags that remain are explained in
    // debian/README.lintian-notes.
    let out = Command::new("lintian")
        .args(["--fail-on", "error,warning"])
        .arg(&p.deb)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run lintian (scripts/deps.sh installs it)");
    assert!(
        out.status.success(),
        "lintian ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The operator's promd.toml for host `node`.
fn config(node: &str, endpoints: &[String], priority: i32) -> String {
    let endpoints: Vec<String> = endpoints.iter().map(|e| format!("\"{e}\"")).collect();
    format!(
        "# Written by the operator (tests/system_packaging.rs).\n\
         node = \"{node}\"\n\
         \n\
         [store]\n\
         kind = \"etcd\"\n\
         endpoints = [{}]\n\
         connect-timeout = \"1s\"\n\
         \n\
         [[group]]\n\
         name = \"{GROUP}\"\n\
         active-target = \"web-active.target\"\n\
         passive-target = \"web-passive.target\"\n\
         members = [\"h1\", \"h2\"]\n\
         lease = \"10s\"\n\
         priority = {priority}\n",
        endpoints.join(", ")
    )
}

/// `KEY=value` of the group's environment file (`/run/promd/web.env`).
fn env_value(host: &InstallHost, key: &str) -> Option<String> {
    host.read_file(&format!("/run/promd/{GROUP}.env"))?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")).map(str::to_string))
}

fn role(host: &InstallHost) -> String {
    env_value(host, "PROMD_ROLE").unwrap_or_default()
}

/// Waits until `active` runs web.service with PROMD_ROLE=active and `passive` does not run
/// it and says passive.
fn wait_roles(active: &InstallHost, passive: &InstallHost, what: &str) {
    let deadline = Instant::now() + ROLE_TIMEOUT;
    loop {
        let ok = active.is_active("web.service")
            && role(active) == "active"
            && !passive.is_active("web.service")
            && role(passive) == "passive";
        if ok {
            return;
        }
        if Instant::now() >= deadline {
            panic!(
                "{what}: expected {} active and {} passive within {ROLE_TIMEOUT:?}; \
                 {}: web.service {}, role {:?}; {}: web.service {}, role {:?}\n{}",
                active.name(),
                passive.name(),
                active.name(),
                active.unit_state("web.service"),
                role(active),
                passive.name(),
                passive.unit_state("web.service"),
                role(passive),
                [active, passive]
                    .iter()
                    .map(|h| format!(
                        "--- {} promctl status ---\n{}",
                        h.name(),
                        String::from_utf8_lossy(&h.exec(&["promctl", "status"]).stdout)
                    ))
                    .collect::<String>()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn deb_installs_and_runs_like_an_operator_would() {
    let p = packages();
    let dist = dist_dir();
    let deb_inside = format!(
        "/mnt/promd-dist/{}",
        p.deb.file_name().unwrap().to_string_lossy()
    );

    // Declared in this order so that they go in reverse: hosts, then etcd, then the network.
    let net = Net::new(2);
    let etcd = EtcdCluster::start(1, &net.gateway_ips());
    let names = ["h1", "h2"];
    let hosts: Vec<InstallHost> = names
        .iter()
        .enumerate()
        .map(|(i, name)| InstallHost::boot(&net, i, name, &[(&dist, "/mnt/promd-dist")]))
        .collect();
    let (h1, h2) = (&hosts[0], &hosts[1]);

    for (i, h) in hosts.iter().enumerate() {
        // Install.
        let out = h.run_ok(&["dpkg", "-i", &deb_inside]);
        assert!(
            out.contains("Setting up promd"),
            "{}: dpkg -i said:\n{out}",
            h.name()
        );
        // What the package set up: the group for the D-Bus policy, the directories, the
        // unit (not enabled, not started: the operator decides), a valid default config.
        h.run_ok(&["getent", "group", "promd"]);
        assert_eq!(
            h.run_ok(&["stat", "-c", "%a %U", "/var/lib/promd", "/run/promd"])
                .trim(),
            "750 root\n755 root"
        );
        assert_eq!(h.unit_state("promd.service"), "inactive");
        let enabled = h.exec(&["systemctl", "is-enabled", "promd.service"]);
        assert_eq!(String::from_utf8_lossy(&enabled.stdout).trim(), "disabled");
        assert_eq!(
            h.run_ok(&["promd", "check-config"]).trim(),
            "/etc/promd/promd.toml: ok (0 groups)"
        );
        assert!(
            h.run_ok(&["journalctl", "--list-catalog", ROLE_CHANGED])
                .contains("promd: group @PROMD_GROUP@ is now @PROMD_ROLE@"),
            "{}: the catalog was not compiled in",
            h.name()
        );
        h.run_ok(&[
            "bash",
            "-c",
            "source /usr/share/bash-completion/completions/promctl && complete -p promctl",
        ]);

        // Configure, as the operator: the example units, promd.toml, then enable --now.
        h.run_ok(&[
            "sh",
            "-c",
            "cp /usr/share/doc/promd/examples/web-active.target \
                /usr/share/doc/promd/examples/web-passive.target \
                /usr/share/doc/promd/examples/web.service \
                /usr/share/doc/promd/examples/web-follower.service \
                /usr/share/doc/promd/examples/web-follow-leader.path \
                /usr/share/doc/promd/examples/web-follow-leader.service /etc/systemd/system/ \
             && systemctl daemon-reload",
        ]);
        let endpoints = etcd.endpoints_via(net.gateway_ip(i));
        // h1 is preferred, so it is the one to become active first.
        let priority = if i == 0 { 200 } else { 100 };
        h.write_file(
            "/etc/promd/promd.toml",
            &config(names[i], &endpoints, priority),
        );
        assert_eq!(
            h.run_ok(&["promd", "check-config"]).trim(),
            "/etc/promd/promd.toml: ok (1 group)"
        );
        h.run_ok(&["systemctl", "enable", "--now", "promd"]);
        if i == 0 {
            wait_until(ROLE_TIMEOUT, "h1 runs web.service", || {
                h1.is_active("web.service") && role(h1) == "active"
            });
        }
    }
    wait_roles(h1, h2, "after enable --now on both");
    let term_before: u64 = env_value(h1, "PROMD_TERM").unwrap().parse().unwrap();
    assert_eq!(env_value(h2, "PROMD_LEADER").as_deref(), Some("h1"));

    // The role moves with one D-Bus call on the passive host.
    h2.run_ok(&[
        "busctl",
        "call",
        "org.promd1",
        "/org/promd1",
        "org.promd1.Manager",
        "Promote",
        "s",
        GROUP,
    ]);
    wait_roles(h2, h1, "after Promote on h2");
    let term_after: u64 = env_value(h2, "PROMD_TERM").unwrap().parse().unwrap();
    assert!(
        term_after > term_before,
        "the term did not grow: {term_before} -> {term_after}"
    );
    let status = h1.run_ok(&["promctl", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_str(&status).expect("promctl status --json");
    assert_eq!(status["groups"][0]["leader"], "h2", "{status}");

    // The journal explains the role change with the catalog text.
    let journal = h2.run_ok(&[
        "journalctl",
        "--no-pager",
        "-x",
        "-u",
        "promd",
        &format!("MESSAGE_ID={ROLE_CHANGED}"),
    ]);
    for needle in [
        "Subject: promd: group web is now active on this host",
        "This host's role in the high-availability group web changed from",
        "Defined-By: promd",
    ] {
        assert!(
            journal.contains(needle),
            "journalctl -x lacks {needle:?}:\n{journal}"
        );
    }

    // The manual pages render.
    for (section, page, needle) in [
        ("8", "promd", "keep exactly one host active per group"),
        ("1", "promctl", "show and steer promd"),
        ("5", "promd.toml", "configuration of promd"),
    ] {
        let out = h1.run_ok(&["env", "MANWIDTH=80", "man", "-P", "cat", section, page]);
        assert!(
            out.contains(needle) && out.contains("SEE ALSO"),
            "man {section} {page}:\n{out}"
        );
    }

    // The sandbox, rated where the unit is installed.
    let security = h1.run_ok(&["systemd-analyze", "security", "--no-pager", "promd.service"]);
    let exposure: f64 = security
        .lines()
        .find_map(|l| l.split("Overall exposure level for promd.service: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no overall exposure level in:\n{security}"));
    assert!(exposure <= 3.0, "exposure {exposure} > 3.0:\n{security}");
    eprintln!("systemd-analyze security promd.service: {exposure}");

    // Removing the package from the active host stops promd there, which hands the role
    // over; the operator's configuration stays.
    let out = h2.run_ok(&["dpkg", "-r", "promd"]);
    assert!(out.contains("Removing promd"), "dpkg -r said:\n{out}");
    wait_until(ROLE_TIMEOUT, "h1 takes over after dpkg -r on h2", || {
        h1.is_active("web.service") && role(h1) == "active"
    });
    assert!(!h2.is_active("web.service"), "web.service still runs on h2");
    assert_eq!(h2.unit_state("promd.service"), "inactive");
    let load = h2.run_ok(&["systemctl", "show", "-P", "LoadState", "promd.service"]);
    assert_eq!(load.trim(), "not-found");
    for gone in [
        "/usr/bin/promd",
        "/usr/bin/promctl",
        "/usr/lib/systemd/system/promd.service",
        "/usr/share/dbus-1/system.d/org.promd1.conf",
        "/usr/lib/systemd/catalog/promd.catalog",
        "/usr/share/man/man8/promd.8.gz",
    ] {
        assert!(!h2.exists(gone), "{gone} is still there after dpkg -r");
    }
    let kept = h2
        .read_file("/etc/promd/promd.toml")
        .expect("the conffile stays");
    assert!(kept.contains("node = \"h2\""), "{kept}");
    let status = h2.run_ok(&["dpkg-query", "-W", "-f", "${db:Status-Abbrev}", "promd"]);
    assert_eq!(status.trim(), "rc");
    // The catalog went with it (systemd's trigger rebuilt the database).
    let catalog = h2.exec(&["journalctl", "--list-catalog", ROLE_CHANGED]);
    assert!(
        !catalog.status.success() && catalog.stdout.is_empty(),
        "catalog entry left after dpkg -r: {}",
        String::from_utf8_lossy(&catalog.stdout)
    );

    // Purging removes the configuration and the enablement symlink too.
    h2.run_ok(&["dpkg", "--purge", "promd"]);
    for gone in [
        "/etc/promd/promd.toml",
        "/etc/systemd/system/multi-user.target.wants/promd.service",
    ] {
        assert!(!h2.exists(gone), "{gone} is still there after dpkg --purge");
    }
}
