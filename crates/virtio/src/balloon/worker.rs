//! The active balloon, owned by its worker thread: serves the inflate, deflate, stats and
//! reporting queues and the stats timer.

use super::discard::{self, Discarded};
use super::stats::{BalloonStats, MAX_STATS, STAT_LEN};
use super::{lock, Shared, PAGE_SIZE, PFN_SHIFT};
use crate::device::{self, Interrupt, QueueHandle};
use crate::{GuestMemory, GuestWrites};
use std::io::Read;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use virtio_queue::DescriptorChain;
use vmm_sys_util::timerfd::TimerFd;

/// Frame numbers read from one inflate or deflate chain. Linux sends at most 256 per buffer;
/// the bound keeps a hostile chain (up to the queue size of multi-gigabyte descriptors) from
/// occupying the worker for long. The rest of such a chain is ignored and counted as an error.
pub(super) const MAX_PFNS_PER_CHAIN: usize = 64 * 1024;
/// Frame numbers handled per step (sorted and merged into runs together).
const PFN_BATCH: usize = 1024;

pub(super) struct Queues {
    pub(super) inflate: QueueHandle,
    pub(super) deflate: QueueHandle,
    pub(super) stats: Option<QueueHandle>,
    pub(super) reporting: Option<QueueHandle>,
    /// When to give the stats buffer back (only with a stats queue).
    pub(super) interval: Option<Duration>,
    /// Return reported pages without dropping them (the guest poisons free pages).
    pub(super) keep_reported: bool,
    pub(super) mem: GuestMemory,
    pub(super) interrupt: Arc<dyn Interrupt>,
    pub(super) writes: Option<Arc<dyn GuestWrites>>,
    pub(super) shared: Arc<Shared>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Inflate,
    Deflate,
    Stats,
    Reporting,
    Timer,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum PfnQueue {
    Inflate,
    Deflate,
}

pub(super) struct BalloonWorker {
    q: Queues,
    timer: Option<TimerFd>,
    /// The stats buffer the driver posted, kept until it is time to ask for fresh stats.
    held_stats: Option<u16>,
    /// What each of [`Self::sources`] is.
    order: Vec<Source>,
}

impl BalloonWorker {
    pub(super) fn new(q: Queues) -> std::io::Result<Self> {
        let timer = match q.interval {
            Some(every) => {
                let mut t = TimerFd::new()?;
                t.reset(every, Some(every))?;
                Some(t)
            }
            None => None,
        };
        let mut order = vec![Source::Inflate, Source::Deflate];
        if q.stats.is_some() {
            order.push(Source::Stats);
        }
        if q.reporting.is_some() {
            order.push(Source::Reporting);
        }
        if timer.is_some() {
            order.push(Source::Timer);
        }
        Ok(BalloonWorker {
            q,
            timer,
            held_stats: None,
            order,
        })
    }

    /// The descriptors the worker waits on, in the order [`Self::handle`] takes them.
    pub(super) fn sources(&self) -> Vec<RawFd> {
        self.order
            .iter()
            .filter_map(|s| match s {
                Source::Inflate => Some(self.q.inflate.notify.as_raw_fd()),
                Source::Deflate => Some(self.q.deflate.notify.as_raw_fd()),
                Source::Stats => self.q.stats.as_ref().map(|q| q.notify.as_raw_fd()),
                Source::Reporting => self.q.reporting.as_ref().map(|q| q.notify.as_raw_fd()),
                Source::Timer => self.timer.as_ref().map(|t| t.as_raw_fd()),
            })
            .collect()
    }

    pub(super) fn handle(&mut self, index: usize) {
        match self.order.get(index).copied() {
            Some(Source::Inflate) => {
                let _ = self.q.inflate.notify.read();
                self.serve_pfns(PfnQueue::Inflate);
            }
            Some(Source::Deflate) => {
                let _ = self.q.deflate.notify.read();
                self.serve_pfns(PfnQueue::Deflate);
            }
            Some(Source::Stats) => self.serve_stats(),
            Some(Source::Reporting) => self.serve_reporting(),
            Some(Source::Timer) => self.request_stats(),
            None => {}
        }
    }

    /// Runs `each` on every available chain of a queue and returns it used (length 0: the
    /// balloon's buffers carry data to the device), re-checking after re-enabling
    /// notifications so a chain posted meanwhile is not left waiting for a kick.
    fn drain(
        q: &mut QueueHandle,
        mem: &GuestMemory,
        interrupt: &dyn Interrupt,
        mut each: impl FnMut(&DescriptorChain<&GuestMemory>),
    ) {
        device::drain(q, mem, "virtio-balloon", |q, chain| {
            each(&chain);
            device::complete(q, mem, interrupt, chain.head_index(), 0);
        });
    }

    fn serve_pfns(&mut self, which: PfnQueue) {
        let Queues {
            inflate,
            deflate,
            mem,
            interrupt,
            writes,
            shared,
            ..
        } = &mut self.q;
        let q = match which {
            PfnQueue::Inflate => inflate,
            PfnQueue::Deflate => deflate,
        };
        Self::drain(q, mem, interrupt.as_ref(), |chain| {
            pfn_chain(chain, mem, which, writes, shared)
        });
    }

    /// New stats: parsed and kept, and the buffer held until the next request. A driver that
    /// posts a second buffer gets the first one back (Linux never does).
    fn serve_stats(&mut self) {
        let Some(q) = self.q.stats.as_mut() else {
            return;
        };
        let _ = q.notify.read();
        let mem = &self.q.mem;
        let (shared, interrupt, held) = (&self.q.shared, &self.q.interrupt, &mut self.held_stats);
        device::drain(q, mem, "virtio-balloon", |q, chain| {
            read_stats(&chain, mem, shared);
            if let Some(old) = held.replace(chain.head_index()) {
                device::complete(q, mem, interrupt.as_ref(), old, 0);
            }
        });
    }

