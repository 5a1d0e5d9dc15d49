//! VhostUserNet against the in-test backend of `net_backend` (built on the `vhost-user-backend`
//! crate): handshake, features, MAC, memory table, ring setup, and the data path with call
//! forwarding and write reporting.

use super::net_backend::{TestNet, HDR_LEN};
use super::test_support::*;
use super::{VhostUserError, VhostUserNet};
use crate::features::{RING_EVENT_IDX, VERSION_1};
use crate::{Activation, GuestMemory, VirtioDevice};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vhost::vhost_user::message::VhostUserProtocolFeatures;
use virtio_bindings::virtio_net::*;
use vm_memory::GuestAddress;

const PROTOCOL_FEATURES: u64 = 1 << 30;
const BACKEND_MAC: [u8; 6] = [0x02, 0x11, 0x22, 0x33, 0x44, 0x55];

fn bit(b: u32) -> u64 {
    1 << b
}

/// What a typical vhost-user-net backend offers, control queue and multiqueue included (we
/// must not pass those on).
fn offered() -> u64 {
    VERSION_1
        | RING_EVENT_IDX
        | PROTOCOL_FEATURES
        | bit(VIRTIO_NET_F_MAC)
        | bit(VIRTIO_NET_F_CSUM)
        | bit(VIRTIO_NET_F_GUEST_CSUM)
        | bit(VIRTIO_NET_F_MRG_RXBUF)
        | bit(VIRTIO_NET_F_CTRL_VQ)
        | bit(VIRTIO_NET_F_MQ)
}

fn backend(offered: u64) -> TestNet {
    let mut config = BACKEND_MAC.to_vec();
    config.extend_from_slice(&[1, 0, 1, 0]);
    let protocol = VhostUserProtocolFeatures::MQ
        | VhostUserProtocolFeatures::CONFIG
        | VhostUserProtocolFeatures::REPLY_ACK;
    TestNet::new(offered, protocol, config)
}

fn start(name: &str, net: TestNet) -> (TempDir, std::path::PathBuf, Arc<Mutex<TestNet>>) {
    let dir = TempDir::new(name);
    let sock = dir.join("net.sock");
    let state = net.serve(&sock);
    (dir, sock, state)
}

#[test]
fn negotiates_features_and_takes_the_backends_mac() {
    let (_dir, sock, _state) = start("hs", backend(offered()));
    let net = VhostUserNet::new(&sock, None).unwrap();
    assert_eq!(net.mac(), BACKEND_MAC);
    let f = net.features();
    for b in [
        VIRTIO_NET_F_MAC,
        VIRTIO_NET_F_STATUS,
        VIRTIO_NET_F_CSUM,
        VIRTIO_NET_F_MRG_RXBUF,
    ] {
        assert_ne!(f & bit(b), 0, "feature {b} missing");
    }
    assert_eq!(f & (VERSION_1 | RING_EVENT_IDX), VERSION_1 | RING_EVENT_IDX);
    for b in [
        VIRTIO_NET_F_CTRL_VQ,
        VIRTIO_NET_F_MQ,
        VIRTIO_NET_F_HOST_TSO4,
    ] {
        assert_eq!(f & bit(b), 0, "feature {b} must not be offered");
    }
    assert_eq!(f & PROTOCOL_FEATURES, 0);
    let mut config = [0u8; 12];
    net.read_config(0, &mut config);
    assert_eq!(config[..6], BACKEND_MAC);
    assert_eq!(config[6..], [1, 0, 1, 0, 0, 0], "link up, one queue pair");
    assert_eq!(counter(&net, "backend_queues"), 2);
    assert_eq!(counter(&net, "backend_connected"), 1);
    assert_eq!(net.queue_max_sizes().len(), 2);
}

#[test]
fn our_mac_wins_and_a_multicast_one_is_refused() {
    let (_dir, sock, _state) = start("mac", backend(offered()));
    let mac = [0x52, 0x54, 0, 1, 2, 3];
    assert_eq!(VhostUserNet::new(&sock, Some(mac)).unwrap().mac(), mac);
    let err = VhostUserNet::new(&sock, Some([1, 0, 0, 0, 0, 1]))
        .err()
        .unwrap();
    assert!(matches!(err, VhostUserError::MulticastMac { .. }), "{err}");
}

#[test]
fn without_a_backend_mac_a_random_local_one_is_used() {
    let (_dir, sock, _state) = start("rnd", backend(offered() & !bit(VIRTIO_NET_F_MAC)));
    let net = VhostUserNet::new(&sock, None).unwrap();
    assert_eq!(net.mac()[..3], [0x52, 0x54, 0x00]);
    assert_ne!(net.features() & bit(VIRTIO_NET_F_MAC), 0);
}

#[test]
fn a_backend_without_version_1_is_refused() {
    let (_dir, sock, _state) = start("v1", backend(offered() & !VERSION_1));
    let err = VhostUserNet::new(&sock, None).err().unwrap().to_string();
    assert!(
        err.contains("VERSION_1") && err.contains("net.sock"),
        "{err}"
    );
}

#[test]
fn a_short_config_reply_is_an_error_not_a_panic() {
    let mut net = backend(offered());
    net.config.truncate(3);
    let (_dir, sock, _state) = start("short", net);
    // The reply's header promises more than comes: the read waits for the rest until the
    // deadline, then the backend is disconnected.
    let err = VhostUserNet::with_timeout(&sock, None, Duration::from_millis(300))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            VhostUserError::Timeout {
                request: "GET_CONFIG",
                ..
            }
        ),
        "{err}"
    );
}

