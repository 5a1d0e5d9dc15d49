//! One stream connection between a guest vsock port and a host Unix socket: its state, both
//! directions' credit (virtio 1.2, 5.10.6.3) and the guest data waiting for the host to read.
//!
//! The host stream is polled edge-triggered: `readable` and `writable` record an edge until a
//! read or write says EAGAIN, so a connection that cannot move (no guest credit, no receive
//! buffer) never makes the worker spin.

use super::host::send_nosignal;
use super::packet::*;
use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::EventSet;

/// The receive buffer each connection advertises to the guest (Linux's default): the most
/// guest data held for a host reader that is slow, per connection.
pub const BUF_ALLOC: u32 = 256 * 1024;
/// Forwarded bytes after which the guest is told of the room it has again. Below `BUF_ALLOC`,
/// so a guest that used up its credit is always told once the host has read its data.
const CREDIT_UPDATE_THRESHOLD: u32 = BUF_ALLOC / 4;
/// An empty guest-data buffer keeps at most this much memory.
const SHRINK_ABOVE: usize = 16 * 1024;
/// How long the guest has to answer a host's connection request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the guest has to acknowledge (RST) our SHUTDOWN once the host side is gone.
pub const CLOSE_TIMEOUT: Duration = Duration::from_secs(2);

/// A connection's identity: the host-side port (ours) and the guest's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub local_port: u32,
    pub peer_port: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Host-initiated: the REQUEST is owed or sent, the guest has not answered.
    Connecting,
    Established,
    /// The host side is gone: SHUTDOWN is owed or sent and the guest's RST awaited.
    Closing,
}

/// What becomes of a connection after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Keep,
    /// Remove it and tell the guest with a RST.
    Reset,
    /// Remove it silently: the guest reset it.
    Drop,
}

/// What a connection has for a receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// A packet whose payload (`.1` bytes) is at the start of the caller's buffer.
    Packet(Header, usize),
    Nothing,
    Reset,
}

pub struct Conn {
    pub key: Key,
    pub stream: UnixStream,
    /// Its id in the connection epoll set.
    pub token: u64,
    pub state: State,
    /// It reached Established (it counts as opened, and will count as closed).
    pub opened: bool,
    /// A host process initiated it: its local port came from the muxer's allocator.
    pub from_host: bool,
    /// It sits in the muxer's receive backlog.
    pub queued: bool,
    pub deadline: Option<Instant>,
    guest_cid: u64,
    // Host to guest.
    readable: bool,
    host_eof: bool,
    host_hup: bool,
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    // Guest to host.
    writable: bool,
    write_dead: bool,
    to_host: VecDeque<u8>,
    /// Leading bytes of `to_host` that are ours (the `OK` line), not the guest's: no credit.
    uncredited: usize,
    fwd_cnt: u32,
    sent_fwd_cnt: u32,
    host_write_shut: bool,
    /// SHUTDOWN flags the guest sent.
    peer_shut: u32,
    // Control packets owed to the guest.
    owe_request: bool,
    owe_response: bool,
    owe_credit: bool,
    owe_shutdown: u32,
    shutdown_sent: u32,
}

impl Conn {
    fn new(stream: UnixStream, token: u64, key: Key, guest_cid: u64, state: State) -> Conn {
        Conn {
            key,
            stream,
            token,
            state,
            opened: state == State::Established,
            from_host: state == State::Connecting,
            queued: false,
            deadline: None,
            guest_cid,
            readable: true,
            host_eof: false,
            host_hup: false,
            tx_cnt: 0,
            peer_buf_alloc: 0,
            peer_fwd_cnt: 0,
            writable: true,
            write_dead: false,
            to_host: VecDeque::new(),
            uncredited: 0,
            fwd_cnt: 0,
            sent_fwd_cnt: 0,
            host_write_shut: false,
            peer_shut: 0,
            owe_request: false,
            owe_response: false,
            owe_credit: false,
            owe_shutdown: 0,
            shutdown_sent: 0,
        }
    }

    /// A host process asked (`CONNECT <port>`) for guest port `key.peer_port`.
    pub fn connecting(stream: UnixStream, token: u64, key: Key, guest_cid: u64) -> Conn {
        let mut c = Conn::new(stream, token, key, guest_cid, State::Connecting);
        c.owe_request = true;
        c.deadline = Some(Instant::now() + CONNECT_TIMEOUT);
        c
    }

