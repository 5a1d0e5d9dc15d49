//! What the API does: each change is checked against the desired state, applied to the
//! datapath, then saved; if saving fails the datapath change is undone, so the file and the
//! running switch never disagree about what exists.

use super::config::{check_qos, NetState, NetworkSpec, PortSpec};
use super::{Control, Net};
use crate::datapath::{Datapath, PortStats, QosConfig};
use crate::error::{NetError, Result};
use serde_json::{json, Value};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

impl Net {
    /// Loads the saved state and applies it to `datapath`. A port that cannot be re-created
    /// (its tap name is taken now, say) is logged and kept as inactive rather than
    /// failing the whole service or being forgotten.
    pub fn restore(datapath: Arc<Datapath>, file: PathBuf) -> Result<Net> {
        let saved = NetState::load(&file)?;
        for n in &saved.networks {
            datapath.add_network(&n.name, n.vlan, n.addressing())?;
        }
        super::dhcp::restore(&datapath, &file, &saved);
        let mut inactive = HashSet::new();
        for p in &saved.ports {
            let applied = datapath
                .add_port(&p.datapath_config())
                .and_then(|()| match &p.qos {
                    Some(q) => datapath.set_qos(&p.name, q),
                    None => Ok(()),
                });
            if let Err(e) = applied {
                tracing::error!(
                    "port {} (tap {}) could not be re-created: {e}; delete and add it again",
                    p.name,
                    p.tap
                );
                let _ = datapath.remove_port(&p.name);
                inactive.insert(p.name.clone());
            }
        }
        super::router::restore(&datapath, &saved);
        super::lb::restore(&datapath, &saved);
        super::firewall::restore(&datapath, &saved, &file, &inactive);
        tracing::info!(
            "restored {} network(s) and {} port(s) from {}",
            saved.networks.len(),
            saved.ports.len() - inactive.len(),
            file.display()
        );
        Ok(Net {
            datapath,
            state: Mutex::new(Control { saved, inactive }),
            file,
        })
    }

    pub(super) fn control(&self) -> MutexGuard<'_, Control> {
        // A panic elsewhere must not take the API down with it: the state is only changed
        // after every fallible step, so it is consistent even then.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Saves `next`, or undoes the datapath change with `undo` and reports the failure.
    pub(super) fn commit(
        &self,
        c: &mut Control,
        next: NetState,
        undo: impl FnOnce(),
    ) -> Result<()> {
        if let Err(e) = next.save(&self.file) {
            undo();
            return Err(e);
        }
        c.saved = next;
        Ok(())
    }

    pub fn networks(&self) -> Value {
        let c = self.control();
        json!(c
            .saved
            .networks
            .iter()
            .map(|n| network_json(&c.saved, n))
            .collect::<Vec<_>>())
    }

    pub fn network(&self, name: &str) -> Result<Value> {
        let c = self.control();
        let mut v = network_json(&c.saved, c.saved.network(name)?);
        v["dhcp_server"] = super::dhcp::info(&self.datapath, name).unwrap_or_default();
        Ok(v)
    }

    pub fn create_network(&self, spec: &NetworkSpec) -> Result<Value> {
        let mut c = self.control();
        let n = c.saved.check_network(spec)?;
        self.datapath.add_network(&n.name, n.vlan, n.addressing())?;
        if let Err(e) = super::dhcp::apply(&self.datapath, &n) {
            let _ = self.datapath.remove_network(&n.name);
            return Err(e);
        }
        let mut next = c.saved.clone();
        next.networks.push(n.clone());
        self.commit(&mut c, next, || {
            let _ = self.datapath.remove_network(&n.name);
        })?;
        tracing::info!("created network {}", n.name);
        Ok(network_json(&c.saved, &n))
    }

    pub fn delete_network(&self, name: &str) -> Result<()> {
        let mut c = self.control();
        let n = c.saved.network(name)?.clone();
        super::router::check_unattached(&c.saved, name)?;
        super::lb::check_network_unused(&c.saved, name)?;
        super::firewall::check_unused(&c.saved, Some(name), None)?;
        let ports: Vec<&str> = c.saved.ports_of(name).map(|p| p.name.as_str()).collect();
        if !ports.is_empty() {
            return Err(NetError::Conflict(format!(
                "network {name} still has ports ({}); delete them first",
                ports.join(", ")
            )));
        }
        // Removing the network stops its DHCP server and forgets its leases: kept for the
        // undo.
        let leases = self
            .datapath
            .dhcp(name)
            .map(|s| s.leases())
            .unwrap_or_default();
        let opts = c.saved.dhcp_options.get(name).cloned();
        self.datapath.remove_network(name)?;
        let mut next = c.saved.clone();
        next.networks.retain(|o| o.name != name);
        next.dhcp_options.remove(name);
        self.commit(&mut c, next, || {
            if self
                .datapath
                .add_network(&n.name, n.vlan, n.addressing())
                .is_ok()
            {
                super::dhcp::undo_remove(&self.datapath, &n, opts.as_ref(), leases);
            }
        })?;
        tracing::info!("deleted network {name}");
        Ok(())
    }

    pub fn ports(&self) -> Value {
        let c = self.control();
        json!(c
            .saved
            .ports
            .iter()
            .map(|p| port_json(&c, p))
            .collect::<Vec<_>>())
    }

    pub fn port(&self, name: &str) -> Result<Value> {
        let c = self.control();
        Ok(port_json(&c, c.saved.port(name)?))
    }

