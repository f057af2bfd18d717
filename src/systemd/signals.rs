//! One subscription to systemd's unit property changes, shared by every unit promd follows.
//!
//! dbus-daemon's system bus allows a connection 512 match rules and 128 pending replies
//! (`max_match_rules_per_connection`, `max_replies_per_connection`). A caching proxy per
//! followed unit costs a match rule and a `GetAll` each, which breaks at a few hundred groups.
//! So a connection has one [`UnitSignals`] hub instead: ONE match rule for every
//! `org.freedesktop.DBus.Properties.PropertiesChanged` that systemd sends under
//! [`UNIT_PATHS`], and one task that hands each signal to the subscribers of its object path.
//! A follower subscribes to its unit's path and reads what it needs once through the hub,
//! whose reads are bounded to [`READS_IN_FLIGHT`] at a time; while nothing changes it costs the
//! bus nothing.
//!
//! What systemd sends with values and what it only invalidates is set by the flags of its
//! vtables (`src/core/dbus-unit.c`, `dbus-service.c`): `ActiveState`, `SubState` and `Job` of
//! [`UNIT_INTERFACE`] and `NRestarts` of [`SERVICE_INTERFACE`] are
//! `SD_BUS_VTABLE_PROPERTY_EMITS_CHANGE` (the new value is in the signal); `Restart` and
//! `RestartUSec` are `SD_BUS_VTABLE_PROPERTY_CONST` (never signalled: read them when needed).
//! A `Job` in a signal may be one that is ending: systemd flushes a unit's pending signal just
//! before it removes a finished job (`bus_job_send_removed_signal`, `src/core/dbus-job.c`), so a
//! stopped unit's `inactive` comes with its stop job still named.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use futures_util::StreamExt;
use tokio::sync::{Semaphore, mpsc, oneshot};
use zbus::message::{Sequence, Type};
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

use super::{SystemdError, timed};
use crate::sync::lock;

/// The object paths of systemd's units: the namespace of the hub's one match rule.
pub const UNIT_PATHS: &str = "/org/freedesktop/systemd1/unit";

/// The interface every unit has (`ActiveState`, `SubState`, `Job`, ...).
pub const UNIT_INTERFACE: &str = "org.freedesktop.systemd1.Unit";

/// The interface of service units (`NRestarts`, `Restart`, `RestartUSec`, ...).
pub const SERVICE_INTERFACE: &str = "org.freedesktop.systemd1.Service";

/// How many of the hub's reads may wait for their replies at once. The bus refuses a
/// connection's 129th pending call; 500 groups that start following at once must queue here
/// rather than fail, and leave room for promd's other calls.
pub const READS_IN_FLIGHT: usize = 24;

/// How many signals the bus connection queues for the hub before its reader waits: a burst of
/// unit changes (a boot, a `daemon-reload`) must not stall it often. Nothing is dropped.
const QUEUED_SIGNALS: usize = 4096;

const SYSTEMD: &str = "org.freedesktop.systemd1";
const SYSTEMD_PATH: &str = "/org/freedesktop/systemd1";
const MANAGER_INTERFACE: &str = "org.freedesktop.systemd1.Manager";
const PROPERTIES: &str = "org.freedesktop.DBus.Properties";

/// The hubs that live, by bus connection (see [`UnitSignals::of`]). Weak: a hub ends, and its
/// match rule goes, when nothing follows a unit any more.
static HUBS: tokio::sync::Mutex<Vec<(String, Weak<Inner>)>> =
    tokio::sync::Mutex::const_new(Vec::new());

/// One `PropertiesChanged` signal of a unit, as systemd sent it.
#[derive(Debug)]
pub struct Changed {
    /// The interface whose properties changed ([`UNIT_INTERFACE`], [`SERVICE_INTERFACE`], ...).
    pub interface: String,
    /// The properties sent with their new values.
    pub values: HashMap<String, OwnedVariant>,
    /// The properties said to have changed, without their values.
    pub invalidated: Vec<String>,
    /// Where the signal came in on the connection: a read whose reply came later saw a
    /// newer state (systemd sends both in order from one thread).
    pub position: Sequence,
}

impl Changed {
    fn parse(msg: &Message) -> zbus::Result<Changed> {
        let (interface, values, invalidated): (String, HashMap<String, OwnedVariant>, Vec<String>) =
            msg.body().deserialize()?;
        Ok(Changed {
            interface,
            values,
            invalidated,
            position: msg.recv_position(),
        })
    }

