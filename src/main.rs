//! `promd`: the agent. `promd [--config PATH]`, `promd check-config [PATH]`, `promd fence`,
//! `promd --version`.

use std::path::PathBuf;
use std::process::ExitCode;

use promd::config::{self, Config, StoreConfig};
use promd::hostlock::{self, HostLock};
use promd::logging;
use promd::notify::Notifier;
use promd::runtime::{self, Runtime};
use promd::store::Store;
use promd::store::dir::DirStore;
use promd::store::etcd::EtcdStore;
use promd::systemd::Systemd;

/// EX_CONFIG: `RestartPreventExitStatus=` in promd.service keeps systemd from looping on it.
const EXIT_CONFIG: u8 = 78;
const EXIT_USAGE: u8 = 2;

const USAGE: &str = "usage: promd [--config PATH]\n       promd check-config [PATH]\n       promd fence\n       promd --version";

enum Command {
    Run(PathBuf),
    Check(PathBuf),
    Fence,
    Version,
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let default = || PathBuf::from(config::DEFAULT_PATH);
    match args {
        [] => Ok(Command::Run(default())),
        [flag] if flag == "--version" || flag == "-V" => Ok(Command::Version),
        [flag] if flag == "--help" || flag == "-h" => Ok(Command::Help),
        [flag, path] if flag == "--config" || flag == "-c" => Ok(Command::Run(path.into())),
        [cmd] if cmd == "check-config" => Ok(Command::Check(default())),
        [cmd] if cmd == "fence" => Ok(Command::Fence),
        [cmd, path] if cmd == "check-config" => Ok(Command::Check(path.into())),
        _ => Err(format!("unexpected arguments: {}", args.join(" "))),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Command::Version) => {
            println!("promd {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Check(path)) => match config::load(&path) {
            Ok(cfg) => {
                println!(
                    "{}: ok ({} group{})",
                    path.display(),
                    cfg.groups.len(),
                    if cfg.groups.len() == 1 { "" } else { "s" }
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_USAGE)
            }
        },
        Ok(Command::Fence) => fence(),
        Ok(Command::Run(path)) => run(&path),
        Err(e) => {
            eprintln!("promd: {e}\n{USAGE}");
            ExitCode::from(EXIT_USAGE)
        }
    }
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
            eprintln!("<3>promd fence: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(promd::systemd::fence_all()) {
        Ok(killed) if killed.is_empty() => ExitCode::SUCCESS,
        Ok(killed) => {
            // Only after an unclean end: a clean stop leaves nothing running to kill.
            eprintln!(
                "<4>promd fence: killed what was left of {}",
                killed.join(" ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("<3>promd fence: {e}");
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
    // Before anything touches units or the store: a second promd on this host must not.
    let _host_lock = match HostLock::acquire(std::path::Path::new(hostlock::LOCK_PATH)) {
        Ok(lock) => lock,
        Err(e) => {
            logging::fatal(&format!("{e}\nrefusing to start"));
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
    match rt.block_on(serve(config, path.to_path_buf(), notifier)) {
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

async fn serve(
    config: Config,
    config_path: std::path::PathBuf,
    notifier: Notifier,
) -> anyhow::Result<Option<String>> {
    let store: Box<dyn Store> = match &config.store {
        StoreConfig::Etcd {
            endpoints,
            connect_timeout,
            prefix,
        } => Box::new(EtcdStore::new(
            endpoints.clone(),
            *connect_timeout,
            prefix.clone(),
        )),
        StoreConfig::Dir { path } => Box::new(DirStore::new(path.clone())),
    };
    let systemd = Systemd::connect()
        .await
        .map_err(|e| anyhow::anyhow!("cannot reach systemd on the system bus: {e}"))?;
    tracing::info!(
        "promd {} on node {}: {} group(s), store {}",
        env!("CARGO_PKG_VERSION"),
        config.node,
        config.groups.len(),
        match &config.store {
            StoreConfig::Etcd { endpoints, .. } => format!("etcd {}", endpoints.join(",")),
            StoreConfig::Dir { path } => format!("dir {}", path.display()),
        }
    );
    let mut runtime = Runtime::new(config, config_path, store, systemd, notifier);
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
    fn arguments() {
        let a = |s: &[&str]| parse_args(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>());
        assert!(
            matches!(a(&[]), Ok(Command::Run(p)) if p == std::path::Path::new("/etc/promd/promd.toml"))
        );
        assert!(
            matches!(a(&["--config", "/x.toml"]), Ok(Command::Run(p)) if p == std::path::Path::new("/x.toml"))
        );
        assert!(matches!(a(&["check-config"]), Ok(Command::Check(_))));
        assert!(
            matches!(a(&["check-config", "/y"]), Ok(Command::Check(p)) if p == std::path::Path::new("/y"))
        );
        assert!(matches!(a(&["--version"]), Ok(Command::Version)));
        assert!(a(&["--bogus"]).is_err());
        assert!(a(&["check-config", "a", "b"]).is_err());
    }
}
