//! The vCPU's view of the shared [`IrqChip`]: the CPU's [`Platform`].

use super::{Clock, IrqChip};
use crate::cpu::Platform;
use std::sync::{Arc, Mutex, MutexGuard};

/// Implements [`Platform`] by locking the shared chip for each access.
pub struct ChipPlatform {
    chip: Arc<Mutex<IrqChip>>,
    clock: Clock,
}

impl ChipPlatform {
    pub fn new(chip: Arc<Mutex<IrqChip>>, clock: Clock) -> Self {
        ChipPlatform { chip, clock }
    }

    pub fn chip(&self) -> &Arc<Mutex<IrqChip>> {
        &self.chip
    }

    fn lock(&self) -> MutexGuard<'_, IrqChip> {
        // A panic elsewhere must not take the CPU down with it.
        self.chip.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Platform for ChipPlatform {
    fn pio_read(&mut self, port: u16, data: &mut [u8]) -> bool {
        if !IrqChip::owns_port(port) {
            return false;
        }
        let mut chip = self.lock();
        for (i, b) in data.iter_mut().enumerate() {
            *b = chip.pio_read(port.wrapping_add(i as u16));
        }
        true
    }

    fn pio_write(&mut self, port: u16, data: &[u8]) -> bool {
        if !IrqChip::owns_port(port) {
            return false;
        }
        let mut chip = self.lock();
        for (i, &b) in data.iter().enumerate() {
            chip.pio_write(port.wrapping_add(i as u16), b);
        }
        true
    }

    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        self.lock().mmio_read(addr, data)
    }

    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        self.lock().mmio_write(addr, data)
    }

    fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        self.lock().rdmsr(msr)
    }

    fn wrmsr(&mut self, msr: u32, value: u64) -> Option<bool> {
        self.lock().wrmsr(msr, value)
    }

    fn interrupt_pending(&mut self) -> bool {
        self.lock().interrupt_pending()
    }

    fn ack_interrupt(&mut self) -> Option<u8> {
        self.lock().ack_interrupt()
    }

    fn cr8(&mut self) -> u64 {
        self.lock().cr8()
    }

    fn set_cr8(&mut self, value: u64) {
        self.lock().set_cr8(value)
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    fn poll_timers(&mut self) -> Option<u64> {
        self.lock().poll_timers()
    }
}
