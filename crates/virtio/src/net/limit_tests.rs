//! Rate limits hold on real traffic, in both directions, without losing packets.

use super::harness::*;
use super::host::*;
use super::VNET_HDR_LEN;
use std::time::{Duration, Instant};

/// Asserts `took` is what a limiter of `rate` units per second, starting with a tenth of a
/// second's worth (its bucket), needs for `total` units: within 10%.
fn assert_rate(took: Duration, total: f64, rate: f64) {
    let expect = (total - rate / 10.0) / rate;
    let s = took.as_secs_f64();
    eprintln!("rate limit: took {s:.3} s, expected {expect:.3} s");
    assert!(
        (expect * 0.9..=expect * 1.1).contains(&s),
        "took {s:.3} s, expected {expect:.3} s"
    );
}

#[test]
fn a_pps_limit_holds_on_transmit() {
    in_netns(|| {
        let tap = tap_name();
        let mut cfg = config(&tap);
        cfg.pps = Some(50);
        let mut h = Harness::new(cfg, 0);
        let arp = arp_request(&GUEST_MAC, GUEST_IP, HOST_IP);
        for _ in 0..100 {
            h.queue_tx(&[0; VNET_HDR_LEN], &arp);
        }
        let start = Instant::now();
        h.kick_tx();
        h.tx.wait_used(&h.mem, 100, Duration::from_secs(10));
        assert_rate(start.elapsed(), 100.0, 50.0);
        assert_eq!(h.counter("tx_packets"), 100);
        assert!(h.counter("throttled") > 0);
    });
}

#[test]
fn a_bps_limit_holds_on_transmit() {
    in_netns(|| {
        let tap = tap_name();
        let mut cfg = config(&tap);
        cfg.bps = Some(25_000);
        let mut h = Harness::new(cfg, 0);
        let mut frame = eth(&[2, 0, 0, 0, 0, 9], &GUEST_MAC, ETH_P_TEST);
        frame.resize(1000, 0x33);
        for _ in 0..50 {
            h.queue_tx(&[0; VNET_HDR_LEN], &frame);
        }
        let start = Instant::now();
        h.kick_tx();
        h.tx.wait_used(&h.mem, 50, Duration::from_secs(10));
        // Bytes counted are the frames' (the header is not traffic).
        assert_rate(start.elapsed(), 50_000.0, 25_000.0);
        assert_eq!(h.counter("tx_bytes"), 50_000);
    });
}

#[test]
fn a_pps_limit_holds_on_receive_and_loses_nothing() {
    in_netns(|| {
        let tap = tap_name();
        let mut cfg = config(&tap);
        cfg.pps = Some(50);
        let mut h = Harness::new(cfg, 0);
        let host = PacketSocket::new(&tap, false);
        h.post_rx(128, 2048);
        let start = Instant::now();
        for i in 0..100u8 {
            let mut f = eth(&GUEST_MAC, &[2, 0, 0, 0, 0, 1], ETH_P_TEST);
            f.resize(100, i);
            host.send(&f);
        }
        for i in 0..100u8 {
            let got = h.recv(Duration::from_secs(10));
            assert_eq!(got.frame[14..], [i; 86], "frame {i}");
        }
        assert_rate(start.elapsed(), 100.0, 50.0);
        assert_eq!(h.counter("rx_dropped"), 0);
        assert!(h.counter("throttled") > 0);
    });
}
