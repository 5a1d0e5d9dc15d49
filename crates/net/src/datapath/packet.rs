//! The L3/L4 view of a frame (IPv4, ARP, TCP, UDP, ICMP) that the stages above the switch
//! need (firewall, router, NAT, load balancer, DHCP), the in-place rewrites they make, with
//! the checksums kept right, and the frames they build.
//!
//! Everything here reads hostile input: every access is bounds-checked and a packet that
//! does not parse is simply not IPv4 (or not ARP) to the stages, which then let the switch
//! treat it as any other frame.
//!
//! Checksums and offloads: a packet whose virtio-net header says NEEDS_CSUM carries, in its
//! L4 checksum field, the folded sum of the pseudo-header only (Linux's CHECKSUM_PARTIAL);
//! the receiving end completes it. Changing an address (part of the pseudo-header) updates
//! that partial sum too; changing a port (covered by the receiver's pass) must not.

use super::frame::Frame;
use std::borrow::Cow;
use std::net::Ipv4Addr;
use vireo_virtio::net::VNET_HDR_LEN;

pub const ETHERTYPE_IPV4: u16 = 0x0800;
pub const ETHERTYPE_ARP: u16 = 0x0806;
pub const PROTO_ICMP: u8 = 1;
pub const PROTO_TCP: u8 = 6;
pub const PROTO_UDP: u8 = 17;
/// `virtio_net_hdr.flags`: the L4 checksum is partial, to be completed by the receiver.
const F_NEEDS_CSUM: u8 = 1;
const IPV4_MIN_HDR: usize = 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_ACK: u8 = 0x10;

/// The transport part of an IPv4 packet, as far as the stages look into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    /// `id` is the echo identifier for echo request/reply, 0 otherwise.
    Icmp {
        ty: u8,
        code: u8,
        id: u16,
    },
    /// Another protocol, or a fragment after the first (no L4 header in it).
    Other,
}

/// Where the parts of an IPv4 packet are (offsets into the packet, virtio-net header
/// included) and what its header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4 {
    /// Offset of the IP header.
    pub l3: usize,
    /// Offset of the L4 header (after the IP options).
    pub l4: usize,
    /// Offset one past the IP packet (the total length says; Ethernet padding excluded).
    pub end: usize,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub proto: u8,
    pub ttl: u8,
    /// A fragment (more fragments follow, or not the first one).
    pub fragment: bool,
    pub l4_info: L4,
}

/// The 5-tuple of a flow; ICMP echo uses the identifier as both ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub sport: u16,
    pub dport: u16,
}

impl FlowKey {
    /// The key of the replies.
    pub fn reverse(&self) -> FlowKey {
        FlowKey {
            proto: self.proto,
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
        }
    }
}

impl Ipv4 {
    pub fn flow(&self) -> FlowKey {
        let (sport, dport) = match self.l4_info {
            L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => (sport, dport),
            L4::Icmp { id, .. } => (id, id),
            L4::Other => (0, 0),
        };
        FlowKey {
            proto: self.proto,
            src: self.src,
            dst: self.dst,
            sport,
            dport,
        }
    }
}

/// An ARP packet for IPv4 over Ethernet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    pub sha: [u8; 6],
    pub spa: Ipv4Addr,
    pub tha: [u8; 6],
    pub tpa: Ipv4Addr,
}

pub const ARP_REQUEST: u16 = 1;
pub const ARP_REPLY: u16 = 2;

/// The big-endian 16-bit word at `at`, if `b` holds it.
pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

/// The IPv4 address at `at`, if `b` holds it.
pub(crate) fn ip(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(s))
}

fn mac(b: &[u8], at: usize) -> Option<[u8; 6]> {
    b.get(at..at.checked_add(6)?)?.try_into().ok()
}

/// The netmask of a `/len` prefix (a length over 32 counts as 32).
pub(crate) fn mask(len: u8) -> u32 {
    match len {
        0 => 0,
        l => u32::MAX << (32 - u32::from(l.min(32))),
    }
}

/// The name of IP protocol `p` as the API and the flow log spell it: `tcp`, `udp`, `icmp`,
/// else its number.
pub(crate) fn proto_name(p: u8) -> Cow<'static, str> {
    match p {
        PROTO_ICMP => Cow::Borrowed("icmp"),
        PROTO_TCP => Cow::Borrowed("tcp"),
        PROTO_UDP => Cow::Borrowed("udp"),
        n => Cow::Owned(n.to_string()),
    }
}

