//! The commands that write: campaign, release, publish, switchover and maintenance.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse};
use tokio::sync::Semaphore;
use tracing::{debug, info, warn};

use super::connect::{CallError, call};
use super::lease::Leaving;
use super::task::GroupTask;
use super::view::CampaignView;
use super::{GroupCfg, Keys, SHUTDOWN_CALL_TIMEOUT};
use crate::store::error::EtcdError;
use crate::store::policy::releasable;
use crate::store::record::{
    self, AddressRecord, FORMAT_VERSION, LeaderRecord, MaintenanceRecord, MemberRecord, TermRecord,
};
use crate::store::{HostId, Op, other_host};

/// A command carried out, with the revision of what it wrote where the group must know it.
pub(super) enum Done {
    /// The key is ours, won at this term, with its claim ([`Op::Campaign`]).
    Campaigned(Option<Won>),
    Released,
    /// The member record: written at this revision, or not (another host holds the key).
    Published(Option<i64>),
    /// The key released and the member record published ([`Done::Published`]'s revision).
    Retired(Option<i64>),
    /// The switchover request, written at this revision.
    Requested(i64),
    Cleared,
    Written,
}

/// A won campaign: the term, the revision the key was created at, and the one the claim
/// was written at (`None`: another host holds this node's member record; nothing written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Won {
    pub(super) term: u64,
    pub(super) revision: i64,
    pub(super) claim: Option<i64>,
}

/// The revisions at which the group wrote the keys bound to its lease that are its own (the
/// leader key, its member record, its switchover request): on a shared lease, what a group
/// that leaves may delete while another group of the same name (a reload's) may have written
/// there too. `None`: not written by this group under its current lease, or not known to be.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Owned {
    pub(super) leader: Option<i64>,
    /// The term the group won the leader key at (`leader` is its create revision).
    pub(super) leader_term: Option<u64>,
    pub(super) member: Option<i64>,
    pub(super) switchover: Option<i64>,
}

impl Owned {
    /// What `done` wrote or deleted.
    pub(super) fn note(&mut self, done: &Done) {
        match done {
            Done::Campaigned(Some(won)) => {
                self.leader = Some(won.revision);
                self.leader_term = Some(won.term);
                if won.claim.is_some() {
                    self.member = won.claim;
                }
            }
            Done::Campaigned(None) | Done::Written => {}
            Done::Released => {
                self.leader = None;
                self.leader_term = None;
            }
            Done::Published(revision) => self.member = *revision,
            Done::Retired(revision) => {
                self.leader = None;
                self.leader_term = None;
                self.member = *revision;
            }
            Done::Requested(revision) => self.switchover = Some(*revision),
            Done::Cleared => self.switchover = None,
        }
    }
}

pub(super) type OpFuture = Pin<Box<dyn Future<Output = (Op, Result<Done, CallError>)> + Send>>;

/// The revision a write was made at.
fn revision_of(
    header: Option<&etcd_client::ResponseHeader>,
    call: &'static str,
) -> Result<i64, CallError> {
    header
        .map(|h| h.revision())
        .ok_or(CallError::Broken(EtcdError::NoHeader { call }))
}

