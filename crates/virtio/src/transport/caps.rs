//! Configuration space of the function: the type-0 header, the virtio vendor capabilities
//! (`struct virtio_pci_cap`, virtio 1.2, 4.1.4) that tell the driver where each region of BAR 0
//! is, the PCI_CFG access window (4.1.4.9) and the MSI-X capability.

use super::{
    VirtioPci, BAR0_SIZE, COMMON_CFG_LEN, COMMON_CFG_OFFSET, DEVICE_CFG_OFFSET, ISR_OFFSET,
    MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET, NOTIFY_OFFSET, NOTIFY_OFF_MULTIPLIER, REGION_SIZE,
};
use crate::types;
use vireo_devices::pci::{PciBarKind, PciConfiguration, PciError, PciHeader};

pub(super) const VIRTIO_PCI_VENDOR: u16 = 0x1af4;
/// Device IDs of modern (non-transitional) devices are this plus the device type.
pub(super) const VIRTIO_PCI_DEVICE_BASE: u16 = 0x1040;
/// Subsystem device ID; the driver does not use it for modern devices.
pub(super) const VIRTIO_PCI_SUBSYSTEM_ID: u16 = 0x40;

pub(super) const CAP_ID_VENDOR: u8 = 0x09;
pub(super) const CAP_ID_MSIX: u8 = 0x11;

pub(super) const CAP_COMMON_CFG: u8 = 1;
pub(super) const CAP_NOTIFY_CFG: u8 = 2;
pub(super) const CAP_ISR_CFG: u8 = 3;
pub(super) const CAP_DEVICE_CFG: u8 = 4;
pub(super) const CAP_PCI_CFG: u8 = 5;

/// Byte offsets within `struct virtio_pci_cap` (from the capability ID byte).
const CAP_BAR: usize = 4;
const CAP_OFFSET: usize = 8;
const CAP_LENGTH: usize = 12;
/// `pci_cfg_data` of `struct virtio_pci_cfg_cap`.
const CAP_PCI_CFG_DATA: usize = 16;

/// Where the capabilities the transport must watch landed in configuration space.
pub(super) struct CapLayout {
    /// Byte offset of the MSI-X capability (dword aligned: its message control is the upper
    /// half of that register).
    msix: usize,
    /// Byte offset of the PCI_CFG capability.
    pci_cfg: usize,
}

impl CapLayout {
    pub(super) fn msix_reg(&self) -> usize {
        self.msix / 4
    }

    pub(super) fn pci_cfg_data_reg(&self) -> usize {
        (self.pci_cfg + CAP_PCI_CFG_DATA) / 4
    }
}

/// PCI class and subclass, as QEMU's virtio-pci devices report them.
fn class_of(device_type: u32) -> (u8, u8) {
    match device_type {
        types::NET => (0x02, 0x00),     // network: Ethernet
        types::BLOCK => (0x01, 0x00),   // mass storage: SCSI
        types::CONSOLE => (0x07, 0x80), // communication: other
        types::VSOCK => (0x07, 0x80),
        _ => (0xff, 0x00), // unclassified
    }
}

/// A `struct virtio_pci_cap` body (after the ID and next bytes) for a region of BAR 0.
fn virtio_cap(cfg_type: u8, offset: u64, length: u32, extra: &[u8]) -> Vec<u8> {
    let cap_len = (16 + extra.len()) as u8;
    let mut b = vec![cap_len, cfg_type, 0 /* bar */, 0 /* id */, 0, 0];
    b.extend_from_slice(&(offset as u32).to_le_bytes());
    b.extend_from_slice(&length.to_le_bytes());
    b.extend_from_slice(extra);
    b
}

