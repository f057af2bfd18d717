//! Floating addresses (issue 15) on one layer-2 segment: three nspawn hosts and a 3-member
//! etcd, each host with a `lan0` on a bridge the test makes (`support::lan`), a client and a
//! probe namespace on the same bridge. The group's addresses, `192.0.2.10/24` and
//! `2001:db8::10/64` on `lan0`, are units of its role; its service answers HTTP with its host
//! and `PROMD_TERM` on every address.
//!
//! Checked as a user would, through a D-Bus Promote, `systemctl stop promd`, kill -9 of promd,
//! SIGSTOP of promd and a silent cut of the active host (IP and ARP): the client, asking the
//! floating addresses every 10 ms, reaches the new active host each time; every answer came
//! from a host inside its own active span, while that host held the address; no two hosts
//! ever held an address at once (`ip monitor address` on every host); and the probe
//! (`arping`, `ndisc6`, from a third namespace) never heard two owners answer. After each
//! fault, a client whose neighbour cache still names the old holder (pinned, in a fourth
//! namespace, as a cache that missed every announcement would) is refused at once, not left
//! waiting for TCP's retransmission (`promd refuse`). Before the faults, a carrier loss on
//! the active host's link fails the group over. Then twelve switchovers back and forth
//! between two hosts, as fast as they complete (past systemd's default start limit for the
//! address units). Traffic: only the test's own segment and the hosts' own addresses.

mod support;

use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use support::cluster::{Cluster, StoreKind};
use support::etcd::EtcdCluster;
use support::haproxy::{self, Answer, Client, Gap, WEB_PORT};
use support::hosts::{self, Net};
use support::lan::{self, AddrMonitor, OwnerProbe, Probe};
use support::vip::{Fault, Segment, VIP4, VIP6, run_fault, wait_addresses_on};

const LEASE: Duration = Duration::from_secs(2);

#[test]
fn monitor_and_probe_lines_are_read() {
    assert_eq!(
        lan::parse_monitor_line(
            "3: lan0    inet 192.0.2.10/24 scope global lan0\\       valid_lft forever"
        ),
        Some((true, VIP4.parse().unwrap()))
    );
    assert_eq!(
        lan::parse_monitor_line("Deleted 3: lan0    inet6 2001:db8::10/64 scope global"),
        Some((false, VIP6.parse().unwrap()))
    );
    assert_eq!(
        lan::answer_mac("Unicast reply from 192.0.2.10 [7a:54:70:D1:26:83]  0.577ms").as_deref(),
        Some("7A:54:70:D1:26:83")
    );
    assert_eq!(
        lan::answer_mac("Target link-layer address: 6A:1E:BF:B6:7B:3E").as_deref(),
        Some("6A:1E:BF:B6:7B:3E")
    );
    assert_eq!(lan::answer_mac("Sent 1 probes (1 broadcast(s))"), None);
}

