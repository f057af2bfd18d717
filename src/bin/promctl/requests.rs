//! promote, demote, maintenance and reset, and D-Bus errors in plain words.

use std::time::Duration;

use zbus::Connection;

use super::bus::*;
use super::status::on_off;
use super::*;

pub(super) const NOT_RUNNING: &str = "promd is not running (is promd.service started?)";
pub(super) const DENIED: &str = "permission denied: run as root or as a member of the promd group";

/// The D-Bus error name and message of `err`, if it is an error reply.
pub(super) fn error_reply(err: &zbus::Error) -> Option<(String, Option<String>)> {
    match err {
        zbus::Error::MethodError(name, message, _) => {
            Some((name.as_str().to_owned(), message.clone()))
        }
        // zbus 6 turns error replies with a standard name (ServiceUnknown, AccessDenied, ...)
        // into `fdo::Error`, not `MethodError`.
        zbus::Error::FDO(fdo) => match fdo.as_ref() {
            zbus::fdo::Error::ZBus(inner) => error_reply(inner),
            other => Some((
                other.name().as_str().to_owned(),
                other.description().map(str::to_owned),
            )),
        },
        _ => None,
    }
}

/// `what` followed by the daemon's own words, if it gave any.
pub(super) fn with_detail(what: String, detail: Option<&str>) -> String {
    match detail.map(str::trim).filter(|d| !d.is_empty()) {
        Some(d) => format!("{what}: {d}"),
        None => what,
    }
}

/// The plain-words message for an error reply named `name`, about `group` if the call had one.
pub(super) fn explain_reply(name: &str, detail: Option<&str>, group: Option<&str>) -> String {
    let g = group.unwrap_or("the group");
    match name {
        "org.promd1.Error.NotEligible" => {
            with_detail(format!("this host cannot become active in {g}"), detail)
        }
        "org.promd1.Error.NoStandby" => {
            with_detail(format!("no other host can take over {g}"), detail)
        }
        "org.promd1.Error.Timeout" => with_detail(
            format!("the switchover of {g} did not finish in time"),
            detail,
        ),
        "org.promd1.Error.UnknownGroup" => match group {
            Some(g) => format!("no group {g} on this host"),
            None => with_detail("no such group on this host".to_owned(), detail),
        },
        "org.promd1.Error.AccessDenied" | "org.freedesktop.DBus.Error.AccessDenied" => {
            DENIED.to_owned()
        }
        "org.freedesktop.DBus.Error.ServiceUnknown"
        | "org.freedesktop.DBus.Error.NameHasNoOwner" => NOT_RUNNING.to_owned(),
        "org.freedesktop.DBus.Error.NoReply"
        | "org.freedesktop.DBus.Error.Timeout"
        | "org.freedesktop.DBus.Error.TimedOut" => {
            "promd did not answer in time; it may still be working on it (see promctl status)"
                .to_owned()
        }
        "org.freedesktop.DBus.Error.UnknownObject"
        | "org.freedesktop.DBus.Error.UnknownInterface"
        | "org.freedesktop.DBus.Error.UnknownMethod"
        | "org.freedesktop.DBus.Error.UnknownProperty"
        | "org.freedesktop.DBus.Error.InvalidArgs" => with_detail(
            "promd did not understand the request (are promd and promctl the same version?)"
                .to_owned(),
            detail,
        ),
        "org.promd1.Error.Failed" => match group {
            Some(g) => with_detail(format!("{g}: promd could not do it"), detail),
            None => with_detail("promd could not do it".to_owned(), detail),
        },
        other => with_detail(format!("promd refused ({other})"), detail),
    }
}

/// The plain-words message for any error of a call to promd about `group`; `waited` is the
/// method-call timeout that was in force.
pub(super) fn explain(err: &zbus::Error, group: Option<&str>, waited: Duration) -> String {
    if let Some((name, detail)) = error_reply(err) {
        return explain_reply(&name, detail.as_deref(), group);
    }
    match err {
        zbus::Error::InputOutput(io) if io.kind() == io::ErrorKind::TimedOut => format!(
            "promd did not answer within {} s; it may still be working on it (see promctl status)",
            waited.as_secs()
        ),
        zbus::Error::InputOutput(io) => format!("lost the connection to the D-Bus: {io}"),
        other => format!("unexpected answer from promd: {other}"),
    }
}

