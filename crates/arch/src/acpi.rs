//! ACPI tables for the Vireo x86-64 machine.
//!
//! The guest sees a classic PC-compatible ACPI platform, *not* a hardware-reduced one: the
//! power button is the PM1 fixed-feature button (PWRBTN_STS/PWRBTN_EN signalled through the
//! SCI) and soft-off is the legacy `SLP_TYP`/`SLP_EN` write to PM1a_CNT. That is what an
//! unmodified distribution kernel handles without any platform driver.
//!
//! Guest-physical placement, from [`layout::ACPI_START`] upwards (each table 16-byte
//! aligned, the FACS 64-byte aligned as the spec requires):
//!
//! ```text
//! RSDP (rev 2) -> XSDT -> FADT -> DSDT
//!                      |       -> FACS
//!                      -> MADT
//!                      -> MCFG
//! ```
//!
//! The RSDP sits at the start of the BIOS area so that a guest that boots without being
//! handed its address still finds it by scanning 0xE0000..0xFFFFF on 16-byte boundaries.

use acpi_tables::{
    aml,
    facs::FACS,
    fadt::{FADTBuilder, Flags},
    gas::{AccessSize, AddressSpace, GAS},
    madt::{EnabledStatus, IoApic, ProcessorLocalApic},
    mcfg::MCFG,
    rsdp::Rsdp,
    sdt::Sdt,
    xsdt::XSDT,
    Aml, AmlSink,
};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryError};

use crate::layout::{self, ports};

/// OEM ID of every table (and of the RSDP).
pub const OEM_ID: [u8; 6] = *b"VIREO ";
/// OEM table ID of every table. The spec requires the FADT's to match the root table's
/// (the "manufacturer model ID"); one ID for the whole set satisfies that trivially.
pub const OEM_TABLE_ID: [u8; 8] = *b"VIREO   ";
pub const OEM_REVISION: u32 = 1;
/// FADT "Hypervisor Vendor Identity": eight bytes that read "VIREO   " in memory.
const HYPERVISOR_VENDOR_ID: u64 = u64::from_le_bytes(*b"VIREO   ");

/// ACPI 6.x FADT major revision (the 276-byte layout ending in the hypervisor vendor ID).
const FADT_REVISION: u8 = 6;
/// Matches the crate's FADT layout (ACPI 6.5); the layout is unchanged since 6.0.
const FADT_MINOR_REVISION: u8 = 5;
/// DSDT revision 2 selects 64-bit AML integers (revision < 2 means 32-bit).
const DSDT_REVISION: u8 = 2;
/// ACPI 6.3+ MADT revision.
const MADT_REVISION: u8 = 5;

/// Header length shared by every system description table.
const SDT_HEADER_LEN: u32 = 36;

// FADT IAPC_BOOT_ARCH bits (ACPI 6.5, table 5.11). MSI_NOT_SUPPORTED (bit 3),
// PCIE_ASPM_CONTROLS (bit 4) and CMOS_RTC_NOT_PRESENT (bit 5) stay clear: the guest has MSI
// and a CMOS RTC at 0x70.
/// Legacy ISA devices (COM1, RTC, PIT, ...) exist and are not all described in the DSDT.
const IAPC_LEGACY_DEVICES: u16 = 1 << 0;
/// An i8042 exists at 0x60/0x64: Linux probes it directly and resets through it.
const IAPC_8042: u16 = 1 << 1;
/// No VGA: stops the guest from poking the legacy VGA ranges.
const IAPC_VGA_NOT_PRESENT: u16 = 1 << 2;
const IAPC_BOOT_ARCH: u16 = IAPC_LEGACY_DEVICES | IAPC_8042 | IAPC_VGA_NOT_PRESENT;

/// FADT P_LVL2_LAT above 100 us means "C2 not supported"; P_LVL3_LAT above 1000 us means
/// "C3 not supported". The guest idles with HLT (C1, see the PROC_C1 flag) only.
const P_LVL2_LAT_NONE: u16 = 101;
const P_LVL3_LAT_NONE: u16 = 1001;

// MADT (ACPI 6.5 section 5.2.12).
/// MADT flags: PCAT_COMPAT, a dual 8259 is present and must be masked when using the APICs.
const MADT_PCAT_COMPAT: u32 = 1 << 0;
const MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE: u8 = 2;
const MADT_TYPE_LOCAL_APIC_NMI: u8 = 4;
/// MPS INTI flags: polarity in bits 1:0, trigger mode in bits 3:2; 0 = bus conforming.
const MPS_INTI_CONFORMING: u16 = 0;
const MPS_INTI_POLARITY_ACTIVE_HIGH: u16 = 0b01;
const MPS_INTI_TRIGGER_LEVEL: u16 = 0b11 << 2;
/// "All processors" in a Local APIC NMI structure.
const ACPI_PROCESSOR_UID_ALL: u8 = 0xff;
/// The NMI input of every local APIC is LINT1 (LINT0 is ExtINT from the 8259).
const LAPIC_NMI_LINT: u8 = 1;
/// ISA IRQ 0 (PIT) is wired to IOAPIC pin 2, as on PC hardware and in KVM's irqchip.
const PIT_ISA_IRQ: u8 = 0;
const PIT_GSI: u32 = 2;

// PCI interrupt routing: INTA..INTD of every slot go to IOAPIC pins 16..23.
const PCI_GSI_BASE: u32 = 16;
const PCI_GSI_COUNT: u32 = 8;

