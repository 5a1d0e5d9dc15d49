//! Each network's own endpoint: the MAC and IPv4 addresses the datapath itself answers for
//! in a network (its gateway address, load-balancer VIPs), its neighbour table, and the
//! stages that sit above the switch there (router, load balancer, DHCP server), as OVN's
//! logical router port and its DHCP and load-balancer actions do.
//!
//! The switch offers a network's endpoint every IPv4 and ARP frame entering it, but only
//! once the network has something above L2 ([`NetEndpoint::active`]); a plain L2 network
//! costs one atomic load per frame. The endpoint answers ARP for its addresses and ICMP
//! echo to them itself; it learns neighbours from ARP and resolves them for the stages
//! (queueing a few packets while the ARP request is out, as Linux's neighbour code does).
//! Frames a stage makes or forwards go back into a network through
//! [`super::switch::Switch::emit`].

use super::frame::Frame;
use super::lock;
use super::packet::{self, Arp, Ipv4, ARP_REPLY, ARP_REQUEST, L4, PROTO_ICMP};
use super::switch::{Segment, Switch};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

/// How long a learned neighbour is trusted (Linux's base_reachable_time is 30 s; entries
/// are also refreshed by every ARP seen).
const NEIGH_MAX_AGE: Duration = Duration::from_secs(120);
/// Neighbours one network remembers at most (a guest inventing addresses cannot grow it).
const NEIGH_CAPACITY: usize = 4096;
/// Packets waiting for one address to resolve, and in all.
const PENDING_PER_IP: usize = 8;
const PENDING_MAX: usize = 256;
/// An unanswered address is asked for again at most this often.
const ARP_RETRY: Duration = Duration::from_secs(1);
/// Pending packets for an address that never answers are dropped after this.
const PENDING_MAX_AGE: Duration = Duration::from_secs(3);

/// Where a frame comes from or goes to inside the datapath: a port, or a network's own
/// endpoint (the router, load balancer or DHCP server in it). The firewall judges hops
/// between these.
/// Ordered (ports first) so that connection-tracking keys, which hold hops, sort.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hop {
    Port { net: u32, port: u32 },
    Endpoint { net: u32 },
}

impl Hop {
    pub fn net(&self) -> u32 {
        match *self {
            Hop::Port { net, .. } | Hop::Endpoint { net } => net,
        }
    }
}

/// What a stage did with a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Not the stage's: the next stage, then the switch, get it (possibly rewritten).
    Continue,
    /// Taken (answered, forwarded elsewhere, or dropped and counted by the stage).
    Consumed,
}

/// What a stage is given with each frame.
pub struct Ctx<'a> {
    pub switch: &'a Switch,
    /// The network the frame entered.
    pub net: &'a NetEndpoint,
    /// Where it came from.
    pub from: Hop,
    /// How many times the frame went through an endpoint already (a router emitting into
    /// another network, whose load balancer then takes it): bounded, so that no
    /// configuration can make a frame loop.
    pub depth: u8,
}

/// A service above the switch in one network: the router's interface, a load balancer, the
/// DHCP server.
pub trait Stage: Send + Sync {
    /// Stages run in increasing order (DHCP 10, load balancer 20, router 30).
    fn order(&self) -> u8;
    /// Offered every IPv4 frame entering the network (its VLAN, untagged inside the
    /// switch), before the L2 decision; may rewrite `packet` in place.
    fn input(&self, ctx: &Ctx, packet: &mut [u8], frame: &Frame, ip: &mut Ipv4) -> Verdict;
}

/// A network's addressing, as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Addressing {
    /// Network address and prefix length.
    pub subnet: Option<(Ipv4Addr, u8)>,
    pub gateway: Option<Ipv4Addr>,
}

impl Addressing {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.subnet
            .is_some_and(|(net, len)| in_subnet(ip, net, len))
    }
}

pub fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = packet::mask(len);
    u32::from(ip) & mask == u32::from(net) & mask
}

struct Neighbour {
    mac: [u8; 6],
    seen: Instant,
}

struct Pending {
    asked: Instant,
    first: Instant,
    packets: Vec<Vec<u8>>,
}

#[derive(Default)]
struct Neighbours {
    known: HashMap<Ipv4Addr, Neighbour>,
    pending: HashMap<Ipv4Addr, Pending>,
    pending_total: usize,
}

pub struct NetEndpoint {
    pub id: u32,
    pub name: String,
    /// The network's VLAN: the endpoint lives in that segment only.
    pub vlan: Option<u16>,
    /// The endpoint's MAC, derived from the network's name so that it survives a restart
    /// of the service (guests keep the gateway's MAC in their ARP caches).
    pub mac: [u8; 6],
    pub addressing: Addressing,
    /// Addresses answered for (ARP, ICMP echo): the gateway, VIPs.
    owned: RwLock<Vec<Ipv4Addr>>,
    /// Replaced whole on change, so that a frame takes its list with one reference count
    /// and no lock is held while stages run (they emit, which may come back here).
    stages: RwLock<Arc<Vec<Arc<dyn Stage>>>>,
    neighbours: Mutex<Neighbours>,
    active: AtomicBool,
}

