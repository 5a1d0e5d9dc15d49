//! Requests served from a hand-built split queue in real guest memory, against an in-memory
//! volume: every request type in the layouts drivers use, and the configuration space.
//! Hostile chains are in `hostile_tests`, the socket's life in `socket_tests`.

use super::backend::{serve_queue, BlkBackend, Vring};
use super::config::{self, CONFIG_LEN, ID_BYTES};
use super::exec::{Target, S_IOERR, S_OK, S_UNSUPP};
use super::stats::Counters;
use super::test_ring::{desc, TestRing, AVAIL, DESC_TABLE, QUEUE_SIZE, USED, WRITE};
use super::Served;
use crate::block::{check_range, BlockDevice, Extent};
use std::io;
use std::sync::{Arc, Mutex};
use vhost_user_backend::{VhostUserBackend, VringT};
use vireo_virtio::vhost_user::session::config_slice;
use virtio_bindings::virtio_blk::*;
use vm_memory::GuestMemoryAtomic;

/// A volume in a `Vec`, recording the calls that do not move data.
pub struct MemDevice {
    data: Mutex<Vec<u8>>,
    block_size: u32,
    read_only: bool,
    pub calls: Mutex<Vec<String>>,
}

impl MemDevice {
    pub fn new(size: usize, block_size: u32, read_only: bool) -> MemDevice {
        MemDevice {
            data: Mutex::new(vec![0; size]),
            block_size,
            read_only,
            calls: Mutex::default(),
        }
    }

    pub fn bytes(&self, offset: usize, len: usize) -> Vec<u8> {
        self.data.lock().unwrap()[offset..offset + len].to_vec()
    }

    pub fn fill(&self, offset: usize, bytes: &[u8]) {
        self.data.lock().unwrap()[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        check_range(offset, len, self.size())?;
        self.data.lock().unwrap()[offset as usize..(offset + len) as usize].fill(0);
        Ok(())
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.data.lock().unwrap().len() as u64
    }
    fn block_size(&self) -> u32 {
        self.block_size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size())?;
        buf.copy_from_slice(&self.bytes(offset as usize, buf.len()));
        Ok(())
    }
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        check_range(offset, data.len() as u64, self.size())?;
        assert!(
            !fua,
            "vhost-user-blk writes without FUA and flushes on FLUSH"
        );
        self.fill(offset as usize, data);
        Ok(())
    }
    fn flush(&self) -> io::Result<()> {
        self.calls.lock().unwrap().push("flush".into());
        Ok(())
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.zero(offset, len)?;
        self.calls
            .lock()
            .unwrap()
            .push(format!("trim {offset} {len}"));
        Ok(())
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool, _fua: bool) -> io::Result<()> {
        self.zero(offset, len)?;
        let call = format!("zero {offset} {len} unmap={may_unmap}");
        self.calls.lock().unwrap().push(call);
        Ok(())
    }
    fn block_status(&self, _offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        Ok(vec![Extent {
            len,
            hole: false,
            zero: false,
        }])
    }
}

pub const DISK: usize = 1 << 20;

/// A queue, a volume and what serving needs.
pub struct Harness {
    pub ring: TestRing,
    pub dev: Arc<MemDevice>,
    pub counters: Counters,
    pub id: [u8; ID_BYTES],
    scratch: Vec<u8>,
}

impl Harness {
    pub fn new() -> Harness {
        Harness::with_device(MemDevice::new(DISK, 4096, false))
    }

    pub fn with_device(dev: MemDevice) -> Harness {
        let mut id = [0u8; ID_BYTES];
        id[..9].copy_from_slice(b"pool/vol1");
        Harness {
            ring: TestRing::new(),
            dev: Arc::new(dev),
            counters: Counters::default(),
            id,
            scratch: Vec::new(),
        }
    }

