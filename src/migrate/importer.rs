//! The conversion: reads the settings and the replica ids and builds the `Migration`.

use super::commands::*;
use super::keys::*;
use super::names::*;
use super::units::*;
use std::collections::BTreeSet;

use serde_json::Value;

use super::*;

/// The settings read from the file, with the keys they came from.
pub(super) struct Importer<'j> {
    pub(super) keys: &'j Keys<'j>,
    pub(super) replica: u64,
    pub(super) app: &'j str,
    pub(super) app_key: &'j str,
    pub(super) group: String,
    pub(super) ids: Vec<u64>,
    pub(super) ids_key: &'j str,
    /// Replica ids whose `start-active-i` is true.
    pub(super) start_active: BTreeSet<u64>,
    pub(super) notes: Vec<String>,
    pub(super) warnings: Vec<String>,
}

impl<'j> Importer<'j> {
    pub(super) fn new(keys: &'j Keys<'j>, replica_arg: &str) -> Result<Importer<'j>, ImportError> {
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
    pub(super) fn get(&self, canonical: &str) -> Option<(&'j str, &'j Value)> {
        self.keys.get(canonical)
    }

    pub(super) fn command(
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

    pub(super) fn run(mut self) -> Result<Migration, ImportError> {
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
    pub(super) fn settings(&mut self) -> Result<Settings<'j>, ImportError> {
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
            // No note on the watchdog: promd lowers its own (WATCHDOG_USEC=) to fit any lease
            // of 1s or more under the shipped WatchdogSec=3s.
            s.lease = Some((key, ms));
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
}

/// Settings taken over, each with the key (as written) it came from.
#[derive(Default)]
pub(super) struct Settings<'j> {
    pub(super) lease: Option<(&'j str, u64)>,
    pub(super) retries: Option<(&'j str, u32)>,
    pub(super) backoff: Option<(&'j str, u64)>,
    pub(super) connect_timeout: Option<(&'j str, u64)>,
    pub(super) endpoints: (Option<&'j str>, Vec<String>),
}

/// The replica ids: whole numbers 0 to N-1, each once, in any order.
pub(super) fn replica_ids(key: &str, value: &Value) -> Result<Vec<u64>, ImportError> {
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
