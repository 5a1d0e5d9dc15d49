//! The NBD server (fixed newstyle; structured replies; base:allocation).
//!
//! - [`proto`]: the wire format.
//! - [`handshake`]: option haggling up to the choice of an export.
//! - [`transmission`]: serving requests, several in flight per connection.
//!
//! One thread per connection reads requests and a few workers per connection run them, so
//! one client with a deep queue keeps the device busy, and several clients (multi-conn) are
//! served side by side.

mod handshake;
mod proto;
mod stream;
mod transmission;

use crate::block::BlockDevice;
use crate::error::StorageError;
use std::collections::HashMap;
use std::io::{self, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use stream::Stream;

/// What a server exports: volumes by name (`POOL/VOL`).
pub trait Exports: Send + Sync + 'static {
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, StorageError>;
    fn names(&self) -> Vec<String>;
}

impl Exports for crate::registry::Storage {
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, StorageError> {
        self.open_export(name)
    }
    fn names(&self) -> Vec<String> {
        self.export_names()
    }
}

/// `unix:PATH` or `tcp:HOST:PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Listen {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Listen, StorageError> {
        let bad = |why: &str| {
            StorageError::Invalid(format!(
                "{s:?} is not an NBD listen address ({why}): use unix:PATH or tcp:HOST:PORT"
            ))
        };
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(bad("empty socket path"));
            }
            return Ok(Listen::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = s.strip_prefix("tcp:") {
            let Some((host, port)) = addr.rsplit_once(':') else {
                return Err(bad("no port"));
            };
            if host.is_empty() {
                return Err(bad("empty host"));
            }
            if port.parse::<u16>().is_err() {
                return Err(bad("the port is not a number from 0 to 65535"));
            }
            return Ok(Listen::Tcp(addr.to_string()));
        }
        Err(bad("unknown scheme"))
    }
}

impl std::fmt::Display for Listen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Listen::Unix(p) => write!(f, "unix:{}", p.display()),
            Listen::Tcp(a) => write!(f, "tcp:{a}"),
        }
    }
}

/// Connections served at once, at most: each costs a few threads.
const MAX_CONNECTIONS: usize = 128;
/// Read buffer per connection: many pipelined requests arrive in one read.
const READ_BUFFER: usize = 256 << 10;

/// Serves until dropped; removes a Unix socket then.
pub struct NbdServer {
    listen: Listen,
    wake: Listen,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    /// A Unix socket: removed on drop if it is still ours.
    _socket: Option<vireo_http::SocketPath>,
}

struct Shared {
    stop: AtomicBool,
    conns: Mutex<Conns>,
}

#[derive(Default)]
struct Conns {
    next: u64,
    /// Clones of the live connections' sockets, to shut them down when the server stops.
    streams: HashMap<u64, Stream>,
    threads: Vec<JoinHandle<()>>,
}

enum Listener {
    Unix(UnixListener),
    Tcp(TcpListener),
}

impl NbdServer {
    pub fn start(listen: &Listen, exports: Arc<dyn Exports>) -> io::Result<NbdServer> {
        let (listener, bound, wake, socket) = bind(listen)?;
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            conns: Mutex::new(Conns::default()),
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name("nbd-accept".to_string())
            .spawn(move || accept_loop(listener, s, exports))?;
        tracing::info!("NBD server listening on {bound}");
        Ok(NbdServer {
            listen: bound,
            wake,
            shared,
            accept: Some(accept),
            _socket: socket,
        })
    }

    /// Where the server listens (for `tcp:HOST:0`, with the port the system chose).
    pub fn listen(&self) -> &Listen {
        &self.listen
    }

    /// The NBD URI of `export` on this server (`nbd+unix:///NAME?socket=PATH` or
    /// `nbd://HOST:PORT/NAME`), as qemu, libnbd and fio take it.
    pub fn uri(&self, export: &str) -> String {
        match &self.listen {
            Listen::Unix(p) => format!("nbd+unix:///{export}?socket={}", p.display()),
            Listen::Tcp(a) => format!("nbd://{a}/{export}"),
        }
    }
}

impl Drop for NbdServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop with a connection of our own. Should that fail (the socket
        // file was removed), the loop ends at its next connection instead.
        let woken = match &self.wake {
            Listen::Unix(p) => UnixStream::connect(p).is_ok(),
            Listen::Tcp(a) => TcpStream::connect(a.as_str()).is_ok(),
        };
        if let Some(t) = self.accept.take() {
            if woken {
                let _ = t.join();
            }
        }
        let threads = {
            let mut c = lock(&self.shared.conns);
            for s in c.streams.values() {
                s.shutdown();
            }
            std::mem::take(&mut c.threads)
        };
        for t in threads {
            let _ = t.join();
        }
        tracing::info!("NBD server on {} stopped", self.listen);
    }
}

/// Binds `listen`; returns the listener, the address it got, one to wake it by, and the
/// claim on a Unix socket's path.
type Bound = (Listener, Listen, Listen, Option<vireo_http::SocketPath>);

