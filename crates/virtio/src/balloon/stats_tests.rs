//! Memory statistics: parsing, and the stats queue driven by the timer.

use super::harness::*;
use super::stats::{MAX_STATS, STAT_LEN};
use super::*;
use crate::features::VERSION_1;
use std::time::SystemTime;

fn encode(stats: &[(u16, u64)]) -> Vec<u8> {
    stats
        .iter()
        .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
        .collect()
}

#[test]
fn a_well_formed_buffer_is_parsed_by_tag() {
    let now = SystemTime::now();
    let buf = encode(&[
        (0, 1),
        (4, 100 << 20),
        (5, 512 << 20),
        (6, 300 << 20),
        (9, 3),
    ]);
    let (s, clean) = BalloonStats::parse(&buf, now);
    assert!(clean);
    assert_eq!(s.swap_in, Some(1));
    assert_eq!(s.free_memory, Some(100 << 20));
    assert_eq!(s.total_memory, Some(512 << 20));
    assert_eq!(s.available_memory, Some(300 << 20));
    assert_eq!(s.hugetlb_failures, Some(3));
    assert_eq!(s.swap_out, None);
    assert_eq!(s.updated, Some(now));
    assert_eq!(
        s.named(),
        vec![
            ("swap_in", 1),
            ("free_memory", 100 << 20),
            ("total_memory", 512 << 20),
            ("available_memory", 300 << 20),
            ("hugetlb_failures", 3),
        ]
    );
}

#[test]
fn unknown_and_repeated_tags_and_partial_entries() {
    let mut buf = encode(&[(3, 7), (999, 1), (3, 8), (15, 2)]);
    let (s, clean) = BalloonStats::parse(&buf, SystemTime::now());
    assert!(clean);
    assert_eq!(s.minor_faults, Some(8));
    assert_eq!(s.direct_reclaims, Some(2));
    assert_eq!(s.named().len(), 2);

    // A trailing partial entry is dropped and flagged.
    buf.extend_from_slice(&[4, 0, 1]);
    let (s, clean) = BalloonStats::parse(&buf, SystemTime::now());
    assert!(!clean);
    assert_eq!(s.minor_faults, Some(8));
    assert_eq!(s.free_memory, None);

    let (s, clean) = BalloonStats::parse(&[], SystemTime::now());
    assert!(clean);
    assert!(s.named().is_empty());
}

#[test]
fn an_overlong_buffer_is_read_up_to_the_bound() {
    // MAX_STATS entries setting swap_in to their index, then one more.
    let entries: Vec<(u16, u64)> = (0..=MAX_STATS as u64).map(|i| (0, i)).collect();
    let buf = encode(&entries);
    assert_eq!(buf.len(), (MAX_STATS + 1) * STAT_LEN);
    let (s, clean) = BalloonStats::parse(&buf, SystemTime::now());
    assert!(!clean);
    assert_eq!(s.swap_in, Some(MAX_STATS as u64 - 1));
}

fn stats_device(ram: &Ram, every_ms: u64) -> (Balloon, BalloonControl) {
    let c = BalloonConfig {
        stats_interval: Some(Duration::from_millis(every_ms)),
        ..Default::default()
    };
    Balloon::new(c, &ram.mem).unwrap()
}

#[test]
fn the_timer_asks_again_and_fresh_stats_replace_the_old() {
    let ram = ram();
    let (mut dev, ctl) = stats_device(&ram, 20);
    let buf = 3 * MIB;
    let len = ram.write_stats(buf, &[(4, 1000), (5, 4000)]);
    let mut drv = activate(&mut dev, &ram, VERSION_1 | STATS_VQ, 3, 0);
    // The driver primes the queue at probe with its first stats.
    drv.q(2).post(&[(buf, len, false)]);
    wait_for("the first stats", || ctl.status().stats.is_some());
    let first = ctl.status().stats.unwrap();
    assert_eq!(first.free_memory, Some(1000));
    assert_eq!(first.total_memory, Some(4000));

    // The timer gives the buffer back: that is the request for fresh stats.
    drv.q(2).wait_all_used();
    assert_eq!(drv.q(2).used_len(0), 0);
    let len = ram.write_stats(buf, &[(4, 2000), (5, 4000), (6, 1500)]);
    drv.q(2).post(&[(buf, len, false)]);
    wait_for("fresh stats", || {
        ctl.status().stats.and_then(|s| s.free_memory) == Some(2000)
    });
    let second = ctl.status().stats.unwrap();
    assert_eq!(second.available_memory, Some(1500));
    assert!(second.updated >= first.updated);
    // And it is asked for again.
    drv.q(2).wait_all_used();
    dev.reset();
    assert_eq!(counter(&dev, "stats_updates"), 2);
    assert_eq!(counter(&dev, "errors"), 0);
    assert!(drv.rec.queues.lock().unwrap().contains(&2));
}

#[test]
fn the_buffer_is_held_until_the_timer_fires() {
    let ram = ram();
    let (mut dev, ctl) = stats_device(&ram, 60_000);
    let len = ram.write_stats(3 * MIB, &[(2, 5)]);
    let mut drv = activate(&mut dev, &ram, VERSION_1 | STATS_VQ, 3, 0);
    drv.q(2).post(&[(3 * MIB, len, false)]);
    wait_for("the stats", || ctl.status().stats.is_some());
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(drv.q(2).used(), 0);
    // A second buffer (Linux never posts one) gets the first one back.
    drv.q(2).post(&[(3 * MIB, len, false)]);
    wait_for("the first buffer back", || drv.q(2).used() == 1);
    dev.reset();
    assert_eq!(ctl.status().stats.unwrap().major_faults, Some(5));
    assert_eq!(counter(&dev, "stats_updates"), 2);
}

#[test]
fn hostile_stats_buffers_are_bounded_and_counted() {
    let ram = ram();
    let (mut dev, ctl) = stats_device(&ram, 10);
    let mut drv = activate(&mut dev, &ram, VERSION_1 | STATS_VQ, 3, 0);
    // Truncated: two entries and half of a third.
    let len = ram.write_stats(3 * MIB, &[(4, 11), (5, 22), (6, 33)]);
    drv.q(2).post(&[(3 * MIB, len - 5, false)]);
    wait_for("the truncated stats", || ctl.status().stats.is_some());
    let s = ctl.status().stats.unwrap();
    assert_eq!((s.free_memory, s.total_memory), (Some(11), Some(22)));
    assert_eq!(s.available_memory, None);
    drv.q(2).wait_all_used();

    // Huge: a megabyte of entries; only the first MAX_STATS count.
    ram.fill(2 * MIB, MIB, 0);
    drv.q(2).post(&[(2 * MIB, MIB as u32, false)]);
    wait_for("the huge stats", || counter(&dev, "stats_updates") == 2);
    assert_eq!(ctl.status().stats.unwrap().swap_in, Some(0));
    drv.q(2).wait_all_used();

    // Outside guest RAM: no stats, still returned when the timer fires.
    drv.q(2).post(&[(HOLE, 100, false)]);
    drv.q(2).wait_all_used();
    dev.reset();
    assert_eq!(counter(&dev, "stats_updates"), 2);
    assert_eq!(counter(&dev, "errors"), 3);
}
