//! The forwarding decision, as a learning bridge makes it (IEEE 802.1D/Q; Linux bridge and
//! Open vSwitch's NORMAL action behave alike): a frame belongs to a segment, its network and
//! VLAN, decided by the port it came in on; its source MAC is learned on that port; a
//! unicast frame to a learned MAC goes to that port only, anything else is flooded to the
//! segment's other ports. Segments never mix: the table is keyed by segment, and a port only
//! ever receives frames of the segments it is a member of.

use super::endpoint::{Ctx, Hop, NetEndpoint, Verdict};
use super::firewall::{Firewall, RuleSet};
use super::frame::{self, Frame, Malformed};
use super::packet::{self, Ipv4};
use super::port::Port;
use super::PortVlan;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use vireo_virtio::rate_limiter::Clock;

/// How long a learned MAC stays without being seen again (802.1D's default ageing time).
pub const MAX_AGE: Duration = Duration::from_secs(300);
/// Entries the table holds at most: a guest sending from random source MACs cannot make the
/// service grow without bound. Unknown sources beyond it are not learned (their frames are
/// still forwarded; replies flood).
pub const MAX_ENTRIES: usize = 16 * 1024;
/// How often learning sweeps out aged entries.
const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// A segment: network id and VLAN (`None`: untagged).
pub type Segment = (u32, Option<u16>);

struct Entry {
    port: u32,
    seen: Duration,
}

/// The MAC learning table of all segments, with aging.
pub struct MacTable {
    entries: HashMap<(Segment, [u8; 6]), Entry>,
    clock: Box<dyn Clock>,
    max_age: Duration,
    capacity: usize,
    last_sweep: Duration,
}

/// One learned address, for display.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Learned {
    pub segment: Segment,
    pub mac: [u8; 6],
    pub port: u32,
    pub age: Duration,
}

impl MacTable {
    pub fn new(clock: Box<dyn Clock>, max_age: Duration, capacity: usize) -> MacTable {
        MacTable {
            entries: HashMap::new(),
            clock,
            max_age,
            capacity,
            last_sweep: Duration::ZERO,
        }
    }

    /// Learns that `src` is behind `port` in `seg`, then says where `dst` is, if known
    /// (one lock and one clock reading per frame).
    pub fn learn_and_lookup(
        &mut self,
        seg: Segment,
        src: [u8; 6],
        port: u32,
        dst: Option<[u8; 6]>,
    ) -> Option<u32> {
        let now = self.clock.now();
        if now.saturating_sub(self.last_sweep) >= SWEEP_EVERY {
            self.sweep(now);
        }
        let room = self.entries.len() < self.capacity;
        match self.entries.get_mut(&(seg, src)) {
            // A MAC seen on another port has moved (a VM migrated, a cable was replugged).
            Some(e) => *e = Entry { port, seen: now },
            None if room => {
                self.entries.insert((seg, src), Entry { port, seen: now });
            }
            None => {}
        }
        let e = self.entries.get(&(seg, dst?))?;
        (now.saturating_sub(e.seen) < self.max_age).then_some(e.port)
    }

    /// Where `dst` is in `seg`, if known, without learning anything.
    pub fn lookup(&mut self, seg: Segment, dst: [u8; 6]) -> Option<u32> {
        let now = self.clock.now();
        let e = self.entries.get(&(seg, dst))?;
        (now.saturating_sub(e.seen) < self.max_age).then_some(e.port)
    }

    fn sweep(&mut self, now: Duration) {
        let max_age = self.max_age;
        self.entries
            .retain(|_, e| now.saturating_sub(e.seen) < max_age);
        self.last_sweep = now;
    }

    /// Forgets everything learned on a port that goes away.
    pub fn forget_port(&mut self, port: u32) {
        self.entries.retain(|_, e| e.port != port);
    }