/// The EtherType after the MACs and the tag, if any.
pub fn ethertype(packet: &[u8], frame: &Frame) -> Option<u16> {
    be16(packet, frame.rest_offset())
}

/// The IPv4 view of a packet; `None` if it is not (well-formed) IPv4.
pub fn parse_ipv4(packet: &[u8], frame: &Frame) -> Option<Ipv4> {
    if ethertype(packet, frame)? != ETHERTYPE_IPV4 {
        return None;
    }
    let l3 = frame.rest_offset() + 2;
    let vihl = *packet.get(l3)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < IPV4_MIN_HDR {
        return None;
    }
    let total = usize::from(be16(packet, l3 + 2)?);
    let end = l3.checked_add(total)?;
    // A TSO packet's total length may be 0 or stale: the virtio-net header rules then.
    let end = if end > packet.len() || total < ihl {
        if is_gso(packet) {
            packet.len()
        } else {
            return None;
        }
    } else {
        end
    };
    let l4 = l3 + ihl;
    if l4 > end {
        return None;
    }
    let frag = be16(packet, l3 + 6)?;
    let more = frag & 0x2000 != 0;
    let offset = frag & 0x1fff;
    let proto = *packet.get(l3 + 9)?;
    let l4_info = if offset != 0 {
        L4::Other
    } else {
        let b = packet.get(l4..end)?;
        match proto {
            PROTO_TCP if b.len() >= 20 => L4::Tcp {
                sport: be16(b, 0)?,
                dport: be16(b, 2)?,
                flags: *b.get(13)?,
            },
            PROTO_UDP if b.len() >= 8 => L4::Udp {
                sport: be16(b, 0)?,
                dport: be16(b, 2)?,
            },
            PROTO_ICMP if b.len() >= 8 => {
                let ty = b[0];
                let echo = matches!(ty, 0 | 8);
                L4::Icmp {
                    ty,
                    code: b[1],
                    id: if echo { be16(b, 4)? } else { 0 },
                }
            }
            // A first fragment too short to hold its L4 header, or another protocol.
            _ => L4::Other,
        }
    };
    Some(Ipv4 {
        l3,
        l4,
        end,
        src: ip(packet, l3 + 12)?,
        dst: ip(packet, l3 + 16)?,
        proto,
        ttl: *packet.get(l3 + 8)?,
        fragment: more || offset != 0,
        l4_info,
    })
}

/// The ARP view of a packet; `None` if it is not ARP for IPv4 over Ethernet.
pub fn parse_arp(packet: &[u8], frame: &Frame) -> Option<Arp> {
    if ethertype(packet, frame)? != ETHERTYPE_ARP {
        return None;
    }
    let a = frame.rest_offset() + 2;
    // Hardware Ethernet (1), protocol IPv4, lengths 6 and 4.
    if be16(packet, a)? != 1 || be16(packet, a + 2)? != ETHERTYPE_IPV4 {
        return None;
    }
    if packet.get(a + 4..a + 6)? != [6, 4] {
        return None;
    }
    Some(Arp {
        op: be16(packet, a + 6)?,
        sha: mac(packet, a + 8)?,
        spa: ip(packet, a + 14)?,
        tha: mac(packet, a + 18)?,
        tpa: ip(packet, a + 24)?,
    })
}

fn is_gso(packet: &[u8]) -> bool {
    packet.get(1).is_some_and(|&t| t != 0)
}

fn csum_partial(packet: &[u8]) -> bool {
    packet.first().is_some_and(|&f| f & F_NEEDS_CSUM != 0)
}

/// The Internet checksum (RFC 1071) of `data`, not complemented, added to `sum`.
pub fn sum(data: &[u8], mut sum: u32) -> u32 {
    let mut chunks = data.chunks_exact(2);
    for c in &mut chunks {
        sum = sum.wrapping_add(u32::from(u16::from_be_bytes([c[0], c[1]])));
        // Fold as we go so that the u32 never overflows, whatever the length.
        sum = (sum & 0xffff) + (sum >> 16);
    }
    if let [last] = chunks.remainder() {
        sum = sum.wrapping_add(u32::from(*last) << 8);
    }
    sum
}

