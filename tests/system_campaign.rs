//! The fault campaign on three real systemd hosts with a real 3-member etcd (see
//! `support/campaign.rs`): a seeded random schedule of crashes, pauses, service kills, silent
//! partitions, etcd member and quorum loss, D-Bus Promote/Demote and promd restarts. After
//! every fault, exactly one host must be active within the fault's stated bound; no two hosts'
//! spans of the protected service may ever overlap, and the term must grow on every hand-over.
//!
//! CI runs a short campaign (50 faults over seeds 1 and 2). Longer runs:
//! `PROMD_CAMPAIGN_FAULTS=1000 PROMD_CAMPAIGN_SEEDS=1,2,3 cargo test --release --test
//! system_campaign -- --nocapture` (the total is shared out over the seeds). A failure prints
//! the seed and the fault log; `PROMD_CAMPAIGN_SEED=S PROMD_CAMPAIGN_FAULTS=N` replays it.
//! `PROMD_CAMPAIGN_KINDS` restricts the schedule to some kinds (e.g. `cut,stop`), and adds
//! `cut+stop` (a cut active host whose promd then hangs), which the default schedule leaves out.

mod support;

use support::campaign::{self, Config};

/// The fixed CI schedule: seeds and the total number of faults.
const CI_SEEDS: [u64; 2] = [1, 2];
const CI_FAULTS: usize = 50;

#[test]
fn campaign_never_two_actives_and_one_active_after_every_fault() {
    let cfg = Config::from_env(&CI_SEEDS, CI_FAULTS);
    let report = campaign::run(&cfg);
    println!("{}\n{}", report.summary(), report.totals());
    assert_eq!(report.outcomes.len(), cfg.faults);
}