    /// Serves the queue; returns the chains given back.
    pub fn serve(&mut self) -> usize {
        let t = Target {
            dev: &*self.dev,
            id: &self.id,
            counters: &self.counters,
        };
        let n = serve_queue(&mut self.ring.queue, &self.ring.mem, &t, &mut self.scratch);
        self.ring.recycle();
        n
    }

    /// The queue as a worker thread serves it: a device for this volume (one queue) and the
    /// ring as a vhost-user vring, with EVENT_IDX or not.
    pub fn vring(&self, event_idx: bool) -> (BlkBackend, Vring) {
        let served = Arc::new(Served {
            dev: self.dev.clone(),
            id: self.id,
            num_queues: 1,
            config: [0; CONFIG_LEN],
            counters: Counters::default(),
        });
        let mem = GuestMemoryAtomic::new(self.ring.mem.clone());
        let backend = BlkBackend::new(served, mem.clone());
        backend.set_event_idx(event_idx);
        let vring = Vring::new(mem, QUEUE_SIZE).unwrap();
        vring.set_queue_size(QUEUE_SIZE);
        vring.set_queue_info(DESC_TABLE, AVAIL, USED).unwrap();
        vring.set_queue_event_idx(event_idx);
        vring.set_queue_ready(true);
        vring.set_enabled(true);
        (backend, vring)
    }

    pub fn header(&mut self, kind: u32, sector: u64) -> u64 {
        let mut h = kind.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&sector.to_le_bytes());
        self.ring.put(&h)
    }

    /// A status byte, preset to a value no device writes.
    pub fn status(&mut self) -> u64 {
        self.ring.put(&[0xee])
    }

    pub fn status_at(&self, addr: u64) -> u8 {
        self.ring.get(addr, 1)[0]
    }

    /// The last used ring entry's length.
    pub fn last_used_len(&self) -> u32 {
        self.ring.used(self.ring.used_idx().wrapping_sub(1)).1
    }

    /// OUT in the usual layout: header, data, status; returns the status.
    pub fn write(&mut self, sector: u64, data: &[u8]) -> u8 {
        let h = self.header(VIRTIO_BLK_T_OUT, sector);
        let d = self.ring.put(data);
        let s = self.status();
        self.ring.add_chain(&[
            desc(h, 16, 0),
            desc(d, data.len() as u32, 0),
            desc(s, 1, WRITE),
        ]);
        assert_eq!(self.serve(), 1);
        self.status_at(s)
    }

    /// IN in the usual layout; returns the status and the data.
    pub fn read(&mut self, sector: u64, len: u32) -> (u8, Vec<u8>) {
        let h = self.header(VIRTIO_BLK_T_IN, sector);
        let d = self.ring.alloc(u64::from(len));
        let s = self.status();
        self.ring
            .add_chain(&[desc(h, 16, 0), desc(d, len, WRITE), desc(s, 1, WRITE)]);
        assert_eq!(self.serve(), 1);
        (self.status_at(s), self.ring.get(d, len as usize))
    }

    /// A request whose readable part after the header is `payload`, with no writable data.
    pub fn simple(&mut self, kind: u32, sector: u64, payload: &[u8]) -> u8 {
        let h = self.header(kind, sector);
        let s = self.status();
        let mut chain = vec![desc(h, 16, 0)];
        if !payload.is_empty() {
            let p = self.ring.put(payload);
            chain.push(desc(p, payload.len() as u32, 0));
        }
        chain.push(desc(s, 1, WRITE));
        self.ring.add_chain(&chain);
        assert_eq!(self.serve(), 1);
        self.status_at(s)
    }
}

