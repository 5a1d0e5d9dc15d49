//! The datapath: networks, ports and the switch between them.
//!
//! - [`frame`]: parsing the virtio-net header and Ethernet/802.1Q header of a frame.
//! - [`switch`]: the forwarding decision and the MAC learning table.
//! - [`port`]: a port (a tap or a vhost-user socket), its forwarding thread, counters and QoS.
//! - [`vhost_user`]: vhost-user-net ports, the service as a VM's virtio-net backend.
//! - [`impair`]: delay, jitter and loss on a port's ingress (tc netem's model).
//!
//! Each port has a thread that blocks on its tap and forwards what it reads straight into
//! the destination taps. A later firewall or router stage goes into
//! [`switch::Switch::forward`], between the ingress classification and the output.

pub mod dhcp;
pub mod endpoint;
pub mod firewall;
pub mod frame;
pub mod impair;
pub mod lb;
pub mod packet;
pub mod port;
pub mod router;
pub mod switch;
pub(crate) mod tx_batch;
pub mod vhost_user;

use crate::error::{NetError, Result};
pub use endpoint::Addressing;
use endpoint::NetEndpoint;
use port::Port;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switch::Switch;
use vireo_virtio::net::{Tap, GUEST_OFFLOADS};
use vireo_virtio::rate_limiter::{Clock, MonotonicClock, TokenBucket};

