//! The router's packet path: the stage on each attached network's endpoint. It takes the
//! IPv4 frames sent to the endpoint's MAC for an address that is not the endpoint's own in
//! that network, and routes them: NAT of tracked flows and DNAT before the route lookup,
//! TTL, SNAT after it, then out through the next network's endpoint to the next hop's MAC.
//! The packet is rewritten in place; it is copied only when it must wait for ARP.

use super::icmp::{self, icmp_error, ICMP_TIME_EXCEEDED, ICMP_UNREACHABLE};
use super::nat::Rewrite;
use super::{Router, Tables};
use crate::datapath::endpoint::{in_subnet, Ctx, Stage, Verdict};
use crate::datapath::frame::Frame;
use crate::datapath::packet::{self, FlowKey, Ipv4, Side, L4};
use std::net::Ipv4Addr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Stage order of the router (after DHCP 10 and the load balancer 20).
const ORDER: u8 = 30;

/// The router's interface in one network.
pub(super) struct RouterPort {
    pub router: Arc<Router>,
}

impl Stage for RouterPort {
    fn order(&self) -> u8 {
        ORDER
    }

    fn input(&self, ctx: &Ctx, packet: &mut [u8], frame: &Frame, ip: &mut Ipv4) -> Verdict {
        if frame.dst != ctx.net.mac {
            return Verdict::Continue;
        }
        let t = self.router.tables();
        let Some(in_if) = t.ifaces.iter().position(|i| i.ep.id == ctx.net.id) else {
            return Verdict::Continue;
        };
        self.router.route(ctx, &t, in_if, packet, frame, ip)
    }
}

impl Router {
    fn route(
        &self,
        ctx: &Ctx,
        t: &Tables,
        in_if: usize,
        packet: &mut [u8],
        frame: &Frame,
        ip: &mut Ipv4,
    ) -> Verdict {
        let nat_on = !t.snat.is_empty() || !t.dnat.is_empty();
        // Conntrack first (PREROUTING): an ICMP error about a NATed flow, or a packet of
        // one, either direction.
        let tracked = if !nat_on {
            None
        } else if let Some(q) = icmp::is_error(ip)
            .then(|| icmp::quoted(packet, ip))
            .flatten()
        {
            let to = self.nat().related(&q.flow);
            match to {
                Some(to) => {
                    if icmp::translate_error(packet, ip, &q, &to).is_none() {
                        self.counters.nat_drops.fetch_add(1, Relaxed);
                        return Verdict::Consumed;
                    }
                    Some(ip.flow())
                }
                None => None,
            }
        } else {
            self.nat().translate(&ip.flow(), &ip.l4_info)
        };
        let key = ip.flow();
        let dnat = match tracked {
            None => t.dnat.iter().find(|d| {
                d.addr == ip.dst && d.proto == ip.proto && dport(&ip.l4_info) == Some(d.port)
            }),
            Some(_) => None,
        };
        if tracked.is_none() && dnat.is_none() {
            if ctx.net.owns(ip.dst) {
                // The endpoint's own address here (ping, DHCP, a VIP): not to be routed.
                return Verdict::Continue;
            }
            if t.ifaces.iter().any(|i| i.addr == ip.dst) {
                // The router's address in another network is the router's too: answered
                // from there, back to the neighbour the request came from.
                ctx.net.ping(ctx, packet, frame, ip);
                return Verdict::Consumed;
            }
        }
        if !routable(t, ip) {
            return Verdict::Continue;
        }
        let dst = match (tracked, dnat) {
            (Some(to), _) => to.dst,
            (None, Some(d)) => d.to.0,
            (None, None) => ip.dst,
        };
        let Some(route) = t.table.lookup(dst).copied() else {
            self.counters.no_route.fetch_add(1, Relaxed);
            icmp_error(
                ctx,
                packet,
                frame,
                ip,
                t.ifaces[in_if].addr,
                ICMP_UNREACHABLE,
            );
            return Verdict::Consumed;
        };
        if ip.ttl <= 1 {
            self.counters.ttl.fetch_add(1, Relaxed);
            icmp_error(
                ctx,
                packet,
                frame,
                ip,
                t.ifaces[in_if].addr,
                ICMP_TIME_EXCEEDED,
            );
            return Verdict::Consumed;
        }
        // New flows (POSTROUTING for SNAT: the out network is known now).
        let to = match tracked {
            Some(to) => Some(to),
            None if nat_on => {
                let snat = t
                    .snat
                    .iter()
                    .find(|s| s.iface == route.iface && in_subnet(ip.src, s.source.0, s.source.1));
                if dnat.is_none() && snat.is_none() {
                    None
                } else if !translatable(ip) {
                    // No ports to track it by (a fragment, an ICMP error): it must not leak
                    // out untranslated.
                    self.counters.nat_drops.fetch_add(1, Relaxed);
                    return Verdict::Consumed;
                } else {
                    let mut to = key;
                    if let Some(d) = dnat {
                        (to.dst, to.dport) = d.to;
                    }
                    if let Some(s) = snat {
                        to.src = s.to;
                    }
                    let rw = Rewrite {
                        to,
                        alloc_port: snat.is_some(),
                    };
                    match self.nat().create(key, rw, &ip.l4_info) {
                        Ok(to) => Some(to),
                        Err(why) => {
                            tracing::debug!("NAT refused a flow ({why:?}): {key:?}");
                            self.counters.nat_drops.fetch_add(1, Relaxed);
                            return Verdict::Consumed;
                        }
                    }
                }
            }
            None => None,
        };
        if let Some(to) = to {
            if rewrite(packet, ip, &to).is_none() {
                self.counters.nat_drops.fetch_add(1, Relaxed);
                return Verdict::Consumed;
            }
        }
        if packet::decrement_ttl(packet, ip).is_none() {
            self.counters.ttl.fetch_add(1, Relaxed);
            return Verdict::Consumed;
        }
        let out = &t.ifaces[route.iface].ep;
        let hop = route.next_hop(ip.dst);
        self.counters.routed.fetch_add(1, Relaxed);
        match out.lookup(ctx.switch, hop) {
            Some(mac) => {
                packet::set_macs(packet, mac, out.mac);
                ctx.switch.emit(out, packet, ctx.depth);
            }
            // Resolving: the copy waits in the neighbour table (a few per address).
            None => out.send_to(ctx.switch, hop, packet.to_vec(), ctx.depth),
        }
        Verdict::Consumed
    }
}