/// Buses covered by the ECAM window: 1 MiB of configuration space per bus.
const ECAM_BUSES: u64 = layout::ECAM_SIZE >> 20;
const LAST_PCI_BUS: u8 = (ECAM_BUSES - 1) as u8;

/// End of the PCI configuration mechanism #1 ports (0xCF8..0xCFF); the upper IO window
/// starts here.
const PCI_CONFIG_PORTS_LEN: u8 = 8;
const PCI_CONFIG_PORTS_END: u16 = ports::PCI_CONFIG + PCI_CONFIG_PORTS_LEN as u16;
/// COM1 decodes eight ports (THR/RBR .. SCR).
const COM1_PORTS_LEN: u8 = 8;

// Guarantees the casts below rely on.
const _: () = {
    // The RSDP is found by a 16-byte-aligned scan and the FACS must be 64-byte aligned
    // relative to an aligned base.
    assert!(layout::ACPI_START.is_multiple_of(16));
    // DSDT and FIRMWARE_CTRL also have 32-bit pointers in the FADT.
    assert!(layout::ACPI_END <= 1 << 32);
    assert!(layout::ACPI_START < layout::ACPI_END);
    assert!(layout::ECAM_SIZE.is_multiple_of(1 << 20));
    assert!(ECAM_BUSES >= 1 && ECAM_BUSES <= 256);
    assert!(layout::ECAM_START + layout::ECAM_SIZE <= 1 << 32);
    assert!(layout::PCI_MMIO32_SIZE > 0);
    assert!(layout::PCI_MMIO32_START + layout::PCI_MMIO32_SIZE <= 1 << 32);
    assert!(layout::IOAPIC_START < 1 << 32);
    assert!(layout::LAPIC_START < 1 << 32);
    assert!(ports::SCI_IRQ < 16);
    assert!(ports::COM1_IRQ < 16);
};

/// What the tables describe about the VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// Number of vCPUs; CPU `i` has ACPI processor UID `i` and (xAPIC) APIC ID `i`.
    pub num_cpus: u8,
}

#[derive(Debug, thiserror::Error)]
pub enum AcpiError {
    #[error("the ACPI tables need at least one CPU")]
    NoCpus,
    #[error(
        "the ACPI tables do not fit: the {table} would end at {end:#x}, \
         past the end of the ACPI region at {limit:#x}"
    )]
    TooLarge {
        table: &'static str,
        end: u64,
        limit: u64,
    },
    #[error("failed to write the {table} to guest memory at {addr:#x}")]
    GuestMemory {
        table: &'static str,
        addr: u64,
        #[source]
        source: GuestMemoryError,
    },
}

/// Builds every ACPI table and writes them to guest memory: the RSDP at
/// [`layout::ACPI_START`], then XSDT, FADT, DSDT, MADT, MCFG and the FACS after it, all below
/// [`layout::ACPI_END`]. Returns the RSDP's guest-physical address (for the zero page's
/// `acpi_rsdp_addr` or PVH's `rsdp_paddr`).
///
/// Nothing is written unless every table fits.
pub fn create_acpi_tables<M: GuestMemory>(mem: &M, cfg: &AcpiConfig) -> Result<u64, AcpiError> {
    if cfg.num_cpus == 0 {
        return Err(AcpiError::NoCpus);
    }

    // Tables whose content doesn't depend on where anything is placed.
    let dsdt = build_dsdt();
    let madt = build_madt(cfg.num_cpus);
    let mcfg = build_mcfg();
    let facs = build_facs();

    let mut region = Region::new(layout::ACPI_START, layout::ACPI_END);
    let rsdp_addr = region.place("RSDP", Rsdp::len(), 16)?;
    let xsdt_addr = region.place("XSDT", xsdt_len(XSDT_ENTRIES), 16)?;
    let fadt_addr = region.place("FADT", acpi_tables::fadt::FADT::len(), 16)?;
    let dsdt_addr = region.place("DSDT", dsdt.len(), 16)?;
    let madt_addr = region.place("MADT", madt.len(), 16)?;
    let mcfg_addr = region.place("MCFG", mcfg.len(), 16)?;
    // ACPI 6.5 section 5.2.10: "The FACS must be aligned on a 64-byte boundary".
    let facs_addr = region.place("FACS", facs.len(), 64)?;

    // Every address is below ACPI_END <= 4 GiB (asserted above), so the 32-bit forms hold.
    let fadt = build_fadt(dsdt_addr as u32, facs_addr as u32);
    let xsdt = build_xsdt(&[fadt_addr, madt_addr, mcfg_addr]);
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_addr));

    let tables: [(&'static str, u64, &[u8]); 7] = [
        ("RSDP", rsdp_addr, &rsdp),
        ("XSDT", xsdt_addr, &xsdt),
        ("FADT", fadt_addr, &fadt),
        ("DSDT", dsdt_addr, &dsdt),
        ("MADT", madt_addr, &madt),
        ("MCFG", mcfg_addr, &mcfg),
        ("FACS", facs_addr, &facs),
    ];
    for (table, addr, bytes) in tables {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| AcpiError::GuestMemory {
                table,
                addr,
                source,
            })?;
        tracing::debug!(
            table,
            addr = format_args!("{addr:#x}"),
            len = bytes.len(),
            "ACPI table"
        );
    }

    Ok(rsdp_addr)
}

/// Bump allocator over the ACPI region.
struct Region {
    next: u64,
    limit: u64,
}

impl Region {
    fn new(start: u64, limit: u64) -> Self {
        Self { next: start, limit }
    }

