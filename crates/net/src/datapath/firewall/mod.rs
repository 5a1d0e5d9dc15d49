//! The firewall: ordered rules per network and per port ([`rules`]), judged on each hop
//! between ports and network endpoints ([`Hop`]) for the first packet of a connection;
//! connection tracking ([`conntrack`]) lets the rest of it, both ways, through without
//! looking at the rules again; a flow log ([`flowlog`]) records what was accepted and
//! denied.
//!
//! Cost: while no network has a rule or a deny default, [`Firewall::active`] is false and
//! the switch never calls in (plain L2 forwarding pays one atomic load per frame). A
//! network without rules and with the default allow is not tracked even while another
//! one is: one tenant's rules do not slow down the others.
//!
//! Rule changes apply to new connections only: an established connection keeps going
//! after a rule that would deny it is added (as with OVS and nftables, whose conntrack
//! entries outlive rule changes) until it ends, times out, or the table is flushed
//! ([`Firewall::flush_conntrack`], `vireo net firewall flush-conntrack`).

pub mod conntrack;
mod control;
pub mod flowlog;
pub mod rules;

use super::endpoint::Hop;
use super::packet::{FlowKey, Ipv4, L4, PROTO_ICMP, PROTO_TCP, PROTO_UDP};
use conntrack::{Key, Table};
pub use control::{ConnView, FirewallStats, RuleHits};
use flowlog::{FlowLog, FlowRecord};
use rules::{Action, Direction, NetPolicy, Probe, Rule, SideVerdict};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime};

/// The compiled rules: the policy of each network that has rules or a deny default.
#[derive(Default)]
pub struct RuleSet {
    nets: HashMap<u32, NetPolicy>,
    /// Every rule, by id order (for the counters).
    all: Vec<Arc<Rule>>,
}

pub struct Firewall {
    /// Whether any network is policed: without one, the switch skips the firewall.
    active: AtomicBool,
    rules: RwLock<Arc<RuleSet>>,
    conntrack: Table,
    flowlog: FlowLog,
    /// Names of the networks and ports by id, for port rules and the flow log (kept by the
    /// datapath as they come and go: the switch's own tables are locked while it asks).
    names: RwLock<HashMap<u32, Arc<str>>>,
    origin: Instant,
    denied: AtomicU64,
    table_full: AtomicU64,
}

impl Default for Firewall {
    fn default() -> Self {
        Firewall::new()
    }
}

impl Firewall {
    pub fn new() -> Firewall {
        Firewall::with_capacity(conntrack::MAX_ENTRIES)
    }

    /// A firewall tracking at most `capacity` connections.
    pub fn with_capacity(capacity: usize) -> Firewall {
        Firewall {
            active: AtomicBool::new(false),
            rules: RwLock::new(Arc::default()),
            conntrack: Table::new(capacity),
            flowlog: FlowLog::default(),
            names: RwLock::default(),
            origin: Instant::now(),
            denied: AtomicU64::new(0),
            table_full: AtomicU64::new(0),
        }
    }

    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Records (or, with `None`, forgets) the name of a network or port id.
    pub fn name(&self, id: u32, name: Option<&str>) {
        let mut n = self.names.write().unwrap_or_else(|e| e.into_inner());
        match name {
            Some(s) => n.insert(id, Arc::from(s)),
            None => n.remove(&id),
        };
    }

