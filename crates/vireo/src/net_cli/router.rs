//! `vireo net router ...`: routers between networks, their static routes and NAT rules.

use super::show::{opt, rows, table};
use super::{seg, show, Client};
use clap::{Args, Subcommand};
use serde_json::{json, Value};

#[derive(Subcommand)]
pub(super) enum RouterCmd {
    /// Create a router (attach networks to it next).
    Create { name: String },
    /// Delete a router (detach its networks first).
    Delete { name: String },
    /// Connect NET to the router: the router's interface there is NET's gateway (NET needs
    /// --subnet and --gateway); a network joins one router at most.
    Attach { router: String, network: String },
    /// Disconnect NET (routes and NAT rules through it must be deleted first).
    Detach { router: String, network: String },
    /// The routers, as a table.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A router's interfaces, routes, NAT rules and counters (JSON).
    Info { name: String },
    /// Static routes.
    Route {
        #[command(subcommand)]
        cmd: RouteCmd,
    },
    /// NAT: SNAT/masquerade and DNAT port forwards.
    Nat {
        #[command(subcommand)]
        cmd: NatCmd,
    },
}

#[derive(Subcommand)]
pub(super) enum RouteCmd {
    /// Route CIDR via the neighbour IP (in an attached network's subnet).
    Add {
        router: String,
        cidr: String,
        #[arg(long)]
        via: String,
    },
    /// Delete the route to CIDR.
    Delete { router: String, cidr: String },
    /// The routes: connected (the attached subnets) and static.
    List {
        router: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub(super) enum NatCmd {
    /// Add a rule: `--snat --source CIDR --out NET [--to IP]` (no --to: masquerade to the
    /// router's address in NET), or `--dnat --in NET --proto tcp|udp --port N --to IP:PORT`
    /// (a port forward on the router's address in NET).
    Add(NatAdd),
    /// Delete rule ID (as `nat list` shows).
    Delete { router: String, id: u32 },
    /// The rules.
    List {
        router: String,
        #[arg(long)]
        json: bool,
    },
    /// The NAT sessions (tracked flows and their rewrites).
    Sessions {
        router: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
#[command(group(clap::ArgGroup::new("kind").required(true).args(["snat", "dnat"])))]
pub(super) struct NatAdd {
    router: String,
    /// Source NAT, after routing.
    #[arg(long)]
    snat: bool,
    /// Destination NAT (port forward), before routing.
    #[arg(long)]
    dnat: bool,
    /// SNAT: the inside addresses, CIDR.
    #[arg(long, requires = "snat")]
    source: Option<String>,
    /// SNAT: the network the flows leave by.
    #[arg(long, requires = "snat")]
    out: Option<String>,
    /// DNAT: the network whose router address listens.
    #[arg(long = "in", requires = "dnat")]
    network: Option<String>,
    /// DNAT: tcp or udp.
    #[arg(long, requires = "dnat")]
    proto: Option<String>,
    /// DNAT: the port listened on.
    #[arg(long, requires = "dnat")]
    port: Option<u16>,
    /// SNAT: the source address (default: the router's address in --out); DNAT: IP:PORT.
    #[arg(long)]
    to: Option<String>,
}

fn path(router: &str, rest: &str) -> String {
    format!("/api/v1/routers/{}{rest}", seg(router))
}

pub(super) fn run(c: &Client, cmd: RouterCmd) -> Result<(), String> {
    match cmd {
        RouterCmd::Create { name } => {
            c.call("POST", "/api/v1/routers", Some(json!({ "name": name })))?;
            println!("created router {name}");
        }
        RouterCmd::Delete { name } => {
            c.call("DELETE", &path(&name, ""), None)?;
            println!("deleted router {name}");
        }
        RouterCmd::Attach { router, network } => {
            let r = c.call(
                "POST",
                &path(&router, "/networks"),
                Some(json!({ "network": network })),
            )?;
            let addr = r["interfaces"]
                .as_array()
                .and_then(|i| i.iter().find(|i| i["network"] == network.as_str()))
                .map(|i| opt(&i["address"]))
                .unwrap_or_default();
            println!("attached network {network} to router {router} (router address {addr})");
        }
        RouterCmd::Detach { router, network } => {
            c.call(
                "DELETE",
                &path(&router, &format!("/networks/{}", seg(&network))),
                None,
            )?;
            println!("detached network {network} from router {router}");
        }
        RouterCmd::List { json } => {
            let list = c.call("GET", "/api/v1/routers", None)?;
            show::print(&list, json, routers);
        }
        RouterCmd::Info { name } => show::pretty(&c.call("GET", &path(&name, ""), None)?),
        RouterCmd::Route { cmd } => route(c, cmd)?,
        RouterCmd::Nat { cmd } => nat(c, cmd)?,
    }
    Ok(())
}

fn route(c: &Client, cmd: RouteCmd) -> Result<(), String> {
    match cmd {
        RouteCmd::Add { router, cidr, via } => {
            c.call(
                "POST",
                &path(&router, "/routes"),
                Some(json!({ "cidr": cidr, "via": via })),
            )?;
            println!("router {router}: route to {cidr} via {via}");
        }
        RouteCmd::Delete { router, cidr } => {
            c.call(
                "DELETE",
                &path(&router, &format!("/routes/{}", seg(&cidr))),
                None,
            )?;
            println!("router {router}: deleted the route to {cidr}");
        }
        RouteCmd::List { router, json } => {
            let r = c.call("GET", &path(&router, ""), None)?;
            // The JSON is the static routes; the table also shows the connected subnets.
            show::print(&r["routes"], json, |_| route_table(&r));
        }
    }
    Ok(())
}

fn nat(c: &Client, cmd: NatCmd) -> Result<(), String> {
    match cmd {
        NatCmd::Add(a) => {
            let body = json!({
                "kind": if a.dnat { "dnat" } else { "snat" },
                "source": a.source, "out": a.out, "network": a.network,
                "proto": a.proto, "port": a.port, "to": a.to,
            });
            let r = c.call("POST", &path(&a.router, "/nat"), Some(body))?;
            let id = rows(&r["nat"]).last().map(|n| opt(&n["id"]));
            println!(
                "router {}: NAT rule {} added",
                a.router,
                id.unwrap_or_default()
            );
        }
        NatCmd::Delete { router, id } => {
            c.call("DELETE", &path(&router, &format!("/nat/{id}")), None)?;
            println!("router {router}: deleted NAT rule {id}");
        }
        NatCmd::List { router, json } => {
            let r = c.call("GET", &path(&router, "/nat"), None)?;
            show::print(&r, json, nat_rules);
        }
        NatCmd::Sessions { router, json } => {
            let s = c.call("GET", &path(&router, "/sessions"), None)?;
            show::print(&s, json, sessions);
        }
    }
    Ok(())
}

/// A router's routing table: its connected subnets, then its static routes.
fn route_table(r: &Value) -> String {
    let connected = rows(&r["interfaces"])
        .iter()
        .map(|i| vec![opt(&i["subnet"]), "-".into(), opt(&i["network"])]);
    let routes = rows(&r["routes"])
        .iter()
        .map(|rt| vec![opt(&rt["cidr"]), opt(&rt["via"]), String::new()]);
    table(
        &["DESTINATION", "VIA", "NETWORK"],
        connected.chain(routes).collect(),
    )
}

fn sessions(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|s| {
            let o = &s["original"];
            let r = &s["reply"];
            vec![
                opt(&o["proto"]),
                opt(&o["src"]),
                opt(&o["dst"]),
                opt(&r["src"]),
                opt(&r["dst"]),
                opt(&s["expires_secs"]),
            ]
        })
        .collect();
    let head = [
        "PROTO",
        "SOURCE",
        "DESTINATION",
        "REPLY FROM",
        "REPLY TO",
        "EXPIRES(S)",
    ];
    table(&head, rows)
}

fn nat_rules(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|n| {
            let what = if n["kind"] == "dnat" {
                format!(
                    "{} port {} of {} -> {}",
                    opt(&n["proto"]),
                    opt(&n["port"]),
                    opt(&n["network"]),
                    opt(&n["to"])
                )
            } else {
                let to = match n["to"].as_str() {
                    Some(t) => t.to_string(),
                    None => "masquerade".into(),
                };
                format!("from {} out {} -> {to}", opt(&n["source"]), opt(&n["out"]))
            };
            vec![opt(&n["id"]), opt(&n["kind"]), what]
        })
        .collect();
    table(&["ID", "KIND", "RULE"], rows)
}

fn routers(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|r| {
            let nets: Vec<String> = rows(&r["interfaces"])
                .iter()
                .map(|i| format!("{} ({})", opt(&i["network"]), opt(&i["address"])))
                .collect();
            vec![
                opt(&r["name"]),
                nets.join(", "),
                rows(&r["routes"]).len().to_string(),
                rows(&r["nat"]).len().to_string(),
                opt(&r["stats"]["routed_packets"]),
            ]
        })
        .collect();
    table(&["NAME", "NETWORKS", "ROUTES", "NAT RULES", "ROUTED"], rows)
}
