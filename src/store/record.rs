//! Values kept in the store: versioned JSON, so a foreign or corrupt value is recognised and
//! never trusted.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::{Ineligibility, Member, Role};

/// The only format version this build writes and reads.
///
/// Every record accepts fields it does not know; a field may be added without a new version
/// only if a promd that ignores it stays safe, else the version changes and older promd
/// versions refuse the record (docs/store-format.md has the rule).
pub const FORMAT_VERSION: u32 = 1;

/// Why a stored value is not a record this promd trusts.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum RecordError {
    /// Not JSON, or not the record's shape: serde_json's message.
    #[error("not promd JSON: {0}")]
    Json(String),
    /// A format version other than [`FORMAT_VERSION`].
    #[error("format version {0} is not supported (this promd reads version {FORMAT_VERSION})")]
    Version(u32),
    /// No version, or a field with a value promd never writes (a node name that is not one).
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// Why this host has no [`HostId`].
#[derive(Debug, Error)]
pub enum HostIdError {
    /// `path` cannot be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// `/etc/machine-id`.
        path: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// `path` does not hold 32 lowercase hex digits.
    #[error("{}: not a machine-id", path.display())]
    Invalid {
        /// `/etc/machine-id`.
        path: std::path::PathBuf,
    },
}

/// The value of `PREFIX/GROUP/leader`.
///
/// Records of every kind accept fields they do not know (a newer promd's, in a cluster that is
/// being upgraded host by host); a wrong version or a missing field is still refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// The node that holds the key.
    pub node: String,
    /// The node's configured priority (the highest eligible node wins).
    pub priority: i32,
    /// The writer's host: its `/etc/machine-id` (see [`HostId`]). Tells an earlier run of
    /// this host's promd from another host configured with the same `node`. Absent in
    /// records of promd versions before it, and when the host has no machine-id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The key's term (the fencing token), as the store handed it out: etcd writes it here
    /// (above every term handed out before, and above the campaign's floor), the dir store in
    /// the leader file's envelope. Absent in records of promd versions before it, whose term
    /// is the key's etcd create revision; and in the record a campaign sends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
}

/// The value of etcd's `PREFIX/GROUP/term` (and of the dir store's `term` file, in the same
/// shape): the highest term the store has handed out in the group. Bound to no lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// The highest term handed out.
    pub term: u64,
}

impl Versioned for TermRecord {
    fn validate(&self) -> Result<(), RecordError> {
        Ok(())
    }
}

/// The value of an address key, `PREFIX/.addresses/ADDRESS` (etcd, bound to the holder's
/// lease) or the dir store's `.addresses/ADDRESS` file: which group's role holds the floating
/// address. Written by a won campaign of a group that lists the address, deleted with its
/// release. A campaign of another group is lost while the key is held (a group renamed, or an
/// address moved between groups, during a rolling reload: issue 15), so the address is never
/// on two hosts even when their configurations disagree. (`.` never starts a group name.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// The group whose role holds the address.
    pub group: String,
    /// The node that holds the group's leader key.
    pub node: String,
    /// The holder's host, as in [`LeaderRecord::host`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The term the group's key was won at.
    pub term: u64,
    /// The group's lease in milliseconds (the dir store judges the holder's key live from
    /// it; etcd binds the key to the lease instead).
    pub lease_ms: u64,
}

impl Versioned for AddressRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.node)?;
        if !crate::config::valid_group_name(&self.group) {
            return Err(RecordError::Invalid(format!(
                "{:?} is not a group name",
                self.group
            )));
        }
        check_host(self.host.as_deref())
    }
}

/// The value of `PREFIX/GROUP/members/NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// The node the record describes (its key names the same node).
    pub node: String,
    /// The node's configured priority (the highest eligible node wins).
    pub priority: i32,
    /// May this node become active now (passive, healthy, not failed, a configured member).
    pub eligible: bool,
    /// The node's health command and passive units are fine.
    pub healthy: bool,
    /// The node's role as it reports it.
    pub role: Role,
    /// The newest term the node knew when it wrote the record; absent in records of promd
    /// versions before it. A node that won the key starts its units only once it reads back
    /// its own record claiming the role at the key's term.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub term: Option<u64>,
    /// The writer's host, as in [`LeaderRecord::host`]: a member record of this node's name
    /// written by another host is never overwritten; it means two hosts share one `node`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Why the node may not become active now, as a stable word
    /// ([`Ineligibility::word`]: `unhealthy`, `cooldown`, `defer-once`, …); absent when it
    /// is eligible, and in records of promd versions before it. A word this promd does not
    /// know reads as [`Ineligibility::Unknown`], never as an error. Informative only:
    /// `eligible` decides.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "why_word")]
    pub why: Option<Ineligibility>,
    /// The node's watched-unit failures within its `restart-window`; absent in records of
    /// promd versions before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failures: Option<u32>,
    /// CLOCK_REALTIME microseconds since the epoch when the record's `role` last changed, as
    /// the writer's clock said; absent in records of promd versions before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_usec: Option<u64>,
}

