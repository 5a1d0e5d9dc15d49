//! Test support: guest RAM built as the VMM builds it (a memfd mapped shared, so MADV_REMOVE
//! really frees), an interrupt/writes recorder, and the driver side of the queues.

use super::*;
use crate::device::{GuestWrites, Interrupt};
use std::fs::File;
use std::os::fd::FromRawFd;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, FileOffset, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

pub(super) const MIB: u64 = 1 << 20;
/// Guest RAM: [0, 4 MiB) and [8 MiB, 12 MiB), with a hole between (as below 4 GiB on a PC).
pub(super) const REGIONS: [(u64, u64); 2] = [(0, 4 * MIB), (8 * MIB, 4 * MIB)];
pub(super) const HOLE: u64 = 5 * MIB;
/// Where the tests put data they inflate or report.
pub(super) const DATA: u64 = MIB;
const RING_BASE: u64 = 0x1_0000;
const RING_STRIDE: u64 = 0x1_0000;
const RING_SIZE: u16 = 64;

pub(super) struct Ram {
    pub(super) file: File,
    pub(super) mem: GuestMemory,
}

pub(super) fn ram() -> Ram {
    // SAFETY: a constant NUL-terminated name and flags; the descriptor is checked and then
    // owned by the File.
    let fd = unsafe { libc::memfd_create(c"balloon-test".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh descriptor nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    let total: u64 = REGIONS.iter().map(|r| r.1).sum();
    file.set_len(total).unwrap();
    let mut off = 0;
    let mut ranges = Vec::new();
    for (base, len) in REGIONS {
        let f = FileOffset::new(file.try_clone().unwrap(), off);
        ranges.push((GuestAddress(base), len as usize, Some(f)));
        off += len;
    }
    let mem = GuestMemory::from_ranges_with_files(ranges).unwrap();
    Ram { file, mem }
}

impl Ram {
    /// Bytes of host memory the memfd holds.
    pub(super) fn allocated(&self) -> u64 {
        // st_blocks counts 512-byte units whatever the file system.
        self.file.metadata().unwrap().blocks() * 512
    }

    pub(super) fn fill(&self, gpa: u64, len: u64, byte: u8) {
        self.mem
            .write_slice(&vec![byte; len as usize], GuestAddress(gpa))
            .unwrap();
    }

    pub(super) fn read(&self, gpa: u64, len: u64) -> Vec<u8> {
        let mut v = vec![0u8; len as usize];
        self.mem.read_slice(&mut v, GuestAddress(gpa)).unwrap();
        v
    }

    pub(super) fn write_pfns(&self, gpa: u64, pfns: &[u32]) -> u32 {
        let bytes: Vec<u8> = pfns.iter().flat_map(|p| p.to_le_bytes()).collect();
        self.mem.write_slice(&bytes, GuestAddress(gpa)).unwrap();
        bytes.len() as u32
    }

    pub(super) fn write_stats(&self, gpa: u64, stats: &[(u16, u64)]) -> u32 {
        let bytes: Vec<u8> = stats
            .iter()
            .flat_map(|(t, v)| t.to_le_bytes().into_iter().chain(v.to_le_bytes()))
            .collect();
        self.mem.write_slice(&bytes, GuestAddress(gpa)).unwrap();
        bytes.len() as u32
    }
}

#[derive(Default)]
pub(super) struct Recorder {
    pub(super) queues: Mutex<Vec<u16>>,
    pub(super) configs: AtomicUsize,
    pub(super) writes: Mutex<Vec<(u64, u64)>>,
}

impl Interrupt for Recorder {
    fn queue(&self, index: u16) {
        self.queues.lock().unwrap().push(index);
    }
    fn config(&self) {
        self.configs.fetch_add(1, Ordering::SeqCst);
    }
}

impl GuestWrites for Recorder {
    fn written(&self, gpa: u64, len: u64) {
        self.writes.lock().unwrap().push((gpa, len));
    }
}

impl Recorder {
    pub(super) fn configs(&self) -> usize {
        self.configs.load(Ordering::SeqCst)
    }
}

pub(super) fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The driver's side of one queue.
pub(super) struct DriverQueue<'a> {
    pub(super) mock: MockSplitQueue<'a, GuestMemory>,
    pub(super) kick: EventFd,
    next_desc: u16,
    posted: u16,
}

impl DriverQueue<'_> {
    /// Posts one chain of `(addr, len, device-writable)` buffers and notifies the device.
    pub(super) fn post(&mut self, bufs: &[(u64, u32, bool)]) {
        let first = self.next_desc;
        let descs: Vec<RawDescriptor> = bufs
            .iter()
            .enumerate()
            .map(|(i, &(addr, len, write))| {
                let mut flags = if write { VRING_DESC_F_WRITE } else { 0 };
                if i + 1 < bufs.len() {
                    flags |= VRING_DESC_F_NEXT;
                }
                let next = first + i as u16 + 1;
                RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
            })
            .collect();
        self.mock.add_desc_chains(&descs, first).unwrap();
        self.next_desc = (first + bufs.len() as u16) % RING_SIZE;
        self.posted += 1;
        self.kick.write(1).unwrap();
    }

    pub(super) fn used(&self) -> u16 {
        self.mock.used().idx().load()
    }

    /// Waits until the device has used every chain posted so far.
    pub(super) fn wait_all_used(&self) {
        wait_for("the device to use the chains", || {
            self.used() == self.posted
        });
    }

    pub(super) fn used_len(&self, i: u16) -> u32 {
        self.mock
            .used()
            .ring()
            .ref_at(i.into())
            .unwrap()
            .load()
            .len()
    }
}

