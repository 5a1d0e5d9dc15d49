//! `vireo net`: a real service (`vireo net serve`) driven through the CLI, its taps moved
//! into network namespaces the tests create, and real Linux stacks pinging each other
//! through the switch. Needs root and iproute2.

mod common;
mod net;

use common::run_vireo;
use net::*;

#[test]
fn a_missing_service_is_a_clear_error() {
    let run = run_vireo(
        &["net", "--socket", "/nonexistent/net.sock", "stats"],
        CLI_TIMEOUT,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    assert!(run.stderr.contains("cannot connect to"), "{}", run.dump());
    assert!(run.stderr.contains("vireo net serve"), "{}", run.dump());
}

#[test]
fn networks_isolate_and_ports_come_back_after_a_restart() {
    let dir = Scratch::new("e2e");
    let ns = Namespaces::new("e", 3);
    let (ta1, ta2, tb1) = (tap("a1"), tap("a2"), tap("b1"));
    let svc = Service::start(&dir);
    let out = svc.ok(&["network", "create", "blue", "--vlan", "10"]);
    assert!(out.contains("created network blue, VLAN 10"), "{out}");
    svc.ok(&["network", "create", "red"]);
    for (net, port, tap) in [
        ("blue", "a1", &ta1),
        ("blue", "a2", &ta2),
        ("red", "b1", &tb1),
    ] {
        let out = svc.ok(&["port", "add", net, port, "--tap", tap]);
        assert!(
            out.contains(&format!("added port {port} to network {net}")),
            "{out}"
        );
    }
    let list = svc.ok(&["port", "list"]);
    assert!(list.contains("a1") && list.contains(&tb1), "{list}");

    // Every namespace in the same IP subnet: only the switch keeps red apart.
    let plug_all = || {
        ns.plug(0, &ta1, "10.77.0.1");
        ns.plug(1, &ta2, "10.77.0.2");
        ns.plug(2, &tb1, "10.77.0.3");
    };
    plug_all();
    assert!(
        ns.ping(0, "10.77.0.2"),
        "a1 -> a2 within blue\n{}",
        svc.log()
    );
    assert!(!ns.ping(0, "10.77.0.3"), "a1 -> b1 crossed networks");

    let stats = svc.ok(&["stats"]);
    assert!(stats.contains("RX_PKTS") && stats.contains(&ta2), "{stats}");
    let a1 = svc.json(&["stats", "a1", "--json"]);
    assert!(a1["rx_packets"].as_u64().unwrap() >= 3, "{a1}");
    assert!(a1["tx_packets"].as_u64().unwrap() >= 3, "{a1}");
    let fdb = svc.json(&["fdb", "--json"]);
    let mac = ns.mac(0, &ta1);
    assert!(
        fdb.as_array()
            .unwrap()
            .iter()
            .any(|e| e["mac"] == mac.as_str() && e["port"] == "a1"),
        "{mac} not learned on a1: {fdb}"
    );
    let (status, metrics) = svc.http("GET", "/metrics", "");
    assert_eq!(status, 200);
    let line =
        format!("vireo_net_port_rx_packets_total{{port=\"a1\",network=\"blue\",tap=\"{ta1}\"}} ");
    assert!(metrics.contains(&line), "{metrics}");
    assert!(
        metrics.contains("# TYPE vireo_net_port_drops_total counter"),
        "{metrics}"
    );

    // SIGTERM: a clean exit, the socket and the taps gone; the state stays.
    let socket = svc.socket.clone();
    let st = svc.terminate();
    assert!(st.success(), "{st}");
    assert!(!socket.exists());
    assert!(!sh(&["ip", "-n", &ns.0[0], "link", "show", &ta1])
        .status
        .success());

    let svc = Service::start(&dir);
    let ports = svc.json(&["port", "list", "--json"]);
    assert_eq!(ports.as_array().unwrap().len(), 3, "{ports}");
    assert!(
        sh(&["ip", "link", "show", &ta1]).status.success(),
        "tap not re-created"
    );
    plug_all();
    assert!(
        ns.ping(1, "10.77.0.1"),
        "a2 -> a1 after restart\n{}",
        svc.log()
    );
    assert!(
        !ns.ping(2, "10.77.0.1"),
        "b1 -> a1 crossed networks after restart"
    );
    assert_eq!(svc.json(&["network", "info", "blue"])["vlan"], 10);
}

#[test]
fn bad_input_gets_clear_errors() {
    let dir = Scratch::new("errors");
    let svc = Service::start(&dir);
    let t = tap("x");
    svc.ok(&[
        "network",
        "create",
        "blue",
        "--subnet",
        "10.88.0.0/16",
        "--gateway",
        "10.88.0.1",
    ]);
    svc.fails(&["network", "create", "blue"], "exists already");
    svc.fails(
        &["network", "create", "red", "--subnet", "10.88.4.0/24"],
        "overlaps",
    );
    svc.fails(
        &["network", "create", "red", "--subnet", "10.89.0.0"],
        "CIDR",
    );
    svc.fails(
        &[
            "network",
            "create",
            "red",
            "--subnet",
            "10.89.0.0/24",
            "--gateway",
            "10.9.0.1",
        ],
        "outside the subnet",
    );
    svc.fails(&["network", "create", "red", "--vlan", "4095"], "1 to 4094");
    svc.fails(&["network", "create", "bad/name"], "bad network name");
    svc.fails(
        &["port", "add", "nowhere", "p", "--tap", &t],
        "no network named",
    );
    svc.fails(
        &["port", "add", "blue", "p", "--tap", "a-very-long-tap-name"],
        "1 to 15",
    );
    svc.fails(
        &[
            "port",
            "add",
            "blue",
            "p",
            "--tap",
            &t,
            "--mac",
            "52:54:00:zz:00:01",
        ],
        "bad MAC",
    );
    svc.ok(&[
        "port",
        "add",
        "blue",
        "p",
        "--tap",
        &t,
        "--mac",
        "52:54:00:AA:00:01",
    ]);
    assert_eq!(svc.json(&["port", "info", "p"])["mac"], "52:54:00:aa:00:01");
    svc.fails(
        &["port", "add", "blue", "p", "--tap", &tap("y")],
        "exists already",
    );
    svc.fails(
        &["port", "add", "blue", "q", "--tap", &t],
        "belongs to port p",
    );
    svc.fails(&["network", "delete", "blue"], "still has ports");
    svc.fails(&["port", "delete", "nope"], "no port named");
    svc.fails(&["qos", "set", "nope", "--rate", "1M"], "no port named");
    svc.fails(&["stats", "nope"], "no port named");
    let out = svc.ok(&["qos", "set", "p", "--rate", "200M", "--burst", "64K"]);
    assert!(out.contains("200.0 Mbit/s, burst 65536 B"), "{out}");
    assert!(svc.ok(&["qos", "set", "p"]).contains("unlimited"));

    // The statuses behind the messages.
    assert_eq!(svc.http("GET", "/api/v1/networks/nope", "").0, 404);
    assert_eq!(
        svc.http("POST", "/api/v1/networks", r#"{"name":"blue"}"#).0,
        409
    );
    assert_eq!(
        svc.http("POST", "/api/v1/networks", r#"{"name":"x","vlan":0}"#)
            .0,
        400
    );
    assert_eq!(svc.http("POST", "/api/v1/networks", "{not json").0, 400);
    assert_eq!(svc.http("DELETE", "/api/v1/networks/blue", "").0, 409);
    assert_eq!(svc.http("PATCH", "/api/v1/ports", "").0, 405);
    assert_eq!(svc.http("GET", "/api/v1/nothing", "").0, 404);

    // One service per socket and per state directory.
    let run = run_vireo(
        &[
            "net",
            "serve",
            "--dir",
            dir.0.join("other").to_str().unwrap(),
            "--socket",
            svc.socket.to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert!(
        run.stderr.contains("another service is listening"),
        "{}",
        run.dump()
    );
    let run = run_vireo(
        &[
            "net",
            "serve",
            "--dir",
            dir.0.join("state").to_str().unwrap(),
            "--socket",
            dir.0.join("b.sock").to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert!(
        run.stderr.contains("another network service owns"),
        "{}",
        run.dump()
    );

    svc.ok(&["port", "delete", "p"]);
    assert!(
        !sh(&["ip", "link", "show", &t]).status.success(),
        "tap left behind"
    );
    svc.ok(&["network", "delete", "blue"]);
    assert!(svc.ok(&["network", "list"]).lines().count() == 1);
}
