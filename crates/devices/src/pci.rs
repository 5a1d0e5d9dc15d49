//! PCI bus 0: the root with its host bridge, the configuration-space model devices build on, and
//! the two ways a guest reaches configuration space.
//!
//! - [`PciRoot`] owns the 32 device slots of bus 0 (function 0 only; slot 0 is the
//!   [`PciHostBridge`]) and routes configuration accesses to them. Absent devices, functions other
//!   than 0 and buses other than 0 read as all-ones, which is how a guest's bus scan learns that
//!   nothing is there; writes to them are dropped.
//! - [`PciDevice`] is what a device on the bus implements: 32-bit configuration registers by index
//!   with byte-lane masks, a description of its BARs, and a notification when the guest moves a
//!   BAR. [`PciConfiguration`] implements the standard type-0 header (read-only identity, writable
//!   command register, BAR sizing, capability list), so a device (the host bridge, the virtio-pci
//!   transport) embeds one and only handles what is special about it.
//! - [`PciConfigIo`] is configuration mechanism #1 (ports 0xCF8 address / 0xCFC–0xCFF data) and
//!   [`PciConfigMmio`] is ECAM (memory-mapped, 4 KiB per function). Both share one
//!   `Arc<Mutex<PciRoot>>`, as a guest may use either (Linux uses ECAM when the ACPI MCFG table
//!   describes it, mechanism #1 otherwise and early in boot).
//!
//! # BAR placement and moves
//!
//! There is no firmware to assign BARs, so the VMM places them when it creates a device
//! ([`PciConfiguration::add_bar`] takes the address) and routes each BAR's MMIO or port range to
//! the device on its bus, from [`PciRoot::bars`]. The guest may still move a BAR by writing a new
//! address. After each write to a BAR register the root compares the BAR with its last known
//! placement and, if it changed, tells the device ([`PciDevice::bar_moved`]) and the VMM (the
//! [`BarRelocation`] hook, which moves the bus mapping). Two transient states are not moves:
//! sizing (the guest writes all-ones and reads back the size mask, then restores the address) and
//! the low half of a 64-bit BAR (a guest writes the low dword first; the move is reported when the
//! high dword is written). Decode enables in the command register are not modelled: a BAR stays
//! routed while the guest has memory or I/O decoding turned off.
//!
//! # Locking
//!
//! Lock order is root, then device: the root locks a device for each access, so a device must
//! never lock the root, and the VMM must not hold a device's lock while adding it to the root.
//! [`BarRelocation::relocate`] runs on the vCPU thread that made the configuration write, with
//! the root locked (but no device), so it must not access PCI configuration space itself.

use std::sync::{Arc, Mutex, MutexGuard};

use crate::BusDevice;

/// Device slots on a bus.
pub const NUM_DEVICES: usize = 32;
/// Registers (dwords) in one function's ECAM configuration space (4 KiB).
pub const CONFIG_SPACE_REGS: usize = 1024;
/// Registers of conventional configuration space (256 bytes), which [`PciConfiguration`] models;
/// the PCIe extended space above reads as zero (no extended capabilities).
pub const CONVENTIONAL_REGS: usize = 64;
/// Register index of BAR 0.
pub const BAR0_REG: usize = 4;
/// BARs in a type-0 header.
pub const NUM_BARS: usize = 6;
/// Length of the mechanism #1 port range (0xCF8..=0xCFF).
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Bytes of ECAM space per bus (32 devices × 8 functions × 4 KiB). Only bus 0 exists, so this is
/// the size to map [`PciConfigMmio`] with.
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

const REG_COMMAND_STATUS: usize = 1;
const REG_CLASS_REVISION: usize = 2;
const REG_HEADER: usize = 3;
const REG_SUBSYSTEM: usize = 11;
const REG_CAPABILITIES: usize = 13;
const REG_INTERRUPT: usize = 15;
/// Command bits a guest may set: I/O, memory, bus master, parity error response, SERR#,
/// INTx disable.
const COMMAND_WRITABLE: u32 = 0x0547;
/// Status bit: the device has a capability list.
const STATUS_CAP_LIST: u32 = 1 << (16 + 4);
/// Where capabilities start: just after the type-0 header.
const FIRST_CAP_OFFSET: usize = 0x40;
const CONFIG_BYTES: usize = CONVENTIONAL_REGS * 4;

const BAR_IO: u32 = 0x1;
const BAR_MEM64: u32 = 0x4;
const BAR_PREFETCH: u32 = 0x8;
const BAR_IO_FLAG_BITS: u32 = 0x3;
const BAR_MEM_FLAG_BITS: u32 = 0xf;

/// Intel's vendor ID, for the host bridge.
pub const PCI_VENDOR_ID_INTEL: u16 = 0x8086;
/// The host bridge's device ID: the one Cloud Hypervisor uses for its virtual PCIe host bridge.
pub const PCI_DEVICE_ID_VIRT_HOST_BRIDGE: u16 = 0x0d57;
/// Base class "bridge device".
pub const PCI_CLASS_BRIDGE: u8 = 0x06;
/// Subclass "host bridge".
pub const PCI_SUBCLASS_HOST_BRIDGE: u8 = 0x00;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PciError {
    #[error("BAR index {0} is out of range or has no room for a 64-bit BAR")]
    BarIndex(usize),
    #[error("BAR {0} is already in use")]
    BarInUse(usize),
    #[error("BAR size {0:#x} is not a power of two within the limits of its kind")]
    BarSize(u64),
    #[error("BAR address {addr:#x} is not aligned to its size or does not fit its kind")]
    BarAddress { addr: u64 },
    #[error("no room left in configuration space for a {0}-byte capability")]
    CapabilitySpace(usize),
    #[error("PCI device slot {0} is out of range or taken")]
    SlotTaken(u8),
    #[error("all PCI device slots of bus 0 are taken")]
    BusFull,
}

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PciBarKind {
    /// Port I/O space.
    Io,
    /// Memory below 4 GiB (one register).
    Mmio32,
    /// Memory anywhere (two registers: this index and the next).
    Mmio64,
}

