//! A test guest driver: the device's three queues in guest memory, posting buffers, sending
//! packets and collecting what the device sent. Host-side helpers are in `harness_util`.

pub use super::harness_util::*;
use super::packet::*;
use super::{Vsock, VsockConfig};
use crate::{Activation, GuestMemory, VirtioDevice};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use vm_memory::{Bytes, GuestAddress};

pub const NEXT: u16 = VRING_DESC_F_NEXT as u16;
pub const WRITE: u16 = VRING_DESC_F_WRITE as u16;
pub const GUEST_CID: u64 = 3;
pub const QSIZE: u16 = 256;
pub const MEM_SIZE: u64 = 32 << 20;
/// Linux's receive buffers: a header and 4 KiB.
pub const RX_BUF_LEN: u32 = HDR_LEN as u32 + 4096;
const RX_BUFS: u16 = 64;
const RX_BASE: u64 = 0x10_0000;
const RX_STRIDE: u64 = 0x1100;
const EV_BASE: u64 = 0x30_0000;
const EV_BUFS: u16 = 4;
pub const TX_BASE: u64 = 0x40_0000;
const TX_STRIDE: u64 = 0x1_0100;
pub const TX_SLOTS: u16 = QSIZE / 2;
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A packet the device sent.
#[derive(Debug, Clone)]
pub struct Packet {
    pub hdr: Header,
    pub data: Vec<u8>,
    /// The used length the device reported.
    pub used_len: u32,
}

pub struct Guest {
    pub mem: GuestMemory,
    pub dev: Vsock,
    pub dir: TempDir,
    pub uds: PathBuf,
    pub rx: Ring,
    pub tx: Ring,
    pub ev: Ring,
    pub writes: Arc<RecordingWrites>,
    pub received: VecDeque<Packet>,
    /// Re-post each receive buffer once its packet is collected.
    pub repost: bool,
    /// Receive buffers collected and not re-posted.
    pub held: Vec<u16>,
    /// Event buffers the device returned: (used length, the 4 bytes).
    pub events: Vec<(u32, u32)>,
    /// What the headers we send advertise.
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
    next_tx: u16,
}

impl Guest {
    /// A device on a fresh socket path, activated, with receive and event buffers posted.
    pub fn new() -> Guest {
        let dir = TempDir::new();
        let uds = dir.path("v.sock");
        let dev = Vsock::new(VsockConfig {
            guest_cid: GUEST_CID,
            uds_path: uds.clone(),
        })
        .unwrap();
        Guest::activate(dev, dir, uds, true)
    }

