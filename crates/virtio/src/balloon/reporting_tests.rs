//! Free page reporting, at the queue index the negotiated features give it.

use super::harness::*;
use super::*;
use crate::features::VERSION_1;

fn reporting_device(ram: &Ram, stats: bool) -> Balloon {
    let c = BalloonConfig {
        free_page_reporting: true,
        stats_interval: stats.then_some(Duration::from_secs(60)),
        ..Default::default()
    };
    Balloon::new(c, &ram.mem).unwrap().0
}

const BLOCK: u64 = 64 * 1024;

/// Reports two blocks in one chain on queue `index` and checks they were freed.
fn reports_two_blocks(features: u64, queues: usize, index: usize) {
    let ram = ram();
    let mut dev = reporting_device(&ram, features & STATS_VQ != 0);
    let a = DATA;
    let b = REGIONS[1].0 + MIB;
    ram.fill(a, BLOCK, 0x99);
    ram.fill(b, BLOCK, 0x98);
    let mut drv = activate(&mut dev, &ram, features, queues, 0);
    // After building the rings, whose pages count too.
    let before = ram.allocated();
    drv.q(index)
        .post(&[(a, BLOCK as u32, true), (b, BLOCK as u32, true)]);
    drv.q(index).wait_all_used();
    dev.reset();
    // Before reading back, which allocates the pages again.
    assert!(before - ram.allocated().min(before) >= 2 * BLOCK);
    assert!(ram.read(a, BLOCK).iter().all(|&x| x == 0));
    assert!(ram.read(b, BLOCK).iter().all(|&x| x == 0));
    assert_eq!(counter(&dev, "reported_pages"), 2 * BLOCK / PAGE_SIZE);
    assert_eq!(counter(&dev, "errors"), 0);
    let mut writes = drv.rec.writes.lock().unwrap().clone();
    writes.sort();
    assert_eq!(writes, vec![(a, BLOCK), (b, BLOCK)]);
    assert_eq!(*drv.rec.queues.lock().unwrap(), vec![index as u16]);
}

#[test]
fn reporting_is_queue_2_without_stats() {
    reports_two_blocks(VERSION_1 | REPORTING, 3, 2);
}

#[test]
fn reporting_is_queue_3_with_stats() {
    reports_two_blocks(VERSION_1 | STATS_VQ | REPORTING, 4, 3);
}

#[test]
fn an_offered_queue_the_driver_declined_is_not_served() {
    let ram = ram();
    // Both offered; the driver accepts statistics only, yet enables all four queues.
    let mut dev = reporting_device(&ram, true);
    ram.fill(DATA, BLOCK, 0x31);
    let mut drv = activate(&mut dev, &ram, VERSION_1 | STATS_VQ, 4, 0);
    drv.q(3).post(&[(DATA, BLOCK as u32, true)]);
    std::thread::sleep(Duration::from_millis(50));
    dev.reset();
    assert_eq!(drv.q(3).used(), 0);
    assert!(ram.read(DATA, BLOCK).iter().all(|&x| x == 0x31));
    assert_eq!(counter(&dev, "reported_pages"), 0);
}

#[test]
fn hostile_reports_touch_only_guest_ram_the_driver_may_give() {
    let ram = ram();
    let mut dev = reporting_device(&ram, false);
    ram.fill(DATA, 4 * PAGE_SIZE, 0x66);
    let end = REGIONS[0].0 + REGIONS[0].1;
    ram.fill(end - PAGE_SIZE, PAGE_SIZE, 0x67);
    let mut drv = activate(&mut dev, &ram, VERSION_1 | REPORTING, 3, 0);
    // Device-readable: not given away.
    drv.q(2).post(&[(DATA, PAGE_SIZE as u32, false)]);
    // Unaligned: only the whole page inside is dropped.
    drv.q(2)
        .post(&[(DATA + PAGE_SIZE + 1, 2 * PAGE_SIZE as u32, true)]);
    // Running off the end of region 0 into the hole.
    drv.q(2)
        .post(&[(end - PAGE_SIZE, 3 * PAGE_SIZE as u32, true)]);
    // Entirely outside, and as large as a descriptor gets.
    drv.q(2).post(&[(1 << 40, u32::MAX, true)]);
    drv.q(2).wait_all_used();
    dev.reset();
    let page = |i: u64| ram.read(DATA + i * PAGE_SIZE, PAGE_SIZE);
    assert!(page(0).iter().all(|&x| x == 0x66));
    assert!(page(1).iter().all(|&x| x == 0x66));
    assert!(page(2).iter().all(|&x| x == 0));
    assert!(page(3).iter().all(|&x| x == 0x66));
    assert!(ram.read(end - PAGE_SIZE, PAGE_SIZE).iter().all(|&x| x == 0));
    assert_eq!(counter(&dev, "reported_pages"), 2);
    // The readable one, the one running into the hole, the one outside.
    assert_eq!(counter(&dev, "errors"), 3);
}

#[test]
fn a_guest_that_poisons_free_pages_keeps_their_contents() {
    let ram = ram();
    let mut dev = reporting_device(&ram, false);
    ram.fill(DATA, BLOCK, 0xaa);
    // Linux writes its poison value before DRIVER_OK.
    dev.write_config(12, &0xaaaa_aaaau32.to_le_bytes());
    let mut drv = activate(&mut dev, &ram, VERSION_1 | REPORTING | PAGE_POISON, 3, 0);
    drv.q(2).post(&[(DATA, BLOCK as u32, true)]);
    drv.q(2).wait_all_used();
    dev.reset();
    assert!(ram.read(DATA, BLOCK).iter().all(|&x| x == 0xaa));
    assert_eq!(counter(&dev, "reported_pages"), 0);
    assert!(drv.rec.writes.lock().unwrap().is_empty());

    // Zero "poison" (init_on_free): dropping the pages gives what the guest expects.
    dev.write_config(12, &0u32.to_le_bytes());
    let mut drv = activate(&mut dev, &ram, VERSION_1 | REPORTING | PAGE_POISON, 3, 1);
    drv.q(2).post(&[(DATA, BLOCK as u32, true)]);
    drv.q(2).wait_all_used();
    dev.reset();
    assert!(ram.read(DATA, BLOCK).iter().all(|&x| x == 0));
    assert_eq!(counter(&dev, "reported_pages"), BLOCK / PAGE_SIZE);
}