    pub fn add_port(&self, spec: &PortSpec) -> Result<Value> {
        let mut c = self.control();
        let p = c.saved.check_port(spec)?;
        self.datapath.add_port(&p.datapath_config())?;
        if let Some(q) = &p.qos {
            if let Err(e) = self.datapath.set_qos(&p.name, q) {
                let _ = self.datapath.remove_port(&p.name);
                return Err(e);
            }
        }
        let mut next = c.saved.clone();
        next.ports.push(p.clone());
        self.commit(&mut c, next, || {
            let _ = self.datapath.remove_port(&p.name);
        })?;
        tracing::info!("added port {} (tap {}) to {}", p.name, p.tap, p.network);
        Ok(port_json(&c, &p))
    }

    pub fn delete_port(&self, name: &str) -> Result<()> {
        let mut c = self.control();
        let p = c.saved.port(name)?.clone();
        super::firewall::check_unused(&c.saved, None, Some(name))?;
        let was_active = !c.inactive.contains(name);
        if was_active {
            self.datapath.remove_port(name)?;
        }
        let mut next = c.saved.clone();
        next.ports.retain(|o| o.name != name);
        self.commit(&mut c, next, || {
            if was_active {
                let _ = self.datapath.add_port(&p.datapath_config());
            }
        })?;
        c.inactive.remove(name);
        tracing::info!("deleted port {name}");
        Ok(())
    }

    /// Replaces the port's limits (none given: unlimited).
    pub fn set_qos(&self, name: &str, qos: &QosConfig) -> Result<Value> {
        check_qos(qos)?;
        let mut c = self.control();
        let old = c.saved.port(name)?.qos.clone();
        if c.inactive.contains(name) {
            return Err(inactive(name));
        }
        self.datapath.set_qos(name, qos)?;
        let mut next = c.saved.clone();
        let unlimited = qos.rate.unwrap_or(0) == 0
            && qos.delay.unwrap_or(0) == 0
            && qos.jitter.unwrap_or(0) == 0
            && qos.loss.unwrap_or(0.0) == 0.0;
        for p in next.ports.iter_mut().filter(|p| p.name == name) {
            p.qos = (!unlimited).then(|| qos.clone());
        }
        self.commit(&mut c, next, || {
            let none = QosConfig::default();
            let _ = self.datapath.set_qos(name, old.as_ref().unwrap_or(&none));
        })?;
        Ok(port_json(&c, c.saved.port(name)?))
    }

    /// Every port's counters (inactive ports have none).
    pub fn stats(&self) -> Vec<(PortSpec, PortStats)> {
        let c = self.control();
        c.saved
            .ports
            .iter()
            .filter(|p| !c.inactive.contains(&p.name))
            .filter_map(|p| match self.datapath.port_stats(&p.name) {
                Ok(s) => Some((p.clone(), s)),
                Err(e) => {
                    tracing::warn!("counters of port {}: {e}", p.name);
                    None
                }
            })
            .collect()
    }

    pub fn port_stats(&self, name: &str) -> Result<Value> {
        let c = self.control();
        let p = c.saved.port(name)?;
        if c.inactive.contains(name) {
            return Err(inactive(name));
        }
        Ok(stats_json(p, &self.datapath.port_stats(name)?))
    }

    /// The learned MAC addresses.
    pub fn fdb(&self) -> Value {
        json!(self
            .datapath
            .mac_table()
            .into_iter()
            .map(|(mac, network, port, age)| json!({
                "mac": mac, "network": network, "port": port, "age_secs": age,
            }))
            .collect::<Vec<_>>())
    }

    /// At shutdown: the taps go away with the service (the state file keeps the ports).
    pub(super) fn remove_all_ports(&self) {
        let c = self.control();
        for p in c
            .saved
            .ports
            .iter()
            .filter(|p| !c.inactive.contains(&p.name))
        {
            if let Err(e) = self.datapath.remove_port(&p.name) {
                tracing::warn!("removing port {} at shutdown: {e}", p.name);
            }
        }
    }
}

fn inactive(name: &str) -> NetError {
    NetError::Conflict(format!(
        "port {name} is inactive (it could not be re-created at start); delete and add it again"
    ))
}

fn network_json(st: &NetState, n: &NetworkSpec) -> Value {
    let ports: Vec<&str> = st.ports_of(&n.name).map(|p| p.name.as_str()).collect();
    json!({
        "name": n.name, "vlan": n.vlan, "subnet": n.subnet, "gateway": n.gateway,
        "dhcp": n.dhcp, "ports": ports,
    })
}

fn port_json(c: &Control, p: &PortSpec) -> Value {
    json!({
        "name": p.name, "network": p.network, "tap": p.tap, "mac": p.mac,
        "vlan": p.vlan, "trunk": p.trunk,
        "rate": p.qos.as_ref().and_then(|q| q.rate),
        "burst": p.qos.as_ref().and_then(|q| q.burst),
        "delay": p.qos.as_ref().and_then(|q| q.delay),
        "jitter": p.qos.as_ref().and_then(|q| q.jitter),
        "loss": p.qos.as_ref().and_then(|q| q.loss),
        "vhost_user": p.vhost_user,
        "active": !c.inactive.contains(&p.name),
    })
}

/// A port's counters, with its tap's name or its vhost-user socket (as `/metrics` labels
/// them).
pub(super) fn stats_json(p: &PortSpec, s: &PortStats) -> Value {
    let mut v = json!({
        "port": p.name, "network": p.network,
        "rx_packets": s.rx_packets, "rx_bytes": s.rx_bytes,
        "tx_packets": s.tx_packets, "tx_bytes": s.tx_bytes, "drops": s.drops,
        "connected": s.connected, "connections": s.connections,
    });
    let (link, name) = super::metrics::link(p);
    v[link] = json!(name);
    v
}
