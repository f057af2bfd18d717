//! The D-Bus side: names, timeouts, the hand-written proxies and the connection.

use std::time::Duration;

use zbus::{Connection, DeserializeDict, OwnedObjectPath, Type};

use super::requests::explain;
use super::*;

pub(super) const SERVICE: &str = "org.promd1";
pub(super) const MANAGER_PATH: &str = "/org/promd1";
pub(super) const MANAGER_IFACE: &str = "org.promd1.Manager";
pub(super) const GROUP_IFACE: &str = "org.promd1.Group";
/// Every group object lives under this path; the last element is the daemon's encoding of the
/// group name, which is why the paths come from `ListGroups` rather than being built here.
pub(super) const GROUP_PATH_NS: &str = "/org/promd1/group";

/// Reads answer at once; anything slower means the daemon is stuck.
pub(super) const READ_TIMEOUT: Duration = Duration::from_secs(25);
/// A switchover stops units on one host and starts them on another; the daemon bounds it
/// itself (and answers `org.promd1.Error.Timeout`), so this only catches a daemon that never
/// answers.
pub(super) const SWITCH_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// D-Bus proxies, written by hand after dbus/org.promd1.Manager.xml and dbus/org.promd1.Group.xml.
// ---------------------------------------------------------------------------------------------

