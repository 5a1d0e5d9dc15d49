//! virtio-console (device type 3): one port, `hvc0` in the guest. What the guest writes goes to
//! the VMM's console output; what the user types is queued by [`ConsoleInput::push`] and handed
//! to the guest as it posts receive buffers.

use crate::device::{self, ActivateError, Activation, Interrupt, QueueHandle, VirtioDevice};
use crate::worker::Worker;
use crate::{features, types, GuestMemory, GuestWrites};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use virtio_queue::{DescriptorChain, QueueOwnedT, QueueT};
use vmm_sys_util::eventfd::EventFd;

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Bytes of typed input held for a guest that is not reading; the typist gets back-pressure.
const INPUT_CAPACITY: usize = 64 * 1024;
/// The most output bytes taken from one transmit chain.
const MAX_CHAIN_OUTPUT: usize = 64 * 1024;

/// Typed input on its way to the guest, shared by the VMM's console thread and the device.
pub struct ConsoleInput {
    buf: Mutex<VecDeque<u8>>,
    ready: EventFd,
}

impl ConsoleInput {
    fn new() -> std::io::Result<Self> {
        Ok(ConsoleInput {
            buf: Mutex::new(VecDeque::new()),
            ready: EventFd::new(libc::EFD_NONBLOCK)?,
        })
    }

    /// Queues as much of `data` as fits and returns how much that was; the caller retries the
    /// rest later, as with a UART's FIFO.
    pub fn push(&self, data: &[u8]) -> usize {
        let mut buf = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let n = data.len().min(INPUT_CAPACITY - buf.len());
        buf.extend(&data[..n]);
        drop(buf);
        if n > 0 {
            let _ = self.ready.write(1);
        }
        n
    }
}

crate::device::counters! {
    struct Counters {
        rx_bytes,
        tx_bytes,
        errors,
    }
}

pub struct Console {
    output: Arc<Mutex<Box<dyn Write + Send>>>,
    input: Arc<ConsoleInput>,
    counters: Arc<Counters>,
    worker: Option<Worker>,
}

impl Console {
    pub fn new(output: Box<dyn Write + Send>) -> std::io::Result<Console> {
        Ok(Console {
            output: Arc::new(Mutex::new(output)),
            input: Arc::new(ConsoleInput::new()?),
            counters: Arc::default(),
            worker: None,
        })
    }

    /// Where the VMM puts typed input.
    pub fn input(&self) -> Arc<ConsoleInput> {
        self.input.clone()
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        types::CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC
    }

    /// No feature that gives the configuration meaning (size, multiport, emergency write) is
    /// offered, so it reads as zeros.
    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        let mut queues: Vec<Option<QueueHandle>> = vec![None, None];
        for q in act.queues {
            if let Some(slot) = queues.get_mut(usize::from(q.index)) {
                *slot = Some(q);
            }
        }
        let [Some(rx), Some(tx)] =
            <[Option<QueueHandle>; 2]>::try_from(queues).unwrap_or([None, None])
        else {
            return Err(ActivateError::Queues(
                "virtio-console needs its receive and transmit queues".into(),
            ));
        };
        let sources = [
            rx.notify.as_raw_fd(),
            tx.notify.as_raw_fd(),
            self.input.ready.as_raw_fd(),
        ];
        let mut port = Port {
            rx,
            tx,
            mem: act.mem,
            interrupt: act.interrupt,
            writes: act.writes,
            output: self.output.clone(),
            input: self.input.clone(),
            counters: self.counters.clone(),
        };
        // Input typed before the driver was ready is delivered now.
        port.receive();
        self.worker = Some(Worker::spawn(
            "virtio-console",
            &sources,
            move |source| match source {
                RX => {
                    let _ = port.rx.notify.read();
                    port.receive();
                }
                TX => {
                    let _ = port.tx.notify.read();
                    port.transmit();
                }
                _ => {
                    let _ = port.input.ready.read();
                    port.receive();
                }
            },
        )?);
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

/// The active port, owned by the worker thread.
struct Port {
    rx: QueueHandle,
    tx: QueueHandle,
    mem: GuestMemory,
    interrupt: Arc<dyn Interrupt>,
    writes: Option<Arc<dyn GuestWrites>>,
    output: Arc<Mutex<Box<dyn Write + Send>>>,
    input: Arc<ConsoleInput>,
    counters: Arc<Counters>,
}

impl Port {
    /// Moves queued input into the guest's receive buffers while there are both.
    fn receive(&mut self) {
        loop {
            if self.input.buf.lock().map_or(true, |b| b.is_empty()) {
                return;
            }
            let Some(chain) = self.rx.queue.pop_descriptor_chain(&self.mem) else {
                // Wait for the driver to post buffers (its notification wakes us), unless it
                // posted one meanwhile (and its index is sane: a bogus one pops nothing).
                match self.rx.queue.enable_notification(&self.mem) {
                    Ok(true) if self.rx.queue.pop_descriptor_chain(&self.mem).is_some() => {
                        self.rx.queue.go_to_previous_position();
                        continue;
                    }
                    _ => return,
                }
            };
            let head = chain.head_index();
            let n = self.fill(&chain).unwrap_or_else(|e| {
                tracing::debug!("virtio-console: bad receive buffer: {e}");
                self.counters.errors.fetch_add(1, Relaxed);
                0
            });
            self.counters.rx_bytes.fetch_add(n as u64, Relaxed);
            device::report_writes(&self.writes, &chain);
            device::complete(
                &mut self.rx,
                &self.mem,
                self.interrupt.as_ref(),
                head,
                n as u32,
            );
        }
    }

    /// Copies queued input into one receive chain; what doesn't fit stays queued.
    fn fill(&self, chain: &DescriptorChain<&GuestMemory>) -> std::io::Result<usize> {
        let mut w = chain
            .clone()
            .writer(&self.mem)
            .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
        let mut buf = self.input.buf.lock().unwrap_or_else(|p| p.into_inner());
        let n = buf.len().min(w.available_bytes());
        let (a, b) = buf.as_slices();
        let from_a = n.min(a.len());
        w.write_all(&a[..from_a])?;
        w.write_all(&b[..n - from_a])?;
        buf.drain(..n);
        Ok(n)
    }

    /// Writes every transmit chain's bytes to the console output.
    fn transmit(&mut self) {
        let Port {
            tx,
            mem,
            interrupt,
            output,
            counters,
            ..
        } = self;
        device::drain(tx, mem, "virtio-console", |q, chain| {
            if let Err(e) = write_out(&chain, mem, output, counters) {
                tracing::debug!("virtio-console: bad transmit buffer: {e}");
                counters.errors.fetch_add(1, Relaxed);
            }
            device::complete(q, mem, interrupt.as_ref(), chain.head_index(), 0);
        });
    }
}

/// Copies a transmit chain's bytes to the console output.
fn write_out(
    chain: &DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    output: &Mutex<Box<dyn Write + Send>>,
    counters: &Counters,
) -> std::io::Result<()> {
    let mut r = chain
        .clone()
        .reader(mem)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut data = vec![0u8; r.available_bytes().min(MAX_CHAIN_OUTPUT)];
    r.read_exact(&mut data)?;
    counters.tx_bytes.fetch_add(data.len() as u64, Relaxed);
    let mut out = output.lock().unwrap_or_else(|p| p.into_inner());
    out.write_all(&data)?;
    out.flush()
}

#[cfg(test)]
#[path = "console_tests.rs"]
mod tests;
