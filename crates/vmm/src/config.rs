//! What the user asked for, validated before anything is built.

use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accel {
    Auto,
    Kvm,
    Emu,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleConfig {
    /// Guest serial output to stdout, stdin to the guest (raw mode on a terminal).
    Stdio,
    /// Guest serial output appended to a file; no input.
    File(PathBuf),
    /// A virtio-console (`hvc0` in the guest) on stdin/stdout; the serial port's output still
    /// goes to stdout (boot messages), but typed input goes to the virtio console.
    Virtio,
}

/// A `--disk`: a virtio-blk device over an image file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskConfig {
    /// The image (empty for a vhost-user disk).
    pub path: PathBuf,
    /// A vhost-user-blk backend's socket, which serves the disk instead of an image file.
    pub vhost_user: Option<PathBuf>,
    pub format: DiskFormat,
    pub readonly: bool,
    pub cache: CacheMode,
    /// Operations per second, if limited.
    pub iops: Option<u64>,
    /// Bytes per second, if limited.
    pub bps: Option<u64>,
}

pub use vireo_virtio::block::{CacheMode, DiskFormat};

impl DiskConfig {
    /// Parses `path=FILE[,format=raw|qcow2][,readonly=on][,cache=none|writeback][,iops=N][,bps=N]`
    /// or `vhost-user=SOCKET`.
    pub fn parse(s: &str) -> Result<DiskConfig, String> {
        let empty = DiskConfig {
            path: PathBuf::new(),
            vhost_user: None,
            format: DiskFormat::Raw,
            readonly: false,
            cache: CacheMode::Writeback,
            iops: None,
            bps: None,
        };
        let mut disk = empty.clone();
        for (key, value) in key_values(s, "--disk")? {
            match key {
                "path" => disk.path = PathBuf::from(value),
                "format" => {
                    disk.format = match value {
                        "raw" => DiskFormat::Raw,
                        "qcow2" => DiskFormat::Qcow2,
                        _ => return Err(format!("--disk {s}: format={value}: use raw or qcow2")),
                    }
                }
                "readonly" => disk.readonly = on_off(value).map_err(|e| format!("--disk {s}: {e}"))?,
                "cache" => {
                    disk.cache = match value {
                        "none" => CacheMode::None,
                        "writeback" => CacheMode::Writeback,
                        _ => return Err(format!("--disk {s}: cache={value}: use none or writeback")),
                    }
                }
                "iops" | "bps" => {
                    let n = parse_size(value)
                        .ok()
                        .filter(|&n| n > 0)
                        .ok_or_else(|| format!("--disk {s}: {key}={value} is not a positive number"))?;
                    *(if key == "iops" { &mut disk.iops } else { &mut disk.bps }) = Some(n);
                }
                "vhost-user" => disk.vhost_user = Some(PathBuf::from(value)),
                _ => {
                    return Err(format!(
                        "--disk {s}: unknown option {key:?}; options are path, format, readonly, cache, iops, bps"
                    ))
                }
            }
        }
        if disk.vhost_user.is_some() {
            let only_socket = DiskConfig {
                vhost_user: disk.vhost_user.clone(),
                ..empty
            };
            if disk != only_socket {
                return Err(format!(
                    "--disk {s}: a vhost-user backend owns the image: give only vhost-user=SOCKET (path, format, readonly, cache, iops and bps are the backend's)"
                ));
            }
        } else if disk.path.as_os_str().is_empty() {
            return Err(format!(
                "--disk {s}: give the image as path=FILE (or a backend as vhost-user=SOCKET)"
            ));
        }
        Ok(disk)
    }
}

/// A `--balloon`: a virtio-balloon device.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonOpts {
    /// The balloon's size at boot: guest memory the host takes back.
    pub size: u64,
    /// Seconds between memory-statistics updates from the guest (none: no statistics).
    pub stats: Option<u64>,
    pub free_page_reporting: bool,
}

impl BalloonOpts {
    /// Parses `[size=SIZE][,stats=SECONDS][,free-page-reporting=on]` (an empty string is
    /// a balloon of size 0 without statistics).
    pub fn parse(s: &str) -> Result<BalloonOpts, String> {
        let mut b = BalloonOpts::default();
        if s.is_empty() {
            return Ok(b);
        }
        for item in s.split(',') {
            let (key, value) = item
                .split_once('=')
                .ok_or_else(|| format!("--balloon {s}: {item:?} is not key=value"))?;
            match key {
                "size" => b.size = parse_size(value).map_err(|e| format!("--balloon {s}: {e}"))?,
                "stats" => {
                    let secs: u64 = value
                        .parse()
                        .map_err(|_| format!("--balloon {s}: stats={value} is not a number of seconds"))?;
                    b.stats = (secs > 0).then_some(secs);
                }
                "free-page-reporting" => {
                    b.free_page_reporting = on_off(value).map_err(|e| format!("--balloon {s}: {e}"))?
                }
                _ => {
                    return Err(format!(
                        "--balloon {s}: unknown option {key:?}; options are size, stats, free-page-reporting"
                    ))
                }
            }
        }
        Ok(b)
    }
}

