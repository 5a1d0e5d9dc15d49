//! The forwarding decision, as a learning bridge makes it (IEEE 802.1D/Q; Linux bridge and
//! Open vSwitch's NORMAL action behave alike): a frame belongs to a segment, its network and
//! VLAN, decided by the port it came in on; its source MAC is learned on that port; a
//! unicast frame to a learned MAC goes to that port only, anything else is flooded to the
//! segment's other ports. Segments never mix: the table is keyed by segment, and a port only
//! ever receives frames of the segments it is a member of.

use super::frame::{self, Malformed};
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

/// The ports of all networks (read on every frame, written when ports come and go) and the
/// MAC table.
pub struct Switch {
    pub ports: RwLock<Vec<Arc<Port>>>,
    pub macs: Mutex<MacTable>,
}

impl Switch {
    pub fn new(clock: Box<dyn Clock>) -> Switch {
        Switch {
            ports: RwLock::new(Vec::new()),
            macs: Mutex::new(MacTable::new(clock, MAX_AGE, MAX_ENTRIES)),
        }
    }

    /// Forwards one packet (virtio-net header and frame) that arrived on `from`.
    pub fn forward(&self, from: &Port, packet: &[u8]) {
        from.counters.received(packet.len());
        let frame = match frame::parse(packet) {
            Ok(f) => f,
            Err(why) => return from.drop_frame(why_name(why)),
        };
        let Some(vlan) = ingress_vlan(&from.vlan, frame.vlan) else {
            return from.drop_frame("VLAN not carried by the port");
        };
        let seg = (from.net_id, vlan);
        let dst = (!frame.is_multicast()).then_some(frame.dst);
        let known = self
            .macs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .learn_and_lookup(seg, frame.src, from.id, dst);
        let ports = self.ports.read().unwrap_or_else(|e| e.into_inner());
        if let Some(id) = known {
            // A destination behind the port the frame came from needs nothing from us.
            if id == from.id {
                return;
            }
            if let Some(p) = ports.iter().find(|p| p.id == id) {
                if let Some(tag) = egress_tag(&p.vlan, vlan) {
                    p.send(packet, &frame, tag);
                }
                return;
            }
        }
        for p in ports.iter() {
            if p.net_id != from.net_id || p.id == from.id {
                continue;
            }
            if let Some(tag) = egress_tag(&p.vlan, vlan) {
                p.send(packet, &frame, tag);
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
