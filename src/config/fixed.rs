//! What a reload may not change: `node`, `[store]` and `[http]`. A running promd keeps them
//! for its whole life (its store sessions and its identity in the cluster hang on them, and
//! its listeners are opened once); a file that changes them needs `systemctl restart promd`.

use std::ops::Range;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use toml::de::{DeTable, DeValue};

use super::validate::position;
use super::{AuthConfig, Config, ConfigError, HttpConfig, Problem, StoreConfig, TlsConfig};

/// What to tell an operator whose file changes what a reload cannot.
pub const RESTART_HINT: &str = "a reload cannot change it; apply it with `systemctl restart promd`";

/// The part of a configuration a running promd keeps until it restarts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fixed {
    /// This host's name in the cluster, as resolved (the host name if `node` is not set).
    pub node: String,
    /// The `[store]` section, defaults filled in.
    pub store: StoreConfig,
    /// The `[http]` section (absent from records of promds that had none: no listener).
    #[serde(default)]
    pub http: HttpConfig,
}

impl Fixed {
    /// What `config` fixes for the life of a promd.
    pub fn of(config: &Config) -> Fixed {
        Fixed {
            node: config.node.clone(),
            store: config.store.clone(),
            http: config.http.clone(),
        }
    }
}

/// Where a key of the new file was written, to point messages at it.
struct Places<'t> {
    text: &'t str,
    root: Option<DeTable<'t>>,
}

impl<'t> Places<'t> {
    fn new(text: &'t str) -> Places<'t> {
        Places {
            text,
            root: DeTable::parse(text).ok().map(|t| t.into_inner()),
        }
    }

    fn top(&self, key: &str) -> Option<Range<usize>> {
        let root = self.root.as_ref()?;
        root.iter()
            .find(|(k, _)| k.get_ref().as_ref() == key)
            .map(|(_, v)| v.span())
    }

    /// The value of `[store]`'s `key`, else the `[store]` table itself.
    fn store(&self, key: &str) -> Option<Range<usize>> {
        self.in_table("store", key)
    }

    /// The value of `[table]`'s `key`, else the table itself.
    fn in_table(&self, table: &str, key: &str) -> Option<Range<usize>> {
        let root = self.root.as_ref()?;
        let (_, store) = root.iter().find(|(k, _)| k.get_ref().as_ref() == table)?;
        let found = match store.get_ref() {
            DeValue::Table(table) => table
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == key)
                .map(|(_, v)| v.span()),
            _ => None,
        };
        found.or_else(|| Some(store.span()))
    }

