//! `promctl watch`: one line per role change, as it happens.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use promd::agent::MemberView;
use zbus::{Connection, DeserializeDict, Type};

use super::bus::*;
use super::status::MemberStatus;
use super::*;

/// A name lookup inside `watch` must not hold up the lines behind it for long.
pub(super) const WATCH_LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Room for a burst of role changes while `watch` waits for a name lookup: a full queue stops
/// zbus reading the socket, the lookup's reply included.
pub(super) const WATCH_QUEUE: NonZeroUsize = match NonZeroUsize::new(1024) {
    Some(n) => n,
    None => NonZeroUsize::MIN,
};

/// One line of `watch`.
pub(super) fn watch_line(
    at: SystemTime,
    group: &str,
    old: &str,
    new: &str,
    term: u64,
    reason: &str,
) -> String {
    let stamp = humantime::format_rfc3339_millis(at);
    let head = format!("{stamp} {group} {old} -> {new} term {term}");
    if reason.is_empty() {
        head
    } else {
        format!("{head}: {reason}")
    }
}

/// The properties a `PropertiesChanged` of `org.promd1.Group` may carry; the ones it did not
/// carry (and any this promctl does not know) are left out.
#[derive(Debug, Clone, Default, PartialEq, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub(super) struct ChangedProps {
    pub(super) role: Option<String>,
    pub(super) leader: Option<String>,
    pub(super) term: Option<u64>,
    pub(super) priority: Option<i32>,
    pub(super) healthy: Option<bool>,
    pub(super) maintenance: Option<bool>,
    pub(super) failures: Option<u32>,
    pub(super) since: Option<u64>,
    pub(super) members: Option<Vec<(String, String, i32, bool)>>,
    pub(super) eligible: Option<bool>,
    pub(super) ineligible: Option<String>,
    pub(super) member_states: Option<Vec<MemberState>>,
}

/// A JSON object with its keys in the order given, from values already in JSON.
fn json_object(fields: Vec<(&str, String)>) -> String {
    let parts: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{}:{v}", serde_json::Value::from(k)))
        .collect();
    format!("{{{}}}", parts.join(","))
}

/// `value` in JSON (its fields in their declared order).
fn json<T: serde::Serialize>(value: T) -> String {
    // Strings, numbers and plain structs always encode.
    serde_json::to_string(&value).unwrap_or_default()
}

fn stamp(at: SystemTime) -> String {
    json(humantime::format_rfc3339_millis(at).to_string())
}

/// A member as a promd before `MemberStates` says it (`Members`).
#[derive(serde::Serialize)]
struct MemberSummary {
    node: String,
    role: String,
    priority: i32,
    healthy: bool,
}

/// One line of `watch --json` for a `RoleChanged`:
/// `{"time":…,"group":…,"event":"role-changed","old":…,"new":…,"term":…,"reason":…}`.
pub(super) fn role_json(
    at: SystemTime,
    group: &str,
    old: &str,
    new: &str,
    term: u64,
    reason: &str,
) -> String {
    json_object(vec![
        ("time", stamp(at)),
        ("group", json(group)),
        ("event", json("role-changed")),
        ("old", json(old)),
        ("new", json(new)),
        ("term", json(term)),
        ("reason", json(reason)),
    ])
}

