use super::*;
use crate::datapath::packet::{PROTO_TCP, PROTO_UDP, TCP_ACK, TCP_SYN};
use std::net::Ipv4Addr;
use vireo_virtio::rate_limiter::FakeClock;

const INSIDE_A: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 2);
const INSIDE_B: Ipv4Addr = Ipv4Addr::new(10, 210, 0, 3);
const NAT: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 1);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 211, 0, 9);

fn key(proto: u8, src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16) -> FlowKey {
    FlowKey {
        proto,
        src,
        dst,
        sport,
        dport,
    }
}

fn snat(orig: FlowKey) -> Rewrite {
    Rewrite {
        to: FlowKey { src: NAT, ..orig },
        alloc_port: true,
    }
}

const SYN: L4 = L4::Tcp {
    sport: 0,
    dport: 0,
    flags: TCP_SYN,
};
const ACK: L4 = L4::Tcp {
    sport: 0,
    dport: 0,
    flags: TCP_ACK,
};

fn table(clock: &FakeClock, capacity: usize) -> NatTable {
    NatTable::new(Box::new(clock.clone()), capacity)
}

#[test]
fn snat_allocates_distinct_ports_and_replies_find_their_host() {
    let clock = FakeClock::new();
    let mut t = table(&clock, 16);
    let a = key(PROTO_TCP, INSIDE_A, 40000, SERVER, 80);
    let b = key(PROTO_TCP, INSIDE_B, 40000, SERVER, 80);
    let ta = t.create(a, snat(a), &SYN).unwrap();
    let tb = t.create(b, snat(b), &SYN).unwrap();
    assert_eq!((ta.src, tb.src), (NAT, NAT));
    assert!((PORT_MIN..=PORT_MAX).contains(&ta.sport));
    assert_ne!(
        ta.sport, tb.sport,
        "same inside port, distinct outside ports"
    );
    // Later packets of each flow get the same rewrite; replies go back to their host.
    assert_eq!(t.translate(&a, &ACK), Some(ta));
    assert_eq!(t.translate(&tb.reverse(), &ACK), Some(b.reverse()));
    assert_eq!(t.translate(&ta.reverse(), &ACK), Some(a.reverse()));
    // An unrelated flow to the NAT address is not a reply.
    let stray = key(PROTO_TCP, SERVER, 80, NAT, 1234);
    assert_eq!(t.translate(&stray, &ACK), None);
    assert_eq!(t.len(), 2);
    assert_eq!(t.created, 2);
}

#[test]
fn dnat_rewrites_the_destination_and_unnats_replies() {
    let clock = FakeClock::new();
    let mut t = table(&clock, 16);
    let client = Ipv4Addr::new(10, 211, 0, 50);
    let orig = key(PROTO_UDP, client, 5000, NAT, 8080);
    let to = key(PROTO_UDP, client, 5000, INSIDE_A, 80);
    let udp = L4::Udp {
        sport: 5000,
        dport: 8080,
    };
    let got = t
        .create(
            orig,
            Rewrite {
                to,
                alloc_port: false,
            },
            &udp,
        )
        .unwrap();
    assert_eq!(got, to);
    // The server answers from INSIDE_A:80; the client must see NAT:8080.
    assert_eq!(t.translate(&to.reverse(), &udp), Some(orig.reverse()));
}

#[test]
fn icmp_echo_uses_the_identifier_and_requests_are_not_replies() {
    let clock = FakeClock::new();
    let mut t = table(&clock, 16);
    let req = L4::Icmp {
        ty: 8,
        code: 0,
        id: 7,
    };
    let rep = L4::Icmp {
        ty: 0,
        code: 0,
        id: 7,
    };
    let orig = key(PROTO_ICMP, INSIDE_A, 7, SERVER, 7);
    let to = t.create(orig, snat(orig), &req).unwrap();
    assert_eq!(to.sport, to.dport, "the identifier is both ports");
    assert_eq!(t.translate(&to.reverse(), &rep), Some(orig.reverse()));
    // The server pinging the NAT address with that identifier is its own flow.
    assert_eq!(t.translate(&to.reverse(), &req), None);
}

#[test]
fn sessions_expire_and_fin_rst_shorten_them() {
    let clock = FakeClock::new();
    let mut t = table(&clock, 16);
    let a = key(PROTO_TCP, INSIDE_A, 40000, SERVER, 80);
    let ta = t.create(a, snat(a), &SYN).unwrap();
    t.translate(&ta.reverse(), &ACK).unwrap();
    clock.advance(Duration::from_secs(1800));
    assert!(t.translate(&a, &ACK).is_some(), "an open TCP session lasts");
    let rst = L4::Tcp {
        sport: 0,
        dport: 0,
        flags: TCP_RST,
    };
    t.translate(&a, &rst).unwrap();
    clock.advance(TCP_RESET + Duration::from_secs(1));
    assert_eq!(t.translate(&ta.reverse(), &ACK), None, "reset: gone soon");
    assert!(t.is_empty());

    let u = key(PROTO_UDP, INSIDE_A, 53, SERVER, 53);
    let udp = L4::Udp {
        sport: 53,
        dport: 53,
    };
    t.create(u, snat(u), &udp).unwrap();
    clock.advance(UDP_UNREPLIED + Duration::from_secs(1));
    assert_eq!(t.translate(&u, &udp), None);
}

#[test]
fn the_table_is_bounded_and_expired_sessions_make_room() {
    let clock = FakeClock::new();
    let mut t = table(&clock, 4);
    for p in 0..4 {
        let k = key(PROTO_TCP, INSIDE_A, 1000 + p, SERVER, 80);
        t.create(k, snat(k), &SYN).unwrap();
    }
    let k = key(PROTO_TCP, INSIDE_B, 1000, SERVER, 80);
    assert_eq!(t.create(k, snat(k), &SYN), Err(Refused::Full));
    clock.advance(TCP_UNREPLIED + Duration::from_secs(1));
    assert!(t.create(k, snat(k), &SYN).is_ok());
    assert_eq!(t.len(), 1);
}

#[test]
fn icmp_errors_find_the_flow_they_quote() {
    let clock = FakeClock::new();
    let mut t = table(&clock, 16);
    let a = key(PROTO_UDP, INSIDE_A, 4000, SERVER, 53);
    let udp = L4::Udp {
        sport: 4000,
        dport: 53,
    };
    let out = t.create(a, snat(a), &udp).unwrap();
    // The server's port unreachable quotes the packet as it left the router.
    assert_eq!(t.related(&out), Some(a));
    // An inside host's error about a reply as it was delivered quotes the original flow
    // reversed; the server knows that packet as the reply flow.
    assert_eq!(t.related(&a.reverse()), Some(out.reverse()));
    assert_eq!(t.related(&key(PROTO_UDP, INSIDE_B, 1, SERVER, 53)), None);
    clock.advance(UDP_UNREPLIED + Duration::from_secs(1));
    assert_eq!(t.related(&out), None, "expired");
}