/// Start one command as a future that owns what it needs.
pub(super) fn start_op(
    op: Op,
    client: &Client,
    lease: i64,
    owned: &Owned,
    view: Option<CampaignView>,
    cfg: &GroupCfg,
    gate: Arc<Semaphore>,
) -> OpFuture {
    let mut kv = client.kv_client();
    let owned = *owned;
    let t = cfg.call_timeout;
    let keys = cfg.keys.clone();
    let node = cfg.node.clone();
    let host = cfg.host.clone();
    let (group, lease_ms) = (cfg.group.clone(), cfg.lease_ms);
    Box::pin(async move {
        // Never closed; were it closed, the op goes ahead ungated rather than failing.
        let _permit = gate.acquire_owned().await.ok();
        let result = match &op {
            Op::Campaign {
                record,
                floor,
                claim,
            } => {
                let ask = Ask {
                    rec: record,
                    floor: *floor,
                    claim,
                    ours: host.as_ref(),
                    member_bound: owned.member.is_some(),
                    group: &group,
                    lease_ms,
                };
                campaign(&mut kv, &keys, ask, lease, view, t)
                    .await
                    .map(Done::Campaigned)
            }
            Op::Release { term } => {
                // The key this group created, if it is the one to release.
                let created = owned.leader.filter(|_| owned.leader_term == Some(*term));
                let whose = (node.as_str(), host.as_ref());
                release(&mut kv, &keys, *term, whose, created, t)
                    .await
                    .map(|()| Done::Released)
            }
            Op::Publish(rec) => publish_member(&mut kv, &keys.member, rec, host.as_ref(), lease, t)
                .await
                .map(Done::Published),
            Op::Retire { term, record } => {
                let created = owned.leader.filter(|_| owned.leader_term == Some(*term));
                let whose = (node.as_str(), host.as_ref());
                retire(&mut kv, &keys, *term, record, whose, created, lease, t)
                    .await
                    .map(Done::Retired)
            }
            Op::PutSwitchover(rec) => {
                let put = kv.put(
                    keys.switchover.as_str(),
                    record::encode(rec),
                    Some(PutOptions::new().with_lease(lease)),
                );
                match call("request switchover", t, put).await {
                    Ok(put) => revision_of(put.header(), "request switchover").map(Done::Requested),
                    Err(e) => Err(e),
                }
            }
            Op::ClearSwitchover => {
                let delete = kv.delete(keys.switchover.as_str(), None);
                call("clear switchover", t, delete)
                    .await
                    .map(|_| Done::Cleared)
            }
            Op::SetMaintenance(rec) => set_maintenance(&mut kv, &keys, rec, t)
                .await
                .map(|()| Done::Written),
        };
        (op, result)
    })
}

