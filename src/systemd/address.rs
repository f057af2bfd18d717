//! A group's floating addresses as units of its role (issue 15): one runtime service per
//! address under `/run/systemd/system`, pulled in by the active target through a drop-in, so
//! that the address is part of the role's closure like every other unit of it — bound to
//! promd, stopped on demotion, stopped when promd dies (its `BindsTo=`), and ordered after the
//! role's other units (their binding drop-ins say `Before=` it): up last, down first, so that
//! while the service stops, clients are refused rather than black-holed.
//!
//! The unit adds the address with iproute2 (`ip address replace`, IPv6 without duplicate
//! address detection: the address must be usable at once, and the lease, not DAD, is what
//! keeps it on one host), announces it (`promd announce`: gratuitous ARP, or an unsolicited
//! neighbour advertisement), and deletes it when it stops, however it stops. Connections that
//! reach this host for the address once it is gone are refused for 40 to 60 s (`promd
//! refuse`, see [`crate::refuse`]: set by the unit's holder as it starts and renewed while
//! the address is up, inert while it is here, nothing to do at the stop), so that clients whose caches still name this host are refused at
//! once rather than left waiting a TCP retransmission for a host that dropped their SYN.

use std::path::{Path, PathBuf};

use crate::config::Address;

/// The prefix of every address unit's name.
pub const UNIT_PREFIX: &str = "promd-address-";

/// The unit that holds `address` for `group`, e.g. `promd-address-web.192.0.2.10.service`
/// (IPv6 colons are valid in unit names). Group names have no `.`, so the group's units are
/// exactly those named [`group_prefix`]`…`.
pub fn unit_name(group: &str, address: &Address) -> String {
    format!("{}{}.service", group_prefix(group), address.ip)
}

/// What every address unit of `group` is named with first: `promd-address-GROUP.`.
pub fn group_prefix(group: &str) -> String {
    format!("{UNIT_PREFIX}{group}.")
}

/// Whether `unit` is one of promd's address units.
pub fn is_address_unit(unit: &str) -> bool {
    unit.starts_with(UNIT_PREFIX) && unit.ends_with(".service")
}

/// The units a group watches: its configured `watch` list with its address units added
/// (`None`, the closure's own units, when `watch` is not configured). An address unit is
/// always watched: an operator who names `web.service` in `watch` still expects to hear when
/// the address failed (its interface gone, `ip` refused), not a role that runs unreachable.
pub fn watch_list(
    group: &str,
    watch: &Option<Vec<String>>,
    addresses: &[Address],
) -> Option<Vec<String>> {
    let mut units = watch.clone()?;
    for a in addresses {
        let unit = unit_name(group, a);
        if !units.contains(&unit) {
            units.push(unit);
        }
    }
    Some(units)
}

/// `ADDRESS/PREFIX`.
fn cidr(address: &Address) -> String {
    format!("{}/{}", address.ip, address.prefix)
}

/// The unit file of `address` for `group`; `promd` is the path of the promd binary (it runs
/// `promd announce`).
pub fn unit_text(group: &str, address: &Address, promd: &Path) -> String {
    let (cidr, dev) = (cidr(address), &address.interface);
    let nodad = if address.ip.is_ipv6() { " nodad" } else { "" };
    format!(
        "# Written by promd for group {group}: the floating address {cidr} on {dev}, up only\n\
         # while this host holds the group's role (pulled in by its active target, bound to\n\
         # promd like every unit of the role). Changed by editing promd.toml, not this file.\n\
         [Unit]\n\
         Description=promd: floating address {cidr} on {dev} (group {group})\n\
         # Started at every promotion, however often: promd's max-restarts bounds failures.\n\
         StartLimitIntervalSec=0\n\
         [Service]\n\
         Type=exec\n\
         ExecStartPre=ip address replace {cidr} dev {dev}{nodad}\n\
         # Announces the address (a lost announcement only delays clients whose caches still\n\
         # name the old host; for IPv4 it also turns on {dev}'s promote_secondaries: deleting\n\
         # this address must not delete the interface's other addresses of its subnet), then\n\
         # stays while the address does: if it leaves {dev} (a link down deletes IPv6\n\
         # addresses, a flush, a network manager), this unit fails and promd restarts it in\n\
         # place or fails over. Meanwhile it keeps the address's refusal (promd refuse) set\n\
         # for the next minute: inert while the address is here, it refuses connections that\n\
         # still reach this host for it from the instant it is deleted, for 40 to 60 s.\n\
         # A stop ends it before the address is deleted.\n\
         ExecStart={promd} announce --hold {cidr} dev {dev}\n\
         ExecStopPost=-ip address del {cidr} dev {dev}\n",
        promd = promd.display(),
    )
}