    fn name_of(&self, id: u32) -> Option<Arc<str>> {
        self.names
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    /// The name of the port `h` is; `None` for a network's endpoint.
    fn port_name(&self, h: Hop) -> Option<String> {
        match h {
            Hop::Port { port, .. } => self.name_of(port).map(|n| n.to_string()),
            Hop::Endpoint { .. } => None,
        }
    }

    /// How the flow log and the connection list name a hop: its network, and the ports it
    /// goes from and to (`None`: the network's endpoint).
    fn hop_names(&self, from: Hop, to: Hop) -> (String, Option<String>, Option<String>) {
        let network = self
            .name_of(from.net())
            .map(|n| n.to_string())
            .unwrap_or_default();
        (network, self.port_name(from), self.port_name(to))
    }

    fn now(&self) -> Duration {
        self.origin.elapsed()
    }

    fn ruleset(&self) -> Arc<RuleSet> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The rules in force, if they police network `net` (else everything there passes):
    /// taken once per frame, however many hops it is then judged on.
    pub fn rules_for(&self, net: u32) -> Option<Arc<RuleSet>> {
        if !self.active() {
            return None;
        }
        let rs = self.ruleset();
        rs.nets.contains_key(&net).then_some(rs)
    }

    fn install(&self, rs: RuleSet) {
        let on = !rs.nets.is_empty();
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(rs);
        self.active.store(on, Relaxed);
    }

    /// Forgets every tracked connection: what flows next is judged by the rules again.
    pub fn flush_conntrack(&self) -> usize {
        self.conntrack.flush()
    }

    /// Whether the IPv4 packet `ip` (in `packet`) may go from `from` to `to`, two points of
    /// one network, by the rules `rs` (from [`Firewall::rules_for`]).
    pub fn check(&self, rs: &RuleSet, from: Hop, to: Hop, packet: &[u8], ip: &Ipv4) -> bool {
        let Some(policy) = rs.nets.get(&from.net()) else {
            return true;
        };
        let now = self.now();
        let len = packet.len();
        // DHCP between a client and the network's own server: infrastructure, not a
        // connection (OVN lets it through its ACLs too). Requests to the server's MAC are
        // renewals; discovers are broadcast and never judged.
        let dhcp = match (from, to, ip.l4_info) {
            (Hop::Endpoint { .. }, _, L4::Udp { sport, dport }) => (sport, dport) == (67, 68),
            (_, Hop::Endpoint { .. }, L4::Udp { sport, dport }) => (sport, dport) == (68, 67),
            _ => false,
        };
        if dhcp {
            return true;
        }
        // An ICMP error about a tracked connection (port unreachable, TTL exceeded,
        // fragmentation needed): related, it passes. The quoted packet went the other way.
        if let L4::Icmp {
            ty: 3 | 4 | 5 | 11 | 12,
            ..
        } = ip.l4_info
        {
            if let Some(q) = quoted_flow(packet, ip) {
                if self.conntrack.contains(&Key::new(q, to, from), now) {
                    return true;
                }
            }
        }
        let key = Key::new(ip.flow(), from, to);
        if self.conntrack.track(&key, ip, len, now).is_some() {
            return true;
        }
        self.judge(policy, from, to, ip, &key, len, now)
    }

    /// A packet of no tracked connection: the rules of both sides decide.
    #[allow(clippy::too_many_arguments)]
    fn judge(
        &self,
        policy: &NetPolicy,
        from: Hop,
        to: Hop,
        ip: &Ipv4,
        key: &Key,
        len: usize,
        now: Duration,
    ) -> bool {
        let probe = Probe {
            proto: ip.proto,
            src: ip.src,
            dst: ip.dst,
            dport: match ip.l4_info {
                L4::Tcp { dport, .. } | L4::Udp { dport, .. } => Some(dport),
                _ => None,
            },
        };
        let port_name = |h: Hop| match h {
            Hop::Port { port, .. } if policy.has_port_rules() => self.name_of(port),
            _ => None,
        };
        let judge = |h: Hop, dir| match h {
            Hop::Port { .. } => Some(policy.side(port_name(h).as_deref(), dir, &probe)),
            Hop::Endpoint { .. } => None,
        };
        let out = judge(from, Direction::Out);
        let inn = match &out {
            Some(v) if !v.allow => None,
            _ => judge(to, Direction::In),
        };
        for r in [&out, &inn]
            .into_iter()
            .flatten()
            .filter_map(|v| v.rule.as_ref())
        {
            r.counters.hits.fetch_add(1, Relaxed);
            r.counters.bytes.fetch_add(len as u64, Relaxed);
        }
        let allowed = |v: &Option<SideVerdict>| v.as_ref().is_none_or(|v| v.allow);
        let allow = allowed(&out) && allowed(&inn);
        // What decided, for the log: the denying side; else an explicit allow rule.
        let (side, dir) = match (&out, &inn) {
            (Some(o), _) if !o.allow => (Some(o), Direction::Out),
            (_, Some(i)) if !i.allow || i.rule.is_some() => (Some(i), Direction::In),
            (o, _) => (o.as_ref(), Direction::Out),
        };
        let decided = side.map(|v| (v.rule.as_ref().map(|r| r.config.id), dir));
        if allow {
            let Some(state) = conntrack::initial(ip) else {
                // Allowed, but nothing to track it by (a reset, an ICMP error).
                return true;
            };
            if !self.conntrack.insert(key, state, len, now) {
                self.table_full.fetch_add(1, Relaxed);
                tracing::debug!("conntrack table full: new connection refused");
                return false;
            }
        } else {
            self.denied.fetch_add(1, Relaxed);
        }
        let action = if allow { Action::Allow } else { Action::Deny };
        if self.flowlog.admit(action, now.as_secs()) {
            self.log(action, from, to, ip, decided);
        }
        allow
    }

    fn log(
        &self,
        action: Action,
        from: Hop,
        to: Hop,
        ip: &Ipv4,
        decided: Option<(Option<u64>, Direction)>,
    ) {
        let f = ip.flow();
        let (rule, direction) = match decided {
            Some((rule, dir)) => (rule, Some(dir)),
            None => (None, None),
        };
        let side = match direction {
            Some(Direction::In) => to,
            _ => from,
        };
        let (network, from, to) = self.hop_names(from, to);
        self.flowlog.push(FlowRecord {
            ts: SystemTime::now(),
            action,
            proto: f.proto,
            src: f.src,
            sport: f.sport,
            dst: f.dst,
            dport: f.dport,
            network,
            from,
            to,
            port: self.port_name(side),
            direction,
            rule,
        });
    }
}

/// The flow of the packet an ICMP error quotes (its IP header and 8 bytes after it).
fn quoted_flow(packet: &[u8], ip: &Ipv4) -> Option<FlowKey> {
    let q = packet.get(ip.l4.checked_add(8)?..ip.end)?;
    let vihl = *q.first()?;
    let ihl = usize::from(vihl & 0x0f) * 4;
    if vihl >> 4 != 4 || ihl < 20 {
        return None;
    }
    let addr = |at: usize| -> Option<Ipv4Addr> {
        let b: [u8; 4] = q.get(at..at + 4)?.try_into().ok()?;
        Some(Ipv4Addr::from(b))
    };
    let l4 = q.get(ihl..)?;
    let be16 = |at: usize| Some(u16::from_be_bytes([*l4.get(at)?, *l4.get(at + 1)?]));
    let proto = *q.get(9)?;
    let (sport, dport) = match proto {
        PROTO_TCP | PROTO_UDP => (be16(0)?, be16(2)?),
        PROTO_ICMP => {
            let id = be16(4)?;
            (id, id)
        }
        _ => (0, 0),
    };
    Some(FlowKey {
        proto,
        src: addr(12)?,
        dst: addr(16)?,
        sport,
        dport,
    })
}

#[cfg(test)]
mod tests {
    use crate::datapath::{Addressing, Datapath};

    #[test]
    fn a_deleted_network_leaves_no_name_behind() {
        let dp = Datapath::new();
        dp.add_network("gone", None, Addressing::default()).unwrap();
        let id = dp.endpoint("gone").unwrap().id;
        let fw = &dp.switch.firewall;
        assert_eq!(fw.name_of(id).as_deref(), Some("gone"));
        dp.remove_network("gone").unwrap();
        assert_eq!(fw.name_of(id), None);
    }
}