/// How a port carries VLANs (802.1Q).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortVlan {
    /// Untagged frames on the wire; inside the switch they belong to this VLAN (the
    /// network's VLAN when the port doesn't name one; none when neither does).
    Access(Option<u16>),
    /// Tagged frames of these VLANs pass with their tags.
    Trunk(Vec<u16>),
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PortConfig {
    pub name: String,
    pub network: String,
    /// The tap interface the datapath creates (or attaches to) for this port; empty for a
    /// vhost-user port.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub tap: String,
    /// The vhost-user socket a VM's frontend connects to, instead of a tap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vhost_user: Option<std::path::PathBuf>,
    /// The MAC of the port's far end, if known (the VM's or namespace's interface).
    pub mac: Option<String>,
    pub vlan: PortVlan,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct QosConfig {
    /// Bits per second; 0 or None: unlimited.
    pub rate: Option<u64>,
    /// Bytes of burst.
    pub burst: Option<u64>,
    /// Impairment: milliseconds every frame from the port is held back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<u64>,
    /// Impairment: the delay varies uniformly by up to this many milliseconds either way
    /// (frames keep their order).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jitter: Option<u64>,
    /// Impairment: percentage of frames from the port dropped at random (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub loss: Option<f64>,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct PortStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Frames dropped: malformed, wrong VLAN, rate limit, full queue.
    pub drops: u64,
    /// A vhost-user port's frontend is connected now (None for a tap).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connected: Option<bool>,
    /// Frontends a vhost-user port has accepted so far (a VM restart is one more).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
}

struct Network {
    endpoint: Arc<NetEndpoint>,
}

/// What changes only through the API (the per-frame state is in [`Switch`]).
struct Control {
    networks: HashMap<String, Network>,
    next_id: u32,
    threads: HashMap<u32, std::thread::JoinHandle<()>>,
}

pub struct Datapath {
    switch: Arc<Switch>,
    control: Mutex<Control>,
    /// The networks' DHCP servers (see [`dhcp`]).
    dhcp: dhcp::Registry,
    /// The load balancers (see [`lb`]).
    lbs: lb::registry::Registry,
    /// The routers between networks (see [`router`]).
    routers: router::Routers,
}

impl Datapath {
    pub fn new() -> Arc<Datapath> {
        Datapath::with_clock(Box::new(MonotonicClock::new()))
    }

    /// A datapath whose MAC table ages by `clock`.
    pub fn with_clock(clock: Box<dyn Clock>) -> Arc<Datapath> {
        Arc::new(Datapath {
            switch: Arc::new(Switch::new(clock)),
            dhcp: dhcp::Registry::default(),
            lbs: Default::default(),
            routers: router::Routers::default(),
            control: Mutex::new(Control {
                networks: HashMap::new(),
                next_id: 1,
                threads: HashMap::new(),
            }),
        })
    }

    fn control(&self) -> std::sync::MutexGuard<'_, Control> {
        self.control.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ports(&self) -> Vec<Arc<Port>> {
        self.switch
            .ports
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn port(&self, name: &str) -> Result<Arc<Port>> {
        self.ports()
            .into_iter()
            .find(|p| p.config.name == name)
            .ok_or_else(|| NetError::NotFound(format!("no port {name:?}")))
    }

    /// A network: an isolated L2 segment. Frames never cross between networks, except
    /// through a router.
    pub fn add_network(&self, name: &str, vlan: Option<u16>, addressing: Addressing) -> Result<()> {
        check_name("network", name)?;
        if let Some(v) = vlan {
            check_vlan(v)?;
        }
        let mut c = self.control();
        if c.networks.contains_key(name) {
            return Err(NetError::Conflict(format!("network {name:?} exists")));
        }
        let id = c.next_id;
        c.next_id += 1;
        self.switch.firewall.name(id, Some(name));
        let endpoint = Arc::new(NetEndpoint::new(id, name, vlan, addressing));
        self.switch
            .endpoints
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, endpoint.clone());
        c.networks.insert(name.to_string(), Network { endpoint });
        Ok(())
    }

    /// Refused while the network has ports.
    pub fn remove_network(&self, name: &str) -> Result<()> {
        let mut c = self.control();
        if !c.networks.contains_key(name) {
            return Err(NetError::NotFound(format!("no network {name:?}")));
        }
        let ports: Vec<String> = self
            .ports()
            .iter()
            .filter(|p| p.config.network == name)
            .map(|p| p.config.name.clone())
            .collect();
        if !ports.is_empty() {
            return Err(NetError::Conflict(format!(
                "network {name:?} has ports ({}); delete them first",
                ports.join(", ")
            )));
        }
        if let Some(n) = c.networks.remove(name) {
            self.switch
                .endpoints
                .write()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&n.endpoint.id);
            self.switch.firewall.name(n.endpoint.id, None);
        }
        self.remove_dhcp(name);
        self.remove_lbs_of(name);
        Ok(())
    }

    /// Creates the port's tap (or attaches to an existing one) and starts forwarding.
    pub fn add_port(&self, cfg: &PortConfig) -> Result<()> {
        check_name("port", &cfg.name)?;
        if let Some(mac) = &cfg.mac {
            parse_mac(mac)?;
        }
        match &cfg.vlan {
            PortVlan::Access(Some(v)) => check_vlan(*v)?,
            PortVlan::Access(None) => {}
            PortVlan::Trunk(vids) if vids.is_empty() => {
                return Err(NetError::Invalid(format!(
                    "port {:?}: a trunk needs at least one VLAN",
                    cfg.name
                )))
            }
            PortVlan::Trunk(vids) => vids.iter().try_for_each(|v| check_vlan(*v))?,
        }
        let mut c = self.control();
        let Some(net) = c.networks.get(&cfg.network) else {
            return Err(NetError::NotFound(format!(
                "no network {:?}; create it first (`vireo net network create {}`)",
                cfg.network, cfg.network
            )));
        };
        let endpoint = net.endpoint.clone();
        let vlan = match &cfg.vlan {
            PortVlan::Access(v) => PortVlan::Access(v.or(endpoint.vlan)),
            trunk => trunk.clone(),
        };
        let net_id = endpoint.id;
        for p in self.ports() {
            if p.config.name == cfg.name {
                return Err(NetError::Conflict(format!("port {:?} exists", cfg.name)));
            }
            port::check_link_conflict(&p, cfg)?;
        }
        let link = port::open_link(cfg)?;
        let id = c.next_id;
        c.next_id += 1;
        self.switch.firewall.name(id, Some(&cfg.name));
        let port = Port::new(id, net_id, cfg.clone(), vlan, endpoint, link).map_err(|source| {
            NetError::Io {
                context: format!("port {:?}: cannot create its stop event", cfg.name),
                source,
            }
        })?;
        let port = Arc::new(port);
        let (p, s) = (port.clone(), self.switch.clone());
        let thread = std::thread::Builder::new()
            .name(format!("net-{}", cfg.name))
            .spawn(move || port::run(p, s))
            .map_err(|source| NetError::Io {
                context: format!("port {:?}: cannot start its thread", cfg.name),
                source,
            })?;
        c.threads.insert(id, thread);
        self.switch
            .ports
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push(port);
        tracing::info!(
            "port {} ({}) added to network {}",
            cfg.name,
            port::describe(cfg),
            cfg.network
        );
        Ok(())
    }

    /// Stops forwarding and removes the tap if the datapath created it.
    pub fn remove_port(&self, name: &str) -> Result<()> {
        let mut c = self.control();
        let port = {
            let mut ports = self.switch.ports.write().unwrap_or_else(|e| e.into_inner());
            let Some(i) = ports.iter().position(|p| p.config.name == name) else {
                return Err(NetError::NotFound(format!("no port {name:?}")));
            };
            ports.remove(i)
        };
        port.stop();
        if let Some(t) = c.threads.remove(&port.id) {
            let _ = t.join();
        }
        port.impair.join();
        self.switch.firewall.name(port.id, None);
        // Only now: until its thread stopped, the port could learn addresses again.
        self.switch
            .macs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .forget_port(port.id);
        // The thread's reference is gone: this drop closes the tap, which the kernel then
        // deletes (unless it existed before the port, persistent).
        drop(port);
        tracing::info!("port {name} removed");
        Ok(())
    }

    pub fn set_qos(&self, port: &str, qos: &QosConfig) -> Result<()> {
        let p = self.port(port)?;
        let bytes_per_s = qos.rate.unwrap_or(0) / 8;
        if qos.rate.unwrap_or(0) > 0 && bytes_per_s == 0 {
            return Err(NetError::Invalid(format!(
                "port {port:?}: rate {} bit/s is below the smallest (8 bit/s)",
                qos.rate.unwrap_or(0)
            )));
        }
        let bucket = match qos.burst {
            _ if bytes_per_s == 0 => None,
            Some(burst) if burst > 0 => {
                let ns = u128::from(burst) * 1_000_000_000 / u128::from(bytes_per_s);
                let refill = Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX).max(1));
                TokenBucket::with_refill(burst, 0, refill)
            }
            _ => TokenBucket::per_second(bytes_per_s),
        };
        let impairment = impair::from_qos(port, qos)?;
        if !impairment.delay.is_zero() || !impairment.jitter.is_zero() {
            impair::Impair::ensure_thread(&p, &self.switch).map_err(|source| NetError::Io {
                context: format!("port {port:?}: cannot start its delay line"),
                source,
            })?;
        }
        p.set_qos(bucket);
        p.impair.set(impairment);
        Ok(())
    }

    pub fn port_stats(&self, port: &str) -> Result<PortStats> {
        Ok(self.port(port)?.stats())
    }

    /// The endpoint of network `name` (its router interface, VIPs, DHCP server live there).
    pub fn endpoint(&self, name: &str) -> Result<Arc<NetEndpoint>> {
        self.control()
            .networks
            .get(name)
            .map(|n| n.endpoint.clone())
            .ok_or_else(|| NetError::NotFound(format!("no network {name:?}")))
    }

    /// The neighbours the endpoint of network `name` knows: (address, MAC, age in seconds).
    pub fn neighbours(&self, name: &str) -> Result<Vec<(std::net::Ipv4Addr, [u8; 6], u64)>> {
        Ok(self.endpoint(name)?.neighbours())
    }

    /// The switch (for the stages above it, which emit frames through it).
    pub fn switch(&self) -> &Arc<Switch> {
        &self.switch
    }

    /// (MAC, network, port, seconds since last seen) of the learned addresses.
    pub fn mac_table(&self) -> Vec<(String, String, String, u64)> {
        let ports = self.ports();
        let entries = self
            .switch
            .macs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entries();
        entries
            .into_iter()
            .filter_map(|e| {
                let p = ports.iter().find(|p| p.id == e.port)?;
                Some((
                    format_mac(&e.mac),
                    p.config.network.clone(),
                    p.config.name.clone(),
                    e.age.as_secs(),
                ))
            })
            .collect()
    }
}