struct Guest {
    mem: GuestMemory,
    rx: TestQueue,
    tx: TestQueue,
    irq: Arc<RecordingIrq>,
    writes: Arc<RecordingWrites>,
}

/// Activates `net` with RX rings in high RAM and TX rings in low RAM.
fn activate(net: &mut VhostUserNet, mem: &GuestMemory, features: u64, base: u64) -> Guest {
    let (rx, rxh) = TestQueue::new(mem, 0, HIGH + base, HIGH + base + 0x10_0000);
    let (tx, txh) = TestQueue::new(mem, 1, LOW + base, LOW + base + 0x10_0000);
    let irq = Arc::new(RecordingIrq::default());
    let writes = Arc::new(RecordingWrites::default());
    net.activate(Activation {
        mem: mem.clone(),
        queues: vec![rxh, txh],
        interrupt: irq.clone(),
        features,
        writes: Some(writes.clone()),
    })
    .unwrap();
    Guest {
        mem: mem.clone(),
        rx,
        tx,
        irq,
        writes,
    }
}

impl Guest {
    fn send(&mut self, frame: &[u8]) -> u64 {
        let mut pkt = vec![0u8; HDR_LEN];
        pkt.extend_from_slice(frame);
        let buf = self.tx.put(&pkt);
        self.tx.add_chain(&[(buf, pkt.len() as u32, 0)]);
        self.tx.kick();
        buf
    }

    fn post_rx(&mut self, len: u32) -> u64 {
        let buf = self.rx.alloc(u64::from(len));
        self.rx.add_chain(&[(buf, len, WRITE)]);
        self.rx.kick();
        buf
    }
}

#[test]
fn sets_up_memory_and_rings_and_forwards_calls() {
    let (_dir, sock, state) = start("data", backend(offered()));
    let mut net = VhostUserNet::new(&sock, None).unwrap();
    let mem = shared_memory();
    // The driver accepts less than offered (no checksum offload); STATUS is ours alone.
    let features = net.features() & !bit(VIRTIO_NET_F_CSUM);
    let mut g = activate(&mut net, &mem, features, 0x1000);

    // Transmit: the backend reads the frame from guest memory and returns the buffer.
    let tx_buf = g.send(b"hello, switch");
    assert_eq!(g.tx.wait_used(1), vec![(0, 0)]);
    assert!(wait_for(Duration::from_secs(5), || g.irq.count(1) >= 1));
    {
        let s = state.lock().unwrap();
        assert_eq!(s.sent, vec![b"hello, switch".to_vec()]);
        let acked = s.acked.unwrap();
        let expect = (features & offered()) | PROTOCOL_FEATURES;
        assert_eq!(acked, expect, "acked {acked:#x}");
        assert_eq!(acked & bit(VIRTIO_NET_F_STATUS), 0);
        assert_eq!(s.regions, vec![(LOW, REGION), (HIGH, REGION)]);
        // The ring addresses we sent as host addresses map back to the driver's.
        let (d, a, u) = g.tx.rings();
        assert_eq!(s.rings[1], Some((QSIZE, d, a, u)));
    }
    assert!(
        !g.writes.covers(tx_buf, 1),
        "a transmit buffer is not written"
    );

    // Receive: the backend fills a receive buffer; we report it, then interrupt.
    state
        .lock()
        .unwrap()
        .to_guest
        .push_back(b"hello, guest".to_vec());
    let irqs = g.irq.count(0);
    let rx_buf = g.post_rx(2048);
    let used = g.rx.wait_used(1);
    assert_eq!(used, vec![(0, (HDR_LEN + 12) as u32)]);
    assert_eq!(g.rx.get(rx_buf + HDR_LEN as u64, 12), b"hello, guest");
    assert!(
        wait_for(Duration::from_secs(5), || g.writes.covers(rx_buf, 2048)),
        "{:x?}",
        g.writes.all()
    );
    assert!(wait_for(Duration::from_secs(5), || g.irq.count(0) > irqs));
    {
        let s = state.lock().unwrap();
        let (d, a, u) = g.rx.rings();
        assert_eq!(s.rings[0], Some((QSIZE, d, a, u)));
    }
    assert!(counter(&net, "interrupts") >= 2);
    assert!(counter(&net, "used_entries") >= 2);
    assert_eq!(counter(&net, "errors"), 0);

    // Reset, then a second activation on new rings.
    net.reset();
    let mut g = activate(&mut net, &mem, features, 0x40_0000);
    g.send(b"again");
    g.tx.wait_used(1);
    assert!(wait_for(Duration::from_secs(5), || {
        state.lock().unwrap().sent.len() == 2
    }));
    assert_eq!(state.lock().unwrap().sent[1], b"again");
    net.reset();
    assert_eq!(counter(&net, "errors"), 0);
    drop(g.mem);
}

#[test]
fn memory_without_a_file_is_refused() {
    let (_dir, sock, _state) = start("anon", backend(offered()));
    let mut net = VhostUserNet::new(&sock, None).unwrap();
    let mem = GuestMemory::from_ranges(&[(GuestAddress(0), 4 << 20)]).unwrap();
    let (_, rxh) = TestQueue::new(&mem, 0, 0x1000, 0x10_0000);
    let err = net
        .activate(Activation {
            mem: mem.clone(),
            queues: vec![rxh],
            interrupt: Arc::new(RecordingIrq::default()),
            features: net.features(),
            writes: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("not backed by a file"), "{err}");
    assert_eq!(counter(&net, "errors"), 1);
    // Nothing was started: the device can still be activated properly.
    let shared = shared_memory();
    let features = net.features();
    let mut g = activate(&mut net, &shared, features, 0x1000);
    g.send(b"ok");
    g.tx.wait_used(1);
}
