//! The on-disk format: the envelopes around the records, the term file, and their checks.

use std::fs::File;
use std::io::Read;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::store::error::DirError;
use crate::store::record::{self, RecordError, Versioned};

/// Version of the envelopes and of the term file (the record inside an envelope carries its
/// own version, checked by [`record::decode`]).
pub(super) const DIR_FORMAT: u32 = 1;

/// A record bound to a session, as written: `leader`, `members/NODE`, `switchover`.
#[derive(Serialize)]
pub(super) struct Stored<'a, T> {
    pub(super) v: u32,
    /// The leader file's term; absent in the other files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) term: Option<u64>,
    pub(super) session: &'a str,
    /// Wall-clock unix microseconds after which the file counts as absent.
    pub(super) expires: u64,
    pub(super) record: &'a T,
}

/// A [`Stored`] envelope as read; the record is decoded (and checked) on its own. Fields it
/// does not know (a newer promd's, same `v`) are ignored: docs/store-format.md.
#[derive(Deserialize)]
pub(super) struct StoredIn {
    #[allow(dead_code)] // checked by `check_version` before this is parsed
    pub(super) v: u32,
    #[serde(default)]
    pub(super) term: Option<u64>,
    pub(super) session: String,
    pub(super) expires: u64,
    pub(super) record: serde_json::Value,
}

/// A record bound to no session, as written: `maintenance`.
#[derive(Serialize)]
pub(super) struct Durable<'a, T> {
    pub(super) v: u32,
    pub(super) record: &'a T,
}

/// A [`Durable`] envelope as read (unknown fields ignored, as in [`StoredIn`]).
#[derive(Deserialize)]
pub(super) struct DurableIn {
    #[allow(dead_code)] // checked by `check_version` before this is parsed
    pub(super) v: u32,
    pub(super) record: serde_json::Value,
}

/// The `term` file: the highest term ever handed out in the group (unknown fields ignored, as
/// in [`StoredIn`]).
#[derive(Serialize, Deserialize)]
pub(super) struct TermFile {
    pub(super) v: u32,
    pub(super) term: u64,
}

/// A decoded envelope.
#[derive(Debug, Clone)]
pub(super) struct Entry<T> {
    pub(super) term: Option<u64>,
    pub(super) session: String,
    pub(super) expires: u64,
    pub(super) record: T,
}

pub(super) fn json_error(e: serde_json::Error) -> RecordError {
    RecordError::Json(e.to_string())
}

/// Read the version first, as [`record::decode`] does, so that a newer format is reported as
/// such and not as a schema error.
pub(super) fn check_version(bytes: &[u8]) -> Result<(), RecordError> {
    #[derive(Deserialize)]
    struct Probe {
        v: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(bytes).map_err(json_error)?;
    match probe.v {
        Some(DIR_FORMAT) => Ok(()),
        Some(other) => Err(RecordError::Version(other)),
        None => Err(RecordError::Invalid("no format version \"v\"".into())),
    }
}

pub(super) fn valid_session(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric())
}

pub(super) fn decode_entry<T: DeserializeOwned + Versioned>(
    bytes: &[u8],
) -> Result<Entry<T>, RecordError> {
    check_version(bytes)?;
    let raw: StoredIn = serde_json::from_slice(bytes).map_err(json_error)?;
    if !valid_session(&raw.session) {
        return Err(RecordError::Invalid(format!(
            "{:?} is not a session id",
            raw.session
        )));
    }
    // Through bytes again so that the record gets exactly the checks etcd's values get.
    let inner = serde_json::to_vec(&raw.record).map_err(json_error)?;
    let record = record::decode::<T>(&inner)?;
    Ok(Entry {
        term: raw.term,
        session: raw.session,
        expires: raw.expires,
        record,
    })
}

pub(super) fn encode_entry<T: Serialize>(
    term: Option<u64>,
    session: &str,
    expires: u64,
    rec: &T,
) -> Vec<u8> {
    record::encode(&Stored {
        v: DIR_FORMAT,
        term,
        session,
        expires,
        record: rec,
    })
}

pub(super) fn decode_durable<T: DeserializeOwned + Versioned>(
    bytes: &[u8],
) -> Result<T, RecordError> {
    check_version(bytes)?;
    let raw: DurableIn = serde_json::from_slice(bytes).map_err(json_error)?;
    let inner = serde_json::to_vec(&raw.record).map_err(json_error)?;
    record::decode::<T>(&inner)
}

pub(super) fn encode_durable<T: Serialize>(rec: &T) -> Vec<u8> {
    record::encode(&Durable {
        v: DIR_FORMAT,
        record: rec,
    })
}