    /// The new value of `name`, if the signal carries it (as a `T`).
    pub fn value<T>(&self, name: &str) -> Option<T>
    where
        T: TryFrom<OwnedVariant>,
    {
        let value = self.values.get(name)?.try_clone().ok()?;
        T::try_from(value).ok()
    }

    /// Whether `name` changed but the signal does not carry its value.
    pub fn invalidates(&self, name: &str) -> bool {
        self.invalidated.iter().any(|n| n == name)
    }
}

/// Where a subscriber gets its signals, with its id.
type Subscriber = (u64, mpsc::UnboundedSender<Arc<Changed>>);

/// The subscribers of each unit path. Each one has its own id, so that dropping a
/// [`Subscription`] removes exactly its sender.
#[derive(Default)]
struct Subscribers {
    next_id: u64,
    by_path: HashMap<String, Vec<Subscriber>>,
}

impl Subscribers {
    fn add(&mut self, path: &str) -> (u64, mpsc::UnboundedReceiver<Arc<Changed>>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let id = self.next_id;
        self.next_id += 1;
        self.by_path
            .entry(path.to_owned())
            .or_default()
            .push((id, tx));
        (id, rx)
    }

    fn remove(&mut self, path: &str, id: u64) {
        if let Some(list) = self.by_path.get_mut(path) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                self.by_path.remove(path);
            }
        }
    }

    fn wants(&self, path: &str) -> bool {
        self.by_path.contains_key(path)
    }

    /// Hand every subscriber a signal that says its unit's state must be read again: the
    /// `ActiveState`, `SubState` and `Job` of [`UNIT_INTERFACE`], and for a service
    /// `NRestarts`, invalidated, as if received at `position`.
    fn resync(&mut self, position: Sequence) {
        let unit = Arc::new(Changed {
            interface: UNIT_INTERFACE.to_string(),
            values: HashMap::new(),
            invalidated: vec!["ActiveState".into(), "SubState".into(), "Job".into()],
            position,
        });
        let service = Arc::new(Changed {
            interface: SERVICE_INTERFACE.to_string(),
            values: HashMap::new(),
            invalidated: vec!["NRestarts".into()],
            position,
        });
        let paths: Vec<String> = self.by_path.keys().cloned().collect();
        for path in paths {
            self.dispatch(&path, &unit);
            // `.` is `_2e` in a unit's object path.
            if path.ends_with("_2eservice") {
                self.dispatch(&path, &service);
            }
        }
    }

    /// Hand the signal to every subscriber of `path`; senders whose receiver is gone go too.
    fn dispatch(&mut self, path: &str, changed: &Arc<Changed>) {
        if let Some(list) = self.by_path.get_mut(path) {
            list.retain(|(_, tx)| tx.send(changed.clone()).is_ok());
            if list.is_empty() {
                self.by_path.remove(path);
            }
        }
    }
}

struct Inner {
    conn: Connection,
    subscribers: Arc<Mutex<Subscribers>>,
    reads: Arc<Semaphore>,
    /// Dropped with the hub: tells the dispatch task to end, which drops the match rule.
    _stop: oneshot::Sender<()>,
}

/// The hub of one bus connection: systemd's unit signals, by object path (see the module's
/// documentation). Cheap to clone; the clones share the one match rule and task.
#[derive(Clone)]
pub struct UnitSignals {
    inner: Arc<Inner>,
}

