//! The read-only HTTP state endpoint (`[http] listen`): what a load balancer asks to find the
//! active host of a group, and the cluster view as JSON.
//!
//! - `GET /v1/groups/GROUP/active`: 200 while this host's role in GROUP is `active` and
//!   every steady unit of the role is up, 503 in every other role (`demoting` included: a
//!   balancer drains before the units stop) and while a unit is down or restarted in place;
//!   `/passive` likewise for `passive`; `/state`: the role as plain text. 404 for a group
//!   this host does not serve.
//! - `GET /v1/health`: 200 while promd's event loop runs and the store is connected.
//! - `GET /v1/status`: the document `promctl status --json` prints ([`crate::status`]).
//! - `HEAD` of each: the same status and headers, no body. Other methods: 405.
//!
//! The split: the runtime owns a [`StateFeed`] and publishes a [`Snapshot`] of the groups'
//! views after a step in which one changed (a few pointer copies, even at 500 groups); the
//! server ([`server`]) runs on a thread of its own with its own single-threaded tokio
//! runtime, reads the latest snapshot per request through a [`StateReader`], and answers
//! with the pure [`routes::route`]. A flood of clients costs that thread's time, never the
//! event loop's (fencing deadlines) or the watchdog thread's. `GET /metrics`
//! ([`metrics`]) renders the agent's [`Metrics`] with the snapshot, on that thread too.

pub mod metrics;
pub mod routes;
pub mod server;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use hyper::body::Bytes;
use tokio::sync::watch;

use crate::agent::{GroupId, GroupView, ViewUpdate};
use crate::metrics::Metrics;
use crate::status::StatusReport;

pub use server::{HttpServer, Limits};

/// How long the event loop may go without a step before `/v1/health` says promd is not
/// running: the loop steps at least once a second (the store check), and the watchdog
/// restarts a loop stalled for [`crate::agent::LOOP_STALL_LIMIT`].
pub const LOOP_SILENCE_LIMIT: Duration = crate::agent::LOOP_STALL_LIMIT;

/// What the endpoint knows of promd at one moment: every group's view as the last step left
/// it. Immutable once published; readers hold it by `Arc`.
#[derive(Debug)]
pub struct Snapshot {
    /// This host's node name.
    pub node: String,
    /// Whether every group's store session is up (D-Bus `StoreConnected`).
    pub store_connected: bool,
    /// promd is handing over every group and stopping (SIGTERM).
    pub stopping: bool,
    /// Every group's view in the agent's order, retired ones included (they are neither
    /// listed nor addressable).
    pub groups: Vec<Arc<GroupView>>,
    /// `/v1/status`, rendered on first request.
    status_json: OnceLock<Bytes>,
}

impl Snapshot {
    /// A snapshot of `groups` (in order).
    pub fn new(
        node: &str,
        store_connected: bool,
        stopping: bool,
        groups: Vec<Arc<GroupView>>,
    ) -> Snapshot {
        Snapshot {
            node: node.to_string(),
            store_connected,
            stopping,
            groups,
            status_json: OnceLock::new(),
        }
    }

    /// The view of the group this host serves under `name` (not a retired one).
    pub fn group(&self, name: &str) -> Option<&GroupView> {
        self.groups
            .iter()
            .map(Arc::as_ref)
            .find(|v| v.name == name && !v.retired)
    }

    /// The `promctl status --json` document of this snapshot, rendered once.
    pub fn status_json(&self) -> Bytes {
        self.status_json
            .get_or_init(|| {
                let report = StatusReport::of_views(
                    &self.node,
                    self.store_connected,
                    self.groups.iter().map(Arc::as_ref),
                );
                match report.to_json() {
                    Ok(text) => Bytes::from(text),
                    // serde_json does not fail on strings and numbers; an empty document
                    // would still be answered as invalid JSON, not hang.
                    Err(e) => Bytes::from(format!("{{\"error\": {:?}}}\n", e.to_string())),
                }
            })
            .clone()
    }
}

/// The runtime's side: keeps the published views and publishes a new [`Snapshot`] when a
/// step changed one of them (or the store's state, or stopping).
pub struct StateFeed {
    node: String,
    groups: Vec<Arc<GroupView>>,
    /// Where each group's view is in `groups`.
    index: HashMap<GroupId, usize>,
    store_connected: bool,
    stopping: bool,
    tx: watch::Sender<Arc<Snapshot>>,
    beat: Arc<Beat>,
}

/// The server's side: the latest snapshot and the loop's heartbeat.
#[derive(Clone)]
pub struct StateReader {
    rx: watch::Receiver<Arc<Snapshot>>,
    beat: Arc<Beat>,
    /// What `/metrics` renders (`None`: 404).
    metrics: Option<Metrics>,
}

/// When the event loop last stepped, in milliseconds since `origin`.
#[derive(Debug)]
struct Beat {
    origin: Instant,
    last_ms: AtomicU64,
}

impl Beat {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

impl StateFeed {
    /// A feed starting from `views` (every group, in the agent's order), and its reader.
    pub fn new(node: &str, views: Vec<GroupView>) -> (StateFeed, StateReader) {
        let groups: Vec<Arc<GroupView>> = views.into_iter().map(Arc::new).collect();
        let index = index_of(&groups);
        let snapshot = Arc::new(Snapshot::new(node, false, false, groups.clone()));
        let (tx, rx) = watch::channel(snapshot);
        let beat = Arc::new(Beat {
            origin: Instant::now(),
            last_ms: AtomicU64::new(0),
        });
        let feed = StateFeed {
            node: node.to_string(),
            groups,
            index,
            store_connected: false,
            stopping: false,
            tx,
            beat: beat.clone(),
        };
        (
            feed,
            StateReader {
                rx,
                beat,
                metrics: None,
            },
        )
    }

