//! The DHCP servers of a datapath: one per network that has a range, and the lease file
//! they share.

use super::store::LeaseStore;
use super::{DhcpConfig, DhcpServer};
use crate::datapath::endpoint::{NetEndpoint, Stage};
use crate::datapath::lock;
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

/// The DHCP servers of a datapath's networks, and where their leases are saved.
#[derive(Default)]
pub struct Registry {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    servers: HashMap<String, (Arc<NetEndpoint>, Arc<DhcpServer>)>,
    store: Option<Arc<LeaseStore>>,
}

impl Datapath {
    /// Saves the DHCP leases in `path` from now on, and takes back those saved there.
    /// Call before [`Datapath::set_dhcp`]: servers made earlier keep theirs in memory.
    pub fn set_lease_file(&self, path: &Path) -> Result<()> {
        let store = Arc::new(LeaseStore::open(path)?);
        lock(&self.dhcp.inner).store = Some(store);
        Ok(())
    }

    /// Starts (or replaces) network `net`'s DHCP server.
    pub fn set_dhcp(&self, net: &str, cfg: DhcpConfig) -> Result<()> {
        let ep = self.endpoint(net)?;
        let mut r = lock(&self.dhcp.inner);
        let server = Arc::new(DhcpServer::new(&ep, cfg, r.store.clone())?);
        if let Some((old_ep, old)) = r.servers.remove(net) {
            let old: Arc<dyn Stage> = old;
            old_ep.remove_stage(&old);
        }
        ep.add_stage(server.clone());
        r.servers.insert(net.to_string(), (ep, server));
        tracing::info!(
            "dhcp {net}: serving {}-{}",
            r.servers[net].1.cfg.first,
            r.servers[net].1.cfg.last
        );
        Ok(())
    }

    /// Stops network `net`'s DHCP server, if it has one, and forgets its leases.
    pub fn remove_dhcp(&self, net: &str) {
        let mut r = lock(&self.dhcp.inner);
        if let Some((ep, old)) = r.servers.remove(net) {
            let old: Arc<dyn Stage> = old;
            ep.remove_stage(&old);
            if let Some(s) = &r.store {
                s.update(net, Vec::new());
            }
        }
    }

    /// Network `net`'s DHCP server.
    pub fn dhcp(&self, net: &str) -> Result<Arc<DhcpServer>> {
        lock(&self.dhcp.inner)
            .servers
            .get(net)
            .map(|(_, s)| s.clone())
            .ok_or_else(|| {
                NetError::NotFound(format!(
                    "network {net:?} has no DHCP server; create it with --dhcp FIRST-LAST"
                ))
            })
    }
}
