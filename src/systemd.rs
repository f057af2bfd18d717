//! The systemd driver: starts and stops a group's targets over systemd's D-Bus API and waits
//! for the job results; binds the units a target pulls in to promd, so that they stop when
//! promd stops or dies.

use std::collections::{HashMap, VecDeque};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use thiserror::Error;
use tokio::sync::oneshot;
use zbus::Connection;
use zbus::OwnedObjectPath;
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

/// The unit promd runs as; the units it protects are bound to it.
pub const PROMD_UNIT: &str = "promd.service";

/// Where runtime drop-ins live: gone on reboot, like the state they describe.
const RUNTIME_UNIT_DIR: &str = "/run/systemd/system";

#[derive(Debug, Error)]
pub enum SystemdError {
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    #[error("job for {unit} ended with result {result:?}")]
    Job { unit: String, result: String },
    #[error("writing {path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("the JobRemoved signal stream ended")]
    SignalsGone,
}

/// Results of finished jobs that nobody waited for yet (the signal can beat the method reply).
const FINISHED_KEPT: usize = 512;

#[derive(Default)]
struct Jobs {
    /// systemd merges identical jobs: several callers can wait for one job path.
    waiting: HashMap<OwnedObjectPath, Vec<oneshot::Sender<String>>>,
    finished: HashMap<OwnedObjectPath, String>,
    finished_order: VecDeque<OwnedObjectPath>,
}

#[derive(Clone)]
pub struct Systemd {
    manager: ManagerProxy<'static>,
    conn: Connection,
    jobs: Arc<Mutex<Jobs>>,
}

impl Systemd {
    /// Connect to the system bus, subscribe to job signals and start following them.
    pub async fn connect() -> Result<Systemd, SystemdError> {
        let conn = Connection::system().await?;
        Systemd::on(conn).await
    }

    pub async fn on(conn: Connection) -> Result<Systemd, SystemdError> {
        let manager = ManagerProxy::new(&conn).await?;
        let mut removed = manager.receive_job_removed().await?;
        manager.subscribe().await?;
        let jobs: Arc<Mutex<Jobs>> = Arc::default();
        let dispatch = jobs.clone();
        tokio::spawn(async move {
            while let Some(signal) = removed.next().await {
                let Ok(args) = signal.args() else { continue };
                let (path, result) = (args.job, args.result);
                let mut jobs = lock(&dispatch);
                if let Some(waiters) = jobs.waiting.remove(&path) {
                    for tx in waiters {
                        let _ = tx.send(result.clone());
                    }
                } else {
                    jobs.finished.insert(path.clone(), result);
                    jobs.finished_order.push_back(path);
                    while jobs.finished_order.len() > FINISHED_KEPT {
                        if let Some(old) = jobs.finished_order.pop_front() {
                            jobs.finished.remove(&old);
                        }
                    }
                }
            }
            // Waiters see their sender dropped and report SignalsGone.
            lock(&dispatch).waiting.clear();
        });
        Ok(Systemd {
            manager,
            conn,
            jobs,
        })
    }

    /// Start a unit and wait for the job's result.
    pub async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        let job = self
            .manager
            .start_unit(unit.to_string(), "replace".into())
            .await?;
        self.wait(unit, job).await
    }

    /// Stop a unit and wait for the job's result.
    pub async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        let job = self
            .manager
            .stop_unit(unit.to_string(), "replace".into())
            .await?;
        self.wait(unit, job).await
    }

    /// SIGKILL every process of the unit. A unit with nothing running is not an error.
    pub async fn kill(&self, unit: &str) -> Result<(), SystemdError> {
        match self
            .manager
            .kill_unit(unit.to_string(), "all".into(), libc_sigkill())
            .await
        {
            Ok(()) => Ok(()),
            Err(zbus::Error::MethodError(name, _, _))
                if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit"
                    || name.as_str() == "org.freedesktop.systemd1.NoSuchProcess" =>
            {
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn wait(&self, unit: &str, job: OwnedObjectPath) -> Result<(), SystemdError> {
        let rx = {
            let mut jobs = lock(&self.jobs);
            if let Some(result) = jobs.finished.get(&job) {
                return job_result(unit, result.clone());
            }
            let (tx, rx) = oneshot::channel();
            jobs.waiting.entry(job).or_default().push(tx);
            rx
        };
        match rx.await {
            Ok(result) => job_result(unit, result),
            Err(_) => Err(SystemdError::SignalsGone),
        }
    }

    /// The units a target pulls in (`Wants=`, `Requires=`, `BindsTo=`, and those `PartOf=` it),
    /// less the ones a demotion must not stop: promd itself and system plumbing (slices,
    /// devices, mounts, swaps, other targets).
    pub async fn pulled_in(&self, target: &str) -> Result<Vec<String>, SystemdError> {
        let path = self.manager.load_unit(target.to_string()).await?;
        let unit = UnitProxy::builder(&self.conn).path(path).build().await?;
        let mut all = unit.wants().await?;
        all.extend(unit.requires().await?);
        all.extend(unit.binds_to().await?);
        all.extend(unit.consists_of().await?);
        all.sort();
        all.dedup();
        all.retain(|u| protected_unit(u));
        Ok(all)
    }

    /// Clear a unit's failed state and start it again (promd's restart in place).
    pub async fn restart_failed(&self, unit: &str) -> Result<(), SystemdError> {
        // Not failed (any more) is fine: the start below is what matters.
        let _ = self.manager.reset_failed_unit(unit.to_string()).await;
        let job = self
            .manager
            .restart_unit(unit.to_string(), "replace".into())
            .await?;
        self.wait(unit, job).await
    }

    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// `ActiveState` of a unit (`active`, `inactive`, `failed`, ...).
    pub async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        let path = self.manager.load_unit(unit.to_string()).await?;
        let unit = UnitProxy::builder(&self.conn).path(path).build().await?;
        Ok(unit.active_state().await?)
    }

    /// Bind each unit to promd with a runtime drop-in, so that a stopped, crashed or
    /// watchdog-killed promd takes the active units down with it. Reloads systemd only if a
    /// drop-in was added or changed.
    pub async fn bind_to_promd(&self, group: &str, units: &[String]) -> Result<bool, SystemdError> {
        let mut changed = false;
        for unit in units {
            changed |= write_binding(Path::new(RUNTIME_UNIT_DIR), group, unit)?;
        }
        if changed {
            self.manager.reload().await?;
        }
        Ok(changed)
    }
}

fn lock(jobs: &Mutex<Jobs>) -> std::sync::MutexGuard<'_, Jobs> {
    // A poisoned lock only means a panic elsewhere mid-update of plain maps: keep going.
    jobs.lock().unwrap_or_else(|p| p.into_inner())
}

