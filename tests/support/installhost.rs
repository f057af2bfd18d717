//! Hosts you can install packages into: a `systemd-nspawn --boot` container whose root is a
//! copy-on-write overlay of this whole machine (`lowerdir=/`, upper and work directories on
//! `/dev/shm`), so `dpkg -i` works inside and nothing written there reaches the machine (see
//! "A host you can install packages into" in `shared/testing.md`). Each host runs in one of
//! the network namespaces of a [`Net`] (veth to the machine), like [`super::hosts::Host`].
//!
//! ```ignore
//! let net = Net::new(2);
//! let h = InstallHost::boot(&net, 0, "h1", &[(dist_dir, "/mnt/dist")]);
//! h.run_ok(&["dpkg", "-i", "/mnt/dist/promd_0.1.0_amd64.deb"]);
//! ```
//!
//! Ownership: an [`InstallHost`] owns its container (halted by `Drop`, also when a test
//! fails), its overlay mount (unmounted by `Drop`) and its directory on `/dev/shm` (removed
//! by `Drop`, only once the overlay is unmounted: a recursive delete never runs through the
//! mount). Only processes this value started are signalled, always by pid. The [`Net`] must
//! outlive its hosts (declare it first).
//!
//! If the test process dies without unwinding (SIGKILL, abort), the guardian halts the
//! container (parent-death signal), but the overlay stays mounted: `umount
//! /dev/shm/promd-pkg*/root`, then remove that folder (`ip netns del` the namespaces too).
//!
//! The container runs in a cgroup of its own (`promd-test-MACHINE`) for the reason
//! `hosts.rs` gives (`CgroupDir`); the guardian shell, the cgroup handling and the process
//! helpers are that file's.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::hosts::{
    BUS_GET_ID, CgroupDir, Net, find_container_init, finish_halt, guardian_exited, nsenter_command,
    proc_status, random_hex128, run, run_must, spawn_with_parent_death_signal, stdout_if_ok,
    system_is_up,
};

/// How long a boot may take: the whole machine's units start (a few seconds when idle).
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(150);
/// How long [`InstallHost::exec`] lets a command run before it is killed.
pub const EXEC_TIMEOUT: Duration = Duration::from_secs(180);

/// Units of the machine that would start package jobs of their own inside a host (apt and
/// dpkg would then hold the lock a test's `dpkg -i` needs), masked in every host.
const MASKED: &[&str] = &[
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "man-db.timer",
];

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A booted copy-on-write copy of the machine.
pub struct InstallHost {
    name: String,
    machine: String,
    /// `/dev/shm/promd-pkg-...`: `up/`, `work/`, `root/` (the overlay mount point).
    dir: PathBuf,
    mounted: bool,
    child: Option<Child>,
    nspawn_pid: u32,
    init_pid: u32,
    cgroup: Option<CgroupDir>,
    started: Instant,
}