/// A BAR as currently programmed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PciBar {
    /// BAR number (0..=5); a 64-bit BAR also occupies `index + 1`.
    pub index: usize,
    pub kind: PciBarKind,
    pub prefetchable: bool,
    /// Guest-physical (or port) address.
    pub addr: u64,
    pub size: u64,
}

/// A BAR the guest moved, reported to the VMM through [`BarRelocation`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarMove {
    /// Device slot on bus 0.
    pub device: u8,
    /// The BAR at its new address.
    pub bar: PciBar,
    pub old_addr: u64,
}

/// The VMM's side of a BAR move: remap `[old_addr, +size)` to `[bar.addr, +size)` on the MMIO or
/// port I/O bus. A guest can pick any address, including one that overlaps RAM or another device;
/// the implementation must survive that (refuse the mapping, log).
pub trait BarRelocation: Send + Sync {
    fn relocate(&self, mv: &BarMove);
}

/// A function on PCI bus 0.
///
/// The root never calls these with a register index of [`CONFIG_SPACE_REGS`] or more.
pub trait PciDevice: Send {
    /// Reads configuration register `reg` (byte offset `reg * 4`).
    fn read_config_register(&mut self, reg: usize) -> u32;

    /// Writes configuration register `reg`: `mask` has 0xff in each byte lane the guest wrote
    /// and `value` carries the data in those lanes (a byte write at offset 0x3d is register 15,
    /// mask 0x0000_ff00). Bits the device does not implement as writable must be left alone.
    fn write_config_register(&mut self, reg: usize, value: u32, mask: u32);

    /// The BARs as currently programmed (whatever the guest last wrote, sizing included).
    fn bars(&self) -> Vec<PciBar>;

    /// The guest moved `bar` (now at `bar.addr`) away from `old_addr`. Devices that registered
    /// anything by address (ioeventfds on a notification region, say) re-register it here. The
    /// bus mapping itself is moved by the VMM's [`BarRelocation`].
    fn bar_moved(&mut self, _bar: &PciBar, _old_addr: u64) {}
}

/// Identity fields of a type-0 header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PciHeader {
    pub vendor_id: u16,
    pub device_id: u16,
    pub class: u8,
    pub subclass: u8,
    pub prog_if: u8,
    pub revision_id: u8,
    pub subsystem_vendor_id: u16,
    pub subsystem_id: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BarSlot {
    Unused,
    Bar {
        kind: PciBarKind,
        size: u64,
        prefetchable: bool,
    },
    /// The upper dword of the 64-bit BAR in the previous slot.
    Upper,
}

/// The conventional (256-byte) configuration space of a type-0 function: register contents,
/// which bits the guest may write, and the BAR layout that makes sizing work (a BAR's address
/// bits below its size are read-only zero, so writing all-ones reads back the size mask).
#[derive(Debug, Clone)]
pub struct PciConfiguration {
    regs: [u32; CONVENTIONAL_REGS],
    writable: [u32; CONVENTIONAL_REGS],
    bars: [BarSlot; NUM_BARS],
    last_cap: Option<usize>,
    next_cap: usize,
}

impl PciConfiguration {
    pub fn new(h: &PciHeader) -> Self {
        let mut regs = [0u32; CONVENTIONAL_REGS];
        let mut writable = [0u32; CONVENTIONAL_REGS];
        regs[0] = u32::from(h.vendor_id) | u32::from(h.device_id) << 16;
        writable[REG_COMMAND_STATUS] = COMMAND_WRITABLE;
        regs[REG_CLASS_REVISION] = u32::from(h.revision_id)
            | u32::from(h.prog_if) << 8
            | u32::from(h.subclass) << 16
            | u32::from(h.class) << 24;
        // Cache line size and latency timer are plain storage; header type 0, no BIST.
        writable[REG_HEADER] = 0x0000_ffff;
        regs[REG_SUBSYSTEM] = u32::from(h.subsystem_vendor_id) | u32::from(h.subsystem_id) << 16;
        // Interrupt line: written by the guest (or firmware) for its own bookkeeping.
        writable[REG_INTERRUPT] = 0x0000_00ff;
        Self {
            regs,
            writable,
            bars: [BarSlot::Unused; NUM_BARS],
            last_cap: None,
            next_cap: FIRST_CAP_OFFSET,
        }
    }

    /// Declares BAR `index` (a 64-bit BAR also takes `index + 1`) of `size` bytes, placed at
    /// `addr`. Sizes are powers of two: at least 16 bytes for memory (4 KiB recommended so a
    /// guest can map it by page), 4 to 256 for I/O; `addr` is aligned to the size.
    pub fn add_bar(
        &mut self,
        index: usize,
        kind: PciBarKind,
        size: u64,
        prefetchable: bool,
        addr: u64,
    ) -> Result<(), PciError> {
        let slots = if kind == PciBarKind::Mmio64 { 2 } else { 1 };
        if index.checked_add(slots).is_none_or(|end| end > NUM_BARS) {
            return Err(PciError::BarIndex(index));
        }
        if let Some(i) = (index..index + slots).find(|&i| self.bars[i] != BarSlot::Unused) {
            return Err(PciError::BarInUse(i));
        }
        let (min, max) = match kind {
            PciBarKind::Io => (4, 256),
            PciBarKind::Mmio32 => (16, 1 << 31),
            PciBarKind::Mmio64 => (16, 1 << 63),
        };
        if !size.is_power_of_two() || size < min || size > max {
            return Err(PciError::BarSize(size));
        }
        let limit = match kind {
            PciBarKind::Io => 1 << 16,
            PciBarKind::Mmio32 => 1 << 32,
            PciBarKind::Mmio64 => u64::MAX,
        };
        if addr & (size - 1) != 0 || addr > limit - size {
            return Err(PciError::BarAddress { addr });
        }
        let prefetchable = prefetchable && kind != PciBarKind::Io;
        let size_mask = !(size - 1);
        let reg = BAR0_REG + index;
        let flags = match kind {
            PciBarKind::Io => BAR_IO,
            PciBarKind::Mmio32 => 0,
            PciBarKind::Mmio64 => BAR_MEM64,
        } | if prefetchable { BAR_PREFETCH } else { 0 };
        let flag_bits = if kind == PciBarKind::Io {
            BAR_IO_FLAG_BITS
        } else {
            BAR_MEM_FLAG_BITS
        };
        self.regs[reg] = (addr as u32 & !flag_bits) | flags;
        self.writable[reg] = size_mask as u32 & !flag_bits;
        self.bars[index] = BarSlot::Bar {
            kind,
            size,
            prefetchable,
        };
        if kind == PciBarKind::Mmio64 {
            self.regs[reg + 1] = (addr >> 32) as u32;
            self.writable[reg + 1] = (size_mask >> 32) as u32;
            self.bars[index + 1] = BarSlot::Upper;
        }
        Ok(())
    }