pub(super) fn decode_term(bytes: &[u8]) -> Result<u64, RecordError> {
    check_version(bytes)?;
    let file: TermFile = serde_json::from_slice(bytes).map_err(json_error)?;
    Ok(file.term)
}

// ---------------------------------------------------------------------------------------
// Clocks and ids
// ---------------------------------------------------------------------------------------

pub(super) fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

pub(super) fn unix_micros(t: SystemTime) -> Option<u64> {
    t.duration_since(UNIX_EPOCH).ok().map(micros)
}

/// The wall clock, which is what expiries are written in: the files are shared with other
/// processes and, over NFS, other hosts, so no process's monotonic clock would do.
pub(super) fn wall_us() -> Result<u64, DirError> {
    unix_micros(SystemTime::now()).ok_or(DirError::Clock)
}

/// A fresh session id: 128 random bits in hex.
pub(super) fn new_session_id() -> String {
    let mut bytes = [0u8; 16];
    let random = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    if random.is_err() {
        // No /dev/urandom (a strange chroot): std's hasher keys are random per process and
        // differ per instance, which is all a session id needs.
        use std::hash::{BuildHasher, Hasher};
        for half in bytes.chunks_mut(8) {
            let mut h = std::hash::RandomState::new().build_hasher();
            h.write_u32(std::process::id());
            h.write_u128(
                SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or_default()
                    .as_nanos(),
            );
            half.copy_from_slice(&h.finish().to_le_bytes());
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::record::MemberRecord;

    fn member(node: &str) -> MemberRecord {
        crate::store::record::passive_member(node, 1)
    }

    #[test]
    fn envelope_round_trip() {
        let bytes = encode_entry(Some(4), "abc123", 99, &member("db-a"));
        let entry = decode_entry::<MemberRecord>(&bytes).map_err(|e| e.to_string());
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(entry.term, Some(4));
        assert_eq!(entry.session, "abc123");
        assert_eq!(entry.expires, 99);
        assert_eq!(entry.record, member("db-a"));
    }

    #[test]
    fn foreign_envelopes_are_refused() {
        let inner = String::from_utf8(record::encode(&member("db-a"))).unwrap_or_default();
        let cases = [
            (
                format!(r#"{{"v":2,"session":"a","expires":1,"record":{inner}}}"#),
                "version 2",
            ),
            (
                format!(r#"{{"session":"a","expires":1,"record":{inner}}}"#),
                "no format version",
            ),
            (
                format!(r#"{{"v":1,"session":"../x","expires":1,"record":{inner}}}"#),
                "session",
            ),
            (
                r#"{"v":1,"session":"a","expires":1,"record":{"v":2,"node":"a"}}"#.to_string(),
                "version 2",
            ),
            ("garbage".to_string(), "not promd JSON"),
        ];
        for (text, expected) in cases {
            let error = decode_entry::<MemberRecord>(text.as_bytes())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(error.contains(expected), "{text}: {error:?}");
        }
    }

    /// A newer promd may add fields to the envelopes and the term file without a new `v`:
    /// this one reads what it knows and ignores the rest.
    #[test]
    fn a_newer_promds_envelope_fields_are_ignored() {
        let inner = String::from_utf8(record::encode(&member("db-a"))).unwrap_or_default();
        let text = format!(
            r#"{{"v":1,"term":4,"session":"a","expires":9,"epoch":{{"x":[1]}},"record":{inner}}}"#
        );
        let entry = decode_entry::<MemberRecord>(text.as_bytes()).map_err(|e| e.to_string());
        let entry = entry.unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((entry.term, entry.expires), (Some(4), 9));
        assert_eq!(entry.record, member("db-a"));
        let by = r#"{"v":1,"on":true,"by":"db-a","why":"upgrade"}"#;
        let durable = format!(r#"{{"v":1,"set":"2026-12-01","record":{by}}}"#);
        let rec = decode_durable::<crate::store::record::MaintenanceRecord>(durable.as_bytes());
        assert_eq!(rec.map(|r| (r.on, r.by)), Ok((true, "db-a".to_string())));
        assert_eq!(decode_term(br#"{"v":1,"term":7,"epoch":3}"#), Ok(7));
        assert_eq!(
            decode_term(br#"{"v":2,"term":7}"#),
            Err(RecordError::Version(2))
        );
    }

    #[test]
    fn session_ids_differ() {
        let a = new_session_id();
        assert_eq!(a.len(), 32);
        assert!(valid_session(&a));
        assert_ne!(a, new_session_id());
    }
}
