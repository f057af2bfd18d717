//! Migration from PROM / HAL: `promctl import-prom CONFIG.json --replica ID [--out DIR]`.
//!
//! PROM and HAL (Java daemons over the MUSIC store) describe a replica set in one `config.json`
//! shared by every host; each host runs one replica, named by its id. [`import_prom`] turns that
//! file into what the host that runs one replica needs under promd: a `promd.toml` and the
//! systemd units that run the host's `ensure-active-ID` / `ensure-passive-ID` commands, so a
//! site can switch to promd before it rewrites its scripts as real units. Every key that is not
//! carried over is listed in [`Migration::notes`] with the reason.
//!
//! Everything here is pure except [`write_files`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Write as _;
use std::net::Ipv6Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::config::valid_group_name;

/// etcd's client port: the endpoints are MUSIC's hosts with this port.
const ETCD_PORT: u16 = 2379;
/// Priority of a replica that PROM started active (`start-active-i` = true).
const PREFERRED_PRIORITY: i32 = 200;
/// Priority of the other replicas (promd's default).
const DEFAULT_PRIORITY: i32 = 100;
/// promd refuses leases shorter than this (see `config.rs`).
const MIN_LEASE_MS: u64 = 1000;
/// The `WatchdogSec=` of the shipped `promd.service`.
const SHIPPED_WATCHDOG: Duration = Duration::from_secs(3);
/// Where promd writes the units' environment (`PROMD_*`), per group.
const ENV_DIR: &str = "/run/promd";

/// What `promctl import-prom` writes for one replica, and what it could not carry over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Migration {
    /// The files to write, by path relative to the output directory: `promd.toml` (for
    /// `/etc/promd/`) and the units (for `/etc/systemd/system/`).
    pub files: Vec<(PathBuf, String)>,
    /// One line per key not carried over, with the reason; then warnings (`warning: ...`),
    /// which say what the operator must check or do before starting promd.
    pub notes: Vec<String>,
    /// The node name given to this replica (`node` in `promd.toml`).
    pub node: String,
    /// The group name (from the application name).
    pub group: String,
}

/// Why a PROM / HAL configuration could not be converted. The messages name the key as it is
/// written in the file; they never quote a command or a credential.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("malformed JSON at line {line}, column {column}: {message}")]
    Json {
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "the configuration must be a JSON object ({{\"app-name\": ..., \"replica-id-list\": ...}}), found {found}"
    )]
    NotAnObject { found: &'static str },
    #[error("`{key}` is missing: {hint}")]
    Missing {
        key: &'static str,
        hint: &'static str,
    },
    #[error("{first} and {second} are the same setting with different values: keep one")]
    Conflict { first: String, second: String },
    #[error("{key} must be {expected}, found {found}")]
    WrongType {
        key: String,
        expected: &'static str,
        found: &'static str,
    },
    #[error("{key} = {value}: {reason}")]
    BadValue {
        key: String,
        value: String,
        reason: String,
    },
    #[error(
        "{key}: the replica ids must be 0 to N-1, each once (PROM and HAL require it): {reason}"
    )]
    ReplicaIds { key: String, reason: String },
    #[error("--replica {replica:?} is not a replica id: give a whole number such as 0")]
    BadReplicaArg { replica: String },
    #[error("replica {replica} is not in {key} (the ids are {ids})")]
    UnknownReplica {
        replica: u64,
        key: String,
        ids: String,
    },
    #[error("{key}: {reason}")]
    BadCommand { key: String, reason: String },
    #[error("{path}: {reason}")]
    Write { path: PathBuf, reason: String },
}

/// Converts a PROM / HAL `config.json` into promd's files for the host that runs `replica`.
///
/// Accepts both spellings of the keys (PROM's `app-name`, `prom-timeout`,
/// `no-of-retry-attempts`, `replica-id-list`, `music-location`, `restart-prom-i`; HAL's
/// `appName`, `timeout`/`hal-timeout`, `noOfRetryAttempts`, `replicaIdList`, `musicLocation`,
/// `restart-hal-i`, `start-as-active-i`; any camelCase form of a PROM key), and numbers written
/// as JSON numbers or as strings of digits.
pub fn import_prom(json: &str, replica: &str) -> Result<Migration, ImportError> {
    let value: Value = serde_json::from_str(json).map_err(json_error)?;
    let Value::Object(object) = value else {
        return Err(ImportError::NotAnObject {
            found: type_name(&value),
        });
    };
    let keys = Keys::read(&object)?;
    Importer::new(&keys, replica)?.run()
}

