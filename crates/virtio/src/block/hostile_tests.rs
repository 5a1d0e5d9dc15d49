//! What a hostile or broken driver can put in the queue: the device answers with an error or
//! returns the chain unprocessed, and never panics, hangs or touches memory outside the guest's.

use super::exec::S_IOERR;
use super::harness::*;
use crate::VirtioDevice;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_FLUSH as FLUSH, VIRTIO_BLK_T_IN as IN, VIRTIO_BLK_T_OUT as OUT,
};
use vm_memory::Bytes;

fn disk(name: &str, sectors: u64) -> (TempImage, Harness) {
    let img = TempImage::patterned(name, sectors);
    let h = Harness::new(config(&img.0));
    (img, h)
}

#[test]
fn a_chain_without_a_usable_status_is_returned_unprocessed() {
    let (img, mut h) = disk("nostatus", 8);
    // Header and data only: nothing writable at the end.
    let header = h.header(OUT, 0);
    let data = h.put(&[9; 512]);
    h.add_chain(&[desc(header, 16, 0), desc(data, 512, 0)]);
    // The last descriptor is readable.
    let header2 = h.header(IN, 0);
    let buf = h.alloc(512);
    let tail = h.put(&[0xff]);
    h.add_chain(&[
        desc(header2, 16, 0),
        desc(buf, 512, WRITE),
        desc(tail, 1, 0),
    ]);
    // A zero-length status descriptor.
    let header3 = h.header(FLUSH, 0);
    let empty = h.alloc(1);
    h.add_chain(&[desc(header3, 16, 0), desc(empty, 0, WRITE)]);
    // The status byte is outside guest memory.
    let header4 = h.header(FLUSH, 0);
    h.add_chain(&[desc(header4, 16, 0), desc(MEM_SIZE + 4096, 1, WRITE)]);
    h.kick();
    let used = h.wait_used(4);
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    assert!(img.contents() == pattern(0, 8));
    assert_eq!(h.get(buf, 512), vec![0; 512]);
    assert_eq!(h.counter("errors"), 4);
    assert_eq!(h.counter("write_ops") + h.counter("flush_ops"), 0);
}

#[test]
fn malformed_headers_get_an_error_status() {
    let (_img, mut h) = disk("header", 8);
    // Only 8 header bytes.
    let header = h.header(IN, 0);
    let status = h.put(&[0xff]);
    h.add_chain(&[desc(header, 8, 0), desc(status, 1, WRITE)]);
    h.kick();
    assert_eq!(h.wait_used(1)[0].1, 1);
    assert_eq!(h.get(status, 1), [S_IOERR]);
    // A readable descriptor after a writable one.
    let header = h.header(IN, 0);
    let buf = h.alloc(512);
    let extra = h.put(&[0; 16]);
    let status = h.put(&[0xff]);
    h.add_chain(&[
        desc(header, 16, 0),
        desc(buf, 512, WRITE),
        desc(extra, 16, 0),
        desc(status, 1, WRITE),
    ]);
    h.kick();
    assert_eq!(h.wait_used(1)[0].1, 1);
    assert_eq!(h.get(status, 1), [S_IOERR]);
}

#[test]
fn descriptor_loops_end_without_processing() {
    let (img, mut h) = disk("loop", 8);
    let header = h.header(OUT, 0);
    let status = h.put(&[0xff]);
    // 0 -> 1 -> 0 -> ...
    h.add_raw(
        0,
        &[
            Desc {
                addr: header,
                len: 16,
                flags: NEXT,
                next: 1,
            },
            Desc {
                addr: status,
                len: 1,
                flags: WRITE | NEXT,
                next: 0,
            },
        ],
        0,
    );
    // A descriptor that points at itself inside an indirect table.
    let table = h.alloc(32);
    h.write_descs(
        table,
        0,
        &[Desc {
            addr: header,
            len: 16,
            flags: NEXT,
            next: 0,
        }],
    );
    h.add_raw(2, &[desc(table, 16, INDIRECT)], 2);
    // A next index beyond the table.
    h.add_raw(
        3,
        &[Desc {
            addr: header,
            len: 16,
            flags: NEXT,
            next: 999,
        }],
        3,
    );
    h.kick();
    let used = h.wait_used(3);
    assert!(used.iter().all(|&(_, len)| len == 0), "{used:?}");
    assert_eq!(h.get(status, 1), [0xff]);
    assert!(img.contents() == pattern(0, 8));
    // The device still serves well-formed requests.
    assert_eq!(h.request(IN, 0, &[], 512).data, pattern(0, 1));
}

