//! Tests of `promd.toml` parsing and validation.

use super::validate::position;
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
        addresses: Vec::new(),
        actives: 1,
        standbys: None,
        slot: None,
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
            tls: None,
            auth: None,
        },
        groups: vec![GroupConfig {
            passive_target: Some("web-passive.target".to_owned()),
            members: Some(vec!["db-a".into(), "db-b".into(), "db-c".into()]),
            watch: Some(vec!["web.service".to_owned()]),
            health_command: Some(vec!["/usr/lib/web/check".to_owned()]),
            ..default_group("web")
        }],
        http: HttpConfig::default(),
    };
    assert_eq!(config, expected);
}

#[test]
fn non_default_values_are_read() {
    let text = r#"node = "n1"
[store]
kind = "etcd"
endpoints = ["https://[::1]:2379", "https://etcd-1.example:1/"]
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
                "https://etcd-1.example:1".into()
            ],
            connect_timeout: Duration::from_millis(1500),
            prefix: "/".to_owned(),
            tls: Some(Box::default()),
            auth: None,
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
            http: HttpConfig::default(),
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
            tls: None,
            auth: None,
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
    let text = format!("{GROUP}[[group]]\nname = \"db\"\nactive-target = \"db-active.target\"\n");
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
    let config = parse_with_hostname("node = \"x\"", "t", || panic!("hostname consulted")).unwrap();
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
    // Absurd lengths are refused, not added to a clock reading later.
    assert_one(
        &group_with("lease = \"100000000000years\"\n"),
        4,
        9,
        "`lease` = \"100000000000years\" is too long: at most 365 days",
    );
    assert_one(
        &group_with("failure-cooldown = \"366days\"\n"),
        4,
        20,
        "is too long",
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
    let text = format!("{GROUP}\n[[group]]\nname = \"web\"\nactive-target = \"other.target\"\n");
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
    // `@` would collide with the names of slots.
    assert_one(
        "[[group]]\nname = \"sched@1\"\nactive-target = \"a.target\"\n",
        2,
        8,
        "(`@` is promd's: slot k of a group is GROUP@k; see `actives`)",
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
    // An instance of the active template is one of the role's own targets.
    assert_one(
        "[[group]]\nname = \"x\"\nactive-target = \"x-active@.target\"\nactives = 2\n\
         passive-target = \"x-active@1.target\"\n",
        5,
        18,
        "`passive-target` \"x-active@1.target\" is an instance of the active template \
         \"x-active@.target\"",
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
        "[store]\nkind = \"etcd\"\nendpoints = [\"http://a:1\", \"a\"]\n",
        3,
        28,
        "endpoint \"a\": no port: write a:2379",
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

#[test]
fn groups_do_not_share_targets() {
    let a =
        "[[group]]\nname = \"a\"\nactive-target = \"a.target\"\npassive-target = \"p.target\"\n";
    // Another group's active target, as active target: at the second one, naming the first.
    assert_one(
        &format!("{a}[[group]]\nname = \"b\"\nactive-target = \"a.target\"\n"),
        7,
        17,
        "`active-target` \"a.target\" is already the active target of group \"a\" (line 3, column 17)",
    );
    // Another group's active target, as passive target; and the other way round.
    assert_one(
        &format!(
            "{a}[[group]]\nname = \"b\"\nactive-target = \"b.target\"\npassive-target = \"a.target\"\n"
        ),
        8,
        18,
        "`passive-target` \"a.target\" is already the active target of group \"a\"",
    );
    assert_one(
        &format!("{a}[[group]]\nname = \"b\"\nactive-target = \"p.target\"\n"),
        7,
        17,
        "`active-target` \"p.target\" is already the passive target of group \"a\" (line 4, column 18)",
    );
    // A template with slots starts each of its instances: another group's instance of it
    // (as its active or passive target) clashes, either way round (found by review).
    let slots = "[[group]]\nname = \"x\"\nactive-target = \"x-active@.target\"\nactives = 2\n";
    assert_one(
        &format!("{slots}[[group]]\nname = \"b\"\nactive-target = \"x-active@1.target\"\n"),
        7,
        17,
        "`active-target` \"x-active@1.target\" is an instance of \"x-active@.target\", the active \
         template of group \"x\"",
    );
    assert_one(
        &format!(
            "{slots}[[group]]\nname = \"b\"\nactive-target = \"b.target\"\n\
             passive-target = \"x-active@0.target\"\n"
        ),
        8,
        18,
        "`passive-target` \"x-active@0.target\" is an instance of \"x-active@.target\", the \
         active template of group \"x\"",
    );
    assert_one(
        &format!("[[group]]\nname = \"b\"\nactive-target = \"x-active@1.target\"\n{slots}"),
        6,
        17,
        "`active-target` \"x-active@.target\" is the template of \"x-active@1.target\", the active \
         target of group \"b\"",
    );
    // A shared passive target is started by both groups' passive hosts and stopped by none.
    let shared = format!(
        "{a}[[group]]\nname = \"b\"\nactive-target = \"b.target\"\npassive-target = \"p.target\"\n"
    );
    assert_eq!(check(&shared).unwrap().groups.len(), 2);
    // Every repetition is reported, also by a group that is invalid for another reason.
    let three = format!(
        "{a}[[group]]\nname = \"b\"\nactive-target = \"a.target\"\n\
         [[group]]\nname = \"Bad\"\nactive-target = \"a.target\"\n"
    );
    let found = problems(&three);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert_eq!((found[0].0, found[0].1), (Some(7), Some(17)));
    assert!(found[1].2.contains("group name \"Bad\""), "{found:#?}");
    assert_eq!((found[2].0, found[2].1), (Some(10), Some(17)));
    assert!(
        found[2].2.contains("of group \"a\""),
        "the first holder is named: {found:#?}"
    );
}

#[test]
fn http_is_off_unless_listen_names_an_address() {
    assert!(!check("").unwrap().http.enabled());
    assert!(!check("[http]\n").unwrap().http.enabled());
    assert!(!check("[http]\nlisten = []\n").unwrap().http.enabled());
    let config =
        check("[http]\nlisten = [\"127.0.0.1:8008\", \"[::1]:8008\", \"0.0.0.0:9000\"]\n").unwrap();
    let listen: Vec<String> = config.http.listen.iter().map(|a| a.to_string()).collect();
    assert_eq!(listen, ["127.0.0.1:8008", "[::1]:8008", "0.0.0.0:9000"]);
}

#[test]
fn bad_http_values_are_placed() {
    assert_one(
        "[http]\nlisten = [\"127.0.0.1\"]\n",
        2,
        11,
        "\"127.0.0.1\" in `listen` is not a socket address: add the port",
    );
    assert_one(
        "[http]\nlisten = [\"localhost:8008\"]\n",
        2,
        11,
        "an IP address, not a host name",
    );
    assert_one(
        "[http]\nlisten = [\"::1:8008\"]\n",
        2,
        11,
        "write an IPv6 address in brackets",
    );
    assert_one(
        "[http]\nlisten = [\"http://127.0.0.1:8008\"]\n",
        2,
        11,
        "without a scheme",
    );
    assert_one("[http]\nlisten = [\"127.0.0.1:0\"]\n", 2, 11, "port 0");
    assert_one(
        "[http]\nlisten = [\"127.0.0.1:8008\", \"[::1]:8008\", \"127.0.0.1:8008\"]\n",
        2,
        43,
        "\"127.0.0.1:8008\" appears twice in `listen` (first at line 2, column 11)",
    );
    assert_one(
        "[http]\nlisten = \"127.0.0.1:8008\"\n",
        2,
        10,
        "an array of strings",
    );
    assert_one("[http]\nlisten = [8008]\n", 2, 11, "only strings");
    assert_one("http = 1\n", 1, 8, "a table, written [http]");
    assert_one(
        "[http]\nport = 8008\n",
        2,
        1,
        "unknown key `port` in [http]; allowed here: listen",
    );
    assert_one(
        "listen = [\"127.0.0.1:8008\"]\n",
        1,
        1,
        "(`listen` belongs in [http])",
    );
    // Every bad address is reported, not only the first.
    assert_eq!(
        problems("[http]\nlisten = [\"a\", \"b:1\", \"1.2.3.4:5\"]\n").len(),
        2
    );
}

#[test]
fn addresses_are_parsed_and_each_wrong_part_is_placed() {
    let config = check(&group_with(
        "addresses = [\"192.0.2.10/24 dev eth0\", \"2001:db8::10/64 dev eth0\"]\n",
    ))
    .unwrap();
    let shown: Vec<String> = config.groups[0]
        .addresses
        .iter()
        .map(|a| a.to_string())
        .collect();
    assert_eq!(
        shown,
        ["192.0.2.10/24 dev eth0", "2001:db8::10/64 dev eth0"]
    );
    assert!(check(GROUP).unwrap().groups[0].addresses.is_empty());

    let line = GROUP.lines().count() + 1;
    assert_one(
        &group_with("addresses = [\"192.0.2.10 dev eth0\"]\n"),
        line,
        14,
        "`addresses`: `192.0.2.10` has no prefix length",
    );
    assert_one(
        &group_with("addresses = [\"192.0.2.10/24 dev eth0\", \"192.0.2.300/24 dev eth0\"]\n"),
        line,
        40,
        "`192.0.2.300` is not an IPv4 or IPv6 address",
    );
    assert_one(
        &group_with("addresses = [\"192.0.2.10/24 dev eth0\", \"192.0.2.10/32 dev eth0\"]\n"),
        line,
        40,
        "address 192.0.2.10 appears twice in `addresses` (first at line",
    );
    assert_one(
        &group_with("addresses = [\"192.0.2.10/24 dev lo\"]\n"),
        line,
        14,
        "`addresses`: interface `lo` is the loopback interface",
    );
    assert_one(
        &group_with("addresses = [\"192.0.2.10/24 dev eth0, 192.0.2.11/24 dev eth0\"]\n"),
        line,
        14,
        "each address is its own string in the list",
    );
    assert_one(
        &group_with("addresses = \"192.0.2.10/24 dev eth0\"\n"),
        line,
        13,
        "`addresses` must be an array of strings",
    );
}

#[test]
fn one_address_on_two_interfaces_is_said_to_be_so() {
    let line = GROUP.lines().count() + 1;
    assert_one(
        &group_with("addresses = [\"192.0.2.10/24 dev eth0\", \"192.0.2.10/24 dev eth1\"]\n"),
        line,
        40,
        &format!(
            "address 192.0.2.10 is on two interfaces in `addresses`: eth1 here and eth0 at \
             line {line}, column 14"
        ),
    );
    let found = problems(&group_with(
        "addresses = [\"192.0.2.10/24 dev eth0\", \"192.0.2.10/24 dev eth1\"]\n",
    ));
    assert!(!found[0].2.contains("appears twice"), "{found:#?}");
}

#[test]
fn groups_do_not_share_addresses() {
    let a = "[[group]]\nname = \"a\"\nactive-target = \"a.target\"\naddresses = [\"192.0.2.10/24 dev eth0\"]\n";
    assert_one(
        &format!(
            "{a}[[group]]\nname = \"b\"\nactive-target = \"b.target\"\naddresses = [\"192.0.2.10/24 dev eth1\"]\n"
        ),
        8,
        14,
        "address 192.0.2.10 is already an address of group \"a\" (line 4, column 14)",
    );
}

#[test]
fn a_clash_across_groups_is_reported_beside_a_wrong_entry() {
    // Group a's second entry is wrong; its first still clashes with b's, in the same run.
    let text = "[[group]]\nname = \"a\"\nactive-target = \"a.target\"\n\
                addresses = [\"192.0.2.10/24 dev eth0\", \"192.0.2.11 dev eth0\"]\n\
                [[group]]\nname = \"b\"\nactive-target = \"b.target\"\n\
                addresses = [\"192.0.2.10/24 dev eth0\", \"192.0.2.10/24 dev eth1\"]\n";
    let found = problems(text);
    let places: Vec<_> = found.iter().map(|p| (p.0, p.1, p.2.as_str())).collect();
    assert_eq!(places.len(), 3, "{found:#?}");
    assert_eq!(
        (places[0].0, places[0].1),
        (Some(4), Some(40)),
        "{found:#?}"
    );
    assert_eq!(
        (places[1].0, places[1].1),
        (Some(8), Some(14)),
        "{found:#?}"
    );
    assert!(
        places[1]
            .2
            .contains("192.0.2.10 is already an address of group \"a\" (line 4, column 14)"),
        "{found:#?}"
    );
    assert_eq!(
        (places[2].0, places[2].1),
        (Some(8), Some(40)),
        "{found:#?}"
    );
    assert!(
        places[2].2.contains("is on two interfaces in `addresses`"),
        "{found:#?}"
    );
}

#[test]
fn an_item_that_is_no_string_hides_no_clash() {
    let text = "[[group]]\nname = \"a\"\nactive-target = \"a.target\"\n\
                addresses = [\"192.0.2.10/24 dev eth0\"]\n\
                [[group]]\nname = \"b\"\nactive-target = \"b.target\"\n\
                addresses = [5, \"192.0.2.10/24 dev eth1\"]\n";
    let found = problems(text);
    let places: Vec<_> = found.iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        places,
        [(Some(8), Some(14)), (Some(8), Some(17))],
        "{found:#?}"
    );
    assert!(found[0].2.contains("must hold only strings"), "{found:#?}");
    assert!(
        found[1].2.contains("already an address of group \"a\""),
        "{found:#?}"
    );
}

// --- slots: `actives` and `standbys` ----------------------------------------------------------

#[test]
fn actives_and_standbys_default_to_one_active_and_no_limit() {
    let group = &check(GROUP).unwrap().groups[0];
    assert_eq!((group.actives, group.standbys), (1, None));
}

#[test]
fn actives_and_standbys_are_read() {
    let text = group_with(
        "passive-target = \"web-passive.target\"\nmembers = [\"a\", \"b\", \"c\", \"d\", \"e\"]\n\
         actives = 2\nstandbys = 3\n",
    );
    let group = &check(&text).unwrap().groups[0];
    assert_eq!(group.actives, 2);
    assert_eq!(group.standbys, std::num::NonZeroU32::new(3));
    // Without `members` nothing bounds them but MAX_ACTIVES.
    let text = group_with(&format!(
        "passive-target = \"p.target\"\nactives = {MAX_ACTIVES}\nstandbys = 100\n"
    ));
    assert_eq!(check(&text).unwrap().groups[0].actives, MAX_ACTIVES);
}

#[test]
fn standbys_zero_means_no_limit_as_design_md_says() {
    // design.md's example writes `standbys = 0`, with or without a passive target.
    let group = &check(&group_with("standbys = 0\n")).unwrap().groups[0];
    assert_eq!(group.standbys, None);
}

#[test]
fn actives_out_of_range() {
    assert_one(&group_with("actives = 0\n"), 4, 11, "between 1 and 32");
    assert_one(
        &group_with("actives = -1\n"),
        4,
        11,
        "at least one active host",
    );
    assert_one(&group_with("actives = 33\n"), 4, 11, "between 1 and 32");
    assert_one(
        &group_with("actives = \"2\"\n"),
        4,
        11,
        "must be an integer",
    );
    assert_one(&group_with("actives = 1.5\n"), 4, 11, "must be an integer");
    assert_one(
        &group_with("standbys = -1\n"),
        4,
        12,
        "between 0 and 4294967295",
    );
    assert_one(
        &group_with("standbys = true\n"),
        4,
        12,
        "must be an integer",
    );
}

#[test]
fn actives_cannot_outnumber_the_members() {
    assert_one(
        &group_with("members = [\"a\", \"b\"]\nactives = 3\n"),
        5,
        11,
        "`actives` = 3, but `members` lists 2 nodes: at most 2 could be active",
    );
    // As many as the members: every member active, nobody to fail over to, but valid.
    let text = group_with("members = [\"a\", \"b\"]\nactives = 2\n");
    assert_eq!(check(&text).unwrap().groups[0].actives, 2);
    // The order of the keys does not matter.
    assert_one(
        &group_with("actives = 2\nmembers = [\"a\"]\n"),
        4,
        11,
        "`members` lists 1 node:",
    );
}

#[test]
fn actives_and_standbys_together_cannot_outnumber_the_members() {
    let text = group_with(
        "passive-target = \"p.target\"\nmembers = [\"a\", \"b\", \"c\"]\nactives = 2\n\
         standbys = 2\n",
    );
    assert_one(
        &text,
        7,
        12,
        "`actives` + `standbys` = 2 + 2, but `members` lists 3 nodes: every active host and \
         every standby is a member of its own, so at most 1 standby fit",
    );
    // The default `actives` = 1 counts too.
    let text =
        group_with("passive-target = \"p.target\"\nmembers = [\"a\", \"b\"]\nstandbys = 2\n");
    assert_one(&text, 6, 12, "= 1 + 2, but `members` lists 2 nodes");
    // With no member left to stand by, lowering `standbys` to 0 would lift the limit: the
    // error says to leave it out instead.
    let text = group_with(
        "passive-target = \"p.target\"\nmembers = [\"a\", \"b\"]\nactives = 2\nstandbys = 1\n",
    );
    assert_one(
        &text,
        7,
        12,
        "so at most 0 standbys fit; list more members or leave out `standbys`",
    );
    // Exactly as many is valid (no spare).
    let text = group_with(
        "passive-target = \"p.target\"\nmembers = [\"a\", \"b\", \"c\"]\nactives = 2\n\
         standbys = 1\n",
    );
    assert!(check(&text).is_ok());
}

#[test]
fn too_many_actives_for_the_members_is_said_once() {
    // Said at `actives`; `standbys` on top of it adds nothing an operator can act on.
    let found = problems(&group_with(
        "passive-target = \"p.target\"\nmembers = [\"a\"]\nactives = 2\nstandbys = 1\n",
    ));
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!((found[0].0, found[0].1), (Some(6), Some(11)));
}

#[test]
fn standbys_need_a_passive_target() {
    assert_one(
        &group_with("standbys = 1\n"),
        4,
        12,
        "`standbys` = 1 limits how many hosts run the passive target, but this group has no \
         `passive-target`",
    );
}

#[test]
fn addresses_float_to_one_active_host_only() {
    assert_one(
        &group_with("actives = 2\naddresses = [\"192.0.2.10/24 dev eth0\"]\n"),
        5,
        1,
        "`actives` = 2 (line 4) makes 2 hosts active at once",
    );
    // `actives = 1` written out is today's group.
    let text = group_with("actives = 1\naddresses = [\"192.0.2.10/24 dev eth0\"]\n");
    assert!(check(&text).is_ok());
}

#[test]
fn an_invalid_actives_hides_no_other_problem_but_adds_none() {
    // `actives` itself is wrong: the relations to `members` are not guessed at.
    let found = problems(&group_with(
        "members = [\"a\"]\nactives = 0\nstandbys = 5\n",
    ));
    let messages: Vec<&str> = found.iter().map(|p| p.2.as_str()).collect();
    assert_eq!(found.len(), 2, "{messages:#?}");
    assert!(messages[0].contains("between 1 and 32"), "{messages:#?}");
    assert!(messages[1].contains("no `passive-target`"), "{messages:#?}");
}

/// A lease too short for any unit with processes is noted by `check-config` (and at start),
/// once per lease length, naming its groups and the lease that holds one unit; longer leases
/// are not.
#[test]
fn a_lease_too_short_for_any_unit_is_noted_with_the_lease_that_holds_one() {
    let text = format!(
        "{GROUP}lease = \"1s\"\n\
         [[group]]\nname = \"db\"\nactive-target = \"db-active.target\"\nlease = \"1s\"\n\
         [[group]]\nname = \"q\"\nactive-target = \"q-active.target\"\nlease = \"2s\"\n"
    );
    let config = check(&text).unwrap();
    assert_eq!(
        short_lease_notes(&config),
        vec![
            "lease 1s (groups web, db) holds no unit with processes: the fence kills 50ms after \
             it asks the units to stop and leaves PID 1 0s after the kill, so if a unit of \
             such a role must be killed, promd is restarted by its watchdog (the unit still \
             dies before the lease ends); use it for roles whose units stop at once, or make \
             lease at least 1s 400ms (docs/safety.md, \"What is assumed about the host\")"
                .to_string()
        ]
    );
    assert!(warnings(&config).contains(&short_lease_notes(&config)[0]));
    // The lease named is the shortest that holds one unit, to 100 ms.
    let config = check(&format!("{GROUP}lease = \"1300ms\"\n")).unwrap();
    let notes = short_lease_notes(&config);
    assert!(
        notes.len() == 1 && notes[0].contains("make lease at least 1s 400ms"),
        "{notes:?}"
    );
    for enough in ["1400ms", "2s"] {
        let config = check(&format!("{GROUP}lease = \"{enough}\"\n")).unwrap();
        assert!(short_lease_notes(&config).is_empty(), "{enough}");
    }
}

/// `n` groups `g0` … at `lease`, each `actives` slots.
fn many_groups(n: usize, lease: &str, actives: u32) -> String {
    (0..n)
        .map(|i| {
            let target = if actives > 1 { "@" } else { "" };
            let slots = if actives > 1 {
                format!("actives = {actives}\npassive-target = \"g{i}-passive.target\"\n")
            } else {
                String::new()
            };
            format!(
                "[[group]]\nname = \"g{i}\"\nactive-target = \"g{i}-active{target}.target\"\n\
                 lease = \"{lease}\"\n{slots}"
            )
        })
        .collect()
}

/// `check-config`'s lease notes for [`many_groups`].
fn notes_for(n: usize, lease: &str, actives: u32) -> Vec<String> {
    short_lease_notes(&check(&many_groups(n, lease, actives)).unwrap())
}

/// A host of many groups fences them all at a cut: PID 1 stops every target and promd
/// confirms each stop, 2 ms a group past the first 50, even with no process to stop.
/// `check-config` says so for a lease too short for the count (1,000 groups at 4 s had promd
/// restarted by its watchdog at every cut of the bench), names the lease that holds it, and
/// keeps the line readable however many groups there are.
#[test]
fn a_lease_too_short_for_the_number_of_groups_is_noted_with_the_lease_that_holds_them() {
    let notes = notes_for(1000, "4s", 1);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    let note = &notes[0];
    assert!(
        note.starts_with(
            "lease 4s (groups g0, g1, g2, g3, g4 and 995 more) is too short for the 1000 \
             groups of this file on one host"
        ),
        "{note}"
    );
    assert!(
        note.contains("(2ms a group past the first 50: 1s 900ms)"),
        "{note}"
    );
    let named = note
        .split("make lease at least ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .expect("names a lease");
    // The lease named holds them: no note at it; one step less gets the note again.
    let at = |lease: &str| notes_for(1000, lease, 1);
    assert_eq!(at(named), Vec::<String>::new(), "{named}");
    let less =
        humantime::parse_duration(&named.replace(' ', "")).unwrap() - Duration::from_millis(100);
    let less = format!("{}ms", less.as_millis());
    assert_eq!(at(&less).len(), 1, "{less}");
    // 50 groups cost nothing beyond the lease's own deadlines.
    assert_eq!(notes_for(50, "2s", 1), Vec::<String>::new());
    // Slots count as groups: 300 groups of 2 slots are 600.
    let notes = notes_for(300, "2s", 2);
    assert!(
        notes
            .iter()
            .any(|n| n.contains("the 600 slots of the 300 groups of this file")),
        "{notes:#?}"
    );
    // A lease short of one unit, over 60 groups: one line, five names.
    let notes = notes_for(60, "1s", 1);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0].starts_with("lease 1s (groups g0, g1, g2, g3, g4 and 55 more) holds no unit"),
        "{notes:#?}"
    );
    // The cost is said before its rounding: 120 groups cost 140 ms, counted as 200 ms.
    let notes = notes_for(120, "2s", 1);
    assert!(
        notes[0]
            .contains("(2ms a group past the first 50: 140ms, rounded up to a 100ms step: 200ms)"),
        "{notes:#?}"
    );
    // Short of one unit and of 500 groups: one note, with the lease that holds both.
    let notes = notes_for(500, "1s", 1);
    assert_eq!(notes.len(), 1, "{notes:#?}");
    assert!(
        notes[0].contains("too short for the 500 groups"),
        "{notes:#?}"
    );
}

#[test]
fn a_template_active_target_needs_slots_and_each_slot_starts_its_instance() {
    let template = "[[group]]\nname = \"web\"\nactive-target = \"web-active@.target\"\n";
    let text = format!("{template}passive-target = \"web-passive.target\"\nactives = 3\n");
    let group = &check(&text).unwrap().groups[0];
    let slots = group.slots();
    let names: Vec<&str> = slots.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["web", "web@1", "web@2"]);
    let targets: Vec<&str> = slots.iter().map(|s| s.active_target.as_str()).collect();
    assert_eq!(
        targets,
        [
            "web-active@0.target",
            "web-active@1.target",
            "web-active@2.target"
        ]
    );
    assert!(slots.iter().enumerate().all(|(k, s)| {
        s.slot
            == Some(SlotOf {
                group: "web".into(),
                index: k as u32,
                of: 3,
            })
            && s.group_name() == "web"
            && s.passive_target.as_deref() == Some("web-passive.target")
    }));
    // A plain target is every slot's; one active host: the group itself.
    let plain = &check(&group_with("actives = 2\n")).unwrap().groups[0];
    assert!(
        plain
            .slots()
            .iter()
            .all(|s| s.active_target == "web-active.target")
    );
    let one = &check(GROUP).unwrap().groups[0];
    assert_eq!(one.slots(), vec![one.clone()]);
    // A template with one active host has nothing to instantiate it with.
    assert_one(
        template,
        3,
        17,
        "\"web-active@.target\" in `active-target` is a template, which needs `actives` above \
         1 (slot k starts web-active@K.target); with one active host name a unit, e.g. \
         \"web-active.target\"",
    );
    // Only `active-target` may be a template.
    assert_one(
        &format!("{template}actives = 2\npassive-target = \"web-passive@.target\"\n"),
        5,
        18,
        "not a valid systemd unit name",
    );
}

#[test]
fn slot_names_are_a_group_name_and_a_slot_number() {
    for ok in ["web", "web@1", "web@31", "db_2-x@9"] {
        assert!(crate::config::valid_slot_name(ok), "{ok}");
    }
    for bad in [
        "web@0", "web@01", "web@32", "web@", "@1", "web@1@2", "web@-1", "Web@1",
    ] {
        assert!(!crate::config::valid_slot_name(bad), "{bad}");
    }
}
