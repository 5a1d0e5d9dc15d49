//! The storage service (`vireo storage serve`): owns the pools of one state directory and
//! serves them: the management API (HTTP/JSON on a Unix socket, see [`api`] and
//! docs/storage-api.md), NBD for host tools, vhost-user-blk for VMs. Pools are committed
//! every few seconds and at shutdown.
//!
//! One service per state directory (a lock file) and per API socket (a live socket is never
//! taken over; a stale one, left by a crash, is replaced).

mod api;
mod jobs;
mod transfer;
mod vhost;

use crate::error::{Result, StorageError};
use crate::nbd::{Exports, Listen, NbdServer};
use crate::registry::Storage;
use jobs::Jobs;
use std::fs::{File, TryLockError};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;
use vhost::VhostExports;
use vireo_http::HttpServer;

/// Where the service listens, and where clients look, unless told otherwise.
pub const DEFAULT_SOCKET: &str = "/run/vireo/storage.sock";
/// How often every pool is committed: at most this much acknowledged-but-unflushed work is
/// lost in a crash (clients that flush lose nothing).
const COMMIT_INTERVAL: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The state directory: `DIR/pools/NAME/` per pool.
    pub dir: PathBuf,
    /// The API socket.
    pub socket: PathBuf,
    /// Also serve every volume over NBD here.
    pub nbd: Option<Listen>,
}

/// What the API handlers share.
pub(crate) struct Shared {
    storage: Arc<Storage>,
    jobs: Jobs,
    vhost: VhostExports,
    /// Held while an import starts or a vhost-user export starts: each checks that the
    /// other is not using the volume, and this makes check and start one step.
    claims: std::sync::Mutex<()>,
    /// Where NBD is served (`unix:PATH` or `tcp:HOST:PORT`), for `stats`.
    nbd: Option<String>,
}

/// A running service; [`Service::shutdown`] (or dropping it) stops it.
pub struct Service {
    shared: Arc<Shared>,
    api: Option<HttpServer>,
    nbd: Option<NbdServer>,
    committer: Option<(mpsc::Sender<()>, JoinHandle<()>)>,
    _lock: File,
}

impl Service {
    pub fn start(opts: &ServiceOptions) -> Result<Service> {
        let socket = &opts.socket;
        if UnixStream::connect(socket).is_ok() {
            return Err(StorageError::Conflict(format!(
                "another service is listening on {}; stop it, or choose another --socket",
                socket.display()
            )));
        }
        if let Some(dir) = socket.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StorageError::Invalid(format!(
                    "cannot create {} for the API socket: {e}; run as root or choose --socket PATH",
                    dir.display()
                ))
            })?;
        }
        std::fs::create_dir_all(&opts.dir).map_err(StorageError::io(&opts.dir))?;
        let lock = lock_state_dir(&opts.dir)?;
        let storage = Arc::new(Storage::open(&opts.dir)?);
        let nbd_name = opts.nbd.as_ref().map(|l| match l {
            Listen::Unix(p) => format!("unix:{}", p.display()),
            Listen::Tcp(a) => format!("tcp:{a}"),
        });
        let shared = Arc::new(Shared {
            storage: storage.clone(),
            jobs: Jobs::default(),
            vhost: VhostExports::default(),
            claims: std::sync::Mutex::new(()),
            nbd: nbd_name,
        });
        let handler = shared.clone();
        let api = HttpServer::start(socket, Arc::new(move |req| api::handle(&handler, req)))
            .map_err(StorageError::io(socket))?;
        let nbd = match &opts.nbd {
            Some(listen) => {
                let exports: Arc<dyn Exports> = storage.clone();
                let server = NbdServer::start(listen, exports).map_err(|e| {
                    let at = shared.nbd.as_deref().unwrap_or_default();
                    StorageError::Invalid(format!("cannot serve NBD on {at}: {e}"))
                })?;
                Some(server)
            }
            None => None,
        };
        let committer = start_committer(storage)?;
        tracing::info!(
            "storage service: {} on {}",
            opts.dir.display(),
            socket.display()
        );
        Ok(Service {
            shared,
            api: Some(api),
            nbd,
            committer: Some(committer),
            _lock: lock,
        })
    }

    pub fn storage(&self) -> &Arc<Storage> {
        &self.shared.storage
    }

    /// Stops serving (API, NBD, jobs, vhost-user exports) and commits every pool.
    pub fn shutdown(mut self) -> Result<()> {
        self.stop()
    }

    fn stop(&mut self) -> Result<()> {
        // New requests first, then whatever may still write to the volumes.
        self.api = None;
        self.nbd = None;
        self.shared.jobs.stop_all();
        self.shared.vhost.stop_all();
        if let Some((tx, thread)) = self.committer.take() {
            let _ = tx.send(());
            let _ = thread.join();
        }
        self.shared.storage.commit_all()
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if self.committer.is_some() {
            if let Err(e) = self.stop() {
                tracing::error!("committing the pools at shutdown: {e}");
            }
        }
    }
}

/// Makes sure no other service uses `dir`: two would corrupt its pools.
fn lock_state_dir(dir: &Path) -> Result<File> {
    let path = dir.join("service.lock");
    let file = File::create(&path).map_err(StorageError::io(&path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StorageError::Conflict(format!(
            "another storage service owns {}; stop it first (one service per state directory)",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StorageError::io(&path)(e)),
    }
}

fn start_committer(storage: Arc<Storage>) -> Result<(mpsc::Sender<()>, JoinHandle<()>)> {
    let (tx, rx) = mpsc::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("commit".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = rx.recv_timeout(COMMIT_INTERVAL) {
                if let Err(e) = storage.commit_all() {
                    tracing::error!("committing the pools: {e}");
                }
            }
        })
        .map_err(StorageError::io("commit thread"))?;
    Ok((tx, thread))
}

#[cfg(test)]
mod tests;
