//! Routers in the desired state (net.json's `routers`) and their API operations: create and
//! delete, attach and detach networks, static routes, NAT rules. Each change is checked
//! against the whole state, applied to the datapath as the router's complete new
//! configuration, then saved (the old configuration is re-applied if saving fails).

use super::config::NetState;
use super::validate::Cidr;
use crate::datapath::packet::{PROTO_TCP, PROTO_UDP};
use crate::datapath::router::{NatRule, RouterConfig, StaticRoute};
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use serde::{Deserialize, Serialize};
use std::net::{IpAddr, Ipv4Addr, SocketAddrV4};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct RouterSpec {
    pub name: String,
    #[serde(default)]
    pub networks: Vec<String>,
    #[serde(default)]
    pub routes: Vec<RouteSpec>,
    #[serde(default)]
    pub nat: Vec<NatSpec>,
}

/// A static route: `cidr` via the neighbour `via`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    pub cidr: String,
    pub via: String,
}

/// A NAT rule as the API takes it: `{"kind": "snat", "source": CIDR, "out": NET, "to": IP}`
/// (no `to`: masquerade) or `{"kind": "dnat", "network": NET, "proto": "tcp"|"udp",
/// "port": N, "to": "IP:PORT"}`. `id` is given by the service.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NatSpec {
    #[serde(default)]
    pub id: u32,
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub out: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
}

fn v4(s: &str, what: &str) -> Result<Ipv4Addr> {
    s.parse().map_err(|_| {
        NetError::Invalid(format!(
            "bad {what} {s:?}: expected an IPv4 address like 10.0.1.1"
        ))
    })
}

fn v4_cidr(s: &str) -> Result<(Ipv4Addr, u8)> {
    match Cidr::parse(s)? {
        Cidr {
            addr: IpAddr::V4(a),
            prefix,
        } => Ok((crate::datapath::router::route::network(a, prefix), prefix)),
        _ => Err(NetError::Invalid(format!(
            "{s}: routers handle IPv4 only; use an IPv4 CIDR"
        ))),
    }
}

fn subnet_of(st: &NetState, net: &str) -> Result<(Ipv4Addr, u8)> {
    let n = st.network(net)?;
    match n.addressing() {
        crate::datapath::Addressing {
            subnet: Some(s),
            gateway: Some(_),
        } => Ok(s),
        _ => Err(NetError::Invalid(format!(
            "network {net} has no IPv4 subnet and gateway; a router needs both \
             (create it with --subnet CIDR --gateway IP)"
        ))),
    }
}

fn in_net(ip: Ipv4Addr, (net, len): (Ipv4Addr, u8)) -> bool {
    crate::datapath::endpoint::in_subnet(ip, net, len)
}

impl NatSpec {
    /// Checks the rule against the router `r` and normalizes it.
    fn check(&self, st: &NetState, r: &RouterSpec) -> Result<NatSpec> {
        let attached = |net: &Option<String>, flag: &str| -> Result<String> {
            let net = net.clone().ok_or_else(|| {
                NetError::Invalid(format!("a {} rule needs {flag} NET", self.kind))
            })?;
            if !r.networks.contains(&net) {
                return Err(NetError::Invalid(format!(
                    "network {net} is not attached to router {}; attach it first",
                    r.name
                )));
            }
            Ok(net)
        };
        let mut n = self.clone();
        match self.kind.as_str() {
            "snat" => {
                let src = self
                    .source
                    .as_deref()
                    .ok_or_else(|| NetError::Invalid("an snat rule needs --source CIDR".into()))?;
                let (a, l) = v4_cidr(src)?;
                n.source = Some(format!("{a}/{l}"));
                let out = attached(&self.out, "--out")?;
                if let Some(to) = &self.to {
                    let ip = v4(to, "SNAT address")?;
                    if !in_net(ip, subnet_of(st, &out)?) {
                        return Err(NetError::Invalid(format!(
                            "the SNAT address {ip} is outside network {out}'s subnet"
                        )));
                    }
                    n.to = Some(ip.to_string());
                }
                n.out = Some(out);
                if self.network.is_some() || self.proto.is_some() || self.port.is_some() {
                    return Err(NetError::Invalid(
                        "an snat rule takes --source, --out and --to only".into(),
                    ));
                }
            }
            "dnat" => {
                let net = attached(&self.network, "--in")?;
                let proto = self.proto.as_deref().unwrap_or("");
                if !matches!(proto, "tcp" | "udp") {
                    return Err(NetError::Invalid(format!(
                        "bad protocol {proto:?} for a port forward: use tcp or udp"
                    )));
                }
                let port = self.port.filter(|p| *p != 0).ok_or_else(|| {
                    NetError::Invalid("a dnat rule needs --port N (1-65535)".into())
                })?;
                let to = self.to.as_deref().unwrap_or("");
                let to: SocketAddrV4 = to.parse().map_err(|_| {
                    NetError::Invalid(format!(
                        "bad DNAT target {to:?}: use IP:PORT like 10.0.1.5:80"
                    ))
                })?;
                if to.port() == 0 {
                    return Err(NetError::Invalid("the DNAT target's port is 0".into()));
                }
                if let Some(o) = r.nat.iter().find(|o| {
                    o.kind == "dnat"
                        && o.network.as_deref() == Some(&net)
                        && o.proto.as_deref() == Some(proto)
                        && o.port == Some(port)
                }) {
                    return Err(NetError::Conflict(format!(
                        "rule {} forwards {proto} port {port} of {net} already; delete it first",
                        o.id
                    )));
                }
                n.network = Some(net);
                n.to = Some(to.to_string());
                if self.source.is_some() || self.out.is_some() {
                    return Err(NetError::Invalid(
                        "a dnat rule takes --in, --proto, --port and --to only".into(),
                    ));
                }
            }
            k => {
                return Err(NetError::Invalid(format!(
                    "bad NAT kind {k:?}: use snat or dnat"
                )))
            }
        }
        n.id = r.nat.iter().map(|o| o.id).max().unwrap_or(0) + 1;
        Ok(n)
    }

