//! `/etc/promd/promd.toml`: parsing and validation.
//!
//! The file is parsed into toml's spanned document (`DeTable`) and walked by hand rather than
//! deserialized with serde: serde stops at the first error, while `promd check-config` must
//! print every problem, each with its line and column.

use std::collections::HashMap;
use std::fmt;
use std::net::Ipv6Addr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

pub const DEFAULT_PATH: &str = "/etc/promd/promd.toml";

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub node: String,
    pub store: StoreConfig,
    pub groups: Vec<GroupConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum StoreConfig {
    Etcd {
        endpoints: Vec<String>,
        connect_timeout: Duration,
        prefix: String,
    },
    Dir {
        path: PathBuf,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub struct GroupConfig {
    pub name: String,
    pub active_target: String,
    pub passive_target: Option<String>,
    pub members: Option<Vec<String>>,
    pub lease: Duration,
    pub priority: i32,
    pub preempt: bool,
    pub max_restarts: u32,
    pub restart_window: Duration,
    pub restart_backoff: Duration,
    pub failure_cooldown: Duration,
    pub watch: Option<Vec<String>>,
    pub health_command: Option<Vec<String>>,
    pub health_interval: Duration,
    pub health_timeout: Duration,
}

const DEFAULT_DIR: &str = "/var/lib/promd";
const DEFAULT_PREFIX: &str = "/promd";
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const DEFAULT_LEASE: Duration = Duration::from_secs(10);
const DEFAULT_PRIORITY: i32 = 100;
const DEFAULT_MAX_RESTARTS: u32 = 3;
const DEFAULT_RESTART_WINDOW: Duration = Duration::from_secs(5 * 60);
const DEFAULT_RESTART_BACKOFF: Duration = Duration::from_secs(1);
const DEFAULT_FAILURE_COOLDOWN: Duration = Duration::from_secs(10 * 60);
const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_secs(2);
const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(1);
/// Below this, renewals every lease/3 would hammer the store and leave no margin to stop units.
const MIN_LEASE: Duration = Duration::from_secs(1);

const TOP_KEYS: &[&str] = &["node", "[store]", "[[group]]"];
const STORE_KEYS: &[&str] = &["kind", "endpoints", "connect-timeout", "prefix", "path"];
const GROUP_KEYS: &[&str] = &[
    "name",
    "active-target",
    "passive-target",
    "members",
    "lease",
    "priority",
    "preempt",
    "max-restarts",
    "restart-window",
    "restart-backoff",
    "failure-cooldown",
    "watch",
    "health-command",
    "health-interval",
    "health-timeout",
];
const UNIT_SUFFIXES: &[&str] = &[
    "service",
    "socket",
    "device",
    "mount",
    "automount",
    "swap",
    "target",
    "path",
    "timer",
    "slice",
    "scope",
];
const NODE_NAME_RULE: &str = "[a-z0-9_.-], 1 to 64 characters, not starting with `.` or `-`";
const DURATION_HINT: &str = "write e.g. \"10s\", \"5min\" or \"1500ms\"";

/// Node names: `[a-z0-9_.-]`, 1 to 64 characters, not starting with `.` or `-`.
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with(['.', '-'])
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Group names: `[a-z0-9_-]`, 1 to 64 characters (they appear in store keys and D-Bus paths).
pub fn valid_group_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-".contains(&b))
}

/// A systemd unit name: `PREFIX[@INSTANCE].SUFFIX`, prefix and instance non-empty and made of
/// `[A-Za-z0-9:_.\-]`, at most 255 characters, with one of systemd's unit suffixes.
pub fn valid_unit_name(name: &str) -> bool {
    if name.is_empty() || name.len() > 255 {
        return false;
    }
    let Some((stem, suffix)) = name.rsplit_once('.') else {
        return false;
    };
    if !UNIT_SUFFIXES.contains(&suffix) {
        return false;
    }
    let (prefix, instance) = match stem.split_once('@') {
        Some((prefix, instance)) => (prefix, Some(instance)),
        None => (stem, None),
    };
    let valid_part = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b":_.\\-".contains(&b))
    };
    valid_part(prefix) && instance.is_none_or(valid_part)
}

/// An etcd endpoint: `http://host:port` or `https://host:port`, nothing after the port.
fn valid_endpoint(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    let port_ok =
        port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok_and(|port| port != 0);
    let host_ok = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(ipv6) => ipv6.parse::<Ipv6Addr>().is_ok(),
        None => {
            !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    port_ok && host_ok
}

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; `None` when the problem is not tied to a place in the file.
    pub line: Option<usize>,
    /// 1-based, in characters.
    pub column: Option<usize>,
    pub message: String,
}

/// Every problem found in a configuration file; `Display` prints one per line as
/// `ORIGIN:LINE:COLUMN: message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    origin: String,
    problems: Vec<Problem>,
}

impl ConfigError {
    /// The problems, in the order they appear in the file (unplaced ones first).
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// The file name the messages refer to.
    pub fn origin(&self) -> &str {
        &self.origin
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let origin = &self.origin;
            let message = &problem.message;
            match (problem.line, problem.column) {
                (Some(line), Some(column)) => write!(f, "{origin}:{line}:{column}: {message}")?,
                (Some(line), None) => write!(f, "{origin}:{line}: {message}")?,
                _ => write!(f, "{origin}: {message}")?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the configuration file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => parse(&text, &origin),
        Err(err) => Err(ConfigError {
            origin,
            problems: vec![Problem {
                line: None,
                column: None,
                message: format!("cannot read the configuration: {err}"),
            }],
        }),
    }
}

/// Parses and validates a configuration; `origin` names the file in messages.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_with_hostname(text, origin, system_hostname)
}

/// This host's name, for the `node` default.
fn system_hostname() -> Result<String, String> {
    // uname's nodename is what gethostname(2) returns on Linux; nix's `gethostname` needs
    // the "hostname" feature, which this crate does not enable.
    let uts =
        nix::sys::utsname::uname().map_err(|err| format!("cannot read the host name: {err}"))?;
    uts.nodename()
        .to_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("the host name {:?} is not UTF-8", uts.nodename()))
}

