//! Reading and watching the group's keys, and what they hold: the task's copy of the group,
//! read by the shared policy into what the runtime is told.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use etcd_client::{
    Client, EventType, GetOptions, KeyValue, WatchOptions, WatchResponse, WatchStream,
};
use tokio::time::timeout;

use super::Keys;
use super::connect::call;
use serde::de::DeserializeOwned;

use crate::store::error::{Cause, EtcdError, ValueError};
use crate::store::policy::{Read, Reading};
use crate::store::record::{self, LeaderRecord, TermRecord, Versioned};

/// Read the group's keys with one range request and watch them from just after it, so that
/// no change falls between the two.
pub(super) async fn read_and_watch(
    client: &Client,
    keys: &Keys,
    t: Duration,
) -> Result<(Vec<KeyValue>, WatchStream), EtcdError> {
    let mut kv = client.kv_client();
    let get = kv.get(keys.group.as_str(), Some(GetOptions::new().with_prefix()));
    let mut read = call("read group", t, get).await?;
    let revision = read
        .header()
        .map(|h| h.revision())
        .ok_or(EtcdError::NoHeader { call: "read group" })?;

    let mut watches = client.watch_client();
    let options = WatchOptions::new()
        .with_prefix()
        .with_start_revision(revision + 1);
    let watch = watches.watch(keys.group.as_str(), Some(options));
    let mut watch = call("watch group", t, watch).await?;
    // etcd confirms a watch before it sends events; only then is the watch known to be live.
    match timeout(t, watch.message()).await {
        Ok(Ok(Some(r))) if r.created() && !r.canceled() => {}
        Ok(Ok(Some(r))) => {
            let reason = match r.cancel_reason() {
                "" => "canceled".to_string(),
                reason => reason.to_string(),
            };
            return Err(EtcdError::WatchRefused { reason });
        }
        Ok(Ok(None)) => {
            return Err(EtcdError::StreamClosed {
                stream: "watch group",
            });
        }
        Ok(Err(e)) => {
            return Err(EtcdError::Failed {
                call: "watch group",
                cause: Cause::new(e),
            });
        }
        Err(_) => {
            return Err(EtcdError::Timeout {
                call: "watch group",
                after: t,
            });
        }
    }
    Ok((read.take_kvs(), watch))
}

/// The next message of the watch, if there is one; never completes otherwise.
pub(super) async fn next_watch(
    watch: &mut Option<WatchStream>,
) -> Result<Option<WatchResponse>, etcd_client::Error> {
    match watch {
        Some(w) => w.message().await,
        None => std::future::pending().await,
    }
}

pub(super) type ResyncFuture =
    Pin<Box<dyn Future<Output = Result<(Vec<KeyValue>, WatchStream), EtcdError>> + Send>>;

/// The group's keys as last read or watched: the raw values of the keys the contract knows.
#[derive(Debug, Default)]
pub(super) struct Values {
    /// Key → (value, create revision).
    keys: BTreeMap<String, (Vec<u8>, i64)>,
}

impl Values {
    /// A fresh read of the group.
    pub(super) fn from_snapshot(keys: &Keys, snapshot: &[KeyValue]) -> Values {
        let mut values = Values::default();
        for kv in snapshot {
            values.put(keys, kv);
        }
        values
    }

    /// Take in a batch of watched changes.
    pub(super) fn apply(&mut self, keys: &Keys, response: &WatchResponse) {
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            match event.event_type() {
                EventType::Put => self.put(keys, kv),
                EventType::Delete => {
                    self.keys.remove(&*String::from_utf8_lossy(kv.key()));
                }
            }
        }
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key()).into_owned();
        // Keys of a later version, or someone else's: not ours to judge.
        if !matches!(classify(keys, &key), Slot::Other) {
            self.keys
                .insert(key, (kv.value().to_vec(), kv.create_revision()));
        }
    }

    /// The keys, decoded, for the shared policy.
    pub(super) fn reading(&self, keys: &Keys) -> Reading {
        let mut reading = Reading::default();
        for (key, (value, created)) in &self.keys {
            match classify(keys, key) {
                Slot::Leader => {
                    // The term in the value; an older promd's value (or an unreadable one):
                    // the create revision.
                    let value = decode::<LeaderRecord>(value);
                    let created = u64::try_from(*created).unwrap_or(0);
                    let term = value.as_ref().ok().and_then(|r| r.term).unwrap_or(created);
                    reading.leader = Some((Read::new(key, value), term));
                }
                Slot::Term => {
                    // Read by the campaign itself; here only reported when unreadable.
                    if let Err(error) = decode::<TermRecord>(value) {
                        reading.ignored.insert(key.clone(), error);
                    }
                }
                Slot::Member(node) => reading
                    .members
                    .push((node.to_string(), Read::new(key, decode(value)))),
                Slot::Switchover => reading.switchover = Some(Read::new(key, decode(value))),
                Slot::Maintenance => reading.maintenance = Some(Read::new(key, decode(value))),
                Slot::Other => {}
            }
        }
        reading
    }
}

fn decode<T: DeserializeOwned + Versioned>(value: &[u8]) -> Result<T, ValueError> {
    record::decode(value).map_err(ValueError::from)
}

enum Slot<'k> {
    Leader,
    Term,
    Member(&'k str),
    Switchover,
    Maintenance,
    Other,
}

fn classify<'k>(keys: &Keys, key: &'k str) -> Slot<'k> {
    match key.strip_prefix(keys.group.as_str()) {
        Some("leader") => Slot::Leader,
        Some("term") => Slot::Term,
        Some("switchover") => Slot::Switchover,
        Some("maintenance") => Slot::Maintenance,
        Some(rest) => match rest.strip_prefix("members/") {
            Some(node) if !node.is_empty() => Slot::Member(node),
            _ => Slot::Other,
        },
        None => Slot::Other,
    }
}
