//! Receive, end to end through a real tap: frames the host sends land in the posted buffers
//! with a proper header, spanning buffers with MRG_RXBUF, and wait in the tap (without the
//! device spinning) while there are no buffers.

use super::harness::*;
use super::host::*;
use super::VNET_HDR_LEN;
use std::net::UdpSocket;
use std::time::Duration;
use virtio_bindings::virtio_net::*;

const T: Duration = Duration::from_secs(5);

/// A test frame for the guest: `len` bytes in all, numbered by `tag`.
fn test_frame(len: usize, tag: u8) -> Vec<u8> {
    let mut f = eth(&GUEST_MAC, &[0x02, 0, 0, 0, 0, 1], ETH_P_TEST);
    f.extend((0..len - 14).map(|i| (i as u8).wrapping_mul(7) ^ tag));
    f
}

#[test]
fn a_large_frame_spans_small_buffers_with_mrg_rxbuf() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        let host = PacketSocket::new(&tap, false);
        h.post_rx(16, 256);
        let frame = test_frame(1400, 1);
        host.send(&frame);

        let got = h.recv(T);
        assert_eq!(got.frame, frame);
        // 12 + 1400 bytes in 256-byte buffers: five full and 132 bytes in a sixth.
        assert_eq!(got.num_buffers(), 6);
        let lens: Vec<u32> = got.chains.iter().map(|c| c.1).collect();
        assert_eq!(lens, [256, 256, 256, 256, 256, 132]);
        assert_eq!(&got.hdr[..10], &[0; 10]);
        // Every byte written was reported, chain by chain.
        assert_eq!(h.writes.0.lock().unwrap().len(), 6);
        for &(head, len) in &got.chains {
            assert!(h.writes.covers(h.rx_buf(head), u64::from(len)));
        }
        assert_eq!(h.counter("rx_packets"), 1);
        assert_eq!(h.counter("rx_bytes"), 1400);
        assert_eq!(h.counter("rx_dropped"), 0);
    });
}

#[test]
fn a_frame_waits_for_enough_buffers_instead_of_being_dropped() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        let host = PacketSocket::new(&tap, false);
        // Room for 2 × 256 bytes: not enough for 1412.
        h.post_rx(2, 256);
        host.send(&test_frame(1400, 2));
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(h.rx.used_idx(&h.mem), 0);
        h.post_rx(4, 256);
        let got = h.recv(T);
        assert_eq!(got.frame, test_frame(1400, 2));
        assert_eq!(got.num_buffers(), 6);
        assert_eq!(h.counter("rx_dropped"), 0);
    });
}

#[test]
fn without_mrg_rxbuf_a_frame_too_big_for_a_buffer_is_dropped() {
    in_netns(|| {
        let tap = tap_name();
        let no_mrg = 1 << VIRTIO_NET_F_MRG_RXBUF;
        let mut h = Harness::new(config(&tap), no_mrg);
        let host = PacketSocket::new(&tap, false);
        h.post_rx(2, 1024);
        host.send(&test_frame(1400, 3));
        host.send(&test_frame(100, 4));
        let got = h.recv(T);
        assert_eq!(got.frame, test_frame(100, 4));
        assert_eq!(got.num_buffers(), 1, "num_buffers is 1 without MRG_RXBUF");
        assert_eq!(got.chains[0].1 as usize, VNET_HDR_LEN + 100);
        assert_eq!(h.counter("rx_dropped"), 1);
        assert_eq!(h.counter("rx_packets"), 1);
    });
}

/// CPU time (clock ticks) of this test's device worker: the `vireo-net` thread in the calling
/// thread's network namespace.
fn worker_cpu_ticks() -> u64 {
    let ns = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
    let mut found = None;
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.trim() != "vireo-net"
            || std::fs::read_link(dir.join("ns/net")).ok() != Some(ns.clone())
        {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the command's closing parenthesis; utime and stime are 14 and 15.
        let rest = &stat[stat.rfind(')').unwrap() + 2..];
        let f: Vec<u64> = rest
            .split(' ')
            .skip(11)
            .take(2)
            .map(|x| x.parse().unwrap())
            .collect();
        assert!(found.is_none(), "two workers in one namespace");
        found = Some(f[0] + f[1]);
    }
    found.expect("no worker thread found")
}

#[test]
fn packets_wait_in_the_tap_without_spinning_until_buffers_are_posted() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        let host = PacketSocket::new(&tap, false);
        for tag in 0..5 {
            host.send(&test_frame(200, tag));
        }
        let before = worker_cpu_ticks();
        std::thread::sleep(Duration::from_millis(500));
        let spent = worker_cpu_ticks() - before;
        assert!(
            spent <= 5,
            "the worker used {spent} ticks waiting for buffers"
        );
        assert_eq!(h.counter("rx_packets"), 0);

        h.post_rx(5, 2048);
        for tag in 0..5 {
            assert_eq!(h.recv(T).frame, test_frame(200, tag), "frame {tag}");
        }
        assert_eq!(h.counter("rx_dropped"), 0);
        assert_eq!(h.counter("rx_packets"), 5);
    });
}

fn udp_from_host(h: &mut Harness) -> Vec<u8> {
    let sock = UdpSocket::bind("10.123.0.1:7001").unwrap();
    sock.send_to(b"to the guest", "10.123.0.2:7000").unwrap();
    let got = h.recv(T);
    assert_eq!(ethertype(&got.frame), ETH_P_IP);
    assert_eq!(&got.frame[got.frame.len() - 12..], b"to the guest");
    [got.hdr, got.frame].concat()
}

#[test]
fn host_checksums_are_left_to_the_guest_only_if_it_accepted_guest_csum() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        setup_host(&tap, &GUEST_MAC);
        h.post_rx(4, 2048);
        let p = udp_from_host(&mut h);
        // Partial: the guest finishes the UDP checksum at 34 + 6.
        assert_eq!(p[0], VIRTIO_NET_HDR_F_NEEDS_CSUM as u8);
        assert_eq!(u16::from_le_bytes([p[6], p[7]]), 34);
        assert_eq!(u16::from_le_bytes([p[8], p[9]]), 6);

        // A driver without GUEST_CSUM (and so without guest TSO) gets complete checksums.
        let no_csum = [
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
        ]
        .iter()
        .fold(0u64, |a, &b| a | 1 << b);
        h.activate(no_csum);
        h.post_rx(4, 2048);
        let p = udp_from_host(&mut h);
        assert_eq!(
            &p[..10],
            &[0; 10],
            "offload fields set for a driver that refused them"
        );
        let udp = &p[VNET_HDR_LEN + 34..];
        let sum = inet_sum(udp, pseudo_sum(HOST_IP, GUEST_IP, 17, udp.len()));
        assert_eq!(fold(sum), 0xffff, "the UDP checksum is not complete");
    });
}
