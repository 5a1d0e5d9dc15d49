//! The connection table: routes guest packets to connections (or answers them with RST),
//! accepts host processes on the listener, polls every host stream, runs the timeouts, and
//! picks what goes into the next receive buffer.
//!
//! Host streams and the listener share one epoll set whose fd is a single source of the
//! device's [`crate::worker::Worker`], so connections come and go without touching the
//! worker's fixed source list (and its stop event keeps working).

use super::conn::{bare_header, Conn, Key, Next, Verdict};
use super::host::{connect_nonblocking, port_path, Listener, PendingHost};
use super::packet::*;
use super::Counters;
use std::collections::{HashMap, HashSet, VecDeque};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::timerfd::TimerFd;

/// Live connections plus host processes still sending their `CONNECT` line. Each holds an
/// fd: half of the usual 1024-fd soft limit, so a guest opening connections in a loop cannot
/// starve the rest of the VMM of fds.
pub const MAX_CONNECTIONS: usize = 512;
/// RSTs for packets of no connection, waiting for receive buffers; beyond this a misbehaving
/// guest's are dropped (it times out instead).
pub const MAX_QUEUED_RSTS: usize = 1024;
/// Ports the device gives host-initiated connections start here, as in Firecracker, far from
/// the low ports guest services listen on.
pub const FIRST_HOST_PORT: u32 = 1 << 30;
/// Host processes accepted per wake-up, so a connection storm does not starve the queues.
const ACCEPT_BATCH: usize = 64;
/// After accept itself fails (out of fds), the listener rests this long instead of spinning.
const ACCEPT_RETRY: Duration = Duration::from_millis(500);
const LISTENER_TOKEN: u64 = 0;
const POLL_BATCH: usize = 64;

#[path = "accept.rs"]
mod accept;

pub struct Muxer {
    guest_cid: u64,
    uds_path: PathBuf,
    listener: Arc<Listener>,
    /// The listener (level-triggered) and every host stream (edge-triggered).
    poll: Epoll,
    timer: TimerFd,
    armed: Option<Instant>,
    listener_resumes: Option<Instant>,
    conns: HashMap<Key, Conn>,
    tokens: HashMap<u64, Key>,
    pending: HashMap<u64, PendingHost>,
    host_ports: HashSet<u32>,
    next_port: u32,
    next_token: u64,
    /// Connections that may have a packet for the guest, served round-robin.
    backlog: VecDeque<Key>,
    rsts: VecDeque<Header>,
    counters: Arc<Counters>,
}

impl Muxer {
    pub fn new(
        guest_cid: u64,
        uds_path: PathBuf,
        listener: Arc<Listener>,
        counters: Arc<Counters>,
    ) -> io::Result<Muxer> {
        let poll = Epoll::new()?;
        poll.ctl(
            ControlOperation::Add,
            listener.socket.as_raw_fd(),
            EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
        )?;
        Ok(Muxer {
            guest_cid,
            uds_path,
            listener,
            poll,
            timer: TimerFd::new()?,
            armed: None,
            listener_resumes: None,
            conns: HashMap::new(),
            tokens: HashMap::new(),
            pending: HashMap::new(),
            host_ports: HashSet::new(),
            next_port: FIRST_HOST_PORT,
            next_token: LISTENER_TOKEN + 1,
            backlog: VecDeque::new(),
            rsts: VecDeque::new(),
            counters,
        })
    }

    pub fn poll_fd(&self) -> RawFd {
        self.poll.as_raw_fd()
    }

