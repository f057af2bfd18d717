//! The document walk: positions, the `Checker`, and the top-level, `[store]` and `[[group]]`
//! sections with the checks that span several keys.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::ops::Range;
use std::path::PathBuf;
use std::time::Duration;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::names::{Endpoint, Scheme};
use super::*;

pub(super) const MIN_LEASE: Duration = Duration::from_secs(1);

pub(super) const TOP_KEYS: &[&str] = &["node", "[store]", "[http]", "[[group]]"];
pub(super) const STORE_KEYS: &[&str] = &[
    "kind",
    "endpoints",
    "connect-timeout",
    "prefix",
    "ca-file",
    "cert-file",
    "key-file",
    "server-name",
    "user",
    "password-file",
    "path",
];
pub(super) const GROUP_KEYS: &[&str] = &[
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
    "addresses",
    "actives",
    "standbys",
];
pub(super) const NODE_NAME_RULE: &str =
    "[a-z0-9_.-], 1 to 64 characters, not starting with `.` or `-`";
pub(super) const DURATION_HINT: &str = "write e.g. \"10s\", \"5min\" or \"1500ms\"";

/// 1-based line and column (in characters) of a byte offset.
pub(super) fn position(text: &str, offset: usize) -> (usize, usize) {
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
pub(super) struct Field<T> {
    pub(super) key: Range<usize>,
    pub(super) span: Range<usize>,
    pub(super) value: Option<T>,
}

/// The value of an optional key once the section is known to be valid.
pub(super) fn or_default<T: Clone>(field: &Option<Field<T>>, default: T) -> T {
    field
        .as_ref()
        .and_then(|f| f.value.clone())
        .unwrap_or(default)
}

/// The value of an optional key without a default.
pub(super) fn optional<T: Clone>(field: &Option<Field<T>>) -> Option<T> {
    field.as_ref().and_then(|f| f.value.clone())
}

pub(super) type Key<'i> = Spanned<DeString<'i>>;
pub(super) type Value<'i> = Spanned<DeValue<'i>>;

/// Walks the document, collecting problems.
pub(super) struct Checker<'s> {
    pub(super) text: &'s str,
    pub(super) problems: Vec<Problem>,
    /// `$CREDENTIALS_DIRECTORY`, where a `password-file` that is a bare name is.
    pub(super) credentials: Option<PathBuf>,
}

#[derive(Clone, Copy)]
pub(super) enum StoreKind {
    Etcd,
    Dir,
}

#[derive(Default)]
pub(super) struct StoreFields {
    kind: Option<Field<StoreKind>>,
    endpoints: Option<Field<Vec<Spanned<Endpoint>>>>,
    connect_timeout: Option<Field<Duration>>,
    prefix: Option<Field<String>>,
    ca_file: Option<Field<PathBuf>>,
    cert_file: Option<Field<PathBuf>>,
    key_file: Option<Field<PathBuf>>,
    server_name: Option<Field<String>>,
    user: Option<Field<String>>,
    password_file: Option<Field<PasswordFile>>,
    path: Option<Field<PathBuf>>,
}

/// `name` and where its key is, if the key is set.
fn set<'f, T>(
    name: &'static str,
    f: &'f Option<Field<T>>,
) -> Option<(&'static str, &'f Range<usize>)> {
    f.as_ref().map(|f| (name, &f.key))
}

impl StoreFields {
    /// The etcd-only keys that are set, with their key's place, in file order of the list.
    fn etcd_keys(&self) -> Vec<(&'static str, &Range<usize>)> {
        [
            set("endpoints", &self.endpoints),
            set("connect-timeout", &self.connect_timeout),
            set("prefix", &self.prefix),
        ]
        .into_iter()
        .chain(self.tls_keys())
        .chain([
            set("user", &self.user),
            set("password-file", &self.password_file),
        ])
        .flatten()
        .collect()
    }

