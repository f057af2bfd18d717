//! promd's own connections to a host's system bus, as dbus-daemon sees them
//! (`org.freedesktop.DBus.Debug.Stats`): which they are and the match rules they hold.
//! dbus-daemon allows a connection 512 match rules, so promd's must not grow with its groups.

use super::hosts::Host;

/// Run `f` with a connection of this process to the host's system bus (as root), on a
/// runtime of its own.
pub fn with_host_bus<T>(h: &Host, f: impl AsyncFnOnce(zbus::Connection) -> T) -> T {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(h.bus_address().as_str())
            .build()
            .await
            .expect("connect to the host's bus");
        f(conn).await
    })
}

/// `busctl --json=short ARGS` on the host, parsed.
pub fn busctl_json(h: &Host, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["busctl", "--json=short"];
    full.extend_from_slice(args);
    let out = h.run_ok(&full);
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("busctl {args:?}: {e}: {out}"))
}

/// promd's bus connections (unique names): one for systemd, one for org.promd1.
pub fn promd_connections(h: &Host) -> Vec<String> {
    let pid = h.pid_on_machine("promd").expect("promd runs");
    let pid = h.pid_inside(pid).expect("promd's pid inside").to_string();
    let list = h.run_ok(&["busctl", "list", "--unique", "--no-legend", "--no-pager"]);
    let names: Vec<String> = list
        .lines()
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let (name, owner) = (fields.next()?, fields.next()?);
            (owner == pid).then(|| name.to_string())
        })
        .collect();
    assert!(
        !names.is_empty(),
        "no bus connection of promd ({pid}):\n{list}"
    );
    names
}

/// dbus-daemon's `MatchRules` count for connection `name`.
pub fn match_rule_count(h: &Host, name: &str) -> u64 {
    let stats = busctl_json(
        h,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.Debug.Stats",
            "GetConnectionStats",
            "s",
            name,
        ],
    );
    stats["data"][0]["MatchRules"]["data"]
        .as_u64()
        .unwrap_or_else(|| panic!("no MatchRules for {name}: {stats}"))
}

/// Every match rule of the connections `names`, as dbus-daemon holds them, sorted.
pub fn match_rules(h: &Host, names: &[String]) -> Vec<String> {
    let all = busctl_json(
        h,
        &[
            "call",
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.Debug.Stats",
            "GetAllMatchRules",
        ],
    );
    let mut rules: Vec<String> = names
        .iter()
        .filter_map(|n| all["data"][0][n.as_str()].as_array())
        .flatten()
        .filter_map(|r| r.as_str().map(str::to_string))
        .collect();
    rules.sort();
    rules
}

/// Every match rule of promd's connections, sorted.
pub fn promd_match_rules(h: &Host) -> Vec<String> {
    match_rules(h, &promd_connections(h))
}

/// The argv of `busctl call` of a `org.promd1.Manager` method on `group`, as an operator
/// types it, waiting at most `timeout` (busctl's syntax, e.g. `"60"`) for the answer.
pub fn manager_call_argv<'a>(method: &'a str, group: &'a str, timeout: &'a str) -> Vec<String> {
    let mut argv = vec![
        "busctl".to_string(),
        format!("--timeout={timeout}"),
        "call".into(),
    ];
    argv.extend(
        [
            "org.promd1",
            "/org/promd1",
            "org.promd1.Manager",
            method,
            "s",
            group,
        ]
        .map(String::from),
    );
    argv
}
