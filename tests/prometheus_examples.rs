//! The shipped Prometheus examples (packaging/examples/): the alerting rules pass
//! `promtool check rules` and fire as intended (`promtool test rules`,
//! tests/fixtures/promd-alerts.test.yml), and the scrape config passes `promtool check
//! config`. promtool: Debian `prometheus` (scripts/deps.sh); without it the test only skips,
//! unless it runs as root (as CI does).

#[path = "support/promtool.rs"]
mod promtool;

#[test]
fn the_alerting_rules_pass_promtool_and_fire_as_intended() {
    for args in [
        &["check", "rules", "packaging/examples/promd-alerts.yml"][..],
        &["test", "rules", "tests/fixtures/promd-alerts.test.yml"][..],
    ] {
        if let Some((ok, said)) = promtool::promtool(args, "") {
            assert!(ok, "promtool {}: {said}", args.join(" "));
        }
    }
}

#[test]
fn the_scrape_config_passes_promtool() {
    // `check config` reads the rule files it names, relative to the config's directory.
    if let Some((ok, said)) = promtool::promtool(
        &["check", "config", "packaging/examples/prometheus.yml"],
        "",
    ) {
        assert!(ok, "promtool check config: {said}");
    }
}