/// [`MemberRecord::why`] as its word.
mod why_word {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::core::Ineligibility;

    pub(super) fn serialize<S: Serializer>(
        why: &Option<Ineligibility>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match why {
            Some(w) => s.serialize_str(w.word()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Ineligibility>, D::Error> {
        let word: Option<String> = Option::deserialize(d)?;
        Ok(word.map(|w| Ineligibility::from_word(&w)))
    }
}

/// The value of `PREFIX/GROUP/switchover`: a request that the leader hand over to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchoverRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// The node that should become active.
    pub to: String,
    /// The node that asked.
    pub from: String,
}

/// The value of `PREFIX/GROUP/maintenance`: maintenance mode is on while it exists with
/// `on: true`. Not bound to any lease: it outlives the node that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRecord {
    /// The format version: [`FORMAT_VERSION`].
    pub v: u32,
    /// Maintenance mode on (a record with `on: false` reads as off).
    pub on: bool,
    /// The node that set it, for the operator.
    pub by: String,
}

/// Encode any record as the bytes stored.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail.
    serde_json::to_vec(record).unwrap_or_default()
}

/// Decode a record, checking its version and that the node names are valid.
pub fn decode<T: for<'de> Deserialize<'de> + Versioned>(bytes: &[u8]) -> Result<T, RecordError> {
    // Read the version first, so a newer format is reported as such, not as a schema error.
    #[derive(Deserialize)]
    struct Probe {
        v: Option<u32>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))?;
    match probe.v {
        Some(FORMAT_VERSION) => {}
        Some(other) => return Err(RecordError::Version(other)),
        None => return Err(RecordError::Invalid("no format version \"v\"".into())),
    }
    let record: T = serde_json::from_slice(bytes).map_err(|e| RecordError::Json(e.to_string()))?;
    record.validate()?;
    Ok(record)
}

/// A record with a format version, checked beyond its JSON shape by [`decode`].
pub trait Versioned {
    /// Refuse values promd never writes (node names that are not node names, …).
    fn validate(&self) -> Result<(), RecordError>;
}

fn check_node(name: &str) -> Result<(), RecordError> {
    if crate::config::valid_node_name(name) {
        Ok(())
    } else {
        Err(RecordError::Invalid(format!(
            "{name:?} is not a valid node name"
        )))
    }
}

fn check_host(host: Option<&str>) -> Result<(), RecordError> {
    match host {
        Some(h) if !HostId::valid(h) => {
            Err(RecordError::Invalid(format!("{h:?} is not a machine-id")))
        }
        _ => Ok(()),
    }
}

impl Versioned for LeaderRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.node)?;
        if self.term == Some(0) {
            return Err(RecordError::Invalid("term 0 (terms start at 1)".into()));
        }
        check_host(self.host.as_deref())
    }
}

impl Versioned for MemberRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.node)?;
        check_host(self.host.as_deref())
    }
}

impl MemberRecord {
    /// The record of the machine's `member`, as `host` writes it (this format's version),
    /// its role unchanged since `since_usec` (CLOCK_REALTIME µs; the machine has no wall
    /// clock, the agent stamps it).
    pub fn of(member: Member, host: Option<String>, since_usec: u64) -> MemberRecord {
        MemberRecord {
            v: FORMAT_VERSION,
            node: member.node,
            priority: member.priority,
            eligible: member.eligible,
            healthy: member.healthy,
            role: member.role,
            term: member.term,
            host,
            why: if member.eligible { None } else { member.why },
            failures: Some(member.failures),
            since_usec: Some(since_usec),
        }
    }

    /// The record at `term`: a campaign's claim once the store handed the term out.
    pub fn with_term(&self, term: u64) -> MemberRecord {
        MemberRecord {
            term: Some(term),
            ..self.clone()
        }
    }
}

impl From<MemberRecord> for Member {
    /// The member as the machine sees it (the writer's host is the agent's business). An
    /// ineligible record without a reason (an older promd's) reads as
    /// [`Ineligibility::Unknown`]; an eligible one has no reason, whatever it says.
    fn from(r: MemberRecord) -> Member {
        Member {
            why: match (r.eligible, r.why) {
                (true, _) => None,
                (false, why) => Some(why.unwrap_or(Ineligibility::Unknown)),
            },
            failures: r.failures.unwrap_or(0),
            since_usec: r.since_usec,
            node: r.node,
            priority: r.priority,
            eligible: r.eligible,
            healthy: r.healthy,
            role: r.role,
            term: r.term,
        }
    }
}

