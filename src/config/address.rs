//! A group's floating service address (`addresses = ["192.0.2.10/24 dev eth0"]`): what one
//! entry says, parsed and checked on its own. Checks across entries and groups (the same
//! address twice) are the caller's, which knows the positions.
//!
//! The shape is iproute2's own (`ip address add 192.0.2.10/24 dev eth0`) and keepalived's
//! (`virtual_ipaddress { 192.0.2.10/24 dev eth0 }`), so an operator can copy either.

use std::fmt;
use std::net::IpAddr;

/// The longest interface name Linux accepts: `IFNAMSIZ` (16) less the terminating NUL.
pub const MAX_INTERFACE_LEN: usize = 15;

/// One floating address of a group: `ADDRESS/PREFIX dev INTERFACE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// The address itself (IPv4 or IPv6), as clients reach the service.
    pub ip: IpAddr,
    /// The prefix length of the subnet it sits in: 0–32 for IPv4, 0–128 for IPv6.
    pub prefix: u8,
    /// The interface it is added to, e.g. `eth0` (1 to 15 bytes, no `/`, `:` or whitespace,
    /// not `.` or `..`: the kernel's `dev_valid_name`).
    pub interface: String,
}

/// Why an `addresses` entry is refused; the message says which part is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(pub String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The loopback interface, which every network namespace has under this name.
const LOOPBACK: &str = "lo";

/// Whether `word` reads as an entry's first word, `ADDRESS/PREFIX`.
fn starts_entry(word: &str) -> bool {
    word.split_once('/')
        .is_some_and(|(ip, _)| ip.parse::<IpAddr>().is_ok())
}

/// The hint for entries run together in one string: `parts`, each its own string (or an
/// example, when a part does not begin with an address).
fn own_strings<S: AsRef<str>>(parts: impl Iterator<Item = S>) -> String {
    let parts: Vec<String> = parts
        .map(|p| p.as_ref().split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|p| !p.is_empty())
        .collect();
    let list = if parts
        .iter()
        .all(|p| p.split(' ').next().is_some_and(starts_entry))
    {
        parts.iter().map(|p| format!("{p:?}")).collect::<Vec<_>>()
    } else {
        vec![
            "\"192.0.2.10/24 dev eth0\"".to_string(),
            "\"192.0.2.11/24 dev eth0\"".to_string(),
        ]
    };
    format!(
        "each address is its own string in the list: [{}]",
        list.join(", ")
    )
}

const SHAPE: &str = "write ADDRESS/PREFIX dev INTERFACE, e.g. \"192.0.2.10/24 dev eth0\" or \
                     \"2001:db8::10/64 dev eth0\"";

