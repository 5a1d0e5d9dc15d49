//! Device models of the virtual machine (seed 2.3, I/O virtualization by emulation).
//!
//! Every device sits on a [`bus::Bus`] (port I/O or MMIO) and implements [`BusDevice`]. The
//! devices never know which CPU backend (KVM or the emulator) runs the guest: the VMM routes
//! each I/O or MMIO exit to the bus, and the bus to the device.

pub mod acpi_pm;
pub mod bus;
pub mod cmos;
pub mod i8042;
pub mod pci;
pub mod serial;
#[cfg(test)]
mod testing;

use std::sync::atomic::{AtomicU8, Ordering};
use vmm_sys_util::eventfd::EventFd;

pub use acpi_pm::AcpiPm;
pub use bus::{Bus, BusDevice};
pub use cmos::Cmos;
pub use i8042::I8042;
pub use pci::{PciConfigIo, PciConfigMmio, PciDevice, PciRoot};
pub use serial::Serial;

/// Why the guest asked the VM to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitReason {
    /// ACPI S5 (the guest's `poweroff`).
    PowerOff = 1,
    /// A reset request (i8042 pulse of the reset line, or ACPI reset): `reboot`.
    Reset = 2,
}

/// A one-shot signal that devices raise to end the VM. The VMM waits on [`ExitSignal::fd`].
pub struct ExitSignal {
    fd: EventFd,
    reason: AtomicU8,
}

impl ExitSignal {
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            fd: EventFd::new(libc::EFD_NONBLOCK)?,
            reason: AtomicU8::new(0),
        })
    }

    /// Records the first reason and wakes whoever waits on the eventfd.
    pub fn raise(&self, reason: ExitReason) {
        let _ = self
            .reason
            .compare_exchange(0, reason as u8, Ordering::SeqCst, Ordering::SeqCst);
        if let Err(e) = self.fd.write(1) {
            tracing::error!("failed to signal VM exit: {e}");
        }
    }

    /// The reason raised first, if any.
    pub fn reason(&self) -> Option<ExitReason> {
        match self.reason.load(Ordering::SeqCst) {
            1 => Some(ExitReason::PowerOff),
            2 => Some(ExitReason::Reset),
            _ => None,
        }
    }

    pub fn fd(&self) -> &EventFd {
        &self.fd
    }
}

/// An interrupt line into the guest's interrupt controller (an IOAPIC pin / GSI).
///
/// The VMM implements it for each backend (KVM's in-kernel IOAPIC, the emulator's IOAPIC), so
/// devices raise interrupts without knowing which CPU backend runs the guest.
pub trait IrqLine: Send + Sync {
    /// Drives a level-triggered line high or low.
    fn set_level(&self, high: bool);
    /// Signals an edge-triggered interrupt.
    fn pulse(&self) {
        self.set_level(true);
        self.set_level(false);
    }
}

/// Delivers a message-signalled interrupt (MSI or MSI-X): the write of `data` to `addr` that a
/// PCI function makes, decoded by the interrupt controller into a vector and destination.
///
/// Like [`IrqLine`], the VMM implements it per backend (KVM_SIGNAL_MSI, the emulator's LAPIC).
pub trait MsiSink: Send + Sync {
    fn signal_msi(&self, addr: u64, data: u32);
}