/// Folds a sum to 16 bits and complements it: the value a checksum field holds.
pub fn finish(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// RFC 1624 eqn. 3: the checksum `check` after the 16-bit words `old` of the data become
/// `new`.
fn update(check: u16, old: &[u8], new: &[u8]) -> u16 {
    let mut s = u32::from(!check);
    for (o, n) in old.chunks(2).zip(new.chunks(2)) {
        let o = u16::from_be_bytes([o[0], *o.get(1).unwrap_or(&0)]);
        let n = u16::from_be_bytes([n[0], *n.get(1).unwrap_or(&0)]);
        s += u32::from(!o) + u32::from(n);
    }
    finish(s)
}

/// Rewrites the 16-bit checksum field at `at` after `old` became `new` in what it covers.
/// `partial`: the field holds a partial (uncomplemented) pseudo-header sum.
pub(crate) fn fix_field(
    packet: &mut [u8],
    at: usize,
    old: &[u8],
    new: &[u8],
    partial: bool,
) -> Option<()> {
    let f = packet.get_mut(at..at + 2)?;
    let cur = u16::from_be_bytes([f[0], f[1]]);
    let next = if partial {
        !update(!cur, old, new)
    } else {
        update(cur, old, new)
    };
    f.copy_from_slice(&next.to_be_bytes());
    Some(())
}

/// Where the L4 checksum of `ip` is, if it has one that covers the pseudo-header.
fn l4_csum_at(packet: &[u8], ip: &Ipv4) -> Option<usize> {
    if ip.fragment && !matches!(ip.l4_info, L4::Tcp { .. } | L4::Udp { .. }) {
        return None;
    }
    match ip.l4_info {
        L4::Tcp { .. } => Some(ip.l4 + 16),
        // A UDP checksum of 0 means "none" and stays so.
        L4::Udp { .. } => {
            let at = ip.l4 + 6;
            (be16(packet, at)? != 0 || csum_partial(packet)).then_some(at)
        }
        _ => None,
    }
}

/// Which address of the IP header to rewrite.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Src,
    Dst,
}

/// Rewrites the source or destination address, fixing the IP header checksum and the L4
/// checksum (whose pseudo-header covers it). Updates `ip` to match.
pub fn set_addr(packet: &mut [u8], ip: &mut Ipv4, side: Side, to: Ipv4Addr) -> Option<()> {
    let at = ip.l3 + if side == Side::Src { 12 } else { 16 };
    let old: [u8; 4] = packet.get(at..at + 4)?.try_into().ok()?;
    let new = to.octets();
    if let Some(c) = l4_csum_at(packet, ip) {
        let partial = csum_partial(packet);
        fix_field(packet, c, &old, &new, partial)?;
    }
    fix_field(packet, ip.l3 + 10, &old, &new, false)?;
    packet.get_mut(at..at + 4)?.copy_from_slice(&new);
    match side {
        Side::Src => ip.src = to,
        Side::Dst => ip.dst = to,
    }
    Some(())
}

/// Rewrites the TCP/UDP source or destination port (the ICMP echo identifier for ICMP),
/// fixing the L4 checksum. Updates `ip` to match.
pub fn set_port(packet: &mut [u8], ip: &mut Ipv4, side: Side, to: u16) -> Option<()> {
    let (at, csum) = match ip.l4_info {
        L4::Tcp { .. } | L4::Udp { .. } => {
            let at = ip.l4 + if side == Side::Src { 0 } else { 2 };
            (at, l4_csum_at(packet, ip))
        }
        // The identifier is covered by the ICMP checksum (no pseudo-header, never partial).
        L4::Icmp { ty: 0 | 8, .. } => (ip.l4 + 4, Some(ip.l4 + 2)),
        _ => return None,
    };
    let old: [u8; 2] = packet.get(at..at + 2)?.try_into().ok()?;
    let new = to.to_be_bytes();
    let icmp = matches!(ip.l4_info, L4::Icmp { .. });
    // A partial TCP/UDP sum covers the pseudo-header only: the receiver sums the ports.
    if let Some(c) = csum.filter(|_| icmp || !csum_partial(packet)) {
        fix_field(packet, c, &old, &new, false)?;
    }
    packet.get_mut(at..at + 2)?.copy_from_slice(&new);
    match &mut ip.l4_info {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => match side {
            Side::Src => *sport = to,
            Side::Dst => *dport = to,
        },
        L4::Icmp { id, .. } => *id = to,
        L4::Other => {}
    }
    Some(())
}

/// Decrements the TTL (fixing the header checksum); `None` if it was 1 or 0: the packet
/// must not be forwarded.
pub fn decrement_ttl(packet: &mut [u8], ip: &mut Ipv4) -> Option<()> {
    if ip.ttl <= 1 {
        return None;
    }
    let at = ip.l3 + 8;
    let old = [ip.ttl, *packet.get(at + 1)?];
    let new = [ip.ttl - 1, old[1]];
    fix_field(packet, ip.l3 + 10, &old, &new, false)?;
    *packet.get_mut(at)? = ip.ttl - 1;
    ip.ttl -= 1;
    Some(())
}

