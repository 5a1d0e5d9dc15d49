//! A network's own endpoint, seen from a Linux stack: its gateway address answers ARP and
//! ping, and it learns the namespace's address.

mod common;

use common::*;
use std::net::Ipv4Addr;
use vireo_net::datapath::{Addressing, Datapath};

#[test]
fn the_gateway_answers_arp_and_ping() {
    let dp = Datapath::new();
    let addressing = Addressing {
        subnet: Some((Ipv4Addr::new(10, 231, 0, 0), 24)),
        gateway: Some(Ipv4Addr::new(10, 231, 0, 1)),
    };
    dp.add_network("gw", None, addressing).unwrap();
    let tap = format!("ve{}", std::process::id());
    port(&dp, "a", "gw", &tap, untagged());
    let ns = Ns::new("gw");
    ns.attach(&tap, Some("10.231.0.2/24"));
    let o = ns.exec(&["busybox", "ping", "-c", "3", "-W", "2", "10.231.0.1"]);
    assert!(
        o.status.success(),
        "ping the gateway: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    // The namespace holds the endpoint's MAC for the gateway; the endpoint knows the host.
    let neigh = ns.exec(&["ip", "neigh", "show", "10.231.0.1"]);
    let neigh = String::from_utf8_lossy(&neigh.stdout).to_string();
    assert!(neigh.contains("02:76:69:"), "{neigh}");
    let known = dp.neighbours("gw").unwrap();
    assert!(
        known
            .iter()
            .any(|(ip, _, _)| *ip == Ipv4Addr::new(10, 231, 0, 2)),
        "{known:?}"
    );
    // Nothing answers for other addresses of the subnet.
    let o = ns.exec(&["busybox", "ping", "-c", "1", "-W", "1", "10.231.0.9"]);
    assert!(!o.status.success());
}
