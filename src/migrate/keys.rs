//! Reading `config.json`: both key spellings folded into one canonical form, and the JSON
//! value types.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::ImportError;

/// What a key means, by its canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    AppName,
    Credential,
    EnsureActive(u64),
    EnsurePassive(u64),
    RestartDaemon(u64),
    StartActive(u64),
    Timeout,
    RestartBackoff,
    MonitorSleep,
    Retries,
    ReplicaIds,
    MusicLocation,
    MusicTimeout,
    MusicVersion,
    Unknown,
}

pub(super) fn kind_of(canonical: &str) -> Kind {
    let indexed = |prefix: &str| {
        canonical
            .strip_prefix(prefix)
            .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|id| id.parse::<u64>().ok())
    };
    if let Some(id) = indexed("ensure-active-") {
        return Kind::EnsureActive(id);
    }
    if let Some(id) = indexed("ensure-passive-") {
        return Kind::EnsurePassive(id);
    }
    if let Some(id) = indexed("restart-prom-") {
        return Kind::RestartDaemon(id);
    }
    if let Some(id) = indexed("start-active-") {
        return Kind::StartActive(id);
    }
    match canonical {
        "app-name" => Kind::AppName,
        "aid" | "namespace" | "userid" | "password" => Kind::Credential,
        "prom-timeout" => Kind::Timeout,
        "restart-backoff-time" => Kind::RestartBackoff,
        "core-monitor-sleep-time" => Kind::MonitorSleep,
        "no-of-retry-attempts" => Kind::Retries,
        "replica-id-list" => Kind::ReplicaIds,
        "music-location" => Kind::MusicLocation,
        "music-connection-timeout-ms" => Kind::MusicTimeout,
        "music-version" => Kind::MusicVersion,
        _ => Kind::Unknown,
    }
}

/// The PROM spelling of a key: camelCase and snake_case to kebab-case (`noOfRetryAttempts` ->
/// `no-of-retry-attempts`), then HAL's own names (`timeout`, `hal-timeout`, `restart-hal-i`,
/// `start-as-active-i`) to PROM's.
pub(super) fn canonical(key: &str) -> String {
    let chars: Vec<char> = key.trim().chars().collect();
    let mut out = String::with_capacity(chars.len() + 4);
    for (i, &c) in chars.iter().enumerate() {
        if c.is_ascii_uppercase() {
            let prev = i.checked_sub(1).map(|j| chars[j]);
            let next = chars.get(i + 1).copied();
            let after_word = prev.is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit());
            let acronym_end = prev.is_some_and(|p| p.is_ascii_uppercase())
                && next.is_some_and(|n| n.is_ascii_lowercase());
            if (after_word || acronym_end) && !out.ends_with('-') {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '_' {
            out.push('-');
        } else {
            out.push(c);
        }
    }
    if out == "timeout" || out == "hal-timeout" {
        return "prom-timeout".to_owned();
    }
    if let Some(id) = out.strip_prefix("restart-hal-") {
        return format!("restart-prom-{id}");
    }
    if let Some(id) = out.strip_prefix("start-as-active-") {
        return format!("start-active-{id}");
    }
    out
}

/// A key as written in the file, for messages: in backquotes, or escaped if it holds
/// anything but plain printable ASCII (so it can never break a line or a comment).
pub(super) fn show_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_graphic() && c != '`') {
        format!("`{key}`")
    } else {
        format!("{key:?}")
    }
}

/// The file's keys by canonical name, each with its spelling in the file and its value.
pub(super) struct Keys<'j> {
    pub(super) by_canonical: BTreeMap<String, (&'j str, &'j Value)>,
}

