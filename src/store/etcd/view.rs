//! Reading, decoding and watching the group's keys: the task's view of the group.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use etcd_client::{Client, GetOptions, KeyValue, WatchOptions, WatchStream};
use tokio::time::timeout;
use tracing::warn;

use super::Keys;
use super::connect::{broken, call};
use super::task::GroupTask;
use crate::store::record::{self, LeaderRecord, MaintenanceRecord, MemberRecord, SwitchoverRecord};
use crate::store::{Leader, StoreEvent, UNREADABLE_NODE};

/// Read the group's keys with one range request and watch them from just after it, so that
/// no change falls between the two.
pub(super) async fn read_and_watch(
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

/// The next message of the watch, if there is one; never completes otherwise.
pub(super) async fn next_watch(
    watch: &mut Option<WatchStream>,
) -> Result<Option<etcd_client::WatchResponse>, etcd_client::Error> {
    match watch {
        Some(w) => w.message().await,
        None => std::future::pending().await,
    }
}

pub(super) type ResyncFuture =
    Pin<Box<dyn Future<Output = Result<(Vec<KeyValue>, WatchStream), String>> + Send>>;

/// The group's keys as last read or watched.
#[derive(Debug, Default)]
pub(super) struct View {
    leader: Option<Leader>,
    members: BTreeMap<String, MemberRecord>,
    switchover: Option<SwitchoverRecord>,
    maintenance: Option<MaintenanceRecord>,
}

/// Which parts of the [`View`] a batch of changes touched.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Touched {
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

impl GroupTask {
    /// Replace the view with a fresh read and report all of it.
    pub(super) fn apply_snapshot(&self, view: &mut View, snapshot: &[KeyValue]) {
        *view = View::default();
        let mut touched = Touched::default();
        for kv in snapshot {
            self.absorb(view, kv, &mut touched);
        }
        self.report(view, Touched::ALL);
    }

    pub(super) fn report(&self, view: &View, touched: Touched) {
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
    pub(super) fn absorb(&self, view: &mut View, kv: &KeyValue, touched: &mut Touched) {
        let key = String::from_utf8_lossy(kv.key());
        match self.classify(&key) {
            Slot::Leader => {
                touched.leader = true;
                let term = u64::try_from(kv.create_revision()).unwrap_or(0);
                let (node, host) = match record::decode::<LeaderRecord>(kv.value()) {
                    Ok(rec) => (rec.node, rec.host),
                    Err(e) => {
                        // Still a leader: nobody may campaign while the key exists.
                        self.corrupt(&key, e.to_string());
                        (UNREADABLE_NODE.to_string(), None)
                    }
                };
                view.leader = Some(Leader { node, term, host });
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
    pub(super) fn forget(&self, view: &mut View, kv: &KeyValue, touched: &mut Touched) {
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
