//! The etcd backend: one lease, one watch and one connection per group.
//!
//! Keys, under `PREFIX/GROUP/`:
//! - `leader`: a [`LeaderRecord`] bound to the holder's lease; the term is the key's
//!   create revision, which etcd makes unique and increasing across the cluster;
//! - `members/NODE`: a [`MemberRecord`] bound to that node's lease;
//! - `switchover`: a [`SwitchoverRecord`] bound to the requester's lease;
//! - `maintenance`: a [`MaintenanceRecord`] bound to no lease: it outlives the node that set
//!   it. Maintenance off is the key's absence.
//!
//! Each group runs one task ([`GroupTask`]) that alternates between two phases:
//! *offline*, where it connects (endpoints in the configured order), makes sure it holds a
//! live lease, reads the group's keys and starts a watch; and *online*, where it renews the
//! lease, follows the watch and carries out commands. Every network call has a timeout and
//! runs as a future polled from the task's one `select!` loop, so the loop turns (and beats
//! its [`Progress`](super::Progress)) at least every half renew interval whatever the network
//! does, and a slow command never delays a renewal.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, KeyValue,
    LeaseKeepAliveStream, LeaseKeeper, PutOptions, Txn, TxnOp, WatchOptions, WatchStream,
};
use tokio::sync::mpsc;
use tokio::time::{MissedTickBehavior, timeout};
use tracing::{debug, info, warn};

use super::record::{self, LeaderRecord, MaintenanceRecord, MemberRecord, SwitchoverRecord};
use super::{GroupSession, GroupSpec, Leader, Store, StoreCommand, StoreEvent, UNREADABLE_NODE};

/// A store of groups in an etcd cluster (v3 API).
pub struct EtcdStore {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    prefix: String,
}

impl EtcdStore {
    /// `endpoints` are tried in this order, each for at most `connect_timeout`; `prefix` is
    /// the key prefix of every group (a trailing `/` is ignored).
    pub fn new(endpoints: Vec<String>, connect_timeout: Duration, prefix: String) -> EtcdStore {
        EtcdStore {
            endpoints,
            connect_timeout,
            prefix,
        }
    }
}

impl Store for EtcdStore {
    fn open_group(
        &self,
        spec: GroupSpec,
        index: usize,
        events: mpsc::UnboundedSender<(usize, StoreEvent)>,
    ) -> GroupSession {
        let (commands, rx) = mpsc::unbounded_channel();
        let renew = spec.renew_interval().max(MIN_RENEW);
        let cfg = Arc::new(Connector {
            endpoints: self.endpoints.clone(),
            connect_timeout: self.connect_timeout,
            call_timeout: renew,
            ttl_secs: ttl_secs(spec.lease),
            keys: Keys::new(&self.prefix, &spec.group, &spec.node),
        });
        let task = GroupTask {
            renew,
            spec,
            index,
            events,
            commands: rx,
            cfg,
            lease: None,
            member: None,
            queue: VecDeque::new(),
            maintenance: None,
            down_reported: false,
        };
        tokio::spawn(task.run());
        GroupSession { commands }
    }
}

/// Floor for the renew interval (and thus every call timeout), so that a tiny lease cannot
/// turn the task into a busy loop. Config refuses leases under 1s, so this never binds there.
const MIN_RENEW: Duration = Duration::from_millis(100);

/// The longest a graceful shutdown waits for each of its two calls.
const SHUTDOWN_CALL_TIMEOUT: Duration = Duration::from_secs(1);

/// The longest pause between two rounds of connection attempts.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(1);

/// etcd leases are whole seconds: round *up*, so the store never expires the key before the
/// lease the timing argument counts with. (etcd may raise it further to its minimum TTL,
/// 1.5 election timeouts; that only makes standbys wait longer.)
fn ttl_secs(lease: Duration) -> i64 {
    let secs = lease.as_secs() + u64::from(lease.subsec_nanos() > 0);
    i64::try_from(secs.max(1)).unwrap_or(i64::MAX)
}

#[derive(Debug, Clone)]
struct Keys {
    /// `PREFIX/GROUP/`: the trailing slash keeps group `web` from seeing group `web2`.
    group: String,
    leader: String,
    switchover: String,
    maintenance: String,
    /// This node's member key.
    member: String,
}

impl Keys {
    fn new(prefix: &str, group: &str, node: &str) -> Keys {
        let group = format!("{}/{group}/", prefix.trim_end_matches('/'));
        Keys {
            leader: format!("{group}leader"),
            switchover: format!("{group}switchover"),
            maintenance: format!("{group}maintenance"),
            member: format!("{group}members/{node}"),
            group,
        }
    }
}

