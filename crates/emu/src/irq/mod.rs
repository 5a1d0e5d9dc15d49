//! The interrupt controllers and timers that KVM keeps in the kernel: the local APIC (with
//! its timer, including TSC-deadline mode), the IOAPIC, the i8254 PIT and the i8259 PIC pair,
//! plus MSI delivery. [`IrqChip`] holds them all behind one lock; device threads drive its
//! lines ([`IrqChip::set_irq_level`], [`IrqChip::msi`]) and the vCPU reaches it through
//! [`ChipPlatform`], the CPU's [`Platform`](crate::cpu::Platform).
//!
//! Wiring (matching the MADT the VMM builds): IOAPIC pins 0-23 are GSIs 0-23; ISA IRQ 0 (the
//! PIT) is IOAPIC pin 2 and 8259 IRQ 0; other ISA IRQs 1-15 are both IOAPIC pin n and 8259
//! IRQ n. The 8259's output goes to LINT0 of the BSP's local APIC.

pub mod ioapic;
pub mod lapic;
pub mod pic;
pub mod pit;
mod platform;

pub use ioapic::Ioapic;
pub use lapic::Lapic;
pub use pic::Pic;
pub use pit::Pit;
pub use platform::ChipPlatform;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Tells the vCPU thread that the interrupt state may have changed.
#[derive(Debug, Default)]
pub struct Waker {
    attention: AtomicBool,
    thread: Mutex<Option<std::thread::Thread>>,
}

impl Waker {
    pub fn new() -> Self {
        Self::default()
    }

    /// Set when the interrupt state may have changed; the CPU clears it when it looks.
    pub fn attention(&self) -> &AtomicBool {
        &self.attention
    }

    /// The vCPU thread to unpark.
    pub fn set_thread(&self, t: std::thread::Thread) {
        *self.thread.lock().unwrap_or_else(|e| e.into_inner()) = Some(t);
    }

    /// `attention = true` and unparks the vCPU thread.
    pub fn notify(&self) {
        self.attention.store(true, Ordering::SeqCst);
        if let Some(t) = &*self.thread.lock().unwrap_or_else(|e| e.into_inner()) {
            t.unpark();
        }
    }
}

/// Host monotonic time in nanoseconds since creation, the time base of every timer. A
/// manual clock (for tests) stands still until advanced.
#[derive(Debug, Clone)]
pub struct Clock {
    start: Instant,
    manual: Option<Arc<AtomicU64>>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    pub fn new() -> Self {
        Clock {
            start: Instant::now(),
            manual: None,
        }
    }

    /// A clock that reads 0 until moved with [`Clock::advance`] or [`Clock::set_ns`]; every
    /// clone shares the same time.
    pub fn manual() -> Self {
        Clock {
            start: Instant::now(),
            manual: Some(Arc::new(AtomicU64::new(0))),
        }
    }

    pub fn now_ns(&self) -> u64 {
        match &self.manual {
            Some(t) => t.load(Ordering::SeqCst),
            None => self.start.elapsed().as_nanos() as u64,
        }
    }

    /// Moves a manual clock forward (no effect on a real one).
    pub fn advance(&self, ns: u64) {
        if let Some(t) = &self.manual {
            t.fetch_add(ns, Ordering::SeqCst);
        }
    }

    /// Sets a manual clock (no effect on a real one).
    pub fn set_ns(&self, ns: u64) {
        if let Some(t) = &self.manual {
            t.store(ns, Ordering::SeqCst);
        }
    }
}

/// IA32_APIC_BASE.
pub const MSR_APIC_BASE: u32 = 0x1b;
/// IA32_TSC_DEADLINE.
pub const MSR_TSC_DEADLINE: u32 = 0x6e0;
/// The IOAPIC's register window.
pub const IOAPIC_BASE: u64 = 0xfec0_0000;
pub const IOAPIC_SIZE: u64 = 0x1000;
/// The IOAPIC's ID: the MADT gives it the first ID after the local APICs (one vCPU).
pub const IOAPIC_ID: u8 = 1;
/// IOAPIC pin of ISA IRQ 0.
pub const PIT_GSI: usize = 2;

/// All interrupt controllers and timers of the machine.
pub struct IrqChip {
    clock: Clock,
    waker: Arc<Waker>,
    /// The local APICs (one per vCPU; only one for now).
    pub lapic: Lapic,
    pub ioapic: Ioapic,
    pub pit: Pit,
    pub pic: Pic,
    /// Kinds of unsupported deliveries already logged (bit per kind).
    logged: u32,
}

impl IrqChip {
    pub fn new(clock: Clock, waker: Arc<Waker>) -> Self {
        IrqChip {
            clock,
            waker,
            lapic: Lapic::new(0),
            ioapic: Ioapic::new(IOAPIC_ID),
            pit: Pit::new(),
            pic: Pic::new(),
            logged: 0,
        }
    }

    pub fn now_ns(&self) -> u64 {
        self.clock.now_ns()
    }

