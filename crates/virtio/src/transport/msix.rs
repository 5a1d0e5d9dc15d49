//! Interrupt state shared between the vCPU thread (which programs the MSI-X table, vectors and
//! reads the ISR through BAR 0) and the device's worker threads (which raise interrupts).
//!
//! The state lives behind its own mutex, never the `VirtioPci`'s (see the module documentation
//! of [`super`]). Messages are delivered to the [`MsiSink`] after that mutex is released, so a
//! sink that takes its own locks (an emulated LAPIC) cannot deadlock with a table write.

use super::{lock, NO_VECTOR};
use crate::device::Interrupt;
use std::sync::{Arc, Mutex};
use vireo_devices::{IrqLine, MsiSink};

/// Bytes per MSI-X table entry: address low, address high, data, vector control.
const ENTRY_SIZE: u64 = 16;
/// Vector control bit 0: the entry is masked.
const VECTOR_MASKED: u32 = 1;

/// ISR bit 0: a queue was used.
pub(super) const ISR_QUEUE: u8 = 1;
/// ISR bit 1: the device configuration changed.
pub(super) const ISR_CONFIG: u8 = 2;

/// A message to write: the interrupt controller decodes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Msg {
    addr: u64,
    data: u32,
}

pub(super) fn deliver(msi: &dyn MsiSink, msgs: impl IntoIterator<Item = Msg>) {
    for m in msgs {
        msi.signal_msi(m.addr, m.data);
    }
}

/// What raised an interrupt.
#[derive(Debug, Clone, Copy)]
pub(super) enum Source {
    Queue(u16),
    Config,
}

pub(super) struct IrqState {
    /// Entries as four dwords each; every entry starts masked (PCI 3.0, 6.8.2.9).
    table: Vec<[u32; 4]>,
    pba: Vec<u64>,
    /// Message control: MSI-X enable and function mask.
    enabled: bool,
    function_masked: bool,
    /// ISR status: read (and cleared) through BAR 0.
    isr: u8,
    /// The function's INTx line (INTA# routed to an IOAPIC pin), used while MSI-X is off:
    /// asserted with the ISR, deasserted when the driver reads it.
    intx: Option<Arc<dyn IrqLine>>,
    pub(super) config_vector: u16,
    pub(super) queue_vectors: Vec<u16>,
    pub(super) config_generation: u8,
    /// Bumped at each reset, so that an interrupt object of an earlier activation, if a device
    /// kept one, no longer reaches the driver.
    pub(super) epoch: u64,
    warned_disabled: bool,
}

impl IrqState {
    pub(super) fn new(vectors: usize, queues: usize) -> Self {
        Self {
            table: vec![[0, 0, 0, VECTOR_MASKED]; vectors],
            pba: vec![0; vectors.div_ceil(64)],
            enabled: false,
            function_masked: false,
            isr: 0,
            intx: None,
            config_vector: NO_VECTOR,
            queue_vectors: vec![NO_VECTOR; queues],
            config_generation: 0,
            epoch: 0,
            warned_disabled: false,
        }
    }

    /// `v` if the table has that entry, else NO_VECTOR (what the driver reads back to learn
    /// that the assignment failed).
    pub(super) fn checked_vector(&self, v: u16) -> u16 {
        if usize::from(v) < self.table.len() {
            v
        } else {
            NO_VECTOR
        }
    }

    /// Forgets the vector assignments and the ISR: a device reset. The table belongs to the
    /// PCI function and survives.
    pub(super) fn reset(&mut self) {
        self.take_isr();
        self.config_vector = NO_VECTOR;
        self.queue_vectors.fill(NO_VECTOR);
        self.epoch = self.epoch.wrapping_add(1);
    }

    pub(super) fn set_intx(&mut self, line: Arc<dyn IrqLine>) {
        self.intx = Some(line);
    }

    /// Reads and clears the ISR, which acknowledges an INTx interrupt.
    pub(super) fn take_isr(&mut self) -> u8 {
        let isr = std::mem::take(&mut self.isr);
        if isr != 0 {
            if let Some(line) = &self.intx {
                line.set_level(false);
            }
        }
        isr
    }

    fn pending(&self, v: usize) -> bool {
        self.pba
            .get(v / 64)
            .is_some_and(|w| w & (1 << (v % 64)) != 0)
    }

    fn set_pending(&mut self, v: usize, on: bool) {
        if let Some(w) = self.pba.get_mut(v / 64) {
            if on {
                *w |= 1 << (v % 64);
            } else {
                *w &= !(1 << (v % 64));
            }
        }
    }

    fn message(&self, v: usize) -> Option<Msg> {
        let e = self.table.get(v)?;
        Some(Msg {
            addr: u64::from(e[0]) | u64::from(e[1]) << 32,
            data: e[2],
        })
    }