fn job_result(unit: &str, result: String) -> Result<(), SystemdError> {
    if result == "done" {
        Ok(())
    } else {
        Err(SystemdError::Job {
            unit: unit.to_string(),
            result,
        })
    }
}

fn libc_sigkill() -> i32 {
    nix::sys::signal::Signal::SIGKILL as i32
}

/// Units a demotion stops: everything but promd and system plumbing.
fn protected_unit(unit: &str) -> bool {
    const PLUMBING: [&str; 6] = [
        ".slice",
        ".device",
        ".mount",
        ".automount",
        ".swap",
        ".target",
    ];
    unit != PROMD_UNIT && !PLUMBING.iter().any(|s| unit.ends_with(s))
}

/// The drop-in that ties a protected unit's life to promd's. `After=` makes a stop of promd
/// stop the unit first (the reverse of the start order).
fn binding_text(group: &str) -> String {
    format!(
        "# Written by promd for group {group}: this unit must not outlive promd.\n\
         [Unit]\nBindsTo={PROMD_UNIT}\nAfter={PROMD_UNIT}\n"
    )
}

/// Write `UNIT.d/50-promd-GROUP.conf` under `dir` atomically; true if it changed.
fn write_binding(dir: &Path, group: &str, unit: &str) -> Result<bool, SystemdError> {
    let unit_dir = dir.join(format!("{unit}.d"));
    let path = unit_dir.join(format!("50-promd-{group}.conf"));
    let text = binding_text(group);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    write_atomically(&path, text.as_bytes())?;
    Ok(true)
}

/// Write a file so that readers see the old or the new content, never a mix.
pub fn write_atomically(path: &Path, content: &[u8]) -> Result<(), SystemdError> {
    let io = |error| SystemdError::Io {
        path: path.to_path_buf(),
        error,
    };
    let dir = path.parent().unwrap_or(Path::new("/"));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = path.with_extension("promd-tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io)?;
    f.write_all(content).map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

/// What a group's units see in `/run/promd/GROUP.env` (for `EnvironmentFile=-`).
pub struct UnitEnv<'a> {
    pub group: &'a str,
    pub node: &'a str,
    pub role: &'a str,
    pub term: u64,
    pub leader: &'a str,
}

impl UnitEnv<'_> {
    pub fn render(&self) -> String {
        format!(
            "PROMD_GROUP={}\nPROMD_NODE={}\nPROMD_ROLE={}\nPROMD_TERM={}\nPROMD_LEADER={}\n",
            self.group, self.node, self.role, self.term, self.leader
        )
    }

    pub fn write(&self, run_dir: &Path) -> Result<(), SystemdError> {
        write_atomically(
            &run_dir.join(format!("{}.env", self.group)),
            self.render().as_bytes(),
        )
    }
}

/// Keep the time budget of a systemd call bounded: a hung manager must not hang a group.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(90);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plumbing_and_promd_are_never_stopped() {
        for u in [
            "promd.service",
            "system.slice",
            "dev-sda.device",
            "srv.mount",
            "network-online.target",
        ] {
            assert!(!protected_unit(u), "{u}");
        }
        for u in [
            "web.service",
            "web.socket",
            "web-rotate.timer",
            "web@1.service",
        ] {
            assert!(protected_unit(u), "{u}");
        }
    }

    #[test]
    fn bindings_are_written_once_and_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert!(write_binding(dir.path(), "web", "web.service").unwrap());
        assert!(
            !write_binding(dir.path(), "web", "web.service").unwrap(),
            "unchanged: no reload"
        );
        let text =
            std::fs::read_to_string(dir.path().join("web.service.d/50-promd-web.conf")).unwrap();
        assert!(text.contains("BindsTo=promd.service\n") && text.contains("After=promd.service\n"));
        assert!(
            !dir.path()
                .join("web.service.d/50-promd-web.promd-tmp")
                .exists()
        );
    }

    #[test]
    fn env_file_has_every_variable() {
        let dir = tempfile::tempdir().unwrap();
        let env = UnitEnv {
            group: "web",
            node: "a",
            role: "active",
            term: 42,
            leader: "a",
        };
        env.write(dir.path()).unwrap();
        let text = std::fs::read_to_string(dir.path().join("web.env")).unwrap();
        assert_eq!(
            text,
            "PROMD_GROUP=web\nPROMD_NODE=a\nPROMD_ROLE=active\nPROMD_TERM=42\nPROMD_LEADER=a\n"
        );
    }
}