    /// The TLS keys that are set.
    fn tls_keys(&self) -> [Option<(&'static str, &Range<usize>)>; 4] {
        [
            set("ca-file", &self.ca_file),
            set("cert-file", &self.cert_file),
            set("key-file", &self.key_file),
            set("server-name", &self.server_name),
        ]
    }
}

/// Whether two target names can be the same unit: equal, or a template and one of its
/// instances (`x@.target` and `x@1.target`).
fn same_units(a: &str, b: &str) -> bool {
    a == b || template_of(a).is_some_and(|t| t == b) || template_of(b).is_some_and(|t| t == a)
}

/// The template of an instance name: `x@1.target` → `x@.target`; `None` for a template or
/// a plain name.
fn template_of(unit: &str) -> Option<String> {
    let (prefix, rest) = unit.split_once('@')?;
    let dot = rest.rfind('.')?;
    (dot > 0).then(|| format!("{prefix}@{}", &rest[dot..]))
}

/// A group's valid target names with their places; true: the active target.
pub(super) type Targets = Vec<(Spanned<String>, bool)>;

/// What the file-wide checks need of one `[[group]]`: its valid name, its valid target names
/// with their places (true: the active target), and its valid addresses with their places.
pub(super) struct GroupMarks {
    pub(super) name: Option<Spanned<String>>,
    pub(super) targets: Targets,
    pub(super) addresses: Vec<Spanned<Address>>,
}

/// A target named by a `[[group]]`, for the check that groups do not share them.
pub(super) struct Target {
    /// Which `[[group]]` of the file (names may be missing or repeated).
    group_index: usize,
    /// How messages name the group.
    group: String,
    unit: String,
    span: Range<usize>,
    active: bool,
}

#[derive(Default)]
pub(super) struct GroupFields {
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
    addresses: Option<Field<Vec<Spanned<Address>>>>,
    actives: Option<Field<u32>>,
    standbys: Option<Field<Option<NonZeroU32>>>,
}

impl Checker<'_> {
    pub(super) fn error(&mut self, span: &Range<usize>, message: impl Into<String>) {
        let (line, column) = position(self.text, span.start);
        self.problems.push(Problem {
            line: Some(line),
            column: Some(column),
            message: message.into(),
        });
    }

    pub(super) fn unplaced_error(&mut self, message: impl Into<String>) {
        self.problems.push(Problem {
            line: None,
            column: None,
            message: message.into(),
        });
    }

    pub(super) fn line_of(&self, span: &Range<usize>) -> usize {
        position(self.text, span.start).0
    }

