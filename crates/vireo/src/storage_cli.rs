//! `vireo storage ...`: the storage service (`serve`) and its client, which drives the
//! service's HTTP/JSON API (docs/storage-api.md) over its Unix socket.

mod client;
mod commands;
mod show;

use crate::signals::TerminationSignals;
use clap::{Args, Subcommand, ValueEnum};
use serde_json::Value;
use std::path::{Path, PathBuf};
use vireo_storage::nbd::Listen;
use vireo_storage::pool::{Compression, DeviceSpec};
use vireo_storage::service::{Service, ServiceOptions, DEFAULT_SOCKET};
use vireo_vmm::config::parse_size;

#[derive(Args)]
pub struct StorageArgs {
    /// The storage service's API socket [default: /run/vireo/storage.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: StorageCmd,
}

#[derive(Subcommand)]
enum StorageCmd {
    /// Run the storage service in the foreground; SIGINT or SIGTERM commits the pools and
    /// stops it.
    Serve(ServeArgs),
    /// Storage pools: devices carved into volumes.
    Pool {
        #[command(subcommand)]
        cmd: PoolCmd,
    },
    /// Volumes: create, resize, clone, import and export them.
    Volume {
        #[command(subcommand)]
        cmd: VolumeCmd,
    },
    /// Point-in-time, read-only copies of a volume.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
    /// Serve a volume (or POOL/VOL@SNAP, read-only) to a VM over vhost-user-blk; the service
    /// keeps serving it until --stop or until the volume is deleted.
    VhostUser(VhostUserArgs),
    /// The pools, volumes and vhost-user exports, as tables.
    List {
        /// Print the service's JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Usage, dedup and compression ratios, cache and per-volume I/O counters (JSON).
    Stats,
    /// Import and export jobs.
    Jobs {
        /// Stop the job with this id.
        #[arg(long)]
        cancel: Option<u64>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// The state directory (its pools live in DIR/pools/NAME).
    #[arg(long)]
    dir: PathBuf,
    /// The API socket [default: /run/vireo/storage.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Also serve every volume over NBD (export names POOL/VOL): unix:PATH or tcp:HOST:PORT.
    #[arg(long, value_parser = parse_listen)]
    nbd: Option<Listen>,
}

#[derive(Subcommand)]
enum PoolCmd {
    /// Create a pool on one or more devices (files or block devices).
    Create {
        name: String,
        /// FILE[,tier=fast|capacity] (repeatable).
        #[arg(long = "device", required = true, value_parser = parse_device)]
        devices: Vec<DeviceSpec>,
        /// Store identical blocks once.
        #[arg(long)]
        dedup: bool,
        /// Compress blocks.
        #[arg(long, value_parser = parse_compression, default_value = "off")]
        compression: Compression,
        /// Encrypt blocks (AES-256-XTS) with the 64-byte key in this file (raw or hex).
        #[arg(long)]
        encryption_key_file: Option<PathBuf>,
        /// The read cache's size, e.g. 256M.
        #[arg(long, value_parser = parse_size)]
        cache: Option<u64>,
        /// The unit of allocation, snapshots, dedup and compression: 4K to 1M.
        #[arg(long, value_parser = parse_size)]
        block_size: Option<u64>,
    },
    /// Add a device to a pool.
    AddDevice {
        name: String,
        /// FILE[,tier=fast|capacity].
        #[arg(long, value_parser = parse_device)]
        device: DeviceSpec,
    },
    /// A pool's configuration, devices and usage (JSON).
    Info { name: String },
    /// Move blocks between the fast and capacity tiers by their heat now.
    Rebalance { name: String },
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create a volume: thin (space taken as written) unless --thick.
    Create {
        /// POOL/VOL.
        name: String,
        /// e.g. 10G.
        #[arg(long, value_parser = parse_size)]
        size: u64,
        /// Reserve the whole size in the pool now.
        #[arg(long)]
        thick: bool,
        /// Limit operations per second.
        #[arg(long)]
        iops: Option<u64>,
        /// Limit bytes per second, e.g. 100M.
        #[arg(long, value_parser = parse_size)]
        bps: Option<u64>,
    },
    /// Grow or shrink a volume.
    Resize {
        name: String,
        #[arg(long, value_parser = parse_size)]
        size: u64,
    },
    /// Delete a volume and its snapshots (stopping its vhost-user exports).
    Delete { name: String },
    /// A volume's size, usage, limits, snapshots and I/O counters (JSON).
    Info { name: String },
    /// Change a volume's limits; 0 removes one, a limit not given is kept.
    Qos {
        name: String,
        #[arg(long)]
        iops: Option<u64>,
        #[arg(long, value_parser = parse_size)]
        bps: Option<u64>,
    },
    /// Make POOL/NEW, a writable volume sharing every block of POOL/VOL@SNAP.
    Clone {
        /// POOL/VOL@SNAP.
        snapshot: String,
        /// POOL/NEW (in the same pool).
        new: String,
    },
    /// Return a volume to its content at a snapshot (later snapshots are kept).
    Rollback {
        /// POOL/VOL@SNAP.
        snapshot: String,
    },
    /// Copy a raw or qcow2 image into a volume, creating the volume if needed.
    Import { name: String, file: PathBuf },
    /// Copy a volume (or POOL/VOL@SNAP) into a new image file.
    Export {
        name: String,
        file: PathBuf,
        #[arg(long, value_enum, default_value_t = ImageFormat::Raw)]
        format: ImageFormat,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum ImageFormat {
    Raw,
    Qcow2,
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Snapshot POOL/VOL as POOL/VOL@SNAP.
    Create { name: String },
    /// Delete POOL/VOL@SNAP.
    Delete { name: String },
    /// The snapshots of POOL/VOL.
    List {
        volume: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct VhostUserArgs {
    /// POOL/VOL or POOL/VOL@SNAP (not needed with --stop).
    volume: Option<String>,
    /// The vhost-user socket a VM connects to (`vireo run --disk vhost-user=PATH`).
    #[arg(long)]
    socket: PathBuf,
    /// Stop the export on --socket.
    #[arg(long)]
    stop: bool,
}

fn parse_listen(s: &str) -> Result<Listen, String> {
    s.parse()
        .map_err(|e: vireo_storage::StorageError| e.to_string())
}

fn parse_device(s: &str) -> Result<DeviceSpec, String> {
    let mut spec: DeviceSpec = s
        .parse()
        .map_err(|e: vireo_storage::StorageError| e.to_string())?;
    spec.path = absolute(&spec.path)?;
    Ok(spec)
}

fn parse_compression(s: &str) -> Result<Compression, String> {
    s.parse()
        .map_err(|e: vireo_storage::StorageError| e.to_string())
}

/// The service runs elsewhere: it gets absolute paths.
fn absolute(p: &Path) -> Result<PathBuf, String> {
    std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))
}

pub fn run(args: StorageArgs) -> Result<(), String> {
    let socket = args
        .socket
        .clone()
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let c = client::Client {
        socket,
        serve: "vireo storage serve",
        default_socket: vireo_storage::service::DEFAULT_SOCKET,
    };
    match args.cmd {
        StorageCmd::Serve(s) => serve(s, args.socket),
        StorageCmd::Pool { cmd } => commands::pool(&c, cmd),
        StorageCmd::Volume { cmd } => commands::volume(&c, cmd),
        StorageCmd::Snapshot { cmd } => commands::snapshot(&c, cmd),
        StorageCmd::VhostUser(a) => commands::vhost_user(&c, a),
        StorageCmd::List { json } => {
            let stats = c.call("GET", "/api/v1/stats", None)?;
            if json {
                show::pretty(&stats);
            } else {
                print!("{}", show::list(&stats));
            }
            Ok(())
        }
        StorageCmd::Stats => {
            show::pretty(&c.call("GET", "/api/v1/stats", None)?);
            Ok(())
        }
        StorageCmd::Jobs { cancel: Some(id) } => {
            let j = c.call("DELETE", &format!("/api/v1/jobs/{id}"), None)?;
            println!(
                "cancelling job {id} ({} {})",
                s(&j["kind"]),
                s(&j["volume"])
            );
            Ok(())
        }
        StorageCmd::Jobs { cancel: None } => {
            print!("{}", show::jobs(&c.call("GET", "/api/v1/jobs", None)?));
            Ok(())
        }
    }
}

fn serve(a: ServeArgs, global_socket: Option<PathBuf>) -> Result<(), String> {
    let socket = a
        .socket
        .or(global_socket)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET));
    let opts = ServiceOptions {
        dir: a.dir,
        socket,
        nbd: a.nbd,
    };
    // Before any thread starts, so that every thread leaves the signals to us.
    let signals =
        TerminationSignals::block().map_err(|e| format!("blocking SIGINT/SIGTERM: {e}"))?;
    let svc = Service::start(&opts).map_err(|e| e.to_string())?;
    let nbd = match &opts.nbd {
        Some(Listen::Unix(p)) => format!(", NBD on unix:{}", p.display()),
        Some(Listen::Tcp(addr)) => format!(", NBD on tcp:{addr}"),
        None => String::new(),
    };
    eprintln!(
        "vireo storage: serving {} on {}{nbd}",
        opts.dir.display(),
        opts.socket.display()
    );
    let sig = signals.wait();
    eprintln!("vireo storage: signal {sig}: committing the pools and stopping");
    svc.shutdown().map_err(|e| e.to_string())
}

/// A string field of a JSON reply, or "".
fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}
