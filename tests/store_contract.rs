//! The store contract: what every backend owes the runtime, tested once and run against each
//! backend, a real three-member etcd cluster (`etcd::…`) and a directory (`dir::…`). Each test
//! starts its own store. Backend-specific behaviour is tested in `tests/etcd_store.rs` and
//! `tests/dir_store.rs`.
//!
//! The contract, as the tests check it:
//! - one winner per vacant key; terms grow with every change of leader; only the holder's
//!   release frees the key; a graceful shutdown frees it at once, a dead or silent holder's
//!   lease expires after the lease counted from its last renewal's send time, not before;
//! - the view: after every (re)connection `Up`, `Renewed`, `Leader`, `Members`, `Switchover`,
//!   `Maintenance` in that order, then each change once;
//! - the edges: `Down` once per outage, campaigns answered at once while down, a release
//!   waits for the store and is done when the lease is lost; `LeaseLost` then `Up` with a new
//!   lease when the lease went meanwhile; queued writes are carried out after a reconnection;
//! - corrupt values: an unreadable leader value blocks the election as
//!   `UNREADABLE_NODE`, unreadable member records are left out with a `Corrupt` event each
//!   (once), an unreadable switchover is none, an unreadable maintenance record reads as on;
//! - maintenance outlives every session; a node name another host holds is never taken over.

#[path = "support/contract/mod.rs"]
mod contract;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use contract::records::{HOST_A, HOST_B, member, member_on};
use contract::{Backend, ClockSteps, Key, Node, Opening, Raw, SOON, secs};
use promd::store::{
    MaintenanceRecord, MemberRecord, RecordError, StoreCommand, StoreEvent, SwitchoverRecord,
    UNREADABLE_NODE, ValueError,
};

/// Run every contract test against one backend, as `MODULE::TEST`.
macro_rules! contract_tests {
    ($module:ident, $backend:ty) => {
        mod $module {
            contract_tests!(@tests $backend;
                five_contenders_one_winner,
                term_grows_with_every_change_of_leader,
                a_campaign_with_a_floor_gets_a_term_above_it_and_the_store_keeps_it,
                a_term_value_with_newer_fields_counts_and_one_of_a_later_version_stops_campaigns,
                a_release_by_a_non_holder_keeps_the_key,
                a_release_of_a_key_rewritten_for_another_node_keeps_it,
                a_retire_frees_the_key_and_says_passive,
                a_won_campaign_claims_the_role_with_the_key_and_a_lost_one_writes_nothing,
                a_switchover_request_is_seen_and_cleared,
                a_graceful_shutdown_hands_over_at_once,
                a_dead_leader_loses_the_key_after_the_lease,
                a_frozen_leader_finds_its_lease_lost,
                a_cut_off_leader_loses_the_key_after_the_lease,
                a_short_cut_keeps_the_lease_and_the_key,
                a_revoked_lease_is_reported_and_replaced,
                unreachable_at_start_is_down_until_reachable,
                an_unreadable_leader_value_blocks_until_it_is_gone,
                a_leader_value_of_a_later_version_is_refused_and_kept,
                values_with_fields_a_newer_promd_added_are_read,
                switchover_and_maintenance_of_a_later_version_are_refused_and_reported,
                unreadable_member_records_are_reported_once_and_left_out,
                an_unreadable_switchover_is_reported_and_ignored,
                maintenance_outlives_the_session_that_set_it,
                a_node_name_held_by_another_host_is_never_taken_over,
                a_refused_duplicate_leaves_the_first_hosts_member_record_at_shutdown,
                a_campaign_is_lost_while_another_group_holds_one_of_its_addresses,
                an_address_is_free_once_its_holders_lease_is_gone,
                a_groups_own_address_key_does_not_block_its_next_holder,
                an_address_stays_held_while_its_holder_may_still_run_its_units,
                a_group_leaving_a_shared_lease_frees_its_addresses,
            );
        }
    };
    (@tests $backend:ty; $($test:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "current_thread")]
            async fn $test() {
                super::$test::<$backend>().await
            }
        )*
    };
}

contract_tests!(etcd, crate::contract::etcd::Etcd);
contract_tests!(dir, crate::contract::dir::Dir);
contract_tests!(etcd_secure, crate::contract::etcd::EtcdSecure);

fn maintenance(on: bool, by: &str) -> MaintenanceRecord {
    MaintenanceRecord {
        v: 1,
        on,
        by: by.to_string(),
    }
}

/// `node`'s record in `members` is the one from `host` with `priority`.
fn shows(members: &[MemberRecord], node: &str, host: &str, priority: i32) -> bool {
    members
        .iter()
        .any(|m| m.node == node && m.host.as_deref() == Some(host) && m.priority == priority)
}

/// Nodes of `group`, up, each with its member record published.
async fn published<B: Backend>(b: &mut B, group: &str, names: &[&str]) -> Vec<Node> {
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(b.node(group, name).await);
    }
    for n in &mut nodes {
        n.up(B::UP).await;
        n.publish();
    }
    for n in &mut nodes {
        n.members_are(SOON, names).await;
    }
    nodes
}

fn a_node<'a>(group: &'a str, name: &'a str, lease: Duration) -> Opening<'a> {
    Opening {
        group,
        name,
        lease,
        host: None,
        addresses: &[],
    }
}

fn with_addresses<'a>(
    group: &'a str,
    name: &'a str,
    lease: Duration,
    addresses: &'a [IpAddr],
) -> Opening<'a> {
    Opening {
        addresses,
        ..a_node(group, name, lease)
    }
}

fn ip(text: &str) -> IpAddr {
    text.parse().expect("an address")
}

fn on_host<'a>(group: &'a str, name: &'a str, lease: Duration, host: &'a str) -> Opening<'a> {
    Opening {
        host: Some(host),
        ..a_node(group, name, lease)
    }
}

// ---------------------------------------------------------------------------------------------
// Election

/// Five nodes campaign for one vacant key at the same moment: exactly one wins, and everyone
/// sees that one as the leader.
async fn five_contenders_one_winner<B: Backend>() {
    let mut b = B::start().await;
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let mut nodes = Vec::new();
    for name in names {
        nodes.push(b.node("race", name).await);
    }
    for n in &mut nodes {
        n.up(B::UP).await;
        n.leader_none(SOON).await;
        n.publish();
    }
    for n in &mut nodes {
        n.members_are(SOON, &names).await;
    }

    for n in &nodes {
        n.campaign();
    }
    let mut winners = Vec::new();
    for n in &mut nodes {
        if let Some(term) = n.campaigned().await {
            winners.push((n.name.clone(), term));
        }
    }
    assert_eq!(winners.len(), 1, "exactly one winner: {winners:?}");
    let (winner, term) = winners.remove(0);
    for n in &mut nodes {
        n.leader_is(SOON, &winner, term).await;
    }
}

