//! L4 load balancers, as OVN's logical-switch load balancer or IPVS in NAT mode: a virtual
//! IP:port (owned by the network's endpoint, which answers ARP and ping for it) whose new
//! connections are spread over a pool of backends in the network, round robin or to the
//! least busy, optionally keeping a client on one backend.
//!
//! A [`Stage`] (order 20) sees every IPv4 frame of the network. A packet to the VIP is
//! DNATed to its connection's backend (destination address, port and MAC); the backend
//! answers the client directly on the segment, so its replies are recognised by the
//! connection table and get the VIP back as their source (and the endpoint's MAC, which the
//! client knows the VIP by). Clients routed in from other networks arrive through the
//! router, which emits to the endpoint's MAC; their replies go to the router (the backend's
//! gateway) after translation.
//!
//! - [`conns`]: the connection table; [`health`]: TCP health checks; [`registry`]: the
//!   datapath's load balancers.

pub mod conns;
pub mod health;
mod pool;
pub mod registry;

use pool::{backend, State};
pub use pool::{FALL, RISE};

use super::endpoint::{Ctx, Stage, Verdict};
use super::frame::Frame;
use super::lock;
use super::packet::{self, Ipv4, Side, L4, TCP_ACK, TCP_RST, TCP_SYN};
use conns::Table;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    #[default]
    Tcp,
    Udp,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    LeastConn,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Affinity {
    #[default]
    None,
    ClientIp,
}

/// A load balancer as configured.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LbConfig {
    pub name: String,
    pub network: String,
    pub vip: SocketAddrV4,
    pub proto: Proto,
    pub backends: Vec<SocketAddrV4>,
    pub algorithm: Algorithm,
    pub affinity: Affinity,
    /// TCP health checks every this often; `None`: backends are always taken as up.
    pub health_interval: Option<Duration>,
}

/// One backend as shown by the API.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct BackendInfo {
    pub address: SocketAddrV4,
    /// Healthy (always, without health checks).
    pub up: bool,
    /// Open connections now.
    pub active: usize,
    /// Connections given to it since the load balancer started.
    pub connections: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct LbInfo {
    #[serde(flatten)]
    pub config: LbConfig,
    pub backend_state: Vec<BackendInfo>,
    /// Connections in the table (open or closing).
    pub tracked: usize,
    /// New connections refused: no healthy backend.
    pub no_backend: u64,
    /// New connections dropped: the connection table was full.
    pub table_full: u64,
    /// TCP packets to the VIP of no known connection and not a SYN: dropped.
    pub stray: u64,
}

pub struct LoadBalancer {
    config: Mutex<LbConfig>,
    vip: SocketAddrV4,
    proto: Proto,
    algorithm: Algorithm,
    affinity: Affinity,
    state: Mutex<State>,
    /// Entries in the connection table: replies are only looked for while there are some.
    tracked: AtomicUsize,
    no_backend: AtomicU64,
    table_full: AtomicU64,
    stray: AtomicU64,
    pub(super) probes: health::Probes,
}

impl LoadBalancer {
    /// `probe_src`: the address health checks are sent from (the gateway, or the VIP).
    pub fn new(cfg: LbConfig, probe_src: Ipv4Addr) -> LoadBalancer {
        LoadBalancer {
            vip: cfg.vip,
            proto: cfg.proto,
            algorithm: cfg.algorithm,
            affinity: cfg.affinity,
            state: Mutex::new(State {
                backends: cfg.backends.iter().copied().map(backend).collect(),
                conns: Table::new(cfg.proto == Proto::Tcp, conns::CAPACITY),
                affinity: HashMap::new(),
                next: 0,
            }),
            config: Mutex::new(cfg),
            tracked: AtomicUsize::new(0),
            no_backend: AtomicU64::new(0),
            table_full: AtomicU64::new(0),
            stray: AtomicU64::new(0),
            probes: health::Probes::new(probe_src),
        }
    }

    pub fn config(&self) -> LbConfig {
        lock(&self.config).clone()
    }

    /// Adds a backend to the pool (up until a health check says otherwise).
    pub fn add_backend(&self, addr: SocketAddrV4) -> bool {
        let mut st = lock(&self.state);
        if st.backends.iter().any(|b| b.addr == addr) {
            return false;
        }
        st.backends.push(backend(addr));
        lock(&self.config).backends.push(addr);
        true
    }

    /// Removes a backend from the pool: no new connections go to it; those it has keep
    /// working (their entries stay in the connection table until they end).
    pub fn remove_backend(&self, addr: SocketAddrV4) -> bool {
        let mut st = lock(&self.state);
        let before = st.backends.len();
        st.backends.retain(|b| b.addr != addr);
        st.affinity.retain(|_, (b, _)| *b != addr);
        lock(&self.config).backends.retain(|b| *b != addr);
        st.backends.len() != before
    }

    pub fn info(&self) -> LbInfo {
        let st = lock(&self.state);
        LbInfo {
            config: self.config(),
            backend_state: st
                .backends
                .iter()
                .map(|b| BackendInfo {
                    address: b.addr,
                    up: b.up,
                    active: st.conns.active(b.addr),
                    connections: b.connections,
                })
                .collect(),
            tracked: st.conns.len(),
            no_backend: self.no_backend.load(Relaxed),
            table_full: self.table_full.load(Relaxed),
            stray: self.stray.load(Relaxed),
        }
    }