/// What the connecting side of a task needs; shared with the futures it spawns.
#[derive(Debug)]
struct Connector {
    endpoints: Vec<String>,
    connect_timeout: Duration,
    /// Timeout of every request once connected: one renew interval.
    call_timeout: Duration,
    ttl_secs: i64,
    keys: Keys,
}

/// Why a call failed, as far as the task's next step is concerned.
#[derive(Debug)]
enum CallError {
    /// etcd says our lease does not exist (expired or revoked).
    LeaseGone,
    /// Anything else: timeout, broken connection, no leader, ... The outcome of a write is
    /// unknown; the task reconnects.
    Broken(String),
}

fn lease_gone(e: &etcd_client::Error) -> bool {
    match e {
        // etcd: rpctypes.ErrGRPCLeaseNotFound, "etcdserver: requested lease not found".
        etcd_client::Error::GRpcStatus(s) => s.message().contains("requested lease not found"),
        // etcd-client's answer when the first keepalive of a stream says TTL 0.
        etcd_client::Error::LeaseKeepAliveError(m) => m.contains("lease not found"),
        _ => false,
    }
}

/// Run `fut` for at most `limit`, classifying the failure.
async fn call<T>(
    what: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if lease_gone(&e) => Err(CallError::LeaseGone),
        Ok(Err(e)) => Err(CallError::Broken(format!("{what}: {e}"))),
        Err(_) => Err(CallError::Broken(format!(
            "{what}: no answer within {limit:?}"
        ))),
    }
}

fn broken(e: CallError) -> String {
    match e {
        CallError::LeaseGone => "lease not found".to_string(),
        CallError::Broken(reason) => reason,
    }
}

/// Connect to the first endpoint, in the configured order, that answers a linearizable read
/// within the connect timeout. The read (not just a TCP connect) is what proves the member
/// can serve us: a member cut off from its quorum accepts connections but cannot answer it,
/// and `require_leader` makes it say so at once instead of hanging.
async fn connect(cfg: &Connector) -> Result<Client, String> {
    if cfg.endpoints.is_empty() {
        return Err("no etcd endpoints configured".to_string());
    }
    let mut errors = Vec::new();
    for endpoint in &cfg.endpoints {
        // No per-request timeout in the options: tonic would apply it to the streams too.
        // Every call below carries its own.
        let options = ConnectOptions::new()
            .with_connect_timeout(cfg.connect_timeout)
            .with_require_leader(true);
        let attempt = async {
            let mut client = Client::connect([endpoint.as_str()], Some(options)).await?;
            client
                .get(
                    cfg.keys.leader.as_str(),
                    Some(GetOptions::new().with_count_only()),
                )
                .await?;
            Ok::<_, etcd_client::Error>(client)
        };
        match timeout(cfg.connect_timeout, attempt).await {
            Ok(Ok(client)) => return Ok(client),
            Ok(Err(e)) => errors.push(format!("{endpoint}: {e}")),
            Err(_) => errors.push(format!(
                "{endpoint}: no answer within {:?}",
                cfg.connect_timeout
            )),
        }
    }
    Err(errors.join("; "))
}

/// A connection with a live lease, a snapshot of the group and a watch from that snapshot.
struct Session {
    client: Client,
    lease: i64,
    keeper: LeaseKeeper,
    renewals: LeaseKeepAliveStream,
    /// Send time of the keepalive that opened `renewals` (answered with TTL > 0).
    renewed_at: Instant,
    /// The lease we had is gone and `lease` is a new one.
    lost: bool,
    /// The member record written under `lease`, if any.
    published: Option<MemberRecord>,
    snapshot: Vec<KeyValue>,
    watch: WatchStream,
}

/// Why [`establish`] failed, and what it learned about the lease on the way.
struct Failure {
    reason: String,
    /// The lease to use from now on (a new one may have been granted before the failure).
    lease: Option<i64>,
    /// etcd said the lease we had is gone.
    lost: bool,
}

