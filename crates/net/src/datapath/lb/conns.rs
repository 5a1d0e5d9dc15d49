//! A load balancer's connection table: which backend each client connection (client
//! address and port) was given, so that all its packets go there and its replies are
//! translated back, and how many connections each backend has open (for least-conn).
//!
//! Bounded ([`CAPACITY`]) and aged as conntrack ages its entries: a TCP connection lives
//! until it is reset or closed in both directions, plus a grace period for the last ACKs
//! ([`CLOSED_GRACE`]), or until idle for [`TCP_IDLE`] ([`SYN_TIMEOUT`] if the backend never
//! answered); a UDP flow until idle for [`UDP_IDLE`].

use super::super::packet::{TCP_ACK, TCP_FIN, TCP_RST, TCP_SYN};
use std::collections::HashMap;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

pub const CAPACITY: usize = 65536;
pub const TCP_IDLE: Duration = Duration::from_secs(3600);
pub const SYN_TIMEOUT: Duration = Duration::from_secs(30);
pub const CLOSED_GRACE: Duration = Duration::from_secs(10);
pub const UDP_IDLE: Duration = Duration::from_secs(60);
/// The table is swept of expired entries at most this often (and whenever it is full).
const SWEEP_EVERY: Duration = Duration::from_secs(5);

struct Conn {
    backend: SocketAddrV4,
    last: Instant,
    /// The backend answered.
    replied: bool,
    fin_client: bool,
    fin_backend: bool,
    /// Reset, or closed both ways: no longer counted as active.
    closed: Option<Instant>,
}

pub struct Table {
    tcp: bool,
    conns: HashMap<SocketAddrV4, Conn>,
    /// Open (not closed) connections per backend.
    active: HashMap<SocketAddrV4, usize>,
    capacity: usize,
    last_sweep: Instant,
}