pub fn range(sector: u64, count: u32, flags: u32) -> Vec<u8> {
    let mut r = sector.to_le_bytes().to_vec();
    r.extend_from_slice(&count.to_le_bytes());
    r.extend_from_slice(&flags.to_le_bytes());
    r
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn write_then_read_back() {
    let mut h = Harness::new();
    let data = pattern(8192, 7);
    assert_eq!(h.write(10, &data), S_OK);
    assert_eq!(h.last_used_len(), 1, "OUT writes only the status");
    assert_eq!(h.dev.bytes(10 * 512, 8192), data);
    let (status, back) = h.read(10, 8192);
    assert_eq!(status, S_OK);
    assert_eq!(back, data);
    assert_eq!(h.last_used_len(), 8193, "IN data plus the status byte");
    let s = h.counters.snapshot(false);
    assert_eq!(
        (s.read_ops, s.read_bytes, s.write_ops, s.write_bytes),
        (1, 8192, 1, 8192)
    );
}

#[test]
fn a_worker_serves_its_vring_with_and_without_event_idx() {
    for event_idx in [false, true] {
        let mut h = Harness::new();
        let (backend, vring) = h.vring(event_idx);
        let mut statuses = Vec::new();
        for sector in 0..4u64 {
            let hd = h.header(VIRTIO_BLK_T_OUT, sector);
            let d = h.ring.put(&[sector as u8 + 1; 512]);
            let s = h.status();
            h.ring
                .add_chain(&[desc(hd, 16, 0), desc(d, 512, 0), desc(s, 1, WRITE)]);
            statuses.push(s);
        }
        backend.serve_vring(&vring, 0);
        assert_eq!(h.ring.used_idx(), 4);
        for (i, s) in statuses.into_iter().enumerate() {
            assert_eq!(h.status_at(s), S_OK);
            assert_eq!(h.dev.bytes(i * 512, 512), [i as u8 + 1; 512]);
        }
    }
}

#[test]
fn any_layout_header_data_and_status_split_or_merged() {
    let mut h = Harness::new();
    let data = pattern(1024, 3);
    // Header and data in one buffer, the data split again across two more, at odd offsets.
    let mut first = VIRTIO_BLK_T_OUT.to_le_bytes().to_vec();
    first.extend_from_slice(&[0; 4]);
    first.extend_from_slice(&4u64.to_le_bytes());
    first.extend_from_slice(&data[..100]);
    let a = h.ring.put(&first);
    let b = h.ring.put(&data[100..613]);
    let c = h.ring.put(&data[613..]);
    let s = h.status();
    h.ring.add_chain(&[
        desc(a, first.len() as u32, 0),
        desc(b, 513, 0),
        desc(c, 411, 0),
        desc(s, 1, WRITE),
    ]);
    assert_eq!(h.serve(), 1);
    assert_eq!(h.status_at(s), S_OK);
    assert_eq!(h.dev.bytes(4 * 512, 1024), data);

    // IN with the header split in two and the status in the same buffer as the data's tail.
    let hdr = h.header(VIRTIO_BLK_T_IN, 4);
    let d1 = h.ring.alloc(600);
    let d2 = h.ring.alloc(425);
    h.ring.add_chain(&[
        desc(hdr, 5, 0),
        desc(hdr + 5, 11, 0),
        desc(d1, 600, WRITE),
        desc(d2, 425, WRITE),
    ]);
    assert_eq!(h.serve(), 1);
    let mut back = h.ring.get(d1, 600);
    back.extend(h.ring.get(d2, 424));
    assert_eq!(back, data);
    assert_eq!(h.ring.get(d2 + 424, 1), [S_OK]);
    assert_eq!(h.last_used_len(), 1025);
}

#[test]
fn indirect_chain_is_served() {
    let mut h = Harness::new();
    h.dev.fill(0, &pattern(512, 9));
    let hdr = h.header(VIRTIO_BLK_T_IN, 0);
    let d = h.ring.alloc(512);
    let s = h.status();
    let table = h.ring.alloc(48);
    let descs = [
        super::test_ring::Desc {
            next: 1,
            ..desc(hdr, 16, super::test_ring::NEXT)
        },
        super::test_ring::Desc {
            next: 2,
            ..desc(d, 512, WRITE | super::test_ring::NEXT)
        },
        desc(s, 1, WRITE),
    ];
    h.ring.write_descs(table, 0, &descs);
    h.ring
        .add_chain(&[desc(table, 48, super::test_ring::INDIRECT)]);
    assert_eq!(h.serve(), 1);
    assert_eq!(h.status_at(s), S_OK);
    assert_eq!(h.ring.get(d, 512), pattern(512, 9));
}

#[test]
fn flush_get_id_and_unknown_types() {
    let mut h = Harness::new();
    assert_eq!(h.simple(VIRTIO_BLK_T_FLUSH, 0, &[]), S_OK);
    assert_eq!(h.dev.calls(), ["flush"]);

    let hdr = h.header(VIRTIO_BLK_T_GET_ID, 0);
    let d = h.ring.alloc(20);
    let s = h.status();
    h.ring
        .add_chain(&[desc(hdr, 16, 0), desc(d, 20, WRITE), desc(s, 1, WRITE)]);
    h.serve();
    assert_eq!(h.status_at(s), S_OK);
    assert_eq!(&h.ring.get(d, 20)[..], b"pool/vol1\0\0\0\0\0\0\0\0\0\0\0");
    assert_eq!(h.last_used_len(), 21);

    // A short buffer gets what fits.
    let hdr = h.header(VIRTIO_BLK_T_GET_ID, 0);
    let d = h.ring.put(&[0xaa; 8]);
    let s = h.status();
    h.ring
        .add_chain(&[desc(hdr, 16, 0), desc(d, 4, WRITE), desc(s, 1, WRITE)]);
    h.serve();
    assert_eq!(h.status_at(s), S_OK);
    assert_eq!(h.ring.get(d, 8), b"pool\xaa\xaa\xaa\xaa");

    for kind in [
        VIRTIO_BLK_T_SCSI_CMD,
        VIRTIO_BLK_T_SECURE_ERASE,
        0xdead_beef,
    ] {
        assert_eq!(h.simple(kind, 0, &[]), S_UNSUPP, "type {kind:#x}");
    }
}

#[test]
fn discard_and_write_zeroes() {
    let mut h = Harness::new();
    h.dev.fill(0, &[0x55; 65536]);
    let mut ranges = range(0, 8, 0);
    ranges.extend(range(64, 16, 0));
    assert_eq!(h.simple(VIRTIO_BLK_T_DISCARD, 0, &ranges), S_OK);
    assert_eq!(h.dev.calls(), ["trim 0 4096", "trim 32768 8192"]);
    assert_eq!(h.dev.bytes(0, 4096), vec![0; 4096]);
    assert_eq!(h.dev.bytes(4096, 4), [0x55; 4]);

    let unmap = VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP;
    assert_eq!(
        h.simple(VIRTIO_BLK_T_WRITE_ZEROES, 0, &range(8, 1, unmap)),
        S_OK
    );
    assert_eq!(
        h.simple(VIRTIO_BLK_T_WRITE_ZEROES, 0, &range(9, 1, 0)),
        S_OK
    );
    let calls = h.dev.calls();
    assert_eq!(
        calls[2..],
        ["zero 4096 512 unmap=true", "zero 4608 512 unmap=false"]
    );
    assert_eq!(h.dev.bytes(4096, 1024), vec![0; 1024]);
    let s = h.counters.snapshot(false);
    assert_eq!((s.discards, s.write_zeroes, s.errors), (2, 2, 0));

    // UNMAP is a write-zeroes flag only; unknown flags are unsupported.
    assert_eq!(
        h.simple(VIRTIO_BLK_T_DISCARD, 0, &range(0, 8, unmap)),
        S_UNSUPP
    );
    assert_eq!(
        h.simple(VIRTIO_BLK_T_WRITE_ZEROES, 0, &range(0, 8, 2)),
        S_UNSUPP
    );
    assert_eq!(h.dev.calls().len(), 4);
}

#[test]
fn read_only_disk_refuses_writes_but_reads_and_flushes() {
    let mut h = Harness::with_device(MemDevice::new(DISK, 4096, true));
    h.dev.fill(512, b"kept");
    assert_eq!(h.write(1, &[1; 512]), S_IOERR);
    assert_eq!(h.simple(VIRTIO_BLK_T_DISCARD, 0, &range(0, 8, 0)), S_IOERR);
    assert_eq!(
        h.simple(VIRTIO_BLK_T_WRITE_ZEROES, 0, &range(0, 8, 0)),
        S_IOERR
    );
    assert_eq!(h.read(1, 512).1[..4], *b"kept");
    assert_eq!(h.simple(VIRTIO_BLK_T_FLUSH, 0, &[]), S_OK);
    assert_eq!(h.dev.calls(), ["flush"]);
    let f = config::features(true);
    assert_ne!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_eq!(
        f & (1 << VIRTIO_BLK_F_DISCARD | 1 << VIRTIO_BLK_F_WRITE_ZEROES),
        0
    );
    let f = config::features(false);
    assert_eq!(f & (1 << VIRTIO_BLK_F_RO), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_DISCARD), 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_MQ), 0);
}