    /// The live entries, oldest first.
    pub fn entries(&mut self) -> Vec<Learned> {
        let now = self.clock.now();
        self.sweep(now);
        let mut v: Vec<Learned> = self
            .entries
            .iter()
            .map(|(&(segment, mac), e)| Learned {
                segment,
                mac,
                port: e.port,
                age: now.saturating_sub(e.seen),
            })
            .collect();
        v.sort_by(|a, b| b.age.cmp(&a.age).then(a.mac.cmp(&b.mac)));
        v
    }
}

/// The VLAN a frame arriving on a port belongs to, or `None` if the port does not accept it:
/// access ports take untagged frames only, trunks tagged frames of their VLANs only. The
/// access port's VLAN is resolved (the port's own, else the network's) when it is added.
pub fn ingress_vlan(port: &PortVlan, tag: Option<u16>) -> Option<Option<u16>> {
    match (port, tag) {
        (PortVlan::Access(v), None) => Some(*v),
        (PortVlan::Trunk(vids), Some(t)) if vids.contains(&t) => Some(Some(t)),
        _ => None,
    }
}

/// How a frame of VLAN `vlan` leaves through a port: `Some(None)` untagged, `Some(Some(v))`
/// tagged with `v`, `None` if the port is not a member of that VLAN.
pub fn egress_tag(port: &PortVlan, vlan: Option<u16>) -> Option<Option<u16>> {
    match port {
        PortVlan::Access(v) => (*v == vlan).then_some(None),
        PortVlan::Trunk(vids) => match vlan {
            Some(t) if vids.contains(&t) => Some(Some(t)),
            _ => None,
        },
    }
}

/// The ports of all networks (read on every frame, written when ports come and go), the
/// MAC table, the networks' endpoints and the firewall.
pub struct Switch {
    pub ports: RwLock<Vec<Arc<Port>>>,
    pub macs: Mutex<MacTable>,
    pub endpoints: RwLock<HashMap<u32, Arc<NetEndpoint>>>,
    pub firewall: Firewall,
}

/// How many endpoints a frame may pass through (a router emitting into a network whose load
/// balancer takes it, which the router of that network then routes on...).
const MAX_DEPTH: u8 = 4;

impl Switch {
    pub fn new(clock: Box<dyn Clock>) -> Switch {
        Switch {
            ports: RwLock::new(Vec::new()),
            macs: Mutex::new(MacTable::new(clock, MAX_AGE, MAX_ENTRIES)),
            endpoints: RwLock::new(HashMap::new()),
            firewall: Firewall::new(),
        }
    }