    /// BAR `index` as currently programmed, if declared.
    pub fn bar(&self, index: usize) -> Option<PciBar> {
        let BarSlot::Bar {
            kind,
            size,
            prefetchable,
        } = *self.bars.get(index)?
        else {
            return None;
        };
        let low = self.regs[BAR0_REG + index];
        let addr = match kind {
            PciBarKind::Io => u64::from(low & !BAR_IO_FLAG_BITS),
            PciBarKind::Mmio32 => u64::from(low & !BAR_MEM_FLAG_BITS),
            PciBarKind::Mmio64 => {
                let high = self.regs.get(BAR0_REG + index + 1).copied().unwrap_or(0);
                u64::from(low & !BAR_MEM_FLAG_BITS) | u64::from(high) << 32
            }
        };
        Some(PciBar {
            index,
            kind,
            prefetchable,
            addr,
            size,
        })
    }

    /// All declared BARs as currently programmed.
    pub fn bars(&self) -> Vec<PciBar> {
        (0..NUM_BARS).filter_map(|i| self.bar(i)).collect()
    }

    /// Appends a capability (`id`, then `body`, after the two header bytes ID and next pointer
    /// that this fills in) to the capability list and returns its offset in configuration space.
    /// Its bytes are read-only unless the device marks them with [`Self::set_writable_bits`].
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<usize, PciError> {
        let len = body.len() + 2;
        let offset = self.next_cap;
        let end = offset + len;
        if end > CONFIG_BYTES {
            return Err(PciError::CapabilitySpace(len));
        }
        self.set_byte(offset, id);
        self.set_byte(offset + 1, 0);
        for (i, &b) in body.iter().enumerate() {
            self.set_byte(offset + 2 + i, b);
        }
        match self.last_cap {
            Some(prev) => self.set_byte(prev + 1, offset as u8),
            None => {
                self.set_byte(REG_CAPABILITIES * 4, offset as u8);
                self.regs[REG_COMMAND_STATUS] |= STATUS_CAP_LIST;
            }
        }
        self.last_cap = Some(offset);
        self.next_cap = (end + 3) & !3;
        Ok(offset)
    }

    /// Lets the guest write `mask` bits of register `reg` (for capability registers a device
    /// implements as plain storage). Registers outside conventional space are ignored.
    pub fn set_writable_bits(&mut self, reg: usize, mask: u32) {
        if let Some(w) = self.writable.get_mut(reg) {
            *w |= mask;
        }
    }

    /// Sets the interrupt pin (1 = INTA# … 4 = INTD#, 0 = none) the function uses.
    pub fn set_interrupt_pin(&mut self, pin: u8) {
        let r = &mut self.regs[REG_INTERRUPT];
        *r = (*r & !0xff00) | u32::from(pin) << 8;
    }

    /// The command register, e.g. to check bus mastering before doing DMA.
    pub fn command(&self) -> u16 {
        self.regs[REG_COMMAND_STATUS] as u16
    }

    /// Stores a byte directly, bypassing the writable mask: for the device's own use.
    pub fn set_byte(&mut self, offset: usize, value: u8) {
        if let Some(r) = self.regs.get_mut(offset / 4) {
            let shift = 8 * (offset % 4);
            *r = (*r & !(0xff << shift)) | u32::from(value) << shift;
        }
    }

    /// Reads register `reg`; beyond conventional space, 0.
    pub fn read_reg(&self, reg: usize) -> u32 {
        self.regs.get(reg).copied().unwrap_or(0)
    }

    /// A guest write: only bits both in `mask` and writable change.
    pub fn write_reg(&mut self, reg: usize, value: u32, mask: u32) {
        if let (Some(r), Some(&w)) = (self.regs.get_mut(reg), self.writable.get(reg)) {
            let w = w & mask;
            *r = (*r & !w) | (value & w);
        }
    }
}

/// Device 0:0.0, the host bridge. Guests expect one (Linux's mechanism #1 sanity check looks
/// for a host bridge or a known vendor on bus 0); it has no BARs and does nothing.
pub struct PciHostBridge {
    config: PciConfiguration,
}

impl PciHostBridge {
    pub fn new() -> Self {
        Self {
            config: PciConfiguration::new(&PciHeader {
                vendor_id: PCI_VENDOR_ID_INTEL,
                device_id: PCI_DEVICE_ID_VIRT_HOST_BRIDGE,
                class: PCI_CLASS_BRIDGE,
                subclass: PCI_SUBCLASS_HOST_BRIDGE,
                ..Default::default()
            }),
        }
    }
}

impl Default for PciHostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for PciHostBridge {
    fn read_config_register(&mut self, reg: usize) -> u32 {
        self.config.read_reg(reg)
    }

    fn write_config_register(&mut self, reg: usize, value: u32, mask: u32) {
        self.config.write_reg(reg, value, mask)
    }

    fn bars(&self) -> Vec<PciBar> {
        Vec::new()
    }
}

/// Locks, recovering from poisoning: one panicked access must not wedge the bus.
fn lock<T: ?Sized>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct Slot {
    dev: Arc<Mutex<dyn PciDevice>>,
    /// BAR placement as last reported (at insertion or by a move).
    bars: Vec<PciBar>,
}

/// Bus 0 of the PCI hierarchy. See the module documentation.
pub struct PciRoot {
    slots: Vec<Option<Slot>>,
    relocation: Option<Arc<dyn BarRelocation>>,
}

