//! The cluster view as one JSON document: what `promctl status --json` prints and what
//! `GET /v1/status` answers ([`crate::http`]). Both build it from the same [`GroupView`]s
//! (promctl from their D-Bus properties), and both render it with [`StatusReport::to_json`],
//! so the two documents are byte for byte the same for the same views.
//!
//! The field names and their order are a contract: scripts parse and diff the document.

use serde::{Deserialize, Serialize};

use crate::agent::GroupView;

/// The whole document: this host, the store, every group this host serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// This host's node name (D-Bus `Node`).
    pub node: String,
    /// promd's version (D-Bus `Version`), e.g. `0.1.0`.
    pub version: String,
    /// Whether every group's store session is up (D-Bus `StoreConnected`).
    pub store_connected: bool,
    /// Every group this host serves (not those a reload retired), in the order promd
    /// opened them (D-Bus `ListGroups`).
    pub groups: Vec<GroupStatus>,
}

/// One group as this host sees it (the properties of `org.promd1.Group`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupStatus {
    /// The group's name from promd.toml.
    pub name: String,
    /// This host's role: `starting`, `passive`, `promoting`, `active`, `demoting`, `failed`
    /// or `maintenance`.
    pub role: String,
    /// The node holding the leader key; empty when none does or it is not known.
    pub leader: String,
    /// The fencing term; only grows.
    pub term: u64,
    /// This host's priority in the group.
    pub priority: i32,
    /// Whether this host's health check and passive target are fine.
    pub healthy: bool,
    /// Whether the group is in maintenance mode (cluster-wide).
    pub maintenance: bool,
    /// Watched-unit failures within the restart window.
    pub failures: u32,
    /// CLOCK_REALTIME of this host's last role change, microseconds since the epoch.
    pub since_usec: u64,
    /// Every member, sorted by node name; configured members the store does not show have
    /// role `down`.
    pub members: Vec<MemberStatus>,
}

/// One member of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberStatus {
    /// The member's node name.
    pub node: String,
    /// Its role as its store record says (this host's: as it is now), or `down`.
    pub role: String,
    /// Its priority in the group (0 when `down`).
    pub priority: i32,
    /// Whether it reports itself healthy.
    pub healthy: bool,
}

/// promd's version as D-Bus `Version` reports it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

impl StatusReport {
    /// The report of `views` (retired ones left out, the rest in their order) on `node`.
    pub fn of_views<'v>(
        node: &str,
        store_connected: bool,
        views: impl IntoIterator<Item = &'v GroupView>,
    ) -> StatusReport {
        StatusReport {
            node: node.to_string(),
            version: VERSION.to_string(),
            store_connected,
            groups: views
                .into_iter()
                .filter(|v| !v.retired)
                .map(GroupStatus::of_view)
                .collect(),
        }
    }

    /// The document as promctl prints it: pretty JSON (two-space indent) and a final newline.
    /// Errors only if serde_json fails to encode plain strings and numbers, which it does not.
    pub fn to_json(&self) -> Result<String, serde_json::Error> {
        serde_json::to_string_pretty(self).map(|s| s + "\n")
    }
}

impl GroupStatus {
    /// A group's entry from its view.
    pub fn of_view(v: &GroupView) -> GroupStatus {
        GroupStatus {
            name: v.name.clone(),
            role: v.role.clone(),
            leader: v.leader.clone(),
            term: v.term,
            priority: v.priority,
            healthy: v.healthy,
            maintenance: v.maintenance,
            failures: v.failures,
            since_usec: v.since_usec,
            members: v
                .members
                .iter()
                .map(|(node, role, priority, healthy)| MemberStatus {
                    node: node.clone(),
                    role: role.clone(),
                    priority: *priority,
                    healthy: *healthy,
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::GroupId;

    #[test]
    fn retired_groups_are_left_out_and_order_is_kept() {
        let view = |id: u64, name: &str, retired: bool| GroupView {
            id: GroupId(id),
            name: name.into(),
            role: "passive".into(),
            leader: "b".into(),
            term: 3,
            priority: 100,
            healthy: true,
            maintenance: false,
            failures: 0,
            since_usec: 17,
            members: vec![("a".into(), "passive".into(), 100, true)],
            retired,
        };
        let views = [
            view(0, "web", false),
            view(1, "db", true),
            view(2, "aa", false),
        ];
        let report = StatusReport::of_views("a", true, &views);
        let names: Vec<&str> = report.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web", "aa"]);
        assert_eq!(report.version, VERSION);
        assert_eq!(report.groups[0].members[0].node, "a");
        let json = report.to_json().unwrap_or_default();
        assert!(
            json.starts_with("{\n  \"node\": \"a\",\n  \"version\""),
            "{json}"
        );
        assert!(json.ends_with("}\n"));
    }
}
