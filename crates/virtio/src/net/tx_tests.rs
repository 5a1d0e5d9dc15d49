//! Transmit, end to end through a real tap: what the guest sends is what the host sees,
//! offload headers included, and the host's answers come back on the receive queue.

use super::harness::*;
use super::host::*;
use super::VNET_HDR_LEN;
use crate::VirtioDevice;
use std::net::UdpSocket;
use std::time::Duration;
use virtio_bindings::virtio_net::*;

const T: Duration = Duration::from_secs(5);

fn is_arp_reply(f: &[u8]) -> bool {
    f.len() >= 42 && ethertype(f) == ETH_P_ARP && f[20..22] == [0, 2]
}

#[test]
fn an_arp_request_reaches_the_host_and_its_reply_comes_back() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        setup_host(&tap, &GUEST_MAC);
        let seen = PacketSocket::new(&tap, false);
        h.post_rx(8, 2048);

        let req = arp_request(&GUEST_MAC, GUEST_IP, HOST_IP);
        let (_, used_len) = h.send(&req);
        assert_eq!(used_len, 0, "the device wrote into a transmit chain");
        let got = seen.recv_matching(T, |f| f == req.as_slice());
        assert!(got.is_some(), "the host did not see the frame");

        let reply = h.recv(T);
        assert!(is_arp_reply(&reply.frame), "{:02x?}", reply.frame);
        assert_eq!(&reply.frame[..6], &GUEST_MAC);
        assert_eq!(&reply.frame[28..32], &HOST_IP, "sender IP");
        assert_eq!(&reply.frame[6..12], &if_mac(&tap), "sender MAC");
        assert_eq!(
            &reply.hdr[..10],
            &[0; 10],
            "no offload flags on an ARP reply"
        );
        assert_eq!(reply.num_buffers(), 1);
        let (_, len) = reply.chains[0];
        assert_eq!(len as usize, VNET_HDR_LEN + reply.frame.len());

        assert_eq!(h.counter("tx_packets"), 1);
        assert_eq!(h.counter("tx_bytes"), req.len() as u64);
        assert_eq!(h.counter("rx_packets"), 1);
        assert_eq!(h.counter("rx_bytes"), reply.frame.len() as u64);
        assert_eq!(h.counter("errors"), 0);
        assert!(h.irq.queue[0].load(std::sync::atomic::Ordering::SeqCst) >= 1);
        assert!(h.irq.queue[1].load(std::sync::atomic::Ordering::SeqCst) >= 1);
        // Only the receive buffer was reported written, and exactly the bytes used.
        let writes = h.writes.0.lock().unwrap().clone();
        assert_eq!(writes.len(), 1, "{writes:?}");
        assert_eq!(writes[0].1, u64::from(len));
    });
}

/// A virtio-net header asking the host to finish a UDP checksum.
fn csum_hdr(start: u16, offset: u16) -> [u8; VNET_HDR_LEN] {
    let mut hdr = [0u8; VNET_HDR_LEN];
    hdr[0] = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    hdr[6..8].copy_from_slice(&start.to_le_bytes());
    hdr[8..10].copy_from_slice(&offset.to_le_bytes());
    hdr
}

#[test]
fn a_partial_checksum_passes_through_to_the_host_stack() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        setup_host(&tap, &GUEST_MAC);
        let sock = UdpSocket::bind("10.123.0.1:9000").unwrap();
        sock.set_read_timeout(Some(T)).unwrap();
        let seen = PacketSocket::new(&tap, true);

        let frame = guest_udp(&if_mac(&tap), 4000, 9000, b"offloaded checksum", true);
        h.queue_tx(&csum_hdr(34, 6), &frame);
        h.kick_tx();
        h.tx.wait_used(&h.mem, 1, T);

        let mut buf = [0u8; 64];
        let (n, from) = sock.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"offloaded checksum");
        assert_eq!(from.to_string(), "10.123.0.2:4000");
        // The host's view of the frame: the checksum still to be done, where the guest said.
        let got = seen
            .recv_matching(T, |f| f.len() > 10 && f[10..] == frame[..])
            .expect("the host did not see the frame");
        assert_eq!(got[0] & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8, 1);
        assert_eq!(u16::from_le_bytes([got[6], got[7]]), 34);
        assert_eq!(u16::from_le_bytes([got[8], got[9]]), 6);
    });
}

#[test]
fn a_tso_frame_reaches_the_host_unsegmented() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        setup_host(&tap, &GUEST_MAC);
        let seen = PacketSocket::new(&tap, true);

        // 3000 bytes of TCP payload in one frame, to be cut into 1000-byte segments.
        let payload = vec![0x5a; 3000];
        let mut tcp = 4000u16.to_be_bytes().to_vec();
        tcp.extend_from_slice(&9001u16.to_be_bytes());
        tcp.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        let pseudo = pseudo_sum(GUEST_IP, HOST_IP, 6, tcp.len() + payload.len());
        tcp[16..18].copy_from_slice(&fold(pseudo).to_be_bytes());
        let mut frame = eth(&if_mac(&tap), &GUEST_MAC, ETH_P_IP);
        frame.extend(ipv4(GUEST_IP, HOST_IP, 6, tcp.len() + payload.len()));
        frame.extend(&tcp);
        frame.extend(&payload);

        let mut hdr = csum_hdr(34, 16);
        hdr[1] = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
        hdr[2..4].copy_from_slice(&54u16.to_le_bytes()); // hdr_len
        hdr[4..6].copy_from_slice(&1000u16.to_le_bytes()); // gso_size
        h.queue_tx(&hdr, &frame);
        h.kick_tx();
        h.tx.wait_used(&h.mem, 1, T);

        let got = seen
            .recv_matching(T, |f| f.len() > 10 && f[10..] == frame[..])
            .expect("the host did not see the frame whole");
        assert_eq!(got[1], VIRTIO_NET_HDR_GSO_TCPV4 as u8);
        assert_eq!(u16::from_le_bytes([got[4], got[5]]), 1000);
        assert_eq!(h.counter("tx_packets"), 1);
        assert_eq!(h.counter("tx_bytes"), frame.len() as u64);
        assert_eq!(h.counter("errors"), 0);
    });
}

#[test]
fn reset_stops_the_device_and_it_works_again_after_reactivation() {
    in_netns(|| {
        let tap = tap_name();
        let mut h = Harness::new(config(&tap), 0);
        setup_host(&tap, &GUEST_MAC);
        let req = arp_request(&GUEST_MAC, GUEST_IP, HOST_IP);
        h.send(&req);

        h.net.reset();
        h.queue_tx(&[0; VNET_HDR_LEN], &req);
        h.kick_tx();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(h.tx.used_idx(&h.mem), 1, "a reset device served its queue");
        assert_eq!(h.counter("tx_packets"), 1);

        h.activate(0);
        h.post_rx(4, 2048);
        h.send(&req);
        assert!(is_arp_reply(&h.recv(T).frame));
        assert_eq!(h.counter("tx_packets"), 2);
    });
}