/// What a group looks like after an operator's request, for the one-line answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct After {
    pub(super) role: String,
    pub(super) leader: String,
    pub(super) term: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Promote,
    Demote,
    Maintenance(bool),
    Reset,
}

/// The one line printed after a successful request.
pub(super) fn outcome_line(action: Action, group: &str, after: Option<&After>) -> String {
    let Some(a) = after else {
        // The request succeeded but the state could not be read back; say what was done.
        return match action {
            Action::Promote => format!("{group}: promoted"),
            Action::Demote => format!("{group}: demoted"),
            Action::Maintenance(on) => format!("{group}: maintenance is now {}", on_off(on)),
            Action::Reset => format!("{group}: failed state cleared"),
        };
    };
    match action {
        Action::Promote if a.role == "active" => {
            format!("{group}: this host is now active (term {})", a.term)
        }
        Action::Promote => format!(
            "{group}: promote done; this host is {} (term {})",
            a.role, a.term
        ),
        Action::Demote => {
            let leader = if a.leader.is_empty() {
                "no host is active".to_owned()
            } else {
                format!("{} is active", a.leader)
            };
            format!(
                "{group}: this host is now {}; {leader} (term {})",
                a.role, a.term
            )
        }
        Action::Maintenance(on) => format!(
            "{group}: maintenance is now {} (cluster-wide); this host is {} (term {})",
            on_off(on),
            a.role,
            a.term
        ),
        Action::Reset => format!(
            "{group}: failed state cleared; this host is {} (term {})",
            a.role, a.term
        ),
    }
}

pub(super) async fn read_after(
    conn: &Connection,
    manager: &ManagerProxy<'_>,
    group: &str,
) -> Result<After, Failure> {
    let path = group_path(manager, group).await?;
    // One GetAll rather than a Get per property: role and term from the same moment.
    let props = snapshot(conn, &path)
        .await?
        .group(GROUP_IFACE)
        .await
        .map_err(|e| Failure(explain(&e, Some(group), READ_TIMEOUT)))?;
    Ok(After {
        role: props.role,
        leader: props.leader,
        term: props.term,
    })
}

