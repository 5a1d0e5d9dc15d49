//! What Vireo's vhost-user *backends* share (the storage service's vhost-user-blk, the network
//! service's vhost-user-net ports): one frontend's session on top of `vhost-user-backend`.
//!
//! Each session's queue workers are ended through an eventfd of ours registered in their
//! epoll, rather than through the library's exit events, whose eventfds it never closes: one
//! leaked descriptor per queue and connection would wear a long-running service down as VMs
//! restart. [`Control`] stops a backend's serving loop and its current connection;
//! [`config_slice`] answers GET_CONFIG.

use std::os::unix::io::AsRawFd;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;
use vhost::vhost_user::{Error as ProtocolError, Listener};
use vhost_user_backend::{ShutdownHandle, VhostUserBackend, VhostUserDaemon, VringRwLock};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// One frontend's device: the daemon (vhost-user state, queues, worker threads) and the
/// event that stops its workers when the session is dropped.
pub struct Session<T: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + Clone + 'static> {
    pub daemon: VhostUserDaemon<T>,
    stop: EventFd,
    what: &'static str,
}

/// The epoll data of a session's stop event, which a backend's `handle_event` takes as
/// "stop" (an error from it ends the worker): the first value past those the library
/// reserves (one per queue, and its own exit event).
pub fn stop_event(num_queues: usize) -> u64 {
    num_queues as u64 + 1
}

impl<T: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + Clone + 'static> Session<T> {
    /// Its workers see [`stop_event`] for the backend's queues when the session is dropped.
    pub fn new(
        what: &'static str,
        backend: T,
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
    ) -> Result<Session<T>, String> {
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| format!("cannot create an eventfd: {e}"))?;
        let stop_event = stop_event(backend.num_queues());
        let daemon = VhostUserDaemon::new(what.into(), backend, mem).map_err(|e| e.to_string())?;
        let session = Session { daemon, stop, what };
        for worker in session.daemon.get_epoll_handlers() {
            worker
                .register_listener(session.stop.as_raw_fd(), EventSet::IN, stop_event)
                .map_err(|e| format!("cannot watch the stop event: {e}"))?;
        }
        Ok(session)
    }

    /// Accepts the next frontend on `listener`.
    pub fn accept(&mut self, listener: &mut Listener) -> Result<(), String> {
        self.daemon.start(listener).map_err(|e| e.to_string())
    }

    /// Serves the connected frontend until it goes away (logged against `who`).
    pub fn serve(&mut self, who: &str) {
        match self.daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                ProtocolError::Disconnected | ProtocolError::PartialMessage,
            )) => tracing::info!("{who}: {} frontend disconnected", self.what),
            Err(e) => tracing::warn!("{who}: {} connection ended: {e}", self.what),
        }
    }
}

impl<T: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + Clone + 'static> Drop for Session<T> {
    fn drop(&mut self) {
        // Then the daemon's drop joins the workers, and `stop` is closed after their epolls.
        if let Err(e) = self.stop.write(1) {
            tracing::error!("{}: cannot stop the queue workers: {e}", self.what);
        }
    }
}

/// A backend's serving loop (frontends one after another), shared with whoever stops it:
/// whether it is stopping, and the connection being served, to end it.
#[derive(Default)]
pub struct Control {
    state: Mutex<ControlState>,
    stopped: Condvar,
}

#[derive(Default)]
struct ControlState {
    stopping: bool,
    /// Ends the current connection.
    conn: Option<ShutdownHandle>,
}

impl Control {
    fn lock(&self) -> MutexGuard<'_, ControlState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stopping(&self) -> bool {
        self.lock().stopping
    }

    /// Whether a connection is being served.
    pub fn connected(&self) -> bool {
        self.lock().conn.is_some()
    }

    /// Stops serving: ends the current connection, and the loop before the next accept
    /// (waking an accept that is under way is the caller's).
    pub fn stop(&self) {
        let mut s = self.lock();
        s.stopping = true;
        if let Some(c) = s.conn.take() {
            c.shutdown();
        }
        self.stopped.notify_all();
    }

    /// Records the connection being served (`None`: it ended); false (and the connection
    /// is ended) if the backend is stopping.
    pub fn set_conn(&self, conn: Option<ShutdownHandle>) -> bool {
        let mut s = self.lock();
        if s.stopping {
            if let Some(c) = conn {
                c.shutdown();
            }
            return false;
        }
        s.conn = conn;
        true
    }

    /// Waits `d`, or less if the backend is stopping.
    pub fn pause(&self, d: Duration) {
        let s = self.lock();
        let _ = self.stopped.wait_timeout_while(s, d, |s| !s.stopping);
    }
}

/// `size` bytes of a configuration space from `offset`, zero past its end (a frontend may
/// ask for a newer, longer layout), for GET_CONFIG.
pub fn config_slice(config: &[u8], offset: u32, size: u32) -> Vec<u8> {
    let mut out = vec![0u8; size.min(vhost::vhost_user::message::VHOST_USER_CONFIG_SIZE) as usize];
    let start = offset as usize;
    for (i, b) in out.iter_mut().enumerate() {
        if let Some(v) = start.checked_add(i).and_then(|at| config.get(at)) {
            *b = *v;
        }
    }
    out
}