impl PciRoot {
    /// A bus with the host bridge at device 0.
    pub fn new() -> Self {
        let mut root = Self {
            slots: (0..NUM_DEVICES).map(|_| None).collect(),
            relocation: None,
        };
        root.slots[0] = Some(Slot {
            dev: Arc::new(Mutex::new(PciHostBridge::new())),
            bars: Vec::new(),
        });
        root
    }

    /// Sets who moves bus mappings when the guest moves a BAR.
    pub fn set_bar_relocation(&mut self, relocation: Arc<dyn BarRelocation>) {
        self.relocation = Some(relocation);
    }

    /// Adds a device at the first free slot and returns the slot number.
    pub fn add_device(&mut self, dev: Arc<Mutex<dyn PciDevice>>) -> Result<u8, PciError> {
        let slot = self
            .slots
            .iter()
            .position(Option::is_none)
            .ok_or(PciError::BusFull)? as u8;
        self.add_device_at(slot, dev)?;
        Ok(slot)
    }

    /// Adds a device at `slot` (1..=31; 0 is the host bridge).
    pub fn add_device_at(
        &mut self,
        slot: u8,
        dev: Arc<Mutex<dyn PciDevice>>,
    ) -> Result<(), PciError> {
        let entry = self
            .slots
            .get_mut(usize::from(slot))
            .filter(|s| s.is_none())
            .ok_or(PciError::SlotTaken(slot))?;
        let bars = lock(&dev).bars();
        *entry = Some(Slot { dev, bars });
        Ok(())
    }

    /// Every BAR on the bus with its device slot, at its current placement: what the VMM maps.
    pub fn bars(&self) -> Vec<(u8, PciBar)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, s)| Some((i as u8, s.as_ref()?)))
            .flat_map(|(i, s)| s.bars.iter().map(move |b| (i, *b)))
            .collect()
    }

    fn slot(&self, bus: u8, device: u8, function: u8, reg: usize) -> Option<&Slot> {
        if bus != 0 || function != 0 || reg >= CONFIG_SPACE_REGS {
            return None;
        }
        self.slots.get(usize::from(device))?.as_ref()
    }

    /// Reads a configuration register; all-ones where there is no function.
    pub fn read_config(&self, bus: u8, device: u8, function: u8, reg: usize) -> u32 {
        match self.slot(bus, device, function, reg) {
            Some(s) => lock(&s.dev).read_config_register(reg),
            None => u32::MAX,
        }
    }

    /// Writes a configuration register (see [`PciDevice::write_config_register`] for `value` and
    /// `mask`) and reports BAR moves. Dropped where there is no function.
    pub fn write_config(
        &mut self,
        bus: u8,
        device: u8,
        function: u8,
        reg: usize,
        value: u32,
        mask: u32,
    ) {
        if self.slot(bus, device, function, reg).is_none() {
            return;
        }
        let Some(Some(slot)) = self.slots.get_mut(usize::from(device)) else {
            return;
        };
        let mut moves = Vec::new();
        {
            let mut dev = lock(&slot.dev);
            dev.write_config_register(reg, value, mask);
            // Writing ones to every written lane is sizing, not a placement.
            let sizing = value | !mask == u32::MAX;
            if (BAR0_REG..BAR0_REG + NUM_BARS).contains(&reg) && !sizing {
                for bar in dev.bars() {
                    let low = BAR0_REG + bar.index;
                    // Only the BAR written, and a 64-bit BAR only once its high half is written.
                    let complete = match bar.kind {
                        PciBarKind::Mmio64 => reg == low + 1,
                        _ => reg == low,
                    };
                    if !complete {
                        continue;
                    }
                    match slot.bars.iter_mut().find(|b| b.index == bar.index) {
                        Some(old) if old.addr != bar.addr => {
                            let old_addr = old.addr;
                            *old = bar;
                            dev.bar_moved(&bar, old_addr);
                            moves.push(BarMove {
                                device,
                                bar,
                                old_addr,
                            });
                        }
                        Some(_) => {}
                        // A BAR the device did not have when it was added: now it has a place.
                        None => slot.bars.push(bar),
                    }
                }
            }
        }
        for mv in &moves {
            tracing::debug!(
                "pci: 00:{:02x}.0 BAR {} moved {:#x} -> {:#x}",
                mv.device,
                mv.bar.index,
                mv.old_addr,
                mv.bar.addr
            );
            match &self.relocation {
                Some(r) => r.relocate(mv),
                None => tracing::warn!("pci: BAR moved but nobody relocates its mapping"),
            }
        }
    }
}

impl Default for PciRoot {
    fn default() -> Self {
        Self::new()
    }
}

/// Places `data` (at byte `start` of a dword) as (value, mask) for a register write.
fn lanes(start: usize, data: &[u8]) -> (u32, u32) {
    let mut value = [0u8; 4];
    let mut mask = [0u8; 4];
    for (i, &b) in data.iter().enumerate() {
        if let (Some(v), Some(m)) = (value.get_mut(start + i), mask.get_mut(start + i)) {
            *v = b;
            *m = 0xff;
        }
    }
    (u32::from_le_bytes(value), u32::from_le_bytes(mask))
}

/// Copies the bytes of `value` from byte `start` into `data`.
fn extract(value: u32, start: usize, data: &mut [u8]) {
    let bytes = value.to_le_bytes();
    for (i, d) in data.iter_mut().enumerate() {
        *d = bytes.get(start + i).copied().unwrap_or(0xff);
    }
}

/// Whether an access of `len` bytes at byte `start` stays within one dword.
fn within_dword(start: u64, len: usize) -> bool {
    len > 0 && start.checked_add(len as u64).is_some_and(|end| end <= 4)
}

/// Configuration mechanism #1: ports 0xCF8 (address, offset 0) and 0xCFC–0xCFF (data, offsets
/// 4–7). Insert at base 0xcf8 with length [`PCI_CONFIG_IO_LEN`].
///
/// The address register is only written by dword writes to 0xCF8, as on real chipsets where byte
/// accesses to 0xCF8–0xCFB reach other registers (0xCF9 is the reset control register, which we
/// do not implement: those writes are dropped). It reads back at any size. Data accesses of 1, 2
/// or 4 bytes anywhere within 0xCFC–0xCFF reach the matching bytes of the addressed register;
/// accesses that would cross the end of the data port read all-ones and are dropped.
pub struct PciConfigIo {
    root: Arc<Mutex<PciRoot>>,
    address: u32,
}

