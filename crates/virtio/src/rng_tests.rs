use super::*;
use crate::device::{GuestWrites, Interrupt};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

#[derive(Default)]
struct Recorder {
    interrupts: Mutex<Vec<u16>>,
    writes: Mutex<Vec<(u64, u64)>>,
}

impl Interrupt for Recorder {
    fn queue(&self, index: u16) {
        self.interrupts.lock().unwrap().push(index);
    }
    fn config(&self) {}
}

impl GuestWrites for Recorder {
    fn written(&self, gpa: u64, len: u64) {
        self.writes.lock().unwrap().push((gpa, len));
    }
}

fn desc(addr: u64, len: u32, flags: u32, next: u16) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, next))
}

/// Posts `descs` as one chain, runs the device until it returns it, and gives the used length.
fn run_one(mem: &GuestMemory, descs: &[RawDescriptor]) -> (u32, Arc<Recorder>, Rng) {
    let vq = MockSplitQueue::new(mem, 16);
    vq.add_desc_chains(descs, 0).unwrap();
    let rec = Arc::new(Recorder::default());
    let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let kick = notify.try_clone().unwrap();
    let mut rng = Rng::new();
    rng.activate(Activation {
        mem: mem.clone(),
        queues: vec![QueueHandle {
            index: 0,
            queue: vq.create_queue().unwrap(),
            notify,
        }],
        interrupt: rec.clone(),
        features: rng.features(),
        writes: Some(rec.clone()),
    })
    .unwrap();
    kick.write(1).unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while vq.used().idx().load() == 0 {
        assert!(
            Instant::now() < deadline,
            "the device never used the buffer"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let len = vq.used().ring().ref_at(0).unwrap().load().len();
    (len, rec, rng)
}

fn memory(size: usize) -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), size)]).unwrap()
}

#[test]
fn fills_every_writable_buffer_and_reports_it() {
    let mem = memory(1 << 20);
    let descs = [
        desc(0x10000, 100, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 1),
        desc(0x20000, 200, VRING_DESC_F_WRITE, 0),
    ];
    let (len, rec, mut rng) = run_one(&mem, &descs);
    assert_eq!(len, 300);
    let mut a = [0u8; 100];
    let mut b = [0u8; 200];
    mem.read_slice(&mut a, GuestAddress(0x10000)).unwrap();
    mem.read_slice(&mut b, GuestAddress(0x20000)).unwrap();
    // 300 random bytes are all zero with probability 2^-2400.
    assert!(a.iter().chain(b.iter()).any(|&x| x != 0));
    assert_eq!(
        *rec.writes.lock().unwrap(),
        vec![(0x10000, 100), (0x20000, 200)]
    );
    assert_eq!(*rec.interrupts.lock().unwrap(), vec![0]);
    rng.reset();
    assert!(rng
        .counters()
        .iter()
        .any(|&(n, v)| n == "bytes" && v == 300));
}

#[test]
fn a_huge_buffer_gets_at_most_the_request_cap() {
    let mem = memory(4 << 20);
    let descs = [desc(0x100000, 2 << 20, VRING_DESC_F_WRITE, 0)];
    let (len, _, _) = run_one(&mem, &descs);
    assert_eq!(len as usize, MAX_REQUEST);
}

#[test]
fn a_buffer_outside_guest_memory_is_returned_empty() {
    let mem = memory(1 << 20);
    let descs = [desc(0x7fff_0000, 4096, VRING_DESC_F_WRITE, 0)];
    let (len, _, mut rng) = run_one(&mem, &descs);
    assert_eq!(len, 0);
    rng.reset();
    assert!(rng.counters().iter().any(|&(n, v)| n == "errors" && v == 1));
}

#[test]
fn a_bogus_available_index_does_not_wedge_the_worker() {
    let mem = memory(1 << 20);
    let vq = MockSplitQueue::new(&mem, 16);
    // Far more entries "available" than the ring holds: nothing can be popped.
    vq.avail().idx().store(1000);
    let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let kick = notify.try_clone().unwrap();
    let rec = Arc::new(Recorder::default());
    let mut rng = Rng::new();
    rng.activate(Activation {
        mem: mem.clone(),
        queues: vec![QueueHandle {
            index: 0,
            queue: vq.create_queue().unwrap(),
            notify,
        }],
        interrupt: rec.clone(),
        features: rng.features(),
        writes: None,
    })
    .unwrap();
    kick.write(1).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        rng.reset();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(5))
        .expect("reset must return: the worker spins");
}
