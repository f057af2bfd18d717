//! Values kept in the store: versioned JSON, so a foreign or corrupt value is recognised and
//! never trusted.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::core::Role;

/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("not promd JSON: {0}")]
    Json(String),
    #[error("format version {0} is not supported (this promd reads version {FORMAT_VERSION})")]
    Version(u32),
    #[error("invalid value: {0}")]
    Invalid(String),
}

/// The value of `PREFIX/GROUP/leader`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaderRecord {
    pub v: u32,
    pub node: String,
    pub priority: i32,
}

/// The value of `PREFIX/GROUP/members/NODE`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    pub v: u32,
    pub node: String,
    pub priority: i32,
    /// May this node become active now (passive, healthy, not failed, a configured member).
    pub eligible: bool,
    pub healthy: bool,
    pub role: Role,
}

/// The value of `PREFIX/GROUP/switchover`: a request that the leader hand over to `to`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SwitchoverRecord {
    pub v: u32,
    pub to: String,
    pub from: String,
}

/// The value of `PREFIX/GROUP/maintenance`: maintenance mode is on while it exists with
/// `on: true`. Not bound to any lease: it outlives the node that set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaintenanceRecord {
    pub v: u32,
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

pub trait Versioned {
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

impl Versioned for LeaderRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.node)
    }
}

impl Versioned for MemberRecord {
    fn validate(&self) -> Result<(), RecordError> {
        check_node(&self.node)
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
            decode::<LeaderRecord>(br#"{"v":1,"node":"a","priority":1,"extra":true}"#),
            Err(RecordError::Json(_))
        ));
    }
}
