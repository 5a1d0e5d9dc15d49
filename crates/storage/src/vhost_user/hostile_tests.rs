//! What a hostile or broken driver can put in a queue: every such chain gets IOERR or comes
//! back unprocessed with a used length of 0, the volume is untouched, nothing panics, and the
//! queue keeps working for the requests after it.

use super::config::{MAX_DISCARD_SEG, SECTOR};
use super::exec::{S_IOERR, S_OK};
use super::test_ring::{desc, Desc, INDIRECT, MEM_SIZE, NEXT, QUEUE_SIZE, WRITE};
use super::tests::{range, Harness, MemDevice, DISK};
use virtio_bindings::virtio_blk::*;

const LAST_SECTOR: u64 = DISK as u64 / SECTOR - 1;

/// Serves `chain` and checks that it came back with `used_len`; then checks that a normal
/// request still works and the volume was not written.
fn served(h: &mut Harness, chain: &[Desc], used_len: u32) {
    let before = h.dev.bytes(0, DISK);
    let used = h.ring.used_idx();
    h.ring.add_chain(chain);
    assert_eq!(h.serve(), 1);
    assert_eq!(
        h.ring.used_idx(),
        used.wrapping_add(1),
        "the chain is given back"
    );
    assert_eq!(h.last_used_len(), used_len);
    assert_eq!(h.dev.bytes(0, DISK), before, "the volume is untouched");
    assert_eq!(
        h.write(LAST_SECTOR, &[7; 512]),
        S_OK,
        "the queue still works"
    );
    assert_eq!(h.dev.bytes(DISK - 512, 512), [7; 512]);
    h.dev.fill(DISK - 512, &before[DISK - 512..]);
}

/// A chain whose status byte gets IOERR.
fn ioerr(h: &mut Harness, mut chain: Vec<Desc>) {
    let s = h.status();
    chain.push(desc(s, 1, WRITE));
    served(h, &chain, 1);
    assert_eq!(h.status_at(s), S_IOERR);
}

#[test]
fn sectors_outside_the_disk() {
    let mut h = Harness::new();
    for (sector, len) in [
        (LAST_SECTOR, 1024),    // crosses the end
        (LAST_SECTOR + 1, 512), // just past it
        (u64::MAX, 512),        // sector * 512 overflows
        (u64::MAX / 512, 512),  // offset + len overflows
    ] {
        let hd = h.header(VIRTIO_BLK_T_OUT, sector);
        let d = h.ring.put(&vec![1; len]);
        ioerr(&mut h, vec![desc(hd, 16, 0), desc(d, len as u32, 0)]);
        let hd = h.header(VIRTIO_BLK_T_IN, sector);
        let d = h.ring.alloc(len as u64);
        ioerr(&mut h, vec![desc(hd, 16, 0), desc(d, len as u32, WRITE)]);
    }
    for r in [range(LAST_SECTOR, 2, 0), range(u64::MAX, 1, 0)] {
        for kind in [VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_WRITE_ZEROES] {
            let hd = h.header(kind, 0);
            let p = h.ring.put(&r);
            ioerr(&mut h, vec![desc(hd, 16, 0), desc(p, 16, 0)]);
        }
    }
    assert!(h.dev.calls().is_empty());
    assert_eq!(h.counters.snapshot(false).errors, 12);
}

#[test]
fn bad_lengths() {
    let mut h = Harness::new();
    // Data that is not whole sectors.
    let hd = h.header(VIRTIO_BLK_T_OUT, 0);
    let d = h.ring.put(&[1; 513]);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(d, 513, 0)]);
    let hd = h.header(VIRTIO_BLK_T_IN, 0);
    let d = h.ring.alloc(100);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(d, 100, WRITE)]);
    // A header cut short, or missing.
    let hd = h.header(VIRTIO_BLK_T_OUT, 0);
    ioerr(&mut h, vec![desc(hd, 8, 0)]);
    ioerr(&mut h, vec![]);
    // Ranges that are not 16-byte segments, none, or more than the device allows.
    let p = h.ring.put(&[0; 20]);
    let hd = h.header(VIRTIO_BLK_T_DISCARD, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(p, 20, 0)]);
    let hd = h.header(VIRTIO_BLK_T_DISCARD, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0)]);
    let many: Vec<u8> = (0..=MAX_DISCARD_SEG)
        .flat_map(|i| range(u64::from(i) * 8, 8, 0))
        .collect();
    let p = h.ring.put(&many);
    let hd = h.header(VIRTIO_BLK_T_DISCARD, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(p, many.len() as u32, 0)]);
    let two: Vec<u8> = [range(0, 8, 0), range(8, 8, 0)].concat();
    let p = h.ring.put(&two);
    let hd = h.header(VIRTIO_BLK_T_WRITE_ZEROES, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(p, 32, 0)]);
    // A range larger than the limit.
    let p = h.ring.put(&range(0, u32::MAX, 0));
    let hd = h.header(VIRTIO_BLK_T_DISCARD, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(p, 16, 0)]);
    assert!(h.dev.calls().is_empty());
}