    /// Activates `dev` over new queues; `post_rx` says whether receive buffers are posted.
    pub fn activate(mut dev: Vsock, dir: TempDir, uds: PathBuf, post_rx: bool) -> Guest {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)]).unwrap();
        let (mut rx, rxq) = Ring::new(&mem, 0, 0);
        let (tx, txq) = Ring::new(&mem, 0x1_0000, 1);
        let (mut ev, evq) = Ring::new(&mem, 0x2_0000, 2);
        for i in 0..EV_BUFS {
            ev.write_desc(&mem, i, EV_BASE + 8 * u64::from(i), 4, WRITE, 0);
            ev.publish(&mem, i);
        }
        let mut held = Vec::new();
        for i in 0..RX_BUFS {
            rx.write_desc(
                &mem,
                i,
                RX_BASE + RX_STRIDE * u64::from(i),
                RX_BUF_LEN,
                WRITE,
                0,
            );
            if post_rx {
                rx.publish(&mem, i);
            } else {
                held.push(i);
            }
        }
        let writes = Arc::new(RecordingWrites::default());
        let features = dev.features();
        dev.activate(Activation {
            mem: mem.clone(),
            queues: vec![rxq, txq, evq],
            interrupt: Arc::new(NoInterrupt),
            features,
            writes: Some(writes.clone()),
        })
        .unwrap();
        Guest {
            mem,
            dev,
            dir,
            uds,
            rx,
            tx,
            ev,
            writes,
            received: VecDeque::new(),
            repost: true,
            held,
            events: Vec::new(),
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
            next_tx: 0,
        }
    }

    /// Posts the receive buffers held back.
    pub fn post_held_rx(&mut self) {
        for i in std::mem::take(&mut self.held) {
            self.rx.publish(&self.mem, i);
        }
        self.rx.kick();
    }

    /// A header from the guest's `guest_port` to host port `host_port`.
    pub fn hdr(&self, op: u16, guest_port: u32, host_port: u32) -> Header {
        Header {
            src_cid: GUEST_CID,
            dst_cid: HOST_CID,
            src_port: guest_port,
            dst_port: host_port,
            len: 0,
            kind: TYPE_STREAM,
            op,
            flags: 0,
            buf_alloc: self.buf_alloc,
            fwd_cnt: self.fwd_cnt,
        }
    }

    /// Posts packets (header and payload in two descriptors, as Linux does) without waiting;
    /// an RW header's `len` is set to its payload's.
    pub fn post(&mut self, pkts: &[(Header, &[u8])]) {
        for (hdr, data) in pkts {
            let mut hdr = *hdr;
            if hdr.op == OP_RW {
                hdr.len = data.len() as u32;
            }
            self.post_raw(&hdr.to_bytes(), data);
        }
    }

    /// Posts `header` bytes (whatever they say) and `data` as one chain.
    pub fn post_raw(&mut self, header: &[u8], data: &[u8]) {
        assert!(data.len() <= 0x1_0000);
        let slot = self.next_tx;
        self.next_tx = (slot + 1) % TX_SLOTS;
        let base = TX_BASE + TX_STRIDE * u64::from(slot);
        self.mem.write_slice(header, GuestAddress(base)).unwrap();
        let d = 2 * slot;
        let hlen = header.len() as u32;
        if data.is_empty() {
            self.tx.write_desc(&self.mem, d, base, hlen, 0, 0);
        } else {
            let at = base + 0x100;
            self.mem.write_slice(data, GuestAddress(at)).unwrap();
            self.tx.write_desc(&self.mem, d, base, hlen, NEXT, d + 1);
            self.tx
                .write_desc(&self.mem, d + 1, at, data.len() as u32, 0, 0);
        }
        self.tx.publish(&self.mem, d);
    }

    /// Sends packets and waits for the device to take them all.
    pub fn send_all(&mut self, pkts: &[(Header, &[u8])]) {
        assert!(pkts.len() <= usize::from(TX_SLOTS));
        self.post(pkts);
        self.tx.kick();
        let used = self.tx.wait_used(&self.mem, pkts.len());
        assert!(used.iter().all(|&(_, len)| len == 0));
    }

    pub fn send(&mut self, hdr: Header, data: &[u8]) {
        self.send_all(&[(hdr, data)]);
    }

    /// Collects what the device put in receive buffers (and event buffers).
    pub fn poll(&mut self) {
        for (id, len) in self.rx.take_used(&self.mem) {
            let id = id as u16;
            let addr = RX_BASE + RX_STRIDE * u64::from(id);
            let mut raw = [0u8; HDR_LEN];
            self.mem.read_slice(&mut raw, GuestAddress(addr)).unwrap();
            let hdr = Header::from_bytes(&raw);
            assert_eq!(len as usize, HDR_LEN + hdr.len as usize, "used length");
            let mut data = vec![0; hdr.len as usize];
            self.mem
                .read_slice(&mut data, GuestAddress(addr + HDR_LEN as u64))
                .unwrap();
            self.received.push_back(Packet {
                hdr,
                data,
                used_len: len,
            });
            if self.repost {
                self.rx.publish(&self.mem, id);
                self.rx.kick();
            } else {
                self.held.push(id);
            }
        }
        for (id, len) in self.ev.take_used(&self.mem) {
            let v: u32 = self
                .mem
                .read_obj(GuestAddress(EV_BASE + 8 * u64::from(id)))
                .unwrap();
            self.events.push((len, u32::from_le(v)));
        }
    }

    /// The next packet from the device.
    pub fn recv(&mut self) -> Packet {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            self.poll();
            if let Some(p) = self.received.pop_front() {
                assert_eq!(p.hdr.dst_cid, GUEST_CID);
                assert_eq!(p.hdr.kind, TYPE_STREAM);
                return p;
            }
            assert!(Instant::now() < deadline, "no packet from the device");
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The next packet if one comes within `wait`.
    pub fn try_recv(&mut self, wait: Duration) -> Option<Packet> {
        let deadline = Instant::now() + wait;
        loop {
            self.poll();
            if let Some(p) = self.received.pop_front() {
                return Some(p);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    /// The next packet, which must be `op`.
    pub fn expect(&mut self, op: u16) -> Packet {
        let p = self.recv();
        assert_eq!(p.hdr.op, op, "unexpected packet {:?}", p.hdr);
        p
    }

    /// Asserts the device sends nothing for `wait`.
    pub fn expect_quiet(&mut self, wait: Duration) {
        std::thread::sleep(wait);
        self.poll();
        assert!(
            self.received.is_empty(),
            "unexpected {:?}",
            self.received.front()
        );
    }

    /// The guest accepts a host-initiated connection to `port`: returns the host's port.
    pub fn accept(&mut self, port: u32) -> u32 {
        let req = self.expect(OP_REQUEST);
        assert_eq!((req.hdr.src_cid, req.hdr.dst_port), (HOST_CID, port));
        let host_port = req.hdr.src_port;
        self.send(self.hdr(OP_RESPONSE, port, host_port), &[]);
        host_port
    }

    pub fn counter(&self, name: &str) -> u64 {
        self.dev
            .counters()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
            .unwrap()
    }

    /// Waits until counter `name` reads `want`.
    pub fn wait_counter(&self, name: &str, want: u64) {
        let deadline = Instant::now() + TIMEOUT;
        while self.counter(name) != want {
            assert!(
                Instant::now() < deadline,
                "counter {name} is {}, not {want}",
                self.counter(name)
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