    /// Reserves `len` bytes aligned to `align` (a power of two) and returns their address.
    fn place(&mut self, table: &'static str, len: usize, align: u64) -> Result<u64, AcpiError> {
        let too_large = |end| AcpiError::TooLarge {
            table,
            end,
            limit: self.limit,
        };
        let addr = self
            .next
            .checked_next_multiple_of(align)
            .ok_or(too_large(u64::MAX))?;
        let end = addr.checked_add(len as u64).ok_or(too_large(u64::MAX))?;
        if end > self.limit {
            return Err(too_large(end));
        }
        self.next = end;
        Ok(addr)
    }
}

fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// AML that has already been serialised, so that each device can be built in its own
/// function (the `aml` builders borrow their children).
struct RawAml(Vec<u8>);

impl RawAml {
    fn new(aml: &dyn Aml) -> Self {
        Self(to_bytes(aml))
    }
}

impl Aml for RawAml {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        sink.vec(&self.0);
    }
}

/// ASL `IRQNoFlags () {irq}`: the two-byte small IRQ descriptor, meaning an ISA interrupt
/// that is edge-triggered, active-high and exclusive. `acpi_tables` only builds the
/// Extended Interrupt descriptor, which describes a GSI rather than an ISA IRQ.
struct IrqNoFlags(u8);

impl Aml for IrqNoFlags {
    fn to_aml_bytes(&self, sink: &mut dyn AmlSink) {
        // Small resource item: item name 0x04 (IRQ) in bits 6:3, length 2 in bits 2:0.
        sink.byte((0x04 << 3) | 2);
        // IRQ mask: bit n set for IRQ n.
        sink.word(1u16 << self.0);
    }
}

/// Builds `Sdt` header + `body`; the length and checksum are fixed up by `Sdt`.
fn sdt_with_body(signature: [u8; 4], revision: u8, body: &[u8]) -> Vec<u8> {
    let mut sdt = Sdt::new(
        signature,
        SDT_HEADER_LEN,
        revision,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    sdt.append_slice(body);
    sdt.as_slice().to_vec()
}

fn build_dsdt() -> Vec<u8> {
    // \_S5_: the values Linux writes to PM1a_CNT.SLP_TYP (and PM1b, which we don't have)
    // for soft-off; the two trailing elements are reserved.
    let s5 = aml::Name::new(
        "\\_S5_".into(),
        &aml::Package::new(vec![
            &ports::S5_SLP_TYP,
            &ports::S5_SLP_TYP,
            &aml::ZERO,
            &aml::ZERO,
        ]),
    );
    let pci0 = pci_host_bridge();
    let com1 = com1();
    let mbrd = motherboard_resources();
    let sb = aml::Scope::new("\\_SB_".into(), vec![&pci0, &com1, &mbrd]);

    let mut body = Vec::new();
    s5.to_aml_bytes(&mut body);
    sb.to_aml_bytes(&mut body);
    sdt_with_body(*b"DSDT", DSDT_REVISION, &body)
}

/// `\_SB_.PCI0`: the PCIe host bridge of segment 0 with its windows and interrupt routing.
fn pci_host_bridge() -> RawAml {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0A08"));
    // PNP0A03 (conventional PCI) as compatible ID so that OSes without PCIe support
    // still bind their PCI root driver.
    // No _ADR: a device has a _HID or an _ADR but "should not contain both" (ACPI 6.5
    // section 6.1, iasl warning 3073); a host bridge is found by _HID, not by address.
    let cid = aml::Name::new("_CID".into(), &aml::EISAName::new("PNP0A03"));
    let seg = aml::Name::new("_SEG".into(), &aml::ZERO);
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let bbn = aml::Name::new("_BBN".into(), &aml::ZERO);

    // Bus range matches the MCFG allocation: Linux only uses ECAM for buses both cover.
    let buses = aml::AddressSpace::<u16>::new_bus_number(0, u16::from(LAST_PCI_BUS));
    // The config-mechanism-#1 ports are consumed by the bridge itself; Linux recognises
    // exactly this descriptor (0xCF8, length 8) and drops it from the bridge windows.
    let config_ports = aml::IO::new(
        ports::PCI_CONFIG,
        ports::PCI_CONFIG,
        1,
        PCI_CONFIG_PORTS_LEN,
    );
    // IO windows forwarded to the bus: everything except the config ports. The legacy
    // ports (COM1, PM block, ...) fall inside the lower window, as on real chipsets.
    let io_low = aml::AddressSpace::<u16>::new_io(0, ports::PCI_CONFIG - 1, None);
    let io_high = aml::AddressSpace::<u16>::new_io(PCI_CONFIG_PORTS_END, u16::MAX, None);
    let mmio32 = aml::AddressSpace::<u32>::new_memory(
        aml::AddressSpaceCacheable::NotCacheable,
        true,
        layout::PCI_MMIO32_START as u32,
        (layout::PCI_MMIO32_START + layout::PCI_MMIO32_SIZE - 1) as u32,
        None,
    );
    let crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![&buses, &config_ports, &io_low, &io_high, &mmio32]),
    );

    let prt = aml::Name::new("_PRT".into(), &pci_routing_table());

    RawAml::new(&aml::Device::new(
        "PCI0".into(),
        vec![&hid, &cid, &seg, &uid, &bbn, &crs, &prt],
    ))
}

