//! `promctl status`: the report, the table and the JSON document.

use zbus::Connection;

use super::bus::*;
use super::requests::explain;
use super::*;

// The `--json` document lives in the library (`promd::status`): `GET /v1/status` answers the
// same document, byte for byte, from the same views.
use promd::agent::MemberView;
use promd::core::Ineligibility;
pub(super) use promd::status::{
    AddressStatus, GroupStatus, MemberStatus, SlotStatus, StatusReport, why_text,
};

impl From<GroupProps> for GroupStatus {
    fn from(p: GroupProps) -> Self {
        // A promd before `MemberStates` says nothing of eligibility: "unknown".
        let unknown = || Ineligibility::Unknown.word().to_string();
        let members = match p.member_states {
            Some(states) => states
                .into_iter()
                .map(|s| MemberStatus::from(&MemberView::of_state(s)))
                .collect(),
            None => p
                .members
                .into_iter()
                .map(|(node, role, priority, healthy)| MemberStatus {
                    node,
                    role,
                    priority,
                    healthy,
                    eligible: false,
                    why: unknown(),
                    failures: 0,
                    since_usec: 0,
                    term: 0,
                })
                .collect(),
        };
        GroupStatus {
            name: p.name,
            role: p.role,
            leader: p.leader,
            term: p.term,
            priority: p.priority,
            healthy: p.healthy,
            maintenance: p.maintenance,
            failures: p.failures,
            since_usec: p.since,
            members,
            eligible: p.eligible.unwrap_or(false),
            why: p.ineligible.unwrap_or_else(unknown),
            slots: p
                .slots
                .unwrap_or_default()
                .into_iter()
                .map(|(slot, holder, term, role)| SlotStatus {
                    slot,
                    holder,
                    term,
                    role,
                })
                .collect(),
            addresses: p
                .addresses
                .unwrap_or_default()
                .into_iter()
                .map(|(address, held)| AddressStatus { address, held })
                .collect(),
        }
    }
}

pub(super) fn on_off(b: bool) -> &'static str {
    if b { "on" } else { "off" }
}

pub(super) fn yes_no(b: bool) -> &'static str {
    if b { "yes" } else { "no" }
}

/// The leader's name, or `none`.
fn leader_or_none(g: &GroupStatus) -> &str {
    if g.leader.is_empty() {
        "none"
    } else {
        &g.leader
    }
}

/// Whether the reason `why` goes unsaid beside `role`, which already says it (a `down`
/// member, an active one that is not passive), or is empty.
fn reason_unsaid(why: &str, role: &str) -> bool {
    why.is_empty()
        || why == promd::agent::WHY_DOWN
        || (why == Ineligibility::Checked(promd::core::Ineligible::NotPassive).word()
            && role != "passive")
}

/// The first line of the table and of the brief form: this host, promd's version, the store.
fn header(report: &StatusReport) -> String {
    format!(
        "node {}, promd {}, store {}\n",
        report.node,
        report.version,
        if report.store_connected {
            "connected"
        } else {
            "NOT connected"
        }
    )
}

/// The groups in the order a reader looks for them: as promd lists them (the
/// configuration's order), each group followed by its slots `GROUP@1`, `GROUP@2`, … by
/// number (promd lists a slot where it was added, and by name `sched@10` sorts before
/// `sched@2`). A slot shown without its group (`promctl status sched@1`) stays in place.
fn in_reading_order(groups: &[GroupStatus]) -> Vec<&GroupStatus> {
    use std::collections::{BTreeMap, BTreeSet};
    fn slot_of(name: &str) -> Option<(&str, u32)> {
        let (family, k) = name.rsplit_once('@')?;
        Some((family, k.parse().ok()?))
    }
    let listed: BTreeSet<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    let mut slots: BTreeMap<&str, Vec<(u32, &GroupStatus)>> = BTreeMap::new();
    for g in groups {
        if let Some((family, k)) = slot_of(&g.name)
            && listed.contains(family)
        {
            slots.entry(family).or_default().push((k, g));
        }
    }
    for own in slots.values_mut() {
        own.sort_by_key(|(k, _)| *k);
    }
    let mut out = Vec::with_capacity(groups.len());
    for g in groups {
        if slot_of(&g.name).is_some_and(|(family, _)| slots.contains_key(family)) {
            continue; // placed after its group
        }
        out.push(g);
        let own = slots.get(g.name.as_str()).into_iter().flatten();
        out.extend(own.map(|(_, s)| *s));
    }
    out
}

