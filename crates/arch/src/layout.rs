//! The guest-physical address map and the fixed I/O ports of the Vireo x86-64 machine.
//!
//! ```text
//! 0x0000_0000  real-mode IVT / BDA (reserved for compatibility)
//! 0x0000_0500  boot GDT                     (BOOT_GDT)
//! 0x0000_6000  PVH hvm_start_info + memmap  (PVH_INFO)
//! 0x0000_7000  Linux zero page              (ZERO_PAGE)
//! 0x0000_9000  identity page tables         (PML4 / PDPT / PD)
//! 0x0002_0000  kernel command line          (CMDLINE, up to CMDLINE_MAX)
//! 0x0009_fc00  EBDA .. 0x0010_0000 reserved (ACPI tables at ACPI_START)
//! 0x0010_0000  kernel (HIMEM_START)
//! ...          RAM up to min(memory, LOW_RAM_END)
//! 0xc000_0000  PCI 32-bit MMIO window       (PCI_MMIO32_START .. ECAM_START)
//! 0xe000_0000  PCIe ECAM, bus 0             (ECAM_START, ECAM_SIZE)
//! 0xfec0_0000  IOAPIC
//! 0xfee0_0000  LAPIC
//! 0x1_0000_0000 RAM above 4 GiB (the rest of `memory`)
//! ```

pub const BOOT_GDT: u64 = 0x500;
pub const PVH_INFO: u64 = 0x6000;
pub const PVH_MEMMAP: u64 = 0x6100;
pub const PVH_MEMMAP_MAX: usize = 32;
pub const ZERO_PAGE: u64 = 0x7000;
pub const BOOT_STACK: u64 = 0x8ff0;
pub const PML4: u64 = 0x9000;
pub const PDPT: u64 = 0xa000;
pub const PD: u64 = 0xb000;
pub const CMDLINE: u64 = 0x20000;
pub const CMDLINE_MAX: usize = 0x10000;
/// Start of the Extended BIOS Data Area; RAM below it is usable by the guest.
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables live in the BIOS area, where a guest also finds the RSDP by scanning.
pub const ACPI_START: u64 = 0xe0000;
pub const ACPI_END: u64 = 0x10_0000;
pub const HIMEM_START: u64 = 0x10_0000;

/// RAM below 4 GiB ends here; the rest of the guest's memory is placed above 4 GiB.
pub const LOW_RAM_END: u64 = 0xc000_0000;
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
pub const PCI_MMIO32_SIZE: u64 = ECAM_START - PCI_MMIO32_START;
pub const ECAM_START: u64 = 0xe000_0000;
/// One bus (bus 0): 32 devices x 8 functions x 4 KiB.
pub const ECAM_SIZE: u64 = 0x10_0000;
pub const IOAPIC_START: u64 = 0xfec0_0000;
pub const LAPIC_START: u64 = 0xfee0_0000;
pub const HIGH_RAM_START: u64 = 0x1_0000_0000;

/// Fixed legacy I/O ports.
pub mod ports {
    pub const COM1: u16 = 0x3f8;
    pub const COM1_IRQ: u32 = 4;
    pub const I8042: u16 = 0x60; // data 0x60, command/status 0x64
    pub const I8042_IRQ: u32 = 1;
    pub const CMOS: u16 = 0x70; // index 0x70, data 0x71
    pub const PCI_CONFIG: u16 = 0xcf8; // address 0xcf8, data 0xcfc..0xcff
    /// ACPI PM1a event block: status (2 bytes) then enable (2 bytes).
    pub const PM1A_EVT: u16 = 0x600;
    pub const PM1A_EVT_LEN: u8 = 4;
    /// ACPI PM1a control block (2 bytes).
    pub const PM1A_CNT: u16 = 0x604;
    pub const PM1A_CNT_LEN: u8 = 2;
    /// ACPI System Control Interrupt.
    pub const SCI_IRQ: u32 = 9;
    /// SLP_TYP value that the DSDT's \_S5 package tells the guest to write for soft-off.
    pub const S5_SLP_TYP: u8 = 5;
}