/// Take the leader key if it is vacant, at a term above every term handed out in the group
/// (the `term` key, and every create revision: the terms of promd versions before the `term`
/// key) and above `floor`, the highest term the campaigner knows of (a store restored from an
/// older snapshot has forgotten the terms handed out since). The key (with its term in the
/// value) and the `term` key are written in one transaction, on the leader key's absence and
/// the `term` key as last seen. `None`: the key is held, or the `term` key cannot be read (it
/// is reported with the view; no term could be trusted). A few lost races in a row end as a
/// broken call, as in [`publish_member`]. With the term, the revision the key was created at.
///
/// The member record claiming the role (`ask.claim`, at the won term) goes in the same
/// transaction when it is bound to our lease (on that condition: a record deleted by hand or
/// rewritten by another host fails it, and the next try writes the claim after the key, as
/// [`publish_member`]): the standbys see the key taken and the role claimed at one revision,
/// and the winner may start its units on the watch event of its own campaign.
///
/// The first transaction is written from the group's `view` (watched up to its revision,
/// which bounds every create revision it saw) when there is one, so a campaign for a key seen
/// vacant takes one round trip; a transaction whose conditions fail reads both keys in the
/// same call, and the next one is written from that.
async fn campaign(
    kv: &mut KvClient,
    keys: &Keys,
    ask: Ask<'_>,
    lease: i64,
    view: Option<CampaignView>,
    t: Duration,
) -> Result<Option<Won>, CallError> {
    let (leader, term_key) = (keys.leader.as_str(), keys.term.as_str());
    let reads = || {
        let mut reads = vec![TxnOp::get(leader, None), TxnOp::get(term_key, None)];
        reads.extend(
            keys.addresses
                .iter()
                .map(|(_, key)| TxnOp::get(key.as_str(), None)),
        );
        reads
    };
    // The address keys as last read: first taken to be free (a released or lapsed holder
    // took them along), so the common campaign still takes one round trip.
    let (mut seen, mut held) = match view {
        Some(view) => (view, vec![None; keys.addresses.len()]),
        None => {
            let answer = call("campaign", t, kv.txn(Txn::new().and_then(reads()))).await?;
            seen_in(answer)?
        }
    };
    // The claim goes in the key's transaction while the record is known bound to our lease
    // (written by this group under it: nobody else's); after a failed transaction it is
    // written on its own, as a publish would.
    let mut claim_in_txn = ask.member_bound;
    for _ in 0..4 {
        if seen.leader_held {
            return Ok(None);
        }
        let (counter, guard) = match &seen.term {
            None => (0, Compare::create_revision(term_key, CompareOp::Equal, 0)),
            Some((value, modified)) => match record::decode::<TermRecord>(value) {
                Ok(counter) => (
                    counter.term,
                    Compare::mod_revision(term_key, CompareOp::Equal, *modified),
                ),
                Err(_) => return Ok(None),
            },
        };
        let revision = u64::try_from(seen.revision).unwrap_or(0);
        let Some(term) = counter.max(ask.floor).max(revision).checked_add(1) else {
            return Ok(None);
        };
        let value = LeaderRecord {
            term: Some(term),
            ..ask.rec.clone()
        };
        let counter = TermRecord {
            v: FORMAT_VERSION,
            term,
        };
        let mut when = vec![Compare::create_revision(leader, CompareOp::Equal, 0), guard];
        let mut writes = vec![
            TxnOp::put(
                leader,
                record::encode(&value),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::put(term_key, record::encode(&counter), None),
        ];
        let address = AddressRecord {
            v: FORMAT_VERSION,
            group: ask.group.to_owned(),
            node: ask.rec.node.clone(),
            host: ask.rec.host.clone(),
            term,
            lease_ms: ask.lease_ms,
        };
        for (i, (ip, key)) in keys.addresses.iter().enumerate() {
            // Not read (yet): taken to be free, which the compare then checks.
            when.push(match held.get(i).and_then(Option::as_ref) {
                None => Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                Some((bytes, modified)) => match address_holder(bytes, ask.group) {
                    // The group's own (its key deleted by hand while the holder lived):
                    // the group's leader key keeps its hosts apart; replace what was read.
                    None => Compare::mod_revision(key.as_str(), CompareOp::Equal, *modified),
                    Some(holder) => {
                        warn!(
                            group = ask.group,
                            address = %ip,
                            "campaign lost: address {ip} is held by {holder} (its key \
                             {key}); retrying while it is"
                        );
                        return Ok(None);
                    }
                },
            });
            writes.push(TxnOp::put(
                key.as_str(),
                record::encode(&address),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        let claim = ask.claim.with_term(term);
        if claim_in_txn {
            when.push(Compare::lease(
                keys.member.as_str(),
                CompareOp::Equal,
                lease,
            ));
            writes.push(TxnOp::put(
                keys.member.as_str(),
                record::encode(&claim),
                Some(PutOptions::new().with_lease(lease)),
            ));
        }
        let txn = Txn::new().when(when).and_then(writes).or_else(reads());
        let written = call("campaign", t, kv.txn(txn)).await?;
        if written.succeeded() {
            let revision = revision_of(written.header(), "campaign")?;
            let claim = if claim_in_txn {
                Some(revision)
            } else {
                publish_member(kv, &keys.member, &claim, ask.ours, lease, t).await?
            };
            return Ok(Some(Won {
                term,
                revision,
                claim,
            }));
        }
        // Someone campaigned in between, the view was behind, or the member record is no
        // longer bound to our lease: what the store holds now, and the claim on its own.
        (seen, held) = seen_in(written)?;
        claim_in_txn = false;
    }
    Err(CallError::Broken(EtcdError::Contended { call: "campaign" }))
}

/// What a campaign asks for ([`Op::Campaign`]).
struct Ask<'a> {
    /// The key's value (the campaign fills in its term).
    rec: &'a LeaderRecord,
    /// The highest term the campaigner knows of.
    floor: u64,
    /// The member record claiming the role (the campaign fills in its term).
    claim: &'a MemberRecord,
    /// This host, as [`publish_member`] takes it.
    ours: Option<&'a HostId>,
    /// The member record was written by this group under its current lease.
    member_bound: bool,
    /// The group's name and lease (ms), as its address keys' values say them.
    group: &'a str,
    lease_ms: u64,
}

/// Who holds an address key whose value is `bytes`, in words; `None` if `group` (the
/// campaigner's) does. An unreadable value blocks like a held key (the leader key's rule:
/// an unreadable holder is a holder), and says how to clear it.
fn address_holder(bytes: &[u8], group: &str) -> Option<String> {
    match record::decode::<AddressRecord>(bytes) {
        Ok(rec) if rec.group == group => None,
        Ok(rec) => Some(format!(
            "group {} on node {} (term {})",
            rec.group, rec.node, rec.term
        )),
        Err(e) => Some(format!(
            "an unreadable value ({e}); delete the key once no host holds the address"
        )),
    }
}

/// The value of an address key and its mod revision, as a campaign read it.
type AddressSeen = Option<(Vec<u8>, i64)>;

/// The leader and `term` keys and the address keys as a campaign's read (a transaction of
/// gets, in that order) found them, at the store's revision then.
fn seen_in(
    answer: etcd_client::TxnResponse,
) -> Result<(CampaignView, Vec<AddressSeen>), CallError> {
    let revision = revision_of(answer.header(), "campaign")?;
    let mut found = answer.op_responses().into_iter().map(|r| match r {
        TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
        _ => None,
    });
    let leader_held = found.next().flatten().is_some();
    let term = found
        .next()
        .flatten()
        .map(|kv| (kv.value().to_vec(), kv.mod_revision()));
    let held = found
        .map(|kv| kv.map(|kv| (kv.value().to_vec(), kv.mod_revision())))
        .collect();
    Ok((
        CampaignView {
            revision,
            leader_held,
            term,
        },
        held,
    ))
}

/// Write our member record under `key`, bound to `lease`, unless another host's promd holds
/// the key: a record under our node name from another host means two hosts share one `node`,
/// and overwriting it would hide that (and let the two release each other's keys). A record
/// of this host's earlier run, of an older promd without a host, or an unreadable one is
/// overwritten. A record another host holds is left as it is, without an error: the group's
/// view shows it, and the runtime refuses to go on. Every write is a compare-and-swap on what was read, so two hosts starting at
/// once cannot both win; a few lost races in a row end as a broken call (the group reads
/// again). The revision the record was written at; `None` if another host holds the key.
pub(super) async fn publish_member(
    kv: &mut KvClient,
    key: &str,
    rec: &MemberRecord,
    ours: Option<&HostId>,
    lease: i64,
    t: Duration,
) -> Result<Option<i64>, CallError> {
    let put = || {
        TxnOp::put(
            key,
            record::encode(rec),
            Some(PutOptions::new().with_lease(lease)),
        )
    };
    // First: already ours (bound to our lease): the common case, one round trip.
    let mut guard = Compare::lease(key, CompareOp::Equal, lease);
    for _ in 0..4 {
        let txn = Txn::new()
            .when([guard])
            .and_then([put()])
            .or_else([TxnOp::get(key, None)]);
        let answer = call("publish member record", t, kv.txn(txn)).await?;
        if answer.succeeded() {
            return revision_of(answer.header(), "publish member record").map(Some);
        }
        let found = answer.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        guard = match found {
            // Nobody's: create it, unless someone does first.
            None => Compare::create_revision(key, CompareOp::Equal, 0),
            Some(kv) => {
                if let Ok(other) = record::decode::<MemberRecord>(kv.value())
                    && other_host(other.host.as_deref(), ours).is_some()
                {
                    return Ok(None);
                }
                // Ours from an earlier run, an older promd's, or unreadable: replace exactly
                // what we read.
                Compare::mod_revision(key, CompareOp::Equal, kv.mod_revision())
            }
        };
    }
    Err(CallError::Broken(EtcdError::Contended {
        call: "publish member record",
    }))
}

/// Delete the leader key `key` if it is ours at `term`: at that term (in its value, or its
/// create revision for a value of an older promd without one), naming
/// `node`, not written on another host (see [`releasable`]). Anything else is someone else's
/// key, or already gone: either way it is no longer ours, and the answer is the same. The
/// delete is a compare-and-swap on what was read.
///
/// `created`: the revision this group's campaign created the key at, when it won it at
/// `term` under its current lease. A key last modified at that revision is what that
/// campaign wrote (etcd hands out each revision once; promd never rewrites a leader key), so
/// it is deleted on that condition alone, in one round trip: the switchover's old active
/// releases without reading first. Otherwise (a key of an earlier run, one someone rewrote, or
/// none) the same call reads what is there, to judge as above.
async fn release(
    kv: &mut KvClient,
    keys: &Keys,
    term: u64,
    (node, host): (&str, Option<&HostId>),
    created: Option<i64>,
    t: Duration,
) -> Result<(), CallError> {
    let key = keys.leader.as_str();
    let found = match created {
        Some(revision) => {
            let mut deletes = vec![TxnOp::delete(key, None)];
            deletes.extend(address_deletes(keys, revision));
            let txn = Txn::new()
                .when([Compare::mod_revision(key, CompareOp::Equal, revision)])
                .and_then(deletes)
                .or_else([TxnOp::get(key, None)]);
            let answer = call("release", t, kv.txn(txn)).await?;
            if answer.succeeded() {
                return Ok(());
            }
            answer.op_responses().into_iter().find_map(|r| match r {
                TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
                _ => None,
            })
        }
        None => call("release", t, kv.get(key, None))
            .await?
            .take_kvs()
            .into_iter()
            .next(),
    };
    let Some(held) = found else {
        return Ok(());
    };
    let ours = record::decode::<LeaderRecord>(held.value()).is_ok_and(|rec| {
        let held_term = rec.term.or(u64::try_from(held.create_revision()).ok());
        held_term == Some(term) && releasable(&rec, node, host)
    });
    if !ours {
        return Ok(());
    }
    // The address keys were written in the transaction that created the key.
    let mut deletes = vec![TxnOp::delete(key, None)];
    deletes.extend(address_deletes(keys, held.create_revision()));
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key,
            CompareOp::Equal,
            held.mod_revision(),
        )])
        .and_then(deletes);
    call("release", t, kv.txn(txn)).await.map(drop)
}

