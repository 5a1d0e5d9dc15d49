//! The service's HTTP/JSON API (every route is documented, with examples, in
//! docs/net-api.md). Paths name objects (`/api/v1/networks/N`, `/api/v1/ports/P`), the
//! method says what to do with them, and errors are `{"error": message}` with the status of
//! [`NetError::http_status`]. `GET /metrics` serves the counters to Prometheus.

use super::config::{NetworkSpec, PortSpec};
use super::{metrics, ops, Net};
use crate::datapath::QosConfig;
use crate::error::{NetError, Result};
use serde::de::DeserializeOwned;
use serde_json::json;
use vireo_http::{dispatch, json_body, HttpError, Reply, Request};

pub(super) fn handle(net: &Net, req: &Request) -> Reply {
    if req.path == "/metrics" {
        return match req.method.as_str() {
            "GET" => Reply::text(
                metrics::CONTENT_TYPE,
                metrics::render(&net.stats())
                    + &net.router_metrics()
                    + &net.firewall_metrics()
                    + &net.lb_metrics(),
            ),
            m => Reply::error(405, format!("{m} is not allowed on /metrics; use GET")),
        };
    }
    dispatch(req, "/api/v1/", |s| route(net, req, s), methods)
}

impl HttpError for NetError {
    fn http_status(&self) -> u16 {
        NetError::http_status(self)
    }
}

/// The methods each path takes (for 405 answers); mirrors [`route`].
fn methods(s: &[&str]) -> &'static [&'static str] {
    match s {
        ["ping"] | ["fdb"] | ["stats"] | ["stats", _] => &["GET"],
        ["networks"] | ["ports"] => &["GET", "POST"],
        ["networks", _] | ["ports", _] => &["GET", "DELETE"],
        ["networks", _, "leases"] => &["GET"],
        ["networks", _, "dhcp"] => &["PUT"],
        ["ports", _, "qos"] => &["PUT", "POST"],
        ["routers", ..] => super::router::methods(s),
        ["lbs", ..] => super::lb::methods(s),
        ["firewall", ..] | ["flows"] | ["conntrack"] => super::firewall::methods(s),
        _ => &[],
    }
}

/// `None`: no route for this method and path.
fn route(net: &Net, req: &Request, s: &[&str]) -> Option<Result<Reply>> {
    Some(match (s, req.method.as_str()) {
        (["ping"], "GET") => Ok(Reply::ok(json!({
            "service": "vireo-net",
            "version": env!("CARGO_PKG_VERSION"),
        }))),
        (["networks"], "GET") => Ok(Reply::ok(net.networks())),
        (["networks"], "POST") => body::<NetworkSpec>(req, r#"{"name": "blue", "vlan": 10}"#)
            .and_then(|n| net.create_network(&n))
            .map(|v| Reply::with_status(201, v)),
        (["networks", n], "GET") => net.network(n).map(Reply::ok),
        (["networks", n], "DELETE") => net.delete_network(n).map(|()| Reply::no_content()),
        (["networks", n, "leases"], "GET") => net.leases(n).map(Reply::ok),
        (["networks", n, "dhcp"], "PUT") => {
            body::<super::dhcp::DhcpOptions>(req, r#"{"dns": ["10.0.1.53"], "lease_secs": 3600}"#)
                .and_then(|o| net.set_dhcp_options(n, &o))
                .map(Reply::ok)
        }
        (["ports"], "GET") => Ok(Reply::ok(net.ports())),
        (["ports"], "POST") => body::<PortSpec>(
            req,
            r#"{"name": "vm1", "network": "blue", "tap": "vt-vm1"}"#,
        )
        .and_then(|p| net.add_port(&p))
        .map(|v| Reply::with_status(201, v)),
        (["ports", p], "GET") => net.port(p).map(Reply::ok),
        (["ports", p], "DELETE") => net.delete_port(p).map(|()| Reply::no_content()),
        (["ports", p, "qos"], "PUT" | "POST") => {
            body::<QosConfig>(req, r#"{"rate": 100000000, "burst": 65536}"#)
                .and_then(|q| net.set_qos(p, &q))
                .map(Reply::ok)
        }
        (["stats"], "GET") => Ok(Reply::ok(json!(net
            .stats()
            .iter()
            .map(|(p, s)| ops::stats_json(p, s))
            .collect::<Vec<_>>()))),
        (["stats", p], "GET") => net.port_stats(p).map(Reply::ok),
        (["fdb"], "GET") => Ok(Reply::ok(net.fdb())),
        (["routers", ..], _) => return super::router::api(net, req, s),
        (["lbs", ..], _) => return super::lb::api(net, req, s),
        (["firewall", ..] | ["flows"] | ["conntrack"], _) => {
            return super::firewall::api(net, req, s)
        }
        _ => return None,
    })
}

/// Parses a JSON body (an empty body is `{}`), explaining what was expected if it fails.
pub(super) fn body<T: DeserializeOwned>(req: &Request, example: &str) -> Result<T> {
    json_body(req, example).map_err(NetError::Invalid)
}