/// Everything the offline phase does, as one future that owns its inputs (so the task can
/// answer commands while it runs): connect unless `reuse` is given, keep `lease` if etcd
/// still has it or grant a new one, write the member record, read the group, watch it.
async fn establish(
    cfg: Arc<Connector>,
    reuse: Option<Client>,
    lease: Option<i64>,
    member: Option<MemberRecord>,
) -> Result<Session, Failure> {
    let t = cfg.call_timeout;
    let mut lost = false;
    let mut current = lease;
    let fail = |reason: String, lease: Option<i64>, lost: bool| Failure {
        reason,
        lease,
        lost,
    };

    let client = match reuse {
        Some(client) => client,
        None => connect(&cfg).await.map_err(|r| fail(r, current, false))?,
    };
    let mut leases = client.lease_client();

    // After a short cut the lease may well be alive: keep it (and so the leader key).
    let mut opened = None;
    if let Some(id) = current {
        let sent_at = Instant::now();
        match call("lease keepalive", t, leases.keep_alive(id)).await {
            Ok((keeper, renewals)) => opened = Some((id, keeper, renewals, sent_at)),
            Err(CallError::LeaseGone) => {
                lost = true;
                current = None;
            }
            Err(CallError::Broken(r)) => return Err(fail(r, current, lost)),
        }
    }
    let (id, keeper, renewals, renewed_at) = match opened {
        Some(opened) => opened,
        None => {
            let granted = call("lease grant", t, leases.grant(cfg.ttl_secs, None))
                .await
                .map_err(|e| fail(broken(e), current, lost))?;
            let id = granted.id();
            current = Some(id);
            debug!(
                group = %cfg.keys.group,
                lease = id,
                ttl = granted.ttl(),
                "etcd lease granted"
            );
            // Open the keepalive stream right away; its first answer is a renewal too.
            let sent_at = Instant::now();
            let (keeper, renewals) = call("lease keepalive", t, leases.keep_alive(id))
                .await
                .map_err(|e| fail(broken(e), current, lost))?;
            (id, keeper, renewals, sent_at)
        }
    };

    let mut kv = client.kv_client();
    if let Some(rec) = &member {
        let put = kv.put(
            cfg.keys.member.as_str(),
            record::encode(rec),
            Some(PutOptions::new().with_lease(id)),
        );
        call("publish member record", t, put)
            .await
            .map_err(|e| fail(broken(e), current, lost))?;
    }

    let (snapshot, watch) = read_and_watch(&client, &cfg.keys, t)
        .await
        .map_err(|r| fail(r, current, lost))?;
    Ok(Session {
        client,
        lease: id,
        keeper,
        renewals,
        renewed_at,
        lost,
        published: member,
        snapshot,
        watch,
    })
}

/// Read the group's keys with one range request and watch them from just after it, so that
/// no change falls between the two.
async fn read_and_watch(
    client: &Client,
    keys: &Keys,
    t: Duration,
) -> Result<(Vec<KeyValue>, WatchStream), String> {
    let mut kv = client.kv_client();
    let get = kv.get(keys.group.as_str(), Some(GetOptions::new().with_prefix()));
    let mut read = call("read group", t, get).await.map_err(broken)?;
    let revision = read
        .header()
        .map(|h| h.revision())
        .ok_or("read group: answer without a header")?;

    let mut watches = client.watch_client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let mut watch = call(
        "watch group",
        t,
        watches.watch(keys.group.as_str(), Some(options)),
    )
    .await
    .map_err(broken)?;
    // etcd confirms a watch before it sends events; only then is the watch known to be live.
    match timeout(t, watch.message()).await {
        Ok(Ok(Some(r))) if r.created() && !r.canceled() => {}
        Ok(Ok(Some(r))) => {
            return Err(format!(
                "watch group: refused ({})",
                if r.cancel_reason().is_empty() {
                    "canceled"
                } else {
                    r.cancel_reason()
                }
            ));
        }
        Ok(Ok(None)) => return Err("watch group: stream closed".to_string()),
        Ok(Err(e)) => return Err(format!("watch group: {e}")),
        Err(_) => return Err(format!("watch group: not confirmed within {t:?}")),
    }
    Ok((read.take_kvs(), watch))
}

/// A command that needs the store, queued until the task can carry it out.
#[derive(Debug, Clone)]
enum Op {
    Campaign(LeaderRecord),
    Release { term: u64 },
    Publish(MemberRecord),
    PutSwitchover(SwitchoverRecord),
    ClearSwitchover,
    SetMaintenance(MaintenanceRecord),
}

enum Done {
    Campaigned(Option<u64>),
    Released,
    Written,
}

type OpFuture = Pin<Box<dyn Future<Output = (Op, Result<Done, CallError>)> + Send>>;

