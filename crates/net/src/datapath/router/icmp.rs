//! The ICMP the router speaks: the errors it sends (destination unreachable, time
//! exceeded), and the translation of ICMP errors about NATed flows, whose quoted packet
//! (RFC 792: the IP header and at least 8 bytes of payload) must be rewritten like the
//! flow itself, as netfilter's nf_nat_icmp_reply_translation does: without it,
//! "fragmentation needed" (path MTU discovery) and "port unreachable" would never reach a
//! host behind SNAT. Echo replies from its addresses are the endpoint's
//! ([`NetEndpoint::ping`](crate::datapath::endpoint::NetEndpoint::ping)).

use crate::datapath::endpoint::Ctx;
use crate::datapath::frame::Frame;
use crate::datapath::packet::{self, FlowKey, Ipv4, Side, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use std::net::Ipv4Addr;

/// ICMP types and codes (RFC 792).
pub(super) const ICMP_UNREACHABLE: u8 = 3;
const UNREACHABLE_NET: u8 = 0;
pub(super) const ICMP_TIME_EXCEEDED: u8 = 11;
const ICMP_PARAMETER_PROBLEM: u8 = 12;

/// Whether the packet is an ICMP error (which quotes the packet it is about).
pub(super) fn is_error(ip: &Ipv4) -> bool {
    !ip.fragment
        && matches!(
            ip.l4_info,
            L4::Icmp {
                ty: ICMP_UNREACHABLE | ICMP_TIME_EXCEEDED | ICMP_PARAMETER_PROBLEM,
                ..
            }
        )
}

/// Where the parts of the packet an ICMP error quotes are.
pub(super) struct Quoted {
    /// Offset of its IP header.
    l3: usize,
    /// Offset of its L4 header.
    l4: usize,
    pub flow: FlowKey,
}

/// The packet quoted by the ICMP error `ip`, if it is IPv4 with enough of its TCP/UDP
/// header (the ports) or ICMP echo header (the identifier) to find its flow.
pub(super) fn quoted(packet: &[u8], ip: &Ipv4) -> Option<Quoted> {
    let body = packet.get(..ip.end)?;
    let l3 = ip.l4 + 8;
    let vihl = *body.get(l3)?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let l4 = l3 + ihl;
    let proto = *body.get(l3 + 9)?;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (packet::be16(body, l4)?, packet::be16(body, l4 + 2)?),
        PROTO_ICMP if matches!(body.get(l4), Some(0 | 8)) => {
            let id = packet::be16(body, l4 + 4)?;
            (id, id)
        }
        _ => return None,
    };
    Some(Quoted {
        l3,
        l4,
        flow: FlowKey {
            proto,
            src: packet::ip(body, l3 + 12)?,
            dst: packet::ip(body, l3 + 16)?,
            sport,
            dport,
        },
    })
}

/// Writes `new` at `at` and adjusts the checksums at `sums` (each if quoted, and not 0: a
/// UDP "no checksum").
fn put<const N: usize>(
    packet: &mut [u8],
    end: usize,
    at: usize,
    new: [u8; N],
    sums: &[Option<usize>],
) -> Option<()> {
    let old: [u8; N] = packet.get(at..at.checked_add(N)?)?.try_into().ok()?;
    if old == new {
        return Some(());
    }
    for &c in sums.iter().flatten() {
        if c + 2 > end || packet::be16(packet, c)? == 0 {
            continue;
        }
        packet::fix_field(packet, c, &old, &new, false)?;
    }
    packet.get_mut(at..at + N)?.copy_from_slice(&new);
    Some(())
}

/// Rewrites the ICMP error `ip` so that its quoted packet is `to` (the form its sender
/// knows), and the error goes to that sender: from `to.dst` if the quoted packet's
/// destination itself sent it, else from the router on the way that did.
pub(super) fn translate_error(
    packet: &mut [u8],
    ip: &mut Ipv4,
    q: &Quoted,
    to: &FlowKey,
) -> Option<()> {
    let end = ip.end;
    let ip_sum = q.l3 + 10;
    let l4_sum = match q.flow.proto {
        PROTO_TCP => Some(q.l4 + 16),
        PROTO_UDP => Some(q.l4 + 6),
        _ => None,
    };
    let pseudo = [Some(ip_sum), l4_sum];
    put(packet, end, q.l3 + 12, to.src.octets(), &pseudo)?;
    put(packet, end, q.l3 + 16, to.dst.octets(), &pseudo)?;
    if q.flow.proto == PROTO_ICMP {
        // The echo identifier is under the quoted ICMP checksum (no pseudo-header).
        let icmp_sum = [Some(q.l4 + 2)];
        put(packet, end, q.l4 + 4, to.sport.to_be_bytes(), &icmp_sum)?;
    } else {
        put(packet, end, q.l4, to.sport.to_be_bytes(), &[l4_sum])?;
        put(packet, end, q.l4 + 2, to.dport.to_be_bytes(), &[l4_sum])?;
    }
    // The outer ICMP checksum covers all of the quoted packet: summed again.
    packet
        .get_mut(ip.l4 + 2..ip.l4 + 4)?
        .copy_from_slice(&[0, 0]);
    let c = packet::finish(packet::sum(packet.get(ip.l4..end)?, 0));
    packet
        .get_mut(ip.l4 + 2..ip.l4 + 4)?
        .copy_from_slice(&c.to_be_bytes());
    if ip.src == q.flow.dst {
        packet::set_addr(packet, ip, Side::Src, to.dst)?;
    }
    packet::set_addr(packet, ip, Side::Dst, to.src)
}

/// Tells the sender why its packet went no further (RFC 792: the IP header and the first
/// 8 bytes of the payload), from the router's address in its network. Never about an ICMP
/// error or a later fragment (RFC 1812 4.3.2.7).
pub(super) fn icmp_error(
    ctx: &Ctx,
    packet: &[u8],
    frame: &Frame,
    ip: &Ipv4,
    from: Ipv4Addr,
    ty: u8,
) {
    let is_error = matches!(ip.l4_info, L4::Icmp { ty, .. } if ty != 8 && ty != 0);
    if is_error || matches!(ip.l4_info, L4::Other) && ip.fragment {
        return;
    }
    let quoted_end = ip.end.min(ip.l4 + 8);
    let Some(quoted) = packet.get(ip.l3..quoted_end) else {
        return;
    };
    let code = if ty == ICMP_UNREACHABLE {
        UNREACHABLE_NET
    } else {
        0
    };
    let mut icmp = Vec::with_capacity(8 + quoted.len());
    icmp.extend_from_slice(&[ty, code, 0, 0, 0, 0, 0, 0]);
    icmp.extend_from_slice(quoted);
    let c = packet::finish(packet::sum(&icmp, 0));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut err = packet::ipv4_frame((frame.src, ctx.net.mac), from, ip.src, PROTO_ICMP, &icmp);
    ctx.switch.emit(ctx.net, &mut err, ctx.depth);
}