impl Table {
    pub fn new(tcp: bool, capacity: usize) -> Table {
        Table {
            tcp,
            conns: HashMap::new(),
            active: HashMap::new(),
            capacity,
            last_sweep: Instant::now(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    /// Open connections to `backend`.
    pub fn active(&self, backend: SocketAddrV4) -> usize {
        self.active.get(&backend).copied().unwrap_or(0)
    }

    fn close(active: &mut HashMap<SocketAddrV4, usize>, c: &mut Conn, now: Instant) {
        if c.closed.is_none() {
            c.closed = Some(now);
            if let Some(n) = active.get_mut(&c.backend) {
                *n = n.saturating_sub(1);
            }
        }
    }

    /// A packet from `client` to the VIP: its backend if the connection is known. A SYN
    /// on a closed connection (the client reuses its port) starts a new one: `None`.
    pub fn forward(
        &mut self,
        client: SocketAddrV4,
        flags: Option<u8>,
        now: Instant,
    ) -> Option<SocketAddrV4> {
        let c = self.conns.get_mut(&client)?;
        let syn = flags.is_some_and(|f| f & (TCP_SYN | TCP_ACK) == TCP_SYN);
        if syn && c.closed.is_some() {
            self.conns.remove(&client);
            return None;
        }
        c.last = now;
        if let Some(f) = flags {
            c.fin_client |= f & TCP_FIN != 0;
            if f & TCP_RST != 0 || (c.fin_client && c.fin_backend) {
                Table::close(&mut self.active, c, now);
            }
        }
        Some(c.backend)
    }

    /// A packet from `backend` to `client`: whether it answers a connection of the table.
    pub fn reverse(
        &mut self,
        backend: SocketAddrV4,
        client: SocketAddrV4,
        flags: Option<u8>,
        now: Instant,
    ) -> bool {
        let Some(c) = self.conns.get_mut(&client).filter(|c| c.backend == backend) else {
            return false;
        };
        c.last = now;
        c.replied = true;
        if let Some(f) = flags {
            c.fin_backend |= f & TCP_FIN != 0;
            if f & TCP_RST != 0 || (c.fin_client && c.fin_backend) {
                Table::close(&mut self.active, c, now);
            }
        }
        true
    }

    /// Records a new connection; `false` if the table is full even after a sweep.
    pub fn insert(&mut self, client: SocketAddrV4, backend: SocketAddrV4, now: Instant) -> bool {
        if self.conns.len() >= self.capacity || now.duration_since(self.last_sweep) >= SWEEP_EVERY {
            self.sweep(now);
        }
        if self.conns.len() >= self.capacity {
            return false;
        }
        let conn = Conn {
            backend,
            last: now,
            replied: false,
            fin_client: false,
            fin_backend: false,
            closed: None,
        };
        if let Some(mut old) = self.conns.insert(client, conn) {
            Table::close(&mut self.active, &mut old, now);
        }
        *self.active.entry(backend).or_insert(0) += 1;
        true
    }

    /// Drops the expired connections.
    pub fn sweep(&mut self, now: Instant) {
        self.last_sweep = now;
        let tcp = self.tcp;
        let active = &mut self.active;
        self.conns.retain(|_, c| {
            let idle = now.saturating_duration_since(c.last);
            let live = match c.closed {
                Some(at) => now.saturating_duration_since(at) < CLOSED_GRACE,
                None if !tcp => idle < UDP_IDLE,
                None if !c.replied => idle < SYN_TIMEOUT,
                None => idle < TCP_IDLE,
            };
            if !live {
                Table::close(active, c, now);
            }
            live
        });
        self.active.retain(|_, n| *n > 0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddrV4 {
        s.parse().unwrap()
    }

    #[test]
    fn tcp_connections_close_age_and_count() {
        let t0 = Instant::now();
        let mut t = Table::new(true, 2);
        let (c1, c2, b) = (a("10.0.0.9:1000"), a("10.0.0.9:1001"), a("10.0.0.5:80"));
        assert!(t.insert(c1, b, t0) && t.insert(c2, b, t0));
        assert!(!t.insert(a("10.0.0.9:1002"), b, t0), "full");
        assert_eq!(t.active(b), 2);
        assert_eq!(t.forward(c1, Some(TCP_ACK), t0), Some(b));
        assert!(t.reverse(b, c1, Some(TCP_ACK), t0));
        assert!(
            !t.reverse(a("10.0.0.6:80"), c1, None, t0),
            "another backend"
        );
        // FIN both ways: closed, no longer active, but still translated for a while.
        t.forward(c1, Some(TCP_FIN | TCP_ACK), t0);
        assert_eq!(t.active(b), 2);
        t.reverse(b, c1, Some(TCP_FIN | TCP_ACK), t0);
        assert_eq!(t.active(b), 1);
        assert_eq!(t.forward(c1, Some(TCP_ACK), t0), Some(b));
        // A new SYN on the closed port is a new connection.
        assert_eq!(t.forward(c1, Some(TCP_SYN), t0), None);
        // c2 never got an answer: gone after SYN_TIMEOUT.
        t.sweep(t0 + SYN_TIMEOUT);
        assert_eq!((t.len(), t.active(b)), (0, 0));
        // RST closes at once.
        assert!(t.insert(c1, b, t0));
        t.reverse(b, c1, Some(TCP_RST), t0);
        assert_eq!(t.active(b), 0);
    }

    #[test]
    fn udp_flows_live_while_used() {
        let t0 = Instant::now();
        let mut t = Table::new(false, 10);
        let (c, b) = (a("10.0.0.9:53"), a("10.0.0.5:53"));
        t.insert(c, b, t0);
        t.sweep(t0 + UDP_IDLE / 2);
        assert_eq!(t.forward(c, None, t0 + UDP_IDLE / 2), Some(b));
        t.sweep(t0 + UDP_IDLE);
        assert_eq!(t.len(), 1);
        t.sweep(t0 + UDP_IDLE * 2);
        assert_eq!((t.len(), t.active(b)), (0, 0));
    }
}