/// Which host a process runs on: the 32 hex digits of `/etc/machine-id` (machine-id(5)),
/// unique per installation and stable across reboots. Two promd processes that write under
/// the same `node` from different hosts are a configuration error that must be refused, not
/// two runs of one host's promd (the second of which may release the first's key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostId(String);

impl HostId {
    /// This host's id; `None` (with the reason) if `/etc/machine-id` is missing or not a
    /// machine-id. Without one, records carry no host and two hosts sharing a `node` go
    /// undetected, as with records of older promd versions.
    pub fn of_this_host() -> Result<HostId, HostIdError> {
        let path = std::path::Path::new("/etc/machine-id");
        let text = std::fs::read_to_string(path).map_err(|source| HostIdError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        HostId::parse(text.trim()).ok_or_else(|| HostIdError::Invalid {
            path: path.to_path_buf(),
        })
    }

    /// A machine-id as written in a record (32 lowercase hex digits).
    pub fn parse(s: &str) -> Option<HostId> {
        HostId::valid(s).then(|| HostId(s.to_string()))
    }

    fn valid(s: &str) -> bool {
        s.len() == 32
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    /// The 32 hex digits.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The other host, if a record under our own node name was written on a host other than
/// `ours`. A record without a host (an older promd's) or a process without one proves
/// nothing either way.
pub fn other_host<'r>(record_host: Option<&'r str>, ours: Option<&HostId>) -> Option<&'r str> {
    match (record_host, ours) {
        (Some(h), Some(o)) if h != o.as_str() => Some(h),
        _ => None,
    }
}

impl Versioned for MaintenanceRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.by)
    }
}

impl Versioned for SwitchoverRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.to)?;
        check_node(&self.from)
    }
}

