//! `promd refuse [--held] ADDRESS/PREFIX dev INTERFACE`: once a floating address has left
//! this host, connections that still reach it are refused rather than black-holed (issue 15,
//! "clients are refused, not black-holed").
//!
//! Why it is needed: neighbours keep the old host's MAC for the address in their caches until
//! the new holder's announcement reaches them, and between the old holder's delete and the new
//! one's announcement there is always a moment (the address is never on two hosts). A SYN sent
//! to the old MAC in that moment reaches a host that no longer has the address; the kernel
//! drops it without a word, and the client's TCP tries again only after its retransmission
//! timeout, a whole second. Answered with a reset instead, the client's connect fails at once
//! (`ECONNREFUSED`) and its next try, after the announcement, reaches the new host. The same
//! for a connection that was open when the address left: its next segment reaches a host that
//! cannot answer for the address any more, and was left to the client's timeout (2 s gaps in
//! 6 of 80 runs of benches/vip.rs before this was so); a reset ends it at once.
//!
//! How: one nftables table of promd's own, `inet promd`, with a set of refused addresses per
//! family, each with the interface it floats on (`ifname . address`), and a chain at the
//! prerouting hook that answers every TCP segment that arrives on that interface for a refused
//! address with a TCP reset (a reset itself is never answered) — unless the address is on this
//! host (`fib daddr type local`). Only segments that arrive on the address's own interface:
//! a host that routes traffic to the address from its other interfaces (containers, VMs, a
//! segment behind it) goes on forwarding it to the new holder (a fresh user found the first
//! version resetting that traffic for a minute after every demotion). So an element is
//! inert while its address is here: the address unit's holder (`promd announce --hold`)
//! sets it as it starts and sets it afresh every [`RENEW_EVERY`] ([`keep`]), each time for
//! [`REFUSE_FOR`], and the refusal takes over the instant the address is deleted, however
//! that happens, without a step between the delete and the refusal, and without delaying
//! the delete (the fence's margin is spent on deleting, not on this). Nothing is done at the
//! stop: the element runs out between `REFUSE_FOR - RENEW_EVERY` and `REFUSE_FOR` after the
//! delete (the kernel ends it, no process of ours lingers). Giving it its expiry in the
//! unit's `ExecStopPost=`, as the first version did, spawned `nft` between the delete and
//! the end of the stop: 20–30 ms of every hand-over's gap. The table holds no address,
//! answers no ARP or neighbour solicitation, and passes every other packet as before, so the address still has one owner
//! on the segment. nftables (`nft`) is the field's tool for it; the script is built here, pure
//! and tested, and given to `nft -f -` as one transaction. Without `nft` the address unit goes
//! on (its lines are `-`-prefixed): clients are then black-holed as before, and the error says
//! so.

use std::io::Write as _;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use thiserror::Error;

/// How long a host refuses connections to an address it gave up: longer than a Linux
/// neighbour can keep naming it without hearing from it (reachable for at most 1.5 times
/// `base_reachable_time`, 45 s, then 5 s `delay_first_probe_time` and three unicast probes a
/// second apart), so even a client that missed every announcement is refused, not
/// black-holed, until it asks the segment again.
pub const REFUSE_FOR: Duration = Duration::from_secs(60);

/// How often [`keep`] sets the refusal afresh while the address is here: a third of
/// [`REFUSE_FOR`], so an address that left is refused for at least 40 s (still past a
/// neighbour's reachable time, 45 s at most, minus the 5 s it already heard nothing).
pub const RENEW_EVERY: Duration = Duration::from_secs(20);

/// promd's nftables table (family `inet`).
pub const TABLE: &str = "promd";

/// Why the refusal could not be set.
#[derive(Debug, Error)]
pub enum RefuseError {
    /// `nft` could not be run (not installed: Debian's and Fedora's package `nftables`).
    #[error("running nft: {0} (clients that still name this host are black-holed, not refused)")]
    Spawn(std::io::Error),
    /// `nft` refused the script (no `CAP_NET_ADMIN`, a kernel without nf_tables).
    #[error("nft: {0}")]
    Nft(String),
    /// An interface that does not exist: nothing was set.
    #[error("interface {0} does not exist (`ip link` lists them): nothing set")]
    NoInterface(String),
}

