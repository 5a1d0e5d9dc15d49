//! The used-ring follower, with the backend's side simulated by writing used entries by hand:
//! what it reports, and that hostile rings and chains cost bounded work and no panic.

use super::*;
use crate::vhost_user::test_support::*;
use virtio_bindings::virtio_ring::VRING_DESC_F_INDIRECT;

const INDIRECT: u16 = VRING_DESC_F_INDIRECT as u16;

struct Rig {
    mem: GuestMemory,
    tq: TestQueue,
    shadow: ShadowMemory,
    watcher: UsedWatcher,
    writes: Arc<RecordingWrites>,
    counters: Counters,
}

fn rig() -> Rig {
    let mem = shared_memory();
    let (tq, handle) = TestQueue::new(&mem, 0, HIGH, LOW + 0x10_0000);
    let shadow = ShadowMemory::new(&mem).unwrap();
    let watcher = UsedWatcher::new(0, &handle.queue, &shadow).unwrap();
    Rig {
        mem,
        tq,
        shadow,
        watcher,
        writes: Arc::default(),
        counters: Counters::default(),
    }
}

impl Rig {
    /// What a backend does when it completes chain `id`.
    fn backend_returns(&self, id: u32, len: u32) {
        let idx = self.tq.used_idx();
        let slot = self.tq.used + 4 + 8 * u64::from(idx % QSIZE);
        self.mem.write_obj(id.to_le(), GuestAddress(slot)).unwrap();
        self.mem
            .write_obj(len.to_le(), GuestAddress(slot + 4))
            .unwrap();
        self.set_used_idx(idx.wrapping_add(1));
    }

    fn set_used_idx(&self, idx: u16) {
        self.mem
            .write_obj(idx.to_le(), GuestAddress(self.tq.used + 2))
            .unwrap();
    }

    fn report(&mut self) {
        let writes: Option<Arc<dyn GuestWrites>> = Some(self.writes.clone());
        self.watcher
            .report_new(&self.shadow, &writes, &self.counters);
    }

    fn used_entries(&self) -> u64 {
        self.counters.used_entries.load(Ordering::Relaxed)
    }

    fn errors(&self) -> u64 {
        self.counters.errors.load(Ordering::Relaxed)
    }
}

#[test]
fn reports_the_writable_buffers_of_each_returned_chain() {
    let mut r = rig();
    let (a, b, c) = (0x20_0000, 0x30_0000, HIGH + 0x50_0000);
    let h1 =
        r.tq.add_chain(&[(a, 16, 0), (b, 100, WRITE), (c, 1, WRITE)]);
    let h2 = r.tq.add_chain(&[(a + 0x1000, 64, WRITE)]);
    r.backend_returns(u32::from(h1), 101);
    r.backend_returns(u32::from(h2), 64);
    r.report();
    assert_eq!(r.writes.all(), vec![(b, 100), (c, 1), (a + 0x1000, 64)]);
    assert_eq!(r.used_entries(), 2);
    // Nothing new: nothing more reported.
    r.report();
    assert_eq!(r.writes.all().len(), 3);
    assert_eq!(r.errors(), 0);
}

#[test]
fn follows_indirect_tables() {
    let mut r = rig();
    let table = 0x40_0000;
    let inner: [(u64, u32, u16, u16); 2] = [(0x41_0000, 16, NEXT, 1), (0x42_0000, 4096, WRITE, 0)];
    for (i, (addr, len, flags, next)) in inner.into_iter().enumerate() {
        let at = table + 16 * i as u64;
        r.mem.write_obj(addr, GuestAddress(at)).unwrap();
        r.mem.write_obj(len, GuestAddress(at + 8)).unwrap();
        r.mem.write_obj(flags, GuestAddress(at + 12)).unwrap();
        r.mem.write_obj(next, GuestAddress(at + 14)).unwrap();
    }
    let head = r.tq.add_chain(&[(table, 32, INDIRECT)]);
    r.backend_returns(u32::from(head), 4096);
    r.report();
    assert_eq!(r.writes.all(), vec![(0x42_0000, 4096)]);
}

