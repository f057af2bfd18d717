//! `promctl import-prom`: PROM / HAL `config.json` -> promd.toml and systemd units
//! (`promd::migrate`). No root needed: every generated `promd.toml` is checked by promd's own
//! validator, `promd::config::parse`.

use std::path::Path;
use std::time::Duration;

use promd::config::{self, Config, StoreConfig, valid_unit_name};
use promd::migrate::{ImportError, Migration, import_prom, write_files};

/// The sample from the issue, verbatim.
const ISSUE: &str = include_str!("fixtures/prom/prom-issue.json");
/// PROM's documented layout with every replica and the MUSIC credentials.
const PROM_FULL: &str = include_str!("fixtures/prom/prom-full.json");
/// HAL's spelling, numbers as JSON numbers, three replicas, shell syntax in replica 2.
const HAL: &str = include_str!("fixtures/prom/hal-config.json");
/// The sample the system test installs (short lease, shell syntax in replica 1).
const SYSTEM: &str = include_str!("fixtures/prom/system-config.json");

fn import(json: &str, replica: &str) -> Migration {
    import_prom(json, replica).unwrap_or_else(|e| panic!("import failed: {e}"))
}

fn file<'m>(m: &'m Migration, name: &str) -> &'m str {
    m.files
        .iter()
        .find(|(path, _)| path == Path::new(name))
        .map(|(_, text)| text.as_str())
        .unwrap_or_else(|| panic!("no {name} in {:?}", names(m)))
}

fn names(m: &Migration) -> Vec<String> {
    m.files
        .iter()
        .map(|(p, _)| p.display().to_string())
        .collect()
}

fn config(m: &Migration) -> Config {
    config::parse(file(m, "promd.toml"), "promd.toml").unwrap_or_else(|e| {
        panic!(
            "generated promd.toml is invalid:\n{e}\n{}",
            file(m, "promd.toml")
        )
    })
}

fn has_line(text: &str, line: &str) -> bool {
    text.lines().any(|l| l == line)
}

fn assert_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(has_line(text, line), "no line {line:?} in:\n{text}");
    }
}

