//! Load balancers as the service keeps them: `/api/v1/lbs/...`, persisted in net.json
//! (`lbs`), re-created at start, their counters in `/metrics`.

use super::api::body;
use super::config::NetState;
use super::{validate, Net};
use crate::datapath::lb::{Affinity, Algorithm, LbConfig, LbInfo, Proto};
use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::fmt::Write;
use std::net::SocketAddrV4;
use std::time::Duration;
use vireo_http::{Reply, Request};

/// The default health-check interval (HAProxy's `inter`).
pub const DEFAULT_INTERVAL_SECS: u64 = 2;

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheck {
    Tcp,
}

/// A load balancer as created (and saved).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LbSpec {
    pub name: String,
    pub network: String,
    /// `IP:PORT`.
    pub vip: String,
    #[serde(default)]
    pub proto: Proto,
    /// `IP:PORT` each.
    pub backends: Vec<String>,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default)]
    pub affinity: Affinity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<HealthCheck>,
    /// Seconds between health checks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<u64>,
}

/// `POST /api/v1/lbs/LB/backends`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBackend {
    backend: String,
}

fn sockaddr(what: &str, s: &str) -> Result<SocketAddrV4> {
    let a: SocketAddrV4 = s.trim().parse().map_err(|_| {
        NetError::Invalid(format!(
            "bad {what} {s:?}: use IPv4-ADDRESS:PORT like 10.0.1.10:80"
        ))
    })?;
    if a.port() == 0 || a.ip().is_unspecified() || a.ip().is_broadcast() {
        return Err(NetError::Invalid(format!(
            "bad {what} {s}: the address and the port must not be 0 (or broadcast)"
        )));
    }
    Ok(a)
}

impl LbSpec {
    /// The datapath's configuration; checks every field.
    pub fn config(&self) -> Result<LbConfig> {
        validate::name("load balancer", &self.name)?;
        let vip = sockaddr("VIP", &self.vip)?;
        let mut backends = Vec::new();
        for b in &self.backends {
            let b = sockaddr("backend", b)?;
            if backends.contains(&b) {
                return Err(NetError::Invalid(format!("backend {b} is given twice")));
            }
            backends.push(b);
        }
        let health_interval = match (self.health_check, self.interval) {
            (None, Some(_)) => {
                return Err(NetError::Invalid(
                    "--interval needs --health-check tcp".into(),
                ))
            }
            (Some(_), Some(i)) if !(1..=3600).contains(&i) => {
                return Err(NetError::Invalid(format!(
                    "health-check interval {i} s is out of range: use 1 to 3600"
                )))
            }
            (Some(HealthCheck::Tcp), i) => {
                Some(Duration::from_secs(i.unwrap_or(DEFAULT_INTERVAL_SECS)))
            }
            (None, None) => None,
        };
        if health_interval.is_some() && self.proto == Proto::Udp {
            return Err(NetError::Invalid(
                "TCP health checks need a TCP load balancer (--proto tcp)".into(),
            ));
        }
        Ok(LbConfig {
            name: self.name.clone(),
            network: self.network.clone(),
            vip,
            proto: self.proto,
            backends,
            algorithm: self.algorithm,
            affinity: self.affinity,
            health_interval,
        })
    }
}

/// At start: re-creates the saved load balancers (one that fails is logged and skipped).
pub(super) fn restore(dp: &Datapath, saved: &NetState) {
    for l in &saved.lbs {
        if let Err(e) = l.config().and_then(|c| dp.add_lb(c)) {
            tracing::error!("load balancer {} could not be re-created: {e}", l.name);
        }
    }
}

/// A network with load balancers cannot be deleted.
pub(super) fn check_network_unused(saved: &NetState, network: &str) -> Result<()> {
    let lbs: Vec<&str> = saved
        .lbs
        .iter()
        .filter(|l| l.network == network)
        .map(|l| l.name.as_str())
        .collect();
    if !lbs.is_empty() {
        return Err(NetError::Conflict(format!(
            "network {network} has load balancers ({}); delete them first",
            lbs.join(", ")
        )));
    }
    Ok(())
}

/// `/api/v1/lbs/...`.
pub(super) fn api(net: &Net, req: &Request, s: &[&str]) -> Option<Result<Reply>> {
    Some(match (s, req.method.as_str()) {
        (["lbs"], "GET") => Ok(Reply::ok(net.lbs())),
        (["lbs"], "POST") => body::<LbSpec>(
            req,
            r#"{"name": "web", "network": "blue", "vip": "10.0.1.100:80", "backends": ["10.0.1.11:8080"]}"#,
        )
        .and_then(|l| net.create_lb(&l))
        .map(|v| Reply::with_status(201, v)),
        (["lbs", l], "GET") => net.lb(l).map(Reply::ok),
        (["lbs", l], "DELETE") => net.delete_lb(l).map(|()| Reply::no_content()),
        (["lbs", l, "backends"], "POST") => {
            body::<NewBackend>(req, r#"{"backend": "10.0.1.12:8080"}"#)
                .and_then(|b| net.lb_backend(l, &b.backend, true))
                .map(Reply::ok)
        }
        (["lbs", l, "backends", b], "DELETE") => net.lb_backend(l, b, false).map(Reply::ok),
        _ => return None,
    })
}

/// The methods each load-balancer path takes; mirrors [`api`].
pub(super) fn methods(s: &[&str]) -> &'static [&'static str] {
    match s {
        ["lbs"] => &["GET", "POST"],
        ["lbs", _] => &["GET", "DELETE"],
        ["lbs", _, "backends"] => &["POST"],
        ["lbs", _, "backends", _] => &["DELETE"],
        _ => &[],
    }
}

