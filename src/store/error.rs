//! What can go wrong in a store, as types: why a backend cannot serve the group
//! ([`StoreError`], carried by [`StoreEvent::Down`](super::StoreEvent::Down)) and why a value
//! in the store cannot be trusted ([`ValueError`], carried by
//! [`StoreEvent::Corrupt`](super::StoreEvent::Corrupt)).
//!
//! Every error's `Display` text is one readable line for the journal, e.g.
//! `read group: no answer within 1s` or `/var/lib/promd does not exist`. Errors are `Clone`
//! (events are) and compare equal when they say the same thing.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;

use super::record::RecordError;

/// Why a backend cannot serve the group right now. The backend keeps retrying.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum StoreError {
    /// The etcd backend.
    #[error(transparent)]
    Etcd(#[from] EtcdError),
    /// The directory backend.
    #[error(transparent)]
    Dir(#[from] DirError),
}

/// What failed talking to etcd. `call` names the request (`"read group"`, `"lease keepalive"`,
/// `"campaign"`, …).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EtcdError {
    /// The configuration names no endpoint.
    #[error("no etcd endpoints configured")]
    NoEndpoints,
    /// No endpoint served a linearizable read within the connect timeout: why, per endpoint
    /// in the order tried (endpoints that failed alike share one reason in the text).
    #[error("{}", joined(.0))]
    Unreachable(Vec<EndpointError>),
    /// etcd refused the request for want of rights (gRPC `Unauthenticated` or
    /// `PermissionDenied`).
    #[error("{call}: {cause}")]
    Denied {
        /// The request.
        call: &'static str,
        /// etcd's answer.
        cause: Cause,
    },
    /// The request failed (connection broken, no raft leader, …); the outcome of a write is
    /// unknown.
    #[error("{call}: {cause}")]
    Failed {
        /// The request.
        call: &'static str,
        /// The client's error.
        cause: Cause,
    },
    /// No answer in time.
    #[error("{call}: no answer within {after:?}")]
    Timeout {
        /// The request.
        call: &'static str,
        /// The time allowed.
        after: Duration,
    },
    /// etcd says the group's lease does not exist (expired or revoked).
    #[error("lease not found")]
    LeaseNotFound,
    /// A range read came back without the header that carries its revision.
    #[error("{call}: answer without a header")]
    NoHeader {
        /// The request.
        call: &'static str,
    },
    /// etcd canceled the group's watch before confirming it.
    #[error("watch group: refused ({reason})")]
    WatchRefused {
        /// etcd's cancel reason, or `canceled`.
        reason: String,
    },
    /// A stream (`watch`, `lease keepalive`) ended.
    #[error("{stream} stream closed")]
    StreamClosed {
        /// The stream.
        stream: &'static str,
    },
    /// A compare-and-swap lost the race several times in a row: the key kept changing.
    #[error("{call}: the key kept changing under us")]
    Contended {
        /// The request.
        call: &'static str,
    },
    /// The session with one member ended: which member, and why (so that the journal says
    /// which etcd member went silent or away).
    #[error("{endpoint}: {error}")]
    Session {
        /// The endpoint the session had reached.
        endpoint: String,
        /// Why it ended.
        error: Box<EtcdError>,
    },
}

/// Why one etcd endpoint was passed over.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum EndpointError {
    /// Connecting or the first read failed.
    #[error("{endpoint}: {cause}")]
    Failed {
        /// The endpoint's URL.
        endpoint: String,
        /// The client's error.
        cause: Cause,
    },
    /// The endpoint did not answer within the connect timeout.
    #[error("{endpoint}: no answer within {after:?}")]
    Silent {
        /// The endpoint's URL.
        endpoint: String,
        /// The connect timeout.
        after: Duration,
    },
}

/// What failed in the directory store. Paths are the files or directories concerned.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum DirError {
    /// The store's root directory (or a directory promd made in it) is missing.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// The store's root is not a directory.
    #[error("{} is not a directory", .0.display())]
    NotADirectory(PathBuf),
    /// A system call on `path` failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        cause: Cause,
    },
    /// Another process held the group's lock longer than we may wait.
    #[error("{}: held by another process for more than {waited:?}", path.display())]
    LockBusy {
        /// The lock file.
        path: PathBuf,
        /// How long we tried.
        waited: Duration,
    },
    /// The lock cannot be taken at all (e.g. `No locks available` on NFS without locking).
    #[error("{}: cannot lock: {errno}", path.display())]
    Lock {
        /// The lock file.
        path: PathBuf,
        /// The error of `fcntl(F_OFD_SETLK)`.
        errno: nix::errno::Errno,
    },
    /// A file operation did not finish within its time (a hung NFS server, say).
    #[error("{}: no answer from the filesystem within {after:?}", dir.display())]
    Stalled {
        /// The group's directory.
        dir: PathBuf,
        /// The time allowed.
        after: Duration,
    },
    /// The file operation's thread ended without an answer (it panicked).
    #[error("file operation failed: {0}")]
    Job(Cause),
    /// The wall clock, in which expiries are written, reads before 1970.
    #[error("the wall clock is before 1970")]
    Clock,
}

impl DirError {
    /// An [`DirError::Io`] on `path`, for `map_err`.
    pub(crate) fn io(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> DirError + '_ {
        move |e| DirError::Io {
            path: path.to_path_buf(),
            cause: Cause::new(e),
        }
    }
}

