//! Units' states read for many callers at once: every [`super::Systemd::states`] asked while
//! a `ListUnitsByNames` is under way goes into the next one.
//!
//! Why: PID 1 reads its D-Bus messages before it runs its job queue (the run queue is an idle
//! event source), so while hundreds of groups each read their units' states, their stop jobs
//! wait. A host cut off the store that fences 500 groups at once sent two `ListUnitsByNames`
//! per group around each stop; PID 1 stopped the first targets 400 ms after the fence began and
//! confirmed the last past the hang deadline, and promd's watchdog fired. One call lists the
//! units of every caller waiting, so the count of calls no longer grows with the groups.

use std::collections::{BTreeSet, HashMap};
use std::future::Future;
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use super::UnitState;

/// Names in one call at most (a caller that asks for more gets a call of its own): PID 1's
/// answer is ~200 bytes per unit, far below the bus's message limit at this count.
pub const MAX_NAMES: usize = 2048;

/// What a batch answers: every listed unit's state, or why the call failed (in words: every
/// caller of the batch gets its own copy).
pub type Listed = Result<Arc<HashMap<String, UnitState>>, String>;

struct Request {
    units: Vec<String>,
    reply: oneshot::Sender<Listed>,
}

/// The handle callers share; the task it feeds ends when the last handle is dropped.
#[derive(Clone)]
pub struct Lister {
    requests: mpsc::UnboundedSender<Request>,
}

impl Lister {
    /// Start the task that lists units with `call` (one `ListUnitsByNames`), one call at a
    /// time.
    pub fn spawn<F, Fut>(call: F) -> Lister
    where
        F: Fn(Vec<String>) -> Fut + Send + 'static,
        Fut: Future<Output = Result<HashMap<String, UnitState>, String>> + Send + 'static,
    {
        let (requests, rx) = mpsc::unbounded_channel();
        tokio::spawn(serve(call, rx));
        Lister { requests }
    }

    /// The states of `units` that systemd listed (a unit it does not know is absent), from a
    /// call that began after this request.
    pub async fn list(&self, units: Vec<String>) -> Result<HashMap<String, UnitState>, String> {
        let (reply, rx) = oneshot::channel();
        let asked = units.clone();
        self.requests
            .send(Request { units, reply })
            .map_err(|_| "the unit lister has stopped".to_string())?;
        let all = rx
            .await
            .map_err(|_| "the unit lister has stopped".to_string())??;
        Ok(asked
            .into_iter()
            .filter_map(|u| all.get(&u).map(|s| (u, s.clone())))
            .collect())
    }
}

