//! Following PID 1's reloads: a unit added to a role by a drop-in and `systemctl
//! daemon-reload` belongs to it from that reload on, so after a reload that promd did not
//! cause ([`Systemd::foreign_reloads`]) every open group's closure is walked and bound to
//! promd again, as when the group opened, and the closures go to the agent in one
//! [`Input::Closures`] (the fence load counted once, docs/safety.md "What is assumed about
//! the host").
//!
//! The walk waits until PID 1 has been quiet for [`QUIET`]: a script that runs several
//! `daemon-reload`s in a row costs one walk of every group, not one per reload. A reload
//! while a walk runs is followed by another walk once it is done; walks never overlap.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::jobs::bind_closure;
use crate::agent::{GroupId, Input};
use crate::config::GroupConfig;
use crate::systemd::{Closure, Systemd};

/// How long PID 1 must be without another foreign reload before the groups are walked
/// again.
pub(super) const QUIET: Duration = Duration::from_secs(1);

/// The longest a walk waits for [`QUIET`] after the first reload it answers: reloads that
/// never stop for a second must not put it off for ever.
pub(super) const QUIET_AT_MOST: Duration = Duration::from_secs(5);

/// Groups walked and bound at once. Each walk is a chain of calls (one or two per unit),
/// all through the driver's call gate ([`crate::systemd::NORMAL_CALLS`]); this keeps 500
/// groups' walks from filling that gate and queueing the groups' own calls behind them.
pub(super) const WALKS_IN_FLIGHT: usize = 16;

/// A walk's request to the loop for the groups open now, with their configurations.
pub(super) type Ask = oneshot::Sender<Vec<(GroupId, GroupConfig)>>;

/// Follow `systemd`'s foreign reloads until the loop is gone: after each (quiet for
/// [`QUIET`]), ask the loop (`ask`) for the open groups, walk and bind them, and hand the
/// closures found to the agent (`inputs`).
pub(super) fn follow(
    systemd: Systemd,
    ask: mpsc::UnboundedSender<Ask>,
    inputs: mpsc::UnboundedSender<Input>,
) -> tokio::task::JoinHandle<()> {
    let mut foreign = systemd.foreign_reloads();
    // What happened before promd served its groups is found by their first walks.
    foreign.mark_unchanged();
    tokio::spawn(async move {
        while foreign.changed().await.is_ok() {
            let first = Instant::now();
            if !quiet(&mut foreign, QUIET, QUIET_AT_MOST).await {
                return;
            }
            let (tx, rx) = oneshot::channel();
            if ask.send(tx).is_err() {
                return;
            }
            let Ok(roles) = rx.await else { return };
            if roles.is_empty() {
                continue;
            }
            let began = Instant::now();
            let groups = roles.len();
            let closures = walk(&systemd, roles).await;
            tracing::info!(
                "systemd reloaded: walked and bound the roles of {} of {groups} groups again \
                 in {} ms, {} ms after the reload",
                closures.len(),
                began.elapsed().as_millis(),
                first.elapsed().as_millis(),
            );
            if !closures.is_empty() && inputs.send(Input::Closures(closures)).is_err() {
                return;
            }
        }
    })
}

/// Wait until `foreign` has not changed for `quiet`, or `at_most` has passed; false if its
/// sender is gone.
async fn quiet(foreign: &mut watch::Receiver<u64>, quiet: Duration, at_most: Duration) -> bool {
    let limit = Instant::now() + at_most;
    loop {
        let until = (Instant::now() + quiet).min(limit);
        tokio::select! {
            // The quiet first: a reload in the same instant is left for the next walk.
            biased;
            () = tokio::time::sleep_until(until) => return true,
            changed = foreign.changed() => {
                if changed.is_err() {
                    return false;
                }
            }
        }
    }
}

/// Walk and bind each group's closure, [`WALKS_IN_FLIGHT`] at a time; a walk that failed was
/// logged and is left out (the group keeps the closure it had).
async fn walk(systemd: &Systemd, roles: Vec<(GroupId, GroupConfig)>) -> Vec<(GroupId, Closure)> {
    futures_util::stream::iter(roles)
        .map(|(id, cfg)| async move {
            bind_closure(systemd, &cfg.name, &cfg.active_target, &cfg.addresses)
                .await
                .map(|closure| (id, closure))
        })
        .buffer_unordered(WALKS_IN_FLIGHT)
        .filter_map(std::future::ready)
        .collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Long beside the reloads' 10–20 ms apart, so that a busy machine cannot fake a quiet.
    const Q: Duration = Duration::from_millis(300);

    /// Reloads every 20 ms for 100 ms: one wait, which ends a quiet `Q` after the last.
    #[tokio::test]
    async fn several_reloads_in_a_row_are_answered_once_after_the_quiet() {
        let (tx, mut rx) = watch::channel(0u64);
        let began = Instant::now();
        let reloads = tokio::spawn(async move {
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_millis(20)).await;
                tx.send_modify(|n| *n += 1);
            }
            tx
        });
        assert!(quiet(&mut rx, Q, Duration::from_secs(30)).await);
        let waited = began.elapsed();
        assert!(waited >= Duration::from_millis(100) + Q, "{waited:?}");
        // Every reload was taken in by this wait: nothing left to answer.
        let tx = reloads.await.unwrap();
        assert!(!rx.has_changed().unwrap());
        drop(tx);
        assert!(
            !quiet(&mut rx, Q, Duration::from_secs(30)).await,
            "sender gone"
        );
    }

    /// Reloads that never stop for `Q` are answered after `at_most` all the same.
    #[tokio::test]
    async fn reloads_without_end_are_answered_after_at_most() {
        let (tx, mut rx) = watch::channel(0u64);
        let reloads = tokio::spawn(async move {
            while !tx.is_closed() {
                tokio::time::sleep(Duration::from_millis(10)).await;
                tx.send_modify(|n| *n += 1);
            }
        });
        let began = Instant::now();
        assert!(quiet(&mut rx, Q, Duration::from_millis(600)).await);
        let waited = began.elapsed();
        assert!(
            waited >= Duration::from_millis(600) && waited < Duration::from_secs(10),
            "{waited:?}"
        );
        drop(rx);
        reloads.await.unwrap();
    }
}
