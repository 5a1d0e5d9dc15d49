//! The virtio-pci *modern* transport (virtio 1.2, section 4.1): one PCI function that drives a
//! [`VirtioDevice`], the way Linux's `virtio_pci` driver (modern path) expects.
//!
//! Configuration space (`caps`) carries the identity (vendor 0x1af4, device 0x1040 + type,
//! revision 1), one 64-bit memory BAR, the virtio vendor capabilities that point into it, the
//! PCI_CFG access window and the MSI-X capability. BAR 0 is laid out in 4 KiB pages so a guest
//! can map each region by page:
//!
//! | offset   | region                                                  |
//! |----------|---------------------------------------------------------|
//! | `0x0000` | common configuration (`common`): features, status, queues |
//! | `0x1000` | ISR status (read to clear)                              |
//! | `0x2000` | device configuration (forwarded to the device)          |
//! | `0x3000` | notifications: queue `q` at `q * 4`                     |
//! | `0x4000` | MSI-X table (`msix`)                                    |
//! | `0x5000` | MSI-X pending bit array                                 |
//!
//! The VMM wraps a [`VirtioPci`] in `Arc<Mutex<..>>` and registers it both on the PCI root and
//! on the MMIO bus at `[bar0, bar0 + BAR0_SIZE)`. Device worker threads interrupt the driver
//! through an [`crate::Interrupt`] that only locks the MSI-X state (its own mutex), never the
//! `VirtioPci`: the bus holds that lock while a vCPU accesses the device, and a reset joins the
//! worker, so a worker waiting for it would deadlock.
//!
//! INTx is not wired (there is no ACPI `_PRT` routing yet), so the interrupt pin reads 0: Linux
//! uses MSI-X, and an interrupt raised while MSI-X is disabled only sets the ISR bits.

mod caps;
mod common;
mod msix;

#[cfg(test)]
mod config_space_tests;
#[cfg(test)]
mod driver_tests;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod msix_tests;
#[cfg(test)]
mod test_support;

use crate::device::{GuestWrites, VirtioDevice};
use crate::GuestMemory;
use common::CommonCfg;
use msix::IrqState;
use std::sync::{Arc, Mutex, MutexGuard};
use vireo_devices::pci::{PciBar, PciConfiguration, PciError};
use vireo_devices::{BusDevice, MsiSink, PciDevice};
use vmm_sys_util::eventfd::EventFd;

/// Size of BAR 0 (a power of two, as BARs must be): the VMM aligns its address to this.
pub const BAR0_SIZE: u64 = 0x8000;
/// The most queues a device may have: the MSI-X table (one vector per queue plus the
/// configuration vector) then fits its 4 KiB page.
pub const MAX_QUEUES: usize = 255;
/// "No MSI-X vector" in `msix_config` and `queue_msix_vector`.
pub const NO_VECTOR: u16 = 0xffff;

/// Each region of BAR 0 gets one 4 KiB page.
const REGION_SIZE: u64 = 0x1000;
const COMMON_CFG_OFFSET: u64 = 0x0000;
/// `struct virtio_pci_common_cfg` of virtio 1.0/1.1 (no `queue_notify_data`/`queue_reset`,
/// whose features we never offer).
const COMMON_CFG_LEN: u32 = 0x38;
const ISR_OFFSET: u64 = 0x1000;
const DEVICE_CFG_OFFSET: u64 = 0x2000;
const NOTIFY_OFFSET: u64 = 0x3000;
/// Bytes between two queues' notification addresses: 4 lets the VMM register a KVM ioeventfd
/// per queue without overlap, whatever width the driver writes.
const NOTIFY_OFF_MULTIPLIER: u32 = 4;
const MSIX_TABLE_OFFSET: u64 = 0x4000;
const MSIX_PBA_OFFSET: u64 = 0x5000;

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("PCI configuration: {0}")]
    Pci(#[from] PciError),
    #[error("cannot create a queue notification eventfd: {0}")]
    EventFd(std::io::Error),
    #[error("the device cannot be put on virtio-pci: {0}")]
    Device(String),
}

