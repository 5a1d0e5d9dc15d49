//! The firewall with real Linux stacks: ports' taps in namespaces of the test's own
//! (10.21x.0.0/24 addresses), TCP and UDP sockets opened inside them, busybox ping.
//! Needs root, iproute2, busybox.

mod common;

use common::*;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use vireo_net::datapath::firewall::rules::{Action, Direction, Proto, RuleConfig, Target};
use vireo_net::datapath::Datapath;

/// A network `n` with one port per namespace: port `pI` in namespace I at 10.SUBNET.0.I+1.
struct Lab {
    dp: Arc<Datapath>,
    ns: Vec<Ns>,
    subnet: u8,
}

impl Lab {
    fn new(tag: &str, subnet: u8, n: usize) -> Lab {
        let dp = Datapath::new();
        dp.add_network("n", None, Default::default()).unwrap();
        let mut ns = Vec::new();
        for i in 0..n {
            let tap = format!("fw{tag}{i}{}", std::process::id());
            port(&dp, &format!("p{i}"), "n", &tap, untagged());
            let space = Ns::new(&format!("fw{tag}{i}"));
            space.attach(&tap, Some(&format!("10.{subnet}.0.{}/24", i + 1)));
            ns.push(space);
        }
        Lab { dp, ns, subnet }
    }

    fn addr(&self, i: usize, port: u16) -> SocketAddr {
        format!("10.{}.0.{}:{port}", self.subnet, i + 1)
            .parse()
            .unwrap()
    }

    fn ip(&self, i: usize) -> String {
        format!("10.{}.0.{}", self.subnet, i + 1)
    }

    /// Opens a TCP connection from namespace `a` to a listener in `b`: both ends, or
    /// `None` if it is not let through.
    fn connect(&self, a: usize, b: usize, port: u16) -> Option<(TcpStream, TcpStream)> {
        self.ns[a].connect(&self.ns[b], self.addr(b, port), Duration::from_millis(1500))
    }

    fn tcp(&self, a: usize, b: usize, port: u16) -> bool {
        self.connect(a, b, port).is_some()
    }

    /// A UDP datagram from `a` to `b`'s `port`, and (if it arrived) an answer back:
    /// (arrived, answer arrived).
    fn udp(&self, a: usize, b: usize, port: u16) -> (bool, bool) {
        let addr = self.addr(b, port);
        let rx = self.ns[b].within(move || UdpSocket::bind(addr).expect("bind udp"));
        let src = self.addr(a, 0);
        let tx = self.ns[a].within(move || UdpSocket::bind(src).expect("bind udp"));
        for s in [&rx, &tx] {
            s.set_read_timeout(Some(Duration::from_millis(700)))
                .unwrap();
        }
        let mut buf = [0u8; 64];
        for _ in 0..3 {
            tx.send_to(b"ping", addr).unwrap();
            if let Ok((_, from)) = rx.recv_from(&mut buf) {
                rx.send_to(b"pong", from).unwrap();
                return (true, tx.recv_from(&mut buf).is_ok());
            }
        }
        (false, false)
    }

    fn ping(&self, a: usize, b: usize) -> bool {
        let ip = self.ip(b);
        let o = self.ns[a].exec(&["busybox", "ping", "-c", "2", "-W", "1", &ip]);
        o.status.success()
    }

    fn hits(&self, id: u64) -> u64 {
        let h = self.dp.firewall_hits();
        h.iter().find(|h| h.id == id).map_or(0, |h| h.hits)
    }
}

fn rule(id: u64, target: Target, dir: Direction, proto: Proto, ports: Option<u16>) -> RuleConfig {
    RuleConfig {
        id,
        target,
        direction: dir,
        proto,
        cidr: None,
        ports: ports.map(|p| (p, p)),
        action: Action::Deny,
        priority: 100,
    }
}

fn on_port(p: &str) -> Target {
    Target::Port(p.into())
}

fn allow(mut r: RuleConfig) -> RuleConfig {
    r.action = Action::Allow;
    r
}

/// Whether data still goes both ways over an open connection.
fn talks(c: &mut (TcpStream, TcpStream)) -> bool {
    let (a, b) = c;
    for s in [&*a, &*b] {
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    }
    let mut buf = [0u8; 5];
    a.write_all(b"hello").is_ok()
        && b.read_exact(&mut buf).is_ok()
        && b.write_all(b"world").is_ok()
        && a.read_exact(&mut buf).is_ok()
        && &buf == b"world"
}

