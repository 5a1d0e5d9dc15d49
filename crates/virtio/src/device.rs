//! The contract between a virtio device and its transport.
//!
//! The transport (PCI here) owns everything the driver negotiates through configuration space:
//! status, features, queue sizes and addresses, MSI-X vectors. When the driver sets DRIVER_OK
//! the transport hands the device an [`Activation`], and the device starts serving its queues,
//! normally on a [`crate::worker::Worker`] thread. A reset (status 0) calls
//! [`VirtioDevice::reset`], which must stop that thread before it returns: after a reset the
//! device must not touch guest memory.

use crate::GuestMemory;
use std::sync::Arc;
use virtio_queue::{DescriptorChain, Queue, QueueT};
use vmm_sys_util::eventfd::EventFd;

/// How a device interrupts the driver; the transport maps these to MSI-X vectors.
pub trait Interrupt: Send + Sync {
    /// Queue `index` has new used buffers.
    fn queue(&self, index: u16);
    /// The device configuration changed.
    fn config(&self);
}

/// Told about every guest-memory range a device writes (its "DMA"), before the device makes
/// the write visible to the driver through the used ring: a software CPU drops the instructions
/// it decoded from those pages, as the data may be a program the guest is about to run. The
/// CPU backend provides it (`Vm::guest_writes`).
pub use vireo_hypervisor::GuestWrites;

/// One queue the driver enabled.
pub struct QueueHandle {
    /// The queue's index in the device (0 = first queue of the device type).
    pub index: u16,
    pub queue: Queue,
    /// Signalled by the transport each time the driver notifies this queue.
    pub notify: EventFd,
}

/// Everything a device needs to run, given at DRIVER_OK.
pub struct Activation {
    pub mem: GuestMemory,
    /// The queues the driver enabled, in index order. Queues it left disabled are absent.
    pub queues: Vec<QueueHandle>,
    pub interrupt: Arc<dyn Interrupt>,
    /// The features the driver accepted (a subset of [`VirtioDevice::features`]).
    pub features: u64,
    /// Where to report writes into guest memory, if the CPU backend needs to know.
    pub writes: Option<Arc<dyn GuestWrites>>,
}

#[derive(Debug, thiserror::Error)]
pub enum ActivateError {
    #[error("the driver enabled no usable queue: {0}")]
    Queues(String),
    #[error("cannot start the device: {0}")]
    Io(#[from] std::io::Error),
}

/// A virtio device model (block, rng, ...), independent of the transport.
pub trait VirtioDevice: Send {
    /// The virtio device type ([`crate::types`]).
    fn device_type(&self) -> u32;
    /// The largest size of each of its queues; the length is the number of queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// The feature bits it offers, [`crate::features::VERSION_1`] included.
    fn features(&self) -> u64;
    /// Reads its configuration space; bytes beyond it read as zero.
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Writes its configuration space (most devices ignore this).
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// Starts serving the queues.
    fn activate(&mut self, act: Activation) -> Result<(), ActivateError>;
    /// Stops serving (joining its worker) and forgets the activation.
    fn reset(&mut self);
    /// Counters for the API: requests, bytes, errors, throttling, ...
    fn counters(&self) -> Vec<(&'static str, u64)> {
        Vec::new()
    }
}

/// Copies `data.len()` bytes of a device's configuration structure at `offset`; what lies
/// outside it reads as zero.
pub fn read_config_bytes(config: &[u8], offset: u64, data: &mut [u8]) {
    for (i, b) in data.iter_mut().enumerate() {
        *b = offset
            .checked_add(i as u64)
            .and_then(|o| usize::try_from(o).ok())
            .and_then(|o| config.get(o).copied())
            .unwrap_or(0);
    }
}

/// Reports every device-writable buffer of `chain` to `writes`. Call it after filling the
/// buffers and before `add_used`.
pub fn report_writes(writes: &Option<Arc<dyn GuestWrites>>, chain: &DescriptorChain<&GuestMemory>) {
    if let Some(w) = writes {
        for d in chain.clone().writable() {
            w.written(d.addr().0, u64::from(d.len()));
        }
    }
}

/// Hands every available chain of `q` to `each`, re-checking after re-enabling notifications
/// so that a chain posted meanwhile is not left waiting for a kick the driver will not send.
/// A driver index further ahead than the ring is long pops nothing while notifications keep
/// saying "more": the loop ends then instead of spinning.
pub fn drain(
    q: &mut QueueHandle,
    mem: &GuestMemory,
    device: &str,
    mut each: impl FnMut(&mut QueueHandle, DescriptorChain<&GuestMemory>),
) {
    loop {
        if let Err(e) = q.queue.disable_notification(mem) {
            tracing::warn!("{device}: {e}");
        }
        let mut served = false;
        while let Some(chain) = q.queue.pop_descriptor_chain(mem) {
            served = true;
            each(q, chain);
        }
        match q.queue.enable_notification(mem) {
            Ok(true) if served => continue,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!("{device}: {e}");
                return;
            }
        }
    }
}

/// Returns a used chain to the driver and interrupts it if the driver asked to be told (EVENT_IDX
/// or the NO_INTERRUPT flag).
pub fn complete(
    q: &mut QueueHandle,
    mem: &GuestMemory,
    interrupt: &dyn Interrupt,
    head: u16,
    len: u32,
) {
    if let Err(e) = q.queue.add_used(mem, head, len) {
        tracing::warn!(queue = q.index, "cannot return a used buffer: {e}");
        return;
    }
    match q.queue.needs_notification(mem) {
        Ok(true) => interrupt.queue(q.index),
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(queue = q.index, "cannot read the driver's used event: {e}");
            interrupt.queue(q.index)
        }
    }
}

/// Declares a device's counters: atomics its worker bumps and [`VirtioDevice::counters`]
/// reports by field name, through the generated `snapshot()`.
macro_rules! counters {
    ($(#[$m:meta])* $vis:vis struct $name:ident { $($(#[$fm:meta])* $field:ident,)* }) => {
        $(#[$m])*
        #[derive(Default)]
        $vis struct $name {
            $($(#[$fm])* pub(crate) $field: std::sync::atomic::AtomicU64,)*
        }

        impl $name {
            pub(crate) fn snapshot(&self) -> Vec<(&'static str, u64)> {
                vec![$((
                    stringify!($field),
                    self.$field.load(std::sync::atomic::Ordering::Relaxed),
                ),)*]
            }
        }
    };
}
pub(crate) use counters;