/// A campaign carries the campaigner's floor (the highest term it knows to have been handed
/// out, which a store that lost its history no longer knows): the term it wins is above the
/// floor, every node sees the key at that term, and the store's own sequence keeps it, so the
/// next campaign, without a floor, gets a higher term still.
async fn a_campaign_with_a_floor_gets_a_term_above_it_and_the_store_keeps_it<B: Backend>() {
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "floor", &["a", "b"]).await;
    nodes[0].campaign_above(5000);
    let term = nodes[0].campaigned().await.expect("a vacant key is won");
    assert!(term > 5000, "term {term} above the floor 5000");
    for n in &mut nodes {
        n.leader_is(SOON, "a", term).await;
    }
    nodes[0].release(term).await;
    nodes[1].leader_none(SOON).await;
    nodes[1].campaign_above(0);
    let next = nodes[1].campaigned().await.expect("a vacant key is won");
    assert!(next > term, "term {next} after {term}");
    for n in &mut nodes {
        n.leader_is(SOON, "b", next).await;
    }
    // The term is the store's, as written: etcd's `term` key, the dir store's `term` file.
    let kept = b.get("floor", Key::Term).await.expect("the term is kept");
    let kept: serde_json::Value = serde_json::from_slice(&kept).expect("json");
    assert_eq!(
        (kept["v"].as_u64(), kept["term"].as_u64()),
        (Some(1), Some(next))
    );
}

/// The store's term counter as a newer promd of the same format version may write it (with a
/// field this promd does not know) counts; one of a later version is reported and stops every
/// campaign (no term could be trusted), and is never overwritten.
async fn a_term_value_with_newer_fields_counts_and_one_of_a_later_version_stops_campaigns<
    B: Backend,
>() {
    let mut b = B::start().await;
    let newer = br#"{"v":1,"epoch":{"n":3},"term":7000}"#;
    b.put("counter", Key::Term, Raw::Record(newer)).await;
    let mut a = published(&mut b, "counter", &["a"]).await.remove(0);
    let term = a.try_campaign().await.expect("won");
    assert!(term > 7000, "term {term} above the counter 7000");
    a.release(term).await;
    a.leader_none(SOON).await;
    assert!(a.corrupt().is_empty(), "{:?}", a.corrupt());

    let later = br#"{"v":2,"term":1}"#;
    b.put("counter", Key::Term, Raw::Record(later)).await;
    let error = a.corrupt_reported(SOON, &Key::Term.suffix("counter")).await;
    assert_eq!(error, ValueError::Record(RecordError::Version(2)));
    assert_eq!(a.try_campaign().await, None, "no term can be trusted");
    assert_eq!(
        b.get("counter", Key::Term).await.as_deref(),
        Some(&later[..]),
        "never overwritten"
    );
}

/// The term grows with every change of leader, a held key refuses other campaigns, and a
/// released key is reported gone at once.
async fn term_grows_with_every_change_of_leader<B: Backend>() {
    let mut b = B::start().await;
    let mut nodes = Vec::new();
    for name in ["a", "b", "c"] {
        nodes.push(b.node("terms", name).await);
    }
    for n in &mut nodes {
        n.up(B::UP).await;
    }

    let mut last_term = 0;
    let mut release_latency = Vec::new();
    for round in 0..6 {
        let (w, other) = (round % 3, (round + 1) % 3);
        let term = nodes[w].try_campaign().await.expect("a vacant key is won");
        assert!(
            term > last_term,
            "round {round}: term {term} after {last_term}"
        );
        last_term = term;
        let name = nodes[w].name.clone();
        for n in &mut nodes {
            n.leader_is(SOON, &name, term).await;
        }
        assert_eq!(
            nodes[other].try_campaign().await,
            None,
            "a held key is refused"
        );

        let released = nodes[w].release(term).await;
        let seen = nodes[other].leader_none(SOON).await;
        release_latency.push(seen.saturating_duration_since(released));
        for n in &mut nodes {
            n.leader_none(SOON).await;
        }
    }
    let worst = release_latency.iter().max().copied().unwrap_or_default();
    eprintln!("{}: latency after Released: {release_latency:?}", B::NAME);
    assert!(
        worst < B::PROMPT,
        "a released key is seen gone at once: {worst:?}"
    );
}

/// A release by a node that does not hold the key, of the holder's term or another, is
/// answered and deletes nothing; the holder's own release does.
async fn a_release_by_a_non_holder_keeps_the_key<B: Backend>() {
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "rel", &["a", "b"]).await;
    let term = nodes[0].try_campaign().await.expect("won");
    nodes[1].leader_is(SOON, "a", term).await;

    for stale in [term, term - 1, term + 1] {
        nodes[1].release(stale).await;
    }
    let vacant = |e: &StoreEvent| matches!(e, StoreEvent::Leader(None) | StoreEvent::LeaseLost);
    let [a, other] = &mut nodes[..] else {
        unreachable!()
    };
    other.never(B::PROMPT * 2, vacant).await;
    a.never(B::PROMPT / 2, vacant).await;
    assert!(b.get("rel", Key::Leader).await.is_some(), "the key is kept");

    a.release(term).await;
    other.leader_none(SOON).await;
    assert!(b.get("rel", Key::Leader).await.is_none());
}

/// The holder's release of its key after someone rewrote it to name another node (an
/// operator's `etcdctl put`, at the same term) deletes nothing: a release deletes only a key
/// that is still the holder's, however it last learnt the key.
async fn a_release_of_a_key_rewritten_for_another_node_keeps_it<B: Backend>() {
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "rewrite", &["a", "b"]).await;
    let term = nodes[0].try_campaign().await.expect("won");
    nodes[1].leader_is(SOON, "a", term).await;
    let theirs = format!(r#"{{"v":1,"node":"b","priority":100,"term":{term}}}"#);
    b.put("rewrite", Key::Leader, Raw::Record(theirs.as_bytes()))
        .await;
    let written = b.get("rewrite", Key::Leader).await;
    nodes[0]
        .leader_where(SOON, "the key naming b", |l| {
            l.is_some_and(|l| l.node == "b")
        })
        .await;

    nodes[0].release(term).await;
    assert_eq!(
        b.get("rewrite", Key::Leader).await,
        written,
        "the rewritten key is kept"
    );
}

/// A holder that stands down (`Retire`) frees its key and says `passive` in its record, in one
/// write where the store can: the other node sees the key vacant and the role unclaimed, and
/// the key can be won again. A `Retire` of a term the node does not hold deletes nothing.
/// A campaign carries the record that claims the role: won, the store holds it at the won
/// term with the key, with no write of the winner's own; lost, nothing of it is written.
async fn a_won_campaign_claims_the_role_with_the_key_and_a_lost_one_writes_nothing<B: Backend>() {
    use promd::core::Role;
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "claim", &["a", "b"]).await;
    let term = nodes[0].try_campaign().await.expect("won");
    nodes[1].leader_is(SOON, "a", term).await;
    let claimed = |node: &'static str, term: u64| {
        move |m: &[MemberRecord]| {
            m.iter()
                .any(|r| r.node == node && r.role == Role::Promoting && r.term == Some(term))
        }
    };
    nodes[1]
        .members_where(
            SOON,
            "a claims the role at the won term",
            claimed("a", term),
        )
        .await;

    assert_eq!(nodes[1].try_campaign().await, None, "the key is a's");
    // a's next record reaches b with b's own as the store holds it: still passive.
    let mut active = member("a");
    active.role = Role::Active;
    active.term = Some(term);
    nodes[0].send(StoreCommand::Publish(active));
    nodes[1]
        .members_where(SOON, "a active", |m| {
            m.iter().any(|r| r.node == "a" && r.role == Role::Active)
        })
        .await;
    let members = nodes[1].members().unwrap_or_default().to_vec();
    assert!(
        members
            .iter()
            .any(|r| r.node == "b" && r.role == Role::Passive && r.term.is_none()),
        "a lost campaign wrote its claim: {members:?}"
    );
}

