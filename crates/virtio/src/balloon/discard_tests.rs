//! Discarding guest ranges directly, on shared (memfd) and private (anonymous) RAM.

use super::discard::{discard, runs, Discarded};
use super::harness::*;
use super::*;
use vm_memory::{Bytes, GuestAddress};

#[test]
fn frame_numbers_become_sorted_runs() {
    let mut pfns = vec![7, 3, 4, 5, 5, 10, 9, u32::MAX, 0];
    assert_eq!(
        runs(&mut pfns),
        vec![(0, 1), (3, 3), (7, 1), (9, 2), (u64::from(u32::MAX), 1)]
    );
    assert!(runs(&mut Vec::new()).is_empty());
}

#[test]
fn a_range_across_regions_frees_the_ram_and_skips_the_hole() {
    let ram = ram();
    let start = REGIONS[0].1 - 2 * PAGE_SIZE;
    let end = REGIONS[1].0 + 2 * PAGE_SIZE;
    ram.fill(start, 2 * PAGE_SIZE, 1);
    ram.fill(REGIONS[1].0, 3 * PAGE_SIZE, 2);
    let before = ram.allocated();
    let rec: Option<Arc<dyn crate::GuestWrites>> = Some(Arc::new(Recorder::default()));
    let d = discard(&ram.mem, start, end - start, &rec);
    assert_eq!(
        d,
        Discarded {
            freed: 4 * PAGE_SIZE,
            outside: REGIONS[1].0 - REGIONS[0].1,
            failures: 0
        }
    );
    // Before reading back, which allocates the pages again.
    assert!(before - ram.allocated().min(before) >= 4 * PAGE_SIZE);
    assert!(ram.read(start, 2 * PAGE_SIZE).iter().all(|&b| b == 0));
    assert!(ram
        .read(REGIONS[1].0, 2 * PAGE_SIZE)
        .iter()
        .all(|&b| b == 0));
    assert!(ram
        .read(REGIONS[1].0 + 2 * PAGE_SIZE, PAGE_SIZE)
        .iter()
        .all(|&b| b == 2));
}

#[test]
fn ranges_outside_or_wrapping_touch_nothing() {
    let ram = ram();
    let d = discard(&ram.mem, u64::MAX - PAGE_SIZE, 2 * PAGE_SIZE, &None);
    assert_eq!((d.freed, d.failures), (0, 0));
    assert_eq!(d.outside, PAGE_SIZE);
    assert_eq!(discard(&ram.mem, 0, 0, &None), Discarded::default());
    // Less than a page: nothing whole to drop, nothing outside.
    ram.fill(DATA, PAGE_SIZE, 3);
    assert_eq!(
        discard(&ram.mem, DATA + 1, PAGE_SIZE, &None),
        Discarded::default()
    );
    assert!(ram.read(DATA, PAGE_SIZE).iter().all(|&b| b == 3));
}

#[test]
fn private_anonymous_ram_is_dropped_too() {
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MIB as usize)]).unwrap();
    mem.write_slice(&[0xee; 8192], GuestAddress(0x4000))
        .unwrap();
    let d = discard(&mem, 0x4000, 0x1000, &None);
    assert_eq!(d.freed, 0x1000);
    let mut back = [0u8; 8192];
    mem.read_slice(&mut back, GuestAddress(0x4000)).unwrap();
    assert!(back[..4096].iter().all(|&b| b == 0));
    assert!(back[4096..].iter().all(|&b| b == 0xee));
}
