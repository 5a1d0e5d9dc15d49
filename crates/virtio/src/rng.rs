//! virtio-rng (device type 4): the guest's entropy source, filled from the host's
//! `getrandom(2)`, so the guest kernel's CRNG is seeded at boot without waiting for jitter.

use crate::device::{self, ActivateError, Activation, QueueHandle, VirtioDevice};
use crate::worker::Worker;
use crate::{features, types, GuestMemory};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

const QUEUE_SIZE: u16 = 256;
/// The most bytes one request gets: the guest may post a buffer as large as its memory, and
/// the host must not allocate or block on that.
const MAX_REQUEST: usize = 64 * 1024;

crate::device::counters! {
    struct Counters {
        requests,
        bytes,
        errors,
    }
}

#[derive(Default)]
pub struct Rng {
    counters: Arc<Counters>,
    worker: Option<Worker>,
}

impl Rng {
    pub fn new() -> Self {
        Self::default()
    }
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        types::RNG
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        let Activation {
            mem,
            mut queues,
            interrupt,
            writes,
            ..
        } = act;
        let mut q = queues
            .pop()
            .filter(|q| q.index == 0)
            .ok_or_else(|| ActivateError::Queues("virtio-rng needs its request queue".into()))?;
        let counters = self.counters.clone();
        let fd = q.notify.as_raw_fd();
        self.worker = Some(Worker::spawn("virtio-rng", &[fd], move |_| {
            let _ = q.notify.read();
            serve(&mut q, &mem, interrupt.as_ref(), &writes, &counters);
        })?);
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.snapshot()
    }
}

/// Fills every available buffer, re-checking after re-enabling notifications so that a buffer
/// posted meanwhile is not left waiting for a kick the driver will not send.
fn serve(
    q: &mut QueueHandle,
    mem: &GuestMemory,
    interrupt: &dyn device::Interrupt,
    writes: &Option<Arc<dyn device::GuestWrites>>,
    counters: &Counters,
) {
    device::drain(q, mem, "virtio-rng", |q, chain| {
        let head = chain.head_index();
        let written = fill(&chain, mem).unwrap_or_else(|e| {
            tracing::debug!("virtio-rng: bad request: {e}");
            counters.errors.fetch_add(1, Relaxed);
            0
        });
        counters.requests.fetch_add(1, Relaxed);
        counters.bytes.fetch_add(written as u64, Relaxed);
        device::report_writes(writes, &chain);
        device::complete(q, mem, interrupt, head, written as u32);
    });
}

fn fill(
    chain: &virtio_queue::DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> std::io::Result<usize> {
    let mut w = chain
        .clone()
        .writer(mem)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut buf = vec![0u8; w.available_bytes().min(MAX_REQUEST)];
    let mut got = 0;
    while got < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`, which we own.
        let n = unsafe { libc::getrandom(buf[got..].as_mut_ptr().cast(), buf.len() - got, 0) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        got += n as usize;
    }
    w.write_all(&buf)?;
    Ok(buf.len())
}

#[cfg(test)]
#[path = "rng_tests.rs"]
mod tests;