/// A `--vsock`: a virtio-vsock device, bridged to Unix sockets as Firecracker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockOpts {
    /// The guest's context ID (3 or more).
    pub cid: u64,
    /// Host side: connect here and send `CONNECT <port>`; the guest reaches `PATH_<port>`.
    pub socket: PathBuf,
}

impl VsockOpts {
    /// Parses `cid=N,socket=PATH`.
    pub fn parse(s: &str) -> Result<VsockOpts, String> {
        let (mut cid, mut socket) = (None, None);
        for (key, value) in key_values(s, "--vsock")? {
            match key {
                "cid" => {
                    cid = Some(
                        value
                            .parse::<u64>()
                            .ok()
                            .filter(|&c| (3..u64::from(u32::MAX)).contains(&c))
                            .ok_or_else(|| {
                                format!("--vsock {s}: cid={value}: give a number from 3 to 4294967294 (0-2 are reserved)")
                            })?,
                    )
                }
                "socket" | "path" => socket = Some(PathBuf::from(value)),
                _ => return Err(format!("--vsock {s}: unknown option {key:?}; options are cid and socket")),
            }
        }
        match (cid, socket) {
            (Some(cid), Some(socket)) => Ok(VsockOpts { cid, socket }),
            _ => Err(format!("--vsock {s}: give both cid=N and socket=PATH")),
        }
    }
}

/// A `--net`: a virtio-net device on a tap device (or a vhost-user backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetOpts {
    pub backend: NetBackend,
    pub mac: Option<[u8; 6]>,
    /// Bytes per second, each way, if limited.
    pub bps: Option<u64>,
    /// Packets per second, each way, if limited.
    pub pps: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetBackend {
    /// A tap interface (created if it doesn't exist).
    Tap(String),
    /// A vhost-user-net backend's socket.
    VhostUser(PathBuf),
}

impl NetOpts {
    /// Parses `tap=NAME[,mac=MAC][,bps=N][,pps=N]` or `vhost-user=SOCKET[,mac=MAC]`.
    pub fn parse(s: &str) -> Result<NetOpts, String> {
        let (mut backend, mut mac, mut bps, mut pps) = (None, None, None, None);
        for (key, value) in s.split(',').map(|i| i.split_once('=').unwrap_or((i, ""))) {
            let positive = || {
                parse_size(value)
                    .ok()
                    .filter(|&n| n > 0)
                    .ok_or_else(|| format!("--net {s}: {key}={value} is not a positive number"))
            };
            match key {
                "tap" if !value.is_empty() => backend = Some(NetBackend::Tap(value.to_string())),
                "vhost-user" if !value.is_empty() => {
                    backend = Some(NetBackend::VhostUser(PathBuf::from(value)))
                }
                "mac" => mac = Some(parse_mac(value).map_err(|e| format!("--net {s}: {e}"))?),
                "bps" => bps = Some(positive()?),
                "pps" => pps = Some(positive()?),
                _ => {
                    return Err(format!(
                        "--net {s}: unknown option {key:?}; use tap=NAME or vhost-user=SOCKET, with mac, bps, pps"
                    ))
                }
            }
        }
        let backend =
            backend.ok_or_else(|| format!("--net {s}: give tap=NAME or vhost-user=SOCKET"))?;
        if matches!(backend, NetBackend::VhostUser(_)) && (bps.is_some() || pps.is_some()) {
            return Err(format!(
                "--net {s}: bps and pps limit a tap; a vhost-user backend enforces its own QoS"
            ));
        }
        Ok(NetOpts {
            backend,
            mac,
            bps,
            pps,
        })
    }
}

/// Parses `52:54:00:12:34:56`; the address must be unicast.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let bytes: Vec<u8> = s
        .split(':')
        .map(|b| u8::from_str_radix(b, 16).ok().filter(|_| b.len() == 2))
        .collect::<Option<_>>()
        .filter(|v: &Vec<u8>| v.len() == 6)
        .ok_or_else(|| format!("mac={s} is not a MAC address like 52:54:00:12:34:56"))?;
    if bytes[0] & 1 != 0 {
        return Err(format!(
            "mac={s} is a multicast address; the first byte must be even"
        ));
    }
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&bytes);
    Ok(mac)
}

