//! Connection tracking, after Linux netfilter's: a connection is known by its 5-tuple and
//! the hop it crossed (so that the same packet judged on two hops, into a router and out
//! of it, is tracked on each), in both directions. Its packets pass without the rules
//! being looked at again; its replies pass even where new connections would be denied.
//!
//! TCP follows the handshake and teardown (SYN_SENT, SYN_RECV, ESTABLISHED, FIN_WAIT,
//! LAST_ACK, TIME_WAIT, CLOSE) without window tracking; a connection seen mid-stream (the
//! service restarted, the network got its first rule) is picked up as established, as
//! netfilter does with `nf_conntrack_tcp_loose=1`. UDP and other protocols are tracked by
//! address and port, ICMP echo by identifier; ICMP errors about a tracked connection pass
//! as related.
//!
//! The table is split into shards, each with its own lock, so that port threads do not
//! serialize on it, and bounded: when a shard is full its expired entries go; if none has,
//! the new connection is refused (and counted).

use super::super::endpoint::Hop;
use super::super::packet::{FlowKey, Ipv4, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use super::super::packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Connections tracked at most (all networks).
pub const MAX_ENTRIES: usize = 256 * 1024;
const SHARDS: usize = 64;
/// How often a shard drops its expired entries (also when it is full).
const SWEEP_EVERY: Duration = Duration::from_secs(10);

const SECS: fn(u64) -> Duration = Duration::from_secs;

/// A direction of a tracked connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    /// As its first packet went.
    Orig,
    Reply,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcpState {
    SynSent,
    SynRecv,
    Established,
    FinWait,
    LastAck,
    TimeWait,
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// `fin`: bit 0 the original direction sent a FIN, bit 1 the reply direction did.
    Tcp { st: TcpState, fin: u8 },
    /// UDP, ICMP echo, other protocols: `replied` once a packet went the other way.
    Datagram { replied: bool },
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Tcp { st, .. } => match st {
                TcpState::SynSent => "SYN_SENT",
                TcpState::SynRecv => "SYN_RECV",
                TcpState::Established => "ESTABLISHED",
                TcpState::FinWait => "FIN_WAIT",
                TcpState::LastAck => "LAST_ACK",
                TcpState::TimeWait => "TIME_WAIT",
                TcpState::Close => "CLOSE",
            },
            State::Datagram { replied: false } => "UNREPLIED",
            State::Datagram { replied: true } => "REPLIED",
        }
    }

    /// How long the connection lives without another packet (netfilter's timeouts, with
    /// established TCP cut from 5 days to 1 hour and UDP's stream timeout at 3 minutes).
    fn timeout(&self, proto: u8) -> Duration {
        match *self {
            State::Tcp { st, .. } => match st {
                TcpState::SynSent | TcpState::FinWait | TcpState::LastAck => SECS(120),
                TcpState::TimeWait => SECS(120),
                TcpState::SynRecv => SECS(60),
                TcpState::Established => SECS(3600),
                TcpState::Close => SECS(10),
            },
            State::Datagram { .. } if proto == PROTO_ICMP => SECS(30),
            State::Datagram { replied } => SECS(if replied { 180 } else { 30 }),
        }
    }
}

/// The state a connection starts in with this packet; `None` if the packet does not
/// start one (a TCP RST, an ICMP message other than an echo request).
pub fn initial(ip: &Ipv4) -> Option<State> {
    match ip.l4_info {
        L4::Tcp { flags, .. } => {
            let st = if flags & TCP_RST != 0 {
                return None;
            } else if flags & TCP_SYN != 0 {
                if flags & TCP_ACK != 0 {
                    TcpState::SynRecv
                } else {
                    TcpState::SynSent
                }
            } else if flags & TCP_FIN != 0 {
                TcpState::FinWait
            } else {
                // Picked up mid-stream.
                TcpState::Established
            };
            let fin = if flags & TCP_FIN != 0 { 1 } else { 0 };
            Some(State::Tcp { st, fin })
        }
        L4::Icmp { ty: 8, .. } => Some(State::Datagram { replied: false }),
        L4::Icmp { .. } => None,
        L4::Udp { .. } => Some(State::Datagram { replied: false }),
        L4::Other if ip.proto == PROTO_TCP || ip.proto == PROTO_UDP || ip.proto == PROTO_ICMP => {
            // A later fragment or a truncated header: nothing to track it by.
            None
        }
        L4::Other => Some(State::Datagram { replied: false }),
    }
}

/// The TCP state after a packet with `flags` went in `dir`.
pub fn tcp_next(st: TcpState, fin: u8, dir: Dir, flags: u8) -> (TcpState, u8) {
    use TcpState::*;
    if flags & TCP_RST != 0 {
        return (Close, fin);
    }
    let syn = flags & TCP_SYN != 0;
    let ack = flags & TCP_ACK != 0;
    let st = match (st, dir) {
        (SynSent, Dir::Reply) if syn => SynRecv,
        (SynRecv, Dir::Orig) if ack && !syn => Established,
        // A new connection reusing the tuple of a closed one (as netfilter allows).
        (TimeWait | Close, Dir::Orig) if syn && !ack => return (SynSent, 0),
        (s, _) => s,
    };
    if !matches!(st, Established | FinWait | LastAck) {
        return (st, fin);
    }
    if flags & TCP_FIN != 0 {
        let fin = fin
            | match dir {
                Dir::Orig => 1,
                Dir::Reply => 2,
            };
        return (if fin == 3 { LastAck } else { FinWait }, fin);
    }
    if st == LastAck && ack {
        return (TimeWait, fin);
    }
    (st, fin)
}

