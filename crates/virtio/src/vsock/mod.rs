//! virtio-vsock (device type 19, virtio 1.2 section 5.10): stream sockets between the guest
//! and host processes, over Unix sockets the way Firecracker does it (its `docs/vsock.md`):
//!
//! - Host-initiated: a host process connects to the Unix socket `uds_path` (which the device
//!   listens on) and sends `CONNECT <port>\n`. The device asks the guest for a stream to
//!   `<guest CID>:<port>`; when the guest accepts, the host process reads
//!   `OK <host port>\n` (the port the device gave the host end, from 2^30 up) and then the
//!   stream. If the guest refuses, or does not answer within 2 s, the Unix connection closes.
//! - Guest-initiated: a guest connection to CID 2 (the host), port P, is forwarded to the
//!   Unix socket `<uds_path>_P`; if nobody listens there the guest gets a RST.
//!
//! Flow control is virtio's credit scheme both ways: the device never sends a guest more than
//! it advertised room for, and advertises [`BUF_ALLOC`] per connection, holding that much guest
//! data for a host process that is slow to read. Only STREAM sockets (no SEQPACKET).

mod conn;
mod host;
mod muxer;
mod packet;
mod worker;

use crate::device::read_config_bytes;
use crate::worker::Worker;
use crate::{features, types, ActivateError, Activation, QueueHandle, VirtioDevice};
use host::Listener;
use muxer::Muxer;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vmm_sys_util::eventfd::EventFd;
use worker::VsockWorker;

pub use conn::BUF_ALLOC;
pub use muxer::{FIRST_HOST_PORT, MAX_CONNECTIONS};
pub use packet::HOST_CID;

pub const QUEUE_SIZE: u16 = 256;
pub const RX_QUEUE: u16 = 0;
pub const TX_QUEUE: u16 = 1;
pub const EVENT_QUEUE: u16 = 2;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VsockConfig {
    /// The guest's context id: 3 or more (0-2 are reserved) and below 2^32 - 1.
    pub guest_cid: u64,
    /// The Unix socket host processes connect to; guest connections to port P go to
    /// `<uds_path>_P`.
    pub uds_path: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("vsock guest CID {0} is invalid: 0, 1 and 2 are reserved (2 is the host) and a CID must be below 4294967295; use 3 or more")]
    BadCid(u64),
    #[error("vsock socket path {path} is too long: with the `_<port>` suffix of guest-initiated connections it must fit a Unix socket address, so at most {max} bytes")]
    PathTooLong { path: String, max: usize },
    #[error("vsock socket {path} already exists (left over from an earlier run?); remove it (`rm {path}`) or choose another path")]
    Exists { path: String },
    #[error("vsock socket {path} is in use: another process (another VM?) listens on it; stop it and remove the socket, or choose another path")]
    InUse { path: String },
    #[error("cannot listen on vsock socket {path}: {source}")]
    Bind {
        path: String,
        source: std::io::Error,
    },
}

crate::device::counters! {
    /// Counters for the API, updated by the worker.
    pub(crate) struct Counters {
        /// Connections that reached the established state (either side initiated).
        connections_opened,
        /// Established connections that ended since.
        connections_closed,
        /// Stream bytes delivered to the guest.
        rx_bytes,
        /// Stream bytes the guest sent on live connections.
        tx_bytes,
        /// RSTs delivered to the guest (refusals, resets, close acknowledgements).
        rst_sent,
        /// Malformed transmit packets dropped, and receive or event buffers unusable.
        bad_packets,
    }
}

pub struct Vsock {
    cfg: VsockConfig,
    listener: Arc<Listener>,
    /// Asks the worker to drop every connection and send TRANSPORT_RESET.
    reset_evt: EventFd,
    counters: Arc<Counters>,
    worker: Option<Worker>,
}

impl Vsock {
    /// Checks the CID and binds the listening socket at `uds_path` (removed when the device
    /// is dropped). Host processes may connect at once; their connections wait for the guest
    /// driver.
    pub fn new(cfg: VsockConfig) -> Result<Vsock, VsockError> {
        if cfg.guest_cid <= HOST_CID || cfg.guest_cid >= u64::from(u32::MAX) {
            return Err(VsockError::BadCid(cfg.guest_cid));
        }
        let listener = Listener::bind(&cfg.uds_path)?;
        let reset_evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|source| VsockError::Bind {
            path: cfg.uds_path.display().to_string(),
            source,
        })?;
        Ok(Vsock {
            cfg,
            listener: Arc::new(listener),
            reset_evt,
            counters: Arc::default(),
            worker: None,
        })
    }

    pub fn guest_cid(&self) -> u64 {
        self.cfg.guest_cid
    }

    pub fn uds_path(&self) -> &Path {
        &self.cfg.uds_path
    }

    /// Drops every connection (their host sockets close) and sends the driver
    /// VIRTIO_VSOCK_EVENT_TRANSPORT_RESET, so the guest resets its sockets too. Does nothing
    /// while the driver is not running the device.
    pub fn transport_reset(&self) {
        if self.worker.is_some() {
            if let Err(e) = self.reset_evt.write(1) {
                tracing::warn!("virtio-vsock: cannot request a transport reset: {e}");
            }
        }
    }
}

impl VirtioDevice for Vsock {
    fn device_type(&self) -> u32 {
        types::VSOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    /// `struct virtio_vsock_config`: the guest CID, le64.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.cfg.guest_cid.to_le_bytes(), offset, data);
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        self.reset();
        let mut queues: [Option<QueueHandle>; 3] = [None, None, None];
        for q in act.queues {
            if let Some(slot) = queues.get_mut(usize::from(q.index)) {
                *slot = Some(q);
            }
        }
        let [Some(rx), Some(tx), Some(ev)] = queues else {
            return Err(ActivateError::Queues(
                "virtio-vsock needs its receive, transmit and event queues".into(),
            ));
        };
        // A reset asked for while no driver ran concerns connections that are gone already.
        let _ = self.reset_evt.read();
        let muxer = Muxer::new(
            self.cfg.guest_cid,
            self.cfg.uds_path.clone(),
            self.listener.clone(),
            self.counters.clone(),
        )?;
        let mut state = VsockWorker::new(
            worker::Setup {
                rx,
                tx,
                ev,
                mem: act.mem,
                interrupt: act.interrupt,
                writes: act.writes,
                guest_cid: self.cfg.guest_cid,
                reset: self.reset_evt.try_clone()?,
                counters: self.counters.clone(),
            },
            muxer,
        )?;
        let sources = state.sources();
        let worker = Worker::spawn("vireo-vsock", &sources, move |i| state.on_ready(i))?;
        self.worker = Some(worker);
        Ok(())
    }

    /// Stops the worker: every connection is dropped and its host socket closed. The listener
    /// stays, so host processes can connect again for the next driver.
    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod guest_tests;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod harness_util;
#[cfg(test)]
mod host_tests;
#[cfg(test)]
mod hostile_tests;
