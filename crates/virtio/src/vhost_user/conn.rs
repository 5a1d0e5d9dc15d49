//! The connection to a backend: connecting with an error that says what to fix, the
//! once-per-connection handshake (SET_OWNER, features, protocol features, queue count), and
//! every later request, each bounded by the [`Watchdog`] and recorded as breaking the
//! connection when it fails mid-message.

use super::watchdog::Watchdog;
use super::VhostUserError;
use crate::features::VERSION_1;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vhost::vhost_user::message::{VhostUserConfigFlags, VhostUserHeaderFlag};
use vhost::vhost_user::{Frontend, VhostUserFrontend, VhostUserProtocolFeatures};
use vhost::VhostBackend;

/// `VHOST_USER_F_PROTOCOL_FEATURES`: a vhost-user bit in the feature word, never offered to
/// the driver.
pub(crate) const PROTOCOL_FEATURES: u64 = 1 << 30;

/// The protocol features we use: the backend's configuration space, its queue count, and
/// acknowledgements of requests that have no reply (so their failures are seen).
pub(crate) fn wanted_protocol() -> VhostUserProtocolFeatures {
    VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::REPLY_ACK
}

/// How long a refused connection is retried: CONNECT_TRIES * CONNECT_RETRY.
const CONNECT_TRIES: u32 = 10;
const CONNECT_RETRY: Duration = Duration::from_millis(100);

pub(crate) struct Connection {
    fe: Frontend,
    path: PathBuf,
    watchdog: Watchdog,
    timeout: Duration,
    broken: bool,
    /// What GET_FEATURES returned (virtio bits and PROTOCOL_FEATURES).
    backend_features: u64,
    /// The protocol features both sides use.
    protocol: VhostUserProtocolFeatures,
    /// GET_QUEUE_NUM's answer, if MQ was negotiated.
    queue_num: Option<u64>,
}

impl Connection {
    /// Connects to the backend at `path` and does the handshake for a device of `queues`
    /// queues; each reply may take up to `timeout`.
    pub(crate) fn open_with_timeout(
        path: &Path,
        queues: usize,
        timeout: Duration,
    ) -> Result<Connection, VhostUserError> {
        let stream = connect(path)?;
        let watchdog = Watchdog::spawn(stream.try_clone()?)?;
        let mut conn = Connection {
            fe: Frontend::from_stream(stream, queues as u64),
            path: path.to_path_buf(),
            watchdog,
            timeout,
            broken: false,
            backend_features: 0,
            protocol: VhostUserProtocolFeatures::empty(),
            queue_num: None,
        };
        conn.handshake(queues)?;
        Ok(conn)
    }

    fn handshake(&mut self, queues: usize) -> Result<(), VhostUserError> {
        self.request("SET_OWNER", |fe| fe.set_owner())?;
        let features = self.request("GET_FEATURES", |fe| fe.get_features())?;
        self.backend_features = features;
        if features & VERSION_1 == 0 {
            return Err(self.backend_error(
                "does not offer VIRTIO_F_VERSION_1; Vireo only drives virtio 1.x devices".into(),
            ));
        }
        if features & PROTOCOL_FEATURES != 0 {
            let offered = self.request("GET_PROTOCOL_FEATURES", |fe| fe.get_protocol_features())?;
            let acked = offered & wanted_protocol();
            self.request("SET_PROTOCOL_FEATURES", |fe| {
                fe.set_protocol_features(acked)
            })?;
            self.protocol = acked;
            if acked.contains(VhostUserProtocolFeatures::REPLY_ACK) {
                self.fe.set_hdr_flags(VhostUserHeaderFlag::NEED_REPLY);
            }
            if acked.contains(VhostUserProtocolFeatures::MQ) {
                let n = self.request("GET_QUEUE_NUM", |fe| fe.get_queue_num())?;
                if n < queues as u64 {
                    return Err(self.backend_error(format!(
                        "serves {n} queue(s) but the device needs {queues}"
                    )));
                }
                self.queue_num = Some(n);
            }
        }
        tracing::info!(
            socket = %self.path.display(),
            features = format_args!("{features:#x}"),
            protocol = format_args!("{:#x}", self.protocol.bits()),
            queues = ?self.queue_num,
            "vhost-user backend connected"
        );
        Ok(())
    }