#[test]
fn a_bad_range_cancels_the_whole_discard() {
    let mut h = Harness::new();
    h.dev.fill(0, &[9; 4096]);
    let ranges = [range(0, 8, 0), range(LAST_SECTOR, 8, 0)].concat();
    let p = h.ring.put(&ranges);
    let hd = h.header(VIRTIO_BLK_T_DISCARD, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(p, 32, 0)]);
    assert!(h.dev.calls().is_empty());
    assert_eq!(h.dev.bytes(0, 4096), vec![9; 4096]);
}

#[test]
fn requests_over_the_size_cap() {
    let mut h = Harness::new();
    // 32 MiB, in guest memory, within the disk's sector numbering but over the cap: refused
    // before any buffer is allocated for it.
    let big = 32u32 << 20;
    assert!(u64::from(big) < MEM_SIZE);
    let d = h.ring.alloc(u64::from(big));
    let hd = h.header(VIRTIO_BLK_T_IN, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(d, big, WRITE)]);
    let hd = h.header(VIRTIO_BLK_T_OUT, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(d, big, 0)]);
    // The same buffer several times over: 36 MiB in total.
    let hd = h.header(VIRTIO_BLK_T_IN, 0);
    let mut chain = vec![desc(hd, 16, 0)];
    chain.extend((0..9).map(|_| desc(d, 4 << 20, WRITE)));
    ioerr(&mut h, chain);
}

#[test]
fn buffers_outside_guest_memory() {
    let mut h = Harness::new();
    let hd = h.header(VIRTIO_BLK_T_OUT, 0);
    ioerr(&mut h, vec![desc(hd, 16, 0), desc(MEM_SIZE - 256, 512, 0)]);
    let hd = h.header(VIRTIO_BLK_T_IN, 0);
    ioerr(
        &mut h,
        vec![desc(hd, 16, 0), desc(u64::MAX - 100, 512, WRITE)],
    );
    ioerr(&mut h, vec![desc(MEM_SIZE, 16, 0)]);
    // The status byte outside: nothing can be written back.
    let hd = h.header(VIRTIO_BLK_T_FLUSH, 0);
    served(&mut h, &[desc(hd, 16, 0), desc(MEM_SIZE, 1, WRITE)], 0);
    let hd = h.header(VIRTIO_BLK_T_FLUSH, 0);
    served(&mut h, &[desc(hd, 16, 0), desc(u64::MAX, 1, WRITE)], 0);
    assert!(
        h.dev.calls().is_empty(),
        "no flush ran for a chain without status"
    );
}

#[test]
fn missing_or_misplaced_status() {
    let mut h = Harness::new();
    // The last descriptor is device-readable: no status byte to write.
    let hd = h.header(VIRTIO_BLK_T_OUT, 0);
    let d = h.ring.put(&[1; 512]);
    served(&mut h, &[desc(hd, 16, 0), desc(d, 512, 0)], 0);
    // A zero-length status descriptor.
    let s = h.status();
    let hd = h.header(VIRTIO_BLK_T_FLUSH, 0);
    served(&mut h, &[desc(hd, 16, 0), desc(s, 0, WRITE)], 0);
    assert_eq!(h.status_at(s), 0xee);
    // A device-readable buffer after a writable one.
    let hd = h.header(VIRTIO_BLK_T_IN, 0);
    let d = h.ring.alloc(512);
    let r = h.ring.put(&[0; 16]);
    ioerr(
        &mut h,
        vec![desc(hd, 16, 0), desc(d, 512, WRITE), desc(r, 16, 0)],
    );
    assert!(h.dev.calls().is_empty());
}