    pub fn waker(&self) -> &Arc<Waker> {
        &self.waker
    }

    fn log_once(&mut self, kind: u32, msg: std::fmt::Arguments) {
        if self.logged & (1 << kind) == 0 {
            self.logged |= 1 << kind;
            tracing::debug!("emu irq: {msg}");
        }
    }

    /// Notifies the vCPU if an interrupt is deliverable.
    fn kick_if_pending(&mut self) {
        if self.interrupt_pending() {
            self.waker.notify();
        }
    }

    /// A device drives interrupt line `gsi` (`high` = asserted).
    pub fn set_irq_level(&mut self, gsi: u32, high: bool) {
        let pin = gsi as usize;
        if pin < ioapic::PINS && self.ioapic.set_pin(pin, high) {
            self.service_pin(pin);
        }
        // ISA IRQ 0 is the PIT's (pin 2); the 8259's IRQ 2 is the cascade.
        if gsi < 16 && gsi != 2 {
            self.pic.set_irq(gsi, high);
        }
        self.kick_if_pending();
    }

    /// ISA IRQ 0 pulses once (a rising edge of PIT channel 0's output).
    fn pulse_irq0(&mut self) {
        if self.ioapic.set_pin(PIT_GSI, true) {
            self.service_pin(PIT_GSI);
        }
        self.ioapic.set_pin(PIT_GSI, false);
        self.pic.set_irq(0, true);
        self.pic.set_irq(0, false);
    }

    /// Sends IOAPIC pin `pin`'s message if it has one.
    fn service_pin(&mut self, pin: usize) {
        if let Some(m) = self.ioapic.take_msg(pin) {
            let accepted = self.deliver(m.vector, m.delivery, m.logical, m.dest, m.level);
            if accepted && m.level {
                self.ioapic.set_remote_irr(pin);
            }
        }
    }

    /// Delivers an APIC message to the local APICs it addresses; true if one accepted it.
    fn deliver(&mut self, vector: u8, delivery: u8, logical: bool, dest: u8, level: bool) -> bool {
        if !self.lapic.matches(dest, logical) {
            self.log_once(
                0,
                format_args!("interrupt {vector:#x} for destination {dest:#x} (logical {logical}) matches no CPU"),
            );
            return false;
        }
        self.deliver_local(vector, delivery, level)
    }

    fn deliver_local(&mut self, vector: u8, delivery: u8, level: bool) -> bool {
        match delivery {
            0 | 1 => self.lapic.accept(vector, level),
            _ => {
                self.log_once(
                    1 + u32::from(delivery),
                    format_args!("delivery mode {delivery} (vector {vector:#x}) ignored"),
                );
                false
            }
        }
    }

    /// A message-signalled interrupt: address 0xfeexxxxx, data with vector and delivery mode.
    pub fn msi(&mut self, addr: u64, data: u32) {
        if addr >> 20 != 0xfee {
            self.log_once(10, format_args!("MSI to {addr:#x} is not an APIC address"));
            return;
        }
        let dest = (addr >> 12) as u8;
        let logical = addr & (1 << 2) != 0;
        let vector = data as u8;
        let delivery = ((data >> 8) & 7) as u8;
        let level = data & (1 << 15) != 0;
        self.deliver(vector, delivery, logical, dest, level);
        self.kick_if_pending();
    }

    /// Handles the side effects of a local APIC register write.
    fn lapic_effect(&mut self, fx: lapic::WriteEffect) {
        if let Some(v) = fx.eoi_level {
            let mut pins = self.ioapic.eoi(v);
            while pins != 0 {
                let pin = pins.trailing_zeros() as usize;
                pins &= pins - 1;
                self.service_pin(pin);
            }
        }
        if let Some(ipi) = fx.ipi {
            let to_self = match ipi.shorthand {
                0 => self.lapic.matches(ipi.dest, ipi.logical),
                1 | 2 => true,
                _ => false, // all excluding self: no other CPUs yet
            };
            if to_self {
                // The ICR's trigger bit only matters for INIT level de-assert; IPIs are edge.
                self.deliver_local(ipi.vector, ipi.delivery, false);
            }
        }
        if fx.timer {
            // The halted vCPU must recompute its sleep.
            self.waker.notify();
        } else if fx.notify {
            self.kick_if_pending();
        }
    }

    /// Whether an external interrupt is waiting for the CPU (if IF allows).
    pub fn interrupt_pending(&mut self) -> bool {
        (self.lapic.accepts_pic() && self.pic.output()) || self.lapic.pending().is_some()
    }

    /// The INTA cycle: the 8259 (through LINT0 ExtINT) first, then the local APIC.
    pub fn ack_interrupt(&mut self) -> Option<u8> {
        if self.lapic.accepts_pic() && self.pic.output() {
            return Some(self.pic.inta());
        }
        self.lapic.ack()
    }

