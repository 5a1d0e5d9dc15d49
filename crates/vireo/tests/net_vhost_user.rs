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

/// Vireo's own VMM on a `vireo net` vhost-user port (its vhost-user-net frontend against the
/// service's backend), under the emulator: the guest leases an address from the network's
/// DHCP server, pings the gateway and a namespace on a tap port of the same network, and the
/// namespace pings it back.
#[test]
fn a_vireo_vm_on_a_vhost_user_port_leases_an_address_and_pings() {
    use common::guest::{boot, image, scratch, wait_exit};
    use std::ffi::OsStr;
    use std::time::Duration;

    let dir = Scratch::new("vuvm");
    let sock = dir.0.join("vm.sock");
    let svc = Service::start(&dir);
    svc.ok(&[
        "network",
        "create",
        "lan",
        "--subnet",
        "10.236.0.0/24",
        "--gateway",
        "10.236.0.1",
        "--dhcp",
        "10.236.0.50-10.236.0.60",
    ]);
    svc.ok(&[
        "port",
        "add",
        "lan",
        "vm",
        "--vhost-user",
        sock.to_str().unwrap(),
    ]);
    let t = tap("vuvm");
    svc.ok(&["port", "add", "lan", "ns", "--tap", &t]);
    let ns = Namespaces::new("vuvm", 1);
    ns.plug(0, &t, "10.236.0.9");

    let img = image(&scratch("net-vhost-user", "image").join("image"));
    let mac = "52:54:00:36:00:01";
    let net = format!("vhost-user={},mac={mac}", sock.display());
    let (mut con, mut guard) = boot(&img, "emu", &[OsStr::new("--net"), OsStr::new(&net)]);
    con.run("dmesg -n 1");
    assert_eq!(con.run("cat /sys/class/net/eth0/address"), mac);
    let (ip, router) = con.dhcp("eth0");
    assert_eq!(router, "10.236.0.1");
    assert!(ip.starts_with("10.236.0.5") || ip == "10.236.0.60", "{ip}");
    for target in ["10.236.0.1", "10.236.0.9"] {
        let out = con.run(&format!("ping -c 3 -W 3 {target} | grep received"));
        assert!(out.contains("3 packets received"), "ping {target}: {out}");
    }
    assert!(ns.ping(0, &ip), "the namespace pings the guest at {ip}");
    let leases = svc.ok(&["dhcp", "leases", "lan"]);
    assert!(leases.contains(&ip) && leases.contains(mac), "{leases}");
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}
