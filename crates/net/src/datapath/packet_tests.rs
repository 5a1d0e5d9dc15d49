use super::*;
use crate::datapath::frame;

const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

fn tcp_segment(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut s = vec![0u8; 20];
    s[0..2].copy_from_slice(&sport.to_be_bytes());
    s[2..4].copy_from_slice(&dport.to_be_bytes());
    s[12] = 5 << 4;
    s[13] = TCP_SYN;
    s.extend_from_slice(payload);
    s
}

fn tcp_packet(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut seg = tcp_segment(40000, 80, b"hello, world!");
    let c = l4_checksum(src, dst, PROTO_TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_frame((B, A), src, dst, PROTO_TCP, &seg)
}

fn view(p: &[u8]) -> Ipv4 {
    parse_ipv4(p, &frame::parse(p).unwrap()).unwrap()
}

/// Checks the IP header checksum and the L4 checksum of a complete packet.
fn checksums_ok(p: &[u8]) -> bool {
    let ip = view(p);
    let hdr_ok = finish(sum(&p[ip.l3..ip.l4], 0)) == 0;
    let seg = &p[ip.l4..ip.end];
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&ip.src.octets());
    pseudo[4..8].copy_from_slice(&ip.dst.octets());
    pseudo[9] = ip.proto;
    pseudo[10..12].copy_from_slice(&(seg.len() as u16).to_be_bytes());
    let l4_ok = finish(sum(seg, sum(&pseudo, 0))) == 0;
    hdr_ok && l4_ok
}

#[test]
fn parses_tcp_udp_icmp_and_arp() {
    let s = Ipv4Addr::new(10, 0, 0, 1);
    let d = Ipv4Addr::new(10, 0, 0, 2);
    let p = tcp_packet(s, d);
    let ip = view(&p);
    assert_eq!(
        (ip.src, ip.dst, ip.proto, ip.ttl, ip.fragment),
        (s, d, PROTO_TCP, 64, false)
    );
    assert_eq!(
        ip.l4_info,
        L4::Tcp {
            sport: 40000,
            dport: 80,
            flags: TCP_SYN
        }
    );
    assert_eq!(ip.flow().reverse().reverse(), ip.flow());
    assert!(checksums_ok(&p));

    let u = udp((B, A), (s, 68), (d, 67), b"x");
    assert_eq!(
        view(&u).l4_info,
        L4::Udp {
            sport: 68,
            dport: 67
        }
    );
    assert!(checksums_ok(&u));

    let a = arp(ARP_REQUEST, [0xff; 6], A, s, [0; 6], d);
    let parsed = parse_arp(&a, &frame::parse(&a).unwrap()).unwrap();
    assert_eq!(
        (parsed.op, parsed.sha, parsed.spa, parsed.tpa),
        (ARP_REQUEST, A, s, d)
    );
    assert!(parse_ipv4(&a, &frame::parse(&a).unwrap()).is_none());
}

#[test]
fn truncated_or_odd_headers_are_not_ipv4() {
    let p = tcp_packet(Ipv4Addr::new(1, 2, 3, 4), Ipv4Addr::new(5, 6, 7, 8));
    let f = frame::parse(&p).unwrap();
    // Cut anywhere inside the IP header or the declared length: never a panic, never a view
    // that reaches past the end.
    for n in 0..p.len() {
        if let Some(ip) = parse_ipv4(&p[..n], &f) {
            assert!(ip.end <= n);
        }
    }
    let mut bad = p.clone();
    bad[f.rest_offset() + 2] = 0x44; // IHL 4: shorter than a header
    assert!(parse_ipv4(&bad, &f).is_none());
    let mut v6 = p;
    v6[f.rest_offset() + 2] = 0x65;
    assert!(parse_ipv4(&v6, &f).is_none());
}

#[test]
fn rewrites_keep_checksums_right() {
    let s = Ipv4Addr::new(192, 168, 1, 10);
    let d = Ipv4Addr::new(10, 0, 0, 2);
    let mut p = tcp_packet(s, d);
    let mut ip = view(&p);
    set_addr(&mut p, &mut ip, Side::Src, Ipv4Addr::new(203, 0, 113, 7)).unwrap();
    set_port(&mut p, &mut ip, Side::Src, 1024).unwrap();
    set_addr(&mut p, &mut ip, Side::Dst, Ipv4Addr::new(10, 9, 8, 7)).unwrap();
    set_port(&mut p, &mut ip, Side::Dst, 8080).unwrap();
    decrement_ttl(&mut p, &mut ip).unwrap();
    assert!(checksums_ok(&p));
    assert_eq!(view(&p), ip, "the view follows the rewrites");
    assert_eq!(ip.flow().sport, 1024);

    let mut u = udp((B, A), (s, 5000), (d, 53), b"query");
    let mut ip = view(&u);
    set_addr(&mut u, &mut ip, Side::Dst, Ipv4Addr::new(8, 8, 4, 4)).unwrap();
    set_port(&mut u, &mut ip, Side::Src, 61000).unwrap();
    assert!(checksums_ok(&u));
}

#[test]
fn partial_checksums_follow_addresses_but_not_ports() {
    let s = Ipv4Addr::new(10, 0, 0, 1);
    let d = Ipv4Addr::new(10, 0, 1, 1);
    let mut p = tcp_packet(s, d);
    let ip = view(&p);
    // As a sender with checksum offload hands it over: the field holds the folded
    // pseudo-header sum, NEEDS_CSUM set.
    let partial = |p: &[u8], ip: &Ipv4| {
        let mut pseudo = [0u8; 12];
        pseudo[..4].copy_from_slice(&ip.src.octets());
        pseudo[4..8].copy_from_slice(&ip.dst.octets());
        pseudo[9] = ip.proto;
        pseudo[10..12].copy_from_slice(&((ip.end - ip.l4) as u16).to_be_bytes());
        let _ = p;
        !finish(sum(&pseudo, 0))
    };
    p[0] = 1;
    let field = ip.l4 + 16;
    let v = partial(&p, &ip);
    p[field..field + 2].copy_from_slice(&v.to_be_bytes());
    let mut ip2 = ip;
    set_addr(&mut p, &mut ip2, Side::Src, Ipv4Addr::new(172, 16, 0, 9)).unwrap();
    set_port(&mut p, &mut ip2, Side::Src, 2000).unwrap();
    let got = u16::from_be_bytes([p[field], p[field + 1]]);
    assert_eq!(got, partial(&p, &ip2));
    // Completing it as the receiver would gives a valid checksum.
    p[field..field + 2].copy_from_slice(&[0, 0]);
    let seg_sum = sum(&p[ip2.l4..ip2.end], u32::from(got));
    let c = finish(seg_sum);
    p[field..field + 2].copy_from_slice(&c.to_be_bytes());
    assert!(checksums_ok(&p));
}

#[test]
fn ttl_of_one_is_not_forwarded() {
    let mut p = tcp_packet(Ipv4Addr::new(1, 1, 1, 1), Ipv4Addr::new(2, 2, 2, 2));
    let mut ip = view(&p);
    let at = ip.l3 + 8;
    p[at] = 1;
    ip.ttl = 1;
    assert!(decrement_ttl(&mut p, &mut ip).is_none());
}
