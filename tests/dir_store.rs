//! The directory store against real files: several sessions of one group in one test, each
//! with its own session id, as separate promd processes would have.
//!
//! Every wait is on an event with a deadline; nothing sleeps to synchronise.

#[path = "support/records.rs"]
mod records;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use promd::agent::GroupId;
use promd::store::dir::DirStore;
use promd::store::{
    GroupSpec, HostId, Leader, LeaderRecord, MaintenanceRecord, Progress, Store, StoreCommand,
    StoreEvent, SwitchoverRecord, UNREADABLE_NODE,
};
use records::{HOST_A, HOST_B, member, member_on};
use tokio::sync::{mpsc, oneshot};

const GROUP: &str = "web";
const LEASE: Duration = Duration::from_secs(1);
/// Generous for anything that should happen "at once" (a poll is 100 ms at most).
const PROMPT: Duration = Duration::from_millis(200);

fn spec(node: &str) -> GroupSpec {
    spec_with(node, Progress::default())
}

fn spec_with(node: &str, progress: Progress) -> GroupSpec {
    GroupSpec {
        group: GROUP.into(),
        node: node.into(),
        host: None,
        lease: LEASE,
        progress,
    }
}

fn leader_record(node: &str) -> LeaderRecord {
    LeaderRecord {
        v: 1,
        node: node.into(),
        priority: 100,
        host: None,
    }
}

fn maintenance(on: bool, by: &str) -> MaintenanceRecord {
    MaintenanceRecord {
        v: 1,
        on,
        by: by.into(),
    }
}

fn group_dir(root: &Path) -> PathBuf {
    root.join(GROUP)
}

fn wall_us(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(0)
}

/// One session of the group, as one promd process would hold it.
struct Node {
    name: String,
    commands: mpsc::UnboundedSender<StoreCommand>,
    events: mpsc::UnboundedReceiver<(GroupId, StoreEvent)>,
    /// Every event received, in order.
    log: Vec<StoreEvent>,
    /// Set for a node on its own runtime (see [`Node::detached`]).
    runtime: Option<Detached>,
    /// What the store reported so far, whether or not a wait was looking for it.
    seen: Seen,
}

/// The group as a node's store last reported it.
#[derive(Debug, Default)]
struct Seen {
    leader: Option<Option<Leader>>,
    members: Option<Vec<String>>,
    switchover: Option<Option<SwitchoverRecord>>,
    /// Every `Corrupt` event: (key, error).
    corrupt: Vec<(String, String)>,
}

impl Seen {
    fn observe(&mut self, event: &StoreEvent) {
        match event {
            StoreEvent::Leader(l) => self.leader = Some(l.clone()),
            StoreEvent::Members(m) => {
                self.members = Some(m.iter().map(|r| r.node.clone()).collect())
            }
            StoreEvent::Switchover(s) => self.switchover = Some(s.clone()),
            StoreEvent::Corrupt { key, error } => self.corrupt.push((key.clone(), error.clone())),
            _ => {}
        }
    }
}

/// A node whose store task runs on a runtime of its own thread, so that the test can freeze
/// it (like SIGSTOP) or stop it without any cleanup (like SIGKILL).
struct Detached {
    freeze: std::sync::mpsc::Sender<Duration>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Node {
    /// A session on the test's own runtime.
    fn start(root: &Path, name: &str) -> Node {
        Node::start_with(root, name, Progress::default())
    }

    fn start_with(root: &Path, name: &str, progress: Progress) -> Node {
        Node::start_spec(root, name, spec_with(name, progress))
    }

    /// A session of a promd on the host with machine-id `host`.
    fn start_on(root: &Path, name: &str, host: &str) -> Node {
        let spec = GroupSpec {
            host: Some(HostId::parse(host).expect("a machine-id")),
            ..spec(name)
        };
        Node::start_spec(root, name, spec)
    }

    fn start_spec(root: &Path, name: &str, spec: GroupSpec) -> Node {
        let (tx, events) = mpsc::unbounded_channel();
        let session = DirStore::new(root.to_path_buf()).open_group(spec, GroupId(0), tx);
        Node {
            name: name.into(),
            commands: session.commands,
            events,
            log: Vec::new(),
            runtime: None,
            seen: Seen::default(),
        }
    }

    fn detached(root: &Path, name: &str) -> Node {
        let (tx, events) = mpsc::unbounded_channel();
        let (commands_tx, commands_rx) = std::sync::mpsc::channel();
        let (freeze, freezes) = std::sync::mpsc::channel::<Duration>();
        let (stop, mut stopped) = oneshot::channel::<()>();
        let root = root.to_path_buf();
        let spec = spec(name);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let session = DirStore::new(root).open_group(spec, GroupId(0), tx);
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
            name: name.into(),
            commands,
            events,
            log: Vec::new(),
            runtime: Some(Detached {
                freeze,
                stop: Some(stop),
                thread: Some(thread),
            }),
            seen: Seen::default(),
        }
    }

