//! The systemd driver: starts and stops a group's units over systemd's D-Bus API and waits for
//! the job results; finds the closure of a role and binds it to promd with runtime drop-ins.
//!
//! Every call to systemd has a time limit ([`CALL_TIMEOUT`]), and every job wait survives a
//! lost `JobRemoved` signal (a `daemon-reload` or `daemon-reexec` in the middle): it reads the
//! unit's state when the job is gone.
//!
//! Hundreds of groups share one bus connection, and dbus-daemon refuses more than 128 calls
//! awaiting a reply per connection (`LimitsExceeded`, its `max_replies_per_connection`): calls
//! pass a gate of [`NORMAL_CALLS`] in flight, and the work of a fence (stops and kills, see
//! [`Systemd::urgent`]) a gate of its own of [`URGENT_CALLS`], so that it never queues behind
//! start-up reads. Jobs are gated too ([`ALL_JOBS`], of them [`NORMAL_JOBS`] outside a fence,
//! from the call that queues a job to its end): PID 1 adds a D-Bus match rule for the client of every job it
//! queues, dbus-daemon allows it 512 (`max_match_rules_per_connection`), and past that PID 1
//! drops its bus connection ("Got disconnect on API bus"), failing every call in flight.
//! Groups that change drop-ins at once share one `daemon-reload`
//! ([`Systemd::reload`]). A stop that systemd refuses (`RefuseManualStop=yes`) is
//! done by dependency instead; a unit that does not exist counts as stopped.

pub mod address;
pub mod closure;
pub mod dropin;
mod env;
pub mod listing;
pub mod reloads;
pub mod signals;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use futures_util::future::join_all;
use thiserror::Error;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use zbus::OwnedVariant;
use zbus::{Connection, OwnedObjectPath};
use zbus_systemd::systemd1::{ManagerProxy, UnitProxy};

use crate::config::Address;
use crate::sync::lock;
pub use closure::{Closure, Reach, UnitInfo, Walk};
use dropin::RUNTIME_UNIT_DIR;
pub use dropin::write_atomically;
pub use env::UnitEnv;

/// The unit promd runs as; the units it protects are bound to it.
pub const PROMD_UNIT: &str = "promd.service";

/// The longest any one D-Bus call to systemd may take. PID 1 answers in milliseconds; a
/// `daemon-reload` of a large system can hold it for seconds. Past this the call is an error
/// and the caller retries: a hung manager must not hang a group.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// Calls in flight on the connection at most, outside a fence's stops and kills. Together
/// with [`URGENT_CALLS`] and the signal hub's reads ([`signals::READS_IN_FLIGHT`]): 96, well
/// below dbus-daemon's default `max_replies_per_connection` (128), which other calls on the
/// connection (the org.promd1 service's, zbus's own) share. Kills expect no reply and pass no
/// gate ([`Systemd::kill`]).
pub const NORMAL_CALLS: usize = 48;

/// Calls in flight at most for a fence's stops and the walks that confirm them
/// ([`Systemd::urgent`]).
pub const URGENT_CALLS: usize = 24;

/// systemd jobs (start, stop, restart) promd has in flight at most, from the call that queues
/// one until its end. PID 1 tracks the client of each job it queues over D-Bus with a match
/// rule of its own (to tell it the result, and to forget it when it leaves), and dbus-daemon's
/// system bus allows PID 1's connection 512 match rules (`max_match_rules_per_connection`).
/// At 1,000 groups promd queued more jobs than that at start-up: PID 1 was refused a match
/// rule and dropped its bus connection, every call in flight failed with `NoReply`, and the
/// groups whose passive start failed that way stayed ineligible. Three quarters of the limit:
/// operators' `systemctl` and other clients keep the rest.
pub const ALL_JOBS: usize = 384;

/// Of [`ALL_JOBS`], the jobs in flight at most outside a fence's stops, so that a fence always
/// finds [`ALL_JOBS`] ` - NORMAL_JOBS` places free at once, and the rest as the other jobs
/// end. A fence's stops ([`Systemd::urgent`]) may take every place: a host that fences
/// hundreds of groups at once (cut off the store) has its stops confirmed by the hang
/// deadline only if PID 1 gets them in as few rounds as it can. With the fence held to 128
/// places, a cut host's 383 stops went to PID 1 in three rounds of 128, ~150 ms each, and the
/// last was confirmed past the hang deadline: its watchdog fired (docs/safety.md).
pub const NORMAL_JOBS: usize = 128;

/// A unit's object path under PID 1: `/org/freedesktop/systemd1/unit/` and the name with every
/// byte that is not a letter (or a digit, past the first) written `_xx` in lowercase hex, as
/// systemd's `bus_label_escape` does (`web-active.target` is `web_2dactive_2etarget`).
/// `None` only if that is no valid object path, which cannot happen.
pub fn unit_object_path(unit: &str) -> Option<OwnedObjectPath> {
    let mut label = String::with_capacity(unit.len() * 3);
    for (i, b) in unit.bytes().enumerate() {
        if b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()) {
            label.push(char::from(b));
        } else {
            label.push('_');
            label.push_str(&format!("{b:02x}"));
        }
    }
    if label.is_empty() {
        label.push('_');
    }
    OwnedObjectPath::try_from(format!("{}/{label}", signals::UNIT_PATHS)).ok()
}

/// A stop job systemd queued: the unit waited for (the stop's own, or the
/// `promd-stop-UNIT.target` that stops it by dependency) and the job; `None` when there was
/// nothing to stop. Holds the job's places until its result.
struct QueuedStop {
    _slot: JobSlot,
    job: Option<(String, OwnedObjectPath, JobKind)>,
}

/// The places a job in flight holds ([`Systemd::job_slot`]); dropping it frees them.
struct JobSlot {
    _normal: Option<tokio::sync::OwnedSemaphorePermit>,
    _all: Option<tokio::sync::OwnedSemaphorePermit>,
}

/// How often a job wait checks that its job still exists (a lost `JobRemoved` signal).
const JOB_POLL: Duration = Duration::from_secs(2);

/// The longest a job wait lasts; the unit's own timeouts end almost every job long before.
/// Past this the job counts as failed and the caller's retry (and kill) takes over.
pub const JOB_WAIT_LIMIT: Duration = Duration::from_secs(600);

const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";
const ONLY_BY_DEPENDENCY: &str = "org.freedesktop.systemd1.OnlyByDependency";
const NO_SUCH_PROCESS: &str = "org.freedesktop.systemd1.NoSuchProcess";