/// Address register bits: enable, bus, device, function, register.
const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;
/// The address register bits that are implemented (reserved bits 30:24 and 1:0 read zero).
const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;

impl PciConfigIo {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root, address: 0 }
    }

    /// (bus, device, function, register) selected by the address register, if enabled.
    fn target(&self) -> Option<(u8, u8, u8, usize)> {
        let a = self.address;
        (a & CONFIG_ADDRESS_ENABLE != 0).then_some((
            (a >> 16) as u8,
            ((a >> 11) & 0x1f) as u8,
            ((a >> 8) & 0x7) as u8,
            ((a >> 2) & 0x3f) as usize,
        ))
    }
}

impl BusDevice for PciConfigIo {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match offset {
            0..=3 if within_dword(offset, data.len()) => {
                extract(self.address, offset as usize, data)
            }
            4..=7 if within_dword(offset - 4, data.len()) => {
                let value = match self.target() {
                    Some((bus, dev, func, reg)) => {
                        lock(&self.root).read_config(bus, dev, func, reg)
                    }
                    None => u32::MAX,
                };
                extract(value, (offset - 4) as usize, data);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        match offset {
            0 => {
                if let Ok(bytes) = <[u8; 4]>::try_from(data) {
                    self.address = u32::from_le_bytes(bytes) & CONFIG_ADDRESS_MASK;
                }
            }
            4..=7 if within_dword(offset - 4, data.len()) => {
                if let Some((bus, dev, func, reg)) = self.target() {
                    let (value, mask) = lanes((offset - 4) as usize, data);
                    lock(&self.root).write_config(bus, dev, func, reg, value, mask);
                }
            }
            _ => {}
        }
    }
}

/// ECAM (PCI Express enhanced configuration access): offset = bus << 20 | device << 15 |
/// function << 12 | register byte. Only bus 0 exists, so map [`ECAM_BUS_SIZE`] bytes at the base
/// the ACPI MCFG table announces. Accesses of 1, 2 or 4 bytes within one dword reach the
/// register; wider or dword-crossing accesses (undefined for ECAM) read all-ones and are dropped.
pub struct PciConfigMmio {
    root: Arc<Mutex<PciRoot>>,
}

impl PciConfigMmio {
    pub fn new(root: Arc<Mutex<PciRoot>>) -> Self {
        Self { root }
    }