    fn send(&self, command: StoreCommand) {
        self.commands.send(command).expect("store task alive");
    }

    /// The next event before `deadline`, taken into `seen`.
    async fn next_event(&mut self, deadline: tokio::time::Instant) -> Option<StoreEvent> {
        match tokio::time::timeout_at(deadline, self.events.recv()).await {
            Ok(Some((_, event))) => {
                self.seen.observe(&event);
                self.log.push(event.clone());
                Some(event)
            }
            Ok(None) => panic!("{}: event channel closed", self.name),
            Err(_) => None,
        }
    }

    /// The next event that `pick` accepts, within `within`; the others are skipped.
    async fn wait_for<T>(
        &mut self,
        within: Duration,
        mut pick: impl FnMut(&StoreEvent) -> Option<T>,
    ) -> T {
        let deadline = tokio::time::Instant::now() + within;
        let mut skipped = Vec::new();
        loop {
            let Some(event) = self.next_event(deadline).await else {
                panic!(
                    "{}: no matching event within {within:?}; skipped {skipped:?}",
                    self.name
                );
            };
            match pick(&event) {
                Some(found) => return found,
                None => skipped.push(event),
            }
        }
    }

    /// Wait until what the store reported satisfies `done` (perhaps it already does).
    async fn until(&mut self, within: Duration, what: &str, done: impl Fn(&Seen) -> bool) {
        let deadline = tokio::time::Instant::now() + within;
        while !done(&self.seen) {
            if self.next_event(deadline).await.is_none() {
                panic!(
                    "{}: not {what} within {within:?}: {:?}",
                    self.name, self.seen
                );
            }
        }
    }

    /// Take in every event already queued; returns the latest renewal among them.
    fn drain(&mut self) -> Option<Instant> {
        let mut latest = None;
        while let Ok((_, event)) = self.events.try_recv() {
            self.seen.observe(&event);
            self.log.push(event.clone());
            if let StoreEvent::Renewed { sent_at } = event {
                latest = Some(sent_at);
            }
        }
        latest
    }

    async fn up(&mut self) {
        self.wait_for(Duration::from_secs(2), |e| {
            (*e == StoreEvent::Up).then_some(())
        })
        .await;
    }

    async fn renewed(&mut self, within: Duration) -> Instant {
        self.wait_for(within, |e| match e {
            StoreEvent::Renewed { sent_at } => Some(*sent_at),
            _ => None,
        })
        .await
    }

    async fn campaign(&mut self) -> Option<u64> {
        self.send(StoreCommand::Campaign(leader_record(&self.name)));
        self.campaigned().await
    }

    async fn campaigned(&mut self) -> Option<u64> {
        self.wait_for(Duration::from_secs(1), |e| match e {
            StoreEvent::Campaigned(result) => Some(*result),
            _ => None,
        })
        .await
    }

    async fn release(&mut self, term: u64) {
        self.send(StoreCommand::Release { term });
        self.wait_for(Duration::from_secs(1), |e| {
            (*e == StoreEvent::Released).then_some(())
        })
        .await;
    }

    async fn sees_leader(&mut self, within: Duration, want: Option<Leader>) {
        let what = format!("leader {want:?}");
        self.until(within, &what, |s| s.leader.as_ref() == Some(&want))
            .await;
    }

    async fn sees_members(&mut self, within: Duration, want: &[&str]) {
        let what = format!("members {want:?}");
        self.until(within, &what, |s| {
            s.members.as_ref().is_some_and(|m| m.iter().eq(want.iter()))
        })
        .await;
    }

