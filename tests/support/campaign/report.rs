//! Outcomes and figures: per fault, per kind, and the totals.

use super::*;

#[derive(Clone, Debug)]
pub struct Outcome {
    pub seed: u64,
    pub index: usize,
    pub kind: Kind,
    /// What was done, to whom, and how it ended (e.g. a refusal's message).
    pub what: String,
    pub result: String,
    /// The active host the fault was about, and who holds its slot afterwards.
    pub from: String,
    pub to: String,
    /// How many slots changed holder (0 or 1 with one active host).
    pub moved: usize,
    pub recovery: Duration,
    pub downtime: Duration,
}

pub struct Report {
    pub outcomes: Vec<Outcome>,
    pub spans: usize,
    pub outlived: Outlived,
    pub seeds: Vec<u64>,
    pub elapsed: Duration,
    /// The group's `actives`.
    pub actives: usize,
}

/// The `p` quantile of sorted samples (nearest rank).
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn ms(d: Duration) -> String {
    format!("{}", d.as_millis())
}

/// `median / p99 / max` in ms.
pub fn distribution(samples: &[Duration]) -> String {
    let mut s = samples.to_vec();
    s.sort();
    format!(
        "{} / {} / {}",
        ms(percentile(&s, 0.5)),
        ms(percentile(&s, 0.99)),
        ms(s.last().copied().unwrap_or_default())
    )
}

impl Report {
    /// The per-kind table (markdown) and the totals.
    pub fn summary(&self) -> String {
        let mut by_kind: BTreeMap<Kind, Vec<&Outcome>> = BTreeMap::new();
        for o in &self.outcomes {
            by_kind.entry(o.kind).or_default().push(o);
        }
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n| fault | count | hand-overs | outcomes | recovery after heal ms (median / p99 / max) | \
             downtime ms (median / p99 / max) | bound ms |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|---|");
        for (kind, os) in &by_kind {
            let mut results: BTreeMap<&str, usize> = BTreeMap::new();
            for o in os {
                *results.entry(o.result.as_str()).or_default() += 1;
            }
            let results = results
                .iter()
                .map(|(r, n)| format!("{r} {n}"))
                .collect::<Vec<_>>()
                .join(", ");
            let rec: Vec<Duration> = os.iter().map(|o| o.recovery).collect();
            let down: Vec<Duration> = os.iter().map(|o| o.downtime).collect();
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} | {} |",
                kind.name(),
                os.len(),
                os.iter().map(|o| o.moved).sum::<usize>(),
                results,
                distribution(&rec),
                distribution(&down),
                ms(kind.bound().0),
            );
        }
        out
    }

    /// The totals of a campaign that passed.
    pub fn totals(&self) -> String {
        // What the checks compared and where the zoo ran, with slots.
        let slots = if self.actives > 1 {
            (
                " of the same slot; no host in two slots at once",
                " of its slot",
                format!("{} hosts, one per slot,", self.actives),
            )
        } else {
            ("", "", "one host".to_string())
        };
        format!(
            "{} faults over seeds {:?} in {:.0} s: {} spans of the zoo's {} services checked, 0 \
             overlaps between hosts (any unit against any unit{}), the term grew on every hand-over{}; \
             after every fault the whole zoo ran on exactly {} within its bound, with nothing \
             of it left on the others. web-fork.service's TERM-ignoring child outlived the unit's \
             ExecStopPost= in {} of {} stops, by up to {} ms (counted in its spans).",
            self.outcomes.len(),
            self.seeds,
            self.elapsed.as_secs_f64(),
            self.spans,
            ZOO_SERVICES.len(),
            slots.0,
            slots.1,
            slots.2,
            self.outlived.stops,
            self.outlived.of,
            self.outlived.longest.as_millis(),
        )
    }
}
