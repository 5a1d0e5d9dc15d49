//! The network device's service loop, run on its [`crate::worker::Worker`] thread.
//!
//! The tap sits in an epoll set of its own (`poll::TapPoll`), which is one of the worker's sources:
//! the device asks for "readable" only while it wants packets (it holds a receive buffer, no
//! packet is waiting for one, the limiter is open) and for "writable" only while a transmit
//! waits for room in the tap. So a busy host with no receive buffers posted does not make the
//! worker spin, and packets stay queued in the tap (not dropped) until the driver posts buffers.

use super::poll::TapPoll;
use super::rx::RxBuffers;
use super::tap::Tap;
use super::tx::{self, TxPacket};
use super::{Counters, RxOffloads, MAX_PACKET_LEN};
use crate::device::complete;
use crate::rate_limiter::{RateLimiter, TokenKind};
use crate::{GuestMemory, GuestWrites, Interrupt, QueueHandle};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use virtio_bindings::virtio_net::*;
use virtio_queue::{QueueOwnedT, QueueT};
use vmm_sys_util::epoll::EventSet;

/// Chains (tx) or packets (rx) served per wake-up before yielding to the epoll loop, so that a
/// reset is seen while traffic keeps coming.
pub(super) const BATCH: usize = 256;

/// Sources, in the order given to the worker.
const RX_NOTIFY: usize = 0;
const TX_NOTIFY: usize = 1;
const TAP: usize = 2;
const RX_TIMER: usize = 3;
const TX_TIMER: usize = 4;

/// What the receive side is waiting for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RxWait {
    /// A packet in the tap.
    Tap,
    /// Buffers from the driver (a receive queue notification).
    Buffers,
    /// The rate limiter's timer.
    Limiter,
    /// Nothing more: the tap failed (it was deleted).
    Dead,
}

/// A packet taken from the tap and not yet in guest memory.
pub(super) struct Pending {
    pub len: usize,
    /// The rate limiter has been charged for it.
    pub paid: bool,
}

pub(crate) struct Setup {
    pub rx: QueueHandle,
    pub tx: QueueHandle,
    pub mem: GuestMemory,
    pub interrupt: Arc<dyn Interrupt>,
    pub writes: Option<Arc<dyn GuestWrites>>,
    pub tap: Arc<Tap>,
    pub rx_limiter: RateLimiter,
    pub tx_limiter: RateLimiter,
    pub counters: Arc<Counters>,
}

pub(crate) struct NetWorker {
    pub(super) s: Setup,
    poll: TapPoll,
    pub(super) mrg: bool,
    /// What the driver accepted of checksums and segmentation in received frames.
    pub(super) offloads: RxOffloads,
    pub(super) rx_bufs: RxBuffers,
    pub(super) rx_wait: RxWait,
    pub(super) pending: Option<Pending>,
    /// The packet being received.
    pub(super) frame: Vec<u8>,
    /// For a transmit chain cut in more pieces than one writev takes.
    tx_bounce: Vec<u8>,
    /// A transmit found the tap full and waits for it to drain.
    tx_wait_tap: bool,
}

impl NetWorker {
    pub(crate) fn new(s: Setup, features: u64) -> io::Result<NetWorker> {
        let has = |b: u32| features & (1 << b) != 0;
        let poll = TapPoll::new(s.tap.as_raw_fd())?;
        // Buffers posted before DRIVER_OK were not announced by a notification.
        for q in [&s.rx, &s.tx] {
            q.notify.write(1)?;
        }
        Ok(NetWorker {
            poll,
            mrg: has(VIRTIO_NET_F_MRG_RXBUF),
            offloads: RxOffloads::from_features(features),
            rx_bufs: RxBuffers::default(),
            rx_wait: RxWait::Buffers,
            pending: None,
            frame: vec![0; MAX_PACKET_LEN],
            tx_bounce: vec![0; MAX_PACKET_LEN],
            tx_wait_tap: false,
            s,
        })
    }

    /// The fds to wait on, in the order of the source constants.
    pub(crate) fn sources(&self) -> Vec<RawFd> {
        vec![
            self.s.rx.notify.as_raw_fd(),
            self.s.tx.notify.as_raw_fd(),
            self.poll.epoll.as_raw_fd(),
            self.s.rx_limiter.as_raw_fd(),
            self.s.tx_limiter.as_raw_fd(),
        ]
    }