    /// The error reported for the file whose path ends with `file`.
    async fn sees_corrupt(&mut self, file: &str) -> String {
        let reported = |s: &Seen| s.corrupt.iter().find(|(k, _)| k.ends_with(file)).cloned();
        self.until(Duration::from_secs(1), &format!("{file} corrupt"), |s| {
            reported(s).is_some()
        })
        .await;
        reported(&self.seen).map(|(_, e)| e).unwrap_or_default()
    }

    /// No event at all that `bad` flags, for `during`.
    async fn never(&mut self, during: Duration, bad: impl Fn(&StoreEvent) -> bool) {
        let deadline = tokio::time::Instant::now() + during;
        while let Some(event) = self.next_event(deadline).await {
            assert!(!bad(&event), "{}: unexpected {event:?}", self.name);
        }
    }

    /// The next `Maintenance` event, within `within`.
    async fn maintenance(&mut self, within: Duration) -> Option<MaintenanceRecord> {
        self.wait_for(within, |e| match e {
            StoreEvent::Maintenance(m) => Some(m.clone()),
            _ => None,
        })
        .await
    }

    /// Wait until the store task has ended (its event channel closes).
    async fn ended(&mut self, within: Duration) {
        let end = tokio::time::timeout(within, async {
            while let Some((_, event)) = self.events.recv().await {
                self.log.push(event);
            }
        });
        end.await
            .unwrap_or_else(|_| panic!("{}: task still running after {within:?}", self.name));
    }

    fn freeze(&self, d: Duration) {
        let detached = self.runtime.as_ref().expect("a detached node");
        detached.freeze.send(d).expect("runtime thread alive");
    }

    /// Stop the node's runtime: the store task is dropped as it stands.
    fn kill(&mut self) {
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

async fn start_published(root: &Path, names: &[&str]) -> Vec<Node> {
    let mut nodes: Vec<Node> = names.iter().map(|n| Node::start(root, n)).collect();
    for node in &mut nodes {
        node.up().await;
        node.send(StoreCommand::Publish(member(&node.name)));
    }
    nodes
}

#[tokio::test]
async fn five_contenders_elect_exactly_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let names = ["n1", "n2", "n3", "n4", "n5"];
    let mut nodes = start_published(dir.path(), &names).await;
    for node in &nodes {
        node.send(StoreCommand::Campaign(leader_record(&node.name)));
    }
    let mut winners = Vec::new();
    for node in &mut nodes {
        if let Some(term) = node.campaigned().await {
            winners.push((node.name.clone(), term));
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (winner, term) = winners.remove(0);
    assert_eq!(term, 1);
    let want = Some(Leader {
        node: winner,
        term,
        host: None,
    });
    for node in &mut nodes {
        node.sees_leader(PROMPT, want.clone()).await;
        node.sees_members(Duration::from_secs(1), &names).await;
    }
}

#[tokio::test]
async fn term_grows_across_releases_and_recampaigns() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_published(dir.path(), &["a", "b"]).await;
    let mut terms = Vec::new();
    for round in 0..4 {
        let node = &mut nodes[round % 2];
        let term = node.campaign().await.expect("a vacant key is won");
        node.release(term).await;
        terms.push(term);
    }
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "terms: {terms:?}");
    let counter = fs::read_to_string(group_dir(dir.path()).join("term")).expect("term file");
    assert_eq!(counter, format!(r#"{{"v":1,"term":{}}}"#, terms[3]));
    // Released: both see the key vacant.
    for node in &mut nodes {
        node.sees_leader(PROMPT, None).await;
    }
}

#[tokio::test]
async fn a_dead_leader_loses_the_key_after_the_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut standby = start_published(dir.path(), &["standby"]).await.remove(0);
    let mut leader = Node::detached(dir.path(), "dead");
    leader.up().await;
    leader.send(StoreCommand::Publish(member("dead")));
    let term = leader.campaign().await.expect("won");
    standby
        .sees_leader(
            PROMPT,
            Some(Leader {
                node: "dead".into(),
                term,
                host: None,
            }),
        )
        .await;
    // Kill it right after a fresh renewal: the next one would be a third of a lease away, so
    // that renewal is its last.
    leader.drain();
    let renewed = leader.renewed(LEASE).await;
    leader.kill();
    let last = leader.drain().map_or(renewed, |later| later.max(renewed));

    standby
        .sees_leader(LEASE + Duration::from_secs(1), None)
        .await;
    let after = last.elapsed();
    assert!(after >= LEASE, "key gone {after:?} after the last renewal");
    assert!(
        after <= LEASE + Duration::from_millis(300),
        "key gone only {after:?} after the last renewal"
    );
    standby.sees_members(PROMPT, &["standby"]).await;
    let next = standby.campaign().await.expect("an expired key is won");
    assert!(next > term);
}

#[tokio::test]
async fn a_frozen_leader_finds_its_session_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut standby = start_published(dir.path(), &["standby"]).await.remove(0);
    let mut leader = Node::detached(dir.path(), "frozen");
    leader.up().await;
    let term = leader.campaign().await.expect("won");
    let held = Some(Leader {
        node: "frozen".into(),
        term,
        host: None,
    });
    standby.sees_leader(PROMPT, held).await;
    leader.drain();
    leader.renewed(LEASE).await;
    leader.freeze(LEASE + Duration::from_millis(500));

    standby
        .sees_leader(LEASE + Duration::from_secs(1), None)
        .await;
    let taken = standby
        .campaign()
        .await
        .expect("the frozen leader's key expired");
    assert!(taken > term);

    // Thawed: its session expired while it was frozen. It says so and starts a new one.
    leader
        .wait_for(Duration::from_secs(2), |e| {
            (*e == StoreEvent::LeaseLost).then_some(())
        })
        .await;
    leader.up().await;
    leader.renewed(PROMPT).await;
    leader
        .sees_leader(
            PROMPT,
            Some(Leader {
                node: "standby".into(),
                term: taken,
                host: None,
            }),
        )
        .await;
}

#[tokio::test]
async fn a_replaced_leader_file_means_the_lease_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = start_published(dir.path(), &["a"]).await.remove(0);
    let term = a.campaign().await.expect("won");
    let far = wall_us(SystemTime::now() + Duration::from_secs(60));
    let intruder = format!(
        r#"{{"v":1,"term":{},"session":"intruder","expires":{far},"record":{{"v":1,"node":"z","priority":1}}}}"#,
        term + 5
    );
    fs::write(group_dir(dir.path()).join("leader"), intruder).expect("write");
    a.sees_leader(
        PROMPT,
        Some(Leader {
            node: "z".into(),
            term: term + 5,
            host: None,
        }),
    )
    .await;
    a.wait_for(LEASE, |e| (*e == StoreEvent::LeaseLost).then_some(()))
        .await;
    a.up().await;
    // The intruder's file is not ours: left alone.
    let text = fs::read_to_string(group_dir(dir.path()).join("leader")).expect("leader");
    assert!(text.contains("intruder"));
}