    fn problem(&self, span: Option<Range<usize>>, message: String) -> Problem {
        let (line, column) = match span {
            Some(span) => {
                let (line, column) = position(self.text, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        Problem {
            line,
            column,
            message,
        }
    }
}

/// Every way in which `new` (read from `text`, named `origin` in messages) changes what the
/// running promd fixed, each at the key that changes it where the file has one; `None` if a
/// reload may apply `new`.
pub fn restart_needed(
    running: &Fixed,
    new: &Config,
    text: &str,
    origin: &str,
) -> Option<ConfigError> {
    let places = Places::new(text);
    let mut problems = Vec::new();
    if new.node != running.node {
        let (span, how) = match places.top("node") {
            Some(span) => (Some(span), format!("`node` = {:?}", new.node)),
            None => (
                None,
                format!(
                    "`node` is not set, so it is this host's name {:?},",
                    new.node
                ),
            ),
        };
        problems.push(places.problem(
            span,
            format!(
                "{how} but the running promd is node {:?}: {RESTART_HINT}",
                running.node
            ),
        ));
    }
    for (key, new_value, old_value) in store_changes(&running.store, &new.store) {
        let new_value = match new_value {
            Some(value) => format!("{key} = {value}"),
            None => format!("{key} is not set"),
        };
        let old_value = old_value.unwrap_or_else(|| "none".to_owned());
        problems.push(places.problem(
            places.store(key),
            format!("[store] {new_value} but the running promd has {old_value}: {RESTART_HINT}"),
        ));
    }
    if new.http != running.http {
        let list = |h: &HttpConfig| {
            let addrs: Vec<String> = h
                .listen
                .iter()
                .map(|a| format!("{:?}", a.to_string()))
                .collect();
            format!("[{}]", addrs.join(", "))
        };
        problems.push(places.problem(
            places.in_table("http", "listen"),
            format!(
                "[http] listen = {} but the running promd has {}: {RESTART_HINT}",
                list(&new.http),
                list(&running.http)
            ),
        ));
    }
    if problems.is_empty() {
        return None;
    }
    problems.sort_by_key(|p| (p.line.unwrap_or(0), p.column.unwrap_or(0)));
    Some(ConfigError {
        origin: origin.to_owned(),
        problems,
    })
}

/// The keys of `[store]` that differ: (key, new value, running value), values as TOML or
/// `None` where the key is not set.
fn store_changes(old: &StoreConfig, new: &StoreConfig) -> Vec<(&'static str, Setting, Setting)> {
    let duration =
        |d: &std::time::Duration| format!("{:?}", humantime::format_duration(*d).to_string());
    let path = |p: &PathBuf| format!("{:?}", p.display().to_string());
    let list = |l: &[String]| format!("{l:?}");
    let kind = |s: &StoreConfig| match s {
        StoreConfig::Etcd { .. } => "\"etcd\"".to_owned(),
        StoreConfig::Dir { .. } => "\"dir\"".to_owned(),
    };
    let mut changes = Vec::new();
    let mut differ = |key, new: Setting, old: Setting| {
        if new != old {
            changes.push((key, new, old));
        }
    };
    match (old, new) {
        (
            StoreConfig::Etcd {
                endpoints: old_endpoints,
                connect_timeout: old_timeout,
                prefix: old_prefix,
                tls: old_tls,
                auth: old_auth,
            },
            StoreConfig::Etcd {
                endpoints,
                connect_timeout,
                prefix,
                tls,
                auth,
            },
        ) => {
            differ(
                "endpoints",
                Some(list(endpoints)),
                Some(list(old_endpoints)),
            );
            differ(
                "connect-timeout",
                Some(duration(connect_timeout)),
                Some(duration(old_timeout)),
            );
            differ(
                "prefix",
                Some(format!("{prefix:?}")),
                Some(format!("{old_prefix:?}")),
            );
            let ca = |t: &Option<Box<TlsConfig>>| t.as_ref()?.ca_file.as_ref().map(path);
            let cert =
                |t: &Option<Box<TlsConfig>>| Some(path(&t.as_ref()?.client.as_ref()?.cert_file));
            let key =
                |t: &Option<Box<TlsConfig>>| Some(path(&t.as_ref()?.client.as_ref()?.key_file));
            let name = |t: &Option<Box<TlsConfig>>| {
                Some(format!("{:?}", t.as_ref()?.server_name.as_ref()?))
            };
            differ("ca-file", ca(tls), ca(old_tls));
            differ("cert-file", cert(tls), cert(old_tls));
            differ("key-file", key(tls), key(old_tls));
            differ("server-name", name(tls), name(old_tls));
            let user = |a: &Option<Box<AuthConfig>>| Some(format!("{:?}", a.as_ref()?.user));
            let file = |a: &Option<Box<AuthConfig>>| {
                Some(format!("{:?}", a.as_ref()?.password_file.to_string()))
            };
            differ("user", user(auth), user(old_auth));
            differ("password-file", file(auth), file(old_auth));
        }
        (StoreConfig::Dir { path: old_path }, StoreConfig::Dir { path: new_path }) => {
            differ("path", Some(path(new_path)), Some(path(old_path)));
        }
        _ => differ("kind", Some(kind(new)), Some(kind(old))),
    }
    changes
}

/// A key's value as TOML, `None` when it is not set.
type Setting = Option<String>;

#[cfg(test)]
mod tests {
    use super::super::parse;
    use super::*;

    const ETCD: &str =
        "node = \"a\"\n[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.1:2379\"]\n";

    fn running(text: &str) -> Fixed {
        Fixed::of(&parse(text, "old.toml").unwrap())
    }

    /// The problems `text` has against what `old` fixed, as `LINE:COLUMN: message`.
    fn changes(old: &str, text: &str) -> Vec<String> {
        let new = parse(text, "new.toml").unwrap();
        match restart_needed(&running(old), &new, text, "new.toml") {
            None => Vec::new(),
            Some(e) => e.to_string().lines().map(str::to_owned).collect(),
        }
    }

    #[test]
    fn the_same_node_and_store_need_no_restart() {
        // Groups may change; spelling out a default changes nothing either.
        let group = "[[group]]\nname = \"web\"\nactive-target = \"web.target\"\n";
        assert!(changes(ETCD, &format!("{ETCD}{group}")).is_empty());
        let spelled = format!("{ETCD}connect-timeout = \"2000ms\"\nprefix = \"/promd\"\n");
        assert!(changes(ETCD, &spelled).is_empty());
        assert!(
            changes(
                "node = \"a\"\n",
                "node = \"a\"\n[store]\npath = \"/var/lib/promd\"\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_changed_node_is_placed_at_its_value() {
        let found = changes(ETCD, &ETCD.replace("\"a\"", "\"b\""));
        assert_eq!(
            found,
            [
                "new.toml:1:8: `node` = \"b\" but the running promd is node \"a\": a reload \
                 cannot change it; apply it with `systemctl restart promd`"
            ]
        );
    }

    #[test]
    fn a_node_taken_from_the_host_name_says_so() {
        let new = Config {
            node: "host-b".to_owned(),
            ..parse("node = \"x\"\n", "new.toml").unwrap()
        };
        let err = restart_needed(&running("node = \"a\"\n"), &new, "", "new.toml").unwrap();
        assert_eq!(
            err.to_string(),
            "new.toml: `node` is not set, so it is this host's name \"host-b\", but the running \
             promd is node \"a\": a reload cannot change it; apply it with `systemctl restart promd`"
        );
    }

    #[test]
    fn each_changed_store_key_is_placed_at_its_value_or_the_section() {
        let text = "node = \"a\"\n[store]\nkind = \"etcd\"\nendpoints = [\"http://10.0.0.2:2379\"]\n\
                    connect-timeout = \"3s\"\nprefix = \"/other\"\n";
        let found = changes(ETCD, text);
        assert_eq!(found.len(), 3, "{found:#?}");
        assert!(
            found[0].starts_with(
                "new.toml:4:13: [store] endpoints = [\"http://10.0.0.2:2379\"] but the running \
                 promd has [\"http://10.0.0.1:2379\"]: a reload cannot change it"
            ),
            "{found:#?}"
        );
        assert!(
            found[1].starts_with(
                "new.toml:5:19: [store] connect-timeout = \"3s\" but the running promd has \"2s\""
            ),
            "{found:#?}"
        );
        assert!(
            found[2].starts_with(
                "new.toml:6:10: [store] prefix = \"/other\" but the running promd has \"/promd\""
            ),
            "{found:#?}"
        );
        // A default that changes is placed at the section.
        let found = changes(&format!("{ETCD}prefix = \"/x\"\n"), ETCD);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("new.toml:2:1: [store] prefix = \"/promd\""),
            "{found:#?}"
        );
    }

    #[test]
    fn a_changed_store_kind_is_one_problem() {
        let found = changes("node = \"a\"\n", ETCD);
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with(
                "new.toml:3:8: [store] kind = \"etcd\" but the running promd has \"dir\""
            ),
            "{found:#?}"
        );
        // No [store] at all: the default store, with no place to point at.
        let found = changes(ETCD, "node = \"a\"\n");
        assert!(
            found[0]
                .starts_with("new.toml: [store] kind = \"dir\" but the running promd has \"etcd\""),
            "{found:#?}"
        );
    }

    #[test]
    fn node_and_store_are_reported_together_in_file_order() {
        let found = changes(ETCD, "node = \"b\"\n[store]\npath = \"/srv/promd\"\n");
        assert_eq!(found.len(), 2, "{found:#?}");
        assert!(found[0].starts_with("new.toml:1:8: `node`"), "{found:#?}");
        assert!(
            found[1].starts_with("new.toml:2:1: [store] kind = \"dir\""),
            "{found:#?}"
        );
    }

    #[test]
    fn a_changed_listen_is_placed_at_its_value_or_the_section() {
        let found = changes(
            "node = \"a\"\n",
            "node = \"a\"\n[http]\nlisten = [\"127.0.0.1:8008\"]\n",
        );
        assert_eq!(
            found,
            [
                "new.toml:3:10: [http] listen = [\"127.0.0.1:8008\"] but the running promd has []: \
                 a reload cannot change it; apply it with `systemctl restart promd`"
            ]
        );
        let old = "node = \"a\"\n[http]\nlisten = [\"127.0.0.1:8008\"]\n";
        assert!(changes(old, old).is_empty());
        let found = changes(old, "node = \"a\"\n");
        assert_eq!(found.len(), 1, "{found:#?}");
        assert!(
            found[0].starts_with("new.toml: [http] listen = []"),
            "{found:#?}"
        );
        // A record written before [http] existed reads as no listener.
        let json = r#"{"node":"a","store":{"kind":"dir","path":"/var/lib/promd"}}"#;
        let fixed: Fixed = serde_json::from_str(json).unwrap();
        assert!(!fixed.http.enabled());
    }

    #[test]
    fn notes_say_note() {
        let new = parse("node = \"b\"\n", "new.toml").unwrap();
        let err = restart_needed(
            &running("node = \"a\"\n"),
            &new,
            "node = \"b\"\n",
            "new.toml",
        )
        .unwrap();
        assert!(
            err.notes()
                .starts_with("new.toml:1:8: note: `node` = \"b\""),
            "{}",
            err.notes()
        );
    }

    #[test]
    fn the_record_form_compares_exactly() {
        let fixed = running(&format!("{ETCD}connect-timeout = \"1500ms\"\n"));
        let json = serde_json::to_string(&fixed).unwrap();
        assert_eq!(serde_json::from_str::<Fixed>(&json).unwrap(), fixed);
        let dir = running("node = \"a\"\n[store]\npath = \"/srv/x\"\n");
        let json = serde_json::to_string(&dir).unwrap();
        assert!(json.contains("\"kind\":\"dir\""), "{json}");
        assert_eq!(serde_json::from_str::<Fixed>(&json).unwrap(), dir);
    }
}
