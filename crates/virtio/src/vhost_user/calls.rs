//! Call forwarding: the worker that turns the backend's call eventfds into queue interrupts,
//! first reporting to [`GuestWrites`] the buffers the backend filled (it wrote them from its
//! own process, unseen).
//!
//! The used ring says which chains completed; their buffers are found by walking each chain
//! from the descriptor table with `virtio-queue`'s [`DescriptorChain`], which bounds the walk
//! (chain length, indirect tables) against a hostile driver. Its constructor is private to the
//! crate, so a chain for a given head is obtained the public way, by popping it from a
//! *shadow* queue: one that shares the guest's descriptor table but whose available ring is a
//! private page, placed in a copy of the memory map above guest RAM, where we write the head.

use super::rings::ring_sizes;
use crate::device::{GuestWrites, Interrupt};
use crate::GuestMemory;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestRegionMmap};
use vmm_sys_util::eventfd::EventFd;

/// The private page: the shadow available ring at its start, the (never written) shadow used
/// ring behind it.
const SCRATCH_LEN: usize = 4096;
const SCRATCH_USED: u64 = 2048;

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) interrupts: AtomicU64,
    pub(crate) used_entries: AtomicU64,
    pub(crate) errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }
}

/// Guest memory with the scratch page mapped above it.
pub(crate) struct ShadowMemory {
    mem: GuestMemory,
    scratch: GuestAddress,
}

impl ShadowMemory {
    pub(crate) fn new(guest: &GuestMemory) -> std::io::Result<ShadowMemory> {
        let bad = |what: &str| std::io::Error::other(format!("scratch ring: {what}"));
        let scratch = guest
            .last_addr()
            .0
            .checked_add(1)
            .and_then(|a| a.checked_next_multiple_of(SCRATCH_LEN as u64))
            .ok_or_else(|| bad("no address space left above guest memory"))?;
        let region = GuestRegionMmap::from_range(GuestAddress(scratch), SCRATCH_LEN, None)
            .map_err(|e| bad(&e.to_string()))?;
        let mem = guest
            .insert_region(Arc::new(region))
            .map_err(|e| bad(&e.to_string()))?;
        Ok(ShadowMemory {
            mem,
            scratch: GuestAddress(scratch),
        })
    }
}

/// Follows one queue's used ring.
pub(crate) struct UsedWatcher {
    pub(crate) index: u16,
    size: u16,
    used_ring: GuestAddress,
    /// The used index up to which entries were reported.
    seen: u16,
    shadow: Queue,
}

impl UsedWatcher {
    /// Starts from the used index the ring holds now: entries before it are not the backend's.
    pub(crate) fn new(index: u16, queue: &Queue, mem: &ShadowMemory) -> std::io::Result<Self> {
        let bad = |e: virtio_queue::Error| std::io::Error::other(format!("queue {index}: {e}"));
        let size = queue.size();
        let (_, avail_len, _) = ring_sizes(size);
        if avail_len > SCRATCH_USED {
            return Err(std::io::Error::other(format!(
                "queue {index}: size {size} too large for the scratch ring"
            )));
        }
        let mut shadow = Queue::new(size).map_err(bad)?;
        shadow
            .try_set_desc_table_address(GuestAddress(queue.desc_table()))
            .map_err(bad)?;
        shadow
            .try_set_avail_ring_address(mem.scratch)
            .map_err(bad)?;
        shadow
            .try_set_used_ring_address(mem.scratch.unchecked_add(SCRATCH_USED))
            .map_err(bad)?;
        shadow.set_ready(true);
        let used_ring = GuestAddress(queue.used_ring());
        let seen = used_idx(&mem.mem, used_ring).unwrap_or(0);
        Ok(UsedWatcher {
            index,
            size,
            used_ring,
            seen,
            shadow,
        })
    }