#[tokio::test]
async fn a_corrupt_leader_file_blocks_campaigns_until_mtime_plus_lease() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = group_dir(dir.path());
    fs::create_dir(&group).expect("mkdir");
    fs::write(group.join("term"), r#"{"v":1,"term":7}"#).expect("write");
    let leader_file = group.join("leader");
    fs::write(&leader_file, "not json at all").expect("write");
    // Written "half a lease ago", so the test waits half a lease.
    let mtime = SystemTime::now() - LEASE / 2;
    fs::File::options()
        .write(true)
        .open(&leader_file)
        .and_then(|f| f.set_modified(mtime))
        .expect("set mtime");

    let mut a = Node::start(dir.path(), "a");
    let error = a.sees_corrupt("/web/leader").await;
    assert!(error.contains("not promd JSON"), "{error}");
    let unreadable = Some(Leader {
        node: UNREADABLE_NODE.into(),
        term: 7,
        host: None,
    });
    a.sees_leader(PROMPT, unreadable).await;
    assert_eq!(a.campaign().await, None, "an unreadable leader is a leader");

    a.sees_leader(LEASE, None).await;
    assert!(
        SystemTime::now() >= mtime + LEASE,
        "vacant before the file's mtime + lease"
    );
    assert_eq!(a.campaign().await, Some(8));
    a.sees_leader(
        PROMPT,
        Some(Leader {
            node: "a".into(),
            term: 8,
            host: None,
        }),
    )
    .await;
}