    /// Fires the timers that are due; returns the next deadline.
    pub fn poll_timers(&mut self) -> Option<u64> {
        let now = self.clock.now_ns();
        let (pit_fired, pit_next) = self.pit.poll(now);
        if pit_fired {
            self.pulse_irq0();
        }
        let (apic_fired, apic_next) = self.lapic.poll_timer(now);
        if pit_fired || apic_fired {
            self.kick_if_pending();
        }
        match (pit_next, apic_next) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn cr8(&self) -> u64 {
        self.lapic.cr8()
    }

    pub fn set_cr8(&mut self, v: u64) {
        self.lapic.set_cr8(v);
        self.kick_if_pending();
    }

    pub fn rdmsr(&mut self, msr: u32) -> Option<u64> {
        match msr {
            MSR_APIC_BASE => Some(self.lapic.base_msr),
            MSR_TSC_DEADLINE => Some(self.lapic.tsc_deadline()),
            _ => None,
        }
    }

    pub fn wrmsr(&mut self, msr: u32, v: u64) -> Option<bool> {
        match msr {
            MSR_APIC_BASE => {
                let ok = self.lapic.set_base_msr(v);
                self.kick_if_pending();
                Some(ok)
            }
            MSR_TSC_DEADLINE => {
                self.lapic.set_tsc_deadline(v);
                // The halted vCPU must recompute its sleep.
                self.waker.notify();
                Some(true)
            }
            _ => None,
        }
    }

    /// Whether `port` belongs to the chip.
    pub fn owns_port(port: u16) -> bool {
        Pic::owns(port) || Pit::owns(port)
    }

    pub fn pio_read(&mut self, port: u16) -> u8 {
        if Pic::owns(port) {
            self.pic.read(port)
        } else if Pit::owns(port) {
            let now = self.clock.now_ns();
            self.pit.read(port, now)
        } else {
            0xff
        }
    }

    pub fn pio_write(&mut self, port: u16, v: u8) {
        if Pic::owns(port) {
            self.pic.write(port, v);
            self.kick_if_pending();
        } else if Pit::owns(port) {
            let now = self.clock.now_ns();
            self.pit.write(port, v, now);
            // The PIT's schedule may have moved earlier than the halted vCPU's sleep.
            self.waker.notify();
        }
    }

    /// Which device an MMIO address hits: Some((true, offset)) for the local APIC page,
    /// Some((false, offset)) for the IOAPIC.
    fn mmio_target(&self, addr: u64) -> Option<(bool, u64)> {
        if self.lapic.hw_enabled() && addr & !0xfff == self.lapic.base() {
            Some((true, addr & 0xfff))
        } else if addr.wrapping_sub(IOAPIC_BASE) < IOAPIC_SIZE {
            Some((false, addr - IOAPIC_BASE))
        } else {
            None
        }
    }

    fn read_reg(&self, lapic: bool, reg: u64) -> u32 {
        if lapic {
            self.lapic.read(reg as u32, self.clock.now_ns())
        } else {
            self.ioapic.mmio_read(reg)
        }
    }

    /// An MMIO read; false if the address is not the chip's. Registers are 32 bits wide at
    /// 16-byte aligned offsets; other sizes and offsets read the bytes they cover (bytes 4-15
    /// of each 16-byte slot read 0).
    pub fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool {
        let Some((lapic, off)) = self.mmio_target(addr) else {
            return false;
        };
        let mut cached: Option<(u64, [u8; 4])> = None;
        for (i, b) in data.iter_mut().enumerate() {
            let o = off.wrapping_add(i as u64);
            let reg = o & !0xf;
            let byte = (o & 0xf) as usize;
            if byte >= 4 {
                *b = 0;
                continue;
            }
            let bytes = match cached {
                Some((r, v)) if r == reg => v,
                _ => {
                    let v = self.read_reg(lapic, reg).to_le_bytes();
                    cached = Some((reg, v));
                    v
                }
            };
            *b = bytes[byte];
        }
        true
    }

    /// An MMIO write; false if the address is not the chip's. A write covering only part of
    /// a register merges with its current value.
    pub fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool {
        let Some((lapic, off)) = self.mmio_target(addr) else {
            return false;
        };
        let reg = off & !0xf;
        let first = (off & 0xf) as usize;
        if first >= 4 || data.is_empty() {
            return true; // reserved bytes of the slot
        }
        let mut bytes = if first == 0 && data.len() >= 4 {
            [0; 4]
        } else {
            self.read_reg(lapic, reg).to_le_bytes()
        };
        for (i, &b) in data.iter().enumerate() {
            if let Some(slot) = bytes.get_mut(first + i) {
                *slot = b;
            }
        }
        let v = u32::from_le_bytes(bytes);
        if lapic {
            let now = self.clock.now_ns();
            let fx = self.lapic.write(reg as u32, v, now);
            self.lapic_effect(fx);
        } else if let Some(pin) = self.ioapic.mmio_write(reg, v) {
            self.service_pin(pin);
            self.kick_if_pending();
        }
        true
    }
}

#[cfg(test)]
#[path = "chip_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "cpu_tests.rs"]
mod cpu_tests;