/// Splits `a=1,b=2` into pairs; a bare first word is taken as `path=`.
fn key_values<'a>(s: &'a str, flag: &str) -> Result<Vec<(&'a str, &'a str)>, String> {
    s.split(',')
        .enumerate()
        .map(|(i, item)| match item.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k, v)),
            None if i == 0 && !item.is_empty() => Ok(("path", item)),
            _ => Err(format!("{flag} {s}: {item:?} is not key=value")),
        })
        .collect()
}

fn on_off(v: &str) -> Result<bool, String> {
    match v {
        "on" | "true" | "yes" | "1" => Ok(true),
        "off" | "false" | "no" | "0" => Ok(false),
        _ => Err(format!("{v:?} is not on or off")),
    }
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    pub cpus: u32,
    pub memory: u64,
    pub accel: Accel,
    pub console: ConsoleConfig,
    pub api_socket: Option<PathBuf>,
    /// virtio-blk disks, in the order the guest sees them (vda, vdb, ...).
    pub disks: Vec<DiskConfig>,
    /// A virtio-rng device.
    pub rng: bool,
    /// A virtio-balloon device.
    pub balloon: Option<BalloonOpts>,
    /// A virtio-vsock device.
    pub vsock: Option<VsockOpts>,
    /// virtio-net devices, in the order the guest sees them (eth0, eth1, ...).
    pub nets: Vec<NetOpts>,
}

/// The smallest guest we build: room for the boot structures, ACPI tables and a tiny kernel.
pub const MIN_MEMORY: u64 = 2 << 20;
/// Most vCPUs a VM may have: APIC IDs are 8-bit and one ID goes to the IOAPIC.
pub const MAX_CPUS: u32 = 254;

impl VmConfig {
    /// Checks the numbers that don't need a backend; the error says what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.cpus == 0 || self.cpus > MAX_CPUS {
            return Err(format!(
                "--cpus {} is out of range: give 1 to {MAX_CPUS}",
                self.cpus
            ));
        }
        if self.memory < MIN_MEMORY {
            return Err(format!(
                "--memory {} is too small: give at least {} MiB (e.g. --memory 512M)",
                self.memory,
                MIN_MEMORY >> 20
            ));
        }
        let host = host_memory();
        if host > 0 && self.memory > host {
            return Err(format!(
                "--memory {} MiB is more than this host has ({} MiB)",
                self.memory >> 20,
                host >> 20
            ));
        }
        if !self.memory.is_multiple_of(4096) {
            return Err("--memory must be a multiple of 4 KiB".into());
        }
        if let Some(b) = &self.balloon {
            if b.size >= self.memory {
                return Err(format!(
                    "--balloon size={} MiB leaves the guest no memory: give less than --memory ({} MiB)",
                    b.size >> 20,
                    self.memory >> 20
                ));
            }
        }
        Ok(())
    }
}