/// `org.promd1.Manager` on `/org/promd1`.
#[zbus::proxy(
    interface = "org.promd1.Manager",
    default_service = "org.promd1",
    default_path = "/org/promd1"
)]
pub(super) trait Manager {
    #[zbus(property)]
    fn node(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn version(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn store_connected(&self) -> zbus::Result<bool>;

    /// Every group: name, this host's role, leader, term, object path.
    fn list_groups(&self) -> zbus::Result<Vec<(String, String, String, u64, OwnedObjectPath)>>;

    fn promote(&self, group: &str) -> zbus::Result<()>;

    fn demote(&self, group: &str) -> zbus::Result<()>;

    fn set_maintenance(&self, group: &str, on: bool) -> zbus::Result<()>;

    fn reset_failed(&self, group: &str) -> zbus::Result<()>;
}

/// `org.promd1.Group` on `/org/promd1/group/NAME` (the path is per group, so no default).
/// promctl reads it through `Snapshot` (one `GetAll`) and decodes `watch`'s signals with the
/// `RoleChanged` type generated here; the rest keeps the proxy a full copy of the contract.
#[zbus::proxy(interface = "org.promd1.Group", default_service = "org.promd1")]
pub(super) trait Group {
    #[zbus(property)]
    fn name(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn role(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn leader(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn term(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn priority(&self) -> zbus::Result<i32>;

    #[zbus(property)]
    fn healthy(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn maintenance(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn failures(&self) -> zbus::Result<u32>;

    #[zbus(property)]
    fn since(&self) -> zbus::Result<u64>;

    #[zbus(property)]
    fn members(&self) -> zbus::Result<Vec<(String, String, i32, bool)>>;

    #[zbus(property)]
    fn eligible(&self) -> zbus::Result<bool>;

    #[zbus(property)]
    fn ineligible(&self) -> zbus::Result<String>;

    #[zbus(property)]
    fn member_states(&self) -> zbus::Result<Vec<MemberState>>;

    #[zbus(property)]
    fn slots(&self) -> zbus::Result<Vec<(u32, String, u64, String)>>;

    #[zbus(property)]
    fn addresses(&self) -> zbus::Result<Vec<(String, bool)>>;

    fn promote(&self) -> zbus::Result<()>;

    fn demote(&self) -> zbus::Result<()>;

    fn set_maintenance(&self, on: bool) -> zbus::Result<()>;

    fn reset_failed(&self) -> zbus::Result<()>;

    // Renamed in Rust only: the `Role` property already generates `receive_role_changed`.
    #[zbus(signal, name = "RoleChanged")]
    fn role_change(&self, old: &str, new: &str, term: u64, reason: &str) -> zbus::Result<()>;
}

/// `org.freedesktop.DBus.Properties.GetAll`, typed: one call gives a consistent snapshot of an
/// object, where one `Get` per property could straddle a role change.
#[zbus::proxy(
    interface = "org.freedesktop.DBus.Properties",
    default_service = "org.promd1"
)]
pub(super) trait Snapshot {
    #[zbus(name = "GetAll")]
    fn manager(&self, interface: &str) -> zbus::Result<ManagerProps>;

    #[zbus(name = "GetAll")]
    fn group(&self, interface: &str) -> zbus::Result<GroupProps>;
}

/// The properties of `org.promd1.Manager`; a missing one is an error, not a default.
#[derive(Debug, Clone, PartialEq, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub(super) struct ManagerProps {
    pub(super) node: String,
    pub(super) version: String,
    pub(super) store_connected: bool,
}

/// An element of `MemberStates`: node, role, priority, healthy, eligible, why, failures,
/// since, term.
pub(super) type MemberState = (String, String, i32, bool, bool, String, u32, u64, u64);

/// The properties of `org.promd1.Group`; a missing one is an error, not a default, except
/// those a promd before them does not serve (`Eligible`, `Ineligible`, `MemberStates`,
/// `Slots`, `Addresses`).
#[derive(Debug, Clone, PartialEq, DeserializeDict, Type)]
#[zbus(signature = "a{sv}", rename_all = "PascalCase")]
pub(super) struct GroupProps {
    pub(super) name: String,
    pub(super) role: String,
    pub(super) leader: String,
    pub(super) term: u64,
    pub(super) priority: i32,
    pub(super) healthy: bool,
    pub(super) maintenance: bool,
    pub(super) failures: u32,
    pub(super) since: u64,
    pub(super) members: Vec<(String, String, i32, bool)>,
    pub(super) eligible: Option<bool>,
    pub(super) ineligible: Option<String>,
    pub(super) member_states: Option<Vec<MemberState>>,
    pub(super) slots: Option<Vec<(u32, String, u64, String)>>,
    pub(super) addresses: Option<Vec<(String, bool)>>,
}

/// Connects to the bus with `method_timeout` on every method call (zbus 6 has no timeout
/// unless one is set, and none per proxy).
pub(super) async fn connect(method_timeout: Duration) -> Result<Connection, Failure> {
    let (builder, which) = match std::env::var_os("PROMD_BUS_ADDRESS") {
        Some(addr) if !addr.is_empty() => {
            let addr = addr
                .into_string()
                .map_err(|_| Failure("PROMD_BUS_ADDRESS is not valid UTF-8".to_owned()))?;
            let which = format!("the D-Bus at {addr} (PROMD_BUS_ADDRESS)");
            (zbus::connection::Builder::address(addr.as_str()), which)
        }
        _ => (
            zbus::connection::Builder::system(),
            "the system D-Bus".to_owned(),
        ),
    };
    let build = builder.method_timeout(method_timeout).build();
    // The handshake has no timeout of its own; a wedged bus must not hang promctl.
    match tokio::time::timeout(READ_TIMEOUT, build).await {
        Ok(Ok(conn)) => Ok(conn),
        Ok(Err(e)) => Err(Failure(format!("cannot connect to {which}: {e}"))),
        Err(_) => Err(Failure(format!(
            "cannot connect to {which}: no answer within {} s",
            READ_TIMEOUT.as_secs()
        ))),
    }
}

pub(super) async fn manager(conn: &Connection) -> Result<ManagerProxy<'static>, Failure> {
    ManagerProxy::builder(conn)
        // One-shot reads; a cache would cost a GetAll and a match rule per proxy.
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure(explain(&e, None, READ_TIMEOUT)))
}

pub(super) async fn snapshot(
    conn: &Connection,
    path: &str,
) -> Result<SnapshotProxy<'static>, Failure> {
    SnapshotProxy::builder(conn)
        .path(path.to_owned())
        .cache_properties(CacheProperties::No)
        .build()
        .await
        .map_err(|e| Failure(explain(&e, None, READ_TIMEOUT)))
}

/// The object path of `group`, from `ListGroups` (the daemon encodes names into paths).
pub(super) async fn group_path(manager: &ManagerProxy<'_>, group: &str) -> Result<String, Failure> {
    let groups = manager
        .list_groups()
        .await
        .map_err(|e| Failure(explain(&e, Some(group), READ_TIMEOUT)))?;
    groups
        .into_iter()
        .find(|g| g.0 == group)
        .map(|g| g.4.as_str().to_owned())
        .ok_or_else(|| Failure(format!("no group {group} on this host")))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::status::GroupStatus;

    /// The typed `GetAll` decodes exactly what the daemon's properties carry.
    #[test]
    fn group_props_decode_from_getall_reply() {
        use zbus::Variant;
        use zbus::wire::{LE, serialized::Context};
        let members: Vec<(String, String, i32, bool)> =
            vec![("db-a".into(), "active".into(), 100, true)];
        let mut dict: HashMap<&str, Variant<'_>> = HashMap::new();
        dict.insert("Name", Variant::from("web"));
        dict.insert("Role", Variant::from("active"));
        dict.insert("Leader", Variant::from("db-a"));
        dict.insert("Term", Variant::from(u64::MAX));
        dict.insert("Priority", Variant::from(-3i32));
        dict.insert("Healthy", Variant::from(true));
        dict.insert("Maintenance", Variant::from(false));
        dict.insert("Failures", Variant::from(2u32));
        dict.insert("Since", Variant::from(17u64));
        dict.insert("Members", Variant::from(members.clone()));
        dict.insert("Eligible", Variant::from(false));
        dict.insert("Ineligible", Variant::from("not-passive"));
        let states: Vec<MemberState> = vec![(
            "db-a".into(),
            "active".into(),
            100,
            true,
            false,
            "not-passive".into(),
            1,
            16,
            9,
        )];
        dict.insert("MemberStates", Variant::from(states));
        let ctxt = Context::new(LE, 0);
        let data = match zbus::wire::to_bytes(ctxt, &dict) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let decoded: GroupProps = match data.deserialize() {
            Ok((p, _)) => p,
            Err(e) => panic!("{e}"),
        };
        let status = GroupStatus::from(decoded);
        assert_eq!(status.term, u64::MAX);
        assert_eq!(status.priority, -3);
        assert_eq!(status.failures, 2);
        assert_eq!(status.since_usec, 17);
        assert_eq!(status.members.len(), 1);
        assert_eq!(status.members[0].node, "db-a");
        assert_eq!(
            (status.eligible, status.why.as_str()),
            (false, "not-passive")
        );
        let m = &status.members[0];
        assert_eq!(
            (m.eligible, m.why.as_str(), m.failures, m.since_usec, m.term),
            (false, "not-passive", 1, 16, 9)
        );

        // A promd before MemberStates: the members as Members says, their standing unknown.
        for p in ["Eligible", "Ineligible", "MemberStates"] {
            dict.remove(p);
        }
        let data = match zbus::wire::to_bytes(ctxt, &dict) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        let status = match data.deserialize::<GroupProps>() {
            Ok((p, _)) => GroupStatus::from(p),
            Err(e) => panic!("{e}"),
        };
        let m = &status.members[0];
        assert_eq!((m.node.as_str(), m.role.as_str()), ("db-a", "active"));
        assert_eq!((m.eligible, m.why.as_str()), (false, "unknown"));
        assert_eq!((status.eligible, status.why.as_str()), (false, "unknown"));

        // A property the daemon forgot is an error, not a silent default.
        dict.remove("Members");
        let data = match zbus::wire::to_bytes(ctxt, &dict) {
            Ok(d) => d,
            Err(e) => panic!("{e}"),
        };
        assert!(data.deserialize::<GroupProps>().is_err());
    }
}
