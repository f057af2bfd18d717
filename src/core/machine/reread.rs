//! What a (re)connection to the store must read again before the machine's view of the
//! store is evidence: until the leader key has been read, "no leader" means "not known yet",
//! not "vacant"; until the members and the maintenance mode have been read, the ranking and
//! the maintenance check may be stale.

/// One fact of the store that the machine keeps a copy of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) enum Fact {
    /// [`Event::Leader`](super::Event::Leader): the leader key.
    Leader,
    /// [`Event::Members`](super::Event::Members): every member record.
    Members,
    /// [`Event::Maintenance`](super::Event::Maintenance): the maintenance mode.
    Maintenance,
}

impl Fact {
    fn bit(self) -> u8 {
        match self {
            Fact::Leader => 1,
            Fact::Members => 2,
            Fact::Maintenance => 4,
        }
    }
}

/// The facts not read since the store was last (re)reached. The view is current (and a
/// vacant key may be campaigned for) only once it is empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Unread(u8);

impl Unread {
    /// Every fact: a fresh start or a (re)connection.
    pub(super) const ALL: Unread = Unread(1 | 2 | 4);

    /// `fact` was read.
    pub(super) fn read(&mut self, fact: Fact) {
        self.0 &= !fact.bit();
    }

    /// Every fact was read since the last (re)connection.
    pub(super) fn current(self) -> bool {
        self.0 == 0
    }
}
