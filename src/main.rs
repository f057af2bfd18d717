//! `promd`: the agent. `promd [--config PATH]`, `promd check-config [--reload] [PATH]`,
//! `promd fence`, `promd --version`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use promd::config::{self, Config, StoreConfig};
use promd::hostlock::{self, HostLock};
use promd::logging::{self, Priority};
use promd::notify::Notifier;
use promd::running::{self, Found};
use promd::runtime::{self, RUN_DIR, Runtime};
use promd::store::Store;
use promd::store::dir::DirStore;
use promd::store::etcd::{EtcdStore, EtcdTls, EtcdUser, PemFile};
use promd::systemd::Systemd;

/// EX_CONFIG: `RestartPreventExitStatus=` in promd.service keeps systemd from looping on it.
const EXIT_CONFIG: u8 = 78;
const EXIT_USAGE: u8 = 2;

const USAGE: &str = "usage: promd [--config PATH]\n       promd check-config [--reload] [PATH]\n       promd fence\n       promd announce [--hold] ADDRESS/PREFIX dev INTERFACE\n       promd refuse [--held] ADDRESS/PREFIX dev INTERFACE\n       promd --version\n       promd --help";

enum Command {
    Run(PathBuf),
    /// `check-config [--reload] [PATH]`; `reload`: refuse what the running promd cannot
    /// reload (`ExecReload=` uses it), rather than only noting it.
    Check {
        path: PathBuf,
        reload: bool,
    },
    Fence,
    /// `announce [--hold] ADDRESS/PREFIX dev INTERFACE`: the address unit's announcement;
    /// `hold`: then stay until the address leaves the interface, and fail then.
    Announce {
        address: promd::config::Address,
        hold: bool,
    },
    /// `refuse [--held] ADDRESS/PREFIX dev INTERFACE`: by hand, the refusal of the address
    /// whenever it is not on this host (the address units keep theirs through `announce
    /// --hold`); `held`: with no expiry, until a run without it.
    Refuse {
        address: promd::config::Address,
        held: bool,
    },
    Version,
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let default = || PathBuf::from(config::DEFAULT_PATH);
    // `--help` anywhere after a subcommand asks for the usage, as it does for check-config.
    if let [cmd, rest @ ..] = args
        && ["fence", "announce", "refuse"].contains(&cmd.as_str())
        && rest.iter().any(|a| a == "--help" || a == "-h")
    {
        return Ok(Command::Help);
    }
    match args {
        [] => Ok(Command::Run(default())),
        [flag] if flag == "--version" || flag == "-V" => Ok(Command::Version),
        [flag] if flag == "--help" || flag == "-h" => Ok(Command::Help),
        [flag, path] if flag == "--config" || flag == "-c" => Ok(Command::Run(path.into())),
        [cmd] if cmd == "fence" => Ok(Command::Fence),
        [cmd, rest @ ..] if cmd == "announce" => address_args("announce", "--hold", rest)
            .map(|(hold, address)| Command::Announce { address, hold }),
        [cmd, rest @ ..] if cmd == "refuse" => address_args("refuse", "--held", rest)
            .map(|(held, address)| Command::Refuse { address, held }),
        [cmd, rest @ ..] if cmd == "check-config" => {
            parse_check(rest).ok_or_else(|| format!("unexpected arguments: {}", args.join(" ")))
        }
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

/// `[FLAG] ADDRESS/PREFIX dev INTERFACE` of the address unit's subcommands: whether `flag`
/// was given, and the address. Another option where the address should begin is named as
/// such, rather than parsed as an address.
fn address_args(
    cmd: &str,
    flag: &str,
    args: &[String],
) -> Result<(bool, promd::config::Address), String> {
    let (given, rest) = match args {
        [f, rest @ ..] if f == flag => (true, rest),
        _ => (false, args),
    };
    if let Some(a) = rest.first().filter(|a| a.starts_with('-')) {
        return Err(format!("{cmd}: unknown option `{a}`"));
    }
    promd::config::Address::parse(&rest.join(" "))
        .map(|address| (given, address))
        .map_err(|e| format!("{cmd}: {e}"))
}

/// `check-config`'s own arguments: `--reload` and a path, each at most once, in any order;
/// `--help` (`-h`) among them asks for the usage instead.
fn parse_check(args: &[String]) -> Option<Command> {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        return Some(Command::Help);
    }
    let mut reload = false;
    let mut path = None;
    for arg in args {
        match arg.as_str() {
            "--reload" if !reload => reload = true,
            a if a.starts_with('-') => return None,
            a if path.is_none() => path = Some(PathBuf::from(a)),
            _ => return None,
        }
    }
    Some(Command::Check {
        path: path.unwrap_or_else(|| PathBuf::from(config::DEFAULT_PATH)),
        reload,
    })
}

/// A panic anywhere ends promd at once, in every build profile. The release profile aborts on
/// a panic by itself; the profile the test suite builds (`ci`, Cargo.toml) unwinds, where a
/// panic would end only its thread or task and could leave a promd whose watchdog task still
/// pings while its event loop is gone. Aborting leaves the units to `ExecStopPost=promd
/// fence` (docs/safety.md, "killed").
fn abort_on_panic() {
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        report(info);
        std::process::abort();
    }));
}