/// `parse` with the host name supplied by the caller, so that tests do not depend on the host.
fn parse_with_hostname(
    text: &str,
    origin: &str,
    hostname: impl FnOnce() -> Result<String, String>,
) -> Result<Config, ConfigError> {
    let mut checker = Checker {
        text,
        problems: Vec::new(),
    };
    let (document, syntax_errors) = DeTable::parse_recoverable(text);
    let config = if syntax_errors.is_empty() {
        checker.document(document.get_ref(), hostname)
    } else {
        // A document that is not TOML is reported as such only: checking what the parser
        // recovered would add noise about values the user did not write that way.
        for err in &syntax_errors {
            checker.syntax_error(err);
        }
        None
    };
    let mut problems = checker.problems;
    match config {
        Some(config) if problems.is_empty() => Ok(config),
        _ => {
            // Every path that rejects a section reports why; this only guards against a
            // silent rejection, which would print nothing and still fail.
            if problems.is_empty() {
                problems.push(Problem {
                    line: None,
                    column: None,
                    message: "the configuration is invalid".to_owned(),
                });
            }
            problems.sort_by_key(|p| (p.line.unwrap_or(0), p.column.unwrap_or(0)));
            problems.dedup();
            Err(ConfigError {
                origin: origin.to_owned(),
                problems,
            })
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line_start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |nl| nl + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = match text.get(line_start..offset) {
        Some(s) => s.chars().count() + 1,
        None => offset - line_start + 1,
    };
    (line, column)
}

/// A key as written: where its key and value are, and the value if it was valid.
struct Field<T> {
    key: Range<usize>,
    span: Range<usize>,
    value: Option<T>,
}

/// The value of an optional key once the section is known to be valid.
fn or_default<T: Clone>(field: &Option<Field<T>>, default: T) -> T {
    field
        .as_ref()
        .and_then(|f| f.value.clone())
        .unwrap_or(default)
}

/// The value of an optional key without a default.
fn optional<T: Clone>(field: &Option<Field<T>>) -> Option<T> {
    field.as_ref().and_then(|f| f.value.clone())
}

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// Walks the document, collecting problems.
struct Checker<'s> {
    text: &'s str,
    problems: Vec<Problem>,
}

#[derive(Clone, Copy)]
enum StoreKind {
    Etcd,
    Dir,
}

#[derive(Default)]
struct StoreFields {
    kind: Option<Field<StoreKind>>,
    endpoints: Option<Field<Vec<String>>>,
    connect_timeout: Option<Field<Duration>>,
    prefix: Option<Field<String>>,
    path: Option<Field<PathBuf>>,
}

#[derive(Default)]
struct GroupFields {
    name: Option<Field<String>>,
    active_target: Option<Field<String>>,
    passive_target: Option<Field<String>>,
    members: Option<Field<Vec<String>>>,
    lease: Option<Field<Duration>>,
    priority: Option<Field<i32>>,
    preempt: Option<Field<bool>>,
    max_restarts: Option<Field<u32>>,
    restart_window: Option<Field<Duration>>,
    restart_backoff: Option<Field<Duration>>,
    failure_cooldown: Option<Field<Duration>>,
    watch: Option<Field<Vec<String>>>,
    health_command: Option<Field<Vec<String>>>,
    health_interval: Option<Field<Duration>>,
    health_timeout: Option<Field<Duration>>,
}

impl Checker<'_> {
    fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.problems.push(Problem {
            line: Some(line),
            column: Some(column),
            message: message.into(),
        });
    }

    fn unplaced_error(&mut self, message: impl Into<String>) {
        self.problems.push(Problem {
            line: None,
            column: None,
            message: message.into(),
        });
    }

    fn line_of(&self, span: &Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    fn syntax_error(&mut self, err: &toml::de::Error) {
        // Keep each problem on one line, as promised by `ConfigError`'s Display.
        let mut message = format!(
            "not valid TOML: {}",
            err.message().trim().replace('\n', "; ")
        );
        // toml says only "duplicate key"; name it, since its first definition is not shown.
        if err.message() == "duplicate key"
            && let Some(key) = err.span().and_then(|span| self.text.get(span))
        {
            message.push_str(&format!(" `{key}`"));
        }
        match err.span() {
            Some(span) => self.error(&span, message),
            None => self.unplaced_error(message),
        }
    }

    /// Runs `check` on a key's value and remembers where the key was.
    fn field<T>(
        &mut self,
        key: &Key<'_>,
        value: &Value<'_>,
        check: impl FnOnce(&mut Self, &str, &Value<'_>) -> Option<T>,
    ) -> Option<Field<T>> {
        Some(Field {
            key: key.span(),
            span: value.span(),
            value: check(self, key.get_ref(), value),
        })
    }

    fn unknown_key(&mut self, key: &Key<'_>, place: &str, allowed: &[&str]) {
        let name: &str = key.get_ref();
        let hint = if place != "at the top level" && matches!(name, "node" | "store" | "group") {
            format!(" (`{name}` belongs at the top level, before any [table] header)")
        } else if place != "in [[group]]" && GROUP_KEYS.contains(&name) {
            format!(" (`{name}` belongs in a [[group]])")
        } else if place != "in [store]" && STORE_KEYS.contains(&name) {
            format!(" (`{name}` belongs in [store])")
        } else {
            String::new()
        };
        self.error(
            &key.span(),
            format!(
                "unknown key `{name}` {place}; allowed here: {}{hint}",
                allowed.join(", ")
            ),
        );
    }

    // --- sections -------------------------------------------------------------------------

    fn document(
        &mut self,
        root: &DeTable<'_>,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Option<Config> {
        let mut node = None;
        let mut store = None;
        let mut groups = None;
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "node" => node = Some(self.node(value)),
                "store" => store = Some(self.store(value)),
                "group" => groups = Some(self.groups(value)),
                _ => self.unknown_key(key, "at the top level", TOP_KEYS),
            }
        }
        let node = node.unwrap_or_else(|| self.default_node(hostname));
        let store = store.unwrap_or_else(|| {
            Some(StoreConfig::Dir {
                path: PathBuf::from(DEFAULT_DIR),
            })
        });
        let groups = groups.unwrap_or_else(|| Some(Vec::new()));
        Some(Config {
            node: node?,
            store: store?,
            groups: groups?,
        })
    }

    fn node(&mut self, value: &Value<'_>) -> Option<String> {
        let name = self.string("node", value)?;
        if !valid_node_name(&name) {
            self.error(
                &value.span(),
                format!("`node` = {name:?} is not a valid node name: use {NODE_NAME_RULE}"),
            );
            return None;
        }
        Some(name)
    }

    fn default_node(
        &mut self,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Option<String> {
        match hostname() {
            Ok(name) if valid_node_name(&name) => Some(name),
            Ok(name) => {
                self.unplaced_error(format!(
                    "this host's name {name:?} is not a valid node name ({NODE_NAME_RULE}); \
                     set `node = \"...\"` at the top of the file"
                ));
                None
            }
            Err(err) => {
                self.unplaced_error(format!(
                    "{err}; set `node = \"...\"` at the top of the file"
                ));
                None
            }
        }
    }

    fn store(&mut self, value: &Value<'_>) -> Option<StoreConfig> {
        let table = self.table("store", value, "[store]")?;
        let before = self.problems.len();
        let mut f = StoreFields::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "kind" => f.kind = self.field(key, value, Self::store_kind),
                "endpoints" => f.endpoints = self.field(key, value, Self::endpoints),
                "connect-timeout" => {
                    f.connect_timeout = self.field(key, value, Self::nonzero_duration);
                }
                "prefix" => f.prefix = self.field(key, value, Self::prefix),
                "path" => f.path = self.field(key, value, Self::absolute_path),
                _ => self.unknown_key(key, "in [store]", STORE_KEYS),
            }
        }
        // An invalid `kind` is already reported; kind-specific checks would only guess.
        let kind = match &f.kind {
            None => StoreKind::Dir,
            Some(field) => field.value?,
        };
        let store = match kind {
            StoreKind::Etcd => self.etcd_store(&f, &value.span()),
            StoreKind::Dir => self.dir_store(&f),
        };
        (self.problems.len() == before).then_some(store)
    }

    fn etcd_store(&mut self, f: &StoreFields, table: &Range<usize>) -> StoreConfig {
        if f.endpoints.is_none() {
            self.error(
                table,
                "[store] with kind = \"etcd\" needs `endpoints`, e.g. [\"http://10.0.0.1:2379\"]",
            );
        }
        if let Some(path) = &f.path {
            self.error(
                &path.key,
                "`path` only applies to kind = \"dir\"; etcd uses `endpoints` and `prefix`",
            );
        }
        StoreConfig::Etcd {
            endpoints: or_default(&f.endpoints, Vec::new()),
            connect_timeout: or_default(&f.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            prefix: or_default(&f.prefix, DEFAULT_PREFIX.to_owned()),
        }
    }

    fn dir_store(&mut self, f: &StoreFields) -> StoreConfig {
        let etcd_only = [
            ("endpoints", f.endpoints.as_ref().map(|f| &f.key)),
            (
                "connect-timeout",
                f.connect_timeout.as_ref().map(|f| &f.key),
            ),
            ("prefix", f.prefix.as_ref().map(|f| &f.key)),
        ];
        for (name, key) in etcd_only {
            if let Some(key) = key {
                self.error(
                    key,
                    format!(
                        "`{name}` only applies to kind = \"etcd\"; this [store] is kind = \"dir\""
                    ),
                );
            }
        }
        StoreConfig::Dir {
            path: or_default(&f.path, PathBuf::from(DEFAULT_DIR)),
        }
    }

    fn groups(&mut self, value: &Value<'_>) -> Option<Vec<GroupConfig>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.error(
                &value.span(),
                format!(
                    "`group` must be an array of tables, found {}: write each group as [[group]]",
                    value.get_ref().type_str()
                ),
            );
            return None;
        };
        let before = self.problems.len();
        let mut groups = Vec::new();
        let mut first_seen: HashMap<String, Range<usize>> = HashMap::new();
        for item in items.iter() {
            let (name, group) = self.group(item);
            if let Some(name) = name {
                if let Some(first) = first_seen.get(name.get_ref()) {
                    let line = self.line_of(first);
                    self.error(
                        &name.span(),
                        format!(
                            "duplicate group name {:?}: it is already defined on line {line}",
                            name.get_ref()
                        ),
                    );
                } else {
                    first_seen.insert(name.get_ref().clone(), name.span());
                }
            }
            groups.extend(group);
        }
        (self.problems.len() == before).then_some(groups)
    }

    /// One `[[group]]`: its valid name (for the duplicate check) and the group if it is valid.
    fn group(&mut self, item: &Value<'_>) -> (Option<Spanned<String>>, Option<GroupConfig>) {
        let Some(table) = self.table("group", item, "[[group]]") else {
            return (None, None);
        };
        let before = self.problems.len();
        let mut f = GroupFields::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => f.name = self.field(key, value, Self::group_name),
                "active-target" => f.active_target = self.field(key, value, Self::unit),
                "passive-target" => f.passive_target = self.field(key, value, Self::unit),
                "members" => f.members = self.field(key, value, Self::members),
                "lease" => f.lease = self.field(key, value, Self::lease),
                "priority" => f.priority = self.field(key, value, Self::i32_value),
                "preempt" => f.preempt = self.field(key, value, Self::boolean),
                "max-restarts" => f.max_restarts = self.field(key, value, Self::u32_value),
                "restart-window" => {
                    f.restart_window = self.field(key, value, Self::nonzero_duration);
                }
                "restart-backoff" => f.restart_backoff = self.field(key, value, Self::duration),
                "failure-cooldown" => f.failure_cooldown = self.field(key, value, Self::duration),
                "watch" => f.watch = self.field(key, value, Self::watch),
                "health-command" => f.health_command = self.field(key, value, Self::health_command),
                "health-interval" => {
                    f.health_interval = self.field(key, value, Self::nonzero_duration);
                }
                "health-timeout" => {
                    f.health_timeout = self.field(key, value, Self::nonzero_duration);
                }
                _ => self.unknown_key(key, "in [[group]]", GROUP_KEYS),
            }
        }
        self.group_relations(&f, &item.span());
        let name = f
            .name
            .as_ref()
            .and_then(|n| Some(Spanned::new(n.span.clone(), n.value.clone()?)));
        if self.problems.len() != before {
            return (name, None);
        }
        let group = GroupConfig {
            name: or_default(&f.name, String::new()),
            active_target: or_default(&f.active_target, String::new()),
            passive_target: optional(&f.passive_target),
            members: optional(&f.members),
            lease: or_default(&f.lease, DEFAULT_LEASE),
            priority: or_default(&f.priority, DEFAULT_PRIORITY),
            preempt: or_default(&f.preempt, false),
            max_restarts: or_default(&f.max_restarts, DEFAULT_MAX_RESTARTS),
            restart_window: or_default(&f.restart_window, DEFAULT_RESTART_WINDOW),
            restart_backoff: or_default(&f.restart_backoff, DEFAULT_RESTART_BACKOFF),
            failure_cooldown: or_default(&f.failure_cooldown, DEFAULT_FAILURE_COOLDOWN),
            watch: optional(&f.watch),
            health_command: optional(&f.health_command),
            health_interval: or_default(&f.health_interval, DEFAULT_HEALTH_INTERVAL),
            health_timeout: or_default(&f.health_timeout, DEFAULT_HEALTH_TIMEOUT),
        };
        (name, Some(group))
    }

    /// Checks that involve several keys of a group: required keys and consistency.
    fn group_relations(&mut self, f: &GroupFields, header: &Range<usize>) {
        if f.name.is_none() {
            self.error(header, "this [[group]] has no `name`");
        }
        if f.active_target.is_none() {
            self.error(
                header,
                "this [[group]] has no `active-target`, e.g. active-target = \"web-active.target\"",
            );
        }
        if let (Some(active), Some(passive)) = (&f.active_target, &f.passive_target)
            && active.value.is_some()
            && active.value == passive.value
        {
            self.error(
                &passive.span,
                "`passive-target` must differ from `active-target`",
            );
        }
        // Compare with the defaults too: `health-timeout = "3s"` alone breaks the 2s interval.
        let interval = f.health_interval.as_ref();
        let timeout = f.health_timeout.as_ref();
        if interval.is_some_and(|f| f.value.is_none()) || timeout.is_some_and(|f| f.value.is_none())
        {
            return;
        }
        let interval_value = or_default(&f.health_interval, DEFAULT_HEALTH_INTERVAL);
        let timeout_value = or_default(&f.health_timeout, DEFAULT_HEALTH_TIMEOUT);
        if timeout_value >= interval_value {
            let Some(span) = timeout.or(interval).map(|f| f.span.clone()) else {
                return;
            };
            self.error(
                &span,
                format!(
                    "`health-timeout` ({}) must be shorter than `health-interval` ({})",
                    humantime::format_duration(timeout_value),
                    humantime::format_duration(interval_value)
                ),
            );
        }
    }

    // --- keys with their own rules --------------------------------------------------------

    fn store_kind(&mut self, key: &str, value: &Value<'_>) -> Option<StoreKind> {
        match self.string(key, value)?.as_str() {
            "etcd" => Some(StoreKind::Etcd),
            "dir" => Some(StoreKind::Dir),
            other => {
                self.error(
                    &value.span(),
                    format!("unknown store kind {other:?}: use \"etcd\" or \"dir\""),
                );
                None
            }
        }
    }

    fn endpoints(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let endpoints = self.string_array(key, value)?;
        if endpoints.is_empty() {
            self.error(
                &value.span(),
                "`endpoints` is empty: list at least one, e.g. [\"http://10.0.0.1:2379\"]",
            );
            return None;
        }
        let mut ok = true;
        for endpoint in &endpoints {
            if !valid_endpoint(endpoint.get_ref()) {
                self.error(
                    &endpoint.span(),
                    format!(
                        "endpoint {:?} is not http://HOST:PORT or https://HOST:PORT",
                        endpoint.get_ref()
                    ),
                );
                ok = false;
            }
        }
        ok.then(|| endpoints.into_iter().map(Spanned::into_inner).collect())
    }

    fn prefix(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let prefix = self.string(key, value)?;
        if !prefix.starts_with('/') || (prefix != "/" && prefix.ends_with('/')) {
            self.error(
                &value.span(),
                format!("`prefix` = {prefix:?} must start with `/` and not end with `/` (unless it is \"/\")"),
            );
            return None;
        }
        Some(prefix)
    }

    fn absolute_path(&mut self, key: &str, value: &Value<'_>) -> Option<PathBuf> {
        let path = PathBuf::from(self.string(key, value)?);
        if !path.is_absolute() {
            self.error(
                &value.span(),
                format!("`{key}` = {path:?} must be an absolute path"),
            );
            return None;
        }
        Some(path)
    }

    fn group_name(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let name = self.string(key, value)?;
        if !valid_group_name(&name) {
            self.error(
                &value.span(),
                format!("group name {name:?} is not valid: use [a-z0-9_-], 1 to 64 characters"),
            );
            return None;
        }
        Some(name)
    }

    fn unit(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        let name = self.string(key, value)?;
        if !valid_unit_name(&name) {
            self.error(&value.span(), unit_name_message(key, &name));
            return None;
        }
        Some(name)
    }

    fn members(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let members = self.string_array(key, value)?;
        if members.is_empty() {
            self.error(
                &value.span(),
                "`members` is empty, so no node could be active: list the nodes or omit the key",
            );
            return None;
        }
        let mut ok = true;
        for member in &members {
            if !valid_node_name(member.get_ref()) {
                self.error(
                    &member.span(),
                    format!(
                        "member {:?} is not a valid node name: use {NODE_NAME_RULE}",
                        member.get_ref()
                    ),
                );
                ok = false;
            }
        }
        ok &= self.no_duplicates(key, &members);
        ok.then(|| members.into_iter().map(Spanned::into_inner).collect())
    }

    fn watch(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let units = self.string_array(key, value)?;
        let mut ok = true;
        for unit in &units {
            if !valid_unit_name(unit.get_ref()) {
                self.error(&unit.span(), unit_name_message(key, unit.get_ref()));
                ok = false;
            }
        }
        ok &= self.no_duplicates(key, &units);
        ok.then(|| units.into_iter().map(Spanned::into_inner).collect())
    }

    fn health_command(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<String>> {
        let argv = self.string_array(key, value)?;
        let Some(program) = argv.first() else {
            self.error(
                &value.span(),
                "`health-command` is empty: give the program and its arguments, e.g. [\"/usr/lib/web/check\"]",
            );
            return None;
        };
        if !program.get_ref().starts_with('/') {
            self.error(
                &program.span(),
                format!(
                    "`health-command` must start with an absolute path, not {:?}",
                    program.get_ref()
                ),
            );
            return None;
        }
        Some(argv.into_iter().map(Spanned::into_inner).collect())
    }

    fn lease(&mut self, key: &str, value: &Value<'_>) -> Option<Duration> {
        let lease = self.duration(key, value)?;
        if lease < MIN_LEASE {
            self.error(
                &value.span(),
                format!(
                    "`lease` = {} is too short: it must be at least 1s",
                    humantime::format_duration(lease)
                ),
            );
            return None;
        }
        Some(lease)
    }

    fn nonzero_duration(&mut self, key: &str, value: &Value<'_>) -> Option<Duration> {
        let duration = self.duration(key, value)?;
        if duration.is_zero() {
            self.error(&value.span(), format!("`{key}` must be longer than zero"));
            return None;
        }
        Some(duration)
    }

    /// Reports every repeated entry at the repetition, naming where it first appeared.
    fn no_duplicates(&mut self, key: &str, items: &[Spanned<String>]) -> bool {
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            if let Some(first) = items[..i].iter().find(|f| f.get_ref() == item.get_ref()) {
                let (line, column) = position(self.text, first.span().start);
                self.error(
                    &item.span(),
                    format!(
                        "{:?} appears twice in `{key}` (first at line {line}, column {column})",
                        item.get_ref()
                    ),
                );
                ok = false;
            }
        }
        ok
    }

    // --- plain types ----------------------------------------------------------------------

    fn wrong_type(&mut self, key: &str, value: &Value<'_>, expected: &str) {
        self.error(
            &value.span(),
            format!(
                "`{key}` must be {expected}, found {}",
                value.get_ref().type_str()
            ),
        );
    }

    fn table<'v, 'i>(
        &mut self,
        key: &str,
        value: &'v Value<'i>,
        header: &str,
    ) -> Option<&'v DeTable<'i>> {
        match value.get_ref() {
            DeValue::Table(table) => Some(table),
            _ => {
                self.wrong_type(key, value, &format!("a table, written {header}"));
                None
            }
        }
    }

    fn string(&mut self, key: &str, value: &Value<'_>) -> Option<String> {
        match value.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            _ => {
                self.wrong_type(key, value, "a string");
                None
            }
        }
    }

    fn boolean(&mut self, key: &str, value: &Value<'_>) -> Option<bool> {
        match value.get_ref() {
            DeValue::Boolean(b) => Some(*b),
            _ => {
                self.wrong_type(key, value, "true or false");
                None
            }
        }
    }

    fn integer(&mut self, key: &str, value: &Value<'_>) -> Option<i64> {
        let DeValue::Integer(int) = value.get_ref() else {
            self.wrong_type(key, value, "an integer");
            return None;
        };
        match i64::from_str_radix(int.as_str(), int.radix()) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(&value.span(), format!("`{key}` = {int} is out of range"));
                None
            }
        }
    }

    fn i32_value(&mut self, key: &str, value: &Value<'_>) -> Option<i32> {
        let n = self.integer(key, value)?;
        self.in_range(key, value, n)
    }

    fn u32_value(&mut self, key: &str, value: &Value<'_>) -> Option<u32> {
        let n = self.integer(key, value)?;
        self.in_range(key, value, n)
    }

    fn in_range<T>(&mut self, key: &str, value: &Value<'_>, n: i64) -> Option<T>
    where
        T: TryFrom<i64> + Bounded,
    {
        match T::try_from(n) {
            Ok(n) => Some(n),
            Err(_) => {
                self.error(
                    &value.span(),
                    format!(
                        "`{key}` = {n} is out of range: it must be between {} and {}",
                        T::MIN,
                        T::MAX
                    ),
                );
                None
            }
        }
    }

    fn duration(&mut self, key: &str, value: &Value<'_>) -> Option<Duration> {
        match value.get_ref() {
            DeValue::String(s) => match humantime::parse_duration(s) {
                Ok(duration) => Some(duration),
                Err(err) => {
                    self.error(
                        &value.span(),
                        format!("`{key}` = {s:?} is not a duration ({err}): {DURATION_HINT}"),
                    );
                    None
                }
            },
            DeValue::Integer(int) => {
                // A bare number is the likeliest slip; say what to write instead.
                self.error(
                    &value.span(),
                    format!(
                        "`{key}` must be a duration string, found integer: write e.g. \"{int}s\""
                    ),
                );
                None
            }
            _ => {
                self.wrong_type(key, value, &format!("a duration string ({DURATION_HINT})"));
                None
            }
        }
    }

    /// An array of strings, each with its position for element-level messages.
    fn string_array(&mut self, key: &str, value: &Value<'_>) -> Option<Vec<Spanned<String>>> {
        let DeValue::Array(items) = value.get_ref() else {
            self.wrong_type(key, value, "an array of strings");
            return None;
        };
        let mut strings = Vec::new();
        let mut ok = true;
        for item in items.iter() {
            match item.get_ref() {
                DeValue::String(s) => strings.push(Spanned::new(item.span(), s.to_string())),
                other => {
                    self.error(
                        &item.span(),
                        format!("`{key}` must hold only strings, found {}", other.type_str()),
                    );
                    ok = false;
                }
            }
        }
        ok.then_some(strings)
    }
}

