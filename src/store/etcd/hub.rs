//! One watch over the store's whole prefix, on the shared connection, dispatched to the
//! groups by the group component of each key (`PREFIX/GROUP/…`).
//!
//! Each watch the hub creates is an *epoch*. A group reads its keys (one range request, at
//! revision `R`) only once the epoch's watch is confirmed, and takes from it only the changes
//! of that epoch made after `R`: since the group is registered before it reads, every change
//! after `R` reaches it, and none before is applied twice — the same view as a watch of the
//! group's own started at `R + 1`. A watch that etcd cancels (compacted past it, or for any
//! other reason) is created again as a new epoch, and every group reads its keys again, as
//! each group's own watch did. A watch that fails or closes ends the connection
//! ([`Link::broken`]); the next one gets a new watch.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, EventType, WatchOptions, WatchResponse, WatchStream};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;
use tracing::warn;

use super::link::Link;
use super::secure::explain_plain;
use crate::store::error::{Cause, EtcdError};
use crate::sync::lock;

/// The hub's watch as groups see it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct HubState {
    /// The connection the watch runs on.
    pub(super) generation: u64,
    /// Counts the watches the hub created, from 1.
    pub(super) epoch: u64,
    /// The epoch's watch is confirmed: a group may read now and follow it.
    pub(super) live: bool,
}

/// One key's change, as a watch reported it.
#[derive(Debug, Clone)]
pub(super) struct Change {
    pub(super) key: String,
    /// The revision of the change (etcd's `mod_revision`; a delete's own revision).
    pub(super) revision: i64,
    /// The new value and the key's create revision; `None`: deleted.
    pub(super) put: Option<(Vec<u8>, i64)>,
}

/// The changes to one group in one watch response (one transaction, or several).
#[derive(Debug)]
pub(super) struct Batch {
    pub(super) epoch: u64,
    pub(super) changes: Vec<Change>,
}

type Route = (u64, mpsc::UnboundedSender<Batch>);

/// The store's watch, and the groups it serves.
pub(super) struct Hub {
    /// `PREFIX/`.
    prefix: String,
    routes: Mutex<HashMap<String, Vec<Route>>>,
    next: AtomicU64,
    state: watch::Sender<HubState>,
}

impl Hub {
    /// A hub for the keys under `prefix` (a trailing `/` is ignored).
    pub(super) fn new(prefix: &str) -> Hub {
        Hub {
            prefix: format!("{}/", prefix.trim_end_matches('/')),
            routes: Mutex::new(HashMap::new()),
            next: AtomicU64::new(0),
            state: watch::Sender::new(HubState::default()),
        }
    }

    /// Follow the watch's state.
    pub(super) fn subscribe(&self) -> watch::Receiver<HubState> {
        self.state.subscribe()
    }

    /// Receive the changes to `group`'s keys from now on, until the registration is dropped.
    pub(super) fn register(self: &Arc<Self>, group: &str) -> Registration {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.routes)
            .entry(group.to_owned())
            .or_default()
            .push((id, tx));
        Registration {
            hub: self.clone(),
            group: group.to_owned(),
            id,
            batches: rx,
        }
    }

    /// Hand each group its changes in `response`, in the response's order.
    fn dispatch(&self, epoch: u64, response: &WatchResponse) {
        let mut by_group: BTreeMap<String, Vec<Change>> = BTreeMap::new();
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let Some((group, _)) = key
                .strip_prefix(self.prefix.as_str())
                .and_then(|rest| rest.split_once('/'))
            else {
                continue;
            };
            let put = match event.event_type() {
                EventType::Put => Some((kv.value().to_vec(), kv.create_revision())),
                EventType::Delete => None,
            };
            let group = group.to_owned();
            by_group.entry(group).or_default().push(Change {
                key,
                revision: kv.mod_revision(),
                put,
            });
        }
        let mut routes = lock(&self.routes);
        for (group, changes) in by_group {
            if let Some(routes) = routes.get_mut(&group) {
                routes.retain(|(_, tx)| {
                    tx.send(Batch {
                        epoch,
                        changes: changes.clone(),
                    })
                    .is_ok()
                });
            }
        }
    }
}