fn bind(listen: &Listen) -> io::Result<Bound> {
    match listen {
        Listen::Unix(path) => {
            let (l, claimed) = vireo_http::SocketPath::bind(path, "NBD socket")?;
            Ok((
                Listener::Unix(l),
                listen.clone(),
                listen.clone(),
                Some(claimed),
            ))
        }
        Listen::Tcp(addr) => {
            let l = TcpListener::bind(addr.as_str())
                .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
            let local = l.local_addr()?;
            let mut wake: SocketAddr = local;
            if wake.ip().is_unspecified() {
                wake.set_ip(match wake {
                    SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
                    SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
                });
            }
            Ok((
                Listener::Tcp(l),
                Listen::Tcp(local.to_string()),
                Listen::Tcp(wake.to_string()),
                None,
            ))
        }
    }
}

fn accept_loop(listener: Listener, shared: Arc<Shared>, exports: Arc<dyn Exports>) {
    loop {
        let accepted = match &listener {
            Listener::Unix(l) => l.accept().map(|(s, _)| Stream::Unix(s)),
            Listener::Tcp(l) => l.accept().map(|(s, _)| {
                // Replies are written whole: do not let Nagle hold them back.
                let _ = s.set_nodelay(true);
                Stream::Tcp(s)
            }),
        };
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        let stream = match accepted {
            Ok(s) => s,
            Err(e) => {
                // Out of file descriptors and the like: wait for connections to end.
                tracing::warn!("NBD accept failed: {e}");
                std::thread::sleep(std::time::Duration::from_millis(100));
                continue;
            }
        };
        let mut c = lock(&shared.conns);
        c.threads.retain(|t| !t.is_finished());
        if c.streams.len() >= MAX_CONNECTIONS {
            tracing::warn!("NBD server has {MAX_CONNECTIONS} connections: refusing another");
            continue;
        }
        let clone = match stream.try_clone() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("NBD connection setup failed: {e}");
                continue;
            }
        };
        let id = c.next;
        c.next += 1;
        c.streams.insert(id, clone);
        let (s, ex) = (shared.clone(), exports.clone());
        let spawned = std::thread::Builder::new()
            .name("nbd-conn".to_string())
            .spawn(move || {
                connection(stream, &*ex);
                lock(&s.conns).streams.remove(&id);
            });
        match spawned {
            Ok(t) => c.threads.push(t),
            Err(e) => {
                tracing::warn!("cannot start an NBD connection thread: {e}");
                c.streams.remove(&id);
            }
        }
    }
}

/// How long a client may take over each message of the handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Serves one client from greeting to hang-up.
fn connection(stream: Stream, exports: &dyn Exports) {
    let peer = stream.peer();
    let writer = match stream.try_clone() {
        Ok(w) => w,
        Err(e) => {
            tracing::warn!("NBD connection setup failed: {e}");
            return;
        }
    };
    // A client that connects and says nothing must not hold a connection slot for ever;
    // once in transmission, an idle client is normal.
    let timed = stream.set_read_timeout(Some(HANDSHAKE_TIMEOUT));
    let mut reader = BufReader::with_capacity(READ_BUFFER, stream);
    match handshake::negotiate(&mut reader, &writer, exports) {
        Ok(Some(session)) => {
            if timed.is_ok() {
                if let Err(e) = reader.get_ref().set_read_timeout(None) {
                    tracing::warn!("NBD {peer}: {e}");
                    writer.shutdown();
                    return;
                }
            }
            tracing::info!(export = %session.name, "NBD {peer} connected");
            transmission::serve(&session, &mut reader, &writer);
            tracing::info!(export = %session.name, "NBD {peer} disconnected");
        }
        Ok(None) => tracing::debug!("NBD {peer} left during the handshake"),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
            tracing::debug!("NBD {peer} hung up during the handshake")
        }
        Err(e) => tracing::warn!("NBD handshake with {peer} failed: {e}"),
    }
    writer.shutdown();
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listen_addresses() {
        assert_eq!(
            "unix:/run/v.sock".parse::<Listen>().unwrap(),
            Listen::Unix("/run/v.sock".into())
        );
        assert_eq!(
            "tcp:127.0.0.1:10809".parse::<Listen>().unwrap(),
            Listen::Tcp("127.0.0.1:10809".into())
        );
        assert_eq!(
            "tcp:[::1]:0".parse::<Listen>().unwrap(),
            Listen::Tcp("[::1]:0".into())
        );
        for bad in [
            "unix:",
            "tcp:",
            "tcp:host",
            "tcp::80",
            "tcp:h:99999",
            "tcp:h:x",
            "/tmp/s",
            "",
        ] {
            let e = bad.parse::<Listen>().unwrap_err().to_string();
            assert!(e.contains("unix:PATH or tcp:HOST:PORT"), "{bad}: {e}");
        }
        assert_eq!(Listen::Unix("/a".into()).to_string(), "unix:/a");
    }
}