    /// The endpoint of network `net`.
    pub fn endpoint(&self, net: u32) -> Option<Arc<NetEndpoint>> {
        self.endpoints
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&net)
            .cloned()
    }

    fn macs(&self) -> std::sync::MutexGuard<'_, MacTable> {
        self.macs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forwards one packet (virtio-net header and frame) that arrived on `from`. Stages
    /// above the switch may rewrite it in place.
    pub fn forward(&self, from: &Port, packet: &mut [u8]) {
        from.counters.received(packet.len());
        let mut frame = match frame::parse(packet) {
            Ok(f) => f,
            Err(why) => return from.drop_frame(why_name(why)),
        };
        let Some(vlan) = ingress_vlan(&from.vlan, frame.vlan) else {
            return from.drop_frame("VLAN not carried by the port");
        };
        let seg = (from.net_id, vlan);
        let dst = (!frame.is_multicast()).then_some(frame.dst);
        let mut known = self.macs().learn_and_lookup(seg, frame.src, from.id, dst);
        let hop = Hop::Port {
            net: from.net_id,
            port: from.id,
        };
        let ep = &from.endpoint;
        if ep.active() && vlan == ep.vlan {
            // Parsed once for the firewall and the stages, before any of them rewrites it.
            let ip = packet::parse_ipv4(packet, &frame);
            if frame.dst == ep.mac {
                let rules = self.firewall.rules_for(from.net_id);
                let to = Hop::Endpoint { net: ep.id };
                if !self.permit(rules.as_deref(), hop, to, packet, ip.as_ref()) {
                    return from.drop_frame("denied by the firewall");
                }
            }
            let ctx = Ctx {
                switch: self,
                net: ep,
                from: hop,
                depth: 0,
            };
            if ep.input(&ctx, packet, &frame, ip) == Verdict::Consumed {
                return;
            }
            // A stage may have readdressed the frame (a load balancer's backend).
            let Ok(f) = frame::parse(packet) else {
                return from.drop_frame("a stage broke the frame");
            };
            if f.dst != frame.dst {
                known = (!f.is_multicast())
                    .then(|| self.macs().lookup(seg, f.dst))
                    .flatten();
            }
            frame = f;
            if frame.dst == ep.mac {
                return from.drop_frame("no route: nothing in the network took the frame");
            }
        }
        if known == Some(from.id) {
            // A destination behind the port the frame came from needs nothing from us.
            return;
        }
        self.output(seg, hop, known, packet, &frame);
    }

    /// Sends a frame that a network's endpoint made or forwards (an ARP reply, a routed
    /// packet, a DHCP offer) into that network, as if from a port of its own.
    pub fn emit(&self, ep: &NetEndpoint, packet: &mut [u8], depth: u8) {
        let Ok(frame) = frame::parse(packet) else {
            return;
        };
        let seg = ep.segment();
        if frame.dst == ep.mac {
            // Routed to an address of this network's own endpoint (a VIP behind a router).
            if depth >= MAX_DEPTH {
                return;
            }
            let ctx = Ctx {
                switch: self,
                net: ep,
                from: Hop::Endpoint { net: ep.id },
                depth: depth + 1,
            };
            let ip = packet::parse_ipv4(packet, &frame);
            ep.input(&ctx, packet, &frame, ip);
            return;
        }
        let known = (!frame.is_multicast())
            .then(|| self.macs().lookup(seg, frame.dst))
            .flatten();
        self.output(seg, Hop::Endpoint { net: ep.id }, known, packet, &frame);
    }

    /// Whether the firewall lets the packet go from `from` to `to` by `rules` (those
    /// policing its network, if any: else everything passes), given its IPv4 view (anything
    /// but IPv4 passes).
    fn permit(
        &self,
        rules: Option<&RuleSet>,
        from: Hop,
        to: Hop,
        packet: &[u8],
        ip: Option<&Ipv4>,
    ) -> bool {
        match (rules, ip) {
            (Some(rs), Some(ip)) => self.firewall.check(rs, from, to, packet, ip),
            _ => true,
        }
    }

    /// Sends a frame of segment `seg` to the port that has its destination (`known`), or
    /// floods it to the segment's ports, except where it came from.
    fn output(&self, seg: Segment, from: Hop, known: Option<u32>, packet: &[u8], frame: &Frame) {
        let from_port = match from {
            Hop::Port { port, .. } => Some(port),
            Hop::Endpoint { .. } => None,
        };
        // The rules and the packet's IPv4 view once for all the ports it may go to (the
        // packet is not parsed at all where no rule polices the network).
        let rules = self.firewall.rules_for(from.net());
        let ip = rules
            .as_ref()
            .and_then(|_| packet::parse_ipv4(packet, frame));
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        let send = |p: &Arc<Port>| {
            let Some(tag) = egress_tag(&p.vlan, seg.1) else {
                return;
            };
            let to = Hop::Port {
                net: p.net_id,
                port: p.id,
            };
            if self.permit(rules.as_deref(), from, to, packet, ip.as_ref()) {
                p.send(packet, frame, tag);
            } else {
                p.drop_frame("denied by the firewall");
            }
        };
        if let Some(id) = known {
            if let Some(p) = ports.iter().find(|p| p.id == id) {
                return send(p);
            }
        }
        for p in ports.iter() {
            if p.net_id == seg.0 && Some(p.id) != from_port {
                send(p);
            }
        }
    }
}

