//! Fixtures of the store tests (`tests/store_contract.rs` and the per-backend files):
//! member records, also as written on one of two hosts.

use promd::core::Role;
use promd::store::MemberRecord;

/// Machine-ids of two hosts.
pub const HOST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa1";
pub const HOST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb2";

/// A passive, eligible member record of `node`, priority 100, without a host.
pub fn member(node: &str) -> MemberRecord {
    MemberRecord {
        v: 1,
        node: node.to_string(),
        priority: 100,
        eligible: true,
        healthy: true,
        role: Role::Passive,
        term: None,
        host: None,
        why: None,
        failures: None,
        since_usec: None,
    }
}

/// [`member`] as written on `host`, told apart by its `priority`.
pub fn member_on(node: &str, host: &str, priority: i32) -> MemberRecord {
    MemberRecord {
        priority,
        host: Some(host.to_string()),
        ..member(node)
    }
}