/// Sets the frame's destination and source MACs.
pub fn set_macs(packet: &mut [u8], dst: [u8; 6], src: [u8; 6]) -> Option<()> {
    packet
        .get_mut(VNET_HDR_LEN..VNET_HDR_LEN + 6)?
        .copy_from_slice(&dst);
    packet
        .get_mut(VNET_HDR_LEN + 6..VNET_HDR_LEN + 12)?
        .copy_from_slice(&src);
    Some(())
}

/// A new untagged frame, with a zeroed virtio-net header (no offloads): what the switch
/// sends out of ports and what stages emit.
pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(VNET_HDR_LEN + 14 + payload.len().max(46));
    p.resize(VNET_HDR_LEN, 0);
    p.extend_from_slice(&dst);
    p.extend_from_slice(&src);
    p.extend_from_slice(&ethertype.to_be_bytes());
    p.extend_from_slice(payload);
    // Pad to the 60-byte minimum (without FCS), as a NIC would.
    if p.len() < VNET_HDR_LEN + 60 {
        p.resize(VNET_HDR_LEN + 60, 0);
    }
    p
}

/// An ARP packet (request or reply) in an Ethernet frame.
pub fn arp(
    op: u16,
    eth_dst: [u8; 6],
    sha: [u8; 6],
    spa: Ipv4Addr,
    tha: [u8; 6],
    tpa: Ipv4Addr,
) -> Vec<u8> {
    let mut a = Vec::with_capacity(28);
    a.extend_from_slice(&1u16.to_be_bytes());
    a.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    a.extend_from_slice(&[6, 4]);
    a.extend_from_slice(&op.to_be_bytes());
    a.extend_from_slice(&sha);
    a.extend_from_slice(&spa.octets());
    a.extend_from_slice(&tha);
    a.extend_from_slice(&tpa.octets());
    ethernet(eth_dst, sha, ETHERTYPE_ARP, &a)
}

/// An IPv4 header (no options, DF clear, TTL 64) for `payload_len` bytes of `proto`.
pub fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> [u8; 20] {
    let mut h = [0u8; 20];
    h[0] = 0x45;
    let total = u16::try_from(20 + payload_len).unwrap_or(u16::MAX);
    h[2..4].copy_from_slice(&total.to_be_bytes());
    h[8] = 64;
    h[9] = proto;
    h[12..16].copy_from_slice(&src.octets());
    h[16..20].copy_from_slice(&dst.octets());
    let c = finish(sum(&h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// The TCP/UDP checksum of `segment` (its checksum field zeroed) between `src` and `dst`.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = [0u8; 12];
    pseudo[..4].copy_from_slice(&src.octets());
    pseudo[4..8].copy_from_slice(&dst.octets());
    pseudo[9] = proto;
    let len = u16::try_from(segment.len()).unwrap_or(u16::MAX);
    pseudo[10..12].copy_from_slice(&len.to_be_bytes());
    let c = finish(sum(segment, sum(&pseudo, 0)));
    // For UDP, 0 means "no checksum": a computed 0 is sent as all ones.
    if c == 0 && proto == PROTO_UDP {
        0xffff
    } else {
        c
    }
}

/// A UDP datagram in an IPv4 packet in an Ethernet frame, checksums filled in.
pub fn udp(
    eth: ([u8; 6], [u8; 6]),
    src: (Ipv4Addr, u16),
    dst: (Ipv4Addr, u16),
    payload: &[u8],
) -> Vec<u8> {
    let mut seg = Vec::with_capacity(8 + payload.len());
    seg.extend_from_slice(&src.1.to_be_bytes());
    seg.extend_from_slice(&dst.1.to_be_bytes());
    let len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(payload);
    let c = l4_checksum(src.0, dst.0, PROTO_UDP, &seg);
    seg[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4_frame(eth, src.0, dst.0, PROTO_UDP, &seg)
}

/// An IPv4 packet of `proto` carrying `l4` (its checksum already set) in an Ethernet frame.
pub fn ipv4_frame(
    eth: ([u8; 6], [u8; 6]),
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    l4: &[u8],
) -> Vec<u8> {
    let mut body = Vec::with_capacity(20 + l4.len());
    body.extend_from_slice(&ipv4_header(src, dst, proto, l4.len()));
    body.extend_from_slice(l4);
    ethernet(eth.0, eth.1, ETHERTYPE_IPV4, &body)
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
