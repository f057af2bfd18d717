//! `promd announce ADDRESS dev INTERFACE`: tell the segment that a floating address has moved
//! to this host, as its address unit comes up (see `systemd::address`).
//!
//! IPv4: a gratuitous ARP request (RFC 5227 §3's "ARP Announcement": sender and target
//! protocol address both the address, broadcast), which updates every neighbour's cache entry
//! for the address. IPv6: an unsolicited Neighbour Advertisement to all nodes with the
//! Override flag and the target link-layer address (RFC 4861 §7.2.6). Both are sent a few
//! times (a frame can be lost), like keepalived's `garp_master_repeat`.
//!
//! For IPv4 it first turns on the interface's `promote_secondaries`
//! (`/proc/sys/net/ipv4/conf/INTERFACE/promote_secondaries`), as keepalived does: with it off
//! (the kernel's default), deleting an interface's primary address of a subnet deletes every
//! other address of that subnet with it, so a demotion of one group removed another group's
//! floating address (or the host's own) from the same interface, silently.
//!
//! Why our own sender: iputils `arping -U` waits a second per frame and takes whole seconds
//! between repeats, and Debian 12 has no tool for unsolicited advertisements (ndisc6 carries
//! none). The frames are built here, pure and tested; the sending is one `AF_PACKET` socket,
//! which needs `CAP_NET_RAW` (the address unit runs as root; promd.service itself has none).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::ifaddrs::InterfaceAddress;
use nix::sys::socket::{AddressFamily, LinkAddr, SockFlag, SockType, SockaddrLike, sendto};
use nix::sys::socket::{MsgFlags, socket};
use thiserror::Error;

use crate::config::Address;

/// How many times each announcement is sent, and how far apart.
pub const REPEATS: u32 = 3;
/// The pause between two announcements.
pub const INTERVAL: Duration = Duration::from_millis(500);

const ETH_P_ARP: u16 = 0x0806;
const ETH_P_IPV6: u16 = 0x86dd;
const BROADCAST: [u8; 6] = [0xff; 6];
/// Ethernet's shortest frame without its checksum: shorter frames are padded with zeros.
const MIN_FRAME: usize = 60;

/// Why an announcement could not be sent.
#[derive(Debug, Error)]
pub enum AnnounceError {
    /// The interface does not exist, or has no Ethernet address to announce.
    #[error("interface {interface}: {why}")]
    Interface {
        /// The interface named.
        interface: String,
        /// What is wrong with it.
        why: String,
    },
    /// The address left the interface while the unit held it (`--hold`).
    #[error(
        "{ip} is no longer on {interface} ({}): the address unit fails, so that promd restarts \
         it in place or fails over",
        lost_why(.ip)
    )]
    Lost {
        /// The address.
        ip: IpAddr,
        /// The interface named.
        interface: String,
    },
    /// The address's interface cannot carry traffic: set down, or up without a carrier (a
    /// cable pulled, a switch port or a peer down). The address may well still be on it (a
    /// link down leaves IPv4 addresses, and a carrier loss IPv6 ones too), so this is checked
    /// for itself: keepalived's `track_interface`, always on.
    #[error(
        "{interface} {why}: the address unit fails, so that promd restarts it in place or fails \
         over"
    )]
    LinkDown {
        /// The interface named.
        interface: String,
        /// Its state, as a phrase (`is down`, `has no carrier`).
        why: &'static str,
    },
    /// The socket could not be made or the frame not sent (`CAP_NET_RAW` missing, link down).
    #[error("sending on {interface}: {error}")]
    Send {
        /// The interface named.
        interface: String,
        /// The system's error.
        error: nix::Error,
    },
}

/// What can take `ip` off its interface: a link down deletes IPv6 addresses, and leaves
/// IPv4 ones in place (so it is not named for one).
fn lost_why(ip: &IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => {
            "deleted by hand, by a flush or by a network manager, or the interface was removed"
        }
        IpAddr::V6(_) => {
            "the link went down, which deletes IPv6 addresses, or it was deleted by hand, by a \
             flush or by a network manager, or the interface was removed"
        }
    }
}