#[test]
fn tcp_and_udp_denied_by_port_on_one_port_only() {
    let lab = Lab::new("p", 211, 3);
    let rules = [
        rule(1, on_port("p1"), Direction::In, Proto::Tcp, Some(5001)),
        rule(2, on_port("p1"), Direction::In, Proto::Udp, Some(6001)),
    ];
    lab.dp.set_firewall(&rules, &[]).unwrap();
    assert!(lab.tcp(0, 1, 5000), "TCP to an allowed port connects");
    assert!(!lab.tcp(0, 1, 5001), "TCP to a denied port must not");
    assert!(lab.hits(1) >= 1, "{:?}", lab.dp.firewall_hits());
    assert_eq!(lab.udp(0, 1, 6000), (true, true), "UDP to an allowed port");
    assert!(!lab.udp(0, 1, 6001).0, "UDP to a denied port");
    assert!(lab.hits(2) >= 1);
    // The rules are p1's: p2 takes the same ports.
    assert!(lab.tcp(0, 2, 5001), "a rule on p1 must not affect p2");
    assert_eq!(lab.udp(0, 2, 6001), (true, true));
    let st = lab.dp.firewall_stats();
    assert!(st.denied >= 2 && st.conntrack_entries >= 3, "{st:?}");

    // A flood of denied datagrams: all dropped and counted, few logged.
    let (src, dst) = (lab.addr(0, 0), lab.addr(1, 6001));
    lab.ns[0].within(move || {
        let s = UdpSocket::bind(src).unwrap();
        for _ in 0..500 {
            let _ = s.send_to(b"flood", dst);
        }
    });
    std::thread::sleep(Duration::from_millis(300));
    let after = lab.dp.firewall_stats();
    assert!(after.denied >= st.denied + 450, "{after:?}");
    assert!(after.flowlog_suppressed >= 250, "rate-limited: {after:?}");
}