/// Start one command as a future that owns what it needs.
fn start_op(op: Op, client: &Client, lease: i64, cfg: &Connector) -> OpFuture {
    let mut kv = client.kv_client();
    let t = cfg.call_timeout;
    let keys = cfg.keys.clone();
    Box::pin(async move {
        let result = match &op {
            Op::Campaign(rec) => {
                // The key is free iff it was never created (or deleted since): create
                // revision 0. The put's revision becomes the key's create revision: the term.
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        keys.leader.as_str(),
                        CompareOp::Equal,
                        0,
                    )])
                    .and_then([TxnOp::put(
                        keys.leader.as_str(),
                        record::encode(rec),
                        Some(PutOptions::new().with_lease(lease)),
                    )])
                    .or_else([TxnOp::get(keys.leader.as_str(), None)]);
                call("campaign", t, kv.txn(txn)).await.map(|r| {
                    let revision = r.header().map(|h| h.revision());
                    match (r.succeeded(), revision.and_then(|v| u64::try_from(v).ok())) {
                        (true, Some(term)) => Done::Campaigned(Some(term)),
                        // Cannot happen (etcd always sends a header); the watch will show
                        // the key as ours and the core releases a key it does not know.
                        _ => Done::Campaigned(None),
                    }
                })
            }
            Op::Release { term } => {
                let term = i64::try_from(*term).unwrap_or(i64::MAX);
                let txn = Txn::new()
                    .when([Compare::create_revision(
                        keys.leader.as_str(),
                        CompareOp::Equal,
                        term,
                    )])
                    .and_then([TxnOp::delete(keys.leader.as_str(), None)]);
                // Deleted, or not ours (any more): either way it is no longer ours.
                call("release", t, kv.txn(txn))
                    .await
                    .map(|_| Done::Released)
            }
            Op::Publish(rec) => {
                let put = kv.put(
                    keys.member.as_str(),
                    record::encode(rec),
                    Some(PutOptions::new().with_lease(lease)),
                );
                call("publish member record", t, put)
                    .await
                    .map(|_| Done::Written)
            }
            Op::PutSwitchover(rec) => {
                let put = kv.put(
                    keys.switchover.as_str(),
                    record::encode(rec),
                    Some(PutOptions::new().with_lease(lease)),
                );
                call("request switchover", t, put)
                    .await
                    .map(|_| Done::Written)
            }
            Op::ClearSwitchover => {
                let delete = kv.delete(keys.switchover.as_str(), None);
                call("clear switchover", t, delete)
                    .await
                    .map(|_| Done::Written)
            }
            Op::SetMaintenance(rec) => set_maintenance(&mut kv, &keys, rec, t)
                .await
                .map(|()| Done::Written),
        };
        (op, result)
    })
}

/// Maintenance on: put the record, bound to no lease (it outlives this node). Off: delete the
/// key, whatever it holds (a corrupt value too: that is how an operator clears one).
async fn set_maintenance(
    kv: &mut etcd_client::KvClient,
    keys: &Keys,
    rec: &MaintenanceRecord,
    t: Duration,
) -> Result<(), CallError> {
    if rec.on {
        let put = kv.put(keys.maintenance.as_str(), record::encode(rec), None);
        call("set maintenance", t, put).await.map(drop)
    } else {
        let delete = kv.delete(keys.maintenance.as_str(), None);
        call("clear maintenance", t, delete).await.map(drop)
    }
}

