//! `vireo net router`: a router made through the CLI routes between namespaces behind two
//! networks, keeps doing so after the service restarts, and explains what it refuses.
//! Needs root, iproute2 and busybox.

mod common;
mod net;
use net::*;

/// Plugs the taps into namespaces 0 (10.251.1.2) and 1 (10.251.2.2), default routes via
/// the router's addresses.
fn plug(ns: &Namespaces, ta: &str, tb: &str) {
    ns.plug(0, ta, "10.251.1.2");
    ns.plug(1, tb, "10.251.2.2");
    must(&[
        "ip",
        "-n",
        &ns.0[0],
        "route",
        "add",
        "default",
        "via",
        "10.251.1.1",
    ]);
    must(&[
        "ip",
        "-n",
        &ns.0[1],
        "route",
        "add",
        "default",
        "via",
        "10.251.2.1",
    ]);
}

#[test]
fn a_router_routes_between_networks_across_a_restart() {
    let dir = Scratch::new("router");
    let ns = Namespaces::new("r", 2);
    let (ta, tb) = (tap("ra"), tap("rb"));
    let svc = Service::start(&dir);
    for (net, cidr, gw) in [
        ("left", "10.251.1.0/24", "10.251.1.1"),
        ("right", "10.251.2.0/24", "10.251.2.1"),
    ] {
        svc.ok(&["network", "create", net, "--subnet", cidr, "--gateway", gw]);
    }
    svc.ok(&["network", "create", "bare"]);
    svc.ok(&["port", "add", "left", "pa", "--tap", &ta]);
    svc.ok(&["port", "add", "right", "pb", "--tap", &tb]);
    assert!(svc
        .ok(&["router", "create", "r1"])
        .contains("created router r1"));
    let out = svc.ok(&["router", "attach", "r1", "left"]);
    assert!(out.contains("router address 10.251.1.1"), "{out}");
    svc.ok(&["router", "attach", "r1", "right"]);
    plug(&ns, &ta, &tb);
    assert!(ns.ping(0, "10.251.2.2"), "left -> right\n{}", svc.log());
    assert!(ns.ping(1, "10.251.1.1"), "the router's far address");

    // What it refuses, and why.
    svc.fails(&["router", "attach", "r1", "bare"], "needs both");
    svc.ok(&["router", "create", "r2"]);
    svc.fails(&["router", "attach", "r2", "left"], "attached to router r1");
    svc.fails(&["network", "delete", "left"], "attached to router r1");
    svc.fails(
        &[
            "router",
            "route",
            "add",
            "r1",
            "10.251.9.0/24",
            "--via",
            "10.9.9.9",
        ],
        "in no network attached",
    );
    svc.fails(&["router", "delete", "r1"], "detach them first");
    svc.ok(&[
        "router",
        "route",
        "add",
        "r1",
        "10.251.9.0/24",
        "--via",
        "10.251.2.9",
    ]);
    svc.fails(&["router", "detach", "r1", "right"], "route 10.251.9.0/24");
    let out = svc.ok(&[
        "router",
        "nat",
        "add",
        "r1",
        "--dnat",
        "--in",
        "right",
        "--proto",
        "tcp",
        "--port",
        "2222",
        "--to",
        "10.251.1.2:22",
    ]);
    assert!(out.contains("NAT rule 1 added"), "{out}");
    let (status, _) = svc.http("DELETE", "/api/v1/routers/r1/nat/7", "");
    assert_eq!(status, 404);

    let info = svc.json(&["router", "info", "r1"]);
    assert!(
        info["stats"]["routed_packets"].as_u64().unwrap() >= 3,
        "{info}"
    );
    let (status, metrics) = svc.http("GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains("vireo_net_router_routed_packets_total{router=\"r1\"}"),
        "{metrics}"
    );

    let st = svc.terminate();
    assert!(st.success(), "{st}");
    let svc = Service::start(&dir);
    plug(&ns, &ta, &tb);
    assert!(
        ns.ping(1, "10.251.1.2"),
        "right -> left after restart\n{}",
        svc.log()
    );
    let list = svc.ok(&["router", "list"]);
    assert!(
        list.contains("left (10.251.1.1), right (10.251.2.1)"),
        "{list}"
    );
    let routes = svc.ok(&["router", "route", "list", "r1"]);
    assert!(routes.contains("10.251.9.0/24  10.251.2.9"), "{routes}");
    let nat = svc.ok(&["router", "nat", "list", "r1"]);
    assert!(
        nat.contains("tcp port 2222 of right -> 10.251.1.2:22"),
        "{nat}"
    );

    // Taken apart step by step.
    svc.ok(&["router", "nat", "delete", "r1", "1"]);
    svc.ok(&["router", "route", "delete", "r1", "10.251.9.0/24"]);
    svc.ok(&["router", "detach", "r1", "right"]);
    assert!(!ns.ping(0, "10.251.2.2"), "detached: no route");
    svc.ok(&["router", "detach", "r1", "left"]);
    svc.ok(&["router", "delete", "r1"]);
    svc.fails(&["router", "info", "r1"], "no router named");
}
