//! The virtio-net device behind one frontend connection, as `vhost-user-backend` drives it:
//! two queues (receive 0, transmit 1) served by one worker thread, the configuration space
//! (MAC, link up), and the delivery of the switch's frames into the receive queue from the
//! sending ports' threads.

use super::chain::{gather, scatter, Mem, RxPacket};
use crate::datapath::port::{ingress, Port};
use crate::datapath::switch::Switch;
use crate::datapath::tx_batch;
use std::io::{self, ErrorKind};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, OnceLock, Weak};
use vhost::vhost_user::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringRwLock, VringT};
use vireo_virtio::net::{config_space, RxOffloads, VNET_HDR_LEN};
use vireo_virtio::vhost_user::session::{config_slice, stop_event};
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};
use virtio_queue::QueueT;
use vm_memory::{GuestAddressSpace, GuestMemoryAtomic};
use vmm_sys_util::epoll::EventSet;

pub type Vring = VringRwLock<GuestMemoryAtomic<Mem>>;

const RX: usize = 0;
const TX: usize = 1;
const NUM_QUEUES: usize = 2;
/// The largest queue a frontend may set up (QEMU's rx/tx_queue_size go up to 1024).
const MAX_QUEUE_SIZE: usize = 1024;
/// Transmit chains served before the guest is interrupted and the queue looked at again.
const TX_BATCH: usize = 64;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// What is offered. Frames cross the switch with their virtio-net header, so checksum and
/// segmentation offloads pass through from guest to guest or tap (as between taps).
/// Not MRG_RXBUF: with the guest offloads on, a Linux driver posts 64 KiB receive chains,
/// one per frame, which needs no merging. No control queue, no multiqueue.
pub const FEATURES: u64 = bit(VIRTIO_F_VERSION_1)
    | bit(VIRTIO_RING_F_EVENT_IDX)
    | bit(VIRTIO_RING_F_INDIRECT_DESC)
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_MAC)
    | bit(VIRTIO_NET_F_STATUS);

/// The guest's virtio-net header: virtio 1.x has `struct virtio_net_hdr_v1` with
/// num_buffers; legacy without MRG_RXBUF the 10-byte header.
fn hdr_len(acked: u64) -> usize {
    if acked & (bit(VIRTIO_F_VERSION_1) | bit(VIRTIO_NET_F_MRG_RXBUF)) != 0 {
        VNET_HDR_LEN
    } else {
        10
    }
}

/// A frame refused to the guest: the port counts it dropped; why is only traced (a static
/// kind, not a formatted error, for a path every frame can take).
fn refuse(why: &'static str, kind: ErrorKind) -> io::Error {
    tracing::trace!("vhost-user-net: refused a frame: {why}");
    io::Error::from(kind)
}

pub struct NetBackend {
    port: Weak<Port>,
    switch: Weak<Switch>,
    /// The frontend's memory: the same object the daemon updates on SET_MEM_TABLE.
    mem: GuestMemoryAtomic<Mem>,
    /// `struct virtio_net_config`: the port's MAC, link up (frontends read it with
    /// GET_CONFIG; QEMU serves its own).
    config: Vec<u8>,
    /// The guest's virtio-net header length, from the acked features.
    hdr_len: AtomicUsize,
    /// The acked receive offloads ([`RxOffloads::bits`]), for every delivered frame.
    offloads: AtomicU8,
    event_idx: AtomicBool,
    /// The receive queue, seen first in the worker (the library hands vrings only there),
    /// then the same for the connection: set once, read by every delivery.
    rx: OnceLock<Vring>,
    /// The transmit buffer of the worker thread.
    scratch: Mutex<Vec<u8>>,
}

impl NetBackend {
    pub fn new(
        port: Weak<Port>,
        switch: Weak<Switch>,
        mac: [u8; 6],
        mem: GuestMemoryAtomic<Mem>,
    ) -> Self {
        NetBackend {
            port,
            switch,
            mem,
            config: config_space(&mac),
            hdr_len: AtomicUsize::new(hdr_len(0)),
            offloads: AtomicU8::new(RxOffloads::default().bits()),
            event_idx: AtomicBool::new(false),
            rx: OnceLock::new(),
            scratch: Mutex::new(Vec::new()),
        }
    }

    /// Puts a frame (the switch's packet, in pieces) into the guest's next receive chain
    /// and interrupts it. Never waits for the guest: no buffer, no frame.
    pub fn deliver(&self, parts: &[&[u8]]) -> io::Result<usize> {
        let offloads = RxOffloads::from_bits(self.offloads.load(Relaxed));
        let packet =
            RxPacket::new(parts, offloads).map_err(|why| refuse(why, ErrorKind::Unsupported))?;
        let Some(vring) = self.rx.get() else {
            return Err(refuse(
                "the guest's receive queue is not set up",
                ErrorKind::NotConnected,
            ));
        };
        let mem = self.mem.memory();
        let mut state = vring.get_mut();
        if !state.is_enabled() {
            return Err(refuse(
                "the guest's receive queue is disabled",
                ErrorKind::NotConnected,
            ));
        }
        let queue = state.get_queue_mut();
        let Some(chain) = queue.pop_descriptor_chain(&*mem) else {
            return Err(refuse("no receive buffer", ErrorKind::WouldBlock));
        };
        let head = chain.head_index();
        let result = scatter(&mem, chain, self.hdr_len.load(Relaxed), &packet);
        // A chain we could not fill goes back empty, or the guest would wait for it forever.
        let used = *result.as_ref().unwrap_or(&0);
        if let Err(e) = queue.add_used(&*mem, head, used) {
            tracing::debug!("vhost-user-net: cannot return receive chain {head}: {e}");
        }
        match state.needs_notification() {
            Ok(false) => {}
            _ => {
                if let Err(e) = state.signal_used_queue() {
                    tracing::debug!("vhost-user-net: cannot interrupt the guest: {e}");
                }
            }
        }
        match result {
            Ok(n) => Ok(n as usize),
            Err(why) => Err(refuse(why, ErrorKind::InvalidData)),
        }
    }

