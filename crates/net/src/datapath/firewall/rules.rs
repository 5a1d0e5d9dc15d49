//! Firewall rules: what they match (direction, protocol, remote address, destination
//! port), and the compiled rule set the datapath judges new connections with.
//!
//! A rule belongs to a network or to a port. On a hop between two points of one network
//! (see [`super::Firewall::check`]) a new connection must be allowed by both sides: the
//! sending port's `out` rules (its own first, then its network's) and the receiving port's
//! `in` rules (likewise). On each side the first matching rule decides; when none matches,
//! the network's default policy does (allow unless set to deny). A network endpoint (the
//! router, load balancer, DHCP server) has no rules of its own: a hop from or to it is
//! judged by its port side only.

use crate::error::{NetError, Result};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use super::super::endpoint::in_subnet;
use super::super::packet::{self, PROTO_ICMP, PROTO_TCP, PROTO_UDP};

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Traffic entering the port (for a network's rule: entering any of its ports).
    In,
    /// Traffic leaving the port.
    Out,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Any,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    #[default]
    Allow,
    Deny,
}

/// What a rule is attached to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Network(String),
    Port(String),
}

/// A rule as configured (the service persists these; the datapath compiles them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleConfig {
    pub id: u64,
    pub target: Target,
    pub direction: Direction,
    pub proto: Proto,
    /// The remote address range: the source for `in`, the destination for `out`.
    pub cidr: Option<(Ipv4Addr, u8)>,
    /// Destination ports, inclusive (TCP and UDP only).
    pub ports: Option<(u16, u16)>,
    pub action: Action,
    /// Lower first; ties go by id (creation order).
    pub priority: u32,
}

/// Parses `10.0.0.0/8` (or a bare address, /32).
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    let bad = || {
        NetError::Invalid(format!(
            "bad --cidr {s:?}: use an IPv4 address or subnet like 10.0.0.0/8"
        ))
    };
    let (a, len) = match s.split_once('/') {
        Some((a, l)) => (a, l.parse::<u8>().map_err(|_| bad())?),
        None => (s, 32),
    };
    let a: Ipv4Addr = a.parse().map_err(|_| bad())?;
    if len > 32 {
        return Err(bad());
    }
    Ok((a, len))
}

/// Parses `80` or `8000-8080`.
pub fn parse_ports(s: &str) -> Result<(u16, u16)> {
    let bad = || {
        NetError::Invalid(format!(
            "bad --port {s:?}: use a port 1-65535 or a range like 8000-8080"
        ))
    };
    let p = |t: &str| {
        t.trim()
            .parse::<u16>()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(bad)
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (p(a)?, p(b)?),
        None => (p(s)?, p(s)?),
    };
    if lo > hi {
        return Err(bad());
    }
    Ok((lo, hi))
}

impl RuleConfig {
    /// Rejects what cannot match anything meaningful: ports on ICMP or any protocol.
    pub fn check(&self) -> Result<()> {
        if self.ports.is_some() && !matches!(self.proto, Proto::Tcp | Proto::Udp) {
            return Err(NetError::Invalid(format!(
                "a destination port needs --proto tcp or udp (not {})",
                self.proto
                    .number()
                    .map_or(Cow::Borrowed("any"), packet::proto_name)
            )));
        }
        Ok(())
    }
}

impl Proto {
    /// The IP protocol number it matches; `None`: any.
    pub fn number(self) -> Option<u8> {
        match self {
            Proto::Tcp => Some(PROTO_TCP),
            Proto::Udp => Some(PROTO_UDP),
            Proto::Icmp => Some(PROTO_ICMP),
            Proto::Any => None,
        }
    }
}

/// A compiled rule and its counters (kept across rule-set changes by id).
pub struct Rule {
    pub config: RuleConfig,
    pub counters: Arc<Counters>,
}

#[derive(Default)]
pub struct Counters {
    /// New connections (first packets) the rule matched, and their bytes.
    pub hits: AtomicU64,
    pub bytes: AtomicU64,
}

/// What a rule looks at in a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// The destination port, if the packet has one (TCP/UDP, not a later fragment).
    pub dport: Option<u16>,
}

impl Rule {
    pub fn matches(&self, p: &Probe) -> bool {
        let c = &self.config;
        let proto_ok = c.proto.number().is_none_or(|n| n == p.proto);
        let remote = match c.direction {
            Direction::In => p.src,
            Direction::Out => p.dst,
        };
        let cidr_ok = c.cidr.is_none_or(|(net, len)| in_subnet(remote, net, len));
        let port_ok = c
            .ports
            .is_none_or(|(lo, hi)| p.dport.is_some_and(|d| (lo..=hi).contains(&d)));
        proto_ok && cidr_ok && port_ok
    }
}

/// Rules in evaluation order.
pub type RuleList = Vec<Arc<Rule>>;

/// The rules of one network, split by what they are attached to and their direction,
/// each list in evaluation order.
#[derive(Default)]
pub struct NetPolicy {
    pub default_deny: bool,
    pub net_in: Vec<Arc<Rule>>,
    pub net_out: Vec<Arc<Rule>>,
    /// By port name: (in, out).
    pub ports: HashMap<String, (RuleList, RuleList)>,
}

/// How one side of a hop decided.
#[derive(Clone)]
pub struct SideVerdict {
    pub allow: bool,
    /// The rule that decided; `None`: the default policy did.
    pub rule: Option<Arc<Rule>>,
}