/// Total physical memory of the host, or 0 if unknown.
pub fn host_memory() -> u64 {
    // SAFETY: sysconf takes no pointers and only returns a number.
    let (pages, size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && size > 0 {
        pages as u64 * size as u64
    } else {
        0
    }
}

/// Parses sizes like `512M`, `2G`, `65536`, `1.5G` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => {
            let unit = t[i..].to_ascii_uppercase();
            let m: u64 = match unit.trim_end_matches("IB").trim_end_matches('B') {
                "" => 1,
                "K" => 1 << 10,
                "M" => 1 << 20,
                "G" => 1 << 30,
                "T" => 1 << 40,
                _ => return Err(format!("unknown size unit in {s:?}: use K, M, G or T")),
            };
            (&t[..i], m)
        }
        None => (t, 1),
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512M, 2G)"))?;
    if !(0.0..1.8e19).contains(&(v * mult as f64)) {
        return Err(format!("size {s:?} is out of range"));
    }
    Ok((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2G").unwrap(), 2 << 30);
        assert_eq!(parse_size("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("lots").is_err());
        assert!(parse_size("-1M").is_err());
    }

    fn cfg(cpus: u32, memory: u64) -> VmConfig {
        VmConfig {
            kernel: "k".into(),
            initrd: None,
            cmdline: String::new(),
            cpus,
            memory,
            accel: Accel::Auto,
            console: ConsoleConfig::Stdio,
            api_socket: None,
            disks: Vec::new(),
            rng: false,
            balloon: None,
            vsock: None,
            nets: Vec::new(),
        }
    }

    #[test]
    fn vsock_and_net_options() {
        let v = VsockOpts::parse("cid=3,socket=/tmp/v.sock").unwrap();
        assert_eq!((v.cid, v.socket.to_str()), (3, Some("/tmp/v.sock")));
        for bad in [
            "cid=2,socket=/x",
            "cid=3",
            "socket=/x",
            "cid=x,socket=/x",
            "cid=3,socket=/x,port=1",
        ] {
            assert!(
                VsockOpts::parse(bad).unwrap_err().starts_with("--vsock"),
                "{bad}"
            );
        }
        let n = NetOpts::parse("tap=vt0,mac=52:54:00:12:34:56,bps=10M,pps=1000").unwrap();
        assert_eq!(n.backend, NetBackend::Tap("vt0".into()));
        assert_eq!(n.mac, Some([0x52, 0x54, 0, 0x12, 0x34, 0x56]));
        assert_eq!((n.bps, n.pps), (Some(10 << 20), Some(1000)));
        let n = NetOpts::parse("vhost-user=/tmp/n.sock").unwrap();
        assert_eq!(n.backend, NetBackend::VhostUser("/tmp/n.sock".into()));
        for bad in [
            "mac=52:54:00:12:34:56",
            "tap=",
            "tap=a,mac=01:00:00:00:00:01",
            "tap=a,mac=zz",
            "tap=a,pps=0",
            "vhost-user=/x,bps=1",
            "tap=a,color=red",
        ] {
            assert!(
                NetOpts::parse(bad).unwrap_err().starts_with("--net"),
                "{bad}"
            );
        }
    }

    #[test]
    fn balloon_options() {
        let b = BalloonOpts::parse("size=128M,stats=5,free-page-reporting=on").unwrap();
        assert_eq!(
            (b.size, b.stats, b.free_page_reporting),
            (128 << 20, Some(5), true)
        );
        assert_eq!(BalloonOpts::parse("").unwrap(), BalloonOpts::default());
        for bad in [
            "size",
            "stats=soon",
            "color=red",
            "free-page-reporting=maybe",
        ] {
            assert!(
                BalloonOpts::parse(bad)
                    .unwrap_err()
                    .starts_with("--balloon"),
                "{bad}"
            );
        }
        let mut c = cfg(1, 256 << 20);
        c.balloon = Some(BalloonOpts {
            size: 256 << 20,
            ..Default::default()
        });
        assert!(c.validate().unwrap_err().contains("--balloon"));
    }

    #[test]
    fn disk_options() {
        let d = DiskConfig::parse("path=/x.img,readonly=on,cache=none,iops=100,bps=10M").unwrap();
        assert_eq!(d.path, PathBuf::from("/x.img"));
        assert!(d.readonly);
        assert_eq!(d.cache, CacheMode::None);
        assert_eq!((d.iops, d.bps), (Some(100), Some(10 << 20)));
        let d = DiskConfig::parse("vhost-user=/tmp/blk.sock").unwrap();
        assert_eq!(d.vhost_user, Some(PathBuf::from("/tmp/blk.sock")));
        assert!(DiskConfig::parse("vhost-user=/s,readonly=on").is_err());
        assert!(DiskConfig::parse("vhost-user=/s,path=/x").is_err());
        let d = DiskConfig::parse("/y.img").unwrap();
        assert_eq!((d.path.to_str(), d.readonly), (Some("/y.img"), false));
        for bad in [
            "readonly=on",
            "path=/x,cache=fast",
            "path=/x,iops=0",
            "path=/x,color=red",
            "path=/x,format=vmdk",
            "path=/x,readonly=maybe",
        ] {
            let e = DiskConfig::parse(bad).unwrap_err();
            assert!(e.starts_with("--disk"), "{bad}: {e}");
        }
    }

    #[test]
    fn validation_names_the_problem() {
        assert!(cfg(0, 1 << 30).validate().unwrap_err().contains("--cpus"));
        assert!(cfg(1000, 1 << 30)
            .validate()
            .unwrap_err()
            .contains("--cpus"));
        assert!(cfg(1, 0).validate().unwrap_err().contains("--memory"));
        assert!(cfg(1, 1 << 50).validate().unwrap_err().contains("--memory"));
        assert!(cfg(2, 128 << 20).validate().is_ok());
    }
}
