//! The cluster view as one JSON document: what `promctl status --json` prints and what
//! `GET /v1/status` answers ([`crate::http`]). Both build it from the same [`GroupView`]s
//! (promctl from their D-Bus properties), and both render it with [`StatusReport::to_json`],
//! so the two documents are byte for byte the same for the same views.
//!
//! The field names and their order are a contract: scripts parse and diff the document.

use serde::{Deserialize, Serialize};

use crate::agent::{GroupView, MemberView, WHY_DOWN};
use crate::core::Ineligibility;

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
    /// Whether this host could become active now (D-Bus `Eligible`).
    pub eligible: bool,
    /// Why not, as a word (D-Bus `Ineligible`, see [`MemberStatus::why`]); empty when
    /// eligible.
    pub why: String,
    /// Every slot of a group with several active hosts (D-Bus `Slots`); left out of the
    /// document for a group with one.
    #[serde(default, skip_serializing_if = "one_slot")]
    pub slots: Vec<SlotStatus>,
    /// The group's floating addresses (D-Bus `Addresses`); left out of the document for a
    /// group without any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<AddressStatus>,
}

/// One floating address of a group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressStatus {
    /// As configured: `192.0.2.10/24 dev eth0`.
    pub address: String,
    /// Whether this host holds it now: active, and its address unit up.
    pub held: bool,
}

/// One slot of a group with several active hosts (docs/slots.md).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotStatus {
    /// The slot, `0..actives`.
    pub slot: u32,
    /// The node holding it; empty when none does or it is not known.
    pub holder: String,
    /// Its term, the slot's fencing token.
    pub term: u64,
    /// This host's role in it.
    pub role: String,
}

fn one_slot(slots: &[SlotStatus]) -> bool {
    slots.len() < 2
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
    /// Whether it may become active now (false when `down`).
    pub eligible: bool,
    /// Why not, as a stable word (`stopping`, `not-member`, `cooldown`, `passive-failed`,
    /// `unhealthy`, `store-unreachable`, `lease-not-renewed`, `not-passive`, `other-slot`,
    /// `defer-once`;
    /// `unknown` for a reason this promd does not know; `down` without a record); empty when
    /// eligible. [`why_text`] says it in words.
    pub why: String,
    /// Its watched-unit failures within its restart window (0 when not said).
    pub failures: u32,
    /// CLOCK_REALTIME of its last role change, microseconds since the epoch (0 when not
    /// said).
    pub since_usec: u64,
    /// The newest term it knew when it wrote its record (this host's: its term now).
    pub term: u64,
}

/// What a [`MemberStatus::why`] word means, as promctl prints it about any member
/// ([`Ineligibility::about_member`]), e.g. `unhealthy` → "the health check fails"; an
/// unknown word is said to be one.
pub fn why_text(word: &str) -> String {
    if word == WHY_DOWN {
        return "no member record in the store (promd stopped, or cut off)".into();
    }
    match Ineligibility::from_word(word) {
        Ineligibility::Unknown if word != Ineligibility::Unknown.word() => {
            format!("{word} (a reason this promctl does not know)")
        }
        why => why.about_member().to_string(),
    }
}

impl From<&MemberView> for MemberStatus {
    fn from(m: &MemberView) -> MemberStatus {
        MemberStatus {
            node: m.node.clone(),
            role: m.role.clone(),
            priority: m.priority,
            healthy: m.healthy,
            eligible: m.eligible,
            why: m.why.clone(),
            failures: m.failures,
            since_usec: m.since_usec,
            term: m.term,
        }
    }
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
            members: v.members.iter().map(MemberStatus::from).collect(),
            eligible: v.eligible,
            why: v.why.clone(),
            slots: v
                .slots
                .iter()
                .map(|s| SlotStatus {
                    slot: s.slot,
                    holder: s.holder.clone(),
                    term: s.term,
                    role: s.role.clone(),
                })
                .collect(),
            addresses: v
                .addresses
                .iter()
                .map(|(address, held)| AddressStatus {
                    address: address.clone(),
                    held: *held,
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
            members: vec![crate::agent::member_view("a", "passive", 100, true)],
            retired,
            eligible: true,
            why: String::new(),
            units_down: Vec::new(),
            slots: Vec::new(),
            addresses: Vec::new(),
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
    /// Members carry eligibility, the reason as a word, failures, since and term, appended
    /// after the fields of before (the order is a contract); the group this host's
    /// eligibility after its members.
    #[test]
    fn members_show_eligibility_why_failures_since_and_term_in_order() {
        let mut me = crate::agent::member_view("a", "active", 100, true);
        me.eligible = false;
        me.why = "not-passive".into();
        me.since_usec = 17;
        me.term = 9;
        let mut other = crate::agent::member_view("b", "passive", 90, false);
        other.eligible = false;
        other.why = "unhealthy".into();
        other.failures = 2;
        other.since_usec = 5;
        other.term = 8;
        let view = GroupView {
            id: crate::agent::GroupId(0),
            name: "web".into(),
            role: "active".into(),
            leader: "a".into(),
            term: 9,
            priority: 100,
            healthy: true,
            maintenance: false,
            failures: 0,
            since_usec: 17,
            members: vec![me, other],
            retired: false,
            eligible: false,
            why: "not-passive".into(),
            units_down: Vec::new(),
            slots: Vec::new(),
            addresses: Vec::new(),
        };
        let report = StatusReport::of_views("a", true, [&view]);
        let json = report.to_json().unwrap_or_default();
        let member_b = r#"{
          "node": "b",
          "role": "passive",
          "priority": 90,
          "healthy": false,
          "eligible": false,
          "why": "unhealthy",
          "failures": 2,
          "since_usec": 5,
          "term": 8
        }"#;
        assert!(json.contains(member_b), "{json}");
        let tail = r#"      ],
      "eligible": false,
      "why": "not-passive"
    }
  ]
}
"#;
        assert!(json.ends_with(tail), "{json}");
        let back: StatusReport = match serde_json::from_str(&json) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(back, report);
    }

    #[test]
    fn why_words_read_as_text() {
        assert_eq!(why_text("unhealthy"), "the health check fails");
        assert_eq!(
            why_text("defer-once"),
            "just lost the role in a crash and lets the others go first"
        );
        // About any member, not "this node" (which reads as the host promctl runs on).
        assert_eq!(why_text("not-member"), "not in the group's members");
        assert_eq!(why_text("not-passive"), "not passive yet");
        assert_eq!(why_text("unknown"), "for a reason this promd does not know");
        assert_eq!(
            why_text("quorum-lost"),
            "quorum-lost (a reason this promctl does not know)"
        );
        assert_eq!(
            why_text(WHY_DOWN),
            "no member record in the store (promd stopped, or cut off)"
        );
    }
}
