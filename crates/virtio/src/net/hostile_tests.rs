//! What a hostile or broken driver can put in the queues: bad chains are returned unused and
//! counted, and neither they nor random garbage panic, hang or stop the device.

use super::harness::*;
use super::host::*;
use super::{MAX_PACKET_LEN, QUEUE_SIZE, VNET_HDR_LEN};
use std::time::Duration;
use vm_memory::{Bytes, GuestAddress};

const T: Duration = Duration::from_secs(5);

#[test]
fn bad_transmit_chains_are_returned_unused_and_counted() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        let frame = arp_request(&GUEST_MAC, GUEST_IP, HOST_IP);
        let hdr = h.put(&[0; VNET_HDR_LEN]);
        let body = h.put(&frame);
        let big = h.alloc(40_000);
        let chains: Vec<Vec<Desc>> = vec![
            // Shorter than the header.
            vec![desc(hdr, 8, 0)],
            // A header and no Ethernet header.
            vec![desc(hdr, 12, 0), desc(body, 4, 0)],
            // Longer than 64 KiB and headers.
            vec![desc(hdr, 12, 0), desc(big, 40_000, 0), desc(big, 40_000, 0)],
            // A device-writable descriptor.
            vec![desc(hdr, 12, 0), desc(body, frame.len() as u32, WRITE)],
            // Outside guest memory, and straddling its end.
            vec![desc(hdr, 12, 0), desc(MEM_SIZE + 4096, 64, 0)],
            vec![desc(hdr, 12, 0), desc(MEM_SIZE - 16, 64, 0)],
            vec![desc(u64::MAX - 8, 64, 0)],
            // Nothing at all.
            vec![desc(hdr, 0, 0)],
        ];
        for c in &chains {
            h.tx.add_chain(&h.mem, c);
        }
        h.kick_tx();
        let used = h.tx.wait_used(&h.mem, chains.len() as u16, T);
        assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
        assert_eq!(h.counter("errors"), chains.len() as u64);
        assert_eq!(h.counter("tx_packets"), 0);

        // The largest allowed chain still goes out.
        let max = h.alloc(MAX_PACKET_LEN as u64);
        h.mem
            .write_slice(&[0; VNET_HDR_LEN], GuestAddress(max))
            .unwrap();
        h.mem.write_slice(&frame, GuestAddress(max + 12)).unwrap();
        h.tx.add_chain(&h.mem, &[desc(max, MAX_PACKET_LEN as u32, 0)]);
        h.kick_tx();
        h.tx.wait_used(&h.mem, 1, T);
        // The kernel may refuse a 64 KiB ARP frame with no GSO header: either way it is over.
        assert_eq!(
            h.counter("tx_packets") + h.counter("errors"),
            chains.len() as u64 + 1
        );
        h.send(&frame);
        assert!(h.counter("tx_packets") >= 1);

        // Indirect tables: a good one is sent, one with a writable entry is refused.
        let before = (h.counter("tx_packets"), h.counter("errors"));
        for flags in [0, WRITE] {
            let table = h.alloc(32);
            let entries = [
                Desc {
                    addr: hdr,
                    len: 12,
                    flags: NEXT,
                    next: 1,
                },
                Desc {
                    addr: body,
                    len: frame.len() as u32,
                    flags,
                    next: 0,
                },
            ];
            h.tx.write_descs(&h.mem, table, 0, &entries);
            h.tx.add_chain(&h.mem, &[desc(table, 32, INDIRECT)]);
        }
        h.kick_tx();
        h.tx.wait_used(&h.mem, 2, T);
        assert_eq!(h.counter("tx_packets"), before.0 + 1);
        assert_eq!(h.counter("errors"), before.1 + 1);
    });
}

#[test]
fn bad_receive_chains_are_returned_unused_and_good_ones_still_receive() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        let host = PacketSocket::new(&tap, false);
        let a = h.alloc(2048);
        let bad: Vec<Vec<Desc>> = vec![
            vec![desc(a, 2048, 0)],
            vec![desc(a, 64, 0), desc(a + 64, 1024, WRITE)],
            vec![desc(MEM_SIZE + 4096, 2048, WRITE)],
            vec![desc(a, 1024, WRITE), desc(MEM_SIZE - 8, 64, WRITE)],
            vec![desc(a, 8, WRITE)],
            vec![desc(a, 0, WRITE)],
        ];
        for c in &bad {
            h.post_rx_chain(c);
        }
        h.kick_rx();
        let used = h.rx.wait_used(&h.mem, bad.len() as u16, T);
        assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
        assert_eq!(h.counter("errors"), bad.len() as u64);
        assert!(h.writes.0.lock().unwrap().is_empty());

        h.post_rx(2, 2048);
        let mut f = eth(&GUEST_MAC, &[2, 0, 0, 0, 0, 1], ETH_P_TEST);
        f.extend_from_slice(&[7; 100]);
        host.send(&f);
        assert_eq!(h.recv(T).frame, f);
    });
}