/// Whether `interface` exists in this network namespace. An error other than "no such
/// device" says nothing either way, and counts as there.
fn exists(interface: &str) -> bool {
    !matches!(
        nix::net::if_::if_nametoindex(interface),
        Err(nix::Error::ENODEV)
    )
}

/// Refuse to set anything for an `interface` that does not exist: `promd refuse` is run by
/// hand (the address units keep their refusal through [`keep`], on an interface they just
/// added the address to), and an element for a mistyped name would match nothing.
pub fn check_interface(interface: &str) -> Result<(), RefuseError> {
    if exists(interface) {
        Ok(())
    } else {
        Err(RefuseError::NoInterface(interface.to_string()))
    }
}

/// The nftables script that refuses `ip` whenever it is not on this host, for `duration`
/// from now (whole seconds, at least one) or, with `None`, until a later run gives it one: it
/// makes the table, its two sets and its chain if they are missing, rewrites the chain's three
/// rules (so that running it again never adds a rule twice), and puts `ip` in its family's set
/// afresh (add, delete, add: a plain add leaves an element that is there already as it was,
/// with kernels before 6.x). One `nft -f` transaction: all of it or nothing.
pub fn script(ip: IpAddr, interface: &str, duration: Option<Duration>) -> String {
    let set = set_of(ip);
    // Interface names are checked (`config::address`): no quote, space or `/` in them.
    let key = format!("\"{interface}\" . {ip}");
    let timeout = duration.map_or(String::new(), |d| {
        format!(" timeout {}s", d.as_secs().max(1))
    });
    format!(
        "add table inet {TABLE}\n\
         add set inet {TABLE} refused_on4 {{ type ifname . ipv4_addr; flags timeout; }}\n\
         add set inet {TABLE} refused_on6 {{ type ifname . ipv6_addr; flags timeout; }}\n\
         add chain inet {TABLE} refuse {{ type filter hook prerouting priority raw; policy accept; }}\n\
         flush chain inet {TABLE} refuse\n\
         add rule inet {TABLE} refuse fib daddr type local accept\n\
         add rule inet {TABLE} refuse iifname . ip daddr @refused_on4 meta l4proto tcp reject with tcp reset\n\
         add rule inet {TABLE} refuse iifname . ip6 daddr @refused_on6 meta l4proto tcp reject with tcp reset\n\
         add element inet {TABLE} {set} {{ {key}{timeout} }}\n\
         delete element inet {TABLE} {set} {{ {key} }}\n\
         add element inet {TABLE} {set} {{ {key}{timeout} }}\n"
    )
}

/// The set that holds refused addresses of `ip`'s family.
fn set_of(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "refused_on4",
        IpAddr::V6(_) => "refused_on6",
    }
}

/// Refuse connections to `ip` whenever it is not on this host: for [`REFUSE_FOR`] from now,
/// or with `held` until a run without it (see the module's docs). Needs `CAP_NET_ADMIN`: the
/// address unit runs as root; promd.service itself has no capability.
pub fn refuse(ip: IpAddr, interface: &str, held: bool) -> Result<(), RefuseError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(RefuseError::Spawn)?;
    // nft's `iifname` is the primary name, whatever name promd.toml gives the interface.
    let interface = crate::announce::primary_name(interface);
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script(ip, &interface, (!held).then_some(REFUSE_FOR)).as_bytes())
            .map_err(RefuseError::Spawn)?;
    }
    let out = child.wait_with_output().map_err(RefuseError::Spawn)?;
    if out.status.success() {
        Ok(())
    } else {
        Err(RefuseError::Nft(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ))
    }
}

