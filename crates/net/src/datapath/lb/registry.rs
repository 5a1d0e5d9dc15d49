//! The load balancers of a datapath: creating one (its VIP owned by the network's endpoint,
//! its stage added there, its health checker started), changing its pool, deleting it.

use super::{health, LbConfig, LbInfo, LoadBalancer};
use crate::datapath::endpoint::{NetEndpoint, Stage};
use crate::datapath::lock;
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use std::collections::BTreeMap;
use std::net::SocketAddrV4;
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

#[derive(Default)]
pub struct Registry {
    lbs: Mutex<BTreeMap<String, Entry>>,
}

struct Entry {
    lb: Arc<LoadBalancer>,
    ep: Arc<NetEndpoint>,
    checker: Option<(Sender<()>, JoinHandle<()>)>,
}

impl Drop for Entry {
    fn drop(&mut self) {
        let stage: Arc<dyn Stage> = self.lb.clone();
        self.ep.remove_stage(&stage);
        if let Some((stop, thread)) = self.checker.take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

/// Backends are hosts of the load balancer's network (it reaches them by ARP), other than
/// the endpoint's own addresses.
fn check_backend(ep: &NetEndpoint, lb: &str, b: SocketAddrV4) -> Result<()> {
    if !ep.addressing.contains(*b.ip()) || ep.owns(*b.ip()) {
        return Err(NetError::Invalid(format!(
            "backend {b} of {lb}: use a host address inside network {}'s subnet (not its \
             gateway or a VIP)",
            ep.name
        )));
    }
    Ok(())
}

impl Datapath {
    /// Starts a load balancer. Its VIP must be inside the network's subnet and not its
    /// gateway, and no other load balancer may have the same VIP, port and protocol.
    pub fn add_lb(&self, cfg: LbConfig) -> Result<()> {
        let ep = self.endpoint(&cfg.network)?;
        let vip = *cfg.vip.ip();
        if !ep.addressing.contains(vip) {
            return Err(NetError::Invalid(format!(
                "the VIP {vip} is outside network {}'s subnet; choose an address inside it \
                 (create the network with --subnet)",
                cfg.network
            )));
        }
        if ep.addressing.gateway == Some(vip) {
            return Err(NetError::Invalid(format!(
                "the VIP {vip} is network {}'s gateway; choose another address",
                cfg.network
            )));
        }
        if cfg.backends.is_empty() {
            return Err(NetError::Invalid(
                "a load balancer needs at least one --backend IP:PORT".into(),
            ));
        }
        for b in &cfg.backends {
            check_backend(&ep, &cfg.name, *b)?;
        }
        let mut lbs = lock(&self.lbs.lbs);
        if lbs.contains_key(&cfg.name) {
            return Err(NetError::Conflict(format!(
                "a load balancer named {} exists already",
                cfg.name
            )));
        }
        if let Some(o) = lbs
            .values()
            .map(|e| e.lb.config())
            .find(|o| o.vip == cfg.vip && o.proto == cfg.proto && o.network == cfg.network)
        {
            return Err(NetError::Conflict(format!(
                "load balancer {} serves {} already; choose another VIP or port",
                o.name, o.vip
            )));
        }
        let probe_src = ep.addressing.gateway.unwrap_or(vip);
        let lb = Arc::new(LoadBalancer::new(cfg.clone(), probe_src));
        let checker = match cfg.health_interval {
            Some(every) => Some(
                health::spawn(
                    Arc::downgrade(&lb),
                    cfg.name.clone(),
                    self.switch().clone(),
                    ep.clone(),
                    every,
                )
                .map_err(|source| NetError::Io {
                    context: format!("load balancer {}: starting its health checks", cfg.name),
                    source,
                })?,
            ),
            None => None,
        };
        ep.own(vip);
        ep.add_stage(lb.clone());
        lbs.insert(cfg.name.clone(), Entry { lb, ep, checker });
        tracing::info!(
            "load balancer {}: {} {:?} over {} backend(s) in {}",
            cfg.name,
            cfg.vip,
            cfg.proto,
            cfg.backends.len(),
            cfg.network
        );
        Ok(())
    }

    /// Stops a load balancer (the VIP stops answering unless another one uses it).
    pub fn remove_lb(&self, name: &str) -> Result<()> {
        let mut lbs = lock(&self.lbs.lbs);
        let e = lbs
            .remove(name)
            .ok_or_else(|| NetError::NotFound(format!("no load balancer named {name:?}")))?;
        let vip = *e.lb.vip.ip();
        let shared = lbs
            .values()
            .any(|o| *o.lb.vip.ip() == vip && Arc::ptr_eq(&o.ep, &e.ep));
        if !shared {
            e.ep.disown(vip);
        }
        drop(lbs);
        drop(e);
        tracing::info!("load balancer {name} removed");
        Ok(())
    }

    /// Removes the load balancers of a network that goes away.
    pub(crate) fn remove_lbs_of(&self, network: &str) {
        let names: Vec<String> = lock(&self.lbs.lbs)
            .iter()
            .filter(|(_, e)| e.ep.name == network)
            .map(|(n, _)| n.clone())
            .collect();
        for n in names {
            let _ = self.remove_lb(&n);
        }
    }

    fn lb(&self, name: &str) -> Result<Arc<LoadBalancer>> {
        lock(&self.lbs.lbs)
            .get(name)
            .map(|e| e.lb.clone())
            .ok_or_else(|| NetError::NotFound(format!("no load balancer named {name:?}")))
    }

    pub fn lb_add_backend(&self, name: &str, backend: SocketAddrV4) -> Result<()> {
        let lb = self.lb(name)?;
        let ep = self.endpoint(&lb.config().network)?;
        check_backend(&ep, name, backend)?;
        if !lb.add_backend(backend) {
            return Err(NetError::Conflict(format!(
                "{backend} is a backend of {name} already"
            )));
        }
        Ok(())
    }

    /// Takes a backend out of the pool; its open connections keep working.
    pub fn lb_remove_backend(&self, name: &str, backend: SocketAddrV4) -> Result<()> {
        let lb = self.lb(name)?;
        if lb.config().backends == [backend] {
            return Err(NetError::Conflict(format!(
                "{backend} is the last backend of {name}; add another first, or delete the \
                 load balancer"
            )));
        }
        if !lb.remove_backend(backend) {
            return Err(NetError::NotFound(format!(
                "{backend} is not a backend of {name}"
            )));
        }
        Ok(())
    }

    pub fn lb_info(&self, name: &str) -> Result<LbInfo> {
        Ok(self.lb(name)?.info())
    }

    pub fn lb_infos(&self) -> Vec<LbInfo> {
        lock(&self.lbs.lbs).values().map(|e| e.lb.info()).collect()
    }
}