/// The path of `address`'s unit under `dir`.
pub fn unit_path(dir: &Path, group: &str, address: &Address) -> PathBuf {
    dir.join(unit_name(group, address))
}

/// The drop-in on the group's active target that pulls its address units in (`Wants=`: a
/// failed address fails the role through promd's own check of the closure, not by taking the
/// target down with it). Its name is not a binding's (see `dropin::group_of`).
pub fn wants_path(dir: &Path, group: &str, target: &str) -> PathBuf {
    dir.join(format!("{target}.d"))
        .join(format!("45-promd-addresses-{group}.conf"))
}

/// The text of [`wants_path`]'s drop-in for these address units.
pub fn wants_text(group: &str, units: &[String]) -> String {
    let mut text =
        format!("# Written by promd for group {group}: the group's floating addresses.\n[Unit]\n");
    for unit in units {
        text.push_str(&format!("Wants={unit}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v4() -> Address {
        Address::parse("192.0.2.10/24 dev eth0").unwrap()
    }

    fn v6() -> Address {
        Address::parse("2001:db8::10/64 dev eth0").unwrap()
    }

    #[test]
    fn a_unit_adds_announces_refuses_and_deletes_its_address() {
        let t = unit_text("web", &v4(), Path::new("/usr/bin/promd"));
        assert!(
            t.contains("ExecStartPre=ip address replace 192.0.2.10/24 dev eth0\n"),
            "{t}"
        );
        assert!(
            t.contains("ExecStart=/usr/bin/promd announce --hold 192.0.2.10/24 dev eth0\n"),
            "a lost address fails the unit: {t}"
        );
        // The holder keeps the refusal fresh: at the stop nothing but the delete, where every
        // step would lengthen the gap clients see.
        assert!(
            t.ends_with("ExecStopPost=-ip address del 192.0.2.10/24 dev eth0\n"),
            "{t}"
        );
        assert_eq!(t.matches("ExecStopPost=").count(), 1, "{t}");
        assert!(!t.contains("ExecStartPost="), "{t}");
        assert!(
            t.contains("Type=exec\n") && !t.contains("RemainAfterExit"),
            "{t}"
        );
        // systemd's default (5 starts in 10 s) would refuse a host that takes the role back
        // and forth in a quick series of switchovers.
        assert!(t.contains("\nStartLimitIntervalSec=0\n"), "{t}");
        let t = unit_text("web", &v6(), Path::new("/usr/bin/promd"));
        assert!(
            t.contains("ExecStartPre=ip address replace 2001:db8::10/64 dev eth0 nodad\n"),
            "{t}"
        );
    }

    #[test]
    fn promds_kills_spare_address_units() {
        // A SIGKILL could end `ip address del` before it deleted the address.
        assert!(!crate::systemd::killable(&unit_name("web", &v4())));
        assert!(!crate::systemd::killable(&unit_name("web", &v6())));
        assert!(crate::systemd::killable("web.service"));
        assert!(crate::systemd::killable("promd-web.service"));
        assert!(!crate::systemd::killable("web-active.target"));
    }

    #[test]
    fn unit_names_are_the_groups_and_the_addresses() {
        assert_eq!(
            unit_name("web", &v4()),
            "promd-address-web.192.0.2.10.service"
        );
        assert_eq!(
            unit_name("web", &v6()),
            "promd-address-web.2001:db8::10.service"
        );
        assert!(crate::config::valid_unit_name(&unit_name("web", &v6())));
        assert!(!unit_name("web-2", &v4()).starts_with(&group_prefix("web")));
        assert!(is_address_unit(&unit_name("web", &v4())));
        assert!(!is_address_unit("web.service"));
    }

    #[test]
    fn the_active_target_wants_every_address_unit() {
        let units = [unit_name("web", &v4()), unit_name("web", &v6())];
        let t = wants_text("web", &units);
        assert!(t.ends_with(
            "[Unit]\nWants=promd-address-web.192.0.2.10.service\n\
             Wants=promd-address-web.2001:db8::10.service\n"
        ));
        let p = wants_path(Path::new("/run/systemd/system"), "web", "web-active.target");
        assert_eq!(
            p,
            Path::new("/run/systemd/system/web-active.target.d/45-promd-addresses-web.conf")
        );
    }
}
