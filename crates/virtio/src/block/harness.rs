//! A test driver: guest memory with a split queue, a [`Block`] activated over it, and helpers
//! to submit requests and wait for their completion.

use super::{Block, BlockConfig, CacheMode, DiskFormat};
pub use crate::test_queue::RecordingWrites;
use crate::{Activation, GuestMemory, Interrupt, QueueHandle, VirtioDevice};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;
pub const QSIZE: u16 = 256;
/// Where buffers start; below are the rings.
const BUFFERS: u64 = 0x10_0000;
pub const MEM_SIZE: u64 = 32 << 20;

/// A file in the temp dir, removed when dropped.
pub struct TempImage(pub PathBuf);

impl TempImage {
    pub fn new(name: &str, contents: &[u8]) -> TempImage {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("vireo-blk-{}-{n}-{name}.img", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempImage(path)
    }

    /// `sectors` sectors, sector i filled with the byte `i + 1` (mod 256).
    pub fn patterned(name: &str, sectors: u64) -> TempImage {
        TempImage::new(name, &pattern(0, sectors))
    }

    pub fn contents(&self) -> Vec<u8> {
        std::fs::read(&self.0).unwrap()
    }
}

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What [`TempImage::patterned`] holds in sectors `first..first + count`.
pub fn pattern(first: u64, count: u64) -> Vec<u8> {
    (first..first + count)
        .flat_map(|s| std::iter::repeat_n((s + 1) as u8, 512))
        .collect()
}

pub fn config(path: &std::path::Path) -> BlockConfig {
    BlockConfig {
        path: path.to_path_buf(),
        format: DiskFormat::Raw,
        readonly: false,
        cache: CacheMode::Writeback,
        iops: None,
        bps: None,
        id: "vireo-test-serial".into(),
    }
}

#[derive(Default)]
pub struct RecordingInterrupt {
    pub queue: AtomicU64,
}

impl Interrupt for RecordingInterrupt {
    fn queue(&self, index: u16) {
        assert_eq!(index, 0);
        self.queue.fetch_add(1, Ordering::SeqCst);
    }
    fn config(&self) {}
}

/// One descriptor as the test writes it.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

pub fn desc(addr: u64, len: u32, flags: u16) -> Desc {
    Desc {
        addr,
        len,
        flags,
        next: 0,
    }
}

/// A completed request.
#[derive(Debug)]
pub struct Done {
    pub status: u8,
    pub used_len: u32,
    /// What the device wrote into the IN buffer.
    pub data: Vec<u8>,
}

pub struct Harness {
    pub mem: GuestMemory,
    pub block: Block,
    pub irq: Arc<RecordingInterrupt>,
    pub writes: Arc<RecordingWrites>,
    notify: EventFd,
    desc_table: u64,
    avail: u64,
    used: u64,
    next_desc: u16,
    avail_idx: u16,
    seen_used: u16,
    next_buf: u64,
}

impl Harness {
    pub fn new(cfg: BlockConfig) -> Harness {
        Harness::with_block(Block::new(cfg).unwrap(), true)
    }

    pub fn with_block(mut block: Block, event_idx: bool) -> Harness {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let (rings, mut queue) = crate::test_queue::TestQueue::new(&mem, 0);
        queue.set_event_idx(event_idx);
        let (desc_table, avail, used) = (rings.desc_table, rings.avail, rings.used);
        assert!(used + 6 + 8 * u64::from(QSIZE) < BUFFERS);
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let irq = Arc::new(RecordingInterrupt::default());
        let writes = Arc::new(RecordingWrites::default());
        let mut features = block.features();
        if !event_idx {
            features &= !crate::features::RING_EVENT_IDX;
        }
        block
            .activate(Activation {
                mem: mem.clone(),
                queues: vec![QueueHandle {
                    index: 0,
                    queue,
                    notify: notify.try_clone().unwrap(),
                }],
                interrupt: irq.clone(),
                features,
                writes: Some(writes.clone()),
            })
            .unwrap();
        Harness {
            mem,
            block,
            irq,
            writes,
            notify,
            desc_table,
            avail,
            used,
            next_desc: 0,
            avail_idx: 0,
            seen_used: 0,
            next_buf: BUFFERS,
        }
    }