#[test]
fn default_deny_lets_out_what_is_allowed_and_its_replies_back() {
    let lab = Lab::new("d", 212, 2);
    let dir = std::env::temp_dir().join(format!("vireo-fw-log-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    lab.dp.start_flow_log(&dir).unwrap();
    // p0 may open TCP and UDP connections; p1 accepts them on 7000 and 7001.
    let rules = [
        allow(rule(1, on_port("p0"), Direction::Out, Proto::Tcp, None)),
        allow(rule(2, on_port("p0"), Direction::Out, Proto::Udp, None)),
        allow(rule(
            3,
            on_port("p1"),
            Direction::In,
            Proto::Tcp,
            Some(7000),
        )),
        allow(rule(
            4,
            on_port("p1"),
            Direction::In,
            Proto::Udp,
            Some(7001),
        )),
    ];
    lab.dp.set_firewall(&rules, &["n".to_string()]).unwrap();
    let mut c = lab.connect(0, 1, 7000).expect("the allowed connection");
    assert!(
        talks(&mut c),
        "its replies pass though p0's `in` is default deny"
    );
    assert_eq!(lab.udp(0, 1, 7001), (true, true), "UDP and its answer");
    // New connections the other way are denied, to the same ports.
    assert!(!lab.tcp(1, 0, 7000), "p1 may not open a connection to p0");
    assert!(!lab.udp(1, 0, 7001).0);
    assert!(!lab.ping(0, 1), "nothing allows ICMP");

    let ct = lab.dp.conntrack(100);
    assert!(
        ct.iter().any(|c| c.dport == 7000
            && c.state == "ESTABLISHED"
            && c.from.as_deref() == Some("p0")
            && c.to.as_deref() == Some("p1")
            && c.packets[1] > 0),
        "{ct:#?}"
    );
    assert!(ct.iter().any(|c| c.dport == 7001 && c.state == "REPLIED"));
    for id in 1..=4 {
        assert!(lab.hits(id) >= 1, "rule {id}: {:?}", lab.dp.firewall_hits());
    }

    // The flow log, in memory and in the file.
    let flows = lab.dp.flows(100);
    let allowed = flows
        .iter()
        .find(|f| f.action == Action::Allow && f.dport == 7000)
        .expect("an allow line");
    assert_eq!(allowed.rule, Some(3), "{allowed:?}");
    assert_eq!(allowed.from.as_deref(), Some("p0"));
    let denied = flows
        .iter()
        .find(|f| f.action == Action::Deny && f.dport == 7000)
        .expect("a deny line");
    assert_eq!(
        (denied.rule, denied.direction),
        (None, Some(Direction::Out))
    );
    assert_eq!(denied.port.as_deref(), Some("p1"), "p1's `out` side denied");
    let path = dir.join("flows.jsonl");
    let mut text = String::new();
    for _ in 0..50 {
        text = std::fs::read_to_string(&path).unwrap_or_default();
        if text.contains("\"deny\"") && text.contains("\"allow\"") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert!(lines.iter().any(|l| l["action"] == "allow"
        && l["proto"] == "tcp"
        && l["dport"] == 7000
        && l["src"] == "10.212.0.1"
        && l["network"] == "n"
        && l["rule"] == 3));
    assert!(lines
        .iter()
        .any(|l| l["action"] == "deny" && l["src"] == "10.212.0.2" && l["rule"].is_null()));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn icmp_denied_then_allowed() {
    let lab = Lab::new("i", 213, 2);
    let deny = rule(
        1,
        Target::Network("n".into()),
        Direction::In,
        Proto::Icmp,
        None,
    );
    lab.dp
        .set_firewall(std::slice::from_ref(&deny), &[])
        .unwrap();
    assert!(lab.tcp(0, 1, 5000), "only ICMP is denied");
    assert!(!lab.ping(0, 1), "ping must be denied");
    let denied = lab.hits(1);
    assert!(denied >= 1);
    let mut ok = allow(deny);
    ok.id = 2;
    lab.dp.set_firewall(&[ok], &[]).unwrap();
    assert!(lab.ping(0, 1), "ping must pass once allowed");
    assert!(lab.hits(2) >= 1);
    assert!(
        lab.dp.conntrack(100).iter().any(|c| c.proto == 1),
        "the echo is tracked"
    );
}

#[test]
fn established_connection_survives_a_deny_rule_until_flushed() {
    let lab = Lab::new("e", 214, 2);
    // Some rule, so that the network is policed (and tracked) from the start.
    let other = rule(1, on_port("p1"), Direction::In, Proto::Udp, Some(9));
    lab.dp
        .set_firewall(std::slice::from_ref(&other), &[])
        .unwrap();
    let mut c = lab.connect(0, 1, 8000).expect("connect");
    assert!(talks(&mut c));
    let deny = rule(2, on_port("p1"), Direction::In, Proto::Tcp, Some(8000));
    lab.dp.set_firewall(&[other, deny], &[]).unwrap();
    assert!(
        talks(&mut c),
        "an established connection is kept (OVS/nftables do too)"
    );
    assert!(!lab.tcp(0, 1, 8000), "a new one is denied");
    assert!(lab.dp.flush_conntrack() >= 1);
    // Flushed: its next segment is judged by the rules again (as picked up mid-stream).
    assert!(!talks(&mut c), "the flushed connection is denied now");
}

#[test]
fn routed_traffic_is_judged_in_each_network_it_crosses() {
    use std::net::Ipv4Addr;
    use vireo_net::datapath::router::RouterConfig;
    use vireo_net::datapath::Addressing;
    let dp = Datapath::new();
    for (name, third) in [("inside", 1), ("outside", 2)] {
        let a = Addressing {
            subnet: Some((Ipv4Addr::new(10, 217, third, 0), 24)),
            gateway: Some(Ipv4Addr::new(10, 217, third, 1)),
        };
        dp.add_network(name, None, a).unwrap();
    }
    dp.apply_router(&RouterConfig {
        name: "r".into(),
        networks: vec!["inside".into(), "outside".into()],
        ..Default::default()
    })
    .unwrap();
    let mut ns = Vec::new();
    for (i, net) in ["inside", "outside"].into_iter().enumerate() {
        let tap = format!("fwr{i}{}", std::process::id());
        port(&dp, &format!("r{i}"), net, &tap, untagged());
        let space = Ns::new(&format!("fwr{i}"));
        space.attach(&tap, Some(&format!("10.217.{}.2/24", i + 1)));
        let gw = format!("10.217.{}.1", i + 1);
        ok(&["ip", "-n", &space.0, "route", "add", "default", "via", &gw]);
        ns.push(space);
    }
    let lab = Lab {
        dp: dp.clone(),
        ns,
        subnet: 0,
    };
    let server: SocketAddr = "10.217.2.2:9000".parse().unwrap();
    let open = |from: usize, to: usize, addr| {
        lab.ns[from].connect(&lab.ns[to], addr, Duration::from_millis(1500))
    };
    assert!(open(0, 1, server).is_some(), "routed, no rules yet");

    // Outside denies by default: the router's hop into it is judged by r1's `in` side.
    dp.set_firewall(&[], &["outside".to_string()]).unwrap();
    assert!(open(0, 1, server).is_none(), "denied entering outside");
    let r = allow(rule(
        1,
        Target::Network("outside".into()),
        Direction::In,
        Proto::Tcp,
        Some(9000),
    ));
    dp.set_firewall(&[r], &["outside".to_string()]).unwrap();
    let mut c = open(0, 1, server).expect("allowed in, and its replies out");
    assert!(talks(&mut c));
    let ct = dp.conntrack(100);
    assert!(
        ct.iter().any(|c| c.network == "outside"
            && c.from.is_none()
            && c.to.as_deref() == Some("r1")
            && c.state == "ESTABLISHED"),
        "the hop from the router into outside is tracked: {ct:#?}"
    );
    // Nothing lets r1 open connections or ping its gateway.
    let client: SocketAddr = "10.217.1.2:9001".parse().unwrap();
    assert!(open(1, 0, client).is_none(), "outside may not connect in");
    let o = lab.ns[1].exec(&["busybox", "ping", "-c", "1", "-W", "1", "10.217.2.1"]);
    assert!(
        !o.status.success(),
        "r1's out side denies the ping to its gateway"
    );
    let o = lab.ns[0].exec(&["busybox", "ping", "-c", "1", "-W", "1", "10.217.1.1"]);
    assert!(o.status.success(), "inside is not policed");
}