/// Await an optional future; never completes if there is none (for `select!`).
async fn maybe<F: Future + Unpin>(f: &mut Option<F>) -> F::Output {
    match f {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

/// The next message of the watch, if there is one; never completes otherwise.
async fn next_watch(
    watch: &mut Option<WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match watch {
        Some(w) => w.message().await,
        None => std::future::pending().await,
    }
}

type ResyncFuture =
    Pin<Box<dyn Future<Output = Result<(Vec<KeyValue>, WatchStream), String>> + Send>>;

/// The group's keys as last read or watched.
#[derive(Debug, Default)]
struct View {
    leader: Option<Leader>,
    members: BTreeMap<String, MemberRecord>,
    switchover: Option<SwitchoverRecord>,
    maintenance: Option<MaintenanceRecord>,
}

/// Which parts of the [`View`] a batch of changes touched.
#[derive(Debug, Default, Clone, Copy)]
struct Touched {
    leader: bool,
    members: bool,
    switchover: bool,
    maintenance: bool,
}

impl Touched {
    const ALL: Touched = Touched {
        leader: true,
        members: true,
        switchover: true,
        maintenance: true,
    };
}

/// How the online phase ended.
enum Exit {
    /// Shutdown done, or nobody listens any more.
    End,
    /// The connection is not trusted any more; reconnect (and keep the lease if it lives).
    Down(String),
    /// etcd says the lease is gone; the connection itself is fine.
    LeaseLost(Box<Client>),
}

struct GroupTask {
    spec: GroupSpec,
    index: usize,
    events: mpsc::UnboundedSender<(usize, StoreEvent)>,
    commands: mpsc::UnboundedReceiver<StoreCommand>,
    cfg: Arc<Connector>,
    renew: Duration,
    /// The lease we hold (or held, until etcd says it is gone).
    lease: Option<i64>,
    /// The last member record the runtime published: re-written under every new lease.
    member: Option<MemberRecord>,
    /// Commands waiting for the store, in order.
    queue: VecDeque<Op>,
    /// The last maintenance change asked for and not yet known to be written (queued or in
    /// flight): a graceful shutdown writes it before it leaves.
    maintenance: Option<MaintenanceRecord>,
    /// `Down` was sent and no `Up` since.
    down_reported: bool,
}

impl GroupTask {
    fn emit(&self, event: StoreEvent) {
        // A closed receiver ends the task at its next turn (see `listening`).
        let _ = self.events.send((self.index, event));
    }

    fn listening(&self) -> bool {
        !self.events.is_closed()
    }

    fn beat_ticker(&self) -> tokio::time::Interval {
        let mut beat = tokio::time::interval(self.renew / 2);
        beat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        beat
    }

    async fn run(mut self) {
        let mut reuse = None;
        loop {
            let Some(session) = self.offline(reuse.take()).await else {
                return;
            };
            match self.online(session).await {
                Exit::End => return,
                Exit::Down(reason) => self.went_down(reason),
                Exit::LeaseLost(client) => {
                    self.lease_lost();
                    reuse = Some(*client);
                }
            }
        }
    }

    fn went_down(&mut self, reason: String) {
        warn!(group = %self.spec.group, %reason, "etcd store down");
        self.down_reported = true;
        self.emit(StoreEvent::Down(reason));
        // Commands that need a live store: a campaign cannot win while it is down.
        self.answer_campaigns();
    }

    fn answer_campaigns(&mut self) {
        for op in std::mem::take(&mut self.queue) {
            match op {
                Op::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
                other => self.queue.push_back(other),
            }
        }
    }

    /// Every key bound to the lease went with it: answer what depended on it.
    fn lease_lost(&mut self) {
        info!(group = %self.spec.group, "etcd lease lost");
        self.lease = None;
        self.emit(StoreEvent::LeaseLost);
        for op in std::mem::take(&mut self.queue) {
            match op {
                Op::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
                // Our leader key was bound to the lost lease: it is gone.
                Op::Release { .. } => self.emit(StoreEvent::Released),
                other => self.queue.push_back(other),
            }
        }
    }

    /// A command while no session is up. Returns false if the task must end.
    fn offline_command(&mut self, command: StoreCommand) -> bool {
        match command {
            StoreCommand::Campaign(_) => self.emit(StoreEvent::Campaigned(None)),
            StoreCommand::Publish(rec) => self.member = Some(rec),
            StoreCommand::Release { term } => self.queue.push_back(Op::Release { term }),
            StoreCommand::RequestSwitchover(rec) => self.queue.push_back(Op::PutSwitchover(rec)),
            StoreCommand::ClearSwitchover => self.queue.push_back(Op::ClearSwitchover),
            StoreCommand::SetMaintenance(rec) => self.set_maintenance(rec),
            // Nothing to clean up that etcd would hear about; the lease expires on its own.
            StoreCommand::Shutdown => {
                if let Some(rec) = &self.maintenance {
                    warn!(group = %self.spec.group, on = rec.on, "etcd unreachable at shutdown; maintenance change not written");
                }
                return false;
            }
        }
        true
    }

    /// Offline phase: retry [`establish`] until it succeeds, answering commands meanwhile.
    /// `None` means the task must end.
    async fn offline(&mut self, mut reuse: Option<Client>) -> Option<Session> {
        let mut beat = self.beat_ticker();
        loop {
            let attempt = establish(
                self.cfg.clone(),
                reuse.take(),
                self.lease,
                self.member.clone(),
            );
            tokio::pin!(attempt);
            let result = loop {
                self.spec.progress.beat();
                if !self.listening() {
                    return None;
                }
                tokio::select! {
                    result = &mut attempt => break result,
                    command = self.commands.recv() => {
                        if !command.is_some_and(|c| self.offline_command(c)) {
                            return None;
                        }
                    }
                    _ = beat.tick() => {}
                }
            };
            let failure = match result {
                Ok(session) => return Some(session),
                Err(failure) => failure,
            };
            if failure.lost {
                self.lease_lost();
            }
            // Possibly a lease granted before the failure: the next attempt keeps it.
            self.lease = failure.lease;
            if self.down_reported {
                debug!(group = %self.spec.group, reason = %failure.reason, "etcd still unreachable");
            } else {
                self.went_down(failure.reason);
            }
            let retry_at = tokio::time::Instant::now() + self.renew.min(MAX_RETRY_DELAY);
            loop {
                self.spec.progress.beat();
                if !self.listening() {
                    return None;
                }
                tokio::select! {
                    _ = tokio::time::sleep_until(retry_at) => break,
                    command = self.commands.recv() => {
                        if !command.is_some_and(|c| self.offline_command(c)) {
                            return None;
                        }
                    }
                    _ = beat.tick() => {}
                }
            }
        }
    }

    /// Online phase: renew, follow the watch, carry out commands one at a time.
    async fn online(&mut self, session: Session) -> Exit {
        let Session {
            client,
            lease,
            mut keeper,
            mut renewals,
            renewed_at,
            lost,
            published,
            snapshot,
            watch,
        } = session;
        if lost {
            // Learned while connecting: the keys bound to the old lease are gone.
            self.lease_lost();
        }
        self.lease = Some(lease);
        self.down_reported = false;
        info!(group = %self.spec.group, lease, "etcd store up");
        self.emit(StoreEvent::Up);
        self.emit(StoreEvent::Renewed {
            sent_at: renewed_at,
        });
        let mut view = View::default();
        self.apply_snapshot(&mut view, &snapshot);
        if self.member.is_some() && self.member != published {
            // Published while we were connecting.
            self.queue.extend(self.member.clone().map(Op::Publish));
        }

        let mut watch = Some(watch);
        let mut resync: Option<ResyncFuture> = None;
        let mut inflight: Option<OpFuture> = None;
        // A keepalive in flight: its send time. Only one at a time, so answers pair up.
        let mut outstanding: Option<Instant> = None;
        let mut next_renewal = renewed_at + self.renew;
        let mut beat = self.beat_ticker();

        loop {
            self.spec.progress.beat();
            if !self.listening() {
                return Exit::End;
            }
            if inflight.is_none()
                && let Some(op) = self.queue.pop_front()
            {
                inflight = Some(start_op(op, &client, lease, &self.cfg));
            }
            // Either the next renewal is due, or the one in flight has run out of time.
            let timer = outstanding.map_or(next_renewal, |sent| sent + self.renew);

            tokio::select! {
                command = self.commands.recv() => match command {
                    // The runtime is gone without a shutdown: do not revoke. Its units may
                    // still run; the lease must run out before anyone else may take over.
                    None => return Exit::End,
                    Some(StoreCommand::Shutdown) => {
                        drop(inflight);
                        self.shutdown(&client, lease).await;
                        return Exit::End;
                    }
                    Some(StoreCommand::Publish(rec)) => {
                        self.member = Some(rec.clone());
                        self.queue.push_back(Op::Publish(rec));
                    }
                    Some(StoreCommand::Campaign(rec)) => self.queue.push_back(Op::Campaign(rec)),
                    Some(StoreCommand::Release { term }) => {
                        self.queue.push_back(Op::Release { term })
                    }
                    Some(StoreCommand::RequestSwitchover(rec)) => {
                        self.queue.push_back(Op::PutSwitchover(rec))
                    }
                    Some(StoreCommand::ClearSwitchover) => self.queue.push_back(Op::ClearSwitchover),
                    Some(StoreCommand::SetMaintenance(rec)) => self.set_maintenance(rec),
                },

                (op, result) = maybe(&mut inflight) => {
                    inflight = None;
                    match result {
                        Ok(Done::Campaigned(term)) => {
                            if let Some(term) = term {
                                info!(group = %self.spec.group, term, "won the leader key");
                            }
                            self.emit(StoreEvent::Campaigned(term));
                        }
                        Ok(Done::Released) => self.emit(StoreEvent::Released),
                        Ok(Done::Written) => {
                            if let Op::SetMaintenance(rec) = op
                                && self.maintenance.as_ref() == Some(&rec)
                            {
                                self.maintenance = None;
                            }
                        }
                        Err(CallError::LeaseGone) => {
                            // A write with a dead lease changes nothing (etcd rejects the
                            // whole transaction): a campaign lost; the rest is redone.
                            self.requeue(op);
                            return Exit::LeaseLost(Box::new(client));
                        }
                        Err(CallError::Broken(reason)) => {
                            self.requeue(op);
                            return Exit::Down(reason);
                        }
                    }
                }

                _ = tokio::time::sleep_until(timer.into()) => {
                    if outstanding.is_some() {
                        return Exit::Down(format!(
                            "lease keepalive not answered within {:?}",
                            self.renew
                        ));
                    }
                    // The send time is taken *before* the request leaves: the store can only
                    // have renewed the lease after it.
                    let sent = Instant::now();
                    if let Err(e) = keeper.keep_alive().await {
                        return Exit::Down(format!("lease keepalive: {e}"));
                    }
                    outstanding = Some(sent);
                    next_renewal = sent + self.renew;
                }

                answer = renewals.message() => match answer {
                    Ok(Some(answer)) => {
                        let Some(sent_at) = outstanding.take() else {
                            debug!(group = %self.spec.group, "unexpected keepalive answer");
                            continue;
                        };
                        if answer.ttl() > 0 {
                            self.emit(StoreEvent::Renewed { sent_at });
                        } else {
                            return Exit::LeaseLost(Box::new(client));
                        }
                    }
                    Ok(None) => return Exit::Down("lease keepalive stream closed".to_string()),
                    Err(e) => return Exit::Down(format!("lease keepalive: {e}")),
                },

                message = next_watch(&mut watch) => {
                    match message {
                        Ok(Some(response)) if response.canceled() => {
                            // Compacted past our revision, or canceled by etcd: read again.
                            warn!(
                                group = %self.spec.group,
                                compact_revision = response.compact_revision(),
                                reason = response.cancel_reason(),
                                "etcd watch canceled; reading the group again"
                            );
                            watch = None;
                            let client = client.clone();
                            let keys = self.cfg.keys.clone();
                            let t = self.cfg.call_timeout;
                            resync = Some(Box::pin(async move {
                                read_and_watch(&client, &keys, t).await
                            }));
                        }
                        Ok(Some(response)) => {
                            let mut touched = Touched::default();
                            for event in response.events() {
                                let Some(kv) = event.kv() else { continue };
                                match event.event_type() {
                                    EventType::Put => self.absorb(&mut view, kv, &mut touched),
                                    EventType::Delete => self.forget(&mut view, kv, &mut touched),
                                }
                            }
                            self.report(&view, touched);
                        }
                        Ok(None) => return Exit::Down("watch stream closed".to_string()),
                        Err(e) => return Exit::Down(format!("watch: {e}")),
                    }
                }

                result = maybe(&mut resync) => {
                    resync = None;
                    match result {
                        Ok((snapshot, new_watch)) => {
                            self.apply_snapshot(&mut view, &snapshot);
                            watch = Some(new_watch);
                        }
                        Err(reason) => return Exit::Down(reason),
                    }
                }

                _ = beat.tick() => {}
            }
        }
    }

    /// Put back a command the connection failed under; `went_down` / `lease_lost` then answer
    /// what cannot wait for the next session.
    fn requeue(&mut self, op: Op) {
        match op {
            // Re-written from `self.member` by the next `establish`.
            Op::Publish(_) => {}
            // A campaign is answered "not won": the txn was rejected (dead lease), or its
            // outcome is unknown. Should it have won after all, the key shows up as ours at the
            // next read, and the core releases an own key it does not hold.
            other => self.queue.push_front(other),
        }
    }

    /// Queue a maintenance change; only the newest one asked for matters.
    fn set_maintenance(&mut self, rec: MaintenanceRecord) {
        self.queue.retain(|op| !matches!(op, Op::SetMaintenance(_)));
        self.maintenance = Some(rec.clone());
        self.queue.push_back(Op::SetMaintenance(rec));
    }

    async fn shutdown(&mut self, client: &Client, lease: i64) {
        let t = self.renew.min(SHUTDOWN_CALL_TIMEOUT);
        let mut kv = client.kv_client();
        // A maintenance change asked for just before the stop is the operator's, not this
        // node's: it must not go with the node.
        if let Some(rec) = self.maintenance.take()
            && let Err(e) = set_maintenance(&mut kv, &self.cfg.keys, &rec, t).await
        {
            warn!(group = %self.spec.group, on = rec.on, error = %broken(e), "maintenance change not written at shutdown");
        }
        if let Err(e) = call(
            "delete member record",
            t,
            kv.delete(self.cfg.keys.member.as_str(), None),
        )
        .await
        {
            debug!(group = %self.spec.group, error = %broken(e), "shutdown");
        }
        // Revoking deletes every key bound to the lease at once (the leader key too, should the
        // runtime not have released it): the hand-over does not wait for the lease to run out.
        let mut leases = client.lease_client();
        match call("revoke lease", t, leases.revoke(lease)).await {
            Ok(_) | Err(CallError::LeaseGone) => {
                info!(group = %self.spec.group, "etcd lease revoked")
            }
            Err(e) => {
                warn!(group = %self.spec.group, error = %broken(e), "etcd lease not revoked; it expires on its own")
            }
        }
    }

    /// Replace the view with a fresh read and report all of it.
    fn apply_snapshot(&self, view: &mut View, snapshot: &[KeyValue]) {
        *view = View::default();
        let mut touched = Touched::default();
        for kv in snapshot {
            self.absorb(view, kv, &mut touched);
        }
        self.report(view, Touched::ALL);
    }

    fn report(&self, view: &View, touched: Touched) {
        if touched.leader {
            self.emit(StoreEvent::Leader(view.leader.clone()));
        }
        if touched.members {
            self.emit(StoreEvent::Members(
                view.members.values().cloned().collect(),
            ));
        }
        if touched.switchover {
            self.emit(StoreEvent::Switchover(view.switchover.clone()));
        }
        if touched.maintenance {
            self.emit(StoreEvent::Maintenance(view.maintenance.clone()));
        }
    }

    fn corrupt(&self, key: &str, error: String) {
        warn!(group = %self.spec.group, key, %error, "corrupt value in etcd ignored");
        self.emit(StoreEvent::Corrupt {
            key: key.to_string(),
            error,
        });
    }

    /// Take in a key's current value.
    fn absorb(&self, view: &mut View, kv: &KeyValue, touched: &mut Touched) {
        let key = String::from_utf8_lossy(kv.key());
        match self.classify(&key) {
            Slot::Leader => {
                touched.leader = true;
                let term = u64::try_from(kv.create_revision()).unwrap_or(0);
                let node = match record::decode::<LeaderRecord>(kv.value()) {
                    Ok(rec) => rec.node,
                    Err(e) => {
                        // Still a leader: nobody may campaign while the key exists.
                        self.corrupt(&key, e.to_string());
                        UNREADABLE_NODE.to_string()
                    }
                };
                view.leader = Some(Leader { node, term });
            }
            Slot::Member(node) => {
                touched.members = true;
                view.members.remove(node);
                match record::decode::<MemberRecord>(kv.value()) {
                    Ok(rec) if rec.node == node => {
                        view.members.insert(node.to_string(), rec);
                    }
                    Ok(rec) => self.corrupt(
                        &key,
                        format!("the record names node {:?}, the key {node:?}", rec.node),
                    ),
                    Err(e) => self.corrupt(&key, e.to_string()),
                }
            }
            Slot::Switchover => {
                touched.switchover = true;
                view.switchover = match record::decode::<SwitchoverRecord>(kv.value()) {
                    Ok(rec) => Some(rec),
                    Err(e) => {
                        self.corrupt(&key, e.to_string());
                        None
                    }
                };
            }
            Slot::Maintenance => {
                touched.maintenance = true;
                view.maintenance = match record::decode::<MaintenanceRecord>(kv.value()) {
                    Ok(rec) => Some(rec),
                    Err(e) => {
                        // The safe reading: on, so nothing acts until someone looks.
                        self.corrupt(&key, e.to_string());
                        Some(unreadable_maintenance())
                    }
                };
            }
            Slot::Other => {}
        }
    }

    /// Take in a key's deletion.
    fn forget(&self, view: &mut View, kv: &KeyValue, touched: &mut Touched) {
        let key = String::from_utf8_lossy(kv.key());
        match self.classify(&key) {
            Slot::Leader => {
                touched.leader = true;
                view.leader = None;
            }
            Slot::Member(node) => {
                touched.members = true;
                view.members.remove(node);
            }
            Slot::Switchover => {
                touched.switchover = true;
                view.switchover = None;
            }
            Slot::Maintenance => {
                touched.maintenance = true;
                view.maintenance = None;
            }
            Slot::Other => {}
        }
    }

    fn classify<'k>(&self, key: &'k str) -> Slot<'k> {
        match key.strip_prefix(self.cfg.keys.group.as_str()) {
            Some("leader") => Slot::Leader,
            Some("switchover") => Slot::Switchover,
            Some("maintenance") => Slot::Maintenance,
            Some(rest) => match rest.strip_prefix("members/") {
                Some(node) if !node.is_empty() => Slot::Member(node),
                // Keys of a later version, or someone else's: not ours to judge.
                _ => Slot::Other,
            },
            None => Slot::Other,
        }
    }
}

