//! Inflate and deflate through the queues, on memfd-backed RAM.

use super::harness::*;
use super::worker::MAX_PFNS_PER_CHAIN;
use super::*;
use crate::features::VERSION_1;

fn pfn(gpa: u64) -> u32 {
    (gpa >> PFN_SHIFT) as u32
}

fn zeros(v: &[u8]) -> bool {
    v.iter().all(|&b| b == 0)
}

#[test]
fn inflating_frees_the_pages_and_they_read_back_as_zeros() {
    let ram = ram();
    let (mut dev, _ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    let a = DATA;
    let b = REGIONS[1].0 + MIB;
    ram.fill(a, 17 * PAGE_SIZE, 0xab);
    ram.fill(b, 4 * PAGE_SIZE, 0xcd);
    // In the order Linux might list them: reversed, interleaved, one page twice.
    let mut pfns: Vec<u32> = (0..16).rev().map(|i| pfn(a) + i).collect();
    pfns.extend((0..4).map(|i| pfn(b) + i));
    pfns.push(pfn(a));
    let list = 3 * MIB;
    let len = ram.write_pfns(list, &pfns);

    let mut drv = activate(&mut dev, &ram, VERSION_1, 2, 0);
    // After building the rings, whose pages count too.
    let before = ram.allocated();
    drv.q(0).post(&[(list, len, false)]);
    drv.q(0).wait_all_used();
    dev.reset();
    // Measured before reading the pages back: a read fault on a shmem hole allocates again.
    let freed = before - ram.allocated().min(before);
    assert!(freed >= 20 * PAGE_SIZE, "only {freed} bytes given back");

    assert_eq!(drv.q(0).used_len(0), 0);
    assert!(zeros(&ram.read(a, 16 * PAGE_SIZE)));
    assert!(zeros(&ram.read(b, 4 * PAGE_SIZE)));
    // The page after the run was not listed and keeps its data.
    assert!(ram
        .read(a + 16 * PAGE_SIZE, PAGE_SIZE)
        .iter()
        .all(|&x| x == 0xab));
    // Each run is discarded (and reported as changed) once.
    let mut writes = drv.rec.writes.lock().unwrap().clone();
    writes.sort();
    assert_eq!(writes, vec![(a, 16 * PAGE_SIZE), (b, 4 * PAGE_SIZE)]);
    assert_eq!(*drv.rec.queues.lock().unwrap(), vec![0]);
    assert_eq!(counter(&dev, "inflated_pages"), 20);
    assert_eq!(counter(&dev, "bad_pfns"), 0);
    assert_eq!(counter(&dev, "errors"), 0);
}

#[test]
fn frames_outside_guest_ram_are_ignored_and_counted() {
    let ram = ram();
    let (mut dev, _ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    ram.fill(DATA, PAGE_SIZE, 0x11);
    let end = REGIONS[1].0 + REGIONS[1].1;
    let pfns = [pfn(HOLE), pfn(HOLE) + 1, pfn(end), u32::MAX, pfn(DATA)];
    let len = ram.write_pfns(3 * MIB, &pfns);
    let mut drv = activate(&mut dev, &ram, VERSION_1, 2, 0);
    drv.q(0).post(&[(3 * MIB, len, false)]);
    drv.q(0).wait_all_used();
    dev.reset();
    assert_eq!(counter(&dev, "bad_pfns"), 4);
    assert_eq!(counter(&dev, "inflated_pages"), 1);
    assert!(zeros(&ram.read(DATA, PAGE_SIZE)));
    assert_eq!(*drv.rec.writes.lock().unwrap(), vec![(DATA, PAGE_SIZE)]);
}

#[test]
fn deflating_counts_and_leaves_memory_alone() {
    let ram = ram();
    let (mut dev, _ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    ram.fill(DATA, 2 * PAGE_SIZE, 0x5a);
    let len = ram.write_pfns(3 * MIB, &[pfn(DATA), pfn(DATA) + 1, pfn(HOLE)]);
    let mut drv = activate(&mut dev, &ram, VERSION_1, 2, 0);
    drv.q(1).post(&[(3 * MIB, len, false)]);
    drv.q(1).wait_all_used();
    dev.reset();
    assert_eq!(counter(&dev, "deflated_pages"), 2);
    assert_eq!(counter(&dev, "bad_pfns"), 1);
    assert_eq!(counter(&dev, "inflated_pages"), 0);
    assert!(ram.read(DATA, 2 * PAGE_SIZE).iter().all(|&x| x == 0x5a));
    assert!(drv.rec.writes.lock().unwrap().is_empty());
    assert_eq!(*drv.rec.queues.lock().unwrap(), vec![1]);
}

#[test]
fn hostile_frame_lists_are_bounded_and_returned() {
    let ram = ram();
    let (mut dev, _ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    ram.fill(DATA, PAGE_SIZE, 0x77);
    // More frames than one chain may carry, all distinct and beyond RAM: the bound applies.
    let many: Vec<u32> = (0..MAX_PFNS_PER_CHAIN as u32 + 1024)
        .map(|i| 0x10_0000 + i)
        .collect();
    let many_len = ram.write_pfns(2 * MIB, &many);
    // A list whose length is not a whole number of frames: the partial one is ignored.
    let odd_len = ram.write_pfns(DATA + PAGE_SIZE, &[pfn(DATA)]) + 2;
    let mut drv = activate(&mut dev, &ram, VERSION_1, 2, 0);
    drv.q(0).post(&[(2 * MIB, many_len, false)]);
    // A buffer outside guest RAM, and one the device may only write (nothing to read).
    drv.q(0).post(&[(HOLE, 64, false)]);
    drv.q(0).post(&[(DATA + 2 * PAGE_SIZE, 64, true)]);
    drv.q(0).post(&[(DATA + PAGE_SIZE, odd_len, false)]);
    drv.q(0).wait_all_used();
    dev.reset();
    assert_eq!(counter(&dev, "bad_pfns"), MAX_PFNS_PER_CHAIN as u64);
    assert_eq!(counter(&dev, "inflated_pages"), 1);
    // The overlong list, the unreadable buffer and the odd length.
    assert_eq!(counter(&dev, "errors"), 3);
    assert!(zeros(&ram.read(DATA, PAGE_SIZE)));
}

#[test]
fn a_bogus_available_index_does_not_wedge_the_worker() {
    let ram = ram();
    let (mut dev, _ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    let drv = activate(&mut dev, &ram, VERSION_1, 2, 0);
    // Far more entries "available" than the ring holds: nothing can be popped, while
    // re-enabling notifications keeps answering "more".
    drv.queues[0].mock.avail().idx().store(1000);
    drv.queues[0].kick.write(1).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        dev.reset();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(std::time::Duration::from_secs(5))
        .expect("reset must return: the worker spins");
}
