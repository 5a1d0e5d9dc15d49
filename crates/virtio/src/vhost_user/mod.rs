//! vhost-user frontends: virtio devices whose queues are served by another process (a
//! storage daemon, a virtual switch) over a Unix socket, following QEMU's vhost-user protocol
//! (docs/interop/vhost-user.rst).
//!
//! The VMM keeps the virtio-pci function (feature negotiation, configuration space, MSI-X);
//! the backend gets guest RAM itself (the memfd of each region, passed with SET_MEM_TABLE), the
//! ring addresses, the driver's notification eventfd as its kick, and an eventfd of ours as its
//! call. So the data path never enters the VMM: the driver notifies the backend through the
//! KVM ioeventfd, the backend reads and writes guest memory directly, and signals the call
//! eventfd, which a [`crate::worker::Worker`] thread turns into the queue's interrupt.
//!
//! - [`VhostUserBlk`]: virtio-blk; capacity and limits come from the backend's configuration
//!   space (GET_CONFIG), read once at construction.
//! - [`VhostUserNet`]: virtio-net with one receive and one transmit queue; the MAC is ours.
//!
//! [`session`] is the other side: what the services' vhost-user backends share.
//!
//! Both share the frontend core (`frontend`): connection and handshake (`conn`), ring setup
//! (`rings`) and call forwarding (`calls`). One queue (blk) or one queue pair (net) is used
//! even if the backend offers more (MQ is negotiated only to learn its queue count).
//!
//! # What the backend writes
//! A software CPU must be told about every write into guest memory that it did not make
//! ([`crate::GuestWrites`]), and a backend's writes are invisible to us. So when a call
//! eventfd fires, before forwarding the interrupt, the worker reads the used ring entries the
//! backend added since it last looked and reports the device-writable buffers of each chain.
//! The hole: a driver that consumes used entries without waiting for their interrupt (polling,
//! NAPI with notifications off, or entries the backend publishes while the driver's handler is
//! still draining the ring) may read a buffer before it is reported. Data is unaffected; only
//! instructions the CPU had already decoded from such a page could be stale.
//!
//! # Trust
//! The backend is another process, so its replies are untrusted input: sizes and lengths are
//! checked (by the `vhost` crate and again here), a backend that does not answer within
//! [`REPLY_TIMEOUT`] is disconnected rather than hanging the vCPU that touched the device, and
//! a disconnected backend makes every later request fail with an error (never a panic). There
//! is no reconnection: the device stays broken until the VM is restarted.

mod blk;
mod calls;
mod conn;
mod frontend;
mod net;
mod rings;
pub mod session;
mod watchdog;

pub use blk::VhostUserBlk;
pub use net::VhostUserNet;

use std::path::PathBuf;
use std::time::Duration;

/// How long the backend may take to answer one request before it is disconnected.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(15);

/// The largest size of each queue we offer the driver (libvhost-user and DPDK take 1024).
pub const QUEUE_SIZE: u16 = 256;

#[derive(Debug, thiserror::Error)]
pub enum VhostUserError {
    #[error("vhost-user socket {} does not exist: start the backend first (it creates the socket), or fix the path", path.display())]
    NoSocket { path: PathBuf },
    #[error("{} is not a Unix socket: give the path of the socket the vhost-user backend listens on", path.display())]
    NotASocket { path: PathBuf },
    #[error("nothing listens on vhost-user socket {} (a stale socket of a backend that exited?): start the backend", path.display())]
    Refused { path: PathBuf },
    #[error("permission denied on vhost-user socket {}: run Vireo as a user that may connect to it (write access to the socket and its directory), or change the socket's owner or mode", path.display())]
    Permission { path: PathBuf },
    #[error("cannot connect to vhost-user socket {}: {source}", path.display())]
    Connect {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("vhost-user backend {}: {request} failed: {source}", path.display())]
    Request {
        path: PathBuf,
        request: &'static str,
        source: vhost::Error,
    },
    #[error("vhost-user backend {} did not answer {request} within {}s and was disconnected", path.display(), REPLY_TIMEOUT.as_secs())]
    Timeout {
        path: PathBuf,
        request: &'static str,
    },
    #[error("vhost-user backend {} is disconnected (an earlier request failed); restart the backend and the VM", path.display())]
    Disconnected { path: PathBuf },
    #[error("vhost-user backend {}: {what}", path.display())]
    Backend { path: PathBuf, what: String },
    #[error("guest memory at {gpa:#x} is not backed by a file, so it cannot be shared with a vhost-user backend (the VMM must create guest RAM from a memfd)")]
    MemoryNotShareable { gpa: u64 },
    #[error("queue {index}: its {ring} at {gpa:#x} is not inside one region of guest memory")]
    Ring {
        index: u16,
        ring: &'static str,
        gpa: u64,
    },
    #[error("MAC address {mac} is multicast; a NIC needs a unicast address")]
    MulticastMac { mac: String },
    #[error("vhost-user frontend: {0}")]
    Io(#[from] std::io::Error),
}

impl From<VhostUserError> for crate::ActivateError {
    fn from(e: VhostUserError) -> Self {
        crate::ActivateError::Io(std::io::Error::other(e))
    }
}

#[cfg(test)]
mod blk_tests;
#[cfg(test)]
mod conn_tests;
#[cfg(test)]
mod net_backend;
#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod test_support;
