//! `vireo net lb` and `vireo net dhcp` end to end: a real service driven through the CLI,
//! busybox servers and clients in network namespaces behind its taps. Needs root, iproute2
//! and busybox.

mod common;
mod net;
use net::*;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `busybox nc` serving NAME to every connection on port 8080 in namespace `ns`; killed on
/// drop.
struct NcServer(Child);

impl NcServer {
    fn start(ns: &str, name: &str) -> NcServer {
        let child = Command::new("ip")
            .args(["netns", "exec", ns, "busybox", "nc", "-ll", "-p", "8080"])
            .args(["-e", "echo", name])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("busybox nc");
        NcServer(child)
    }
}

impl Drop for NcServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Which backend answers a connection from namespace `ns` to `vip` (port 80).
fn ask(ns: &str, vip: &str) -> String {
    let out = sh(&[
        "ip", "netns", "exec", ns, "busybox", "nc", "-w", "3", vip, "80",
    ]);
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn wait(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_load_balancer_spreads_checks_health_and_survives_a_restart() {
    let dir = Scratch::new("lb");
    let ns = Namespaces::new("l", 3);
    let taps = [tap("lc"), tap("l0"), tap("l1")];
    let svc = Service::start(&dir);
    svc.ok(&[
        "network",
        "create",
        "web",
        "--subnet",
        "10.236.0.0/24",
        "--gateway",
        "10.236.0.1",
    ]);
    for (i, t) in taps.iter().enumerate() {
        svc.ok(&["port", "add", "web", &format!("p{i}"), "--tap", t]);
    }
    let plug_all = || {
        ns.plug(0, &taps[0], "10.236.0.10");
        ns.plug(1, &taps[1], "10.236.0.21");
        ns.plug(2, &taps[2], "10.236.0.22");
    };
    plug_all();
    let _s0 = NcServer::start(&ns.0[1], "b0");
    let mut s1 = Some(NcServer::start(&ns.0[2], "b1"));
    svc.fails(
        &[
            "lb",
            "create",
            "bad",
            "--network",
            "web",
            "--vip",
            "10.99.0.1:80",
            "--backend",
            "10.236.0.21:8080",
        ],
        "outside network web's subnet",
    );
    let out = svc.ok(&[
        "lb",
        "create",
        "front",
        "--network",
        "web",
        "--vip",
        "10.236.0.100:80",
        "--backend",
        "10.236.0.21:8080,10.236.0.22:8080",
        "--health-check",
        "tcp",
        "--interval",
        "1",
    ]);
    assert!(
        out.contains("created load balancer front: tcp 10.236.0.100:80"),
        "{out}"
    );
    let names: Vec<String> = (0..4).map(|_| ask(&ns.0[0], "10.236.0.100")).collect();
    assert_eq!(
        names,
        ["b0", "b1", "b0", "b1"],
        "round robin\n{}",
        svc.log()
    );

    // b1's server stops: the health checks take it down, new connections go to b0.
    s1.take();
    wait("b1 down", || {
        svc.json(&["lb", "info", "front"])["backends"][1]["up"] == false
    });
    let list = svc.ok(&["lb", "list"]);
    assert!(list.contains("10.236.0.22:8080 (down"), "{list}");
    assert!((0..3).all(|_| ask(&ns.0[0], "10.236.0.100") == "b0"));
    let (status, metrics) = svc.http("GET", "/metrics", "");
    assert_eq!(status, 200);
    assert!(
        metrics.contains(
            "vireo_net_lb_backend_connections_total{lb=\"front\",backend=\"10.236.0.21:8080\"} 5"
        ),
        "{metrics}"
    );

    // The load balancer is kept across a restart of the service.
    svc.terminate();
    let svc = Service::start(&dir);
    plug_all();
    let _s1 = NcServer::start(&ns.0[2], "b1");
    let info = svc.json(&["lb", "info", "front"]);
    assert_eq!(info["vip"], "10.236.0.100:80", "{info}");
    assert_eq!(info["interval"], 1, "{info}");
    let names: Vec<String> = (0..2).map(|_| ask(&ns.0[0], "10.236.0.100")).collect();
    assert_eq!(names, ["b0", "b1"], "{}", svc.log());
    svc.ok(&["lb", "backend", "remove", "front", "10.236.0.21:8080"]);
    assert!((0..2).all(|_| ask(&ns.0[0], "10.236.0.100") == "b1"));
    svc.fails(&["network", "delete", "web"], "has load balancers (front)");
    svc.ok(&["lb", "delete", "front"]);
    assert!(!ns.ping(0, "10.236.0.100"), "the VIP is gone");
}

#[test]
fn dhcp_leases_are_listed_and_kept_across_a_restart() {
    let dir = Scratch::new("dhcp");
    let ns = Namespaces::new("d", 1);
    let t = tap("dc");
    let svc = Service::start(&dir);
    svc.ok(&[
        "network",
        "create",
        "lan",
        "--subnet",
        "10.237.0.0/24",
        "--gateway",
        "10.237.0.1",
        "--dhcp",
        "10.237.0.50-10.237.0.59",
    ]);
    svc.ok(&["port", "add", "lan", "c", "--tap", &t]);
    let plug = || {
        must(&["ip", "link", "set", &t, "address", "02:00:00:ed:00:01"]);
        must(&["ip", "link", "set", &t, "netns", &ns.0[0]]);
        must(&["ip", "-n", &ns.0[0], "link", "set", &t, "up"]);
    };
    plug();
    let udhcpc = || {
        let out = sh(&[
            "ip",
            "netns",
            "exec",
            &ns.0[0],
            "busybox",
            "udhcpc",
            "-i",
            &t,
            "-n",
            "-q",
            "-t",
            "5",
            "-T",
            "2",
            "-s",
            "/bin/true",
        ]);
        let text = String::from_utf8_lossy(&out.stderr).to_string()
            + &String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        text
    };
    let got = udhcpc();
    assert!(
        got.contains("lease of 10.237.0.50 obtained from 10.237.0.1"),
        "{got}"
    );
    let leases = svc.ok(&["dhcp", "leases", "lan"]);
    assert!(
        leases.contains("10.237.0.50") && leases.contains("02:00:00:ed:00:01"),
        "{leases}"
    );
    let info = svc.json(&["network", "info", "lan"]);
    assert_eq!(
        info["dhcp_server"]["leases"][0]["ip"], "10.237.0.50",
        "{info}"
    );

    let out = svc.ok(&[
        "dhcp",
        "set",
        "lan",
        "--dns",
        "10.237.0.53",
        "--lease-time",
        "600",
    ]);
    assert!(out.contains("lease 600 s, DNS 10.237.0.53"), "{out}");

    svc.terminate();
    let svc = Service::start(&dir);
    let leases = svc.json(&["dhcp", "leases", "lan", "--json"]);
    assert_eq!(leases[0]["ip"], "10.237.0.50", "persisted: {leases}");
    plug();
    let got = udhcpc();
    assert!(
        got.contains("lease of 10.237.0.50 obtained from 10.237.0.1, lease time 600"),
        "options kept: {got}"
    );
    svc.fails(&["dhcp", "leases", "nope"], "no network");
}