/// One virtio device on the modern PCI transport. See the module documentation.
pub struct VirtioPci {
    device: Box<dyn VirtioDevice>,
    mem: GuestMemory,
    msi: Arc<dyn MsiSink>,
    writes: Option<Arc<dyn GuestWrites>>,
    config: PciConfiguration,
    caps: caps::CapLayout,
    /// BAR 0's placement as last reported (at creation or by [`PciDevice::bar_moved`]); the
    /// configuration registers may hold a transient value while the guest sizes the BAR.
    bar0: u64,
    device_features: u64,
    max_sizes: Vec<u16>,
    common: CommonCfg,
    /// MSI-X table and PBA, vectors, ISR: shared with the device's [`msix::TransportInterrupt`].
    irq: Arc<Mutex<IrqState>>,
    /// One per queue, for the whole life of the function, so the VMM can register them as
    /// ioeventfds once; the device gets clones at each activation.
    notify: Vec<EventFd>,
    /// DRIVER_OK was accepted and the device activated.
    active: bool,
    /// Last value written to the PCI_CFG window's `pci_cfg_data`, for partial writes.
    pci_cfg_data: u32,
}

impl VirtioPci {
    /// A function driving `device`, with BAR 0 at `bar0` (aligned to [`BAR0_SIZE`]). `msi`
    /// delivers its MSI-X messages; `writes` is told about the device's writes to guest memory.
    pub fn new(
        device: Box<dyn VirtioDevice>,
        mem: GuestMemory,
        msi: Arc<dyn MsiSink>,
        writes: Option<Arc<dyn GuestWrites>>,
        bar0: u64,
    ) -> Result<VirtioPci, TransportError> {
        let max_sizes = device.queue_max_sizes().to_vec();
        if max_sizes.is_empty() || max_sizes.len() > MAX_QUEUES {
            return Err(TransportError::Device(format!(
                "{} queues (1 to {MAX_QUEUES} supported)",
                max_sizes.len()
            )));
        }
        // The split ring needs a power-of-two size, at most 32768 (virtio 1.2, 2.7).
        if let Some(bad) = max_sizes
            .iter()
            .find(|s| !s.is_power_of_two() || **s > 0x8000)
        {
            return Err(TransportError::Device(format!("queue max size {bad}")));
        }
        let device_type = device.device_type();
        let num_queues = max_sizes.len() as u16;
        let vectors = num_queues + 1;
        let (config, caps) = caps::build(device_type, num_queues, vectors, bar0)?;
        let notify = (0..num_queues)
            .map(|_| EventFd::new(libc::EFD_NONBLOCK))
            .collect::<Result<Vec<_>, _>>()
            .map_err(TransportError::EventFd)?;
        Ok(VirtioPci {
            device_features: device.features(),
            device,
            mem,
            msi,
            writes,
            config,
            caps,
            bar0,
            common: CommonCfg::new(&max_sizes),
            irq: Arc::new(Mutex::new(IrqState::new(
                usize::from(vectors),
                max_sizes.len(),
            ))),
            max_sizes,
            notify,
            active: false,
            pci_cfg_data: 0,
        })
    }

    /// The virtio device type ([`crate::types`]).
    pub fn device_type(&self) -> u32 {
        self.device.device_type()
    }

