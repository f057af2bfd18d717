//! `promctl watch`: one line per role change, as it happens.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use zbus::Connection;

use super::bus::*;
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

pub(super) async fn watch() -> Result<(), Failure> {
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
    let roles_rule = MatchRule::builder()
        .msg_type(MessageType::Signal)
        .sender(SERVICE)
        .interface(GROUP_IFACE)
        .member("RoleChanged")
        .path_namespace(GROUP_PATH_NS)
        .build()
        .map_err(bus_err)?;
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
                let Some(signal) = RoleChanged::from_message(msg) else { continue };
                let Ok(args) = signal.args() else {
                    eprintln!("promctl: skipped a RoleChanged signal with unexpected arguments");
                    continue;
                };
                let path = signal
                    .message()
                    .header()
                    .path()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let group = names.lookup(&conn, &path).await;
                let line = watch_line(at, &group, args.old, args.new, args.term, args.reason);
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
}