/// `promctl status --brief`: the header, then one aligned line per group (`GROUP`, `ROLE`
/// here, `LEADER`, `TERM`, `MAINT`, `ELIGIBLE`: `yes`, or `no (` the reason's word `)`).
pub(super) fn render_brief(report: &StatusReport) -> String {
    let mut out = header(report);
    if report.groups.is_empty() {
        out.push_str("\nno groups are configured on this host\n");
        return out;
    }
    let groups = in_reading_order(&report.groups);
    let name_w = column_width("GROUP", groups.iter().map(|g| g.name.len()));
    let role_w = column_width("ROLE", groups.iter().map(|g| g.role.len()));
    let leader_w = column_width("LEADER", groups.iter().map(|g| leader_or_none(g).len()));
    let term_w = column_width("TERM", groups.iter().map(|g| g.term.to_string().len()));
    out.push_str(&format!(
        "{:<name_w$}  {:<role_w$}  {:<leader_w$}  {:>term_w$}  MAINT  ELIGIBLE\n",
        "GROUP", "ROLE", "LEADER", "TERM"
    ));
    for g in groups {
        let eligible = match (g.eligible, reason_unsaid(&g.why, &g.role)) {
            (true, _) => "yes".to_string(),
            (false, true) => "no".to_string(),
            (false, false) => format!("no ({})", g.why),
        };
        out.push_str(&format!(
            "{:<name_w$}  {:<role_w$}  {:<leader_w$}  {:>term_w$}  {:<5}  {eligible}\n",
            g.name,
            g.role,
            leader_or_none(g),
            g.term,
            on_off(g.maintenance),
        ));
    }
    out
}

/// The human-readable status: one header line per group, then its members aligned.
pub(super) fn render_table(report: &StatusReport) -> String {
    let mut out = header(report);
    if report.groups.is_empty() {
        out.push_str("\nno groups are configured on this host\n");
        return out;
    }
    for g in in_reading_order(&report.groups) {
        out.push_str(&format!(
            "\n{}: this host {}, leader {}, term {}, maintenance {}\n",
            g.name,
            g.role,
            leader_or_none(g),
            g.term,
            on_off(g.maintenance)
        ));
        if g.slots.len() > 1 {
            let slots: Vec<String> = g
                .slots
                .iter()
                .map(|s| {
                    let holder = if s.holder.is_empty() {
                        "vacant"
                    } else {
                        &s.holder
                    };
                    format!("{} {holder} (term {})", s.slot, s.term)
                })
                .collect();
            out.push_str(&format!("    slots: {}\n", slots.join(", ")));
        }
        if !g.addresses.is_empty() {
            let addresses: Vec<String> = g
                .addresses
                .iter()
                .map(|a| {
                    let here = if a.held { "held here" } else { "not here" };
                    format!("{} ({here})", a.address)
                })
                .collect();
            out.push_str(&format!("    addresses: {}\n", addresses.join(", ")));
        }
        if g.members.is_empty() {
            out.push_str("    (no members known)\n");
            continue;
        }
        let node_w = column_width("NODE", g.members.iter().map(|m| m.node.len()));
        let role_w = column_width("ROLE", g.members.iter().map(|m| m.role.len()));
        let prio_w = column_width(
            "PRIORITY",
            g.members.iter().map(|m| m.priority.to_string().len()),
        );
        let fail_w = column_width(
            "FAILURES",
            g.members.iter().map(|m| m.failures.to_string().len()),
        );
        out.push_str(&format!(
            "    {:<node_w$}  {:<role_w$}  {:>prio_w$}  HEALTHY  {:>fail_w$}  ELIGIBLE\n",
            "NODE", "ROLE", "PRIORITY", "FAILURES"
        ));
        for m in &g.members {
            let mark = if m.node == report.node { '*' } else { ' ' };
            let line = format!(
                "  {mark} {:<node_w$}  {:<role_w$}  {:>prio_w$}  {:<7}  {:>fail_w$}  ",
                m.node,
                m.role,
                m.priority,
                yes_no(m.healthy),
                m.failures,
            );
            out.push_str(&eligibility_cell(line, m));
        }
    }
    out
}

/// The widest line the table aims for.
const COLUMNS: usize = 80;