#[tokio::test]
async fn corrupt_and_foreign_member_files_are_left_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = group_dir(dir.path()).join("members");
    fs::create_dir_all(&members).expect("mkdir");
    let far = wall_us(SystemTime::now() + Duration::from_secs(60));
    let record = |v: u32, node: &str| {
        format!(
            r#"{{"v":{v},"session":"s1","expires":{far},"record":{{"v":1,"node":"{node}","priority":1,"eligible":true,"healthy":true,"role":"passive"}}}}"#
        )
    };
    fs::write(members.join("garbage"), "{").expect("write");
    fs::write(members.join("future"), record(2, "future")).expect("write");
    fs::write(members.join("liar"), record(1, "someone")).expect("write");
    fs::write(members.join("fine"), record(1, "fine")).expect("write");
    fs::write(members.join(".fine.tmp"), "half written").expect("write");

    let mut a = start_published(dir.path(), &["a"]).await.remove(0);
    a.sees_members(PROMPT, &["a", "fine"]).await;
    a.never(
        Duration::from_millis(400),
        |e| matches!(e, StoreEvent::Members(m) if m.len() != 2),
    )
    .await;
    let corrupt = a.seen.corrupt.clone();
    // Each reported once, however often it was read.
    let keys: Vec<&str> = corrupt.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys.len(), 3, "{corrupt:?}");
    for (file, expected) in [
        ("garbage", "not promd JSON"),
        ("future", "format version 2"),
        ("liar", "names node \"someone\""),
    ] {
        let (_, error) = corrupt
            .iter()
            .find(|(k, _)| k.ends_with(&format!("/members/{file}")))
            .unwrap_or_else(|| panic!("{file} not reported: {corrupt:?}"));
        assert!(error.contains(expected), "{file}: {error}");
    }
}

#[tokio::test]
async fn a_foreign_leader_version_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let group = group_dir(dir.path());
    fs::create_dir(&group).expect("mkdir");
    let far = wall_us(SystemTime::now() + Duration::from_secs(60));
    fs::write(
        group.join("leader"),
        format!(
            r#"{{"v":2,"term":3,"session":"s1","expires":{far},"record":{{"v":1,"node":"x","priority":1}}}}"#
        ),
    )
    .expect("write");
    let mut a = Node::start(dir.path(), "a");
    let error = a.sees_corrupt("/web/leader").await;
    assert!(error.contains("format version 2"), "{error}");
    a.sees_leader(
        PROMPT,
        Some(Leader {
            node: UNREADABLE_NODE.into(),
            term: 0,
            host: None,
        }),
    )
    .await;
    assert_eq!(a.campaign().await, None);
    // Never overwritten while it may be someone's.
    let text = fs::read_to_string(group.join("leader")).expect("leader");
    assert!(text.starts_with(r#"{"v":2"#));
}

#[tokio::test]
async fn a_release_by_a_non_holder_keeps_the_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_published(dir.path(), &["a", "b"]).await;
    let term = nodes[0].campaign().await.expect("won");
    let held = Some(Leader {
        node: "a".into(),
        term,
        host: None,
    });
    nodes[1].sees_leader(PROMPT, held.clone()).await;
    // b answers Released (the key is not b's, whatever it holds) but deletes nothing.
    nodes[1].release(term).await;
    nodes[1].release(term + 1).await;
    let [a, b] = &mut nodes[..] else {
        unreachable!()
    };
    let not_vacant = |e: &StoreEvent| matches!(e, StoreEvent::Leader(None) | StoreEvent::LeaseLost);
    b.never(Duration::from_millis(300), not_vacant).await;
    a.never(Duration::from_millis(100), not_vacant).await;
    assert!(group_dir(dir.path()).join("leader").exists());
    // The holder's own release does delete it.
    a.release(term).await;
    b.sees_leader(PROMPT, None).await;
}

#[tokio::test]
async fn shutdown_removes_the_member_and_leader_files_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_published(dir.path(), &["a", "b"]).await;
    let term = nodes[1].campaign().await.expect("won");
    let [a, b] = &mut nodes[..] else {
        unreachable!()
    };
    a.sees_members(Duration::from_secs(1), &["a", "b"]).await;
    a.sees_leader(
        PROMPT,
        Some(Leader {
            node: "b".into(),
            term,
            host: None,
        }),
    )
    .await;

    let sent = Instant::now();
    b.send(StoreCommand::Shutdown);
    a.sees_members(PROMPT, &["a"]).await;
    a.sees_leader(PROMPT, None).await;
    assert!(sent.elapsed() < PROMPT, "{:?}", sent.elapsed());
    assert!(!group_dir(dir.path()).join("members/b").exists());
    // The task ended: its event channel closes.
    let end = tokio::time::timeout(Duration::from_secs(1), async {
        while b.events.recv().await.is_some() {}
    });
    end.await.expect("b's task ended");
}

