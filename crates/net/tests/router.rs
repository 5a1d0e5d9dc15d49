//! Routers between networks, seen from Linux stacks in namespaces behind the ports' taps:
//! forwarding with TTL, the router's addresses, static routes to a namespace that routes
//! on, SNAT/masquerade and DNAT port forwards. Needs root, iproute2, busybox, iperf3.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;
use vireo_net::datapath::router::{NatRule, RouterConfig, StaticRoute};
use vireo_net::datapath::{Addressing, Datapath};

/// Network `name` with subnet 10.`b`.`c`.0/24 and gateway .1.
fn network(dp: &Datapath, name: &str, b: u8, c: u8) {
    let addressing = Addressing {
        subnet: Some((Ipv4Addr::new(10, b, c, 0), 24)),
        gateway: Some(Ipv4Addr::new(10, b, c, 1)),
    };
    dp.add_network(name, None, addressing).unwrap();
}

fn tap(tag: &str) -> String {
    format!("vr{}{tag}", std::process::id() % 100_000)
}

/// A namespace on a new port of `net`, with `addr`/24 and a default route via `gw`.
fn host(dp: &Datapath, net: &str, tag: &str, addr: &str, gw: Option<&str>) -> Ns {
    let t = tap(tag);
    port(dp, tag, net, &t, untagged());
    let ns = Ns::new(&format!("rt{tag}"));
    ns.attach(&t, Some(&format!("{addr}/24")));
    if let Some(gw) = gw {
        ok(&["ip", "-n", &ns.0, "route", "add", "default", "via", gw]);
    }
    ns
}

fn ping(ns: &Ns, args: &[&str]) -> (bool, String) {
    let mut v = vec!["busybox", "ping", "-W", "2"];
    v.extend_from_slice(args);
    let o = ns.exec(&v);
    let text = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    (o.status.success(), text)
}

fn router(name: &str, networks: &[&str]) -> RouterConfig {
    RouterConfig {
        name: name.into(),
        networks: networks.iter().map(|n| n.to_string()).collect(),
        ..Default::default()
    }
}