/// A group's place in the hub: its changes arrive in `batches`.
pub(super) struct Registration {
    hub: Arc<Hub>,
    group: String,
    id: u64,
    pub(super) batches: mpsc::UnboundedReceiver<Batch>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut routes = lock(&self.hub.routes);
        if let Some(list) = routes.get_mut(&self.group) {
            list.retain(|(id, _)| *id != self.id);
            if list.is_empty() {
                routes.remove(&self.group);
            }
        }
    }
}

/// The hub's task: a watch on every connection, created again when etcd cancels it. Ends only
/// when aborted (the store's last group is gone).
pub(super) async fn run(hub: Arc<Hub>, link: Arc<Link>) {
    let mut links = link.subscribe();
    let mut served = 0;
    let mut epoch = 0;
    loop {
        let conn = loop {
            let newer = links.borrow_and_update().newer_than(served);
            if let Some(conn) = newer {
                break conn;
            }
            if links.changed().await.is_err() {
                return;
            }
        };
        served = conn.generation;
        let generation = conn.generation;
        'watch: loop {
            hub.state.send_replace(HubState {
                generation,
                epoch,
                live: false,
            });
            let mut watch = match watch_prefix(&conn.client, &hub.prefix, link.retry()).await {
                Ok(watch) => watch,
                Err(reason) => {
                    link.broken(generation, reason);
                    break;
                }
            };
            epoch += 1;
            hub.state.send_replace(HubState {
                generation,
                epoch,
                live: true,
            });
            loop {
                tokio::select! {
                    changed = links.changed() => {
                        if changed.is_err() || !links.borrow_and_update().is_up(generation) {
                            break 'watch;
                        }
                    }
                    message = watch.message() => {
                        let broken = match message {
                            Ok(Some(response)) if response.canceled() => {
                                // Compacted past our revision, or canceled by etcd: watch again,
                                // and every group reads its keys again.
                                warn!(
                                    compact_revision = response.compact_revision(),
                                    reason = response.cancel_reason(),
                                    "etcd watch canceled; reading the groups again"
                                );
                                continue 'watch;
                            }
                            Ok(Some(response)) => {
                                hub.dispatch(epoch, &response);
                                continue;
                            }
                            Ok(None) => EtcdError::StreamClosed { stream: "watch" },
                            Err(e) => EtcdError::Failed {
                                call: "watch",
                                cause: Cause::new(explain_plain(e)),
                            },
                        };
                        let reason = EtcdError::Session {
                            endpoint: conn.endpoint.clone(),
                            error: Box::new(broken),
                        };
                        link.broken(generation, reason);
                        break 'watch;
                    }
                }
            }
        }
    }
}

/// Watch every key under `prefix` from the current revision on, and wait for etcd to confirm
/// the watch: only then is it known to be live.
async fn watch_prefix(
    client: &Client,
    prefix: &str,
    t: Duration,
) -> Result<WatchStream, EtcdError> {
    let mut watches = client.watch_client();
    let options = WatchOptions::new().with_prefix();
    let watch = watches.watch(prefix, Some(options));
    let mut watch = super::connect::call("watch group", t, watch).await?;
    match timeout(t, watch.message()).await {
        Ok(Ok(Some(r))) if r.created() && !r.canceled() => Ok(watch),
        Ok(Ok(Some(r))) => {
            let reason = match r.cancel_reason() {
                "" => "canceled".to_string(),
                reason => reason.to_string(),
            };
            Err(EtcdError::WatchRefused { reason })
        }
        Ok(Ok(None)) => Err(EtcdError::StreamClosed {
            stream: "watch group",
        }),
        Ok(Err(e)) => Err(EtcdError::Failed {
            call: "watch group",
            cause: Cause::new(e),
        }),
        Err(_) => Err(EtcdError::Timeout {
            call: "watch group",
            after: t,
        }),
    }
}
