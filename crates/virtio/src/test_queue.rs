//! The driver's side of a split virtqueue, for the tests of every device: descriptor tables,
//! the available ring and reading back the used ring; and a recorder of reported guest writes.

use crate::{GuestMemory, GuestWrites};
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// The queue size the device tests use.
pub const QUEUE_SIZE: u16 = 256;

pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

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

/// The driver's view of one split queue.
pub struct TestQueue {
    pub desc_table: u64,
    pub avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    seen_used: u16,
}

impl TestQueue {
    /// The rings of a 256-entry queue at `at`: descriptors, then the available ring at +4 KiB,
    /// then the used ring at +5 KiB. (MockSplitQueue's layout is not used: it sizes the
    /// available ring in elements rather than bytes, so for 256 entries the used ring overlaps
    /// the available ring's upper half.)
    pub fn new(mem: &GuestMemory, at: u64) -> (TestQueue, Queue) {
        let tq = TestQueue {
            desc_table: at,
            avail: at + 0x1000,
            used: at + 0x1400,
            next_desc: 0,
            avail_idx: 0,
            seen_used: 0,
        };
        mem.write_slice(&[0; 0x2000], GuestAddress(at)).unwrap();
        let mut q = Queue::new(QUEUE_SIZE).unwrap();
        q.try_set_size(QUEUE_SIZE).unwrap();
        q.try_set_desc_table_address(GuestAddress(tq.desc_table))
            .unwrap();
        q.try_set_avail_ring_address(GuestAddress(tq.avail))
            .unwrap();
        q.try_set_used_ring_address(GuestAddress(tq.used)).unwrap();
        q.set_ready(true);
        assert!(q.is_valid(mem));
        (tq, q)
    }

    pub fn write_descs(&self, mem: &GuestMemory, table: u64, at: u16, descs: &[Desc]) {
        for (i, d) in descs.iter().enumerate() {
            let a = table + 16 * (u64::from(at) + i as u64);
            let mut raw = d.addr.to_le_bytes().to_vec();
            raw.extend_from_slice(&d.len.to_le_bytes());
            raw.extend_from_slice(&d.flags.to_le_bytes());
            raw.extend_from_slice(&d.next.to_le_bytes());
            mem.write_slice(&raw, GuestAddress(a)).unwrap();
        }
    }

    pub fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        std::sync::atomic::fence(Ordering::SeqCst);
        mem.write_obj(self.avail_idx.to_le(), GuestAddress(self.avail + 2))
            .unwrap();
    }

    /// Adds `descs` as one chain (NEXT links set here), publishes it and returns its head.
    pub fn add_chain(&mut self, mem: &GuestMemory, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        for (i, d) in descs.iter().enumerate() {
            let last = i + 1 == descs.len();
            let linked = Desc {
                flags: if last {
                    d.flags & !NEXT
                } else {
                    d.flags | NEXT
                },
                next: (head + i as u16 + 1) % QUEUE_SIZE,
                ..*d
            };
            let at = (head + i as u16) % QUEUE_SIZE;
            self.write_descs(mem, self.desc_table, at, &[linked]);
        }
        self.next_desc = (head + descs.len() as u16) % QUEUE_SIZE;
        self.publish(mem, head);
        head
    }

    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        u16::from_le(mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// The used entries (head, length) added since the last call, without waiting.
    pub fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u16, u32)> {
        let idx = self.used_idx(mem);
        let mut out = Vec::new();
        while self.seen_used != idx {
            let slot = self.used + 4 + 8 * u64::from(self.seen_used % QUEUE_SIZE);
            let id: u32 = mem.read_obj(GuestAddress(slot)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(slot + 4)).unwrap();
            out.push((u32::from_le(id) as u16, u32::from_le(len)));
            self.seen_used = self.seen_used.wrapping_add(1);
        }
        out
    }

    /// Waits up to `timeout` until `n` more used entries are there, and returns them.
    pub fn wait_used(&mut self, mem: &GuestMemory, n: u16, timeout: Duration) -> Vec<(u16, u32)> {
        let target = self.seen_used.wrapping_add(n);
        let deadline = Instant::now() + timeout;
        while self.used_idx(mem) != target {
            assert!(
                Instant::now() < deadline,
                "the device returned {} of {n} buffers",
                self.used_idx(mem).wrapping_sub(self.seen_used)
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        self.take_used(mem)
    }
}

/// Every range a device reported through [`GuestWrites`].
#[derive(Default)]
pub struct RecordingWrites(pub Mutex<Vec<(u64, u64)>>);

impl GuestWrites for RecordingWrites {
    fn written(&self, gpa: u64, len: u64) {
        self.0.lock().unwrap().push((gpa, len));
    }
}

impl RecordingWrites {
    /// Whether a reported range covers `[gpa, gpa + len)`.
    pub fn covers(&self, gpa: u64, len: u64) -> bool {
        self.0
            .lock()
            .unwrap()
            .iter()
            .any(|&(a, l)| a <= gpa && gpa + len <= a + l)
    }

    pub fn all(&self) -> Vec<(u64, u64)> {
        self.0.lock().unwrap().clone()
    }
}
