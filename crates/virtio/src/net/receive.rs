//! The receive half of the worker: moves packets from the tap into the driver's buffers,
//! taking a packet out of the tap only when there is a buffer for it (or one packet ahead,
//! while it waits for more buffers or for the rate limiter).

use super::rx::{self, Delivery};
use super::worker::{NetWorker, Pending, RxWait, BATCH};
use super::{used, Counters, VNET_HDR_LEN};
use crate::GuestMemory;
use std::io;
use virtio_queue::QueueT;

impl NetWorker {
    pub(super) fn process_rx(&mut self) {
        if self.rx_wait == RxWait::Dead {
            return;
        }
        let mem = self.s.mem.clone();
        let old_used = self.s.rx.queue.next_used();
        if let Err(e) = self.s.rx.queue.disable_notification(&mem) {
            tracing::warn!("virtio-net: cannot disable rx notifications: {e}");
        }
        // Level-triggered: if the batch ends with packets left in the tap, the tap's readiness
        // brings the worker back.
        self.rx_wait = RxWait::Tap;
        for _ in 0..BATCH {
            match self.rx_one(&mem) {
                Some(wait) => {
                    self.rx_wait = wait;
                    break;
                }
                None => continue,
            }
        }
        if used::needs_interrupt(&self.s.rx.queue, &mem, old_used) {
            self.s.interrupt.queue(self.s.rx.index);
        }
    }

    /// Moves one packet from the tap to the guest; `Some` says what to wait for instead.
    fn rx_one(&mut self, mem: &GuestMemory) -> Option<RxWait> {
        if self.pending.is_none() {
            if self.s.rx_limiter.is_blocked() {
                return Some(RxWait::Limiter);
            }
            // Take a packet out of the tap only with a buffer to put it in.
            if self.rx_bufs.is_empty() && !self.take_rx_chain(mem) {
                return Some(RxWait::Buffers);
            }
            let len = match self.s.tap.read(&mut self.frame) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Some(RxWait::Tap),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
                // The tap was detached or its interface deleted: nothing will come any more.
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EBADFD | libc::EIO | libc::ENODEV | libc::ENXIO)
                    ) =>
                {
                    self.tap_failed(&format!("read: {e}"));
                    return Some(RxWait::Dead);
                }
                // Anything else cost this one packet only.
                Err(e) => {
                    tracing::debug!("virtio-net: lost a packet reading the tap: {e}");
                    Counters::add(&self.s.counters.rx_dropped, 1);
                    return None;
                }
            };
            if len < VNET_HDR_LEN || !self.fix_header() {
                Counters::add(&self.s.counters.rx_dropped, 1);
                return None;
            }
            self.pending = Some(Pending { len, paid: false });
        }
        let p = self.pending.as_mut()?;
        let frame_len = p.len.saturating_sub(VNET_HDR_LEN) as u64;
        if !p.paid {
            // A wake-up while the timer is pending is not another refusal.
            if self.s.rx_limiter.is_blocked() {
                return Some(RxWait::Limiter);
            }
            if !self.s.rx_limiter.consume_request(frame_len) {
                Counters::add(&self.s.counters.throttled, 1);
                return Some(RxWait::Limiter);
            }
            p.paid = true;
        }
        let len = p.len;
        loop {
            let ring = self.s.rx.queue.size();
            let Some(packet) = self.frame.get_mut(..len) else {
                break;
            };
            let writes = &self.s.writes;
            match self
                .rx_bufs
                .deliver(packet, self.mrg, ring, &mut self.s.rx.queue, mem, writes)
            {
                Delivery::Done(_) => {
                    Counters::add(&self.s.counters.rx_packets, 1);
                    Counters::add(&self.s.counters.rx_bytes, frame_len);
                    break;
                }
                Delivery::NeedMore => {
                    if !self.take_rx_chain(mem) {
                        return Some(RxWait::Buffers);
                    }
                }
                Delivery::TooBig => {
                    tracing::debug!(len, "virtio-net: a packet larger than the rx buffers");
                    Counters::add(&self.s.counters.rx_dropped, 1);
                    break;
                }
                Delivery::Failed => {
                    Counters::add(&self.s.counters.errors, 1);
                    break;
                }
            }
        }
        self.pending = None;
        None
    }

    /// Makes the tap's header what the driver may see (see [`super::RxOffloads::fix_header`]): the
    /// tap's offloads already keep out what it did not accept; a packet that breaks them is
    /// dropped rather than confuse the driver.
    fn fix_header(&mut self) -> bool {
        self.frame
            .get_mut(..VNET_HDR_LEN)
            .is_some_and(|hdr| self.offloads.fix_header(hdr))
    }

    /// Takes the next usable chain from the receive ring into the held buffers, returning bad
    /// ones to the driver on the way. `false`: the ring is empty (notifications are then on),
    /// or a batch of bad chains was returned and the worker should yield first.
    fn take_rx_chain(&mut self, mem: &GuestMemory) -> bool {
        let q = &mut self.s.rx;
        let mut bad = 0;
        // Rounds where the ring claimed more and yielded nothing: a broken ring must not spin.
        let mut idle_rounds = 0;
        loop {
            let mut progressed = false;
            while let Some(chain) = q.queue.pop_descriptor_chain(mem) {
                progressed = true;
                let head = chain.head_index();
                let why = match rx::check_chain(chain, mem) {
                    Ok(c) => {
                        self.rx_bufs.push(c);
                        return true;
                    }
                    Err(why) => why,
                };
                tracing::debug!(head, "virtio-net: returning an rx chain unused: {why}");
                Counters::add(&self.s.counters.errors, 1);
                if let Err(e) = used::publish(&mut q.queue, mem, &[(head, 0)]) {
                    tracing::warn!("virtio-net: {e}");
                }
                bad += 1;
                if bad >= BATCH {
                    // A driver that keeps posting bad chains must not keep the worker from
                    // seeing a reset: come back through the notification.
                    if let Err(e) = q.notify.write(1) {
                        tracing::warn!("virtio-net: cannot reschedule rx: {e}");
                    }
                    return false;
                }
            }
            match q.queue.enable_notification(mem) {
                Ok(true) => {
                    idle_rounds = if progressed { 0 } else { idle_rounds + 1 };
                    if idle_rounds > 2 {
                        tracing::warn!("virtio-net: the driver's rx available ring is invalid");
                        return false;
                    }
                }
                Ok(false) => return false,
                Err(e) => {
                    tracing::warn!("virtio-net: cannot enable rx notifications: {e}");
                    return false;
                }
            }
            if let Err(e) = q.queue.disable_notification(mem) {
                tracing::warn!("virtio-net: cannot disable rx notifications: {e}");
            }
        }
    }
}