/// For the address unit's holder, on a thread of its own: [`refuse`] `ip` on `interface`
/// for [`REFUSE_FOR`] now and again every [`RENEW_EVERY`], for as long as the process runs.
/// `report` gets each failure unlike the one before (an `nft` that is missing is said once,
/// not every 20 s); the holder goes on either way: a refusal only spares clients a timeout.
pub fn keep(ip: IpAddr, interface: &str, report: impl Fn(&RefuseError)) {
    let mut last: Option<String> = None;
    loop {
        match refuse(ip, interface, false) {
            Ok(()) => last = None,
            Err(e) => {
                let text = e.to_string();
                if last.as_deref() != Some(text.as_str()) {
                    report(&e);
                }
                last = Some(text);
            }
        }
        std::thread::sleep(RENEW_EVERY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_puts_the_address_in_its_familys_set_with_a_fresh_timeout() {
        let s = script(
            "192.0.2.10".parse().unwrap(),
            "eth0",
            Some(Duration::from_secs(60)),
        );
        assert!(
            s.ends_with(
                "add element inet promd refused_on4 { \"eth0\" . 192.0.2.10 timeout 60s }\n\
                 delete element inet promd refused_on4 { \"eth0\" . 192.0.2.10 }\n\
                 add element inet promd refused_on4 { \"eth0\" . 192.0.2.10 timeout 60s }\n"
            ),
            "{s}"
        );
        let s = script(
            "2001:db8::10".parse().unwrap(),
            "eth0",
            Some(Duration::from_millis(10)),
        );
        assert!(
            s.ends_with(
                "add element inet promd refused_on6 { \"eth0\" . 2001:db8::10 timeout 1s }\n"
            ),
            "a timeout is whole seconds, at least one: {s}"
        );
        let s = script("192.0.2.10".parse().unwrap(), "eth0", None);
        assert!(
            s.ends_with(
                "delete element inet promd refused_on4 { \"eth0\" . 192.0.2.10 }\n\
                 add element inet promd refused_on4 { \"eth0\" . 192.0.2.10 }\n"
            ),
            "held: no expiry until a later run gives it one: {s}"
        );
    }

    #[test]
    fn the_chain_is_rewritten_not_appended_to_and_spares_local_addresses() {
        let s = script("192.0.2.10".parse().unwrap(), "eth0", Some(REFUSE_FOR));
        let lines: Vec<&str> = s.lines().collect();
        let flush = lines
            .iter()
            .position(|l| *l == "flush chain inet promd refuse")
            .expect("the chain is flushed");
        let rules: Vec<&str> = lines
            .iter()
            .filter(|l| l.starts_with("add rule"))
            .copied()
            .collect();
        assert_eq!(rules.len(), 3, "{s}");
        assert!(
            lines[..flush].iter().all(|l| !l.starts_with("add rule")),
            "rules come after the flush: {s}"
        );
        assert!(
            rules[0].ends_with("fib daddr type local accept"),
            "an address this host has again is served, first: {s}"
        );
        for (rule, family) in rules[1..].iter().zip(["ip", "ip6"]) {
            assert!(
                rule.contains(&format!(" iifname . {family} daddr @refused_on"))
                    && rule.ends_with("meta l4proto tcp reject with tcp reset"),
                "every TCP segment is answered with a reset, a new connection's SYN and one \
                 of a connection that was open when the address left: {rule}"
            );
        }
        assert!(
            s.contains("hook prerouting"),
            "before routing drops it: {s}"
        );
    }

    #[test]
    fn a_missing_interface_is_an_error_and_sets_nothing() {
        assert!(check_interface("lo").is_ok());
        let e = check_interface("promd-none0").unwrap_err();
        assert!(matches!(e, RefuseError::NoInterface(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "interface promd-none0 does not exist (`ip link` lists them): nothing set"
        );
    }

    #[test]
    fn families_have_their_own_sets() {
        assert_eq!(set_of("192.0.2.10".parse().unwrap()), "refused_on4");
        assert_eq!(set_of("2001:db8::10".parse().unwrap()), "refused_on6");
    }
}