    fn masked(&self, v: usize) -> bool {
        self.function_masked || self.table.get(v).is_none_or(|e| e[3] & VECTOR_MASKED != 0)
    }

    /// The message for vector `v` if it may be sent now; a masked vector becomes pending.
    fn fire(&mut self, v: usize) -> Option<Msg> {
        if v >= self.table.len() {
            return None;
        }
        if self.masked(v) {
            self.set_pending(v, true);
            return None;
        }
        self.message(v)
    }

    /// Vector `v`'s pending message if it was just unmasked (and clears its pending bit).
    fn release(&mut self, v: usize) -> Option<Msg> {
        if !self.enabled || self.masked(v) || !self.pending(v) {
            return None;
        }
        self.set_pending(v, false);
        self.message(v)
    }

    /// Raises an interrupt: sets the ISR bit and returns the message to send, if any.
    pub(super) fn raise(&mut self, source: Source) -> Option<Msg> {
        let vector = match source {
            Source::Queue(q) => {
                self.isr |= ISR_QUEUE;
                self.queue_vectors
                    .get(usize::from(q))
                    .copied()
                    .unwrap_or(NO_VECTOR)
            }
            Source::Config => {
                self.isr |= ISR_CONFIG;
                self.config_vector
            }
        };
        if !self.enabled {
            match &self.intx {
                Some(line) => line.set_level(true),
                None if !self.warned_disabled => {
                    self.warned_disabled = true;
                    tracing::warn!(
                        "virtio-pci: interrupt with MSI-X disabled and no INTx line; only the \
                         ISR is set"
                    );
                }
                None => {}
            }
            return None;
        }
        if vector == NO_VECTOR {
            return None;
        }
        self.fire(usize::from(vector))
    }

    /// New message control bits; returns the pending messages that an unmask releases.
    pub(super) fn set_control(&mut self, enabled: bool, function_masked: bool) -> Vec<Msg> {
        self.enabled = enabled;
        self.function_masked = function_masked;
        (0..self.table.len())
            .filter_map(|v| self.release(v))
            .collect()
    }

    pub(super) fn read_table(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            let entry = usize::try_from(o / ENTRY_SIZE).ok();
            let word = entry.and_then(|e| self.table.get(e)?.get((o % ENTRY_SIZE / 4) as usize));
            *b = word.map_or(0, |w| w.to_le_bytes()[(o % 4) as usize]);
        }
    }

    /// A guest write to the table; an entry unmasked with its pending bit set sends its
    /// message (returned) right away.
    pub(super) fn write_table(&mut self, offset: u64, data: &[u8]) -> Vec<Msg> {
        for (i, &b) in data.iter().enumerate() {
            let o = offset + i as u64;
            let entry = usize::try_from(o / ENTRY_SIZE).ok();
            if let Some(w) = entry.and_then(|e| {
                self.table
                    .get_mut(e)?
                    .get_mut((o % ENTRY_SIZE / 4) as usize)
            }) {
                let mut bytes = w.to_le_bytes();
                bytes[(o % 4) as usize] = b;
                *w = u32::from_le_bytes(bytes);
            }
        }
        // Only the entries this access touched can have been unmasked.
        let entry = |o: u64| usize::try_from(o / ENTRY_SIZE).unwrap_or(usize::MAX);
        let first = entry(offset);
        let last = entry(offset.saturating_add(data.len().saturating_sub(1) as u64));
        (first..=last.min(self.table.len()))
            .filter_map(|v| self.release(v))
            .collect()
    }

    /// The PBA is read-only to the guest.
    pub(super) fn read_pba(&self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = offset + i as u64;
            let word = usize::try_from(o / 8).ok().and_then(|w| self.pba.get(w));
            *b = word.map_or(0, |w| w.to_le_bytes()[(o % 8) as usize]);
        }
    }
}

/// What the device is given to interrupt the driver. It only locks the interrupt state.
pub(super) struct TransportInterrupt {
    pub(super) irq: Arc<Mutex<IrqState>>,
    pub(super) msi: Arc<dyn MsiSink>,
    /// The activation it was made for; see [`IrqState::epoch`].
    pub(super) epoch: u64,
}

impl TransportInterrupt {
    fn raise(&self, source: Source, config_changed: bool) {
        let msg = {
            let mut s = lock(&self.irq);
            if s.epoch != self.epoch {
                return;
            }
            if config_changed {
                // Tells a driver reading the device configuration that it changed under it.
                s.config_generation = s.config_generation.wrapping_add(1);
            }
            s.raise(source)
        };
        deliver(self.msi.as_ref(), msg);
    }
}

impl Interrupt for TransportInterrupt {
    fn queue(&self, index: u16) {
        self.raise(Source::Queue(index), false)
    }

    fn config(&self) {
        self.raise(Source::Config, true)
    }
}
