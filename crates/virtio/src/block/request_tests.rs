//! Requests through a real queue in guest memory, served by an active `Block` over a temp file.

use super::exec::{S_IOERR, S_OK, S_UNSUPP};
use super::harness::*;
use super::*;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD as DISCARD, VIRTIO_BLK_T_FLUSH as FLUSH, VIRTIO_BLK_T_GET_ID as GET_ID,
    VIRTIO_BLK_T_IN as IN, VIRTIO_BLK_T_OUT as OUT, VIRTIO_BLK_T_WRITE_ZEROES as WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP as UNMAP,
};
use vm_memory::{Bytes, GuestAddress};

fn disk(name: &str, sectors: u64) -> (TempImage, Harness) {
    let img = TempImage::patterned(name, sectors);
    let h = Harness::new(config(&img.0));
    (img, h)
}

#[test]
fn read_returns_the_sectors_and_reports_the_guest_writes() {
    let (_img, mut h) = disk("read", 16);
    let header = h.header(IN, 3);
    let data = h.alloc(1024);
    let status = h.put(&[0xff]);
    h.add_chain(&[
        desc(header, 16, 0),
        desc(data, 1024, WRITE),
        desc(status, 1, WRITE),
    ]);
    h.kick();
    assert_eq!(h.wait_used(1), vec![(0, 1025)]);
    assert_eq!(h.get(data, 1024), pattern(3, 2));
    assert_eq!(h.get(status, 1), [S_OK]);
    assert!(h.writes.covers(data, 1024));
    assert!(h.writes.covers(status, 1));
    assert!(h.irq.queue.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    assert_eq!((h.counter("read_ops"), h.counter("read_bytes")), (1, 1024));
    assert_eq!(h.counter("errors"), 0);
}

#[test]
fn write_reaches_the_file() {
    let (img, mut h) = disk("write", 16);
    let data = vec![0xab; 1536];
    let done = h.request(OUT, 5, &data, 0);
    assert_eq!((done.status, done.used_len), (S_OK, 1));
    let file = img.contents();
    assert_eq!(&file[5 * 512..8 * 512], &data[..]);
    assert_eq!(&file[..5 * 512], &pattern(0, 5)[..]);
    assert_eq!(&file[8 * 512..], &pattern(8, 8)[..]);
    assert_eq!(
        (h.counter("write_ops"), h.counter("write_bytes")),
        (1, 1536)
    );
}

#[test]
fn requests_larger_than_the_bounce_buffer_are_done_in_pieces() {
    let sectors = (3 << 20) / 512 + 8;
    let (img, mut h) = disk("large", sectors);
    let len = (3 << 20) + 1024;
    let done = h.request(IN, 4, &[], len);
    assert_eq!((done.status, done.used_len), (S_OK, len + 1));
    assert_eq!(done.data, pattern(4, u64::from(len) / 512));
    let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
    assert_eq!(h.request(OUT, 2, &data, 0).status, S_OK);
    assert_eq!(&img.contents()[1024..1024 + len as usize], &data[..]);
}

#[test]
fn flush_and_get_id() {
    let (_img, mut h) = disk("flush", 8);
    let done = h.request(FLUSH, 0, &[], 0);
    assert_eq!((done.status, done.used_len), (S_OK, 1));
    assert_eq!(h.counter("flush_ops"), 1);

    let done = h.request(GET_ID, 0, &[], 20);
    assert_eq!((done.status, done.used_len), (S_OK, 21));
    assert_eq!(&done.data[..17], b"vireo-test-serial");
    assert_eq!(&done.data[17..], &[0, 0, 0]);
    // A shorter buffer gets what fits.
    let done = h.request(GET_ID, 0, &[], 5);
    assert_eq!(
        (done.status, done.used_len, &done.data[..]),
        (S_OK, 6, &b"vireo"[..])
    );
}

#[test]
fn discard_and_write_zeroes_make_the_range_read_as_zeroes() {
    let (img, mut h) = disk("discard", 64);
    assert_eq!(h.request(DISCARD, 0, &range(8, 16, 0), 0).status, S_OK);
    assert_eq!(h.request(WRITE_ZEROES, 0, &range(30, 2, 0), 0).status, S_OK);
    assert_eq!(
        h.request(WRITE_ZEROES, 0, &range(40, 9, UNMAP), 0).status,
        S_OK
    );
    let file = img.contents();
    assert_eq!(file.len(), 64 * 512, "the image keeps its size");
    let mut expected = pattern(0, 64);
    for (first, n) in [(8, 16), (30, 2), (40, 9)] {
        expected[first * 512..(first + n) * 512].fill(0);
    }
    assert!(file == expected);
    // The guest sees it too.
    assert_eq!(h.request(IN, 8, &[], 512).data, vec![0; 512]);
    assert_eq!(
        (h.counter("discard_ops"), h.counter("write_zeroes_ops")),
        (1, 2)
    );
}

#[test]
fn discard_flags_and_ranges_are_checked() {
    let (img, mut h) = disk("discard-bad", 32);
    // UNMAP means nothing for a discard; unknown flags are unsupported.
    assert_eq!(
        h.request(DISCARD, 0, &range(0, 1, UNMAP), 0).status,
        S_UNSUPP
    );
    assert_eq!(
        h.request(WRITE_ZEROES, 0, &range(0, 1, 2), 0).status,
        S_UNSUPP
    );
    // Past the end, overflowing, malformed lists, too many ranges.
    assert_eq!(h.request(DISCARD, 0, &range(31, 2, 0), 0).status, S_IOERR);
    assert_eq!(
        h.request(DISCARD, 0, &range(u64::MAX, 1, 0), 0).status,
        S_IOERR
    );
    assert_eq!(
        h.request(WRITE_ZEROES, 0, &range(u64::MAX / 512, 8, 0), 0)
            .status,
        S_IOERR
    );
    assert_eq!(
        h.request(DISCARD, 0, &range(0, 1, 0)[..12], 0).status,
        S_IOERR
    );
    let two = [range(0, 1, 0), range(4, 1, 0)].concat();
    assert_eq!(h.request(DISCARD, 0, &two, 0).status, S_IOERR);
    assert_eq!(h.request(DISCARD, 0, &[], 0).status, S_IOERR);
    assert!(img.contents() == pattern(0, 32));
    assert_eq!(h.counter("errors"), 8);
}

#[test]
fn sectors_outside_the_disk_are_refused() {
    let (img, mut h) = disk("range", 16);
    // The last sector is fine, one more is not.
    assert_eq!(h.request(IN, 15, &[], 512).status, S_OK);
    let done = h.request(IN, 16, &[], 512);
    assert_eq!((done.status, done.used_len), (S_IOERR, 1));
    assert_eq!(h.request(IN, 15, &[], 1024).status, S_IOERR);
    assert_eq!(h.request(OUT, 16, &[1; 512], 0).status, S_IOERR);
    // sector * 512 and sector * 512 + len overflow.
    assert_eq!(h.request(IN, u64::MAX, &[], 512).status, S_IOERR);
    assert_eq!(h.request(OUT, u64::MAX / 512, &[1; 512], 0).status, S_IOERR);
    assert_eq!(
        h.request(OUT, (u64::MAX - 511) / 512, &[1; 1024], 0).status,
        S_IOERR
    );
    assert!(img.contents() == pattern(0, 16));
    assert_eq!(h.counter("errors"), 6);
}

#[test]
fn lengths_must_be_whole_sectors() {
    let (img, mut h) = disk("len", 16);
    assert_eq!(h.request(IN, 0, &[], 100).status, S_IOERR);
    assert_eq!(h.request(OUT, 0, &[7; 513], 0).status, S_IOERR);
    assert!(img.contents() == pattern(0, 16));
}

#[test]
fn a_readonly_disk_refuses_every_change() {
    let img = TempImage::patterned("ro", 16);
    let mut h = Harness::new(BlockConfig {
        readonly: true,
        ..config(&img.0)
    });
    assert_ne!(h.block.features() & 1 << VIRTIO_BLK_F_RO, 0);
    assert_eq!(h.request(OUT, 0, &[1; 512], 0).status, S_IOERR);
    assert_eq!(h.request(DISCARD, 0, &range(0, 1, 0), 0).status, S_IOERR);
    assert_eq!(
        h.request(WRITE_ZEROES, 0, &range(0, 1, UNMAP), 0).status,
        S_IOERR
    );
    assert_eq!(h.request(IN, 1, &[], 512).data, pattern(1, 1));
    assert_eq!(h.request(FLUSH, 0, &[], 0).status, S_OK);
    assert!(img.contents() == pattern(0, 16));
}

#[test]
fn unknown_types_are_unsupported() {
    let (_img, mut h) = disk("unsupp", 8);
    for t in [2, 99, u32::MAX] {
        let done = h.request(t, 0, &[], 512);
        assert_eq!((done.status, done.used_len), (S_UNSUPP, 1));
    }
}

#[test]
fn any_layout_header_split_and_status_sharing_a_buffer() {
    let (_img, mut h) = disk("layout", 8);
    let header = h.header(IN, 2);
    // The header in two pieces, the data and the status byte in one buffer.
    let buf = h.alloc(513);
    h.mem.write_slice(&[0xff], GuestAddress(buf + 512)).unwrap();
    h.add_chain(&[
        desc(header, 5, 0),
        desc(header + 5, 11, 0),
        desc(buf, 513, WRITE),
    ]);
    h.kick();
    assert_eq!(h.wait_used(1)[0].1, 513);
    assert_eq!(h.get(buf, 512), pattern(2, 1));
    assert_eq!(h.get(buf + 512, 1), [S_OK]);
}

#[test]
fn indirect_descriptor_tables_are_followed() {
    let (img, mut h) = disk("indirect", 8);
    let header = h.header(IN, 1);
    let data = h.alloc(1024);
    let status = h.put(&[0xff]);
    h.add_indirect(&[
        desc(header, 16, 0),
        desc(data, 512, WRITE),
        desc(data + 512, 512, WRITE),
        desc(status, 1, WRITE),
    ]);
    h.kick();
    assert_eq!(h.wait_used(1)[0].1, 1025);
    assert_eq!(h.get(data, 1024), pattern(1, 2));
    assert_eq!(h.get(status, 1), [S_OK]);

    let header = h.header(OUT, 6);
    let data = h.put(&[0x5a; 512]);
    let status = h.put(&[0xff]);
    h.add_indirect(&[
        desc(header, 16, 0),
        desc(data, 512, 0),
        desc(status, 1, WRITE),
    ]);
    h.kick();
    assert_eq!(h.wait_used(1)[0].1, 1);
    assert_eq!(&img.contents()[6 * 512..7 * 512], &[0x5a; 512][..]);
}

#[test]
fn many_requests_with_one_notification_and_without_event_idx() {
    for event_idx in [true, false] {
        let img = TempImage::patterned("batch", 64);
        let mut h = Harness::with_block(Block::new(config(&img.0)).unwrap(), event_idx);
        let mut bufs = Vec::new();
        for i in 0..80u64 {
            let header = h.header(IN, i % 64);
            let data = h.alloc(512);
            let status = h.put(&[0xff]);
            h.add_chain(&[
                desc(header, 16, 0),
                desc(data, 512, WRITE),
                desc(status, 1, WRITE),
            ]);
            bufs.push((i % 64, data, status));
        }
        h.kick();
        assert_eq!(h.wait_used(80).len(), 80);
        for (sector, data, status) in bufs {
            assert_eq!(h.get(status, 1), [S_OK]);
            assert_eq!(h.get(data, 512), pattern(sector, 1));
        }
        // The device asked to be notified again: a later request is served.
        assert_eq!(h.request(IN, 1, &[], 512).data, pattern(1, 1));
        assert_eq!(h.counter("read_ops"), 81);
    }
}

#[test]
fn reset_stops_the_device() {
    let (_img, mut h) = disk("reset", 8);
    assert_eq!(h.request(FLUSH, 0, &[], 0).status, S_OK);
    h.block.reset();
    let header = h.header(FLUSH, 0);
    let status = h.put(&[0xff]);
    h.add_chain(&[desc(header, 16, 0), desc(status, 1, WRITE)]);
    h.kick();
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert_eq!(h.used_idx(), 1);
    assert_eq!(h.get(status, 1), [0xff]);
}