fn dport(l4: &L4) -> Option<u16> {
    match *l4 {
        L4::Tcp { dport, .. } | L4::Udp { dport, .. } => Some(dport),
        _ => None,
    }
}

/// Whether a packet may be forwarded at all: unicast source and destination, not a
/// (directed) broadcast of an attached subnet (Linux does not forward those either).
fn routable(t: &Tables, ip: &Ipv4) -> bool {
    let bad = |a: Ipv4Addr| a.is_multicast() || a.is_broadcast() || a.is_unspecified();
    if bad(ip.dst) || bad(ip.src) || ip.dst.is_loopback() {
        return false;
    }
    !t.ifaces.iter().any(|i| i.broadcast == Some(ip.dst))
}

/// Whether NAT can track the packet: TCP, UDP or ICMP echo, not a fragment.
fn translatable(ip: &Ipv4) -> bool {
    !ip.fragment
        && matches!(
            ip.l4_info,
            L4::Tcp { .. } | L4::Udp { .. } | L4::Icmp { ty: 0 | 8, .. }
        )
}

/// Rewrites the packet's addresses and ports to those of `to`.
fn rewrite(packet: &mut [u8], ip: &mut Ipv4, to: &FlowKey) -> Option<()> {
    if ip.src != to.src {
        packet::set_addr(packet, ip, Side::Src, to.src)?;
    }
    if ip.dst != to.dst {
        packet::set_addr(packet, ip, Side::Dst, to.dst)?;
    }
    match ip.l4_info {
        L4::Tcp { sport, dport, .. } | L4::Udp { sport, dport } => {
            if sport != to.sport {
                packet::set_port(packet, ip, Side::Src, to.sport)?;
            }
            if dport != to.dport {
                packet::set_port(packet, ip, Side::Dst, to.dport)?;
            }
        }
        L4::Icmp { id, .. } if id != to.sport => {
            packet::set_port(packet, ip, Side::Src, to.sport)?;
        }
        _ => {}
    }
    Some(())
}
