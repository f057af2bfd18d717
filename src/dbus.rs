//! The D-Bus service `org.promd1` on the system bus: `/org/promd1` (`org.promd1.Manager`) and
//! one object per group, `/org/promd1/group/NAME` (`org.promd1.Group`). The interfaces are
//! described in `dbus/*.xml`.
//!
//! The objects only read a snapshot of each group that the runtime refreshes after every event,
//! and pass method calls to the runtime through a channel: the event loop stays the one owner
//! of the group machines. Signals leave through one task, so they keep their order.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{mpsc, oneshot};
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, OwnedObjectPath, Variant};

/// The well-known name promd takes on the system bus (`dbus/org.promd1.conf` lets only the
/// `promd` user own it).
pub const BUS_NAME: &str = "org.promd1";
/// The Manager object: node, version, store state, the group list and the methods by name.
pub const MANAGER_PATH: &str = "/org/promd1";
/// The Manager's interface, described in `dbus/org.promd1.Manager.xml`.
pub const MANAGER_IFACE: &str = "org.promd1.Manager";
/// The interface of each group object ([`group_path`]), described in
/// `dbus/org.promd1.Group.xml`.
pub const GROUP_IFACE: &str = "org.promd1.Group";
/// Members of this group may call methods (besides root).
pub const ADMIN_GROUP: &str = "promd";

/// What D-Bus shows of one group; refreshed by the runtime.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct GroupView {
    /// The group's name from promd.toml (property `Name`).
    pub name: String,
    /// This host's role: `starting`, `passive`, `promoting`, `active`, `demoting`, `failed`
    /// or `maintenance` (property `Role`).
    pub role: String,
    /// The node that holds the leader key, empty when none does or it is not known yet
    /// (property `Leader`).
    pub leader: String,
    /// The fencing term: the leader key's create revision (etcd) or counter (dir store);
    /// only grows (property `Term`).
    pub term: u64,
    /// This host's priority in the group (property `Priority`).
    pub priority: i32,
    /// Whether this host's health check and passive target are fine (property `Healthy`).
    pub healthy: bool,
    /// Whether the group is in maintenance mode, cluster-wide (property `Maintenance`).
    pub maintenance: bool,
    /// Watched-unit failures within the restart window (property `Failures`).
    pub failures: u32,
    /// CLOCK_REALTIME of this host's last role change, in microseconds since the epoch
    /// (property `Since`).
    pub since_usec: u64,
    /// Every member as (node, role or "down", priority, healthy), sorted; members listed in
    /// promd.toml that the store does not show appear as "down" (property `Members`).
    pub members: Vec<(String, String, i32, bool)>,
    /// Removed by a reload: not listed, not addressable.
    pub retired: bool,
}

/// The errors promd's methods answer with, named `org.promd1.Error.VARIANT`; each carries a
/// message for the caller (promctl prints it).
#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.promd1.Error")]
pub enum PromdError {
    /// A D-Bus failure of the call itself, passed through under zbus's own error name.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// Promote refused: this host is failed (or cooling down), unhealthy, not a member, or it
    /// failed while taking over.
    NotEligible(String),
    /// Demote refused: no other member could take the role.
    NoStandby(String),
    /// The request was accepted but did not complete within three leases (at least 30 s).
    Timeout(String),
    /// No group of that name on this host (or it was removed by a reload).
    UnknownGroup(String),
    /// The caller is neither root nor in the `promd` group ([`ADMIN_GROUP`]).
    AccessDenied(String),
    /// Promote or demote refused, or a promote given up: maintenance mode is on.
    Maintenance(String),
    /// Anything else: promd is stopping, or the store is unreachable (for SetMaintenance).
    Failed(String),
}

/// A method call for the runtime to carry out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// `Promote`: make this host active (a switchover); answered once it is.
    Promote,
    /// `Demote`: hand the role to another member; answered once this host is passive.
    Demote,
    /// `SetMaintenance(on)`: cluster-wide, through the store; answered once the store shows
    /// the new mode.
    SetMaintenance(bool),
    /// `ResetFailed`: clear this host's failure count and cooldown; answered at once.
    ResetFailed,
}

/// A method call, authorized and resolved to a group, on its way to the runtime.
pub struct CallRequest {
    /// The group's slot in the runtime's group list (also its index in the views).
    pub group: usize,
    /// What was asked.
    pub call: Call,
    /// Where the runtime sends the outcome; the D-Bus reply waits for it.
    pub reply: oneshot::Sender<Result<(), PromdError>>,
}