    /// A zeroed guest buffer of `len` bytes.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_buf;
        self.next_buf = (addr + len + 15) & !15;
        assert!(self.next_buf <= MEM_SIZE, "test guest memory exhausted");
        self.mem
            .write_slice(&vec![0; len as usize], GuestAddress(addr))
            .unwrap();
        addr
    }

    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let addr = self.alloc(bytes.len() as u64);
        self.mem.write_slice(bytes, GuestAddress(addr)).unwrap();
        addr
    }

    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Writes `descs` at table index `at` (and following) as they are, in a table at `table`.
    pub fn write_descs(&self, table: u64, at: u16, descs: &[Desc]) {
        for (i, d) in descs.iter().enumerate() {
            let a = GuestAddress(table + 16 * (u64::from(at) + i as u64));
            self.mem.write_obj(d.addr.to_le(), a).unwrap();
            self.mem
                .write_obj(d.len.to_le(), GuestAddress(a.0 + 8))
                .unwrap();
            self.mem
                .write_obj(d.flags.to_le(), GuestAddress(a.0 + 12))
                .unwrap();
            self.mem
                .write_obj(d.next.to_le(), GuestAddress(a.0 + 14))
                .unwrap();
        }
    }

    /// Makes table entry `head` available (does not notify).
    pub fn publish(&mut self, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        self.mem
            .write_obj(head.to_le(), GuestAddress(slot))
            .unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        self.mem
            .write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Adds `descs` as one chain (NEXT links set here) and publishes it; returns its head.
    pub fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        let linked: Vec<Desc> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let last = i + 1 == descs.len();
                let next = (head + i as u16 + 1) % QSIZE;
                Desc {
                    flags: if last {
                        d.flags & !NEXT
                    } else {
                        d.flags | NEXT
                    },
                    next: if last { 0 } else { next },
                    ..*d
                }
            })
            .collect();
        for (i, d) in linked.iter().enumerate() {
            let at = (head + i as u16) % QSIZE;
            self.write_descs(self.desc_table, at, std::slice::from_ref(d));
        }
        self.next_desc = (head + descs.len() as u16) % QSIZE;
        self.publish(head);
        head
    }

    /// Adds a chain of one indirect descriptor pointing at `descs` (linked here).
    pub fn add_indirect(&mut self, descs: &[Desc]) -> u16 {
        let table = self.alloc(16 * descs.len() as u64);
        let linked: Vec<Desc> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let last = i + 1 == descs.len();
                Desc {
                    flags: if last {
                        d.flags & !NEXT
                    } else {
                        d.flags | NEXT
                    },
                    next: if last { 0 } else { i as u16 + 1 },
                    ..*d
                }
            })
            .collect();
        self.write_descs(table, 0, &linked);
        self.add_chain(&[desc(table, 16 * descs.len() as u32, INDIRECT)])
    }

    /// Writes raw descriptors at table index `at` and publishes `head`: for malformed chains.
    pub fn add_raw(&mut self, at: u16, descs: &[Desc], head: u16) {
        self.write_descs(self.desc_table, at, descs);
        self.next_desc = (at + descs.len() as u16) % QSIZE;
        self.publish(head);
    }

    /// Overwrites the available index as a broken driver might.
    pub fn set_avail_idx(&mut self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    pub fn kick(&self) {
        self.notify.write(1).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// Waits for `n` more used entries and returns them (head, length).
    pub fn wait_used(&mut self, n: u16) -> Vec<(u32, u32)> {
        let target = self.seen_used.wrapping_add(n);
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.used_idx() != target {
            assert!(
                Instant::now() < deadline,
                "the device did not complete the requests"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        let entries = (0..n)
            .map(|i| {
                let slot = self.used + 4 + 8 * u64::from(self.seen_used.wrapping_add(i) % QSIZE);
                let id: u32 = self.mem.read_obj(GuestAddress(slot)).unwrap();
                let len: u32 = self.mem.read_obj(GuestAddress(slot + 4)).unwrap();
                (u32::from_le(id), u32::from_le(len))
            })
            .collect();
        self.seen_used = target;
        entries
    }

    /// A request header for `kind` at `sector`.
    pub fn header(&mut self, kind: u32, sector: u64) -> u64 {
        let mut h = kind.to_le_bytes().to_vec();
        h.extend_from_slice(&[0; 4]);
        h.extend_from_slice(&sector.to_le_bytes());
        self.put(&h)
    }

    /// Submits the usual layout (header, OUT data, IN buffer, status) and waits for it.
    pub fn request(&mut self, kind: u32, sector: u64, out: &[u8], in_len: u32) -> Done {
        let header = self.header(kind, sector);
        let mut descs = vec![desc(header, 16, 0)];
        if !out.is_empty() {
            descs.push(desc(self.put(out), out.len() as u32, 0));
        }
        let data = self.alloc(u64::from(in_len));
        if in_len > 0 {
            descs.push(desc(data, in_len, WRITE));
        }
        let status = self.put(&[0xff]);
        descs.push(desc(status, 1, WRITE));
        let head = self.add_chain(&descs);
        self.kick();
        let used = self.wait_used(1);
        assert_eq!(used, vec![(u32::from(head), used[0].1)]);
        Done {
            status: self.get(status, 1)[0],
            used_len: used[0].1,
            data: self.get(data, in_len as usize),
        }
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.block
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap()
    }
}

/// A discard / write zeroes range.
pub fn range(sector: u64, sectors: u32, flags: u32) -> Vec<u8> {
    let mut r = sector.to_le_bytes().to_vec();
    r.extend_from_slice(&sectors.to_le_bytes());
    r.extend_from_slice(&flags.to_le_bytes());
    r
}
