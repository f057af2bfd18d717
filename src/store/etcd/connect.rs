//! Connecting to etcd: endpoints in the configured order, side by side, and a call's failure
//! in words. One connection serves every group of a store (see [`link`](super::link)).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, GetOptions};
use tokio::time::timeout;
use tracing::warn;

use super::secure::{
    Current, EtcdTls, Explained, Names, Secrets, answers_in_plain_text, explain, explain_plain,
    explain_speaks_tls, explain_with, probe, speaks_tls, unexplained_transport_error,
};
use crate::store::error::{Cause, EndpointError, EtcdError};

/// What connecting needs, once per store.
#[derive(Debug)]
pub(super) struct Connector {
    pub(super) endpoints: Vec<String>,
    pub(super) connect_timeout: Duration,
    /// TLS for `https://` endpoints and the etcd user, if etcd wants one, read afresh for
    /// each round of connection attempts.
    pub(super) secrets: Arc<Secrets>,
    /// The key an attempt reads (count only) to prove the member serves us: `PREFIX/`, inside
    /// the prefix an RBAC user is limited to, whatever groups run.
    pub(super) probe_key: String,
}

/// Why a call failed, as far as the task's next step is concerned.
#[derive(Debug)]
pub(super) enum CallError {
    /// etcd says our lease does not exist (expired or revoked).
    LeaseGone,
    /// Anything else: timeout, broken connection, no leader, ... The outcome of a write is
    /// unknown; the task reconnects.
    Broken(EtcdError),
}

impl From<CallError> for EtcdError {
    fn from(e: CallError) -> EtcdError {
        match e {
            CallError::LeaseGone => EtcdError::LeaseNotFound,
            CallError::Broken(e) => e,
        }
    }
}

/// gRPC's `PermissionDenied` and `Unauthenticated` status codes (etcd auth).
const DENIED_CODES: [i32; 2] = [7, 16];

fn denied(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if DENIED_CODES.contains(&i32::from(s.code())))
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
pub(super) async fn call<T>(
    call: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, CallError> {
    match timeout(limit, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) if lease_gone(&e) => Err(CallError::LeaseGone),
        Ok(Err(e)) if denied(&e) => Err(CallError::Broken(EtcdError::Denied {
            call,
            cause: Cause::new(explain_plain(e)),
        })),
        Ok(Err(e)) => Err(CallError::Broken(EtcdError::Failed {
            call,
            cause: Cause::new(explain_plain(e)),
        })),
        Err(_) => Err(CallError::Broken(EtcdError::Timeout { call, after: limit })),
    }
}

/// How long a connection attempt has the field to itself before the next endpoint is tried
/// beside it (RFC 8305's "connection attempt delay", shortened: the fence margin is the
/// budget). A member that answers at once wins in configured order; a silent one costs this.
const ATTEMPT_DELAY: Duration = Duration::from_millis(100);

/// Connect to an endpoint that answers a linearizable read within the connect timeout. The
/// read (not just a TCP connect) is what proves the member can serve us: a member cut off
/// from its quorum accepts connections but cannot answer it, and `require_leader` makes it
/// say so at once instead of hanging.
///
/// The endpoints are tried in the configured order, `avoid` (the member the last session
/// failed on) last, but not one after the other: each attempt gets [`ATTEMPT_DELAY`] (or
/// until it fails) before the next one starts beside it, and the first to answer wins. A
/// silent member (paused, or its packets dropped) would otherwise cost a whole connect
/// timeout, longer than the fence margin, and a healthy active host would fence itself
/// over the loss of one etcd member. Returns the client and the endpoint it reached.
pub(super) async fn connect(
    cfg: &Connector,
    avoid: Option<&str>,
) -> Result<(Client, String), EtcdError> {
    if cfg.endpoints.is_empty() {
        return Err(EtcdError::NoEndpoints);
    }
    // The files as they are now: a renewed certificate is used from this round on.
    let current = cfg.secrets.current();
    let mut order: Vec<&String> = cfg.endpoints.iter().collect();
    // Stable: the others keep their configured order.
    order.sort_by_key(|e| Some(e.as_str()) == avoid);
    let mut attempts = tokio::task::JoinSet::new();
    let mut errors: Vec<(usize, EndpointError)> = Vec::new();
    let mut next = 0;
    loop {
        if next < order.len() {
            let endpoint = order[next].clone();
            let options = options(cfg, &current);
            let without_user = current
                .user
                .as_ref()
                .map(|user| (user.name.clone(), anonymous(cfg, &current)));
            let (probe_key, limit) = (cfg.probe_key.clone(), cfg.connect_timeout);
            let wording = Wording::of(cfg, &current);
            let index = next;
            attempts.spawn(async move {
                // While etcd elects a raft leader, members answer "leader changed" or "no
                // leader" (or hold the read until the election ends): the member is there and
                // will serve in a moment, so it is asked again at once, within the attempt's
                // time, rather than failing the round and waiting for the next.
                let mut electing_since: Option<etcd_client::Error> = None;
                let attempt = async {
                    let mut pause = ELECTION_RETRY;
                    loop {
                        match reach(&endpoint, &options, without_user.as_ref(), &probe_key).await {
                            Err(e) if electing(&e) => {
                                electing_since = Some(e);
                                tokio::time::sleep(pause).await;
                                pause = (pause * 2).min(MAX_ELECTION_RETRY);
                            }
                            other => return other,
                        }
                    }
                };
                let outcome = timeout(limit, attempt).await;
                let result = match outcome {
                    Ok(Ok(client)) => Ok(client),
                    Ok(Err(e)) => Err(EndpointError::Failed {
                        endpoint: endpoint.clone(),
                        cause: Cause::new(wording.explain(&endpoint, e).await),
                    }),
                    Err(_) => match electing_since {
                        Some(e) => Err(EndpointError::Failed {
                            endpoint: endpoint.clone(),
                            cause: Cause::new(wording.explain(&endpoint, e).await),
                        }),
                        None => Err(EndpointError::Silent {
                            endpoint: endpoint.clone(),
                            after: limit,
                        }),
                    },
                };
                (index, endpoint, result)
            });
            next += 1;
        }
        let more = next < order.len();
        let finished = if more {
            tokio::select! {
                done = attempts.join_next() => done,
                _ = tokio::time::sleep(ATTEMPT_DELAY) => continue,
            }
        } else {
            attempts.join_next().await
        };
        match finished {
            // Dropping the set aborts the attempts still running.
            Some(Ok((_, endpoint, Ok(client)))) => return Ok((client, endpoint)),
            Some(Ok((index, _, Err(e)))) => errors.push((index, e)),
            // An attempt that panicked or was aborted: nothing to learn from it.
            Some(Err(_)) => {}
            None if more => {}
            None => {
                errors.sort_by_key(|(index, _)| *index);
                return Err(EtcdError::Unreachable(
                    errors.into_iter().map(|(_, e)| e).collect(),
                ));
            }
        }
    }
}