impl UnitSignals {
    /// The hub of `conn`, started (one match rule, one task) if no hub of `conn` lives.
    pub async fn of(conn: &Connection) -> Result<UnitSignals, SystemdError> {
        let key = hub_key(conn);
        let mut hubs = HUBS.lock().await;
        hubs.retain(|(_, hub)| hub.strong_count() > 0);
        if let Some(inner) = hubs
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, hub)| hub.upgrade())
        {
            return Ok(UnitSignals { inner });
        }
        // Under the lock, so that followers starting together share one hub.
        let hub = UnitSignals::start(conn).await?;
        hubs.push((key, Arc::downgrade(&hub.inner)));
        Ok(hub)
    }

    async fn start(conn: &Connection) -> Result<UnitSignals, SystemdError> {
        let rule = MatchRule::builder()
            .msg_type(Type::Signal)
            .sender(SYSTEMD)
            .interface(PROPERTIES)
            .member("PropertiesChanged")
            .path_namespace(UNIT_PATHS)
            .build()?;
        let queued = std::num::NonZeroUsize::new(QUEUED_SIGNALS);
        let stream = timed(
            "AddMatch for systemd's unit signals",
            MessageStream::for_match_rule(rule, conn, queued),
        )
        .await?;
        let subscribers: Arc<Mutex<Subscribers>> = Arc::default();
        let (stop_tx, stop_rx) = oneshot::channel();
        tokio::spawn(dispatch(stream, subscribers.clone(), stop_rx));
        Ok(UnitSignals {
            inner: Arc::new(Inner {
                conn: conn.clone(),
                subscribers,
                reads: Arc::new(Semaphore::new(READS_IN_FLIGHT)),
                _stop: stop_tx,
            }),
        })
    }

    /// After PID 1 came back on the bus (see [`super::Systemd::on`]): the signals of the gap
    /// are lost, so every follower of `conn`'s hub, if one lives, reads its unit's state again,
    /// as of `position` (the reply to the new `Subscribe()`: what changes after it is
    /// signalled again).
    pub async fn resync(conn: &Connection, position: Sequence) {
        let key = hub_key(conn);
        let hub = HUBS
            .lock()
            .await
            .iter()
            .find(|(k, _)| *k == key)
            .and_then(|(_, hub)| hub.upgrade());
        if let Some(inner) = hub {
            lock(&inner.subscribers).resync(position);
        }
    }

    /// Receive every signal of the unit at `path` from now on, until the [`Subscription`] is
    /// dropped.
    pub fn subscribe(&self, path: &OwnedObjectPath) -> Subscription {
        let path = path.as_str().to_owned();
        let (id, rx) = lock(&self.inner.subscribers).add(&path);
        Subscription {
            hub: self.clone(),
            path,
            id,
            rx,
        }
    }

    /// The object path of `unit` (`LoadUnit`: loads it if systemd has not).
    pub async fn load_unit(&self, unit: &str) -> Result<OwnedObjectPath, SystemdError> {
        let reply = self
            .call(
                &format!("LoadUnit {unit}"),
                SYSTEMD_PATH,
                MANAGER_INTERFACE,
                "LoadUnit",
                &(unit,),
            )
            .await?;
        Ok(reply.body().deserialize()?)
    }

    /// One uncached read of a property, and where its reply came in: signals that came in
    /// before it are older than the value.
    pub async fn property<T>(
        &self,
        path: &OwnedObjectPath,
        interface: &str,
        name: &str,
    ) -> Result<(T, Sequence), SystemdError>
    where
        T: TryFrom<OwnedVariant, Error = zbus::Error>,
    {
        let reply = self
            .call(
                &format!("{name} of {path}"),
                path.as_str(),
                PROPERTIES,
                "Get",
                &(interface, name),
            )
            .await?;
        let value: OwnedVariant = reply.body().deserialize()?;
        Ok((T::try_from(value)?, reply.recv_position()))
    }

    async fn call<B>(
        &self,
        what: &str,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> Result<Message, SystemdError>
    where
        B: serde::Serialize + zbus::DynamicType,
    {
        super::gated(
            &self.inner.reads,
            what,
            self.inner
                .conn
                .call_method(Some(SYSTEMD), path, Some(interface), method, body),
        )
        .await
    }
}

/// A unit's signals, from [`UnitSignals::subscribe`]. Dropping it unsubscribes.
pub struct Subscription {
    hub: UnitSignals,
    path: String,
    id: u64,
    rx: mpsc::UnboundedReceiver<Arc<Changed>>,
}

impl Subscription {
    /// The next signal; `None` once the hub's signals ended (the connection closed).
    pub async fn recv(&mut self) -> Option<Arc<Changed>> {
        self.rx.recv().await
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        lock(&self.hub.inner.subscribers).remove(&self.path, self.id);
    }
}

