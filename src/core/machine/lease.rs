//! This node's lease in the store, as far as the machine can tell.

use super::{GroupMachine, Mono};

/// The lease every key of this node (its member record, the leader key if it holds it) is
/// bound to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Lease {
    /// No renewal acknowledged yet (at birth): nothing is known of when it expires.
    Unconfirmed,
    /// The store acknowledged a renewal sent at `sent_at`: the lease lives at least until
    /// `sent_at + lease`, and the fence acts at `Timing::fence_at(sent_at)` (docs/safety.md).
    Renewed {
        /// The send time of the latest acknowledged renewal.
        sent_at: Mono,
    },
    /// The store said the lease is gone, and no new one is confirmed: the key may be
    /// anyone's by now.
    Lost,
}

impl Lease {
    /// The send time of the latest acknowledged renewal of the current lease.
    pub(super) fn renewed_sent(self) -> Option<Mono> {
        match self {
            Lease::Renewed { sent_at } => Some(sent_at),
            Lease::Unconfirmed | Lease::Lost => None,
        }
    }
}

impl GroupMachine {
    /// The lease was lost and no new one is confirmed.
    pub(super) fn lease_lost(&self) -> bool {
        self.lease == Lease::Lost
    }

    /// The send time of the latest acknowledged renewal of the current lease.
    pub(super) fn renewed_sent(&self) -> Option<Mono> {
        self.lease.renewed_sent()
    }

    /// [`Event::Renewed`](super::Event::Renewed): keep the latest send time (answers may
    /// arrive out of order).
    pub(super) fn lease_renewed(&mut self, sent_at: Mono) {
        let latest = match self.lease {
            Lease::Renewed { sent_at: s } if s >= sent_at => s,
            _ => sent_at,
        };
        self.lease = Lease::Renewed { sent_at: latest };
    }
}
