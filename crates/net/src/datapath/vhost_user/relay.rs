//! A relay between the frontend's connection and the `vhost-user-backend` library, for one
//! incompatibility between them.
//!
//! QEMU's virtio-net (7.2 here) sends VHOST_USER_SET_VRING_ENABLE when the guest negotiates
//! its features, before the vhost-user SET_FEATURES that acknowledges
//! VHOST_USER_F_PROTOCOL_FEATURES; the `vhost` crate's request handler answers such an early
//! enable by ending the connection. Without PROTOCOL_FEATURES offered QEMU does not send it,
//! but then crashes when it starts the device. So the relay holds early enables back (acking
//! them if asked to) and replays the last state of each ring right after SET_FEATURES. Every
//! other message, with its file descriptors, passes through unchanged; the data path (shared
//! memory, kick and call eventfds) never goes through here.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use vhost::vhost_user::message::{
    FrontendReq, VhostUserHeaderFlag, MAX_ATTACHED_FD_ENTRIES as MAX_FDS,
    MAX_MSG_SIZE as MAX_PAYLOAD,
};
use vhost::vhost_user::VhostUserVirtioFeatures;
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

/// request, flags, size (the crate's header type is not public).
const HEADER_LEN: usize = 12;
const SET_FEATURES: u32 = FrontendReq::SET_FEATURES as u32;
const SET_VRING_ENABLE: u32 = FrontendReq::SET_VRING_ENABLE as u32;
/// The protocol's version, 1, in the flags (the crate's `VhostUserHeaderFlag::VERSION` is
/// the field's mask).
const VERSION: u32 = 0x1;
const REPLY: u32 = VhostUserHeaderFlag::REPLY.bits();
const NEED_REPLY: u32 = VhostUserHeaderFlag::NEED_REPLY.bits();
const PROTOCOL_FEATURES: u64 = VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits();
/// Rings whose early enable state is kept (virtio-net without multiqueue has two).
const MAX_HELD_RINGS: usize = 64;

/// One message: header fields, payload and the descriptors that came with it.
struct Message {
    request: u32,
    flags: u32,
    payload: Vec<u8>,
    fds: Vec<File>,
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        let mut m = Vec::with_capacity(HEADER_LEN + self.payload.len());
        m.extend_from_slice(&self.request.to_le_bytes());
        m.extend_from_slice(&self.flags.to_le_bytes());
        m.extend_from_slice(&(self.payload.len() as u32).to_le_bytes());
        m.extend_from_slice(&self.payload);
        m
    }
}

/// Reads one message; `None` at the end of the stream.
fn receive(sock: &UnixStream) -> io::Result<Option<Message>> {
    let mut header = [0u8; HEADER_LEN];
    let mut raw_fds = [-1 as RawFd; MAX_FDS];
    let mut iov = [libc::iovec {
        iov_base: header.as_mut_ptr().cast(),
        iov_len: HEADER_LEN,
    }];
    // SAFETY: the iovec describes `header`, which outlives the call; any bytes may be
    // written there.
    let (n, nfds) = unsafe { sock.recv_with_fds(&mut iov, &mut raw_fds) }
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    // SAFETY: recvmsg handed us these descriptors; wrapping them once makes them ours to
    // close.
    let fds: Vec<File> = raw_fds[..nfds.min(MAX_FDS)]
        .iter()
        .map(|fd| unsafe { File::from_raw_fd(*fd) })
        .collect();
    if n == 0 {
        return Ok(None);
    }
    let mut s = sock;
    s.read_exact(&mut header[n..])?;
    let word =
        |i: usize| u32::from_le_bytes([header[i], header[i + 1], header[i + 2], header[i + 3]]);
    let (request, flags, size) = (word(0), word(4), word(8) as usize);
    if size > MAX_PAYLOAD {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a vhost-user message of {size} bytes"),
        ));
    }
    let mut payload = vec![0u8; size];
    s.read_exact(&mut payload)?;
    Ok(Some(Message {
        request,
        flags,
        payload,
        fds,
    }))
}

fn send(sock: &UnixStream, m: &Message) -> io::Result<()> {
    let bytes = m.encode();
    let fds: Vec<RawFd> = m.fds.iter().map(|f| f.as_raw_fd()).collect();
    let n = sock
        .send_with_fds(&[&bytes[..]], &fds)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
    // The descriptors went with the first bytes; the rest of a short write follows plain.
    let mut s = sock;
    s.write_all(&bytes[n..])
}

