//! virtio-net (device type 1) over a Linux tap interface (virtio 1.2, 5.1).
//!
//! One receive and one transmit queue, served on a worker thread. Frames cross the tap with
//! their 12-byte `virtio_net_hdr_v1`, so the guest's checksum and TSO offloads reach the host
//! stack as they are (HOST_*), and the host hands the guest partially checksummed and
//! unsegmented packets (GUEST_*) exactly when the driver accepted those features: the tap's
//! offloads (TUNSETOFFLOAD) are set from the negotiated features at activation, as QEMU does.
//! Received packets may span several buffers (MRG_RXBUF). Both directions can be rate limited
//! (`bps=`, `pps=`). There is no control queue and no multiqueue.

mod header;
mod poll;
mod receive;
mod rx;
mod tap;
mod tx;
mod used;
mod worker;

use crate::device::read_config_bytes;
use crate::rate_limiter::RateLimiter;
use crate::worker::Worker;
use crate::{features, types, ActivateError, Activation, VirtioDevice};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use virtio_bindings::virtio_net::*;
use worker::NetWorker;

pub use header::RxOffloads;
pub use tap::{Tap, GUEST_OFFLOADS, MAX_NAME_LEN};

pub const QUEUE_SIZE: u16 = 256;
/// `struct virtio_net_hdr_v1`: what virtio 1.x puts before every frame, MRG_RXBUF or not.
pub const VNET_HDR_LEN: usize = 12;
/// The largest frame either way: a 64 KiB IP packet (the most TSO produces) behind an
/// Ethernet header and a VLAN tag.
pub const MAX_FRAME_LEN: usize = 65535 + 14 + 4;
/// A frame with its header: the bound on what a transmit chain may carry.
pub const MAX_PACKET_LEN: usize = VNET_HDR_LEN + MAX_FRAME_LEN;
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetConfig {
    /// The host interface: created if missing (and deleted when Vireo exits), attached to if
    /// it exists. A `%d` in the name lets the kernel pick a free number.
    pub tap: String,
    /// The guest's MAC address; a random locally administered one if `None`.
    pub mac: Option<[u8; 6]>,
    /// Bytes per second in each direction, if limited.
    pub bps: Option<u64>,
    /// Packets per second in each direction, if limited.
    pub pps: Option<u64>,
}

#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("tap name {tap:?} is longer than {MAX_NAME_LEN} bytes (Linux's limit); choose a shorter one")]
    NameTooLong { tap: String },
    #[error("tap name {tap:?} is not a valid interface name (empty, `.`, `..`, or with `/`, `:` or whitespace)")]
    BadName { tap: String },
    #[error("/dev/net/tun does not exist; load the tun module (`modprobe tun`)")]
    NoTunDevice,
    #[error("cannot open /dev/net/tun: {source}; Vireo needs read-write access to it")]
    TunDevice { source: std::io::Error },
    #[error("this kernel's tap driver lacks IFF_VNET_HDR (needed for virtio-net)")]
    NoVnetHdr,
    #[error(
        "not allowed to create or attach to tap {tap}: run Vireo as root (CAP_NET_ADMIN), or create the tap for your user beforehand (`ip tuntap add {tap} mode tap user $USER`)"
    )]
    Permission { tap: String },
    #[error("tap {tap} is in use by another process (a tap has one user); stop it or use another tap name")]
    Busy { tap: String },
    #[error("interface {tap} exists and is not a single-queue tap (a tun, multiqueue tap or another kind of link); use another name")]
    NotATap { tap: String },
    #[error(
        "cannot bring tap {tap} up: {source}; run Vireo as root (CAP_NET_ADMIN) or bring it up beforehand (`ip link set {tap} up`)"
    )]
    LinkUp { tap: String, source: std::io::Error },
    #[error("tap {tap}: {what} failed: {source}")]
    Ioctl {
        tap: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("tap {tap}: MAC address {mac} is multicast; a NIC needs a unicast address")]
    MulticastMac { tap: String, mac: String },
}

crate::device::counters! {
    /// Packet and error counters, updated by the worker and read by the API.
    pub(crate) struct Counters {
        rx_packets,
        rx_bytes,
        tx_packets,
        tx_bytes,
        rx_dropped,
        errors,
        throttled,
    }
}