#[test]
fn broken_chains_and_tables() {
    let mut h = Harness::new();
    let s = h.status();
    let hd = h.header(VIRTIO_BLK_T_FLUSH, 0);
    // A descriptor that links to itself: the walk stops after the table size.
    let at = h.ring.reserve(&[Desc {
        next: 0,
        ..desc(hd, 16, NEXT)
    }]);
    h.ring.write_descs(
        0,
        at,
        &[Desc {
            next: at,
            ..desc(hd, 16, NEXT)
        }],
    );
    h.ring.publish(at);
    assert_eq!(h.serve(), 1);
    assert_eq!(h.last_used_len(), 0);
    // A link past the table.
    served(
        &mut h,
        &[Desc {
            next: QUEUE_SIZE + 5,
            ..desc(hd, 16, NEXT)
        }],
        0,
    );
    // Indirect tables: of a length that is not whole descriptors, nested, and empty.
    let table = h.ring.alloc(64);
    h.ring
        .write_descs(table, 0, &[desc(hd, 16, NEXT), desc(s, 1, WRITE)]);
    served(&mut h, &[desc(table, 20, INDIRECT)], 0);
    let outer = h.ring.alloc(16);
    h.ring.write_descs(outer, 0, &[desc(table, 32, INDIRECT)]);
    served(&mut h, &[desc(outer, 16, INDIRECT)], 0);
    served(&mut h, &[desc(table, 0, INDIRECT)], 0);
    // An indirect table outside guest memory.
    served(&mut h, &[desc(MEM_SIZE, 32, INDIRECT)], 0);
    assert!(h.dev.calls().is_empty());
}

#[test]
fn ring_indices_made_up_by_the_driver() {
    let mut h = Harness::new();
    // A head index outside the table: dropped, the queue carries on.
    h.ring.publish(QUEUE_SIZE + 3);
    assert_eq!(h.serve(), 1);
    assert_eq!(h.ring.used_idx(), 0, "nothing to give back");
    assert_eq!(h.write(1, &[3; 512]), S_OK);
    // An available index further ahead than the queue size: nothing is served, no panic.
    let hd = h.header(VIRTIO_BLK_T_FLUSH, 0);
    let s = h.status();
    h.ring.add_chain(&[desc(hd, 16, 0), desc(s, 1, WRITE)]);
    let used = h.ring.used_idx();
    h.ring.set_avail_idx(used.wrapping_add(QUEUE_SIZE * 3));
    assert_eq!(h.serve(), 0);
    assert_eq!(h.ring.used_idx(), used);
}

#[test]
fn long_indirect_chains_are_refused() {
    let mut h = Harness::with_device(MemDevice::new(DISK, 512, false));
    // An IN split into 2000 one-byte pieces by an indirect table: more descriptors than a
    // request may have.
    let n: u16 = 2000;
    let hd = h.header(VIRTIO_BLK_T_IN, 0);
    let d = h.ring.alloc(512);
    let s = h.status();
    let table = h.ring.alloc(16 * u64::from(n + 2));
    let mut descs = vec![Desc {
        next: 1,
        ..desc(hd, 16, NEXT)
    }];
    descs.extend((1..=n).map(|i| Desc {
        next: i + 1,
        ..desc(d, 1, WRITE | NEXT)
    }));
    descs.push(desc(s, 1, WRITE));
    h.ring.write_descs(table, 0, &descs);
    served(&mut h, &[desc(table, 16 * u32::from(n + 2), INDIRECT)], 1);
    assert_eq!(h.status_at(s), S_IOERR);
}

#[test]
fn a_made_up_available_index_does_not_spin_a_worker() {
    // With EVENT_IDX the worker looks at the ring again after re-enabling kicks while the
    // driver shows more requests; an index the ring cannot hold must not keep it at it.
    let h = Harness::new();
    let (backend, vring) = h.vring(true);
    h.ring.set_avail_idx(QUEUE_SIZE * 3);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        backend.serve_vring(&vring, 0);
        let _ = tx.send(());
    });
    rx.recv_timeout(std::time::Duration::from_secs(10))
        .expect("the worker spins on a made-up available index");
    assert_eq!(h.ring.used_idx(), 0);
}
