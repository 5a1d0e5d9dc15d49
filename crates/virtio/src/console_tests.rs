use super::*;
use std::time::{Duration, Instant};
use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor as SplitDescriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

#[derive(Clone, Default)]
struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct NoInterrupt;
impl Interrupt for NoInterrupt {
    fn queue(&self, _: u16) {}
    fn config(&self) {}
}

fn desc(addr: u64, len: u32, flags: u32) -> RawDescriptor {
    RawDescriptor::from(SplitDescriptor::new(addr, len, flags as u16, 0))
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

struct Setup<'a> {
    rx: MockSplitQueue<'a, GuestMemory>,
    tx: MockSplitQueue<'a, GuestMemory>,
    rx_kick: EventFd,
    tx_kick: EventFd,
}

fn activate<'a>(con: &mut Console, mem: &'a GuestMemory) -> Setup<'a> {
    let rx = MockSplitQueue::create(mem, GuestAddress(0), 16);
    let tx = MockSplitQueue::create(mem, GuestAddress(0x4000), 16);
    let (rx_notify, tx_notify) = (EventFd::new(0).unwrap(), EventFd::new(0).unwrap());
    let setup = Setup {
        rx_kick: rx_notify.try_clone().unwrap(),
        tx_kick: tx_notify.try_clone().unwrap(),
        rx,
        tx,
    };
    con.activate(Activation {
        mem: mem.clone(),
        queues: vec![
            QueueHandle {
                index: 0,
                queue: setup.rx.create_queue().unwrap(),
                notify: rx_notify,
            },
            QueueHandle {
                index: 1,
                queue: setup.tx.create_queue().unwrap(),
                notify: tx_notify,
            },
        ],
        interrupt: Arc::new(NoInterrupt),
        features: con.features(),
        writes: None,
    })
    .unwrap();
    setup
}

fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap()
}

#[test]
fn guest_output_reaches_the_console_and_typed_input_the_guest() {
    let mem = memory();
    let sink = Sink::default();
    let mut con = Console::new(Box::new(sink.clone())).unwrap();
    let s = activate(&mut con, &mem);

    mem.write_slice(b"hello from hvc0", GuestAddress(0x10000))
        .unwrap();
    s.tx.add_desc_chains(&[desc(0x10000, 15, 0)], 0).unwrap();
    s.tx_kick.write(1).unwrap();
    wait_for("output", || sink.0.lock().unwrap().len() == 15);
    assert_eq!(&sink.0.lock().unwrap()[..], b"hello from hvc0");

    // Typed before any receive buffer exists: held, then split over the buffers posted.
    assert_eq!(con.input().push(b"typed"), 5);
    s.rx.add_desc_chains(
        &[
            desc(0x20000, 3, VRING_DESC_F_WRITE),
            desc(0x30000, 10, VRING_DESC_F_WRITE),
        ],
        0,
    )
    .unwrap();
    s.rx_kick.write(1).unwrap();
    wait_for("input", || s.rx.used().idx().load() == 2);
    let used = |i| s.rx.used().ring().ref_at(i).unwrap().load().len();
    assert_eq!((used(0), used(1)), (3, 2));
    let mut got = [0u8; 5];
    mem.read_slice(&mut got[..3], GuestAddress(0x20000))
        .unwrap();
    mem.read_slice(&mut got[3..], GuestAddress(0x30000))
        .unwrap();
    assert_eq!(&got, b"typed");
    con.reset();
    assert!(con.counters().contains(&("rx_bytes", 5)));
    assert!(con.counters().contains(&("tx_bytes", 15)));
}

#[test]
fn input_is_bounded_and_bad_buffers_are_counted() {
    let mem = memory();
    let mut con = Console::new(Box::new(Sink::default())).unwrap();
    let big = vec![b'x'; INPUT_CAPACITY + 100];
    assert_eq!(con.input().push(&big), INPUT_CAPACITY);
    assert_eq!(con.input().push(b"more"), 0);
    let s = activate(&mut con, &mem);
    s.tx.add_desc_chains(&[desc(0x7000_0000, 64, 0)], 0)
        .unwrap();
    s.tx_kick.write(1).unwrap();
    wait_for("the bad chain", || s.tx.used().idx().load() == 1);
    con.reset();
    assert!(con.counters().contains(&("errors", 1)));
}