    pub(super) fn syntax_error(&mut self, err: &toml::de::Error) {
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
    pub(super) fn field<T>(
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

    pub(super) fn unknown_key(&mut self, key: &Key<'_>, place: &str, allowed: &[&str]) {
        let name: &str = key.get_ref();
        let hint =
            if place != "at the top level" && matches!(name, "node" | "store" | "http" | "group") {
                format!(" (`{name}` belongs at the top level, before any [table] header)")
            } else if place != "in [[group]]" && GROUP_KEYS.contains(&name) {
                format!(" (`{name}` belongs in a [[group]])")
            } else if place != "in [store]" && STORE_KEYS.contains(&name) {
                format!(" (`{name}` belongs in [store])")
            } else if place != "in [http]" && name == "listen" {
                format!(" (`{name}` belongs in [http])")
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

    pub(super) fn document(
        &mut self,
        root: &DeTable<'_>,
        hostname: impl FnOnce() -> Result<String, String>,
    ) -> Option<Config> {
        let mut node = None;
        let mut store = None;
        let mut groups = None;
        let mut http = None;
        for (key, value) in root.iter() {
            match key.get_ref().as_ref() {
                "node" => node = Some(self.node(value)),
                "store" => store = Some(self.store(value)),
                "http" => http = Some(self.http(value)),
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
        let http = http.unwrap_or_else(|| Some(HttpConfig::default()));
        Some(Config {
            node: node?,
            store: store?,
            groups: groups?,
            http: http?,
        })
    }

    pub(super) fn node(&mut self, value: &Value<'_>) -> Option<String> {
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

    pub(super) fn default_node(
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

    pub(super) fn store(&mut self, value: &Value<'_>) -> Option<StoreConfig> {
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
                "ca-file" => f.ca_file = self.field(key, value, Self::absolute_path),
                "cert-file" => f.cert_file = self.field(key, value, Self::absolute_path),
                "key-file" => f.key_file = self.field(key, value, Self::absolute_path),
                "server-name" => f.server_name = self.field(key, value, Self::server_name),
                "user" => f.user = self.field(key, value, Self::user),
                "password-file" => f.password_file = self.field(key, value, Self::password_file),
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

    pub(super) fn etcd_store(&mut self, f: &StoreFields, table: &Range<usize>) -> StoreConfig {
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
        let (endpoints, scheme) = self.endpoint_scheme(f);
        let tls = (scheme == Scheme::Https).then(|| Box::new(self.tls(f)));
        StoreConfig::Etcd {
            endpoints,
            connect_timeout: or_default(&f.connect_timeout, DEFAULT_CONNECT_TIMEOUT),
            prefix: or_default(&f.prefix, DEFAULT_PREFIX.to_owned()),
            tls,
            auth: self.auth(f).map(Box::new),
        }
    }

    /// One scheme for every endpoint: the one written, else https if a TLS key is set (as
    /// etcdctl does with `--cacert` and friends), else http. Returns the endpoints as URLs.
    fn endpoint_scheme(&mut self, f: &StoreFields) -> (Vec<String>, Scheme) {
        let endpoints: &[Spanned<Endpoint>] = f
            .endpoints
            .as_ref()
            .and_then(|e| e.value.as_deref())
            .unwrap_or_default();
        let tls_key = f.tls_keys().into_iter().flatten().next();
        let first = endpoints.iter().find(|e| e.get_ref().scheme.is_some());
        let scheme = match first.and_then(|e| e.get_ref().scheme) {
            Some(scheme) => scheme,
            None if tls_key.is_some() => Scheme::Https,
            None => Scheme::Http,
        };
        for endpoint in endpoints {
            let Some(other) = endpoint.get_ref().scheme.filter(|s| *s != scheme) else {
                continue;
            };
            let Some(first) = first else { continue };
            let (line, column) = position(self.text, first.span().start);
            self.error(
                &endpoint.span(),
                format!(
                    "endpoint {:?} is {}, but {:?} (line {line}, column {column}) is {}: every \
                     endpoint must use the same scheme",
                    endpoint.get_ref().written,
                    other.as_str(),
                    first.get_ref().written,
                    scheme.as_str(),
                ),
            );
        }
        if let (Scheme::Http, Some((key, place))) = (scheme, tls_key) {
            let line = self.line_of(place);
            for endpoint in endpoints.iter().filter(|e| e.get_ref().scheme.is_some()) {
                self.error(
                    &endpoint.span(),
                    format!(
                        "endpoint {:?} is plain http, but `{key}` (line {line}) is a TLS setting: \
                         write {:?}, or remove the TLS keys",
                        endpoint.get_ref().written,
                        endpoint.get_ref().url(Scheme::Https)
                    ),
                );
            }
        }
        let urls = endpoints.iter().map(|e| e.get_ref().url(scheme)).collect();
        (urls, scheme)
    }

    /// The TLS keys, their files read and checked.
    fn tls(&mut self, f: &StoreFields) -> TlsConfig {
        let ca_file = optional(&f.ca_file);
        if let (Some(path), Some(field)) = (&ca_file, &f.ca_file)
            && let Err(e) = read_certificates("ca-file", path)
        {
            self.error(&field.span, e.to_string());
        }
        let client = match (&f.cert_file, &f.key_file) {
            (Some(cert), None) => {
                self.error(
                    &cert.key,
                    "`cert-file` needs `key-file` too: the client certificate's private key",
                );
                None
            }
            (None, Some(key)) => {
                self.error(
                    &key.key,
                    "`key-file` needs `cert-file` too: the client certificate it is the key of",
                );
                None
            }
            (Some(cert), Some(key)) => match (&cert.value, &key.value) {
                (Some(cert_file), Some(key_file)) => {
                    // Each file on its own first, so that both are reported; then the pair.
                    let cert_read = read_certificates("cert-file", cert_file)
                        .map_err(|e| self.error(&cert.span, e.to_string()));
                    let key_read = secure::read_private_key(key_file)
                        .map_err(|e| self.error(&key.span, e.to_string()));
                    if cert_read.is_ok()
                        && key_read.is_ok()
                        && let Err(e) = read_identity(cert_file, key_file)
                    {
                        self.error(&key.span, e.to_string());
                    }
                    Some(ClientCert {
                        cert_file: cert_file.clone(),
                        key_file: key_file.clone(),
                    })
                }
                _ => None,
            },
            (None, None) => None,
        };
        TlsConfig {
            ca_file,
            client,
            server_name: optional(&f.server_name),
        }
    }

    /// `user` and `password-file`, the password read if it can be (a credential can only be
    /// read under systemd, with `$CREDENTIALS_DIRECTORY` set).
    fn auth(&mut self, f: &StoreFields) -> Option<AuthConfig> {
        match (&f.user, &f.password_file) {
            (Some(user), None) => {
                self.error(
                    &user.key,
                    "`user` needs `password-file` too: the file that holds the user's password",
                );
                None
            }
            (None, Some(file)) => {
                self.error(
                    &file.key,
                    "`password-file` needs `user` too: the etcd user whose password it holds",
                );
                None
            }
            (Some(user), Some(file)) => {
                let (Some(user), Some(password_file)) = (&user.value, &file.value) else {
                    return None;
                };
                match read_password(password_file, self.credentials.as_deref()) {
                    Ok(_) | Err(SecretError::NoCredentials { .. }) => {}
                    Err(e) => self.error(&file.span, e.to_string()),
                }
                Some(AuthConfig {
                    user: user.clone(),
                    password_file: password_file.clone(),
                })
            }
            (None, None) => None,
        }
    }

    pub(super) fn dir_store(&mut self, f: &StoreFields) -> StoreConfig {
        for (name, key) in f.etcd_keys() {
            self.error(
                key,
                format!("`{name}` only applies to kind = \"etcd\"; this [store] is kind = \"dir\""),
            );
        }
        StoreConfig::Dir {
            path: or_default(&f.path, PathBuf::from(DEFAULT_DIR)),
        }
    }

    pub(super) fn groups(&mut self, value: &Value<'_>) -> Option<Vec<GroupConfig>> {
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
        let mut targets: Vec<Target> = Vec::new();
        let mut addresses: Vec<(usize, String, Spanned<Address>)> = Vec::new();
        for (index, item) in items.iter().enumerate() {
            let (group, marks) = self.group(item);
            let GroupMarks {
                name,
                targets: mine,
                addresses: my_addresses,
            } = marks;
            self.targets_of_other_groups(index, &name, mine, &mut targets);
            self.addresses_of_other_groups(index, &name, my_addresses, &mut addresses);
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

    /// A group's targets must be its own: a target that is one group's active target and
    /// another group's active or passive target would be started by one role and stopped by
    /// the other, so the roles would flap. (Two groups may share a passive target.) A
    /// template counts as each of its instances: `x-active@.target` with slots starts
    /// `x-active@1.target`. Each such target is reported where it appears again, naming the
    /// group that had it first.
    fn targets_of_other_groups(
        &mut self,
        index: usize,
        name: &Option<Spanned<String>>,
        mine: Targets,
        seen: &mut Vec<Target>,
    ) {
        for (unit, active) in mine {
            let clash = seen.iter().find(|t| {
                t.group_index != index
                    && same_units(&t.unit, unit.get_ref())
                    && (t.active || active)
            });
            if let Some(first) = clash {
                let (line, column) = position(self.text, first.span.start);
                let key = if active {
                    "active-target"
                } else {
                    "passive-target"
                };
                let role = if first.active { "active" } else { "passive" };
                // An instance and a template: say which is which.
                let what = if first.unit == *unit.get_ref() {
                    format!("is already the {role} target of {}", first.group)
                } else if template_of(unit.get_ref()).is_some() {
                    format!(
                        "is an instance of {:?}, the {role} template of {}",
                        first.unit, first.group
                    )
                } else {
                    format!(
                        "is the template of {:?}, the {role} target of {}",
                        first.unit, first.group
                    )
                };
                self.error(
                    &unit.span(),
                    format!(
                        "`{key}` {:?} {what} (line {line}, column {column}): a unit started by \
                         one role and stopped by the other would flap; give each group targets \
                         of its own",
                        unit.get_ref(),
                    ),
                );
            }
            seen.push(Target {
                group_index: index,
                group: match name {
                    Some(n) => format!("group {:?}", n.get_ref()),
                    None => "another [[group]]".to_owned(),
                },
                unit: unit.get_ref().clone(),
                span: unit.span(),
                active,
            });
        }
    }

    /// An address follows one group's active host: the same address in two groups would be
    /// claimed by two hosts at once. Reported where it appears again, naming the first group.
    fn addresses_of_other_groups(
        &mut self,
        index: usize,
        name: &Option<Spanned<String>>,
        mine: Vec<Spanned<Address>>,
        seen: &mut Vec<(usize, String, Spanned<Address>)>,
    ) {
        for address in mine {
            let clash = seen
                .iter()
                .find(|(i, _, a)| *i != index && a.get_ref().ip == address.get_ref().ip);
            if let Some((_, group, first)) = clash {
                let (line, column) = position(self.text, first.span().start);
                self.error(
                    &address.span(),
                    format!(
                        "address {} is already an address of {group} (line {line}, column \
                         {column}): an address follows one group's active host, so two groups \
                         would put it on two hosts at once",
                        address.get_ref().ip
                    ),
                );
            }
            let group = match name {
                Some(n) => format!("group {:?}", n.get_ref()),
                None => "another [[group]]".to_owned(),
            };
            seen.push((index, group, address));
        }
    }

    /// One `[[group]]`: the group if it is valid, and what the file-wide checks need of it.
    pub(super) fn group(&mut self, item: &Value<'_>) -> (Option<GroupConfig>, GroupMarks) {
        let Some(table) = self.table("group", item, "[[group]]") else {
            return (
                None,
                GroupMarks {
                    name: None,
                    targets: Vec::new(),
                    addresses: Vec::new(),
                },
            );
        };
        let before = self.problems.len();
        let mut f = GroupFields::default();
        for (key, value) in table.iter() {
            match key.get_ref().as_ref() {
                "name" => f.name = self.field(key, value, Self::group_name),
                "active-target" => f.active_target = self.field(key, value, Self::active_unit),
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
                "addresses" => f.addresses = self.field(key, value, Self::addresses),
                "actives" => f.actives = self.field(key, value, Self::actives),
                "standbys" => f.standbys = self.field(key, value, Self::standbys),
                _ => self.unknown_key(key, "in [[group]]", GROUP_KEYS),
            }
        }
        self.group_relations(&f, &item.span());
        let name = f
            .name
            .as_ref()
            .and_then(|n| Some(Spanned::new(n.span.clone(), n.value.clone()?)));
        let targets = [(&f.active_target, true), (&f.passive_target, false)]
            .into_iter()
            .filter_map(|(field, active)| {
                let field = field.as_ref()?;
                Some((
                    Spanned::new(field.span.clone(), field.value.clone()?),
                    active,
                ))
            })
            .collect();
        let addresses = f
            .addresses
            .as_ref()
            .and_then(|a| a.value.clone())
            .unwrap_or_default();
        if self.problems.len() != before {
            return (
                None,
                GroupMarks {
                    name,
                    targets,
                    addresses,
                },
            );
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
            addresses: {
                // In one order whatever the file's: the order means nothing (a unit each, none
                // before another), so a reload that only reorders them changes nothing.
                let mut all: Vec<Address> = addresses.iter().map(|a| a.get_ref().clone()).collect();
                all.sort_by_key(|a| a.ip);
                all
            },
            actives: or_default(&f.actives, 1),
            standbys: or_default(&f.standbys, None),
            slot: None,
        };
        (
            Some(group),
            GroupMarks {
                name,
                targets,
                addresses,
            },
        )
    }

    /// Checks that involve several keys of a group: required keys and consistency.
    pub(super) fn group_relations(&mut self, f: &GroupFields, header: &Range<usize>) {
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
            && let (Some(a), Some(p)) = (&active.value, &passive.value)
            && same_units(a, p)
        {
            let message = if a == p {
                "`passive-target` must differ from `active-target`".to_owned()
            } else {
                format!("`passive-target` {p:?} is an instance of the active template {a:?}")
            };
            self.error(
                &passive.span,
                format!(
                    "{message}: a unit started by one role and stopped by the other would make \
                     the role flap"
                ),
            );
        }
        self.slot_relations(f);
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

    /// `actives` and `standbys` against the keys they depend on: the listed `members` (each
    /// slot and each standby is a host of its own), the `passive-target` (which `standbys`
    /// limits) and the `addresses` (which float to one host).
    fn slot_relations(&mut self, f: &GroupFields) {
        let actives = f.actives.as_ref();
        let standbys = f.standbys.as_ref();
        if let (Some(standbys), None) = (standbys, &f.passive_target)
            && let Some(Some(m)) = standbys.value
        {
            self.error(
                &standbys.span,
                format!(
                    "`standbys` = {m} limits how many hosts run the passive target, but this \
                     group has no `passive-target`: set one, or omit `standbys`"
                ),
            );
        }
        if actives.is_some_and(|a| a.value.is_none()) || standbys.is_some_and(|s| s.value.is_none())
        {
            return; // already reported: the relations would only guess
        }
        let n = or_default(&f.actives, 1);
        if let Some(active) = &f.active_target
            && let Some(target) = &active.value
            && is_unit_template(target)
            && n < 2
        {
            self.error(
                &active.span,
                format!(
                    "{target:?} in `active-target` is a template, which needs `actives` above 1 \
                     (slot k starts {}); with one active host name a unit, e.g. {:?}",
                    instantiate(target, 1).replace("@1.", "@K."),
                    instantiate(target, 0).replace("@0.", ".")
                ),
            );
        }
        let m = or_default(&f.standbys, None).map_or(0, NonZeroU32::get);
        if let (Some(actives), Some(addresses)) = (actives, &f.addresses)
            && n > 1
            && addresses.value.as_ref().is_some_and(|a| !a.is_empty())
        {
            let line = self.line_of(&actives.span);
            self.error(
                &addresses.key,
                format!(
                    "`addresses` float to the group's one active host, but `actives` = {n} (line \
                     {line}) makes {n} hosts active at once, and each would claim them: give \
                     each active host addresses of its own outside promd, or use actives = 1"
                ),
            );
        }
        let Some(members) = f.members.as_ref().and_then(|m| m.value.as_ref()) else {
            return;
        };
        let count = u32::try_from(members.len()).unwrap_or(u32::MAX);
        let listed = format!(
            "`members` lists {count} node{}",
            if count == 1 { "" } else { "s" }
        );
        if let Some(actives) = actives
            && n > count
        {
            self.error(
                &actives.span,
                format!(
                    "`actives` = {n}, but {listed}: at most {count} could be active; list more \
                     members or lower `actives`"
                ),
            );
        } else if let Some(standbys) = standbys
            && n.saturating_add(m) > count
        {
            self.error(
                &standbys.span,
                format!(
                    "`actives` + `standbys` = {n} + {m}, but {listed}: every active host and \
                     every standby is a member of its own, so at most {} standby{} fit; list \
                     more members or {}",
                    count - n,
                    if count - n == 1 { "" } else { "s" },
                    // `standbys = 0` means no limit (design.md), not "none".
                    if count > n {
                        "lower `standbys`"
                    } else {
                        "leave out `standbys`: no member is left to stand by (and `standbys = 0` means no limit)"
                    }
                ),
            );
        }
    }
}