impl Address {
    /// Parse `ADDRESS/PREFIX dev INTERFACE` (words separated by any whitespace).
    ///
    /// Errors: a missing or extra word, a comma (two entries in one string), a missing
    /// `/PREFIX`, an address that is not IPv4 or IPv6, a prefix out of range for its family,
    /// an address no host may float (unspecified, loopback, multicast, IPv4 broadcast), an
    /// interface name the kernel refuses, or the loopback interface `lo`.
    pub fn parse(text: &str) -> Result<Address, AddressError> {
        // No part of an entry holds a comma: one is two entries run together in one string
        // (`"192.0.2.10/24 dev eth0, 192.0.2.11/24 dev eth0"`), or a list's comma inside it.
        if text.contains(',') {
            return Err(AddressError(format!(
                "`,` is not part of an address: {}",
                own_strings(text.split(','))
            )));
        }
        let words: Vec<&str> = text.split_whitespace().collect();
        let (cidr, interface) = match words.as_slice() {
            [cidr, dev, interface] if *dev == "dev" => (*cidr, *interface),
            [_, dev, ..] if *dev != "dev" => {
                return Err(AddressError(format!(
                    "`{dev}` where `dev` was expected: {SHAPE}"
                )));
            }
            [] => return Err(AddressError(format!("empty address: {SHAPE}"))),
            [_] | [_, _] => {
                return Err(AddressError(format!(
                    "no interface (`dev INTERFACE`): {SHAPE}"
                )));
            }
            _ => {
                let extra = words[3..].join(" ");
                // Another entry in the same string: hint at two strings.
                return Err(AddressError(if starts_entry(words[3]) {
                    format!(
                        "unexpected `{extra}` after the interface: {}",
                        own_strings(words.chunks(3).map(|w| w.join(" ")))
                    )
                } else {
                    format!("unexpected `{extra}` after the interface: {SHAPE}")
                }));
            }
        };
        let Some((ip, prefix)) = cidr.split_once('/') else {
            return Err(AddressError(format!(
                "`{cidr}` has no prefix length (e.g. `{cidr}/{}`): the address is added with \
                 its subnet, as `ip address add` does",
                if cidr.contains(':') { 64 } else { 24 }
            )));
        };
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| AddressError(format!("`{ip}` is not an IPv4 or IPv6 address")))?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        // Digits only, without a leading zero: `+24` and `024` are not silently read as 24.
        let plain = !prefix.is_empty()
            && prefix.bytes().all(|b| b.is_ascii_digit())
            && !(prefix.len() > 1 && prefix.starts_with('0'));
        let prefix: u8 = plain
            .then(|| prefix.parse().ok())
            .flatten()
            .filter(|p| (1..=max).contains(p))
            .ok_or_else(|| {
                AddressError(format!(
                    "prefix length `/{prefix}` is not a number from 1 to {max}"
                ))
            })?;
        if let Some(why) = not_floatable(&ip) {
            return Err(AddressError(format!("`{ip}` cannot float: it is {why}")));
        }
        if let Some(why) = subnet_own(&ip, prefix) {
            return Err(AddressError(format!(
                "`{ip}/{prefix}` is {why}, not an address of a host in it"
            )));
        }
        check_interface(interface)?;
        if interface == LOOPBACK {
            return Err(AddressError(format!(
                "interface `{LOOPBACK}` is the loopback interface: an address on it is reached \
                 from this host only and cannot be announced to the segment (its unit would \
                 fail at every promotion); name the interface that faces the clients, e.g. \
                 `dev eth0`"
            )));
        }
        Ok(Address {
            ip,
            prefix,
            interface: interface.to_string(),
        })
    }

    /// `ADDRESS/PREFIX`, as `ip address` takes it.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.ip, self.prefix)
    }
}

impl fmt::Display for Address {
    /// The entry as written in promd.toml: `192.0.2.10/24 dev eth0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} dev {}", self.cidr(), self.interface)
    }
}

/// Why `ip` can never be a service address, if so.
fn not_floatable(ip: &IpAddr) -> Option<&'static str> {
    if ip.is_unspecified() {
        Some("the unspecified address")
    } else if ip.is_loopback()
        || matches!(ip, IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback()))
    {
        Some("a loopback address")
    } else if ip.is_multicast() {
        Some("a multicast address")
    } else if matches!(ip, IpAddr::V4(v4) if v4.is_broadcast()) {
        Some("the broadcast address")
    } else {
        None
    }
}

/// Whether `ip` is an address its subnet keeps for itself: the IPv4 network and broadcast
/// addresses (prefixes up to /30; /31 and /32 have none, RFC 3021), the IPv6 subnet-router
/// anycast address (all host bits zero, prefixes up to /126; RFC 4291 §2.6.1).
fn subnet_own(ip: &IpAddr, prefix: u8) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) if prefix <= 30 => {
            let host = u32::from(*v4) & (u32::MAX >> prefix);
            if host == 0 {
                Some("its subnet's network address")
            } else if host == u32::MAX >> prefix {
                Some("its subnet's broadcast address")
            } else {
                None
            }
        }
        IpAddr::V6(v6) if prefix <= 126 => (u128::from(*v6) & (u128::MAX >> prefix) == 0)
            .then_some("its subnet's router anycast address"),
        _ => None,
    }
}