#[test]
fn hostile_entries_and_chains_are_bounded() {
    let mut r = rig();
    // A head outside the descriptor table.
    r.backend_returns(u32::from(QSIZE), 0);
    r.backend_returns(u32::MAX, 0);
    r.report();
    assert_eq!(r.errors(), 2);
    assert!(r.writes.all().is_empty());

    // A chain that loops (0 -> 1 -> 0 ...): the walk stops after at most the queue size.
    r.tq.write_desc(0, (0x20_0000, 8, WRITE | NEXT), 1);
    r.tq.write_desc(1, (0x21_0000, 8, WRITE | NEXT), 0);
    r.backend_returns(0, 0);
    r.report();
    let n = r.writes.all().len();
    assert!(n > 0 && n <= usize::from(QSIZE), "{n} buffers");

    // A used index far ahead of the ring: only the last `size` entries are looked at.
    let before = r.used_entries();
    let idx = r.tq.used_idx();
    r.set_used_idx(idx.wrapping_add(40_000));
    r.report();
    assert_eq!(r.used_entries() - before, u64::from(QSIZE));
    // One for the jump, and the two bad heads still in slots 0 and 1, met again.
    assert_eq!(r.errors(), 5);
}

#[test]
fn without_a_writes_sink_entries_are_still_counted() {
    let mut r = rig();
    let head = r.tq.add_chain(&[(0x20_0000, 8, WRITE)]);
    r.backend_returns(u32::from(head), 8);
    r.watcher.report_new(&r.shadow, &None, &r.counters);
    assert_eq!(r.used_entries(), 1);
}

/// Checks, at the moment of each interrupt, that the buffer was already reported.
struct CheckingIrq {
    writes: Arc<RecordingWrites>,
    buffer: u64,
    seen: Mutex<Vec<(u16, bool)>>,
}

impl Interrupt for CheckingIrq {
    fn queue(&self, index: u16) {
        let reported = self.writes.covers(self.buffer, 512);
        self.seen.lock().unwrap().push((index, reported));
    }
    fn config(&self) {}
}

#[test]
fn a_call_reports_before_it_interrupts() {
    let r = rig();
    let Rig {
        mut tq,
        shadow,
        watcher,
        writes,
        mem,
        ..
    } = r;
    let buffer = 0x20_0000;
    let head = tq.add_chain(&[(buffer, 512, WRITE)]);
    let call = EventFd::new(libc::EFD_NONBLOCK).unwrap();
    let counters = Arc::new(Counters::default());
    let mut state = CallState {
        mem: shadow,
        writes: Some(writes.clone()),
        queues: vec![(call.try_clone().unwrap(), watcher)],
        counters: counters.clone(),
    };
    // The backend: used entry, then the call.
    let slot = tq.used + 4;
    mem.write_obj(u32::from(head), GuestAddress(slot)).unwrap();
    mem.write_obj(1u16, GuestAddress(tq.used + 2)).unwrap();
    call.write(1).unwrap();

    let irq = CheckingIrq {
        writes,
        buffer,
        seen: Mutex::default(),
    };
    state.on_call(0, &irq);
    assert_eq!(*irq.seen.lock().unwrap(), vec![(0, true)]);
    assert_eq!(counters.interrupts.load(Ordering::Relaxed), 1);
    assert!(call.read().is_err(), "the call was consumed");
    // An index the worker never registered does nothing.
    state.on_call(7, &irq);
    assert_eq!(irq.seen.lock().unwrap().len(), 1);
}

#[test]
fn the_scratch_page_lies_above_guest_memory() {
    let r = rig();
    assert_eq!(r.mem.num_regions(), 2, "guest memory is not changed");
    assert_eq!(r.shadow.mem.num_regions(), 3);
    assert!(r.shadow.scratch.0 > r.mem.last_addr().0);
    assert_eq!(r.shadow.scratch.0 % SCRATCH_LEN as u64, 0);
}
