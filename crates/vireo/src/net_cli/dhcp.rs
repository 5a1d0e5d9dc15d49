//! `vireo net dhcp ...`: what a network's DHCP server gave out.

use super::show::{opt, rows, table};
use super::{seg, show, Client};
use clap::Subcommand;
use serde_json::{json, Value};

#[derive(Subcommand)]
pub(super) enum DhcpCmd {
    /// Set the options a network's DHCP server gives: DNS servers (none: not sent) and the
    /// lease time; what is not given goes back to its default.
    Set {
        network: String,
        /// DNS servers: IP,IP,...
        #[arg(long, value_delimiter = ',')]
        dns: Vec<String>,
        /// Lease time in seconds (60 to 604800) [default: 3600].
        #[arg(long = "lease-time")]
        lease_time: Option<u32>,
    },
    /// The live leases of a network's DHCP server (address, MAC, client, hostname, time
    /// left).
    Leases {
        network: String,
        #[arg(long)]
        json: bool,
    },
}

pub(super) fn run(c: &Client, cmd: DhcpCmd) -> Result<(), String> {
    match cmd {
        DhcpCmd::Set {
            network,
            dns,
            lease_time,
        } => {
            let v = c.call(
                "PUT",
                &format!("/api/v1/networks/{}/dhcp", seg(&network)),
                Some(json!({ "dns": dns, "lease_secs": lease_time })),
            )?;
            let dns = rows(&v["dns"]).iter().map(opt).collect::<Vec<_>>();
            println!(
                "{network}: DHCP {}, lease {} s, DNS {}",
                opt(&v["range"]),
                opt(&v["lease_secs"]),
                if dns.is_empty() {
                    "none".into()
                } else {
                    dns.join(",")
                }
            );
        }
        DhcpCmd::Leases { network, json } => {
            let list = c.call(
                "GET",
                &format!("/api/v1/networks/{}/leases", seg(&network)),
                None,
            )?;
            show::print(&list, json, leases);
        }
    }
    Ok(())
}

fn leases(list: &Value) -> String {
    let rows = rows(list)
        .iter()
        .map(|l| {
            vec![
                opt(&l["ip"]),
                opt(&l["mac"]),
                opt(&l["hostname"]),
                opt(&l["remaining_secs"]),
                opt(&l["client"]),
            ]
        })
        .collect();
    table(&["IP", "MAC", "HOSTNAME", "REMAINING(S)", "CLIENT"], rows)
}
