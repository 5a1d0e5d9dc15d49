//! Rate limiting a real device: the throughput over a few seconds is the configured one.

use super::exec::S_OK;
use super::harness::*;
use super::*;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_FLUSH as FLUSH, VIRTIO_BLK_T_IN as IN};

#[test]
fn bandwidth_stays_within_10_percent_of_bps() {
    const BPS: u64 = 4 << 20;
    const REQ: u32 = 128 << 10;
    const COUNT: u16 = 64; // 8 MiB: about 2 s at 4 MiB/s
    let img = TempImage::new("bps", &vec![0x11; (REQ as usize) * 4]);
    let mut h = Harness::new(BlockConfig {
        bps: Some(BPS),
        ..config(&img.0)
    });
    let mut statuses = Vec::new();
    for i in 0..COUNT {
        let header = h.header(IN, u64::from(i % 4) * u64::from(REQ) / 512);
        let data = h.alloc(u64::from(REQ));
        let status = h.put(&[0xff]);
        h.add_chain(&[
            desc(header, 16, 0),
            desc(data, REQ, WRITE),
            desc(status, 1, WRITE),
        ]);
        statuses.push(status);
    }
    let start = Instant::now();
    h.kick();
    let used = h.wait_used(COUNT);
    let elapsed = start.elapsed().as_secs_f64();
    assert!(used.iter().all(|&(_, len)| len == REQ + 1));
    assert!(statuses.iter().all(|&s| h.get(s, 1) == [S_OK]));

    let bytes = f64::from(REQ) * f64::from(COUNT);
    let rate = bytes / elapsed;
    let ratio = rate / BPS as f64;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "{rate:.0} B/s over {elapsed:.2} s for {BPS} B/s"
    );
    assert!(h.counter("throttled") > 0);
    assert_eq!(h.counter("read_bytes"), bytes as u64);
}

#[test]
fn iops_limits_operations() {
    const IOPS: u64 = 100;
    let img = TempImage::new("iops", &[0; 4096]);
    let mut h = Harness::new(BlockConfig {
        iops: Some(IOPS),
        ..config(&img.0)
    });
    // The bucket holds 10 operations; 40 more take 0.4 s.
    for _ in 0..50 {
        let header = h.header(FLUSH, 0);
        let status = h.put(&[0xff]);
        h.add_chain(&[desc(header, 16, 0), desc(status, 1, WRITE)]);
    }
    let start = Instant::now();
    h.kick();
    h.wait_used(50);
    let elapsed = start.elapsed();
    assert!(elapsed >= Duration::from_millis(380), "{elapsed:?}");
    assert!(elapsed < Duration::from_millis(1500), "{elapsed:?}");
    assert_eq!(h.counter("flush_ops"), 50);
}

#[test]
fn a_throttled_device_still_resets_promptly() {
    let img = TempImage::new("iops-reset", &[0; 4096]);
    let mut h = Harness::new(BlockConfig {
        iops: Some(1),
        ..config(&img.0)
    });
    for _ in 0..3 {
        let header = h.header(FLUSH, 0);
        let status = h.put(&[0xff]);
        h.add_chain(&[desc(header, 16, 0), desc(status, 1, WRITE)]);
    }
    h.kick();
    h.wait_used(1);
    let start = Instant::now();
    h.block.reset();
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(h.used_idx(), 1);
}
