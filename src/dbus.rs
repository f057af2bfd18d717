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

pub use crate::agent::{Call, GroupView, MemberView};
use crate::agent::{CallError, GroupId, ViewUpdate};

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

impl From<CallError> for PromdError {
    fn from(e: CallError) -> PromdError {
        match e {
            CallError::NotEligible(m) => PromdError::NotEligible(m),
            CallError::NoStandby(m) => PromdError::NoStandby(m),
            CallError::Maintenance(m) => PromdError::Maintenance(m),
            CallError::Timeout(m) => PromdError::Timeout(m),
            CallError::UnknownGroup(m) => PromdError::UnknownGroup(m),
            CallError::Failed(m) => PromdError::Failed(m),
        }
    }
}

/// A method call for the runtime to hand to the agent, and where its answer goes.
pub struct CallRequest {
    /// The group the call's object path named.
    pub group: GroupId,
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
        crate::sync::lock(&self.views)
    }

    /// `f` of the group's view; the default value once the group is gone (its object is
    /// being removed).
    fn view<T: Default>(&self, id: GroupId, f: impl FnOnce(&GroupView) -> T) -> T {
        self.views()
            .iter()
            .find(|v| v.id == id)
            .map(f)
            .unwrap_or_default()
    }

    fn id(&self, name: &str) -> Result<GroupId, PromdError> {
        self.views()
            .iter()
            .find(|v| v.name == name && !v.retired)
            .map(|v| v.id)
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
        let id = match group {
            ByName(name) => self.id(name)?,
            ById(id) => id,
        };
        self.call(id, call).await
    }

    async fn call(&self, group: GroupId, call: Call) -> Result<(), PromdError> {
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
    ById(GroupId),
}
use GroupRef::{ById, ByName};

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
    id: GroupId,
}

#[zbus::interface(name = "org.promd1.Group")]
impl GroupObject {
    #[zbus(property)]
    fn name(&self) -> String {
        self.shared.view(self.id, |v| v.name.clone())
    }

    #[zbus(property)]
    fn role(&self) -> String {
        self.shared.view(self.id, |v| v.role.clone())
    }

    #[zbus(property)]
    fn leader(&self) -> String {
        self.shared.view(self.id, |v| v.leader.clone())
    }

    #[zbus(property)]
    fn term(&self) -> u64 {
        self.shared.view(self.id, |v| v.term)
    }

    #[zbus(property)]
    fn priority(&self) -> i32 {
        self.shared.view(self.id, |v| v.priority)
    }

    #[zbus(property)]
    fn healthy(&self) -> bool {
        self.shared.view(self.id, |v| v.healthy)
    }

    #[zbus(property)]
    fn maintenance(&self) -> bool {
        self.shared.view(self.id, |v| v.maintenance)
    }

    #[zbus(property)]
    fn failures(&self) -> u32 {
        self.shared.view(self.id, |v| v.failures)
    }

    #[zbus(property)]
    fn since(&self) -> u64 {
        self.shared.view(self.id, |v| v.since_usec)
    }

    #[zbus(property)]
    fn members(&self) -> Vec<(String, String, i32, bool)> {
        self.shared.view(self.id, members)
    }

    #[zbus(property)]
    fn eligible(&self) -> bool {
        self.shared.view(self.id, |v| v.eligible)
    }

    #[zbus(property)]
    fn ineligible(&self) -> String {
        self.shared.view(self.id, |v| v.why.clone())
    }

    #[zbus(property)]
    fn member_states(&self) -> Vec<MemberState> {
        self.shared.view(self.id, member_states)
    }

    /// `a(sb)`: each floating address as configured (`192.0.2.10/24 dev eth0`), and whether
    /// this host holds it now (active, its unit up).
    #[zbus(property)]
    fn addresses(&self) -> Vec<(String, bool)> {
        self.shared.view(self.id, |v| v.addresses.clone())
    }

    #[zbus(property)]
    fn slots(&self) -> Vec<(u32, String, u64, String)> {
        self.shared.view(self.id, |v| {
            v.slots
                .iter()
                .map(|s| (s.slot, s.holder.clone(), s.term, s.role.clone()))
                .collect()
        })
    }

