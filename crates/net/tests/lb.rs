//! The load balancer with real Linux stacks: a client namespace and backend namespaces on
//! one network, each backend running a small TCP (or UDP) server that answers its own
//! name, the client connecting to the VIP.

mod common;

use common::*;
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use vireo_net::datapath::lb::{Affinity, Algorithm, LbConfig, Proto};
use vireo_net::datapath::router::RouterConfig;
use vireo_net::datapath::{Addressing, Datapath};

const PORT: u16 = 8080;

/// A backend's server: answers each connection with its name, then echoes lines until
/// the client closes. Stops (its listener closed: SYNs get RSTs) on drop.
struct Server {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Server {
    fn tcp(ns: &Ns, ip: &str, name: &str) -> Server {
        let addr: SocketAddr = format!("{ip}:{PORT}").parse().unwrap();
        let l = ns.within(move || TcpListener::bind(addr).expect("bind in backend"));
        l.set_nonblocking(true).unwrap();
        let (stop, name) = (Arc::new(AtomicBool::new(false)), name.to_string());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        let name = name.clone();
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).unwrap();
                            if writeln!(c, "{name}").is_err() {
                                return;
                            }
                            let mut r = BufReader::new(c.try_clone().unwrap());
                            let mut line = String::new();
                            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                                let _ = c.write_all(line.as_bytes());
                                line.clear();
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }

    /// A UDP server answering each datagram with its name.
    fn udp(ns: &Ns, ip: &str, name: &str) -> Server {
        let addr: SocketAddr = format!("{ip}:{PORT}").parse().unwrap();
        let sock = ns.within(move || UdpSocket::bind(addr).expect("bind in backend"));
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let (stop, name) = (Arc::new(AtomicBool::new(false)), name.to_string());
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(Ordering::Relaxed) {
                if let Ok((_, from)) = sock.recv_from(&mut buf) {
                    let _ = sock.send_to(name.as_bytes(), from);
                }
            }
        });
        Server {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A network 10.235.NET.0/24 (gateway .1) with a client (.10) and backends (.21, .22...).
struct Setup {
    dp: Arc<Datapath>,
    client: Ns,
    backends: Vec<Ns>,
    net: u8,
}

impl Setup {
    fn new(tag: char, net: u8, n: usize) -> Setup {
        let dp = Datapath::new();
        let addressing = Addressing {
            subnet: Some((Ipv4Addr::new(10, 235, net, 0), 24)),
            gateway: Some(Ipv4Addr::new(10, 235, net, 1)),
        };
        dp.add_network("lb", None, addressing).unwrap();
        let pid = std::process::id();
        let plug = |what: String, last: u8| {
            let tap = format!("vl{pid}{tag}{what}");
            port(&dp, &tap, "lb", &tap, untagged());
            let ns = Ns::new(&format!("lb{tag}{what}"));
            ns.attach(&tap, Some(&format!("10.235.{net}.{last}/24")));
            ns
        };
        let client = plug("c".into(), 10);
        let backends = (0..n).map(|i| plug(i.to_string(), 21 + i as u8)).collect();
        Setup {
            dp,
            client,
            backends,
            net,
        }
    }

    fn ip(&self, last: u8) -> String {
        format!("10.235.{}.{last}", self.net)
    }

    fn backend(&self, i: usize) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 235, self.net, 21 + i as u8), PORT)
    }

    fn vip(&self) -> SocketAddrV4 {
        SocketAddrV4::new(Ipv4Addr::new(10, 235, self.net, 100), 80)
    }

    /// Server `i` of the backends, named `bI`.
    fn serve(&self, i: usize) -> Server {
        Server::tcp(&self.backends[i], &self.ip(21 + i as u8), &format!("b{i}"))
    }

    fn lb(&self, algorithm: Algorithm, affinity: Affinity, health: Option<Duration>) {
        let n = self.backends.len();
        self.dp
            .add_lb(LbConfig {
                name: "web".into(),
                network: "lb".into(),
                vip: self.vip(),
                proto: Proto::Tcp,
                backends: (0..n).map(|i| self.backend(i)).collect(),
                algorithm,
                affinity,
                health_interval: health,
            })
            .unwrap();
    }

    /// A connection from the client to the VIP, and the name of the backend it reached.
    fn open(&self) -> (TcpStream, String) {
        let vip = SocketAddr::V4(self.vip());
        let s = self
            .client
            .within(move || TcpStream::connect_timeout(&vip, Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("connect to the VIP: {e}"));
        s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut name = String::new();
        BufReader::new(s.try_clone().unwrap())
            .read_line(&mut name)
            .unwrap();
        (s, name.trim().to_string())
    }

    fn ask(&self) -> String {
        self.open().1
    }

    fn up(&self, i: usize) -> bool {
        let info = self.dp.lb_info("web").unwrap();
        let b = self.backend(i);
        info.backend_state.iter().any(|s| s.address == b && s.up)
    }
}