/// The hub's task: each signal to the subscribers of its path, until the hub is dropped or the
/// connection's signals end. It never waits on the bus, which the connection's reader could
/// otherwise wait on in turn.
async fn dispatch(
    mut stream: MessageStream,
    subscribers: Arc<Mutex<Subscribers>>,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            _ = &mut stop => return,
        };
        let msg = match msg {
            Some(Ok(msg)) => msg,
            Some(Err(e)) => {
                tracing::debug!("systemd's unit signals: {e}");
                continue;
            }
            None => break,
        };
        let header = msg.header();
        let Some(path) = header.path() else { continue };
        // Most units are followed by nobody: do not even parse their signals.
        if !lock(&subscribers).wants(path.as_str()) {
            continue;
        }
        match Changed::parse(&msg) {
            Ok(changed) => lock(&subscribers).dispatch(path.as_str(), &Arc::new(changed)),
            Err(e) => tracing::debug!("a PropertiesChanged of {path} that cannot be read: {e}"),
        }
    }
    tracing::warn!("systemd's unit signals ended (the bus connection closed)");
    // The followers see their signals end.
    lock(&subscribers).by_path.clear();
}

/// The bus's GUID and the connection's unique name tell connections apart.
fn hub_key(conn: &Connection) -> String {
    format!(
        "{}/{}",
        conn.server_guid(),
        conn.unique_name().map_or("", |n| n.as_str())
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn changed(state: &str) -> Arc<Changed> {
        let mut values = HashMap::new();
        values.insert(
            "ActiveState".to_string(),
            OwnedVariant::try_from(zbus::Variant::from(state)).unwrap(),
        );
        Arc::new(Changed {
            interface: UNIT_INTERFACE.into(),
            values,
            invalidated: vec!["Conditions".into()],
            position: Sequence::default(),
        })
    }

    const WEB: &str = "/org/freedesktop/systemd1/unit/web_2eservice";
    const DB: &str = "/org/freedesktop/systemd1/unit/db_2eservice";

    #[test]
    fn a_signal_reaches_the_subscribers_of_its_path_only() {
        let mut subs = Subscribers::default();
        let (_, mut web1) = subs.add(WEB);
        let (_, mut web2) = subs.add(WEB);
        let (_, mut db) = subs.add(DB);
        subs.dispatch(WEB, &changed("failed"));
        for rx in [&mut web1, &mut web2] {
            let got = rx.try_recv().unwrap();
            assert_eq!(
                got.value::<String>("ActiveState").as_deref(),
                Some("failed")
            );
            assert!(got.invalidates("Conditions"));
            assert!(!got.invalidates("ActiveState"));
        }
        assert!(db.try_recv().is_err());
        // Nobody follows this unit: nothing to do, nothing kept.
        subs.dispatch("/org/freedesktop/systemd1/unit/other", &changed("active"));
        assert_eq!(subs.by_path.len(), 2);
    }

    #[test]
    fn removed_and_dropped_subscribers_leave_nothing_behind() {
        let mut subs = Subscribers::default();
        let (a, _rx_a) = subs.add(WEB);
        let (_, rx_b) = subs.add(WEB);
        let (c, _rx_c) = subs.add(DB);
        subs.remove(WEB, a);
        assert!(subs.wants(WEB), "the other subscriber of web stays");
        // A receiver dropped without its Subscription's removal goes at the next signal.
        drop(rx_b);
        subs.dispatch(WEB, &changed("active"));
        assert!(!subs.wants(WEB));
        subs.remove(DB, c);
        assert!(subs.by_path.is_empty());
        // Removing twice, or an unknown path, is harmless.
        subs.remove(DB, c);
        subs.remove("/nowhere", 7);
    }

    #[test]
    fn a_resync_has_every_follower_read_its_unit_again() {
        let mut subs = Subscribers::default();
        let (_, mut web) = subs.add(WEB);
        let target = "/org/freedesktop/systemd1/unit/web_2dactive_2etarget";
        let (_, mut t) = subs.add(target);
        subs.resync(Sequence::default());
        let unit = web.try_recv().unwrap();
        assert_eq!(unit.interface, UNIT_INTERFACE);
        assert!(unit.invalidates("ActiveState") && unit.invalidates("Job"));
        assert!(unit.values.is_empty(), "nothing to go by but a fresh read");
        let service = web.try_recv().unwrap();
        assert_eq!(service.interface, SERVICE_INTERFACE);
        assert!(service.invalidates("NRestarts"));
        assert!(web.try_recv().is_err());
        // A target has no NRestarts to read.
        assert_eq!(t.try_recv().unwrap().interface, UNIT_INTERFACE);
        assert!(t.try_recv().is_err());
    }

    #[test]
    fn a_value_of_another_type_is_no_value() {
        let c = changed("active");
        assert_eq!(c.value::<u32>("ActiveState"), None);
        assert_eq!(c.value::<String>("SubState"), None);
    }
}