impl NetEndpoint {
    pub fn new(id: u32, name: &str, vlan: Option<u16>, addressing: Addressing) -> NetEndpoint {
        let ep = NetEndpoint {
            id,
            name: name.to_string(),
            vlan,
            mac: mac_for(name),
            addressing,
            owned: RwLock::new(addressing.gateway.into_iter().collect()),
            stages: RwLock::new(Arc::new(Vec::new())),
            neighbours: Mutex::new(Neighbours::default()),
            active: AtomicBool::new(false),
        };
        ep.update_active();
        ep
    }

    pub fn segment(&self) -> Segment {
        (self.id, self.vlan)
    }

    /// Whether the switch must offer this network's frames to the endpoint.
    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    fn update_active(&self) {
        let on = !read(&self.owned).is_empty() || !read(&self.stages).is_empty();
        self.active.store(on, Relaxed);
    }

    /// Starts answering ARP and ping for `ip` (a VIP).
    pub fn own(&self, ip: Ipv4Addr) {
        let mut o = write(&self.owned);
        if !o.contains(&ip) {
            o.push(ip);
        }
        drop(o);
        self.update_active();
    }

    /// Stops answering for `ip` (never for the gateway).
    pub fn disown(&self, ip: Ipv4Addr) {
        if Some(ip) != self.addressing.gateway {
            write(&self.owned).retain(|o| *o != ip);
            self.update_active();
        }
    }

    pub fn owns(&self, ip: Ipv4Addr) -> bool {
        read(&self.owned).contains(&ip)
    }

    pub fn add_stage(&self, stage: Arc<dyn Stage>) {
        let mut s = write(&self.stages);
        let mut next = Vec::clone(&s);
        next.push(stage);
        next.sort_by_key(|s| s.order());
        *s = Arc::new(next);
        drop(s);
        self.update_active();
    }

    /// Removes a stage (compared by identity).
    pub fn remove_stage(&self, stage: &Arc<dyn Stage>) {
        let mut s = write(&self.stages);
        let next = s
            .iter()
            .filter(|s| !Arc::ptr_eq(s, stage))
            .cloned()
            .collect();
        *s = Arc::new(next);
        drop(s);
        self.update_active();
    }

    /// The MAC of `ip` in this network if known; otherwise asks for it with an ARP request
    /// (at most once a second per address) and returns `None`.
    pub fn lookup(&self, switch: &Switch, ip: Ipv4Addr) -> Option<[u8; 6]> {
        // One of ours (a VIP a router forwards to): nobody would answer our own ARP; a
        // frame to our MAC is offered to our stages again by `Switch::emit`.
        if self.owns(ip) {
            return Some(self.mac);
        }
        let mut n = lock(&self.neighbours);
        if let Some(e) = n.known.get(&ip) {
            if e.seen.elapsed() < NEIGH_MAX_AGE {
                return Some(e.mac);
            }
        }
        let now = Instant::now();
        let ask = match n.pending.get_mut(&ip) {
            Some(p) if p.asked.elapsed() < ARP_RETRY => false,
            Some(p) => {
                p.asked = now;
                true
            }
            None => {
                n.pending.insert(
                    ip,
                    Pending {
                        asked: now,
                        first: now,
                        packets: Vec::new(),
                    },
                );
                true
            }
        };
        drop(n);
        if ask {
            self.ask(switch, ip);
        }
        None
    }

    /// Sends `packet` (an Ethernet frame with its virtio-net header, whose destination MAC
    /// is then set) to `ip` in this network: now if its MAC is known, once it answers ARP
    /// otherwise (a few packets wait; more are dropped, as by Linux).
    pub fn send_to(&self, switch: &Switch, ip: Ipv4Addr, mut packet: Vec<u8>, depth: u8) {
        if let Some(mac) = self.lookup(switch, ip) {
            packet::set_macs(&mut packet, mac, self.mac);
            return switch.emit(self, &mut packet, depth);
        }
        let mut n = lock(&self.neighbours);
        if n.pending_total >= PENDING_MAX {
            return;
        }
        if let Some(p) = n.pending.get_mut(&ip) {
            if p.packets.len() < PENDING_PER_IP {
                p.packets.push(packet);
                n.pending_total += 1;
            }
        }
    }

    /// Asks who has `ip`, from the gateway address, else any owned one.
    fn ask(&self, switch: &Switch, ip: Ipv4Addr) {
        let spa = self
            .addressing
            .gateway
            .or_else(|| read(&self.owned).first().copied());
        let Some(spa) = spa else {
            return;
        };
        let mut req = packet::arp(ARP_REQUEST, [0xff; 6], self.mac, spa, [0; 6], ip);
        switch.emit(self, &mut req, 0);
    }

