//! Routers: L3 between networks, as OVN's logical router. A router's interface in a network
//! is that network's endpoint (its MAC and gateway address, which answer ARP and ping
//! already); the router adds a stage there ([`forward`]) that takes the frames sent to the
//! endpoint's MAC for addresses elsewhere, looks their route up ([`route`]), applies NAT
//! ([`nat`]), and hands them to the endpoint of the network they leave by.
//!
//! The configuration ([`RouterConfig`]) is applied whole: the service computes what a
//! router should be after each change and [`Datapath::apply_router`] makes it so, building
//! the tables the packet path reads (one `Arc` swapped in, never locked per packet beyond
//! cloning it).

mod forward;
mod icmp;
pub mod nat;
pub mod route;

use super::endpoint::{NetEndpoint, Stage};
use super::packet::{self, FlowKey};
use super::Datapath;
use crate::error::{NetError, Result};
use nat::NatTable;
use route::{Route, Table};
use serde::Serialize;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use vireo_virtio::rate_limiter::MonotonicClock;

/// A static route: `net/len` via the neighbour `via` (in an attached network's subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StaticRoute {
    pub net: Ipv4Addr,
    pub len: u8,
    pub via: Ipv4Addr,
}

/// A NAT rule. SNAT applies after routing (to flows leaving by `out`), DNAT before (to
/// flows to the router's address in `network`), as netfilter's POSTROUTING and PREROUTING.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NatRule {
    /// Flows from `source` leaving by network `out` get the source address `to` (default:
    /// the router's address in `out`, masquerade) and a port of the SNAT range.
    Snat {
        source: (Ipv4Addr, u8),
        out: String,
        to: Option<Ipv4Addr>,
    },
    /// Flows to the router's address in `network`, protocol `proto`, port `port`, go to
    /// `to` (address and port) instead: a port forward.
    Dnat {
        network: String,
        proto: u8,
        port: u16,
        to: (Ipv4Addr, u16),
    },
}

/// What a router is: the networks it joins, its static routes, its NAT rules.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouterConfig {
    pub name: String,
    pub networks: Vec<String>,
    pub routes: Vec<StaticRoute>,
    pub nat: Vec<NatRule>,
}

/// A router's counters, as the API shows them.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct RouterStats {
    pub routed_packets: u64,
    pub no_route_drops: u64,
    pub ttl_drops: u64,
    /// New flows a NAT rule applied to that got no session (table full, ports in use), and
    /// packets NAT cannot rewrite (fragments, ICMP errors, other protocols).
    pub nat_drops: u64,
    pub nat_sessions: u64,
    pub nat_sessions_created: u64,
}

#[derive(Default)]
struct Counters {
    routed: AtomicU64,
    no_route: AtomicU64,
    ttl: AtomicU64,
    nat_drops: AtomicU64,
}

/// An interface: an attached network's endpoint, its subnet and the router's address there.
struct Iface {
    ep: Arc<NetEndpoint>,
    subnet: (Ipv4Addr, u8),
    addr: Ipv4Addr,
    /// The subnet's directed broadcast (none for a /31 or /32), which is never forwarded.
    broadcast: Option<Ipv4Addr>,
}

struct Snat {
    source: (Ipv4Addr, u8),
    iface: usize,
    to: Ipv4Addr,
}

struct Dnat {
    /// The router's address the rule listens on.
    addr: Ipv4Addr,
    proto: u8,
    port: u16,
    to: (Ipv4Addr, u16),
}

/// What the packet path reads: built from a [`RouterConfig`], replaced whole.
#[derive(Default)]
struct Tables {
    ifaces: Vec<Iface>,
    table: Table,
    snat: Vec<Snat>,
    dnat: Vec<Dnat>,
}

pub struct Router {
    tables: RwLock<Arc<Tables>>,
    nat: Mutex<NatTable>,
    counters: Counters,
    /// The stage registered on each attached network's endpoint (by network id).
    stages: Mutex<HashMap<u32, Arc<dyn Stage>>>,
    /// SNAT addresses other than a gateway, which the out network's endpoint answers ARP
    /// for on the router's behalf.
    owned: Mutex<Vec<(Arc<NetEndpoint>, Ipv4Addr)>>,
}

impl Router {
    fn new() -> Router {
        Router {
            tables: RwLock::new(Arc::new(Tables::default())),
            nat: Mutex::new(NatTable::new(
                Box::new(MonotonicClock::new()),
                nat::CAPACITY,
            )),
            counters: Counters::default(),
            stages: Mutex::new(HashMap::new()),
            owned: Mutex::new(Vec::new()),
        }
    }