#[test]
fn routes_between_two_networks() {
    let dp = Datapath::new();
    network(&dp, "ra", 240, 1);
    network(&dp, "rb", 240, 2);
    dp.apply_router(&router("r", &["ra", "rb"])).unwrap();
    let a = host(&dp, "ra", "a1", "10.240.1.2", Some("10.240.1.1"));
    let b = host(&dp, "rb", "b1", "10.240.2.2", Some("10.240.2.1"));

    let (ok, out) = ping(&a, &["-c", "3", "10.240.2.2"]);
    assert!(
        ok,
        "ping across the router: {out}\n{:?}",
        dp.router_stats("r")
    );
    assert!(out.contains("ttl=63"), "one hop decrements the TTL: {out}");
    // Both of the router's interfaces answer, from either side.
    for (ns, ip) in [(&a, "10.240.1.1"), (&a, "10.240.2.1"), (&b, "10.240.1.1")] {
        let (ok, out) = ping(ns, &["-c", "1", ip]);
        assert!(ok && out.contains("ttl=64"), "ping {ip}: {out}");
    }
    assert!(a.reach(&b, "10.240.2.2"), "TCP a -> b");
    assert!(b.reach(&a, "10.240.1.2"), "TCP b -> a");

    let before = dp.router_stats("r").unwrap();
    assert!(before.routed_packets >= 6, "{before:?}");
    // No route: dropped and counted.
    let (ok, _) = ping(&a, &["-c", "1", "10.249.0.1"]);
    assert!(!ok);
    // TTL 1 dies at the router.
    let (ok, _) = ping(&a, &["-c", "1", "-t", "1", "10.240.2.2"]);
    assert!(!ok);
    // traceroute sees the router's ICMP time exceeded (from its address on a's side), then
    // the destination.
    let o = a.exec(&[
        "busybox",
        "traceroute",
        "-n",
        "-I",
        "-w",
        "2",
        "-m",
        "3",
        "10.240.2.2",
    ]);
    let trace = String::from_utf8_lossy(&o.stdout).to_string();
    let hops: Vec<&str> = trace
        .lines()
        .skip_while(|l| l.starts_with("traceroute"))
        .collect();
    assert!(
        hops.first().is_some_and(|h| h.contains("10.240.1.1"))
            && hops.get(1).is_some_and(|h| h.contains("10.240.2.2")),
        "{trace}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let s = dp.router_stats("r").unwrap();
    assert!(s.no_route_drops >= 1, "{s:?}");
    assert!(s.ttl_drops >= 1, "{s:?}");

    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let tcp = tcp_bps(&a.iperf(&b, "10.240.2.2", &["-t", "3"]));
    println!("routed iperf3 TCP: {:.2} Gbit/s", tcp / 1e9);
    assert!(tcp > 200e6, "routed TCP at {tcp} bit/s");
}

#[test]
fn a_static_route_reaches_a_subnet_behind_a_namespace_router() {
    let dp = Datapath::new();
    network(&dp, "sa", 242, 1);
    network(&dp, "sb", 242, 2);
    let mut cfg = router("s", &["sa", "sb"]);
    cfg.routes.push(StaticRoute {
        net: Ipv4Addr::new(10, 242, 3, 0),
        len: 24,
        via: Ipv4Addr::new(10, 242, 2, 2),
    });
    dp.apply_router(&cfg).unwrap();
    let a = host(&dp, "sa", "sa1", "10.242.1.2", Some("10.242.1.1"));
    // m routes between sb and 10.242.3.0/24, where c lives (on a veth pair).
    let m = host(&dp, "sb", "sm1", "10.242.2.2", None);
    let c = Ns::new("rtsc1");
    let (vm, vc) = (tap("vm"), tap("vc"));
    ok(&[
        "ip", "link", "add", &vm, "netns", &m.0, "type", "veth", "peer", "name", &vc, "netns", &c.0,
    ]);
    ok(&["ip", "-n", &m.0, "addr", "add", "10.242.3.1/24", "dev", &vm]);
    ok(&["ip", "-n", &m.0, "link", "set", &vm, "up"]);
    ok(&["ip", "-n", &c.0, "addr", "add", "10.242.3.2/24", "dev", &vc]);
    ok(&["ip", "-n", &c.0, "link", "set", &vc, "up"]);
    ok(&[
        "ip",
        "-n",
        &c.0,
        "route",
        "add",
        "default",
        "via",
        "10.242.3.1",
    ]);
    ok(&[
        "ip",
        "-n",
        &m.0,
        "route",
        "add",
        "10.242.1.0/24",
        "via",
        "10.242.2.1",
    ]);
    let o = m.exec(&["sysctl", "-w", "net.ipv4.ip_forward=1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let (ok, out) = ping(&a, &["-c", "3", "10.242.3.2"]);
    assert!(
        ok,
        "ping over the static route: {out}\n{:?}",
        dp.router_stats("s")
    );
    assert!(out.contains("ttl=62"), "two routers on the way: {out}");
    assert!(a.reach(&c, "10.242.3.2"), "TCP over the static route");
    assert!(c.reach(&a, "10.242.1.2"), "and back");

    // Without the route the subnet is unreachable.
    cfg.routes.clear();
    dp.apply_router(&cfg).unwrap();
    let (ok, _) = ping(&a, &["-c", "1", "10.242.3.2"]);
    assert!(!ok, "the route is gone");
}

/// The inside: 10.243.1.0/24 (two hosts); the outside: 10.243.2.0/24, whose host has no
/// route back to the inside: only NAT lets them talk.
#[test]
fn masquerade_and_port_forward() {
    let dp = Datapath::new();
    network(&dp, "nin", 243, 1);
    network(&dp, "nout", 243, 2);
    let mut cfg = router("n", &["nin", "nout"]);
    cfg.nat.push(NatRule::Snat {
        source: (Ipv4Addr::new(10, 243, 1, 0), 24),
        out: "nout".into(),
        to: None,
    });
    cfg.nat.push(NatRule::Dnat {
        network: "nout".into(),
        proto: 6,
        port: 8080,
        to: (Ipv4Addr::new(10, 243, 1, 2), 80),
    });
    cfg.nat.push(NatRule::Dnat {
        network: "nout".into(),
        proto: 17,
        port: 5353,
        to: (Ipv4Addr::new(10, 243, 1, 2), 5353),
    });
    dp.apply_router(&cfg).unwrap();
    let i1 = host(&dp, "nin", "ni1", "10.243.1.2", Some("10.243.1.1"));
    let i2 = host(&dp, "nin", "ni2", "10.243.1.3", Some("10.243.1.1"));
    let o = host(&dp, "nout", "no1", "10.243.2.2", None);

    let (ok, out) = ping(&i1, &["-c", "2", "10.243.2.2"]);
    assert!(ok, "masqueraded ping: {out}\n{:?}", dp.router_stats("n"));

    // TCP: the outside server sees the router's address as its peer.
    let server: SocketAddr = "10.243.2.2:5001".parse().unwrap();
    let listener = o.within(move || TcpListener::bind(server).unwrap());
    let conn = i1.within(move || TcpStream::connect_timeout(&server, Duration::from_secs(3)));
    let conn = conn.expect("connect through SNAT");
    listener
        .set_nonblocking(false)
        .and_then(|()| conn.set_read_timeout(Some(Duration::from_secs(3))))
        .unwrap();
    let (mut peer, addr) = listener.accept().unwrap();
    assert_eq!(
        addr.ip().to_string(),
        "10.243.2.1",
        "masqueraded to the router"
    );
    peer.write_all(b"pong").unwrap();
    let mut buf = [0u8; 4];
    (&conn).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"pong");

    // UDP from the same source port on two inside hosts: both get through, on distinct
    // outside ports, and each gets its own answer back.
    let echo: SocketAddr = "10.243.2.2:5002".parse().unwrap();
    let srv = o.within(move || UdpSocket::bind(echo).unwrap());
    srv.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut peers = Vec::new();
    for (ns, me) in [(&i1, "10.243.1.2:40000"), (&i2, "10.243.1.3:40000")] {
        let me: SocketAddr = me.parse().unwrap();
        let sock = ns.within(move || UdpSocket::bind(me).unwrap());
        sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        sock.send_to(me.to_string().as_bytes(), echo).unwrap();
        let mut buf = [0u8; 64];
        let (n, from) = srv.recv_from(&mut buf).expect("datagram through SNAT");
        assert_eq!(&buf[..n], me.to_string().as_bytes());
        assert_eq!(from.ip().to_string(), "10.243.2.1");
        srv.send_to(&buf[..n], from).unwrap();
        let (n, _) = sock.recv_from(&mut buf).expect("the answer comes back");
        assert_eq!(&buf[..n], me.to_string().as_bytes(), "to the right host");
        peers.push(from);
    }
    assert_ne!(
        peers[0].port(),
        peers[1].port(),
        "same inside port, distinct outside ports"
    );

    // DNAT: the outside reaches the inside server on the router's address, port 8080.
    let inside: SocketAddr = "10.243.1.2:80".parse().unwrap();
    let listener = i1.within(move || TcpListener::bind(inside).unwrap());
    let fwd: SocketAddr = "10.243.2.1:8080".parse().unwrap();
    let conn = o
        .within(move || TcpStream::connect_timeout(&fwd, Duration::from_secs(3)))
        .expect("connect to the port forward");
    let (mut peer, addr) = listener.accept().unwrap();
    assert_eq!(
        addr.ip().to_string(),
        "10.243.2.2",
        "DNAT keeps the client's address"
    );
    peer.write_all(b"hi").unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 2];
    (&conn).read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hi");

    // ICMP errors about NATed flows reach the right socket: the port unreachable from
    // the outside host (to the router's address) for an SNATed flow, and the one from the
    // inside host for a port-forwarded flow. A connected UDP socket reports them.
    for (from, to) in [(&i1, "10.243.2.2:5999"), (&o, "10.243.2.1:5353")] {
        let to: SocketAddr = to.parse().unwrap();
        let err = from.within(move || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
            sock.connect(to).unwrap();
            sock.send(b"anyone?").unwrap();
            sock.recv(&mut [0u8; 16]).map_err(|e| e.kind())
        });
        assert_eq!(
            err,
            Err(std::io::ErrorKind::ConnectionRefused),
            "the port unreachable for {to} came back translated"
        );
    }

    let s = dp.router_stats("n").unwrap();
    assert!(s.nat_sessions_created >= 4, "{s:?}");
    let sessions = dp.router_sessions("n").unwrap();
    assert!(
        sessions.iter().any(|(orig, reply, _)| orig.dport == 8080
            && reply.src == inside.ip().to_string().parse::<Ipv4Addr>().unwrap()),
        "{sessions:?}"
    );
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let tcp = tcp_bps(&i1.iperf(&o, "10.243.2.2", &["-t", "3"]));
    println!("masqueraded iperf3 TCP: {:.2} Gbit/s", tcp / 1e9);
    assert!(tcp > 200e6, "masqueraded TCP at {tcp} bit/s");
    drop(_heavy);

    // Without the SNAT rule, new flows from the inside find no way back.
    cfg.nat.remove(0);
    dp.apply_router(&cfg).unwrap();
    let (ok, _) = ping(&i2, &["-c", "1", "10.243.2.2"]);
    assert!(!ok, "no SNAT: the outside has no route back");
}