/// `/org/promd1/group/NAME`, with every byte outside `[A-Za-z0-9]` escaped as `_XX` (as
/// systemd does), since object paths allow no `-`.
pub fn group_path(name: &str) -> String {
    let mut path = String::from("/org/promd1/group/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            path.push(b as char);
        } else {
            path.push_str(&format!("_{b:02x}"));
        }
    }
    path
}

#[derive(Clone)]
struct Shared {
    node: String,
    views: Arc<Mutex<Vec<GroupView>>>,
    store_connected: Arc<AtomicBool>,
    calls: mpsc::UnboundedSender<CallRequest>,
    admin_gid: Option<u32>,
}

impl Shared {
    fn views(&self) -> MutexGuard<'_, Vec<GroupView>> {
        // A poisoned lock means a panic mid-copy of plain data: the data is still usable.
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn view(&self, index: usize) -> GroupView {
        self.views().get(index).cloned().unwrap_or_default()
    }

    fn index(&self, name: &str) -> Result<usize, PromdError> {
        self.views()
            .iter()
            .position(|v| v.name == name && !v.retired)
            .ok_or_else(|| PromdError::UnknownGroup(format!("no group {name:?} on this host")))
    }

    /// Only root and members of the `promd` group may change anything. The bus policy says
    /// the same; this holds even under a laxer policy.
    async fn authorize(&self, conn: &Connection, header: &Header<'_>) -> Result<(), PromdError> {
        let denied = || {
            PromdError::AccessDenied("only root and members of the promd group may do this".into())
        };
        let sender = header.sender().ok_or_else(denied)?;
        let dbus = zbus::fdo::DBusProxy::new(conn).await?;
        let creds = dbus
            .get_connection_credentials(sender.clone().into())
            .await
            .map_err(|_| denied())?;
        let root = creds.unix_user_id() == Some(0);
        let admin = match (self.admin_gid, creds.unix_group_ids()) {
            (Some(gid), Some(gids)) => gids.contains(&gid),
            _ => false,
        };
        if root || admin { Ok(()) } else { Err(denied()) }
    }

    /// What every method that changes something does: check the caller, find the group (by
    /// name on the Manager), hand the call to the group's machine and wait for its answer.
    async fn act(
        &self,
        conn: &Connection,
        header: &Header<'_>,
        group: GroupRef<'_>,
        call: Call,
    ) -> Result<(), PromdError> {
        self.authorize(conn, header).await?;
        let index = match group {
            ByName(name) => self.index(name)?,
            ByIndex(index) => index,
        };
        self.call(index, call).await
    }

    async fn call(&self, group: usize, call: Call) -> Result<(), PromdError> {
        let (reply, rx) = oneshot::channel();
        self.calls
            .send(CallRequest { group, call, reply })
            .map_err(|_| PromdError::Failed("promd is stopping".into()))?;
        rx.await
            .map_err(|_| PromdError::Failed("promd is stopping".into()))?
    }
}

/// A group as a method names it: the Manager by its name, a group object by itself.
enum GroupRef<'a> {
    ByName(&'a str),
    ByIndex(usize),
}
use GroupRef::{ByIndex, ByName};

struct Manager(Shared);

#[zbus::interface(name = "org.promd1.Manager")]
impl Manager {
    #[zbus(property)]
    fn node(&self) -> String {
        self.0.node.clone()
    }

    #[zbus(property)]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    #[zbus(property)]
    fn store_connected(&self) -> bool {
        self.0.store_connected.load(Ordering::Relaxed)
    }

    #[zbus(out_args("groups"))]
    fn list_groups(&self) -> Vec<(String, String, String, u64, OwnedObjectPath)> {
        self.0
            .views()
            .iter()
            .filter(|v| !v.retired)
            .filter_map(|v| {
                let path = OwnedObjectPath::try_from(group_path(&v.name)).ok()?;
                Some((
                    v.name.clone(),
                    v.role.clone(),
                    v.leader.clone(),
                    v.term,
                    path,
                ))
            })
            .collect()
    }

    async fn promote(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        group: String,
    ) -> Result<(), PromdError> {
        self.0
            .act(conn, &header, ByName(&group), Call::Promote)
            .await
    }

    async fn demote(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        group: String,
    ) -> Result<(), PromdError> {
        self.0
            .act(conn, &header, ByName(&group), Call::Demote)
            .await
    }

    async fn set_maintenance(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        group: String,
        on: bool,
    ) -> Result<(), PromdError> {
        self.0
            .act(conn, &header, ByName(&group), Call::SetMaintenance(on))
            .await
    }

    async fn reset_failed(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        group: String,
    ) -> Result<(), PromdError> {
        self.0
            .act(conn, &header, ByName(&group), Call::ResetFailed)
            .await
    }
}