fn info_json(i: &LbInfo, spec: Option<&LbSpec>) -> Value {
    json!({
        "name": i.config.name, "network": i.config.network, "vip": i.config.vip.to_string(),
        "proto": i.config.proto, "algorithm": i.config.algorithm,
        "affinity": i.config.affinity,
        "health_check": spec.and_then(|s| s.health_check),
        "interval": i.config.health_interval.map(|d| d.as_secs()),
        "backends": i.backend_state.iter().map(|b| json!({
            "address": b.address.to_string(), "up": b.up, "active": b.active,
            "connections": b.connections,
        })).collect::<Vec<_>>(),
        "tracked": i.tracked, "no_backend": i.no_backend, "table_full": i.table_full,
        "stray": i.stray,
    })
}

impl Net {
    pub fn lbs(&self) -> Value {
        let c = self.control();
        json!(self
            .datapath
            .lb_infos()
            .iter()
            .map(|i| info_json(i, c.saved.lbs.iter().find(|l| l.name == i.config.name)))
            .collect::<Vec<_>>())
    }

    pub fn lb(&self, name: &str) -> Result<Value> {
        let c = self.control();
        let spec = c.saved.lbs.iter().find(|l| l.name == name);
        Ok(info_json(&self.datapath.lb_info(name)?, spec))
    }

    pub fn create_lb(&self, spec: &LbSpec) -> Result<Value> {
        let mut c = self.control();
        let cfg = spec.config()?;
        c.saved.network(&spec.network)?;
        if c.saved.lbs.iter().any(|l| l.name == spec.name) {
            return Err(NetError::Conflict(format!(
                "a load balancer named {} exists already",
                spec.name
            )));
        }
        self.datapath.add_lb(cfg)?;
        let mut next = c.saved.clone();
        next.lbs.push(spec.clone());
        self.commit(&mut c, next, || {
            let _ = self.datapath.remove_lb(&spec.name);
        })?;
        tracing::info!("created load balancer {}", spec.name);
        Ok(info_json(&self.datapath.lb_info(&spec.name)?, Some(spec)))
    }

    pub fn delete_lb(&self, name: &str) -> Result<()> {
        let mut c = self.control();
        let spec = c
            .saved
            .lbs
            .iter()
            .find(|l| l.name == name)
            .cloned()
            .ok_or_else(|| NetError::NotFound(format!("no load balancer named {name:?}")))?;
        match self.datapath.remove_lb(name) {
            // Not running (it could not be re-created at start): only forgotten.
            Ok(()) | Err(NetError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let mut next = c.saved.clone();
        next.lbs.retain(|l| l.name != name);
        self.commit(&mut c, next, || {
            if let Ok(cfg) = spec.config() {
                let _ = self.datapath.add_lb(cfg);
            }
        })?;
        tracing::info!("deleted load balancer {name}");
        Ok(())
    }

    /// Adds (`add`) or removes a backend.
    pub fn lb_backend(&self, name: &str, backend: &str, add: bool) -> Result<Value> {
        let mut c = self.control();
        let Some(i) = c.saved.lbs.iter().position(|l| l.name == name) else {
            return Err(NetError::NotFound(format!(
                "no load balancer named {name:?}"
            )));
        };
        let b = sockaddr("backend", backend)?;
        let mut next = c.saved.clone();
        let spec = &mut next.lbs[i];
        if add {
            self.datapath.lb_add_backend(name, b)?;
            spec.backends.push(b.to_string());
        } else {
            self.datapath.lb_remove_backend(name, b)?;
            spec.backends
                .retain(|s| s.parse::<SocketAddrV4>().ok() != Some(b));
        }
        let spec = spec.clone();
        self.commit(&mut c, next, || {
            let _ = if add {
                self.datapath.lb_remove_backend(name, b)
            } else {
                self.datapath.lb_add_backend(name, b)
            };
        })?;
        Ok(info_json(&self.datapath.lb_info(name)?, Some(&spec)))
    }

    /// The load balancers' counters in the Prometheus text format.
    pub fn lb_metrics(&self) -> String {
        let infos = self.datapath.lb_infos();
        let mut out = String::new();
        let metrics: [(&str, &str, &str); 3] = [
            (
                "vireo_net_lb_backend_connections_total",
                "counter",
                "Connections the load balancer gave the backend.",
            ),
            (
                "vireo_net_lb_backend_active",
                "gauge",
                "Open connections of the backend.",
            ),
            (
                "vireo_net_lb_backend_up",
                "gauge",
                "1 if the backend is healthy.",
            ),
        ];
        for (i, (name, ty, help)) in metrics.iter().enumerate() {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
            for l in &infos {
                for b in &l.backend_state {
                    let v = match i {
                        0 => b.connections,
                        1 => b.active as u64,
                        _ => u64::from(b.up),
                    };
                    let _ = writeln!(
                        out,
                        "{name}{{lb=\"{}\",backend=\"{}\"}} {v}",
                        l.config.name, b.address
                    );
                }
            }
        }
        let name = "vireo_net_lb_no_backend_total";
        let _ = writeln!(
            out,
            "# HELP {name} New connections refused: no healthy backend.\n# TYPE {name} counter"
        );
        for l in &infos {
            let _ = writeln!(out, "{name}{{lb=\"{}\"}} {}", l.config.name, l.no_backend);
        }
        out
    }
}