#[test]
fn the_floating_address_follows_the_active_host_and_is_never_on_two() {
    let net = Net::new(3);
    let etcd = EtcdCluster::start(3, &net.gateway_ips());
    // Its monitors start before promd does: every add and delete of the addresses is seen.
    let mut seg = Segment::new(&net);
    let stale_ns = seg.lan.side("st", "192.0.2.150", "2001:db8::150");
    let (netns, macs, monitors) = (&seg.netns, &seg.macs, &seg.monitors);
    let vips = Segment::vips();

    // A third address in a subnet no host has: on the active host it is that subnet's
    // primary address, with another one beside it below.
    let extra = format!(
        "addresses = [\"{VIP4}/24 dev lan0\", \"{VIP6}/64 dev lan0\", \"{PRIMARY}/24 dev lan0\"]\n"
    );
    let c = Cluster::boot_with(&net, StoreKind::Etcd(&etcd), LEASE, &extra, |i, spec| {
        haproxy::web_host(spec, net.host_ip(i));
        spec.capability("CAP_NET_ADMIN");
    });
    let active = c.wait_one_active(None, Duration::from_secs(60));
    wait_addresses_on(&c, netns, active, &vips);
    a_lost_address_is_put_back(&c, netns, active);
    secondaries_outlive_the_floating_primary(&c, netns, active, &vips);
    a_link_without_carrier_fails_over(&c, &seg, &vips);

    let probes: Vec<OwnerProbe> = vips
        .iter()
        .map(|ip| OwnerProbe::start(&seg.probe_ns, *ip))
        .collect();
    let clients: Vec<Client> = vips
        .iter()
        .map(|ip| Client::start_in(&seg.client_ns, SocketAddr::new(*ip, WEB_PORT)))
        .collect();
    let mut gaps: Vec<(Fault, Vec<Gap>)> = Vec::new();
    for fault in Fault::ALL {
        let before = c.wait_one_active(None, Duration::from_secs(60));
        gaps.push((fault, run_fault(&c, netns, &clients, &vips, fault)));
        stale_clients_are_refused(&stale_ns, &macs[before], &vips, fault);
        // The segment agrees: the probe hears the new active host answer for each address.
        let now = c.wait_one_active(None, Duration::from_secs(60));
        let t = hosts::now_ns();
        for probe in &probes {
            probe.wait_heard(t, &macs[now], Duration::from_secs(10));
        }
    }

    // Switchovers back and forth between two hosts as fast as they complete: each host takes
    // the addresses more often than systemd's default start limit allows (5 in 10 s).
    let n = c.hosts.len();
    let pingpong = Instant::now();
    for k in 0..12 {
        let to = k % 2;
        if c.wait_one_active(None, Duration::from_secs(60)) != to {
            c.promote_next((to + n - 1) % n);
        }
        wait_addresses_on(&c, netns, to, &vips);
    }
    eprintln!(
        "12 switchovers between {} and {} in {} ms, the addresses on the new host after each",
        c.hosts[0].name(),
        c.hosts[1].name(),
        pingpong.elapsed().as_millis()
    );

    // What the client got, against the hosts' runs and address holdings.
    let spans = c.spans();
    let mut served = 0;
    for (client, ip) in clients.iter().zip(&vips) {
        let answers = client.answers();
        served += answers.iter().filter(|a| a.served().is_some()).count();
        let outside = haproxy::outside_spans(&answers, &spans);
        assert!(
            outside.is_empty(),
            "answers to {ip} from outside an active span:\n  {}\ntimeline:\n{}",
            outside.join("\n  "),
            hosts::timeline(&spans)
        );
        let unheld = answered_without_the_address(&c, monitors, *ip, &answers);
        assert!(
            unheld.is_empty(),
            "answers to {ip} from a host that did not hold it:\n  {}",
            unheld.join("\n  ")
        );
    }
    drop(clients);
    c.check_history();
    for ip in &vips {
        never_on_two_hosts(&c, monitors, *ip);
    }
    for (probe, ip) in probes.iter().zip(&vips) {
        owners_heard_one_at_a_time(&probe.probes(), monitors, macs, *ip);
    }

    eprintln!(
        "\n{served} answers, every one from the active host holding the address.\n\n\
         | fault | gap to {VIP4} ms | gap to {VIP6} ms |\n|---|---|---|"
    );
    for (fault, g) in &gaps {
        eprintln!(
            "| {} | {} | {} |",
            fault.name(),
            g[0].gap.as_millis(),
            g[1].gap.as_millis()
        );
    }
}