    /// After a step: note that the loop ran, and publish a new snapshot if `update` changed a
    /// view or the store's state or `stopping` changed. A partial update
    /// ([`ViewUpdate::Some`]) costs a comparison per view it carries, plus, when one
    /// differs, a copy of one pointer per group.
    pub fn update(&mut self, update: &ViewUpdate, store_connected: bool, stopping: bool) {
        self.beat
            .last_ms
            .store(self.beat.now_ms(), Ordering::Relaxed);
        let mut changed = store_connected != self.store_connected || stopping != self.stopping;
        self.store_connected = store_connected;
        self.stopping = stopping;
        match update {
            ViewUpdate::All(views) => {
                let same = views.len() == self.groups.len()
                    && views.iter().zip(&self.groups).all(|(a, b)| a == b.as_ref());
                if !same {
                    self.groups = views.iter().cloned().map(Arc::new).collect();
                    self.index = index_of(&self.groups);
                    changed = true;
                }
            }
            ViewUpdate::Some(views) => {
                for view in views {
                    let Some(&i) = self.index.get(&view.id) else {
                        continue;
                    };
                    if let Some(slot) = self.groups.get_mut(i)
                        && slot.as_ref() != view
                    {
                        *slot = Arc::new(view.clone());
                        changed = true;
                    }
                }
            }
        }
        if changed {
            let snapshot = Snapshot::new(
                &self.node,
                self.store_connected,
                self.stopping,
                self.groups.clone(),
            );
            self.tx.send_replace(Arc::new(snapshot));
        }
    }
}

impl StateReader {
    /// The latest snapshot.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.rx.borrow().clone()
    }

    /// This reader, serving `metrics` at `/metrics` as well.
    pub fn with_metrics(mut self, metrics: Metrics) -> StateReader {
        self.metrics = Some(metrics);
        self
    }

    /// The metrics `/metrics` renders, if any.
    pub fn metrics(&self) -> Option<&Metrics> {
        self.metrics.as_ref()
    }

    /// Whether the event loop stepped within [`LOOP_SILENCE_LIMIT`].
    pub fn loop_alive(&self) -> bool {
        let last = self.beat.last_ms.load(Ordering::Relaxed);
        let silent = self.beat.now_ms().saturating_sub(last);
        u128::from(silent) <= LOOP_SILENCE_LIMIT.as_millis()
    }
}

fn index_of(groups: &[Arc<GroupView>]) -> HashMap<GroupId, usize> {
    groups.iter().enumerate().map(|(i, v)| (v.id, i)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) fn view(id: u64, name: &str, role: &str, term: u64) -> GroupView {
        GroupView {
            id: GroupId(id),
            name: name.into(),
            role: role.into(),
            leader: "n1".into(),
            term,
            priority: 100,
            healthy: true,
            maintenance: false,
            failures: 0,
            since_usec: 1_700_000_000_000_000,
            members: vec![crate::agent::member_view("n1", role, 100, true)],
            retired: false,
            eligible: true,
            why: String::new(),
            units_down: Vec::new(),
            slots: Vec::new(),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn a_snapshot_is_published_only_when_something_changed() {
        let (mut feed, reader) = StateFeed::new(
            "n1",
            vec![view(0, "web", "starting", 0), view(1, "db", "passive", 3)],
        );
        let first = reader.snapshot();
        // The store came up: published.
        feed.update(&ViewUpdate::Some(Vec::new()), true, false);
        let second = reader.snapshot();
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.store_connected);
        // A touched group whose view is the same: nothing published.
        feed.update(
            &ViewUpdate::Some(vec![view(1, "db", "passive", 3)]),
            true,
            false,
        );
        assert!(Arc::ptr_eq(&second, &reader.snapshot()));
        // One view changed: only its slot is new.
        feed.update(
            &ViewUpdate::Some(vec![view(0, "web", "active", 7)]),
            true,
            false,
        );
        let third = reader.snapshot();
        assert_eq!(third.group("web").map(|v| v.term), Some(7));
        assert!(Arc::ptr_eq(&second.groups[1], &third.groups[1]));
        // A view of a group the feed does not know (not yet served) is ignored until `All`.
        feed.update(
            &ViewUpdate::Some(vec![view(2, "mail", "starting", 0)]),
            true,
            false,
        );
        assert!(reader.snapshot().group("mail").is_none());
        feed.update(
            &ViewUpdate::All(vec![
                view(0, "web", "active", 7),
                view(2, "mail", "starting", 0),
            ]),
            true,
            true,
        );
        let last = reader.snapshot();
        assert!(last.group("mail").is_some() && last.group("db").is_none());
        assert!(last.stopping);
        assert!(reader.loop_alive());
    }

    #[test]
    fn status_json_is_promctls_document() {
        let mut retired = view(1, "old", "demoting", 2);
        retired.retired = true;
        let groups = vec![Arc::new(view(0, "web", "active", 7)), Arc::new(retired)];
        let snapshot = Snapshot::new("n1", true, false, groups.clone());
        let expected = StatusReport::of_views("n1", true, groups.iter().map(Arc::as_ref))
            .to_json()
            .unwrap_or_default();
        assert_eq!(snapshot.status_json(), Bytes::from(expected));
        assert!(snapshot.group("old").is_none());
    }
}
