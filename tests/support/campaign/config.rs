//! The campaign's configuration from the environment (seeds, fault count, kinds).

use super::*;

pub struct Config {
    pub seeds: Vec<u64>,
    /// Faults in total, shared out over the seeds.
    pub faults: usize,
    /// The kinds the schedule draws from: [`Kind::ALL`] unless `PROMD_CAMPAIGN_KINDS` says
    /// otherwise (a comma list of [`Kind::key`]s).
    pub kinds: Vec<Kind>,
    /// The group's `actives`: 1 (today's group) unless the test says otherwise.
    pub actives: usize,
}

impl Config {
    /// `PROMD_CAMPAIGN_SEED` (one seed) or `PROMD_CAMPAIGN_SEEDS` (a comma list) override
    /// `seeds`; `PROMD_CAMPAIGN_FAULTS` (the total, shared out over the seeds) overrides `faults`.
    pub fn from_env(seeds: &[u64], faults: usize) -> Config {
        let list = |v: String| -> Vec<u64> {
            v.split(',')
                .map(|s| {
                    s.trim()
                        .parse()
                        .unwrap_or_else(|_| panic!("bad seed {s:?} in {v:?}"))
                })
                .collect()
        };
        let seeds = match (
            std::env::var("PROMD_CAMPAIGN_SEED"),
            std::env::var("PROMD_CAMPAIGN_SEEDS"),
        ) {
            (Ok(one), _) => list(one),
            (_, Ok(many)) => list(many),
            _ => seeds.to_vec(),
        };
        assert!(!seeds.is_empty(), "no seeds");
        let faults = std::env::var("PROMD_CAMPAIGN_FAULTS")
            .ok()
            .map(|v| {
                v.trim()
                    .parse()
                    .unwrap_or_else(|_| panic!("bad PROMD_CAMPAIGN_FAULTS {v:?}"))
            })
            .unwrap_or(faults);
        let all: Vec<Kind> = Kind::ALL.into_iter().chain([Kind::CutThenStop]).collect();
        let kinds = match std::env::var("PROMD_CAMPAIGN_KINDS") {
            Ok(v) => v
                .split(',')
                .map(|k| {
                    let k = k.trim();
                    *all.iter().find(|x| x.key() == k).unwrap_or_else(|| {
                        let keys: Vec<&str> = all.iter().map(|x| x.key()).collect();
                        panic!("PROMD_CAMPAIGN_KINDS: unknown kind {k:?} (known: {keys:?})")
                    })
                })
                .collect(),
            Err(_) => Kind::ALL.to_vec(),
        };
        Config {
            seeds,
            faults,
            kinds,
            actives: 1,
        }
    }

    /// The faults of the `i`th seed.
    pub fn faults_of(&self, i: usize) -> usize {
        let n = self.seeds.len();
        self.faults / n + usize::from(i < self.faults % n)
    }
}