/// A rolling reload that renames the group (each host in turn, as an operator rolls a new
/// file out) never puts the address on two hosts. The renamed group's key is vacant on the
/// first host reloaded, but the address is still the old group's on the active host: the
/// renamed group's campaign is lost (the journal says who holds the address) until the old
/// group lets go, on the active host's own reload. Then the address is on one host again,
/// under the new name. (Before the address had a key of its own in the store, the first host
/// reloaded took the address at once, beside the active host.)
#[test]
fn a_rolling_rename_never_puts_the_address_on_two_hosts() {
    let net = Net::new(2);
    let etcd = EtcdCluster::start(1, &net.gateway_ips());
    let seg = Segment::new(&net);
    let vip4: IpAddr = VIP4.parse().expect("an address");
    let c = Cluster::boot_with(
        &net,
        StoreKind::Etcd(&etcd),
        LEASE,
        &format!("addresses = [\"{VIP4}/24 dev lan0\"]\n"),
        |_, spec| {
            spec.capability("CAP_NET_ADMIN");
        },
    );
    let active = c.wait_one_active(None, Duration::from_secs(60));
    wait_addresses_on(&c, &seg.netns, active, &[vip4]);
    let passive = 1 - active;
    let renamed = |i: usize| {
        let h = &c.hosts[i];
        let text = h.read_file("/etc/promd/promd.toml").expect("promd.toml");
        h.write_file(
            "/etc/promd/promd.toml",
            text.replace("name = \"web\"", "name = \"web2\""),
        );
        h.run_ok(&["systemctl", "reload", "promd"]);
    };

    renamed(passive);
    let lost = format!(
        "address {VIP4} is held by group web on node {}",
        c.hosts[active].name()
    );
    hosts::wait_until(
        Duration::from_secs(30),
        "the renamed group's campaign lost to the address's holder",
        || {
            c.hosts[passive]
                .journal(&["-u", "promd", "-o", "cat"])
                .contains(&lost)
        },
    );
    assert_eq!(
        seg.holders(vip4),
        [active],
        "{VIP4} stays on the active host only"
    );
    assert!(!c.hosts[passive].is_active("web.service"));

    renamed(active);
    // web2's leader as each host's promd says it (D-Bus), once both agree on one.
    let leader_of = |h: &hosts::Host| {
        let out = h.exec(&[
            "busctl",
            "get-property",
            "org.promd1",
            "/org/promd1/group/web2",
            "org.promd1.Group",
            "Leader",
        ]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let mut leader = String::new();
    hosts::wait_until(
        Duration::from_secs(60),
        "one leader of web2, seen by both",
        || {
            let seen: Vec<String> = c.hosts.iter().map(leader_of).collect();
            leader = seen[0].clone();
            seen.iter().all(|l| *l == leader) && leader != "s \"\"" && !leader.is_empty()
        },
    );
    let now = (0..c.hosts.len())
        .find(|&i| leader == format!("s \"{}\"", c.hosts[i].name()))
        .expect("the leader is one of the hosts");
    wait_addresses_on(&c, &seg.netns, now, &[vip4]);
    assert_eq!(c.wait_one_active(None, Duration::from_secs(30)), now);
    let mut held: Vec<(u64, u64, &str)> = Vec::new();
    for (m, h) in seg.monitors.iter().zip(&c.hosts) {
        held.extend(m.held(vip4).into_iter().map(|(a, b)| (a, b, h.name())));
    }
    held.sort();
    for w in held.windows(2) {
        assert!(w[1].0 >= w[0].1, "{VIP4} on two hosts at once: {held:?}");
    }
    c.check_history();
    eprintln!("{VIP4} held {held:?} across the rolling rename, never by two hosts at once");
}

/// A client in `stale_ns` whose neighbour cache names `old_mac` (the host that held `vips`
/// before `fault`, pinned there as a cache that missed every announcement would) is refused at
/// once: that host answers its SYN with a reset, although it no longer has the address.
/// An address that leaves the active host from outside promd (a flush, a network manager; a
/// link down deletes IPv6 addresses) fails its unit, which promd restarts in place: the
/// address is back on the same host, and the journal says why.
fn a_lost_address_is_put_back(c: &Cluster, netns: &[String], active: usize) {
    let vip6: IpAddr = VIP6.parse().expect("an address");
    let unit = format!("promd-address-web.{VIP6}.service");
    lan::in_netns(
        &netns[active],
        &[
            "ip",
            "address",
            "del",
            &format!("{VIP6}/64"),
            "dev",
            lan::LAN_IF,
        ],
    );
    let h = &c.hosts[active];
    hosts::wait_until(
        Duration::from_secs(10),
        "the lost address's unit restarted in place",
        || {
            h.journal(&["-u", "promd.service", "-o", "cat"])
                .contains(&format!("restarting {unit} in place"))
        },
    );
    wait_addresses_on(c, netns, active, &[vip6]);
    assert_eq!(c.wait_one_active(None, Duration::from_secs(10)), active);
    let said = h.journal(&["-u", &unit, "-o", "cat"]);
    assert!(
        said.contains(&format!("{VIP6} is no longer on {}", lan::LAN_IF)),
        "{unit} did not say why it failed:\n{said}"
    );
}

/// A carrier loss on the active host's link (its bridge port down: a cable pulled) leaves
/// the addresses on its `lan0`, where no client can reach them: each address unit fails
/// (`lan0 has no carrier`), its restarts in place fail too, and past `max-restarts` the
/// group fails over, the addresses with it (keepalived's `track_interface`). The link back,
/// `promctl reset` makes the host a candidate again.
fn a_link_without_carrier_fails_over(c: &Cluster, seg: &Segment, vips: &[IpAddr]) {
    let active = c.wait_one_active(None, Duration::from_secs(60));
    let cut = Instant::now();
    seg.lan.set_carrier(active, false);
    let next = c.wait_one_active(Some(active), Duration::from_secs(30));
    wait_addresses_on(c, &seg.netns, next, vips);
    eprintln!(
        "{}: carrier lost; the addresses on {} {} ms later",
        c.hosts[active].name(),
        c.hosts[next].name(),
        cut.elapsed().as_millis()
    );
    let h = &c.hosts[active];
    let unit = format!("promd-address-web.{VIP4}.service");
    let said = h.journal(&["-u", &unit, "-o", "cat"]);
    assert!(
        said.contains(&format!("{} has no carrier", lan::LAN_IF)),
        "{unit} did not say why it failed:\n{said}"
    );
    let role = || {
        let text = h.run_ok(&["promctl", "status", "--json"]);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("promctl's JSON");
        doc["groups"][0]["role"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(role(), "failed", "{}: in its failure cooldown", h.name());
    // `promctl status` says where the addresses are: held on the new host, not on the old.
    let held = |i: usize| -> Vec<bool> {
        let text = c.hosts[i].run_ok(&["promctl", "status", "--json"]);
        let doc: serde_json::Value = serde_json::from_str(&text).expect("promctl's JSON");
        let all = doc["groups"][0]["addresses"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        all.iter().map(|a| a["held"] == true).collect()
    };
    hosts::wait_until(
        Duration::from_secs(5),
        "promctl to say the addresses moved",
        || held(next) == [true; 3] && held(active) == [false; 3],
    );
    seg.lan.set_carrier(active, true);
    h.run_ok(&["promctl", "reset", "web"]);
    hosts::wait_until(
        Duration::from_secs(30),
        "the reset host passive again",
        || role() == "passive",
    );
}

/// The floating address that is its subnet's primary on `lan0`.
const PRIMARY: &str = "198.51.100.10";
/// Another address of that subnet, added by hand (another group's, or the host's own).
const SECONDARY: &str = "198.51.100.20";

/// With `promote_secondaries` off (the kernel's default), deleting a subnet's primary address
/// deletes the interface's other addresses of that subnet with it: a demotion of one group
/// took another group's floating address from the host. The address units turn it on
/// (`promd announce`); the hand-made address must survive the switchover.
fn secondaries_outlive_the_floating_primary(
    c: &Cluster,
    netns: &[String],
    active: usize,
    vips: &[IpAddr],
) {
    let primary: IpAddr = PRIMARY.parse().expect("an address");
    wait_addresses_on(c, netns, active, &[primary]);
    let ns = &netns[active];
    let add = format!("{SECONDARY}/24");
    lan::in_netns(ns, &["ip", "address", "add", &add, "dev", lan::LAN_IF]);
    let shown = lan::in_netns(ns, &["ip", "-o", "address", "show", "dev", lan::LAN_IF]);
    assert!(
        shown
            .lines()
            .any(|l| l.contains(&add) && l.contains("secondary")),
        "{SECONDARY} is not the secondary beside {PRIMARY}:\n{shown}"
    );
    c.promote_next(active);
    let to = c.wait_one_active(Some(active), Duration::from_secs(60));
    let mut all = vips.to_vec();
    all.push(primary);
    wait_addresses_on(c, netns, to, &all);
    let left = lan::in_netns(ns, &["ip", "-o", "address", "show", "dev", lan::LAN_IF]);
    // The host's own again before the assertion (it may be gone already: the bug).
    let _ = std::process::Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{ns}"),
            "ip",
            "address",
            "del",
            &add,
        ])
        .args(["dev", lan::LAN_IF])
        .status();
    assert!(
        left.contains(&add),
        "{SECONDARY} went with {PRIMARY} when {} handed the role over:\n{left}\n{}",
        c.hosts[active].name(),
        c.hosts[active].journal(&["-u", "promd-address-*", "-o", "cat"])
    );
}

fn stale_clients_are_refused(stale_ns: &str, old_mac: &str, vips: &[IpAddr], fault: Fault) {
    for &ip in vips {
        let pin = |verb: &str| {
            let mut args = vec!["ip", "neigh", verb, "to"];
            let ip = ip.to_string();
            args.push(&ip);
            if verb == "replace" {
                args.extend(["lladdr", old_mac, "nud", "permanent"]);
            }
            args.extend(["dev", lan::LAN_IF]);
            lan::in_netns(stale_ns, &args);
        };
        pin("replace");
        let (got, took) = lan::spawn_in_netns(stale_ns, "stale-client", move || {
            let t = Instant::now();
            let got = TcpStream::connect_timeout(&SocketAddr::new(ip, WEB_PORT), LEASE)
                .map(|_| ())
                .map_err(|e| e.kind());
            (got, t.elapsed())
        })
        .join()
        .expect("stale client");
        pin("del");
        assert_eq!(
            got,
            Err(ErrorKind::ConnectionRefused),
            "{}: a client that still sends {ip} to the old holder ({old_mac}) got {got:?} after \
             {} ms: black-holed, not refused",
            fault.name(),
            took.as_millis()
        );
        eprintln!(
            "{}: a client that still names the old holder for {ip} was refused in {} ms",
            fault.name(),
            took.as_millis()
        );
    }
}

/// Served answers to `ip` whose host did not hold `ip` when it answered (its `ip monitor`).
fn answered_without_the_address(
    c: &Cluster,
    monitors: &[AddrMonitor],
    ip: IpAddr,
    answers: &[Answer],
) -> Vec<String> {
    let mut bad = Vec::new();
    for a in answers {
        let Some((host, term)) = a.served() else {
            continue;
        };
        let Some(i) = c.hosts.iter().position(|h| h.name() == host) else {
            bad.push(format!("{host}: not a host of this test"));
            continue;
        };
        let held = monitors[i].held(ip);
        // The request was answered between its send and its receipt; the address was on the
        // host for part of that at least.
        if !held
            .iter()
            .any(|&(from, to)| from <= a.recv_ns && a.sent_ns <= to)
        {
            bad.push(format!(
                "{host} term {term} answered {}..{} while it held {ip} during {held:?}",
                a.sent_ns, a.recv_ns
            ));
        }
    }
    bad
}

/// No two hosts held `ip` at the same time, and it moved between hosts.
fn never_on_two_hosts(c: &Cluster, monitors: &[AddrMonitor], ip: IpAddr) {
    let mut all: Vec<(u64, u64, &str)> = Vec::new();
    for (m, h) in monitors.iter().zip(&c.hosts) {
        all.extend(m.held(ip).into_iter().map(|(a, b)| (a, b, h.name())));
    }
    all.sort();
    for w in all.windows(2) {
        assert!(
            w[1].0 >= w[0].1,
            "{ip} on two hosts at once: {} from {} to {}, {} from {}",
            w[0].2,
            w[0].0,
            w[0].1,
            w[1].2,
            w[1].0
        );
    }
    let holders: std::collections::BTreeSet<&str> = all.iter().map(|x| x.2).collect();
    assert!(
        all.len() > Fault::ALL.len() && holders.len() >= 2,
        "{ip} held {} times by {holders:?}: the faults should have moved it",
        all.len()
    );
    eprintln!(
        "{ip}: held {} times, by {holders:?}, never by two hosts at once",
        all.len()
    );
}

/// Every probe heard at most one owner, each a host's `lan0`, and over the run more than one.
/// Probes during a hand-over may hear no one (the address is on no host for a moment), or two:
/// the old owner's answer, sent before it let the address go, and the new owner's
/// announcement after it took it, both within one probe's wait. Such a probe is told by an
/// add of the address inside its window ([`AddrMonitor`]) and is not evidence of two owners
/// at once (the monitors check that exactly); any other probe that hears two is.
fn owners_heard_one_at_a_time(
    probes: &[Probe],
    monitors: &[AddrMonitor],
    macs: &[String],
    ip: IpAddr,
) {
    let adds: Vec<u64> = monitors
        .iter()
        .flat_map(|m| m.held(ip))
        .map(|(from, _)| from)
        .collect();
    let (handovers, two): (Vec<_>, Vec<_>) = probes
        .iter()
        .filter(|(_, _, m)| m.len() > 1)
        .partition(|(began, ended, _)| adds.iter().any(|a| began <= a && a <= ended));
    assert!(
        two.is_empty(),
        "{ip}: probes that heard two owners with no hand-over in their window: {two:?}"
    );
    let mut heard: Vec<&String> = probes.iter().flat_map(|(_, _, m)| m).collect();
    heard.sort();
    heard.dedup();
    assert!(
        heard.iter().all(|m| macs.contains(m)),
        "{ip}: an owner that is no host's lan0: {heard:?} (hosts: {macs:?})"
    );
    // Heard after every fault (`wait_heard`); here: it heard more than one host over the run.
    let answered = probes.iter().filter(|(_, _, m)| m.len() == 1).count();
    assert!(
        heard.len() >= 2,
        "{ip}: {answered} of {} probes answered, by {heard:?}: the owner never changed",
        probes.len()
    );
    eprintln!(
        "{ip}: {} probes, {answered} answered by one owner, {} heard the old and the new owner \
         across a hand-over inside their window, none two owners otherwise; owners heard: {}",
        probes.len(),
        handovers.len(),
        heard.len()
    );
}