impl<'j> Keys<'j> {
    pub(super) fn read(object: &'j Map<String, Value>) -> Result<Keys<'j>, ImportError> {
        let mut by_canonical: BTreeMap<String, (&'j str, &'j Value)> = BTreeMap::new();
        for (key, value) in object {
            let name = canonical(key);
            if let Some((first, first_value)) = by_canonical.get(&name) {
                if *first_value != value {
                    let (a, b) = if *first <= key.as_str() {
                        (*first, key.as_str())
                    } else {
                        (key.as_str(), *first)
                    };
                    return Err(ImportError::Conflict {
                        first: show_key(a),
                        second: show_key(b),
                    });
                }
                continue;
            }
            by_canonical.insert(name, (key.as_str(), value));
        }
        Ok(Keys { by_canonical })
    }

    /// The value of a canonical key, with the key as written.
    pub(super) fn get(&self, canonical: &str) -> Option<(&'j str, &'j Value)> {
        self.by_canonical.get(canonical).copied()
    }

    /// Every key, with its kind, ordered by kind then replica id (for stable notes).
    pub(super) fn all(&self) -> Vec<(Kind, &'j str, &'j Value)> {
        let mut all: Vec<_> = self
            .by_canonical
            .iter()
            .map(|(name, (key, value))| (kind_of(name), *key, *value))
            .collect();
        all.sort_by_key(|(kind, key, _)| (kind_rank(*kind), *key));
        all
    }
}

/// Sort order of notes: by kind, and by replica id within a kind.
pub(super) fn kind_rank(kind: Kind) -> (u8, u64) {
    match kind {
        Kind::AppName => (0, 0),
        Kind::ReplicaIds => (1, 0),
        Kind::EnsureActive(id) => (2, id),
        Kind::EnsurePassive(id) => (3, id),
        Kind::StartActive(id) => (4, id),
        Kind::Timeout => (5, 0),
        Kind::Retries => (6, 0),
        Kind::RestartBackoff => (7, 0),
        Kind::RestartDaemon(id) => (8, id),
        Kind::MonitorSleep => (9, 0),
        Kind::MusicLocation => (10, 0),
        Kind::MusicTimeout => (11, 0),
        Kind::MusicVersion => (12, 0),
        Kind::Credential => (13, 0),
        Kind::Unknown => (14, 0),
    }
}

// ---------------------------------------------------------------------------------------------
// Values

pub(super) fn json_error(err: serde_json::Error) -> ImportError {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ImportError::Json {
        line: err.line(),
        column: err.column(),
        message,
    }
}

pub(super) fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A whole number that is not negative, written as a JSON number or a string of digits.
pub(super) fn whole_number(key: &str, value: &Value) -> Result<u64, ImportError> {
    let bad = |shown: String, reason: &str| ImportError::BadValue {
        key: show_key(key),
        value: shown,
        reason: reason.to_owned(),
    };
    match value {
        Value::Number(n) => {
            if let Some(n) = n.as_u64() {
                Ok(n)
            } else if n.is_i64() {
                Err(bad(n.to_string(), "must not be negative"))
            } else {
                match n.as_f64() {
                    // 2000.0: a whole number written as a float.
                    Some(f) if f >= 0.0 && f.fract() == 0.0 && f < 9.0e15 => Ok(f as u64),
                    _ => Err(bad(n.to_string(), "must be a whole number")),
                }
            }
        }
        Value::String(s) => {
            let t = s.trim();
            if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()) {
                t.parse::<u64>()
                    .map_err(|_| bad(format!("{s:?}"), "is too large"))
            } else if t.starts_with('-') {
                Err(bad(format!("{s:?}"), "must not be negative"))
            } else {
                Err(bad(
                    format!("{s:?}"),
                    "must be a whole number of milliseconds or of attempts, e.g. \"50000\"",
                ))
            }
        }
        other => Err(ImportError::WrongType {
            key: show_key(key),
            expected: "a number or a string of digits",
            found: type_name(other),
        }),
    }
}

/// `true` or `false`, as a JSON boolean or a string (any case, as Java's `parseBoolean`).
pub(super) fn boolean(key: &str, value: &Value) -> Result<bool, ImportError> {
    match value {
        Value::Bool(b) => Ok(*b),
        Value::String(s) if s.trim().eq_ignore_ascii_case("true") => Ok(true),
        Value::String(s) if s.trim().eq_ignore_ascii_case("false") => Ok(false),
        Value::String(s) => Err(ImportError::BadValue {
            key: show_key(key),
            value: format!("{s:?}"),
            reason: "must be \"true\" or \"false\"".to_owned(),
        }),
        other => Err(ImportError::WrongType {
            key: show_key(key),
            expected: "true or false",
            found: type_name(other),
        }),
    }
}

pub(super) fn string<'j>(key: &str, value: &'j Value) -> Result<&'j str, ImportError> {
    match value {
        Value::String(s) => Ok(s),
        other => Err(ImportError::WrongType {
            key: show_key(key),
            expected: "a string",
            found: type_name(other),
        }),
    }
}

/// A list: a JSON array, or a string of comma-separated items (HAL's documentation calls
/// `replicaIdList` "a comma separated list").
pub(super) fn list(key: &str, value: &Value) -> Result<Vec<Value>, ImportError> {
    match value {
        Value::Array(items) => Ok(items.clone()),
        Value::String(s) => Ok(s
            .split(',')
            .map(str::trim)
            .filter(|item| !item.is_empty())
            .map(|item| Value::String(item.to_owned()))
            .collect()),
        other => Err(ImportError::WrongType {
            key: show_key(key),
            expected: "an array",
            found: type_name(other),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_spellings() {
        for (key, expected) in [
            ("app-name", "app-name"),
            ("appName", "app-name"),
            ("noOfRetryAttempts", "no-of-retry-attempts"),
            ("replicaIdList", "replica-id-list"),
            ("musicLocation", "music-location"),
            ("musicConnectionTimeoutMs", "music-connection-timeout-ms"),
            ("timeout", "prom-timeout"),
            ("hal-timeout", "prom-timeout"),
            ("restart-hal-3", "restart-prom-3"),
            ("start-as-active-1", "start-active-1"),
            ("restart_backoff_time", "restart-backoff-time"),
            ("AID", "aid"),
            ("musicURL", "music-url"),
        ] {
            assert_eq!(canonical(key), expected, "{key}");
        }
    }
}
