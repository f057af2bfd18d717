//! A node: one `open_group` session, as one promd process holds it, and every event it
//! reported, stamped with the time it arrived. Every wait has a deadline and panics with the
//! events seen so far when it passes; nothing sleeps to synchronise.

use std::sync::Arc;
use std::time::{Duration, Instant};

use promd::store::{
    GroupSpec, HostId, Leader, LeaderRecord, MaintenanceRecord, MemberRecord, Progress, Store,
    StoreCommand, StoreEvent, ValueError,
};
use tokio::sync::{mpsc, oneshot};

use promd::agent::GroupId;

use super::Link;
use super::records::member;

/// The group id every test passes to `open_group`; events must carry it back.
const ID: GroupId = GroupId(7);

pub struct Node {
    pub name: String,
    /// The node's way to the store, for [`Backend::cut`](super::Backend::cut).
    pub link: Link,
    commands: mpsc::UnboundedSender<Box<StoreCommand>>,
    events: mpsc::UnboundedReceiver<(Instant, StoreEvent)>,
    /// Every event so far, stamped when it arrived.
    pub log: Vec<(Instant, StoreEvent)>,
    /// Events before this index were consumed by [`Node::wait_for`].
    cursor: usize,
    pub progress: Progress,
    /// Set for a node on a runtime of its own (see [`Node::detached`]).
    runtime: Option<Detached>,
}

/// A node whose store task runs on a runtime of its own thread, so that the test can freeze
/// it (like SIGSTOP) or drop it without any cleanup (like SIGKILL).
struct Detached {
    freeze: std::sync::mpsc::Sender<Duration>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What a node is: its group, name, lease and host (machine-id).
#[derive(Clone)]
pub struct Opening<'a> {
    pub group: &'a str,
    pub name: &'a str,
    pub lease: Duration,
    pub host: Option<&'a str>,
    /// The group's floating addresses (their keys are taken with the leader key).
    pub addresses: &'a [std::net::IpAddr],
}

impl Opening<'_> {
    fn spec(&self, progress: Progress) -> GroupSpec {
        GroupSpec {
            group: self.group.to_string(),
            node: self.name.to_string(),
            host: self.host.map(|h| HostId::parse(h).expect("a machine-id")),
            lease: self.lease,
            addresses: self.addresses.to_vec(),
            progress,
        }
    }
}

/// Stamp each event as it arrives on the test's runtime (the test reads them later).
fn stamped(
    mut rx: mpsc::UnboundedReceiver<(GroupId, StoreEvent)>,
) -> mpsc::UnboundedReceiver<(Instant, StoreEvent)> {
    let (tx, events) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some((id, event)) = rx.recv().await {
            assert_eq!(id, ID, "events carry the id given to open_group");
            if tx.send((Instant::now(), event)).is_err() {
                break;
            }
        }
    });
    events
}

impl Node {
    /// A session on the test's own runtime.
    pub fn open(store: &dyn Store, link: Link, how: Opening) -> Node {
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Progress::default();
        let session = store.open_group(how.spec(progress.clone()), ID, tx);
        Node {
            name: how.name.to_string(),
            link,
            commands: session.commands,
            events: stamped(rx),
            log: Vec::new(),
            cursor: 0,
            progress,
            runtime: None,
        }
    }