/// The configuration space of a function for a device of `device_type` with `num_queues`
/// queues and an MSI-X table of `vectors` entries, BAR 0 placed at `bar0`.
pub(super) fn build(
    device_type: u32,
    num_queues: u16,
    vectors: u16,
    bar0: u64,
) -> Result<(PciConfiguration, CapLayout), super::TransportError> {
    let device_id = u16::try_from(device_type)
        .ok()
        .and_then(|t| VIRTIO_PCI_DEVICE_BASE.checked_add(t))
        .ok_or_else(|| super::TransportError::Device(format!("device type {device_type}")))?;
    let (class, subclass) = class_of(device_type);
    let mut c = PciConfiguration::new(&PciHeader {
        vendor_id: VIRTIO_PCI_VENDOR,
        device_id,
        class,
        subclass,
        prog_if: 0,
        revision_id: 1,
        subsystem_vendor_id: VIRTIO_PCI_VENDOR,
        subsystem_id: VIRTIO_PCI_SUBSYSTEM_ID,
    });
    c.add_bar(0, PciBarKind::Mmio64, BAR0_SIZE, false, bar0)?;
    // No INTx: see the module documentation.
    c.set_interrupt_pin(0);

    let notify_len = u32::from(num_queues) * NOTIFY_OFF_MULTIPLIER;
    c.add_capability(
        CAP_ID_VENDOR,
        &virtio_cap(CAP_COMMON_CFG, COMMON_CFG_OFFSET, COMMON_CFG_LEN, &[]),
    )?;
    c.add_capability(
        CAP_ID_VENDOR,
        &virtio_cap(
            CAP_NOTIFY_CFG,
            NOTIFY_OFFSET,
            notify_len,
            &NOTIFY_OFF_MULTIPLIER.to_le_bytes(),
        ),
    )?;
    c.add_capability(CAP_ID_VENDOR, &virtio_cap(CAP_ISR_CFG, ISR_OFFSET, 1, &[]))?;
    c.add_capability(
        CAP_ID_VENDOR,
        &virtio_cap(CAP_DEVICE_CFG, DEVICE_CFG_OFFSET, REGION_SIZE as u32, &[]),
    )?;
    let pci_cfg = c.add_capability(CAP_ID_VENDOR, &virtio_cap(CAP_PCI_CFG, 0, 0, &[0; 4]))?;
    // The driver picks the window's BAR, offset and length (4.1.4.9); pci_cfg_data is handled
    // by the transport itself.
    c.set_writable_bits((pci_cfg + CAP_BAR) / 4, 0xff);
    c.set_writable_bits((pci_cfg + CAP_OFFSET) / 4, u32::MAX);
    c.set_writable_bits((pci_cfg + CAP_LENGTH) / 4, u32::MAX);

    // MSI-X: message control (table size - 1), table and PBA offsets with BIR 0.
    let mut msix = Vec::with_capacity(10);
    msix.extend_from_slice(&(vectors - 1).to_le_bytes());
    msix.extend_from_slice(&(MSIX_TABLE_OFFSET as u32).to_le_bytes());
    msix.extend_from_slice(&(MSIX_PBA_OFFSET as u32).to_le_bytes());
    let msix_off = c.add_capability(CAP_ID_MSIX, &msix)?;
    if msix_off % 4 != 0 {
        return Err(PciError::CapabilitySpace(msix.len() + 2).into());
    }
    // MSI-X enable (bit 15) and function mask (bit 14) of message control.
    c.set_writable_bits(msix_off / 4, 0xc000_0000);
    Ok((
        c,
        CapLayout {
            msix: msix_off,
            pci_cfg,
        },
    ))
}

impl VirtioPci {
    /// The PCI_CFG window's (offset, length) in BAR 0 if the driver programmed a usable one:
    /// BAR 0, 1, 2 or 4 bytes, aligned, inside the BAR. Anything else is ignored (4.1.4.9.1).
    fn pci_cfg_window(&self) -> Option<(u64, usize)> {
        let reg = |off: usize| self.config.read_reg((self.caps.pci_cfg + off) / 4);
        let bar = reg(CAP_BAR) & 0xff;
        let offset = u64::from(reg(CAP_OFFSET));
        let len = reg(CAP_LENGTH);
        let ok = bar == 0
            && matches!(len, 1 | 2 | 4)
            && offset % u64::from(len) == 0
            && offset + u64::from(len) <= BAR0_SIZE;
        ok.then_some((offset, len as usize))
    }

    /// A read of `pci_cfg_data`: reads the window's bytes from BAR 0 (side effects included,
    /// as for a read through the BAR).
    pub(super) fn pci_cfg_window_read(&mut self) -> u32 {
        let Some((offset, len)) = self.pci_cfg_window() else {
            return self.pci_cfg_data;
        };
        let mut bytes = [0u8; 4];
        if let Some(b) = bytes.get_mut(..len) {
            self.bar_read(offset, b);
        }
        self.pci_cfg_data = u32::from_le_bytes(bytes);
        self.pci_cfg_data
    }

    /// A write of `pci_cfg_data`: writes the window's first `length` bytes to BAR 0.
    pub(super) fn pci_cfg_window_write(&mut self, value: u32, mask: u32) {
        self.pci_cfg_data = (self.pci_cfg_data & !mask) | (value & mask);
        let Some((offset, len)) = self.pci_cfg_window() else {
            return;
        };
        let bytes = self.pci_cfg_data.to_le_bytes();
        if let Some(b) = bytes.get(..len) {
            self.bar_write(offset, b);
        }
    }
}