enum Slot<'k> {
    Leader,
    Member(&'k str),
    Switchover,
    Maintenance,
    Other,
}

/// How an unreadable maintenance value is reported: on, set by nobody known.
fn unreadable_maintenance() -> MaintenanceRecord {
    MaintenanceRecord {
        v: record::FORMAT_VERSION,
        on: true,
        by: UNREADABLE_NODE.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_is_the_lease_rounded_up_to_whole_seconds() {
        assert_eq!(ttl_secs(Duration::from_secs(10)), 10);
        assert_eq!(ttl_secs(Duration::from_millis(1500)), 2);
        assert_eq!(ttl_secs(Duration::from_millis(10_001)), 11);
        assert_eq!(ttl_secs(Duration::from_millis(200)), 1);
    }

    #[test]
    fn keys_of_one_group_never_match_another() {
        let k = Keys::new("/promd/", "web", "db-a");
        assert_eq!(k.group, "/promd/web/");
        assert_eq!(k.leader, "/promd/web/leader");
        assert_eq!(k.member, "/promd/web/members/db-a");
        assert_eq!(k.switchover, "/promd/web/switchover");
        assert_eq!(k.maintenance, "/promd/web/maintenance");
        assert!(!"/promd/web2/leader".starts_with(&k.group));
    }
}