async fn serve<F, Fut>(call: F, mut rx: mpsc::UnboundedReceiver<Request>)
where
    F: Fn(Vec<String>) -> Fut,
    Fut: Future<Output = Result<HashMap<String, UnitState>, String>>,
{
    let mut held: Option<Request> = None;
    loop {
        let first = match held.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut names: BTreeSet<String> = first.units.iter().cloned().collect();
        let mut batch = vec![first];
        while names.len() < MAX_NAMES {
            let Ok(more) = rx.try_recv() else { break };
            if names.len() + more.units.len() > MAX_NAMES {
                held = Some(more);
                break;
            }
            names.extend(more.units.iter().cloned());
            batch.push(more);
        }
        if batch.len() > 1 {
            tracing::trace!(
                "one ListUnitsByNames for {} callers, {} units",
                batch.len(),
                names.len()
            );
        }
        let result = call(names.into_iter().collect()).await.map(Arc::new);
        for r in batch {
            let _ = r.reply.send(result.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn state(active: &str) -> UnitState {
        UnitState {
            active: active.into(),
            sub: String::new(),
            job_queued: false,
        }
    }

    /// A fake PID 1 that knows `a.service` and `b.service`, records each call, and answers
    /// the first only once released, so that callers pile up behind it.
    /// The names of every call the fake answered, in order.
    type Calls = Arc<Mutex<Vec<Vec<String>>>>;

    fn fake() -> (Lister, Calls, Arc<tokio::sync::Notify>) {
        let calls = Arc::new(Mutex::new(Vec::new()));
        let release = Arc::new(tokio::sync::Notify::new());
        let (c, r) = (calls.clone(), release.clone());
        let lister = Lister::spawn(move |names: Vec<String>| {
            let (c, r) = (c.clone(), r.clone());
            async move {
                let first = {
                    let mut calls = c.lock().unwrap();
                    calls.push(names.clone());
                    calls.len() == 1
                };
                if first {
                    r.notified().await;
                }
                if names.iter().any(|n| n == "broken.service") {
                    return Err("D-Bus: refused".to_string());
                }
                Ok(names
                    .into_iter()
                    .filter(|n| n == "a.service" || n == "b.service")
                    .map(|n| {
                        let s = if n == "a.service" {
                            "active"
                        } else {
                            "inactive"
                        };
                        (n, state(s))
                    })
                    .collect())
            }
        });
        (lister, calls, release)
    }

    /// The fake, with a first call for `a.service` under way (held until released).
    async fn a_call_under_way() -> (
        Lister,
        Calls,
        Arc<tokio::sync::Notify>,
        tokio::task::JoinHandle<Result<HashMap<String, UnitState>, String>>,
    ) {
        let (lister, calls, release) = fake();
        let first = tokio::spawn({
            let l = lister.clone();
            async move { l.list(vec!["a.service".into()]).await }
        });
        while calls.lock().unwrap().is_empty() {
            tokio::task::yield_now().await;
        }
        (lister, calls, release, first)
    }

    #[tokio::test]
    async fn callers_waiting_behind_a_call_share_the_next_one_and_get_their_own_units() {
        let (lister, calls, release, first) = a_call_under_way().await;
        let waiting: Vec<_> = ["a.service", "b.service", "gone.service"]
            .into_iter()
            .map(|u| {
                let l = lister.clone();
                tokio::spawn(async move { l.list(vec![u.to_string()]).await })
            })
            .collect();
        // Let the three requests reach the queue before the first call returns.
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        assert_eq!(
            first.await.unwrap().unwrap(),
            HashMap::from([("a.service".to_string(), state("active"))])
        );
        let mut answers = Vec::new();
        for w in waiting {
            answers.push(w.await.unwrap().unwrap());
        }
        assert_eq!(
            answers,
            vec![
                HashMap::from([("a.service".to_string(), state("active"))]),
                HashMap::from([("b.service".to_string(), state("inactive"))]),
                HashMap::new(),
            ]
        );
        let calls = calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                vec!["a.service".to_string()],
                vec![
                    "a.service".to_string(),
                    "b.service".to_string(),
                    "gone.service".to_string()
                ],
            ]
        );
    }

    #[tokio::test]
    async fn a_failed_call_fails_every_caller_of_its_batch_and_not_the_next() {
        let (lister, calls, release) = fake();
        release.notify_one();
        let err = lister
            .list(vec!["broken.service".into(), "a.service".into()])
            .await
            .unwrap_err();
        assert!(err.contains("refused"), "{err}");
        assert_eq!(
            lister.list(vec!["b.service".into()]).await.unwrap(),
            HashMap::from([("b.service".to_string(), state("inactive"))])
        );
        assert_eq!(calls.lock().unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_batch_stops_short_of_the_name_limit() {
        let (lister, calls, release, first) = a_call_under_way().await;
        let big: Vec<String> = (0..MAX_NAMES).map(|i| format!("u{i}.service")).collect();
        let (small, large) = (lister.clone(), lister.clone());
        let s = tokio::spawn(async move { small.list(vec!["b.service".into()]).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        let l = tokio::spawn(async move { large.list(big).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        release.notify_one();
        first.await.unwrap().unwrap();
        s.await.unwrap().unwrap();
        assert!(l.await.unwrap().unwrap().is_empty());
        let sizes: Vec<usize> = calls.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![1, 1, MAX_NAMES]);
    }
}