/// Delete the group's address keys that the campaign which created its leader key at
/// `revision` wrote (in that transaction, so at that revision), each on that condition in a
/// transaction of its own: a key since taken by a campaign of another group (once this
/// group's release freed it) or of another host stays.
fn address_deletes(keys: &Keys, revision: i64) -> impl Iterator<Item = TxnOp> + '_ {
    keys.addresses.iter().map(move |(_, key)| {
        TxnOp::txn(
            Txn::new()
                .when([Compare::mod_revision(
                    key.as_str(),
                    CompareOp::Equal,
                    revision,
                )])
                .and_then([TxnOp::delete(key.as_str(), None)]),
        )
    })
}

/// Release the leader key at `term` and publish `rec` (see [`release`] and
/// [`publish_member`]). When this group created the key under its lease (`created`) and the
/// member record is bound to that lease (ours, the common case), both in one transaction: the
/// standbys see the key vacant and the role unclaimed at one revision, which is what they
/// would see after the two writes in turn, a round trip sooner. Otherwise the two in turn.
/// The revision the record was written at, as [`publish_member`].
#[allow(clippy::too_many_arguments)]
async fn retire(
    kv: &mut KvClient,
    keys: &Keys,
    term: u64,
    rec: &MemberRecord,
    whose: (&str, Option<&HostId>),
    created: Option<i64>,
    lease: i64,
    t: Duration,
) -> Result<Option<i64>, CallError> {
    if let Some(revision) = created {
        let txn = Txn::new()
            .when([
                Compare::mod_revision(keys.leader.as_str(), CompareOp::Equal, revision),
                Compare::lease(keys.member.as_str(), CompareOp::Equal, lease),
            ])
            .and_then(
                [
                    TxnOp::delete(keys.leader.as_str(), None),
                    TxnOp::put(
                        keys.member.as_str(),
                        record::encode(rec),
                        Some(PutOptions::new().with_lease(lease)),
                    ),
                ]
                .into_iter()
                .chain(address_deletes(keys, revision))
                .collect::<Vec<_>>(),
            );
        let answer = call("release", t, kv.txn(txn)).await?;
        if answer.succeeded() {
            return revision_of(answer.header(), "release").map(Some);
        }
    }
    release(kv, keys, term, whose, created, t).await?;
    publish_member(kv, &keys.member, rec, whose.1, lease, t).await
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

/// Delete the group's own keys bound to `lease` (the leader key, its member record, its
/// switchover request; the address keys its leader key's campaign wrote) in one transaction,
/// each on its own condition: bound to `lease`, and,
/// unless the group is `alone` on the lease under its name, still at the revision `owned`
/// says the group wrote it at (another group of the same name, opened by a reload beside the
/// one leaving, may have written there since; its keys stay).
pub(super) async fn delete_own(
    kv: &mut KvClient,
    keys: &Keys,
    lease: i64,
    owned: &Owned,
    alone: bool,
    t: Duration,
) -> Result<(), CallError> {
    let mut deletes = Vec::new();
    for (key, revision) in [
        (&keys.leader, owned.leader),
        (&keys.member, owned.member),
        (&keys.switchover, owned.switchover),
    ] {
        let mut when = vec![Compare::lease(key.as_str(), CompareOp::Equal, lease)];
        match (alone, revision) {
            (true, _) => {}
            (false, Some(revision)) => when.push(Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                revision,
            )),
            (false, None) => continue,
        }
        let delete = Txn::new()
            .when(when)
            .and_then([TxnOp::delete(key.as_str(), None)]);
        deletes.push(TxnOp::txn(delete));
    }
    // Never on the lease alone: a group of another name on this host (a reload's rename) may
    // hold the address now, under the same shared lease. At the revision the group's leader
    // key was created at: the one this group won, or, alone under its name, the one bound to
    // this lease that it won without hearing so (an answer lost with the connection; the key
    // goes on the lease condition above, and its addresses must go with it, or another
    // group of this promd keeps the lease, and them, alive: a reviewer's probe).
    let created = match (owned.leader, alone) {
        (Some(revision), _) => Some(revision),
        (None, true) if !keys.addresses.is_empty() => {
            match call("read own leader key", t, kv.get(keys.leader.as_str(), None)).await {
                Ok(mut read) => read
                    .take_kvs()
                    .into_iter()
                    .next()
                    .filter(|held| held.lease() == lease)
                    .map(|held| held.create_revision()),
                Err(e) => {
                    warn!(error = %EtcdError::from(e), "own address keys not deleted: {}", keys.leader);
                    None
                }
            }
        }
        _ => None,
    };
    if let Some(revision) = created {
        deletes.extend(address_deletes(keys, revision));
    }
    if deletes.is_empty() {
        return Ok(());
    }
    call("delete own keys", t, kv.txn(Txn::new().and_then(deletes)))
        .await
        .map(drop)
}

