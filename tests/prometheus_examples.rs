//! The shipped Prometheus examples (packaging/examples/): the alerting rules pass
//! `promtool check rules` and fire as intended (`promtool test rules`,
//! tests/fixtures/promd-alerts.test.yml), and the scrape config passes `promtool check
//! config`. promtool: Debian `prometheus` (scripts/deps.sh); without it the test only skips,
//! unless it runs as root (as CI does).

use std::process::Command;

/// Run `promtool ARGS` in the crate's root; `None` when promtool is not installed.
fn promtool(args: &[&str]) -> Option<(bool, String)> {
    let out = match Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
    {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            assert!(
                !nix::unistd::geteuid().is_root(),
                "promtool is not installed: run scripts/deps.sh"
            );
            eprintln!("SKIPPED: promtool is not installed (scripts/deps.sh installs it)");
            return None;
        }
        Err(e) => panic!("promtool: {e}"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

#[test]
fn the_alerting_rules_pass_promtool_and_fire_as_intended() {
    for args in [
        &["check", "rules", "packaging/examples/promd-alerts.yml"][..],
        &["test", "rules", "tests/fixtures/promd-alerts.test.yml"][..],
    ] {
        if let Some((ok, said)) = promtool(args) {
            assert!(ok, "promtool {}: {said}", args.join(" "));
        }
    }
}

#[test]
fn the_scrape_config_passes_promtool() {
    // `check config` reads the rule files it names, relative to the config's directory.
    if let Some((ok, said)) = promtool(&["check", "config", "packaging/examples/prometheus.yml"]) {
        assert!(ok, "promtool check config: {said}");
    }
}
