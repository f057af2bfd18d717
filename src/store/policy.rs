//! The corrupt-value policy, once for both backends: what the runtime is told of a group
//! whose values a backend has read, some of them perhaps unreadable.
//!
//! - an unreadable **leader** value still blocks the election: it is reported as held by
//!   [`UNREADABLE_NODE`] at the term the backend gives it;
//! - an unreadable **member** record, or one under another node's key, is left out;
//! - an unreadable **switchover** request is ignored (no request);
//! - an unreadable **maintenance** record reads as *on* (the safe reading: nothing acts until
//!   someone looks), set by [`UNREADABLE_NODE`];
//!
//! and every unreadable value is listed in the [`Findings`], which the
//! [`Reporter`](super::report::Reporter) turns into `Corrupt` events.

use super::error::ValueError;
use super::record::{
    self, HostId, LeaderRecord, MaintenanceRecord, MemberRecord, SwitchoverRecord,
};
use super::view::{Findings, View};
use super::{Leader, UNREADABLE_NODE, other_host};

/// One value as a backend read it: its key (an etcd key, or the dir store's file path) and
/// its record, or why it cannot be trusted.
#[derive(Debug, Clone)]
pub(crate) struct Read<T> {
    pub(crate) key: String,
    pub(crate) value: Result<T, ValueError>,
}

impl<T> Read<T> {
    pub(crate) fn new(key: impl Into<String>, value: Result<T, ValueError>) -> Read<T> {
        Read {
            key: key.into(),
            value,
        }
    }
}

/// A group's values as a backend read them, before the policy.
#[derive(Debug, Default)]
pub(crate) struct Reading {
    /// The leader key while it counts, with its term (etcd's create revision; the dir store's
    /// term in the file, or for an unreadable file the term counter).
    pub(crate) leader: Option<(Read<LeaderRecord>, u64)>,
    /// Member records, by the node their key names.
    pub(crate) members: Vec<(String, Read<MemberRecord>)>,
    pub(crate) switchover: Option<Read<SwitchoverRecord>>,
    pub(crate) maintenance: Option<Read<MaintenanceRecord>>,
    /// Unreadable values that have no place in the view (an expired leader file, the dir
    /// store's term counter): reported, nothing more.
    pub(crate) ignored: Findings,
}

impl Reading {
    /// What the runtime is told, and every unreadable value found.
    pub(crate) fn judge(self) -> (View, Findings) {
        let mut findings = self.ignored;
        let mut note = |key: String, error: ValueError| {
            findings.insert(key, error);
        };
        let leader = self.leader.map(|(read, term)| match read.value {
            Ok(rec) => Leader {
                node: rec.node,
                term,
                host: rec.host,
            },
            Err(e) => {
                note(read.key, e);
                unreadable_leader(term)
            }
        });
        let mut members = Vec::new();
        for (node, read) in self.members {
            match read
                .value
                .and_then(|rec| check_member(&node, &rec).map(|()| rec))
            {
                Ok(rec) => members.push(rec),
                Err(e) => note(read.key, e),
            }
        }
        members.sort_by(|a, b| a.node.cmp(&b.node));
        let switchover = self.switchover.and_then(|read| match read.value {
            Ok(rec) => Some(rec),
            Err(e) => {
                note(read.key, e);
                None
            }
        });
        let maintenance = self.maintenance.map(|read| match read.value {
            Ok(rec) => rec,
            Err(e) => {
                note(read.key, e);
                unreadable_maintenance()
            }
        });
        let view = View {
            leader,
            members,
            switchover,
            maintenance,
        };
        (view, findings)
    }
}

/// A member record is trusted only under its own node's key.
pub(crate) fn check_member(key_node: &str, rec: &MemberRecord) -> Result<(), ValueError> {
    if rec.node == key_node {
        Ok(())
    } else {
        Err(ValueError::WrongNode {
            record: rec.node.clone(),
            key: key_node.to_string(),
        })
    }
}

/// The leader of a key whose value cannot be read: still a leader, nobody may campaign.
pub(crate) fn unreadable_leader(term: u64) -> Leader {
    Leader {
        node: UNREADABLE_NODE.to_string(),
        term,
        host: None,
    }
}

/// How an unreadable maintenance value reads: on, set by nobody known.
pub(crate) fn unreadable_maintenance() -> MaintenanceRecord {
    MaintenanceRecord {
        v: record::FORMAT_VERSION,
        on: true,
        by: UNREADABLE_NODE.to_string(),
    }
}

/// May `node` on `host` release a leader key holding `rec`: it names `node` and was not
/// written on another host. (An unreadable value is nobody's to release.)
pub(crate) fn releasable(rec: &LeaderRecord, node: &str, host: Option<&HostId>) -> bool {
    rec.node == node && other_host(rec.host.as_deref(), host).is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::RecordError;

    fn member(node: &str) -> MemberRecord {
        crate::store::record::passive_member(node, 1)
    }

    fn bad() -> ValueError {
        ValueError::Record(RecordError::Json("x".into()))
    }

    #[test]
    fn an_unreadable_leader_blocks_and_maintenance_reads_on() {
        let reading = Reading {
            leader: Some((Read::new("k/leader", Err(bad())), 7)),
            maintenance: Some(Read::new("k/maintenance", Err(bad()))),
            switchover: Some(Read::new("k/switchover", Err(bad()))),
            ..Reading::default()
        };
        let (view, findings) = reading.judge();
        assert_eq!(view.leader, Some(unreadable_leader(7)));
        assert_eq!(view.maintenance, Some(unreadable_maintenance()));
        assert_eq!(view.switchover, None);
        let keys: Vec<&str> = findings.keys().map(String::as_str).collect();
        assert_eq!(keys, ["k/leader", "k/maintenance", "k/switchover"]);
    }

    #[test]
    fn unreadable_and_mislabelled_members_are_left_out_and_the_rest_sorted() {
        let reading = Reading {
            members: vec![
                ("c".into(), Read::new("m/c", Ok(member("c")))),
                ("liar".into(), Read::new("m/liar", Ok(member("other")))),
                ("junk".into(), Read::new("m/junk", Err(bad()))),
                ("a".into(), Read::new("m/a", Ok(member("a")))),
            ],
            ..Reading::default()
        };
        let (view, findings) = reading.judge();
        let nodes: Vec<&str> = view.members.iter().map(|m| m.node.as_str()).collect();
        assert_eq!(nodes, ["a", "c"]);
        assert_eq!(findings.len(), 2);
        assert!(matches!(
            findings.get("m/liar"),
            Some(ValueError::WrongNode { record, key }) if record == "other" && key == "liar"
        ));
    }

    #[test]
    fn only_the_named_node_of_this_host_may_release() {
        let a = HostId::parse("0123456789abcdef0123456789abcdef");
        let rec = |node: &str, host: Option<&str>| LeaderRecord {
            v: 1,
            node: node.into(),
            priority: 1,
            host: host.map(str::to_string),
            term: None,
        };
        assert!(releasable(&rec("n1", None), "n1", a.as_ref()));
        assert!(releasable(
            &rec("n1", Some("0123456789abcdef0123456789abcdef")),
            "n1",
            a.as_ref()
        ));
        assert!(!releasable(&rec("n2", None), "n1", a.as_ref()));
        assert!(!releasable(
            &rec("n1", Some("fedcba9876543210fedcba9876543210")),
            "n1",
            a.as_ref()
        ));
    }
}
