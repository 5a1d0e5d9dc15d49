//! The desired state the service persists (STATE_DIR/net.json): networks, their ports and
//! the ports' QoS. It is what a restarted service re-applies to a fresh datapath, so every
//! change is checked here first (the rules between objects: unique names, non-overlapping
//! subnets, a network exists before its ports) and saved atomically after the datapath took
//! it.

use super::validate::{self, Cidr};
use crate::datapath::dhcp::store::write_json_atomic;
use crate::datapath::{Addressing, PortConfig, PortVlan, QosConfig};
use crate::error::{NetError, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The file's name inside the state directory.
pub const STATE_FILE: &str = "net.json";

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
pub struct NetState {
    #[serde(default)]
    pub networks: Vec<NetworkSpec>,
    #[serde(default)]
    pub ports: Vec<PortSpec>,
    #[serde(default)]
    pub routers: Vec<super::router::RouterSpec>,
    #[serde(default)]
    pub firewall: super::firewall::FirewallState,
    #[serde(default)]
    pub lbs: Vec<super::lb::LbSpec>,
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub dhcp_options: std::collections::BTreeMap<String, super::dhcp::DhcpOptions>,
}

/// A network as created: an L2 segment, optionally a VLAN; the addressing is stored for the
/// router and DHCP to come (phase 1 only checks it).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub vlan: Option<u16>,
    #[serde(default)]
    pub subnet: Option<String>,
    #[serde(default)]
    pub gateway: Option<String>,
    #[serde(default)]
    pub dhcp: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PortSpec {
    pub name: String,
    pub network: String,
    /// The tap; empty for a vhost-user port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tap: String,
    /// The vhost-user socket, instead of a tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<String>,
    #[serde(default)]
    pub mac: Option<String>,
    /// Access port in this VLAN (default: the network's).
    #[serde(default)]
    pub vlan: Option<u16>,
    /// Trunk port carrying these VLANs tagged.
    #[serde(default)]
    pub trunk: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos: Option<QosConfig>,
}

impl NetworkSpec {
    /// The IPv4 addressing the datapath's endpoint uses (an IPv6 subnet has none yet).
    pub fn addressing(&self) -> Addressing {
        let subnet = self.subnet.as_deref().and_then(|s| Cidr::parse(s).ok());
        let v4 = |a: std::net::IpAddr| match a {
            std::net::IpAddr::V4(a) => Some(a),
            std::net::IpAddr::V6(_) => None,
        };
        Addressing {
            subnet: subnet.and_then(|c| Some((v4(c.addr)?, c.prefix))),
            gateway: self
                .gateway
                .as_deref()
                .and_then(|g| g.parse().ok())
                .and_then(v4),
        }
    }
}

impl PortSpec {
    pub fn datapath_config(&self) -> PortConfig {
        PortConfig {
            name: self.name.clone(),
            network: self.network.clone(),
            tap: self.tap.clone(),
            vhost_user: self.vhost_user.as_ref().map(std::path::PathBuf::from),
            mac: self.mac.clone(),
            vlan: match &self.trunk {
                Some(vlans) => PortVlan::Trunk(vlans.clone()),
                None => PortVlan::Access(self.vlan),
            },
        }
    }
}

impl NetState {
    /// The saved state, or an empty one when there is none yet.
    pub fn load(path: &Path) -> Result<NetState> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(NetState::default()),
            Err(source) => {
                return Err(NetError::Io {
                    context: format!("reading {}", path.display()),
                    source,
                })
            }
        };
        serde_json::from_slice(&text).map_err(|e| {
            NetError::Invalid(format!(
                "{} is not a valid network state ({e}); fix or move it away",
                path.display()
            ))
        })
    }

    /// Write to a temporary file, sync, rename over the old one: a crash leaves either the
    /// old state or the new one, never half of one.
    pub fn save(&self, path: &Path) -> Result<()> {
        write_json_atomic(path, self)
    }

    pub fn network(&self, name: &str) -> Result<&NetworkSpec> {
        self.networks
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| NetError::NotFound(format!("no network named {name:?}")))
    }

    pub fn port(&self, name: &str) -> Result<&PortSpec> {
        self.ports
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| NetError::NotFound(format!("no port named {name:?}")))
    }

    pub fn ports_of<'a>(&'a self, network: &'a str) -> impl Iterator<Item = &'a PortSpec> + 'a {
        self.ports.iter().filter(move |p| p.network == network)
    }

    /// Checks a new network against the syntax rules and the existing networks; returns it
    /// normalized.
    pub fn check_network(&self, n: &NetworkSpec) -> Result<NetworkSpec> {
        validate::name("network", &n.name)?;
        if let Some(v) = n.vlan {
            validate::vlan(v)?;
        }
        let mut n = n.clone();
        match &n.subnet {
            Some(s) => {
                let cidr = Cidr::parse(s)?;
                if let Some(gw) = &n.gateway {
                    n.gateway = Some(validate::gateway(&cidr, gw)?.to_string());
                }
                if let Some(range) = &n.dhcp {
                    validate::dhcp_range(&cidr, range)?;
                }
                for other in &self.networks {
                    let theirs = other.subnet.as_deref().map(Cidr::parse).transpose()?;
                    if theirs.is_some_and(|t| t.overlaps(&cidr)) {
                        return Err(NetError::Conflict(format!(
                            "the subnet {s} overlaps {} of network {}; choose a disjoint subnet",
                            other.subnet.as_deref().unwrap_or_default(),
                            other.name
                        )));
                    }
                }
            }
            None if n.gateway.is_some() || n.dhcp.is_some() => {
                return Err(NetError::Invalid(
                    "a gateway or DHCP range needs a subnet: add --subnet CIDR".into(),
                ))
            }
            None => {}
        }
        if self.networks.iter().any(|o| o.name == n.name) {
            return Err(NetError::Conflict(format!(
                "a network named {} exists already",
                n.name
            )));
        }
        Ok(n)
    }

    /// Checks a new port: its names, its network, its VLANs; returns it normalized.
    pub fn check_port(&self, p: &PortSpec) -> Result<PortSpec> {
        validate::name("port", &p.name)?;
        match &p.vhost_user {
            None => validate::tap(&p.tap)?,
            Some(_) if !p.tap.is_empty() => return Err(NetError::Invalid(
                "a port is either a tap (--tap) or a vhost-user socket (--vhost-user), not both"
                    .into(),
            )),
            Some(path) => check_vhost_user_socket(path)?,
        }
        let mut p = p.clone();
        if let Some(mac) = &p.mac {
            p.mac = Some(validate::mac(mac)?);
        }
        match (&p.vlan, &p.trunk) {
            (Some(_), Some(_)) => {
                return Err(NetError::Invalid(
                    "a port is either an access port (--vlan) or a trunk (--trunk), not both"
                        .into(),
                ))
            }
            (Some(v), None) => validate::vlan(*v)?,
            (None, Some(vlans)) if vlans.is_empty() => {
                return Err(NetError::Invalid(
                    "a trunk needs at least one VLAN: --trunk N,M,...".into(),
                ))
            }
            (None, Some(vlans)) => vlans.iter().try_for_each(|v| validate::vlan(*v))?,
            (None, None) => {}
        }
        self.network(&p.network)?;
        if self.ports.iter().any(|o| o.name == p.name) {
            return Err(NetError::Conflict(format!(
                "a port named {} exists already",
                p.name
            )));
        }
        if let Some(o) = p
            .vhost_user
            .as_ref()
            .and_then(|s| self.ports.iter().find(|o| o.vhost_user.as_ref() == Some(s)))
        {
            return Err(NetError::Conflict(format!(
                "the vhost-user socket {} belongs to port {} already; choose another path",
                o.vhost_user.as_deref().unwrap_or_default(),
                o.name
            )));
        }
        if let Some(o) = self
            .ports
            .iter()
            .find(|o| !p.tap.is_empty() && o.tap == p.tap)
        {
            return Err(NetError::Conflict(format!(
                "the tap {} belongs to port {} already; choose another --tap",
                p.tap, o.name
            )));
        }
        if let Some(qos) = &p.qos {
            check_qos(qos)?;
        }
        Ok(p)
    }
}

