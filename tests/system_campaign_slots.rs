//! Issue 16's fault campaign: the campaign of `system_campaign` (three real systemd hosts, a
//! 3-member etcd, the zoo of units, sixteen kinds of fault; see `support/campaign`) on a group
//! with `actives = 2`. Two hosts run the whole zoo, each in a slot of its own (`PROMD_SLOT`,
//! which every zoo service records beside `PROMD_TERM`); the third is passive. Each fault hits
//! one of the two active hosts (drawn from the seed) or the passive one; `etcdctl del` deletes
//! the key of the hit host's slot.
//!
//! After every fault, within the fault's bound: the whole zoo runs on exactly two hosts, in
//! slots 0 and 1, with nothing of it left on the third. Over the whole run: no span of any zoo
//! unit on one host overlaps a span of the same slot on another host, no host runs units of
//! two slots at once, and each slot's term grows on every hand-over of that slot.
//!
//! CI runs 32 faults of seed 3 (every kind twice). Longer runs:
//! `flock /tmp/promd-system-tests.lock env PROMD_CAMPAIGN_FAULTS=320 PROMD_CAMPAIGN_SEEDS=31,32
//! cargo test --release --test system_campaign_slots -- --nocapture`; the other variables of
//! `system_campaign` (`PROMD_CAMPAIGN_SEED`, `PROMD_CAMPAIGN_KINDS`) work here too.

mod support;

use support::campaign::{self, Config};

/// The fixed CI schedule: one seed, two bags of all sixteen kinds.
const CI_SEEDS: [u64; 1] = [3];
const CI_FAULTS: usize = 32;

#[test]
fn campaign_with_two_slots_never_two_hosts_in_one_slot_and_both_slots_held_after_every_fault() {
    let mut cfg = Config::from_env(&CI_SEEDS, CI_FAULTS);
    cfg.actives = 2;
    let report = campaign::run(&cfg);
    println!("{}\n{}", report.summary(), report.totals());
    assert_eq!(report.outcomes.len(), cfg.faults);
}
