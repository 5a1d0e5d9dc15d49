//! The vhost-user-blk backend: a volume as a VM's virtio disk.
//!
//! The frontend (QEMU, or Vireo's VMM) connects to a Unix socket, shares the guest's memory
//! and hands over the virtqueues; requests are then served straight from guest memory by
//! worker threads here (`vhost-user-backend` runs the protocol).
//!
//! - [`config`]: offered features, the configuration space and the request limits.
//! - `request`: parsing descriptor chains; `exec`: running requests against the volume.
//! - `backend`: one connection's device, its queues and worker threads.
//! - `serve`: accepting one frontend after another until stopped.
//! - here: the socket and the served volume.

mod backend;
pub mod config;
mod exec;
#[cfg(test)]
mod hostile_tests;
mod request;
mod serve;
#[cfg(test)]
mod socket_tests;
mod stats;
#[cfg(test)]
mod test_ring;
#[cfg(test)]
mod tests;

pub use stats::VhostUserStats;

use crate::block::BlockDevice;
use config::{ID_BYTES, MAX_QUEUES};
use serve::serve;
use stats::Counters;
use std::io;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::Arc;
use std::thread::JoinHandle;
use vhost::vhost_user::Listener;
use vireo_http::{wake_accept, SocketPath};
use vireo_virtio::vhost_user::session::Control;

/// How a volume is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VhostUserOptions {
    /// Request queues offered (VIRTIO_BLK_F_MQ), each served by its own thread; 1 to 16.
    pub num_queues: u16,
}

impl Default for VhostUserOptions {
    fn default() -> VhostUserOptions {
        VhostUserOptions { num_queues: 2 }
    }
}

/// What every connection serves: the volume and what the guest learns about it.
struct Served {
    dev: Arc<dyn BlockDevice>,
    /// The GET_ID serial, NUL-padded.
    id: [u8; ID_BYTES],
    num_queues: u16,
    config: [u8; config::CONFIG_LEN],
    counters: Counters,
}

/// Serves one frontend at a time on a Unix socket, accepting the next after a disconnect,
/// until dropped; removes the socket then.
pub struct VhostUserBlk {
    /// Removed on drop if it is still ours.
    socket: SocketPath,
    served: Arc<Served>,
    control: Arc<Control>,
    /// A duplicate of the listening socket, to wake the serving thread's accept.
    wake: UnixListener,
    thread: Option<JoinHandle<()>>,
}

impl VhostUserBlk {
    /// `id` is what the guest reads with VIRTIO_BLK_T_GET_ID (e.g. `POOL/VOL`; only the first
    /// 20 bytes fit).
    pub fn start(socket: &Path, dev: Arc<dyn BlockDevice>, id: &str) -> io::Result<VhostUserBlk> {
        VhostUserBlk::start_with(socket, dev, id, VhostUserOptions::default())
    }

    pub fn start_with(
        socket: &Path,
        dev: Arc<dyn BlockDevice>,
        id: &str,
        opts: VhostUserOptions,
    ) -> io::Result<VhostUserBlk> {
        if !(1..=MAX_QUEUES).contains(&opts.num_queues) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "vhost-user-blk: {} queues asked for; use 1 to {MAX_QUEUES}",
                    opts.num_queues
                ),
            ));
        }
        let mut serial = [0u8; ID_BYTES];
        for (d, s) in serial.iter_mut().zip(id.as_bytes()) {
            *d = *s;
        }
        let served = Arc::new(Served {
            config: config::config_space(&*dev, opts.num_queues),
            dev,
            id: serial,
            num_queues: opts.num_queues,
            counters: Counters::default(),
        });
        let (listener, claimed) = SocketPath::bind(socket, "vhost-user socket")?;
        let control = Arc::new(Control::default());
        let wake = listener.try_clone()?;
        let thread = {
            let (served, control) = (served.clone(), control.clone());
            let name = socket.display().to_string();
            std::thread::Builder::new()
                .name("vhost-user-blk".into())
                .spawn(move || serve(Listener::from(listener), &served, &control, &name))?
        };
        tracing::info!(socket = %socket.display(), id, "vhost-user-blk: serving");
        Ok(VhostUserBlk {
            socket: claimed,
            served,
            control,
            wake,
            thread: Some(thread),
        })
    }

    pub fn socket(&self) -> &Path {
        self.socket.path()
    }

    pub fn num_queues(&self) -> u16 {
        self.served.num_queues
    }

    /// Whether a frontend is connected now.
    pub fn connected(&self) -> bool {
        self.control.connected()
    }

    pub fn stats(&self) -> VhostUserStats {
        self.served.counters.snapshot(self.connected())
    }
}

impl Drop for VhostUserBlk {
    fn drop(&mut self) {
        self.control.stop();
        wake_accept(&self.wake);
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("vhost-user-blk: the serving thread panicked");
            }
        }
        tracing::info!(socket = %self.socket.path().display(), "vhost-user-blk: stopped");
    }
}