    /// The device's counters, for the API.
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.device.counters()
    }

    /// BAR 0's current guest-physical address.
    pub fn bar0(&self) -> u64 {
        self.bar0
    }

    /// Number of queues the device has.
    pub fn num_queues(&self) -> u16 {
        self.max_sizes.len() as u16
    }

    /// Guest-physical address the driver writes to notify `queue` (for a KVM ioeventfd of any
    /// length, no datamatch); moves with BAR 0.
    pub fn notify_address(&self, queue: u16) -> Option<u64> {
        (usize::from(queue) < self.notify.len()).then(|| {
            self.bar0 + NOTIFY_OFFSET + u64::from(queue) * u64::from(NOTIFY_OFF_MULTIPLIER)
        })
    }

    /// The eventfd a notification of `queue` signals: register it as an ioeventfd at
    /// [`Self::notify_address`] so notifications skip the VMM.
    pub fn notify_eventfd(&self, queue: u16) -> Option<&EventFd> {
        self.notify.get(usize::from(queue))
    }

    /// Wires the function's INTA# to `line` (the IOAPIC input the ACPI `_PRT` gives its
    /// slot), for drivers that don't use MSI-X.
    pub fn set_intx(&mut self, line: Arc<dyn vireo_devices::IrqLine>) {
        self.config.set_interrupt_pin(1);
        lock(&self.irq).set_intx(line);
    }

    /// Whether the driver set DRIVER_OK and the device is running.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// A read of BAR 0 at `offset`: what the MMIO bus and the PCI_CFG window both call.
    fn bar_read(&mut self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        let Some((base, off)) = region(offset, data.len()) else {
            return;
        };
        match base {
            COMMON_CFG_OFFSET => self.common_read(off, data),
            // Reading the ISR clears it (virtio 1.2, 4.1.4.5): that is how a driver using INTx
            // acknowledges the interrupt. Its other bytes read 0.
            ISR_OFFSET if off == 0 => {
                if let Some(b) = data.first_mut() {
                    *b = lock(&self.irq).take_isr();
                }
            }
            DEVICE_CFG_OFFSET => self.device.read_config(off, data),
            NOTIFY_OFFSET => {}
            MSIX_TABLE_OFFSET => lock(&self.irq).read_table(off, data),
            MSIX_PBA_OFFSET => lock(&self.irq).read_pba(off, data),
            _ => {}
        }
    }

    /// A write of BAR 0 at `offset`.
    fn bar_write(&mut self, offset: u64, data: &[u8]) {
        let Some((base, off)) = region(offset, data.len()) else {
            return;
        };
        match base {
            COMMON_CFG_OFFSET => self.common_write(off, data),
            DEVICE_CFG_OFFSET => self.device.write_config(off, data),
            NOTIFY_OFFSET => self.notify_write(off),
            MSIX_TABLE_OFFSET => {
                let msg = lock(&self.irq).write_table(off, data);
                msix::deliver(self.msi.as_ref(), msg);
            }
            // ISR and PBA are read-only.
            _ => {}
        }
    }

    /// The driver notified a queue. The value written (the queue index) is not needed: the
    /// address tells which queue, as it does for an ioeventfd.
    fn notify_write(&mut self, off: u64) {
        let queue = off / u64::from(NOTIFY_OFF_MULTIPLIER);
        if !self.active {
            return;
        }
        if let Some(fd) = usize::try_from(queue).ok().and_then(|q| self.notify.get(q)) {
            if let Err(e) = fd.write(1) {
                tracing::warn!(queue, "virtio-pci: cannot signal a queue notification: {e}");
            }
        }
    }
}

/// Splits a BAR 0 offset into (region base, offset in region). Accesses of more than 8 bytes, or
/// that cross a region boundary (only possible unaligned), reach nothing.
fn region(offset: u64, len: usize) -> Option<(u64, u64)> {
    let off = offset % REGION_SIZE;
    let fits = (1..=8).contains(&len) && off + len as u64 <= REGION_SIZE && offset < BAR0_SIZE;
    fits.then_some((offset - off, off))
}

/// Locks, recovering from poisoning: a panic elsewhere must not wedge the device.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl BusDevice for VirtioPci {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        self.bar_read(offset, data)
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        self.bar_write(offset, data)
    }
}

impl PciDevice for VirtioPci {
    fn read_config_register(&mut self, reg: usize) -> u32 {
        if reg == self.caps.pci_cfg_data_reg() {
            return self.pci_cfg_window_read();
        }
        self.config.read_reg(reg)
    }

    fn write_config_register(&mut self, reg: usize, value: u32, mask: u32) {
        if reg == self.caps.pci_cfg_data_reg() {
            return self.pci_cfg_window_write(value, mask);
        }
        self.config.write_reg(reg, value, mask);
        if reg == self.caps.msix_reg() {
            // Message control: bit 31 of the register is MSI-X enable, bit 30 function mask.
            let r = self.config.read_reg(reg);
            let msgs = lock(&self.irq).set_control(r & 1 << 31 != 0, r & 1 << 30 != 0);
            msix::deliver(self.msi.as_ref(), msgs);
        }
    }

    fn bars(&self) -> Vec<PciBar> {
        self.config.bars()
    }

    fn bar_moved(&mut self, bar: &PciBar, old_addr: u64) {
        if bar.index == 0 {
            tracing::debug!("virtio-pci: BAR 0 moved {old_addr:#x} -> {:#x}", bar.addr);
            self.bar0 = bar.addr;
        }
    }
}
