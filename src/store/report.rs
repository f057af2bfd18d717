//! The reporter, once for both backends: the only way a backend's task tells the runtime
//! anything. It keeps the up/down edges and the view's memory, so that
//!
//! - `Up` is followed by `Renewed` and by the whole view, in the contract's order;
//! - `Down` is reported once per outage, however often the backend retries;
//! - `Down` and `LeaseLost` answer the queued writes that cannot wait (see [`OpQueue`]);
//! - after that, only changes are reported, unreadable values first, each once.

use std::time::Instant;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::error::StoreError;
use super::queue::OpQueue;
use super::view::{Findings, Told, View};
use super::{GroupId, GroupSpec, StoreEvent};

/// Sends one group's events to the runtime, tagged with the group's id. Its own journal
/// lines are debug: the agent logs each event the operator needs, once, with the group's
/// name in the message ("web: store unreachable: …").
pub(crate) struct Reporter {
    /// `"etcd"` or `"directory"`, for the journal.
    backend: &'static str,
    group: String,
    id: GroupId,
    events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    /// The reason of the `Down` last reported, if no `Up` came since.
    down: Option<String>,
    told: Told,
}

impl Reporter {
    pub(crate) fn new(
        backend: &'static str,
        spec: &GroupSpec,
        id: GroupId,
        events: mpsc::UnboundedSender<(GroupId, StoreEvent)>,
    ) -> Reporter {
        Reporter {
            backend,
            group: spec.group.clone(),
            id,
            events,
            down: None,
            told: Told::default(),
        }
    }

    /// Whether the runtime still listens; a task whose runtime is gone ends.
    pub(crate) fn listening(&self) -> bool {
        !self.events.is_closed()
    }

    /// Send one event (a closed receiver ends the task at its next turn).
    pub(crate) fn emit(&self, event: StoreEvent) {
        let _ = self.events.send((self.id, event));
    }

    fn emit_all(&self, events: Vec<StoreEvent>) {
        for event in events {
            self.emit(event);
        }
    }

    /// The backend (re)connected with a live lease, renewed at `renewed_at`; the next
    /// [`Self::view`] tells everything.
    pub(crate) fn up(&mut self, renewed_at: Instant) {
        self.down = None;
        self.told.forget();
        self.emit(StoreEvent::Up);
        self.emit(StoreEvent::Renewed {
            sent_at: renewed_at,
        });
    }

    /// A renewal sent at `sent_at` was acknowledged.
    pub(crate) fn renewed(&self, sent_at: Instant) {
        self.emit(StoreEvent::Renewed { sent_at });
    }

    /// The store cannot be used: `Down` (once per outage, and again when the reason changes),
    /// and queued campaigns are not won.
    pub(crate) fn down(&mut self, reason: StoreError, queue: &mut OpQueue) {
        // Reported again when the reason changes (a renewed certificate, then a wrong
        // password): STATUS= and the journal say what is wrong now, not what was.
        let text = reason.to_string();
        match &self.down {
            Some(told) if *told == text => {
                debug!(group = %self.group, %reason, "{} store still unreachable", self.backend);
            }
            Some(_) => {
                debug!(group = %self.group, %reason, "{} store still down, now", self.backend);
                self.down = Some(text);
                self.emit(StoreEvent::Down(reason));
            }
            None => {
                debug!(group = %self.group, %reason, "{} store down", self.backend);
                self.down = Some(text);
                self.emit(StoreEvent::Down(reason));
            }
        }
        self.told.forget();
        self.emit_all(queue.went_down());
    }

    /// The lease is gone, and every key bound to it: `LeaseLost`, and what depended on it is
    /// answered.
    pub(crate) fn lease_lost(&mut self, queue: &mut OpQueue) {
        debug!(group = %self.group, "{} store: lease lost", self.backend);
        self.emit(StoreEvent::LeaseLost);
        self.emit_all(queue.lease_lost());
    }

    /// The group as just read: tell the runtime what changed.
    pub(crate) fn view(&mut self, view: View, corrupt: Findings) {
        let events = self.told.changes(view, corrupt);
        for event in &events {
            if let StoreEvent::Corrupt { key, error } = event {
                warn!(group = %self.group, key, %error, "corrupt value in the {} store ignored", self.backend);
            }
        }
        self.emit_all(events);
    }
}
