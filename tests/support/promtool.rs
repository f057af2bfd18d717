//! promtool (Debian `prometheus`, installed by `scripts/deps.sh`), for the tests that lint
//! promd's `/metrics` and the shipped Prometheus examples. Small enough to be included on its
//! own (`#[path = "support/promtool.rs"] mod promtool;`) by tests that need nothing else of
//! `support`.
#![allow(dead_code)]

use std::io::Write;
use std::process::{Command, Stdio};

/// Runs `promtool ARGS` in the crate's root with `stdin` as its input: (exited 0, what it
/// printed on stdout and stderr). `None` when promtool is not installed, which fails the
/// test when it runs as root (as CI runs it) and only skips it otherwise.
pub fn promtool(args: &[&str], stdin: &str) -> Option<(bool, String)> {
    let child = Command::new("promtool")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
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
    if let Some(mut input) = child.stdin.take()
        && let Err(e) = input.write_all(stdin.as_bytes())
    {
        panic!("promtool stdin: {e}");
    }
    let out = match child.wait_with_output() {
        Ok(o) => o,
        Err(e) => panic!("promtool: {e}"),
    };
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), said))
}

/// `promtool check metrics` of an exposition: `Ok(())` if it passes without a word,
/// `Err(what it says)`; `None` as for [`promtool`].
pub fn check_metrics(text: &str) -> Option<Result<(), String>> {
    let (ok, said) = promtool(&["check", "metrics"], text)?;
    Some(match (ok, said.trim().is_empty()) {
        (true, true) => Ok(()),
        (true, false) => Err(said),
        (false, _) => Err(format!("failed: {said}")),
    })
}
