//! The serving thread: frontends one after another, each in a fresh session (the vhost-user
//! state, the queues and their worker threads belong to one frontend), until stopped.

use super::backend::BlkBackend;
use super::Served;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;
use vhost::vhost_user::Listener;
use vhost_user_backend::ShutdownHandle;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

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

type Session = vireo_virtio::vhost_user::session::Session<Arc<BlkBackend>>;

fn session(served: &Arc<Served>) -> Result<Session, String> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(BlkBackend::new(served.clone(), mem.clone()));
    let stop_event = backend.stop_event();
    Session::new("vhost-user-blk", backend, mem, stop_event)
}

pub fn serve(mut listener: Listener, served: &Arc<Served>, control: &Control, name: &str) {
    while !control.stopping() {
        let mut session = match session(served) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(socket = name, "vhost-user-blk: cannot set up a device: {e}");
                control.pause(Duration::from_secs(1));
                continue;
            }
        };
        if let Err(e) = session.accept(&mut listener) {
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
        session.serve(name);
        control.set_conn(None);
    }
}