/// A record fixture for the store's unit tests.
#[cfg(test)]
pub(crate) fn passive_member(node: &str, priority: i32) -> MemberRecord {
    MemberRecord {
        v: FORMAT_VERSION,
        node: node.into(),
        priority,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::Ineligible;

    fn member() -> MemberRecord {
        MemberRecord {
            v: 1,
            node: "db-a".into(),
            priority: 100,
            eligible: true,
            healthy: true,
            role: Role::Passive,
            term: None,
            host: Some("0123456789abcdef0123456789abcdef".into()),
            why: None,
            failures: None,
            since_usec: None,
        }
    }

    #[test]
    fn round_trip() {
        let m = member();
        assert_eq!(decode::<MemberRecord>(&encode(&m)), Ok(m));
    }

    #[test]
    fn foreign_and_corrupt_values_are_refused() {
        assert!(matches!(
            decode::<LeaderRecord>(b"hello"),
            Err(RecordError::Json(_))
        ));
        assert_eq!(
            decode::<LeaderRecord>(br#"{"v":2,"node":"a","priority":1}"#),
            Err(RecordError::Version(2))
        );
        assert!(matches!(
            decode::<LeaderRecord>(br#"{"node":"a","priority":1}"#),
            Err(RecordError::Invalid(_))
        ));
        assert!(matches!(
            decode::<LeaderRecord>(br#"{"v":1,"node":"../x","priority":1}"#),
            Err(RecordError::Invalid(_))
        ));
        assert!(matches!(
            decode::<LeaderRecord>(br#"{"v":1,"node":"a","priority":1,"host":"x"}"#),
            Err(RecordError::Invalid(_))
        ));
    }

    #[test]
    fn a_newer_promds_fields_are_ignored_and_an_older_ones_record_has_no_host() {
        let newer = br#"{"v":1,"node":"a","priority":1,"extra":true}"#;
        let rec = decode::<LeaderRecord>(newer).unwrap();
        assert_eq!((rec.node.as_str(), rec.host), ("a", None));
        // A record without a host is written without the field, as older versions did.
        assert_eq!(
            encode(&LeaderRecord {
                v: 1,
                node: "a".into(),
                priority: 1,
                host: None,
                term: None,
            }),
            br#"{"v":1,"node":"a","priority":1}"#
        );
    }

    #[test]
    fn only_a_record_from_another_known_host_is_another_hosts() {
        let a = HostId::parse("0123456789abcdef0123456789abcdef").unwrap();
        let b = "fedcba9876543210fedcba9876543210";
        assert_eq!(other_host(Some(b), Some(&a)), Some(b));
        assert_eq!(other_host(Some(a.as_str()), Some(&a)), None);
        assert_eq!(other_host(None, Some(&a)), None);
        assert_eq!(other_host(Some(b), None), None);
        assert!(HostId::parse("0123456789ABCDEF0123456789abcdef").is_none());
        assert!(HostId::parse("").is_none());
    }
    /// A record of a promd before `why`, `failures` and `since_usec`: read as it was meant
    /// (an ineligible one for an unknown reason), and written back byte for byte.
    #[test]
    fn member_record_of_an_older_promd_reads_and_round_trips() {
        let old = br#"{"v":1,"node":"b","priority":90,"eligible":false,"healthy":false,"role":"passive","term":7}"#;
        let rec = match decode::<MemberRecord>(old) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            (rec.why, rec.failures, rec.since_usec, rec.term),
            (None, None, None, Some(7))
        );
        assert_eq!(encode(&rec), old.to_vec());
        let m = Member::from(rec);
        assert_eq!(m.why, Some(Ineligibility::Unknown));
        assert_eq!((m.failures, m.since_usec), (0, None));
        let eligible =
            br#"{"v":1,"node":"b","priority":90,"eligible":true,"healthy":true,"role":"passive"}"#;
        let m = match decode::<MemberRecord>(eligible) {
            Ok(r) => Member::from(r),
            Err(e) => panic!("{e}"),
        };
        assert_eq!(m.why, None);
    }

    /// Every new field round-trips, with its word, and the record reads as a member.
    #[test]
    fn member_record_with_why_failures_and_since_round_trips() {
        for why in Ineligible::ALL
            .into_iter()
            .map(Ineligibility::Checked)
            .chain([Ineligibility::DeferOnce])
        {
            let rec = MemberRecord {
                eligible: false,
                why: Some(why),
                failures: Some(2),
                since_usec: Some(1_795_813_445_123_456),
                ..member()
            };
            let bytes = encode(&rec);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            assert!(
                text.contains(&format!(r#""why":"{}""#, why.word())),
                "{text}"
            );
            assert!(
                text.ends_with(r#""failures":2,"since_usec":1795813445123456}"#),
                "{text}"
            );
            assert_eq!(decode::<MemberRecord>(&bytes), Ok(rec.clone()));
            let m = Member::from(rec);
            assert_eq!((m.why, m.failures), (Some(why), 2));
            assert_eq!(m.since_usec, Some(1_795_813_445_123_456));
        }
    }

    /// A newer promd's reason is not an error: ineligible, reason unknown. Its other new
    /// fields are ignored.
    #[test]
    fn member_record_with_an_unknown_why_word_and_fields_reads_as_unknown() {
        let newer = br#"{"v":1,"node":"c","priority":5,"eligible":false,"healthy":true,"role":"passive","why":"quorum-lost","failures":1,"since_usec":9,"zone":"eu-1","rank":{"x":[1,2]}}"#;
        let rec = match decode::<MemberRecord>(newer) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(rec.why, Some(Ineligibility::Unknown));
        assert_eq!((rec.failures, rec.since_usec), (Some(1), Some(9)));
        let m = Member::from(rec);
        assert!(!m.eligible);
        assert_eq!(m.why, Some(Ineligibility::Unknown));
        // The word must be a string: anything else is not the record's shape.
        let bad = br#"{"v":1,"node":"c","priority":5,"eligible":false,"healthy":true,"role":"passive","why":3}"#;
        assert!(matches!(
            decode::<MemberRecord>(bad),
            Err(RecordError::Json(_))
        ));
    }

    /// The machine's member becomes a record with its reason, failures and the agent's stamp;
    /// an eligible member's record carries no reason.
    #[test]
    fn member_record_of_the_machines_member() {
        let member = Member {
            node: "a".into(),
            priority: 100,
            eligible: false,
            healthy: false,
            role: Role::Passive,
            term: Some(3),
            why: Some(Ineligibility::Checked(Ineligible::Unhealthy)),
            failures: 1,
            since_usec: None,
        };
        let rec = MemberRecord::of(member.clone(), None, 42);
        assert_eq!(
            String::from_utf8_lossy(&encode(&rec)),
            r#"{"v":1,"node":"a","priority":100,"eligible":false,"healthy":false,"role":"passive","term":3,"why":"unhealthy","failures":1,"since_usec":42}"#
        );
        let back = Member::from(rec);
        assert_eq!(back.since_usec, Some(42));
        assert_eq!(
            Member {
                since_usec: None,
                ..back
            },
            member
        );
    }
}
