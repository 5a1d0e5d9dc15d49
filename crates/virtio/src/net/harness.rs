//! A test driver: guest memory with the receive and transmit queues, a [`Net`] activated over
//! them, and helpers to post buffers and collect what the device returned.
//!
//! Every test that opens a tap runs in [`in_netns`]: a thread moved into a network namespace of
//! its own, so that taps, addresses and traffic never reach the host's network, and everything
//! disappears with the thread.

use super::{Net, NetConfig, VNET_HDR_LEN};
pub use crate::test_queue::*;
use crate::{Activation, GuestMemory, Interrupt, QueueHandle, VirtioDevice};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_queue::QueueT;
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// Where buffers start; below are the rings.
pub const BUFFERS: u64 = 0x10_0000;
pub const MEM_SIZE: u64 = 32 << 20;
const RX_RING: u64 = 0;
const TX_RING: u64 = 0x4000;

/// Runs `f` on a thread in a new network namespace and waits for it (re-raising its panic).
/// Without root the test is skipped, loudly.
pub fn in_netns<F: FnOnce() + Send + 'static>(f: F) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("SKIPPED: virtio-net tests need root (tap devices, network namespaces)");
        return;
    }
    let r = std::thread::spawn(move || {
        // SAFETY: unshare takes no pointers. CLONE_NEWNET moves only the calling thread (and
        // the processes and threads it starts afterwards) into the new namespace.
        let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
        let mine = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let host = std::fs::read_link("/proc/self/ns/net").unwrap();
        assert_ne!(
            mine, host,
            "the test thread is still in the host's namespace"
        );
        // No IPv6 autoconfiguration chatter (router solicitations, MLD) on the test taps.
        for conf in ["default", "all"] {
            let _ = std::fs::write(format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6"), "1");
        }
        f()
    })
    .join();
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

/// A tap name unique in this process: `vt-PID-n`.
pub fn tap_name() -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "vt-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn config(tap: &str) -> NetConfig {
    NetConfig {
        tap: tap.to_string(),
        mac: Some(GUEST_MAC),
        bps: None,
        pps: None,
    }
}

pub const GUEST_MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

#[derive(Default)]
pub struct RecordingInterrupt {
    pub queue: [AtomicU64; 2],
}

impl Interrupt for RecordingInterrupt {
    fn queue(&self, index: u16) {
        self.queue[usize::from(index)].fetch_add(1, Ordering::SeqCst);
    }
    fn config(&self) {}
}

/// A packet the device put in the receive queue.
#[derive(Debug)]
pub struct Received {
    pub hdr: Vec<u8>,
    pub frame: Vec<u8>,
    /// The chains it filled: (head, used length).
    pub chains: Vec<(u16, u32)>,
}

impl Received {
    pub fn num_buffers(&self) -> u16 {
        u16::from_le_bytes([self.hdr[10], self.hdr[11]])
    }
}

pub struct Harness {
    pub mem: GuestMemory,
    pub net: Net,
    pub irq: Arc<RecordingInterrupt>,
    pub writes: Arc<RecordingWrites>,
    pub rx: TestQueue,
    pub tx: TestQueue,
    rx_notify: EventFd,
    tx_notify: EventFd,
    next_buf: u64,
    /// The buffers of each posted receive chain, by head.
    rx_bufs: HashMap<u16, Vec<(u64, u32)>>,
    /// Used receive entries seen and not yet consumed by [`Harness::recv`].
    rx_used: VecDeque<(u16, u32)>,
}

impl Harness {
    /// Opens `cfg`'s tap and activates the device with the features it offers, less `without`.
    pub fn new(cfg: NetConfig, without: u64) -> Harness {
        let net = Net::new(cfg).unwrap();
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let (rx, tx) = (
            TestQueue::new(&mem, RX_RING).0,
            TestQueue::new(&mem, TX_RING).0,
        );
        let mut h = Harness {
            mem,
            net,
            irq: Arc::default(),
            writes: Arc::default(),
            rx,
            tx,
            rx_notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            tx_notify: EventFd::new(libc::EFD_NONBLOCK).unwrap(),
            next_buf: BUFFERS,
            rx_bufs: HashMap::new(),
            rx_used: VecDeque::new(),
        };
        h.activate(without);
        h
    }

