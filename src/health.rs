//! The health command: run every `health-interval`, killed after `health-timeout`.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::agent::GroupId;

/// The outcome of one run of the health command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthResult {
    /// The command exited 0 within the timeout.
    pub ok: bool,
    /// Why it failed (exit status, first line of stderr, or the timeout), for the journal.
    pub detail: String,
    /// How long the check ran (until it exited or was killed).
    pub duration: Duration,
}

/// A group's `health-command` with its timing, as promd.toml gives them.
pub struct HealthCheck {
    /// The program (an absolute path, checked by the configuration) and its arguments; run
    /// directly, no shell.
    pub command: Vec<String>,
    /// From the start of one run to the start of the next (`health-interval`); a run that
    /// ends late delays the next one rather than bunching them up.
    pub interval: Duration,
    /// How long a run may take (`health-timeout`): then its whole process group is killed
    /// with SIGKILL and the run counts as failed.
    pub timeout: Duration,
    /// `PROMD_GROUP`, `PROMD_NODE` for the command.
    pub env: Vec<(String, String)>,
}

/// Run the check forever; each result goes to `tx` tagged with the group's `id`.
pub fn spawn(
    id: GroupId,
    check: HealthCheck,
    tx: mpsc::UnboundedSender<(GroupId, HealthResult)>,
) -> tokio::task::AbortHandle {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(check.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = run_once(&check).await;
            if tx.send((id, result)).is_err() {
                return;
            }
        }
    })
    .abort_handle()
}

/// Runs the command once, in a process group of its own, with stdin and stdout on
/// /dev/null; never fails itself: a command that cannot be started, exits non-zero or times
/// out is a failed [`HealthResult`] saying which (with the first line of its stderr, read for
/// at most 100 ms after it exits).
pub async fn run_once(check: &HealthCheck) -> HealthResult {
    let started = std::time::Instant::now();
    let mut result = run_timed(check).await;
    result.duration = started.elapsed();
    result
}

/// [`run_once`] without the duration.
async fn run_timed(check: &HealthCheck) -> HealthResult {
    let fail = |detail: String| HealthResult {
        ok: false,
        detail,
        duration: Duration::ZERO,
    };
    let Some((program, args)) = check.command.split_first() else {
        return fail("no command".into());
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(check.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills whatever it started too.
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(format!("cannot run {program}: {e}")),
    };
    let pid = child.id();
    let mut stderr = child.stderr.take();
    let outcome = tokio::time::timeout(check.timeout, child.wait()).await;
    match outcome {
        Ok(Ok(status)) if status.success() => HealthResult {
            ok: true,
            detail: String::new(),
            duration: Duration::ZERO,
        },
        Ok(Ok(status)) => {
            let mut text = String::new();
            if let Some(err) = stderr.as_mut() {
                let mut buf = vec![0u8; 4096];
                if let Ok(Ok(n)) =
                    tokio::time::timeout(Duration::from_millis(100), err.read(&mut buf)).await
                {
                    text = String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .next()
                        .unwrap_or("")
                        .to_string();
                }
            }
            fail(format!(
                "{status}{}{text}",
                if text.is_empty() { "" } else { ": " }
            ))
        }
        Ok(Err(e)) => fail(format!("waiting for {program}: {e}")),
        Err(_) => {
            if let Some(pid) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            let _ = child.wait().await;
            fail(format!(
                "timed out after {}",
                humantime::format_duration(check.timeout)
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(cmd: &[&str], timeout_ms: u64) -> HealthCheck {
        HealthCheck {
            command: cmd.iter().map(|s| s.to_string()).collect(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(timeout_ms),
            env: vec![("PROMD_GROUP".into(), "web".into())],
        }
    }

    #[tokio::test]
    async fn exit_status_decides() {
        assert!(run_once(&check(&["/bin/true"], 1000)).await.ok);
        let r = run_once(&check(&["/bin/sh", "-c", "echo broken >&2; exit 3"], 1000)).await;
        assert!(!r.ok);
        assert!(
            r.detail.contains("3") && r.detail.contains("broken"),
            "{}",
            r.detail
        );
        let r = run_once(&check(
            &["/bin/sh", "-c", "test \"$PROMD_GROUP\" = web"],
            1000,
        ))
        .await;
        assert!(r.ok, "the group is in the environment");
    }

    #[tokio::test]
    async fn a_slow_check_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild");
        let script = format!("(sleep 0.5; touch {}) & sleep 30", marker.display());
        let started = std::time::Instant::now();
        let r = run_once(&check(&["/bin/sh", "-c", &script], 200)).await;
        assert!(!r.ok && r.detail.contains("timed out"), "{}", r.detail);
        assert!(started.elapsed() < Duration::from_secs(5));
        // The background child was in the same process group: killed too, it never touches.
        tokio::time::sleep(Duration::from_millis(800)).await; // outlive the grandchild's 0.5 s
        assert!(!marker.exists());
    }

    #[tokio::test]
    async fn a_missing_program_is_a_failure() {
        let r = run_once(&check(&["/nonexistent/check"], 1000)).await;
        assert!(!r.ok && r.detail.contains("cannot run"));
    }
}