/// IOAPIC input for INTx `pin` (0 = INTA) of device `slot` on bus 0: the usual bridge
/// swizzle over the eight PCI GSIs.
pub fn pci_irq_gsi(slot: u8, pin: u8) -> u32 {
    PCI_GSI_BASE + (u32::from(slot) + u32::from(pin)) % PCI_GSI_COUNT
}

/// `_PRT` for bus 0: INTA..INTD of slots 1..31 routed straight to IOAPIC GSIs (a source of
/// zero means "the next field is a GSI", so no link devices are needed). Slot 0 is the
/// host bridge, which doesn't interrupt. Linux programs such hard-wired GSIs
/// level-triggered, active-low, which is how the IOAPIC pins 16..23 must behave.
fn pci_routing_table() -> aml::PackageBuilder {
    let mut prt = aml::PackageBuilder::new();
    for slot in 1u8..32 {
        // _ADR form of a device: device number in the high word, 0xFFFF = any function.
        let address = (u32::from(slot) << 16) | 0xffff;
        for pin in 0u8..4 {
            let gsi = pci_irq_gsi(slot, pin);
            prt.add_element(&aml::Package::new(vec![&address, &pin, &aml::ZERO, &gsi]));
        }
    }
    prt
}

/// `\_SB_.COM1`: the 16550 at 0x3F8 on ISA IRQ 4, so the guest's 8250 PNP driver binds to it.
fn com1() -> RawAml {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0501"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let io = aml::IO::new(ports::COM1, ports::COM1, 1, COM1_PORTS_LEN);
    let irq = IrqNoFlags(ports::COM1_IRQ as u8);
    let crs = aml::Name::new("_CRS".into(), &aml::ResourceTemplate::new(vec![&io, &irq]));
    RawAml::new(&aml::Device::new("COM1".into(), vec![&hid, &uid, &crs]))
}

/// `\_SB_.MBRD`: motherboard resources (PNP0C02) that no other device claims.
///
/// Linux only uses the MCFG's ECAM window if it is reserved, either in the E820 map or
/// by a PNP0C01/PNP0C02 device ("MMCONFIG ... reserved as ACPI motherboard resource");
/// the PM1 ports are the fixed hardware the FADT points at. The i8042 (0x60/0x64) and RTC
/// (0x70/0x71) are left out on purpose: Linux ignores motherboard I/O below 0x100 and
/// reserves those legacy ports itself.
fn motherboard_resources() -> RawAml {
    let hid = aml::Name::new("_HID".into(), &aml::EISAName::new("PNP0C02"));
    let uid = aml::Name::new("_UID".into(), &aml::ZERO);
    let ecam = aml::Memory32Fixed::new(true, layout::ECAM_START as u32, layout::ECAM_SIZE as u32);
    let pm1a_evt = aml::IO::new(ports::PM1A_EVT, ports::PM1A_EVT, 1, ports::PM1A_EVT_LEN);
    let pm1a_cnt = aml::IO::new(ports::PM1A_CNT, ports::PM1A_CNT, 1, ports::PM1A_CNT_LEN);
    let crs = aml::Name::new(
        "_CRS".into(),
        &aml::ResourceTemplate::new(vec![&ecam, &pm1a_evt, &pm1a_cnt]),
    );
    RawAml::new(&aml::Device::new("MBRD".into(), vec![&hid, &uid, &crs]))
}

/// MADT: one enabled local APIC per vCPU, the IOAPIC, the ISA overrides and LINT1 NMI.
fn build_madt(num_cpus: u8) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&(layout::LAPIC_START as u32).to_le_bytes());
    body.extend_from_slice(&MADT_PCAT_COMPAT.to_le_bytes());

    for cpu in 0..num_cpus {
        ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled).to_aml_bytes(&mut body);
    }
    // The IOAPIC's ID must differ from every local APIC ID; all 24 pins start at GSI 0.
    IoApic::new(num_cpus, layout::IOAPIC_START as u32, 0).to_aml_bytes(&mut body);
    // The PIT's IRQ 0 is on pin 2; ISA defaults (edge, active-high) still apply.
    interrupt_source_override(&mut body, PIT_ISA_IRQ, PIT_GSI, MPS_INTI_CONFORMING);
    // The SCI is an ISA IRQ but level-triggered and active-high (the ACPI default for an
    // SCI without override would be active-low), which is how the PM device raises it.
    interrupt_source_override(
        &mut body,
        ports::SCI_IRQ as u8,
        ports::SCI_IRQ,
        MPS_INTI_POLARITY_ACTIVE_HIGH | MPS_INTI_TRIGGER_LEVEL,
    );
    local_apic_nmi(
        &mut body,
        ACPI_PROCESSOR_UID_ALL,
        MPS_INTI_CONFORMING,
        LAPIC_NMI_LINT,
    );

    sdt_with_body(*b"APIC", MADT_REVISION, &body)
}

/// MADT Interrupt Source Override (type 2, 10 bytes).
fn interrupt_source_override(out: &mut Vec<u8>, isa_irq: u8, gsi: u32, flags: u16) {
    out.extend_from_slice(&[
        MADT_TYPE_INTERRUPT_SOURCE_OVERRIDE,
        10,
        0, /* bus: ISA */
        isa_irq,
    ]);
    out.extend_from_slice(&gsi.to_le_bytes());
    out.extend_from_slice(&flags.to_le_bytes());
}

/// MADT Local APIC NMI (type 4, 6 bytes).
fn local_apic_nmi(out: &mut Vec<u8>, processor_uid: u8, flags: u16, lint: u8) {
    out.extend_from_slice(&[MADT_TYPE_LOCAL_APIC_NMI, 6, processor_uid]);
    out.extend_from_slice(&flags.to_le_bytes());
    out.push(lint);
}