impl Counters {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

const fn bit(b: u32) -> u64 {
    1 << b
}

/// Guest offload features and the tap offloads (TUN_F_*) each one allows.
const GUEST_OFFLOAD_MAP: [(u32, u32); 4] = [
    (VIRTIO_NET_F_GUEST_CSUM, libc::TUN_F_CSUM),
    (VIRTIO_NET_F_GUEST_TSO4, libc::TUN_F_TSO4),
    (VIRTIO_NET_F_GUEST_TSO6, libc::TUN_F_TSO6),
    (VIRTIO_NET_F_GUEST_ECN, libc::TUN_F_TSO_ECN),
];

/// The tap offloads for what the driver accepted, as QEMU computes them: TSO needs checksum
/// offload, and ECN needs TSO.
pub(crate) fn tap_offloads(features: u64) -> u32 {
    let mut flags = 0;
    for (feature, tun) in GUEST_OFFLOAD_MAP {
        if features & bit(feature) != 0 {
            flags |= tun;
        }
    }
    if flags & libc::TUN_F_CSUM == 0 {
        return 0;
    }
    if flags & (libc::TUN_F_TSO4 | libc::TUN_F_TSO6) == 0 {
        flags &= !libc::TUN_F_TSO_ECN;
    }
    flags
}

pub struct Net {
    tap: Arc<Tap>,
    mac: [u8; 6],
    bps: Option<u64>,
    pps: Option<u64>,
    features: u64,
    config: Vec<u8>,
    counters: Arc<Counters>,
    worker: Option<Worker>,
}

impl Net {
    /// Opens (creating if needed) the tap and brings its link up. The tap is closed when the
    /// `Net` is dropped; if this call created it, the kernel deletes it then.
    pub fn new(cfg: NetConfig) -> Result<Net, NetError> {
        let tap = Tap::open(&cfg.tap)?;
        let mac = match cfg.mac {
            Some(mac) if mac[0] & 1 != 0 => {
                return Err(NetError::MulticastMac {
                    tap: tap.name().to_string(),
                    mac: format_mac(&mac),
                })
            }
            Some(mac) => mac,
            None => random_mac(),
        };
        let mut features = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | bit(VIRTIO_NET_F_MAC)
            | bit(VIRTIO_NET_F_STATUS)
            | bit(VIRTIO_NET_F_MRG_RXBUF)
            // What the guest sends: the tap takes partial checksums and GSO frames as they are.
            | bit(VIRTIO_NET_F_CSUM)
            | bit(VIRTIO_NET_F_HOST_TSO4)
            | bit(VIRTIO_NET_F_HOST_TSO6)
            | bit(VIRTIO_NET_F_HOST_ECN);
        if tap.has_offloads() {
            features |= GUEST_OFFLOAD_MAP
                .iter()
                .fold(0, |f, &(feature, _)| f | bit(feature));
        }
        Ok(Net {
            tap: Arc::new(tap),
            mac,
            bps: cfg.bps,
            pps: cfg.pps,
            features,
            config: config_space(&mac),
            counters: Arc::default(),
            worker: None,
        })
    }

    /// The host interface's name (the kernel's choice if the configured one had a `%d`).
    pub fn tap_name(&self) -> &str {
        self.tap.name()
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    fn limiter(&self) -> std::io::Result<RateLimiter> {
        RateLimiter::from_rates(self.bps, self.pps)
    }
}

/// `struct virtio_net_config` (virtio 1.2, 5.1.4) up to `mtu`: the MAC, link up, one queue
/// pair, and no MTU (F_MTU is not offered).
pub fn config_space(mac: &[u8; 6]) -> Vec<u8> {
    let mut c = mac.to_vec();
    c.extend_from_slice(&(VIRTIO_NET_S_LINK_UP as u16).to_le_bytes());
    c.extend_from_slice(&1u16.to_le_bytes());
    c.extend_from_slice(&0u16.to_le_bytes());
    c
}

/// 52:54:00 (the prefix QEMU uses, locally administered) and three random bytes.
pub(crate) fn random_mac() -> [u8; 6] {
    let mut low = [0u8; 3];
    // SAFETY: getrandom writes at most low.len() bytes into low, which we own.
    let n = unsafe { libc::getrandom(low.as_mut_ptr().cast(), low.len(), 0) };
    if n != low.len() as isize {
        // No entropy at all is implausible; the pid still tells VMs apart on one host.
        let pid = std::process::id().to_le_bytes();
        low.copy_from_slice(&pid[..3]);
    }
    [0x52, 0x54, 0x00, low[0], low[1], low[2]]
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

impl VirtioDevice for Net {
    fn device_type(&self) -> u32 {
        types::NET
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        self.reset();
        let mut rx = None;
        let mut tx = None;
        for q in act.queues {
            match q.index {
                RX_QUEUE => rx = Some(q),
                TX_QUEUE => tx = Some(q),
                _ => {}
            }
        }
        let (Some(rx), Some(tx)) = (rx, tx) else {
            return Err(ActivateError::Queues(
                "virtio-net needs both its receive and transmit queues".into(),
            ));
        };
        let features = act.features & self.features;
        self.tap.set_offload(tap_offloads(features))?;
        let mut state = NetWorker::new(
            worker::Setup {
                rx,
                tx,
                mem: act.mem,
                interrupt: act.interrupt,
                writes: act.writes,
                tap: self.tap.clone(),
                rx_limiter: self.limiter()?,
                tx_limiter: self.limiter()?,
                counters: self.counters.clone(),
            },
            features,
        )?;
        let sources = state.sources();
        let worker = Worker::spawn("vireo-net", &sources, move |i| state.on_ready(i))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Stopping joins the thread; dropping it drops the queues, guest memory and any packet
        // it held.
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        if let Err(e) = self.tap.set_offload(0) {
            tracing::warn!(
                tap = self.tap.name(),
                "virtio-net: cannot clear offloads: {e}"
            );
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod harness;
#[cfg(test)]
mod host;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod rx_tests;
#[cfg(test)]
mod tap_tests;
#[cfg(test)]
mod tx_tests;