pub(super) async fn request(action: Action, group: &str) -> Result<(), Failure> {
    let waited = match action {
        Action::Promote | Action::Demote => SWITCH_TIMEOUT,
        Action::Maintenance(_) | Action::Reset => READ_TIMEOUT,
    };
    let conn = connect(waited).await?;
    let manager = manager(&conn).await?;
    let result = match action {
        Action::Promote => manager.promote(group).await,
        Action::Demote => manager.demote(group).await,
        Action::Maintenance(on) => manager.set_maintenance(group, on).await,
        Action::Reset => manager.reset_failed(group).await,
    };
    result.map_err(|e| Failure(explain(&e, Some(group), waited)))?;
    let after = match read_after(&conn, &manager, group).await {
        Ok(after) => Some(after),
        Err(Failure(why)) => {
            eprintln!("promctl: done, but cannot read the new state: {why}");
            None
        }
    };
    print_line(&outcome_line(action, group, after.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_in_plain_words() {
        let web = Some("web");
        assert_eq!(
            explain_reply(
                "org.promd1.Error.NotEligible",
                Some("failed 3 times, cooling down"),
                web
            ),
            "this host cannot become active in web: failed 3 times, cooling down"
        );
        assert_eq!(
            explain_reply("org.promd1.Error.NoStandby", Some("db-b is down"), web),
            "no other host can take over web: db-b is down"
        );
        assert_eq!(
            explain_reply("org.promd1.Error.Timeout", Some(""), web),
            "the switchover of web did not finish in time"
        );
        assert_eq!(
            explain_reply("org.promd1.Error.UnknownGroup", Some("unknown group"), web),
            "no group web on this host"
        );
        for name in [
            "org.promd1.Error.AccessDenied",
            "org.freedesktop.DBus.Error.AccessDenied",
        ] {
            assert_eq!(
                explain_reply(name, Some("Rejected send message"), web),
                "permission denied: run as root or as a member of the promd group"
            );
        }
        for name in [
            "org.freedesktop.DBus.Error.ServiceUnknown",
            "org.freedesktop.DBus.Error.NameHasNoOwner",
        ] {
            assert_eq!(
                explain_reply(name, Some("The name is not activatable"), None),
                "promd is not running (is promd.service started?)"
            );
        }
        assert_eq!(
            explain_reply("org.promd1.Error.Failed", Some("store unreachable"), web),
            "web: promd could not do it: store unreachable"
        );
        assert_eq!(
            explain_reply("org.example.Weird", None, web),
            "promd refused (org.example.Weird)"
        );
    }

    #[test]
    fn zbus_errors_in_plain_words() {
        use zbus::fdo;
        let wait = Duration::from_secs(120);
        let e = zbus::Error::FDO(Box::new(fdo::Error::ServiceUnknown(
            "The name org.promd1 was not provided by any .service files".into(),
        )));
        assert_eq!(explain(&e, Some("web"), wait), NOT_RUNNING);
        let e = zbus::Error::FDO(Box::new(fdo::Error::NameHasNoOwner("no".into())));
        assert_eq!(explain(&e, None, wait), NOT_RUNNING);
        let e = zbus::Error::FDO(Box::new(fdo::Error::AccessDenied(
            "Rejected send message, 2 matched rules".into(),
        )));
        assert_eq!(explain(&e, Some("web"), wait), DENIED);
        // zbus may wrap its own error inside an fdo one.
        let inner = zbus::Error::FDO(Box::new(fdo::Error::AccessDenied("x".into())));
        let e = zbus::Error::FDO(Box::new(fdo::Error::ZBus(inner)));
        assert_eq!(explain(&e, Some("web"), wait), DENIED);
        // The method-call timeout of the connection.
        let e = zbus::Error::InputOutput(std::sync::Arc::new(io::Error::new(
            io::ErrorKind::TimedOut,
            "timed out",
        )));
        assert_eq!(
            explain(&e, Some("web"), wait),
            "promd did not answer within 120 s; it may still be working on it (see promctl status)"
        );
    }

    #[test]
    fn promd_error_replies_come_through_zbus() {
        // An error reply as the daemon sends it, decoded the way the proxies decode it.
        let call = zbus::message::Message::method_call(MANAGER_PATH, "Promote")
            .destination(SERVICE)
            .interface(MANAGER_IFACE)
            .build(&("web",));
        let call = match call {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let reply = zbus::message::Message::error(&call.header(), "org.promd1.Error.NoStandby")
            .build(&("db-b and db-c are down",));
        let reply = match reply {
            Ok(m) => m,
            Err(e) => panic!("{e}"),
        };
        let err = zbus::Error::from(reply);
        assert_eq!(
            explain(&err, Some("web"), SWITCH_TIMEOUT),
            "no other host can take over web: db-b and db-c are down"
        );
    }

    #[test]
    fn outcome_lines() {
        let after = |role: &str, leader: &str, term| After {
            role: role.into(),
            leader: leader.into(),
            term,
        };
        assert_eq!(
            outcome_line(Action::Promote, "web", Some(&after("active", "db-a", 42))),
            "web: this host is now active (term 42)"
        );
        assert_eq!(
            outcome_line(Action::Promote, "web", Some(&after("promoting", "", 42))),
            "web: promote done; this host is promoting (term 42)"
        );
        assert_eq!(
            outcome_line(Action::Demote, "web", Some(&after("passive", "db-b", 43))),
            "web: this host is now passive; db-b is active (term 43)"
        );
        assert_eq!(
            outcome_line(Action::Demote, "web", Some(&after("passive", "", 43))),
            "web: this host is now passive; no host is active (term 43)"
        );
        assert_eq!(
            outcome_line(
                Action::Maintenance(true),
                "web",
                Some(&after("maintenance", "db-a", 43))
            ),
            "web: maintenance is now on (cluster-wide); this host is maintenance (term 43)"
        );
        assert_eq!(
            outcome_line(Action::Reset, "web", Some(&after("passive", "db-b", 43))),
            "web: failed state cleared; this host is passive (term 43)"
        );
        assert_eq!(
            outcome_line(Action::Maintenance(false), "web", None),
            "web: maintenance is now off"
        );
        assert_eq!(outcome_line(Action::Promote, "web", None), "web: promoted");
    }
}