/// Writes the files of `migration` into `out_dir` (created if needed). Refuses to overwrite:
/// if any of the files exists, nothing is written. Returns the paths written.
pub fn write_files(out_dir: &Path, migration: &Migration) -> Result<Vec<PathBuf>, ImportError> {
    let write_error = |path: &Path, err: std::io::Error| ImportError::Write {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    std::fs::create_dir_all(out_dir).map_err(|e| write_error(out_dir, e))?;
    let paths: Vec<PathBuf> = migration
        .files
        .iter()
        .map(|(relative, _)| out_dir.join(relative))
        .collect();
    for path in &paths {
        if path.symlink_metadata().is_ok() {
            return Err(ImportError::Write {
                path: path.clone(),
                reason: "exists already; nothing was written (remove it or choose another --out)"
                    .to_owned(),
            });
        }
    }
    for (path, (_, text)) in paths.iter().zip(&migration.files) {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| write_error(parent, e))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(|e| write_error(path, e))?;
        file.write_all(text.as_bytes())
            .map_err(|e| write_error(path, e))?;
    }
    Ok(paths)
}

// ---------------------------------------------------------------------------------------------
// Keys: both spellings folded into one canonical (PROM, kebab-case) form

/// What a key means, by its canonical name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
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

fn kind_of(canonical: &str) -> Kind {
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
fn canonical(key: &str) -> String {
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
fn show_key(key: &str) -> String {
    if !key.is_empty() && key.chars().all(|c| c.is_ascii_graphic() && c != '`') {
        format!("`{key}`")
    } else {
        format!("{key:?}")
    }
}

/// The file's keys by canonical name, each with its spelling in the file and its value.
struct Keys<'j> {
    by_canonical: BTreeMap<String, (&'j str, &'j Value)>,
}

impl<'j> Keys<'j> {
    fn read(object: &'j Map<String, Value>) -> Result<Keys<'j>, ImportError> {
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
    fn get(&self, canonical: &str) -> Option<(&'j str, &'j Value)> {
        self.by_canonical.get(canonical).copied()
    }

    /// Every key, with its kind, ordered by kind then replica id (for stable notes).
    fn all(&self) -> Vec<(Kind, &'j str, &'j Value)> {
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
fn kind_rank(kind: Kind) -> (u8, u64) {
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

fn json_error(err: serde_json::Error) -> ImportError {
    let full = err.to_string();
    let suffix = format!(" at line {} column {}", err.line(), err.column());
    let message = full.strip_suffix(&suffix).unwrap_or(&full).to_owned();
    ImportError::Json {
        line: err.line(),
        column: err.column(),
        message,
    }
}

fn type_name(value: &Value) -> &'static str {
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
fn whole_number(key: &str, value: &Value) -> Result<u64, ImportError> {
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
fn boolean(key: &str, value: &Value) -> Result<bool, ImportError> {
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

fn string<'j>(key: &str, value: &'j Value) -> Result<&'j str, ImportError> {
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
fn list(key: &str, value: &Value) -> Result<Vec<Value>, ImportError> {
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

/// A duration in promd's syntax: whole seconds as `"50s"`, otherwise `"1500ms"`.
fn duration_ms(ms: u64) -> String {
    if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn toml_array(items: &[String]) -> String {
    let items: Vec<String> = items.iter().map(|s| toml_string(s)).collect();
    format!("[{}]", items.join(", "))
}

// ---------------------------------------------------------------------------------------------
// Names

/// Lowercase; every run of characters outside `keep` becomes one `-`; no `-` at either end.
fn sanitise(name: &str, keep: impl Fn(char) -> bool) -> String {
    let mut out = String::new();
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii() && keep(c) {
            out.push(c);
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_owned()
}

/// The group: the application name in `[a-z0-9_-]`, at most 64 characters.
fn group_name(app: &str) -> Option<String> {
    let name = sanitise(app, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'
    });
    let name: String = name.chars().take(64).collect();
    let name = name.trim_end_matches('-').to_owned();
    valid_group_name(&name).then_some(name)
}

/// A replica's node name: `GROUP-ID` (valid by construction: the group name is, and `-ID` is).
fn node_name(group: &str, id: u64) -> String {
    let suffix = format!("-{id}");
    let keep = 64usize.saturating_sub(suffix.len());
    let base: String = group.chars().take(keep).collect();
    let base = base.trim_end_matches('-');
    format!("{base}{suffix}")
}

/// An etcd endpoint on the host of a MUSIC location (`10.0.0.5`, `music-1:8080`,
/// `http://music-1:8080/MUSIC/rest`, `[fe80::1]`, `fe80::1`): `http://HOST:2379`.
fn endpoint(location: &str) -> Option<String> {
    let rest = location.trim();
    let rest = rest
        .strip_prefix("http://")
        .or_else(|| rest.strip_prefix("https://"))
        .unwrap_or(rest);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(bracketed) = authority.strip_prefix('[') {
        let (ip, _) = bracketed.split_once(']')?;
        ip.parse::<Ipv6Addr>().ok()?;
        return Some(format!("http://[{ip}]:{ETCD_PORT}"));
    } else if authority.matches(':').count() > 1 {
        let ip: Ipv6Addr = authority.parse().ok()?;
        return Some(format!("http://[{ip}]:{ETCD_PORT}"));
    } else {
        authority.split(':').next().unwrap_or("")
    };
    let valid = !host.is_empty()
        && !host.starts_with(['-', '.'])
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    valid.then(|| format!("http://{}:{ETCD_PORT}", host.to_ascii_lowercase()))
}

// ---------------------------------------------------------------------------------------------
// Commands: the ensure scripts as ExecStart= lines

/// A command line for `ExecStart=` / `ExecStop=`.
struct Exec {
    /// The value after `ExecStart=`.
    line: String,
    /// Run through `/bin/sh -c`: the command uses shell syntax.
    shell: bool,
    /// It had quotes or backslashes, which the unit treats as quoting.
    quoted: bool,
    /// The program, if the command runs without a shell.
    program: Option<String>,
}

/// Splits a command line into words as the shell would, and says whether it needs a shell:
/// pipes, lists, redirections, expansions (`$`, backquotes), globs, assignments, comments.
fn split_words(command: &str) -> Result<(Vec<String>, bool, bool), String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut shell = false;
    let mut quoted = false;
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            '\'' => {
                quoted = true;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => w.push(c),
                        None => return Err("unbalanced single quote".to_owned()),
                    }
                }
            }
            '"' => {
                quoted = true;
                let w = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(e @ ('"' | '\\' | '$' | '`')) => w.push(e),
                            Some('\n') => shell = true,
                            Some(e) => {
                                w.push('\\');
                                w.push(e);
                            }
                            None => return Err("unbalanced double quote".to_owned()),
                        },
                        Some(c @ ('$' | '`')) => {
                            shell = true;
                            w.push(c);
                        }
                        Some(c) => w.push(c),
                        None => return Err("unbalanced double quote".to_owned()),
                    }
                }
            }
            '\\' => {
                quoted = true;
                match chars.next() {
                    Some('\n') | None => shell = true,
                    Some(e) => word.get_or_insert_with(String::new).push(e),
                }
            }
            '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' | '\n' | '*' | '?' | '[' => {
                shell = true;
                word.get_or_insert_with(String::new).push(c);
            }
            '#' | '~' if word.is_none() => {
                shell = true;
                word = Some(c.to_string());
            }
            '=' if words.is_empty()
                && word
                    .as_ref()
                    .is_some_and(|w| w.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')) =>
            {
                // VAR=value before the program: an assignment.
                shell = true;
                word.get_or_insert_with(String::new).push(c);
            }
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Ok((words, shell, quoted))
}

/// Escapes for systemd's unit-file syntax, inside quotes: `\` and the quote, specifiers
/// (`%` -> `%%`), environment variables (`$` -> `$$`), control characters.
fn systemd_escape(s: &str, quote: char) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '%' => out.push_str("%%"),
            '$' => out.push_str("$$"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// One argument as systemd should read it back exactly.
fn systemd_word(word: &str) -> String {
    let plain = |c: char| c.is_ascii_alphanumeric() || "/_.,:@+=-".contains(c);
    if word == ";" {
        // A lone `;` separates command lines in ExecStart=; `\;` is the literal.
        "\\;".to_owned()
    } else if !word.is_empty() && word.chars().all(|c| plain(c) || c == '%') {
        word.replace('%', "%%")
    } else {
        format!("\"{}\"", systemd_escape(word, '"'))
    }
}

fn exec_line(key: &str, command: &str) -> Result<Exec, ImportError> {
    let bad = |reason: String| ImportError::BadCommand {
        key: show_key(key),
        reason,
    };
    let command = command.trim();
    if command.is_empty() {
        return Err(bad("the command is empty".to_owned()));
    }
    let (words, shell, quoted) = split_words(command).map_err(bad)?;
    if words.is_empty() {
        return Err(bad("the command is empty".to_owned()));
    }
    if shell {
        return Ok(Exec {
            line: format!("/bin/sh -c '{}'", systemd_escape(command, '\'')),
            shell,
            quoted,
            program: None,
        });
    }
    let line: Vec<String> = words.iter().map(|w| systemd_word(w)).collect();
    Ok(Exec {
        line: line.join(" "),
        shell,
        quoted,
        program: words.first().cloned(),
    })
}

/// Warnings about how a command is run now, compared with PROM / HAL, which split it at
/// spaces and ran it without a shell.
fn command_warnings(key: &str, exec: &Exec, notes: &mut Vec<String>) {
    let key = show_key(key);
    if exec.shell {
        notes.push(format!(
            "warning: {key} uses shell syntax (pipes, redirections, `&&`, `$`...): the unit runs it \
             with /bin/sh -c. PROM and HAL split commands at spaces and ran them without a shell, \
             so check that it does what you meant"
        ));
    } else if exec.quoted {
        notes.push(format!(
            "warning: {key} has quotes or backslashes: the unit reads them as quoting, as a shell \
             would; PROM and HAL split commands at spaces and passed quotes on literally"
        ));
    }
    if let Some(program) = &exec.program
        && !program.starts_with('/')
    {
        if program.contains('/') {
            notes.push(format!(
                "warning: {key} runs a program by a relative path, which systemd refuses: write \
                 its absolute path in the unit's ExecStart="
            ));
        } else {
            notes.push(format!(
                "warning: {key} runs a program by its name only: systemd looks it up in \
                 /usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin, not in PROM's PATH; prefer \
                 its absolute path"
            ));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The conversion

/// The settings read from the file, with the keys they came from.
struct Importer<'j> {
    keys: &'j Keys<'j>,
    replica: u64,
    app: &'j str,
    app_key: &'j str,
    group: String,
    ids: Vec<u64>,
    ids_key: &'j str,
    /// Replica ids whose `start-active-i` is true.
    start_active: BTreeSet<u64>,
    notes: Vec<String>,
    warnings: Vec<String>,
}

impl<'j> Importer<'j> {
    fn new(keys: &'j Keys<'j>, replica_arg: &str) -> Result<Importer<'j>, ImportError> {
        let (app_key, app) = keys.get("app-name").ok_or(ImportError::Missing {
            key: "app-name",
            hint: "name the application with \"app-name\" (PROM) or \"appName\" (HAL)",
        })?;
        let app = string(app_key, app)?;
        let mut warnings = Vec::new();
        let group = match group_name(app) {
            Some(group) => group,
            None => {
                warnings.push(format!(
                    "warning: {} has no letter or digit to name the group after: the group is \
                     \"app\"; rename it (and the units) if you like",
                    show_key(app_key)
                ));
                "app".to_owned()
            }
        };

        let (ids_key, ids_value) = keys.get("replica-id-list").ok_or(ImportError::Missing {
            key: "replica-id-list",
            hint: "list the replica ids with \"replica-id-list\" (PROM) or \"replicaIdList\" (HAL), e.g. [\"0\", \"1\"]",
        })?;
        let ids = replica_ids(ids_key, ids_value)?;

        let replica =
            replica_arg
                .trim()
                .parse::<u64>()
                .map_err(|_| ImportError::BadReplicaArg {
                    replica: replica_arg.to_owned(),
                })?;
        if !ids.contains(&replica) {
            return Err(ImportError::UnknownReplica {
                replica,
                key: show_key(ids_key),
                ids: format!("0 to {}", ids.len().saturating_sub(1)),
            });
        }

        let mut start_active = BTreeSet::new();
        for (kind, key, value) in keys.all() {
            if let Kind::StartActive(id) = kind
                && ids.contains(&id)
                && boolean(key, value)?
            {
                start_active.insert(id);
            }
        }

        Ok(Importer {
            keys,
            replica,
            app,
            app_key,
            group,
            ids,
            ids_key,
            start_active,
            notes: Vec::new(),
            warnings,
        })
    }

    /// A canonical key's spelling in the file and its value.
    fn get(&self, canonical: &str) -> Option<(&'j str, &'j Value)> {
        self.keys.get(canonical)
    }

    fn command(
        &self,
        canonical: &str,
        hint: &'static str,
    ) -> Result<(&'j str, &'j str), ImportError> {
        let (key, value) = self.get(canonical).ok_or_else(|| ImportError::BadCommand {
            key: format!("`{canonical}`"),
            reason: format!("missing: {hint}"),
        })?;
        Ok((key, string(key, value)?))
    }

    fn run(mut self) -> Result<Migration, ImportError> {
        let id = self.replica;
        let (active_key, active_cmd) = self.command(
            &format!("ensure-active-{id}"),
            "the command that makes this replica active (PROM requires it for every replica)",
        )?;
        let (passive_key, passive_cmd) = self.command(
            &format!("ensure-passive-{id}"),
            "the command that makes this replica passive (PROM requires it for every replica)",
        )?;
        let active = exec_line(active_key, active_cmd)?;
        let passive = exec_line(passive_key, passive_cmd)?;
        let mut command_notes = Vec::new();
        command_warnings(active_key, &active, &mut command_notes);
        command_warnings(passive_key, &passive, &mut command_notes);

        let settings = self.settings()?;
        self.list_dropped_keys();
        self.warnings.extend(command_notes);

        let node = node_name(&self.group, id);
        let toml = self.promd_toml(&node, &settings);
        let units = Units {
            group: &self.group,
            app: self.app,
            replica: id,
            active_key,
            passive_key,
        };
        let g = &self.group;
        let files = vec![
            (PathBuf::from("promd.toml"), toml),
            (
                PathBuf::from(format!("{g}-active.target")),
                units.active_target(),
            ),
            (
                PathBuf::from(format!("{g}-passive.target")),
                units.passive_target(),
            ),
            (
                PathBuf::from(format!("{g}-ensure-active.service")),
                units.ensure_active(&active, &passive),
            ),
            (
                PathBuf::from(format!("{g}-ensure-passive.service")),
                units.ensure_passive(&passive),
            ),
        ];
        let mut notes = self.notes;
        notes.extend(self.warnings);
        Ok(Migration {
            files,
            notes,
            node,
            group: self.group,
        })
    }

    /// The numeric settings, each with the key it came from.
    fn settings(&mut self) -> Result<Settings<'j>, ImportError> {
        let mut s = Settings::default();
        if let Some((key, value)) = self.get("prom-timeout") {
            let ms = whole_number(key, value)?;
            if ms < MIN_LEASE_MS {
                return Err(ImportError::BadValue {
                    key: show_key(key),
                    value: ms.to_string(),
                    reason: "promd's lease must be at least 1000 ms (1s)".to_owned(),
                });
            }
            s.lease = Some((key, ms));
            self.watchdog_warning(ms);
        } else {
            self.warnings.push(
                "warning: no `prom-timeout` (HAL: `timeout`): the lease is promd's default, 10s"
                    .to_owned(),
            );
        }
        if let Some((key, value)) = self.get("no-of-retry-attempts") {
            let n = whole_number(key, value)?;
            let n = u32::try_from(n).map_err(|_| ImportError::BadValue {
                key: show_key(key),
                value: n.to_string(),
                reason: format!("is out of range: at most {}", u32::MAX),
            })?;
            s.retries = Some((key, n));
        }
        if let Some((key, value)) = self.get("restart-backoff-time") {
            s.backoff = Some((key, whole_number(key, value)?));
        }
        if let Some((key, value)) = self.get("music-connection-timeout-ms") {
            let ms = whole_number(key, value)?;
            if ms == 0 {
                self.notes.push(format!(
                    "{}: not carried over: 0 is no timeout, and promd needs one; \
                     `connect-timeout` keeps promd's default, 2s",
                    show_key(key)
                ));
            } else {
                s.connect_timeout = Some((key, ms));
            }
        }
        match self.get("music-location") {
            Some((key, value)) => {
                let mut endpoints: Vec<String> = Vec::new();
                for item in list(key, value)? {
                    let location = string(key, &item)?;
                    let endpoint = endpoint(location).ok_or_else(|| ImportError::BadValue {
                        key: show_key(key),
                        value: format!("{location:?}"),
                        reason: "is not a host name or an IP address".to_owned(),
                    })?;
                    if !endpoints.contains(&endpoint) {
                        endpoints.push(endpoint);
                    }
                }
                if endpoints.is_empty() {
                    return Err(ImportError::BadValue {
                        key: show_key(key),
                        value: "[]".to_owned(),
                        reason: "lists no host".to_owned(),
                    });
                }
                self.warnings.push(format!(
                    "warning: {}: the store endpoints are the MUSIC hosts with etcd's client \
                     port ({}); promd needs etcd, not MUSIC: point `endpoints` in promd.toml at \
                     your etcd cluster before starting promd",
                    show_key(key),
                    endpoints.join(", ")
                ));
                s.endpoints = (Some(key), endpoints);
            }
            None => {
                self.warnings.push(format!(
                    "warning: no `music-location`: the store endpoint is http://localhost:{ETCD_PORT}; \
                     point `endpoints` in promd.toml at your etcd cluster"
                ));
                s.endpoints = (None, vec![format!("http://localhost:{ETCD_PORT}")]);
            }
        }
        Ok(s)
    }

    /// promd refuses a `WatchdogSec=` longer than `(lease - margin) / 2`; the shipped 3s suits
    /// leases of 8s and more.
    fn watchdog_warning(&mut self, lease_ms: u64) {
        let lease = Duration::from_millis(lease_ms);
        let margin = (lease / 4).max(Duration::from_millis(250));
        let limit = (lease.saturating_sub(margin)) / 2;
        if limit >= SHIPPED_WATCHDOG {
            return;
        }
        // A round figure below the limit.
        let suggest_ms = (limit.as_millis() as u64 / 100 * 100).max(100);
        self.warnings.push(format!(
            "warning: the lease ({}) is too short for promd.service's WatchdogSec=3s, and promd \
             refuses to start with it: add /etc/systemd/system/promd.service.d/watchdog.conf \
             with \"[Service]\" and \"WatchdogSec={suggest_ms}ms\" (at most (lease - \
             max(lease/4, 250ms)) / 2 = {}ms)",
            duration_ms(lease_ms),
            limit.as_millis()
        ));
    }

    /// One note per key that is not carried over, with the reason.
    fn list_dropped_keys(&mut self) {
        let ids: BTreeSet<u64> = self.ids.iter().copied().collect();
        let ids_key = show_key(self.ids_key);
        for (kind, key, _) in self.keys.all() {
            let shown = show_key(key);
            let reason = match kind {
                Kind::RestartDaemon(_) => {
                    "systemd's Restart= and the watchdog replace it: promd.service restarts promd \
                     (Restart=always) and kills a hung one (WatchdogSec=); no ssh between hosts"
                        .to_owned()
                }
                Kind::MonitorSleep => {
                    "promd follows signals (store watches, systemd job results), it does not \
                     poll. PROM also re-ran ensure-active every so often; the generated oneshot \
                     runs it once per promotion, so rewrite the script as a unit with Restart= \
                     for the app to be restarted"
                        .to_owned()
                }
                Kind::Credential => {
                    "a MUSIC credential: etcd has its own authentication; never copied into \
                     promd's files"
                        .to_owned()
                }
                Kind::MusicVersion => {
                    "the MUSIC REST API version; promd speaks etcd's v3 API only".to_owned()
                }
                Kind::EnsureActive(id) | Kind::EnsurePassive(id) | Kind::StartActive(id)
                    if !ids.contains(&id) =>
                {
                    format!("replica {id} is not in {ids_key}; ignored")
                }
                Kind::Unknown => "unknown key, not carried over".to_owned(),
                _ => continue,
            };
            if kind == Kind::Unknown {
                self.notes.push(format!("{shown}: {reason}"));
            } else {
                self.notes
                    .push(format!("{shown}: not carried over: {reason}"));
            }
        }
    }

    fn promd_toml(&self, node: &str, s: &Settings<'_>) -> String {
        let id = self.replica;
        let g = &self.group;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "# promd.toml for replica {id} of the PROM/HAL application {:?},\n\
             # generated by `promctl import-prom`. Install it as /etc/promd/promd.toml on the host\n\
             # that ran replica {id}, then check it with `promd check-config`.",
            self.app
        );
        if !self.notes.is_empty() || !self.warnings.is_empty() {
            let _ = writeln!(t, "#\n# Not carried over, and what to check:");
            for note in self.notes.iter().chain(&self.warnings) {
                let _ = writeln!(t, "#   - {note}");
            }
        }
        let _ = writeln!(
            t,
            "\n# The node name. PROM and HAL knew a replica by its id; promd knows a host by its name.\n\
             # Each replica's node is the group name and the replica id, so every host's file\n\
             # names the same members without knowing the host names. It must be unique in the\n\
             # cluster and appear in `members` below: to rename it, rename it there on every host.\n\
             node = {}",
            toml_string(node)
        );

        let _ = writeln!(
            t,
            "\n[store]\n\
             # PROM and HAL kept their state in MUSIC; promd keeps it in etcd. These endpoints are\n\
             # the MUSIC hosts ({}) with etcd's client port: they MUST now point at\n\
             # your etcd cluster, e.g. [\"http://10.0.0.1:2379\", \"http://10.0.0.2:2379\"].\n\
             kind = \"etcd\"\n\
             endpoints = {}",
            s.endpoints
                .0
                .map_or("none were given".to_owned(), |k| format!(
                    "from {}",
                    show_key(k)
                )),
            toml_array(&s.endpoints.1)
        );
        if let Some((key, ms)) = s.connect_timeout {
            let _ = writeln!(
                t,
                "connect-timeout = {}   # {} = {ms}: per endpoint, then the next one is tried",
                toml_string(&duration_ms(ms)),
                show_key(key)
            );
        }

        let others: Vec<String> = self.start_active.iter().map(|i| format!("{i}")).collect();
        let priority = if self.start_active.contains(&id) {
            PREFERRED_PRIORITY
        } else {
            DEFAULT_PRIORITY
        };
        let members: Vec<String> = self.ids.iter().map(|&i| node_name(g, i)).collect();
        let _ = writeln!(
            t,
            "\n[[group]]\n\
             name = {}   # from {} = {:?}, in [a-z0-9_-]\n\
             active-target = {}\n\
             passive-target = {}\n\
             members = {}   # from {}",
            toml_string(g),
            show_key(self.app_key),
            self.app,
            toml_string(&format!("{g}-active.target")),
            toml_string(&format!("{g}-passive.target")),
            toml_array(&members),
            show_key(self.ids_key)
        );
        match s.lease {
            Some((key, ms)) => {
                let _ = writeln!(
                    t,
                    "# PROM let a passive replica take over once the active one had not updated its\n\
                     # health for {} ms; promd's lease is the same bound.\n\
                     lease = {}   # {} = {ms}",
                    show_key(key),
                    toml_string(&duration_ms(ms)),
                    show_key(key)
                );
            }
            None => {
                let _ = writeln!(t, "# lease: no prom-timeout; promd's default (10s) applies");
            }
        }
        let _ = writeln!(
            t,
            "# The replicas PROM started active (start-active-i = true: {}) get priority {PREFERRED_PRIORITY},\n\
             # the others {DEFAULT_PRIORITY}: the highest wins an election. As in PROM, a healthy active\n\
             # host keeps the role (preempt = false).\n\
             priority = {priority}",
            if others.is_empty() {
                "none".to_owned()
            } else {
                others.join(", ")
            }
        );
        if let Some((key, n)) = s.retries {
            let _ = writeln!(t, "max-restarts = {n}   # {} = {n}", show_key(key));
        }
        if let Some((key, ms)) = s.backoff {
            let _ = writeln!(
                t,
                "restart-backoff = {}   # {} = {ms}",
                toml_string(&duration_ms(ms)),
                show_key(key)
            );
        }
        t
    }
}

/// Settings taken over, each with the key (as written) it came from.
#[derive(Default)]
struct Settings<'j> {
    lease: Option<(&'j str, u64)>,
    retries: Option<(&'j str, u32)>,
    backoff: Option<(&'j str, u64)>,
    connect_timeout: Option<(&'j str, u64)>,
    endpoints: (Option<&'j str>, Vec<String>),
}

/// The replica ids: whole numbers 0 to N-1, each once, in any order.
fn replica_ids(key: &str, value: &Value) -> Result<Vec<u64>, ImportError> {
    let items = list(key, value)?;
    let ids_error = |reason: String| ImportError::ReplicaIds {
        key: show_key(key),
        reason,
    };
    if items.is_empty() {
        return Err(ids_error("the list is empty".to_owned()));
    }
    let mut ids = Vec::with_capacity(items.len());
    for item in &items {
        let id = match whole_number(key, item) {
            Ok(id) => id,
            Err(_) => {
                let shown = match item {
                    Value::String(s) => format!("{s:?}"),
                    other => other.to_string(),
                };
                return Err(ids_error(format!("{shown} is not a whole number")));
            }
        };
        if ids.contains(&id) {
            return Err(ids_error(format!("{id} appears twice")));
        }
        ids.push(id);
    }
    let n = ids.len() as u64;
    let mut outside: Vec<u64> = ids.iter().copied().filter(|&id| id >= n).collect();
    if !outside.is_empty() {
        outside.sort_unstable();
        let missing: Vec<String> = (0..n)
            .filter(|i| !ids.contains(i))
            .map(|i| i.to_string())
            .collect();
        let outside: Vec<String> = outside.iter().map(u64::to_string).collect();
        return Err(ids_error(format!(
            "with {n} replicas the ids are 0 to {}, but {} {} listed and {} {} not",
            n - 1,
            outside.join(", "),
            if outside.len() == 1 { "is" } else { "are" },
            missing.join(", "),
            if missing.len() == 1 { "is" } else { "are" },
        )));
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The systemd units for one replica.
struct Units<'a> {
    group: &'a str,
    app: &'a str,
    replica: u64,
    active_key: &'a str,
    passive_key: &'a str,
}

impl Units<'_> {
    fn header(&self, what: &str) -> String {
        format!(
            "# {what}\n\
             # Generated by `promctl import-prom` for replica {} of the PROM/HAL application {:?}.\n\
             # Install it in /etc/systemd/system/ and run `systemctl daemon-reload`.\n",
            self.replica, self.app
        )
    }

    fn rewrite_hint(&self) -> String {
        let g = self.group;
        format!(
            "# This is a bridge, not the goal: rewrite the ensure scripts as real units (e.g. a\n\
             # {g}.service with Restart=on-failure) and make {g}-active.target want them instead,\n\
             # so that systemd supervises the app and promd's max-restarts counts its failures.\n"
        )
    }

    fn active_target(&self) -> String {
        let g = self.group;
        format!(
            "{}\
             # Replaces PROM/HAL's active mode: promd starts this target on the one host that\n\
             # holds the role of group {g}, which runs {} once ({g}-ensure-active.service).\n\
             {}\
             [Unit]\n\
             Description={g}: active (promd; was PROM/HAL's active mode)\n\
             Wants={g}-ensure-active.service\n\
             After={g}-ensure-active.service\n\
             Conflicts={g}-passive.target\n",
            self.header(&format!("{g}-active.target")),
            show_key(self.active_key),
            self.rewrite_hint()
        )
    }

    fn passive_target(&self) -> String {
        let g = self.group;
        format!(
            "{}\
             # Replaces PROM/HAL's passive mode: promd starts this target on the hosts that do not\n\
             # hold the role of group {g}, which runs {} once ({g}-ensure-passive.service).\n\
             {}\
             [Unit]\n\
             Description={g}: passive (promd; was PROM/HAL's passive mode)\n\
             Wants={g}-ensure-passive.service\n\
             After={g}-ensure-passive.service\n\
             Conflicts={g}-active.target\n",
            self.header(&format!("{g}-passive.target")),
            show_key(self.passive_key),
            self.rewrite_hint()
        )
    }

    fn ensure_active(&self, active: &Exec, passive: &Exec) -> String {
        let g = self.group;
        format!(
            "{}\
             # Replaces PROM/HAL running {} when this replica became active. promd stops this\n\
             # unit when it gives the role up (before another host can take it): ExecStop= then\n\
             # runs {}, and whatever the script left running in this unit is stopped too.\n\
             # The environment has PROMD_GROUP, PROMD_NODE, PROMD_ROLE, PROMD_TERM (a fencing\n\
             # token that only grows) and PROMD_LEADER.\n\
             {}\
             [Unit]\n\
             Description={g}: ensure active (was PROM/HAL's ensure-active-{})\n\
             Conflicts={g}-ensure-passive.service\n\
             After={g}-ensure-passive.service\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             EnvironmentFile=-{ENV_DIR}/{g}.env\n\
             ExecStart={}\n\
             ExecStop={}\n",
            self.header(&format!("{g}-ensure-active.service")),
            show_key(self.active_key),
            show_key(self.passive_key),
            self.rewrite_hint(),
            self.replica,
            active.line,
            passive.line
        )
    }

    fn ensure_passive(&self, passive: &Exec) -> String {
        let g = self.group;
        format!(
            "{}\
             # Replaces PROM/HAL running {} when this replica was passive.\n\
             {}\
             [Unit]\n\
             Description={g}: ensure passive (was PROM/HAL's ensure-passive-{})\n\
             Conflicts={g}-ensure-active.service\n\
             \n\
             [Service]\n\
             Type=oneshot\n\
             RemainAfterExit=yes\n\
             EnvironmentFile=-{ENV_DIR}/{g}.env\n\
             ExecStart={}\n",
            self.header(&format!("{g}-ensure-passive.service")),
            show_key(self.passive_key),
            self.rewrite_hint(),
            self.replica,
            passive.line
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::valid_node_name;

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

    #[test]
    fn words_and_shell_detection() {
        let (w, shell, quoted) = split_words("/opt/a.sh 0 active").unwrap();
        assert_eq!(w, ["/opt/a.sh", "0", "active"]);
        assert!(!shell && !quoted);
        let (w, shell, quoted) = split_words("/opt/a.sh 'two words' \"x y\" a\\ b").unwrap();
        assert_eq!(w, ["/opt/a.sh", "two words", "x y", "a b"]);
        assert!(!shell && quoted);
        for cmd in [
            "a | b",
            "a && b",
            "a > f",
            "a 2>&1",
            "a; b",
            "echo $HOME",
            "echo \"$HOME\"",
            "echo `date`",
            "ls *.log",
            "X=1 a",
            "a # comment",
        ] {
            assert!(split_words(cmd).unwrap().1, "{cmd}");
        }
        // Quoted metacharacters are plain arguments.
        let (w, shell, _) = split_words("/bin/echo '|' \"a>b\" 'x$y'").unwrap();
        assert_eq!(w, ["/bin/echo", "|", "a>b", "x$y"]);
        assert!(!shell);
        assert!(split_words("a 'b").is_err());
        assert!(split_words("a \"b").is_err());
    }

    #[test]
    fn systemd_words() {
        assert_eq!(systemd_word("/opt/a.sh"), "/opt/a.sh");
        assert_eq!(systemd_word("50%"), "50%%");
        assert_eq!(systemd_word("two words"), "\"two words\"");
        assert_eq!(systemd_word("x$y"), "\"x$$y\"");
        assert_eq!(systemd_word("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(systemd_word(""), "\"\"");
        assert_eq!(systemd_word(";"), "\\;");
        assert_eq!(
            systemd_escape("it's $x 100%\n", '\''),
            "it\\'s $$x 100%%\\n"
        );
    }

    #[test]
    fn endpoints_from_music_locations() {
        assert_eq!(
            endpoint("10.0.0.5").as_deref(),
            Some("http://10.0.0.5:2379")
        );
        assert_eq!(
            endpoint(" localhost ").as_deref(),
            Some("http://localhost:2379")
        );
        assert_eq!(
            endpoint("http://Music-1.example:8080/MUSIC/rest").as_deref(),
            Some("http://music-1.example:2379")
        );
        assert_eq!(
            endpoint("fe80::1").as_deref(),
            Some("http://[fe80::1]:2379")
        );
        assert_eq!(
            endpoint("[fe80::1]:8080").as_deref(),
            Some("http://[fe80::1]:2379")
        );
        for bad in ["", "a b", "-x", "http://", "[zz]", "a:b:c"] {
            assert_eq!(endpoint(bad), None, "{bad}");
        }
    }

    #[test]
    fn names() {
        assert_eq!(group_name("votingApp").as_deref(), Some("votingapp"));
        assert_eq!(group_name("My App.v2").as_deref(), Some("my-app-v2"));
        assert_eq!(group_name("--x__y--").as_deref(), Some("x__y"));
        assert_eq!(group_name("日本"), None);
        let long = "a".repeat(100);
        let group = group_name(&long).unwrap();
        assert_eq!(group.len(), 64);
        let node = node_name(&group, 12);
        assert!(valid_node_name(&node) && node.ends_with("-12") && node.len() == 64);
    }

    #[test]
    fn durations() {
        assert_eq!(duration_ms(50000), "50s");
        assert_eq!(duration_ms(1500), "1500ms");
        assert_eq!(duration_ms(0), "0s");
    }
}