    /// Records that `ip` is at `mac` and releases what waited for it.
    fn learn(&self, switch: &Switch, ip: Ipv4Addr, mac: [u8; 6], depth: u8) {
        if ip.is_unspecified() || mac[0] & 1 != 0 {
            return;
        }
        let mut n = lock(&self.neighbours);
        if n.known.len() >= NEIGH_CAPACITY && !n.known.contains_key(&ip) {
            n.known.retain(|_, e| e.seen.elapsed() < NEIGH_MAX_AGE);
            if n.known.len() >= NEIGH_CAPACITY {
                return;
            }
        }
        n.known.insert(
            ip,
            Neighbour {
                mac,
                seen: Instant::now(),
            },
        );
        let released = n.pending.remove(&ip);
        if let Some(p) = &released {
            n.pending_total -= p.packets.len();
        }
        // Give up on addresses that never answered.
        let before = n.pending.len();
        if before > 0 {
            let mut dropped = 0;
            n.pending.retain(|_, p| {
                let keep = p.first.elapsed() < PENDING_MAX_AGE;
                if !keep {
                    dropped += p.packets.len();
                }
                keep
            });
            n.pending_total -= dropped;
        }
        drop(n);
        for mut p in released.map(|p| p.packets).unwrap_or_default() {
            packet::set_macs(&mut p, mac, self.mac);
            switch.emit(self, &mut p, depth);
        }
    }

    /// The neighbours known now: (address, MAC, seconds since seen).
    pub fn neighbours(&self) -> Vec<(Ipv4Addr, [u8; 6], u64)> {
        let n = lock(&self.neighbours);
        let mut v: Vec<_> = n
            .known
            .iter()
            .filter(|(_, e)| e.seen.elapsed() < NEIGH_MAX_AGE)
            .map(|(ip, e)| (*ip, e.mac, e.seen.elapsed().as_secs()))
            .collect();
        v.sort();
        v
    }

    /// Offers a frame that entered the network (its segment) to the endpoint, with its
    /// IPv4 view (`None`: not IPv4; ARP is looked for then).
    pub fn input(&self, ctx: &Ctx, packet: &mut [u8], frame: &Frame, ip: Option<Ipv4>) -> Verdict {
        let Some(mut ip) = ip else {
            return match packet::parse_arp(packet, frame) {
                Some(arp) => self.arp(ctx, &arp),
                None => Verdict::Continue,
            };
        };
        let stages = Arc::clone(&read(&self.stages));
        for s in stages.iter() {
            if s.input(ctx, packet, frame, &mut ip) == Verdict::Consumed {
                return Verdict::Consumed;
            }
        }
        if frame.dst == self.mac && self.owns(ip.dst) {
            self.ping(ctx, packet, frame, &ip);
            return Verdict::Consumed;
        }
        Verdict::Continue
    }

    fn arp(&self, ctx: &Ctx, arp: &Arp) -> Verdict {
        // Every ARP packet tells who has which address (gratuitous ones included).
        self.learn(ctx.switch, arp.spa, arp.sha, ctx.depth);
        match arp.op {
            ARP_REQUEST if self.owns(arp.tpa) => {
                let mut reply =
                    packet::arp(ARP_REPLY, arp.sha, self.mac, arp.tpa, arp.sha, arp.spa);
                ctx.switch.emit(self, &mut reply, ctx.depth);
                Verdict::Consumed
            }
            ARP_REPLY if arp.tha == self.mac => Verdict::Consumed,
            _ => Verdict::Continue,
        }
    }

    /// Answers an ICMP echo request to `ip.dst` (one of the endpoint's addresses, or the
    /// address of the endpoint's router in another network), from there, back to the MAC
    /// it came from. `frame` is the request's (no stage rewrites an echo request and lets
    /// it go on).
    pub(crate) fn ping(&self, ctx: &Ctx, packet: &[u8], frame: &Frame, ip: &Ipv4) {
        let L4::Icmp { ty: 8, .. } = ip.l4_info else {
            return;
        };
        if ip.fragment {
            return;
        }
        let Some(req) = packet.get(ip.l4..ip.end) else {
            return;
        };
        let mut icmp = req.to_vec();
        icmp[0] = 0; // echo reply
        icmp[2..4].copy_from_slice(&[0, 0]);
        let c = packet::finish(packet::sum(&icmp, 0));
        icmp[2..4].copy_from_slice(&c.to_be_bytes());
        let mut reply =
            packet::ipv4_frame((frame.src, self.mac), ip.dst, ip.src, PROTO_ICMP, &icmp);
        ctx.switch.emit(self, &mut reply, ctx.depth);
    }
}

/// A locally administered unicast MAC, 02:76:69 ("vi") and 24 bits of FNV-1a of the name.
pub fn mac_for(name: &str) -> [u8; 6] {
    let mut h: u32 = 0x811c_9dc5;
    for b in name.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    let b = h.to_be_bytes();
    [0x02, 0x76, 0x69, b[1], b[2], b[3]]
}

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|e| e.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|e| e.into_inner())
}
