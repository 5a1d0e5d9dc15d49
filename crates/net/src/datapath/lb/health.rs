//! TCP health checks, as HAProxy's `check` on a TCP server: every interval the network's
//! endpoint sends each backend a SYN from its gateway address (or the VIP) and a probe
//! port; a SYN-ACK is a success (answered by a RST, so the backend's connection goes away
//! at once), a RST or silence until the next round a failure. [`super::FALL`] failures in
//! a row take a backend down, [`super::RISE`] successes bring it back.
//!
//! One thread per load balancer sends the probes; the answers arrive on the port threads,
//! where the load balancer's stage hands them to [`Probes::answer`]. The thread holds the
//! load balancer weakly and stops when told to or when the load balancer is gone.

use super::super::endpoint::{Ctx, NetEndpoint};
use super::super::packet::{self, Ipv4, PROTO_TCP, TCP_ACK, TCP_RST, TCP_SYN};
use super::super::switch::Switch;
use super::LoadBalancer;
use crate::datapath::lock;
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

/// Probes are sent from ports 61000-61999: above Linux's ephemeral range, and only a reply
/// to a probe actually outstanding is taken.
const PORT_BASE: u16 = 61000;
const PORTS: u16 = 1000;

/// (backend, probe port) → the probe's sequence number.
type Pending = HashMap<(SocketAddrV4, u16), u32>;

pub struct Probes {
    src: Ipv4Addr,
    pending: Mutex<(Pending, u16)>,
    outstanding: AtomicUsize,
}

impl Probes {
    pub fn new(src: Ipv4Addr) -> Probes {
        Probes {
            src,
            pending: Mutex::new((HashMap::new(), 0)),
            outstanding: AtomicUsize::new(0),
        }
    }

    /// Ends the previous round (its unanswered probes are returned: failures) and sends a
    /// SYN to each backend.
    fn round(
        &self,
        switch: &Switch,
        ep: &NetEndpoint,
        backends: &[SocketAddrV4],
    ) -> Vec<SocketAddrV4> {
        let mut p = lock(&self.pending);
        let failed: Vec<SocketAddrV4> = p.0.drain().map(|((b, _), _)| b).collect();
        let mut syns = Vec::new();
        for &b in backends {
            let port = PORT_BASE + p.1 % PORTS;
            p.1 = p.1.wrapping_add(1);
            let seq = isn(b, port);
            p.0.insert((b, port), seq);
            let src = SocketAddrV4::new(self.src, port);
            syns.push((b, tcp_frame(([0; 6], ep.mac), src, b, seq, 0, TCP_SYN)));
        }
        self.outstanding.store(p.0.len(), Relaxed);
        drop(p);
        for (b, syn) in syns {
            ep.send_to(switch, *b.ip(), syn, 0);
        }
        failed
    }

    /// A TCP packet that may answer a probe: `Some((backend, healthy))` if it does (the
    /// packet is then the checker's).
    pub(super) fn answer(
        &self,
        ctx: &Ctx,
        eth_src: [u8; 6],
        ip: &Ipv4,
        ports: (u16, u16),
        packet: &[u8],
        flags: u8,
    ) -> Option<(SocketAddrV4, bool)> {
        if self.outstanding.load(Relaxed) == 0 || ip.dst != self.src {
            return None;
        }
        let backend = SocketAddrV4::new(ip.src, ports.0);
        let at = ip.l4 + 8;
        let ack = packet.get(at..at + 4)?;
        let ack = u32::from_be_bytes([ack[0], ack[1], ack[2], ack[3]]);
        let mut p = lock(&self.pending);
        let seq = *p.0.get(&(backend, ports.1))?;
        let healthy = if flags & TCP_RST != 0 {
            false
        } else if flags & (TCP_SYN | TCP_ACK) == TCP_SYN | TCP_ACK && ack == seq.wrapping_add(1) {
            true
        } else {
            return None;
        };
        p.0.remove(&(backend, ports.1));
        self.outstanding.store(p.0.len(), Relaxed);
        drop(p);
        if healthy {
            // Reset the half-open connection (RFC 793: a RST's sequence is the ACK's).
            let src = SocketAddrV4::new(self.src, ports.1);
            let mut rst = tcp_frame((eth_src, ctx.net.mac), src, backend, ack, 0, TCP_RST);
            ctx.switch.emit(ctx.net, &mut rst, ctx.depth);
        }
        Some((backend, healthy))
    }
}

/// An initial sequence number that differs per backend, port and time.
fn isn(b: SocketAddrV4, port: u16) -> u32 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ u32::from(*b.ip()).rotate_left(7) ^ (u32::from(port) << 16) ^ u32::from(b.port())
}

/// A TCP segment without options or data in an Ethernet frame, checksums filled in.
pub fn tcp_frame(
    eth: ([u8; 6], [u8; 6]),
    src: SocketAddrV4,
    dst: SocketAddrV4,
    seq: u32,
    ack: u32,
    flags: u8,
) -> Vec<u8> {
    let mut seg = [0u8; 20];
    seg[0..2].copy_from_slice(&src.port().to_be_bytes());
    seg[2..4].copy_from_slice(&dst.port().to_be_bytes());
    seg[4..8].copy_from_slice(&seq.to_be_bytes());
    seg[8..12].copy_from_slice(&ack.to_be_bytes());
    seg[12] = 5 << 4;
    seg[13] = flags;
    let window: u16 = if flags & TCP_RST != 0 { 0 } else { 64240 };
    seg[14..16].copy_from_slice(&window.to_be_bytes());
    let c = packet::l4_checksum(*src.ip(), *dst.ip(), PROTO_TCP, &seg);
    seg[16..18].copy_from_slice(&c.to_be_bytes());
    packet::ipv4_frame(eth, *src.ip(), *dst.ip(), PROTO_TCP, &seg)
}

/// The checker thread of one load balancer; dropping the sender stops it.
pub(super) fn spawn(
    lb: Weak<LoadBalancer>,
    name: String,
    switch: Arc<Switch>,
    ep: Arc<NetEndpoint>,
    interval: Duration,
) -> std::io::Result<(Sender<()>, JoinHandle<()>)> {
    let (stop, stopped) = channel::<()>();
    let thread = std::thread::Builder::new()
        .name(format!("lb-{name}"))
        .spawn(move || loop {
            match stopped.recv_timeout(interval) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            let Some(lb) = lb.upgrade() else {
                return;
            };
            let backends = lb.backends();
            for failed in lb.probes.round(&switch, &ep, &backends) {
                lb.checked(&name, failed, false);
            }
        })?;
    Ok((stop, thread))
}