impl InstallHost {
    /// Mounts the overlay, boots it in `net`'s namespace `index` with hostname `name`, and
    /// waits until systemd is up and the system bus answers. `binds`: machine folders bound
    /// read-only into the host (`(source, target)`).
    pub fn boot(net: &Net, index: usize, name: &str, binds: &[(&Path, &str)]) -> InstallHost {
        let counter = COUNTER.fetch_add(1, Ordering::SeqCst);
        let machine = format!("pkg{:x}-{counter:x}", std::process::id());
        let dir = PathBuf::from(format!("/dev/shm/promd-{machine}"));
        let mut host = InstallHost {
            name: name.to_string(),
            machine: machine.clone(),
            dir: dir.clone(),
            mounted: false,
            child: None,
            nspawn_pid: 0,
            init_pid: 0,
            cgroup: None,
            started: Instant::now(),
        };
        // Registered before anything exists, so that a failure below still cleans up.
        for d in ["up", "work", "root"] {
            fs::create_dir_all(dir.join(d)).unwrap_or_else(|e| panic!("mkdir {dir:?}/{d}: {e}"));
        }
        let options = format!(
            "lowerdir=/,upperdir={},workdir={}",
            dir.join("up").display(),
            dir.join("work").display()
        );
        let root = host.root();
        run_must(
            "mount",
            &[
                "-t",
                "overlay",
                "overlay",
                "-o",
                &options,
                root.to_str().expect("utf-8 path"),
            ],
        );
        host.mounted = true;

        // Its own identity: machine-id (distinct journals, and not a "first boot", which would
        // preset-enable every unit of the machine), hostname, multi-user.target.
        let id = random_hex128();
        host.write_before_boot("/etc/machine-id", &format!("{id}\n"));
        host.write_before_boot("/etc/hostname", &format!("{name}\n"));
        let system = root.join("etc/systemd/system");
        let _ = fs::remove_file(system.join("default.target"));
        symlink(
            "/usr/lib/systemd/system/multi-user.target",
            system.join("default.target"),
        )
        .expect("default.target");
        for unit in MASKED {
            let _ = fs::remove_file(system.join(unit));
            symlink("/dev/null", system.join(unit)).expect("mask");
        }
        // A machine made from a container image may carry Docker's policy-rc.d, which
        // forbids every service action of maintainer scripts (even the stop before a
        // removal). An operator's host has none: delete it in the copy (a whiteout).
        let policy = root.join("usr/sbin/policy-rc.d");
        if policy.symlink_metadata().is_ok() {
            fs::remove_file(&policy).unwrap_or_else(|e| panic!("rm {policy:?}: {e}"));
        }

        host.cgroup = CgroupDir::create(&machine);
        let mut cmd = CgroupDir::guardian(host.cgroup.as_ref(), "systemd-nspawn");
        cmd.args([
            "--quiet",
            &format!("--directory={}", root.display()),
            &format!("--machine={machine}"),
            &format!("--hostname={name}"),
            &format!("--uuid={id}"),
            "--boot",
            "--register=no",
            "--keep-unit",
            "--console=pipe",
            &format!(
                "--network-namespace-path=/run/netns/{}",
                net.netns_names()[index]
            ),
        ]);
        for (source, target) in binds {
            cmd.arg(format!("--bind-ro={}:{target}", source.display()));
        }
        cmd.args(["--", "systemd.firstboot=off"]);
        let console = fs::File::create(dir.join("console.log")).expect("console.log");
        let console2 = console.try_clone().expect("console.log");
        cmd.stdin(Stdio::null())
            .stdout(console)
            .stderr(console2)
            .current_dir("/");
        host.started = Instant::now();
        host.child = Some(
            spawn_with_parent_death_signal(cmd)
                .unwrap_or_else(|e| panic!("cannot start systemd-nspawn: {e}")),
        );
        host.find_init();
        host.wait_ready();
        host
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The overlay mount point: the host's `/` as the machine sees it.
    fn root(&self) -> PathBuf {
        self.dir.join("root")
    }

    fn write_before_boot(&self, path: &str, contents: &str) {
        let dest = self.root().join(path.trim_start_matches('/'));
        let _ = fs::remove_file(&dest);
        fs::write(&dest, contents).unwrap_or_else(|e| panic!("write {dest:?}: {e}"));
    }

    /// Writes a file under `/etc` of the running host, as root would (parents created;
    /// written to a temporary file and renamed). It is written through the overlay from the
    /// machine side, which only shows folders that nspawn does not mount over (so `/etc`,
    /// not `/run`), and `path` must not go through a symlink.
    pub fn write_file(&self, path: &str, contents: &str) {
        assert!(
            path.starts_with("/etc/") && !path.contains(".."),
            "{path}: write_file is for files under /etc"
        );
        let dest = self.root().join(&path[1..]);
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent).unwrap_or_else(|e| panic!("mkdir {parent:?}: {e}"));
        }
        let tmp = dest.with_extension("promd-test-tmp");
        fs::write(&tmp, contents).unwrap_or_else(|e| panic!("write {tmp:?}: {e}"));
        fs::rename(&tmp, &dest).unwrap_or_else(|e| panic!("rename to {dest:?}: {e}"));
    }

    /// Reads a file of the running host (from inside), if it exists.
    pub fn read_file(&self, path: &str) -> Option<String> {
        let out = self.exec(&["cat", "--", path]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether a path exists in the host (a dangling symlink counts).
    pub fn exists(&self, path: &str) -> bool {
        let test = "[ -e \"$1\" ] || [ -L \"$1\" ]";
        self.exec(&["sh", "-c", test, "sh", path]).status.success()
    }

    /// Runs a command inside the host (`nsenter -t INIT -a`) with a clean environment,
    /// killed after [`EXEC_TIMEOUT`].
    pub fn exec(&self, args: &[&str]) -> Output {
        self.exec_timeout(args, EXEC_TIMEOUT)
    }

    pub fn exec_timeout(&self, args: &[&str], timeout: Duration) -> Output {
        assert!(self.init_pid != 0, "{}: not started", self.name);
        nsenter_command(self.init_pid, args, timeout)
            .env("TERM", "dumb")
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"))
    }

    /// Runs a command inside; panics with its output unless it exits 0. Returns stdout.
    pub fn run_ok(&self, args: &[&str]) -> String {
        stdout_if_ok(&self.name, args, self.exec(args))
    }

    /// `systemctl is-active UNIT`.
    pub fn unit_state(&self, unit: &str) -> String {
        let out = self.exec(&["systemctl", "is-active", unit]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    pub fn is_active(&self, unit: &str) -> bool {
        self.unit_state(unit) == "active"
    }

    /// The last lines of the host's journal, for failure messages.
    pub fn journal_tail(&self, lines: usize) -> String {
        let n = lines.to_string();
        let out = self.exec_timeout(
            &[
                "journalctl",
                "--no-pager",
                "-q",
                "-n",
                &n,
                "-o",
                "short-monotonic",
            ],
            Duration::from_secs(20),
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn console_log(&self) -> String {
        fs::read_to_string(self.dir.join("console.log")).unwrap_or_default()
    }

    /// nspawn (the guardian's child) and the container's systemd (its child that is PID 1
    /// in a pid namespace of its own).
    fn find_init(&mut self) {
        let deadline = self.started + BOOT_TIMEOUT;
        let guardian = self.child.as_ref().map_or(0, Child::id);
        loop {
            if let Some(pid) = find_container_init(guardian, &mut self.nspawn_pid) {
                self.init_pid = pid;
                return;
            }
            self.check_alive("starting");
            assert!(
                Instant::now() < deadline,
                "{}: no container init after {BOOT_TIMEOUT:?}\n{}",
                self.name,
                self.console_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn check_alive(&mut self, during: &str) {
        let console = self.dir.join("console.log");
        if let Some(why) = guardian_exited(&self.name, during, &mut self.child, &console) {
            panic!("{why}");
        }
    }

    fn wait_ready(&mut self) {
        let deadline = self.started + BOOT_TIMEOUT;
        loop {
            self.check_alive("booting");
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "{}: not up after {BOOT_TIMEOUT:?}\nconsole:\n{}",
                self.name,
                self.console_log()
            );
            let out = self.exec_timeout(&["systemctl", "is-system-running", "--wait"], left);
            let state = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if system_is_up(&self.name, &state, || self.console_log()) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        loop {
            let out = self.exec_timeout(&BUS_GET_ID, Duration::from_secs(10));
            if out.status.success() {
                break;
            }
            self.check_alive("waiting for the system bus");
            assert!(
                Instant::now() < deadline,
                "{}: the system bus does not answer",
                self.name
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Halts the container (SIGTERM to the guardian, which halts it cleanly and insists after
    /// 20 s), SIGKILL to its init after 40 s. Idempotent.
    fn halt(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if matches!(child.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        }
        let init_alive = || {
            self.init_pid != 0
                && proc_status(self.init_pid).is_some_and(|s| s.ppid == self.nspawn_pid)
        };
        finish_halt(
            &self.name,
            &mut child,
            self.init_pid,
            self.nspawn_pid,
            init_alive,
        );
    }
}

impl Drop for InstallHost {
    fn drop(&mut self) {
        if std::thread::panicking() && self.child.is_some() && self.init_pid != 0 {
            eprintln!(
                "---- journal of {} (last 80 lines) ----\n{}---- end of {} ----",
                self.name,
                self.journal_tail(80),
                self.name
            );
        }
        self.halt();
        drop(self.cgroup.take());
        for d in [
            "/run/systemd/nspawn/propagate",
            "/run/systemd/nspawn/unix-export",
        ] {
            let _ = fs::remove_dir_all(Path::new(d).join(&self.machine));
        }
        let root = self.root();
        if self.mounted {
            let target = root.to_string_lossy().into_owned();
            let mut unmounted = false;
            for _ in 0..50 {
                if run("umount", &[&target]).status.success() {
                    unmounted = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            if !unmounted {
                // Still busy: detach it; it goes once the last user lets go.
                unmounted = run("umount", &["-l", &target]).status.success();
            }
            if !unmounted {
                eprintln!(
                    "{}: cannot unmount {target}; leaving {:?}",
                    self.name, self.dir
                );
                return;
            }
            self.mounted = false;
        }
        // Never `remove_dir_all` through a mount: only an empty mount point is removed, and
        // the upper and work directories are plain folders on /dev/shm.
        let _ = fs::remove_dir(&root);
        if root.exists() {
            eprintln!(
                "{}: {root:?} is not empty; leaving {:?}",
                self.name, self.dir
            );
            return;
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}