    /// The current pool (what the health checker probes).
    pub(super) fn backends(&self) -> Vec<SocketAddrV4> {
        lock(&self.state).backends.iter().map(|b| b.addr).collect()
    }

    pub(super) fn checked(&self, name: &str, addr: SocketAddrV4, ok: bool) {
        if let Some(up) = lock(&self.state).checked(addr, ok) {
            let now = if up { "up" } else { "down" };
            tracing::warn!("load balancer {name}: backend {addr} is {now}");
        }
    }

    /// A packet to the VIP: DNAT to the connection's backend (a new one for a new
    /// connection), or refuse it.
    fn to_vip(
        &self,
        ctx: &Ctx,
        packet: &mut [u8],
        frame: &Frame,
        ip: &mut Ipv4,
        sport: u16,
        flags: Option<u8>,
    ) {
        let client = SocketAddrV4::new(ip.src, sport);
        let now = Instant::now();
        let mut st = lock(&self.state);
        let b = match st.conns.forward(client, flags, now) {
            Some(b) => b,
            // Only a SYN opens a TCP connection; anything else is a stray (of a connection
            // from before a restart, say) and is dropped.
            None if flags.is_some_and(|f| f & (TCP_SYN | TCP_ACK) != TCP_SYN) => {
                self.stray.fetch_add(1, Relaxed);
                return;
            }
            None => match st.pick(ip.src, self.algorithm, self.affinity, now) {
                None => {
                    drop(st);
                    self.no_backend.fetch_add(1, Relaxed);
                    if flags.is_some() {
                        self.refuse(ctx, packet, frame, ip, sport);
                    }
                    return;
                }
                Some(b) if st.conns.insert(client, b, now) => b,
                Some(_) => {
                    self.table_full.fetch_add(1, Relaxed);
                    return;
                }
            },
        };
        self.tracked.store(st.conns.len(), Relaxed);
        drop(st);
        if packet::set_addr(packet, ip, Side::Dst, *b.ip()).is_none()
            || packet::set_port(packet, ip, Side::Dst, b.port()).is_none()
        {
            return;
        }
        let ep = ctx.net;
        match ep.lookup(ctx.switch, *b.ip()) {
            Some(mac) => {
                packet::set_macs(packet, mac, ep.mac);
                ctx.switch.emit(ep, packet, ctx.depth);
            }
            None => ep.send_to(ctx.switch, *b.ip(), packet.to_vec(), ctx.depth),
        }
    }

    /// No healthy backend: a TCP client gets a RST (as from a closed port) at once.
    fn refuse(&self, ctx: &Ctx, packet: &[u8], frame: &Frame, ip: &Ipv4, sport: u16) {
        let Some(seq) = packet.get(ip.l4 + 4..ip.l4 + 8) else {
            return;
        };
        let seq = u32::from_be_bytes([seq[0], seq[1], seq[2], seq[3]]);
        let client = SocketAddrV4::new(ip.src, sport);
        let mut rst = health::tcp_frame(
            (frame.src, ctx.net.mac),
            self.vip,
            client,
            0,
            seq.wrapping_add(1),
            TCP_RST | TCP_ACK,
        );
        ctx.switch.emit(ctx.net, &mut rst, ctx.depth);
    }

    /// A reply of a backend to a client: the VIP becomes its source again.
    fn reply(
        &self,
        ctx: &Ctx,
        packet: &mut [u8],
        frame: &Frame,
        ip: &mut Ipv4,
        ports: (u16, u16),
        flags: Option<u8>,
    ) -> bool {
        let backend = SocketAddrV4::new(ip.src, ports.0);
        let client = SocketAddrV4::new(ip.dst, ports.1);
        let ours = lock(&self.state)
            .conns
            .reverse(backend, client, flags, Instant::now());
        if !ours {
            return false;
        }
        let _ = packet::set_addr(packet, ip, Side::Src, *self.vip.ip());
        let _ = packet::set_port(packet, ip, Side::Src, self.vip.port());
        // To an on-link client: from the MAC it knows the VIP by. To the router (the
        // endpoint's MAC): left for the router stage to route.
        if frame.dst != ctx.net.mac {
            packet::set_macs(packet, frame.dst, ctx.net.mac);
        }
        true
    }
}

impl Stage for LoadBalancer {
    fn order(&self) -> u8 {
        20
    }

    fn input(&self, ctx: &Ctx, packet: &mut [u8], frame: &Frame, ip: &mut Ipv4) -> Verdict {
        let (sport, dport, flags) = match (ip.l4_info, self.proto) {
            (
                L4::Tcp {
                    sport,
                    dport,
                    flags,
                },
                Proto::Tcp,
            ) => (sport, dport, Some(flags)),
            (L4::Udp { sport, dport }, Proto::Udp) => (sport, dport, None),
            _ => return Verdict::Continue,
        };
        if ip.fragment {
            return Verdict::Continue;
        }
        if ip.dst == *self.vip.ip() && dport == self.vip.port() {
            self.to_vip(ctx, packet, frame, ip, sport, flags);
            return Verdict::Consumed;
        }
        if let Some(f) = flags {
            let answer = self
                .probes
                .answer(ctx, frame.src, ip, (sport, dport), packet, f);
            if let Some((backend, ok)) = answer {
                self.checked(&lock(&self.config).name.clone(), backend, ok);
                return Verdict::Consumed;
            }
        }
        if self.tracked.load(Relaxed) > 0 {
            self.reply(ctx, packet, frame, ip, (sport, dport), flags);
        }
        Verdict::Continue
    }
}
