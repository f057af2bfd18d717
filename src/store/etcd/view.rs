//! Reading the group's keys, and what they hold: the task's copy of the group, kept up to
//! date by the store's shared watch (see [`hub`](super::hub)) and read by the shared policy
//! into what the runtime is told.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use etcd_client::{Client, GetOptions, KeyValue};

use super::Keys;
use super::connect::call;
use super::hub::Change;
use serde::de::DeserializeOwned;

use crate::store::error::{EtcdError, ValueError};
use crate::store::policy::{Read, Reading};
use crate::store::record::{self, LeaderRecord, TermRecord, Versioned};

/// Read the group's keys with one range request: the revision it was read at, and the keys.
pub(super) async fn read_group(
    client: &Client,
    keys: &Keys,
    t: Duration,
) -> Result<(i64, Vec<KeyValue>), EtcdError> {
    let mut kv = client.kv_client();
    let get = kv.get(keys.group.as_str(), Some(GetOptions::new().with_prefix()));
    let mut read = call("read group", t, get).await?;
    let revision = read
        .header()
        .map(|h| h.revision())
        .ok_or(EtcdError::NoHeader { call: "read group" })?;
    Ok((revision, read.take_kvs()))
}

/// A read of the group in flight.
pub(super) type ReadFuture =
    Pin<Box<dyn Future<Output = Result<(i64, Vec<KeyValue>), EtcdError>> + Send>>;

/// The group's keys as last read or watched: the raw values of the keys the contract knows.
#[derive(Debug, Default)]
pub(super) struct Values {
    /// Key → (value, create revision, mod revision).
    keys: BTreeMap<String, (Vec<u8>, i64, i64)>,
    /// The store's revision as of the read, or of the latest change since: the view holds
    /// everything of the group up to it.
    seen: i64,
}

/// What a campaign needs to know of the group, as the view has it (see
/// [`campaign`](super::ops)): its first transaction is written from this, without a read.
#[derive(Debug, Clone)]
pub(super) struct CampaignView {
    /// [`Values::seen`].
    pub(super) revision: i64,
    /// The leader key is there.
    pub(super) leader_held: bool,
    /// The `term` key: (value, mod revision); `None`: absent.
    pub(super) term: Option<(Vec<u8>, i64)>,
}

impl Values {
    /// A fresh read of the group, made at store revision `read_at`.
    pub(super) fn from_snapshot(keys: &Keys, snapshot: &[KeyValue], read_at: i64) -> Values {
        let mut values = Values {
            seen: read_at,
            ..Values::default()
        };
        for kv in snapshot {
            values.put(keys, kv);
        }
        values
    }

    /// Take in a batch of watched changes, those made after revision `read` (the read they
    /// follow already holds the others).
    pub(super) fn apply(&mut self, keys: &Keys, changes: &[Change], read: i64) {
        for change in changes.iter().filter(|c| c.revision > read) {
            self.seen = self.seen.max(change.revision);
            match &change.put {
                Some((value, created)) => {
                    self.insert(keys, &change.key, value, *created, change.revision)
                }
                None => {
                    self.keys.remove(&change.key);
                }
            }
        }
    }

    fn put(&mut self, keys: &Keys, kv: &KeyValue) {
        let key = String::from_utf8_lossy(kv.key());
        self.insert(
            keys,
            &key,
            kv.value(),
            kv.create_revision(),
            kv.mod_revision(),
        );
    }

    fn insert(&mut self, keys: &Keys, key: &str, value: &[u8], created: i64, modified: i64) {
        // Keys of a later version, or someone else's: not ours to judge.
        if !matches!(classify(keys, key), Slot::Other) {
            self.keys
                .insert(key.to_owned(), (value.to_vec(), created, modified));
        }
    }

    /// The leader and `term` keys as the view has them, for a campaign.
    pub(super) fn campaign_view(&self, keys: &Keys) -> CampaignView {
        CampaignView {
            revision: self.seen,
            leader_held: self.keys.contains_key(&keys.leader),
            term: self
                .keys
                .get(&keys.term)
                .map(|(value, _, modified)| (value.clone(), *modified)),
        }
    }

    /// The keys, decoded, for the shared policy.
    pub(super) fn reading(&self, keys: &Keys) -> Reading {
        let mut reading = Reading::default();
        for (key, (value, created, _)) in &self.keys {
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
