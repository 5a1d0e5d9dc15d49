//! A guest that breaks the rules: malformed packets, packets for connections that do not
//! exist, random descriptor chains, useless buffers, floods; and resets. None may panic or
//! wedge the device, and the counters must say what happened.

use super::harness::*;
use super::packet::*;
use super::{Vsock, VsockConfig};
use crate::VirtioDevice;
use std::time::Duration;

/// A small deterministic generator (xorshift64*), so failures reproduce.
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

#[test]
fn malformed_packets_are_dropped_and_counted() {
    let mut g = Guest::new();
    let ok = g.hdr(OP_REQUEST, 1, 5000);
    let with = |f: &dyn Fn(&mut Header)| {
        let mut h = ok;
        f(&mut h);
        h.to_bytes()
    };
    let cases: Vec<(Vec<u8>, Vec<u8>)> = vec![
        // Shorter than a header.
        (ok.to_bytes()[..20].to_vec(), vec![]),
        // More payload claimed than the chain holds.
        (
            with(&|h| (h.op, h.len) = (OP_RW, 100)).to_vec(),
            vec![0; 10],
        ),
        // Payload beyond 64 KiB.
        (
            with(&|h| (h.op, h.len) = (OP_RW, 0x1_0000 + 1)).to_vec(),
            vec![0; 0x1_0000],
        ),
        // Not from the guest's CID.
        (with(&|h| h.src_cid = 4).to_vec(), vec![]),
        // SEQPACKET was not offered.
        (with(&|h| h.kind = 2).to_vec(), vec![]),
        // Unknown operations.
        (with(&|h| h.op = 0).to_vec(), vec![]),
        (with(&|h| h.op = 99).to_vec(), vec![]),
        // A control packet with payload.
        (with(&|h| h.len = 5).to_vec(), vec![0; 5]),
    ];
    let n = cases.len() as u64;
    for (hdr, data) in &cases {
        g.post_raw(hdr, data);
    }
    // A header outside guest memory, and one in a device-writable buffer only.
    g.tx.write_desc(&g.mem, 250, 0x7000_0000_0000, HDR_LEN as u32, 0, 0);
    g.tx.publish(&g.mem, 250);
    g.tx.write_desc(&g.mem, 251, 0x10_0000, HDR_LEN as u32, WRITE, 0);
    g.tx.publish(&g.mem, 251);
    g.tx.kick();
    g.tx.wait_used(&g.mem, cases.len() + 2);
    g.wait_counter("bad_packets", n + 2);
    g.expect_quiet(Duration::from_millis(50));
    assert_eq!(g.counter("rst_sent"), 0);
    // The device carries on.
    g.send(ok, &[]);
    g.expect(OP_RST);
}

#[test]
fn packets_for_unknown_connections_get_rst() {
    let mut g = Guest::new();
    for op in [
        OP_RW,
        OP_SHUTDOWN,
        OP_CREDIT_UPDATE,
        OP_CREDIT_REQUEST,
        OP_RESPONSE,
    ] {
        g.send(g.hdr(op, 123, 7777), if op == OP_RW { b"abc" } else { b"" });
        let rst = g.expect(OP_RST);
        assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (7777, 123));
    }
    // A RST is never answered.
    g.send(g.hdr(OP_RST, 123, 7777), &[]);
    g.expect_quiet(Duration::from_millis(50));
    assert_eq!(g.counter("rst_sent"), 5);
    assert_eq!(g.counter("bad_packets"), 0);
    assert_eq!(g.counter("tx_bytes"), 0);
}

#[test]
fn queued_rsts_are_bounded_while_the_guest_posts_no_buffers() {
    let dir = TempDir::new();
    let uds = dir.path("v.sock");
    let dev = Vsock::new(VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: uds.clone(),
    })
    .unwrap();
    let mut g = Guest::activate(dev, dir, uds, false);
    for batch in 0..16 {
        let pkts: Vec<_> = (0..TX_SLOTS)
            .map(|i| (g.hdr(OP_RW, 1, u32::from(batch * TX_SLOTS + i)), &b"x"[..]))
            .collect();
        g.send_all(&pkts);
    }
    g.post_held_rx();
    let mut rsts = 0;
    while let Some(p) = g.try_recv(Duration::from_millis(200)) {
        assert_eq!(p.hdr.op, OP_RST);
        rsts += 1;
    }
    assert_eq!(rsts, super::muxer::MAX_QUEUED_RSTS);
    assert_eq!(g.counter("rst_sent"), rsts as u64);
}

