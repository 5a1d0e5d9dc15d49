//! What Vireo's vhost-user *backends* share (the storage service's vhost-user-blk, the network
//! service's vhost-user-net ports): one frontend's session on top of `vhost-user-backend`.
//!
//! Each session's queue workers are ended through an eventfd of ours registered in their
//! epoll, rather than through the library's exit events, whose eventfds it never closes: one
//! leaked descriptor per queue and connection would wear a long-running service down as VMs
//! restart.

use std::os::unix::io::AsRawFd;
use vhost::vhost_user::{Error as ProtocolError, Listener};
use vhost_user_backend::{VhostUserBackend, VhostUserDaemon, VringRwLock};
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

impl<T: VhostUserBackend<Bitmap = (), Vring = VringRwLock> + Clone + 'static> Session<T> {
    /// `stop_event` is the epoll data the backend's `handle_event` takes as "stop": the first
    /// value past those the library reserves (one per queue, and its own exit event).
    pub fn new(
        what: &'static str,
        backend: T,
        mem: GuestMemoryAtomic<GuestMemoryMmap>,
        stop_event: u64,
    ) -> Result<Session<T>, String> {
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| format!("cannot create an eventfd: {e}"))?;
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