/// The gratuitous ARP request that announces `ip` at `mac`: Ethernet broadcast, ARP request
/// with sender and target protocol address `ip` and target hardware address zero.
pub fn garp_frame(mac: [u8; 6], ip: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::with_capacity(MIN_FRAME);
    f.extend_from_slice(&BROADCAST);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_ARP.to_be_bytes());
    f.extend_from_slice(&1u16.to_be_bytes()); // hardware: Ethernet
    f.extend_from_slice(&0x0800u16.to_be_bytes()); // protocol: IPv4
    f.extend_from_slice(&[6, 4]);
    f.extend_from_slice(&1u16.to_be_bytes()); // request
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&ip.octets());
    f.resize(MIN_FRAME, 0);
    f
}

/// The Ethernet address of an IPv6 multicast group (RFC 2464 §7).
fn multicast_mac(group: Ipv6Addr) -> [u8; 6] {
    let o = group.octets();
    [0x33, 0x33, o[12], o[13], o[14], o[15]]
}

/// The Internet checksum (RFC 1071) of `parts`, one after another.
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for byte in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(high) => sum += u32::from(u16::from_be_bytes([high, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(high) = odd {
        sum += u32::from(u16::from_be_bytes([high, 0]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The unsolicited Neighbour Advertisement that announces `ip` at `mac`: from `ip` to all
/// nodes (ff02::1), hop limit 255, Override set, with the target link-layer address option.
pub fn unsolicited_na_frame(mac: [u8; 6], ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let mut icmp = Vec::with_capacity(32);
    icmp.extend_from_slice(&[136, 0, 0, 0]); // type, code, checksum (below)
    icmp.extend_from_slice(&0x2000_0000u32.to_be_bytes()); // flags: Override
    icmp.extend_from_slice(&ip.octets());
    icmp.extend_from_slice(&[2, 1]); // option: target link-layer address, 8 bytes
    icmp.extend_from_slice(&mac);
    let len = u32::try_from(icmp.len()).unwrap_or(0);
    let pseudo_tail = [len.to_be_bytes(), [0, 0, 0, 58]].concat();
    let sum = checksum(&[&ip.octets(), &all_nodes.octets(), &pseudo_tail, &icmp]);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());

    let mut f = Vec::with_capacity(14 + 40 + icmp.len());
    f.extend_from_slice(&multicast_mac(all_nodes));
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ETH_P_IPV6.to_be_bytes());
    f.extend_from_slice(&0x6000_0000u32.to_be_bytes()); // version 6, no class, no flow
    f.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    f.extend_from_slice(&[58, 255]); // next header ICMPv6, hop limit 255
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&all_nodes.octets());
    f.extend_from_slice(&icmp);
    f
}

/// The entries `getifaddrs(3)` lists for `interface` (none: no such interface). Read from
/// the kernel, not `/sys/class/net`: a sysfs mounted in another network namespace (a
/// container's, say) does not list the interface.
fn entries_of(interface: &str) -> Result<Vec<InterfaceAddress>, AnnounceError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| AnnounceError::Interface {
        interface: interface.to_string(),
        why: format!("getifaddrs: {e}"),
    })?;
    let name = primary_name(interface);
    Ok(addrs.filter(|a| a.interface_name == name).collect())
}

/// The kernel's own name of `interface`, which may be an alternative name (`ip link property
/// add dev eth0 altname uplink0`, or one udev gave): `ip` takes either, `getifaddrs(3)` and
/// `/proc/sys/net` know only the primary. `interface` itself when it names no interface.
pub fn primary_name(interface: &str) -> String {
    nix::net::if_::if_nametoindex(interface)
        .and_then(nix::net::if_::if_indextoname)
        .ok()
        .and_then(|c| c.into_string().ok())
        .unwrap_or_else(|| interface.to_string())
}

/// Why an interface with these `flags` (its `getifaddrs(3)` entries', which the kernel fills
/// from the link's: `dev_get_flags`) cannot carry the address's traffic; `None` while it can.
/// `IFF_RUNNING` is the kernel's operational state (RFC 2863: `up`, or `unknown` for a
/// driver that reports no carrier), so a VLAN or bond whose lower link is down is down too.
fn link_down(flags: nix::net::if_::InterfaceFlags) -> Option<&'static str> {
    use nix::net::if_::InterfaceFlags as F;
    if !flags.contains(F::IFF_UP) {
        Some("is down (`ip link set ... down`)")
    } else if !flags.contains(F::IFF_LOWER_UP) {
        Some("has no carrier (a cable, a switch port or the link's peer is down)")
    } else if !flags.contains(F::IFF_RUNNING) {
        Some("is not operational (dormant, or a link below it is down)")
    } else {
        None
    }
}