fn wait(what: &str, secs: u64, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn count(names: &[String], who: &str) -> usize {
    names.iter().filter(|n| *n == who).count()
}

#[test]
fn round_robin_spreads_and_health_checks_follow_a_dead_backend() {
    let s = Setup::new('r', 1, 3);
    let mut servers: Vec<Option<Server>> = (0..3).map(|i| Some(s.serve(i))).collect();
    s.lb(
        Algorithm::RoundRobin,
        Affinity::None,
        Some(Duration::from_secs(1)),
    );
    // The VIP is the endpoint's: it answers ping.
    let o = s
        .client
        .exec(&["busybox", "ping", "-c", "1", "-W", "2", &s.ip(100)]);
    assert!(o.status.success(), "ping the VIP");
    let names: Vec<String> = (0..6).map(|_| s.ask()).collect();
    for b in ["b0", "b1", "b2"] {
        assert_eq!(count(&names, b), 2, "round robin: {names:?}");
    }
    // b1's server dies: its host answers RST; the checks take it down.
    servers[1] = None;
    wait("b1 down", 15, || !s.up(1));
    assert!(s.up(0) && s.up(2));
    let names: Vec<String> = (0..6).map(|_| s.ask()).collect();
    assert_eq!(count(&names, "b1"), 0, "{names:?}");
    assert_eq!(count(&names, "b0") + count(&names, "b2"), 6);
    // Back: up again after RISE good checks, and it gets connections.
    servers[1] = Some(s.serve(1));
    wait("b1 up", 15, || s.up(1));
    let names: Vec<String> = (0..6).map(|_| s.ask()).collect();
    assert_eq!(count(&names, "b1"), 2, "{names:?}");
    let info = s.dp.lb_info("web").unwrap();
    let total: u64 = info.backend_state.iter().map(|b| b.connections).sum();
    assert_eq!(total, 18, "{info:?}");
}

#[test]
fn least_conn_sends_new_connections_to_the_idle_backend() {
    let s = Setup::new('l', 2, 2);
    let _servers: Vec<Server> = (0..2).map(|i| s.serve(i)).collect();
    s.lb(Algorithm::LeastConn, Affinity::None, None);
    let held: Vec<(TcpStream, String)> = (0..4).map(|_| s.open()).collect();
    let names: Vec<String> = held.iter().map(|h| h.1.clone()).collect();
    assert_eq!(count(&names, "b0"), 2, "{names:?}");
    // Close b0's two: both ends close, the table sees FIN both ways.
    let (b0, mut kept): (Vec<_>, Vec<_>) = held.into_iter().partition(|h| h.1 == "b0");
    drop(b0);
    wait("b0 idle", 5, || {
        let info = s.dp.lb_info("web").unwrap();
        info.backend_state[0].active == 0 && info.backend_state[1].active == 2
    });
    // b1 holds two open connections: the next two go to b0.
    let next: Vec<(TcpStream, String)> = (0..2).map(|_| s.open()).collect();
    assert!(next.iter().all(|n| n.1 == "b0"), "least-conn");
    // The held connections still carry data both ways.
    let (c, name) = &mut kept[0];
    writeln!(c, "still there").unwrap();
    let mut line = String::new();
    BufReader::new(c.try_clone().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!((name.as_str(), line.as_str()), ("b1", "still there\n"));
}

#[test]
fn client_ip_affinity_keeps_a_client_on_one_backend() {
    let s = Setup::new('a', 3, 3);
    let _servers: Vec<Server> = (0..3).map(|i| s.serve(i)).collect();
    s.lb(Algorithm::RoundRobin, Affinity::ClientIp, None);
    let names: Vec<String> = (0..6).map(|_| s.ask()).collect();
    assert!(names.iter().all(|n| *n == names[0]), "{names:?}");
    let info = s.dp.lb_info("web").unwrap();
    let total: u64 = info.backend_state.iter().map(|b| b.connections).sum();
    assert_eq!(total, 6);
}

#[test]
fn a_removed_backend_keeps_its_open_connections() {
    let s = Setup::new('x', 4, 2);
    let _servers: Vec<Server> = (0..2).map(|i| s.serve(i)).collect();
    s.lb(Algorithm::RoundRobin, Affinity::None, None);
    let (mut c, name) = s.open();
    assert_eq!(name, "b0", "the first connection goes to the first backend");
    s.dp.lb_remove_backend("web", s.backend(0)).unwrap();
    // No new connection goes to b0...
    let names: Vec<String> = (0..4).map(|_| s.ask()).collect();
    assert_eq!(count(&names, "b1"), 4, "{names:?}");
    // ...but the open one still works, both ways.
    for i in 0..3 {
        writeln!(c, "line {i}").unwrap();
        let mut line = String::new();
        BufReader::new(c.try_clone().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, format!("line {i}\n"));
    }
    // The last backend cannot be removed; a removed one can come back.
    assert!(s.dp.lb_remove_backend("web", s.backend(1)).is_err());
    s.dp.lb_add_backend("web", s.backend(0)).unwrap();
    let names: Vec<String> = (0..4).map(|_| s.ask()).collect();
    assert_eq!(count(&names, "b0"), 2, "{names:?}");
}

#[test]
fn no_healthy_backend_refuses_at_once_and_counts() {
    let s = Setup::new('n', 5, 1);
    // No server on the backend: its checks fail (RST), it goes down.
    s.lb(
        Algorithm::RoundRobin,
        Affinity::None,
        Some(Duration::from_secs(1)),
    );
    wait("b0 down", 15, || !s.up(0));
    let vip = SocketAddr::V4(s.vip());
    let t = Instant::now();
    let r = s
        .client
        .within(move || TcpStream::connect_timeout(&vip, Duration::from_secs(3)));
    let err = r.expect_err("no backend: refused");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused, "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "a RST, not a timeout");
    assert!(s.dp.lb_info("web").unwrap().no_backend >= 1);
    // Deleting the load balancer: the VIP stops answering.
    s.dp.remove_lb("web").unwrap();
    let o = s
        .client
        .exec(&["busybox", "ping", "-c", "1", "-W", "1", &s.ip(100)]);
    assert!(!o.status.success(), "the VIP is gone");
}

#[test]
fn a_udp_vip_spreads_datagram_flows() {
    let s = Setup::new('u', 6, 2);
    let _servers: Vec<Server> = (0..2)
        .map(|i| Server::udp(&s.backends[i], &s.ip(21 + i as u8), &format!("b{i}")))
        .collect();
    s.dp.add_lb(LbConfig {
        name: "dns".into(),
        network: "lb".into(),
        vip: s.vip(),
        proto: Proto::Udp,
        backends: vec![s.backend(0), s.backend(1)],
        algorithm: Algorithm::RoundRobin,
        affinity: Affinity::None,
        health_interval: None,
    })
    .unwrap();
    let vip = SocketAddr::V4(s.vip());
    let mut names = Vec::new();
    for _ in 0..4 {
        // A connected socket only takes datagrams from the VIP: the reply was translated.
        let sock = s.client.within(move || {
            let u = UdpSocket::bind("0.0.0.0:0").unwrap();
            u.connect(vip).unwrap();
            u
        });
        sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = [0u8; 64];
        let mut got = None;
        // The first datagram may wait for ARP; retry a few times.
        for _ in 0..3 {
            sock.send(b"who").unwrap();
            if let Ok(n) = sock.recv(&mut buf) {
                got = Some(String::from_utf8_lossy(&buf[..n]).to_string());
                break;
            }
        }
        names.push(got.expect("an answer from the VIP"));
    }
    assert_eq!(count(&names, "b0"), 2, "{names:?}");
    assert_eq!(count(&names, "b1"), 2, "{names:?}");
}

#[test]
fn a_client_behind_a_router_reaches_the_vip() {
    // The backends' network (10.235.8.0/24) and, behind a router, the client's (.7).
    let s = Setup::new('t', 8, 2);
    let dp = &s.dp;
    let front = Addressing {
        subnet: Some((Ipv4Addr::new(10, 235, 7, 0), 24)),
        gateway: Some(Ipv4Addr::new(10, 235, 7, 1)),
    };
    dp.add_network("front", None, front).unwrap();
    dp.apply_router(&RouterConfig {
        name: "r".into(),
        networks: vec!["front".into(), "lb".into()],
        ..Default::default()
    })
    .unwrap();
    let tap = format!("vl{}tf", std::process::id());
    port(dp, &tap, "front", &tap, untagged());
    let client = Ns::new("lbtf");
    client.attach(&tap, Some("10.235.7.10/24"));
    ok(&[
        "ip",
        "-n",
        &client.0,
        "route",
        "add",
        "default",
        "via",
        "10.235.7.1",
    ]);
    for b in &s.backends {
        ok(&[
            "ip",
            "-n",
            &b.0,
            "route",
            "add",
            "default",
            "via",
            "10.235.8.1",
        ]);
    }
    let _servers: Vec<Server> = (0..2).map(|i| s.serve(i)).collect();
    s.lb(Algorithm::RoundRobin, Affinity::None, None);
    let vip = SocketAddr::V4(s.vip());
    let mut names = Vec::new();
    for _ in 0..4 {
        let c = client
            .within(move || TcpStream::connect_timeout(&vip, Duration::from_secs(3)))
            .unwrap_or_else(|e| panic!("connect through the router: {e}"));
        c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
        let mut name = String::new();
        BufReader::new(c).read_line(&mut name).unwrap();
        names.push(name.trim().to_string());
    }
    assert_eq!(names, ["b0", "b1", "b0", "b1"]);
}

#[test]
fn bad_configurations_are_refused_with_the_reason() {
    let dp = Datapath::new();
    let addressing = Addressing {
        subnet: Some((Ipv4Addr::new(10, 235, 9, 0), 24)),
        gateway: Some(Ipv4Addr::new(10, 235, 9, 1)),
    };
    dp.add_network("lb", None, addressing).unwrap();
    let a = |s: &str| -> SocketAddrV4 { s.parse().unwrap() };
    let cfg = |name: &str, vip: &str, backends: &[&str]| LbConfig {
        name: name.into(),
        network: "lb".into(),
        vip: a(vip),
        proto: Proto::Tcp,
        backends: backends.iter().map(|b| a(b)).collect(),
        algorithm: Algorithm::RoundRobin,
        affinity: Affinity::None,
        health_interval: None,
    };
    let err = |c: LbConfig| dp.add_lb(c).unwrap_err().to_string();
    assert!(err(cfg("x", "10.9.9.9:80", &["10.235.9.5:80"])).contains("outside"));
    assert!(err(cfg("x", "10.235.9.1:80", &["10.235.9.5:80"])).contains("gateway"));
    assert!(err(cfg("x", "10.235.9.100:80", &[])).contains("at least one"));
    assert!(err(cfg("x", "10.235.9.100:80", &["10.8.0.5:80"])).contains("inside network"));
    dp.add_lb(cfg("web", "10.235.9.100:80", &["10.235.9.5:80"]))
        .unwrap();
    assert!(err(cfg("web", "10.235.9.101:80", &["10.235.9.5:80"])).contains("exists"));
    assert!(err(cfg("w2", "10.235.9.100:80", &["10.235.9.6:80"])).contains("serves"));
    // Same VIP, another port: fine. A VIP is not a backend.
    dp.add_lb(cfg("w3", "10.235.9.100:443", &["10.235.9.5:443"]))
        .unwrap();
    assert!(dp.lb_add_backend("web", a("10.235.9.100:80")).is_err());
    assert!(
        dp.lb_add_backend("web", a("10.235.9.5:80")).is_err(),
        "twice"
    );
    assert!(
        dp.lb_remove_backend("web", a("10.235.9.5:80")).is_err(),
        "last"
    );
    assert!(dp.remove_lb("nope").is_err());
}
