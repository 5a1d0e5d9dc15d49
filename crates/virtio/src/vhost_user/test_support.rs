//! Test helpers: guest memory made as the VMM makes it (one memfd, two regions with a gap, like
//! low and high RAM), a split queue driven from the guest's side, and recording
//! [`Interrupt`] / [`GuestWrites`].

pub use crate::test_queue::RecordingWrites;
use crate::{GuestMemory, Interrupt, QueueHandle, VirtioDevice};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, FileOffset, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const LOW: u64 = 0;
/// Above a gap, as the VMM's RAM above 4 GiB.
pub const HIGH: u64 = 1 << 32;
pub const REGION: u64 = 16 << 20;
pub const QSIZE: u16 = 256;

/// Guest RAM in a memfd, mapped shared, in two regions.
pub fn shared_memory() -> GuestMemory {
    // SAFETY: a valid NUL-terminated name and constant flags; the result is checked and then
    // owned by the File.
    let fd = unsafe { libc::memfd_create(c"vireo-test-ram".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(2 * REGION).unwrap();
    let ranges = [(LOW, 0), (HIGH, REGION)].map(|(base, offset)| {
        (
            GuestAddress(base),
            REGION as usize,
            Some(FileOffset::new(file.try_clone().unwrap(), offset)),
        )
    });
    GuestMemory::from_ranges_with_files(ranges).unwrap()
}

/// Polls `f` until it holds or `timeout` passes; returns whether it held.
pub fn wait_for(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if f() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// One descriptor: address, length, flags (NEXT is set by [`TestQueue::add_chain`]).
pub type Desc = (u64, u32, u16);

/// The guest driver's side of one split queue.
pub struct TestQueue {
    pub mem: GuestMemory,
    desc: u64,
    avail: u64,
    pub used: u64,
    next_desc: u16,
    avail_idx: u16,
    seen_used: u16,
    next_buf: u64,
    notify: EventFd,
}

impl TestQueue {
    /// Rings at `rings`, buffers allocated upward from `bufs`; returns the handle to give the
    /// device (its notify eventfd is the one [`TestQueue::kick`] signals).
    pub fn new(mem: &GuestMemory, index: u16, rings: u64, bufs: u64) -> (TestQueue, QueueHandle) {
        // The shared layout: virtio_queue's MockSplitQueue overlaps the used ring with the
        // available ring at 256 entries.
        let (layout, queue) = crate::test_queue::TestQueue::new(mem, rings);
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let handle = QueueHandle {
            index,
            queue,
            notify: notify.try_clone().unwrap(),
        };
        let tq = TestQueue {
            mem: mem.clone(),
            desc: layout.desc_table,
            avail: layout.avail,
            used: layout.used,
            next_desc: 0,
            avail_idx: 0,
            seen_used: 0,
            next_buf: bufs,
            notify,
        };
        (tq, handle)
    }

    pub fn rings(&self) -> (u64, u64, u64) {
        (self.desc, self.avail, self.used)
    }

    pub fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_buf;
        self.next_buf = (addr + len + 15) & !15;
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

    /// Writes one raw descriptor at table index `at`.
    pub fn write_desc(&self, at: u16, (addr, len, flags): Desc, next: u16) {
        let a = self.desc + 16 * u64::from(at);
        self.mem.write_obj(addr.to_le(), GuestAddress(a)).unwrap();
        self.mem
            .write_obj(len.to_le(), GuestAddress(a + 8))
            .unwrap();
        self.mem
            .write_obj(flags.to_le(), GuestAddress(a + 12))
            .unwrap();
        self.mem
            .write_obj(next.to_le(), GuestAddress(a + 14))
            .unwrap();
    }

    /// Adds `descs` as one chain and makes it available (no kick); returns its head.
    pub fn add_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.next_desc;
        for (i, &(addr, len, flags)) in descs.iter().enumerate() {
            let at = (head + i as u16) % QSIZE;
            let last = i + 1 == descs.len();
            let flags = if last { flags & !NEXT } else { flags | NEXT };
            self.write_desc(at, (addr, len, flags), (at + 1) % QSIZE);
        }
        self.next_desc = (head + descs.len() as u16) % QSIZE;
        self.publish(head);
        head
    }

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

    pub fn kick(&self) {
        self.notify.write(1).unwrap();
    }

    pub fn used_idx(&self) -> u16 {
        u16::from_le(self.mem.read_obj(GuestAddress(self.used + 2)).unwrap())
    }

    /// Waits up to `timeout` for `n` more used entries: (head, length) each.
    pub fn try_wait_used(&mut self, n: u16, timeout: Duration) -> Option<Vec<(u32, u32)>> {
        let target = self.seen_used.wrapping_add(n);
        if !wait_for(timeout, || self.used_idx() == target) {
            return None;
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
        Some(entries)
    }

    pub fn wait_used(&mut self, n: u16) -> Vec<(u32, u32)> {
        self.try_wait_used(n, Duration::from_secs(10))
            .expect("the backend did not complete the requests")
    }
}

/// Counts interrupts per queue.
#[derive(Default)]
pub struct RecordingIrq {
    queues: [AtomicU64; 4],
}

impl RecordingIrq {
    pub fn count(&self, index: u16) -> u64 {
        self.queues[usize::from(index)].load(Ordering::SeqCst)
    }
}

impl Interrupt for RecordingIrq {
    fn queue(&self, index: u16) {
        self.queues[usize::from(index)].fetch_add(1, Ordering::SeqCst);
    }
    fn config(&self) {}
}

pub fn counter(dev: &dyn VirtioDevice, name: &str) -> u64 {
    dev.counters()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// A directory in the temp dir, removed with its contents when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("vireo-vu-{}-{n}-{name}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
