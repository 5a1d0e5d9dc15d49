//! The router's NAT session table: connection tracking for the flows a NAT rule rewrote,
//! as netfilter's conntrack does for its NAT. A session is found from packets of either
//! direction: the original direction by the flow as the first packet came in, the reply
//! direction by the flow the replies carry (the translated flow, reversed). Each then gets
//! the rewrite that makes it what the other side expects.
//!
//! SNAT allocates the source port (the echo identifier for ICMP echo) from a range, so that
//! two inside hosts using the same source port toward one server get distinct reply flows.
//! Sessions expire (TCP long while open, briefly after FIN or RST; UDP and ICMP soon), and
//! the table is bounded: a flood of new flows is refused, counted, never grows memory.

use crate::datapath::packet::{FlowKey, L4, PROTO_ICMP, PROTO_TCP, TCP_FIN, TCP_RST};
use std::collections::HashMap;
use std::time::Duration;
use vireo_virtio::rate_limiter::Clock;

/// SNAT source ports (Linux's default ip_local_port_range).
pub const PORT_MIN: u16 = 32768;
pub const PORT_MAX: u16 = 60999;
/// Ports tried for one new flow before giving up (netfilter tries a bounded number too):
/// the cost of a new flow stays bounded when one peer's range is crowded.
const MAX_PROBES: u32 = 1024;
/// Sessions one router tracks at most.
pub const CAPACITY: usize = 65536;

/// Timeouts, after netfilter's defaults, shortened where the service has no reason to keep
/// state for days.
const TCP_UNREPLIED: Duration = Duration::from_secs(120);
const TCP_OPEN: Duration = Duration::from_secs(3600);
/// After a FIN: the other side may still send (half-close) and retransmit its FIN.
const TCP_FIN_WAIT: Duration = Duration::from_secs(120);
const TCP_RESET: Duration = Duration::from_secs(10);
const UDP_UNREPLIED: Duration = Duration::from_secs(30);
const UDP_REPLIED: Duration = Duration::from_secs(120);
const ICMP_TIMEOUT: Duration = Duration::from_secs(30);
const SWEEP_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    Original,
    Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tcp {
    Open,
    FinSeen,
    Reset,
}

struct Session {
    /// The flow of the first packet, before any rewrite.
    orig: FlowKey,
    /// The flow its replies carry (the rewritten flow, reversed).
    reply: FlowKey,
    expires: Duration,
    replied: bool,
    tcp: Tcp,
}

impl Session {
    fn timeout(&self) -> Duration {
        match (self.orig.proto, self.tcp, self.replied) {
            (PROTO_ICMP, _, _) => ICMP_TIMEOUT,
            (PROTO_TCP, Tcp::Reset, _) => TCP_RESET,
            (PROTO_TCP, Tcp::FinSeen, _) => TCP_FIN_WAIT,
            (PROTO_TCP, _, true) => TCP_OPEN,
            (PROTO_TCP, _, false) => TCP_UNREPLIED,
            (_, _, true) => UDP_REPLIED,
            (_, _, false) => UDP_UNREPLIED,
        }
    }
}

/// Why a new flow got no session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The table is full of live sessions.
    Full,
    /// Every port tried for the SNAT address was in use toward that peer.
    NoPort,
}

/// What to rewrite a new flow to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rewrite {
    /// The flow after DNAT (destination) and SNAT (source address).
    pub to: FlowKey,
    /// Allocate the source port (SNAT), or keep `to.sport`.
    pub alloc_port: bool,
}

pub struct NatTable {
    by_key: HashMap<FlowKey, (u64, Dir)>,
    sessions: HashMap<u64, Session>,
    next_id: u64,
    cursor: u32,
    last_sweep: Duration,
    capacity: usize,
    clock: Box<dyn Clock>,
    /// Sessions made since the start.
    pub created: u64,
}

/// Whether an ICMP packet may belong to a session of this direction: echo requests go the
/// original way, echo replies the reply way (so that a peer pinging the router's address
/// with an identifier SNAT gave away is not mistaken for a reply).
fn icmp_fits(l4: &L4, dir: Dir) -> bool {
    match l4 {
        L4::Icmp { ty: 8, .. } => dir == Dir::Original,
        L4::Icmp { ty: 0, .. } => dir == Dir::Reply,
        L4::Icmp { .. } => false,
        _ => true,
    }
}

impl NatTable {
    pub fn new(clock: Box<dyn Clock>, capacity: usize) -> NatTable {
        NatTable {
            by_key: HashMap::new(),
            sessions: HashMap::new(),
            next_id: 1,
            cursor: 0,
            last_sweep: Duration::ZERO,
            capacity,
            clock,
            created: 0,
        }
    }

    /// Live sessions (expired ones not yet swept may be counted until the next sweep).
    pub fn len(&self) -> usize {
        self.sessions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.sessions.is_empty()
    }

