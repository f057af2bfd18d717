//! `promd refuse` on a host that also routes (issue 15): the old holder of a floating address
//! resets what still reaches it for the address on the address's own interface (a client
//! whose neighbour cache still names it), and forwards what it routes to the address from
//! elsewhere (containers, VMs, a segment behind it) to the new holder as before. A fresh user
//! found the first version resetting that routed traffic for a minute after every demotion.
//!
//! Namespaces only, made and removed here: a bridge with the router (`rt`, the old holder),
//! the server that now holds 192.0.2.10 (`sv`) and a client pinned to the router's MAC
//! (`st`); behind the router, on a link of its own, a routed client (`cl`). Root, `nft`.

mod support;

use std::io::ErrorKind;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use support::hosts::{run, run_must};
use support::lan::{LAN_IF, Lan, in_netns, spawn_in_netns};

const VIP: &str = "192.0.2.10";
const PORT: u16 = 8080;

/// A namespace of the test's own outside the bridge, removed when dropped.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run("ip", &["netns", "del", &self.0]);
    }
}

/// Connect from `netns` to the address; the result and how long it took.
fn connect_from(netns: &str) -> (Result<(), ErrorKind>, Duration) {
    let to: SocketAddr = format!("{VIP}:{PORT}").parse().expect("an address");
    spawn_in_netns(netns, "connect", move || {
        let t = Instant::now();
        let r = TcpStream::connect_timeout(&to, Duration::from_secs(3))
            .map(drop)
            .map_err(|e| e.kind());
        (r, t.elapsed())
    })
    .join()
    .expect("the connecting thread")
}

#[test]
fn the_old_holder_refuses_on_the_address_interface_and_forwards_what_it_routes() {
    let mut lan = Lan::new();
    let router = lan.side("rt", "192.0.2.1", "2001:db8::1");
    let server = lan.side("sv", "192.0.2.20", "2001:db8::20");
    let stale = lan.side("st", "192.0.2.150", "2001:db8::150");
    let client = Netns(format!("{router}-cl"));
    run_must("ip", &["netns", "add", &client.0]);

    // The routed client: 10.201.1.2 behind the router's own link.
    run_must(
        "ip",
        &[
            "link", "add", "up0", "netns", &router, "type", "veth", "peer", "name", "dn0", "netns",
            &client.0,
        ],
    );
    in_netns(
        &router,
        &["ip", "address", "add", "10.201.1.1/24", "dev", "up0"],
    );
    in_netns(&router, &["ip", "link", "set", "up0", "up"]);
    // /proc/sys/net is the opening thread's namespace's.
    spawn_in_netns(&router, "forward", || {
        std::fs::write("/proc/sys/net/ipv4/conf/all/forwarding", "1")
    })
    .join()
    .expect("the thread")
    .expect("forwarding on in the router's namespace");
    in_netns(
        &client.0,
        &["ip", "address", "add", "10.201.1.2/24", "dev", "dn0"],
    );
    in_netns(&client.0, &["ip", "link", "set", "dn0", "up"]);
    in_netns(&client.0, &["ip", "link", "set", "lo", "up"]);
    in_netns(
        &client.0,
        &["ip", "route", "add", "default", "via", "10.201.1.1"],
    );
    // The new holder has the address and a way back to the routed client.
    in_netns(
        &server,
        &["ip", "address", "add", &format!("{VIP}/24"), "dev", LAN_IF],
    );
    in_netns(
        &server,
        &["ip", "route", "add", "10.201.1.0/24", "via", "192.0.2.1"],
    );
    let stop = Arc::new(AtomicBool::new(false));
    let serving = spawn_in_netns(&server, "serve", {
        let stop = stop.clone();
        move || {
            let listener = TcpListener::bind(("0.0.0.0", PORT)).expect("listen");
            listener.set_nonblocking(true).expect("non-blocking");
            while !stop.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((conn, _)) => drop(conn),
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        }
    });

    // Before: both clients reach the new holder.
    let link = in_netns(&router, &["ip", "-o", "link", "show", "dev", LAN_IF]);
    let router_mac = link
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .unwrap_or_else(|| panic!("no MAC in {link}"));
    in_netns(
        &stale,
        &[
            "ip",
            "neigh",
            "replace",
            VIP,
            "lladdr",
            router_mac,
            "dev",
            LAN_IF,
            "nud",
            "permanent",
        ],
    );
    assert_eq!(connect_from(&client.0).0, Ok(()), "routed, before");

    // The router gave the address up; its refusal is set as an address unit's holder keeps it.
    let promd = env!("CARGO_BIN_EXE_promd");
    let spec = format!("{VIP}/24");
    in_netns(&router, &[promd, "refuse", &spec, "dev", LAN_IF]);

    let (routed, _) = connect_from(&client.0);
    let (pinned, took) = connect_from(&stale);
    stop.store(true, Ordering::SeqCst);
    let _ = serving.join();
    assert_eq!(
        routed,
        Ok(()),
        "a connection the old holder routes from its other link reaches the new holder"
    );
    assert_eq!(
        pinned,
        Err(ErrorKind::ConnectionRefused),
        "a client whose cache still names the old holder is refused"
    );
    assert!(
        took < Duration::from_millis(500),
        "refused at once, not after a retransmission: {took:?}"
    );
}
