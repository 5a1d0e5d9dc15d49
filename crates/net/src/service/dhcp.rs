//! The networks' DHCP servers as the service runs them: a network created with
//! `--dhcp FIRST-LAST` gets one (its leases in STATE_DIR/leases.json), deleting the network
//! stops it, and its leases are shown by `GET /api/v1/networks/NET/leases` and in the
//! network's info. `PUT /api/v1/networks/NET/dhcp` sets its options (DNS servers, lease
//! time), kept in net.json (`dhcp_options`).

use super::config::{NetState, NetworkSpec};
use super::validate::{self, Cidr};
use super::Net;
use crate::datapath::dhcp::pool::Lease;
use crate::datapath::dhcp::{store::LEASES_FILE, unix_now, DhcpConfig, DEFAULT_LEASE_SECS};
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::Path;

/// Leases last at least a minute and at most a week.
const LEASE_SECS: std::ops::RangeInclusive<u32> = 60..=7 * 24 * 3600;

/// What a network's DHCP server gives besides addresses (none set: the defaults).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(deny_unknown_fields)]
pub struct DhcpOptions {
    /// DNS servers (option 6); none: the option is not sent.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// Seconds (default 3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u32>,
}

/// The DHCP server network `n` asks for, if any, with `opts`.
pub(super) fn config(n: &NetworkSpec, opts: Option<&DhcpOptions>) -> Result<Option<DhcpConfig>> {
    let Some(range) = &n.dhcp else {
        return Ok(None);
    };
    let subnet = n.subnet.as_deref().ok_or_else(|| {
        NetError::Invalid("a DHCP range needs a subnet: add --subnet CIDR".into())
    })?;
    let (first, last) = validate::dhcp_range(&Cidr::parse(subnet)?, range)?;
    let opts = opts.cloned().unwrap_or_default();
    let lease_secs = opts.lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
    if !LEASE_SECS.contains(&lease_secs) {
        return Err(NetError::Invalid(format!(
            "lease time {lease_secs} s is out of range: use {} to {} seconds",
            LEASE_SECS.start(),
            LEASE_SECS.end()
        )));
    }
    let mut dns = Vec::new();
    for d in &opts.dns {
        dns.push(d.trim().parse::<Ipv4Addr>().map_err(|_| {
            NetError::Invalid(format!("bad DNS server {d:?}: use an IPv4 address"))
        })?);
    }
    if dns.len() > 8 {
        return Err(NetError::Invalid("at most 8 DNS servers".into()));
    }
    Ok(Some(DhcpConfig {
        first,
        last,
        lease_secs,
        dns,
    }))
}

/// Starts a new network `n`'s DHCP server if it has a range (after the network was added).
pub(super) fn apply(dp: &Datapath, n: &NetworkSpec) -> Result<()> {
    apply_with(dp, n, None)
}

fn apply_with(dp: &Datapath, n: &NetworkSpec, opts: Option<&DhcpOptions>) -> Result<()> {
    match config(n, opts)? {
        Some(cfg) => dp.set_dhcp(&n.name, cfg),
        None => Ok(()),
    }
}

/// At start: opens STATE_DIR/leases.json and starts the saved networks' servers. A server
/// that cannot start is logged; the service runs on without it.
pub(super) fn restore(dp: &Datapath, state_file: &Path, saved: &NetState) {
    let file = state_file.with_file_name(LEASES_FILE);
    if let Err(e) = dp.set_lease_file(&file) {
        tracing::error!("DHCP leases will not be kept across restarts: {e}");
    }
    for n in &saved.networks {
        if let Err(e) = apply_with(dp, n, saved.dhcp_options.get(&n.name)) {
            tracing::error!("network {}: no DHCP server: {e}", n.name);
        }
    }
}

/// Undoes the removal of network `n` (added again to the datapath): its server, with
/// `opts` and the `leases` it had (removing the network forgot them). Failures are logged:
/// this runs after another failure, which is the one reported.
pub(super) fn undo_remove(
    dp: &Datapath,
    n: &NetworkSpec,
    opts: Option<&DhcpOptions>,
    leases: Vec<Lease>,
) {
    if let Err(e) = apply_with(dp, n, opts) {
        tracing::error!("network {}: restoring the DHCP server: {e}", n.name);
        return;
    }
    if let Ok(srv) = dp.dhcp(&n.name) {
        srv.restore_leases(leases);
    }
}

/// The leases of network `name`'s server, for display: live ones with their seconds left.
pub(super) fn info(dp: &Datapath, name: &str) -> Option<Value> {
    let srv = dp.dhcp(name).ok()?;
    let now = unix_now();
    let leases: Vec<Value> = srv
        .leases()
        .into_iter()
        .filter(|l| l.expires > now)
        .map(|l| {
            json!({
                "ip": l.ip, "mac": l.mac, "client": l.client, "hostname": l.hostname,
                "expires": l.expires, "remaining_secs": l.expires - now,
            })
        })
        .collect();
    let c = srv.config();
    Some(json!({
        "range": format!("{}-{}", c.first, c.last),
        "lease_secs": c.lease_secs,
        "dns": c.dns,
        "leases": leases,
        "stats": srv.stats(),
    }))
}

impl Net {
    /// `GET /api/v1/networks/NET/leases`.
    pub fn leases(&self, name: &str) -> Result<Value> {
        self.datapath.endpoint(name)?;
        self.datapath.dhcp(name)?;
        info(&self.datapath, name)
            .map(|v| v["leases"].clone())
            .ok_or_else(|| NetError::NotFound(format!("network {name:?} has no DHCP server")))
    }

    /// `PUT /api/v1/networks/NET/dhcp`: replaces the server's options (its leases stay).
    pub fn set_dhcp_options(&self, name: &str, opts: &DhcpOptions) -> Result<Value> {
        let mut c = self.control();
        let n = c.saved.network(name)?.clone();
        if n.dhcp.is_none() {
            return Err(NetError::Conflict(format!(
                "network {name} has no DHCP range; create it with --dhcp FIRST-LAST"
            )));
        }
        let old = c.saved.dhcp_options.get(name).cloned();
        apply_with(&self.datapath, &n, Some(opts))?;
        let mut next = c.saved.clone();
        if *opts == DhcpOptions::default() {
            next.dhcp_options.remove(name);
        } else {
            next.dhcp_options.insert(name.to_string(), opts.clone());
        }
        self.commit(&mut c, next, || {
            let _ = apply_with(&self.datapath, &n, old.as_ref());
        })?;
        tracing::info!("dhcp {name}: options {opts:?}");
        Ok(info(&self.datapath, name).unwrap_or_default())
    }
}