/// One line of `watch --json` for a `PropertiesChanged`:
/// `{"time":…,"group":…,"event":"properties-changed", FIELDS}`, the fields named and
/// shaped as in the status document, in its order; `None` if none of them changed.
pub(super) fn properties_json(at: SystemTime, group: &str, p: ChangedProps) -> Option<String> {
    let mut fields: Vec<(&str, String)> = Vec::new();
    let mut put = |key, value: Option<String>| {
        if let Some(v) = value {
            fields.push((key, v));
        }
    };
    put("role", p.role.map(json));
    put("leader", p.leader.map(json));
    put("term", p.term.map(json));
    put("priority", p.priority.map(json));
    put("healthy", p.healthy.map(json));
    put("maintenance", p.maintenance.map(json));
    put("failures", p.failures.map(json));
    put("since_usec", p.since.map(json));
    let members = match (p.member_states, p.members) {
        (Some(states), _) => Some(json(
            states
                .into_iter()
                .map(|s| MemberStatus::from(&MemberView::of_state(s)))
                .collect::<Vec<_>>(),
        )),
        (None, Some(members)) => Some(json(
            members
                .into_iter()
                .map(|(node, role, priority, healthy)| MemberSummary {
                    node,
                    role,
                    priority,
                    healthy,
                })
                .collect::<Vec<_>>(),
        )),
        (None, None) => None,
    };
    put("members", members);
    put("eligible", p.eligible.map(json));
    put("why", p.ineligible.map(json));
    if fields.is_empty() {
        return None;
    }
    let mut line = vec![
        ("time", stamp(at)),
        ("group", json(group)),
        ("event", json("properties-changed")),
    ];
    line.extend(fields);
    Some(json_object(line))
}

/// The group name in a group object path, for when `ListGroups` cannot say: the last element,
/// with systemd-style `_XX` hex escapes decoded (names may hold `-`, paths may not).
pub(super) fn name_from_path(path: &str) -> String {
    let last = path.rsplit('/').next().unwrap_or(path);
    let bytes = last.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'_', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| last.to_owned())
}

/// Group names by object path, filled from `ListGroups` when a path is first seen.
pub(super) struct Names {
    pub(super) by_path: HashMap<String, String>,
}

impl Names {
    pub(super) async fn lookup(&mut self, conn: &Connection, path: &str) -> String {
        if let Some(name) = self.by_path.get(path) {
            return name.clone();
        }
        let listed = async {
            let proxy = ManagerProxy::builder(conn)
                .cache_properties(CacheProperties::No)
                .build()
                .await?;
            proxy.list_groups().await
        };
        if let Ok(Ok(groups)) = tokio::time::timeout(WATCH_LOOKUP_TIMEOUT, listed).await {
            for g in groups {
                self.by_path.insert(g.4.as_str().to_owned(), g.0);
            }
        }
        match self.by_path.get(path) {
            Some(name) => name.clone(),
            None => name_from_path(path),
        }
    }
}