async fn a_retire_frees_the_key_and_says_passive<B: Backend>() {
    use promd::core::Role;
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "retire", &["a", "b"]).await;
    let term = nodes[0].try_campaign().await.expect("won");
    let mut claim = member("a");
    claim.role = Role::Active;
    claim.term = Some(term);
    nodes[0].send(StoreCommand::Publish(claim.clone()));
    let claims = |m: &[MemberRecord]| m.iter().any(|r| r.node == "a" && r.role == Role::Active);
    nodes[1]
        .members_where(SOON, "a claims the role", claims)
        .await;
    nodes[1].leader_is(SOON, "a", term).await;

    let passive = MemberRecord {
        role: Role::Passive,
        ..claim
    };
    nodes[1].send(StoreCommand::Retire {
        term,
        record: member("b"),
    });
    nodes[1]
        .wait_for(SOON, "Released", |e| *e == StoreEvent::Released)
        .await;
    assert!(
        b.get("retire", Key::Leader).await.is_some(),
        "not b's to free"
    );

    nodes[0].send(StoreCommand::Retire {
        term,
        record: passive,
    });
    nodes[0]
        .wait_for(SOON, "Released", |e| *e == StoreEvent::Released)
        .await;
    nodes[1].leader_none(SOON).await;
    nodes[1]
        .members_where(SOON, "a passive", |m| {
            m.iter().any(|r| r.node == "a" && r.role == Role::Passive) && !claims(m)
        })
        .await;
    let next = nodes[1].try_campaign().await.expect("the key is free");
    assert!(next > term, "new term {next} > {term}");
}

/// A switchover request is seen by every session, and so is its removal.
async fn a_switchover_request_is_seen_and_cleared<B: Backend>() {
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "sw", &["a", "b"]).await;
    let request = SwitchoverRecord {
        v: 1,
        to: "a".into(),
        from: "b".into(),
    };
    let asked = Instant::now();
    nodes[0].send(StoreCommand::RequestSwitchover(request.clone()));
    for n in &mut nodes {
        let wanted = StoreEvent::Switchover(Some(request.clone()));
        let (at, _) = n.wait_for(SOON, "the request", |e| *e == wanted).await;
        assert!(
            at - asked < B::PROMPT,
            "{}: seen {:?} after",
            n.name,
            at - asked
        );
    }
    nodes[1].send(StoreCommand::ClearSwitchover);
    for n in &mut nodes {
        n.wait_for(SOON, "no request", |e| *e == StoreEvent::Switchover(None))
            .await;
    }
}

/// A graceful shutdown deletes the leaving node's keys at once: the others see the key
/// vacant and the member gone without waiting for a lease, and the task ends.
async fn a_graceful_shutdown_hands_over_at_once<B: Backend>() {
    let mut b = B::start().await;
    let mut nodes = published(&mut b, "bye", &["a", "b"]).await;
    let term = nodes[1].try_campaign().await.expect("won");
    let [a, leaving] = &mut nodes[..] else {
        unreachable!()
    };
    a.leader_is(SOON, "b", term).await;

    let sent = Instant::now();
    leaving.send(StoreCommand::Shutdown);
    let vacant = a.leader_none(SOON).await;
    a.members_are(SOON, &["a"]).await;
    let took = vacant - sent;
    eprintln!("{}: key gone {took:?} after the shutdown", B::NAME);
    assert!(took < B::HANDOVER, "shutdown hands over at once: {took:?}");
    leaving.ended(SOON).await;
    assert!(b.get("bye", Key::Member("b")).await.is_none());
    assert!(b.get("bye", Key::Leader).await.is_none());
}

// ---------------------------------------------------------------------------------------------
// Leases

/// The key of a leader that dies without a word (its task dropped, like SIGKILL) is freed
/// exactly when its lease runs out, counted from its last renewal's send time.
async fn a_dead_leader_loses_the_key_after_the_lease<B: Backend>() {
    let mut b = B::start().await;
    let mut standby = published(&mut b, "dead", &["standby"]).await.remove(0);
    let mut leader = b.detached("dead", "dead").await;
    leader.up(B::UP).await;
    leader.publish();
    let term = leader.try_campaign().await.expect("won");
    standby.leader_is(SOON, "dead", term).await;

    // Kill it right after a fresh renewal.
    leader.skip();
    leader.renewed(B::LEASE).await;
    let clock = ClockSteps::start();
    leader.kill();
    leader.drain();
    let last = *leader.renewals().iter().max().expect("renewed");

    let gone = standby.leader_none(B::LEASE + B::EXPIRY_SLACK + SOON).await;
    // On the store's clock: a realtime step moves a wall-clock lease's end by the step.
    let after = clock.on_store_clock::<B>(gone - last);
    eprintln!(
        "{}: key gone {after:?} after the last renewal was sent (realtime stepped {} µs meanwhile)",
        B::NAME,
        clock.stepped_us()
    );
    assert!(after >= B::LEASE, "the key outlived no lease: {after:?}");
    assert!(
        after <= B::LEASE + B::EXPIRY_SLACK,
        "an expired lease frees the key promptly: {after:?}"
    );
    standby.members_are(SOON, &["standby"]).await;
    let next = standby.try_campaign().await.expect("an expired key is won");
    assert!(next > term);
}

/// A leader frozen (like SIGSTOP) past its lease loses the key; thawed, it finds its lease
/// lost, says so, takes a new one and is up again, seeing the new leader.
async fn a_frozen_leader_finds_its_lease_lost<B: Backend>() {
    let mut b = B::start().await;
    let mut standby = published(&mut b, "frozen", &["standby"]).await.remove(0);
    let mut leader = b.detached("frozen", "frozen").await;
    leader.up(B::UP).await;
    let term = leader.try_campaign().await.expect("won");
    standby.leader_is(SOON, "frozen", term).await;
    leader.skip();
    leader.renewed(B::LEASE).await;
    let frozen_for = B::LEASE + B::EXPIRY_SLACK + secs(0.5);
    leader.freeze(frozen_for);

    standby.leader_none(B::LEASE + B::EXPIRY_SLACK + SOON).await;
    let taken = standby
        .try_campaign()
        .await
        .expect("the frozen key expired");
    assert!(taken > term);

    leader.lease_lost(frozen_for + SOON).await;
    leader.up(SOON).await;
    leader.renewed(SOON).await;
    leader.leader_is(SOON, "standby", taken).await;
}

