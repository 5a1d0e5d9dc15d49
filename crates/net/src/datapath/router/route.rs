//! The routing table of one router: its connected subnets (one per attached network) and
//! its static routes, looked up by longest prefix as any IP router does. Built whole when
//! the configuration changes and read without locks per packet (see [`super::Tables`]).

use crate::datapath::endpoint::in_subnet;
use crate::datapath::packet;
use std::net::Ipv4Addr;

/// One entry: packets to `net/len` leave through interface `iface` (an index into the
/// router's interfaces), to `via` if given (a next-hop router in that interface's
/// network), else to their destination itself (connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    pub net: Ipv4Addr,
    pub len: u8,
    pub iface: usize,
    pub via: Option<Ipv4Addr>,
}

impl Route {
    /// The neighbour a packet to `dst` is handed to.
    pub fn next_hop(&self, dst: Ipv4Addr) -> Ipv4Addr {
        self.via.unwrap_or(dst)
    }
}

/// The network address of `ip/len` (host bits cleared).
pub fn network(ip: Ipv4Addr, len: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::from(ip) & packet::mask(len))
}

/// A table sorted for lookup: longest prefixes first, and a connected route before a static
/// one of the same prefix (as Linux prefers the kernel's link route).
#[derive(Debug, Clone, Default)]
pub struct Table {
    routes: Vec<Route>,
}

impl Table {
    pub fn new(mut routes: Vec<Route>) -> Table {
        for r in &mut routes {
            r.net = network(r.net, r.len);
        }
        routes.sort_by_key(|r| (std::cmp::Reverse(r.len), r.via.is_some()));
        Table { routes }
    }

    /// The most specific route to `dst`. A router has a handful of routes: a linear scan
    /// of a sorted vector beats a trie at that size.
    pub fn lookup(&self, dst: Ipv4Addr) -> Option<&Route> {
        self.routes.iter().find(|r| in_subnet(dst, r.net, r.len))
    }

    #[cfg(test)]
    pub fn routes(&self) -> &[Route] {
        &self.routes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn route(net: &str, len: u8, iface: usize, via: Option<&str>) -> Route {
        Route {
            net: ip(net),
            len,
            iface,
            via: via.map(ip),
        }
    }

    #[test]
    fn longest_prefix_wins() {
        let t = Table::new(vec![
            route("0.0.0.0", 0, 0, Some("10.201.0.254")),
            route("10.201.0.0", 24, 0, None),
            route("10.202.0.0", 24, 1, None),
            route("10.202.0.128", 25, 0, Some("10.201.0.9")),
            route("10.203.0.0", 16, 1, Some("10.202.0.7")),
        ]);
        let hop = |d: &str| t.lookup(ip(d)).map(|r| (r.iface, r.next_hop(ip(d))));
        assert_eq!(hop("10.201.0.5"), Some((0, ip("10.201.0.5"))));
        assert_eq!(hop("10.202.0.5"), Some((1, ip("10.202.0.5"))));
        assert_eq!(hop("10.202.0.200"), Some((0, ip("10.201.0.9"))));
        assert_eq!(hop("10.203.77.1"), Some((1, ip("10.202.0.7"))));
        assert_eq!(hop("192.0.2.1"), Some((0, ip("10.201.0.254"))));
    }

    #[test]
    fn no_default_no_route_and_host_bits_ignored() {
        let t = Table::new(vec![
            route("10.201.0.77", 24, 0, None),
            route("10.205.1.1", 32, 1, Some("10.201.0.3")),
        ]);
        assert_eq!(t.routes()[0].len, 32, "the host route comes first");
        assert_eq!(t.lookup(ip("10.201.0.1")).map(|r| r.iface), Some(0));
        assert_eq!(t.lookup(ip("10.205.1.1")).map(|r| r.iface), Some(1));
        assert!(t.lookup(ip("10.205.1.2")).is_none());
        assert!(t.lookup(ip("8.8.8.8")).is_none());
    }

    #[test]
    fn connected_beats_static_of_the_same_prefix() {
        let t = Table::new(vec![
            route("10.201.0.0", 24, 1, Some("10.202.0.1")),
            route("10.201.0.0", 24, 0, None),
        ]);
        assert_eq!(t.lookup(ip("10.201.0.4")).map(|r| r.via), Some(None));
        assert_eq!(network(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(network(ip("10.1.2.3"), 32), ip("10.1.2.3"));
    }
}
