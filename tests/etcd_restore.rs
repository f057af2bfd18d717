//! The term never goes back when etcd loses its history: etcd's data is wiped and restored
//! from an older snapshot (`etcdctl snapshot save` while it runs, then the member stopped,
//! its data dir wiped, `etcdctl snapshot restore` into a new one with the same member name
//! and peer URL, and started again), and the next term a campaign gets, with the floor the
//! host kept on disk (`promd::termfloor`), is larger than every term handed out before.
//!
//! One etcd member of the test's own (a restore of a bigger cluster restores every member
//! from the same snapshot the same way), on loopback, killed by its pid when the test ends,
//! also on failure.

#[path = "support/contract/mod.rs"]
mod contract;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use contract::{Link, Node, Opening, SOON};
use promd::store::etcd::EtcdStore;
use promd::termfloor::TermFloors;

const GROUP: &str = "web";
const PREFIX: &str = "/promd-restore";
const LEASE: Duration = Duration::from_secs(3);

/// One etcd member on loopback, with what a restore needs to bring it back as itself.
struct Member {
    dir: tempfile::TempDir,
    name: String,
    client: String,
    peer: String,
    token: String,
    child: Option<Child>,
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr").port()
}

impl Member {
    fn start() -> Member {
        let dir = tempfile::tempdir().expect("tempdir");
        let id = format!("{}-{}", std::process::id(), free_port());
        let mut m = Member {
            name: format!("restore-{id}"),
            client: format!("http://127.0.0.1:{}", free_port()),
            peer: format!("http://127.0.0.1:{}", free_port()),
            token: format!("promd-restore-{id}"),
            dir,
            child: None,
        };
        m.spawn();
        m
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    fn cluster(&self) -> String {
        format!("{}={}", self.name, self.peer)
    }

    fn spawn(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("etcd.log")).expect("log");
        let child = Command::new("etcd")
            .args([
                format!("--name={}", self.name),
                format!("--data-dir={}", self.data().display()),
                format!("--listen-client-urls={}", self.client),
                format!("--advertise-client-urls={}", self.client),
                format!("--listen-peer-urls={}", self.peer),
                format!("--initial-advertise-peer-urls={}", self.peer),
                format!("--initial-cluster={}", self.cluster()),
                format!("--initial-cluster-token={}", self.token),
                "--initial-cluster-state=new".into(),
                "--logger=zap".into(),
            ])
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("etcd runs");
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.etcdctl(&["endpoint", "health"]).0 {
            assert!(
                Instant::now() < deadline,
                "etcd not healthy: {}",
                std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Run etcdctl against this member: whether it succeeded, and its output.
    fn etcdctl(&self, args: &[&str]) -> (bool, String) {
        let out = Command::new("etcdctl")
            .arg(format!("--endpoints={}", self.client))
            .args(args)
            .env("ETCDCTL_API", "3")
            .output()
            .expect("etcdctl runs");
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.success(), text)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // Child::kill: SIGKILL to this pid only.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stop the member, wipe its data, restore `snapshot` into a new data dir with the same
    /// name, peer URL and token, and start it again.
    fn restore(&mut self, snapshot: &Path) {
        self.stop();
        std::fs::remove_dir_all(self.data()).expect("wipe the data dir");
        let data = self.data().display().to_string();
        let (ok, text) = self.etcdctl(&[
            "snapshot",
            "restore",
            &snapshot.display().to_string(),
            &format!("--name={}", self.name),
            &format!("--initial-cluster={}", self.cluster()),
            &format!("--initial-cluster-token={}", self.token),
            &format!("--initial-advertise-peer-urls={}", self.peer),
            &format!("--data-dir={data}"),
        ]);
        assert!(ok, "snapshot restore: {text}");
        self.spawn();
    }

    /// The raw value of `PREFIX/GROUP/term`.
    fn term_key(&self) -> String {
        let key = format!("{PREFIX}/{GROUP}/term");
        let (ok, text) = self.etcdctl(&["get", &key, "--print-value-only"]);
        assert!(ok, "get: {text}");
        text.trim().to_string()
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop();
    }
}

/// This host's promd for the group, as it starts: a fresh session, and its kept floor.
fn open(m: &Member, name: &str) -> Node {
    let store = EtcdStore::new(
        vec![m.client.clone()],
        Duration::from_secs(1),
        PREFIX.into(),
    );
    let how = Opening {
        group: GROUP,
        name,
        lease: LEASE,
        host: None,
        addresses: &[],
    };
    Node::open(&store, Link::NONE, how)
}

/// Campaign with this host's kept floor, keep the term won, release it; the term.
async fn round(node: &mut Node, floors: &mut TermFloors) -> u64 {
    let floor = floors.load(GROUP).expect("the kept term");
    node.campaign_above(floor);
    let term = node.campaigned().await.expect("a vacant key is won");
    floors.keep(GROUP, term).expect("kept");
    node.leader_is(SOON, &node.name.clone(), term).await;
    node.release(term).await;
    node.leader_none(SOON).await;
    term
}

#[tokio::test(flavor = "current_thread")]
async fn after_a_restore_from_an_older_snapshot_the_next_term_is_above_every_earlier_one() {
    let mut m = Member::start();
    let state = tempfile::tempdir().expect("tempdir");
    let mut floors = TermFloors::new(state.path(), "a");

    let mut a = open(&m, "a");
    a.up(Duration::from_secs(10)).await;
    a.publish();
    a.members_are(SOON, &["a"]).await;
    let mut terms = vec![round(&mut a, &mut floors).await];
    let snapshot = m.dir.path().join("snap.db");
    let (ok, text) = m.etcdctl(&["snapshot", "save", &snapshot.display().to_string()]);
    assert!(ok, "snapshot save: {text}");
    let in_snapshot = m.term_key();
    for _ in 0..3 {
        terms.push(round(&mut a, &mut floors).await);
    }
    assert!(terms.windows(2).all(|w| w[0] < w[1]), "{terms:?}");
    let highest = *terms.last().expect("terms");
    a.send(promd::store::StoreCommand::Shutdown);
    a.ended(SOON).await;

    m.restore(&snapshot);
    // The store has forgotten every term handed out since the snapshot.
    assert_eq!(m.term_key(), in_snapshot);
    assert_eq!(in_snapshot, format!(r#"{{"v":1,"term":{}}}"#, terms[0]));

    // promd starts again on this host, with the floor it kept: the term goes on growing.
    let mut a = open(&m, "a");
    a.up(Duration::from_secs(10)).await;
    a.publish();
    a.members_are(SOON, &["a"]).await;
    let next = round(&mut a, &mut floors).await;
    assert!(next > highest, "term {next} after {terms:?}");
    // And the store keeps it: another host, which never saw those terms, gets a higher one.
    let mut b = open(&m, "b");
    b.up(Duration::from_secs(10)).await;
    b.campaign_above(0);
    let after = b.campaigned().await.expect("a vacant key is won");
    assert!(after > next, "term {after} after {next}");
}
