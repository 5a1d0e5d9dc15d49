//! The host end of Firecracker's convention: the listening Unix socket at `uds_path` (bound by
//! [`Listener::bind`], removed when dropped), the `CONNECT <port>\n` line a host process sends
//! on it, and the non-blocking connection to `uds_path_<port>` for guest-initiated streams.

use super::VsockError;
use std::ffi::OsString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `sizeof(sun_path)`: a socket path and its NUL must fit.
pub const SUN_PATH_LEN: usize = 108;
/// The longest suffix guest-initiated connections add to the path.
const LONGEST_SUFFIX: &str = "_4294967295";
/// A `CONNECT <port>` line is short; anything longer is not one.
const MAX_COMMAND: usize = 32;
/// How long a host process has to send its `CONNECT` line.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(2);

/// The listening socket, with what identifies its file so that only that file is removed.
pub struct Listener {
    pub socket: UnixListener,
    path: PathBuf,
    id: (u64, u64),
}

impl Listener {
    pub fn bind(path: &Path) -> Result<Listener, VsockError> {
        let shown = path.display().to_string();
        if path.as_os_str().len() + LONGEST_SUFFIX.len() >= SUN_PATH_LEN {
            return Err(VsockError::PathTooLong {
                path: shown,
                max: SUN_PATH_LEN - 1 - LONGEST_SUFFIX.len(),
            });
        }
        let socket = match UnixListener::bind(path) {
            Ok(s) => s,
            Err(e) if e.kind() == io::ErrorKind::AddrInUse => {
                // Someone answering means a live user; silence means a leftover file.
                return Err(if connect_nonblocking(path).is_ok() {
                    VsockError::InUse { path: shown }
                } else {
                    VsockError::Exists { path: shown }
                });
            }
            Err(source) => {
                return Err(VsockError::Bind {
                    path: shown,
                    source,
                })
            }
        };
        let bind_err = |source| VsockError::Bind {
            path: path.display().to_string(),
            source,
        };
        socket.set_nonblocking(true).map_err(bind_err)?;
        let meta = std::fs::symlink_metadata(path).map_err(bind_err)?;
        Ok(Listener {
            socket,
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        })
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        // Only our socket: someone may have replaced it (and removing theirs would be rude).
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Where guest-initiated connections to host port `port` go: `<uds_path>_<port>`.
pub fn port_path(uds_path: &Path, port: u32) -> PathBuf {
    let mut p = OsString::from(uds_path.as_os_str());
    p.push(format!("_{port}"));
    PathBuf::from(p)
}

/// Connects to a listening Unix socket without blocking: a listener whose backlog is full
/// refuses (EAGAIN) rather than stalling the device's thread.
pub fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data, for which all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.len() >= addr.sun_path.len() {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: socket() takes no pointers; we check its result.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a socket we just created and own nowhere else; the stream closes it.
    let stream = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un that outlives the call, and len (the family, the
    // path and its NUL, which the zeroed struct holds) does not exceed its size.
    let rc = unsafe {
        libc::connect(
            stream.as_raw_fd(),
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stream)
}

/// Writes to a stream without raising SIGPIPE if its reader is gone (EPIPE is returned instead),
/// whatever the VMM's signal dispositions.
pub fn send_nosignal(stream: &UnixStream, data: &[u8]) -> io::Result<usize> {
    // SAFETY: data is a valid slice for data.len() bytes during the call; send only reads it.
    let n = unsafe {
        libc::send(
            stream.as_raw_fd(),
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A host process connected to the listener and has not finished its `CONNECT` line.
pub struct PendingHost {
    pub stream: UnixStream,
    line: Vec<u8>,
    pub deadline: Instant,
}

/// What reading a pending host connection gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `CONNECT <port>`.
    Connect(u32),
    /// More bytes are needed.
    Incomplete,
    /// Not a valid command, or the host hung up: close it.
    Invalid,
}

impl PendingHost {
    pub fn new(stream: UnixStream) -> PendingHost {
        PendingHost {
            stream,
            line: Vec::new(),
            deadline: Instant::now() + COMMAND_TIMEOUT,
        }
    }

    /// Reads the command one byte at a time: what follows the newline is stream data for the
    /// guest and must stay in the socket.
    pub fn read_command(&mut self) -> Command {
        loop {
            let mut b = [0u8; 1];
            match (&self.stream).read(&mut b) {
                Ok(0) => return Command::Invalid,
                Ok(_) if b[0] == b'\n' => return parse_connect(&self.line),
                Ok(_) if self.line.len() >= MAX_COMMAND => return Command::Invalid,
                Ok(_) => self.line.push(b[0]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Command::Incomplete,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Command::Invalid,
            }
        }
    }
}

/// Parses `CONNECT <decimal port>` (a trailing `\r` tolerated).
pub fn parse_connect(line: &[u8]) -> Command {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(port) = line.strip_prefix(b"CONNECT ") else {
        return Command::Invalid;
    };
    if port.is_empty() || !port.iter().all(u8::is_ascii_digit) {
        return Command::Invalid;
    }
    std::str::from_utf8(port)
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
        .map_or(Command::Invalid, Command::Connect)
}