    /// The stats timer fired: returning the held buffer asks the driver for fresh stats.
    fn request_stats(&mut self) {
        if let Some(t) = self.timer.as_mut() {
            let _ = t.wait();
        }
        let (Some(q), Some(head)) = (self.q.stats.as_mut(), self.held_stats.take()) else {
            return;
        };
        device::complete(q, &self.q.mem, self.q.interrupt.as_ref(), head, 0);
    }

    /// Each device-writable buffer of a reporting chain is a free block of guest memory.
    fn serve_reporting(&mut self) {
        let Queues {
            reporting,
            keep_reported,
            mem,
            interrupt,
            writes,
            shared,
            ..
        } = &mut self.q;
        let Some(q) = reporting.as_mut() else {
            return;
        };
        let _ = q.notify.read();
        let keep = *keep_reported;
        Self::drain(q, mem, interrupt.as_ref(), |chain| {
            if keep {
                return;
            }
            let c = &shared.counters;
            let mut done = Discarded::default();
            for d in chain.clone() {
                // Linux adds them as "in" buffers; a device-readable one is not the guest's
                // to give away under the spec's rules, so it is left alone.
                if !d.is_write_only() {
                    c.errors.fetch_add(1, Relaxed);
                    continue;
                }
                done += discard::discard(mem, d.addr().0, u64::from(d.len()), writes);
            }
            if done.outside > 0 || done.failures > 0 {
                c.errors.fetch_add(1, Relaxed);
            }
            c.reported_pages.fetch_add(done.freed / PAGE_SIZE, Relaxed);
        });
    }
}

/// Reads the frame numbers of one inflate or deflate chain, in batches, and acts on them.
fn pfn_chain(
    chain: &DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    which: PfnQueue,
    writes: &Option<Arc<dyn GuestWrites>>,
    shared: &Shared,
) {
    let c = &shared.counters;
    let mut r = match chain.clone().reader(mem) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("virtio-balloon: bad frame list: {e:?}");
            c.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    let total = r.available_bytes() / 4;
    if total > MAX_PFNS_PER_CHAIN || r.available_bytes() % 4 != 0 {
        c.errors.fetch_add(1, Relaxed);
    }
    let mut left = total.min(MAX_PFNS_PER_CHAIN);
    let mut bytes = vec![0u8; PFN_BATCH * 4];
    let mut pfns = Vec::with_capacity(PFN_BATCH);
    while left > 0 {
        let n = left.min(PFN_BATCH);
        let Some(buf) = bytes.get_mut(..n * 4) else {
            return;
        };
        if let Err(e) = r.read_exact(buf) {
            tracing::debug!("virtio-balloon: cannot read a frame list: {e}");
            c.errors.fetch_add(1, Relaxed);
            return;
        }
        left -= n;
        pfns.clear();
        pfns.extend(
            buf.chunks_exact(4)
                .filter_map(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes),
        );
        for (first, count) in discard::runs(&mut pfns) {
            let (gpa, len) = (first << PFN_SHIFT, count << PFN_SHIFT);
            let (good, bad) = match which {
                PfnQueue::Inflate => {
                    let d = discard::discard(mem, gpa, len, writes);
                    if d.failures > 0 {
                        c.errors.fetch_add(d.failures, Relaxed);
                    }
                    let bad = d.outside.div_ceil(PAGE_SIZE);
                    (count.saturating_sub(bad), bad)
                }
                // The guest takes the pages back and they fault in as zeros: nothing to do
                // but check and count.
                PfnQueue::Deflate => {
                    let bad = outside_ram(mem, gpa, len).div_ceil(PAGE_SIZE);
                    (count.saturating_sub(bad), bad)
                }
            };
            let ok = match which {
                PfnQueue::Inflate => &c.inflated_pages,
                PfnQueue::Deflate => &c.deflated_pages,
            };
            ok.fetch_add(good, Relaxed);
            c.bad_pfns.fetch_add(bad, Relaxed);
        }
    }
}

/// Bytes of `[gpa, gpa + len)` that are not guest RAM.
fn outside_ram(mem: &GuestMemory, gpa: u64, len: u64) -> u64 {
    use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
    let end = gpa.saturating_add(len);
    let inside: u64 = mem
        .iter()
        .map(|r| {
            let (s, e) = (r.start_addr().0, r.start_addr().0.saturating_add(r.len()));
            end.min(e).saturating_sub(gpa.max(s))
        })
        .sum();
    len.saturating_sub(inside)
}

/// Parses a stats buffer into the shared status.
fn read_stats(chain: &DescriptorChain<&GuestMemory>, mem: &GuestMemory, shared: &Shared) {
    let c = &shared.counters;
    let mut r = match chain.clone().reader(mem) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!("virtio-balloon: bad stats buffer: {e:?}");
            c.errors.fetch_add(1, Relaxed);
            return;
        }
    };
    // One entry past the bound, so that an overlong buffer is seen as such.
    let mut buf = vec![0u8; r.available_bytes().min((MAX_STATS + 1) * STAT_LEN)];
    if let Err(e) = r.read_exact(&mut buf) {
        tracing::debug!("virtio-balloon: cannot read stats: {e}");
        c.errors.fetch_add(1, Relaxed);
        return;
    }
    let (stats, clean) = BalloonStats::parse(&buf, SystemTime::now());
    if !clean {
        c.errors.fetch_add(1, Relaxed);
    }
    *lock(&shared.stats) = Some(stats);
    c.stats_updates.fetch_add(1, Relaxed);
}