/// `promctl watch`: a line per role change; with `json`, a JSON object per line for every
/// role change and every property change.
pub(super) async fn watch(json: bool) -> Result<(), Failure> {
    use tokio::signal::unix::{SignalKind, signal};

    let sig = |kind| signal(kind).map_err(|e| Failure(format!("cannot handle signals: {e}")));
    let mut sigint = sig(SignalKind::interrupt())?;
    let mut sigterm = sig(SignalKind::terminate())?;

    let conn = connect(READ_TIMEOUT).await?;
    let bus_err = |e: zbus::Error| Failure(format!("cannot subscribe on the D-Bus: {e}"));

    // One stream for every group's RoleChanged keeps the lines in the order the bus delivers
    // them. `sender` is the well-known name: the bus (dbus-daemon, dbus-broker) matches it
    // against whoever owns it at the time, so the rule survives promd restarts and nobody else
    // can inject role changes.
    // With --json, every signal of the group objects (RoleChanged and PropertiesChanged) in
    // one stream, for the same reason.
    let rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SERVICE)
        .path_namespace(GROUP_PATH_NS);
    let rule = if json {
        rule
    } else {
        rule.interface(GROUP_IFACE).member("RoleChanged")
    };
    let roles_rule = rule.build().map_err(bus_err)?;
    let mut roles = MessageStream::for_match_rule(roles_rule, &conn, Some(WATCH_QUEUE))
        .await
        .map_err(bus_err)?;
    let owner_rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender("org.freedesktop.DBus")
        .interface("org.freedesktop.DBus")
        .member("NameOwnerChanged")
        .add_arg(SERVICE)
        .build()
        .map_err(bus_err)?;
    let mut owners = MessageStream::for_match_rule(owner_rule, &conn, None)
        .await
        .map_err(bus_err)?;

    // Asked only after both subscriptions are in place, so that no start is missed in between.
    let dbus = zbus::fdo::DBusProxy::builder(&conn)
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(bus_err)?;
    let service = BusName::try_from(SERVICE).map_err(bus_err)?;
    let running = dbus
        .name_has_owner(service)
        .await
        .map_err(|e| Failure(format!("cannot ask the D-Bus who runs {SERVICE}: {e}")))?;
    if !running {
        eprintln!("promctl: promd is not running; waiting for it to start");
    }
    // Subscribed: from here on no role change is missed (scripts and tests wait for this).
    eprintln!("promctl: watching role changes; Ctrl-C ends");

    let mut names = Names {
        by_path: HashMap::new(),
    };
    loop {
        tokio::select! {
            _ = sigint.recv() => return Ok(()),
            _ = sigterm.recv() => return Ok(()),
            msg = roles.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        eprintln!("promctl: skipped a bad message: {e}");
                        continue;
                    }
                    None => return Err(Failure("lost the connection to the D-Bus".to_owned())),
                };
                let at = SystemTime::now();
                let path = msg
                    .header()
                    .path()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let line = if let Some(signal) = RoleChanged::from_message(msg.clone()) {
                    let Ok(args) = signal.args() else {
                        eprintln!("promctl: skipped a RoleChanged signal with unexpected arguments");
                        continue;
                    };
                    let group = names.lookup(&conn, &path).await;
                    if json {
                        role_json(at, &group, args.old, args.new, args.term, args.reason)
                    } else {
                        watch_line(at, &group, args.old, args.new, args.term, args.reason)
                    }
                } else if json && msg.header().member().is_some_and(|m| m == "PropertiesChanged") {
                    let body = msg.body();
                    let Ok((iface, changed, _)) =
                        body.deserialize::<(String, ChangedProps, Vec<String>)>()
                    else {
                        eprintln!("promctl: skipped a PropertiesChanged signal with unexpected arguments");
                        continue;
                    };
                    if iface != GROUP_IFACE {
                        continue;
                    }
                    let group = names.lookup(&conn, &path).await;
                    match properties_json(at, &group, changed) {
                        Some(line) => line,
                        None => continue,
                    }
                } else {
                    continue;
                };
                let mut out = io::stdout().lock();
                // Flushed line by line: tests and operators read through a pipe.
                if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
                    return match e.kind() {
                        io::ErrorKind::BrokenPipe => Ok(()),
                        _ => Err(Failure(format!("cannot write to stdout: {e}"))),
                    };
                }
            }
            msg = owners.next() => {
                let msg = match msg {
                    Some(Ok(msg)) => msg,
                    Some(Err(_)) => continue,
                    None => return Err(Failure("lost the connection to the D-Bus".to_owned())),
                };
                let Some(changed) = zbus::fdo::NameOwnerChanged::from_message(msg) else { continue };
                let Ok(args) = changed.args() else { continue };
                if args.new_owner().is_none() {
                    // A restarted promd may have another configuration: forget the names.
                    names.by_path.clear();
                    eprintln!("promctl: promd stopped; waiting for it to start again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watch_lines() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_813_445_123_456);
        assert_eq!(
            watch_line(at, "web", "passive", "promoting", 42, "won the election"),
            "2026-11-27T21:04:05.123Z web passive -> promoting term 42: won the election"
        );
        assert_eq!(
            watch_line(SystemTime::UNIX_EPOCH, "web", "starting", "passive", 0, ""),
            "1970-01-01T00:00:00.000Z web starting -> passive term 0"
        );
    }

    #[test]
    fn group_names_from_paths() {
        assert_eq!(name_from_path("/org/promd1/group/web"), "web");
        assert_eq!(name_from_path("/org/promd1/group/web_2dfront"), "web-front");
        assert_eq!(name_from_path("/org/promd1/group/a_5fb"), "a_b");
        // Not an escape: kept as it is.
        assert_eq!(name_from_path("/org/promd1/group/a_b"), "a_b");
        assert_eq!(name_from_path("/org/promd1/group/x_"), "x_");
    }
    /// `watch --json`: one object per line, no newline inside, keys in a fixed order.
    #[test]
    fn watch_json_role_line_shape() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_micros(1_795_813_445_123_456);
        let line = role_json(at, "web", "passive", "promoting", 42, "won the election");
        assert_eq!(
            line,
            r#"{"time":"2026-11-27T21:04:05.123Z","group":"web","event":"role-changed","old":"passive","new":"promoting","term":42,"reason":"won the election"}"#
        );
        let quoted = role_json(at, "web", "active", "demoting", 1, "say \"hi\"\n");
        assert!(!quoted.contains('\n'), "{quoted}");
        let v: serde_json::Value = match serde_json::from_str(&quoted) {
            Ok(v) => v,
            Err(e) => panic!("{e}: {quoted}"),
        };
        assert_eq!(v["reason"], "say \"hi\"\n");
    }

    #[test]
    fn watch_json_properties_line_shape() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_millis(1_500);
        assert_eq!(properties_json(at, "web", ChangedProps::default()), None);
        let changed = ChangedProps {
            role: Some("active".into()),
            term: Some(43),
            since: Some(7),
            members: Some(vec![("n1".into(), "active".into(), 100, true)]),
            eligible: Some(false),
            ineligible: Some("not-passive".into()),
            member_states: Some(vec![(
                "n1".into(),
                "active".into(),
                100,
                true,
                false,
                "not-passive".into(),
                0,
                7,
                43,
            )]),
            ..ChangedProps::default()
        };
        let line = properties_json(at, "web", changed);
        assert_eq!(
            line.as_deref(),
            Some(concat!(
                r#"{"time":"1970-01-01T00:00:01.500Z","group":"web","event":"properties-changed","#,
                r#""role":"active","term":43,"since_usec":7,"members":[{"node":"n1","role":"active","#,
                r#""priority":100,"healthy":true,"eligible":false,"why":"not-passive","failures":0,"#,
                r#""since_usec":7,"term":43}],"eligible":false,"why":"not-passive"}"#
            ))
        );
        // A promd before MemberStates: Members as the members.
        let old = ChangedProps {
            members: Some(vec![("n2".into(), "passive".into(), 90, false)]),
            ..ChangedProps::default()
        };
        assert_eq!(
            properties_json(at, "web", old).as_deref(),
            Some(
                r#"{"time":"1970-01-01T00:00:01.500Z","group":"web","event":"properties-changed","members":[{"node":"n2","role":"passive","priority":90,"healthy":false}]}"#
            )
        );
    }

    /// The signal's dictionary decodes into [`ChangedProps`], unknown properties ignored.
    #[test]
    fn changed_props_decode_from_a_properties_changed_body() {
        use std::collections::HashMap;
        use zbus::Variant;
        use zbus::wire::{LE, serialized::Context};
        let mut dict: HashMap<&str, Variant<'_>> = HashMap::new();
        dict.insert("Role", Variant::from("passive"));
        dict.insert("Eligible", Variant::from(true));
        dict.insert("FromTheFuture", Variant::from(3u8));
        let body = (GROUP_IFACE, dict, Vec::<String>::new());
        let data = match zbus::wire::to_bytes(Context::new(LE, 0), &body) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let (iface, p, _): (String, ChangedProps, Vec<String>) = match data.deserialize() {
            Ok((p, _)) => p,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(iface, GROUP_IFACE);
        assert_eq!(
            p,
            ChangedProps {
                role: Some("passive".into()),
                eligible: Some(true),
                ..ChangedProps::default()
            }
        );
    }
}
