//! How the network client shows the service's JSON: tables and one-line summaries.

use super::commands::s;
use serde_json::Value;

pub fn pretty(v: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
    );
}

/// A listing: its JSON pretty-printed with `--json`, else `table(v)`.
pub(super) fn print(v: &Value, json: bool, table: impl FnOnce(&Value) -> String) {
    if json {
        pretty(v);
    } else {
        print!("{}", table(v));
    }
}

/// Left-aligned columns, each as wide as its widest cell.
pub(super) fn table(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut l = String::new();
        for (cell, w) in cells.iter().zip(&widths) {
            l.push_str(&format!("{cell:<w$}  "));
        }
        format!("{}\n", l.trim_end())
    };
    let mut out = line(header.to_vec());
    for row in &rows {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
    }
    out
}

pub(super) fn opt(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

pub(super) fn rows(list: &Value) -> &[Value] {
    list.as_array().map(Vec::as_slice).unwrap_or_default()
}

pub fn networks(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|n| {
            let ports = rows(&n["ports"]).iter().map(s).collect::<Vec<_>>();
            vec![
                s(&n["name"]).to_string(),
                opt(&n["vlan"]),
                opt(&n["subnet"]),
                opt(&n["gateway"]),
                opt(&n["dhcp"]),
                if ports.is_empty() {
                    "-".into()
                } else {
                    ports.join(",")
                },
            ]
        })
        .collect();
    table(
        &["NETWORK", "VLAN", "SUBNET", "GATEWAY", "DHCP", "PORTS"],
        rows,
    )
}

pub fn ports(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|p| {
            vec![
                s(&p["name"]).to_string(),
                s(&p["network"]).to_string(),
                match p["vhost_user"].as_str() {
                    Some(sock) => format!("vhost-user {sock}"),
                    None => s(&p["tap"]).to_string(),
                },
                opt(&p["mac"]),
                vlan_cell(p),
                qos(p),
                if p["active"] == Value::Bool(false) {
                    "inactive".into()
                } else {
                    "active".into()
                },
            ]
        })
        .collect();
    table(
        &["PORT", "NETWORK", "TAP", "MAC", "VLAN", "QOS", "STATE"],
        rows,
    )
}

fn vlan_cell(p: &Value) -> String {
    match p["trunk"].as_array() {
        Some(t) => format!(
            "trunk {}",
            t.iter().map(Value::to_string).collect::<Vec<_>>().join(",")
        ),
        None => opt(&p["vlan"]),
    }
}

pub fn stats(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|p| {
            let mut row = vec![
                s(&p["port"]).to_string(),
                s(&p["network"]).to_string(),
                s(&p["tap"]).to_string(),
            ];
            for k in ["rx_packets", "rx_bytes", "tx_packets", "tx_bytes", "drops"] {
                row.push(opt(&p[k]));
            }
            row
        })
        .collect();
    table(
        &[
            "PORT", "NETWORK", "TAP", "RX_PKTS", "RX_BYTES", "TX_PKTS", "TX_BYTES", "DROPS",
        ],
        rows,
    )
}

pub fn fdb(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|e| {
            vec![
                s(&e["mac"]).to_string(),
                s(&e["network"]).to_string(),
                s(&e["port"]).to_string(),
                opt(&e["age_secs"]),
            ]
        })
        .collect();
    table(&["MAC", "NETWORK", "PORT", "AGE(S)"], rows)
}

/// `, VLAN 10, subnet 10.0.1.0/24` for the lines that confirm a creation.
pub fn network_extras(n: &Value) -> String {
    let mut out = String::new();
    if let Some(v) = n["vlan"].as_u64() {
        out.push_str(&format!(", VLAN {v}"));
    }
    if let Some(sub) = n["subnet"].as_str() {
        out.push_str(&format!(", subnet {sub}"));
    }
    out
}

pub fn port_vlan(p: &Value) -> String {
    match (p["vlan"].as_u64(), p["trunk"].is_array()) {
        (_, true) => format!(", {}", vlan_cell(p)),
        (Some(v), _) => format!(", VLAN {v}"),
        _ => String::new(),
    }
}

/// A port's limit and impairment: `100 Mbit/s, burst 65536 B, delay 50±5 ms, loss 1%`,
/// or `unlimited`.
pub fn qos(p: &Value) -> String {
    let mut out = rate(p);
    if let Some(d) = p["delay"].as_u64().filter(|d| *d > 0) {
        match p["jitter"].as_u64().filter(|j| *j > 0) {
            Some(j) => out.push_str(&format!(", delay {d}±{j} ms")),
            None => out.push_str(&format!(", delay {d} ms")),
        }
    }
    if let Some(l) = p["loss"].as_f64().filter(|l| *l > 0.0) {
        out.push_str(&format!(", loss {l}%"));
    }
    out
}

fn rate(p: &Value) -> String {
    match p["rate"].as_u64().filter(|r| *r > 0) {
        None => "unlimited".into(),
        Some(r) => {
            let rate = if r >= 1_000_000_000 {
                format!("{:.1} Gbit/s", r as f64 / 1e9)
            } else if r >= 1_000_000 {
                format!("{:.1} Mbit/s", r as f64 / 1e6)
            } else {
                format!("{:.1} kbit/s", r as f64 / 1e3)
            };
            match p["burst"].as_u64() {
                Some(b) => format!("{rate}, burst {b} B"),
                None => rate,
            }
        }
    }
}