/// A packet's flow on a hop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Key {
    pub flow: FlowKey,
    pub from: Hop,
    pub to: Hop,
}

impl Key {
    pub fn new(flow: FlowKey, from: Hop, to: Hop) -> Key {
        Key { flow, from, to }
    }

    pub fn reverse(&self) -> Key {
        Key {
            flow: self.flow.reverse(),
            from: self.to,
            to: self.from,
        }
    }

    /// The one key both directions are stored under, and whether `self` is it.
    fn canonical(&self) -> (Key, bool) {
        let r = self.reverse();
        if *self <= r {
            (*self, true)
        } else {
            (r, false)
        }
    }
}

struct Entry {
    /// Whether the original direction's key is the canonical one.
    orig_canonical: bool,
    state: State,
    expires: Duration,
    /// Packets and bytes, original direction then reply.
    packets: [u64; 2],
    bytes: [u64; 2],
}

#[derive(Default)]
struct Shard {
    map: HashMap<Key, Entry>,
    last_sweep: Duration,
}

impl Shard {
    fn sweep(&mut self, now: Duration) {
        self.map.retain(|_, e| e.expires > now);
        self.last_sweep = now;
    }
}

/// One tracked connection, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conn {
    /// As its first packet went.
    pub key: Key,
    pub state: State,
    pub expires_in: Duration,
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

pub struct Table {
    shards: Vec<Mutex<Shard>>,
    per_shard: usize,
    hasher: RandomState,
}

impl Table {
    pub fn new(capacity: usize) -> Table {
        Table {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
            per_shard: capacity.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
        }
    }

    fn shard(&self, k: &Key) -> MutexGuard<'_, Shard> {
        let i = (self.hasher.hash_one(k) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Accounts a packet to its connection, if tracked (and not expired): its direction.
    pub fn track(&self, key: &Key, ip: &Ipv4, len: usize, now: Duration) -> Option<Dir> {
        let (ck, is_canon) = key.canonical();
        let mut s = self.shard(&ck);
        let e = s.map.get_mut(&ck)?;
        if e.expires <= now {
            s.map.remove(&ck);
            return None;
        }
        let dir = if is_canon == e.orig_canonical {
            Dir::Orig
        } else {
            Dir::Reply
        };
        e.state = match (e.state, ip.l4_info) {
            (State::Tcp { st, fin }, L4::Tcp { flags, .. }) => {
                let (st, fin) = tcp_next(st, fin, dir, flags);
                State::Tcp { st, fin }
            }
            (State::Datagram { replied }, _) => State::Datagram {
                replied: replied || dir == Dir::Reply,
            },
            (s, _) => s,
        };
        e.expires = now + e.state.timeout(key.flow.proto);
        let i = dir as usize;
        e.packets[i] += 1;
        e.bytes[i] += len as u64;
        Some(dir)
    }

    /// Whether a connection is tracked under `key`, either direction (for related ICMP).
    pub fn contains(&self, key: &Key, now: Duration) -> bool {
        let (ck, _) = key.canonical();
        self.shard(&ck)
            .map
            .get(&ck)
            .is_some_and(|e| e.expires > now)
    }

    /// Starts tracking a connection whose first packet is `key`; `false` if the table is
    /// full (of live entries).
    pub fn insert(&self, key: &Key, state: State, len: usize, now: Duration) -> bool {
        let (ck, is_canon) = key.canonical();
        let mut s = self.shard(&ck);
        if now.saturating_sub(s.last_sweep) >= SWEEP_EVERY {
            s.sweep(now);
        }
        if s.map.len() >= self.per_shard && !s.map.contains_key(&ck) {
            s.sweep(now);
            if s.map.len() >= self.per_shard {
                return false;
            }
        }
        s.map.insert(
            ck,
            Entry {
                orig_canonical: is_canon,
                state,
                expires: now + state.timeout(key.flow.proto),
                packets: [1, 0],
                bytes: [len as u64, 0],
            },
        );
        true
    }

    /// Entries held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).map.len())
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The live connections (sweeping the expired), at most `limit`.
    pub fn list(&self, now: Duration, limit: usize) -> Vec<Conn> {
        let mut out = Vec::new();
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.sweep(now);
            for (k, e) in &s.map {
                if out.len() >= limit {
                    return out;
                }
                out.push(Conn {
                    key: if e.orig_canonical { *k } else { k.reverse() },
                    state: e.state,
                    expires_in: e.expires.saturating_sub(now),
                    packets: e.packets,
                    bytes: e.bytes,
                });
            }
        }
        out
    }

    /// Forgets every connection; how many there were.
    pub fn flush(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
                let n = s.map.len();
                s.map.clear();
                n
            })
            .sum()
    }
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