/// A burst without a rate limits nothing: refuse it rather than ignore it. The impairment
/// is checked as the datapath will take it.
pub fn check_qos(q: &QosConfig) -> Result<()> {
    if q.burst.is_some_and(|b| b > 0) && q.rate.unwrap_or(0) == 0 {
        return Err(NetError::Invalid(
            "a burst without a rate limits nothing: give --rate too".into(),
        ));
    }
    crate::datapath::impair::from_qos("", q).map(|_| ())
}

/// A vhost-user socket path: absolute (the service's working directory is not the
/// client's), short enough for a Unix socket address, in an existing directory.
fn check_vhost_user_socket(path: &str) -> Result<()> {
    let p = Path::new(path);
    if !p.is_absolute() {
        return Err(NetError::Invalid(format!(
            "vhost-user socket {path:?}: give an absolute path"
        )));
    }
    // sun_path holds 108 bytes with the terminating NUL.
    if path.len() > 107 {
        return Err(NetError::Invalid(format!(
            "vhost-user socket {path:?}: longer than a Unix socket path may be (107 bytes)"
        )));
    }
    if !p.parent().is_some_and(|d| d.is_dir()) {
        return Err(NetError::Invalid(format!(
            "vhost-user socket {path:?}: its directory does not exist; create it first"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(name: &str, subnet: Option<&str>) -> NetworkSpec {
        NetworkSpec {
            name: name.into(),
            vlan: None,
            subnet: subnet.map(String::from),
            gateway: None,
            dhcp: None,
        }
    }

    fn port(name: &str, network: &str, tap: &str) -> PortSpec {
        PortSpec {
            name: name.into(),
            network: network.into(),
            tap: tap.into(),
            vhost_user: None,
            mac: None,
            vlan: None,
            trunk: None,
            qos: None,
        }
    }

    #[test]
    fn cross_object_rules() {
        let mut st = NetState::default();
        st.networks
            .push(st.check_network(&net("a", Some("10.1.0.0/16"))).unwrap());
        let e = st
            .check_network(&net("b", Some("10.1.5.0/24")))
            .unwrap_err();
        assert_eq!(e.http_status(), 409);
        let e = st.check_network(&net("a", None)).unwrap_err();
        assert_eq!(e.http_status(), 409);
        let mut gw_only = net("c", None);
        gw_only.gateway = Some("10.3.0.1".into());
        assert_eq!(st.check_network(&gw_only).unwrap_err().http_status(), 400);

        st.ports.push(st.check_port(&port("p", "a", "t0")).unwrap());
        assert_eq!(
            st.check_port(&port("p", "a", "t1"))
                .unwrap_err()
                .http_status(),
            409
        );
        assert_eq!(
            st.check_port(&port("q", "a", "t0"))
                .unwrap_err()
                .http_status(),
            409
        );
        assert_eq!(
            st.check_port(&port("q", "zz", "t1"))
                .unwrap_err()
                .http_status(),
            404
        );
        let mut both = port("q", "a", "t1");
        both.vlan = Some(5);
        both.trunk = Some(vec![6]);
        assert_eq!(st.check_port(&both).unwrap_err().http_status(), 400);
    }

    #[test]
    fn state_round_trips_through_the_file() {
        let dir = std::env::temp_dir().join(format!("vireo-net-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(STATE_FILE);
        assert_eq!(NetState::load(&path).unwrap(), NetState::default());
        let mut st = NetState::default();
        st.networks.push(net("a", Some("10.1.0.0/16")));
        let mut p = port("p", "a", "t0");
        p.qos = Some(QosConfig {
            rate: Some(1_000_000),
            ..QosConfig::default()
        });
        st.ports.push(p);
        st.save(&path).unwrap();
        assert_eq!(NetState::load(&path).unwrap(), st);
        std::fs::write(&path, b"{ not json").unwrap();
        assert!(NetState::load(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