pub(super) struct Driver<'a> {
    pub(super) queues: Vec<DriverQueue<'a>>,
    pub(super) rec: Arc<Recorder>,
}

impl<'a> Driver<'a> {
    pub(super) fn q(&mut self, index: usize) -> &mut DriverQueue<'a> {
        &mut self.queues[index]
    }
}

/// Activates `dev` as a driver that accepted `features` and enabled `queues` queues would, its
/// rings at `RING_BASE + generation * 0x10_0000` (a re-activation gets fresh rings).
pub(super) fn activate<'a>(
    dev: &mut Balloon,
    ram: &'a Ram,
    features: u64,
    queues: usize,
    generation: u64,
) -> Driver<'a> {
    let rec = Arc::new(Recorder::default());
    let mut handles = Vec::new();
    let mut driver_queues = Vec::new();
    for i in 0..queues {
        let at = RING_BASE + generation * 0x10_0000 + i as u64 * RING_STRIDE;
        let mock = MockSplitQueue::create(&ram.mem, GuestAddress(at), RING_SIZE);
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        // The transport turns EVENT_IDX on when negotiated; these tests want every interrupt.
        let queue: virtio_queue::Queue = mock.create_queue().unwrap();
        handles.push(QueueHandle {
            index: i as u16,
            queue,
            notify: notify.try_clone().unwrap(),
        });
        driver_queues.push(DriverQueue {
            mock,
            kick: notify,
            next_desc: 0,
            posted: 0,
        });
    }
    let act = Activation {
        mem: ram.mem.clone(),
        queues: handles,
        interrupt: rec.clone(),
        features,
        writes: Some(rec.clone()),
    };
    dev.activate(act).unwrap();
    Driver {
        queues: driver_queues,
        rec,
    }
}

pub(super) fn counter(dev: &Balloon, name: &str) -> u64 {
    dev.counters()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, v)| v)
        .unwrap()
}

pub(super) fn config_u32(dev: &Balloon, offset: u64) -> u32 {
    let mut b = [0u8; 4];
    dev.read_config(offset, &mut b);
    u32::from_le_bytes(b)
}
