//! The store's one connection to etcd, shared by every group, every lease and the watch.
//!
//! A task of its own connects ([`connect`]: endpoints side by side, in order of preference),
//! publishes the connection as [`LinkState::Up`] and waits until someone finds it bad: a
//! keepalive unanswered in time, a broken stream, a failed call. [`Link::broken`] takes the
//! connection's *generation*, so that whoever finds it bad first ends it and every later
//! report about the same connection is a no-op: five hundred groups whose calls fail at once
//! cause one reconnection, not five hundred. The reconnection tries the member that failed
//! last; it starts at once when the connection had served (a keepalive answered on it), and
//! after a short pause (200 ms) otherwise, so that a member that answers the connection's
//! read but nothing else is not asked in a busy loop.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use etcd_client::Client;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;
use tracing::{debug, info};

use super::connect::{Connector, connect};
use super::{MAX_AUTH_RETRY_DELAY, MAX_RETRY_DELAY};
use crate::store::error::EtcdError;

/// One connection to one etcd member.
pub(super) struct Conn {
    pub(super) client: Client,
    /// The endpoint `client` reached.
    pub(super) endpoint: String,
    /// Counts connections of this store from 1: what [`Link::broken`] names.
    pub(super) generation: u64,
    /// A keepalive was answered on it: it served, beyond the connect's own read.
    proven: AtomicBool,
    /// Why it was found bad, once it was: every group whose session ran on it reports this.
    ended: OnceLock<EtcdError>,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("endpoint", &self.endpoint)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// A keepalive was answered on this connection.
    pub(super) fn prove(&self) {
        self.proven.store(true, Ordering::Relaxed);
    }

    /// Why the connection was found bad; `None` while it is good.
    pub(super) fn ended(&self) -> Option<&EtcdError> {
        self.ended.get()
    }
}

/// The connection as groups, leases and the watch see it.
#[derive(Debug, Clone)]
pub(super) enum LinkState {
    /// The first round of connection attempts is under way.
    Connecting,
    /// Connected.
    Up(Arc<Conn>),
    /// The last round failed, or the connection was found bad and is being replaced: why.
    Down(EtcdError),
}

impl LinkState {
    /// The connection, if it is up.
    pub(super) fn conn(&self) -> Option<&Arc<Conn>> {
        match self {
            LinkState::Up(conn) => Some(conn),
            _ => None,
        }
    }

    /// The connection that is up, unless it is generation `served` (the one the caller used
    /// last and is done with): the caller's next connection.
    pub(super) fn newer_than(&self, served: u64) -> Option<Arc<Conn>> {
        self.conn().filter(|c| c.generation != served).cloned()
    }

    /// Whether connection `generation` is the one up.
    pub(super) fn is_up(&self, generation: u64) -> bool {
        self.conn().is_some_and(|c| c.generation == generation)
    }
}

/// The shared connection: its state, and the pause between failed rounds.
#[derive(Debug)]
pub(super) struct Link {
    state: watch::Sender<LinkState>,
    /// The pause between failed rounds, in nanoseconds: a renew interval of the group with
    /// the shortest lease, at most [`MAX_RETRY_DELAY`] (as each group's own retry was).
    retry_nanos: AtomicU64,
}

impl Link {
    pub(super) fn new() -> Link {
        Link {
            state: watch::Sender::new(LinkState::Connecting),
            retry_nanos: AtomicU64::new(nanos(MAX_RETRY_DELAY)),
        }
    }

    /// Follow the state.
    pub(super) fn subscribe(&self) -> watch::Receiver<LinkState> {
        self.state.subscribe()
    }

    /// A group with this renew interval joined: failed rounds are retried at least this often.
    pub(super) fn retry_within(&self, renew: Duration) {
        self.retry_nanos.fetch_min(nanos(renew), Ordering::Relaxed);
    }

    /// The pause between failed rounds, and the timeout of the calls that serve every group
    /// (the watch's creation): the shortest renew interval, at most [`MAX_RETRY_DELAY`].
    pub(super) fn retry(&self) -> Duration {
        Duration::from_nanos(self.retry_nanos.load(Ordering::Relaxed))
    }

    /// Connection `generation` is bad, for `reason`: the first report ends it (the state turns
    /// [`LinkState::Down`] with this reason, and the link task reconnects); reports about a
    /// connection already ended, or not yet up, change nothing.
    pub(super) fn broken(&self, generation: u64, reason: EtcdError) {
        self.state.send_if_modified(|state| match state {
            LinkState::Up(conn) if conn.generation == generation => {
                let _ = conn.ended.set(reason.clone());
                debug!(endpoint = %conn.endpoint, %reason, "etcd connection found bad");
                *state = LinkState::Down(reason);
                true
            }
            _ => false,
        });
    }
}

/// The pause before reconnecting after a connection that never served (see [`run`]).
const UNPROVEN_PAUSE: Duration = Duration::from_millis(200);

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// The link task: connect, serve until found bad, reconnect; between failed rounds a pause
/// (refused credentials or rights: 1 s doubling to [`MAX_AUTH_RETRY_DELAY`], ended at once by
/// fixed files). Ends only when aborted (the store's last group is gone).
pub(super) async fn run(link: Arc<Link>, cfg: Arc<Connector>) {
    let mut states = link.subscribe();
    // The member the last connection failed on: tried last when reconnecting.
    let mut avoid: Option<String> = None;
    let mut generation = 0;
    // Consecutive rounds whose credentials or rights etcd refused.
    let mut refusals = 0u32;
    loop {
        let pause = match connect(&cfg, avoid.as_deref()).await {
            Ok((client, endpoint)) => {
                refusals = 0;
                generation += 1;
                info!(%endpoint, generation, "etcd connected");
                let conn = Arc::new(Conn {
                    client,
                    endpoint,
                    generation,
                    proven: AtomicBool::new(false),
                    ended: OnceLock::new(),
                });
                link.state.send_replace(LinkState::Up(conn.clone()));
                // Until someone finds it bad (the sender lives in `link`: never closed).
                let _ = states.wait_for(|s| !s.is_up(generation)).await;
                avoid = Some(conn.endpoint.clone());
                if conn.proven.load(Ordering::Relaxed) {
                    continue;
                }
                // Short: a connection made while etcd elects a raft leader fails its first
                // calls ("leader changed") and must be made again at once; a whole retry
                // pause (1 s) after it turned a silent raft leader into a failover at a 6 s
                // lease. 200 ms still keeps a member that answers nothing but the read from
                // being asked in a busy loop.
                link.retry().min(UNPROVEN_PAUSE)
            }
            Err(reason) => {
                // Refused credentials or rights are retried after 1 s, doubling up to a limit:
                // a password or a role is not fixed in a second, and each attempt costs etcd
                // a password hash.
                let pause = if reason.access_refused() {
                    refusals += 1;
                    (MAX_RETRY_DELAY * 2u32.saturating_pow(refusals - 1)).min(MAX_AUTH_RETRY_DELAY)
                } else {
                    refusals = 0;
                    link.retry()
                };
                link.state.send_replace(LinkState::Down(reason));
                pause
            }
        };
        let retry_at = tokio::time::Instant::now() + pause;
        // While refused, the files are looked at every second: a fixed password file ends
        // the backoff at once instead of up to 30 s later.
        let mut look = tokio::time::interval(MAX_RETRY_DELAY);
        look.set_missed_tick_behavior(MissedTickBehavior::Delay);
        look.reset();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(retry_at) => break,
                _ = look.tick(), if refusals > 0 => {
                    if cfg.secrets.renewed() {
                        refusals = 0;
                        break;
                    }
                }
            }
        }
    }
}
