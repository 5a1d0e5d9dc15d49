//! The serving thread: frontends one after another, each in a fresh session (the vhost-user
//! state, the queues and their worker threads belong to one frontend), until stopped.

use super::backend::BlkBackend;
use super::Served;
use std::sync::Arc;
use std::time::Duration;
use vhost::vhost_user::Listener;
use vireo_virtio::vhost_user::session::Control;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

type Session = vireo_virtio::vhost_user::session::Session<Arc<BlkBackend>>;

fn session(served: &Arc<Served>) -> Result<Session, String> {
    let mem = GuestMemoryAtomic::new(GuestMemoryMmap::new());
    let backend = Arc::new(BlkBackend::new(served.clone(), mem.clone()));
    Session::new("vhost-user-blk", backend, mem)
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