/// Why a call to systemd, a job or a drop-in failed. Callers log it and retry; none of them
/// is final for a group.
#[derive(Debug, Error)]
pub enum SystemdError {
    /// The D-Bus call failed or systemd answered with an error (e.g.
    /// `org.freedesktop.systemd1.NoSuchUnit`, which the callers that expect it handle).
    #[error("D-Bus: {0}")]
    Bus(#[from] zbus::Error),
    /// A start or stop job ended with a result other than `done` or `skipped`.
    #[error("job for {unit} ended with result {result:?}")]
    Job {
        /// The unit the job was for.
        unit: String,
        /// systemd's job result: `failed`, `canceled`, `timeout`, `dependency`, ...
        result: String,
    },
    /// A call took longer than [`CALL_TIMEOUT`], or a job longer than [`JOB_WAIT_LIMIT`].
    #[error("{what}: systemd did not answer within {limit:?}")]
    Timeout {
        /// The call (`StartUnit web.service`, ...) or job waited for.
        what: String,
        /// The limit that ran out.
        limit: Duration,
    },
    /// After [`Systemd::stop_all`], systemd still shows the unit as neither `inactive` nor
    /// `failed`.
    #[error("{unit} is still {state} after its stop")]
    StillRunning {
        /// The unit.
        unit: String,
        /// Its `ActiveState` after the stop.
        state: String,
    },
    /// A drop-in or another runtime file could not be written or removed.
    #[error("writing {path}: {error}")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The system's error.
        error: std::io::Error,
    },
    /// A `daemon-reload` shared by several callers failed (the reason in words: every
    /// caller gets its own copy).
    #[error("daemon-reload: {0}")]
    Reload(String),
    /// A `ListUnitsByNames` shared by several callers failed ([`listing`]; the reason in
    /// words, as for [`SystemdError::Reload`]).
    #[error("ListUnitsByNames: {0}")]
    Listed(String),
    /// The `JobRemoved` signal stream ended. Nothing returns it at present: job waits poll
    /// the job instead (see the module's documentation).
    #[error("the JobRemoved signal stream ended")]
    SignalsGone,
}

impl SystemdError {
    fn method_error(&self) -> Option<&str> {
        match self {
            SystemdError::Bus(zbus::Error::MethodError(name, _, _)) => Some(name.as_str()),
            _ => None,
        }
    }
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

/// What a job does to its unit, to judge its outcome from the unit's state if the job's
/// `JobRemoved` signal was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum JobKind {
    Start,
    Stop,
}

/// A request for a `daemon-reload`, answered once one that began after it has ended.
type ReloadRequest = oneshot::Sender<Result<(), String>>;

/// A connection to systemd (PID 1) on the system bus, following its `JobRemoved` signals so
/// that starts and stops can wait for their jobs. Cheap to clone; the clones share the
/// connection, the job table, the gates and the reloads.
#[derive(Clone)]
pub struct Systemd {
    manager: ManagerProxy<'static>,
    conn: Connection,
    jobs: Arc<Mutex<Jobs>>,
    /// The gate this handle's calls pass ([`NORMAL_CALLS`] or [`URGENT_CALLS`]).
    gate: Arc<Semaphore>,
    /// The other one, for [`Systemd::urgent`].
    urgent_gate: Arc<Semaphore>,
    /// The places for jobs outside a fence ([`NORMAL_JOBS`]), held from the call that
    /// queues a job until its end; `None` for [`Systemd::urgent`], whose jobs pass only
    /// [`Self::all_jobs`].
    job_gate: Option<Arc<Semaphore>>,
    /// The places for every job ([`ALL_JOBS`]), held as [`Self::job_gate`].
    all_jobs: Arc<Semaphore>,
    reloads: mpsc::UnboundedSender<ReloadRequest>,
    /// This handle's shared `ListUnitsByNames` ([`listing`]), through its call gate.
    lister: listing::Lister,
    /// The other one, for [`Systemd::urgent`].
    urgent_lister: listing::Lister,
    /// The binding drop-ins under [`RUNTIME_UNIT_DIR`], by group.
    bindings: Arc<Mutex<dropin::Bindings>>,
    /// promd's own reloads told apart from the others ([`reloads`]).
    reload_ends: reloads::Reloads,
}

impl Systemd {
    /// Connect to the system bus, subscribe to job signals and start following them.
    pub async fn connect() -> Result<Systemd, SystemdError> {
        let conn = Connection::system().await?;
        Systemd::on(conn).await
    }