/// MCFG: the ECAM window of segment 0.
fn build_mcfg() -> Vec<u8> {
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(layout::ECAM_START, 0, 0, LAST_PCI_BUS);
    to_bytes(&mcfg)
}

/// FACS: required on non-hardware-reduced platforms (it holds the global lock and the
/// waking vector). Nothing in it is used by this machine, but it must exist.
fn build_facs() -> Vec<u8> {
    let mut facs = FACS::new();
    // ACPI 6.x FACS version.
    facs.version = 2;
    to_bytes(&facs)
}

/// Entries in the XSDT: FADT, MADT, MCFG (the DSDT and FACS hang off the FADT).
const XSDT_ENTRIES: usize = 3;

fn xsdt_len(entries: usize) -> usize {
    SDT_HEADER_LEN as usize + 8 * entries
}

fn build_xsdt(entries: &[u64; XSDT_ENTRIES]) -> Vec<u8> {
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for &entry in entries {
        xsdt.add_entry(entry);
    }
    to_bytes(&xsdt)
}

/// FADT for the classic PM1a fixed hardware of the machine.
fn build_fadt(dsdt_addr: u32, facs_addr: u32) -> Vec<u8> {
    let pm1a_evt = GAS::new(
        AddressSpace::SystemIo,
        8 * ports::PM1A_EVT_LEN,
        0,
        // PM1 status and enable are 16-bit registers.
        AccessSize::WordAccess,
        u64::from(ports::PM1A_EVT),
    );
    let pm1a_cnt = GAS::new(
        AddressSpace::SystemIo,
        8 * ports::PM1A_CNT_LEN,
        0,
        AccessSize::WordAccess,
        u64::from(ports::PM1A_CNT),
    );

    let mut fadt = FADTBuilder::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION)
        // WBINVD works (and FLUSH_SIZE/FLUSH_STRIDE are then ignored).
        .flag(Flags::Wbinvd)
        // C1 (HLT) works on every CPU.
        .flag(Flags::ProcC1)
        // Set = there is no fixed-feature sleep button. PWR_BUTTON stays clear: the power
        // button *is* the fixed-feature one (PM1 PWRBTN_STS), so Linux creates LNXPWRBN.
        .flag(Flags::SlpButton);
    // RESET_REG_SUP stays clear and RESET_REG zero: Linux then resets through the i8042.

    fadt.major_version = FADT_REVISION;
    fadt.fadt_minor_version = FADT_MINOR_REVISION;

    // ACPI 6.x: "If the FIRMWARE_CTRL field contains a non zero value then [X_FIRMWARE_CTRL]
    // must be zero." The FACS is below 4 GiB, so only the 32-bit pointer is used.
    fadt.firmware_ctrl = facs_addr.into();
    fadt.x_firmware_ctrl = 0u64.into();
    // Both DSDT forms hold the same address; ACPICA warns only if they differ.
    fadt.dsdt = dsdt_addr.into();
    fadt.x_dsdt = u64::from(dsdt_addr).into();

    fadt.sci_int = (ports::SCI_IRQ as u16).into();
    // No SMI command port: the platform is always in ACPI mode (SCI_EN set), so
    // ACPI_ENABLE/ACPI_DISABLE/S4BIOS_REQ/PSTATE_CNT/CST_CNT must all be zero.
    fadt.smi_cmd = 0u32.into();
    fadt.acpi_enable = 0;
    fadt.acpi_disable = 0;

    fadt.pm1a_evt_blk = u32::from(ports::PM1A_EVT).into();
    fadt.pm1_evt_len = ports::PM1A_EVT_LEN;
    fadt.x_pm1a_evt_blk = pm1a_evt;
    fadt.pm1a_cnt_blk = u32::from(ports::PM1A_CNT).into();
    fadt.pm1_cnt_len = ports::PM1A_CNT_LEN;
    fadt.x_pm1a_cnt_blk = pm1a_cnt;
    // No PM timer (optional since ACPI 5.0A; the guest has kvm-clock/TSC), no PM2, no GPE
    // blocks: their addresses and lengths all stay zero.

    fadt.p_lvl2_lat = P_LVL2_LAT_NONE.into();
    fadt.p_lvl3_lat = P_LVL3_LAT_NONE.into();
    // CENTURY stays 0: the RTC's century register is not advertised.
    fadt.iapc_boot_arch = IAPC_BOOT_ARCH.into();
    fadt.hypervisor_vendor_identity = HYPERVISOR_VENDOR_ID.into();

    to_bytes(&fadt.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::GuestMemoryMmap;

    fn guest_memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout::HIMEM_START as usize)])
            .expect("guest memory")
    }

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }
    fn sum(b: &[u8]) -> u8 {
        b.iter().fold(0u8, |acc, x| acc.wrapping_add(*x))
    }

    /// Reads the table at `addr` using the length in its header.
    fn read_table(mem: &GuestMemoryMmap, addr: u64) -> Vec<u8> {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut table = vec![0u8; len as usize];
        mem.read_slice(&mut table, GuestAddress(addr)).unwrap();
        table
    }

    struct Tables {
        rsdp_addr: u64,
        rsdp: Vec<u8>,
        xsdt_addr: u64,
        xsdt: Vec<u8>,
        /// (address, bytes) by signature, following the pointers from the RSDP.
        by_sig: Vec<([u8; 4], u64, Vec<u8>)>,
    }

    impl Tables {
        fn get(&self, sig: &[u8; 4]) -> &[u8] {
            self.table(sig).1
        }
        fn addr(&self, sig: &[u8; 4]) -> u64 {
            self.table(sig).0
        }
        fn table(&self, sig: &[u8; 4]) -> (u64, &Vec<u8>) {
            let matches: Vec<_> = self.by_sig.iter().filter(|t| &t.0 == sig).collect();
            assert_eq!(matches.len(), 1, "{}", String::from_utf8_lossy(sig));
            (matches[0].1, &matches[0].2)
        }
    }

    fn create(num_cpus: u8) -> Tables {
        let mem = guest_memory();
        let rsdp_addr = create_acpi_tables(&mem, &AcpiConfig { num_cpus }).unwrap();
        let mut rsdp = vec![0u8; 36];
        mem.read_slice(&mut rsdp, GuestAddress(rsdp_addr)).unwrap();
        let xsdt_addr = u64_at(&rsdp, 24);
        let xsdt = read_table(&mem, xsdt_addr);
        let mut by_sig = Vec::new();
        for i in 0..(xsdt.len() - 36) / 8 {
            let addr = u64_at(&xsdt, 36 + 8 * i);
            let t = read_table(&mem, addr);
            by_sig.push((t[0..4].try_into().unwrap(), addr, t));
        }
        let fadt = by_sig[0].2.clone();
        let dsdt_addr = u64::from(u32_at(&fadt, 40));
        let facs_addr = u64::from(u32_at(&fadt, 36));
        by_sig.push((*b"DSDT", dsdt_addr, read_table(&mem, dsdt_addr)));
        by_sig.push((*b"FACS", facs_addr, read_table(&mem, facs_addr)));
        Tables {
            rsdp_addr,
            rsdp,
            xsdt_addr,
            xsdt,
            by_sig,
        }
    }

    fn assert_header(t: &[u8], sig: &[u8; 4], revision: u8) {
        assert_eq!(&t[0..4], sig);
        assert_eq!(u32_at(t, 4) as usize, t.len());
        assert_eq!(t[8], revision, "{} revision", String::from_utf8_lossy(sig));
        assert_eq!(sum(t), 0, "{} checksum", String::from_utf8_lossy(sig));
        assert_eq!(&t[10..16], &OEM_ID);
        assert_eq!(&t[16..24], &OEM_TABLE_ID);
        assert_eq!(u32_at(t, 24), OEM_REVISION);
    }

    #[test]
    fn rsdp_points_to_xsdt() {
        let t = create(1);
        assert_eq!(t.rsdp_addr, layout::ACPI_START);
        let r = &t.rsdp;
        assert_eq!(&r[0..8], b"RSD PTR ");
        assert_eq!(sum(&r[0..20]), 0, "ACPI 1.0 checksum");
        assert_eq!(sum(r), 0, "extended checksum");
        assert_eq!(&r[9..15], &OEM_ID);
        assert_eq!(r[15], 2, "revision");
        assert_eq!(u32_at(r, 16), 0, "no RSDT");
        assert_eq!(u32_at(r, 20), 36, "length");
        assert_eq!(u64_at(r, 24), t.xsdt_addr);
    }

    #[test]
    fn xsdt_lists_fadt_madt_mcfg() {
        let t = create(2);
        assert_header(&t.xsdt, b"XSDT", 1);
        assert_eq!(t.xsdt.len(), 36 + 3 * 8);
        let sigs: Vec<_> = t.by_sig[..3].iter().map(|x| x.0).collect();
        assert_eq!(sigs, [*b"FACP", *b"APIC", *b"MCFG"]);
    }

    #[test]
    fn tables_are_aligned_disjoint_and_in_region() {
        let t = create(4);
        let mut spans = vec![
            (t.rsdp_addr, t.rsdp_addr + 36),
            (t.xsdt_addr, t.xsdt_addr + t.xsdt.len() as u64),
        ];
        for (sig, addr, bytes) in &t.by_sig {
            let align = if sig == b"FACS" { 64 } else { 16 };
            assert_eq!(addr % align, 0, "{}", String::from_utf8_lossy(sig));
            spans.push((*addr, addr + bytes.len() as u64));
        }
        spans.sort();
        assert_eq!(spans[0].0, layout::ACPI_START);
        assert!(spans.last().unwrap().1 <= layout::ACPI_END);
        for w in spans.windows(2) {
            assert!(w[0].1 <= w[1].0, "overlap {w:x?}");
        }
    }

    #[test]
    fn fadt_fields_at_spec_offsets() {
        let t = create(2);
        let f = t.get(b"FACP");
        assert_header(f, b"FACP", 6);
        assert_eq!(f.len(), 276);
        assert_eq!(u64::from(u32_at(f, 36)), t.addr(b"FACS"), "FIRMWARE_CTRL");
        assert_eq!(u64::from(u32_at(f, 40)), t.addr(b"DSDT"), "DSDT");
        assert_eq!(f[45], 0, "Preferred_PM_Profile");
        assert_eq!(u16_at(f, 46), 9, "SCI_INT");
        assert_eq!(u32_at(f, 48), 0, "SMI_CMD");
        assert_eq!(&f[52..56], &[0, 0, 0, 0], "ACPI_ENABLE..PSTATE_CNT");
        assert_eq!(u32_at(f, 56), 0x600, "PM1a_EVT_BLK");
        assert_eq!(u32_at(f, 60), 0, "PM1b_EVT_BLK");
        assert_eq!(u32_at(f, 64), 0x604, "PM1a_CNT_BLK");
        assert_eq!(u32_at(f, 68), 0, "PM1b_CNT_BLK");
        assert_eq!(u32_at(f, 72), 0, "PM2_CNT_BLK");
        assert_eq!(u32_at(f, 76), 0, "PM_TMR_BLK");
        assert_eq!(u32_at(f, 80), 0, "GPE0_BLK");
        assert_eq!(u32_at(f, 84), 0, "GPE1_BLK");
        assert_eq!(f[88], 4, "PM1_EVT_LEN");
        assert_eq!(f[89], 2, "PM1_CNT_LEN");
        assert_eq!(&f[90..96], &[0; 6], "PM2_CNT_LEN..CST_CNT");
        assert!(u16_at(f, 96) > 100, "P_LVL2_LAT: no C2");
        assert!(u16_at(f, 98) > 1000, "P_LVL3_LAT: no C3");
        assert_eq!(f[108], 0, "CENTURY");
        assert_eq!(u16_at(f, 109), 0b0000_0111, "IAPC_BOOT_ARCH");
        // WBINVD | PROC_C1 | SLP_BUTTON; PWR_BUTTON (bit 4), RESET_REG_SUP (bit 10) and
        // HW_REDUCED_ACPI (bit 20) clear.
        assert_eq!(u32_at(f, 112), (1 << 0) | (1 << 2) | (1 << 5), "Flags");
        assert_eq!(&f[116..129], &[0; 13], "RESET_REG, RESET_VALUE");
        assert_eq!(u16_at(f, 129), 0, "ARM_BOOT_ARCH");
        assert_eq!(f[131], FADT_MINOR_REVISION);
        assert_eq!(u64_at(f, 132), 0, "X_FIRMWARE_CTRL");
        assert_eq!(u64_at(f, 140), t.addr(b"DSDT"), "X_DSDT");
        // X_PM1a_EVT_BLK: SystemIO, 32 bits, offset 0, word access, 0x600.
        assert_eq!(&f[148..152], &[1, 32, 0, 2]);
        assert_eq!(u64_at(f, 152), 0x600);
        assert_eq!(&f[160..172], &[0; 12], "X_PM1b_EVT_BLK");
        // X_PM1a_CNT_BLK: SystemIO, 16 bits, offset 0, word access, 0x604.
        assert_eq!(&f[172..176], &[1, 16, 0, 2]);
        assert_eq!(u64_at(f, 176), 0x604);
        assert_eq!(&f[184..268], &[0; 84], "X_PM1b_CNT..SLEEP_STATUS_REG");
        assert_eq!(&f[268..276], b"VIREO   ", "Hypervisor Vendor Identity");
    }

    #[test]
    fn facs() {
        let t = create(1);
        let facs = t.get(b"FACS");
        assert_eq!(&facs[0..4], b"FACS");
        assert_eq!(facs.len(), 64);
        assert_eq!(facs[32], 2, "version");
        assert_eq!(u32_at(facs, 4), 64, "length");
        // No hardware signature, waking vectors, lock owner or flags.
        assert!(facs[8..32].iter().all(|&b| b == 0));
    }

    #[test]
    fn madt_entries() {
        for n in [1u8, 2, 8, 255] {
            let t = create(n);
            let m = t.get(b"APIC");
            assert_header(m, b"APIC", MADT_REVISION);
            let n = usize::from(n);
            assert_eq!(m.len(), 44 + 8 * n + 12 + 2 * 10 + 6);
            assert_eq!(u32_at(m, 36), 0xfee0_0000, "local APIC address");
            assert_eq!(u32_at(m, 40), 1, "PCAT_COMPAT");

            let mut entries = Vec::new();
            let mut off = 44;
            while off < m.len() {
                let len = usize::from(m[off + 1]);
                entries.push(&m[off..off + len]);
                off += len;
            }
            assert_eq!(off, m.len());
            assert_eq!(entries.len(), n + 4);
            for (i, e) in entries[..n].iter().enumerate() {
                assert_eq!(e[..4], [0, 8, i as u8, i as u8], "LAPIC {i}");
                assert_eq!(u32_at(e, 4), 1, "enabled");
            }
            let ioapic = entries[n];
            assert_eq!(ioapic[..4], [1, 12, n as u8, 0]);
            assert_eq!(u32_at(ioapic, 4), 0xfec0_0000);
            assert_eq!(u32_at(ioapic, 8), 0, "GSI base");
            // IRQ0 -> GSI2, conforming.
            let iso0 = entries[n + 1];
            assert_eq!(iso0[..4], [2, 10, 0, 0]);
            assert_eq!(u32_at(iso0, 4), 2);
            assert_eq!(u16_at(iso0, 8), 0);
            // IRQ9 -> GSI9, active high (01), level (11 << 2).
            let iso9 = entries[n + 2];
            assert_eq!(iso9[..4], [2, 10, 0, 9]);
            assert_eq!(u32_at(iso9, 4), 9);
            assert_eq!(u16_at(iso9, 8), 0x000d);
            // Local APIC NMI, all processors, LINT1.
            assert_eq!(entries[n + 3], &[4, 6, 0xff, 0, 0, 1]);
        }
    }

    #[test]
    fn mcfg_ecam_allocation() {
        let t = create(1);
        let m = t.get(b"MCFG");
        assert_header(m, b"MCFG", 1);
        assert_eq!(m.len(), 44 + 16);
        assert_eq!(u64_at(m, 36), 0, "reserved");
        assert_eq!(u64_at(m, 44), layout::ECAM_START);
        assert_eq!(u16_at(m, 52), 0, "segment");
        assert_eq!(m[54], 0, "start bus");
        assert_eq!(m[55], ((layout::ECAM_SIZE >> 20) - 1) as u8, "end bus");
        assert_eq!(u32_at(m, 56), 0, "reserved");
    }

    fn contains(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    fn eisa_id(id: &str) -> [u8; 5] {
        let mut e = [0x0c, 0, 0, 0, 0]; // DWordPrefix
        e[1..].copy_from_slice(&to_bytes(&aml::EISAName::new(id))[1..]);
        e
    }

    #[test]
    fn dsdt_content() {
        let t = create(1);
        let d = t.get(b"DSDT");
        assert_header(d, b"DSDT", 2);
        // EISAID("PNP0A08") is 0x080AD041: compressed "PNP" then 0x0A08, byte-swapped.
        assert_eq!(eisa_id("PNP0A08"), [0x0c, 0x41, 0xd0, 0x0a, 0x08]);
        // Name (\_S5_, Package (4) {5, 5, 0, 0})
        assert!(contains(
            d,
            &[0x08, b'\\', b'_', b'S', b'5', b'_', 0x12, 0x08, 0x04, 0x0a, 5, 0x0a, 5, 0, 0]
        ));
        for id in ["PNP0A08", "PNP0A03", "PNP0501", "PNP0C02"] {
            assert!(contains(d, &eisa_id(id)), "{id}");
        }
        for name in [
            &b"PCI0"[..],
            b"COM1",
            b"MBRD",
            b"_PRT",
            b"_CRS",
            b"_SEG",
            b"_BBN",
        ] {
            assert!(contains(d, name), "{}", String::from_utf8_lossy(name));
        }
        // The host bridge is identified by _HID only (see pci_host_bridge).
        assert!(!contains(d, b"_ADR"));
        // IO (Decode16, 0x0CF8, 0x0CF8, 0x01, 0x08)
        assert!(contains(d, &[0x47, 1, 0xf8, 0x0c, 0xf8, 0x0c, 1, 8]));
        // COM1: IO (Decode16, 0x03F8, 0x03F8, 0x01, 0x08), IRQNoFlags () {4}
        assert!(contains(
            d,
            &[0x47, 1, 0xf8, 0x03, 0xf8, 0x03, 1, 8, 0x22, 0x10, 0x00]
        ));
        // Memory32Fixed (ReadWrite, 0xE0000000, 0x00100000)
        assert!(contains(d, &[0x86, 9, 0, 1, 0, 0, 0, 0xe0, 0, 0, 0x10, 0]));
        // PM1a blocks reserved.
        assert!(contains(d, &[0x47, 1, 0x00, 0x06, 0x00, 0x06, 1, 4]));
        assert!(contains(d, &[0x47, 1, 0x04, 0x06, 0x04, 0x06, 1, 2]));
        // DWordMemory window: min 0xC0000000, max 0xDFFFFFFF, length 0x20000000.
        let mut window = Vec::new();
        for v in [0xc000_0000u32, 0xdfff_ffff, 0, 0x2000_0000] {
            window.extend_from_slice(&v.to_le_bytes());
        }
        assert!(contains(d, &window));
    }

    #[test]
    fn prt_swizzle() {
        assert_eq!(pci_irq_gsi(1, 0), 17);
        assert_eq!(pci_irq_gsi(1, 3), 20);
        assert_eq!(pci_irq_gsi(7, 1), 16);
        assert_eq!(pci_irq_gsi(31, 3), 18);
        let prt = to_bytes(&pci_routing_table());
        // PackageOp, 2-byte PkgLength, 124 elements.
        assert_eq!(prt[0], 0x12);
        assert_eq!(prt[3], 31 * 4);
        // Slot 2, INTB: Package (4) {0x0002FFFF, One, Zero, 0x13}
        assert!(contains(
            &prt,
            &[0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, 0x02, 0x00, 0x01, 0x00, 0x0a, 19]
        ));
    }

    #[test]
    fn zero_cpus_is_an_error() {
        let mem = guest_memory();
        let err = create_acpi_tables(&mem, &AcpiConfig { num_cpus: 0 }).unwrap_err();
        assert!(matches!(err, AcpiError::NoCpus));
    }

    #[test]
    fn region_overflow_is_an_error() {
        let mut region = Region::new(0x1000, 0x1100);
        assert_eq!(region.place("A", 0x24, 16).unwrap(), 0x1000);
        assert_eq!(region.place("B", 0x10, 64).unwrap(), 0x1040);
        match region.place("C", 0xb1, 16) {
            Err(AcpiError::TooLarge { table, end, limit }) => {
                assert_eq!((table, end, limit), ("C", 0x1101, 0x1100));
            }
            other => panic!("{other:?}"),
        }
        // Exactly filling the region is fine.
        assert_eq!(region.place("C", 0xb0, 16).unwrap(), 0x1050);
    }

    #[test]
    fn missing_guest_memory_is_an_error() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x1000)]).expect("memory");
        let err = create_acpi_tables(&mem, &AcpiConfig { num_cpus: 1 }).unwrap_err();
        assert!(
            matches!(err, AcpiError::GuestMemory { table: "RSDP", addr, .. } if addr == layout::ACPI_START)
        );
    }
}