    /// (bus, device, function, register, byte within register).
    fn decode(offset: u64) -> Option<(u8, u8, u8, usize, u64)> {
        let bus = u8::try_from(offset >> 20).ok()?;
        Some((
            bus,
            ((offset >> 15) & 0x1f) as u8,
            ((offset >> 12) & 0x7) as u8,
            ((offset & 0xfff) >> 2) as usize,
            offset & 3,
        ))
    }
}

impl BusDevice for PciConfigMmio {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        match Self::decode(offset) {
            Some((bus, dev, func, reg, start)) if within_dword(start, data.len()) => {
                let value = lock(&self.root).read_config(bus, dev, func, reg);
                extract(value, start as usize, data);
            }
            _ => data.fill(0xff),
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        if let Some((bus, dev, func, reg, start)) = Self::decode(offset) {
            if within_dword(start, data.len()) {
                let (value, mask) = lanes(start as usize, data);
                lock(&self.root).write_config(bus, dev, func, reg, value, mask);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;

    /// A device with a 32-bit MMIO BAR 0 (4 KiB), a 64-bit prefetchable BAR 2 (16 KiB, above
    /// 4 GiB), an I/O BAR 4 (32 ports) and one vendor capability.
    struct TestDev {
        config: PciConfiguration,
        moved: Vec<(usize, u64, u64)>,
    }

    const BAR0_ADDR: u64 = 0xc000_0000;
    const BAR2_ADDR: u64 = 0x1_0000_0000;
    const BAR4_ADDR: u64 = 0x1000;

    impl TestDev {
        fn new() -> Self {
            let mut config = PciConfiguration::new(&PciHeader {
                vendor_id: 0x1af4,
                device_id: 0x1041,
                class: 0x02,
                subclass: 0x00,
                revision_id: 1,
                subsystem_vendor_id: 0x1af4,
                subsystem_id: 0x0001,
                ..Default::default()
            });
            config
                .add_bar(0, PciBarKind::Mmio32, 0x1000, false, BAR0_ADDR)
                .unwrap();
            config
                .add_bar(2, PciBarKind::Mmio64, 0x4000, true, BAR2_ADDR)
                .unwrap();
            config
                .add_bar(4, PciBarKind::Io, 0x20, false, BAR4_ADDR)
                .unwrap();
            config.set_interrupt_pin(1);
            Self {
                config,
                moved: Vec::new(),
            }
        }
    }

    impl PciDevice for TestDev {
        fn read_config_register(&mut self, reg: usize) -> u32 {
            self.config.read_reg(reg)
        }
        fn write_config_register(&mut self, reg: usize, value: u32, mask: u32) {
            self.config.write_reg(reg, value, mask)
        }
        fn bars(&self) -> Vec<PciBar> {
            self.config.bars()
        }
        fn bar_moved(&mut self, bar: &PciBar, old_addr: u64) {
            self.moved.push((bar.index, old_addr, bar.addr));
        }
    }

    #[derive(Default)]
    struct Recorder(Mutex<Vec<BarMove>>);
    impl BarRelocation for Recorder {
        fn relocate(&self, mv: &BarMove) {
            self.0.lock().unwrap().push(*mv);
        }
    }

    struct Setup {
        io: PciConfigIo,
        mmio: PciConfigMmio,
        dev: Arc<Mutex<TestDev>>,
        moves: Arc<Recorder>,
        slot: u8,
        root: Arc<Mutex<PciRoot>>,
    }

    fn setup() -> Setup {
        let mut root = PciRoot::new();
        let dev = Arc::new(Mutex::new(TestDev::new()));
        let slot = root.add_device(dev.clone()).unwrap();
        let moves = Arc::new(Recorder::default());
        root.set_bar_relocation(moves.clone());
        let root = Arc::new(Mutex::new(root));
        Setup {
            io: PciConfigIo::new(root.clone()),
            mmio: PciConfigMmio::new(root.clone()),
            dev,
            moves,
            slot,
            root,
        }
    }

    fn addr(dev: u8, func: u8, byte: u32) -> u32 {
        CONFIG_ADDRESS_ENABLE | u32::from(dev) << 11 | u32::from(func) << 8 | (byte & 0xfc)
    }

    fn io_read32(io: &mut PciConfigIo, dev: u8, byte: u32) -> u32 {
        io.write(0, &addr(dev, 0, byte).to_le_bytes());
        let mut b = [0u8; 4];
        io.read(4, &mut b);
        u32::from_le_bytes(b)
    }

    fn io_write32(io: &mut PciConfigIo, dev: u8, byte: u32, v: u32) {
        io.write(0, &addr(dev, 0, byte).to_le_bytes());
        io.write(4, &v.to_le_bytes());
    }

    fn ecam(dev: u8, func: u8, byte: u64) -> u64 {
        u64::from(dev) << 15 | u64::from(func) << 12 | byte
    }

    fn mmio_read32(m: &mut PciConfigMmio, dev: u8, byte: u64) -> u32 {
        let mut b = [0u8; 4];
        m.read(ecam(dev, 0, byte), &mut b);
        u32::from_le_bytes(b)
    }

    fn mmio_write32(m: &mut PciConfigMmio, dev: u8, byte: u64, v: u32) {
        m.write(ecam(dev, 0, byte), &v.to_le_bytes());
    }

    #[test]
    fn host_bridge_identity() {
        let mut s = setup();
        assert_eq!(io_read32(&mut s.io, 0, 0), 0x0d57_8086);
        assert_eq!(io_read32(&mut s.io, 0, 8) >> 8, 0x06_00_00);
        assert_eq!(
            io_read32(&mut s.io, 0, 0xc) >> 16 & 0x7f,
            0,
            "header type 0"
        );
        assert_eq!(mmio_read32(&mut s.mmio, 0, 0), 0x0d57_8086);
        assert!(s.root.lock().unwrap().bars().iter().all(|(d, _)| *d != 0));
        assert_eq!(s.slot, 1);
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut s = setup();
        for dev in [2u8, 31] {
            assert_eq!(io_read32(&mut s.io, dev, 0), u32::MAX);
            assert_eq!(mmio_read32(&mut s.mmio, dev, 0), u32::MAX);
        }
        // Function 1 of a present device, bus 1, and the extended-space beyond a function.
        s.io.write(0, &addr(0, 1, 0).to_le_bytes());
        let mut b = [0u8; 4];
        s.io.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        s.io.write(0, &(addr(0, 0, 0) | 1 << 16).to_le_bytes());
        s.io.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        s.mmio.read(ecam(0, 1, 0), &mut b);
        assert_eq!(b, [0xff; 4]);
        s.mmio.read(1 << 20, &mut b);
        assert_eq!(b, [0xff; 4]);
        s.mmio.read(u64::MAX - 3, &mut b);
        assert_eq!(b, [0xff; 4]);
        // Writes to nothing are dropped without effect.
        io_write32(&mut s.io, 5, 0x10, 0);
        mmio_write32(&mut s.mmio, 5, 0x10, 0);
        s.mmio.write(ecam(0, 3, 4), &[0xff; 4]);
        assert_eq!(io_read32(&mut s.io, 5, 0), u32::MAX);
        // ECAM extended space of a present conventional device reads zero.
        assert_eq!(mmio_read32(&mut s.mmio, 0, 0x100), 0);
    }

    #[test]
    fn config_io_address_register() {
        let mut s = setup();
        s.io.write(0, &0x8000_0000u32.to_le_bytes());
        let mut b = [0u8; 4];
        s.io.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x8000_0000);
        // Reserved bits do not stick.
        s.io.write(0, &0xffff_ffffu32.to_le_bytes());
        s.io.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), CONFIG_ADDRESS_MASK);
        // Byte writes (e.g. to 0xCF9 or 0xCFB) leave it alone; partial reads work.
        s.io.write(3, &[0x01]);
        s.io.write(1, &[0x06]);
        s.io.write(0, &[0x00, 0x00]);
        let mut w = [0u8; 2];
        s.io.read(2, &mut w);
        assert_eq!(w, [0xff, 0x80]);
        // Disabled: data reads all-ones, writes dropped.
        s.io.write(0, &0x0000_0000u32.to_le_bytes());
        s.io.read(4, &mut b);
        assert_eq!(b, [0xff; 4]);
        s.io.write(4, &[0; 4]);
        assert_eq!(io_read32(&mut s.io, 0, 0), 0x0d57_8086);
    }

    #[test]
    fn config_io_partial_data_accesses() {
        let mut s = setup();
        s.io.write(0, &addr(0, 0, 0).to_le_bytes());
        let mut b = [0u8; 1];
        let bytes: Vec<u8> = (4..8)
            .map(|o| {
                s.io.read(o, &mut b);
                b[0]
            })
            .collect();
        assert_eq!(bytes, [0x86, 0x80, 0x57, 0x0d]);
        let mut w = [0u8; 2];
        s.io.read(6, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0d57);
        s.io.read(5, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x5780);
        // Crossing the end of the data port, or 8 bytes: all-ones.
        s.io.read(7, &mut w);
        assert_eq!(w, [0xff; 2]);
        let mut q = [0u8; 8];
        s.io.read(4, &mut q);
        assert_eq!(q, [0xff; 8]);
        s.io.read(0, &mut q);
        assert_eq!(q, [0xff; 8]);
        // A byte write to the interrupt line (0x3c) through 0xCFC.
        let slot = s.slot;
        s.io.write(0, &addr(slot, 0, 0x3c).to_le_bytes());
        s.io.write(4, &[0x0b]);
        s.io.write(5, &[0x07]); // interrupt pin: read-only
        assert_eq!(io_read32(&mut s.io, slot, 0x3c) & 0xffff, 0x010b);
    }