    /// [`Systemd::connect`] on an existing connection (to share it with the D-Bus service, or
    /// a test's bus).
    pub async fn on(conn: Connection) -> Result<Systemd, SystemdError> {
        let manager = ManagerProxy::new(&conn).await?;
        let mut removed = manager.receive_job_removed().await?;
        let reload_ends = reloads::Reloads::default();
        follow_reloads(&manager, reload_ends.clone()).await?;
        // Before the first Subscribe, so that no return of PID 1 falls in between.
        resubscribe_on_return(conn.clone(), reload_ends.clone()).await?;
        timed("Subscribe", manager.subscribe()).await?;
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
            // Waiters see their sender dropped and fall back to reading the unit's state.
            lock(&dispatch).waiting.clear();
        });
        let normal_gate = Arc::new(Semaphore::new(NORMAL_CALLS));
        let (reloads, requests) = mpsc::unbounded_channel();
        tokio::spawn(reload_batches(
            conn.clone(),
            normal_gate.clone(),
            reload_ends.clone(),
            requests,
        ));
        let urgent_gate = Arc::new(Semaphore::new(URGENT_CALLS));
        let lister = lister_on(&manager, &normal_gate);
        let urgent_lister = lister_on(&manager, &urgent_gate);
        Ok(Systemd {
            manager,
            conn,
            jobs,
            gate: normal_gate,
            urgent_gate,
            lister,
            urgent_lister,
            job_gate: Some(Arc::new(Semaphore::new(NORMAL_JOBS))),
            all_jobs: Arc::new(Semaphore::new(ALL_JOBS)),
            reloads,
            bindings: Arc::new(Mutex::new(dropin::Bindings::new(RUNTIME_UNIT_DIR))),
            reload_ends,
        })
    }

    /// How many reloads of PID 1 so far promd did not cause itself (`systemctl
    /// daemon-reload`, and PID 1's returns to the bus): changes with each one, a few ms after
    /// it ended ([`reloads`]). promd's own reloads ([`Systemd::reload`]) do not move it.
    pub fn foreign_reloads(&self) -> watch::Receiver<u64> {
        self.reload_ends.foreign()
    }

    /// The count [`Systemd::foreign_reloads`] holds now ([`Closure::reloads`] of a walk that
    /// begins now).
    pub fn foreign_reloads_now(&self) -> u64 {
        self.reload_ends.foreign_now()
    }

    /// This connection for a fence's stops and kills: its calls pass a gate of their own
    /// ([`URGENT_CALLS`]), so hundreds of groups reading their units at start-up cannot delay
    /// them, and its jobs may take every place of [`ALL_JOBS`].
    pub fn urgent(&self) -> Systemd {
        let mut urgent = self.clone();
        urgent.gate = self.urgent_gate.clone();
        urgent.lister = self.urgent_lister.clone();
        urgent.job_gate = None;
        urgent
    }

    /// A place for one more job in flight ([`NORMAL_JOBS`] through a normal handle, then
    /// [`ALL_JOBS`]): held until the job has ended. The semaphores are never closed; were one
    /// closed, the job goes ahead without its place rather than failing a group.
    async fn job_slot(&self) -> JobSlot {
        // The normal place first: a start waiting for one holds none of the fence's.
        let normal = match &self.job_gate {
            Some(gate) => gate.clone().acquire_owned().await.ok(),
            None => None,
        };
        let all = self.all_jobs.clone().acquire_owned().await.ok();
        JobSlot {
            _normal: normal,
            _all: all,
        }
    }

    /// A call through this handle's gate, with [`CALL_TIMEOUT`] counted from the moment it
    /// passes the gate ([`gated`]).
    async fn timed<T>(
        &self,
        what: &str,
        call: impl Future<Output = zbus::Result<T>>,
    ) -> Result<T, SystemdError> {
        gated(&self.gate, what, call).await
    }

    /// `daemon-reload`, shared: callers that ask while none is under way share the next one;
    /// a caller that asks while one is under way waits for the one after it (its drop-ins may
    /// have been written after that one read the files). Returns once a reload that began
    /// after the request has ended.
    pub async fn reload(&self) -> Result<(), SystemdError> {
        let (tx, rx) = oneshot::channel();
        if self.reloads.send(tx).is_err() {
            // The batching task is gone (the runtime is shutting down): reload alone.
            return reload_once(&self.conn, &self.gate, &self.reload_ends).await;
        }
        match rx.await {
            Ok(result) => result.map_err(SystemdError::Reload),
            Err(_) => Err(SystemdError::Reload("the reload task ended".into())),
        }
    }

    /// Start a unit and wait for the job's result.
    pub async fn start(&self, unit: &str) -> Result<(), SystemdError> {
        let _slot = self.job_slot().await;
        let job = self
            .timed(
                &format!("StartUnit {unit}"),
                self.manager.start_unit(unit.to_string(), "replace".into()),
            )
            .await?;
        self.wait(unit, job, JobKind::Start).await
    }

    /// Stop a unit and wait until it is down, whatever stands in the way:
    /// - a unit systemd does not know (`Wants=` on a missing unit) is stopped already;
    /// - a unit with `RefuseManualStop=yes` is stopped by dependency (`promd-stop-UNIT.target`);
    /// - a job that ends `canceled`, `failed` or `timeout` is an error: the caller retries.
    pub async fn stop(&self, unit: &str) -> Result<(), SystemdError> {
        let queued = self.queue_stop(unit).await?;
        self.finish_stop(queued).await
    }

    /// The first half of [`Systemd::stop`]: the stop job queued (or nothing to queue), with
    /// its place held.
    async fn queue_stop(&self, unit: &str) -> Result<QueuedStop, SystemdError> {
        let slot = self.job_slot().await;
        let queued = self
            .timed(
                &format!("StopUnit {unit}"),
                self.manager.stop_unit(unit.to_string(), "replace".into()),
            )
            .await;
        let job = match queued {
            Ok(job) => Some((unit.to_string(), job, JobKind::Stop)),
            Err(e) if e.method_error() == Some(NO_SUCH_UNIT) => None,
            Err(e) if e.method_error() == Some(ONLY_BY_DEPENDENCY) => {
                if dropin::write_stop_unit(Path::new(RUNTIME_UNIT_DIR), unit)? {
                    self.reload().await?;
                }
                let by = dropin::stop_unit(unit);
                let job = self
                    .timed(
                        &format!("StartUnit {by}"),
                        self.manager.start_unit(by.clone(), "replace".into()),
                    )
                    .await?;
                Some((by, job, JobKind::Start))
            }
            Err(e) => return Err(e),
        };
        Ok(QueuedStop { _slot: slot, job })
    }

    /// The second half of [`Systemd::stop`]: the queued job's result.
    async fn finish_stop(&self, queued: QueuedStop) -> Result<(), SystemdError> {
        match queued.job {
            Some((unit, job, kind)) => self.wait(&unit, job, kind).await,
            None => Ok(()),
        }
    }

    /// SIGKILL every process of the unit: `KillUnit` sent with `NO_REPLY_EXPECTED`, so this
    /// returns once the call is written to the bus, and PID 1 carries it out whatever promd
    /// does from then on (the hang deadline moves later only then:
    /// `GroupMachine::hang_deadline`). No reply means no gate either: dbus-daemon counts
    /// only calls awaiting a reply against `max_replies_per_connection`, so the kills of
    /// hundreds of groups go out at once instead of queueing behind a fence's stops and walks
    /// (where 200 groups' kills, awaiting replies, reached PID 1 later than `KILL_ROOM`
    /// allows and the watchdog restarted promd). What PID 1 made of it (a unit without
    /// processes, one not loaded) is not known here: the stop's own check and the rekills
    /// judge by the units' states. Errors: the call could not be written in time.
    ///
    /// Assumed: PID 1 handles the call while promd still lives. systemd checks the sender's
    /// credentials when it handles a `KillUnit`, so a kill written by a promd that is dead by
    /// then is refused, unseen. A hung promd is killed by its watchdog no sooner than the
    /// lease's own hang deadline, which leaves PID 1 the fence load `F` and more after the
    /// kill (docs/safety.md); if PID 1 is slower still, `ExecStopPost=promd fence` kills
    /// with replies. `promd fence` itself awaits its replies for that reason ([`fence_all`]).
    pub async fn kill(&self, unit: &str) -> Result<(), SystemdError> {
        let sigkill = nix::sys::signal::Signal::SIGKILL as i32;
        let body = (unit, "all", sigkill);
        timed(
            &format!("KillUnit {unit}"),
            self.manager.inner().call_noreply("KillUnit", &body),
        )
        .await
    }

    async fn wait(
        &self,
        unit: &str,
        job: OwnedObjectPath,
        kind: JobKind,
    ) -> Result<(), SystemdError> {
        let mut rx = {
            let mut jobs = lock(&self.jobs);
            if let Some(result) = jobs.finished.remove(&job) {
                return job_result(unit, result);
            }
            let (tx, rx) = oneshot::channel();
            jobs.waiting.entry(job.clone()).or_default().push(tx);
            rx
        };
        let give_up = tokio::time::Instant::now() + JOB_WAIT_LIMIT;
        loop {
            tokio::select! {
                result = &mut rx => {
                    return match result {
                        Ok(result) => job_result(unit, result),
                        // The signal stream is gone: the unit's state is all there is to go by.
                        Err(_) => self.outcome_without_signal(unit, kind).await,
                    };
                }
                () = tokio::time::sleep(JOB_POLL) => {
                    if tokio::time::Instant::now() >= give_up {
                        self.forget(&job);
                        return Err(SystemdError::Timeout {
                            what: format!("job for {unit}"),
                            limit: JOB_WAIT_LIMIT,
                        });
                    }
                    if !self.job_gone(unit, &job).await {
                        continue;
                    }
                    // Give a signal in flight a moment, then judge by the unit's state.
                    if let Ok(Ok(result)) = tokio::time::timeout(Duration::from_millis(200), &mut rx).await {
                        return job_result(unit, result);
                    }
                    self.forget(&job);
                    return self.outcome_without_signal(unit, kind).await;
                }
            }
        }
    }

    fn forget(&self, job: &OwnedObjectPath) {
        lock(&self.jobs).waiting.remove(job);
    }

    /// Whether the job is no longer the unit's job (finished, its signal lost).
    async fn job_gone(&self, unit: &str, job: &OwnedObjectPath) -> bool {
        let Ok(proxy) = self.unit_proxy(unit).await else {
            return false;
        };
        match self.timed(&format!("Job of {unit}"), proxy.job()).await {
            Ok((0, _)) => true,
            Ok((_, path)) => path != *job,
            Err(_) => false,
        }
    }

    /// A finished job whose result signal was lost, judged by what the unit is now.
    async fn outcome_without_signal(&self, unit: &str, kind: JobKind) -> Result<(), SystemdError> {
        let state = self.active_state(unit).await?;
        let ok = match kind {
            JobKind::Stop => is_down(&state),
            JobKind::Start => is_up(&state),
        };
        if ok {
            tracing::info!("the result of the job for {unit} was lost; the unit is {state}");
            Ok(())
        } else {
            Err(SystemdError::Job {
                unit: unit.to_string(),
                result: format!("lost (the unit is {state})"),
            })
        }
    }

    async fn unit_proxy(&self, unit: &str) -> Result<UnitProxy<'static>, SystemdError> {
        let path = self.load(unit).await?;
        Ok(UnitProxy::builder(&self.conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?)
    }

    async fn load(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        self.timed(
            &format!("LoadUnit {unit}"),
            self.manager.load_unit(unit.to_string()),
        )
        .await
    }

    /// Every property of one interface of a loaded unit, in one call.
    async fn properties(
        &self,
        unit: &str,
        path: &OwnedObjectPath,
        interface: &'static str,
    ) -> Result<HashMap<String, OwnedVariant>, SystemdError> {
        let props = zbus::fdo::PropertiesProxy::builder(&self.conn)
            .destination("org.freedesktop.systemd1")
            .path(path.clone())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await?;
        let iface = zbus::names::InterfaceName::from_static_str(interface)?;
        self.timed(&format!("GetAll {unit}"), async {
            props.get_all(iface).await.map_err(zbus::Error::from)
        })
        .await
    }

    /// What the closure walk needs to know about a unit: one GetAll of its `Unit` interface,
    /// and for units with processes one of its type's interface. The unit's object path is
    /// its name escaped ([`unit_object_path`]); PID 1 loads a unit that a call on its path
    /// names, as `LoadUnit` would (`find_unit` in systemd's `dbus-unit.c`), which saves a
    /// call per unit: at a fence of hundreds of groups, each walk's calls go to PID 1 ahead
    /// of the stop jobs it has yet to run. Should that call fail, `LoadUnit` is asked for the
    /// path, as before.
    pub async fn unit_info(&self, unit: &str) -> Result<UnitInfo, SystemdError> {
        const UNIT: &str = "org.freedesktop.systemd1.Unit";
        let guessed = match unit_object_path(unit) {
            Some(path) => match self.properties(unit, &path, UNIT).await {
                Ok(props) => Some((path, props)),
                Err(_) => None,
            },
            None => None,
        };
        let (path, props) = match guessed {
            Some(found) => found,
            None => {
                let path = self.load(unit).await?;
                let props = self.properties(unit, &path, UNIT).await?;
                (path, props)
            }
        };
        let list = |key: &str| -> Vec<String> {
            props
                .get(key)
                .and_then(|v| Vec::<String>::try_from(v.clone()).ok())
                .unwrap_or_default()
        };
        let mut pulls = Vec::new();
        for key in [
            "Wants",
            "Requires",
            "Requisite",
            "BindsTo",
            "Upholds",
            "ConsistsOf",
        ] {
            pulls.extend(list(key));
        }
        let mut pulled_by = Vec::new();
        for key in [
            "WantedBy",
            "RequiredBy",
            "RequisiteOf",
            "BoundBy",
            "UpheldBy",
        ] {
            pulled_by.extend(list(key));
        }
        let text = |props: &HashMap<String, OwnedVariant>, key: &str| {
            props
                .get(key)
                .and_then(|v| String::try_from(v.clone()).ok())
                .unwrap_or_default()
        };
        let load_state = text(&props, "LoadState");
        let (mut runs_once, mut kill_mode, mut stop_commands) = (false, String::new(), 0);
        let interface = match unit.rsplit('.').next() {
            Some("service") => Some("org.freedesktop.systemd1.Service"),
            Some("socket") => Some("org.freedesktop.systemd1.Socket"),
            Some("mount") => Some("org.freedesktop.systemd1.Mount"),
            _ => None,
        };
        if let Some(interface) = interface
            && load_state == "loaded"
        {
            let typed = self.properties(unit, &path, interface).await?;
            kill_mode = text(&typed, "KillMode");
            let remain = typed
                .get("RemainAfterExit")
                .and_then(|v| bool::try_from(v.clone()).ok())
                .unwrap_or(false);
            runs_once = text(&typed, "Type") == "oneshot" && !remain;
            // Each an array of commands (`a(sasbttttuii)`); a mount always runs umount.
            let commands = |key: &str| match typed.get(key).map(|v| &**v) {
                Some(zbus::zvariant::Variant::Array(a)) => a.len(),
                _ => 0,
            };
            stop_commands = match interface {
                "org.freedesktop.systemd1.Service" => {
                    commands("ExecStop") + commands("ExecStopPost")
                }
                "org.freedesktop.systemd1.Socket" => {
                    commands("ExecStopPre") + commands("ExecStopPost")
                }
                _ => 1,
            };
        }
        Ok(UnitInfo {
            name: unit.to_string(),
            load_state,
            pulls,
            triggers: list("Triggers"),
            pulled_by,
            runs_once,
            kill_mode,
            stop_commands,
        })
    }

    async fn walk(&self, mut walk: Walk) -> Result<Closure, SystemdError> {
        while let Some(next) = walk.next().map(str::to_string) {
            let info = match self.unit_info(&next).await {
                Ok(info) => info,
                Err(e) if e.method_error() == Some(NO_SUCH_UNIT) => UnitInfo {
                    name: next.clone(),
                    load_state: "not-found".into(),
                    ..UnitInfo::default()
                },
                Err(e) => return Err(e),
            };
            walk.feed(info);
        }
        Ok(walk.finish())
    }

    /// The closure of a group's active target (see [`closure`]).
    pub async fn closure(&self, target: &str) -> Result<Closure, SystemdError> {
        let reloads = self.foreign_reloads_now();
        let mut closure = self.walk(Walk::role(target)).await?;
        closure.reloads = reloads;
        Ok(closure)
    }

    /// Clear a unit's failed state and start it again (promd's restart in place).
    pub async fn restart_failed(&self, unit: &str) -> Result<(), SystemdError> {
        // Not failed (any more) is fine: the start below is what matters. The reset also
        // clears the start rate limit that a crash loop would otherwise hit.
        let _ = self
            .timed(
                &format!("ResetFailedUnit {unit}"),
                self.manager.reset_failed_unit(unit.to_string()),
            )
            .await;
        let _slot = self.job_slot().await;
        let job = self
            .timed(
                &format!("RestartUnit {unit}"),
                self.manager
                    .restart_unit(unit.to_string(), "replace".into()),
            )
            .await?;
        self.wait(unit, job, JobKind::Start).await
    }

    /// The bus connection, for proxies of other systemd objects (units' properties).
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The `org.freedesktop.systemd1.Manager` proxy, for calls this driver does not wrap.
    pub fn manager(&self) -> &ManagerProxy<'static> {
        &self.manager
    }

    /// `ActiveState` of a unit (`active`, `inactive`, `failed`, ...); `inactive` for a unit
    /// systemd does not know.
    pub async fn active_state(&self, unit: &str) -> Result<String, SystemdError> {
        let proxy = match self.unit_proxy(unit).await {
            Ok(p) => p,
            Err(e) if e.method_error() == Some(NO_SUCH_UNIT) => return Ok("inactive".into()),
            Err(e) => return Err(e),
        };
        self.timed(&format!("ActiveState of {unit}"), proxy.active_state())
            .await
    }

    /// What systemd says of each of `units` now, in one call (`ListUnitsByNames`, which also
    /// answers for units that are not loaded: `inactive`): unit → (ActiveState, SubState,
    /// whether a job is queued). With hundreds of groups, one call per group instead of a
    /// LoadUnit and a Get per unit.
    pub async fn states(
        &self,
        units: &[String],
    ) -> Result<HashMap<String, UnitState>, SystemdError> {
        if units.is_empty() {
            return Ok(HashMap::new());
        }
        self.lister
            .list(units.to_vec())
            .await
            .map_err(SystemdError::Listed)
    }

    /// [`Systemd::not_up`] for the check right after the active target started: a unit that
    /// is `activating` only because it crashed and waits for systemd's `Restart=`
    /// (`SubState` `auto-restart`) did not come up either, though `ActiveState` says
    /// `activating`. Counting it up would let a service that crashes at every start read
    /// active.
    pub async fn not_up_after_start(&self, units: &[String]) -> Vec<(String, String)> {
        self.down_of(units, true).await
    }

    /// Which of `units` are not up (`active`, `activating` or `reloading`), with their state;
    /// a unit systemd cannot be asked about counts as not up.
    pub async fn not_up(&self, units: &[String]) -> Vec<(String, String)> {
        self.down_of(units, false).await
    }

    /// [`Systemd::not_up`], and with `auto_restart_is_down` [`Systemd::not_up_after_start`],
    /// in one call for all of `units` ([`Systemd::states`]): a take-over of hundreds of groups
    /// asked PID 1 four times per unit (a `LoadUnit` and a `Get` for each state) while it was
    /// busiest starting them.
    async fn down_of(&self, units: &[String], auto_restart_is_down: bool) -> Vec<(String, String)> {
        let states = match self.states(units).await {
            Ok(states) => states,
            Err(e) => {
                let why = e.to_string();
                return units.iter().map(|u| (u.clone(), why.clone())).collect();
            }
        };
        units
            .iter()
            .filter_map(|u| match states.get(u) {
                // Not listed: systemd does not know it, nothing runs.
                None => Some((u.clone(), "inactive".to_string())),
                Some(s) if !is_up(&s.active) => Some((u.clone(), s.active.clone())),
                Some(s) if auto_restart_is_down && s.sub == "auto-restart" => {
                    Some((u.clone(), "activating (auto-restart)".to_string()))
                }
                Some(_) => None,
            })
            .collect()
    }

    /// Stop every unit at once and wait for all; then check by systemd's own word that each
    /// is `inactive` or `failed`, and SIGKILL whatever process a unit left behind (a stopped
    /// unit may have left processes, `KillMode=process` before promd's drop-in applied: none
    /// may survive the hand-over). Units
    /// already down with no job queued are not asked to stop (at start-up, hundreds of
    /// groups check that nothing of a previous run is left: one call each, not one per
    /// unit). The first error is returned (after every stop was tried): the caller retries.
    pub async fn stop_all(&self, units: &[String]) -> Result<(), SystemdError> {
        self.stop_all_then(units, || ()).await
    }

    /// [`Systemd::stop_all`], calling `queued` once systemd has every stop job queued (or
    /// refused it), before their results: a caller that has more to ask of PID 1 asks it then,
    /// not ahead of the stops (PID 1 answers its bus before it runs its job queue).
    pub async fn stop_all_then(
        &self,
        units: &[String],
        queued: impl FnOnce(),
    ) -> Result<(), SystemdError> {
        let before = self.states(units).await.unwrap_or_default();
        let running: Vec<&String> = units
            .iter()
            .filter(|u| {
                before
                    .get(*u)
                    .is_none_or(|s| !is_down(&s.active) || s.job_queued)
            })
            .collect();
        let jobs = join_all(running.iter().map(|u| self.queue_stop(u))).await;
        queued();
        let stops = join_all(jobs.into_iter().map(|job| async {
            match job {
                Ok(job) => self.finish_stop(job).await,
                Err(e) => Err(e),
            }
        }))
        .await;
        let mut first_error = None;
        for (unit, result) in running.iter().zip(stops) {
            if let Err(e) = result {
                tracing::warn!("stopping {unit}: {e}");
                first_error.get_or_insert(e);
            }
        }
        // The kills first: they expect no reply and are written at once; the check then
        // goes out on the same connection, and PID 1 handles one sender's calls in order, so
        // its answer comes after every leftover process was signalled (none survives the
        // hand-over), still at the cost of one round trip.
        self.kill_all(units).await;
        let after = self.states(units).await;
        match after {
            Ok(after) => {
                for unit in units {
                    match after.get(unit) {
                        Some(s) if is_down(&s.active) => {}
                        Some(s) => {
                            first_error.get_or_insert(SystemdError::StillRunning {
                                unit: unit.clone(),
                                state: s.active.clone(),
                            });
                        }
                        // Not listed: systemd does not know it, nothing runs.
                        None => {}
                    }
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
        match first_error {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }

    /// SIGKILL every process of every unit, all at once; errors are logged. Units that have
    /// no processes of their own (targets, timers, paths) and address units are skipped
    /// ([`killable`]). Returns whether every kill was written to the bus ([`Systemd::kill`]):
    /// false if one could not be (timed out, the bus gone).
    pub async fn kill_all(&self, units: &[String]) -> bool {
        let units: Vec<String> = units.iter().filter(|u| killable(u)).cloned().collect();
        let units = &units[..];
        let kills = join_all(units.iter().map(|u| self.kill(u))).await;
        let mut delivered = true;
        for (unit, result) in units.iter().zip(kills) {
            if let Err(e) = result {
                tracing::error!("killing {unit}: {e}");
                delivered = false;
            }
        }
        delivered
    }

    /// Bind the active target and each unit of its closure to promd with a runtime drop-in
    /// (see [`dropin::binding_text`]; the kill settings are the ones the walk read), and
    /// unbind the group's units that left the closure; and keep the target loaded in PID 1
    /// ([`dropin::keep_text`]). Reloads systemd once if anything was added, changed or
    /// removed; returns whether it did.
    pub async fn bind_to_promd(
        &self,
        group: &str,
        target: &str,
        closure: &Closure,
    ) -> Result<bool, SystemdError> {
        let changed = {
            let mut bindings = lock(&self.bindings);
            let mut changed = false;
            let units = closure.with_target(target);
            // The group's address units come up after every other unit of the role and go
            // down first; the target pulls them in (and orders itself after them).
            let addresses: Vec<String> = units
                .iter()
                .filter(|u| u.starts_with(&address::group_prefix(group)))
                .cloned()
                .collect();
            for unit in &units {
                let kill_mode = closure.kill_modes.get(unit).map_or("", String::as_str);
                // Address units and the target itself are ordered by the target's own
                // drop-in; every other unit goes up before the addresses, down after them.
                let before: &[String] = if addresses.contains(unit) || unit == target {
                    &[]
                } else {
                    &addresses
                };
                changed |= bindings.bind(group, unit, kill_mode, before)?;
            }
            changed |= bindings.keep(group, target)?;
            changed | bindings.remove_except(group, &units)
        };
        if changed {
            self.reload().await?;
        }
        Ok(changed)
    }

    /// At start-up: keep every group's active target loaded in PID 1
    /// ([`dropin::keep_text`]) before the groups' first calls, with one `daemon-reload` in the
    /// background (none when the drop-in is there from an earlier run). `targets`: group →
    /// active target. A drop-in that cannot be written is logged; each group's first bind
    /// tries again.
    pub fn keep_loaded(&self, targets: BTreeMap<String, String>) {
        match lock(&self.bindings).keep_all(targets) {
            Ok(false) => {}
            Ok(true) => {
                let systemd = self.clone();
                tokio::spawn(async move {
                    if let Err(e) = systemd.reload().await {
                        tracing::warn!("daemon-reload for the groups' targets: {e}");
                    }
                });
            }
            Err(e) => tracing::warn!("keeping the groups' targets loaded: {e}"),
        }
    }

    /// Write `group`'s address units and the drop-in that pulls them into `target`
    /// ([`dropin::Bindings::addresses`]), and reload systemd if anything changed: before the
    /// group's closure is walked, so that the walk finds them and they are bound to promd like
    /// every unit of the role. Cheap when nothing changed (no reload, no folder read).
    pub async fn prepare_addresses(
        &self,
        group: &str,
        target: &str,
        addresses: &[Address],
    ) -> Result<(), SystemdError> {
        let promd = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/usr/bin/promd"));
        let changed = lock(&self.bindings).addresses(group, target, addresses, &promd)?;
        if changed {
            self.reload().await?;
        }
        Ok(())
    }

    /// Remove a group's drop-ins (the group was removed by a reload) and reload systemd.
    pub async fn unbind(&self, group: &str) -> Result<(), SystemdError> {
        let removed = lock(&self.bindings).remove(group);
        if removed {
            self.reload().await?;
        }
        Ok(())
    }
}

/// PID 1 on the bus, and its manager interface.
const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const ALREADY_SUBSCRIBED: &str = "org.freedesktop.systemd1.AlreadySubscribed";

/// How long promd waits at most between attempts to subscribe again.
const SUBSCRIBE_RETRY_MAX: Duration = Duration::from_secs(5);

/// Follow PID 1 leaving the bus and coming back (`NameOwnerChanged` of
/// `org.freedesktop.systemd1`) and subscribe to its signals again each time it is back.
///
/// PID 1 drops its bus connection when dbus-daemon refuses it a match rule ("Got disconnect on
/// API bus"; see [`ALL_JOBS`]) or dbus-daemon restarts, and reconnects at once; the
/// clients' `Subscribe()` are gone with the connection (a `daemon-reexec` keeps them), and
/// without one PID 1 sends no unit signal at all, and job signals only for the jobs a client
/// queued itself. promd would hear of no unit change any more: a crash neither restarted in
/// place nor failed over. After subscribing again every follower reads its unit's state anew
/// ([`signals::UnitSignals::resync`]): what changed in the gap was never signalled.
async fn resubscribe_on_return(
    conn: Connection,
    reloads: reloads::Reloads,
) -> Result<(), SystemdError> {
    // The rule the manager proxy follows its owner with: the connection adds it once.
    let rule = zbus::MatchRule::builder()
        .msg_type(zbus::message::Type::Signal)
        .sender("org.freedesktop.DBus")
        .path("/org/freedesktop/DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .arg(0, SYSTEMD)
        .build()?;
    let mut owners = timed(
        "AddMatch for systemd's NameOwnerChanged",
        zbus::MessageStream::for_match_rule(rule, &conn, None),
    )
    .await?;
    tokio::spawn(async move {
        while let Some(msg) = owners.next().await {
            let Ok(msg) = msg else { continue };
            let Ok((_, _, new)) = msg.body().deserialize::<(String, String, String)>() else {
                continue;
            };
            if new.is_empty() {
                tracing::warn!("systemd left the bus; waiting for it to come back");
                continue;
            }
            subscribe_again(&conn, &msg).await;
            // What PID 1 reloaded while it was away was never signalled.
            reloads.pid1_returned();
        }
    });
    Ok(())
}

/// `Subscribe()` to PID 1 again until it answers (a refusal because this connection is
/// subscribed still counts), then have every follower read its unit again.
async fn subscribe_again(conn: &Connection, back: &zbus::Message) {
    let mut wait = Duration::from_millis(100);
    loop {
        let call = conn.call_method(
            Some(SYSTEMD),
            SYSTEMD_PATH,
            Some(MANAGER_INTERFACE),
            "Subscribe",
            &(),
        );
        let position = match timed("Subscribe", call).await {
            Ok(reply) => reply.recv_position(),
            Err(e) if e.method_error() == Some(ALREADY_SUBSCRIBED) => back.recv_position(),
            Err(e) => {
                tracing::warn!("subscribing to systemd's signals again: {e}; retrying in {wait:?}");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(SUBSCRIBE_RETRY_MAX);
                continue;
            }
        };
        signals::UnitSignals::resync(conn, position).await;
        tracing::info!("systemd is back on the bus: subscribed to its signals again");
        return;
    }
}

/// Follow the ends of PID 1's reloads (`Reloading(false)`), for [`reloads`] to tell promd's
/// own from the others. The stream follows PID 1 to its new bus name when it comes back (as
/// `JobRemoved`'s does); the signals come again once promd has subscribed again
/// ([`resubscribe_on_return`], which counts the gap as a foreign reload).
async fn follow_reloads(
    manager: &ManagerProxy<'static>,
    reloads: reloads::Reloads,
) -> Result<(), SystemdError> {
    let mut signals = timed(
        "AddMatch for systemd's Reloading",
        manager.receive_reloading(),
    )
    .await?;
    tokio::spawn(async move {
        while let Some(signal) = signals.next().await {
            match signal.args() {
                Ok(args) if !args.active => reloads.ended(signal.message().recv_position()),
                Ok(_) => {}
                Err(e) => tracing::debug!("a Reloading signal that cannot be read: {e}"),
            }
        }
        tracing::warn!("systemd's Reloading signals ended (the bus connection closed)");
    });
    Ok(())
}

/// One `daemon-reload` of promd's own, through `gate`, counted in `reloads` from the moment
/// it is sent (not while it waits at the gate) until its reply, whose place on the connection
/// tells its `Reloading(false)` apart from the others'.
async fn reload_once(
    conn: &Connection,
    gate: &Arc<Semaphore>,
    reloads: &reloads::Reloads,
) -> Result<(), SystemdError> {
    gated(gate, "Reload", async {
        // Dropped unanswered (an error, or `gated`'s timeout drops this future), it leaves
        // the reload to count as foreign: a walk too many rather than one missed.
        let ours = reloads.sent();
        let reply = conn
            .call_method(
                Some(SYSTEMD),
                SYSTEMD_PATH,
                Some(MANAGER_INTERFACE),
                "Reload",
                &(),
            )
            .await?;
        ours.answered(reply.recv_position());
        Ok(())
    })
    .await
}

/// A [`listing::Lister`] whose calls pass `gate`.
fn lister_on(manager: &ManagerProxy<'static>, gate: &Arc<Semaphore>) -> listing::Lister {
    let (manager, gate) = (manager.clone(), gate.clone());
    listing::Lister::spawn(move |names: Vec<String>| {
        let (manager, gate) = (manager.clone(), gate.clone());
        async move {
            let listed = gated(
                &gate,
                "ListUnitsByNames",
                manager.list_units_by_names(names),
            )
            .await
            .map_err(|e| e.to_string())?;
            Ok(listed
                .into_iter()
                .map(|(name, _, _, active, sub, _, _, job, _, _)| {
                    let state = UnitState {
                        active,
                        sub,
                        job_queued: job != 0,
                    };
                    (name, state)
                })
                .collect())
        }
    })
}

/// Carry out reload requests in batches: wait for one, take every request queued by then,
/// reload once, answer them all. Ends when every [`Systemd`] handle is gone.
async fn reload_batches(
    conn: Connection,
    gate: Arc<Semaphore>,
    reloads: reloads::Reloads,
    mut requests: mpsc::UnboundedReceiver<ReloadRequest>,
) {
    while let Some(first) = requests.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = requests.try_recv() {
            batch.push(more);
        }
        let result = reload_once(&conn, &gate, &reloads)
            .await
            .map_err(|e| e.to_string());
        if batch.len() > 1 {
            tracing::debug!("one daemon-reload for {} requests", batch.len());
        }
        for tx in batch {
            let _ = tx.send(result.clone());
        }
    }
}

/// Whether promd's kills (a fence's deadline, `promd fence`) SIGKILL `unit`: a unit of a kind
/// that has processes, but not a floating address's unit. Its processes are `ip` and `promd
/// announce`/`refuse`, and it ends its address in `ExecStopPost=ip address del`: a SIGKILL
/// landing on that `ip` before its one netlink request could leave the address on this host
/// while another host takes it. Its stop is systemd's (a stop job, or `BindsTo=` when promd
/// dies) and takes two short commands; killing it could only prevent the delete, never hasten
/// it (docs/safety.md, "Floating addresses").
pub fn killable(unit: &str) -> bool {
    closure::has_processes(unit) && !address::is_address_unit(unit)
}

/// `KillUnit(unit, "all", SIGKILL)`: true if systemd signalled something, false for a unit
/// with nothing to kill (not loaded, or no process left).
async fn kill_unit(
    gate: &Arc<Semaphore>,
    manager: &ManagerProxy<'_>,
    unit: &str,
) -> Result<bool, SystemdError> {
    let sigkill = nix::sys::signal::Signal::SIGKILL as i32;
    match gated(
        gate,
        &format!("KillUnit {unit}"),
        manager.kill_unit(unit.to_string(), "all".into(), sigkill),
    )
    .await
    {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.method_error(), Some(NO_SUCH_UNIT | NO_SUCH_PROCESS)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// A unit's state as `ListUnitsByNames` tells it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UnitState {
    /// `ActiveState`: `active`, `inactive`, `failed`, `activating`, ...
    pub active: String,
    /// `SubState`: `running`, `dead`, `auto-restart`, ...
    pub sub: String,
    /// A job is queued for the unit (a start or stop on its way).
    pub job_queued: bool,
}

/// Whether a unit in this `ActiveState` runs, or is on its way to (the role is up).
pub fn is_up(state: &str) -> bool {
    matches!(state, "active" | "activating" | "reloading")
}

/// Whether a unit in this `ActiveState` is down by systemd's own word (a stop is done).
pub fn is_down(state: &str) -> bool {
    matches!(state, "inactive" | "failed")
}

/// How long dbus-daemon waits for the reply to a call before it ends the call itself (its
/// default `reply_timeout`). Until then a call that promd stopped waiting for still counts
/// against the connection's 128 pending replies.
const BUS_REPLY_TIMEOUT: Duration = Duration::from_secs(25);

/// A D-Bus call through `gate`, with [`CALL_TIMEOUT`] counted from the moment it passes the
/// gate (is sent), not while it waits there: counted from the wait, at 1,000 groups (some
/// 15,000 calls at start-up) calls timed out in the queue, their groups' stops failed and were
/// retried with more calls, and 899 groups had not settled after 360 s (11 once the wait no
/// longer counted). A queued call waits for a permit, which every call in flight returns
/// within [`BUS_REPLY_TIMEOUT`]; what bounds the units' life is the core's fence and kill
/// deadlines and the watchdog, not a call's timeout. A call that times out keeps its place at
/// the gate until dbus-daemon has surely ended it ([`BUS_REPLY_TIMEOUT`] after it was sent):
/// at 1,000 groups a slow systemd let calls time out, their permits went to new calls while
/// the bus still counted the old ones, and hundreds of calls failed with `LimitsExceeded`,
/// each failure retried.
pub(crate) async fn gated<T>(
    gate: &Arc<Semaphore>,
    what: &str,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<T, SystemdError> {
    // The semaphore is never closed, so acquire cannot fail; were it closed, the call goes
    // ahead ungated rather than failing a group.
    let permit = gate.clone().acquire_owned().await.ok();
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => {
            if let Some(permit) = permit {
                tokio::spawn(async move {
                    tokio::time::sleep(BUS_REPLY_TIMEOUT.saturating_sub(CALL_TIMEOUT)).await;
                    drop(permit);
                });
            }
            Err(SystemdError::Timeout {
                what: what.to_string(),
                limit: CALL_TIMEOUT,
            })
        }
    }
}

/// A D-Bus call with [`CALL_TIMEOUT`].
async fn timed<T>(
    what: &str,
    call: impl Future<Output = zbus::Result<T>>,
) -> Result<T, SystemdError> {
    match tokio::time::timeout(CALL_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(SystemdError::Timeout {
            what: what.to_string(),
            limit: CALL_TIMEOUT,
        }),
    }
}

fn job_result(unit: &str, result: String) -> Result<(), SystemdError> {
    // `skipped` is a start job whose Condition failed: the job is done, and the caller
    // checks what runs.
    if result == "done" || result == "skipped" {
        Ok(())
    } else {
        Err(SystemdError::Job {
            unit: unit.to_string(),
            result,
        })
    }
}

/// `promd fence`: SIGKILL every unit bound to promd, at once. promd.service runs it as
/// `ExecStopPost=`, so that when promd dies (kill -9, watchdog, OOM, panic) no unit of a role
/// outlives it by more than the time this takes, however long its own stop would drain.
/// After a clean stop everything is down already and this finds nothing to kill.
pub async fn fence_all() -> Result<Vec<String>, SystemdError> {
    let mut units = dropin::bound_units(Path::new(RUNTIME_UNIT_DIR));
    units.retain(|u| killable(u));
    if units.is_empty() {
        return Ok(units);
    }
    let conn = timed("connecting to the system bus", Connection::system()).await?;
    let manager = ManagerProxy::new(&conn).await?;
    // All at once, but no more in flight than dbus-daemon takes from one connection: with
    // hundreds of groups, the calls past its limit were refused (`LimitsExceeded`) and those
    // units were not killed.
    let gate = Arc::new(Semaphore::new(NORMAL_CALLS + URGENT_CALLS));
    let kills: Vec<_> =
        futures_util::stream::iter(units.iter().map(|u| kill_unit(&gate, &manager, u)))
            .buffered(NORMAL_CALLS + URGENT_CALLS)
            .collect()
            .await;
    let mut killed = Vec::new();
    for (unit, result) in units.into_iter().zip(kills) {
        match result {
            Ok(true) => killed.push(unit),
            Ok(false) => {}
            Err(e) => crate::logging::stderr_lines(
                crate::logging::Priority::Error,
                &format!("promd fence: killing {unit}: {e}"),
            ),
        }
    }
    Ok(killed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unit_object_paths_are_escaped_as_systemd_escapes_them() {
        let path = |u: &str| unit_object_path(u).map(|p| p.as_str().to_string());
        assert_eq!(
            path("web-active.target").as_deref(),
            Some("/org/freedesktop/systemd1/unit/web_2dactive_2etarget")
        );
        // A digit is kept past the first byte only; `_`, `@` and `\` are escaped too.
        assert_eq!(
            path(r"9db_main@a\x2db.service").as_deref(),
            Some("/org/freedesktop/systemd1/unit/_39db_5fmain_40a_5cx2db_2eservice")
        );
        assert_eq!(
            path("").as_deref(),
            Some("/org/freedesktop/systemd1/unit/_")
        );
    }
}