struct GroupObject {
    shared: Shared,
    index: usize,
}

#[zbus::interface(name = "org.promd1.Group")]
impl GroupObject {
    #[zbus(property)]
    fn name(&self) -> String {
        self.shared.view(self.index).name
    }

    #[zbus(property)]
    fn role(&self) -> String {
        self.shared.view(self.index).role
    }

    #[zbus(property)]
    fn leader(&self) -> String {
        self.shared.view(self.index).leader
    }

    #[zbus(property)]
    fn term(&self) -> u64 {
        self.shared.view(self.index).term
    }

    #[zbus(property)]
    fn priority(&self) -> i32 {
        self.shared.view(self.index).priority
    }

    #[zbus(property)]
    fn healthy(&self) -> bool {
        self.shared.view(self.index).healthy
    }

    #[zbus(property)]
    fn maintenance(&self) -> bool {
        self.shared.view(self.index).maintenance
    }

    #[zbus(property)]
    fn failures(&self) -> u32 {
        self.shared.view(self.index).failures
    }

    #[zbus(property)]
    fn since(&self) -> u64 {
        self.shared.view(self.index).since_usec
    }

    #[zbus(property)]
    fn members(&self) -> Vec<(String, String, i32, bool)> {
        self.shared.view(self.index).members
    }

    async fn promote(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ByIndex(self.index), Call::Promote)
            .await
    }

    async fn demote(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ByIndex(self.index), Call::Demote)
            .await
    }

    async fn set_maintenance(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        on: bool,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ByIndex(self.index), Call::SetMaintenance(on))
            .await
    }

    async fn reset_failed(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ByIndex(self.index), Call::ResetFailed)
            .await
    }

    #[zbus(signal, name = "RoleChanged")]
    async fn emit_role_changed(
        emitter: &SignalEmitter<'_>,
        old: &str,
        new: &str,
        term: u64,
        reason: &str,
    ) -> zbus::Result<()>;
}

/// A signal to send, in order.
enum Emission {
    Properties {
        path: String,
        iface: &'static str,
        changed: Vec<(&'static str, Variant<'static>)>,
    },
    RoleChanged {
        path: String,
        old: String,
        new: String,
        term: u64,
        reason: String,
    },
}

/// The runtime's handle on the service.
pub struct DbusService {
    conn: Connection,
    shared: Shared,
    last: Vec<GroupView>,
    last_store_connected: bool,
    emissions: mpsc::UnboundedSender<Emission>,
}

impl DbusService {
    /// Serve the objects on `conn` and take the name `org.promd1`. Method calls arrive on the
    /// returned receiver.
    pub async fn start(
        conn: &Connection,
        node: &str,
        views: Vec<GroupView>,
    ) -> zbus::Result<(DbusService, mpsc::UnboundedReceiver<CallRequest>)> {
        let (calls, calls_rx) = mpsc::unbounded_channel();
        let admin_gid = nix::unistd::Group::from_name(ADMIN_GROUP)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw());
        let shared = Shared {
            node: node.to_string(),
            views: Arc::new(Mutex::new(views.clone())),
            store_connected: Arc::new(AtomicBool::new(false)),
            calls,
            admin_gid,
        };
        let server = conn.object_server();
        server.at(MANAGER_PATH, Manager(shared.clone())).await?;
        for (index, v) in views.iter().enumerate() {
            server
                .at(
                    group_path(&v.name),
                    GroupObject {
                        shared: shared.clone(),
                        index,
                    },
                )
                .await?;
        }
        conn.request_name(BUS_NAME).await?;
        let (emissions, rx) = mpsc::unbounded_channel();
        tokio::spawn(emit_in_order(conn.clone(), rx));
        Ok((
            DbusService {
                conn: conn.clone(),
                shared,
                last: views,
                last_store_connected: false,
                emissions,
            },
            calls_rx,
        ))
    }

    /// Serve a group added by a reload, at slot `index` of the views.
    pub fn add_group(&mut self, index: usize, view: GroupView) {
        let path = group_path(&view.name);
        let object = GroupObject {
            shared: self.shared.clone(),
            index,
        };
        self.shared.views().push(view.clone());
        self.last.push(view);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.object_server().at(path.as_str(), object).await {
                tracing::error!("serving {path}: {e}");
            }
        });
    }

    /// Stop serving a group removed by a reload (its slot stays, retired).
    pub fn remove_group(&self, name: &str) {
        let path = group_path(name);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            if let Err(e) = conn
                .object_server()
                .remove::<GroupObject, _>(path.as_str())
                .await
            {
                tracing::warn!("removing {path}: {e}");
            }
        });
    }

    /// Publish the groups' new state; every property that changed is signalled.
    pub fn update(&mut self, views: Vec<GroupView>, store_connected: bool) {
        *self.shared.views() = views.clone();
        self.shared
            .store_connected
            .store(store_connected, Ordering::Relaxed);
        if store_connected != self.last_store_connected {
            self.last_store_connected = store_connected;
            let changed = vec![("StoreConnected", variant(store_connected))];
            let _ = self.emissions.send(Emission::Properties {
                path: MANAGER_PATH.into(),
                iface: MANAGER_IFACE,
                changed,
            });
        }
        for (old, new) in self.last.iter().zip(&views) {
            if new.retired {
                continue;
            }
            let changed = changed_properties(old, new);
            if !changed.is_empty() {
                let _ = self.emissions.send(Emission::Properties {
                    path: group_path(&new.name),
                    iface: GROUP_IFACE,
                    changed,
                });
            }
        }
        self.last = views;
    }

    /// Signal `RoleChanged(old, new, term, reason)` on `group`'s object, after the property
    /// changes already queued.
    pub fn role_changed(&self, group: &str, old: &str, new: &str, term: u64, reason: &str) {
        let _ = self.emissions.send(Emission::RoleChanged {
            path: group_path(group),
            old: old.into(),
            new: new.into(),
            term,
            reason: reason.into(),
        });
    }
}