    #[test]
    fn command_register_and_read_only_fields() {
        let mut s = setup();
        let slot = s.slot;
        io_write32(&mut s.io, slot, 0, 0);
        assert_eq!(
            io_read32(&mut s.io, slot, 0),
            0x1041_1af4,
            "IDs are read-only"
        );
        io_write32(&mut s.io, slot, 4, 0xffff_ffff);
        assert_eq!(io_read32(&mut s.io, slot, 4) & 0xffff, COMMAND_WRITABLE);
        assert_eq!(
            s.dev.lock().unwrap().config.command(),
            COMMAND_WRITABLE as u16
        );
        // A 16-bit ECAM write to the command register.
        s.mmio.write(ecam(slot, 0, 4), &[0x06, 0x00]);
        assert_eq!(mmio_read32(&mut s.mmio, slot, 4) & 0xffff, 0x0006);
        let mut b = [0u8; 1];
        s.mmio.read(ecam(slot, 0, 0x0b), &mut b);
        assert_eq!(b[0], 0x02, "class code byte");
        assert_eq!(mmio_read32(&mut s.mmio, slot, 0x2c), 0x0001_1af4);
    }

    /// Linux's `__pci_read_base`: save, write all-ones, read the mask, restore.
    fn size_bar(
        read: &mut dyn FnMut(u32) -> u32,
        write: &mut dyn FnMut(u32, u32),
        byte: u32,
    ) -> u32 {
        let orig = read(byte);
        write(byte, u32::MAX);
        let mask = read(byte);
        write(byte, orig);
        mask
    }

    #[test]
    fn bar_sizing_both_paths() {
        let mut s = setup();
        let slot = s.slot;
        for path in 0..2 {
            let (io, mmio) = (&mut s.io, &mut s.mmio);
            let cell = std::cell::RefCell::new((io, mmio));
            let mut read = |byte: u32| {
                let mut c = cell.borrow_mut();
                if path == 0 {
                    io_read32(c.0, slot, byte)
                } else {
                    mmio_read32(c.1, slot, u64::from(byte))
                }
            };
            let mut write = |byte: u32, v: u32| {
                let mut c = cell.borrow_mut();
                if path == 0 {
                    io_write32(c.0, slot, byte, v)
                } else {
                    mmio_write32(c.1, slot, u64::from(byte), v)
                }
            };
            assert_eq!(read(0x10), BAR0_ADDR as u32);
            assert_eq!(size_bar(&mut read, &mut write, 0x10), 0xffff_f000);
            assert_eq!(read(0x10), BAR0_ADDR as u32);
            // Unused BAR 1 reads 0 and sizes to 0.
            assert_eq!(size_bar(&mut read, &mut write, 0x14), 0);
            // 64-bit prefetchable BAR 2/3.
            assert_eq!(read(0x18), 0x0000_000c);
            assert_eq!(read(0x1c), 0x0000_0001);
            assert_eq!(size_bar(&mut read, &mut write, 0x18), 0xffff_c00c);
            assert_eq!(size_bar(&mut read, &mut write, 0x1c), 0xffff_ffff);
            assert_eq!(read(0x18), 0x0000_000c);
            assert_eq!(read(0x1c), 0x0000_0001);
            // I/O BAR 4.
            assert_eq!(read(0x20), BAR4_ADDR as u32 | 1);
            assert_eq!(size_bar(&mut read, &mut write, 0x20), 0xffff_ffe1);
            // No expansion ROM.
            assert_eq!(size_bar(&mut read, &mut write, 0x30), 0);
        }
        assert!(s.moves.0.lock().unwrap().is_empty(), "sizing is not a move");
        assert!(s.dev.lock().unwrap().moved.is_empty());
    }

    #[test]
    fn bar_relocation_reported() {
        let mut s = setup();
        let slot = s.slot;
        // 32-bit BAR through mechanism #1.
        io_write32(&mut s.io, slot, 0x10, 0xd000_0000);
        assert_eq!(io_read32(&mut s.io, slot, 0x10), 0xd000_0000);
        // Address bits below the BAR's size are read-only: still the same address, no move.
        io_write32(&mut s.io, slot, 0x10, 0xd000_0fff);
        assert_eq!(io_read32(&mut s.io, slot, 0x10), 0xd000_0000);
        assert_eq!(s.moves.0.lock().unwrap().len(), 1);
        // 64-bit BAR through ECAM: low half first (no report yet), then high half.
        mmio_write32(&mut s.mmio, slot, 0x18, 0x8000_4000);
        assert_eq!(s.moves.0.lock().unwrap().len(), 1);
        mmio_write32(&mut s.mmio, slot, 0x1c, 0x2);
        // Rewriting the same address is not a move.
        io_write32(&mut s.io, slot, 0x10, 0xd000_0000);
        // I/O BAR.
        io_write32(&mut s.io, slot, 0x20, 0x2000);
        let moves = s.moves.0.lock().unwrap().clone();
        assert_eq!(moves.len(), 3);
        assert_eq!(moves[0].device, slot);
        assert_eq!(
            (moves[0].bar.index, moves[0].old_addr, moves[0].bar.addr),
            (0, BAR0_ADDR, 0xd000_0000)
        );
        assert_eq!(moves[0].bar.kind, PciBarKind::Mmio32);
        assert_eq!(moves[0].bar.size, 0x1000);
        assert_eq!(
            (moves[1].bar.index, moves[1].old_addr, moves[1].bar.addr),
            (2, BAR2_ADDR, 0x2_8000_4000)
        );
        assert_eq!(moves[1].bar.kind, PciBarKind::Mmio64);
        assert!(moves[1].bar.prefetchable);
        assert_eq!(
            (moves[2].bar.index, moves[2].old_addr, moves[2].bar.addr),
            (4, BAR4_ADDR, 0x2000)
        );
        assert_eq!(
            s.dev.lock().unwrap().moved,
            vec![
                (0, BAR0_ADDR, 0xd000_0000),
                (2, BAR2_ADDR, 0x2_8000_4000),
                (4, BAR4_ADDR, 0x2000)
            ]
        );
        // The root's view follows.
        let bars = s.root.lock().unwrap().bars();
        let addrs: Vec<u64> = bars.iter().map(|(_, b)| b.addr).collect();
        assert_eq!(addrs, vec![0xd000_0000, 0x2_8000_4000, 0x2000]);
        // Sizing after a move restores the moved address, still no new move.
        let orig = io_read32(&mut s.io, slot, 0x10);
        io_write32(&mut s.io, slot, 0x10, u32::MAX);
        io_write32(&mut s.io, slot, 0x10, orig);
        assert_eq!(s.moves.0.lock().unwrap().len(), 3);
    }