    /// Reports the writable buffers of every chain the backend returned since the last call.
    pub(crate) fn report_new(
        &mut self,
        mem: &ShadowMemory,
        writes: &Option<Arc<dyn GuestWrites>>,
        counters: &Counters,
    ) {
        let Some(now) = used_idx(&mem.mem, self.used_ring) else {
            tracing::warn!(queue = self.index, "vhost-user: cannot read the used index");
            Counters::add(&counters.errors, 1);
            return;
        };
        if now.wrapping_sub(self.seen) > self.size {
            // Only `size` entries fit in the ring: the rest were overwritten or never existed
            // (a broken backend or driver). Look at the last `size`.
            tracing::warn!(
                queue = self.index,
                "vhost-user: used index jumped past the ring"
            );
            Counters::add(&counters.errors, 1);
            self.seen = now.wrapping_sub(self.size);
        }
        while self.seen != now {
            let slot = u64::from(self.seen % self.size);
            self.seen = self.seen.wrapping_add(1);
            Counters::add(&counters.used_entries, 1);
            let Some(writes) = writes else { continue };
            let elem = self.used_ring.checked_add(4 + 8 * slot);
            let id = elem.and_then(|a| mem.mem.read_obj::<u32>(a).ok());
            match id.map(u32::from_le).and_then(|id| u16::try_from(id).ok()) {
                Some(head) if head < self.size => self.report_chain(mem, head, writes.as_ref()),
                _ => {
                    tracing::debug!(queue = self.index, "vhost-user: bad used entry");
                    Counters::add(&counters.errors, 1);
                }
            }
        }
    }

    fn report_chain(&mut self, mem: &ShadowMemory, head: u16, writes: &dyn GuestWrites) {
        if let Some(chain) = self.chain_at(mem, head) {
            for d in chain.writable() {
                writes.written(d.addr().0, u64::from(d.len()));
            }
        }
    }

    /// The chain starting at descriptor `head`, through the shadow queue.
    fn chain_at<'a>(
        &mut self,
        mem: &'a ShadowMemory,
        head: u16,
    ) -> Option<DescriptorChain<&'a GuestMemory>> {
        let ring = mem.scratch;
        mem.mem
            .write_obj(head.to_le(), ring.unchecked_add(4))
            .ok()?;
        mem.mem
            .write_obj(1u16.to_le(), ring.unchecked_add(2))
            .ok()?;
        self.shadow.set_next_avail(0);
        self.shadow.pop_descriptor_chain(&mem.mem)
    }
}

fn used_idx(mem: &GuestMemory, used_ring: GuestAddress) -> Option<u16> {
    let addr = used_ring.checked_add(2)?;
    mem.load::<u16>(addr, Ordering::Acquire)
        .ok()
        .map(u16::from_le)
}

/// What the worker owns while the device runs; the device keeps a handle to look at the used
/// rings one last time after stopping the backend.
pub(crate) struct CallState {
    pub(crate) mem: ShadowMemory,
    pub(crate) writes: Option<Arc<dyn GuestWrites>>,
    pub(crate) queues: Vec<(EventFd, UsedWatcher)>,
    pub(crate) counters: Arc<Counters>,
}

impl CallState {
    pub(crate) fn lock(state: &Mutex<CallState>) -> MutexGuard<'_, CallState> {
        // Only counters and ring positions live here; a panic mid-update leaves them usable.
        state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The backend signalled queue `i`'s call eventfd.
    pub(crate) fn on_call(&mut self, i: usize, interrupt: &dyn Interrupt) {
        let CallState {
            mem,
            writes,
            queues,
            counters,
        } = self;
        let Some((call, watcher)) = queues.get_mut(i) else {
            return;
        };
        // Consumed first: a call the backend sends while we scan is then not lost.
        let _ = call.read();
        watcher.report_new(mem, writes, counters);
        interrupt.queue(watcher.index);
        Counters::add(&counters.interrupts, 1);
    }

    /// Reports what the backend returned that no call announced (after the rings stopped).
    pub(crate) fn drain(&mut self) {
        let CallState {
            mem,
            writes,
            queues,
            counters,
        } = self;
        for (_, watcher) in queues.iter_mut() {
            watcher.report_new(mem, writes, counters);
        }
    }
}

#[cfg(test)]
#[path = "calls_tests.rs"]
mod tests;
