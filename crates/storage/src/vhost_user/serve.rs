//! The serving thread: frontends one after another, each in a fresh session (the vhost-user
//! state, the queues and their worker threads belong to one frontend), until stopped.

use super::backend::BlkBackend;
use super::Served;
use std::os::unix::io::AsRawFd;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use vhost::vhost_user::{Error as ProtocolError, Listener};
use vhost_user_backend::{ShutdownHandle, VhostUserDaemon};
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

/// The serving thread's state, shared with [`super::VhostUserBlk`] to stop it.
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

    fn stopping(&self) -> bool {
        self.lock().stopping
    }

    pub fn connected(&self) -> bool {
        self.lock().conn.is_some()
    }

    /// Stops serving: ends the current connection, and the loop before the next accept.
    pub fn stop(&self) {
        let mut s = self.lock();
        s.stopping = true;
        if let Some(c) = s.conn.take() {
            c.shutdown();
        }
        self.stopped.notify_all();
    }

    /// Records the connection being served; false (and the connection is ended) if the
    /// backend is stopping.
    fn set_conn(&self, conn: Option<ShutdownHandle>) -> bool {
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
    fn pause(&self, d: Duration) {
        let s = self.lock();
        let _ = self.stopped.wait_timeout_while(s, d, |s| !s.stopping);
    }
}

/// One frontend's device. Its queue workers are ended through `stop`, an eventfd of ours in
/// each worker's epoll (see [`BlkBackend::stop_event`]), rather than through the library's
/// exit events, whose eventfds it never closes: one leaked descriptor per queue and
/// connection would wear a long-running service down as VMs restart.
struct Session {
    daemon: VhostUserDaemon<Arc<BlkBackend>>,
    stop: EventFd,
}

impl Session {
    fn new(served: &Arc<Served>) -> Result<Session, String> {
        let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
        let backend = Arc::new(BlkBackend::new(served.clone(), mem.clone()));
        let stop_event = backend.stop_event();
        let stop = EventFd::new(libc::EFD_NONBLOCK | libc::EFD_CLOEXEC)
            .map_err(|e| format!("cannot create an eventfd: {e}"))?;
        let daemon = VhostUserDaemon::new("vhost-user-blk".into(), backend, mem)
            .map_err(|e| e.to_string())?;
        let session = Session { daemon, stop };
        for worker in session.daemon.get_epoll_handlers() {
            worker
                .register_listener(session.stop.as_raw_fd(), EventSet::IN, stop_event)
                .map_err(|e| format!("cannot watch the stop event: {e}"))?;
        }
        Ok(session)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Then the daemon's drop joins the workers, and `stop` is closed after their epolls.
        if let Err(e) = self.stop.write(1) {
            tracing::error!("vhost-user-blk: cannot stop the queue workers: {e}");
        }
    }
}

pub fn serve(mut listener: Listener, served: &Arc<Served>, control: &Control, name: &str) {
    while !control.stopping() {
        let mut session = match Session::new(served) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(socket = name, "vhost-user-blk: cannot set up a device: {e}");
                control.pause(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = session.daemon.start(&mut listener) {
            if !control.stopping() {
                tracing::warn!(socket = name, "vhost-user-blk: accept failed: {e}");
                control.pause(Duration::from_millis(100));
            }
            continue;
        }
        if !control.set_conn(session.daemon.shutdown_handle()) {
            let _ = session.daemon.wait();
            break;
        }
        served.counters.connections.add(1);
        tracing::info!(socket = name, "vhost-user-blk: frontend connected");
        match session.daemon.wait() {
            Ok(())
            | Err(vhost_user_backend::Error::HandleRequest(
                ProtocolError::Disconnected | ProtocolError::PartialMessage,
            )) => tracing::info!(socket = name, "vhost-user-blk: frontend disconnected"),
            Err(e) => tracing::warn!(socket = name, "vhost-user-blk: connection ended: {e}"),
        }
        control.set_conn(None);
    }
}