#[test]
fn useless_receive_buffers_are_returned_and_counted() {
    let dir = TempDir::new();
    let uds = dir.path("v.sock");
    let dev = Vsock::new(VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: uds.clone(),
    })
    .unwrap();
    let mut g = Guest::activate(dev, dir, uds, false);
    let bad = [
        (0x80_0000, 10, WRITE),                // too small for a header
        (0x80_0000, HDR_LEN as u32, WRITE),    // a header and no room for data
        (0x80_0000, RX_BUF_LEN, 0),            // not writable
        (0x7000_0000_0000, RX_BUF_LEN, WRITE), // outside guest memory
    ];
    for (i, &(addr, len, flags)) in bad.iter().enumerate() {
        let d = 100 + i as u16;
        g.rx.write_desc(&g.mem, d, addr, len, flags, 0);
        g.rx.publish(&g.mem, d);
    }
    // Something to deliver: a refused connection's RST.
    g.send(g.hdr(OP_REQUEST, 9, 9), &[]);
    g.rx.kick();
    let used = g.rx.wait_used(&g.mem, bad.len());
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    g.wait_counter("bad_packets", bad.len() as u64);
    g.post_held_rx();
    g.expect(OP_RST);
}

/// 5000 chains of random descriptors, then 5000 well-laid-out packets whose random headers
/// claim another source CID: every chain comes back, nothing panics, the counts add up, and
/// the device still serves a connection.
#[test]
fn ten_thousand_random_chains() {
    let mut g = Guest::new();
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let flag_choices = [0, NEXT, WRITE, NEXT | WRITE, 4, 4 | NEXT];
    for _ in 0..5000 / 125 {
        for d in 0..QSIZE {
            let addr = match rng.below(4) {
                0 => rng.below(MEM_SIZE),
                1 => TX_BASE + rng.below(0x10_0000),
                2 => rng.next(),
                _ => MEM_SIZE - rng.below(64),
            };
            let len = match rng.below(4) {
                0 => rng.below(64) as u32,
                1 => rng.below(0x2_0000) as u32,
                2 => rng.next() as u32,
                _ => HDR_LEN as u32,
            };
            let flags = flag_choices[rng.below(flag_choices.len() as u64) as usize];
            g.tx.write_desc(&g.mem, d, addr, len, flags, rng.below(300) as u16);
        }
        for _ in 0..125 {
            g.tx.publish(&g.mem, rng.below(u64::from(QSIZE)) as u16);
        }
        g.tx.kick();
        g.tx.wait_used(&g.mem, 125);
    }
    let bad_random = g.counter("bad_packets");
    assert!(bad_random <= 5000);

    for _ in 0..5000 / 125 {
        let pkts: Vec<[u8; HDR_LEN]> = (0..125)
            .map(|_| {
                let mut h = [0u8; HDR_LEN];
                h.iter_mut().for_each(|b| *b = rng.next() as u8);
                let mut hdr = Header::from_bytes(&h);
                if hdr.src_cid == GUEST_CID {
                    hdr.src_cid = GUEST_CID + 1;
                }
                hdr.to_bytes()
            })
            .collect();
        for p in &pkts {
            g.post_raw(p, b"payload");
        }
        g.tx.kick();
        g.tx.wait_used(&g.mem, 125);
    }
    g.wait_counter("bad_packets", bad_random + 5000);

    let host = host_connect(&g.uds, 31);
    // Random chains may have produced RSTs for made-up connections: skip them.
    let req = loop {
        let p = g.recv();
        if p.hdr.op == OP_REQUEST {
            break p;
        }
        assert_eq!(p.hdr.op, OP_RST);
    };
    g.send(g.hdr(OP_RESPONSE, 31, req.hdr.src_port), &[]);
    assert_eq!(read_line(&host), format!("OK {}\n", req.hdr.src_port));
}

#[test]
fn reset_drops_every_connection_and_the_device_comes_back() {
    let mut g = Guest::new();
    let a = host_connect(&g.uds, 10);
    let pa = g.accept(10);
    assert_eq!(read_line(&a), format!("OK {pa}\n"));
    let l = std::os::unix::net::UnixListener::bind(super::host::port_path(&g.uds, 11)).unwrap();
    g.send(g.hdr(OP_REQUEST, 500, 11), &[]);
    g.expect(OP_RESPONSE);
    let (b, _) = l.accept().unwrap();
    b.set_read_timeout(Some(TIMEOUT)).unwrap();
    // A host process still typing its CONNECT line.
    let c = std::os::unix::net::UnixStream::connect(&g.uds).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    std::io::Write::write_all(&mut &c, b"CONN").unwrap();
    g.wait_counter("connections_opened", 2);

    g.dev.reset();
    expect_eof(&a);
    expect_eof(&b);
    assert!(g.dev.counters().contains(&("connections_closed", 2)));

    // The socket stays; a new driver gets new connections.
    let Guest { dev, dir, uds, .. } = g;
    let mut g = Guest::activate(dev, dir, uds, true);
    // The half-typed command died with the old driver, or (if the device had not accepted it
    // yet) times out under the new one.
    expect_closed(&c);
    let d = host_connect(&g.uds, 12);
    let pd = g.accept(12);
    assert_eq!(read_line(&d), format!("OK {pd}\n"));
}

