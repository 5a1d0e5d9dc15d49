//! The driver's side of a split virtqueue for the unit tests: guest memory, a descriptor
//! table, the available ring, and reading back the used ring. Descriptors are written raw, so
//! tests can build any chain a hostile driver could.

use super::request::Mem;
use virtio_bindings::virtio_ring::{VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

pub const QUEUE_SIZE: u16 = 16;
pub const DESC_TABLE: u64 = 0;
pub const AVAIL: u64 = 0x1000;
pub const USED: u64 = 0x2000;
/// Where test buffers are carved from.
const HEAP: u64 = 0x1_0000;
/// Guest memory size: room for a request larger than the cap.
pub const MEM_SIZE: u64 = 40 << 20;

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

pub struct TestRing {
    pub mem: Mem,
    pub queue: Queue,
    next_desc: u16,
    avail_idx: u16,
    heap: u64,
}

impl TestRing {
    pub fn new() -> TestRing {
        let mem = Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let mut queue = Queue::new(QUEUE_SIZE).unwrap();
        queue.set_size(QUEUE_SIZE);
        queue.set_desc_table_address(Some(DESC_TABLE as u32), Some(0));
        queue.set_avail_ring_address(Some(AVAIL as u32), Some(0));
        queue.set_used_ring_address(Some(USED as u32), Some(0));
        queue.set_ready(true);
        assert!(queue.is_valid(&mem));
        TestRing {
            mem,
            queue,
            next_desc: 0,
            avail_idx: 0,
            heap: HEAP,
        }
    }

    /// A fresh zeroed buffer of `len` bytes in guest memory.
    pub fn alloc(&mut self, len: u64) -> u64 {
        let at = self.heap;
        self.heap = (self.heap + len + 15) & !15;
        assert!(self.heap <= MEM_SIZE, "test guest memory exhausted");
        at
    }

    /// Stores `bytes` in a fresh buffer.
    pub fn put(&mut self, bytes: &[u8]) -> u64 {
        let at = self.alloc(bytes.len() as u64);
        self.mem.write_slice(bytes, GuestAddress(at)).unwrap();
        at
    }

    pub fn get(&self, addr: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        self.mem.read_slice(&mut v, GuestAddress(addr)).unwrap();
        v
    }

    /// Writes descriptors at `table[at..]` as they are (flags and next included).
    pub fn write_descs(&self, table: u64, at: u16, descs: &[Desc]) {
        for (i, d) in descs.iter().enumerate() {
            let mut raw = d.addr.to_le_bytes().to_vec();
            raw.extend_from_slice(&d.len.to_le_bytes());
            raw.extend_from_slice(&d.flags.to_le_bytes());
            raw.extend_from_slice(&d.next.to_le_bytes());
            let a = table + 16 * (u64::from(at) + i as u64);
            self.mem.write_slice(&raw, GuestAddress(a)).unwrap();
        }
    }

    /// Adds `descs` as one chain (NEXT links added) and makes it available; returns its head.
    pub fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        let n = descs.len() as u16;
        assert!(head + n <= QUEUE_SIZE, "the test queue is full");
        let linked: Vec<Desc> = descs
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut d = *d;
                if i + 1 < descs.len() {
                    d.flags |= NEXT;
                    d.next = head + i as u16 + 1;
                }
                d
            })
            .collect();
        self.write_descs(DESC_TABLE, head, &linked);
        self.next_desc += n;
        self.publish(head);
        head
    }

    /// Writes raw descriptors at the next free table slots without making them available;
    /// returns the first slot.
    pub fn reserve(&mut self, descs: &[Desc]) -> u16 {
        let at = self.next_desc;
        self.write_descs(DESC_TABLE, at, descs);
        self.next_desc += descs.len() as u16;
        at
    }

    /// Puts `head` in the available ring.
    pub fn publish(&mut self, head: u16) {
        let slot = AVAIL + 4 + 2 * u64::from(self.avail_idx % QUEUE_SIZE);
        self.mem.write_obj(head, GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        self.set_avail_idx(self.avail_idx);
    }

    /// Sets the available index as a driver would, even to nonsense.
    pub fn set_avail_idx(&self, idx: u16) {
        self.mem.write_obj(idx, GuestAddress(AVAIL + 2)).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        self.mem.read_obj(GuestAddress(USED + 2)).unwrap()
    }

    /// Used ring entry `i`: (head, length).
    pub fn used(&self, i: u16) -> (u32, u32) {
        let at = USED + 4 + 8 * u64::from(i % QUEUE_SIZE);
        let id: u32 = self.mem.read_obj(GuestAddress(at)).unwrap();
        let len: u32 = self.mem.read_obj(GuestAddress(at + 4)).unwrap();
        (id, len)
    }

    /// Frees every descriptor slot (after the device has returned them).
    pub fn recycle(&mut self) {
        self.next_desc = 0;
    }
}
