//! `vireo net ...`: the network service (`serve`) and its client, which drives the
//! service's HTTP/JSON API (docs/net-api.md) over its Unix socket.

mod commands;
mod dhcp;
mod firewall;
mod lb;
mod router;
mod show;

use crate::signals::TerminationSignals;
use clap::{Args, Subcommand};
use std::path::PathBuf;
use vireo_net::service::{Service, ServiceOptions, DEFAULT_SOCKET};

#[derive(Args)]
pub struct NetArgs {
    /// The network service's API socket [default: /run/vireo/net.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: NetCmd,
}

#[derive(Subcommand)]
enum NetCmd {
    /// Run the network service in the foreground; SIGINT or SIGTERM removes its taps and
    /// stops it (the networks and ports are kept in STATE_DIR/net.json for the next start).
    Serve(ServeArgs),
    /// Networks: isolated L2 segments, optionally a VLAN.
    Network {
        #[command(subcommand)]
        cmd: NetworkCmd,
    },
    /// Ports: taps attached to a network.
    Port {
        #[command(subcommand)]
        cmd: PortCmd,
    },
    /// A port's rate limit.
    Qos {
        #[command(subcommand)]
        cmd: QosCmd,
    },
    /// Per-port packet, byte and drop counters (all ports, or one).
    Stats {
        port: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// L4 load balancers: a VIP:port over a pool of backends, with health checks.
    Lb {
        #[command(subcommand)]
        cmd: lb::LbCmd,
    },
    /// A network's DHCP server: its leases and options.
    Dhcp {
        #[command(subcommand)]
        cmd: dhcp::DhcpCmd,
    },
    /// Routers: L3 between networks, static routes, SNAT/masquerade and DNAT.
    Router {
        #[command(subcommand)]
        cmd: router::RouterCmd,
    },
    /// The firewall: rules per network or port, default policies, tracked connections.
    Firewall {
        #[command(subcommand)]
        cmd: firewall::FirewallCmd,
    },
    /// The flow log's recent entries (connections accepted, packets denied) and the
    /// connections the firewall tracks.
    Flows {
        #[arg(long)]
        json: bool,
        /// How many of the most recent flow log entries to show.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// The MAC addresses the switch has learned, with their port and age.
    Fdb {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The state directory (net.json keeps the networks, ports and QoS).
    #[arg(long)]
    dir: PathBuf,
    /// The API socket [default: /run/vireo/net.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
}

#[derive(Subcommand)]
enum NetworkCmd {
    /// Create a network.
    Create {
        name: String,
        /// The VLAN (1-4094) its access ports belong to.
        #[arg(long)]
        vlan: Option<u16>,
        /// Its subnet, e.g. 10.0.1.0/24 (stored; must not overlap another network's).
        #[arg(long)]
        subnet: Option<String>,
        /// The gateway address, inside the subnet: it answers ARP and ping, and is a router's
        /// address in the network once one is attached.
        #[arg(long, requires = "subnet")]
        gateway: Option<String>,
        /// A DHCP range FIRST-LAST in the subnet, served by the network's DHCP server
        /// (needs --gateway).
        #[arg(long, requires = "subnet")]
        dhcp: Option<String>,
    },
    /// Delete a network (it must have no ports).
    Delete { name: String },
    /// The networks, as a table.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A network's settings and ports (JSON).
    Info { name: String },
}

#[derive(Subcommand)]
enum PortCmd {
    /// Add a port to NET: the service creates the tap TAPNAME (or listens on the
    /// vhost-user socket SOCKET, a VM's virtio-net backend) and switches its frames.
    Add {
        network: String,
        name: String,
        /// The tap interface (1-15 characters).
        #[arg(
            long,
            required_unless_present = "vhost_user",
            conflicts_with = "vhost_user"
        )]
        tap: Option<String>,
        /// A vhost-user-net socket the service listens on; the VM's frontend (QEMU's
        /// `-netdev vhost-user`) connects to it.
        #[arg(long = "vhost-user", value_name = "SOCKET")]
        vhost_user: Option<std::path::PathBuf>,
        /// The MAC of the far end (the VM's or namespace's interface).
        #[arg(long)]
        mac: Option<String>,
        /// Access port in this VLAN (default: the network's).
        #[arg(long, conflicts_with = "trunk")]
        vlan: Option<u16>,
        /// Trunk port carrying these VLANs tagged: N,M,...
        #[arg(long, value_delimiter = ',')]
        trunk: Option<Vec<u16>>,
    },
    /// Delete a port (its tap goes away).
    Delete { name: String },
    /// The ports, as a table.
    List {
        #[arg(long)]
        json: bool,
    },
    /// A port's settings (JSON).
    Info { name: String },
}

#[derive(Subcommand)]
enum QosCmd {
    /// Limit what a port sends into the switch; without --rate the limit is removed.
    Set {
        port: String,
        /// Bits per second: 500k, 100M, 1G (decimal units).
        #[arg(long, value_parser = parse_rate)]
        rate: Option<u64>,
        /// Burst in bytes: 64K, 1M (binary units).
        #[arg(long, value_parser = vireo_vmm::config::parse_size, requires = "rate")]
        burst: Option<u64>,
        /// Impairment: hold every frame from the port back this many milliseconds.
        #[arg(long, value_name = "MS")]
        delay: Option<u64>,
        /// Impairment: vary the delay uniformly by up to MS either way (no reordering).
        #[arg(long, value_name = "MS", requires = "delay")]
        jitter: Option<u64>,
        /// Impairment: drop this percentage of the port's frames at random (0-100).
        #[arg(long, value_name = "PCT")]
        loss: Option<f64>,
    },
}

/// `100M`, `1.5G`, `800k`, `1000000`, optionally followed by `bit`, `bps` or `bit/s`.
fn parse_rate(s: &str) -> Result<u64, String> {
    let t = s
        .trim()
        .trim_end_matches("bit/s")
        .trim_end_matches("bps")
        .trim_end_matches("bit");
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'k' | 'K')) => (&t[..i], 1e3),
        Some((i, 'm' | 'M')) => (&t[..i], 1e6),
        Some((i, 'g' | 'G')) => (&t[..i], 1e9),
        _ => (t, 1.0),
    };
    match num.parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 && n * mult < 1e15 => Ok((n * mult) as u64),
        _ => Err(format!(
            "bad rate {s:?}: use bits per second like 500k, 100M or 1G"
        )),
    }
}