    #[test]
    fn configuration_validation() {
        let mut c = PciConfiguration::new(&PciHeader::default());
        assert_eq!(
            c.add_bar(6, PciBarKind::Mmio32, 0x1000, false, 0),
            Err(PciError::BarIndex(6))
        );
        assert_eq!(
            c.add_bar(5, PciBarKind::Mmio64, 0x1000, false, 0),
            Err(PciError::BarIndex(5))
        );
        assert_eq!(
            c.add_bar(0, PciBarKind::Mmio32, 0x1800, false, 0),
            Err(PciError::BarSize(0x1800))
        );
        assert_eq!(
            c.add_bar(0, PciBarKind::Mmio32, 8, false, 0),
            Err(PciError::BarSize(8))
        );
        assert_eq!(
            c.add_bar(0, PciBarKind::Io, 0x200, false, 0),
            Err(PciError::BarSize(0x200))
        );
        assert_eq!(
            c.add_bar(0, PciBarKind::Mmio32, 0x1000, false, 0x800),
            Err(PciError::BarAddress { addr: 0x800 })
        );
        assert_eq!(
            c.add_bar(0, PciBarKind::Mmio32, 0x1000, false, 0x1_0000_0000),
            Err(PciError::BarAddress {
                addr: 0x1_0000_0000
            })
        );
        c.add_bar(0, PciBarKind::Mmio64, 1 << 33, false, 1 << 34)
            .unwrap();
        assert_eq!(
            c.add_bar(1, PciBarKind::Mmio32, 0x1000, false, 0),
            Err(PciError::BarInUse(1))
        );
        // An 8 GiB BAR: the low dword has no writable address bits.
        c.write_reg(BAR0_REG, u32::MAX, u32::MAX);
        c.write_reg(BAR0_REG + 1, u32::MAX, u32::MAX);
        assert_eq!(c.read_reg(BAR0_REG), 0x4);
        assert_eq!(c.read_reg(BAR0_REG + 1), 0xffff_fffe);
        assert_eq!(c.bar(1), None);
        assert_eq!(c.bar(99), None);
        assert_eq!(c.read_reg(5000), 0);
        c.write_reg(5000, 1, 1);
        c.set_writable_bits(5000, 1);
        c.set_byte(5000, 1);

        let mut root = PciRoot::new();
        let d = Arc::new(Mutex::new(PciHostBridge::new()));
        assert_eq!(
            root.add_device_at(0, d.clone()),
            Err(PciError::SlotTaken(0))
        );
        assert_eq!(
            root.add_device_at(32, d.clone()),
            Err(PciError::SlotTaken(32))
        );
        for i in 1..32 {
            assert_eq!(root.add_device(d.clone()), Ok(i));
        }
        assert_eq!(root.add_device(d), Err(PciError::BusFull));
    }

    #[test]
    fn capabilities_chain() {
        let mut c = PciConfiguration::new(&PciHeader::default());
        assert_eq!(c.read_reg(REG_COMMAND_STATUS) & STATUS_CAP_LIST, 0);
        let a = c.add_capability(0x09, &[0x10, 1, 2, 3, 4, 5]).unwrap();
        let b = c.add_capability(0x11, &[0xaa; 10]).unwrap();
        assert_eq!((a, b), (0x40, 0x48));
        assert_ne!(c.read_reg(REG_COMMAND_STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(c.read_reg(REG_CAPABILITIES) & 0xff, 0x40);
        assert_eq!(c.read_reg(0x40 / 4) & 0xffff, 0x4809);
        assert_eq!(c.read_reg(0x48 / 4) & 0xffff, 0x0011);
        // Read-only unless marked writable.
        c.write_reg(0x48 / 4, 0xffff_ffff, 0xffff_ffff);
        assert_eq!(c.read_reg(0x48 / 4), 0xaaaa_0011);
        c.set_writable_bits(0x48 / 4, 0xffff_0000);
        c.write_reg(0x48 / 4, 0x1234_ffff, 0xffff_ffff);
        assert_eq!(c.read_reg(0x48 / 4), 0x1234_0011);
        assert_eq!(
            c.add_capability(0x09, &[0; 200]),
            Err(PciError::CapabilitySpace(202))
        );
    }

    #[test]
    fn hostile_guest_never_panics() {
        let mut s = setup();
        let mut rng = Rng::new(0xcf8);
        for i in 0..200_000u32 {
            let mut buf = [0u8; 8];
            let n = rng.size();
            let write = rng.coin();
            for b in &mut buf[..n] {
                *b = rng.next() as u8;
            }
            if i.is_multiple_of(2) {
                let off = rng.next() % 9;
                if off == 0 && n == 4 && rng.coin() {
                    // Mostly target real functions so that the data path gets exercised.
                    let a = addr((rng.next() % 3) as u8, 0, rng.next() as u32);
                    s.io.write(0, &a.to_le_bytes());
                } else if write {
                    s.io.write(off, &buf[..n]);
                } else {
                    s.io.read(off, &mut buf[..n]);
                }
            } else {
                let off = match rng.next() % 3 {
                    0 => rng.next(),
                    _ => ecam((rng.next() % 3) as u8, 0, rng.next() % 0x1000),
                };
                if write {
                    s.mmio.write(off, &buf[..n]);
                } else {
                    s.mmio.read(off, &mut buf[..n]);
                }
            }
        }
    }
}
