//! The directory backend's own behaviour, beyond the store contract that
//! `tests/store_contract.rs` checks against every backend: the files as documented in
//! docs/dir-store.md, what an unreadable leader file costs, files replaced by hand, a missing
//! or vanishing root. Several sessions of one group in one test, each with its own session
//! id, as separate promd processes would have. Every wait is on an event with a deadline.

#[path = "support/contract/mod.rs"]
mod contract;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use contract::dir::wall_us;
use contract::{Link, Node, Opening, SOON};
use promd::store::dir::DirStore;
use promd::store::{
    DirError, Leader, MaintenanceRecord, RecordError, StoreCommand, StoreError, StoreEvent,
    UNREADABLE_NODE, ValueError,
};

const GROUP: &str = "web";
const LEASE: Duration = Duration::from_secs(1);
/// Generous for anything that should happen "at once" (a poll is 100 ms at most).
const PROMPT: Duration = Duration::from_millis(200);

fn group_dir(root: &Path) -> PathBuf {
    root.join(GROUP)
}

fn node(root: &Path, name: &str) -> Node {
    node_with(root, GROUP, name, &[])
}

/// Nodes up, each with its member record published.
async fn published(root: &Path, names: &[&str]) -> Vec<Node> {
    let mut nodes: Vec<Node> = names.iter().map(|n| node(root, n)).collect();
    for n in &mut nodes {
        n.up(SOON).await;
        n.publish();
    }
    for n in &mut nodes {
        n.members_are(SOON, names).await;
    }
    nodes
}

/// A node of `group` whose role holds `addresses`.
fn node_with(root: &Path, group: &str, name: &str, addresses: &[std::net::IpAddr]) -> Node {
    let how = Opening {
        group,
        name,
        lease: LEASE,
        host: None,
        addresses,
    };
    Node::open(&DirStore::new(root.to_path_buf()), Link::NONE, how)
}

fn leader(name: &str, term: u64) -> Option<Leader> {
    Some(Leader {
        node: name.into(),
        term,
        host: None,
    })
}

/// Terms start at 1, and the `term` file holds the last one handed out, in the documented
/// format.
#[tokio::test]
async fn the_term_file_holds_the_last_term_handed_out() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut nodes = published(dir.path(), &["a", "b"]).await;
    let mut terms = Vec::new();
    for round in 0..4 {
        let n = &mut nodes[round % 2];
        let term = n.try_campaign().await.expect("a vacant key is won");
        n.release(term).await;
        terms.push(term);
    }
    assert_eq!(terms[0], 1, "terms: {terms:?}");
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "terms: {terms:?}");
    let counter = fs::read_to_string(group_dir(dir.path()).join("term")).expect("term file");
    assert_eq!(counter, format!(r#"{{"v":1,"term":{}}}"#, terms[3]));
}

/// A leader file replaced behind the holder's back (another session's, by hand) means its
/// lease is lost: `LeaseLost`, then `Up` with a new session; the intruder's file is left
/// alone.
#[tokio::test]
async fn a_replaced_leader_file_means_the_lease_is_lost() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = published(dir.path(), &["a"]).await.remove(0);
    let term = a.try_campaign().await.expect("won");
    let far = wall_us(SystemTime::now() + Duration::from_secs(60));
    let intruder = format!(
        r#"{{"v":1,"term":{},"session":"intruder","expires":{far},"record":{{"v":1,"node":"z","priority":1}}}}"#,
        term + 5
    );
    fs::write(group_dir(dir.path()).join("leader"), intruder).expect("write");
    a.leader_is(PROMPT, "z", term + 5).await;
    a.lease_lost(LEASE).await;
    a.up(SOON).await;
    let text = fs::read_to_string(group_dir(dir.path()).join("leader")).expect("leader");
    assert!(text.contains("intruder"));
}

/// An unreadable leader file blocks campaigns until its mtime + a lease (the longest a live
/// holder goes without rewriting it), at the term counter; after that, the key is vacant.
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

    let mut a = node(dir.path(), "a");
    let error = a.corrupt_reported(SOON, "/web/leader").await;
    assert!(error.to_string().contains("not promd JSON"), "{error}");
    a.leader_where(PROMPT, "the unreadable leader", |l| {
        l.is_some_and(|l| l.node == UNREADABLE_NODE && l.term == 7)
    })
    .await;
    assert_eq!(
        a.try_campaign().await,
        None,
        "an unreadable leader is a leader"
    );

    a.leader_none(LEASE).await;
    assert!(
        SystemTime::now() >= mtime + LEASE,
        "vacant before the file's mtime + lease"
    );
    assert_eq!(a.try_campaign().await, Some(8));
    a.leader_is(PROMPT, "a", 8).await;
}

