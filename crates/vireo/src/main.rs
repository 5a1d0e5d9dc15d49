//! `vireo`: the one binary of the Vireo virtualization platform.

mod client;
mod net_cli;
mod signals;
mod storage_cli;

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use vireo_vmm::config::parse_size;
use vireo_vmm::config::{BalloonOpts, NetOpts, VsockOpts};
use vireo_vmm::{Accel, ConsoleConfig, DiskConfig, VmConfig, VmOutcome};

#[derive(Parser)]
#[command(
    name = "vireo",
    version,
    about = "Vireo: virtual machines, storage and networks"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Boot a VM in the foreground (the guest's serial console is this terminal).
    Run(Box<RunArgs>),
    /// Guest images.
    Image {
        #[command(subcommand)]
        cmd: ImageCmd,
    },
    /// Manage a running VM through its API socket.
    Vm {
        #[command(subcommand)]
        cmd: VmCmd,
    },
    /// The storage service (pools, volumes, snapshots; served over vhost-user-blk and NBD)
    /// and its client.
    Storage(storage_cli::StorageArgs),
    /// The network service (networks, tap ports, VLANs, QoS, counters) and its client.
    Net(net_cli::NetArgs),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Kernel: a bzImage, an ELF vmlinux with a PVH note, or a 32-bit PVH ELF payload.
    /// Default: the kernel that `vireo image build` made.
    #[arg(long)]
    kernel: Option<PathBuf>,
    /// Initial ramdisk. Default: the image's initramfs when --kernel is not given.
    #[arg(long)]
    initrd: Option<PathBuf>,
    /// Kernel command line.
    #[arg(long, default_value = "console=ttyS0 reboot=k panic=-1")]
    cmdline: String,
    /// Number of vCPUs.
    #[arg(long, default_value_t = 1)]
    cpus: u32,
    /// Guest memory, e.g. 512M or 2G.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    memory: u64,
    /// CPU backend: hardware-assisted (kvm), software emulation (emu), or the best that can
    /// run this guest here (auto).
    #[arg(long, value_enum, default_value_t = AccelArg::Auto)]
    accel: AccelArg,
    /// Console: `stdio` (the serial port), `virtio` (a virtio-console, `hvc0`, on stdio) or
    /// `file=PATH` (serial output to a file, no input).
    #[arg(long, default_value = "stdio", value_parser = parse_console)]
    console: ConsoleConfig,
    /// Serve the management API on this Unix socket.
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// A virtio-blk disk (repeatable; the guest sees vda, vdb, ... in order):
    /// `path=FILE[,format=raw|qcow2][,readonly=on][,cache=none|writeback][,iops=N][,bps=N]`,
    /// or `vhost-user=SOCKET` for a disk served by a vhost-user-blk backend.
    #[arg(long, value_parser = DiskConfig::parse)]
    disk: Vec<DiskConfig>,
    /// A virtio-rng device, fed from the host's getrandom.
    #[arg(long)]
    rng: bool,
    /// A virtio-balloon: `[size=SIZE][,stats=SECONDS][,free-page-reporting=on]` (resize it with
    /// `vireo vm balloon`).
    #[arg(long, value_parser = BalloonOpts::parse, num_args = 0..=1, default_missing_value = "")]
    balloon: Option<BalloonOpts>,
    /// A virtio-net device (repeatable): `tap=NAME[,mac=MAC][,bps=N][,pps=N]` (the tap is
    /// created if it doesn't exist, and removed again when the VM ends), or
    /// `vhost-user=SOCKET[,mac=MAC]` for a vhost-user-net backend.
    #[arg(long, value_parser = NetOpts::parse)]
    net: Vec<NetOpts>,
    /// A virtio-vsock device: `cid=N,socket=PATH`. Host programs connect to PATH and send
    /// `CONNECT <port>`; the guest's connections to CID 2 port P reach `PATH_P`.
    #[arg(long, value_parser = VsockOpts::parse)]
    vsock: Option<VsockOpts>,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Auto,
    Kvm,
    Emu,
}