impl Drop for Datapath {
    fn drop(&mut self) {
        let names: Vec<String> = self.ports().iter().map(|p| p.config.name.clone()).collect();
        for n in names {
            let _ = self.remove_port(&n);
        }
    }
}

fn open_tap(name: &str) -> Result<Tap> {
    use vireo_virtio::net::NetError as TapError;
    let tap = Tap::open(name).map_err(|e| match e {
        TapError::BadName { .. } | TapError::NameTooLong { .. } => NetError::Invalid(e.to_string()),
        TapError::Busy { .. } | TapError::NotATap { .. } => NetError::Conflict(e.to_string()),
        e => NetError::Io {
            context: format!("cannot open tap {name}"),
            source: std::io::Error::other(e),
        },
    })?;
    // Let the far end's stack hand us checksum-partial 64 KiB TSO frames: they cross the
    // switch whole, their virtio-net header passed through to the destination tap.
    if tap.has_offloads() {
        if let Err(e) = tap.set_offload(GUEST_OFFLOADS) {
            tracing::warn!("tap {name}: no offloads, forwarding will be slower: {e}");
        }
    }
    Ok(tap)
}

fn check_name(what: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if !ok {
        return Err(NetError::Invalid(format!(
            "{what} name {name:?}: use 1 to 64 letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(())
}

fn check_vlan(v: u16) -> Result<()> {
    if !(1..=4094).contains(&v) {
        return Err(NetError::Invalid(format!(
            "VLAN id {v} is out of range: use 1 to 4094"
        )));
    }
    Ok(())
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Result<[u8; 6]> {
    let bad = || {
        NetError::Invalid(format!(
            "MAC address {s:?}: expected six hex bytes like 02:00:00:00:00:01"
        ))
    };
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(mac)
}

pub use vireo_virtio::net::format_mac;

/// Locks `m` even if a thread panicked holding it: one panic must not take every later
/// user of the lock down with it. Shared by the datapath's modules.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