/// Integer types whose bounds range errors quote.
trait Bounded: fmt::Display + Sized {
    const MIN: Self;
    const MAX: Self;
}

impl Bounded for i32 {
    const MIN: Self = i32::MIN;
    const MAX: Self = i32::MAX;
}

impl Bounded for u32 {
    const MIN: Self = u32::MIN;
    const MAX: Self = u32::MAX;
}

fn unit_name_message(key: &str, name: &str) -> String {
    format!(
        "{name:?} in `{key}` is not a valid systemd unit name: NAME[@INSTANCE].SUFFIX, \
         made of [A-Za-z0-9:_.\\-], at most 255 characters, SUFFIX one of {}",
        UNIT_SUFFIXES.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from the design document, every key set.
    const DESIGN_EXAMPLE: &str = r#"node = "db-a"                      # default: the hostname; unique in the cluster

[store]                            # default: kind = "dir", path = "/var/lib/promd"
kind = "etcd"                      # "etcd" (several hosts) or "dir" (one host, or NFS)
endpoints = ["http://10.0.0.1:2379", "http://10.0.0.2:2379"]
connect-timeout = "2s"             # per endpoint, then the next is tried
prefix = "/promd"
# path = "/var/lib/promd"          # kind = "dir"

[[group]]
name = "web"                       # [a-z0-9_-], at most 64
active-target = "web-active.target"
passive-target = "web-passive.target"   # optional
members = ["db-a", "db-b", "db-c"]      # optional: only these may be active; absent ones show as down
lease = "10s"                      # a silent active loses the role after this
priority = 100                     # highest eligible wins; ties: lowest node name
preempt = false                    # take the role back from a healthy lower-priority active
max-restarts = 3                   # watched-unit failures within restart-window before failing over
restart-window = "5min"
restart-backoff = "1s"
failure-cooldown = "10min"         # a node that failed over stays ineligible this long (promctl reset clears)
watch = ["web.service"]            # default: the units that active-target pulls in
health-command = ["/usr/lib/web/check"]  # optional; exit 0 = healthy
health-interval = "2s"
health-timeout = "1s"
"#;

    /// A minimal valid group on lines 1 to 3; tests append keys from line 4 on.
    const GROUP: &str = "[[group]]\nname = \"web\"\nactive-target = \"web-active.target\"\n";

    fn check(text: &str) -> Result<Config, ConfigError> {
        parse_with_hostname(text, "test.toml", || Ok("db-a".to_owned()))
    }

    fn problems(text: &str) -> Vec<(Option<usize>, Option<usize>, String)> {
        match check(text) {
            Ok(config) => panic!("expected errors, got {config:?}"),
            Err(err) => err
                .problems()
                .iter()
                .map(|p| (p.line, p.column, p.message.clone()))
                .collect(),
        }
    }

    /// Asserts that `text` has exactly one problem, at `line`:`column`, mentioning `fragment`.
    #[track_caller]
    fn assert_one(text: &str, line: usize, column: usize, fragment: &str) {
        let found = problems(text);
        assert_eq!(found.len(), 1, "{found:#?}");
        let (l, c, message) = &found[0];
        assert_eq!((*l, *c), (Some(line), Some(column)), "{message}");
        assert!(message.contains(fragment), "{message:?} lacks {fragment:?}");
    }

    fn group_with(extra: &str) -> String {
        format!("{GROUP}{extra}")
    }

    fn default_group(name: &str) -> GroupConfig {
        GroupConfig {
            name: name.to_owned(),
            active_target: format!("{name}-active.target"),
            passive_target: None,
            members: None,
            lease: Duration::from_secs(10),
            priority: 100,
            preempt: false,
            max_restarts: 3,
            restart_window: Duration::from_secs(300),
            restart_backoff: Duration::from_secs(1),
            failure_cooldown: Duration::from_secs(600),
            watch: None,
            health_command: None,
            health_interval: Duration::from_secs(2),
            health_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn design_example_parses_to_every_value() {
        let config = check(DESIGN_EXAMPLE).unwrap();
        let expected = Config {
            node: "db-a".to_owned(),
            store: StoreConfig::Etcd {
                endpoints: vec![
                    "http://10.0.0.1:2379".to_owned(),
                    "http://10.0.0.2:2379".to_owned(),
                ],
                connect_timeout: Duration::from_secs(2),
                prefix: "/promd".to_owned(),
            },
            groups: vec![GroupConfig {
                passive_target: Some("web-passive.target".to_owned()),
                members: Some(vec!["db-a".into(), "db-b".into(), "db-c".into()]),
                watch: Some(vec!["web.service".to_owned()]),
                health_command: Some(vec!["/usr/lib/web/check".to_owned()]),
                ..default_group("web")
            }],
        };
        assert_eq!(config, expected);
    }

    #[test]
    fn non_default_values_are_read() {
        let text = r#"node = "n1"
[store]
kind = "etcd"
endpoints = ["https://[::1]:2379", "http://etcd-1.example:1"]
connect-timeout = "1500ms"
prefix = "/"

[[group]]
name = "db_2"
active-target = "db@main.service"
lease = "1s"
priority = -7
preempt = true
max-restarts = 0
restart-window = "1h"
restart-backoff = "0s"
failure-cooldown = "0s"
watch = []
health-command = ["/bin/check", "--fast", ""]
health-interval = "10s"
health-timeout = "9s"
"#;
        let config = check(text).unwrap();
        assert_eq!(config.node, "n1");
        assert_eq!(
            config.store,
            StoreConfig::Etcd {
                endpoints: vec![
                    "https://[::1]:2379".into(),
                    "http://etcd-1.example:1".into()
                ],
                connect_timeout: Duration::from_millis(1500),
                prefix: "/".to_owned(),
            }
        );
        let expected = GroupConfig {
            name: "db_2".to_owned(),
            active_target: "db@main.service".to_owned(),
            lease: Duration::from_secs(1),
            priority: -7,
            preempt: true,
            max_restarts: 0,
            restart_window: Duration::from_secs(3600),
            restart_backoff: Duration::ZERO,
            failure_cooldown: Duration::ZERO,
            watch: Some(Vec::new()),
            health_command: Some(vec!["/bin/check".into(), "--fast".into(), String::new()]),
            health_interval: Duration::from_secs(10),
            health_timeout: Duration::from_secs(9),
            ..default_group("db_2")
        };
        assert_eq!(config.groups, vec![expected]);
    }

    #[test]
    fn defaults_when_keys_are_absent() {
        let config = check(GROUP).unwrap();
        assert_eq!(
            config,
            Config {
                node: "db-a".to_owned(),
                store: StoreConfig::Dir {
                    path: PathBuf::from("/var/lib/promd"),
                },
                groups: vec![default_group("web")],
            }
        );
    }

    #[test]
    fn empty_file_uses_every_default() {
        let config = check("").unwrap();
        assert_eq!(config.node, "db-a");
        assert_eq!(
            config.store,
            StoreConfig::Dir {
                path: PathBuf::from(DEFAULT_DIR)
            }
        );
        assert!(config.groups.is_empty());
    }

    #[test]
    fn store_defaults() {
        let etcd = check("[store]\nkind = \"etcd\"\nendpoints = [\"http://e:2379\"]\n").unwrap();
        assert_eq!(
            etcd.store,
            StoreConfig::Etcd {
                endpoints: vec!["http://e:2379".to_owned()],
                connect_timeout: Duration::from_secs(2),
                prefix: "/promd".to_owned(),
            }
        );
        let dir = check("[store]\n").unwrap();
        assert_eq!(
            dir.store,
            StoreConfig::Dir {
                path: PathBuf::from("/var/lib/promd")
            }
        );
        let dir = check("[store]\nkind = \"dir\"\npath = \"/srv/promd\"\n").unwrap();
        assert_eq!(
            dir.store,
            StoreConfig::Dir {
                path: PathBuf::from("/srv/promd")
            }
        );
    }

    #[test]
    fn inline_tables_are_accepted() {
        let text = "store = { kind = \"dir\", path = \"/x\" }\n\
                    group = [{ name = \"a\", active-target = \"a-active.target\" }]\n";
        let config = check(text).unwrap();
        assert_eq!(
            config.store,
            StoreConfig::Dir {
                path: PathBuf::from("/x")
            }
        );
        assert_eq!(config.groups, vec![default_group("a")]);
    }

    #[test]
    fn several_groups_keep_their_order() {
        let text =
            format!("{GROUP}[[group]]\nname = \"db\"\nactive-target = \"db-active.target\"\n");
        let config = check(&text).unwrap();
        let names: Vec<_> = config.groups.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(names, ["web", "db"]);
    }

    #[test]
    fn node_defaults_to_the_hostname() {
        let config = parse_with_hostname("", "t", || Ok("web-1.example".to_owned())).unwrap();
        assert_eq!(config.node, "web-1.example");
    }

    #[test]
    fn invalid_hostname_is_an_error_asking_for_node() {
        let err = parse_with_hostname(GROUP, "t", || Ok("Web-1".to_owned())).unwrap_err();
        assert_eq!(err.problems().len(), 1);
        let problem = &err.problems()[0];
        assert_eq!((problem.line, problem.column), (None, None));
        assert!(problem.message.contains("\"Web-1\""), "{err}");
        assert!(problem.message.contains("node = "), "{err}");
        assert_eq!(err.to_string(), format!("t: {}", problem.message));
    }

    #[test]
    fn unreadable_hostname_is_an_error_asking_for_node() {
        let err = parse_with_hostname("", "t", || Err("no name".to_owned())).unwrap_err();
        assert!(
            err.problems()[0]
                .message
                .starts_with("no name; set `node = ")
        );
    }

    #[test]
    fn hostname_is_not_consulted_when_node_is_set() {
        let config =
            parse_with_hostname("node = \"x\"", "t", || panic!("hostname consulted")).unwrap();
        assert_eq!(config.node, "x");
    }

    #[test]
    fn public_parse_with_explicit_node() {
        let config = parse("node = \"db-b\"\n", "promd.toml").unwrap();
        assert_eq!(config.node, "db-b");
    }

    #[test]
    fn not_toml_reports_a_position() {
        assert_one("node = \"a\"\n\n[[group]\n", 3, 9, "not valid TOML");
        assert_one("node = \"unterminated\n", 1, 21, "not valid TOML");
        let found = problems("node = \nlease = = 3\n");
        assert!(!found.is_empty());
        assert_eq!((found[0].0, found[0].1), (Some(1), Some(8)), "{found:?}");
    }

    #[test]
    fn duplicate_toml_key_is_a_syntax_error_at_the_second() {
        assert_one(
            &group_with("lease = \"5s\"\nlease = \"6s\"\n"),
            5,
            1,
            "duplicate key `lease`",
        );
    }

    #[test]
    fn unknown_keys_everywhere() {
        assert_one(
            "nodes = \"a\"\n",
            1,
            1,
            "unknown key `nodes` at the top level; allowed here: node",
        );
        assert_one(
            "[store]\nkind = \"dir\"\n  size = 3\n",
            3,
            3,
            "unknown key `size` in [store]",
        );
        assert_one(
            &group_with("leese = \"10s\"\n"),
            4,
            1,
            "unknown key `leese` in [[group]]",
        );
        assert_one("[groups]\n", 1, 2, "unknown key `groups` at the top level");
        // A key that belongs elsewhere says where.
        assert_one("lease = \"10s\"\n", 1, 1, "belongs in a [[group]]");
        assert_one(
            &group_with("node = \"x\"\n"),
            4,
            1,
            "belongs at the top level",
        );
        assert_one(&group_with("prefix = \"/x\"\n"), 4, 1, "belongs in [store]");
    }

    #[test]
    fn wrong_types() {
        assert_one(&group_with("lease = 10\n"), 4, 9, "write e.g. \"10s\"");
        assert_one(
            &group_with("priority = \"x\"\n"),
            4,
            12,
            "`priority` must be an integer, found string",
        );
        assert_one(&group_with("priority = 1.5\n"), 4, 12, "found float");
        assert_one(
            &group_with("preempt = \"yes\"\n"),
            4,
            11,
            "`preempt` must be true or false",
        );
        assert_one(
            &group_with("members = \"db-a\"\n"),
            4,
            11,
            "an array of strings",
        );
        assert_one(
            &group_with("watch = [\"a.service\", 3]\n"),
            4,
            23,
            "only strings, found integer",
        );
        assert_one(
            &group_with("restart-window = 1979-05-27\n"),
            4,
            18,
            "found datetime",
        );
        assert_one("node = 7\n", 1, 8, "`node` must be a string");
        assert_one("store = \"etcd\"\n", 1, 9, "`store` must be a table");
        assert_one(
            "[group]\nname = \"web\"\n",
            1,
            1,
            "write each group as [[group]]",
        );
        assert_one("group = [1]\n", 1, 10, "`group` must be a table");
    }

    #[test]
    fn bad_duration_strings() {
        assert_one(
            &group_with("restart-backoff = \"1 sec x\"\n"),
            4,
            19,
            "is not a duration",
        );
        assert_one(
            &group_with("failure-cooldown = \"10\"\n"),
            4,
            20,
            "is not a duration",
        );
        assert_one(
            "[store]\nkind = \"etcd\"\nendpoints = [\"http://a:1\"]\nconnect-timeout = \"soon\"\n",
            4,
            19,
            "`connect-timeout`",
        );
    }

    #[test]
    fn integers_out_of_range() {
        assert_one(
            &group_with("max-restarts = -1\n"),
            4,
            16,
            "between 0 and 4294967295",
        );
        assert_one(
            &group_with("max-restarts = 4294967296\n"),
            4,
            16,
            "out of range",
        );
        assert_one(
            &group_with("priority = 2147483648\n"),
            4,
            12,
            "between -2147483648 and 2147483647",
        );
        assert_one(
            &group_with("priority = -2147483649\n"),
            4,
            12,
            "out of range",
        );
        let config = check(&group_with(
            "priority = -2147483648\nmax-restarts = 4294967295\n",
        ))
        .unwrap();
        assert_eq!(config.groups[0].priority, i32::MIN);
        assert_eq!(config.groups[0].max_restarts, u32::MAX);
    }

    #[test]
    fn duplicate_group_names_point_at_the_second() {
        let text =
            format!("{GROUP}\n[[group]]\nname = \"web\"\nactive-target = \"other.target\"\n");
        assert_one(&text, 6, 8, "already defined on line 2");
    }

    #[test]
    fn lease_shorter_than_one_second() {
        assert_one(&group_with("lease = \"999ms\"\n"), 4, 9, "at least 1s");
        assert_one(&group_with("lease = \"0s\"\n"), 4, 9, "at least 1s");
    }

    #[test]
    fn health_timeout_must_be_shorter_than_interval() {
        assert_one(
            &group_with("health-interval = \"2s\"\nhealth-timeout = \"2s\"\n"),
            5,
            18,
            "`health-timeout` (2s) must be shorter than `health-interval` (2s)",
        );
        // Against the default interval (2s).
        assert_one(
            &group_with("health-timeout = \"3s\"\n"),
            4,
            18,
            "shorter than",
        );
        // Against the default timeout (1s): the interval is what was written.
        assert_one(
            &group_with("health-interval = \"500ms\"\n"),
            4,
            19,
            "shorter than",
        );
    }

    #[test]
    fn zero_durations_where_they_make_no_sense() {
        assert_one(
            &group_with("restart-window = \"0s\"\n"),
            4,
            18,
            "`restart-window` must be longer than zero",
        );
        // The zero interval is reported alone, not also as "shorter than".
        assert_one(
            &group_with("health-interval = \"0ms\"\n"),
            4,
            19,
            "`health-interval` must be longer than zero",
        );
        assert_one(
            &group_with("health-timeout = \"0s\"\n"),
            4,
            18,
            "`health-timeout` must be longer than zero",
        );
    }

    #[test]
    fn invalid_names() {
        assert_one(
            "[[group]]\nname = \"Web\"\nactive-target = \"a.target\"\n",
            2,
            8,
            "group name \"Web\" is not valid",
        );
        assert_one(
            "[[group]]\nname = \"\"\nactive-target = \"a.target\"\n",
            2,
            8,
            "is not valid",
        );
        assert_one("node = \"-a\"\n", 1, 8, "not a valid node name");
        assert_one(
            &group_with("members = [\"db-a\", \"DB-B\"]\n"),
            4,
            20,
            "member \"DB-B\" is not a valid node name",
        );
        assert_one(&group_with("members = []\n"), 4, 11, "`members` is empty");
    }

    #[test]
    fn columns_count_characters_not_bytes() {
        // "é" is two bytes but one column.
        let text = group_with("members = [\"db-é\", \"x\", \"Y\"]\n");
        let found = problems(&text);
        let places: Vec<_> = found.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            places,
            [(Some(4), Some(12)), (Some(4), Some(25))],
            "{found:?}"
        );
        // Multi-byte characters on earlier lines do not shift later columns.
        let text = group_with("# ééé\nwatch = [\"ok.service\", \"bad\"]\n");
        assert_one(&text, 5, 24, "\"bad\"");
    }

    #[test]
    fn duplicate_members_and_watched_units() {
        assert_one(
            &group_with("members = [\"db-a\", \"db-b\", \"db-a\"]\n"),
            4,
            28,
            "\"db-a\" appears twice in `members` (first at line 4, column 12)",
        );
        assert_one(
            &group_with("watch = [\"a.service\",\n  \"a.service\"]\n"),
            5,
            3,
            "appears twice in `watch` (first at line 4, column 10)",
        );
    }

    #[test]
    fn invalid_unit_names() {
        assert_one(
            "[[group]]\nname = \"w\"\nactive-target = \"web-active\"\n",
            3,
            17,
            "not a valid systemd unit name",
        );
        assert_one(
            &group_with("passive-target = \"web passive.target\"\n"),
            4,
            18,
            "not a valid systemd unit name",
        );
        assert_one(
            &group_with("passive-target = \"web-active.target\"\n"),
            4,
            18,
            "must differ",
        );
        assert_one(
            &group_with("watch = [\"web.service\", \"web.services\"]\n"),
            4,
            25,
            "\"web.services\" in `watch`",
        );
    }

    #[test]
    fn unit_name_rules() {
        for good in [
            "web.service",
            "web-active.target",
            "getty@tty1.service",
            "a:b_c.d\\x2d.mount",
            "x.automount",
            "x.swap",
            "x.socket",
            "x.device",
            "x.path",
            "x.timer",
            "x.slice",
            "x.scope",
        ] {
            assert!(valid_unit_name(good), "{good}");
        }
        let too_long = format!("{}.service", "a".repeat(248));
        assert!(!valid_unit_name(&too_long));
        assert!(valid_unit_name(&format!("{}.service", "a".repeat(247))));
        for bad in [
            "",
            "web",
            ".service",
            "web.conf",
            "web service.service",
            "getty@.service",
            "@tty1.service",
            "a@b@c.service",
            "wéb.service",
            "web.service.",
        ] {
            assert!(!valid_unit_name(bad), "{bad}");
        }
    }

    #[test]
    fn group_name_rules() {
        assert!(valid_group_name("web"));
        assert!(valid_group_name("a_b-9"));
        assert!(valid_group_name(&"a".repeat(64)));
        assert!(!valid_group_name(&"a".repeat(65)));
        assert!(!valid_group_name(""));
        assert!(!valid_group_name("a.b"));
        assert!(!valid_group_name("Web"));
        assert!(!valid_group_name("a/b"));
    }

    #[test]
    fn endpoint_rules() {
        for good in [
            "http://10.0.0.1:2379",
            "https://etcd.example:443",
            "http://[fe80::1]:2379",
        ] {
            assert!(valid_endpoint(good), "{good}");
        }
        for bad in [
            "10.0.0.1:2379",
            "http://10.0.0.1",
            "http://10.0.0.1:",
            "http://:2379",
            "http://10.0.0.1:2379/",
            "http://10.0.0.1:0",
            "http://10.0.0.1:65536",
            "http://10.0.0.1:+1",
            "ftp://a:1",
            "http://[zz]:1",
            "http://a b:1",
        ] {
            assert!(!valid_endpoint(bad), "{bad}");
        }
    }

    #[test]
    fn store_errors() {
        assert_one(
            "[store]\nkind = \"zookeeper\"\n",
            2,
            8,
            "unknown store kind \"zookeeper\"",
        );
        assert_one("\n[store]\nkind = \"etcd\"\n", 2, 1, "needs `endpoints`");
        assert_one(
            "[store]\nkind = \"etcd\"\nendpoints = []\n",
            3,
            13,
            "`endpoints` is empty",
        );
        assert_one(
            "[store]\nkind = \"etcd\"\nendpoints = [\"http://a:1\", \"a:2379\"]\n",
            3,
            28,
            "endpoint \"a:2379\" is not http://HOST:PORT",
        );
        let etcd = "[store]\nkind = \"etcd\"\nendpoints = [\"http://a:1\"]\n";
        assert_one(
            &format!("{etcd}prefix = \"promd\"\n"),
            4,
            10,
            "must start with `/`",
        );
        assert_one(
            &format!("{etcd}prefix = \"/promd/\"\n"),
            4,
            10,
            "not end with `/`",
        );
        assert_one(
            &format!("{etcd}path = \"/var/lib/promd\"\n"),
            4,
            1,
            "`path` only applies to kind = \"dir\"",
        );
        assert_one(
            &format!("{etcd}connect-timeout = \"0s\"\n"),
            4,
            19,
            "longer than zero",
        );
        assert_one(
            "[store]\npath = \"var/lib/promd\"\n",
            2,
            8,
            "must be an absolute path",
        );
    }

    #[test]
    fn etcd_keys_under_dir_are_errors() {
        let text = "[store]\nkind = \"dir\"\nendpoints = [\"http://a:1\"]\nconnect-timeout = \"1s\"\nprefix = \"/p\"\n";
        let found = problems(text);
        let places: Vec<_> = found.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            places,
            [(Some(3), Some(1)), (Some(4), Some(1)), (Some(5), Some(1))]
        );
        assert!(
            found
                .iter()
                .all(|p| p.2.contains("only applies to kind = \"etcd\""))
        );
        // Without `kind`, the store is "dir" too.
        assert_one(
            "[store]\nprefix = \"/p\"\n",
            2,
            1,
            "only applies to kind = \"etcd\"",
        );
    }

    #[test]
    fn health_command_errors() {
        assert_one(
            &group_with("health-command = []\n"),
            4,
            18,
            "`health-command` is empty",
        );
        assert_one(
            &group_with("health-command = [\"check\", \"-v\"]\n"),
            4,
            19,
            "absolute path, not \"check\"",
        );
        assert_one(
            &group_with("health-command = \"/bin/check\"\n"),
            4,
            18,
            "an array of strings",
        );
    }

    #[test]
    fn missing_required_keys_point_at_the_header() {
        assert_one(
            "node = \"a\"\n\n[[group]]\nname = \"web\"\n",
            3,
            1,
            "no `active-target`",
        );
        assert_one(
            "[[group]]\nactive-target = \"a.target\"\n",
            1,
            1,
            "no `name`",
        );
        let found = problems("[[group]]\n[[group]]\nname = \"b\"\nactive-target = \"b.target\"\n");
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.iter().all(|p| (p.0, p.1) == (Some(1), Some(1))));
    }

    #[test]
    fn every_problem_is_reported_in_file_order() {
        let text = "node = \"Bad\"\n\
                    [store]\n\
                    kind = \"etcd\"\n\
                    endpoints = [\"http://a:1\"]\n\
                    [[group]]\n\
                    name = \"web\"\n\
                    active-target = \"web-active.target\"\n\
                    lease = \"100ms\"\n\
                    colour = \"blue\"\n";
        let err = check(text).unwrap_err();
        let places: Vec<_> = err.problems().iter().map(|p| (p.line, p.column)).collect();
        assert_eq!(
            places,
            [(Some(1), Some(8)), (Some(8), Some(9)), (Some(9), Some(1))],
            "{err}"
        );
        let lines: Vec<_> = err.to_string().lines().map(str::to_owned).collect();
        assert_eq!(lines.len(), 3);
        assert!(
            lines[0].starts_with("test.toml:1:8: `node` = \"Bad\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].starts_with("test.toml:8:9: `lease`"),
            "{}",
            lines[1]
        );
        assert!(
            lines[2].starts_with("test.toml:9:1: unknown key `colour`"),
            "{}",
            lines[2]
        );
    }

    #[test]
    fn errors_in_two_groups_and_duplicates_together() {
        let text =
            format!("{GROUP}lease = \"1ms\"\n[[group]]\nname = \"web\"\nactive-target = \"x\"\n");
        let found = problems(&text);
        let places: Vec<_> = found.iter().map(|p| (p.0, p.1)).collect();
        assert_eq!(
            places,
            [(Some(4), Some(9)), (Some(6), Some(8)), (Some(7), Some(17))],
            "{found:?}"
        );
    }

    #[test]
    fn load_reads_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("promd.toml");
        std::fs::write(&path, DESIGN_EXAMPLE).unwrap();
        let config = load(&path).unwrap();
        assert_eq!(config.node, "db-a");

        std::fs::write(&path, "node = 1\n").unwrap();
        let err = load(&path).unwrap_err();
        assert_eq!(err.origin(), path.display().to_string());
        assert_eq!(
            err.to_string(),
            format!(
                "{}:1:8: `node` must be a string, found integer",
                path.display()
            )
        );
    }

    #[test]
    fn unreadable_file_has_the_os_reason_and_no_position() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("missing.toml");
        let err = load(&path).unwrap_err();
        assert_eq!(err.problems().len(), 1);
        let problem = &err.problems()[0];
        assert_eq!((problem.line, problem.column), (None, None));
        assert!(
            problem.message.contains("No such file or directory"),
            "{err}"
        );
        assert!(
            err.to_string()
                .starts_with(&format!("{}: cannot read", path.display()))
        );
    }

    #[test]
    fn display_formats() {
        let err = ConfigError {
            origin: "f".to_owned(),
            problems: vec![
                Problem {
                    line: None,
                    column: None,
                    message: "a".to_owned(),
                },
                Problem {
                    line: Some(2),
                    column: Some(3),
                    message: "b".to_owned(),
                },
            ],
        };
        assert_eq!(err.to_string(), "f: a\nf:2:3: b");
    }

    #[test]
    fn position_counts_from_one() {
        assert_eq!(position("ab\ncd", 0), (1, 1));
        assert_eq!(position("ab\ncd", 2), (1, 3));
        assert_eq!(position("ab\ncd", 3), (2, 1));
        assert_eq!(position("ab\ncd", 99), (2, 3));
        assert_eq!(position("é\nx", 2), (1, 2));
    }
}
