//! `GET /metrics`: the per-port counters in the Prometheus text exposition format
//! (version 0.0.4), labelled by port, network and tap (a vhost-user port: its socket,
//! `vhost_user="PATH"`).

use super::config::PortSpec;
use crate::datapath::PortStats;
use std::fmt::Write;

pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// (metric, help, field) of one counter.
type Counter = (&'static str, &'static str, fn(&PortStats) -> u64);

const COUNTERS: [Counter; 5] = [
    (
        "vireo_net_port_rx_packets_total",
        "Frames the switch received from the port.",
        |s| s.rx_packets,
    ),
    (
        "vireo_net_port_rx_bytes_total",
        "Bytes the switch received from the port.",
        |s| s.rx_bytes,
    ),
    (
        "vireo_net_port_tx_packets_total",
        "Frames the switch sent to the port.",
        |s| s.tx_packets,
    ),
    (
        "vireo_net_port_tx_bytes_total",
        "Bytes the switch sent to the port.",
        |s| s.tx_bytes,
    ),
    (
        "vireo_net_port_drops_total",
        "Frames dropped at the port: malformed, wrong VLAN, over the rate limit, queue full.",
        |s| s.drops,
    ),
];

pub fn render(ports: &[(PortSpec, PortStats)]) -> String {
    let mut out = String::new();
    for (metric, help, field) in COUNTERS {
        let _ = writeln!(out, "# HELP {metric} {help}");
        let _ = writeln!(out, "# TYPE {metric} counter");
        for (p, s) in ports {
            let (link, name) = link(p);
            let _ = writeln!(
                out,
                "{metric}{{port=\"{}\",network=\"{}\",{link}=\"{}\"}} {}",
                label(&p.name),
                label(&p.network),
                label(name),
                field(s)
            );
        }
    }
    out
}

/// What carries the port's frames, as a label or JSON key and its value: a tap's name, or
/// a vhost-user port's socket (its `tap` is empty).
pub(super) fn link(p: &PortSpec) -> (&'static str, &str) {
    match &p.vhost_user {
        Some(path) => ("vhost_user", path),
        None => ("tap", &p.tap),
    }
}

/// Escapes a label value (names are validated, but the format's rule costs nothing).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition_has_help_type_and_one_line_per_port() {
        let p = PortSpec {
            name: "p1".into(),
            network: "blue".into(),
            tap: "vt1".into(),
            vhost_user: None,
            mac: None,
            vlan: None,
            trunk: None,
            qos: None,
        };
        let s = PortStats {
            rx_packets: 3,
            tx_bytes: 99,
            ..Default::default()
        };
        let text = render(&[(p, s)]);
        assert!(text.contains("# TYPE vireo_net_port_rx_packets_total counter\n"));
        assert!(text.contains(
            "vireo_net_port_rx_packets_total{port=\"p1\",network=\"blue\",tap=\"vt1\"} 3\n"
        ));
        assert!(text.contains(
            "vireo_net_port_tx_bytes_total{port=\"p1\",network=\"blue\",tap=\"vt1\"} 99\n"
        ));
        assert_eq!(label("a\"b\\"), "a\\\"b\\\\");
    }

    #[test]
    fn a_vhost_user_port_is_labelled_by_its_socket() {
        let p = PortSpec {
            name: "vm1".into(),
            network: "blue".into(),
            tap: String::new(),
            vhost_user: Some("/run/vm1.sock".into()),
            mac: None,
            vlan: None,
            trunk: None,
            qos: None,
        };
        let s = PortStats {
            drops: 2,
            ..Default::default()
        };
        let text = render(&[(p, s)]);
        assert!(text.contains(
            "vireo_net_port_drops_total{port=\"vm1\",network=\"blue\",vhost_user=\"/run/vm1.sock\"} 2\n"
        ));
        assert!(!text.contains("tap="), "{text}");
    }
}
