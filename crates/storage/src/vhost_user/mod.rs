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
use serve::{serve, Control};
use stats::Counters;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread::JoinHandle;
use vhost::vhost_user::Listener;

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
    socket: PathBuf,
    /// The socket file's identity, so that drop removes only our own.
    socket_id: (u64, u64),
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
        let listener = bind(socket)?;
        let control = Arc::new(Control::default());
        let started = (|| {
            let meta = std::fs::metadata(socket)?;
            let wake = listener.try_clone()?;
            let (served, control) = (served.clone(), control.clone());
            let name = socket.display().to_string();
            let thread = std::thread::Builder::new()
                .name("vhost-user-blk".into())
                .spawn(move || serve(Listener::from(listener), &served, &control, &name))?;
            Ok::<_, io::Error>((meta, wake, thread))
        })();
        let (meta, wake, thread) = started.inspect_err(|_| {
            let _ = std::fs::remove_file(socket);
        })?;
        tracing::info!(socket = %socket.display(), id, "vhost-user-blk: serving");
        Ok(VhostUserBlk {
            socket: socket.to_path_buf(),
            socket_id: (meta.dev(), meta.ino()),
            served,
            control,
            wake,
            thread: Some(thread),
        })
    }

    pub fn socket(&self) -> &Path {
        &self.socket
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
        // SAFETY: shutdown(2) on a descriptor we own (our duplicate of the listening socket);
        // it makes a blocked accept() in the serving thread fail with EINVAL.
        unsafe { libc::shutdown(self.wake.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!("vhost-user-blk: the serving thread panicked");
            }
        }
        if let Ok(meta) = std::fs::symlink_metadata(&self.socket) {
            if (meta.dev(), meta.ino()) == self.socket_id {
                let _ = std::fs::remove_file(&self.socket);
            }
        }
        tracing::info!(socket = %self.socket.display(), "vhost-user-blk: stopped");
    }
}

/// Binds the socket, replacing a stale one (left by a backend that died) but never a live
/// one or a file that is not a socket.
fn bind(socket: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = std::fs::symlink_metadata(socket) {
        let shown = socket.display();
        if !meta.file_type().is_socket() {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("vhost-user socket {shown} exists and is not a socket; remove it or choose another path"),
            ));
        }
        if UnixStream::connect(socket).is_ok() {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("vhost-user socket {shown} is in use by another backend; stop it or choose another path"),
            ));
        }
        std::fs::remove_file(socket)?;
    }
    UnixListener::bind(socket).map_err(|e| {
        io::Error::new(
            e.kind(),
            format!(
                "cannot listen on vhost-user socket {}: {e}",
                socket.display()
            ),
        )
    })
}