/// `line` (a member's row up to its last column) with the ELIGIBLE cell, `yes` or `no`, and
/// for an ineligible member the reason in words on the line below, wrapped to [`COLUMNS`];
/// left out when the role already says it (a `down` member, one that is not passive because
/// it is active, starting, ...).
fn eligibility_cell(mut line: String, m: &MemberStatus) -> String {
    line.push_str(if m.eligible { "yes\n" } else { "no\n" });
    if m.eligible || reason_unsaid(&m.why, &m.role) {
        return line;
    }
    let lead = "      ineligible: ";
    let mut row = lead.to_string();
    for word in why_text(&m.why).split(' ') {
        if row.len() > lead.len() && row.len() + 1 + word.len() > COLUMNS {
            line.push_str(row.trim_end());
            line.push('\n');
            row = " ".repeat(lead.len());
        } else if row.len() > lead.len() {
            row.push(' ');
        }
        row.push_str(word);
    }
    line.push_str(&row);
    line.push('\n');
    line
}

pub(super) fn column_width(header: &str, values: impl Iterator<Item = usize>) -> usize {
    values.fold(header.len(), usize::max)
}

pub(super) fn render_json(report: &StatusReport) -> Result<String, Failure> {
    report
        .to_json()
        .map_err(|e| Failure(format!("cannot encode the status as JSON: {e}")))
}

pub(super) async fn fetch_status(
    conn: &Connection,
    only: Option<&str>,
) -> Result<StatusReport, Failure> {
    let manager = manager(conn).await?;
    let props = snapshot(conn, MANAGER_PATH)
        .await?
        .manager(MANAGER_IFACE)
        .await
        .map_err(|e| Failure(explain(&e, only, READ_TIMEOUT)))?;
    let listed = manager
        .list_groups()
        .await
        .map_err(|e| Failure(explain(&e, only, READ_TIMEOUT)))?;
    let paths: Vec<(String, String)> = match only {
        None => listed
            .into_iter()
            .map(|g| (g.0, g.4.as_str().to_owned()))
            .collect(),
        Some(name) => {
            let found = listed.into_iter().find(|g| g.0 == name);
            match found {
                Some(g) => vec![(g.0, g.4.as_str().to_owned())],
                None => return Err(Failure(format!("no group {name} on this host"))),
            }
        }
    };
    let mut groups = Vec::with_capacity(paths.len());
    for (name, path) in paths {
        let props = snapshot(conn, &path)
            .await?
            .group(GROUP_IFACE)
            .await
            .map_err(|e| Failure(explain(&e, Some(&name), READ_TIMEOUT)))?;
        groups.push(GroupStatus::from(props));
    }
    Ok(StatusReport {
        node: props.node,
        version: props.version,
        store_connected: props.store_connected,
        groups,
    })
}