    pub(crate) fn on_ready(&mut self, source: usize) {
        match source {
            RX_NOTIFY => {
                let _ = self.s.rx.notify.read();
                self.process_rx();
            }
            TX_NOTIFY => {
                let _ = self.s.tx.notify.read();
                self.process_tx();
            }
            TAP => {
                let ready = self.poll.ready();
                if ready.intersects(EventSet::ERROR | EventSet::HANG_UP) {
                    self.tap_failed("it reports an error (was it deleted?)");
                    return;
                }
                if ready.contains(EventSet::OUT) {
                    self.tx_wait_tap = false;
                    self.process_tx();
                }
                if ready.contains(EventSet::IN) {
                    self.process_rx();
                }
            }
            RX_TIMER if self.s.rx_limiter.on_timer() => self.process_rx(),
            TX_TIMER if self.s.tx_limiter.on_timer() => self.process_tx(),
            _ => {}
        }
        self.update_poll();
    }

    fn update_poll(&mut self) {
        let mut want = EventSet::empty();
        if self.rx_wait == RxWait::Tap {
            want |= EventSet::IN;
        }
        if self.tx_wait_tap && self.rx_wait != RxWait::Dead {
            want |= EventSet::OUT;
        }
        self.poll.set(want);
    }

    pub(super) fn tap_failed(&mut self, why: &str) {
        if self.rx_wait != RxWait::Dead {
            tracing::error!(
                tap = self.s.tap.name(),
                "virtio-net: the tap failed, the guest's network is down: {why}"
            );
            Counters::add(&self.s.counters.errors, 1);
        }
        self.rx_wait = RxWait::Dead;
        self.tx_wait_tap = false;
        self.update_poll();
    }

    fn process_tx(&mut self) {
        if self.tx_wait_tap || self.s.tx_limiter.is_blocked() {
            return;
        }
        let mem = self.s.mem.clone();
        let mut served = 0;
        let mut idle_rounds = 0;
        loop {
            if let Err(e) = self.s.tx.queue.disable_notification(&mem) {
                tracing::warn!("virtio-net: cannot disable tx notifications: {e}");
            }
            let mut progressed = false;
            while let Some(chain) = self.s.tx.queue.pop_descriptor_chain(&mem) {
                progressed = true;
                if !self.tx_one(&mem, chain) {
                    // Back in the ring until the limiter's timer or the tap says go.
                    self.s.tx.queue.go_to_previous_position();
                    return;
                }
                served += 1;
                if served >= BATCH {
                    if let Err(e) = self.s.tx.notify.write(1) {
                        tracing::warn!("virtio-net: cannot reschedule tx: {e}");
                    }
                    return;
                }
            }
            match self.s.tx.queue.enable_notification(&mem) {
                Ok(true) => {
                    idle_rounds = if progressed { 0 } else { idle_rounds + 1 };
                    if idle_rounds > 2 {
                        tracing::warn!("virtio-net: the driver's tx available ring is invalid");
                        return;
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!("virtio-net: cannot enable tx notifications: {e}");
                    return;
                }
            }
        }
    }

    /// Sends one chain; `false` if it must wait (throttled, or the tap is full).
    fn tx_one(
        &mut self,
        mem: &GuestMemory,
        chain: virtio_queue::DescriptorChain<&GuestMemory>,
    ) -> bool {
        let head = chain.head_index();
        let pkt: TxPacket = match tx::check_chain(chain, mem) {
            Ok(p) => p,
            Err(why) => {
                tracing::debug!(head, "virtio-net: dropping a tx chain: {why}");
                Counters::add(&self.s.counters.errors, 1);
                complete(&mut self.s.tx, mem, &*self.s.interrupt, head, 0);
                return true;
            }
        };
        let bytes = pkt.frame_len();
        if !self.s.tx_limiter.consume_request(bytes) {
            Counters::add(&self.s.counters.throttled, 1);
            return false;
        }
        match tx::send(&self.s.tap, mem, &pkt, &mut self.tx_bounce) {
            Ok(_) => {
                Counters::add(&self.s.counters.tx_packets, 1);
                Counters::add(&self.s.counters.tx_bytes, bytes);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && self.rx_wait != RxWait::Dead => {
                self.s.tx_limiter.give_back(1, TokenKind::Ops);
                self.s.tx_limiter.give_back(bytes, TokenKind::Bytes);
                self.tx_wait_tap = true;
                return false;
            }
            Err(e) => {
                tracing::debug!(head, "virtio-net: the tap refused a frame: {e}");
                Counters::add(&self.s.counters.errors, 1);
            }
        }
        // Nothing of the chain was written: its used length is 0.
        complete(&mut self.s.tx, mem, &*self.s.interrupt, head, 0);
        true
    }
}