#[tokio::test]
async fn a_switchover_request_is_seen_and_cleared() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = start_published(dir.path(), &["a", "b"]).await;
    let request = SwitchoverRecord {
        v: 1,
        to: "a".into(),
        from: "b".into(),
    };
    nodes[0].send(StoreCommand::RequestSwitchover(request.clone()));
    nodes[1]
        .wait_for(PROMPT, |e| {
            (*e == StoreEvent::Switchover(Some(request.clone()))).then_some(())
        })
        .await;
    nodes[1].send(StoreCommand::ClearSwitchover);
    nodes[0]
        .wait_for(PROMPT, |e| {
            (*e == StoreEvent::Switchover(None)).then_some(())
        })
        .await;
}

#[tokio::test]
async fn a_missing_root_is_down_until_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("not-yet");
    let progress = Progress::default();
    let mut a = Node::start_with(&root, "a", progress.clone());
    let reason = a
        .wait_for(Duration::from_secs(1), |e| match e {
            StoreEvent::Down(reason) => Some(reason.clone()),
            _ => None,
        })
        .await;
    assert!(reason.contains("does not exist"), "{reason}");
    // Down, but the task still turns: the runtime keeps pinging the watchdog.
    a.never(Duration::from_millis(300), |e| *e == StoreEvent::Up)
        .await;
    let age = progress.age().expect("beaten");
    assert!(age < Duration::from_millis(150), "last beat {age:?} ago");
    a.send(StoreCommand::Publish(member("a")));
    assert_eq!(a.campaign().await, None, "nothing is won while down");
    fs::create_dir(&root).expect("mkdir");
    a.up().await;
    a.sees_members(PROMPT, &["a"]).await;
    // 0750, less whatever the umask takes away: never more.
    let mode = fs::metadata(root.join(GROUP)).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    let mode = mode.expect("group dir");
    assert_eq!(mode & !0o750, 0, "mode {mode:o}");
}

/// Maintenance mode is a file bound to no session: set by one session, seen by every session
/// of the group, still there after its setter shut down and removed its files, reported to a
/// new session after `Switchover`, and cleared (deleted) by anyone. An unreadable file is
/// reported and taken as on; clearing deletes it too. A change asked for right before a
/// shutdown is written before the session leaves.
#[tokio::test]
async fn maintenance_outlives_the_session_that_set_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = group_dir(dir.path()).join("maintenance");
    let mut nodes = start_published(dir.path(), &["a", "b"]).await;
    for n in &mut nodes {
        assert_eq!(
            n.maintenance(PROMPT).await,
            None,
            "{}: off at first",
            n.name
        );
    }
    let on = maintenance(true, "a");
    nodes[0].send(StoreCommand::SetMaintenance(on.clone()));
    for n in &mut nodes {
        assert_eq!(n.maintenance(PROMPT).await, Some(on.clone()), "{}", n.name);
    }
    let b_mark = nodes[1].log.len();
    let text = fs::read_to_string(&file).expect("maintenance file");
    assert_eq!(text, r#"{"v":1,"record":{"v":1,"on":true,"by":"a"}}"#);

    // A leaves: its session's files are deleted, the task ends; the maintenance file stays.
    let mut b = nodes.pop().expect("b");
    let mut a = nodes.pop().expect("a");
    b.sees_members(Duration::from_secs(1), &["a", "b"]).await;
    a.send(StoreCommand::Shutdown);
    a.ended(Duration::from_secs(1)).await;
    assert!(!group_dir(dir.path()).join("members/a").exists());
    b.sees_members(PROMPT, &["b"]).await;
    // The read that showed a gone showed the maintenance file too (a change would follow
    // `Members` in the same report): no change.
    b.drain();
    assert!(
        !b.log[b_mark..]
            .iter()
            .any(|e| matches!(e, StoreEvent::Maintenance(_))),
        "{:?}",
        &b.log[b_mark..]
    );
    assert!(file.exists(), "the maintenance file outlived a's session");

    // A new session: the file is reported after connecting, in the contract's order.
    let mut c = Node::start(dir.path(), "c");
    assert_eq!(c.maintenance(PROMPT).await, Some(on.clone()));
    let order: Vec<&str> = c
        .log
        .iter()
        .map(StoreEvent::kind)
        .filter(|k| *k != "Renewed")
        .collect();
    assert_eq!(
        order,
        ["Up", "Leader", "Members", "Switchover", "Maintenance"]
    );

    c.send(StoreCommand::SetMaintenance(maintenance(false, "c")));
    for n in [&mut b, &mut c] {
        assert_eq!(n.maintenance(PROMPT).await, None, "{}", n.name);
    }
    assert!(!file.exists(), "off is the file's absence");

    // An unreadable file: reported, and taken as on, by a running session and a new one.
    fs::write(&file, "not json").expect("write");
    let unreadable = Some(maintenance(true, UNREADABLE_NODE));
    for n in [&mut b, &mut c] {
        let error = n.sees_corrupt("/web/maintenance").await;
        assert!(error.contains("not promd JSON"), "{error}");
        assert_eq!(n.maintenance(PROMPT).await, unreadable, "{}", n.name);
    }
    let mut d = Node::start(dir.path(), "d");
    d.sees_corrupt("/web/maintenance").await;
    assert_eq!(d.maintenance(PROMPT).await, unreadable);
    // Turning maintenance off clears an unreadable file too.
    d.send(StoreCommand::SetMaintenance(maintenance(false, "d")));
    for n in [&mut b, &mut c, &mut d] {
        assert_eq!(n.maintenance(PROMPT).await, None, "{}", n.name);
    }
    assert!(!file.exists());

    // Asked for right before a shutdown: written before the session leaves.
    // (Behind another write, so that it is likely still queued when the shutdown comes.)
    let on_d = maintenance(true, "d");
    d.send(StoreCommand::Publish(member("d")));
    d.send(StoreCommand::SetMaintenance(on_d.clone()));
    d.send(StoreCommand::Shutdown);
    d.ended(Duration::from_secs(1)).await;
    assert!(file.exists(), "written before d left");
    assert_eq!(b.maintenance(PROMPT).await, Some(on_d));
}