/// A line on stdout. A reader that went away (`promd --help | head -1`) is not an error worth
/// a panic (`println!` panics on a closed pipe, and promd aborts on a panic).
fn say(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn main() -> ExitCode {
    abort_on_panic();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Command::Version) => {
            say(&format!("promd {}", env!("CARGO_PKG_VERSION")));
            ExitCode::SUCCESS
        }
        Ok(Command::Help) => {
            say(USAGE);
            ExitCode::SUCCESS
        }
        Ok(Command::Check { path, reload }) => check(&path, reload, Path::new(RUN_DIR)),
        Ok(Command::Fence) => fence(),
        Ok(Command::Announce { address, hold }) => {
            let ip = address.ip;
            use promd::announce::{self, AnnounceError};
            if hold {
                // The refusal of the address once it has left (see `refuse`), kept fresh while
                // it is here; set beside the announcements, not after their second.
                let interface = address.interface.clone();
                std::thread::spawn(move || {
                    promd::refuse::keep(ip, &interface, |e| {
                        let text = format!("promd announce {ip}: refusal: {e}");
                        logging::stderr_lines(Priority::Warning, &text);
                    })
                });
            }
            let sent = announce::announce(&address);
            match (sent, hold) {
                (Ok(()), false) => ExitCode::SUCCESS,
                // Announced, or not (a frame that could not be sent only delays clients):
                // the unit holds the address as long as it is there.
                (sent @ (Ok(()) | Err(AnnounceError::Send { .. })), true) => {
                    if let Err(e) = sent {
                        let text = format!("promd announce {ip}: {e}");
                        logging::stderr_lines(Priority::Warning, &text);
                    }
                    let e = announce::hold(&address, announce::HOLD_CHECK);
                    logging::stderr_lines(Priority::Error, &format!("promd announce {ip}: {e}"));
                    ExitCode::FAILURE
                }
                (Err(e), _) => {
                    logging::stderr_lines(Priority::Error, &format!("promd announce {ip}: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Refuse { address, held }) => {
            use promd::refuse;
            let ip = address.ip;
            let set = refuse::check_interface(&address.interface)
                .and_then(|()| refuse::refuse(ip, &address.interface, held));
            match set {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    logging::stderr_lines(Priority::Warning, &format!("promd refuse {ip}: {e}"));
                    ExitCode::FAILURE
                }
            }
        }
        Ok(Command::Run(path)) => run(&path),
        Err(e) => {
            eprintln!("promd: {e}\n{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// `promd check-config [--reload] PATH`: everything that would make promd refuse the file at
/// start-up, and, compared with the running promd's record in `run_dir`, what a reload could
/// not apply (`node`, `[store]`): refused with `--reload`, noted without.
fn check(path: &Path, reload: bool, run_dir: &Path) -> ExitCode {
    let (cfg, text) = match config::load_source(path) {
        Ok(loaded) => loaded,
        Err(e) => {
            logging::stderr_lines(Priority::Error, &e.to_string());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let origin = path.display().to_string();
    // Without a record of a live promd there is nothing to compare with; promd itself still
    // refuses a reload that changes `node` or `[store]`.
    let not_compared = |why: String| {
        if reload {
            logging::stderr_lines(
                Priority::Notice,
                &format!("{origin}: note: not compared with a running promd: {why}"),
            );
        }
    };
    match running::read(run_dir) {
        Ok(Found::Running(record)) => {
            if let Some(changes) = config::restart_needed(&record.fixed, &cfg, &text, &origin) {
                let pid = record.pid;
                if reload {
                    logging::stderr_lines(
                        Priority::Error,
                        &format!(
                            "{changes}\n{origin}: reload refused: the running promd (pid {pid}) \
                             keeps its configuration; `systemctl restart promd` applies this file"
                        ),
                    );
                    return ExitCode::from(EXIT_USAGE);
                }
                logging::stderr_lines(
                    Priority::Notice,
                    &format!(
                        "{}\n{origin}: note: valid, but the running promd (pid {pid}) would \
                         refuse it on `systemctl reload promd`; it needs `systemctl restart promd`",
                        changes.notes()
                    ),
                );
            }
        }
        Ok(Found::Absent) => not_compared(format!(
            "{} does not exist",
            run_dir.join(running::RECORD_FILE).display()
        )),
        Ok(Found::Stale(record)) => not_compared(format!(
            "the promd that wrote {} (pid {}) is gone",
            run_dir.join(running::RECORD_FILE).display(),
            record.pid
        )),
        Err(e) => not_compared(e.to_string()),
    }
    if let StoreConfig::Etcd {
        auth: Some(auth), ..
    } = &cfg.store
        && let config::PasswordFile::Credential(name) = &auth.password_file
        && config::credentials_directory().is_none()
    {
        logging::stderr_lines(
            Priority::Notice,
            &format!(
                "{origin}: note: `password-file` = {name:?} is a systemd credential, only \
                 readable inside promd.service ($CREDENTIALS_DIRECTORY is not set here): not \
                 checked; promd.service needs LoadCredential={name}:/PATH/TO/FILE"
            ),
        );
    }
    for warning in config::warnings(&cfg) {
        logging::stderr_lines(Priority::Notice, &format!("{origin}: note: {warning}"));
    }
    for note in missing_interfaces(&cfg) {
        logging::stderr_lines(Priority::Notice, &format!("{origin}: note: {note}"));
    }
    say(&format!(
        "{origin}: ok ({} group{})",
        cfg.groups.len(),
        if cfg.groups.len() == 1 { "" } else { "s" }
    ));
    ExitCode::SUCCESS
}

/// One note per address of a group this host may run whose interface this host lacks
/// ([`promd::refuse::check_interface`], the same test `promd refuse` makes): not an error, since the file may be rolled out before the
/// interface exists, but its address unit would fail each time this host takes the role.
fn missing_interfaces(cfg: &config::Config) -> Vec<String> {
    let mut notes = Vec::new();
    for g in &cfg.groups {
        let member = g.members.as_ref().is_none_or(|m| m.contains(&cfg.node));
        for a in g.addresses.iter().filter(|_| member) {
            if promd::refuse::check_interface(&a.interface).is_err() {
                notes.push(format!(
                    "group {}: {}/{} is on interface {}, which this host does not have: its \
                     address unit would fail whenever this host takes the role, and the group \
                     fail over",
                    g.name, a.ip, a.prefix, a.interface
                ));
            }
        }
    }
    notes
}

/// `ExecStopPost=promd fence`: when promd is gone, however it went, SIGKILL every unit bound
/// to it at once instead of leaving them to drain past the lease (see docs/safety.md).
fn fence() -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::stderr_lines(
                Priority::Error,
                &format!("promd fence: cannot start the runtime: {e}"),
            );
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(promd::systemd::fence_all()) {
        Ok(killed) if killed.is_empty() => ExitCode::SUCCESS,
        Ok(killed) => {
            // Only after an unclean end: a clean stop leaves nothing running to kill.
            logging::stderr_lines(
                Priority::Warning,
                &format!("promd fence: killed what was left of {}", killed.join(" ")),
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            logging::stderr_lines(Priority::Error, &format!("promd fence: {e}"));
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> ExitCode {
    logging::init();
    let config = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            logging::fatal(&format!("{e}\nrefusing to start: fix {}", path.display()));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    for warning in config::warnings(&config) {
        tracing::warn!("{warning}");
    }
    // Before anything touches units or the store: a second promd on this host must not.
    let _host_lock = match HostLock::acquire(std::path::Path::new(hostlock::LOCK_PATH)) {
        Ok(lock) => lock,
        Err(e) => {
            logging::fatal(&format!("{e}\nrefusing to start"));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let store = match open_store(&config.store) {
        Ok(store) => store,
        Err(e) => {
            logging::fatal(&format!("{e}\nrefusing to start: fix {}", path.display()));
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let mut notifier = Notifier::from_env();
    check_watchdog(&config, &mut notifier);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::fatal(&format!("cannot start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serve(config, path.to_path_buf(), store, notifier)) {
        Ok(None) => {
            tracing::info!("stopped");
            ExitCode::SUCCESS
        }
        Ok(Some(why)) => {
            logging::fatal(&format!("stopped every group and refusing to run: {why}"));
            ExitCode::from(runtime::EXIT_REFUSED)
        }
        Err(e) => {
            logging::fatal(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// A hung promd is only safe if the watchdog kills it: fit the watchdog to the leases, and
/// warn when there is none.
fn check_watchdog(config: &Config, notifier: &mut Notifier) {
    if notifier.watchdog().is_none() && !config.groups.is_empty() {
        tracing::warn!(
            "no systemd watchdog: a hung promd would not be killed (run it as promd.service)"
        );
    }
    runtime::fit_watchdog(config, notifier);
}

/// The store `[store]` describes, its files (certificates, key, password) read now.
fn open_store(store: &StoreConfig) -> Result<Box<dyn Store>, config::SecretError> {
    match store {
        StoreConfig::Etcd {
            endpoints,
            connect_timeout,
            prefix,
            tls,
            auth,
        } => {
            let mut etcd = EtcdStore::new(endpoints.clone(), *connect_timeout, prefix.clone());
            // Read once here, so that promd refuses to start on unusable files; then again
            // before each connection, so that renewed files need no restart.
            let (etcd_tls, user) = read_secrets(tls.as_deref(), auth.as_deref())?;
            if let Some(etcd_tls) = etcd_tls {
                etcd = etcd.with_tls(etcd_tls);
            }
            if let Some(user) = user {
                etcd = etcd.with_user(user);
            }
            if tls.is_some() || auth.is_some() {
                let (tls, auth) = (tls.clone(), auth.clone());
                etcd = etcd.rereading_secrets(std::sync::Arc::new(move || {
                    read_secrets(tls.as_deref(), auth.as_deref()).map_err(|e| e.to_string())
                }));
            }
            Ok(Box::new(etcd))
        }
        StoreConfig::Dir { path } => Ok(Box::new(DirStore::new(path.clone()))),
    }
}

/// The TLS files and the password `[store]` names, read and checked as `check-config` does.
fn read_secrets(
    tls: Option<&config::TlsConfig>,
    auth: Option<&config::AuthConfig>,
) -> Result<(Option<EtcdTls>, Option<EtcdUser>), config::SecretError> {
    let etcd_tls = match tls {
        Some(tls) => {
            let ca = match &tls.ca_file {
                Some(path) => Some(PemFile {
                    path: path.clone(),
                    pem: config::read_certificates("ca-file", path)?,
                }),
                None => None,
            };
            let client = match &tls.client {
                Some(client) => {
                    let (cert, key) = config::read_identity(&client.cert_file, &client.key_file)?;
                    Some((
                        PemFile {
                            path: client.cert_file.clone(),
                            pem: cert,
                        },
                        PemFile {
                            path: client.key_file.clone(),
                            pem: key,
                        },
                    ))
                }
                None => None,
            };
            Some(EtcdTls {
                ca,
                client,
                server_name: tls.server_name.clone(),
            })
        }
        None => None,
    };
    let user = match auth {
        Some(auth) => {
            let password = config::read_password(
                &auth.password_file,
                config::credentials_directory().as_deref(),
            )?;
            Some(EtcdUser {
                name: auth.user.clone(),
                password: password.expose().to_owned(),
            })
        }
        None => None,
    };
    Ok((etcd_tls, user))
}

async fn serve(
    config: Config,
    config_path: std::path::PathBuf,
    store: Box<dyn Store>,
    notifier: Notifier,
) -> anyhow::Result<Option<String>> {
    let systemd = Systemd::connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach systemd on the system bus: {e}"))?;
    tracing::info!(
        "promd {} on node {}: {} group(s), store {}",
        env!("CARGO_PKG_VERSION"),
        config.node,
        config.groups.len(),
        match &config.store {
            StoreConfig::Etcd {
                endpoints, auth, ..
            } => match auth {
                Some(auth) => format!("etcd {} as user {}", endpoints.join(","), auth.user),
                None => format!("etcd {}", endpoints.join(",")),
            },
            StoreConfig::Dir { path } => format!("dir {}", path.display()),
        }
    );
    // Before READY=1: `promd check-config --reload` (ExecReload=) compares with it.
    if let Err(e) = running::write(Path::new(RUN_DIR), &config_path, &config) {
        tracing::warn!(
            "{e}: `systemctl reload promd` cannot check beforehand that `node` and [store] are \
             unchanged (promd still refuses such a reload itself)"
        );
    }
    let http = config.http.listen.clone();
    let mut runtime = Runtime::new(config, config_path, store, systemd, notifier);
    // The state endpoint, off unless `[http] listen` names an address.
    if !http.is_empty()
        && let Err(e) = runtime.serve_http(http)
    {
        tracing::error!("cannot start the HTTP state endpoint: {e}");
    }
    // D-Bus is for observing and steering; promd does its job without it.
    match zbus::Connection::system().await {
        Ok(conn) => {
            if let Err(e) = runtime.serve_dbus(&conn).await {
                tracing::error!(
                    "cannot serve org.promd1 on the system bus (is dbus/org.promd1.conf installed?): {e}"
                );
            }
        }
        Err(e) => tracing::error!("cannot reach the system bus: {e}"),
    }
    Ok(runtime.run().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_notes_an_address_on_an_interface_this_host_lacks() {
        let text = r#"
node = "n1"
[[group]]
name = "web"
active-target = "web-active.target"
addresses = ["192.0.2.30/24 dev promd-none9"]
[[group]]
name = "db"
active-target = "db-active.target"
members = ["n2", "n3"]
addresses = ["192.0.2.31/24 dev promd-none9"]
"#;
        let cfg = config::parse(text, "promd.toml").unwrap();
        assert_eq!(
            missing_interfaces(&cfg),
            vec![
                "group web: 192.0.2.30/24 is on interface promd-none9, which this host does not \
                 have: its address unit would fail whenever this host takes the role, and the \
                 group fail over"
            ]
        );
    }

    #[test]
    fn check_refuses_with_reload_what_the_running_promd_cannot_reload() {
        let run = tempfile::tempdir().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("promd.toml");
        std::fs::write(&file, "node = \"a\"\n").unwrap();
        // No record: nothing to compare with; both modes pass.
        assert_eq!(check(&file, true, run.path()), ExitCode::SUCCESS);
        // This test process stands for the running promd.
        let running = config::load(&file).unwrap();
        running::write(run.path(), &file, &running).unwrap();
        assert_eq!(check(&file, true, run.path()), ExitCode::SUCCESS);
        std::fs::write(&file, "node = \"b\"\n").unwrap();
        assert_eq!(check(&file, false, run.path()), ExitCode::SUCCESS, "a note");
        assert_eq!(check(&file, true, run.path()), ExitCode::from(EXIT_USAGE));
        // A file that start-up would refuse is refused in both modes.
        std::fs::write(&file, "node = \"a\"\nbogus = 1\n").unwrap();
        assert_eq!(check(&file, false, run.path()), ExitCode::from(EXIT_USAGE));
        assert_eq!(check(&file, true, run.path()), ExitCode::from(EXIT_USAGE));
    }

    /// `--help` (or `-h`) anywhere after check-config asks for the usage, as after promd.
    #[test]
    fn check_config_help_prints_the_usage() {
        let a = |s: &[&str]| parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        for args in [
            &["check-config", "--help"][..],
            &["check-config", "-h"],
            &["check-config", "--reload", "--help"],
            &["check-config", "/y", "-h"],
        ] {
            assert!(matches!(a(args), Ok(Command::Help)), "{args:?}");
        }
    }

    #[test]
    fn arguments() {
        let a = |s: &[&str]| parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert!(
            matches!(a(&[]), Ok(Command::Run(p)) if p == std::path::Path::new("/etc/promd/promd.toml"))
        );
        assert!(
            matches!(a(&["--config", "/x.toml"]), Ok(Command::Run(p)) if p == std::path::Path::new("/x.toml"))
        );
        assert!(
            matches!(a(&["check-config"]), Ok(Command::Check { path, reload: false }) if path == Path::new("/etc/promd/promd.toml"))
        );
        assert!(
            matches!(a(&["check-config", "/y"]), Ok(Command::Check { path, reload: false }) if path == Path::new("/y"))
        );
        for args in [
            &["check-config", "--reload", "/y"],
            &["check-config", "/y", "--reload"],
        ] {
            assert!(
                matches!(a(args), Ok(Command::Check { path, reload: true }) if path == Path::new("/y")),
                "{args:?}"
            );
        }
        assert!(
            matches!(a(&["check-config", "--reload"]), Ok(Command::Check { path, reload: true }) if path == Path::new("/etc/promd/promd.toml"))
        );
        assert!(matches!(a(&["--version"]), Ok(Command::Version)));
        assert!(matches!(a(&["--help"]), Ok(Command::Help)));
        let e = a(&["refuse", "--bogus", "192.0.2.10/24", "dev", "eth0"])
            .err()
            .unwrap_or_default();
        assert_eq!(e, "refuse: unknown option `--bogus`");
        let e = a(&["announce", "--held", "192.0.2.10/24", "dev", "eth0"])
            .err()
            .unwrap_or_default();
        assert_eq!(e, "announce: unknown option `--held`");
        assert!(matches!(
            a(&["announce", "--hold", "192.0.2.10/24", "dev", "eth0"]),
            Ok(Command::Announce { hold: true, .. })
        ));
        for args in [
            &["announce", "--help"][..],
            &["refuse", "-h"],
            &["refuse", "--held", "--help"],
            &["fence", "--help"],
        ] {
            assert!(matches!(a(args), Ok(Command::Help)), "{args:?}");
        }
        assert!(a(&["--bogus"]).is_err());
        assert!(a(&["check-config", "a", "b"]).is_err());
        assert!(a(&["check-config", "--reload", "--reload"]).is_err());
        assert!(a(&["check-config", "--strict"]).is_err());
        assert!(
            matches!(a(&["refuse", "192.0.2.10/24", "dev", "eth0"]), Ok(Command::Refuse { address, held: false }) if address.interface == "eth0")
        );
        assert!(matches!(
            a(&["refuse", "--held", "192.0.2.10/24", "dev", "eth0"]),
            Ok(Command::Refuse { held: true, .. })
        ));
        let e = a(&["refuse", "192.0.2.10", "dev", "eth0"])
            .err()
            .unwrap_or_default();
        assert!(e.starts_with("refuse: "), "{e}");
    }
}
