//! The device's service loop, run on its [`crate::worker::Worker`] thread: transmit chains go
//! to the [`Muxer`], the muxer's packets fill receive buffers, and the event queue carries a
//! transport reset when one is asked for.

use super::muxer::Muxer;
use super::packet::{self, MAX_PAYLOAD, OP_RST, OP_RW};
use super::Counters;
use crate::device::report_writes;
use crate::{GuestMemory, GuestWrites, Interrupt, QueueHandle};
use std::io::Write;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use virtio_queue::{QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// Chains served per wake-up before yielding to the epoll loop (the queue's own notification
/// is re-raised), so one busy direction does not starve the other or delay a reset.
const BATCH: usize = 256;

/// Sources, in the order given to the worker.
const RX_NOTIFY: usize = 0;
const TX_NOTIFY: usize = 1;
const EV_NOTIFY: usize = 2;
const POLL: usize = 3;
const TIMER: usize = 4;
const RESET: usize = 5;

pub struct Setup {
    pub rx: QueueHandle,
    pub tx: QueueHandle,
    pub ev: QueueHandle,
    pub mem: GuestMemory,
    pub interrupt: Arc<dyn Interrupt>,
    pub writes: Option<Arc<dyn GuestWrites>>,
    pub guest_cid: u64,
    pub reset: EventFd,
    pub counters: Arc<Counters>,
}

pub struct VsockWorker {
    s: Setup,
    muxer: Muxer,
    /// A TRANSPORT_RESET event waits for an event buffer.
    event_owed: bool,
    /// Payload of the packet at hand, either way.
    buf: Vec<u8>,
}

impl VsockWorker {
    pub fn new(s: Setup, muxer: Muxer) -> std::io::Result<VsockWorker> {
        // Buffers posted before DRIVER_OK came with no notification.
        for q in [&s.rx, &s.tx, &s.ev] {
            q.notify.write(1)?;
        }
        Ok(VsockWorker {
            s,
            muxer,
            event_owed: false,
            buf: vec![0; MAX_PAYLOAD],
        })
    }

    /// The fds to wait on, in the order of the source constants.
    pub fn sources(&self) -> Vec<RawFd> {
        vec![
            self.s.rx.notify.as_raw_fd(),
            self.s.tx.notify.as_raw_fd(),
            self.s.ev.notify.as_raw_fd(),
            self.muxer.poll_fd(),
            self.muxer.timer_fd(),
            self.s.reset.as_raw_fd(),
        ]
    }

    pub fn on_ready(&mut self, source: usize) {
        match source {
            RX_NOTIFY => {
                let _ = self.s.rx.notify.read();
            }
            TX_NOTIFY => {
                let _ = self.s.tx.notify.read();
                self.process_tx();
            }
            EV_NOTIFY => {
                let _ = self.s.ev.notify.read();
                self.process_event();
            }
            POLL => self.muxer.on_poll(),
            TIMER => self.muxer.on_timer(),
            RESET => {
                let _ = self.s.reset.read();
                self.muxer.reset_all();
                self.event_owed = true;
                self.process_event();
            }
            _ => {}
        }
        // Whatever happened may have given the guest something to receive.
        self.process_rx();
    }

    fn process_tx(&mut self) {
        let mem = self.s.mem.clone();
        let before = self.s.tx.queue.next_used();
        let mut served = 0;
        let mut empty_rounds = 0;
        loop {
            if let Err(e) = self.s.tx.queue.disable_notification(&mem) {
                tracing::warn!("virtio-vsock: cannot disable tx notifications: {e}");
            }
            let mut progressed = false;
            while let Some(chain) = self.s.tx.queue.pop_descriptor_chain(&mem) {
                progressed = true;
                let head = chain.head_index();
                let parsed = packet::read_tx(&chain, &mem, self.s.guest_cid, &mut self.buf);
                // The payload is copied out: the chain can go back before it is handled.
                add_used(&mut self.s.tx, &mem, head, 0);
                match parsed {
                    Ok(hdr) => {
                        let payload = self.buf.get(..hdr.len as usize).unwrap_or(&[]);
                        self.muxer.on_guest_packet(&hdr, payload);
                    }
                    Err(why) => {
                        tracing::debug!(head, "virtio-vsock: dropping a tx packet: {why}");
                        self.s.counters.bad_packets.fetch_add(1, Relaxed);
                    }
                }
                served += 1;
                if served >= BATCH {
                    notify(&mut self.s.tx, &mem, self.s.interrupt.as_ref(), before);
                    if let Err(e) = self.s.tx.notify.write(1) {
                        tracing::warn!("virtio-vsock: cannot reschedule tx: {e}");
                    }
                    return;
                }
            }
            match self.s.tx.queue.enable_notification(&mem) {
                // More came meanwhile; but a ring that claims more and yields nothing (a bogus
                // available index) must not keep the thread spinning.
                Ok(true) => {
                    empty_rounds = if progressed { 0 } else { empty_rounds + 1 };
                    if empty_rounds > 1 {
                        tracing::warn!("virtio-vsock: the driver's tx ring is invalid");
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!("virtio-vsock: cannot enable tx notifications: {e}");
                    break;
                }
            }
        }
        notify(&mut self.s.tx, &mem, self.s.interrupt.as_ref(), before);
    }

    fn process_rx(&mut self) {
        if !self.muxer.has_rx_work() {
            return;
        }
        let mem = self.s.mem.clone();
        let before = self.s.rx.queue.next_used();
        let mut served = 0;
        if let Err(e) = self.s.rx.queue.disable_notification(&mem) {
            tracing::warn!("virtio-vsock: cannot disable rx notifications: {e}");
        }
        let mut retried = false;
        while self.muxer.has_rx_work() {
            let Some(chain) = self.s.rx.queue.pop_descriptor_chain(&mem) else {
                // Out of buffers: the driver's next one wakes us. One may have come meanwhile
                // (once: a bogus available index claims buffers that never come).
                match self.s.rx.queue.enable_notification(&mem) {
                    Ok(true) if !retried => {
                        retried = true;
                        continue;
                    }
                    Ok(true) => {
                        tracing::warn!("virtio-vsock: the driver's rx ring is invalid");
                        break;
                    }
                    Ok(false) => break,
                    Err(e) => {
                        tracing::warn!("virtio-vsock: cannot enable rx notifications: {e}");
                        break;
                    }
                }
            };
            retried = false;
            let head = chain.head_index();
            let Some(room) = packet::rx_room(&chain, &mem) else {
                tracing::debug!(head, "virtio-vsock: an rx buffer too small or unwritable");
                self.s.counters.bad_packets.fetch_add(1, Relaxed);
                add_used(&mut self.s.rx, &mem, head, 0);
                continue;
            };
            let Some((hdr, n)) = self.muxer.next_rx(room, &mut self.buf) else {
                // Nothing after all (a connection found its host had no data): keep the buffer.
                self.s.rx.queue.go_to_previous_position();
                break;
            };
            let payload = self.buf.get(..n).unwrap_or(&[]);
            let len = match packet::write_rx(&chain, &mem, &hdr, payload) {
                Ok(len) => len,
                Err(e) => {
                    tracing::warn!("virtio-vsock: cannot write an rx buffer: {e}");
                    self.s.counters.bad_packets.fetch_add(1, Relaxed);
                    0
                }
            };
            if len > 0 {
                match hdr.op {
                    OP_RW => self.s.counters.rx_bytes.fetch_add(n as u64, Relaxed),
                    OP_RST => self.s.counters.rst_sent.fetch_add(1, Relaxed),
                    _ => 0,
                };
            }
            report_writes(&self.s.writes, &chain);
            add_used(&mut self.s.rx, &mem, head, len as u32);
            served += 1;
            if served >= BATCH {
                if let Err(e) = self.s.rx.notify.write(1) {
                    tracing::warn!("virtio-vsock: cannot reschedule rx: {e}");
                }
                break;
            }
        }
        notify(&mut self.s.rx, &mem, self.s.interrupt.as_ref(), before);
    }

    fn process_event(&mut self) {
        let mem = self.s.mem.clone();
        let before = self.s.ev.queue.next_used();
        let mut retried = false;
        while self.event_owed {
            let Some(chain) = self.s.ev.queue.pop_descriptor_chain(&mem) else {
                match self.s.ev.queue.enable_notification(&mem) {
                    Ok(true) if !retried => {
                        retried = true;
                        continue;
                    }
                    _ => break,
                }
            };
            retried = false;
            let head = chain.head_index();
            let id = packet::EVENT_TRANSPORT_RESET.to_le_bytes();
            let written = chain
                .clone()
                .writer(&mem)
                .ok()
                .filter(|w| w.available_bytes() >= id.len())
                .and_then(|mut w| w.write_all(&id).ok());
            let len = if written.is_some() {
                self.event_owed = false;
                report_writes(&self.s.writes, &chain);
                id.len() as u32
            } else {
                self.s.counters.bad_packets.fetch_add(1, Relaxed);
                0
            };
            add_used(&mut self.s.ev, &mem, head, len);
        }
        notify(&mut self.s.ev, &mem, self.s.interrupt.as_ref(), before);
    }
}

fn add_used(q: &mut QueueHandle, mem: &GuestMemory, head: u16, len: u32) {
    if let Err(e) = q.queue.add_used(mem, head, len) {
        tracing::warn!(
            queue = q.index,
            "virtio-vsock: cannot return a used buffer: {e}"
        );
    }
}

/// Interrupts the driver once for the buffers used since `before` (the used index then), if
/// there are any and it asked to be told.
fn notify(q: &mut QueueHandle, mem: &GuestMemory, interrupt: &dyn Interrupt, before: u16) {
    // Without EVENT_IDX needs_notification says yes even when nothing was used.
    if q.queue.next_used() == before {
        return;
    }
    match q.queue.needs_notification(mem) {
        Ok(false) => {}
        Ok(true) => interrupt.queue(q.index),
        Err(e) => {
            tracing::warn!(
                queue = q.index,
                "virtio-vsock: cannot read the used event: {e}"
            );
            interrupt.queue(q.index);
        }
    }
}
