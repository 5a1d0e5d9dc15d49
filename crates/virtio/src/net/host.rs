//! The host side of the tests, inside the test's network namespace: `ip`, interface queries, a
//! packet socket on the tap, and frame builders.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::{Duration, Instant};

pub const HOST_IP: [u8; 4] = [10, 123, 0, 1];
pub const GUEST_IP: [u8; 4] = [10, 123, 0, 2];
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_IP: u16 = 0x0800;
/// An ethertype for local experiments (IEEE 802): frames nobody else sends.
pub const ETH_P_TEST: u16 = 0x88b5;

/// Runs `ip args...` and insists that it works.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Gives the tap the host's address and a permanent neighbour entry for the guest.
pub fn setup_host(tap: &str, guest_mac: &[u8; 6]) {
    ip(&["addr", "add", "10.123.0.1/24", "dev", tap]);
    let mac = super::format_mac(guest_mac);
    ip(&[
        "neigh",
        "replace",
        "10.123.0.2",
        "lladdr",
        &mac,
        "dev",
        tap,
        "nud",
        "permanent",
    ]);
}

pub fn if_index(name: &str) -> u32 {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: c is a NUL-terminated string that lives across the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

fn ifreq_ioctl(name: &str, req: libc::c_ulong) -> Option<libc::ifreq> {
    // SAFETY: a plain socket; the fd is owned right after.
    let sock = unsafe { OwnedFd::from_raw_fd(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0)) };
    // SAFETY: ifreq is plain data; zeroes are valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    // SAFETY: the request fills in the ifreq, which lives across the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), req as _, &mut ifr) };
    (rc == 0).then_some(ifr)
}

pub fn if_mac(name: &str) -> [u8; 6] {
    let ifr = ifreq_ioctl(name, libc::SIOCGIFHWADDR).unwrap();
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member.
    let data = unsafe { ifr.ifr_ifru.ifru_hwaddr.sa_data };
    std::array::from_fn(|i| data[i] as u8)
}

pub fn if_is_up(name: &str) -> bool {
    let ifr = ifreq_ioctl(name, libc::SIOCGIFFLAGS).unwrap();
    // SAFETY: SIOCGIFFLAGS filled the flags member.
    let flags = unsafe { ifr.ifr_ifru.ifru_flags };
    flags & libc::IFF_UP as i16 != 0
}

/// An AF_PACKET socket bound to one interface: sees every frame crossing it, and sends frames
/// out of it (into the tap, where the device reads them).
pub struct PacketSocket {
    fd: OwnedFd,
}

impl PacketSocket {
    /// `vnet_hdr`: frames are prefixed by a 10-byte `virtio_net_hdr` describing their
    /// checksum and GSO state (PACKET_VNET_HDR).
    pub fn new(tap: &str, vnet_hdr: bool) -> PacketSocket {
        let proto = (libc::ETH_P_ALL as u16).to_be();
        // SAFETY: plain socket call; the fd is owned right after.
        let raw = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
        assert!(raw >= 0, "{}", std::io::Error::last_os_error());
        // SAFETY: raw is a fresh fd.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        if vnet_hdr {
            let one: libc::c_int = 1;
            // SAFETY: the option value is an int that lives across the call.
            let rc = unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    libc::SOL_PACKET,
                    libc::PACKET_VNET_HDR,
                    (&one as *const libc::c_int).cast(),
                    4,
                )
            };
            assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        }
        // SAFETY: sockaddr_ll is plain data; zeroes are valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = if_index(tap) as i32;
        // SAFETY: the address is a sockaddr_ll of the given size.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        PacketSocket { fd }
    }

    pub fn send(&self, frame: &[u8]) {
        // SAFETY: frame is readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), frame.as_ptr().cast(), frame.len(), 0) };
        assert_eq!(
            n,
            frame.len() as isize,
            "{}",
            std::io::Error::last_os_error()
        );
    }

    /// The next frame within `timeout`.
    pub fn recv(&self, timeout: Duration) -> Option<Vec<u8>> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one pollfd, ours.
        if unsafe { libc::poll(&mut pfd, 1, timeout.as_millis() as i32) } != 1 {
            return None;
        }
        let mut buf = vec![0u8; 70_000];
        // SAFETY: buf is writable for its length.
        let n = unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n >= 0, "{}", std::io::Error::last_os_error());
        buf.truncate(n as usize);
        Some(buf)
    }

    /// The first frame within `timeout` that `want` accepts.
    pub fn recv_matching(
        &self,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Option<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let f = self.recv(left)?;
            if want(&f) {
                return Some(f);
            }
        }
    }
}

pub fn ethertype(frame: &[u8]) -> u16 {
    u16::from_be_bytes([frame[12], frame[13]])
}

pub fn eth(dst: &[u8; 6], src: &[u8; 6], ethertype: u16) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// "Who has `target`? Tell `ip`", broadcast from `mac`.
pub fn arp_request(mac: &[u8; 6], ip: [u8; 4], target: [u8; 4]) -> Vec<u8> {
    let mut f = eth(&[0xff; 6], mac, ETH_P_ARP);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.extend_from_slice(mac);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

pub fn inet_sum(data: &[u8], start: u32) -> u32 {
    let mut sum = start;
    for pair in data.chunks(2) {
        let hi = u32::from(pair[0]) << 8;
        sum += hi | pair.get(1).map_or(0, |&b| u32::from(b));
    }
    sum
}

pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

/// An IPv4 header (20 bytes, checksummed) for `payload_len` bytes of `proto`.
pub fn ipv4(src: [u8; 4], dst: [u8; 4], proto: u8, payload_len: usize) -> Vec<u8> {
    let total = (20 + payload_len) as u16;
    let mut h = vec![0x45, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    let c = !fold(inet_sum(&h, 0));
    h[10..12].copy_from_slice(&c.to_be_bytes());
    h
}

/// The IPv4 pseudo-header sum for `len` bytes of `proto`.
pub fn pseudo_sum(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u32 {
    let mut p = src.to_vec();
    p.extend_from_slice(&dst);
    p.extend_from_slice(&[0, proto]);
    p.extend_from_slice(&(len as u16).to_be_bytes());
    inet_sum(&p, 0)
}

/// A UDP datagram from the guest to the host. `partial`: the checksum field holds only the
/// pseudo-header sum, for the host to finish (what a guest does with checksum offload).
pub fn guest_udp(
    dst_mac: &[u8; 6],
    sport: u16,
    dport: u16,
    payload: &[u8],
    partial: bool,
) -> Vec<u8> {
    let len = 8 + payload.len();
    let mut udp = sport.to_be_bytes().to_vec();
    udp.extend_from_slice(&dport.to_be_bytes());
    udp.extend_from_slice(&(len as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let pseudo = pseudo_sum(GUEST_IP, HOST_IP, 17, len);
    let c = if partial {
        fold(pseudo)
    } else {
        !fold(inet_sum(&udp, pseudo))
    };
    udp[6..8].copy_from_slice(&c.to_be_bytes());
    let mut f = eth(dst_mac, &super::harness::GUEST_MAC, ETH_P_IP);
    f.extend(ipv4(GUEST_IP, HOST_IP, 17, len));
    f.extend(udp);
    f
}
