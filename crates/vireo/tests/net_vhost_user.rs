//! `vireo net` with vhost-user-net ports and impairment, end to end through the CLI: the
//! service listens on the port's socket, keeps it across a restart and removes it with the
//! port; `qos set --delay/--jitter/--loss` is shown, persisted, measured by a real ping
//! between namespaces behind tap ports, and bad values are refused. (Guests on vhost-user
//! ports are tested in crates/net/tests/vhost_user_qemu.rs.) Needs root, iproute2 and
//! busybox-static.

mod common;
mod net;

use net::*;

/// The average round trip of a few busybox pings from namespace `ns`, in ms.
fn rtt(ns: &str, addr: &str) -> f64 {
    let out = sh(&[
        "ip", "netns", "exec", ns, "busybox", "ping", "-q", "-c", "5", "-i", "0.1", addr,
    ]);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("round-trip min/avg/max = "))
        .and_then(|v| v.split('/').nth(1))
        .and_then(|avg| avg.parse().ok())
        .unwrap_or_else(|| panic!("no round trip: {text}"))
}

#[test]
fn vhost_user_ports_and_impairment_through_the_cli() {
    let dir = Scratch::new("vu");
    let sock = dir.0.join("vm1.sock");
    let sock_s = sock.to_str().unwrap().to_string();
    let svc = Service::start(&dir);
    svc.ok(&["network", "create", "vu"]);

    let out = svc.ok(&[
        "port",
        "add",
        "vu",
        "vm1",
        "--vhost-user",
        &sock_s,
        "--mac",
        "52:54:00:20:90:01",
    ]);
    assert!(out.contains(&format!("vhost-user {sock_s}")), "{out}");
    assert!(sock.exists(), "the service listens on the socket");
    let stats = svc.json(&["stats", "vm1", "--json"]);
    assert_eq!(stats["connected"], false, "no VM yet: {stats}");
    let list = svc.ok(&["port", "list"]);
    assert!(list.contains(&format!("vhost-user {sock_s}")), "{list}");

    // Bad input: a clear error, nothing changed.
    svc.fails(
        &["port", "add", "vu", "vm2", "--vhost-user", &sock_s],
        "belongs to port vm1",
    );
    let run = svc.run(&[
        "port",
        "add",
        "vu",
        "vm2",
        "--vhost-user",
        &sock_s,
        "--tap",
        "x",
    ]);
    assert!(!run.status.success(), "{}", run.dump());
    let (status, body) = svc.http(
        "POST",
        "/api/v1/ports",
        r#"{"name": "vm3", "network": "vu", "vhost_user": "relative.sock"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("absolute path"), "{body}");
    let (status, body) = svc.http(
        "POST",
        "/api/v1/ports",
        r#"{"name": "vm3", "network": "vu"}"#,
    );
    assert_eq!(status, 400, "{body}");

    // Impairment on a vhost-user port: shown and kept.
    let out = svc.ok(&[
        "qos", "set", "vm1", "--delay", "30", "--jitter", "5", "--loss", "10",
    ]);
    assert!(out.contains("delay 30±5 ms, loss 10%"), "{out}");
    svc.fails(
        &["qos", "set", "vm1", "--loss", "150"],
        "loss 150% is out of range",
    );
    let run = svc.run(&["qos", "set", "vm1", "--jitter", "5"]);
    assert!(
        !run.status.success(),
        "a jitter needs a delay: {}",
        run.dump()
    );

    // Measured on tap ports: a delay on one side lengthens the round trip.
    let ns = Namespaces::new("vu", 2);
    let (t1, t2) = (tap("vu1"), tap("vu2"));
    svc.ok(&["port", "add", "vu", "d1", "--tap", &t1]);
    svc.ok(&["port", "add", "vu", "d2", "--tap", &t2]);
    ns.plug(0, &t1, "10.209.0.1");
    ns.plug(1, &t2, "10.209.0.2");
    assert!(ns.ping(0, "10.209.0.2"), "{}", svc.log());
    let before = rtt(&ns.0[0], "10.209.0.2");
    svc.ok(&["qos", "set", "d1", "--delay", "80"]);
    let delayed = rtt(&ns.0[0], "10.209.0.2");
    assert!(before < 40.0 && delayed >= 80.0, "{before} -> {delayed} ms");

    // A restart: the vhost-user port listens again, its impairment is back.
    assert!(svc.terminate().success());
    let svc = Service::start(&dir);
    let info = svc.json(&["port", "info", "vm1"]);
    assert_eq!(info["vhost_user"], sock_s.as_str(), "{info}");
    assert_eq!(info["delay"], 30, "{info}");
    assert_eq!(info["loss"], 10.0, "{info}");
    assert_eq!(info["active"], true, "{info}");
    assert!(sock.exists());
    svc.ok(&["port", "delete", "vm1"]);
    assert!(!sock.exists(), "deleting the port removes its socket");
}