/// The kernel's `dev_valid_name` (1 to 15 bytes, not `.` or `..`), and only letters,
/// digits, `.`, `-`, `_` and `+`: the name goes into a unit file's command lines, where `%`,
/// `$`, `\` and quotes mean something to systemd, and into an nftables script
/// (`promd refuse`). Names the kernel makes and udev's are all of that kind.
fn check_interface(name: &str) -> Result<(), AddressError> {
    let bad = |why: &str| Err(AddressError(format!("interface `{name}`: {why}")));
    if name.len() > MAX_INTERFACE_LEN {
        return bad("longer than 15 bytes, the kernel's limit");
    }
    if matches!(name, "." | ".." | "all" | "default") {
        return bad("not a name the kernel accepts");
    }
    if name.starts_with('-') {
        // `ip` and promd's own helpers would read it as an option.
        return bad("a name that begins with `-` would be read as an option");
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+')))
    {
        let before = |c: char| name.split(c).next().unwrap_or(name);
        let hint = match c {
            ':' => format!(
                " (`{name}` is a label, not an interface: write `dev {}`)",
                before(':')
            ),
            '@' => format!(
                " (`ip link` shows `{name}` for the link {} on {}: write `dev {}`)",
                before('@'),
                name.split('@').nth(1).unwrap_or(""),
                before('@')
            ),
            _ => String::new(),
        };
        return bad(&format!("`{c}` is not allowed in an interface name{hint}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        match Address::parse(text) {
            Err(e) => e.0,
            Ok(a) => panic!("{text:?} was accepted as {a:?}"),
        }
    }

    #[test]
    fn addresses_a_subnet_keeps_and_odd_prefixes_are_refused() {
        for (text, why) in [
            ("192.0.2.10/0 dev eth0", "from 1 to 32"),
            ("192.0.2.12/+24 dev eth0", "`/+24` is not a number"),
            ("192.0.2.13/024 dev eth0", "`/024` is not a number"),
            ("192.0.2.0/24 dev eth0", "network address"),
            ("192.0.2.255/24 dev eth0", "broadcast address"),
            ("192.0.2.3/30 dev eth0", "broadcast address"),
            ("2001:db8::/64 dev eth0", "router anycast"),
            ("::ffff:127.0.0.1/128 dev eth0", "loopback"),
        ] {
            assert!(err(text).contains(why), "{text}: {}", err(text));
        }
        // /31 and /32 have no network or broadcast address; nor /127 and /128 an anycast one.
        for ok in [
            "192.0.2.0/31 dev eth0",
            "192.0.2.1/31 dev eth0",
            "192.0.2.0/32 dev eth0",
            "2001:db8::/127 dev eth0",
            "fe80::1/64 dev eth0",
        ] {
            assert!(Address::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn an_address_on_the_loopback_interface_is_refused() {
        // It could never be announced (lo has no Ethernet address): its unit would fail at
        // every promotion.
        for text in ["192.0.2.10/24 dev lo", "2001:db8::10/64 dev lo"] {
            let e = err(text);
            assert!(
                e.contains("interface `lo` is the loopback interface"),
                "{text}: {e}"
            );
            assert!(e.contains("e.g. `dev eth0`"), "{text}: {e}");
        }
        // A loopback address is refused on any interface, and said to be one.
        assert!(err("127.0.0.2/8 dev eth0").contains("loopback address"));
        assert!(err("::1/128 dev eth0").contains("loopback address"));
        assert!(
            Address::parse("192.0.2.10/24 dev lo0").is_ok(),
            "only `lo` itself"
        );
    }

    #[test]
    fn a_comma_says_that_each_address_is_its_own_string() {
        let e = err("192.0.2.10/24 dev eth0, 192.0.2.11/24 dev eth0");
        assert!(
            e.contains(
                "each address is its own string in the list: \
                 [\"192.0.2.10/24 dev eth0\", \"192.0.2.11/24 dev eth0\"]"
            ),
            "{e}"
        );
        let e = err("192.0.2.10/24 dev eth0,");
        assert!(
            e.contains("each address is its own string in the list: [\"192.0.2.10/24 dev eth0\"]"),
            "{e}"
        );
        let e = err("192.0.2.10/24,dev eth0");
        assert!(e.contains("each address is its own string"), "{e}");
        // Two entries in one string without a comma: the same hint.
        let e = err("192.0.2.10/24 dev eth0 192.0.2.11/24 dev eth0");
        assert!(
            e.contains("unexpected `192.0.2.11/24 dev eth0` after the interface")
                && e.contains("each address is its own string in the list"),
            "{e}"
        );
        // Other extra words get no such hint.
        assert!(!err("192.0.2.10/24 dev eth0 label x").contains("own string"));
    }

    #[test]
    fn interface_names_that_read_as_options_or_sysctl_folders_are_refused() {
        assert!(err("192.0.2.10/24 dev -h").contains("begins with `-`"));
        assert!(err("192.0.2.10/24 dev --help").contains("begins with `-`"));
        assert!(err("192.0.2.10/24 dev all").contains("not a name the kernel accepts"));
        assert!(err("192.0.2.10/24 dev default").contains("not a name the kernel accepts"));
        assert!(err("192.0.2.10/24 dev eth0:0").contains("`eth0:0` is a label"));
    }

    #[test]
    fn ipv4_and_ipv6_entries_read_as_ip_writes_them() {
        let a = Address::parse("192.0.2.10/24 dev eth0").unwrap();
        assert_eq!(a.ip, "192.0.2.10".parse::<IpAddr>().unwrap());
        assert_eq!((a.prefix, a.interface.as_str()), (24, "eth0"));
        assert_eq!(a.to_string(), "192.0.2.10/24 dev eth0");
        let b = Address::parse("  2001:db8::10/64\tdev  bond0.100 ").unwrap();
        assert_eq!(b.cidr(), "2001:db8::10/64");
        assert_eq!(b.interface, "bond0.100");
    }

    #[test]
    fn each_wrong_part_is_named() {
        assert!(err("").contains("empty address"));
        assert!(err("192.0.2.10/24").contains("no interface"));
        assert!(err("192.0.2.10/24 eth0").contains("`eth0` where `dev` was expected"));
        assert!(err("192.0.2.10/24 on eth0").contains("`on` where `dev` was expected"));
        assert!(err("192.0.2.10/24 dev eth0 label x").contains("unexpected `label x`"));
        assert!(err("192.0.2.10 dev eth0").contains("has no prefix length"));
        assert!(err("192.0.2.300/24 dev eth0").contains("`192.0.2.300` is not an IPv4"));
        assert!(err("192.0.2.10/33 dev eth0").contains("from 1 to 32"));
        assert!(err("2001:db8::1/129 dev eth0").contains("from 1 to 128"));
        assert!(err("192.0.2.10/x dev eth0").contains("`/x` is not a number"));
        assert!(err("0.0.0.0/8 dev eth0").contains("unspecified"));
        assert!(err("2001:db8::10 dev eth0").contains("e.g. `2001:db8::10/64`"));
        assert!(err("127.0.0.2/8 dev lo").contains("loopback"));
        assert!(err("::1/128 dev lo").contains("loopback"));
        assert!(err("224.0.0.18/32 dev eth0").contains("multicast"));
        assert!(err("255.255.255.255/32 dev eth0").contains("broadcast"));
        assert!(err("192.0.2.10/24 dev averyveryverylongname").contains("longer than 15"));
        assert!(err("192.0.2.10/24 dev eth0:1").contains("`:` is not allowed"));
        assert!(err("192.0.2.10/24 dev eth0:1").contains("write `dev eth0`"));
        assert!(err("192.0.2.10/24 dev eth0.100@eth0").contains("write `dev eth0.100`"));
        // What systemd or nft would read as their own: refused, not written into a unit.
        for name in ["e%n", "e$x", "e\"x", "e\\x", "e'x", "e;x"] {
            let line = format!("192.0.2.10/24 dev {name}");
            assert!(err(&line).contains("is not allowed"), "{name}");
        }
        for name in ["eth0", "eth0.100", "br-lan", "veth_a+1", "wlp2s0"] {
            let line = format!("192.0.2.10/24 dev {name}");
            assert!(Address::parse(&line).is_ok(), "{name}");
        }
        assert!(err("192.0.2.10/24 dev ..").contains("not a name"));
    }
}
