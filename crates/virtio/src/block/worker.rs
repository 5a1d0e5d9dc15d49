//! The block device's queue service, run on its [`crate::worker::Worker`] thread: it drains the
//! queue when the driver notifies it and, when the rate limiter holds a request back, parks it
//! in the ring until the limiter's timer fires.

use super::disk::Disk;
use super::exec::{Exec, Outcome};
use super::file::AlignedBuf;
use super::request::{self, Op, Request};
use super::{Counters, ID_BYTES};
use crate::device::{complete, report_writes};
use crate::rate_limiter::RateLimiter;
use crate::{GuestMemory, GuestWrites, Interrupt, QueueHandle};
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vm_memory::Bytes;

/// Bounce buffer size: reads and writes are done in pieces of this size, so a request of any
/// length needs bounded host memory.
pub(crate) const CHUNK: usize = 1 << 20;

/// Chains served per wake-up. After that the worker yields to its epoll loop (re-signalling
/// itself), so that a reset is seen even while the driver keeps the queue full.
const BATCH: usize = 1024;

/// Sources, in the order given to the worker.
const NOTIFY: usize = 0;
const TIMER: usize = 1;

pub(crate) struct BlockWorker {
    pub queue: QueueHandle,
    pub mem: GuestMemory,
    pub interrupt: Arc<dyn Interrupt>,
    pub writes: Option<Arc<dyn GuestWrites>>,
    pub disk: Arc<Disk>,
    pub limiter: Option<RateLimiter>,
    pub counters: Arc<Counters>,
    pub buf: AlignedBuf,
    pub id: [u8; ID_BYTES],
    pub readonly: bool,
}

#[derive(PartialEq, Eq)]
enum Served {
    Done,
    Throttled,
}

impl BlockWorker {
    /// The fds to wait on: the queue's notification, then the limiter's timer.
    pub(crate) fn sources(&self) -> Vec<RawFd> {
        let mut fds = vec![self.queue.notify.as_raw_fd()];
        fds.extend(self.limiter.as_ref().map(|l| l.as_raw_fd()));
        fds
    }

    pub(crate) fn on_ready(&mut self, source: usize) {
        match source {
            NOTIFY => {
                let _ = self.queue.notify.read();
                if self.limiter.as_ref().is_some_and(|l| l.is_blocked()) {
                    return;
                }
            }
            TIMER => {
                if !self.limiter.as_mut().is_some_and(|l| l.on_timer()) {
                    return;
                }
            }
            _ => return,
        }
        self.process();
    }

    /// Serves chains until the queue is empty (notifications re-enabled), the limiter holds
    /// one back, or the batch is done.
    fn process(&mut self) {
        let mem = self.mem.clone();
        let mut served = 0;
        // Rounds that found nothing although the ring said there was more: a driver (or a
        // broken ring) that cannot make progress must not spin this thread.
        let mut idle_rounds = 0;
        loop {
            if let Err(e) = self.queue.queue.disable_notification(&mem) {
                tracing::warn!("virtio-blk: cannot disable notifications: {e}");
            }
            let mut progressed = false;
            while let Some(chain) = self.queue.queue.pop_descriptor_chain(&mem) {
                progressed = true;
                if self.serve(&mem, chain) == Served::Throttled {
                    // Back in the ring; the limiter's timer brings us back to it.
                    self.queue.queue.go_to_previous_position();
                    return;
                }
                served += 1;
                if served >= BATCH {
                    if let Err(e) = self.queue.notify.write(1) {
                        tracing::warn!("virtio-blk: cannot reschedule the queue: {e}");
                    }
                    return;
                }
            }
            match self.queue.queue.enable_notification(&mem) {
                // Buffers arrived while notifications were off: serve them too.
                Ok(true) => {
                    idle_rounds = if progressed { 0 } else { idle_rounds + 1 };
                    if idle_rounds > 2 {
                        tracing::warn!("virtio-blk: the driver's available ring is invalid");
                        return;
                    }
                }
                Ok(false) => return,
                Err(e) => {
                    tracing::warn!("virtio-blk: cannot enable notifications: {e}");
                    return;
                }
            }
        }
    }

    fn serve(&mut self, mem: &GuestMemory, chain: DescriptorChain<&GuestMemory>) -> Served {
        let head = chain.head_index();
        let req = match request::parse(mem, chain.clone()) {
            Ok(req) => req,
            Err(why) => {
                tracing::debug!(head, "virtio-blk: returning a request unprocessed: {why}");
                self.counters.errors.fetch_add(1, Relaxed);
                complete(&mut self.queue, mem, &*self.interrupt, head, 0);
                return Served::Done;
            }
        };
        if let Some(limiter) = self.limiter.as_mut() {
            if !limiter.consume_request(req.data_bytes()) {
                self.counters.throttled.fetch_add(1, Relaxed);
                return Served::Throttled;
            }
        }
        let outcome = Exec {
            mem,
            disk: &self.disk,
            buf: &mut self.buf,
            id: &self.id,
            readonly: self.readonly,
        }
        .run(&req);
        self.count(&req, outcome);

        let used = match mem.write_obj(outcome.status, req.status) {
            // Data and status; a chain is at most 2^32 bytes, so this only saturates if the
            // driver made the whole chain a data buffer.
            Ok(()) => u32::try_from(outcome.written.saturating_add(1)).unwrap_or(u32::MAX),
            Err(e) => {
                tracing::warn!(head, "virtio-blk: cannot write the status: {e}");
                0
            }
        };
        report_writes(&self.writes, &chain);
        complete(&mut self.queue, mem, &*self.interrupt, head, used);
        Served::Done
    }

    fn count(&self, req: &Request, outcome: Outcome) {
        let c = &self.counters;
        if outcome.status != super::exec::S_OK {
            c.errors.fetch_add(1, Relaxed);
            return;
        }
        let (ops, bytes) = match req.op {
            Ok(Op::In) => (&c.read_ops, Some(&c.read_bytes)),
            Ok(Op::Out) => (&c.write_ops, Some(&c.write_bytes)),
            Ok(Op::Flush) => (&c.flush_ops, None),
            Ok(Op::Discard) => (&c.discard_ops, None),
            Ok(Op::WriteZeroes) => (&c.write_zeroes_ops, None),
            _ => return,
        };
        ops.fetch_add(1, Relaxed);
        if let Some(b) = bytes {
            b.fetch_add(req.data_bytes(), Relaxed);
        }
    }
}