    /// The guest's REQUEST `req` reached a host listener through `stream`.
    pub fn accepted(
        stream: UnixStream,
        token: u64,
        key: Key,
        guest_cid: u64,
        req: &Header,
    ) -> Conn {
        let mut c = Conn::new(stream, token, key, guest_cid, State::Established);
        c.peer_buf_alloc = req.buf_alloc;
        c.peer_fwd_cnt = req.fwd_cnt;
        c.owe_response = true;
        c
    }

    /// What the guest can still take: its buffer less what we sent and it has not consumed. A
    /// guest reporting nonsense (consumed more than sent) gets nothing.
    pub fn peer_credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Guest data accepted and not yet read by the host.
    pub fn buffered(&self) -> usize {
        self.to_host.len().saturating_sub(self.uncredited)
    }

    fn wants_host_data(&self) -> bool {
        self.state == State::Established && self.peer_shut & SHUTDOWN_RCV == 0 && !self.host_eof
    }

    /// It has something for a receive buffer.
    pub fn has_work(&self) -> bool {
        self.owe_request
            || self.owe_response
            || self.owe_credit
            || self.owe_shutdown != 0
            || (self.wants_host_data() && self.readable && self.peer_credit() > 0)
    }

    /// A packet from the guest for this connection (already checked for form).
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) -> Verdict {
        self.peer_buf_alloc = hdr.buf_alloc;
        self.peer_fwd_cnt = hdr.fwd_cnt;
        match hdr.op {
            OP_RST => Verdict::Drop,
            OP_RESPONSE if self.state == State::Connecting => {
                self.state = State::Established;
                self.opened = true;
                self.deadline = None;
                let ok = format!("OK {}\n", self.key.local_port);
                self.uncredited = ok.len();
                self.to_host.extend(ok.as_bytes());
                self.flush()
            }
            // Only a RESPONSE or RST answers a REQUEST.
            _ if self.state == State::Connecting => Verdict::Reset,
            // A second handshake on a live connection: the guest lost track of it.
            OP_REQUEST | OP_RESPONSE => Verdict::Reset,
            OP_RW => self.guest_data(payload),
            OP_SHUTDOWN => {
                self.peer_shut |= hdr.flags & SHUTDOWN_BOTH;
                self.settle()
            }
            OP_CREDIT_REQUEST => {
                self.owe_credit = true;
                Verdict::Keep
            }
            // CREDIT_UPDATE: its credit fields were all it had to say.
            _ => Verdict::Keep,
        }
    }

    fn guest_data(&mut self, data: &[u8]) -> Verdict {
        if self.state == State::Closing || self.write_dead {
            // Nobody is left to read it; the guest hears of that through SHUTDOWN/RST.
            return Verdict::Keep;
        }
        if self.buffered() + data.len() > BUF_ALLOC as usize {
            tracing::debug!(?self.key, "virtio-vsock: the guest sent beyond its credit");
            return Verdict::Reset;
        }
        self.to_host.extend(data);
        self.flush()
    }

    /// The host stream became ready (`ev` from its edge-triggered registration).
    pub fn on_host_event(&mut self, ev: EventSet) -> Verdict {
        let gone = EventSet::HANG_UP | EventSet::ERROR;
        if ev.intersects(EventSet::IN | EventSet::READ_HANG_UP | gone) {
            self.readable = true;
        }
        if ev.intersects(EventSet::OUT | gone) {
            self.writable = true;
        }
        if ev.intersects(gone) {
            self.host_hup = true;
        }
        self.flush()
    }

    /// Writes what the host stream takes of the buffered guest data.
    fn flush(&mut self) -> Verdict {
        while self.writable && !self.write_dead && !self.to_host.is_empty() {
            let (chunk, _) = self.to_host.as_slices();
            match send_nosignal(&self.stream, chunk) {
                Ok(n) if n > 0 => {
                    self.to_host.drain(..n.min(self.to_host.len()));
                    self.forwarded(n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // EPIPE, ECONNRESET: the host process closed its end.
                _ => {
                    self.write_dead = true;
                    self.to_host.clear();
                    self.uncredited = 0;
                }
            }
        }
        if self.to_host.is_empty() && self.to_host.capacity() > SHRINK_ABOVE {
            // A burst is over: do not keep its buffer for the connection's lifetime.
            self.to_host.shrink_to_fit();
        }
        self.settle()
    }

    fn forwarded(&mut self, n: usize) {
        let ours = n.min(self.uncredited);
        self.uncredited -= ours;
        self.fwd_cnt = self.fwd_cnt.wrapping_add((n - ours) as u32);
        if self.fwd_cnt.wrapping_sub(self.sent_fwd_cnt) >= CREDIT_UPDATE_THRESHOLD {
            self.owe_credit = true;
        }
    }

    /// Moves the connection on after any change: passes EOFs along and decides when it ends.
    fn settle(&mut self) -> Verdict {
        if self.state == State::Connecting {
            // The host gave up waiting: withdraw the request.
            return if self.host_hup {
                Verdict::Reset
            } else {
                Verdict::Keep
            };
        }
        let drained = self.to_host.is_empty();
        if self.peer_shut & SHUTDOWN_SEND != 0 && drained && !self.host_write_shut {
            // The guest's EOF, after its data.
            let _ = self.stream.shutdown(Shutdown::Write);
            self.host_write_shut = true;
        }
        if self.peer_shut == SHUTDOWN_BOTH && drained {
            // The guest closed and all it sent is with the host: acknowledge with RST.
            return Verdict::Reset;
        }
        if self.state == State::Closing {
            return Verdict::Keep;
        }
        let host_gone = self.host_hup || self.write_dead;
        if host_gone && (self.host_eof || self.peer_shut & SHUTDOWN_RCV != 0) {
            // Nothing more can flow: ask the guest to close, and give it a while.
            self.state = State::Closing;
            self.readable = false;
            self.owe_shutdown = SHUTDOWN_BOTH & !self.shutdown_sent;
            self.deadline = Some(Instant::now() + CLOSE_TIMEOUT);
            if self.owe_shutdown == 0 {
                // Both SHUTDOWN flags already went out; the RST is ours to send.
                return Verdict::Reset;
            }
        } else if self.host_eof && self.shutdown_sent & SHUTDOWN_SEND == 0 {
            // The host half-closed: the guest reads EOF and may still answer.
            self.owe_shutdown |= SHUTDOWN_SEND;
        }
        Verdict::Keep
    }

    /// The next packet for a receive buffer with `room` payload bytes; data goes into `buf`.
    pub fn next_packet(&mut self, room: usize, buf: &mut [u8]) -> Next {
        if self.owe_request {
            self.owe_request = false;
            return Next::Packet(self.header(OP_REQUEST, 0), 0);
        }
        if self.owe_response {
            self.owe_response = false;
            return Next::Packet(self.header(OP_RESPONSE, 0), 0);
        }
        if let Some(n) = self.read_host(room, buf) {
            return Next::Packet(self.header(OP_RW, 0), n);
        }
        if self.settle() == Verdict::Reset {
            return Next::Reset;
        }
        if self.owe_shutdown != 0 {
            let flags = self.owe_shutdown;
            self.owe_shutdown = 0;
            self.shutdown_sent |= flags;
            return Next::Packet(self.header(OP_SHUTDOWN, flags), 0);
        }
        if self.owe_credit {
            return Next::Packet(self.header(OP_CREDIT_UPDATE, 0), 0);
        }
        Next::Nothing
    }

    /// Reads host data the guest has room and credit for; `None` if there is none now.
    fn read_host(&mut self, room: usize, buf: &mut [u8]) -> Option<usize> {
        loop {
            if !(self.wants_host_data() && self.readable) {
                return None;
            }
            let n = room.min(self.peer_credit() as usize);
            let dst = buf.get_mut(..n).filter(|d| !d.is_empty())?;
            match (&self.stream).read(dst) {
                Ok(0) => {
                    self.host_eof = true;
                    self.readable = false;
                    return None;
                }
                Ok(k) => {
                    self.tx_cnt = self.tx_cnt.wrapping_add(k as u32);
                    return Some(k);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.readable = false;
                    return None;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    self.host_eof = true;
                    self.host_hup = true;
                    self.readable = false;
                    return None;
                }
            }
        }
    }

    /// A header from us to the guest; it carries our current credit, so no separate
    /// CREDIT_UPDATE is owed after it.
    fn header(&mut self, op: u16, flags: u32) -> Header {
        self.sent_fwd_cnt = self.fwd_cnt;
        self.owe_credit = false;
        Header {
            src_cid: HOST_CID,
            dst_cid: self.guest_cid,
            src_port: self.key.local_port,
            dst_port: self.key.peer_port,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags,
            buf_alloc: BUF_ALLOC,
            fwd_cnt: self.fwd_cnt,
        }
    }
}

/// A header for a packet that belongs to no live connection (a RST, mostly).
pub fn bare_header(guest_cid: u64, key: Key, op: u16) -> Header {
    Header {
        src_cid: HOST_CID,
        dst_cid: guest_cid,
        src_port: key.local_port,
        dst_port: key.peer_port,
        len: 0,
        kind: TYPE_STREAM,
        op,
        flags: 0,
        buf_alloc: 0,
        fwd_cnt: 0,
    }
}