    pub fn timer_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }

    /// Something is waiting for a receive buffer.
    pub fn has_rx_work(&self) -> bool {
        !self.rsts.is_empty() || !self.backlog.is_empty()
    }

    // ---- guest to host ----

    /// Routes a well-formed transmit packet.
    pub fn on_guest_packet(&mut self, hdr: &Header, payload: &[u8]) {
        if hdr.dst_cid != HOST_CID {
            // No other VM or CID is reachable. Refusing a REQUEST lets connect() fail now
            // rather than time out.
            self.counters.bad_packets.fetch_add(1, Relaxed);
            if hdr.op == OP_REQUEST {
                self.refuse(hdr);
            }
            return;
        }
        let key = Key {
            local_port: hdr.dst_port,
            peer_port: hdr.src_port,
        };
        if let Some(conn) = self.conns.get_mut(&key) {
            let was_open = conn.opened;
            let v = conn.on_guest_packet(hdr, payload);
            if conn.opened && !was_open {
                self.counters.connections_opened.fetch_add(1, Relaxed);
            }
            if hdr.op == OP_RW {
                self.counters
                    .tx_bytes
                    .fetch_add(payload.len() as u64, Relaxed);
            }
            self.after(key, v);
            return;
        }
        match hdr.op {
            OP_REQUEST => self.guest_connect(hdr, key),
            // Never answer a RST with one.
            OP_RST => {}
            _ => self.refuse(hdr),
        }
    }

    /// Queues a RST answering `hdr`, from where it was sent to.
    fn refuse(&mut self, hdr: &Header) {
        let mut rst = bare_header(
            self.guest_cid,
            Key {
                local_port: hdr.dst_port,
                peer_port: hdr.src_port,
            },
            OP_RST,
        );
        rst.src_cid = hdr.dst_cid;
        self.queue_rst(rst);
    }

    fn queue_rst(&mut self, rst: Header) {
        if self.rsts.len() < MAX_QUEUED_RSTS {
            self.rsts.push_back(rst);
        } else {
            tracing::debug!("virtio-vsock: RST queue full, dropping one");
        }
    }

    /// The guest connects to host port `key.local_port`: forward to `<uds_path>_<port>`.
    fn guest_connect(&mut self, req: &Header, key: Key) {
        if self.conns.len() + self.pending.len() >= MAX_CONNECTIONS {
            tracing::warn!("virtio-vsock: {MAX_CONNECTIONS} connections open, refusing more");
            return self.refuse(req);
        }
        let path = port_path(&self.uds_path, key.local_port);
        let stream = match connect_nonblocking(&path) {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("virtio-vsock: guest connection to {}: {e}", path.display());
                return self.refuse(req);
            }
        };
        let token = self.take_token();
        if let Err(e) = self.watch(&stream, token) {
            tracing::warn!("virtio-vsock: cannot poll a host stream: {e}");
            return self.refuse(req);
        }
        self.counters.connections_opened.fetch_add(1, Relaxed);
        let conn = Conn::accepted(stream, token, key, self.guest_cid, req);
        self.tokens.insert(token, key);
        self.conns.insert(key, conn);
        self.after(key, Verdict::Keep);
    }

    // ---- bookkeeping ----

    /// Carries out a connection's verdict: keep it (and serve it if it has something for the
    /// guest), or remove it, with a RST if it is ours to send.
    fn after(&mut self, key: Key, v: Verdict) {
        match v {
            Verdict::Keep => {
                let Some(conn) = self.conns.get_mut(&key) else {
                    return;
                };
                let deadline = conn.deadline;
                if !conn.queued && conn.has_work() {
                    conn.queued = true;
                    self.backlog.push_back(key);
                }
                self.note_deadline(deadline);
            }
            Verdict::Reset => {
                if self.remove(key).is_some() {
                    self.queue_rst(bare_header(self.guest_cid, key, OP_RST));
                }
            }
            Verdict::Drop => {
                self.remove(key);
            }
        }
    }

    fn remove(&mut self, key: Key) -> Option<Conn> {
        let conn = self.conns.remove(&key)?;
        self.tokens.remove(&conn.token);
        if conn.from_host {
            self.host_ports.remove(&key.local_port);
        }
        if conn.opened {
            self.counters.connections_closed.fetch_add(1, Relaxed);
        }
        self.unwatch(&conn.stream);
        Some(conn)
    }

    /// Drops every connection (their host streams close) and every queued packet.
    pub fn reset_all(&mut self) {
        let keys: Vec<Key> = self.conns.keys().copied().collect();
        for key in keys {
            self.remove(key);
        }
        let tokens: Vec<u64> = self.pending.keys().copied().collect();
        for t in tokens {
            self.drop_pending(t);
        }
        self.backlog.clear();
        self.rsts.clear();
    }

    // ---- timeouts ----

    fn note_deadline(&mut self, deadline: Option<Instant>) {
        let Some(d) = deadline else {
            return;
        };
        if self.armed.is_some_and(|a| a <= d) {
            return;
        }
        // A zero duration would disarm the timer.
        let wait = d
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1));
        match self.timer.reset(wait, None) {
            Ok(()) => self.armed = Some(d),
            Err(e) => tracing::warn!("virtio-vsock: cannot arm the timeout timer: {e}"),
        }
    }

    /// The timer fired (or may have): expire what is due and re-arm for the next deadline.
    pub fn on_timer(&mut self) {
        // Disarming also consumes the expiration, so the level-triggered source goes quiet
        // without a read that could block.
        if let Err(e) = self.timer.clear() {
            tracing::warn!("virtio-vsock: cannot clear the timeout timer: {e}");
        }
        self.armed = None;
        let now = Instant::now();
        if self.listener_resumes.is_some_and(|t| t <= now) {
            self.listener_resumes = None;
            if let Err(e) = self.poll.ctl(
                ControlOperation::Add,
                self.listener.socket.as_raw_fd(),
                EpollEvent::new(EventSet::IN, LISTENER_TOKEN),
            ) {
                tracing::error!("virtio-vsock: cannot poll the listener again: {e}");
            }
        }
        let stale: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(t, _)| *t)
            .collect();
        for t in stale {
            tracing::debug!("virtio-vsock: a host connection sent no CONNECT line in time");
            self.drop_pending(t);
        }
        let expired: Vec<Key> = self
            .conns
            .values()
            .filter(|c| c.deadline.is_some_and(|d| d <= now))
            .map(|c| c.key)
            .collect();
        for key in expired {
            tracing::debug!(?key, "virtio-vsock: the guest did not answer in time");
            self.after(key, Verdict::Reset);
        }
        let next = self
            .conns
            .values()
            .filter_map(|c| c.deadline)
            .chain(self.pending.values().map(|p| p.deadline))
            .chain(self.listener_resumes)
            .min();
        self.note_deadline(next);
    }

    // ---- host to guest ----

    /// The next packet for a receive buffer with `room` payload bytes (payload into `buf`).
    pub fn next_rx(&mut self, room: usize, buf: &mut [u8]) -> Option<(Header, usize)> {
        if let Some(rst) = self.rsts.pop_front() {
            return Some((rst, 0));
        }
        // Each connection gets one try: one that has nothing after all is not asked again.
        for _ in 0..self.backlog.len() {
            let Some(key) = self.backlog.pop_front() else {
                break;
            };
            let Some(conn) = self.conns.get_mut(&key) else {
                continue;
            };
            conn.queued = false;
            match conn.next_packet(room, buf) {
                Next::Packet(hdr, n) => {
                    // Round-robin: back of the line if it has more.
                    self.after(key, Verdict::Keep);
                    return Some((hdr, n));
                }
                Next::Nothing => self.after(key, Verdict::Keep),
                Next::Reset => self.after(key, Verdict::Reset),
            }
            if let Some(rst) = self.rsts.pop_front() {
                return Some((rst, 0));
            }
        }
        None
    }
}

impl Drop for Muxer {
    /// A device reset ends every connection: count them closed.
    fn drop(&mut self) {
        self.reset_all();
    }
}