/// A leader cut off from the store keeps the key exactly as long as the lease counted from
/// the send time of its last acknowledged renewal, and not much longer. Meanwhile it is down,
/// answers campaigns at once, keeps beating, and holds a release back. Back in touch: its
/// lease is lost (and with it the key, so the release is done), it is up with a new lease,
/// and the key is free.
async fn a_cut_off_leader_loses_the_key_after_the_lease<B: Backend>() {
    let mut b = B::start().await;
    let mut leader = b.node("cut", "lead").await;
    let mut other = b.node("cut", "other").await;
    leader.up(B::UP).await;
    other.up(B::UP).await;
    let term = leader.try_campaign().await.expect("won");
    other.leader_is(SOON, "lead", term).await;
    // A couple of renewals, so the cut falls in the steady state.
    for _ in 0..2 {
        leader.renewed(B::LEASE).await;
    }
    let clock = ClockSteps::start();

    b.cut(leader.link).await;
    let cut_at = Instant::now();
    let gone = other.leader_none(B::LEASE + B::EXPIRY_SLACK + SOON).await;
    let (down_at, why) = leader.down(SOON).await;
    eprintln!("{}: down: {why}", B::NAME);
    leader.drain();
    let last_sent = *leader.renewals().iter().max().expect("renewed");
    assert!(last_sent <= cut_at, "no renewal gets through the cut");
    // On the store's clock: a realtime step moves a wall-clock lease's end by the step.
    let held = clock.on_store_clock::<B>(gone - last_sent);
    eprintln!(
        "{}: key gone {held:?} after the last renewal was sent (lease {:?}, realtime stepped {} µs meanwhile); Down {:?} after it",
        B::NAME,
        B::LEASE,
        clock.stepped_us(),
        down_at - last_sent
    );
    assert!(held >= B::LEASE, "the key outlived no lease: {held:?}");
    assert!(
        held <= B::LEASE + B::EXPIRY_SLACK,
        "an expired lease frees the key promptly: {held:?}"
    );
    assert!(
        down_at - last_sent < B::LEASE,
        "Down reported {:?} after the last renewal",
        down_at - last_sent
    );
    // Never told the key was gone before it was down: a cut-off node knows nothing.
    let before_down = leader.events_since(cut_at);
    assert!(
        !before_down
            .iter()
            .take_while(|e| !matches!(e, StoreEvent::Down(_)))
            .any(|e| matches!(e, StoreEvent::Leader(None) | StoreEvent::Members(_))),
        "{before_down:?}"
    );

    let asked = Instant::now();
    assert_eq!(leader.try_campaign().await, None);
    assert!(asked.elapsed() < secs(0.2), "answered at once while down");
    let age = leader.progress.age().expect("beaten");
    assert!(age < B::LEASE / 3, "progress beaten {age:?} ago");
    // A release cannot be confirmed while cut off: no answer until the store says more.
    leader.send(StoreCommand::Release { term });
    leader.watch_for(secs(0.5)).await;
    assert!(
        !leader.log.iter().any(|(_, e)| *e == StoreEvent::Released),
        "Released while unreachable"
    );

    b.heal(leader.link).await;
    leader.lease_lost(SOON).await;
    leader
        .wait_for(SOON, "Released", |e| *e == StoreEvent::Released)
        .await;
    leader.up(SOON).await;
    leader.renewed(SOON).await;
    leader.leader_none(SOON).await;
    let next = leader.try_campaign().await.expect("the key is free again");
    assert!(next > term, "new term {next} > {term}");
}

/// A cut shorter than the lease costs nothing: the session is down, then up again with the
/// same lease (no `LeaseLost`) and tells the whole view in the contract's order; the key and
/// its term survive, and a record published while cut off is written.
async fn a_short_cut_keeps_the_lease_and_the_key<B: Backend>() {
    let mut b = B::start().await;
    let lease = B::LEASE * 3;
    let (store, link) = b.link().await;
    let mut leader = Node::open(store.as_ref(), link, a_node("blip", "lead", lease));
    let (store, link) = b.link().await;
    let mut other = Node::open(store.as_ref(), link, a_node("blip", "other", lease));
    leader.up(B::UP).await;
    other.up(B::UP).await;
    let term = leader.try_campaign().await.expect("won");
    other.leader_is(SOON, "lead", term).await;

    b.cut(leader.link).await;
    let cut_at = Instant::now();
    let (down_at, _) = leader.down(lease).await;
    leader.publish();
    leader.drain();
    let mark = leader.log.len();
    b.heal(leader.link).await;
    let back = leader.up(SOON).await;
    leader.renewed(SOON).await;
    eprintln!(
        "{}: down {:?} after the cut, up again {:?} after it (lease {lease:?})",
        B::NAME,
        down_at - cut_at,
        back - cut_at
    );
    leader.leader_is(SOON, "lead", term).await;
    let order = leader.kinds_since(mark);
    assert_eq!(
        order.get(..5),
        Some(&["Up", "Leader", "Members", "Switchover", "Maintenance"][..]),
        "{order:?}"
    );
    assert!(
        !leader.log.iter().any(|(_, e)| *e == StoreEvent::LeaseLost),
        "the lease survived a short cut"
    );
    other.watch_for(secs(0.5)).await;
    assert!(
        !other
            .events_since(cut_at)
            .iter()
            .any(|e| matches!(e, StoreEvent::Leader(None))),
        "the key never went away"
    );
    assert_eq!(other.try_campaign().await, None);
    other.members_are(SOON, &["lead"]).await;
}

/// A lease ended behind a session's back (as if it had expired) frees its keys for everyone
/// at once; the session notices at its next renewal (`LeaseLost`), takes a new lease, writes
/// its member record again and is `Up`.
async fn a_revoked_lease_is_reported_and_replaced<B: Backend>() {
    let mut b = B::start().await;
    let mut a = b.node("revoke", "a").await;
    let mut other = b.node("revoke", "b").await;
    a.up(B::UP).await;
    other.up(B::UP).await;
    a.publish();
    let term = a.try_campaign().await.expect("won");
    other.leader_is(SOON, "a", term).await;
    other.members_are(SOON, &["a"]).await;

    let old = b.lease_of("revoke", "a").await.expect("a lease");
    b.revoke("revoke", "a").await;
    let revoked = Instant::now();
    let gone = other.leader_none(SOON).await;
    assert!(
        gone - revoked < B::PROMPT,
        "watch-driven: {:?}",
        gone - revoked
    );
    let lost = a.lease_lost(B::LEASE).await;
    assert!(
        lost - revoked <= B::LEASE / 3 + B::PROMPT,
        "noticed at the next renewal: {:?}",
        lost - revoked
    );
    a.up(SOON).await;
    a.renewed(SOON).await;
    other.members_are(SOON, &["a"]).await;
    let new = b.lease_of("revoke", "a").await.expect("a lease");
    assert_ne!(new, old, "the record is bound to the new lease");
    let next = a.try_campaign().await.expect("won again");
    assert!(next > term);
}

