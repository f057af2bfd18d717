//! `promctl`: the operator's command for promd.
//!
//! It talks only D-Bus (the system bus, name `org.promd1`; `PROMD_BUS_ADDRESS` overrides the
//! address for tests) and holds no state of its own: every answer comes from the daemon.
//! Exit status: 0 success, 1 refused or failed (the message says why), 2 usage.
//!
//! The pure parts (argument parsing, the status table, the JSON document, the watch line and
//! the error messages) are plain functions so that the unit tests beside them cover them
//! without a bus. `args` declares the command line (clap), `bus` holds the proxies and the
//! connection, `status`, `requests` and `watch` are the commands; `generate` (tests only)
//! renders the shell completions and promctl(1) into `packaging/`.

mod args;
mod bus;
#[cfg(test)]
mod generate;
mod requests;
mod status;
mod watch;

use std::io::{self, Write};
use std::process::ExitCode;

use zbus::message::Type as MessageType;
use zbus::names::BusName;
use zbus::proxy::CacheProperties;
use zbus::{DBusError, MatchRule, MessageStream};

use args::Command;
use requests::{Action, request};
use status::status;
use watch::watch;

/// A refusal or failure: printed as `promctl: MESSAGE`, exit 1.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Failure(String);

fn print_line(line: &str) -> Result<(), Failure> {
    write_stdout(&format!("{line}\n"))
}

fn write_stdout(text: &str) -> Result<(), Failure> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        // A reader that went away (`| head`) is not promctl's failure.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure(format!("cannot write to stdout: {e}"))),
    }
}

/// The largest PROM/HAL configuration `import-prom` reads: real ones are a few KiB. A
/// larger input (a wrong path such as `/dev/zero`, a log file) is refused before it is read
/// whole, instead of filling memory.
const MAX_IMPORT_BYTES: u64 = 1 << 20;

/// Reads at most [`MAX_IMPORT_BYTES`] (+1, to tell a larger input) of `path` as UTF-8.
fn read_import(path: &str) -> Result<String, Failure> {
    use std::io::Read as _;
    let cannot = |e: io::Error| Failure(format!("cannot read {path}: {e}"));
    let file = std::fs::File::open(path).map_err(cannot)?;
    let mut bytes = Vec::new();
    file.take(MAX_IMPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    if bytes.len() as u64 > MAX_IMPORT_BYTES {
        return Err(Failure(format!(
            "{path}: larger than {} MiB: not a PROM/HAL configuration",
            MAX_IMPORT_BYTES >> 20
        )));
    }
    String::from_utf8(bytes).map_err(|e| Failure(format!("{path}: not UTF-8 text: {e}")))
}

/// Writes the migration; runs without D-Bus.
fn import_prom(config: &str, replica: &str, out: Option<&str>) -> Result<(), Failure> {
    let text = read_import(config)?;
    let m = promd::migrate::import_prom(&text, replica)
        .map_err(|e| Failure(format!("{config}: {e}")))?;
    let dir = std::path::Path::new(out.unwrap_or("."));
    let written = promd::migrate::write_files(dir, &m).map_err(|e| Failure(e.to_string()))?;
    let mut lines: Vec<String> = written
        .iter()
        .map(|p| format!("wrote {}", p.display()))
        .collect();
    lines.extend(m.notes.iter().cloned());
    lines.push(format!(
        "node {} of group {}: promd.toml goes to /etc/promd/, the units to /etc/systemd/system/",
        m.node, m.group
    ));
    print_line(&lines.join("\n"))
}

fn main() -> ExitCode {
    // Called back by the shell completions (packaging/completions/): answers and exits.
    clap_complete::CompleteEnv::with_factory(args::cli)
        .var(args::COMPLETE_VAR)
        .complete();

    let command = match args::parse(std::env::args_os()) {
        Ok(command) => command,
        // Help and the version (stdout, exit 0), or a usage error (stderr, exit 2).
        Err(e) => {
            let code = u8::try_from(e.exit_code()).unwrap_or(2);
            return match e.print() {
                // Help that cannot be written is a failure; a reader that went away is not.
                Err(io) if code == 0 && io.kind() != io::ErrorKind::BrokenPipe => {
                    fail(&format!("cannot write to stdout: {io}"))
                }
                _ => ExitCode::from(code),
            };
        }
    };

    if let Command::ImportProm {
        config,
        replica,
        out,
    } = &command
    {
        return match import_prom(config, replica, out.as_deref()) {
            Ok(()) => ExitCode::SUCCESS,
            Err(Failure(why)) => fail(&why),
        };
    }

    // One thread is plenty for a client, and keeps signal lines in arrival order trivially.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&format!("cannot start: {e}")),
    };
    let result = runtime.block_on(async {
        match command {
            Command::Status { group, json, brief } => status(group.as_deref(), json, brief).await,
            Command::Promote { group } => request(Action::Promote, &group).await,
            Command::Demote { group } => request(Action::Demote, &group).await,
            Command::Maintenance { group, on } => request(Action::Maintenance(on), &group).await,
            Command::Reset { group } => request(Action::Reset, &group).await,
            Command::Watch { json } => watch(json).await,
            Command::ImportProm { .. } => Ok(()), // handled above, without a bus
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(why)) => fail(&why),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("promctl: {why}");
    ExitCode::from(1)
}