    /// The flow a packet of a tracked flow must become, or `None` if it belongs to no
    /// live session. Refreshes the session's timer and follows TCP's FIN and RST.
    pub fn translate(&mut self, key: &FlowKey, l4: &L4) -> Option<FlowKey> {
        let now = self.clock.now();
        let &(id, dir) = self.by_key.get(key)?;
        if !icmp_fits(l4, dir) {
            return None;
        }
        let s = self.sessions.get_mut(&id)?;
        if s.expires <= now {
            self.remove(id);
            return None;
        }
        if dir == Dir::Reply {
            s.replied = true;
        }
        if let L4::Tcp { flags, .. } = *l4 {
            if flags & TCP_RST != 0 {
                s.tcp = Tcp::Reset;
            } else if flags & TCP_FIN != 0 && s.tcp == Tcp::Open {
                s.tcp = Tcp::FinSeen;
            }
        }
        s.expires = now + s.timeout();
        Some(match dir {
            Dir::Original => s.reply.reverse(),
            Dir::Reply => s.orig.reverse(),
        })
    }

    /// For an ICMP error quoting a packet of flow `inner`: the flow that packet had on the
    /// side the error goes back to, if the packet belongs to a live session (netfilter's
    /// RELATED). The session's timer is left alone: errors do not keep a flow alive.
    pub fn related(&self, inner: &FlowKey) -> Option<FlowKey> {
        let &(id, dir) = self.by_key.get(&inner.reverse())?;
        let s = self.sessions.get(&id)?;
        if s.expires <= self.clock.now() {
            return None;
        }
        Some(match dir {
            // The quoted packet went out translated (the reply flow, reversed): its sender
            // knows it as the original flow.
            Dir::Reply => s.orig,
            // It was a reply as delivered (the original flow, reversed): its sender sent it
            // as the reply flow.
            Dir::Original => s.reply,
        })
    }

    /// Starts a session for the new flow `orig` rewritten as `rw` says; returns the flow
    /// the packet must become.
    pub fn create(&mut self, orig: FlowKey, rw: Rewrite, l4: &L4) -> Result<FlowKey, Refused> {
        let now = self.clock.now();
        if self.sessions.len() >= self.capacity
            || now.saturating_sub(self.last_sweep) >= SWEEP_EVERY
        {
            self.sweep(now);
        }
        if self.sessions.len() >= self.capacity {
            return Err(Refused::Full);
        }
        let mut to = rw.to;
        if rw.alloc_port {
            to = self.alloc(to).ok_or(Refused::NoPort)?;
        }
        let reply = to.reverse();
        if self.by_key.contains_key(&reply) || self.by_key.contains_key(&orig) {
            // An older session owns one of the flows (a peer reusing a port while it is
            // still tracked): refusing beats sending its replies to the wrong host.
            return Err(Refused::NoPort);
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut s = Session {
            orig,
            reply,
            expires: now,
            replied: false,
            tcp: Tcp::Open,
        };
        if let L4::Tcp { flags, .. } = *l4 {
            if flags & TCP_RST != 0 {
                s.tcp = Tcp::Reset;
            }
        }
        s.expires = now + s.timeout();
        self.sessions.insert(id, s);
        self.by_key.insert(orig, (id, Dir::Original));
        self.by_key.insert(reply, (id, Dir::Reply));
        self.created += 1;
        Ok(to)
    }

    /// A source port (echo identifier) for `to.src` whose reply flow is free.
    fn alloc(&mut self, mut to: FlowKey) -> Option<FlowKey> {
        let span = u32::from(PORT_MAX - PORT_MIN) + 1;
        for i in 0..MAX_PROBES.min(span) {
            let off = (self.cursor + i) % span;
            let port = PORT_MIN + off as u16;
            to.sport = port;
            if to.proto == PROTO_ICMP {
                to.dport = port;
            }
            if !self.by_key.contains_key(&to.reverse()) {
                self.cursor = off + 1;
                return Some(to);
            }
        }
        None
    }

    fn remove(&mut self, id: u64) {
        if let Some(s) = self.sessions.remove(&id) {
            self.by_key.remove(&s.orig);
            self.by_key.remove(&s.reply);
        }
    }

    fn sweep(&mut self, now: Duration) {
        let dead: Vec<u64> = self
            .sessions
            .iter()
            .filter(|(_, s)| s.expires <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in dead {
            self.remove(id);
        }
        self.last_sweep = now;
    }

    /// The live sessions: (original flow, reply flow, seconds left), for display.
    pub fn sessions(&mut self) -> Vec<(FlowKey, FlowKey, u64)> {
        let now = self.clock.now();
        self.sweep(now);
        let mut v: Vec<_> = self
            .sessions
            .values()
            .map(|s| (s.orig, s.reply, s.expires.saturating_sub(now).as_secs()))
            .collect();
        v.sort();
        v
    }
}

#[cfg(test)]
#[path = "nat_tests.rs"]
mod tests;