    /// Forwards what the guest transmitted. With EVENT_IDX the driver is asked not to kick
    /// while we work and the queue is looked at once more after re-enabling kicks.
    fn transmit(&self, vring: &Vring) {
        let (Some(port), Some(switch)) = (self.port.upgrade(), self.switch.upgrade()) else {
            return;
        };
        let mem = self.mem.memory();
        let mut buf = self.scratch.lock().unwrap_or_else(|e| e.into_inner());
        let event_idx = self.event_idx.load(Relaxed);
        let hdr_len = self.hdr_len.load(Relaxed);
        let mut idle_rounds = 0;
        loop {
            if event_idx {
                if let Err(e) = vring.get_mut().disable_notification() {
                    tracing::warn!("vhost-user-net: the transmit queue is broken: {e}");
                    return;
                }
            }
            let mut taken = 0;
            // Frames for taps are written together at the end of the batch (tx_batch.rs).
            let batching = tx_batch::begin();
            while taken < TX_BATCH {
                // The queue is locked per chain only: forwarding may wait for QoS tokens.
                let popped = {
                    let mut state = vring.get_mut();
                    if !state.is_enabled() {
                        None
                    } else {
                        let queue = state.get_queue_mut();
                        queue.pop_descriptor_chain(&*mem).map(|chain| {
                            let head = chain.head_index();
                            let n = gather(&mem, chain, hdr_len, &mut buf);
                            if let Err(e) = queue.add_used(&*mem, head, 0) {
                                tracing::debug!("vhost-user-net: cannot return chain {head}: {e}");
                            }
                            n
                        })
                    }
                };
                let Some(n) = popped else { break };
                taken += 1;
                match n {
                    Ok(n) => {
                        if !ingress(&port, &switch, buf.get_mut(..n).unwrap_or(&mut [])) {
                            return;
                        }
                    }
                    Err(why) => port.drop_frame(why),
                }
            }
            drop(batching);
            if taken > 0 {
                let mut state = vring.get_mut();
                if !matches!(state.needs_notification(), Ok(false)) {
                    if let Err(e) = state.signal_used_queue() {
                        tracing::debug!("vhost-user-net: cannot interrupt the guest: {e}");
                    }
                }
            }
            if taken == TX_BATCH {
                continue;
            }
            if !event_idx {
                break;
            }
            // A driver that claims chains it never makes would keep this going: two rounds
            // in a row without a chain end it.
            idle_rounds = if taken == 0 { idle_rounds + 1 } else { 0 };
            match vring.get_mut().enable_notification() {
                Ok(true) if idle_rounds < 2 => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("vhost-user-net: the transmit queue is broken: {e}");
                    break;
                }
            }
        }
    }
}

impl VhostUserBackend for NetBackend {
    type Bitmap = ();
    type Vring = Vring;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        MAX_QUEUE_SIZE
    }

    fn features(&self) -> u64 {
        // PROTOCOL_FEATURES: without it QEMU 7.2's vhost-user-net never starts the device
        // (its early ring enables are taken care of by the relay).
        FEATURES | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn acked_features(&self, features: u64) {
        self.hdr_len.store(hdr_len(features), Relaxed);
        self.offloads
            .store(RxOffloads::from_features(features).bits(), Relaxed);
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        // The library adds REPLY_ACK. CONFIG: Vireo's frontend reads the port's MAC with
        // GET_CONFIG (QEMU does not ack it for a net device, and serves its own).
        VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, enabled: bool) {
        self.event_idx.store(enabled, Relaxed);
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        config_slice(&self.config, offset, size)
    }

    fn set_config(&self, _offset: u32, _buf: &[u8]) -> io::Result<()> {
        // Nothing is writable (no CTRL_MAC_ADDR); an error would end the connection.
        Ok(())
    }

    fn update_memory(&self, _mem: GuestMemoryAtomic<Mem>) -> io::Result<()> {
        // `self.mem` is the daemon's own GuestMemoryAtomic, which it has just updated.
        Ok(())
    }

    fn handle_event(
        &self,
        device_event: u16,
        evset: EventSet,
        vrings: &[Vring],
        _thread_id: usize,
    ) -> io::Result<()> {
        // An error ends the worker: that is how it is stopped.
        if u64::from(device_event) == stop_event(NUM_QUEUES) {
            return Err(io::Error::other("the session is over"));
        }
        // The library's default gives both queues to one worker, which so sees both vrings.
        if self.rx.get().is_none() {
            if let Some(rx) = vrings.get(RX) {
                let _ = self.rx.set(rx.clone());
            }
        }
        if !evset.contains(EventSet::IN) {
            return Ok(());
        }
        if usize::from(device_event) == TX {
            if let Some(v) = vrings.get(TX) {
                self.transmit(v);
            }
        }
        // A receive kick (new buffers) needs nothing: frames are not queued for the guest.
        Ok(())
    }
}
