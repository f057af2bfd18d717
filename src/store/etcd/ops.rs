//! The commands that write: campaign, release, publish, switchover and maintenance.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, KvClient, PutOptions, Txn, TxnOp, TxnOpResponse};
use tracing::{debug, info, warn};

use super::connect::{CallError, Connector, call};
use super::task::GroupTask;
use super::{Keys, SHUTDOWN_CALL_TIMEOUT};
use crate::store::error::EtcdError;
use crate::store::policy::releasable;
use crate::store::record::{
    self, FORMAT_VERSION, LeaderRecord, MaintenanceRecord, MemberRecord, TermRecord,
};
use crate::store::{HostId, Op, other_host};

pub(super) enum Done {
    Campaigned(Option<u64>),
    Released,
    Written,
}

pub(super) type OpFuture = Pin<Box<dyn Future<Output = (Op, Result<Done, CallError>)> + Send>>;

/// Start one command as a future that owns what it needs.
pub(super) fn start_op(op: Op, client: &Client, lease: i64, cfg: &Connector) -> OpFuture {
    let mut kv = client.kv_client();
    let t = cfg.call_timeout;
    let keys = cfg.keys.clone();
    let node = cfg.node.clone();
    let host = cfg.host.clone();
    Box::pin(async move {
        let result = match &op {
            Op::Campaign { record, floor } => campaign(&mut kv, &keys, record, *floor, lease, t)
                .await
                .map(Done::Campaigned),
            Op::Release { term } => release(&mut kv, &keys.leader, *term, &node, host.as_ref(), t)
                .await
                .map(|()| Done::Released),
            Op::Publish(rec) => publish_member(&mut kv, &keys.member, rec, host.as_ref(), lease, t)
                .await
                .map(|()| Done::Written),
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

/// Take the leader key if it is vacant, at a term above every term handed out in the group
/// (the `term` key, and every create revision: the terms of promd versions before the `term`
/// key) and above `floor`, the highest term the campaigner knows of (a store restored from an
/// older snapshot has forgotten the terms handed out since). The key (with its term in the
/// value) and the `term` key are written in one transaction, on the leader key's absence and
/// the `term` key as read. `None`: the key is held, or the `term` key cannot be read (it is
/// reported with the view; no term could be trusted). A few lost races in a row end as a
/// broken call, as in [`publish_member`].
async fn campaign(
    kv: &mut KvClient,
    keys: &Keys,
    rec: &LeaderRecord,
    floor: u64,
    lease: i64,
    t: Duration,
) -> Result<Option<u64>, CallError> {
    let (leader, term_key) = (keys.leader.as_str(), keys.term.as_str());
    for _ in 0..4 {
        let read = Txn::new().and_then([TxnOp::get(leader, None), TxnOp::get(term_key, None)]);
        let answer = call("campaign", t, kv.txn(read)).await?;
        let revision = answer
            .header()
            .and_then(|h| u64::try_from(h.revision()).ok())
            .ok_or(CallError::Broken(EtcdError::NoHeader { call: "campaign" }))?;
        let mut found = answer.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
            _ => None,
        });
        if found.next().flatten().is_some() {
            return Ok(None);
        }
        let (counter, guard) = match found.next().flatten() {
            None => (0, Compare::create_revision(term_key, CompareOp::Equal, 0)),
            Some(held) => match record::decode::<TermRecord>(held.value()) {
                Ok(counter) => (
                    counter.term,
                    Compare::mod_revision(term_key, CompareOp::Equal, held.mod_revision()),
                ),
                Err(_) => return Ok(None),
            },
        };
        let Some(term) = counter.max(floor).max(revision).checked_add(1) else {
            return Ok(None);
        };
        let value = LeaderRecord {
            term: Some(term),
            ..rec.clone()
        };
        let counter = TermRecord {
            v: FORMAT_VERSION,
            term,
        };
        let txn = Txn::new()
            .when([Compare::create_revision(leader, CompareOp::Equal, 0), guard])
            .and_then([
                TxnOp::put(
                    leader,
                    record::encode(&value),
                    Some(PutOptions::new().with_lease(lease)),
                ),
                TxnOp::put(term_key, record::encode(&counter), None),
            ]);
        if call("campaign", t, kv.txn(txn)).await?.succeeded() {
            return Ok(Some(term));
        }
        // Someone campaigned in between: the next read says whether they hold the key.
    }
    Err(CallError::Broken(EtcdError::Contended { call: "campaign" }))
}

/// Write our member record under `key`, bound to `lease`, unless another host's promd holds
/// the key: a record under our node name from another host means two hosts share one `node`,
/// and overwriting it would hide that (and let the two release each other's keys). A record
/// of this host's earlier run, of an older promd without a host, or an unreadable one is
/// overwritten. A record another host holds is left as it is, without an error: the group's
/// view shows it, and the runtime refuses to go on. Every write is a compare-and-swap on what was read, so two hosts starting at
/// once cannot both win; a few lost races in a row end as a broken call (the task reconnects).
pub(super) async fn publish_member(
    kv: &mut KvClient,
    key: &str,
    rec: &MemberRecord,
    ours: Option<&HostId>,
    lease: i64,
    t: Duration,
) -> Result<(), CallError> {
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
            return Ok(());
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
                    return Ok(());
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
async fn release(
    kv: &mut KvClient,
    key: &str,
    term: u64,
    node: &str,
    host: Option<&HostId>,
    t: Duration,
) -> Result<(), CallError> {
    let found = call("release", t, kv.get(key, None)).await?;
    let Some(held) = found.kvs().first() else {
        return Ok(());
    };
    let ours = record::decode::<LeaderRecord>(held.value()).is_ok_and(|rec| {
        let held_term = rec.term.or(u64::try_from(held.create_revision()).ok());
        held_term == Some(term) && releasable(&rec, node, host)
    });
    if !ours {
        return Ok(());
    }
    let txn = Txn::new()
        .when([Compare::mod_revision(
            key,
            CompareOp::Equal,
            held.mod_revision(),
        )])
        .and_then([TxnOp::delete(key, None)]);
    call("release", t, kv.txn(txn)).await.map(drop)
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

impl GroupTask {
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
        // Only our own record (bound to our lease): under our node name there may be another
        // host's, which this promd found and refused to run beside; it is not ours to delete.
        let key = self.cfg.keys.member.as_str();
        let delete_ours = Txn::new()
            .when([Compare::lease(key, CompareOp::Equal, lease)])
            .and_then([TxnOp::delete(key, None)]);
        if let Err(e) = call("delete member record", t, kv.txn(delete_ours)).await {
            debug!(group = %self.spec.group, error = %EtcdError::from(e), "shutdown");
        }
        // Revoking deletes every key bound to the lease at once (the leader key too, should the
        // runtime not have released it): the hand-over does not wait for the lease to run out.
        let mut leases = client.lease_client();
        match call("revoke lease", t, leases.revoke(lease)).await {
            Ok(_) | Err(CallError::LeaseGone) => {
                info!(group = %self.spec.group, "etcd lease revoked")
            }
            Err(e) => {
                warn!(group = %self.spec.group, error = %EtcdError::from(e), "etcd lease not revoked; it expires on its own")
            }
        }
    }
}