/// A store unreachable from the start: `Down` once however often the backend retries,
/// campaigns answered at once, the task keeps beating; once reachable, `Up`, and the member
/// record published meanwhile is written.
async fn unreachable_at_start_is_down_until_reachable<B: Backend>() {
    let mut b = B::start().await;
    let (store, link) = b.link().await;
    b.cut(link).await;
    let mut a = Node::open(store.as_ref(), link, a_node("late", "a", B::LEASE));
    let (_, why) = a.down(SOON).await;
    eprintln!("{}: {why}", B::NAME);
    let asked = Instant::now();
    assert_eq!(a.try_campaign().await, None, "nothing is won while down");
    assert!(asked.elapsed() < secs(0.2), "answered at once while down");
    a.publish();
    a.never(B::LEASE, |e| *e == StoreEvent::Up).await;
    // The tasks beat at least every half lease (the agent takes a task silent for a whole
    // lease as hung); the margin is for the scheduler.
    let age = a.progress.age().expect("beaten");
    assert!(
        age < B::LEASE / 2 + B::PROMPT,
        "progress beaten {age:?} ago while down"
    );
    let downs = a
        .log
        .iter()
        .filter(|(_, e)| matches!(e, StoreEvent::Down(_)))
        .count();
    assert_eq!(
        downs, 1,
        "Down is reported once per outage, not per attempt"
    );

    b.heal(link).await;
    a.up(SOON).await;
    a.members_are(SOON, &["a"]).await;
}

// ---------------------------------------------------------------------------------------------
// Corrupt values

/// A leader value that is not promd's is reported and still blocks the election, at the term
/// the store gives it; another group's keys are not this group's business. Once the value is
/// gone, the election is open again.
async fn an_unreadable_leader_value_blocks_until_it_is_gone<B: Backend>() {
    let mut b = B::start().await;
    let term = b
        .put("bad", Key::Leader, Raw::Bytes(b"not json at all"))
        .await;
    b.put("bad2", Key::Leader, Raw::Bytes(b"x")).await;

    let mut a = b.node("bad", "good").await;
    a.up(B::UP).await;
    a.leader_where(SOON, "the unreadable leader", |l| {
        l.is_some_and(|l| l.node == UNREADABLE_NODE && l.term == term)
    })
    .await;
    let leader_key = Key::Leader.suffix("bad");
    let corrupt = a.corrupt();
    assert_eq!(corrupt.len(), 1, "{corrupt:?}");
    let (key, error) = corrupt[0];
    assert!(key.ends_with(&leader_key), "{key}");
    assert!(
        matches!(error, ValueError::Record(RecordError::Json(_))),
        "{error:?}"
    );
    assert!(error.to_string().contains("not promd JSON"), "{error}");
    assert_eq!(
        a.try_campaign().await,
        None,
        "an unreadable leader is a leader"
    );

    b.delete("bad", Key::Leader).await;
    a.leader_none(SOON).await;
    let term = a.try_campaign().await.expect("won");
    a.leader_is(SOON, "good", term).await;
}

/// A leader value of a later format version is refused (never trusted) and never overwritten.
async fn a_leader_value_of_a_later_version_is_refused_and_kept<B: Backend>() {
    let mut b = B::start().await;
    let newer = br#"{"v":2,"node":"x","priority":1}"#;
    let term = b.put("newer", Key::Leader, Raw::Record(newer)).await;
    let stored = b.get("newer", Key::Leader).await;

    let mut a = b.node("newer", "a").await;
    a.up(B::UP).await;
    let key = Key::Leader.suffix("newer");
    let error = a.corrupt_reported(SOON, &key).await;
    assert_eq!(error, ValueError::Record(RecordError::Version(2)));
    assert!(error.to_string().contains("format version 2"), "{error}");
    a.leader_where(SOON, "the unreadable leader", |l| {
        l.is_some_and(|l| l.node == UNREADABLE_NODE && l.term == term)
    })
    .await;
    assert_eq!(a.try_campaign().await, None);
    assert_eq!(
        b.get("newer", Key::Leader).await,
        stored,
        "never overwritten"
    );
}

/// A rolling upgrade: values that a newer promd of the same format version wrote, with fields
/// this promd does not know (in the records, and in the dir store's envelopes), are read for
/// what they say, and none is reported corrupt (docs/store-format.md, rule 1).
async fn values_with_fields_a_newer_promd_added_are_read<B: Backend>() {
    let mut b = B::start().await;
    let g = "upgrade";
    let leader = br#"{"v":1,"node":"x","priority":5,"zone":"eu-1","since":[2026,12]}"#;
    b.put(g, Key::Leader, Raw::Extended(leader)).await;
    let mut y = serde_json::to_value(member("y")).expect("json");
    y["zone"] = "eu-1".into();
    y["weights"] = serde_json::json!({"cpu": 2, "io": null});
    let y = serde_json::to_vec(&y).expect("json");
    b.put(g, Key::Member("y"), Raw::Extended(&y)).await;
    let switchover = br#"{"v":1,"to":"a","from":"y","why":"drain"}"#;
    b.put(g, Key::Switchover, Raw::Extended(switchover)).await;
    let on = br#"{"v":1,"on":true,"by":"y","until":"2026-12-02T00:00:00Z"}"#;
    b.put(g, Key::Maintenance, Raw::Extended(on)).await;

    let mut a = b.node(g, "a").await;
    a.up(B::UP).await;
    a.publish();
    a.leader_where(SOON, "Leader(x)", |l| l.is_some_and(|l| l.node == "x"))
        .await;
    a.members_are(SOON, &["a", "y"]).await;
    let y = a
        .members()
        .and_then(|m| m.iter().find(|r| r.node == "y").cloned());
    assert_eq!(y, Some(member("y")), "what a newer promd's record says");
    a.wait_for(
        SOON,
        "the newer switchover request",
        |e| matches!(e, StoreEvent::Switchover(Some(s)) if s.to == "a" && s.from == "y"),
    )
    .await;
    let (_, maintenance) = a.next_maintenance(SOON).await;
    assert_eq!(maintenance, Some(self::maintenance(true, "y")));
    // Unreadable values are reported before the view that leaves them out.
    assert!(
        a.corrupt().is_empty(),
        "nothing is corrupt: {:?}",
        a.corrupt()
    );
}

