//! Terms kept on disk before units are handed them ([`crate::termfloor`]), without holding
//! the loop: the writes go to a [`TermWriter`] thread, and a start of the active target waits,
//! parked here, until its own group's term is durable. A start whose term cannot be kept
//! fails, as it did when the write was made in place.

use std::collections::BTreeMap;

use tokio::sync::mpsc;

use super::Runtime;
use crate::agent::{GroupId, Input, JobDone, JobOrder, Level, Record};
use crate::core::Role;
use crate::termfloor::{Kept, TermFloorError, TermFloors, TermWriter};

/// Where terms are written, and what the runtime knows of them.
pub(super) struct Terms {
    writer: Writer,
    /// Where batches are answered; a start asked of a writer that is gone is failed here.
    done: mpsc::UnboundedSender<Vec<Kept>>,
    /// Group → the term known durable on disk.
    durable: BTreeMap<String, u64>,
    /// Group → the highest term asked of the writer and not yet answered.
    asked: BTreeMap<String, u64>,
    /// Starts of the active target waiting for their term.
    parked: BTreeMap<GroupId, JobOrder>,
}

enum Writer {
    Thread(TermWriter),
    /// No thread could be spawned: written in place, as before (the loop waits).
    Inline(TermFloors),
}

impl Terms {
    /// The writer for `floors` (loaded: `durable` is what it loaded), reporting on `done`.
    pub(super) fn new(
        floors: TermFloors,
        durable: BTreeMap<String, u64>,
        done: mpsc::UnboundedSender<Vec<Kept>>,
    ) -> Terms {
        let writer = match TermWriter::start(floors.clone(), done.clone()) {
            Ok(w) => Writer::Thread(w),
            Err(e) => {
                tracing::error!(
                    "cannot start the thread that keeps terms ({e}): keeping them in place"
                );
                Writer::Inline(floors)
            }
        };
        Terms {
            writer,
            done,
            durable,
            asked: BTreeMap::new(),
            parked: BTreeMap::new(),
        }
    }

    /// Whether `term` is durable for `group`.
    fn is_kept(&self, group: &str, term: u64) -> bool {
        self.durable.get(group).is_some_and(|&t| t >= term)
    }

    /// Ask for `term` to be kept for `group`, unless it is kept or asked for already.
    pub(super) fn keep(&mut self, group: &str, term: u64) {
        if self.is_kept(group, term) || self.asked.get(group).is_some_and(|&t| t >= term) {
            return;
        }
        self.asked.insert(group.to_string(), term);
        let kept = match &mut self.writer {
            Writer::Thread(w) if w.keep(group, term) => return,
            // Answered as a failure, so that a start waiting for this term fails at once
            // rather than waiting for ever.
            Writer::Thread(_) => vec![Kept {
                group: group.to_string(),
                term,
                result: Err(TermFloorError::WriterGone),
            }],
            Writer::Inline(floors) => {
                floors.keep_batch(BTreeMap::from([(group.to_string(), term)]))
            }
        };
        let _ = self.done.send(kept);
    }

    /// Drop a parked start (cancelled, or its group closed).
    pub(super) fn unpark(&mut self, id: GroupId) {
        self.parked.remove(&id);
    }

    /// Write what was asked, then end the thread.
    pub(super) fn finish(&mut self) {
        if let Writer::Thread(w) = &mut self.writer {
            w.finish();
        }
    }
}

impl Runtime {
    /// `order` may go ahead now: it hands no term, or its term is durable. Otherwise it is
    /// parked until the writer has kept the term (asked for here in case nobody did).
    pub(super) fn term_is_kept(&mut self, id: GroupId, group: &str, order: &JobOrder) -> bool {
        let Some(env) = order.env.as_ref().filter(|e| e.role == Role::Active) else {
            return true;
        };
        if self.terms.is_kept(group, env.term) {
            return true;
        }
        self.terms.keep(group, env.term);
        self.terms.parked.insert(id, order.clone());
        false
    }

    /// A batch written: failures to the journal, then the starts that waited for these terms
    /// go ahead, or fail if their term could not be kept.
    pub(super) fn terms_kept(&mut self, batch: Vec<Kept>) {
        let mut failed: BTreeMap<String, String> = BTreeMap::new();
        for k in batch {
            if self.terms.asked.get(&k.group).is_some_and(|&t| t <= k.term) {
                self.terms.asked.remove(&k.group);
            }
            match k.result {
                Ok(()) => {
                    let d = self.terms.durable.entry(k.group).or_insert(0);
                    *d = (*d).max(k.term);
                }
                Err(e) => {
                    // Asked again by the next start, or the next higher term.
                    self.terms.asked.remove(&k.group);
                    self.journal.send(Record {
                        fields: crate::agent::Fields {
                            group: Some(k.group.clone()),
                            term: Some(k.term),
                            ..crate::agent::Fields::default()
                        },
                        ..Record::plain(Level::Error, e.to_string())
                    });
                    failed.insert(k.group, e.to_string());
                }
            }
        }
        let parked: Vec<GroupId> = self.terms.parked.keys().copied().collect();
        for id in parked {
            let Some(group) = self.drivers.get(&id).map(|d| d.cfg.name.clone()) else {
                self.terms.parked.remove(&id);
                continue;
            };
            let Some(term) = self
                .terms
                .parked
                .get(&id)
                .and_then(|o| o.env.as_ref())
                .map(|e| e.term)
            else {
                continue;
            };
            if self.terms.is_kept(&group, term) {
                if let Some(order) = self.terms.parked.remove(&id) {
                    self.start_job(id, order);
                }
            } else if let Some(e) = failed.get(&group)
                && let Some(order) = self.terms.parked.remove(&id)
            {
                let text = format!("not starting the active target: {e}");
                if let Some(r) = self.agent.group_record(id, Level::Error, &text) {
                    self.journal.send(r);
                }
                let _ = self
                    .inputs_tx
                    .send(Input::Job(id, JobDone::failed(order.job)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_term_asked_of_a_writer_that_has_ended_fails_at_once() {
        let state = tempfile::tempdir().unwrap();
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut terms = Terms::new(TermFloors::new(state.path(), "a"), BTreeMap::new(), tx);
        terms.finish();
        terms.keep("web", 3);
        let kept = rx.recv().await.unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!((kept[0].group.as_str(), kept[0].term), ("web", 3));
        assert!(matches!(kept[0].result, Err(TermFloorError::WriterGone)));
    }
}
