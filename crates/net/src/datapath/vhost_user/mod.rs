//! vhost-user-net ports: the service is the backend of a VM's virtio-net device. The
//! frontend (QEMU, or Vireo's VMM) connects to the port's Unix socket, shares the guest's
//! memory and hands over the two virtqueues; frames are then copied straight between guest
//! memory and the switch. One frontend at a time; after a disconnect the next one (a
//! restarted VM) is accepted on the same socket.
//!
//! - `chain`: copying frames out of transmit chains and into receive chains (guest input).
//! - `backend`: one connection's device, its worker thread and the receive delivery.
//! - `relay`: between the frontend and the library, for QEMU's early SET_VRING_ENABLE.
//! - here: the socket, and the port thread's accept loop (after the vhost-user-blk
//!   backend's in `vireo-storage`, with the same fix for the library's leaked exit
//!   eventfds: workers are ended by an eventfd of ours).

mod backend;
mod chain;
mod relay;
#[cfg(test)]
mod tests;

use super::port::Port;
use super::switch::Switch;
use backend::NetBackend;
use std::io;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vireo_http::{wake_accept, SocketPath};
use vireo_virtio::vhost_user::session::Control;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

pub struct VhostUserLink {
    /// Removed when the port goes, if it is still ours.
    socket: SocketPath,
    /// Taken by the port's thread, which accepts on it.
    listener: Mutex<Option<UnixListener>>,
    /// A duplicate of the listening socket, to wake the accept.
    wake: UnixListener,
    /// The MAC the device's configuration space reports.
    mac: [u8; 6],
    /// Stops the accept loop and ends the current connection.
    control: Control,
    /// The connected frontend's device, for the frames the switch sends to the guest.
    current: RwLock<Option<Arc<NetBackend>>>,
    connections: AtomicU64,
}

impl VhostUserLink {
    /// Listens on `path` (refused if another process serves it, or it is not a socket).
    pub fn bind(path: &Path, mac: [u8; 6]) -> io::Result<VhostUserLink> {
        let (listener, socket) = SocketPath::bind(path, "vhost-user socket")?;
        let wake = listener.try_clone()?;
        Ok(VhostUserLink {
            socket,
            listener: Mutex::new(Some(listener)),
            wake,
            mac,
            control: Control::default(),
            current: RwLock::new(None),
            connections: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        self.socket.path()
    }

    /// Whether a frontend is connected now.
    pub fn connected(&self) -> bool {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Frontends accepted so far (a VM restart is a new connection).
    pub fn connections(&self) -> u64 {
        self.connections.load(Relaxed)
    }

    /// Sends a frame to the guest (see [`NetBackend::deliver`]).
    pub fn send(&self, parts: &[&[u8]]) -> io::Result<usize> {
        let current = self.current.read().unwrap_or_else(|e| e.into_inner());
        match current.as_ref() {
            Some(b) => b.deliver(parts),
            // A static kind: every frame the switch floods here takes this path.
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        }
    }

    /// Ends the connection and the accept loop.
    pub fn stop(&self) {
        self.control.stop();
        wake_accept(&self.wake);
    }

    /// The port's thread: frontends one after another, each in a fresh session, until the
    /// port is stopped.
    pub fn serve(&self, port: &Arc<Port>, switch: &Arc<Switch>) {
        let Some(listener) = self
            .listener
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        else {
            return;
        };
        let name = &port.config.name;
        while !self.control.stopping() {
            let frontend = match listener.accept() {
                Ok((s, _)) => s,
                Err(e) => {
                    if !self.control.stopping() {
                        tracing::warn!("port {name}: vhost-user accept failed: {e}");
                        if port.stopped_within(Duration::from_millis(100)) {
                            return;
                        }
                    }
                    continue;
                }
            };
            let (mut session, backend) = match session(self, port, switch) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!("port {name}: cannot set up a vhost-user device: {e}");
                    if port.stopped_within(Duration::from_secs(1)) {
                        return;
                    }
                    continue;
                }
            };
            // The frontend talks to the library through the relay (see `relay`).
            let started = relay::library_connection().and_then(|(mut lib, ours)| {
                relay::start(frontend, ours, name)?;
                session.accept(&mut lib).map_err(io::Error::other)
            });
            if let Err(e) = started {
                tracing::error!("port {name}: cannot serve a vhost-user frontend: {e}");
                if port.stopped_within(Duration::from_secs(1)) {
                    return;
                }
                continue;
            }
            if !self.control.set_conn(session.daemon.shutdown_handle()) {
                let _ = session.daemon.wait();
                return;
            }
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(backend);
            self.connections.fetch_add(1, Relaxed);
            tracing::info!("port {name}: vhost-user frontend connected");
            session.serve(&format!("port {name}"));
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = None;
            self.control.set_conn(None);
        }
    }
}

type Session = vireo_virtio::vhost_user::session::Session<Arc<NetBackend>>;

/// One frontend's device, with the backend that the switch sends the port's frames to.
fn session(
    link: &VhostUserLink,
    port: &Arc<Port>,
    switch: &Arc<Switch>,
) -> Result<(Session, Arc<NetBackend>), String> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(NetBackend::new(
        Arc::downgrade(port),
        Arc::downgrade(switch),
        link.mac,
        mem.clone(),
    ));
    let session = Session::new("vhost-user-net", backend.clone(), mem)?;
    Ok((session, backend))
}