#[derive(Subcommand)]
enum ImageCmd {
    /// Build a bootable guest (Debian cloud kernel + busybox initramfs) from Debian packages.
    Build {
        /// Where to write vmlinuz and initramfs.cpio.gz.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum VmCmd {
    /// Show the VM's state, configuration and per-vCPU exit counters.
    Info(ApiArg),
    /// List the virtio devices with their PCI addresses and I/O counters.
    Devices(ApiArg),
    /// Show the balloon, or resize it with --size (memory taken back from the guest).
    Balloon {
        #[command(flatten)]
        api: ApiArg,
        #[arg(long, value_parser = parse_size)]
        size: Option<u64>,
    },
    /// Pause all vCPUs.
    Pause(ApiArg),
    /// Resume a paused VM.
    Resume(ApiArg),
    /// Graceful shutdown: press the ACPI power button.
    Shutdown(ApiArg),
    /// Hard stop: end the VM at once.
    Stop(ApiArg),
}

#[derive(clap::Args)]
struct ApiArg {
    #[arg(long)]
    api_socket: PathBuf,
}

fn parse_console(s: &str) -> Result<ConsoleConfig, String> {
    match s {
        "stdio" => Ok(ConsoleConfig::Stdio),
        "virtio" => Ok(ConsoleConfig::Virtio),
        _ => match s.strip_prefix("file=") {
            Some(p) if !p.is_empty() => Ok(ConsoleConfig::File(p.into())),
            _ => Err(format!("{s:?}: use `stdio`, `virtio` or `file=PATH`")),
        },
    }
}

/// Where `vireo image build` puts its output and its download cache by default.
fn cache_root() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(|| PathBuf::from("/var/cache"))
        .join("vireo")
}

fn run(args: RunArgs) -> Result<VmOutcome, String> {
    let image = cache_root().join("image");
    let (kernel, initrd) = match args.kernel {
        Some(k) => (k, args.initrd),
        None => {
            let k = image.join("vmlinuz");
            if !k.exists() {
                return Err(format!(
                    "no --kernel given and no default image at {}: run `vireo image build` first, or pass --kernel PATH",
                    k.display()
                ));
            }
            (
                k,
                args.initrd
                    .or_else(|| Some(image.join("initramfs.cpio.gz"))),
            )
        }
    };
    let cfg = VmConfig {
        kernel,
        initrd,
        cmdline: args.cmdline,
        cpus: args.cpus,
        memory: args.memory,
        accel: match args.accel {
            AccelArg::Auto => Accel::Auto,
            AccelArg::Kvm => Accel::Kvm,
            AccelArg::Emu => Accel::Emu,
        },
        console: args.console,
        api_socket: args.api_socket,
        disks: args.disk,
        rng: args.rng,
        balloon: args.balloon,
        vsock: args.vsock,
        nets: args.net,
    };
    vireo_vmm::run_vm(cfg).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VIREO_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run(args) => run(*args).map(|outcome| {
            tracing::info!("VM ended: {outcome:?}");
        }),
        Cmd::Image {
            cmd: ImageCmd::Build { out },
        } => {
            let root = cache_root();
            let opts = vireo_image::BuildOptions {
                out_dir: out.unwrap_or_else(|| root.join("image")),
                cache_dir: root.join("debs"),
            };
            vireo_image::build(&opts)
                .map(|img| {
                    println!("kernel  {}", img.kernel.display());
                    println!("initrd  {}", img.initrd.display());
                    println!("rootfs  {}", img.rootfs.display());
                    println!("version {}", img.kernel_version);
                })
                .map_err(|e| e.to_string())
        }
        Cmd::Vm { cmd } => client::run(cmd),
        Cmd::Storage(args) => storage_cli::run(args),
        Cmd::Net(args) => net_cli::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vireo: error: {e}");
            ExitCode::FAILURE
        }
    }
}