/// A leader file in an envelope of a later version is refused and never overwritten.
#[tokio::test]
async fn a_leader_file_of_a_later_envelope_version_is_refused() {
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
    let mut a = node(dir.path(), "a");
    let error = a.corrupt_reported(SOON, "/web/leader").await;
    assert_eq!(error, ValueError::Record(RecordError::Version(2)));
    a.leader_where(PROMPT, "the unreadable leader", |l| {
        l.is_some_and(|l| l.node == UNREADABLE_NODE && l.term == 0)
    })
    .await;
    assert_eq!(a.try_campaign().await, None);
    let text = fs::read_to_string(group.join("leader")).expect("leader");
    assert!(text.starts_with(r#"{"v":2"#));
}

/// Temporary files (`.NODE.tmp`, as a crash mid-write leaves them) and files not named like
/// nodes are neither members nor corrupt values.
#[tokio::test]
async fn temporary_files_are_neither_members_nor_corrupt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let members = group_dir(dir.path()).join("members");
    fs::create_dir_all(&members).expect("mkdir");
    fs::write(members.join(".fine.tmp"), "half written").expect("write");
    fs::write(members.join("Not A Node"), "{").expect("write");
    let mut a = published(dir.path(), &["a"]).await.remove(0);
    a.skip();
    a.never(
        PROMPT * 2,
        |e| matches!(e, StoreEvent::Members(m) if m.len() != 1),
    )
    .await;
    assert!(a.corrupt().is_empty(), "{:?}", a.corrupt());
}

/// A missing root is not created (on NFS it means the share is not mounted): the store is
/// down, saying so, until the root appears; then the group directory is made, mode 0750.
#[tokio::test]
async fn a_missing_root_is_down_until_it_appears() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("not-yet");
    let mut a = node(&root, "a");
    let (_, why) = a.down(SOON).await;
    assert_eq!(why, StoreError::Dir(DirError::Missing(root.clone())));
    assert!(why.to_string().ends_with("does not exist"), "{why}");
    a.never(PROMPT, |e| *e == StoreEvent::Up).await;
    fs::create_dir(&root).expect("mkdir");
    a.up(SOON).await;
    // 0750, less whatever the umask takes away: never more.
    let mode = fs::metadata(root.join(GROUP)).map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o777
    });
    let mode = mode.expect("group dir");
    assert_eq!(mode & !0o750, 0, "mode {mode:o}");
}

/// The maintenance file is written as docs/dir-store.md documents it, bound to no session.
#[tokio::test]
async fn the_maintenance_file_is_written_as_documented() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut a = published(dir.path(), &["a"]).await.remove(0);
    let on = MaintenanceRecord {
        v: 1,
        on: true,
        by: "a".into(),
    };
    a.send(StoreCommand::SetMaintenance(on.clone()));
    a.wait_for(SOON, "maintenance on", |e| {
        *e == StoreEvent::Maintenance(Some(on.clone()))
    })
    .await;
    let text = fs::read_to_string(group_dir(dir.path()).join("maintenance")).expect("file");
    assert_eq!(text, r#"{"v":1,"record":{"v":1,"on":true,"by":"a"}}"#);
}

/// The store's directory vanishes under a running session (the share unmounted, a symlink
/// gone): the session reports `Down`, never an empty group (no leader, no members) that
/// would invite a campaign. When the directory is back, the session is `Up` again.
#[tokio::test]
async fn a_vanished_directory_is_down_not_an_empty_group() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = dir.path().join("store");
    fs::create_dir(&store).expect("mkdir");
    let root = dir.path().join("root");
    std::os::unix::fs::symlink(&store, &root).expect("symlink");
    let mut a = published(&root, &["a"]).await.remove(0);
    let term = a.try_campaign().await.expect("won");
    a.leader_is(SOON, "a", term).await;

    fs::remove_file(&root).expect("unlink");
    let (_, seen) = a
        .wait_for(LEASE, "Down or an empty group", |e| {
            matches!(e, StoreEvent::Down(_) | StoreEvent::Leader(None))
                || matches!(e, StoreEvent::Members(m) if m.is_empty())
        })
        .await;
    assert!(matches!(seen, StoreEvent::Down(_)), "{seen:?}");

    std::os::unix::fs::symlink(&store, &root).expect("symlink");
    a.up(SOON).await;
    a.leader_where(PROMPT, "still a's key", |l| l == leader("a", term).as_ref())
        .await;
}

/// A holder stopped inside its campaign (SIGSTOP, a hung NFS client) keeps the locks of its
/// addresses: only a group that lists one of them waits (its campaign fails, reported as the
/// store down, and is tried again), and a group with other addresses campaigns as usual.
#[tokio::test]
async fn a_stalled_address_lock_holds_up_only_the_groups_that_list_that_address() {
    use nix::fcntl::{FcntlArg, fcntl};
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = |s: &str| s.parse::<std::net::IpAddr>().expect("ip");
    let (x, y) = (ip("192.0.2.10"), ip("192.0.2.11"));
    let locks = dir.path().join(".addresses");
    fs::create_dir(&locks).expect("mkdir");
    // The stalled holder's lock on x, an OFD lock as promd takes it.
    let stalled = fs::File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(locks.join("192.0.2.10.lock"))
        .expect("open");
    let whole = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as nix::libc::c_short,
        l_whence: nix::libc::SEEK_SET as nix::libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&stalled, FcntlArg::F_OFD_SETLK(&whole)).expect("lock");

    let (xs, ys) = ([x], [y]);
    let mut web = node_with(dir.path(), "web", "a", &xs);
    let mut db = node_with(dir.path(), "db", "b", &ys);
    web.up(SOON).await;
    db.up(SOON).await;
    assert_eq!(
        db.try_campaign().await,
        Some(1),
        "192.0.2.11 shares no lock with 192.0.2.10"
    );
    web.campaign();
    let (_, why) = web.down(SOON).await;
    assert!(why.to_string().contains("192.0.2.10.lock"), "{why}");
    web.leader_none(PROMPT).await;

    drop(stalled);
    web.up(SOON).await;
    web.leader_none(PROMPT).await;
    assert_eq!(web.try_campaign().await, Some(1), "the lock let go");
    web.leader_is(PROMPT, "a", 1).await;
}
