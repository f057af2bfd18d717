//! Values kept in the store: versioned JSON, so a foreign or corrupt value is recognised and
//! never trusted.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::{Member, Role};

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
    /// The record of the machine's `member`, as `host` writes it (this format's version).
    pub fn of(member: Member, host: Option<String>) -> MemberRecord {
        MemberRecord {
            v: FORMAT_VERSION,
            node: member.node,
            priority: member.priority,
            eligible: member.eligible,
            healthy: member.healthy,
            role: member.role,
            term: member.term,
            host,
        }
    }
}

impl From<MemberRecord> for Member {
    /// The member as the machine sees it (the writer's host is the agent's business).
    fn from(r: MemberRecord) -> Member {
        Member {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
