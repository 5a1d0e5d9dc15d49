//! The network service (`vireo net serve`): owns the networks and ports of one state
//! directory, forwards their frames in a [`Datapath`], and serves the management API
//! (HTTP/JSON on a Unix socket, see [`api`] and docs/net-api.md).
//!
//! The desired state (networks, ports, QoS) lives in STATE_DIR/net.json ([`config`]) and is
//! re-applied at start: the taps are the process's and go away with it, a restarted
//! service creates them again. One service per state directory (a lock file) and per API
//! socket (a live socket is never taken over).

mod api;
pub mod config;
pub mod dhcp;
pub mod firewall;
pub mod lb;
mod metrics;
mod ops;
pub mod router;
pub mod validate;

use crate::datapath::Datapath;
use crate::error::{NetError, Result};
use config::{NetState, STATE_FILE};
use std::collections::HashSet;
use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use vireo_http::HttpServer;

/// Where the service listens, and where clients look, unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vireo/net.sock";

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The state directory: `DIR/net.json`, `DIR/service.lock`.
    pub dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
}

/// The control plane: the desired state and the datapath that realizes it. Every change
/// holds `state` from check to save, so concurrent API calls apply one at a time.
pub struct Net {
    datapath: Arc<Datapath>,
    state: Mutex<Control>,
    file: PathBuf,
}

struct Control {
    saved: NetState,
    /// Ports of the saved state the datapath could not create at start (their tap name was
    /// taken, say): kept so that they are not forgotten, shown as inactive.
    inactive: HashSet<String>,
}

/// A running service; [`Service::shutdown`] (or dropping it) stops it.
pub struct Service {
    net: Arc<Net>,
    api: Option<HttpServer>,
    _lock: File,
}

impl Service {
    pub fn start(opts: &ServiceOptions) -> Result<Service> {
        let socket = &opts.socket;
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                NetError::Invalid(format!(
                    "cannot create {} for the API socket: {e}; run as root or choose --socket PATH",
                    dir.display()
                ))
            })?;
        }
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Err(another_service(socket));
        }
        std::fs::create_dir_all(&opts.dir).map_err(|source| NetError::Io {
            context: format!("creating the state directory {}", opts.dir.display()),
            source,
        })?;
        let lock = lock_state_dir(&opts.dir)?;
        let net = Arc::new(Net::restore(Datapath::new(), opts.dir.join(STATE_FILE))?);
        let handler_net = net.clone();
        let api = HttpServer::start(socket, Arc::new(move |req| api::handle(&handler_net, req)))
            .map_err(|source| match source.kind() {
                std::io::ErrorKind::AddrInUse => another_service(socket),
                _ => NetError::Io {
                    context: format!("listening on {}", socket.display()),
                    source,
                },
            })?;
        tracing::info!(
            "network service: {} on {}",
            opts.dir.display(),
            socket.display()
        );
        Ok(Service {
            net,
            api: Some(api),
            _lock: lock,
        })
    }

    pub fn net(&self) -> &Arc<Net> {
        &self.net
    }

    /// Stops the API, then removes every port (and so its tap). The saved state is kept:
    /// the next start re-creates them.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if self.api.take().is_some() {
            self.net.remove_all_ports();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop();
    }
}

fn another_service(socket: &Path) -> NetError {
    NetError::Conflict(format!(
        "another service is listening on {}; stop it, or choose another --socket",
        socket.display()
    ))
}

/// Makes sure no other service uses `dir`: two would fight over its taps and its state.
fn lock_state_dir(dir: &Path) -> Result<File> {
    let path = dir.join("service.lock");
    let io = |source| NetError::Io {
        context: format!("locking {}", path.display()),
        source,
    };
    let file = File::create(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(NetError::Conflict(format!(
            "another network service owns {}; stop it first (one service per state directory)",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}