    /// (Re)activates the device over fresh, empty queues.
    pub fn activate(&mut self, without: u64) {
        self.net.reset();
        let mem = &self.mem;
        mem.write_slice(&vec![0; BUFFERS as usize], GuestAddress(0))
            .unwrap();
        let (rx, mut rxq) = TestQueue::new(mem, RX_RING);
        let (tx, mut txq) = TestQueue::new(mem, TX_RING);
        (self.rx, self.tx) = (rx, tx);
        self.rx_bufs.clear();
        self.rx_used.clear();
        let features = self.net.features() & !without;
        for q in [&mut rxq, &mut txq] {
            q.set_event_idx(features & crate::features::RING_EVENT_IDX != 0);
        }
        let handle = |index, queue, notify: &EventFd| QueueHandle {
            index,
            queue,
            notify: notify.try_clone().unwrap(),
        };
        self.net
            .activate(Activation {
                mem: mem.clone(),
                queues: vec![
                    handle(0, rxq, &self.rx_notify),
                    handle(1, txq, &self.tx_notify),
                ],
                interrupt: self.irq.clone(),
                features,
                writes: Some(self.writes.clone()),
            })
            .unwrap();
    }

    pub fn alloc(&mut self, len: u64) -> u64 {
        let addr = self.next_buf;
        self.next_buf = (addr + len + 15) & !15;
        if self.next_buf > MEM_SIZE {
            // Recycle: tests keep few buffers in flight at once.
            self.next_buf = BUFFERS;
            return self.alloc(len);
        }
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

    pub fn kick_rx(&self) {
        self.rx_notify.write(1).unwrap();
    }

    pub fn kick_tx(&self) {
        self.tx_notify.write(1).unwrap();
    }

    /// Queues `frame` behind the virtio-net header `hdr` (header and frame in separate
    /// descriptors, as Linux sends them) without notifying; returns the head.
    pub fn queue_tx(&mut self, hdr: &[u8; VNET_HDR_LEN], frame: &[u8]) -> u16 {
        let h = self.put(hdr);
        let f = self.put(frame);
        let descs = [desc(h, hdr.len() as u32, 0), desc(f, frame.len() as u32, 0)];
        self.tx.add_chain(&self.mem, &descs)
    }

    /// Sends `frame` with a zeroed header and waits for the device to return the chain.
    pub fn send(&mut self, frame: &[u8]) -> (u16, u32) {
        let head = self.queue_tx(&[0; VNET_HDR_LEN], frame);
        self.kick_tx();
        let used = self.tx.wait_used(&self.mem, 1, Duration::from_secs(5));
        assert_eq!(used[0].0, head);
        used[0]
    }

    /// Posts `count` receive chains of one `size`-byte buffer each, and notifies.
    pub fn post_rx(&mut self, count: usize, size: u32) {
        for _ in 0..count {
            let a = self.alloc(u64::from(size));
            self.post_rx_chain(&[desc(a, size, WRITE)]);
        }
        self.kick_rx();
    }

    pub fn post_rx_chain(&mut self, descs: &[Desc]) -> u16 {
        let head = self.rx.add_chain(&self.mem, descs);
        self.rx_bufs
            .insert(head, descs.iter().map(|d| (d.addr, d.len)).collect());
        head
    }

    /// The first buffer of the receive chain `head`.
    pub fn rx_buf(&self, head: u16) -> u64 {
        self.rx_bufs[&head][0].0
    }

    /// Waits for the next packet in the receive queue.
    pub fn recv(&mut self, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        while self.rx_used.is_empty() {
            assert!(Instant::now() < deadline, "no packet arrived");
            let used = self.rx.take_used(&self.mem);
            self.rx_used.extend(used);
            std::thread::sleep(Duration::from_micros(200));
        }
        let first = self.rx_used.pop_front().unwrap();
        let mut data = self.chain_data(first);
        let n = u16::from_le_bytes([data[10], data[11]]);
        let mut chains = vec![first];
        // All of a packet's buffers are published together: the rest are there already.
        let more = self.rx.take_used(&self.mem);
        self.rx_used.extend(more);
        for _ in 1..n {
            let c = self
                .rx_used
                .pop_front()
                .expect("num_buffers exceeds the used buffers");
            data.extend(self.chain_data(c));
            chains.push(c);
        }
        let frame = data.split_off(VNET_HDR_LEN);
        Received {
            hdr: data,
            frame,
            chains,
        }
    }

    /// What the device wrote into a used receive chain.
    fn chain_data(&self, (head, len): (u16, u32)) -> Vec<u8> {
        let mut out = Vec::new();
        let mut left = len as usize;
        for &(addr, size) in &self.rx_bufs[&head] {
            let n = left.min(size as usize);
            out.extend(self.get(addr, n));
            left -= n;
        }
        out
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.net
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap()
    }
}
