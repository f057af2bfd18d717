//! `promctl` as a user runs it, without root and without promd: what goes to stdout and
//! stderr, the exit codes (0 success, 1 refused or failed, 2 usage), `import-prom`, and the
//! shell completions in `packaging/completions/` working with this binary (bash for real, and
//! the group names from a stand-in promd on a private D-Bus).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use zbus::OwnedObjectPath;

const PROMCTL: &str = env!("CARGO_BIN_EXE_promctl");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// A bus address where nothing listens: promd "not running".
const NO_BUS: &str = "unix:path=/nonexistent/promctl-test-bus";

fn promctl(args: &[&str]) -> Output {
    Command::new(PROMCTL)
        .args(args)
        .env("PROMD_BUS_ADDRESS", NO_BUS)
        .env_remove("PROMCTL_COMPLETE")
        .stdin(Stdio::null())
        .output()
        .expect("run promctl")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Exit `code`, `stdout` or `stderr` non-empty (and the other empty); returns that text.
fn expect(args: &[&str], code: i32, on_stdout: bool) -> String {
    let out = promctl(args);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(
        out.status.code(),
        Some(code),
        "promctl {args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    let (wanted, other) = if on_stdout {
        (stdout, stderr)
    } else {
        (stderr, stdout)
    };
    assert!(!wanted.is_empty(), "promctl {args:?} printed nothing");
    assert!(other.is_empty(), "promctl {args:?} also printed: {other}");
    wanted
}

#[test]
fn help_and_version_go_to_stdout_with_exit_0() {
    let version = expect(&["--version"], 0, true);
    assert_eq!(version, format!("promctl {}\n", env!("CARGO_PKG_VERSION")));
    assert_eq!(expect(&["-V"], 0, true), version);
    for args in [
        &["--help"][..],
        &["-h"],
        &["help"],
        &["help", "status"],
        &["status", "--help"],
        &["promote", "-h"],
        &["maintenance", "web", "maybe", "--help"],
        &["import-prom", "--help"],
    ] {
        let help = expect(args, 0, true);
        assert!(help.contains("Usage: promctl"), "{args:?}: {help}");
        assert!(help.contains("Exit status:"), "{args:?}: {help}");
    }
}

#[test]
fn usage_errors_go_to_stderr_with_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"],
        &["--json"],
        &["status", "web", "db"],
        &["status", "--yaml"],
        &["promote"],
        &["demote", "web", "db"],
        &["maintenance", "web"],
        &["maintenance", "web", "yes"],
        &["reset"],
        &["watch", "web"],
        &["import-prom", "c.json"],
        &["import-prom", "--replica", "0"],
        &["help", "frobnicate"],
    ] {
        let err = expect(args, 2, false);
        assert!(
            err.contains("Usage: promctl") || err.contains("error:"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn failures_exit_1_with_the_reason() {
    for args in [
        &["status"][..],
        &["status", "web", "--json"],
        &["promote", "web"],
        &["demote", "web"],
        &["maintenance", "web", "on"],
        &["reset", "web"],
    ] {
        let err = expect(args, 1, false);
        assert!(
            err.starts_with("promctl: ") && err.contains("cannot connect"),
            "{args:?}: {err}"
        );
    }
    let err = expect(
        &["import-prom", "/nonexistent.json", "--replica", "0"],
        1,
        false,
    );
    assert!(err.contains("cannot read /nonexistent.json"), "{err}");
}

#[test]
fn import_prom_writes_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("UTF-8 temp dir");
    let config = format!("{ROOT}/tests/fixtures/prom/prom-issue.json");
    let args = ["import-prom", &config, "--replica", "0", "--out", out];
    let said = expect(&args, 0, true);
    assert!(
        said.contains("wrote ") && said.contains("promd.toml"),
        "{said}"
    );
    assert!(dir.path().join("promd.toml").is_file());
    // Never overwrites: the second run refuses and writes nothing.
    let err = expect(&args, 1, false);
    assert!(err.starts_with("promctl: "), "{err}");
}

#[test]
fn import_prom_refuses_an_endless_or_huge_input_without_reading_it_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().to_str().expect("UTF-8 temp dir");
    // A wrong path to a device that never ends: refused at 1 MiB, not read into memory.
    let err = expect(
        &["import-prom", "/dev/zero", "--replica", "0", "--out", out],
        1,
        false,
    );
    assert!(
        err.contains("/dev/zero: larger than 1 MiB: not a PROM/HAL configuration"),
        "{err}"
    );
    // Binary, not text.
    let bin = dir.path().join("config.bin");
    std::fs::write(&bin, [0xff_u8, 0xfe, 0x00, 0x7b]).expect("write");
    let bin = bin.to_str().expect("UTF-8 path");
    let err = expect(
        &["import-prom", bin, "--replica", "0", "--out", out],
        1,
        false,
    );
    assert!(err.contains("not UTF-8 text"), "{err}");
    // Nothing was written.
    assert_eq!(
        std::fs::read_dir(dir.path()).expect("read_dir").count(),
        1,
        "only the test's own file"
    );
}

/// The checked-in scripts are what this promctl prints for `PROMCTL_COMPLETE=SHELL` (plus a
/// header, and for zsh the autoload bridge).
#[test]
fn checked_in_completions_are_this_promctls() {
    for (shell, file) in [
        ("bash", "promctl.bash"),
        ("zsh", "_promctl"),
        ("fish", "promctl.fish"),
    ] {
        let out = Command::new(PROMCTL)
            .env("PROMCTL_COMPLETE", shell)
            .output()
            .expect("run promctl");
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        // The binary was started by path; the checked-in script calls `promctl` on PATH.
        let script = script.replace(PROMCTL, "promctl");
        let path = Path::new(ROOT).join("packaging/completions").join(file);
        let checked_in = std::fs::read_to_string(&path).expect("read the completion");
        let body = script.strip_prefix("#compdef promctl\n").unwrap_or(&script);
        assert!(
            checked_in.contains(body.trim()),
            "{} is not what `PROMCTL_COMPLETE={shell} promctl` prints; run `make generate`\n\
             printed:\n{script}",
            path.display()
        );
    }
}

/// Completes `words` (the last one being typed) with the checked-in bash script, this
/// promctl first on PATH; returns the candidates.
fn bash_complete(words: &[&str], cwd: &Path, bus: &str) -> Vec<String> {
    let bin_dir = Path::new(PROMCTL).parent().expect("promctl's folder");
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let script = format!(
        "source {ROOT}/packaging/completions/promctl.bash\n\
         COMP_WORDS=(\"$@\"); COMP_CWORD=$(( $# - 1 )); COMP_TYPE=9\n\
         _clap_complete_promctl promctl \"${{COMP_WORDS[-1]}}\" \"${{COMP_WORDS[-2]}}\"\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\""
    );
    let out = Command::new("bash")
        .arg("-c")
        .arg(script)
        .arg("bash")
        .args(words)
        .current_dir(cwd)
        .env("PATH", path)
        .env("PROMD_BUS_ADDRESS", bus)
        .output()
        .expect("run bash");
    assert!(out.status.success(), "bash: {}", text(&out.stderr));
    text(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn bash_completes_commands_options_values_and_paths() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("config.json"), "{}").expect("write");
    std::fs::write(dir.path().join("notes.txt"), "").expect("write");
    std::fs::create_dir(dir.path().join("out")).expect("mkdir");
    let complete = |words: &[&str]| bash_complete(words, dir.path(), NO_BUS);

    let commands = complete(&["promctl", ""]);
    for c in [
        "status",
        "promote",
        "demote",
        "maintenance",
        "reset",
        "watch",
        "import-prom",
        "help",
    ] {
        assert!(commands.iter().any(|w| w == c), "{c} not in {commands:?}");
    }
    assert_eq!(complete(&["promctl", "ma"]), ["maintenance"]);
    assert_eq!(complete(&["promctl", "status", "--j"]), ["--json"]);
    let switch = complete(&["promctl", "maintenance", "web", ""]);
    assert!(
        switch.starts_with(&["on".to_owned(), "off".to_owned()]),
        "{switch:?}"
    );
    // CONFIG.json: JSON files and folders, not other files.
    let config = complete(&["promctl", "import-prom", ""]);
    assert!(config.contains(&"config.json".to_owned()), "{config:?}");
    assert!(config.contains(&"out/".to_owned()), "{config:?}");
    assert!(!config.contains(&"notes.txt".to_owned()), "{config:?}");
    let out = complete(&["promctl", "import-prom", "config.json", "--out", ""]);
    assert!(out.contains(&"out/".to_owned()), "{out:?}");
    assert!(!out.contains(&"config.json".to_owned()), "{out:?}");
    // No promd: no group names, and no error.
    assert_eq!(complete(&["promctl", "promote", ""]), ["--help"]);
}

// ---------------------------------------------------------------------------------------------
// Group names from a stand-in promd on a private bus.

/// A `dbus-daemon` of our own, ended on drop.
struct Bus {
    daemon: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Bus {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("bus.conf");
        let socket: PathBuf = dir.path().join("bus");
        std::fs::write(
            &config,
            format!(
                "<!DOCTYPE busconfig PUBLIC \"-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN\"\n \
                 \"http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd\">\n\
                 <busconfig><type>session</type><listen>unix:path={}</listen>\
                 <auth>EXTERNAL</auth><policy context=\"default\">\
                 <allow send_destination=\"*\" eavesdrop=\"true\"/><allow eavesdrop=\"true\"/>\
                 <allow own=\"*\"/></policy></busconfig>\n",
                socket.display()
            ),
        )
        .expect("write the bus config");
        let mut daemon = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address"])
            .stdout(Stdio::piped())
            // It warns when it cannot raise its fd limit (not root), which does not matter here.
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (package dbus, which scripts/deps.sh installs)");
        let mut address = String::new();
        BufReader::new(daemon.stdout.take().expect("stdout"))
            .read_line(&mut address)
            .expect("dbus-daemon prints its address");
        assert!(!address.trim().is_empty(), "dbus-daemon did not start");
        Bus {
            daemon,
            address: address.trim().to_owned(),
            _dir: dir,
        }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

/// What promctl's completion reads of promd: `ListGroups`.
struct FakeManager;

#[zbus::interface(name = "org.promd1.Manager")]
impl FakeManager {
    fn list_groups(&self) -> Vec<(String, String, String, u64, OwnedObjectPath)> {
        let group = |name: &str, role: &str, leader: &str, term| {
            let path = format!("/org/promd1/group/{name}");
            (
                name.to_owned(),
                role.to_owned(),
                leader.to_owned(),
                term,
                OwnedObjectPath::try_from(path).expect("object path"),
            )
        };
        vec![
            group("web", "active", "n1", 42),
            group("db", "passive", "n2", 7),
        ]
    }
}

#[test]
fn group_names_come_from_the_running_promd() {
    let bus = Bus::start();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio");
    let _promd = runtime.block_on(async {
        zbus::connection::Builder::address(bus.address.as_str())
            .name("org.promd1")
            .serve_at("/org/promd1", FakeManager)
            .build()
            .await
            .expect("connect the stand-in promd")
    });
    // The stand-in answers from this runtime: drive it while bash completes.
    let (done, wait) = std::sync::mpsc::channel::<Vec<Vec<String>>>();
    let address = bus.address.clone();
    std::thread::spawn(move || {
        let dir = std::env::temp_dir();
        let results = [
            &["promctl", "promote", ""][..],
            &["promctl", "status", "w"],
            &["promctl", "maintenance", ""],
            &["promctl", "maintenance", "web", ""],
        ]
        .iter()
        .map(|words| bash_complete(words, &dir, &address))
        .collect();
        let _ = done.send(results);
    });
    let results = runtime.block_on(async {
        loop {
            if let Ok(r) = wait.try_recv() {
                break r;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert!(
        results[0].contains(&"web".to_owned()) && results[0].contains(&"db".to_owned()),
        "{:?}",
        results[0]
    );
    assert_eq!(results[1], ["web"]);
    assert!(
        results[2].contains(&"db".to_owned()),
        "maintenance GROUP: {:?}",
        results[2]
    );
    assert!(
        !results[3].contains(&"web".to_owned()) && results[3].contains(&"on".to_owned()),
        "maintenance web on|off: {:?}",
        results[3]
    );
}
