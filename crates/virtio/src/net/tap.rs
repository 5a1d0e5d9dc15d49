//! The host side of the network device: a Linux tap interface opened through `/dev/net/tun`,
//! carrying Ethernet frames prefixed by the 12-byte virtio-net header (IFF_VNET_HDR), so that
//! checksum and segmentation offloads pass between the guest and the host stack unchanged.
//!
//! A tap this process creates is not persistent: the kernel deletes it when the fd is closed,
//! so a VMM that exits (or crashes) leaves nothing behind. An existing tap (`ip tuntap add ...`)
//! is attached to and left as it was found.

use super::{NetError, VNET_HDR_LEN};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

/// Longest interface name: IFNAMSIZ less the terminating NUL.
pub const MAX_NAME_LEN: usize = libc::IFNAMSIZ - 1;

/// The guest offloads a tap can deliver (TUNSETOFFLOAD), all or none probed at open.
pub const GUEST_OFFLOADS: u32 =
    libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;

pub struct Tap {
    file: File,
    name: String,
    /// TUNSETOFFLOAD accepted [`GUEST_OFFLOADS`].
    offloads: bool,
}

impl Tap {
    /// Creates the tap `name`, or attaches to the existing one, and brings its link up.
    pub fn open(name: &str) -> Result<Tap, NetError> {
        check_name(name)?;
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open("/dev/net/tun")
            .map_err(|e| match e.kind() {
                io::ErrorKind::NotFound => NetError::NoTunDevice,
                _ => NetError::TunDevice { source: e },
            })?;
        let fd = file.as_raw_fd();
        let io_err = |what: &'static str| {
            let source = io::Error::last_os_error();
            NetError::Ioctl {
                tap: name.to_string(),
                what,
                source,
            }
        };

        let mut features: libc::c_uint = 0;
        // SAFETY: TUNGETFEATURES writes one unsigned int to the pointer, which is ours.
        if unsafe { libc::ioctl(fd, libc::TUNGETFEATURES as _, &mut features) } < 0 {
            return Err(io_err("TUNGETFEATURES"));
        }
        if features & libc::IFF_VNET_HDR as libc::c_uint == 0 {
            return Err(NetError::NoVnetHdr);
        }

        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI | libc::IFF_VNET_HDR) as i16;
        // SAFETY: TUNSETIFF reads and updates the ifreq, which lives across the call.
        if unsafe { libc::ioctl(fd, libc::TUNSETIFF as _, &mut ifr) } < 0 {
            return Err(setiff_error(name, io::Error::last_os_error()));
        }
        // The kernel writes back the name it used (it expands a `%d` pattern).
        let name = ifr_name(&ifr);

        let hdr_len = VNET_HDR_LEN as libc::c_int;
        // SAFETY: TUNSETVNETHDRSZ reads one int from the pointer, which is ours.
        if unsafe { libc::ioctl(fd, libc::TUNSETVNETHDRSZ as _, &hdr_len) } < 0 {
            return Err(io_err("TUNSETVNETHDRSZ"));
        }
        // virtio 1.x headers are little endian whatever the host; a no-op on little-endian
        // hosts, and only kernels older than 4.0 lack it.
        let le: libc::c_int = 1;
        // SAFETY: TUNSETVNETLE reads one int from the pointer, which is ours.
        if unsafe { libc::ioctl(fd, libc::TUNSETVNETLE as _, &le) } < 0
            && cfg!(target_endian = "big")
        {
            return Err(io_err("TUNSETVNETLE"));
        }

        let mut tap = Tap {
            file,
            name,
            offloads: false,
        };
        // Every kernel with IFF_VNET_HDR has these; probe anyway rather than offer the guest
        // offloads the tap would refuse at activation.
        tap.offloads = tap.set_offload(GUEST_OFFLOADS).is_ok();
        tap.set_offload(0).map_err(|source| NetError::Ioctl {
            tap: tap.name.clone(),
            what: "TUNSETOFFLOAD",
            source,
        })?;
        link_up(&tap.name)?;
        Ok(tap)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the tap can hand the guest checksum-offloaded and TSO packets.
    pub fn has_offloads(&self) -> bool {
        self.offloads
    }

    /// Which offloads (TUN_F_*) packets read from the tap may use: the kernel checksums and
    /// segments everything else before it reaches us.
    pub fn set_offload(&self, flags: u32) -> io::Result<()> {
        // SAFETY: TUNSETOFFLOAD takes its argument by value and touches no memory of ours.
        let r = unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                libc::TUNSETOFFLOAD as _,
                libc::c_ulong::from(flags),
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads one packet (virtio-net header and frame); a packet longer than `buf` is truncated.
    pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
        // SAFETY: the kernel writes at most buf.len() bytes into buf, which we own.
        let n = unsafe { libc::read(self.file.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// Sends one packet gathered from `iov` (header first).
    ///
    /// # Safety
    /// Each iovec must describe memory readable for its length for the duration of the call.
    pub unsafe fn writev(&self, iov: &[libc::iovec]) -> io::Result<usize> {
        let count = libc::c_int::try_from(iov.len())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: the caller guarantees the iovecs; the kernel only reads them.
        let n = unsafe { libc::writev(self.file.as_raw_fd(), iov.as_ptr(), count) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(n as usize)
    }
}

impl AsRawFd for Tap {
    fn as_raw_fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// What the kernel accepts as an interface name (`dev_valid_name`), checked here so that the
/// error names the problem.
fn check_name(name: &str) -> Result<(), NetError> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(NetError::BadName {
            tap: name.to_string(),
        });
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NetError::NameTooLong {
            tap: name.to_string(),
        });
    }
    if name
        .chars()
        .any(|c| c == '/' || c == ':' || c == '\0' || c.is_whitespace())
    {
        return Err(NetError::BadName {
            tap: name.to_string(),
        });
    }
    Ok(())
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: ifreq is plain data (a name and a union of integers and addresses), for which
    // all zeroes is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    // check_name bounded the length, so the name stays NUL-terminated.
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    ifr
}

fn ifr_name(ifr: &libc::ifreq) -> String {
    let bytes: Vec<u8> = ifr
        .ifr_name
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

fn setiff_error(name: &str, source: io::Error) -> NetError {
    let tap = name.to_string();
    match source.raw_os_error() {
        Some(libc::EPERM) => NetError::Permission { tap },
        Some(libc::EBUSY) => NetError::Busy { tap },
        Some(libc::EINVAL) => NetError::NotATap { tap },
        _ => NetError::Ioctl {
            tap,
            what: "TUNSETIFF",
            source,
        },
    }
}

/// Sets IFF_UP on the interface unless it is up already (a pre-created tap may be up, and
/// then no privilege is needed).
fn link_up(name: &str) -> Result<(), NetError> {
    let err = |source: io::Error| NetError::LinkUp {
        tap: name.to_string(),
        source,
    };
    // SAFETY: socket() takes no pointers; the fd it returns is owned below.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: raw is a fresh socket nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut ifr = ifreq(name);
    // SAFETY: SIOCGIFFLAGS fills in the ifreq, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut ifr) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    // SAFETY: SIOCGIFFLAGS set the flags member of the union.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as i16 != 0 {
        return Ok(());
    }
    ifr.ifr_ifru.ifru_flags = flags | libc::IFF_UP as i16;
    // SAFETY: SIOCSIFFLAGS reads the ifreq, which lives across the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &ifr) } < 0 {
        return Err(err(io::Error::last_os_error()));
    }
    Ok(())
}