pub fn run(args: NetArgs) -> Result<(), String> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let c = Client {
        socket,
        serve: "vireo net serve",
        default_socket: DEFAULT_SOCKET,
    };
    match args.cmd {
        NetCmd::Serve(s) => serve(s, args.socket),
        NetCmd::Network { cmd } => commands::network(&c, cmd),
        NetCmd::Port { cmd } => commands::port(&c, cmd),
        NetCmd::Qos { cmd } => commands::qos(&c, cmd),
        NetCmd::Stats { port, json } => commands::stats(&c, port, json),
        NetCmd::Dhcp { cmd } => dhcp::run(&c, cmd),
        NetCmd::Lb { cmd } => lb::run(&c, cmd),
        NetCmd::Router { cmd } => router::run(&c, cmd),
        NetCmd::Firewall { cmd } => firewall::run(&c, cmd),
        NetCmd::Flows { json, limit } => firewall::flows(&c, json, limit),
        NetCmd::Fdb { json } => {
            let fdb = c.call("GET", "/api/v1/fdb", None)?;
            show::print(&fdb, json, show::fdb);
            Ok(())
        }
    }
}

fn serve(a: ServeArgs, global_socket: Option<PathBuf>) -> Result<(), String> {
    let socket = a
        .socket
        .or(global_socket)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let opts = ServiceOptions { dir: a.dir, socket };
    // Before any thread starts, so that every thread leaves the signals to us.
    let signals =
        TerminationSignals::block().map_err(|e| format!("blocking SIGINT/SIGTERM: {e}"))?;
    let svc = Service::start(&opts).map_err(|e| e.to_string())?;
    eprintln!(
        "vireo net: serving {} on {}",
        opts.dir.display(),
        opts.socket.display()
    );
    let sig = signals.wait();
    eprintln!("vireo net: signal {sig}: removing the taps and stopping");
    svc.shutdown();
    Ok(())
}

use crate::client::{path_segment as seg, ServiceClient as Client};

#[cfg(test)]
mod tests {
    #[test]
    fn rates() {
        assert_eq!(super::parse_rate("100M"), Ok(100_000_000));
        assert_eq!(super::parse_rate("1.5Gbit"), Ok(1_500_000_000));
        assert_eq!(super::parse_rate("800kbps"), Ok(800_000));
        assert_eq!(super::parse_rate("42"), Ok(42));
        assert!(super::parse_rate("fast").is_err() && super::parse_rate("-1M").is_err());
    }
}