#[test]
fn buffers_outside_guest_memory_get_an_error_not_a_panic() {
    let (img, mut h) = disk("oob", 8);
    for (kind, flags) in [(IN, WRITE), (OUT, 0)] {
        let header = h.header(kind, 0);
        let status = h.put(&[0xff]);
        // Past the end of guest memory, and straddling it.
        for addr in [0xffff_ffff_ffff_f000, MEM_SIZE - 256] {
            h.add_chain(&[
                desc(header, 16, 0),
                desc(addr, 512, flags),
                desc(status, 1, WRITE),
            ]);
            h.kick();
            assert_eq!(h.wait_used(1)[0].1, 1);
            assert_eq!(h.get(status, 1), [S_IOERR]);
        }
    }
    // A header outside guest memory.
    let status = h.put(&[0xff]);
    h.add_chain(&[desc(MEM_SIZE, 16, 0), desc(status, 1, WRITE)]);
    h.kick();
    assert_eq!(h.wait_used(1)[0].1, 1);
    assert_eq!(h.get(status, 1), [S_IOERR]);
    assert!(img.contents() == pattern(0, 8));
    assert_eq!(h.counter("errors"), 5);
}

#[test]
fn an_invalid_available_index_does_not_hang_the_worker() {
    let (_img, mut h) = disk("avail", 8);
    // More chains "available" than the queue holds.
    h.set_avail_idx(1000);
    for _ in 0..3 {
        h.kick();
    }
    std::thread::sleep(std::time::Duration::from_millis(50));
    assert_eq!(h.used_idx(), 0);
    let start = std::time::Instant::now();
    h.block.reset();
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
}

/// xorshift64*: reproducible randomness without a crate.
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

/// Fuzzing the request path: 40 rounds of a descriptor table full of random descriptors
/// (addresses mostly in a buffer area seeded with plausible request headers, sometimes outside
/// memory; random lengths, flags and next indices) with 100 random heads published each.
/// Every chain comes back on the used ring, nothing outside the buffer area changes, and the
/// device still serves a good request afterwards.
#[test]
fn random_descriptor_tables_do_not_hurt_the_host() {
    let (img, mut h) = disk("fuzz", 64);
    let area_len = 1 << 20;
    // Descriptors start inside the area and may run up to 70,000 bytes past a start: the slack
    // keeps them off the guard page below.
    let area = h.alloc(area_len + 128 * 1024);
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    // Headers of every type, with sectors in and out of range.
    for i in 0..256u64 {
        let kind = [IN, OUT, FLUSH, 4, 8, 11, 13, r.next() as u32][r.below(8) as usize];
        let sector = if r.below(2) == 0 {
            r.below(80)
        } else {
            r.next()
        };
        let mut hdr = kind.to_le_bytes().to_vec();
        hdr.extend_from_slice(&0u32.to_le_bytes());
        hdr.extend_from_slice(&sector.to_le_bytes());
        h.mem
            .write_slice(&hdr, vm_memory::GuestAddress(area + i * 4096))
            .unwrap();
    }
    let guard = h.put(&[0xa5; 4096]);
    let before = img.contents();
    let mut published = 0u16;
    for _ in 0..40 {
        let table: Vec<Desc> = (0..QSIZE)
            .map(|_| Desc {
                addr: match r.below(10) {
                    0 => r.next(),
                    1 => MEM_SIZE - r.below(4096),
                    2..=5 => area + r.below(256) * 4096,
                    _ => area + r.below(area_len - 70_000),
                },
                len: match r.below(4) {
                    0 => r.next() as u32,
                    1 => r.below(17) as u32,
                    _ => r.below(70_000) as u32,
                },
                flags: r.below(8) as u16, // NEXT | WRITE | INDIRECT
                next: r.below(u64::from(QSIZE) + 8) as u16,
            })
            .collect();
        h.add_raw(0, &table, r.below(u64::from(QSIZE)) as u16);
        for _ in 1..100 {
            h.publish(r.below(u64::from(QSIZE)) as u16);
        }
        h.kick();
        h.wait_used(100);
        published += 100;
    }
    assert_eq!(h.used_idx(), published);
    assert!(
        h.get(guard, 4096).iter().all(|&b| b == 0xa5),
        "the device wrote outside every chain"
    );
    assert!(h.counter("errors") > 0);
    // Random writes may have changed the image, but only inside it: same size.
    assert_eq!(img.contents().len(), before.len());
    // Still a working disk.
    let done = h.request(IN, 1, &[], 512);
    assert_eq!(done.status, super::exec::S_OK);
}