/// A switchover request and a maintenance record of a later format version are reported with
/// the version, and never trusted: the request is no request, maintenance reads as on (the
/// safe reading), by nobody known (docs/store-format.md, rule 3).
async fn switchover_and_maintenance_of_a_later_version_are_refused_and_reported<B: Backend>() {
    let mut b = B::start().await;
    let g = "later";
    let switchover = br#"{"v":2,"to":"a","from":"y"}"#;
    b.put(g, Key::Switchover, Raw::Record(switchover)).await;
    let off = br#"{"v":2,"on":false,"by":"y"}"#;
    b.put(g, Key::Maintenance, Raw::Record(off)).await;

    let mut a = b.node(g, "a").await;
    a.up(B::UP).await;
    a.wait_for(SOON, "Switchover(None)", |e| {
        *e == StoreEvent::Switchover(None)
    })
    .await;
    let (_, maintenance) = a.next_maintenance(SOON).await;
    assert_eq!(maintenance, Some(self::maintenance(true, UNREADABLE_NODE)));
    // Reported before the view that leaves them out.
    let corrupt = a.corrupt();
    for key in [Key::Switchover, Key::Maintenance] {
        let suffix = key.suffix(g);
        let error = corrupt
            .iter()
            .find(|(k, _)| k.ends_with(&suffix))
            .map(|(_, e)| *e);
        assert_eq!(
            error,
            Some(&ValueError::Record(RecordError::Version(2))),
            "{key:?}: {corrupt:?}"
        );
        assert_eq!(
            error.map(ToString::to_string).unwrap_or_default(),
            "format version 2 is not supported (this promd reads version 1)"
        );
    }
}

/// Unreadable, newer and mislabelled member records are left out of `Members`, each reported
/// once however often the group is read; readable ones are members.
async fn unreadable_member_records_are_reported_once_and_left_out<B: Backend>() {
    let mut b = B::start().await;
    let json = |r: &MemberRecord| serde_json::to_vec(r).expect("json");
    let mut newer = serde_json::to_value(member("future")).expect("json");
    newer["v"] = 2.into();
    let newer = serde_json::to_vec(&newer).expect("json");
    b.put("mem", Key::Member("garbage"), Raw::Bytes(b"{")).await;
    b.put("mem", Key::Member("future"), Raw::Record(&newer))
        .await;
    let liar = json(&member("someone"));
    b.put("mem", Key::Member("liar"), Raw::Record(&liar)).await;
    let fine = json(&member("fine"));
    b.put("mem", Key::Member("fine"), Raw::Record(&fine)).await;

    let mut a = b.node("mem", "a").await;
    a.up(B::UP).await;
    a.publish();
    a.members_are(SOON, &["a", "fine"]).await;
    a.skip();
    a.never(
        B::PROMPT * 2,
        |e| matches!(e, StoreEvent::Members(m) if m.len() != 2),
    )
    .await;
    let corrupt = a.corrupt();
    assert_eq!(corrupt.len(), 3, "each reported once: {corrupt:?}");
    let error = |node: &str| {
        let key = Key::Member(node).suffix("mem");
        corrupt
            .iter()
            .find(|(k, _)| k.ends_with(&key))
            .map(|(_, e)| (*e).clone())
            .unwrap_or_else(|| panic!("{node} not reported: {corrupt:?}"))
    };
    assert!(matches!(
        error("garbage"),
        ValueError::Record(RecordError::Json(_))
    ));
    assert_eq!(error("future"), ValueError::Record(RecordError::Version(2)));
    assert_eq!(
        error("liar"),
        ValueError::WrongNode {
            record: "someone".into(),
            key: "liar".into()
        }
    );
    assert!(error("liar").to_string().contains("names node \"someone\""));
}