fn why_name(why: Malformed) -> &'static str {
    match why {
        Malformed::Short => "short frame",
        Malformed::Oversize => "oversize frame",
        Malformed::BadTag => "bad VLAN tag",
        Malformed::BadSource => "multicast source MAC",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vireo_virtio::rate_limiter::FakeClock;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 0xa];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 0xb];

    fn table(clock: &FakeClock) -> MacTable {
        MacTable::new(Box::new(clock.clone()), MAX_AGE, 4)
    }

    #[test]
    fn learns_and_finds_within_a_segment_only() {
        let clock = FakeClock::new();
        let mut t = table(&clock);
        assert_eq!(t.learn_and_lookup((1, None), A, 7, Some(B)), None);
        assert_eq!(t.learn_and_lookup((1, None), B, 8, Some(A)), Some(7));
        // The same MAC in another network or VLAN is unknown there.
        assert_eq!(t.learn_and_lookup((2, None), B, 9, Some(A)), None);
        assert_eq!(t.learn_and_lookup((1, Some(10)), B, 9, Some(A)), None);
        assert_eq!(t.entries().len(), 4);
    }

    #[test]
    fn entries_age_out_and_moves_are_followed() {
        let clock = FakeClock::new();
        let mut t = table(&clock);
        t.learn_and_lookup((1, None), A, 7, None);
        clock.advance(MAX_AGE - Duration::from_secs(1));
        assert_eq!(t.learn_and_lookup((1, None), B, 8, Some(A)), Some(7));
        let e = t.entries();
        assert_eq!(e[0].mac, A);
        assert_eq!(e[0].age, MAX_AGE - Duration::from_secs(1));
        clock.advance(Duration::from_secs(1));
        assert_eq!(t.learn_and_lookup((1, None), B, 8, Some(A)), None);
        assert_eq!(t.entries().len(), 1, "A aged out, B stays");
        // A reappears behind another port.
        t.learn_and_lookup((1, None), A, 9, None);
        assert_eq!(t.learn_and_lookup((1, None), B, 8, Some(A)), Some(9));
    }

    #[test]
    fn capacity_bounds_the_table_and_ports_are_forgotten() {
        let clock = FakeClock::new();
        let mut t = table(&clock);
        for i in 0..10u8 {
            t.learn_and_lookup((1, None), [2, 0, 0, 0, 1, i], 7, None);
        }
        assert_eq!(t.entries().len(), 4);
        t.learn_and_lookup((1, None), A, 8, None);
        t.forget_port(7);
        assert_eq!(
            t.entries().len(),
            0,
            "A was not learned: the table was full"
        );
        t.learn_and_lookup((1, None), A, 8, None);
        assert_eq!(t.entries()[0].port, 8);
    }

    #[test]
    fn vlan_membership() {
        let access = PortVlan::Access(Some(10));
        let untagged = PortVlan::Access(None);
        let trunk = PortVlan::Trunk(vec![10, 20]);
        assert_eq!(ingress_vlan(&access, None), Some(Some(10)));
        assert_eq!(ingress_vlan(&access, Some(10)), None);
        assert_eq!(ingress_vlan(&untagged, None), Some(None));
        assert_eq!(ingress_vlan(&trunk, Some(20)), Some(Some(20)));
        assert_eq!(ingress_vlan(&trunk, Some(30)), None);
        assert_eq!(ingress_vlan(&trunk, None), None);
        assert_eq!(egress_tag(&access, Some(10)), Some(None));
        assert_eq!(egress_tag(&access, Some(20)), None);
        assert_eq!(egress_tag(&access, None), None);
        assert_eq!(egress_tag(&untagged, None), Some(None));
        assert_eq!(egress_tag(&trunk, Some(10)), Some(Some(10)));
        assert_eq!(egress_tag(&trunk, Some(30)), None);
        assert_eq!(egress_tag(&trunk, None), None);
    }
}
