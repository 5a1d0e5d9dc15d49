use super::*;
use std::net::Ipv4Addr;

const A: Hop = Hop::Port { net: 1, port: 2 };
const B: Hop = Hop::Port { net: 1, port: 3 };

fn tcp(src: u8, dst: u8, sport: u16, dport: u16, flags: u8) -> Ipv4 {
    Ipv4 {
        l3: 0,
        l4: 0,
        end: 0,
        src: Ipv4Addr::new(10, 200, 0, src),
        dst: Ipv4Addr::new(10, 200, 0, dst),
        proto: PROTO_TCP,
        ttl: 64,
        fragment: false,
        l4_info: L4::Tcp {
            sport,
            dport,
            flags,
        },
    }
}

fn udp(src: u8, dst: u8, sport: u16, dport: u16) -> Ipv4 {
    Ipv4 {
        proto: PROTO_UDP,
        l4_info: L4::Udp { sport, dport },
        ..tcp(src, dst, 0, 0, 0)
    }
}

fn state(t: &Table, now: Duration) -> TcpState {
    match t.list(now, 10)[0].state {
        State::Tcp { st, .. } => st,
        s => panic!("not TCP: {s:?}"),
    }
}

#[test]
fn tcp_handshake_and_teardown() {
    let t = Table::new(64);
    let now = Duration::from_secs(1);
    let syn = tcp(1, 2, 40000, 80, TCP_SYN);
    let k = Key::new(syn.flow(), A, B);
    assert_eq!(t.track(&k, &syn, 60, now), None);
    assert!(t.insert(&k, initial(&syn).unwrap(), 60, now));
    assert_eq!(state(&t, now), TcpState::SynSent);
    let synack = tcp(2, 1, 80, 40000, TCP_SYN | TCP_ACK);
    let rk = Key::new(synack.flow(), B, A);
    assert_eq!(t.track(&rk, &synack, 60, now), Some(Dir::Reply));
    assert_eq!(state(&t, now), TcpState::SynRecv);
    let ack = tcp(1, 2, 40000, 80, TCP_ACK);
    assert_eq!(t.track(&k, &ack, 60, now), Some(Dir::Orig));
    assert_eq!(state(&t, now), TcpState::Established);
    assert_eq!(t.list(now, 10)[0].expires_in, Duration::from_secs(3600));
    let c = &t.list(now, 10)[0];
    assert_eq!(c.key, k, "listed as the first packet went");
    assert_eq!(c.packets, [2, 1]);
    // Teardown: FIN, FIN, last ACK.
    t.track(&k, &tcp(1, 2, 40000, 80, TCP_FIN | TCP_ACK), 60, now);
    assert_eq!(state(&t, now), TcpState::FinWait);
    t.track(&rk, &tcp(2, 1, 80, 40000, TCP_FIN | TCP_ACK), 60, now);
    assert_eq!(state(&t, now), TcpState::LastAck);
    t.track(&k, &ack, 60, now);
    assert_eq!(state(&t, now), TcpState::TimeWait);
    assert_eq!(t.list(now, 10)[0].expires_in, Duration::from_secs(120));
    // The tuple is reused by a new connection.
    t.track(&k, &syn, 60, now);
    assert_eq!(state(&t, now), TcpState::SynSent);
    // A reset closes at once, with a short timeout.
    t.track(&rk, &tcp(2, 1, 80, 40000, TCP_RST), 60, now);
    assert_eq!(state(&t, now), TcpState::Close);
    assert_eq!(t.track(&k, &ack, 60, now + Duration::from_secs(11)), None);
    assert!(t.is_empty(), "expired entries go when looked up");
}

#[test]
fn what_starts_a_connection() {
    let s = |flags| initial(&tcp(1, 2, 1, 2, flags));
    assert_eq!(s(TCP_RST), None);
    assert_eq!(
        s(TCP_SYN),
        Some(State::Tcp {
            st: TcpState::SynSent,
            fin: 0
        })
    );
    assert_eq!(
        s(TCP_ACK),
        Some(State::Tcp {
            st: TcpState::Established,
            fin: 0
        }),
        "mid-stream pickup"
    );
    let mut echo = udp(1, 2, 0, 0);
    echo.proto = PROTO_ICMP;
    echo.l4_info = L4::Icmp {
        ty: 8,
        code: 0,
        id: 7,
    };
    assert!(initial(&echo).is_some());
    echo.l4_info = L4::Icmp {
        ty: 3,
        code: 3,
        id: 0,
    };
    assert!(initial(&echo).is_none(), "an error is related, never new");
    let mut frag = udp(1, 2, 0, 0);
    frag.l4_info = L4::Other;
    frag.fragment = true;
    assert!(initial(&frag).is_none());
}

#[test]
fn udp_timeouts_grow_once_replied_and_hops_are_separate() {
    let t = Table::new(64);
    let now = Duration::from_secs(5);
    let q = udp(1, 2, 5000, 53);
    let k = Key::new(q.flow(), A, B);
    t.insert(&k, initial(&q).unwrap(), 80, now);
    assert_eq!(t.list(now, 10)[0].expires_in, Duration::from_secs(30));
    // The same flow on another hop is another connection.
    let other = Key::new(q.flow(), A, Hop::Endpoint { net: 1 });
    assert_eq!(t.track(&other, &q, 80, now), None);
    let r = udp(2, 1, 53, 5000);
    assert_eq!(
        t.track(&Key::new(r.flow(), B, A), &r, 80, now),
        Some(Dir::Reply)
    );
    assert_eq!(t.list(now, 10)[0].state, State::Datagram { replied: true });
    assert_eq!(t.list(now, 10)[0].expires_in, Duration::from_secs(180));
    assert!(t.contains(&Key::new(r.flow(), B, A), now));
    assert!(!t.contains(&k, now + Duration::from_secs(181)));
}

#[test]
fn the_table_is_bounded_and_evicts_expired_first() {
    // One entry per shard at most.
    let t = Table::new(1);
    let now = Duration::from_secs(1);
    let mut refused = 0;
    for p in 0..(4 * SHARDS as u16) {
        let q = udp(1, 2, 1000 + p, 53);
        if !t.insert(&Key::new(q.flow(), A, B), initial(&q).unwrap(), 60, now) {
            refused += 1;
        }
    }
    assert!(t.len() <= SHARDS);
    assert!(refused >= 3 * SHARDS, "refused {refused}");
    // Once they expired, new connections fit again.
    let later = now + Duration::from_secs(31);
    let q = udp(1, 2, 9, 53);
    assert!(t.insert(&Key::new(q.flow(), A, B), initial(&q).unwrap(), 60, later));
    assert_eq!(t.list(later, 1000).len(), 1);
    assert_eq!(t.flush(), 1);
    assert!(t.is_empty());
}
