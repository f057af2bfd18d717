//! The dir backend of the contract suite: a temporary directory. Each node's store root is a
//! symlink of its own to that directory, so that removing the symlink cuts that node alone
//! off (as an unmounted share would), and putting it back heals it.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use promd::store::Store;
use promd::store::dir::DirStore;

use super::{Backend, Key, Link, Raw};

pub struct Dir {
    tmp: tempfile::TempDir,
    links: Vec<PathBuf>,
}

/// Wall-clock unix microseconds, as the dir store writes expiries.
pub fn wall_us(t: SystemTime) -> u64 {
    u64::try_from(t.duration_since(UNIX_EPOCH).unwrap_or_default().as_micros()).unwrap_or(0)
}

impl Dir {
    /// The directory every node's link points to.
    pub fn store(&self) -> PathBuf {
        self.tmp.path().join("store")
    }

    fn path(&self, group: &str, key: Key) -> PathBuf {
        let suffix = key.suffix(group);
        self.store().join(suffix.trim_start_matches('/'))
    }

    fn counter(&self, group: &str) -> u64 {
        let text = fs::read_to_string(self.store().join(group).join("term")).unwrap_or_default();
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["term"].as_u64())
            .unwrap_or(0)
    }

    /// The session of `node`'s member file.
    fn session_of(&self, group: &str, node: &str) -> Option<String> {
        let text = fs::read_to_string(self.path(group, Key::Member(node))).ok()?;
        let json: serde_json::Value = serde_json::from_str(&text).ok()?;
        json["session"].as_str().map(str::to_string)
    }
}

impl Backend for Dir {
    const NAME: &'static str = "dir";
    const LEASE: Duration = Duration::from_secs(1);
    const PROMPT: Duration = Duration::from_millis(200);
    const HANDOVER: Duration = Duration::from_millis(200);
    const UP: Duration = Duration::from_secs(2);
    const EXPIRY_SLACK: Duration = Duration::from_millis(300);
    const WALL_CLOCK: bool = true;

    async fn start() -> Dir {
        let tmp = tempfile::tempdir().expect("tempdir");
        fs::create_dir(tmp.path().join("store")).expect("mkdir");
        Dir {
            tmp,
            links: Vec::new(),
        }
    }

    async fn link(&mut self) -> (Arc<dyn Store>, Link) {
        let link = self.tmp.path().join(format!("link{}", self.links.len()));
        std::os::unix::fs::symlink(self.store(), &link).expect("symlink");
        let store = DirStore::new(link.clone());
        self.links.push(link);
        (Arc::new(store), Link(self.links.len() - 1))
    }

    async fn cut(&mut self, link: Link) {
        fs::remove_file(&self.links[link.0]).expect("unlink");
    }

    async fn heal(&mut self, link: Link) {
        std::os::unix::fs::symlink(self.store(), &self.links[link.0]).expect("symlink");
    }

    async fn put(&mut self, group: &str, key: Key<'_>, raw: Raw<'_>) -> u64 {
        let path = self.path(group, key);
        fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
        let counter = self.counter(group);
        let (record, extra) = match raw {
            Raw::Bytes(bytes) => (bytes, None),
            Raw::Record(record) => (record, Some("")),
            Raw::Extended(record) => (record, Some(NEWER_FIELD)),
        };
        let bytes = match (extra, key) {
            // The term file has no envelope.
            (None, _) | (_, Key::Term) => record.to_vec(),
            (Some(extra), Key::Maintenance) => durable(record, extra),
            (Some(extra), Key::Leader) => session_bound(Some(counter + 1), record, extra),
            (Some(extra), _) => session_bound(None, record, extra),
        };
        fs::write(&path, bytes).expect("write");
        counter
    }

    async fn get(&mut self, group: &str, key: Key<'_>) -> Option<Vec<u8>> {
        fs::read(self.path(group, key)).ok()
    }

    async fn delete(&mut self, group: &str, key: Key<'_>) {
        fs::remove_file(self.path(group, key)).expect("rm");
    }

    async fn lease_of(&mut self, group: &str, node: &str) -> Option<String> {
        self.session_of(group, node)
    }

    async fn revoke(&mut self, group: &str, node: &str) {
        let session = self.session_of(group, node).expect("a member file");
        for key in [Key::Leader, Key::Switchover, Key::Member(node)] {
            let path = self.path(group, key);
            let ours = fs::read_to_string(&path)
                .is_ok_and(|text| text.contains(&format!(r#""session":"{session}""#)));
            if ours {
                fs::remove_file(&path).expect("rm");
            }
        }
    }
}

/// A field of an envelope that a newer promd of the same format version might add (with
/// its comma).
const NEWER_FIELD: &str = r#""added":{"by":"a newer promd","n":[1,2]},"#;

/// `record` in the envelope of a file bound to no session (`maintenance`), with `extra`
/// fields.
fn durable(record: &[u8], extra: &str) -> Vec<u8> {
    let record = String::from_utf8_lossy(record);
    format!(r#"{{"v":1,{extra}"record":{record}}}"#).into_bytes()
}

/// `record` in the envelope of a file bound to a session that expires in a minute, with a
/// term for a leader file, and `extra` fields.
fn session_bound(term: Option<u64>, record: &[u8], extra: &str) -> Vec<u8> {
    let record = String::from_utf8_lossy(record);
    let far = wall_us(SystemTime::now() + Duration::from_secs(60));
    let term = term.map(|t| format!(r#""term":{t},"#)).unwrap_or_default();
    format!(r#"{{"v":1,{term}"session":"s1",{extra}"expires":{far},"record":{record}}}"#)
        .into_bytes()
}

/// `root`'s group directory.
pub fn group_dir(root: &Path, group: &str) -> PathBuf {
    root.join(group)
}