    async fn promote(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ById(self.id), Call::Promote)
            .await
    }

    async fn demote(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ById(self.id), Call::Demote)
            .await
    }

    async fn set_maintenance(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
        on: bool,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ById(self.id), Call::SetMaintenance(on))
            .await
    }

    async fn reset_failed(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(), PromdError> {
        self.shared
            .act(conn, &header, ById(self.id), Call::ResetFailed)
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
    /// Where each group's view is in `last` and in the shared views (the same place in
    /// both): a partial update of hundreds of groups finds each in O(1), not by a scan.
    index: HashMap<GroupId, usize>,
    last_store_connected: bool,
    emissions: mpsc::UnboundedSender<Emission>,
}

/// Each group's place in `views`.
fn index_of(views: &[GroupView]) -> HashMap<GroupId, usize> {
    views.iter().enumerate().map(|(i, v)| (v.id, i)).collect()
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
        for v in &views {
            let object = GroupObject {
                shared: shared.clone(),
                id: v.id,
            };
            server.at(group_path(&v.name), object).await?;
        }
        conn.request_name(BUS_NAME).await?;
        let (emissions, rx) = mpsc::unbounded_channel();
        tokio::spawn(emit_in_order(conn.clone(), rx));
        Ok((
            DbusService {
                conn: conn.clone(),
                shared,
                index: index_of(&views),
                last: views,
                last_store_connected: false,
                emissions,
            },
            calls_rx,
        ))
    }

    /// Serve a group added by a reload.
    pub fn add_group(&mut self, view: GroupView) {
        let path = group_path(&view.name);
        let object = GroupObject {
            shared: self.shared.clone(),
            id: view.id,
        };
        self.index.insert(view.id, self.last.len());
        self.shared.views().push(view.clone());
        self.last.push(view);
        let conn = self.conn.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.object_server().at(path.as_str(), object).await {
                tracing::error!("serving {path}: {e}");
            }
        });
    }

    /// Stop serving a group that a reload removed or replaced (and that has exited).
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

    /// Publish the groups' new state; every property that changed is signalled. A partial
    /// update ([`ViewUpdate::Some`]) replaces only the views it carries; with hundreds of
    /// groups, a renewal of one group costs one view, not hundreds.
    pub fn update(&mut self, update: ViewUpdate, store_connected: bool) {
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
        let views = match update {
            ViewUpdate::All(views) => {
                *self.shared.views() = views.clone();
                let last: HashMap<GroupId, &GroupView> =
                    self.last.iter().map(|v| (v.id, v)).collect();
                self.signal_changes(&last, &views);
                self.index = index_of(&views);
                self.last = views;
                return;
            }
            ViewUpdate::Some(views) => views,
        };
        if views.is_empty() {
            return;
        }
        {
            let mut shared = self.shared.views();
            for view in &views {
                if let Some(slot) = place(&self.index, view.id, &mut shared) {
                    *slot = view.clone();
                }
            }
        }
        let last: HashMap<GroupId, &GroupView> = views
            .iter()
            .filter_map(|v| {
                let i = *self.index.get(&v.id)?;
                self.last.get(i).filter(|old| old.id == v.id)
            })
            .map(|v| (v.id, v))
            .collect();
        self.signal_changes(&last, &views);
        for view in views {
            if let Some(slot) = place(&self.index, view.id, &mut self.last) {
                *slot = view;
            }
        }
    }

    /// Signal `PropertiesChanged` for every group in `views` that differs from `last`.
    fn signal_changes(&self, last: &HashMap<GroupId, &GroupView>, views: &[GroupView]) {
        for (path, changed) in group_changes(last, views) {
            let _ = self.emissions.send(Emission::Properties {
                path,
                iface: GROUP_IFACE,
                changed,
            });
        }
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

/// The view of group `id` in `views`, found by `index` (and checked: a stale index finds
/// nothing rather than another group's view).
fn place<'a>(
    index: &HashMap<GroupId, usize>,
    id: GroupId,
    views: &'a mut [GroupView],
) -> Option<&'a mut GroupView> {
    let i = *index.get(&id)?;
    views.get_mut(i).filter(|v| v.id == id)
}

/// An element of `MemberStates`: node, role, priority, healthy, eligible, why (a word, empty
/// when eligible), failures, since (CLOCK_REALTIME µs), term.
pub type MemberState = (String, String, i32, bool, bool, String, u32, u64, u64);

/// `Members`: (node, role, priority, healthy) of each member.
fn members(v: &GroupView) -> Vec<(String, String, i32, bool)> {
    v.members.iter().map(|m| m.summary()).collect()
}

/// `MemberStates`: every member with its eligibility, reason, failures, since and term.
fn member_states(v: &GroupView) -> Vec<MemberState> {
    v.members.iter().map(|m| m.state()).collect()
}

fn variant<T: Into<Variant<'static>>>(v: T) -> Variant<'static> {
    v.into()
}