/// An unreadable switchover request, written while a session watches or found by a new
/// one, is reported and is no request.
async fn an_unreadable_switchover_is_reported_and_ignored<B: Backend>() {
    let mut b = B::start().await;
    let mut a = published(&mut b, "swbad", &["a"]).await.remove(0);
    let key = Key::Switchover.suffix("swbad");
    b.put("swbad", Key::Switchover, Raw::Bytes(b"{}")).await;
    let error = a.corrupt_reported(SOON, &key).await;
    assert!(
        matches!(error, ValueError::Record(RecordError::Invalid(_))),
        "{error:?}"
    );

    let mut c = b.node("swbad", "c").await;
    c.up(B::UP).await;
    c.corrupt_reported(SOON, &key).await;
    c.wait_for(SOON, "Switchover(None)", |e| {
        *e == StoreEvent::Switchover(None)
    })
    .await;
    for n in [&a, &c] {
        assert!(
            !n.log
                .iter()
                .any(|(_, e)| matches!(e, StoreEvent::Switchover(Some(_)))),
            "{}: an unreadable request is no request",
            n.name
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Maintenance and node names

/// Maintenance mode is bound to no lease: set by one session, seen by every session of the
/// group, still there after its setter shut down, reported to a new session after
/// `Switchover` (in the contract's order), and cleared by anyone. An unreadable value is
/// reported and taken as on; clearing deletes it too. A change asked for right before a
/// shutdown is written before the session leaves.
async fn maintenance_outlives_the_session_that_set_it<B: Backend>() {
    let mut b = B::start().await;
    let mut a = b.node("maint", "a").await;
    let mut other = b.node("maint", "b").await;
    for n in [&mut a, &mut other] {
        n.up(B::UP).await;
        assert_eq!(n.next_maintenance(SOON).await.1, None, "off at first");
    }
    a.publish();
    other.members_are(SOON, &["a"]).await;

    let on = maintenance(true, "a");
    a.send(StoreCommand::SetMaintenance(on.clone()));
    for n in [&mut a, &mut other] {
        assert_eq!(n.next_maintenance(SOON).await.1, Some(on.clone()));
    }
    other.drain();
    let mark = other.log.len();

    // A leaves: its keys go, the task ends; the maintenance value stays.
    a.send(StoreCommand::Shutdown);
    a.ended(SOON).await;
    assert!(b.get("maint", Key::Member("a")).await.is_none());
    other.members_are(SOON, &[]).await;
    assert!(
        !other.kinds_since(mark).contains(&"Maintenance"),
        "a's leaving changed no maintenance: {:?}",
        other.dump(mark)
    );
    assert!(
        b.get("maint", Key::Maintenance).await.is_some(),
        "maintenance outlived a's session"
    );

    // A new session: told after connecting, in the contract's order.
    let mut c = b.node("maint", "c").await;
    c.up(B::UP).await;
    assert_eq!(c.next_maintenance(SOON).await.1, Some(on.clone()));
    let order = c.kinds_since(0);
    assert_eq!(
        order.get(..5),
        Some(&["Up", "Leader", "Members", "Switchover", "Maintenance"][..]),
        "{order:?}"
    );

    let off_sent = Instant::now();
    c.send(StoreCommand::SetMaintenance(maintenance(false, "c")));
    for n in [&mut other, &mut c] {
        let (at, m) = n.next_maintenance(SOON).await;
        assert_eq!(m, None, "{}", n.name);
        assert!(at >= off_sent, "{}: off before it was asked for", n.name);
    }
    assert!(
        b.get("maint", Key::Maintenance).await.is_none(),
        "off is absence"
    );

    // An unreadable value: reported, and taken as on, by running sessions and a new one.
    let key = Key::Maintenance.suffix("maint");
    b.put("maint", Key::Maintenance, Raw::Bytes(b"not json"))
        .await;
    let unreadable = Some(maintenance(true, UNREADABLE_NODE));
    for n in [&mut other, &mut c] {
        let error = n.corrupt_reported(SOON, &key).await;
        assert!(error.to_string().contains("not promd JSON"), "{error}");
        assert_eq!(n.next_maintenance(SOON).await.1, unreadable, "{}", n.name);
    }
    let mut d = b.node("maint", "d").await;
    d.up(B::UP).await;
    d.corrupt_reported(SOON, &key).await;
    assert_eq!(d.next_maintenance(SOON).await.1, unreadable);
    // Turning maintenance off clears an unreadable value too.
    d.send(StoreCommand::SetMaintenance(maintenance(false, "d")));
    for n in [&mut other, &mut c, &mut d] {
        assert_eq!(n.next_maintenance(SOON).await.1, None, "{}", n.name);
    }
    assert!(b.get("maint", Key::Maintenance).await.is_none());

    // Asked for right before a shutdown (behind another write, so that it is likely still
    // queued): written before the session leaves.
    let on_d = maintenance(true, "d");
    d.publish();
    d.send(StoreCommand::SetMaintenance(on_d.clone()));
    d.send(StoreCommand::Shutdown);
    d.ended(SOON).await;
    assert!(
        b.get("maint", Key::Maintenance).await.is_some(),
        "written before d left"
    );
    assert_eq!(other.next_maintenance(SOON).await.1, Some(on_d));
}

/// Two hosts configured with one `node`: the second host's promd neither overwrites the
/// first's member record nor releases its leader key, so every view keeps showing the first
/// host's record (and the runtime of the second, seeing its node's record written on another
/// host, refuses to run). A later run on the first host itself, whose first run's lease is
/// still alive as after a kill -9, replaces the record at once.
async fn a_node_name_held_by_another_host_is_never_taken_over<B: Backend>() {
    let mut b = B::start().await;
    let lease = B::LEASE;
    let mut a = b.node_with(on_host("dup", "n1", lease, HOST_A)).await;
    a.up(B::UP).await;
    a.send(StoreCommand::Publish(member_on("n1", HOST_A, 100)));
    a.members_where(SOON, "n1 from host A", |m| shows(m, "n1", HOST_A, 100))
        .await;
    a.campaign_on(Some(HOST_A));
    let term = a.campaigned().await.expect("won");

    // Published before the session is up, and again once up.
    let mut other = b.node_with(on_host("dup", "n1", lease, HOST_B)).await;
    other.send(StoreCommand::Publish(member_on("n1", HOST_B, 50)));
    other.up(B::UP).await;
    other.send(StoreCommand::Publish(member_on("n1", HOST_B, 51)));
    other
        .members_where(SOON, "n1 from host A in B's view", |m| {
            shows(m, "n1", HOST_A, 100)
        })
        .await;
    other
        .leader_where(SOON, "n1 of host A", |l| {
            l.is_some_and(|l| l.term == term && l.host.as_deref() == Some(HOST_A))
        })
        .await;
    other.release(term).await;
    let vacant = |e: &StoreEvent| matches!(e, StoreEvent::Leader(None) | StoreEvent::LeaseLost);
    other.never(secs(0.5), vacant).await;
    a.never(secs(0.1), vacant).await;
    for n in [&a, &other] {
        let overwritten = n.log.iter().any(|(_, e)| {
            matches!(e, StoreEvent::Members(m) if m.iter().any(|r| r.host.as_deref() == Some(HOST_B)))
        });
        assert!(
            !overwritten,
            "{}: saw host B's record: {:#?}",
            n.name,
            n.dump(0)
        );
    }
    let stored = b.get("dup", Key::Member("n1")).await.unwrap_or_default();
    let stored = String::from_utf8_lossy(&stored);
    assert!(
        stored.contains(HOST_A) && !stored.contains(HOST_B),
        "{stored}"
    );

    // The same host again (a restarted promd), while the first run's lease still lives.
    let mut again = b.node_with(on_host("dup", "n1", lease, HOST_A)).await;
    again.send(StoreCommand::Publish(member_on("n1", HOST_A, 70)));
    again.up(B::UP).await;
    again
        .members_where(SOON, "the new run's record", |m| shows(m, "n1", HOST_A, 70))
        .await;
}

/// A refused duplicate leaves the first host's member record alone when it shuts down. The
/// second host's promd (same `node`, another machine) finds the first host's record, refuses
/// and shuts its store session down; that shutdown must delete only a record of its own. Were
/// the first host's record deleted, the first host would drop out of every view (standbys,
/// `promctl status`, demote) without knowing, and the duplicate's next start would find the
/// key free, write its own record there, and make the legitimate host refuse and exit.
async fn a_refused_duplicate_leaves_the_first_hosts_member_record_at_shutdown<B: Backend>() {
    let mut b = B::start().await;
    let lease = B::LEASE;
    let mut a = b.node_with(on_host("dup2", "n1", lease, HOST_A)).await;
    a.send(StoreCommand::Publish(member_on("n1", HOST_A, 100)));
    a.up(B::UP).await;
    a.members_where(SOON, "n1 from host A", |m| shows(m, "n1", HOST_A, 100))
        .await;

    let mut other = b.node_with(on_host("dup2", "n1", lease, HOST_B)).await;
    other.send(StoreCommand::Publish(member_on("n1", HOST_B, 50)));
    other.up(B::UP).await;
    other
        .members_where(SOON, "n1 from host A in B's view", |m| {
            shows(m, "n1", HOST_A, 100)
        })
        .await;
    // B's runtime refuses: it shuts its session down, as on SIGTERM.
    other.send(StoreCommand::Shutdown);
    other.ended(SOON).await;

    let stored = b.get("dup2", Key::Member("n1")).await;
    let stored = stored.map(|v| String::from_utf8_lossy(&v).into_owned());
    assert!(
        stored.as_deref().is_some_and(|v| v.contains(HOST_A)),
        "host A's member record after B's shutdown: {stored:?}"
    );
    a.watch_for(secs(0.3)).await;
    a.members_where(secs(1.0), "n1 from host A still in A's view", |m| {
        shows(m, "n1", HOST_A, 100)
    })
    .await;
}

// ---------------------------------------------------------------------------------------------
// Floating addresses: one holder per address, whatever the groups say

/// Two groups list one address (a group renamed, or an address moved to another group, in a
/// rolling reload; hosts whose files disagree): while one group's role holds it, the
/// other's campaign is lost and takes nothing, not even its other addresses. Each way a
/// holder lets go (release, retirement, graceful shutdown) frees its addresses at once.
async fn a_campaign_is_lost_while_another_group_holds_one_of_its_addresses<B: Backend>() {
    let mut b = B::start().await;
    let (x, y) = (ip("192.0.2.10"), ip("2001:db8::10"));
    let mut web = b
        .node_with(with_addresses("web", "a", B::LEASE, &[x]))
        .await;
    let mut renamed = b
        .node_with(with_addresses("web2", "b", B::LEASE, &[y, x]))
        .await;
    let mut other = b
        .node_with(with_addresses("other", "c", B::LEASE, &[y]))
        .await;
    for n in [&mut web, &mut renamed, &mut other] {
        n.up(B::UP).await;
    }
    let held = web.try_campaign().await.expect("a vacant key is won");
    assert_eq!(
        renamed.try_campaign().await,
        None,
        "192.0.2.10 is held by group web"
    );
    // The lost campaign took nothing: its other address is free, its own key vacant.
    let y_held = other.try_campaign().await.expect("2001:db8::10 is free");
    renamed.leader_none(SOON).await;
    other.release(y_held).await;
    assert_eq!(
        renamed.try_campaign().await,
        None,
        "web still holds 192.0.2.10"
    );

    web.send(StoreCommand::Shutdown);
    web.ended(B::HANDOVER).await;
    let term = renamed
        .try_campaign()
        .await
        .unwrap_or_else(|| panic!("{}: web's shutdown freed 192.0.2.10 (term {held})", B::NAME));

    // A retirement frees them too.
    let mut third = b
        .node_with(with_addresses("web3", "d", B::LEASE, &[x]))
        .await;
    third.up(B::UP).await;
    assert_eq!(third.try_campaign().await, None, "web2 holds 192.0.2.10");
    renamed.send(StoreCommand::Retire {
        term,
        record: member("b"),
    });
    renamed
        .wait_for(SOON, "Released", |e| *e == StoreEvent::Released)
        .await;
    assert!(
        third.try_campaign().await.is_some(),
        "web2's retirement freed 192.0.2.10"
    );
}

/// A holder that dies keeps its addresses until its lease is gone, as it keeps its key,
/// and not after: a campaign of another group for one of them is lost until then, and won
/// after.
async fn an_address_is_free_once_its_holders_lease_is_gone<B: Backend>() {
    let mut b = B::start().await;
    let x = ip("2001:db8::10");
    let mut holder = b
        .detached_with(with_addresses("dying", "a", B::LEASE, &[x]))
        .await;
    holder.up(B::UP).await;
    let mut next = b
        .node_with(with_addresses("next", "b", B::LEASE, &[x]))
        .await;
    next.up(B::UP).await;
    holder.try_campaign().await.expect("a vacant key is won");
    holder.skip();
    holder.renewed(B::LEASE).await;
    holder.kill();
    holder.drain();
    let last = *holder.renewals().iter().max().expect("renewed");
    assert_eq!(
        next.try_campaign().await,
        None,
        "the dead holder's lease still runs"
    );
    // As promd's runtime does after a lost campaign: try again, a little later.
    let deadline = last + B::LEASE + B::EXPIRY_SLACK + SOON;
    let won = loop {
        let asked = Instant::now();
        if next.try_campaign().await.is_some() {
            break asked;
        }
        assert!(
            Instant::now() < deadline,
            "{}: the address stayed held",
            B::NAME
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "{}: address won {:?} after the last renewal",
        B::NAME,
        won - last
    );
    assert!(
        won - last >= B::LEASE - Duration::from_millis(100),
        "held for the lease: {:?}",
        won - last
    );
}

/// The group's own address key, left by a holder whose leader key an operator deleted,
/// does not block the group's next holder (the group's key keeps its hosts apart); it is
/// the next holder's then, and blocks other groups.
async fn a_groups_own_address_key_does_not_block_its_next_holder<B: Backend>() {
    let mut b = B::start().await;
    let x = ip("192.0.2.10");
    let mut first = b
        .node_with(with_addresses("web", "a", B::LEASE, &[x]))
        .await;
    let mut second = b
        .node_with(with_addresses("web", "b", B::LEASE, &[x]))
        .await;
    let mut stranger = b.node_with(with_addresses("db", "c", B::LEASE, &[x])).await;
    for n in [&mut first, &mut second, &mut stranger] {
        n.up(B::UP).await;
    }
    let term = first.try_campaign().await.expect("a vacant key is won");
    second.leader_is(SOON, "a", term).await;
    b.delete("web", Key::Leader).await;
    second.leader_none(SOON).await;
    let next = second.try_campaign().await.expect("web's own address key");
    assert!(next > term);
    assert_eq!(stranger.try_campaign().await, None, "web holds 192.0.2.10");
    // The first holder's late release frees nothing of the second's.
    first.release(term).await;
    assert_eq!(stranger.try_campaign().await, None, "still web's, at b");
}

/// A holder's leader key deleted by hand (a documented repair) vanishes while the holder
/// still runs its units, the address among them, until its next renewal tells it: another
/// group's campaign for the address is lost meanwhile (etcd: the address key is bound to the
/// holder's lease; dir: the holder's member record still claims the role at that term; a
/// reviewer's probe had the dir store hand the address over 11 ms after the delete). Once the
/// holder has left, the address is free.
async fn an_address_stays_held_while_its_holder_may_still_run_its_units<B: Backend>() {
    let mut b = B::start().await;
    let x = ip("192.0.2.10");
    let mut holder = b
        .node_with(with_addresses("web", "a", B::LEASE, &[x]))
        .await;
    let mut stranger = b
        .node_with(with_addresses("web2", "c", B::LEASE, &[x]))
        .await;
    for n in [&mut holder, &mut stranger] {
        n.up(B::UP).await;
    }
    let term = holder.try_campaign().await.expect("a vacant key is won");
    stranger.skip();
    b.delete("web", Key::Leader).await;
    assert_eq!(
        stranger.try_campaign().await,
        None,
        "{}: web's holder may still have 192.0.2.10 (term {term})",
        B::NAME
    );
    holder.send(StoreCommand::Shutdown);
    holder.ended(B::HANDOVER).await;
    assert!(
        stranger.try_campaign().await.is_some(),
        "{}: the holder left, and 192.0.2.10 with it",
        B::NAME
    );
}

/// Two groups of one promd share its lease (etcd: one lease per lease length and host): a
/// group that leaves deletes its address keys itself, for the lease lives on with the other
/// group, and a group of another name elsewhere takes the address at once.
async fn a_group_leaving_a_shared_lease_frees_its_addresses<B: Backend>() {
    let mut b = B::start().await;
    let x = ip("2001:db8::10");
    let (store, link) = b.link().await;
    let mut web = Node::open(
        store.as_ref(),
        link,
        with_addresses("web", "a", B::LEASE, &[x]),
    );
    let mut staying = Node::open(store.as_ref(), link, a_node("staying", "a", B::LEASE));
    let mut other = b
        .node_with(with_addresses("web2", "b", B::LEASE, &[x]))
        .await;
    for n in [&mut web, &mut staying, &mut other] {
        n.up(B::UP).await;
    }
    web.try_campaign().await.expect("a vacant key is won");
    assert_eq!(other.try_campaign().await, None, "web holds 2001:db8::10");
    web.send(StoreCommand::Shutdown);
    web.ended(B::HANDOVER).await;
    assert!(
        other.try_campaign().await.is_some(),
        "{}: web left its shared lease, and 2001:db8::10 with it",
        B::NAME
    );
    staying.renewed(B::LEASE).await;
}
