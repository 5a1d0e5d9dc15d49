//! `vireo net lb ...`: L4 load balancers (a VIP:port over a pool of backends).

use super::commands::s;
use super::show::{opt, rows, table};
use super::{seg, show, Client};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub(super) enum LbCmd {
    /// Create a load balancer: new connections to VIP:PORT in NET go to a healthy backend.
    Create {
        name: String,
        /// The network of the VIP and the backends.
        #[arg(long)]
        network: String,
        /// The virtual IP:PORT, inside NET's subnet (not its gateway).
        #[arg(long)]
        vip: String,
        #[arg(long, value_parser = ["tcp", "udp"], default_value = "tcp")]
        proto: String,
        /// A backend IP:PORT in NET (repeat, or separate with commas).
        #[arg(long = "backend", required = true, num_args = 1.., value_delimiter = ',')]
        backends: Vec<String>,
        #[arg(long, value_parser = ["round-robin", "least-conn"], default_value = "round-robin")]
        algorithm: String,
        /// client-ip: a client's connections go to the same backend while it is healthy.
        #[arg(long, value_parser = ["none", "client-ip"], default_value = "none")]
        affinity: String,
        /// Probe each backend with a TCP SYN every --interval seconds; 3 failures take it
        /// down, 2 successes bring it back.
        #[arg(long = "health-check", value_parser = ["tcp"])]
        health_check: Option<String>,
        /// Seconds between health checks [default: 2].
        #[arg(long, requires = "health_check")]
        interval: Option<u64>,
    },
    /// Delete a load balancer (its VIP stops answering).
    Delete { name: String },
    /// The load balancers, as a table.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A load balancer: settings, backends with health and connections (JSON).
    Info { name: String },
    /// Add or remove backends; a removed backend keeps its open connections.
    Backend {
        #[command(subcommand)]
        cmd: BackendCmd,
    },
}

#[derive(Subcommand)]
pub(super) enum BackendCmd {
    Add { lb: String, backend: String },
    Remove { lb: String, backend: String },
}

pub(super) fn run(c: &Client, cmd: LbCmd) -> Result<(), String> {
    match cmd {
        LbCmd::Create {
            name,
            network,
            vip,
            proto,
            backends,
            algorithm,
            affinity,
            health_check,
            interval,
        } => {
            let l = c.call(
                "POST",
                "/api/v1/lbs",
                Some(json!({
                    "name": name, "network": network, "vip": vip, "proto": proto,
                    "backends": backends, "algorithm": algorithm, "affinity": affinity,
                    "health_check": health_check, "interval": interval,
                })),
            )?;
            println!(
                "created load balancer {name}: {} {} over {}",
                s(&l["proto"]),
                s(&l["vip"]),
                backends_cell(&l)
            );
        }
        LbCmd::Delete { name } => {
            c.call("DELETE", &format!("/api/v1/lbs/{}", seg(&name)), None)?;
            println!("deleted load balancer {name}");
        }
        LbCmd::List { json } => {
            let list = c.call("GET", "/api/v1/lbs", None)?;
            show::print(&list, json, lbs);
        }
        LbCmd::Info { name } => {
            show::pretty(&c.call("GET", &format!("/api/v1/lbs/{}", seg(&name)), None)?)
        }
        LbCmd::Backend {
            cmd: BackendCmd::Add { lb, backend },
        } => {
            let l = c.call(
                "POST",
                &format!("/api/v1/lbs/{}/backends", seg(&lb)),
                Some(json!({ "backend": backend })),
            )?;
            println!("{lb}: {}", backends_cell(&l));
        }
        LbCmd::Backend {
            cmd: BackendCmd::Remove { lb, backend },
        } => {
            let l = c.call(
                "DELETE",
                &format!("/api/v1/lbs/{}/backends/{}", seg(&lb), seg(&backend)),
                None,
            )?;
            println!("{lb}: {}", backends_cell(&l));
        }
    }
    Ok(())
}

/// `10.0.1.11:8080 (up, 2 open), 10.0.1.12:8080 (down, 0 open)`.
fn backends_cell(l: &Value) -> String {
    rows(&l["backends"])
        .iter()
        .map(|b| {
            let health = if b["up"] == Value::Bool(true) {
                "up"
            } else {
                "down"
            };
            format!(
                "{} ({health}, {} open)",
                s(&b["address"]),
                opt(&b["active"])
            )
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn lbs(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|l| {
            vec![
                s(&l["name"]).to_string(),
                s(&l["network"]).to_string(),
                format!("{} {}", s(&l["proto"]), s(&l["vip"])),
                s(&l["algorithm"]).to_string(),
                opt(&l["no_backend"]),
                backends_cell(l),
            ]
        })
        .collect();
    table(
        &["LB", "NETWORK", "VIP", "ALGORITHM", "REFUSED", "BACKENDS"],
        rows,
    )
}