/// Relays between `frontend` and `backend` (the library's end) on two threads, until either
/// side closes; then both sides are shut down and the threads end.
pub fn start(frontend: UnixStream, backend: UnixStream, name: &str) -> io::Result<()> {
    let front_w = Arc::new(Mutex::new(frontend.try_clone()?));
    let back_r = backend.try_clone()?;
    let replies = front_w.clone();
    std::thread::Builder::new()
        .name(format!("vu-relay-{name}"))
        .spawn(move || {
            if let Err(e) = to_backend(&frontend, &backend, &front_w) {
                tracing::debug!("vhost-user relay to the backend ended: {e}");
            }
            let _ = backend.shutdown(std::net::Shutdown::Both);
            let _ = frontend.shutdown(std::net::Shutdown::Both);
        })?;
    std::thread::Builder::new()
        .name(format!("vu-reply-{name}"))
        .spawn(move || {
            let lock = || replies.lock().unwrap_or_else(|e| e.into_inner());
            let r = (|| -> io::Result<()> {
                while let Some(m) = receive(&back_r)? {
                    send(&lock(), &m)?;
                }
                Ok(())
            })();
            if let Err(e) = r {
                tracing::debug!("vhost-user relay to the frontend ended: {e}");
            }
            let _ = back_r.shutdown(std::net::Shutdown::Both);
            let _ = lock().shutdown(std::net::Shutdown::Both);
        })?;
    Ok(())
}

fn to_backend(
    frontend: &UnixStream,
    backend: &UnixStream,
    front_w: &Mutex<UnixStream>,
) -> io::Result<()> {
    let mut protocol_acked = false;
    // (ring, enabled) of the enables held back, latest last.
    let mut held: Vec<(u32, u32)> = Vec::new();
    while let Some(m) = receive(frontend)? {
        if m.request == SET_VRING_ENABLE && !protocol_acked && m.payload.len() == 8 {
            let word = |i: usize| {
                u32::from_le_bytes([
                    m.payload[i],
                    m.payload[i + 1],
                    m.payload[i + 2],
                    m.payload[i + 3],
                ])
            };
            let (ring, num) = (word(0), word(4));
            held.retain(|(r, _)| *r != ring);
            if held.len() < MAX_HELD_RINGS {
                held.push((ring, num));
            }
            if m.flags & NEED_REPLY != 0 {
                let ack = Message {
                    request: m.request,
                    flags: VERSION | REPLY,
                    payload: 0u64.to_le_bytes().to_vec(),
                    fds: Vec::new(),
                };
                send(&front_w.lock().unwrap_or_else(|e| e.into_inner()), &ack)?;
            }
            continue;
        }
        let features = (m.request == SET_FEATURES)
            .then(|| {
                m.payload
                    .get(..8)
                    .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
            })
            .flatten();
        send(backend, &m)?;
        if features.is_some_and(|f| f & PROTOCOL_FEATURES != 0) && !protocol_acked {
            protocol_acked = true;
            for (ring, num) in held.drain(..) {
                let mut payload = ring.to_le_bytes().to_vec();
                payload.extend_from_slice(&num.to_le_bytes());
                let replay = Message {
                    request: SET_VRING_ENABLE,
                    flags: VERSION,
                    payload,
                    fds: Vec::new(),
                };
                send(backend, &replay)?;
            }
        }
    }
    Ok(())
}

/// A connection the library can accept: a listener in a fresh directory only we can enter
/// (so no other process can connect first), already connected to; the path is gone when
/// this returns. Returns (the listener for the library, our end).
pub fn library_connection() -> io::Result<(vhost::vhost_user::Listener, UnixStream)> {
    use std::os::unix::fs::DirBuilderExt;
    use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "vireo-vu-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Relaxed)
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
    let path = dir.join("s");
    let pair = std::os::unix::net::UnixListener::bind(&path)
        .and_then(|l| Ok((l, UnixStream::connect(&path)?)));
    let _ = std::fs::remove_file(&path);
    let _ = std::fs::remove_dir(&dir);
    let (listener, ours) = pair?;
    Ok((vhost::vhost_user::Listener::from(listener), ours))
}