#[test]
fn transport_reset_tells_the_driver_and_drops_connections() {
    let mut g = Guest::new();
    let a = host_connect(&g.uds, 20);
    let pa = g.accept(20);
    assert_eq!(read_line(&a), format!("OK {pa}\n"));
    g.dev.transport_reset();
    expect_eof(&a);
    let deadline = std::time::Instant::now() + TIMEOUT;
    while g.events.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no event");
        g.poll();
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(g.events, vec![(4, EVENT_TRANSPORT_RESET)]);
    g.wait_counter("connections_closed", 1);
    // The connection is gone for the device too.
    g.send(g.hdr(OP_RW, 20, pa), b"late");
    g.expect(OP_RST);
}

#[test]
fn construction_errors_say_what_to_do() {
    let dir = TempDir::new();
    let path = dir.path("v.sock");
    let new = |cid, path: &std::path::Path| {
        Vsock::new(VsockConfig {
            guest_cid: cid,
            uds_path: path.to_path_buf(),
        })
    };
    for cid in [0, 1, 2, u64::from(u32::MAX), 1 << 32] {
        let e = new(cid, &path).err().unwrap();
        assert!(e.to_string().contains("use 3 or more"), "{e}");
    }
    let long = dir.path(&"x".repeat(100));
    assert!(matches!(
        new(3, &long),
        Err(super::VsockError::PathTooLong { .. })
    ));

    let live = new(3, &path).unwrap();
    assert_eq!(live.uds_path(), path);
    let e = new(4, &path).err().unwrap();
    assert!(matches!(e, super::VsockError::InUse { .. }), "{e}");
    drop(live);
    assert!(!path.exists(), "the socket outlived its device");

    std::fs::write(&path, b"leftover").unwrap();
    let e = new(3, &path).err().unwrap();
    assert!(matches!(e, super::VsockError::Exists { .. }), "{e}");
    assert!(e.to_string().contains("remove it"), "{e}");
    std::fs::remove_file(&path).unwrap();

    // A socket file someone replaced is theirs: dropping the device leaves it.
    let dev = new(3, &path).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, b"theirs").unwrap();
    drop(dev);
    assert_eq!(std::fs::read(&path).unwrap(), b"theirs");
}

#[test]
fn device_identity_and_config_space() {
    let dir = TempDir::new();
    let dev = Vsock::new(VsockConfig {
        guest_cid: 0x1_2345,
        uds_path: dir.path("v.sock"),
    })
    .unwrap();
    assert_eq!(dev.device_type(), 19);
    assert_eq!(dev.queue_max_sizes().len(), 3);
    let f = dev.features();
    assert_ne!(f & crate::features::VERSION_1, 0);
    assert_ne!(f & crate::features::RING_EVENT_IDX, 0);
    // No SEQPACKET (bit 1).
    assert_eq!(f & 0b10, 0);
    let mut cfg = [0xffu8; 12];
    dev.read_config(0, &mut cfg);
    assert_eq!(cfg, [0x45, 0x23, 0x01, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    let mut hi = [0xffu8; 4];
    dev.read_config(4, &mut hi);
    assert_eq!(hi, [0; 4]);
    // Without a driver there is nothing to reset.
    dev.transport_reset();
}

#[test]
fn a_bogus_available_index_does_not_wedge_the_worker() {
    let mut g = Guest::new();
    // Receive ring: claims a thousand buffers it does not have, while a RST waits for one.
    g.rx.corrupt_avail_idx(&g.mem, 1000);
    g.send(g.hdr(OP_REQUEST, 1, 2), &[]);
    g.rx.kick();
    // Transmit ring: the same.
    g.tx.corrupt_avail_idx(&g.mem, 1000);
    g.tx.kick();
    std::thread::sleep(Duration::from_millis(50));
    // A worker spinning on the rings would never see the stop event.
    let (done, wait) = std::sync::mpsc::channel();
    let mut dev = g.dev;
    std::thread::spawn(move || {
        dev.reset();
        done.send(()).unwrap();
    });
    wait.recv_timeout(Duration::from_secs(5))
        .expect("the worker did not stop");
}