/// [`link_down`] of `interface`, whose `entries` these are (none: no such interface).
fn check_link(interface: &str, entries: &[InterfaceAddress]) -> Result<(), AnnounceError> {
    let Some(first) = entries.first() else {
        return Err(AnnounceError::Interface {
            interface: interface.to_string(),
            why: "no such interface".into(),
        });
    };
    match link_down(first.flags) {
        Some(why) => Err(AnnounceError::LinkDown {
            interface: interface.to_string(),
            why,
        }),
        None => Ok(()),
    }
}

/// The Ethernet address among `interface`'s `entries` (its `AF_PACKET` entry).
fn interface_mac(interface: &str, entries: &[InterfaceAddress]) -> Result<[u8; 6], AnnounceError> {
    entries
        .iter()
        .filter_map(|a| a.address?.as_link_addr()?.addr())
        .find(|mac| *mac != [0; 6])
        .ok_or_else(|| AnnounceError::Interface {
            interface: interface.to_string(),
            why: if entries.is_empty() {
                "no such interface".into()
            } else {
                "it has no Ethernet address to announce (a loopback, a tunnel?)".into()
            },
        })
}

/// The prefix lengths with which `entries` (an interface's) hold `ip`: none when they do
/// not, more than one when it is on the interface with two prefixes (IPv4 keeps
/// `192.0.2.10/16` and `192.0.2.10/24` apart).
fn prefixes_of(entries: &[InterfaceAddress], ip: IpAddr) -> Vec<u8> {
    entries
        .iter()
        .filter_map(|a| {
            let (addr, mask) = (a.address?, a.netmask?);
            // Its leading ones: getifaddrs makes the netmask from the prefix length.
            let ones = match ip {
                IpAddr::V4(v4) => (addr.as_sockaddr_in()?.ip() == v4)
                    .then_some(u32::from(mask.as_sockaddr_in()?.ip()).leading_ones())?,
                IpAddr::V6(v6) => (addr.as_sockaddr_in6()?.ip() == v6)
                    .then_some(u128::from(mask.as_sockaddr_in6()?.ip()).leading_ones())?,
            };
            u8::try_from(ones).ok()
        })
        .collect()
}

/// Why `address` is not on its interface exactly as given, when the interface holds its IP
/// with the prefix lengths `found`: not at all, or also (or only) with another prefix. promd
/// adds and deletes exactly `ADDRESS/PREFIX`, so a copy with another prefix would stay on
/// this host when the role leaves it (and the address be on two hosts): announcing it would
/// hide that.
fn misplaced(address: &Address, found: &[u8]) -> Option<String> {
    let (ip, prefix, dev) = (address.ip, address.prefix, &address.interface);
    if found.is_empty() {
        return Some(format!(
            "{ip} is not on it: announcing an address this host does not hold would point the \
             segment at the wrong host (add it first: `ip address add {ip}/{prefix} dev {dev}`)"
        ));
    }
    let others: Vec<String> = found
        .iter()
        .filter(|p| **p != prefix)
        .map(|p| format!("{ip}/{p}"))
        .collect();
    let first = others.first()?;
    let what = if found.contains(&prefix) {
        format!(
            "{ip} is on it as {ip}/{prefix} and also as {}",
            others.join(" and ")
        )
    } else {
        format!(
            "{ip} is on it as {}, not as {ip}/{prefix}",
            others.join(" and ")
        )
    };
    Some(format!(
        "{what}: promd adds and deletes exactly {ip}/{prefix}, so {} would stay on this host \
         when the role leaves it, and the address would be on two hosts; delete it (`ip address \
         del {first} dev {dev}`), or write the prefix meant in promd.toml",
        others.join(" and ")
    ))
}

/// Keep the other addresses of a subnet when its primary address on `interface` is deleted
/// (see the module's documentation). A failure is reported and the announcement goes on.
pub fn keep_secondaries(interface: &str) -> std::io::Result<()> {
    // Interface names hold no `/` (the configuration refuses them) nor `..`.
    let path = format!(
        "/proc/sys/net/ipv4/conf/{}/promote_secondaries",
        primary_name(interface)
    );
    std::fs::write(path, "1")
}