pub(super) async fn status(group: Option<&str>, json: bool, brief: bool) -> Result<(), Failure> {
    let conn = connect(READ_TIMEOUT).await?;
    let report = fetch_status(&conn, group).await?;
    let text = if json {
        render_json(&report)?
    } else if brief {
        render_brief(&report)
    } else {
        render_table(&report)
    };
    write_stdout(&text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use promd::core::Ineligible;

    fn sample() -> StatusReport {
        StatusReport {
            node: "db-a".into(),
            version: "0.1.0".into(),
            store_connected: true,
            groups: vec![
                GroupStatus {
                    name: "web".into(),
                    role: "active".into(),
                    leader: "db-a".into(),
                    term: 42,
                    priority: 100,
                    healthy: true,
                    maintenance: false,
                    failures: 0,
                    since_usec: 1_795_813_445_123_456,
                    members: vec![
                        MemberStatus {
                            node: "db-a".into(),
                            role: "active".into(),
                            priority: 100,
                            healthy: true,
                            eligible: false,
                            why: "not-passive".into(),
                            failures: 0,
                            since_usec: 1_795_813_445_123_456,
                            term: 42,
                        },
                        MemberStatus {
                            node: "db-b".into(),
                            role: "passive".into(),
                            priority: 90,
                            healthy: false,
                            eligible: false,
                            why: "unhealthy".into(),
                            failures: 0,
                            since_usec: 1_795_813_000_000_000,
                            term: 42,
                        },
                        MemberStatus {
                            node: "db-c".into(),
                            role: "passive".into(),
                            priority: 90,
                            healthy: true,
                            eligible: false,
                            why: "cooldown".into(),
                            failures: 4,
                            since_usec: 1_795_812_000_000_000,
                            term: 41,
                        },
                        MemberStatus {
                            node: "db-d".into(),
                            role: "passive".into(),
                            priority: 80,
                            healthy: true,
                            eligible: true,
                            why: "".into(),
                            failures: 0,
                            since_usec: 1_795_811_000_000_000,
                            term: 42,
                        },
                        MemberStatus {
                            node: "db-long-name".into(),
                            role: "down".into(),
                            priority: -5,
                            healthy: false,
                            eligible: false,
                            why: "down".into(),
                            failures: 0,
                            since_usec: 0,
                            term: 0,
                        },
                    ],
                    eligible: false,
                    why: "not-passive".into(),
                    slots: Vec::new(),
                    addresses: Vec::new(),
                },
                GroupStatus {
                    name: "queue".into(),
                    role: "maintenance".into(),
                    leader: "".into(),
                    term: 7,
                    priority: 1,
                    healthy: false,
                    maintenance: true,
                    failures: 3,
                    since_usec: 0,
                    members: vec![],
                    eligible: false,
                    why: "stopping".into(),
                    slots: Vec::new(),
                    addresses: Vec::new(),
                },
            ],
        }
    }

    #[test]
    fn status_table() {
        let expected = "\
node db-a, promd 0.1.0, store connected

web: this host active, leader db-a, term 42, maintenance off
    NODE          ROLE     PRIORITY  HEALTHY  FAILURES  ELIGIBLE
  * db-a          active        100  yes             0  no
    db-b          passive        90  no              0  no
      ineligible: the health check fails
    db-c          passive        90  yes             4  no
      ineligible: failed and in its failure cooldown (promctl reset clears it)
    db-d          passive        80  yes             0  yes
    db-long-name  down           -5  no              0  no

queue: this host maintenance, leader none, term 7, maintenance on
    (no members known)
";
        let table = render_table(&sample());
        assert_eq!(table, expected);
        assert!(table.lines().all(|l| l.len() <= COLUMNS), "{table}");
    }

    /// A group's floating addresses follow its heading, each with whether this host holds it;
    /// `--json` carries them, a group without any leaves them out.
    #[test]
    fn status_shows_the_addresses_and_whether_they_are_held_here() {
        let mut report = sample();
        report.groups[0].addresses = vec![
            AddressStatus {
                address: "192.0.2.10/24 dev eth0".into(),
                held: true,
            },
            AddressStatus {
                address: "2001:db8::10/64 dev eth0".into(),
                held: false,
            },
        ];
        let table = render_table(&report);
        assert!(
            table.contains(
                "web: this host active, leader db-a, term 42, maintenance off\n    addresses: \
                 192.0.2.10/24 dev eth0 (held here), 2001:db8::10/64 dev eth0 (not here)\n"
            ),
            "{table}"
        );
        let json: serde_json::Value = serde_json::to_value(&report).unwrap();
        assert_eq!(
            json["groups"][0]["addresses"][0],
            serde_json::json!({"address": "192.0.2.10/24 dev eth0", "held": true})
        );
        assert!(json["groups"][1].get("addresses").is_none(), "{json}");
    }

    /// Every reason reads in words, within 80 columns, whatever the node names.
    #[test]
    fn status_table_says_every_reason_in_80_columns() {
        let mut report = sample();
        let words = Ineligible::ALL
            .into_iter()
            .map(Ineligibility::Checked)
            .chain([Ineligibility::DeferOnce, Ineligibility::Unknown])
            .map(|w| w.word().to_string())
            .chain(["from-the-future".to_string()]);
        report.groups[0].members = words
            .map(|why| MemberStatus {
                node: format!("node-{why}"),
                role: "passive".into(),
                priority: 100,
                healthy: true,
                eligible: false,
                why,
                failures: 0,
                since_usec: 0,
                term: 0,
            })
            .collect();
        let table = render_table(&report);
        assert!(table.lines().all(|l| l.len() <= COLUMNS), "{table}");
        for m in &report.groups[0].members {
            let first = why_text(&m.why);
            let first = first.split(' ').take(3).collect::<Vec<_>>().join(" ");
            assert!(table.contains(&format!("ineligible: {first}")), "{table}");
        }
        assert!(table.contains("ineligible: not passive yet"));
    }

    /// `promctl status --brief`: one line per group, aligned, with the reason of an
    /// ineligible host in its word.
    #[test]
    fn status_brief() {
        let expected = "\
node db-a, promd 0.1.0, store connected
GROUP  ROLE         LEADER  TERM  MAINT  ELIGIBLE
web    active       db-a      42  off    no
queue  maintenance  none       7  on     no (stopping)
";
        assert_eq!(render_brief(&sample()), expected);
    }

    /// A group's slots follow it, by number, wherever promd lists them; a slot without its
    /// group stays where it is.
    #[test]
    fn slots_follow_their_group_by_number() {
        let mut report = sample();
        let group = |name: &str| GroupStatus {
            name: name.into(),
            ..report.groups[1].clone()
        };
        report.groups = vec![
            group("sched@10"),
            group("sched"),
            group("sched-b"),
            group("sched@2"),
            group("other@1"),
            group("sched@1"),
        ];
        let names = |text: String| -> Vec<String> {
            text.lines()
                .skip(2)
                .map(|l| l.split(' ').next().unwrap_or("").to_string())
                .collect()
        };
        assert_eq!(
            names(render_brief(&report)),
            [
                "sched", "sched@1", "sched@2", "sched@10", "sched-b", "other@1"
            ]
        );
        let table = render_table(&report);
        let order: Vec<usize> = [
            "\nsched:",
            "\nsched@1:",
            "\nsched@2:",
            "\nsched@10:",
            "\nsched-b:",
        ]
        .iter()
        .map(|h| table.find(h).unwrap_or(usize::MAX))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{table}");
    }

    #[test]
    fn status_table_without_groups_or_store() {
        let report = StatusReport {
            node: "solo".into(),
            version: "0.1.0".into(),
            store_connected: false,
            groups: vec![],
        };
        assert_eq!(
            render_table(&report),
            "node solo, promd 0.1.0, store NOT connected\n\nno groups are configured on this host\n"
        );
    }

    #[test]
    fn status_json_shape() {
        let text = match render_json(&sample()) {
            Ok(t) => t,
            Err(e) => panic!("{e:?}"),
        };
        assert!(text.ends_with("}\n"));
        let v: serde_json::Value = match serde_json::from_str(&text) {
            Ok(v) => v,
            Err(e) => panic!("{e}"),
        };
        let expected = serde_json::json!({
            "node": "db-a",
            "version": "0.1.0",
            "store_connected": true,
            "groups": [
                {
                    "name": "web", "role": "active", "leader": "db-a", "term": 42,
                    "priority": 100, "healthy": true, "maintenance": false, "failures": 0,
                    "since_usec": 1_795_813_445_123_456u64,
                    "members": [
                        {"node": "db-a", "role": "active", "priority": 100, "healthy": true,
                         "eligible": false, "why": "not-passive", "failures": 0,
                         "since_usec": 1_795_813_445_123_456u64, "term": 42},
                        {"node": "db-b", "role": "passive", "priority": 90, "healthy": false,
                         "eligible": false, "why": "unhealthy", "failures": 0,
                         "since_usec": 1_795_813_000_000_000u64, "term": 42},
                        {"node": "db-c", "role": "passive", "priority": 90, "healthy": true,
                         "eligible": false, "why": "cooldown", "failures": 4,
                         "since_usec": 1_795_812_000_000_000u64, "term": 41},
                        {"node": "db-d", "role": "passive", "priority": 80, "healthy": true,
                         "eligible": true, "why": "", "failures": 0,
                         "since_usec": 1_795_811_000_000_000u64, "term": 42},
                        {"node": "db-long-name", "role": "down", "priority": -5,
                         "healthy": false, "eligible": false, "why": "down", "failures": 0,
                         "since_usec": 0, "term": 0}
                    ],
                    "eligible": false, "why": "not-passive"
                },
                {
                    "name": "queue", "role": "maintenance", "leader": "", "term": 7,
                    "priority": 1, "healthy": false, "maintenance": true, "failures": 3,
                    "since_usec": 0, "members": [], "eligible": false, "why": "stopping"
                }
            ]
        });
        assert_eq!(v, expected);
        // Key order is stable too (declaration order), for readers that diff the output.
        let keys = [
            "\"node\"",
            "\"version\"",
            "\"store_connected\"",
            "\"groups\"",
        ];
        let pos: Vec<usize> = keys.iter().filter_map(|k| text.find(k)).collect();
        assert_eq!(pos.len(), keys.len());
        assert!(pos.windows(2).all(|w| w[0] < w[1]), "{text}");
    }
}
