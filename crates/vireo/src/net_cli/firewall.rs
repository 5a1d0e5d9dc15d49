//! `vireo net firewall ...` (rules, default policies, the connection table) and
//! `vireo net flows` (the flow log and the tracked connections).

use super::show::{opt, rows, table};
use super::{seg, show, Client};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub(super) enum FirewallCmd {
    /// Add a rule to a network or a port. A new connection needs the sending port's `out`
    /// rules and the receiving port's `in` rules to allow it (a port's own rules first,
    /// then its network's; first match wins; none: the network's default).
    Add(AddArgs),
    /// The rules (all, or those of one network or port) with their hit counters.
    List {
        /// A network or port name.
        target: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Delete a rule (connections it let in continue).
    Delete { id: u64 },
    /// A network's default policy, for connections no rule matches: allow (the default)
    /// or deny.
    Default {
        network: String,
        #[arg(value_parser = ["allow", "deny"])]
        policy: String,
    },
    /// Forget the tracked connections: their next packets are judged by the rules again.
    FlushConntrack,
}

#[derive(Args)]
pub(super) struct AddArgs {
    /// The network or port the rule belongs to; if a network and a port share the name,
    /// say which with --network or --port-name instead.
    #[arg(
        required_unless_present_any = ["network", "port_name"],
        conflicts_with_all = ["network", "port_name"]
    )]
    target: Option<String>,
    /// The rule belongs to this network (all its ports).
    #[arg(long, conflicts_with = "port_name")]
    network: Option<String>,
    /// The rule belongs to this port.
    #[arg(long = "port-name", value_name = "PORT")]
    port_name: Option<String>,
    /// `in`: traffic entering the port(s); `out`: traffic leaving them.
    #[arg(long, value_parser = ["in", "out"])]
    direction: String,
    #[arg(long, value_parser = ["tcp", "udp", "icmp", "any"])]
    proto: String,
    /// The remote address range: the source for `in`, the destination for `out`.
    #[arg(long)]
    cidr: Option<String>,
    /// The destination port or range (tcp and udp only): 22, 8000-8080.
    #[arg(long = "port", value_name = "N[-M]")]
    dport: Option<String>,
    #[arg(long, value_parser = ["allow", "deny"])]
    action: String,
    /// Lower goes first (default 1000); equal priorities go in the order added.
    #[arg(long)]
    priority: Option<u32>,
}

pub(super) fn run(c: &Client, cmd: FirewallCmd) -> Result<(), String> {
    match cmd {
        FirewallCmd::Add(a) => {
            let r = c.call(
                "POST",
                "/api/v1/firewall/rules",
                Some(json!({
                    "target": a.target, "network": a.network, "port": a.port_name,
                    "direction": a.direction, "proto": a.proto, "cidr": a.cidr,
                    "dport": a.dport, "action": a.action, "priority": a.priority,
                })),
            )?;
            println!("added firewall rule {}: {}", r["id"], describe(&r));
        }
        FirewallCmd::List { target, json } => {
            let list = c.call("GET", "/api/v1/firewall/rules", None)?;
            let list = match &target {
                Some(t) => Value::Array(
                    rows(&list)
                        .iter()
                        .filter(|r| r["network"] == t.as_str() || r["port"] == t.as_str())
                        .cloned()
                        .collect(),
                ),
                None => list,
            };
            show::print(&list, json, rules);
        }
        FirewallCmd::Delete { id } => {
            c.call("DELETE", &format!("/api/v1/firewall/rules/{id}"), None)?;
            println!("deleted firewall rule {id}");
        }
        FirewallCmd::Default { network, policy } => {
            c.call(
                "PUT",
                &format!("/api/v1/firewall/defaults/{}", seg(&network)),
                Some(json!({ "action": policy })),
            )?;
            println!("network {network}: firewall default {policy}");
        }
        FirewallCmd::FlushConntrack => {
            let r = c.call("DELETE", "/api/v1/conntrack", None)?;
            println!("flushed {} tracked connection(s)", r["flushed"]);
        }
    }
    Ok(())
}