impl NetPolicy {
    /// Judges one side: the rules of the port `port` (if it has any) in `dir`, then the
    /// network's, first match wins; otherwise the default.
    pub fn side(&self, port: Option<&str>, dir: Direction, p: &Probe) -> SideVerdict {
        let own = port
            .and_then(|n| self.ports.get(n))
            .map(|(i, o)| match dir {
                Direction::In => i,
                Direction::Out => o,
            });
        let net = match dir {
            Direction::In => &self.net_in,
            Direction::Out => &self.net_out,
        };
        let hit = own
            .into_iter()
            .flatten()
            .chain(net.iter())
            .find(|r| r.matches(p));
        match hit {
            Some(r) => SideVerdict {
                allow: r.config.action == Action::Allow,
                rule: Some(r.clone()),
            },
            None => SideVerdict {
                allow: !self.default_deny,
                rule: None,
            },
        }
    }

    pub fn has_port_rules(&self) -> bool {
        !self.ports.is_empty()
    }
}

/// Sorts rules into evaluation order: priority, then creation.
pub fn sort(rules: &mut [Arc<Rule>]) {
    rules.sort_by_key(|r| (r.config.priority, r.config.id));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        id: u64,
        dir: Direction,
        proto: Proto,
        ports: Option<(u16, u16)>,
        a: Action,
    ) -> Arc<Rule> {
        Arc::new(Rule {
            config: RuleConfig {
                id,
                target: Target::Network("n".into()),
                direction: dir,
                proto,
                cidr: None,
                ports,
                action: a,
                priority: 100,
            },
            counters: Arc::default(),
        })
    }

    fn probe(proto: u8, dport: Option<u16>) -> Probe {
        Probe {
            proto,
            src: Ipv4Addr::new(10, 200, 0, 1),
            dst: Ipv4Addr::new(10, 200, 0, 2),
            dport,
        }
    }

    #[test]
    fn parsing_and_checks() {
        assert_eq!(parse_ports("80").unwrap(), (80, 80));
        assert_eq!(parse_ports("8000-8080").unwrap(), (8000, 8080));
        assert!(parse_ports("9-8").is_err() && parse_ports("0").is_err());
        assert!(parse_ports("http").is_err() && parse_ports("70000").is_err());
        assert_eq!(
            parse_cidr("10.1.0.0/16").unwrap(),
            (Ipv4Addr::new(10, 1, 0, 0), 16)
        );
        assert_eq!(parse_cidr("10.1.2.3").unwrap().1, 32);
        assert!(parse_cidr("10.1.0.0/33").is_err() && parse_cidr("fe80::/10").is_err());
        let mut c = rule(1, Direction::In, Proto::Icmp, Some((1, 2)), Action::Allow)
            .config
            .clone();
        assert!(c.check().unwrap_err().to_string().contains("tcp or udp"));
        c.proto = Proto::Udp;
        assert!(c.check().is_ok());
    }

    #[test]
    fn matching_by_proto_port_and_cidr() {
        let r = rule(1, Direction::In, Proto::Tcp, Some((80, 81)), Action::Allow);
        assert!(r.matches(&probe(PROTO_TCP, Some(80))));
        assert!(r.matches(&probe(PROTO_TCP, Some(81))));
        assert!(!r.matches(&probe(PROTO_TCP, Some(82))));
        assert!(!r.matches(&probe(PROTO_UDP, Some(80))));
        assert!(
            !r.matches(&probe(PROTO_TCP, None)),
            "a later fragment has no port"
        );
        let any = rule(2, Direction::Out, Proto::Any, None, Action::Deny);
        assert!(any.matches(&probe(47, None)));
        let mut c = any.config.clone();
        c.cidr = Some((Ipv4Addr::new(10, 200, 0, 2), 32));
        let out = Rule {
            config: c.clone(),
            counters: Arc::default(),
        };
        assert!(
            out.matches(&probe(PROTO_UDP, Some(1))),
            "out looks at the destination"
        );
        c.direction = Direction::In;
        let inr = Rule {
            config: c,
            counters: Arc::default(),
        };
        assert!(
            !inr.matches(&probe(PROTO_UDP, Some(1))),
            "in looks at the source"
        );
    }

    #[test]
    fn port_rules_first_then_network_then_default() {
        let mut p = NetPolicy {
            default_deny: true,
            ..Default::default()
        };
        p.net_in
            .push(rule(1, Direction::In, Proto::Tcp, None, Action::Allow));
        p.ports.insert(
            "a".into(),
            (
                vec![rule(
                    2,
                    Direction::In,
                    Proto::Tcp,
                    Some((22, 22)),
                    Action::Deny,
                )],
                vec![],
            ),
        );
        let ssh = probe(PROTO_TCP, Some(22));
        let v = p.side(Some("a"), Direction::In, &ssh);
        assert!(!v.allow && v.rule.unwrap().config.id == 2);
        let v = p.side(Some("b"), Direction::In, &ssh);
        assert!(v.allow && v.rule.unwrap().config.id == 1);
        let v = p.side(Some("a"), Direction::In, &probe(PROTO_UDP, Some(53)));
        assert!(!v.allow && v.rule.is_none(), "the default decides");
        let v = p.side(Some("a"), Direction::Out, &ssh);
        assert!(!v.allow && v.rule.is_none());
    }

    #[test]
    fn order_is_priority_then_creation() {
        let mut v = vec![
            rule(3, Direction::In, Proto::Any, None, Action::Allow),
            rule(1, Direction::In, Proto::Any, None, Action::Allow),
        ];
        let mut c = v[1].config.clone();
        c.id = 2;
        c.priority = 5;
        v.push(Arc::new(Rule {
            config: c,
            counters: Arc::default(),
        }));
        sort(&mut v);
        let ids: Vec<u64> = v.iter().map(|r| r.config.id).collect();
        assert_eq!(ids, [2, 1, 3]);
    }
}
