//! The routers' counters for `GET /metrics` (Prometheus text exposition, version 0.0.4).

use crate::datapath::router::RouterStats;
use crate::service::Net;
use std::fmt::Write;

/// (metric, type, help, field) of one family.
type Metric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&RouterStats) -> u64,
);

const METRICS: [Metric; 6] = [
    (
        "vireo_net_router_routed_packets_total",
        "counter",
        "Packets the router forwarded.",
        |s| s.routed_packets,
    ),
    (
        "vireo_net_router_no_route_drops_total",
        "counter",
        "Packets dropped for want of a route.",
        |s| s.no_route_drops,
    ),
    (
        "vireo_net_router_ttl_drops_total",
        "counter",
        "Packets dropped as their TTL ran out.",
        |s| s.ttl_drops,
    ),
    (
        "vireo_net_router_nat_drops_total",
        "counter",
        "Packets NAT refused: table full, ports in use, untranslatable.",
        |s| s.nat_drops,
    ),
    (
        "vireo_net_router_nat_sessions",
        "gauge",
        "NAT sessions tracked now.",
        |s| s.nat_sessions,
    ),
    (
        "vireo_net_router_nat_sessions_created_total",
        "counter",
        "NAT sessions created.",
        |s| s.nat_sessions_created,
    ),
];

impl Net {
    /// The routers' counters in the Prometheus text format (appended to `GET /metrics`).
    pub fn router_metrics(&self) -> String {
        let names: Vec<String> = self
            .control()
            .saved
            .routers
            .iter()
            .map(|r| r.name.clone())
            .collect();
        let stats: Vec<_> = names
            .iter()
            .filter_map(|n| Some((n, self.datapath.router_stats(n).ok()?)))
            .collect();
        let mut out = String::new();
        if stats.is_empty() {
            return out;
        }
        for (metric, kind, help, field) in METRICS {
            let _ = writeln!(out, "# HELP {metric} {help}");
            let _ = writeln!(out, "# TYPE {metric} {kind}");
            for (name, s) in &stats {
                let _ = writeln!(out, "{metric}{{router=\"{name}\"}} {}", field(s));
            }
        }
        out
    }
}