/// The note about `key`, which must exist.
fn note<'m>(m: &'m Migration, key: &str) -> &'m str {
    let prefix = format!("`{key}`: ");
    m.notes
        .iter()
        .find(|n| n.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no note for {key} in {:#?}", m.notes))
}

fn warnings(m: &Migration) -> Vec<&str> {
    m.notes
        .iter()
        .filter(|n| n.starts_with("warning: "))
        .map(String::as_str)
        .collect()
}

fn etcd(c: &Config) -> (&[String], Duration, &str) {
    match &c.store {
        StoreConfig::Etcd {
            endpoints,
            connect_timeout,
            prefix,
            ..
        } => (endpoints, *connect_timeout, prefix),
        other => panic!("not an etcd store: {other:?}"),
    }
}

// --- the issue's PROM sample --------------------------------------------------------------------

#[test]
fn issue_sample_gives_a_valid_promd_toml() {
    let m = import(ISSUE, "0");
    assert_eq!(
        (m.node.as_str(), m.group.as_str()),
        ("votingapp-0", "votingapp")
    );
    let c = config(&m);
    assert_eq!(c.node, "votingapp-0");
    let (endpoints, connect_timeout, prefix) = etcd(&c);
    assert_eq!(endpoints, ["http://10.0.0.5:2379"]);
    assert_eq!(connect_timeout, Duration::from_secs(2));
    assert_eq!(prefix, "/promd");
    assert_eq!(c.groups.len(), 1);
    let g = &c.groups[0];
    assert_eq!(g.name, "votingapp");
    assert_eq!(g.active_target, "votingapp-active.target");
    assert_eq!(
        g.passive_target.as_deref(),
        Some("votingapp-passive.target")
    );
    assert_eq!(
        g.members.as_deref(),
        Some(&["votingapp-0".to_owned(), "votingapp-1".to_owned()][..])
    );
    assert_eq!(g.lease, Duration::from_secs(50));
    assert_eq!(g.priority, 200, "start-active-0 is true");
    assert!(!g.preempt);
    assert_eq!(g.max_restarts, 3);
    assert_eq!(g.restart_backoff, Duration::from_secs(1));

    let toml = file(&m, "promd.toml");
    // The comments say why the node is named so and that the endpoints must change.
    assert!(
        toml.contains("Each replica's node is the group name and the replica id"),
        "{toml}"
    );
    assert!(
        toml.contains("MUST now point at\n# your etcd cluster"),
        "{toml}"
    );
}

#[test]
fn issue_sample_units() {
    let m = import(ISSUE, "0");
    assert_eq!(
        names(&m),
        [
            "promd.toml",
            "votingapp-active.target",
            "votingapp-passive.target",
            "votingapp-ensure-active.service",
            "votingapp-ensure-passive.service",
        ]
    );
    for name in names(&m).iter().skip(1) {
        assert!(valid_unit_name(name), "{name}");
    }
    let active = file(&m, "votingapp-active.target");
    assert_lines(
        active,
        &[
            "[Unit]",
            "Wants=votingapp-ensure-active.service",
            "After=votingapp-ensure-active.service",
            "Conflicts=votingapp-passive.target",
        ],
    );
    let passive = file(&m, "votingapp-passive.target");
    assert_lines(
        passive,
        &[
            "Wants=votingapp-ensure-passive.service",
            "Conflicts=votingapp-active.target",
        ],
    );
    let ensure_active = file(&m, "votingapp-ensure-active.service");
    assert_lines(
        ensure_active,
        &[
            "[Service]",
            "Type=oneshot",
            "RemainAfterExit=yes",
            "EnvironmentFile=-/run/promd/votingapp.env",
            "ExecStart=/opt/app/ensureRunning.sh 0 active",
            // Giving the role up runs the passive script before another host can start.
            "ExecStop=/opt/app/ensureRunning.sh 0 passive",
            "Conflicts=votingapp-ensure-passive.service",
        ],
    );
    let ensure_passive = file(&m, "votingapp-ensure-passive.service");
    assert_lines(
        ensure_passive,
        &[
            "Type=oneshot",
            "RemainAfterExit=yes",
            "EnvironmentFile=-/run/promd/votingapp.env",
            "ExecStart=/opt/app/ensureRunning.sh 0 passive",
            "Conflicts=votingapp-ensure-active.service",
        ],
    );
    assert!(!ensure_passive.contains("ExecStop="), "{ensure_passive}");
    // Each file says what it replaces and that the scripts should become real units.
    for (name, text) in &m.files[1..] {
        assert!(text.contains("# Replaces PROM/HAL"), "{name:?}:\n{text}");
        assert!(
            text.contains("rewrite the ensure scripts as real units"),
            "{name:?}:\n{text}"
        );
        assert!(!text.contains("restartPromIfDead"), "{name:?}:\n{text}");
    }
}

#[test]
fn issue_sample_notes_give_reasons() {
    let m = import(ISSUE, "0");
    let restart = note(&m, "restart-prom-0");
    assert!(
        restart.contains("not carried over")
            && restart.contains("Restart=")
            && restart.contains("watchdog"),
        "{restart}"
    );
    let sleep = note(&m, "core-monitor-sleep-time");
    assert!(
        sleep.contains("does not") && sleep.contains("poll"),
        "{sleep}"
    );
    // Carried keys have no note.
    for key in [
        "app-name",
        "prom-timeout",
        "restart-backoff-time",
        "no-of-retry-attempts",
        "replica-id-list",
        "start-active-0",
        "ensure-active-0",
        "music-connection-timeout-ms",
    ] {
        assert!(
            !m.notes.iter().any(|n| n.starts_with(&format!("`{key}`"))),
            "{key} was carried over: {:#?}",
            m.notes
        );
    }
    // The endpoints warning, and nothing else to warn about.
    let w = warnings(&m);
    assert_eq!(w.len(), 1, "{w:#?}");
    assert!(
        w[0].contains("`music-location`") && w[0].contains("etcd"),
        "{}",
        w[0]
    );
    // The notes are in promd.toml too.
    let toml = file(&m, "promd.toml");
    for n in &m.notes {
        assert!(toml.contains(n.as_str()), "{n}");
    }
}

#[test]
fn issue_sample_replica_1_has_no_commands() {
    let err = import_prom(ISSUE, "1").unwrap_err();
    assert!(matches!(err, ImportError::BadCommand { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("`ensure-active-1`: missing"), "{msg}");
}

// --- PROM with every replica, credentials --------------------------------------------------------

#[test]
fn replicas_get_their_own_node_and_priority() {
    let m0 = import(PROM_FULL, "0");
    let m1 = import(PROM_FULL, "1");
    let (c0, c1) = (config(&m0), config(&m1));
    assert_eq!(
        (c0.node.as_str(), c1.node.as_str()),
        ("votingapp-0", "votingapp-1")
    );
    assert_eq!((c0.groups[0].priority, c1.groups[0].priority), (200, 100));
    assert_eq!(c0.groups[0].members, c1.groups[0].members);
    assert_same_group(&c0, &c1);
    assert_lines(
        file(&m1, "votingapp-ensure-active.service"),
        &[
            "ExecStart=/opt/app/ensureRunning.sh 1 active",
            "ExecStop=/opt/app/ensureRunning.sh 1 passive",
        ],
    );
}

fn assert_same_group(a: &Config, b: &Config) {
    assert_eq!(a.groups[0].name, b.groups[0].name);
    assert_eq!(a.groups[0].lease, b.groups[0].lease);
    assert_eq!(a.store, b.store);
}

#[test]
fn credentials_are_noted_and_never_copied() {
    let m = import(PROM_FULL, "0");
    for key in ["aid", "namespace", "userid", "password"] {
        let n = note(&m, key);
        assert!(
            n.contains("MUSIC credential") && n.contains("never copied"),
            "{n}"
        );
    }
    for secret in ["s3cret-Pa55", "admin", "key.pem", "ubuntu@"] {
        for (name, text) in &m.files {
            assert!(!text.contains(secret), "{secret:?} in {}", name.display());
        }
        assert!(
            !m.notes.iter().any(|n| n.contains(secret)),
            "{secret:?} in the notes"
        );
    }
    assert!(note(&m, "restart-prom-1").contains("Restart="));
}

// --- HAL's spelling ------------------------------------------------------------------------------

#[test]
fn hal_spelling_and_json_numbers() {
    let m = import(HAL, "1");
    let c = config(&m);
    assert_eq!(c.node, "billing-core-1");
    let (endpoints, connect_timeout, _) = etcd(&c);
    // The MUSIC port and path are dropped; a repeated host is listed once.
    assert_eq!(
        endpoints,
        ["http://10.1.0.1:2379", "http://music-2.example:2379"]
    );
    assert_eq!(connect_timeout, Duration::from_millis(1500));
    let g = &c.groups[0];
    assert_eq!(g.name, "billing-core");
    assert_eq!(g.active_target, "billing-core-active.target");
    assert_eq!(
        g.members.as_deref(),
        Some(
            &[
                "billing-core-0".to_owned(),
                "billing-core-1".to_owned(),
                "billing-core-2".to_owned()
            ][..]
        )
    );
    assert_eq!(g.lease, Duration::from_secs(15));
    assert_eq!(g.priority, 200, "start-as-active-1 is true");
    assert_eq!(g.max_restarts, 5);
    assert_eq!(g.restart_backoff, Duration::from_millis(2500));
    assert_eq!(config(&import(HAL, "0")).groups[0].priority, 100);

    for key in ["restart-hal-0", "restart-hal-1", "restart-hal-2"] {
        assert!(note(&m, key).contains("Restart="), "{key}");
    }
    assert!(note(&m, "music-version").contains("etcd"));
    assert_eq!(
        note(&m, "logLevel"),
        "`logLevel`: unknown key, not carried over"
    );
    for key in [
        "appName",
        "timeout",
        "noOfRetryAttempts",
        "replicaIdList",
        "musicLocation",
    ] {
        assert!(
            !m.notes.iter().any(|n| n.starts_with(&format!("`{key}`"))),
            "{key}"
        );
    }
}

#[test]
fn shell_syntax_runs_through_sh_with_systemd_quoting() {
    let m = import(HAL, "2");
    let unit = file(&m, "billing-core-ensure-active.service");
    assert_lines(
        unit,
        &[
            r"ExecStart=/bin/sh -c '/opt/billing/ensure.sh 2 active 2>&1 | logger -t \'billing ensure\''",
            "ExecStop=/bin/sh -c '/opt/billing/ensure.sh 2 passive >> /var/log/billing/ensure.log 2>&1'",
        ],
    );
    let w = warnings(&m);
    assert!(
        w.iter()
            .any(|w| w.contains("`ensure-active-2` uses shell syntax") && w.contains("/bin/sh -c")),
        "{w:#?}"
    );

    // `$` and `%` reach the shell, not systemd's expansion of variables and specifiers.
    let m = import(SYSTEM, "1");
    assert_lines(
        file(&m, "votingapp-ensure-active.service"),
        &[
            r#"ExecStart=/bin/sh -c '/opt/app/ensureRunning.sh 1 active && t=$$(date +%%s) && echo "active at $$t as $${PROMD_NODE:-none}" >> /run/votingapp/events.log'"#,
            r#"ExecStop=/bin/sh -c '/opt/app/ensureRunning.sh 1 passive >> "/run/votingapp-passive it\'s.log" 2>&1'"#,
        ],
    );
    // Replica 0 of the same file needs no shell.
    let m0 = import(SYSTEM, "0");
    assert_lines(
        file(&m0, "votingapp-ensure-passive.service"),
        &["ExecStart=/opt/app/ensureRunning.sh 0 passive"],
    );
}

#[test]
fn quoted_arguments_without_shell_syntax() {
    let json = r#"{"app-name": "a", "replica-id-list": ["0"], "music-location": ["m"],
        "ensure-active-0": "/opt/x.sh 'two words' \"100%\" ''",
        "ensure-passive-0": "ensure.sh passive"}"#;
    let m = import(json, "0");
    let unit = file(&m, "a-ensure-active.service");
    assert_lines(
        unit,
        &[
            r#"ExecStart=/opt/x.sh "two words" 100%% """#,
            "ExecStop=ensure.sh passive",
        ],
    );
    let w = warnings(&m);
    assert!(
        w.iter().any(|w| w.contains("`ensure-active-0` has quotes")),
        "{w:#?}"
    );
    assert!(
        w.iter()
            .any(|w| w.contains("`ensure-passive-0` runs a program by its name only")),
        "{w:#?}"
    );
    config(&m);
}

#[test]
fn a_short_lease_needs_no_watchdog_drop_in() {
    let m = import(SYSTEM, "0");
    let c = config(&m);
    assert_eq!(c.groups[0].lease, Duration::from_secs(2));
    assert_eq!(etcd(&c).1, Duration::from_millis(500));
    // promd fits its own watchdog to the lease under the shipped WatchdogSec=3s: nothing to
    // add, so nothing to say (an earlier version told operators to add a drop-in).
    assert!(
        !warnings(&m).iter().any(|w| w.contains("WatchdogSec")),
        "{:#?}",
        warnings(&m)
    );
}

// --- errors --------------------------------------------------------------------------------------

#[test]
fn malformed_json_names_line_and_column() {
    let json =
        "{ \"app-name\": \"x\",\n  \"prom-timeout\": \"5000\"\n  \"replica-id-list\": [\"0\"] }";
    let err = import_prom(json, "0").unwrap_err();
    match &err {
        ImportError::Json { line, column, .. } => assert_eq!((*line, *column), (3, 3), "{err}"),
        other => panic!("{other:?}"),
    }
    let msg = err.to_string();
    assert!(
        msg.starts_with("malformed JSON at line 3, column 3: expected"),
        "{msg}"
    );

    let err = import_prom("{\"app-name\": \"x\",}", "0").unwrap_err();
    assert!(err.to_string().contains("line 1, column 18"), "{err}");
    let err = import_prom("", "0").unwrap_err();
    assert!(
        err.to_string().starts_with("malformed JSON at line 1"),
        "{err}"
    );
    let err = import_prom("[1, 2]", "0").unwrap_err();
    assert!(
        err.to_string()
            .starts_with("the configuration must be a JSON object")
            && err.to_string().ends_with("found an array"),
        "{err}"
    );
}

#[test]
fn missing_keys() {
    let err = import_prom(r#"{"app-name": "x", "ensure-active-0": "/a"}"#, "0").unwrap_err();
    assert!(
        matches!(
            err,
            ImportError::Missing {
                key: "replica-id-list",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("\"replicaIdList\" (HAL)"), "{err}");
    let err = import_prom(r#"{"replica-id-list": ["0"]}"#, "0").unwrap_err();
    assert!(
        err.to_string().starts_with("`app-name` is missing"),
        "{err}"
    );
    let err = import_prom(
        r#"{"app-name": "x", "replica-id-list": ["0"], "ensure-active-0": "/a"}"#,
        "0",
    )
    .unwrap_err();
    assert!(
        err.to_string().starts_with("`ensure-passive-0`: missing"),
        "{err}"
    );
}

fn with_ids(ids: &str) -> String {
    format!(
        r#"{{"app-name": "x", "replica-id-list": {ids}, "ensure-active-0": "/a", "ensure-passive-0": "/p",
            "ensure-active-1": "/a", "ensure-passive-1": "/p", "ensure-active-2": "/a", "ensure-passive-2": "/p"}}"#
    )
}

#[test]
fn replica_ids_must_be_0_to_n_minus_1() {
    for (ids, expected) in [
        (
            r#"["1", "2"]"#,
            "with 2 replicas the ids are 0 to 1, but 2 is listed and 0 is not",
        ),
        (r#"["0", "2", "3"]"#, "but 3 is listed and 1 is not"),
        (r#"["0", "0"]"#, "0 appears twice"),
        (r#"["0", "x"]"#, "\"x\" is not a whole number"),
        (r#"["0", -1]"#, "-1 is not a whole number"),
        ("[]", "the list is empty"),
    ] {
        let err = import_prom(&with_ids(ids), "0").unwrap_err();
        assert!(
            matches!(err, ImportError::ReplicaIds { .. }),
            "{ids}: {err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with("`replica-id-list`: the replica ids must be 0 to N-1")
                && msg.ends_with(expected),
            "{ids}: {msg}"
        );
    }
    // Any order, numbers or strings, or HAL's comma-separated string.
    for ids in [r#"["2", "0", "1"]"#, "[1, 0, 2]", r#""0, 1, 2""#] {
        let c = config(&import(&with_ids(ids), "2"));
        assert_eq!(c.groups[0].members.as_ref().map(Vec::len), Some(3), "{ids}");
    }
    let err = import_prom(&with_ids(r#"{"0": 1}"#), "0").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`replica-id-list` must be an array, found an object"
    );
}

#[test]
fn replica_must_be_in_the_list() {
    let err = import_prom(&with_ids(r#"["0", "1"]"#), "2").unwrap_err();
    assert!(
        matches!(err, ImportError::UnknownReplica { replica: 2, .. }),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "replica 2 is not in `replica-id-list` (the ids are 0 to 1)"
    );
    let err = import_prom(&with_ids(r#"["0", "1"]"#), "one").unwrap_err();
    assert_eq!(
        err.to_string(),
        "--replica \"one\" is not a replica id: give a whole number such as 0"
    );
}

fn issue_with(key: &str, value: &str) -> String {
    let mut map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(ISSUE).unwrap();
    map.insert(key.to_owned(), serde_json::from_str(value).unwrap());
    serde_json::to_string(&map).unwrap()
}

#[test]
fn bad_numbers_and_booleans() {
    for (key, value, expected) in [
        (
            "prom-timeout",
            r#""50s""#,
            "`prom-timeout` = \"50s\": must be a whole number",
        ),
        (
            "prom-timeout",
            "-5",
            "`prom-timeout` = -5: must not be negative",
        ),
        (
            "prom-timeout",
            r#""-5""#,
            "`prom-timeout` = \"-5\": must not be negative",
        ),
        (
            "prom-timeout",
            "2.5",
            "`prom-timeout` = 2.5: must be a whole number",
        ),
        (
            "prom-timeout",
            "[]",
            "`prom-timeout` must be a number or a string of digits, found an array",
        ),
        (
            "prom-timeout",
            r#""500""#,
            "`prom-timeout` = 500: promd's lease must be at least 1000 ms (1s)",
        ),
        (
            "no-of-retry-attempts",
            "99999999999",
            "`no-of-retry-attempts` = 99999999999: is out of range",
        ),
        (
            "start-active-0",
            r#""yes""#,
            "`start-active-0` = \"yes\": must be \"true\" or \"false\"",
        ),
        (
            "music-location",
            r#"["10.0.0.5", "not a host"]"#,
            "`music-location` = \"not a host\": is not a host name or an IP address",
        ),
        (
            "music-location",
            "[]",
            "`music-location` = []: lists no host",
        ),
        (
            "app-name",
            "7",
            "`app-name` must be a string, found a number",
        ),
    ] {
        let err = import_prom(&issue_with(key, value), "0").unwrap_err();
        assert!(
            err.to_string().starts_with(expected),
            "{key} = {value}: {err}"
        );
    }
    // Whole numbers written as floats, and booleans in any case, are fine.
    let c = config(&import(&issue_with("prom-timeout", "3000.0"), "0"));
    assert_eq!(c.groups[0].lease, Duration::from_secs(3));
    let c = config(&import(&issue_with("start-active-0", r#""FALSE""#), "0"));
    assert_eq!(c.groups[0].priority, 100);
}

#[test]
fn two_spellings_of_one_key() {
    let err = import_prom(&issue_with("appName", r#""other""#), "0").unwrap_err();
    assert_eq!(
        err.to_string(),
        "`app-name` and `appName` are the same setting with different values: keep one"
    );
    // The same value twice is fine.
    config(&import(&issue_with("appName", r#""votingApp""#), "0"));
}

#[test]
fn optional_keys_fall_back_to_promd_defaults_with_a_warning() {
    let json = r#"{"app-name": "x", "replica-id-list": ["0"], "ensure-active-0": "/a", "ensure-passive-0": "/p"}"#;
    let m = import(json, "0");
    let c = config(&m);
    assert_eq!(etcd(&c).0, ["http://localhost:2379"]);
    assert_eq!(c.groups[0].lease, Duration::from_secs(10));
    let w = warnings(&m).join("\n");
    assert!(
        w.contains("no `prom-timeout`") && w.contains("no `music-location`"),
        "{w}"
    );
    // A zero connection timeout is not carried over (promd needs one).
    let m = import(&issue_with("music-connection-timeout-ms", "0"), "0");
    assert!(note(&m, "music-connection-timeout-ms").contains("2s"));
    assert_eq!(etcd(&config(&m)).1, Duration::from_secs(2));
}

#[test]
fn odd_keys_and_names_cannot_break_the_files() {
    // An app name with a newline and a TOML line in it; a key with a newline.
    let json = r#"{"app-name": "Ünïcode App\n[store]\nkind = \"dir\"", "replica-id-list": ["0"],
        "ensure-active-0": "/a", "ensure-passive-0": "/p", "bad\nkey = 1": "x",
        "ensure-active-7": "/a"}"#;
    let m = import(json, "0");
    let c = config(&m);
    assert_eq!(c.groups[0].name, "n-code-app-store-kind-dir");
    assert!(matches!(c.store, StoreConfig::Etcd { .. }));
    assert!(note(&m, "ensure-active-7").contains("replica 7 is not in `replica-id-list`"));
    assert!(
        m.notes
            .iter()
            .any(|n| n == "\"bad\\nkey = 1\": unknown key, not carried over"),
        "{:#?}",
        m.notes
    );
    for (name, text) in &m.files {
        assert!(!text.contains("\nkind = \"dir\""), "{}", name.display());
    }
    // Nothing usable in the name: the group is "app".
    let m = import(&issue_with("app-name", r#""日本""#), "0");
    assert_eq!((m.group.as_str(), m.node.as_str()), ("app", "app-0"));
    assert!(
        warnings(&m)
            .iter()
            .any(|w| w.contains("the group is \"app\""))
    );
    config(&m);
}

#[test]
fn write_files_never_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let m = import(ISSUE, "0");
    let written = write_files(&out, &m).unwrap();
    assert_eq!(written.len(), 5);
    for (path, (_, text)) in written.iter().zip(&m.files) {
        assert_eq!(&std::fs::read_to_string(path).unwrap(), text);
    }
    config::load(&out.join("promd.toml")).unwrap();

    // Again: refused before anything is written.
    std::fs::remove_file(out.join("votingapp-active.target")).unwrap();
    let err = write_files(&out, &m).unwrap_err();
    assert!(
        err.to_string().ends_with(
            "promd.toml: exists already; nothing was written (remove it or choose another --out)"
        ),
        "{err}"
    );
    assert!(!out.join("votingapp-active.target").exists());
}