/// Two hosts configured with one `node` (sharing the directory over NFS): the second host's
/// promd neither overwrites the first's member file nor releases its leader key, though both
/// name node n1. A later run on the first host itself (its session still live, as after a
/// kill -9) replaces the member file at once.
#[tokio::test]
async fn a_node_name_held_by_another_host_is_never_taken_over() {
    let dir = tempfile::tempdir().expect("tempdir");
    let member_file = group_dir(dir.path()).join("members/n1");
    let mut a = Node::start_on(dir.path(), "n1", HOST_A);
    a.up().await;
    a.send(StoreCommand::Publish(member_on("n1", HOST_A, 100)));
    a.sees_members(PROMPT, &["n1"]).await;
    a.send(StoreCommand::Campaign(LeaderRecord {
        host: Some(HOST_A.into()),
        ..leader_record("n1")
    }));
    let term = a.campaigned().await.expect("won");

    let mut b = Node::start_on(dir.path(), "n1", HOST_B);
    b.send(StoreCommand::Publish(member_on("n1", HOST_B, 50)));
    b.up().await;
    b.send(StoreCommand::Publish(member_on("n1", HOST_B, 51)));
    let held = Some(Leader {
        node: "n1".into(),
        term,
        host: Some(HOST_A.into()),
    });
    b.sees_leader(PROMPT, held.clone()).await;
    b.release(term).await;
    let vacant = |e: &StoreEvent| matches!(e, StoreEvent::Leader(None) | StoreEvent::LeaseLost);
    b.never(Duration::from_millis(300), vacant).await;
    a.never(Duration::from_millis(50), vacant).await;
    let text = fs::read_to_string(&member_file).expect("member file");
    assert!(text.contains(HOST_A) && !text.contains(HOST_B), "{text}");

    // The same host again (a restarted promd), while the first run's session is still live.
    let mut a2 = Node::start_on(dir.path(), "n1", HOST_A);
    a2.send(StoreCommand::Publish(member_on("n1", HOST_A, 70)));
    a2.up().await;
    let replaced =
        || fs::read_to_string(&member_file).is_ok_and(|t| t.contains(r#""priority":70"#));
    a2.until(PROMPT, "the new run's member file", |_| replaced())
        .await;
}