    fn tables(&self) -> Arc<Tables> {
        self.tables
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn nat(&self) -> std::sync::MutexGuard<'_, NatTable> {
        self.nat.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> RouterStats {
        let nat = self.nat();
        RouterStats {
            routed_packets: self.counters.routed.load(Relaxed),
            no_route_drops: self.counters.no_route.load(Relaxed),
            ttl_drops: self.counters.ttl.load(Relaxed),
            nat_drops: self.counters.nat_drops.load(Relaxed),
            nat_sessions: nat.len() as u64,
            nat_sessions_created: nat.created,
        }
    }
}

/// The routers of a datapath, by name.
#[derive(Default)]
pub struct Routers(Mutex<HashMap<String, Arc<Router>>>);

impl Routers {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Router>>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Datapath {
    /// Makes router `cfg.name` what `cfg` says (creating it if needed): its interfaces,
    /// routes and NAT rules. Checks everything first; on error nothing changed.
    pub fn apply_router(&self, cfg: &RouterConfig) -> Result<()> {
        super::check_name("router", &cfg.name)?;
        let mut routers = self.routers.lock();
        let tables = self.build_tables(cfg, &routers)?;
        let router = routers
            .entry(cfg.name.clone())
            .or_insert_with(|| Arc::new(Router::new()))
            .clone();
        drop(routers);
        let wanted: HashMap<u32, Arc<NetEndpoint>> = tables
            .ifaces
            .iter()
            .map(|i| (i.ep.id, i.ep.clone()))
            .collect();
        let owned: Vec<(Arc<NetEndpoint>, Ipv4Addr)> = tables
            .snat
            .iter()
            .map(|s| (tables.ifaces[s.iface].ep.clone(), s.to))
            .collect();
        *router.tables.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tables);
        let mut stages = router.stages.lock().unwrap_or_else(|e| e.into_inner());
        stages.retain(|net, stage| {
            let keep = wanted.contains_key(net);
            if !keep {
                if let Some(ep) = self.switch.endpoint(*net) {
                    ep.remove_stage(stage);
                }
            }
            keep
        });
        for (net, ep) in wanted {
            stages.entry(net).or_insert_with(|| {
                let s: Arc<dyn Stage> = Arc::new(forward::RouterPort {
                    router: router.clone(),
                });
                ep.add_stage(s.clone());
                s
            });
        }
        drop(stages);
        let mut was = router.owned.lock().unwrap_or_else(|e| e.into_inner());
        for (ep, ip) in was.iter() {
            ep.disown(*ip);
        }
        for (ep, ip) in &owned {
            ep.own(*ip);
        }
        *was = owned;
        Ok(())
    }

    /// Removes a router: its stages leave the networks' endpoints (which keep answering
    /// for their own addresses).
    pub fn remove_router(&self, name: &str) -> Result<()> {
        let empty = RouterConfig {
            name: name.to_string(),
            ..Default::default()
        };
        if !self.routers.lock().contains_key(name) {
            return Err(NetError::NotFound(format!("no router {name:?}")));
        }
        self.apply_router(&empty)?;
        self.routers.lock().remove(name);
        Ok(())
    }

    fn router(&self, name: &str) -> Result<Arc<Router>> {
        self.routers
            .lock()
            .get(name)
            .cloned()
            .ok_or_else(|| NetError::NotFound(format!("no router {name:?}")))
    }

    pub fn router_stats(&self, name: &str) -> Result<RouterStats> {
        Ok(self.router(name)?.stats())
    }

    /// The router's NAT sessions: (original flow, reply flow, seconds left).
    pub fn router_sessions(&self, name: &str) -> Result<Vec<(FlowKey, FlowKey, u64)>> {
        Ok(self.router(name)?.nat().sessions())
    }

    fn build_tables(
        &self,
        cfg: &RouterConfig,
        routers: &HashMap<String, Arc<Router>>,
    ) -> Result<Tables> {
        let mut t = Tables::default();
        let mut routes = Vec::new();
        for net in &cfg.networks {
            let ep = self.endpoint(net)?;
            let (Some(subnet), Some(addr)) = (ep.addressing.subnet, ep.addressing.gateway) else {
                return Err(NetError::Invalid(format!(
                    "network {net:?} has no IPv4 subnet and gateway; a router needs both \
                     (`vireo net network create {net} --subnet CIDR --gateway IP`)"
                )));
            };
            for (other, r) in routers.iter().filter(|(n, _)| **n != cfg.name) {
                if r.tables().ifaces.iter().any(|i| i.ep.id == ep.id) {
                    return Err(NetError::Conflict(format!(
                        "network {net:?} is attached to router {other:?} already; \
                         a network joins one router at most"
                    )));
                }
            }
            if t.ifaces.iter().any(|i| i.ep.id == ep.id) {
                return Err(NetError::Conflict(format!(
                    "network {net:?} is listed twice"
                )));
            }
            routes.push(Route {
                net: subnet.0,
                len: subnet.1,
                iface: t.ifaces.len(),
                via: None,
            });
            let broadcast = (subnet.1 < 31)
                .then(|| Ipv4Addr::from(u32::from(subnet.0) | !packet::mask(subnet.1)));
            t.ifaces.push(Iface {
                ep,
                subnet,
                addr,
                broadcast,
            });
        }
        let iface_of = |net: &str| {
            t.ifaces
                .iter()
                .position(|i| i.ep.name == net)
                .ok_or_else(|| {
                    NetError::Invalid(format!(
                        "network {net:?} is not attached to router {:?}; attach it first",
                        cfg.name
                    ))
                })
        };
        for r in &cfg.routes {
            let iface = t
                .ifaces
                .iter()
                .position(|i| super::endpoint::in_subnet(r.via, i.subnet.0, i.subnet.1))
                .ok_or_else(|| {
                    NetError::Invalid(format!(
                        "next hop {} of route {}/{} is in no attached network's subnet",
                        r.via, r.net, r.len
                    ))
                })?;
            routes.push(Route {
                net: r.net,
                len: r.len,
                iface,
                via: Some(r.via),
            });
        }
        for rule in &cfg.nat {
            match rule {
                NatRule::Snat { source, out, to } => {
                    let iface = iface_of(out)?;
                    let to = to.unwrap_or(t.ifaces[iface].addr);
                    t.snat.push(Snat {
                        source: *source,
                        iface,
                        to,
                    });
                }
                NatRule::Dnat {
                    network,
                    proto,
                    port,
                    to,
                } => {
                    let addr = t.ifaces[iface_of(network)?].addr;
                    t.dnat.push(Dnat {
                        addr,
                        proto: *proto,
                        port: *port,
                        to: *to,
                    });
                }
            }
        }
        t.table = Table::new(routes);
        Ok(t)
    }
}