/// How often `--hold` looks at its address and its link: a lost address or a link down fails
/// the unit within this, and one `getifaddrs` per second and address held costs next to
/// nothing.
pub const HOLD_CHECK: Duration = Duration::from_secs(1);

/// Whether the unit can go on holding `address`: its interface up with a carrier
/// ([`AnnounceError::LinkDown`]) and the address on it with its prefix
/// ([`AnnounceError::Lost`]).
pub fn still_held(address: &Address) -> Result<(), AnnounceError> {
    let entries = entries_of(&address.interface)?;
    check_link(&address.interface, &entries)?;
    if prefixes_of(&entries, address.ip).contains(&address.prefix) {
        Ok(())
    } else {
        Err(AnnounceError::Lost {
            ip: address.ip,
            interface: address.interface.clone(),
        })
    }
}

/// While the unit holds `address` (`promd announce --hold`): return once it can no longer
/// ([`still_held`]), checking every `every`. A demotion ends the process with SIGTERM before
/// the address is deleted, so only a loss from outside promd gets here.
pub fn hold(address: &Address, every: Duration) -> AnnounceError {
    loop {
        std::thread::sleep(every);
        if let Err(e) = still_held(address) {
            return e;
        }
    }
}

/// Send the announcement of `address` on its interface [`REPEATS`] times, [`INTERVAL`]
/// apart (for IPv4 after [`keep_secondaries`]). Refused, with nothing changed, when the
/// interface does not exist, is down or has no carrier ([`AnnounceError::LinkDown`]: the
/// host cannot serve the address there), or does not have the address exactly as given: not at all (an
/// announcement of an address this host does not hold would point the segment's caches at
/// it, away from the host that does), or also or only with another prefix length (a copy
/// that promd's delete of `ADDRESS/PREFIX` would leave on this host).
pub fn announce(address: &Address) -> Result<(), AnnounceError> {
    let (ip, interface) = (address.ip, address.interface.as_str());
    let entries = entries_of(interface)?;
    let mac = interface_mac(interface, &entries)?;
    check_link(interface, &entries)?;
    if let Some(why) = misplaced(address, &prefixes_of(&entries, ip)) {
        return Err(AnnounceError::Interface {
            interface: interface.to_string(),
            why,
        });
    }
    if ip.is_ipv4()
        && let Err(e) = keep_secondaries(interface)
    {
        eprintln!("promd announce: {interface}: turning promote_secondaries on: {e}");
    }
    let index = nix::net::if_::if_nametoindex(interface).map_err(|e| AnnounceError::Interface {
        interface: interface.to_string(),
        why: e.to_string(),
    })?;
    let (frame, protocol, to) = match ip {
        IpAddr::V4(v4) => (garp_frame(mac, v4), ETH_P_ARP, BROADCAST),
        IpAddr::V6(v6) => (
            unsolicited_na_frame(mac, v6),
            ETH_P_IPV6,
            multicast_mac(Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1)),
        ),
    };
    let send_error = |error| AnnounceError::Send {
        interface: interface.to_string(),
        error,
    };
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(send_error)?;
    // SAFETY: sockaddr_ll is plain old data; all zeros is a valid (empty) value of it.
    let mut ll: nix::libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    ll.sll_family = nix::libc::AF_PACKET as u16;
    ll.sll_protocol = protocol.to_be();
    ll.sll_ifindex = i32::try_from(index).unwrap_or(0);
    ll.sll_halen = 6;
    ll.sll_addr[..6].copy_from_slice(&to);
    let len = std::mem::size_of::<nix::libc::sockaddr_ll>() as nix::libc::socklen_t;
    // SAFETY: `ll` is a whole, initialised sockaddr_ll and `len` its size.
    let addr =
        unsafe { LinkAddr::from_raw((&raw const ll).cast::<nix::libc::sockaddr>(), Some(len)) }
            .ok_or_else(|| send_error(nix::Error::EINVAL))?;
    for i in 0..REPEATS {
        if i > 0 {
            std::thread::sleep(INTERVAL);
        }
        sendto(fd.as_raw_fd(), &frame, &addr, MsgFlags::empty()).map_err(send_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x20, 0x30];

    #[test]
    fn a_gratuitous_arp_names_the_address_as_sender_and_target() {
        let f = garp_frame(MAC, Ipv4Addr::new(192, 0, 2, 10));
        assert_eq!(f.len(), 60, "padded to Ethernet's shortest frame");
        assert_eq!(&f[0..6], &BROADCAST);
        assert_eq!(&f[6..12], &MAC);
        assert_eq!(&f[12..14], &[0x08, 0x06]);
        assert_eq!(&f[20..22], &[0, 1], "a request, as RFC 5227 announces");
        assert_eq!(&f[22..28], &MAC, "sender hardware address");
        assert_eq!(&f[28..32], &[192, 0, 2, 10], "sender protocol address");
        assert_eq!(&f[32..38], &[0; 6], "target hardware address");
        assert_eq!(&f[38..42], &[192, 0, 2, 10], "target protocol address");
        assert!(f[42..].iter().all(|b| *b == 0));
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_carries_our_link_address() {
        let ip: Ipv6Addr = "2001:db8::10".parse().unwrap();
        let f = unsolicited_na_frame(MAC, ip);
        assert_eq!(&f[0..6], &[0x33, 0x33, 0, 0, 0, 1], "all-nodes multicast");
        assert_eq!(&f[12..14], &[0x86, 0xdd]);
        let ip6 = &f[14..54];
        assert_eq!(ip6[0] >> 4, 6);
        assert_eq!(u16::from_be_bytes([ip6[4], ip6[5]]), 32, "payload length");
        assert_eq!((ip6[6], ip6[7]), (58, 255), "ICMPv6, hop limit 255");
        assert_eq!(&ip6[8..24], &ip.octets(), "from the address itself");
        let icmp = &f[54..];
        assert_eq!((icmp[0], icmp[1]), (136, 0), "Neighbour Advertisement");
        assert_eq!(icmp[4], 0x20, "Override, neither Router nor Solicited");
        assert_eq!(&icmp[8..24], &ip.octets(), "target");
        assert_eq!(&icmp[24..26], &[2, 1], "target link-layer address option");
        assert_eq!(&icmp[26..32], &MAC);
        // The checksum over the pseudo-header and the message sums to all ones.
        let tail = [32u32.to_be_bytes(), [0, 0, 0, 58]].concat();
        assert_eq!(checksum(&[&ip6[8..24], &ip6[24..40], &tail, icmp]), 0);
    }

    #[test]
    fn the_checksum_is_rfc_1071s() {
        // RFC 1071 §3's example: 0x0001 0xf203 0xf4f5 0xf6f7 sums to 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(checksum(&[&data]), !0xddf2);
        // An odd length is padded with a zero byte; split parts sum as one.
        assert_eq!(checksum(&[&[0x12]]), !0x1200);
        assert_eq!(checksum(&[&data[..3], &data[3..]]), checksum(&[&data]));
    }

    #[test]
    fn a_lost_address_is_explained_for_its_family() {
        let lost = |ip: &str| {
            AnnounceError::Lost {
                ip: ip.parse().unwrap(),
                interface: "eth0".into(),
            }
            .to_string()
        };
        // A link down leaves IPv4 addresses in place: not a cause to name for one.
        let v4 = lost("192.0.2.10");
        assert!(v4.starts_with("192.0.2.10 is no longer on eth0 ("), "{v4}");
        assert!(!v4.contains("link") && !v4.contains("IPv6"), "{v4}");
        assert!(v4.contains("deleted by hand"), "{v4}");
        let v6 = lost("2001:db8::10");
        assert!(
            v6.contains("the link went down, which deletes IPv6 addresses"),
            "{v6}"
        );
        for text in [&v4, &v6] {
            assert!(
                text.contains("promd restarts it in place or fails over"),
                "{text}"
            );
        }
    }

    /// An address as given, without the checks of [`Address::parse`] (which refuses `lo`).
    fn at(text: &str, interface: &str) -> Address {
        let (ip, prefix) = text.split_once('/').unwrap();
        Address {
            ip: ip.parse().unwrap(),
            prefix: prefix.parse().unwrap(),
            interface: interface.into(),
        }
    }

    #[test]
    fn an_address_on_its_interface_with_another_prefix_is_named_and_refused() {
        let a = at("192.0.2.10/24", "eth0");
        assert_eq!(misplaced(&a, &[24]), None);
        let e = misplaced(&a, &[]).unwrap();
        assert!(e.starts_with("192.0.2.10 is not on it"), "{e}");
        assert!(e.contains("`ip address add 192.0.2.10/24 dev eth0`"), "{e}");
        let e = misplaced(&a, &[16]).unwrap();
        assert!(
            e.starts_with("192.0.2.10 is on it as 192.0.2.10/16, not as 192.0.2.10/24: "),
            "{e}"
        );
        assert!(e.contains("`ip address del 192.0.2.10/16 dev eth0`"), "{e}");
        let e = misplaced(&a, &[24, 16]).unwrap();
        assert!(
            e.starts_with("192.0.2.10 is on it as 192.0.2.10/24 and also as 192.0.2.10/16: "),
            "{e}"
        );
        assert!(e.contains("192.0.2.10/16 would stay on this host"), "{e}");
        // The interface's prefix is read as the kernel has it: 127.0.0.1/8 on lo.
        let entries = entries_of("lo").unwrap();
        assert_eq!(prefixes_of(&entries, "127.0.0.1".parse().unwrap()), [8]);
        assert!(prefixes_of(&entries, "192.0.2.199".parse().unwrap()).is_empty());
    }

    #[test]
    fn an_interface_that_does_not_exist_is_named() {
        let e = announce(&at("192.0.2.10/24", "promd-none0")).unwrap_err();
        assert!(
            e.to_string()
                .contains("interface promd-none0: no such interface"),
            "{e}"
        );
        // One without an Ethernet address is said to be that, not missing; nothing changed.
        let e = announce(&at("127.0.0.1/8", "lo")).unwrap_err();
        assert!(e.to_string().contains("no Ethernet address"), "{e}");
    }

    #[test]
    fn an_address_is_held_only_on_its_interface() {
        assert!(still_held(&at("127.0.0.1/8", "lo")).is_ok());
        let e = still_held(&at("192.0.2.199/24", "lo")).unwrap_err();
        assert!(matches!(e, AnnounceError::Lost { .. }), "{e}");
        let e = still_held(&at("127.0.0.1/8", "promd-none0")).unwrap_err();
        assert!(e.to_string().contains("no such interface"), "{e}");
        // With its prefix: what promd deletes is ADDRESS/PREFIX, not another copy.
        let e = still_held(&at("127.0.0.1/16", "lo")).unwrap_err();
        assert!(matches!(e, AnnounceError::Lost { .. }), "{e}");
        // A hold of an address that is not there ends at its first look, as lost.
        let e = hold(&at("192.0.2.199/24", "lo"), Duration::from_millis(1));
        assert!(matches!(e, AnnounceError::Lost { .. }), "{e}");
        assert!(
            e.to_string().contains("192.0.2.199 is no longer on lo"),
            "{e}"
        );
    }

    #[test]
    fn an_interface_is_known_by_its_primary_name() {
        assert_eq!(primary_name("lo"), "lo");
        assert_eq!(primary_name("promd-none0"), "promd-none0");
    }

    #[test]
    fn a_link_set_down_or_without_carrier_cannot_hold_an_address() {
        use nix::net::if_::InterfaceFlags as F;
        let up = F::IFF_UP | F::IFF_LOWER_UP | F::IFF_RUNNING | F::IFF_BROADCAST;
        assert_eq!(link_down(up), None);
        // `ip link set eth0 down`: the kernel clears every one of them.
        assert!(link_down(F::IFF_BROADCAST).unwrap().contains("is down"));
        // A cable pulled: up, no carrier, so not operational either.
        let unplugged = F::IFF_UP | F::IFF_BROADCAST;
        assert!(link_down(unplugged).unwrap().contains("no carrier"));
        // A VLAN whose lower link lost its carrier, or an 802.1X port not authorised yet.
        let dormant = F::IFF_UP | F::IFF_LOWER_UP | F::IFF_DORMANT;
        assert!(link_down(dormant).unwrap().contains("not operational"));
        let e = AnnounceError::LinkDown {
            interface: "eth0".into(),
            why: link_down(unplugged).unwrap(),
        };
        assert_eq!(
            e.to_string(),
            "eth0 has no carrier (a cable, a switch port or the link's peer is down): the \
             address unit fails, so that promd restarts it in place or fails over"
        );
    }
}