fn variant<T: Into<Variant<'static>>>(v: T) -> Variant<'static> {
    v.into()
}

fn changed_properties(old: &GroupView, new: &GroupView) -> Vec<(&'static str, Variant<'static>)> {
    let mut c = Vec::new();
    if old.role != new.role {
        c.push(("Role", variant(new.role.clone())));
    }
    if old.leader != new.leader {
        c.push(("Leader", variant(new.leader.clone())));
    }
    if old.term != new.term {
        c.push(("Term", variant(new.term)));
    }
    if old.priority != new.priority {
        c.push(("Priority", variant(new.priority)));
    }
    if old.healthy != new.healthy {
        c.push(("Healthy", variant(new.healthy)));
    }
    if old.maintenance != new.maintenance {
        c.push(("Maintenance", variant(new.maintenance)));
    }
    if old.failures != new.failures {
        c.push(("Failures", variant(new.failures)));
    }
    if old.since_usec != new.since_usec {
        c.push(("Since", variant(new.since_usec)));
    }
    if old.members != new.members {
        c.push(("Members", variant(new.members.clone())));
    }
    c
}

async fn emit_in_order(conn: Connection, mut rx: mpsc::UnboundedReceiver<Emission>) {
    while let Some(e) = rx.recv().await {
        let result = match e {
            Emission::Properties {
                path,
                iface,
                changed,
            } => {
                let emitter = match SignalEmitter::new(&conn, path) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::warn!("D-Bus path: {e}");
                        continue;
                    }
                };
                let map: HashMap<&str, Variant<'_>> = changed.into_iter().collect();
                match zbus::names::InterfaceName::try_from(iface) {
                    Ok(name) => {
                        zbus::fdo::Properties::properties_changed(
                            &emitter,
                            name,
                            map,
                            Cow::Borrowed(&[]),
                        )
                        .await
                    }
                    Err(e) => Err(e),
                }
            }
            Emission::RoleChanged {
                path,
                old,
                new,
                term,
                reason,
            } => match SignalEmitter::new(&conn, path) {
                Ok(emitter) => {
                    GroupObject::emit_role_changed(&emitter, &old, &new, term, &reason).await
                }
                Err(e) => Err(e),
            },
        };
        if let Err(e) = result {
            tracing::warn!("D-Bus signal not sent: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn group_paths_are_valid_object_paths() {
        assert_eq!(group_path("web"), "/org/promd1/group/web");
        assert_eq!(group_path("web-1"), "/org/promd1/group/web_2d1");
        assert_eq!(group_path("a_b"), "/org/promd1/group/a_5fb");
        for name in ["web", "web-1", "a_b", "0-_-9"] {
            assert!(
                OwnedObjectPath::try_from(group_path(name)).is_ok(),
                "{name}"
            );
        }
    }

    #[test]
    fn only_changed_properties_are_signalled() {
        let a = GroupView {
            name: "web".into(),
            role: "passive".into(),
            ..Default::default()
        };
        let mut b = a.clone();
        assert!(changed_properties(&a, &b).is_empty());
        b.role = "active".into();
        b.term = 7;
        let names: Vec<&str> = changed_properties(&a, &b).iter().map(|c| c.0).collect();
        assert_eq!(names, vec!["Role", "Term"]);
    }
}