    /// A session on a runtime of its own thread: see [`Node::freeze`] and [`Node::kill`].
    pub fn detached(store: Arc<dyn Store>, link: Link, how: Opening) -> Node {
        let (tx, rx) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = std::sync::mpsc::channel();
        let (freeze, freezes) = std::sync::mpsc::channel::<Duration>();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let progress = Progress::default();
        let spec = how.spec(progress.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let session = store.open_group(spec, ID, tx);
                let _ = commands_tx.send(session.commands);
                loop {
                    // Check for a freeze request every few ms; block the whole runtime for it.
                    tokio::select! {
                        _ = &mut stopped => return,
                        _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                    }
                    if let Ok(d) = freezes.try_recv() {
                        std::thread::sleep(d);
                    }
                }
            });
            // Dropping the runtime drops the store task: no cleanup, no more renewals.
        });
        let commands = commands_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("detached node started");
        Node {
            name: how.name.to_string(),
            link,
            commands,
            events: stamped(rx),
            log: Vec::new(),
            cursor: 0,
            progress,
            runtime: Some(Detached {
                freeze,
                stop: Some(stop),
                thread: Some(thread),
            }),
        }
    }

    pub fn send(&self, command: StoreCommand) {
        self.commands
            .send(Box::new(command))
            .expect("store task alive");
    }

    /// Ask for the leader key (answered later: see [`Node::campaigned`]).
    pub fn campaign(&self) {
        self.campaign_on(None);
    }

    /// Ask for the leader key with a record that names this node's `host`.
    pub fn campaign_on(&self, host: Option<&str>) {
        self.campaign_with(host, 0);
    }

    /// Ask for the leader key at a term above `floor` (what the campaigner knows to have
    /// been handed out already).
    pub fn campaign_above(&self, floor: u64) {
        self.campaign_with(None, floor);
    }

    fn campaign_with(&self, host: Option<&str>, floor: u64) {
        self.send(StoreCommand::Campaign {
            record: LeaderRecord {
                v: 1,
                node: self.name.clone(),
                priority: 100,
                host: host.map(str::to_string),
                term: None,
            },
            floor,
            claim: MemberRecord {
                role: promd::core::Role::Promoting,
                host: host.map(str::to_string),
                ..member(&self.name)
            },
        });
    }

    /// Campaign, and the answer.
    pub async fn try_campaign(&mut self) -> Option<u64> {
        self.campaign();
        self.campaigned().await
    }

    pub fn publish(&self) {
        self.send(StoreCommand::Publish(member(&self.name)));
    }

    /// Release `term` and wait for the answer.
    pub async fn release(&mut self, term: u64) -> Instant {
        self.send(StoreCommand::Release { term });
        self.wait_for(secs(5.0), "Released", |e| *e == StoreEvent::Released)
            .await
            .0
    }

    fn receive(&mut self, item: (Instant, StoreEvent)) {
        self.log.push(item);
    }

    /// Take in everything that has arrived so far.
    pub fn drain(&mut self) {
        while let Ok(item) = self.events.try_recv() {
            self.receive(item);
        }
    }

    /// The events from `from` on, renewals left out (for failure messages).
    pub fn dump(&self, from: usize) -> Vec<&(Instant, StoreEvent)> {
        self.log[from.min(self.log.len())..]
            .iter()
            .filter(|(_, e)| !matches!(e, StoreEvent::Renewed { .. }))
            .collect()
    }

    /// Receive events until `done` says so, at most `within`.
    pub async fn until<T>(
        &mut self,
        within: Duration,
        what: &str,
        done: impl Fn(&Node) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            self.drain();
            if let Some(v) = done(self) {
                return v;
            }
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(item)) => self.receive(item),
                Ok(None) => panic!("{}: event stream ended waiting for {what}", self.name),
                Err(_) => panic!(
                    "{}: no {what} within {within:?}; events (renewals left out): {:#?}",
                    self.name,
                    self.dump(0)
                ),
            }
        }
    }

    /// The first event after the cursor that matches, waiting at most `within` for it; the
    /// cursor moves past it.
    pub async fn wait_for(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&StoreEvent) -> bool,
    ) -> (Instant, StoreEvent) {
        let found = self
            .until(within, what, |n| {
                (n.cursor..n.log.len()).find(|&i| pred(&n.log[i].1))
            })
            .await;
        self.cursor = found + 1;
        self.log[found].clone()
    }

    /// Move the cursor past everything received so far.
    pub fn skip(&mut self) {
        self.drain();
        self.cursor = self.log.len();
    }

    pub async fn up(&mut self, within: Duration) -> Instant {
        self.wait_for(within, "Up", |e| *e == StoreEvent::Up)
            .await
            .0
    }

    /// The next `Down` after the cursor: when, and why.
    pub async fn down(&mut self, within: Duration) -> (Instant, promd::store::StoreError) {
        match self
            .wait_for(within, "Down", |e| matches!(e, StoreEvent::Down(_)))
            .await
        {
            (at, StoreEvent::Down(why)) => (at, why),
            _ => unreachable!(),
        }
    }

    /// The next `Renewed` after the cursor: its send time.
    pub async fn renewed(&mut self, within: Duration) -> Instant {
        match self
            .wait_for(within, "Renewed", |e| {
                matches!(e, StoreEvent::Renewed { .. })
            })
            .await
            .1
        {
            StoreEvent::Renewed { sent_at } => sent_at,
            _ => unreachable!(),
        }
    }

    pub async fn lease_lost(&mut self, within: Duration) -> Instant {
        self.wait_for(within, "LeaseLost", |e| *e == StoreEvent::LeaseLost)
            .await
            .0
    }

    pub async fn campaigned(&mut self) -> Option<u64> {
        match self
            .wait_for(secs(5.0), "Campaigned", |e| {
                matches!(e, StoreEvent::Campaigned(_))
            })
            .await
            .1
        {
            StoreEvent::Campaigned(term) => term,
            _ => unreachable!(),
        }
    }

    /// The last `Leader` event, and when it arrived.
    pub fn leader(&self) -> Option<(Instant, Option<&Leader>)> {
        self.log.iter().rev().find_map(|(at, e)| match e {
            StoreEvent::Leader(l) => Some((*at, l.as_ref())),
            _ => None,
        })
    }

    /// Wait until the last `Leader` event matches; when it arrived.
    pub async fn leader_where(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(Option<&Leader>) -> bool,
    ) -> Instant {
        self.until(within, what, |n| {
            n.leader().and_then(|(at, l)| pred(l).then_some(at))
        })
        .await
    }

    pub async fn leader_is(&mut self, within: Duration, node: &str, term: u64) -> Instant {
        self.leader_where(within, &format!("Leader({node}, {term})"), |l| {
            l.is_some_and(|l| l.node == node && l.term == term)
        })
        .await
    }

    pub async fn leader_none(&mut self, within: Duration) -> Instant {
        self.leader_where(within, "Leader(None)", |l| l.is_none())
            .await
    }

    /// The last `Members` event.
    pub fn members(&self) -> Option<&[MemberRecord]> {
        self.log.iter().rev().find_map(|(_, e)| match e {
            StoreEvent::Members(m) => Some(m.as_slice()),
            _ => None,
        })
    }

    /// Wait until the last `Members` event matches.
    pub async fn members_where(
        &mut self,
        within: Duration,
        what: &str,
        pred: impl Fn(&[MemberRecord]) -> bool,
    ) {
        self.until(within, what, |n| n.members().filter(|m| pred(m)).map(drop))
            .await;
    }

    /// Wait until the last `Members` event names exactly these nodes, in this order.
    pub async fn members_are(&mut self, within: Duration, nodes: &[&str]) {
        self.members_where(within, &format!("Members = {nodes:?}"), |m| {
            m.iter().map(|r| r.node.as_str()).eq(nodes.iter().copied())
        })
        .await;
    }

    /// The next `Maintenance` event after the cursor, and when it arrived.
    pub async fn next_maintenance(
        &mut self,
        within: Duration,
    ) -> (Instant, Option<MaintenanceRecord>) {
        match self
            .wait_for(within, "Maintenance", |e| {
                matches!(e, StoreEvent::Maintenance(_))
            })
            .await
        {
            (at, StoreEvent::Maintenance(m)) => (at, m),
            _ => unreachable!(),
        }
    }

    /// Every `Corrupt` event so far: (key, error).
    pub fn corrupt(&self) -> Vec<(&str, &ValueError)> {
        self.log
            .iter()
            .filter_map(|(_, e)| match e {
                StoreEvent::Corrupt { key, error } => Some((key.as_str(), error)),
                _ => None,
            })
            .collect()
    }

    /// Wait for a `Corrupt` event about the key whose name ends with `suffix` (see
    /// [`Key::suffix`](super::Key::suffix)) after the cursor; its error.
    pub async fn corrupt_reported(&mut self, within: Duration, suffix: &str) -> ValueError {
        let what = format!("Corrupt …{suffix}");
        match self
            .wait_for(
                within,
                &what,
                |e| matches!(e, StoreEvent::Corrupt { key, .. } if key.ends_with(suffix)),
            )
            .await
            .1
        {
            StoreEvent::Corrupt { error, .. } => error,
            _ => unreachable!(),
        }
    }

    /// Collect events for `period` (an observation window, not a synchronisation).
    pub async fn watch_for(&mut self, period: Duration) {
        let deadline = tokio::time::Instant::now() + period;
        while let Ok(Some(item)) = tokio::time::timeout_at(deadline, self.events.recv()).await {
            self.receive(item);
        }
    }

    /// No event at all after the cursor that `bad` flags, for `during`.
    pub async fn never(&mut self, during: Duration, bad: impl Fn(&StoreEvent) -> bool) {
        self.watch_for(during).await;
        if let Some((_, e)) = self.log[self.cursor..].iter().find(|(_, e)| bad(e)) {
            panic!("{}: unexpected {e:?}", self.name);
        }
    }

    /// Wait until the store task has ended (its event channel closes), at most `within`.
    pub async fn ended(&mut self, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            match tokio::time::timeout_at(deadline, self.events.recv()).await {
                Ok(Some(item)) => self.receive(item),
                Ok(None) => return,
                Err(_) => panic!("{}: task still running after {within:?}", self.name),
            }
        }
    }

    /// The send times of every renewal so far.
    pub fn renewals(&self) -> Vec<Instant> {
        self.log
            .iter()
            .filter_map(|(_, e)| match e {
                StoreEvent::Renewed { sent_at } => Some(*sent_at),
                _ => None,
            })
            .collect()
    }

    /// The events that arrived at `t` or later.
    pub fn events_since(&self, t: Instant) -> Vec<&StoreEvent> {
        self.log
            .iter()
            .filter(|(at, _)| *at >= t)
            .map(|(_, e)| e)
            .collect()
    }

    /// The kinds of the events from `from` on, renewals left out.
    pub fn kinds_since(&self, from: usize) -> Vec<&'static str> {
        self.log[from.min(self.log.len())..]
            .iter()
            .map(|(_, e)| e.kind())
            .filter(|k| *k != "Renewed")
            .collect()
    }

    /// Freeze a detached node's runtime for `d` (like SIGSTOP and SIGCONT).
    pub fn freeze(&self, d: Duration) {
        let detached = self.runtime.as_ref().expect("a detached node");
        detached.freeze.send(d).expect("runtime thread alive");
    }

    /// Drop a detached node's runtime: the store task goes as it stands (like SIGKILL).
    pub fn kill(&mut self) {
        let detached = self.runtime.as_mut().expect("a detached node");
        if let Some(stop) = detached.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = detached.thread.take() {
            thread.join().expect("runtime thread");
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.runtime.is_some() {
            self.kill();
        }
    }
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}
