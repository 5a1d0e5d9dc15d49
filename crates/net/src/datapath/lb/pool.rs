//! A load balancer's pool: its backends with their health (HAProxy's rise/fall), the
//! choice of a backend for a new connection (round robin, least connections, client-ip
//! affinity), and the connection table that choice is recorded in.

use super::conns::Table;
use super::{Affinity, Algorithm};
use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

/// HAProxy's defaults: this many failed checks in a row take a backend down, this many
/// good ones bring it back.
pub const FALL: u32 = 3;
pub const RISE: u32 = 2;
/// A client's backend is remembered (client-ip affinity) at most this long after its last
/// new connection, and for this many clients at most.
const AFFINITY_TTL: Duration = Duration::from_secs(3600);
const AFFINITY_MAX: usize = 65536;

pub(super) struct Backend {
    pub(super) addr: SocketAddrV4,
    pub(super) up: bool,
    pub(super) good: u32,
    pub(super) bad: u32,
    pub(super) connections: u64,
}

pub(super) struct State {
    pub(super) backends: Vec<Backend>,
    pub(super) conns: Table,
    pub(super) affinity: HashMap<Ipv4Addr, (SocketAddrV4, Instant)>,
    pub(super) next: usize,
}

impl State {
    /// The backend for a new connection from `client`, among the healthy ones.
    pub(super) fn pick(
        &mut self,
        client: Ipv4Addr,
        algo: Algorithm,
        affinity: Affinity,
        now: Instant,
    ) -> Option<SocketAddrV4> {
        if affinity == Affinity::ClientIp {
            if let Some((b, _)) = self.affinity.get(&client) {
                let b = *b;
                if let Some(x) = self.backends.iter_mut().find(|x| x.addr == b && x.up) {
                    x.connections += 1;
                    self.affinity.insert(client, (b, now));
                    return Some(b);
                }
            }
        }
        let up: Vec<usize> = (0..self.backends.len())
            .filter(|&i| self.backends[i].up)
            .collect();
        let i = match algo {
            Algorithm::RoundRobin => {
                let i = *up.get(self.next % up.len().max(1))?;
                self.next = self.next.wrapping_add(1);
                i
            }
            // Ties go round robin too, so that equal backends share the load.
            Algorithm::LeastConn => {
                let n = up.len().max(1);
                let start = self.next % n;
                self.next = self.next.wrapping_add(1);
                let order = up.iter().cycle().skip(start).take(up.len());
                *order.min_by_key(|&&i| self.conns.active(self.backends[i].addr))?
            }
        };
        let b = self.backends.get_mut(i)?;
        b.connections += 1;
        let addr = b.addr;
        if affinity == Affinity::ClientIp {
            if self.affinity.len() >= AFFINITY_MAX {
                self.affinity
                    .retain(|_, (_, t)| now.saturating_duration_since(*t) < AFFINITY_TTL);
            }
            if self.affinity.len() < AFFINITY_MAX {
                self.affinity.insert(client, (addr, now));
            }
        }
        Some(addr)
    }

    /// Applies a health check's result (HAProxy's rise/fall); returns the new state if it
    /// changed.
    pub(super) fn checked(&mut self, addr: SocketAddrV4, ok: bool) -> Option<bool> {
        let b = self.backends.iter_mut().find(|b| b.addr == addr)?;
        if ok {
            b.bad = 0;
            b.good = b.good.saturating_add(1);
            if !b.up && b.good >= RISE {
                b.up = true;
                return Some(true);
            }
        } else {
            b.good = 0;
            b.bad = b.bad.saturating_add(1);
            if b.up && b.bad >= FALL {
                b.up = false;
                return Some(false);
            }
        }
        None
    }
}

pub(super) fn backend(addr: SocketAddrV4) -> Backend {
    Backend {
        addr,
        up: true,
        good: 0,
        bad: 0,
        connections: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(n: u8) -> State {
        State {
            backends: (1..=n)
                .map(|i| backend(SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, i), 80)))
                .collect(),
            conns: Table::new(true, 16),
            affinity: HashMap::new(),
            next: 0,
        }
    }

    #[test]
    fn rise_and_fall_and_affinity_follows_health() {
        let mut s = state(2);
        let (a, b) = (s.backends[0].addr, s.backends[1].addr);
        let client = Ipv4Addr::new(10, 0, 1, 1);
        let now = Instant::now();
        let pick = |s: &mut State| s.pick(client, Algorithm::RoundRobin, Affinity::ClientIp, now);
        assert_eq!(pick(&mut s), Some(a));
        assert_eq!(pick(&mut s), Some(a), "sticky");
        // Two failures are not enough; a success in between resets the count.
        assert_eq!(s.checked(a, false), None);
        assert_eq!(s.checked(a, false), None);
        assert_eq!(s.checked(a, true), None);
        for _ in 1..FALL {
            assert_eq!(s.checked(a, false), None);
        }
        assert_eq!(s.checked(a, false), Some(false));
        assert_eq!(pick(&mut s), Some(b), "a is down: the client moves");
        for _ in 1..RISE {
            assert_eq!(s.checked(a, true), None);
        }
        assert_eq!(s.checked(a, true), Some(true));
        assert_eq!(pick(&mut s), Some(b), "and stays where it went");
        // Nothing up: no backend.
        for x in [a, b] {
            for _ in 0..FALL {
                s.checked(x, false);
            }
        }
        assert_eq!(pick(&mut s), None);
        assert_eq!(s.backends[0].connections + s.backends[1].connections, 4);
    }
}