    fn rule(&self) -> Result<NatRule> {
        let bad = || NetError::Invalid(format!("NAT rule {} is incomplete", self.id));
        Ok(match self.kind.as_str() {
            "snat" => NatRule::Snat {
                source: v4_cidr(self.source.as_deref().ok_or_else(bad)?)?,
                out: self.out.clone().ok_or_else(bad)?,
                to: self
                    .to
                    .as_deref()
                    .map(|t| v4(t, "SNAT address"))
                    .transpose()?,
            },
            _ => {
                let to: SocketAddrV4 = self
                    .to
                    .as_deref()
                    .ok_or_else(bad)?
                    .parse()
                    .map_err(|_| bad())?;
                NatRule::Dnat {
                    network: self.network.clone().ok_or_else(bad)?,
                    proto: if self.proto.as_deref() == Some("udp") {
                        PROTO_UDP
                    } else {
                        PROTO_TCP
                    },
                    port: self.port.ok_or_else(bad)?,
                    to: (*to.ip(), to.port()),
                }
            }
        })
    }
}

impl RouterSpec {
    fn config(&self) -> Result<RouterConfig> {
        let routes = self
            .routes
            .iter()
            .map(|r| {
                let (net, len) = v4_cidr(&r.cidr)?;
                Ok(StaticRoute {
                    net,
                    len,
                    via: v4(&r.via, "next hop")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(RouterConfig {
            name: self.name.clone(),
            networks: self.networks.clone(),
            routes,
            nat: self.nat.iter().map(NatSpec::rule).collect::<Result<_>>()?,
        })
    }

    /// What keeps network `net` from being detached: routes and NAT rules through it.
    fn users_of(&self, st: &NetState, net: &str) -> Vec<String> {
        let subnet = subnet_of(st, net).ok();
        let mut v: Vec<String> = self
            .routes
            .iter()
            .filter(|r| {
                let via = r.via.parse().ok();
                matches!((via, subnet), (Some(ip), Some(s)) if in_net(ip, s))
            })
            .map(|r| format!("route {}", r.cidr))
            .collect();
        v.extend(
            self.nat
                .iter()
                .filter(|n| n.out.as_deref() == Some(net) || n.network.as_deref() == Some(net))
                .map(|n| format!("NAT rule {}", n.id)),
        );
        v
    }
}

/// The router a network is attached to, if any.
pub fn router_of<'a>(st: &'a NetState, net: &str) -> Option<&'a RouterSpec> {
    st.routers
        .iter()
        .find(|r| r.networks.iter().any(|n| n == net))
}

/// Refuses to delete a network a router is attached to.
pub fn check_unattached(st: &NetState, net: &str) -> Result<()> {
    match router_of(st, net) {
        Some(r) => Err(NetError::Conflict(format!(
            "network {net} is attached to router {}; detach it first \
             (`vireo net router detach {} {net}`)",
            r.name, r.name
        ))),
        None => Ok(()),
    }
}

/// Re-applies the saved routers at start; one that no longer fits is logged and left out.
pub fn restore(dp: &Datapath, st: &NetState) {
    for r in &st.routers {
        if let Err(e) = r.config().and_then(|c| dp.apply_router(&c)) {
            tracing::error!("router {} could not be re-created: {e}", r.name);
        }
    }
}

mod metrics;
mod ops;
pub(super) use ops::{api, methods};