/// `vireo net flows`: the last `limit` flow log entries and the connection table.
pub(super) fn flows(c: &Client, json: bool, limit: usize) -> Result<(), String> {
    let f = c.call("GET", "/api/v1/flows", None)?;
    let ct = c.call("GET", "/api/v1/conntrack", None)?;
    let all = rows(&f["flows"]);
    let recent = &all[all.len().saturating_sub(limit)..];
    if json {
        show::pretty(&json!({
            "flows": recent, "suppressed": f["suppressed"], "conntrack": ct,
        }));
        return Ok(());
    }
    let flow_rows = recent
        .iter()
        .map(|l| {
            vec![
                opt(&l["ts"]),
                opt(&l["action"]),
                opt(&l["proto"]),
                endpoint(&l["src"], &l["sport"]),
                endpoint(&l["dst"], &l["dport"]),
                opt(&l["network"]),
                hop(&l["from"]),
                hop(&l["to"]),
                opt(&l["rule"]),
            ]
        })
        .collect();
    let header = [
        "TIME",
        "ACTION",
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "NETWORK",
        "FROM",
        "TO",
        "RULE",
    ];
    print!("{}", table(&header, flow_rows));
    if f["suppressed"].as_u64().unwrap_or(0) > 0 {
        println!("({} lines suppressed by the rate limit)", f["suppressed"]);
    }
    println!();
    let conn_rows = rows(&ct)
        .iter()
        .map(|c| {
            vec![
                opt(&c["proto"]),
                endpoint(&c["src"], &c["sport"]),
                endpoint(&c["dst"], &c["dport"]),
                opt(&c["network"]),
                hop(&c["from"]),
                hop(&c["to"]),
                opt(&c["state"]),
                format!("{}s", c["expires_in_secs"]),
                opt(&c["packets"]),
                opt(&c["bytes"]),
            ]
        })
        .collect();
    let header = [
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "NETWORK",
        "FROM",
        "TO",
        "STATE",
        "EXPIRES",
        "PACKETS",
        "BYTES",
    ];
    print!("{}", table(&header, conn_rows));
    Ok(())
}

fn endpoint(ip: &Value, port: &Value) -> String {
    format!("{}:{}", opt(ip), opt(port))
}

/// A port name, or the network's own endpoint (router, load balancer, DHCP).
fn hop(v: &Value) -> String {
    match v {
        Value::Null => "(network)".into(),
        v => opt(v),
    }
}

fn target(r: &Value) -> String {
    match (&r["network"], &r["port"]) {
        (Value::String(n), _) => format!("network {n}"),
        (_, Value::String(p)) => format!("port {p}"),
        _ => "-".into(),
    }
}

fn describe(r: &Value) -> String {
    let mut d = format!(
        "{} {} {}",
        target(r),
        opt(&r["direction"]),
        opt(&r["proto"])
    );
    if let Some(c) = r["cidr"].as_str() {
        d.push_str(&format!(" {c}"));
    }
    if let Some(p) = r["dport"].as_str() {
        d.push_str(&format!(" port {p}"));
    }
    format!("{d} {} (priority {})", opt(&r["action"]), r["priority"])
}

fn rules(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|r| {
            vec![
                opt(&r["id"]),
                target(r),
                opt(&r["direction"]),
                opt(&r["proto"]),
                opt(&r["cidr"]),
                opt(&r["dport"]),
                opt(&r["action"]),
                opt(&r["priority"]),
                opt(&r["hits"]),
                opt(&r["bytes"]),
            ]
        })
        .collect();
    let header = [
        "ID",
        "TARGET",
        "DIRECTION",
        "PROTO",
        "CIDR",
        "PORT",
        "ACTION",
        "PRIORITY",
        "HITS",
        "BYTES",
    ];
    table(&header, rows)
}
