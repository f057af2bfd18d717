//! What the slot arbiter (`core::slots`) reads of a machine: whether this node is engaged in
//! the machine's slot.

use super::GroupMachine;

impl GroupMachine {
    /// This node is engaged in this machine's slot: it holds the key or campaigns for it,
    /// releases it, may run the slot's units, has a role other than `passive` or `failed`
    /// (`starting` included), or the store shows its name on the key (a key of an earlier
    /// run, or won by a campaign whose answer was lost, that it will release).
    ///
    /// The slot arbiter moves a node's candidacy to another slot only while the slot it
    /// leaves is not engaged: that is what keeps a node in at most one slot
    /// (docs/slots.md, "The arbiter").
    pub fn engaged(&self) -> bool {
        !self.settled_passive() || self.campaigning() || self.leader() == Some(self.p.node.as_str())
    }
}