/// How soon a member that answered "leader changed" or "no leader" is asked again: 50 ms,
/// doubling to [`MAX_ELECTION_RETRY`], so that a cluster without quorum (whose members say
/// "no leader" at once) is not asked twenty times a second by every group of every host.
const ELECTION_RETRY: Duration = Duration::from_millis(50);
const MAX_ELECTION_RETRY: Duration = Duration::from_millis(200);

/// Connect to `endpoint` and read `probe_key` linearizably (count only): the proof that the
/// member can serve us now. With authentication off on etcd, connects again
/// without the user (`without_user`: its name and the options without it): etcd serves every
/// client then, and etcdctl goes on as well, so a fleet can be given its user before auth is
/// turned on; once it is, requests without a token are refused ("user name is empty") and the
/// next session logs in.
async fn reach(
    endpoint: &str,
    options: &ConnectOptions,
    without_user: Option<&(String, ConnectOptions)>,
    probe_key: &str,
) -> Result<Client, etcd_client::Error> {
    let connected = Client::connect([endpoint], Some(options.clone())).await;
    let mut client = match (connected, without_user) {
        (Err(e), Some((user, anonymous))) if auth_not_enabled(&e) => {
            warn!(endpoint = %endpoint, "etcd has authentication off: connected without user {user}");
            Client::connect([endpoint], Some(anonymous.clone())).await?
        }
        (connected, _) => connected?,
    };
    client
        .get(probe_key, Some(GetOptions::new().with_count_only()))
        .await?;
    Ok(client)
}

/// etcd's answers while it elects a raft leader.
fn electing(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s)
        if s.message().contains("leader changed") || s.message().contains("no leader"))
}

/// The client's options for one connection attempt: TLS, the user (its token refreshed when
/// etcd says it expired: simple tokens expire after `--auth-token-ttl` without use, so a
/// campaign after a quiet spell would fail), and a leader required of every answer. No
/// per-request timeout: tonic would apply it to the streams too; every call carries its own.
fn options(cfg: &Connector, current: &Current) -> ConnectOptions {
    let mut options = anonymous(cfg, current);
    if let Some(user) = &current.user {
        options = options
            .with_user(user.name.clone(), user.password.clone())
            .with_auto_token_refresh(true);
    }
    options
}

/// [`options`] without the user.
fn anonymous(cfg: &Connector, current: &Current) -> ConnectOptions {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(cfg.connect_timeout)
        .with_require_leader(true);
    if let Some(tls) = &current.tls {
        options = options.with_tls(tls.options());
    }
    options
}

/// etcd's answer to a login when it has authentication off.
fn auth_not_enabled(e: &etcd_client::Error) -> bool {
    matches!(e, etcd_client::Error::GRpcStatus(s) if s.message().contains("authentication is not enabled"))
}

/// What an attempt needs to word its failure (owned: attempts run as tasks of their own).
struct Wording {
    tls: Option<EtcdTls>,
    names: Names,
    limit: Duration,
}

impl Wording {
    fn of(cfg: &Connector, current: &Current) -> Wording {
        Wording {
            tls: current.tls.clone(),
            names: current.names.clone(),
            limit: cfg.connect_timeout,
        }
    }

    /// Why connecting to `endpoint` failed, in words. A TLS connection that etcd closed
    /// without the client learning why is looked into with a handshake of promd's own; so is
    /// a plain one, in case etcd speaks TLS there.
    async fn explain(&self, endpoint: &str, e: etcd_client::Error) -> Explained {
        match &self.tls {
            Some(tls) if unexplained_transport_error(&e) => {
                let probed = match probe(endpoint, tls, self.limit).await {
                    None => answers_in_plain_text(endpoint, self.limit).await,
                    found => found,
                };
                explain_with(e, &self.names, probed)
            }
            None if unexplained_transport_error(&e) && speaks_tls(endpoint, self.limit).await => {
                explain_speaks_tls(e)
            }
            _ => explain(e, &self.names),
        }
    }
}