/// The `PropertiesChanged` each group object owes between two sets of views, by group id: a
/// group that has just been served (no old view) or is leaving (retired) signals nothing.
fn group_changes(
    last: &HashMap<GroupId, &GroupView>,
    views: &[GroupView],
) -> Vec<(String, Vec<(&'static str, Variant<'static>)>)> {
    views
        .iter()
        .filter(|new| !new.retired)
        .filter_map(|new| {
            let old = last.get(&new.id)?;
            let changed = changed_properties(old, new);
            (!changed.is_empty()).then(|| (group_path(&new.name), changed))
        })
        .collect()
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
    let (was, now) = (members(old), members(new));
    if was != now {
        c.push(("Members", variant(now)));
    }
    if old.eligible != new.eligible {
        c.push(("Eligible", variant(new.eligible)));
    }
    if old.why != new.why {
        c.push(("Ineligible", variant(new.why.clone())));
    }
    if old.members != new.members {
        c.push(("MemberStates", variant(member_states(new))));
    }
    if old.addresses != new.addresses {
        c.push(("Addresses", variant(new.addresses.clone())));
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

    /// A group's view: `role`, everything else at its default.
    fn view(id: u64, name: &str, role: &str) -> GroupView {
        GroupView {
            id: GroupId(id),
            name: name.into(),
            role: role.into(),
            leader: String::new(),
            term: 0,
            priority: 100,
            healthy: true,
            maintenance: false,
            failures: 0,
            since_usec: 0,
            members: Vec::new(),
            retired: false,
            eligible: true,
            why: String::new(),
            units_down: Vec::new(),
            slots: Vec::new(),
            addresses: Vec::new(),
        }
    }

    #[test]
    fn only_changed_properties_are_signalled() {
        let a = view(0, "web", "passive");
        let mut b = a.clone();
        assert!(changed_properties(&a, &b).is_empty());
        b.role = "active".into();
        b.term = 7;
        let names: Vec<&str> = changed_properties(&a, &b).iter().map(|c| c.0).collect();
        assert_eq!(names, vec!["Role", "Term"]);
    }

    /// `Members` changes only with its four fields; `MemberStates` with any; `Eligible` and
    /// `Ineligible` with this host's standing.
    #[test]
    fn member_states_and_eligibility_are_signalled() {
        let mut a = view(0, "web", "passive");
        a.members = vec![MemberView {
            node: "n2".into(),
            role: "passive".into(),
            priority: 100,
            healthy: true,
            eligible: true,
            why: String::new(),
            failures: 0,
            since_usec: 5,
            term: 3,
        }];
        let mut b = a.clone();
        b.members[0].eligible = false;
        b.members[0].why = "cooldown".into();
        b.members[0].failures = 4;
        let changed = changed_properties(&a, &b);
        let names: Vec<&str> = changed.iter().map(|c| c.0).collect();
        assert_eq!(names, vec!["MemberStates"]);
        let expected: Vec<MemberState> = vec![(
            "n2".into(),
            "passive".into(),
            100,
            true,
            false,
            "cooldown".into(),
            4,
            5,
            3,
        )];
        assert_eq!(changed[0].1, variant(expected));
        assert_eq!(changed[0].1.value_signature().to_string(), "a(ssibbsutt)");
        b.members[0].healthy = false;
        b.eligible = false;
        b.why = "unhealthy".into();
        let names: Vec<&str> = changed_properties(&a, &b).iter().map(|c| c.0).collect();
        assert_eq!(
            names,
            vec!["Members", "Eligible", "Ineligible", "MemberStates"]
        );
    }

    #[test]
    fn changes_are_matched_by_group_not_by_position() {
        let last = [view(0, "web", "passive"), view(1, "db", "passive")];
        // web closed after a reload removed it; db became active; mail was just added.
        let views = [view(1, "db", "active"), view(2, "mail", "starting")];
        let index = |vs: &[GroupView]| -> HashMap<GroupId, GroupView> {
            vs.iter().map(|v| (v.id, v.clone())).collect()
        };
        let by_id = index(&last);
        let by_id: HashMap<GroupId, &GroupView> = by_id.iter().map(|(k, v)| (*k, v)).collect();
        let changes = group_changes(&by_id, &views);
        let names: Vec<(&str, Vec<&str>)> = changes
            .iter()
            .map(|(path, c)| (path.as_str(), c.iter().map(|p| p.0).collect()))
            .collect();
        assert_eq!(names, vec![("/org/promd1/group/db", vec!["Role"])]);
        let mut leaving = view(1, "db", "demoting");
        leaving.retired = true;
        let by_id = index(&views);
        let by_id: HashMap<GroupId, &GroupView> = by_id.iter().map(|(k, v)| (*k, v)).collect();
        assert!(group_changes(&by_id, &[leaving]).is_empty());
    }

    #[test]
    fn call_errors_keep_their_dbus_names() {
        use zbus::DBusError;
        let m = || "why".to_string();
        for (e, name) in [
            (CallError::NotEligible(m()), "org.promd1.Error.NotEligible"),
            (CallError::NoStandby(m()), "org.promd1.Error.NoStandby"),
            (CallError::Maintenance(m()), "org.promd1.Error.Maintenance"),
            (CallError::Timeout(m()), "org.promd1.Error.Timeout"),
            (
                CallError::UnknownGroup(m()),
                "org.promd1.Error.UnknownGroup",
            ),
            (CallError::Failed(m()), "org.promd1.Error.Failed"),
        ] {
            let e = PromdError::from(e);
            assert_eq!(e.name().as_str(), name);
            assert_eq!(e.description(), Some("why"));
        }
    }
}