#[test]
fn config_space_matches_the_virtio_layout() {
    use std::mem::offset_of;
    let dev = MemDevice::new(3 << 20, 65536, false);
    let c = config::config_space(&dev, 2);
    let u16_at = |o: usize| u16::from_le_bytes([c[o], c[o + 1]]);
    let u32_at = |o: usize| u32::from_le_bytes(c[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(c[o..o + 8].try_into().unwrap());
    type C = virtio_blk_config;
    assert_eq!(u64_at(offset_of!(C, capacity)), 6144);
    assert_eq!(u32_at(offset_of!(C, size_max)), config::SIZE_MAX);
    assert_eq!(u32_at(offset_of!(C, seg_max)), config::SEG_MAX);
    assert_eq!(u32_at(offset_of!(C, blk_size)), 512);
    // A 64 KiB block: 4 KiB physical blocks (the cap), 64 KiB optimal I/O and discards.
    assert_eq!(c[offset_of!(C, physical_block_exp)], 3);
    assert_eq!(u16_at(offset_of!(C, min_io_size)), 128);
    assert_eq!(u32_at(offset_of!(C, opt_io_size)), 128);
    assert_eq!(u16_at(offset_of!(C, num_queues)), 2);
    assert_eq!(u32_at(offset_of!(C, max_discard_sectors)) % 128, 0);
    assert_eq!(
        u32_at(offset_of!(C, max_discard_seg)),
        config::MAX_DISCARD_SEG
    );
    assert_eq!(u32_at(offset_of!(C, discard_sector_alignment)), 128);
    assert!(u32_at(offset_of!(C, max_write_zeroes_sectors)) > 0);
    assert_eq!(u32_at(offset_of!(C, max_write_zeroes_seg)), 1);
    assert_eq!(c[offset_of!(C, write_zeroes_may_unmap)], 1);
    assert_eq!(offset_of!(C, max_secure_erase_sectors), CONFIG_LEN);
    // Frontends may read a longer layout, or a part.
    let long = config_slice(&c, 0, 96);
    assert_eq!(
        (&long[..CONFIG_LEN], &long[CONFIG_LEN..]),
        (&c[..], &[0u8; 36][..])
    );
    assert_eq!(config_slice(&c, 34, 2), [2, 0]);
    assert_eq!(config_slice(&c, u32::MAX, 4), [0; 4]);
    // An odd block size is treated as 512 bytes.
    let odd = config::config_space(&MemDevice::new(4096, 1000, false), 1);
    let alignment = offset_of!(C, discard_sector_alignment);
    assert_eq!(odd[offset_of!(C, physical_block_exp)], 0);
    assert_eq!(odd[alignment..alignment + 4], 1u32.to_le_bytes());
}