#[test]
fn a_full_ring_of_bad_receive_chains_is_returned_in_batches() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        let host = PacketSocket::new(&tap, false);
        let a = h.alloc(64);
        // More bad chains than one batch: the worker yields in between and comes back.
        for _ in 0..QUEUE_SIZE {
            h.post_rx_chain(&[desc(a, 64, 0)]);
        }
        h.kick_rx();
        let used = h.rx.wait_used(&h.mem, QUEUE_SIZE, T);
        assert!(used.iter().all(|&(_, len)| len == 0));
        assert_eq!(h.counter("errors"), u64::from(QUEUE_SIZE));

        h.post_rx(1, 2048);
        let mut f = eth(&GUEST_MAC, &[2, 0, 0, 0, 0, 1], ETH_P_TEST);
        f.extend_from_slice(&[9; 50]);
        host.send(&f);
        assert_eq!(h.recv(T).frame, f);
    });
}

/// xorshift64*: reproducible randomness without a crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A random descriptor: mostly in the buffer area, sometimes outside memory or absurd; any
/// flags; any next index. Never in the rings, which the test itself needs to read.
fn random_desc(r: &mut Rng) -> Desc {
    let addr = match r.below(10) {
        0 => r.next(),
        1 => MEM_SIZE - r.below(4096),
        _ => BUFFERS + r.below(MEM_SIZE - BUFFERS - 70_000),
    };
    let len = match r.below(4) {
        0 => r.next() as u32,
        1 => r.below(16) as u32,
        _ => r.below(70_000) as u32,
    };
    Desc {
        addr,
        len,
        flags: r.below(8) as u16, // NEXT | WRITE | INDIRECT
        next: r.below(u64::from(QUEUE_SIZE) + 8) as u16,
    }
}

/// Fills the whole descriptor table of `q` with random descriptors and publishes `n` random heads.
fn random_round(h: &mut Harness, r: &mut Rng, rx: bool, n: u16) {
    let table: Vec<Desc> = (0..QUEUE_SIZE).map(|_| random_desc(r)).collect();
    let q = if rx { &mut h.rx } else { &mut h.tx };
    q.write_descs(&h.mem, q.desc_table, 0, &table);
    for _ in 0..n {
        let head = r.below(u64::from(QUEUE_SIZE)) as u16;
        q.publish(&h.mem, head);
    }
}

#[test]
fn random_descriptor_chains_on_both_queues_do_not_hurt_the_host() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        setup_host(&tap, &GUEST_MAC);
        let host = PacketSocket::new(&tap, false);
        // Indirect tables read from the buffer area decode as descriptors outside memory.
        h.mem
            .write_slice(
                &vec![0xff; (MEM_SIZE - BUFFERS) as usize],
                GuestAddress(BUFFERS),
            )
            .unwrap();
        let mut r = Rng(0x5eed_1234_abcd_0001);
        let arp = arp_request(&GUEST_MAC, GUEST_IP, HOST_IP);

        // Transmit: every chain popped is returned, whatever it holds.
        for _ in 0..50 {
            random_round(&mut h, &mut r, false, 200);
            h.kick_tx();
            h.tx.wait_used(&h.mem, 200, T);
        }
        assert!(h.counter("errors") > 0);

        // Receive: random chains are taken while packets arrive; after each round a transmit
        // proves the worker is alive and not stuck. Fresh queues each round, as a driver
        // would after a reset.
        for round in 0..50u8 {
            h.activate(0);
            random_round(&mut h, &mut r, true, 200);
            h.kick_rx();
            for i in 0..4 {
                let len = 60 + r.below(1400) as usize;
                let mut f = eth(&GUEST_MAC, &[2, 0, 0, 0, 0, 1], ETH_P_TEST);
                f.resize(len, round ^ i);
                host.send(&f);
            }
            h.send(&arp);
        }

        // And a well-behaved driver still gets its packets.
        h.activate(0);
        h.post_rx(64, 2048);
        let mut marker = eth(&GUEST_MAC, &[2, 0, 0, 0, 0, 1], ETH_P_TEST);
        marker.extend_from_slice(b"the end of the fuzzing");
        host.send(&marker);
        let deadline = std::time::Instant::now() + T;
        loop {
            assert!(
                std::time::Instant::now() < deadline,
                "the marker never arrived"
            );
            if h.recv(T).frame == marker {
                break;
            }
        }
    });
}