    /// Sends one request through `f`. A failure other than the backend refusing a well-formed
    /// request leaves the stream in an unknown state, so the connection is given up.
    pub(crate) fn request<T>(
        &mut self,
        request: &'static str,
        f: impl FnOnce(&mut Frontend) -> vhost::Result<T>,
    ) -> Result<T, VhostUserError> {
        if self.broken {
            return Err(VhostUserError::Disconnected {
                path: self.path.clone(),
            });
        }
        self.watchdog.arm(self.timeout);
        let result = f(&mut self.fe);
        let fired = self.watchdog.disarm();
        let path = self.path.clone();
        match result {
            // The answer came just as the deadline passed: the socket is shut down now.
            Ok(v) if fired => {
                self.broken = true;
                tracing::warn!(socket = %path.display(), request, "vhost-user backend too slow");
                Ok(v)
            }
            Ok(v) => Ok(v),
            Err(_) if fired => {
                self.broken = true;
                Err(VhostUserError::Timeout { path, request })
            }
            Err(source) => {
                let refused = matches!(
                    source,
                    vhost::Error::VhostUserProtocol(vhost::vhost_user::Error::BackendInternalError)
                );
                if !refused {
                    self.broken = true;
                }
                Err(VhostUserError::Request {
                    path,
                    request,
                    source,
                })
            }
        }
    }

    /// Reads `len` bytes of the backend's configuration space at `offset`.
    pub(crate) fn get_config(
        &mut self,
        offset: u32,
        len: usize,
    ) -> Result<Vec<u8>, VhostUserError> {
        let zeros = vec![0u8; len];
        let (_, data) = self.request("GET_CONFIG", |fe| {
            fe.get_config(offset, len as u32, VhostUserConfigFlags::empty(), &zeros)
        })?;
        // The crate checks the reply's size field; check the bytes we were actually given.
        if data.len() != len {
            return Err(self.backend_error(format!(
                "answered GET_CONFIG with {} bytes instead of {len}",
                data.len()
            )));
        }
        Ok(data)
    }

    pub(crate) fn backend_error(&self, what: String) -> VhostUserError {
        VhostUserError::Backend {
            path: self.path.clone(),
            what,
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn backend_features(&self) -> u64 {
        self.backend_features
    }

    /// Whether PROTOCOL_FEATURES was negotiated (rings then start disabled, and
    /// SET_VRING_ENABLE exists).
    pub(crate) fn has_protocol_features(&self) -> bool {
        self.backend_features & PROTOCOL_FEATURES != 0
    }

    pub(crate) fn protocol(&self) -> VhostUserProtocolFeatures {
        self.protocol
    }

    pub(crate) fn queue_num(&self) -> Option<u64> {
        self.queue_num
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken
    }

    #[cfg(test)]
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Whether the backend is still there: no failed request and no hang-up on the socket.
    /// Polling does not consume anything, so this is safe while a request is under way.
    pub(crate) fn is_connected(&self) -> bool {
        if self.broken {
            return false;
        }
        let mut pfd = libc::pollfd {
            fd: self.fe.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: one valid pollfd, a zero timeout; the descriptor is owned by self.fe.
        let n = unsafe { libc::poll(&mut pfd, 1, 0) };
        n == 0 || pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) == 0
    }
}

/// Connects, turning the usual failures into errors that say what to do.
fn connect(path: &Path) -> Result<UnixStream, VhostUserError> {
    let p = || path.to_path_buf();
    match std::fs::metadata(path) {
        Ok(m) if !m.file_type().is_socket() => {
            return Err(VhostUserError::NotASocket { path: p() })
        }
        Ok(_) => {}
        Err(e) => return Err(classify(path, e)),
    }
    // A backend started just before us may have bound its socket but not be listening yet.
    let mut tries = CONNECT_TRIES;
    loop {
        match UnixStream::connect(path) {
            Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) && tries > 1 => {
                tries -= 1;
                std::thread::sleep(CONNECT_RETRY);
            }
            r => return r.map_err(|e| classify(path, e)),
        }
    }
}

pub(crate) fn classify(path: &Path, e: std::io::Error) -> VhostUserError {
    let path = path.to_path_buf();
    match e.raw_os_error() {
        Some(libc::ENOENT) => VhostUserError::NoSocket { path },
        Some(libc::ECONNREFUSED) => VhostUserError::Refused { path },
        Some(libc::EACCES | libc::EPERM) => VhostUserError::Permission { path },
        Some(libc::ENOTSOCK) => VhostUserError::NotASocket { path },
        _ => VhostUserError::Connect { path, source: e },
    }
}