impl GroupTask {
    /// A graceful shutdown while connected, on `lease`: the operator's maintenance change
    /// first, then the group leaves its shared lease. The last group on it revokes it (every
    /// key bound to it goes at once, as one group's lease went at a shutdown before leases
    /// were shared); any other deletes its own keys and leaves the lease to the others.
    pub(super) async fn shutdown(&mut self, client: &Client, lease: i64) {
        let t = self.renew.min(SHUTDOWN_CALL_TIMEOUT);
        let mut kv = client.kv_client();
        // A maintenance change asked for just before the stop is the operator's, not this
        // node's: it must not go with the node.
        if let Some(rec) = self.queue.unwritten_maintenance()
            && let Err(e) = set_maintenance(&mut kv, &self.cfg.keys, rec, t).await
        {
            let error = EtcdError::from(e);
            warn!(group = %self.spec.group, on = rec.on, %error, "maintenance change not written at shutdown");
        }
        let left = self.lease.leave(Leaving::Shutdown);
        let Some(revoke) = left.revoke else {
            match delete_own(&mut kv, &self.cfg.keys, lease, &self.owned, left.alone, t).await {
                Ok(()) => {
                    info!(group = %self.spec.group, "own keys deleted; the shared etcd lease stays with the other groups")
                }
                Err(e) => {
                    warn!(group = %self.spec.group, error = %EtcdError::from(e), "own keys not deleted; they go with the shared lease")
                }
            }
            return;
        };
        // Only our own record (bound to our lease): under our node name there may be another
        // host's, which this promd found and refused to run beside; it is not ours to delete.
        let key = self.cfg.keys.member.as_str();
        let delete_ours = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, revoke)])
            .and_then([TxnOp::delete(key, None)]);
        if let Err(e) = call("delete member record", t, kv.txn(delete_ours)).await {
            debug!(group = %self.spec.group, error = %EtcdError::from(e), "shutdown");
        }
        // Revoking deletes every key bound to the lease at once (the leader key too, should the
        // runtime not have released it): the hand-over does not wait for the lease to run out.
        let mut leases = client.lease_client();
        match call("revoke lease", t, leases.revoke(revoke)).await {
            Ok(_) | Err(CallError::LeaseGone) => {
                info!(group = %self.spec.group, "etcd lease revoked")
            }
            Err(e) => {
                warn!(group = %self.spec.group, error = %EtcdError::from(e), "etcd lease not revoked; it expires on its own")
            }
        }
    }
}
