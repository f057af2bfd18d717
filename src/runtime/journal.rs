//! The agent's journal records, written from a thread of their own.
//!
//! Why: a record goes to journald's socket as one datagram, and the kernel queues at most
//! `net.unix.max_dgram_qlen` of them for journald — 10 in a container whose `/proc/sys` is
//! read-only. Written from the event loop, a burst of records ran at journald's pace: a host
//! that fenced 500 groups at once journalled ~1,500 lines (each group's "store unreachable",
//! "lease not renewed in time" and role changes), the loop waited on journald for them, did
//! not move the watchdog's horizon in time, and was killed by its watchdog (issue 13's
//! benchmark, the cut host). Here the loop only queues a record ([`QUEUE`] at most; past that
//! records are dropped and counted, `crate::logging::dropped_lines`), and the thread writes
//! them in order at whatever pace journald takes them (`crate::logging`'s send timeout and
//! circuit breaker still bound each line).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::agent::{Level, Record};
use crate::core::Role;

/// Records queued at most: a mass fence of 1,000 groups journals ~3,000, each a few hundred
/// bytes, so the queue holds a few MiB at worst. Counted, not preallocated: a bounded channel
/// of this size would take ~2.7 MiB of RSS for good (seen in the 500-group bench); an idle
/// promd queues nothing.
pub const QUEUE: usize = 16_384;

/// The writer: a queue and the thread that empties it. Without a thread (the OS refused one)
/// records are written in place, as before.
pub struct Journal {
    tx: Option<Sender<Record>>,
    /// Records queued and not yet written.
    queued: Arc<AtomicUsize>,
    limit: usize,
    thread: Option<JoinHandle<()>>,
}

impl Journal {
    /// A writer that journals with [`emit`].
    pub fn start() -> Journal {
        Journal::start_with(QUEUE, |r| emit(&r))
    }

    /// A writer of at most `queue` records waiting, each handed to `write` on the thread.
    pub fn start_with(queue: usize, write: impl Fn(Record) + Send + 'static) -> Journal {
        let (tx, rx) = channel::<Record>();
        let queued = Arc::new(AtomicUsize::new(0));
        let theirs = queued.clone();
        match std::thread::Builder::new()
            .name("promd-journal".into())
            .spawn(move || drain(&rx, &theirs, write))
        {
            Ok(thread) => Journal {
                tx: Some(tx),
                queued,
                limit: queue,
                thread: Some(thread),
            },
            Err(e) => {
                eprintln!("promd: no journal thread ({e}); journalling from the event loop");
                Journal {
                    tx: None,
                    queued,
                    limit: queue,
                    thread: None,
                }
            }
        }
    }

    /// Queue `r` without waiting: a full queue drops it (counted); no thread writes it here.
    pub fn send(&self, r: Record) {
        let Some(tx) = &self.tx else {
            return emit(&r);
        };
        if self.queued.fetch_add(1, Ordering::SeqCst) >= self.limit {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            crate::logging::count_dropped_line();
            return;
        }
        if let Err(e) = tx.send(r) {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            emit(&e.0);
        }
    }

    /// Let the thread write what is queued, waiting at most `within` (at exit: the last
    /// records, "stopped" among them, should reach the journal).
    pub fn finish(&mut self, within: Duration) {
        self.tx = None; // the thread ends once the queue is empty
        let Some(thread) = self.thread.take() else {
            return;
        };
        let until = Instant::now() + within;
        while !thread.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
        }
    }
}

fn drain(rx: &Receiver<Record>, queued: &AtomicUsize, write: impl Fn(Record)) {
    while let Ok(r) = rx.recv() {
        write(r);
        queued.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A journal record, with its `MESSAGE_ID` and `PROMD_*` fields (those it has).
pub fn emit(r: &Record) {
    let f = &r.fields;
    let role = f.role.map(Role::as_str);
    let old_role = f.old_role.map(Role::as_str);
    macro_rules! at {
        ($level:ident) => {
            tracing::$level!(
                MESSAGE_ID = r.message_id,
                PROMD_GROUP = f.group.as_deref(),
                PROMD_SLOT = f.slot,
                PROMD_ROLE = role,
                PROMD_OLD_ROLE = old_role,
                PROMD_TERM = f.term,
                PROMD_LEADER = f.leader.as_deref(),
                PROMD_REASON = f.reason.as_deref(),
                PROMD_NODE = f.node.as_deref(),
                "{}",
                r.text
            )
        };
    }
    match r.level {
        Level::Error => at!(error),
        Level::Warn => at!(warn),
        Level::Info => at!(info),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    #[test]
    fn a_stalled_journal_never_holds_the_sender_and_keeps_the_order() {
        let (seen_tx, seen) = channel();
        let stall = Arc::new(Barrier::new(2));
        let held = stall.clone();
        let mut j = Journal::start_with(2, move |r: Record| {
            let first = r.text == "0";
            let _ = seen_tx.send(r.text);
            if first {
                held.wait(); // journald not reading
            }
        });
        j.send(Record::plain(Level::Info, "0"));
        assert_eq!(
            seen.recv().as_deref(),
            Ok("0"),
            "the thread took it and stalls"
        );
        let before = crate::logging::dropped_lines();
        // "0" is still counted as queued until written: "1" fills the queue of 2; the rest
        // are dropped, at once.
        for i in 1..10 {
            j.send(Record::plain(Level::Info, i.to_string()));
        }
        // Lines dropped elsewhere in this process only add to the count.
        assert!(crate::logging::dropped_lines() - before >= 8);
        stall.wait();
        j.finish(Duration::from_secs(10));
        let got: Vec<String> = seen.try_iter().collect();
        assert_eq!(got, ["1"]);
    }

    #[test]
    fn finish_writes_what_is_queued() {
        let (seen_tx, seen) = channel();
        let mut j = Journal::start_with(QUEUE, move |r: Record| {
            let _ = seen_tx.send(r.text);
        });
        for i in 0..100 {
            j.send(Record::plain(Level::Info, i.to_string()));
        }
        j.finish(Duration::from_secs(10));
        let got: Vec<String> = seen.try_iter().collect();
        assert_eq!(got.len(), 100);
        assert_eq!(got.first().map(String::as_str), Some("0"));
        assert_eq!(got.last().map(String::as_str), Some("99"));
    }
}
