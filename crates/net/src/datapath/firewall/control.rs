//! The firewall's side of the datapath's API: installing a rule set (names resolved to the
//! networks and ports of the moment), its counters, the connection table, the flow log.

use super::flowlog::{self, FlowRecord};
use super::rules::{self, Direction, NetPolicy, Rule, RuleConfig, Target};
use super::RuleSet;
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

/// A rule's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleHits {
    pub id: u64,
    /// New connections (first packets) it matched, and their bytes.
    pub hits: u64,
    pub bytes: u64,
}

/// The firewall's own counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FirewallStats {
    /// Connections tracked (expired ones not yet swept included).
    pub conntrack_entries: u64,
    /// First packets the rules denied.
    pub denied: u64,
    /// New connections refused because the connection table was full.
    pub conntrack_full: u64,
    /// Flow log lines not written (over the rate limit, or the writer behind).
    pub flowlog_suppressed: u64,
}

/// A tracked connection, as its first packet went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnView {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub network: String,
    /// Port names; `None`: the network's endpoint.
    pub from: Option<String>,
    pub to: Option<String>,
    pub state: &'static str,
    pub expires_in: Duration,
    /// Original direction, then reply.
    pub packets: [u64; 2],
    pub bytes: [u64; 2],
}

impl Datapath {
    /// Replaces the firewall's rules and the networks whose default is deny. Every target
    /// must exist. A rule keeps its counters across calls (by id). Tracked connections are
    /// kept: the new rules judge new connections.
    pub fn set_firewall(&self, rules: &[RuleConfig], deny_default: &[String]) -> Result<()> {
        let fw = &self.switch.firewall;
        let old = fw.ruleset();
        let counters: HashMap<u64, _> = old
            .all
            .iter()
            .map(|r| (r.config.id, r.counters.clone()))
            .collect();
        let nets: HashMap<String, u32> = self
            .control()
            .networks
            .iter()
            .map(|(n, net)| (n.clone(), net.endpoint.id))
            .collect();
        let ports = self.ports();
        let net_id = |name: &str| {
            nets.get(name)
                .copied()
                .ok_or_else(|| NetError::NotFound(format!("no network {name:?}")))
        };
        let mut rs = RuleSet::default();
        for name in deny_default {
            rs.nets.entry(net_id(name)?).or_default().default_deny = true;
        }
        for c in rules {
            c.check()?;
            let rule = Arc::new(Rule {
                config: c.clone(),
                counters: counters.get(&c.id).cloned().unwrap_or_default(),
            });
            match &c.target {
                Target::Network(n) => {
                    let p = rs.nets.entry(net_id(n)?).or_default();
                    list(&mut p.net_in, &mut p.net_out, c.direction).push(rule.clone());
                }
                Target::Port(n) => {
                    let port = ports
                        .iter()
                        .find(|p| p.config.name == *n)
                        .ok_or_else(|| NetError::NotFound(format!("no port {n:?}")))?;
                    let p = rs.nets.entry(port.net_id).or_default();
                    let (i, o) = p.ports.entry(n.clone()).or_default();
                    list(i, o, c.direction).push(rule.clone());
                }
            }
            rs.all.push(rule);
        }
        for p in rs.nets.values_mut() {
            sort_policy(p);
        }
        rs.all.sort_by_key(|r| r.config.id);
        fw.install(rs);
        Ok(())
    }

    /// Every rule's counters, by id.
    pub fn firewall_hits(&self) -> Vec<RuleHits> {
        self.switch
            .firewall
            .ruleset()
            .all
            .iter()
            .map(|r| RuleHits {
                id: r.config.id,
                hits: r.counters.hits.load(Relaxed),
                bytes: r.counters.bytes.load(Relaxed),
            })
            .collect()
    }

    pub fn firewall_stats(&self) -> FirewallStats {
        let fw = &self.switch.firewall;
        FirewallStats {
            conntrack_entries: fw.conntrack.len() as u64,
            denied: fw.denied.load(Relaxed),
            conntrack_full: fw.table_full.load(Relaxed),
            flowlog_suppressed: fw.flowlog.suppressed(),
        }
    }

    /// The tracked connections, at most `limit`.
    pub fn conntrack(&self, limit: usize) -> Vec<ConnView> {
        let fw = &self.switch.firewall;
        fw.conntrack
            .list(fw.now(), limit)
            .into_iter()
            .map(|c| {
                let (network, from, to) = fw.hop_names(c.key.from, c.key.to);
                let f = c.key.flow;
                ConnView {
                    proto: f.proto,
                    src: f.src,
                    sport: f.sport,
                    dst: f.dst,
                    dport: f.dport,
                    network,
                    from,
                    to,
                    state: c.state.name(),
                    expires_in: c.expires_in,
                    packets: c.packets,
                    bytes: c.bytes,
                }
            })
            .collect()
    }

    /// Forgets every tracked connection; how many there were.
    pub fn flush_conntrack(&self) -> usize {
        self.switch.firewall.flush_conntrack()
    }

    /// The most recent flow log records, oldest first.
    pub fn flows(&self, limit: usize) -> Vec<FlowRecord> {
        self.switch.firewall.flowlog.recent(limit)
    }

    /// Starts appending the flow log to `dir`/flows.jsonl (rotated at 16 MiB).
    pub fn start_flow_log(&self, dir: &Path) -> Result<()> {
        self.start_flow_log_rotating_at(dir, flowlog::MAX_BYTES)
    }

    pub fn start_flow_log_rotating_at(&self, dir: &Path, max_bytes: u64) -> Result<()> {
        self.switch
            .firewall
            .flowlog
            .start(dir, max_bytes)
            .map_err(|source| NetError::Io {
                context: format!("starting the flow log in {}", dir.display()),
                source,
            })
    }
}

fn list<'a>(
    i: &'a mut Vec<Arc<Rule>>,
    o: &'a mut Vec<Arc<Rule>>,
    d: Direction,
) -> &'a mut Vec<Arc<Rule>> {
    match d {
        Direction::In => i,
        Direction::Out => o,
    }
}

fn sort_policy(p: &mut NetPolicy) {
    rules::sort(&mut p.net_in);
    rules::sort(&mut p.net_out);
    for (i, o) in p.ports.values_mut() {
        rules::sort(i);
        rules::sort(o);
    }
}