/// Why a value in the store is not trusted. The value is ignored, or for the leader key taken
/// as held by [`UNREADABLE_NODE`](super::UNREADABLE_NODE), or for maintenance taken as on.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ValueError {
    /// Not promd's JSON, a format version this promd does not read, or an invalid field.
    #[error(transparent)]
    Record(#[from] RecordError),
    /// A member record under another node's key.
    #[error("the record names node {record:?}, the key {key:?}")]
    WrongNode {
        /// The node the record names.
        record: String,
        /// The node the key (or file) names.
        key: String,
    },
    /// A dir store leader file without a term.
    #[error("invalid value: no term")]
    NoTerm,
    /// Larger than any file promd writes.
    #[error("larger than {limit} bytes")]
    TooLarge {
        /// The limit, in bytes.
        limit: u64,
    },
    /// The file is there but cannot be read (its owner, say).
    #[error(transparent)]
    Unreadable(#[from] DirError),
}

/// The error of a library or the OS behind a store error, shared (events are cloned). Two
/// causes are equal when they read the same.
#[derive(Debug, Clone)]
pub struct Cause(Arc<dyn std::error::Error + Send + Sync>);

impl Cause {
    /// Wrap any error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Cause {
        Cause(Arc::new(e))
    }

    /// etcd refused who promd is or what it may do (a wrong password, an unknown user, no
    /// user where one is required, a role that does not cover the prefix): somewhere in the
    /// error's chain.
    fn access_refused(&self) -> bool {
        let mut next: Option<&(dyn std::error::Error + 'static)> = Some(&*self.0);
        while let Some(e) = next {
            if let Some(etcd_client::Error::GRpcStatus(status)) =
                e.downcast_ref::<etcd_client::Error>()
                && REFUSALS.iter().any(|r| status.message().contains(r))
            {
                return true;
            }
            next = e.source();
        }
        false
    }
}

/// What etcd answers (in a gRPC status's message) when it refuses a user or a request for
/// want of rights.
const REFUSALS: [&str; 3] = [
    "authentication failed",
    "permission denied",
    "user name is empty",
];

impl EtcdError {
    /// etcd refused promd's credentials or rights, at one endpoint at least (the others may
    /// be down; a refusal is not healed by the next member): retrying at once will not help,
    /// and each attempt is a new connection and a login that costs etcd a password hash, so
    /// the task backs off (`MAX_AUTH_RETRY_DELAY` in `store::etcd`).
    pub fn access_refused(&self) -> bool {
        match self {
            EtcdError::Unreachable(errors) => errors.iter().any(|e| match e {
                EndpointError::Failed { cause, .. } => cause.access_refused(),
                EndpointError::Silent { .. } => false,
            }),
            EtcdError::Denied { .. } => true,
            EtcdError::Failed { cause, .. } => cause.access_refused(),
            EtcdError::Session { error, .. } => error.access_refused(),
            _ => false,
        }
    }
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Cause {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for Cause {
    fn eq(&self, other: &Cause) -> bool {
        self.to_string() == other.to_string()
    }
}

/// One `ENDPOINTS: REASON` per reason, in the order the reasons first came: three members
/// that refuse a user alike read as one sentence, not three.
fn joined(errors: &[EndpointError]) -> String {
    let mut groups: Vec<(Vec<&str>, String)> = Vec::new();
    for e in errors {
        let (endpoint, reason) = match e {
            EndpointError::Failed { endpoint, cause } => (endpoint, cause.to_string()),
            EndpointError::Silent { endpoint, after } => {
                (endpoint, format!("no answer within {after:?}"))
            }
        };
        match groups.iter_mut().find(|(_, r)| *r == reason) {
            Some((endpoints, _)) => endpoints.push(endpoint),
            None => groups.push((vec![endpoint], reason)),
        }
    }
    groups
        .iter()
        .map(|(endpoints, reason)| format!("{}: {reason}", endpoints.join(", ")))
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_read_as_one_line_for_the_journal() {
        let unreachable = StoreError::from(EtcdError::Unreachable(vec![
            EndpointError::Silent {
                endpoint: "http://a:2379".into(),
                after: Duration::from_millis(500),
            },
            EndpointError::Failed {
                endpoint: "http://b:2379".into(),
                cause: Cause::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            },
        ]));
        assert_eq!(
            unreachable.to_string(),
            "http://a:2379: no answer within 500ms; http://b:2379: connection refused"
        );
        let refused = |endpoint: &str| EndpointError::Failed {
            endpoint: endpoint.into(),
            cause: Cause::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
        };
        let alike = EtcdError::Unreachable(vec![
            refused("http://a:2379"),
            EndpointError::Silent {
                endpoint: "http://b:2379".into(),
                after: Duration::from_millis(500),
            },
            refused("http://c:2379"),
        ]);
        assert_eq!(
            alike.to_string(),
            "http://a:2379, http://c:2379: connection refused; http://b:2379: no answer within \
             500ms"
        );
        let missing = StoreError::from(DirError::Missing("/var/lib/promd".into()));
        assert_eq!(missing.to_string(), "/var/lib/promd does not exist");
        let wrong = ValueError::WrongNode {
            record: "b".into(),
            key: "a".into(),
        };
        assert_eq!(
            wrong.to_string(),
            r#"the record names node "b", the key "a""#
        );
    }

    #[test]
    fn causes_are_equal_when_they_read_the_same() {
        let a = Cause::new(std::io::Error::other("x"));
        let b = Cause::new(std::io::Error::other("x"));
        let c = Cause::new(std::io::Error::other("y"));
        assert_eq!(a, b);
        assert_ne!(a, c);
    }
}
