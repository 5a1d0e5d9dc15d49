//! Checks the generated ACPI tables with ACPICA's own tool, `iasl` (Debian package
//! `acpica-tools`): the tables are built into guest memory, found by following the pointers
//! from the RSDP, written out as `*.dat` files and disassembled with `iasl -d`. ACPICA is
//! the interpreter Linux uses, so a table it decodes cleanly is one Linux parses the same
//! way. Each disassembly is then compiled back with `iasl`, which must report no errors,
//! warnings or remarks; for the data tables the recompiled binary must equal ours (apart
//! from the compiler ID fields and the checksum, which iasl rewrites).

use std::path::{Path, PathBuf};
use std::process::Command;

use vireo_arch::acpi::{create_acpi_tables, AcpiConfig};
use vireo_arch::layout;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

const NUM_CPUS: u8 = 4;

struct Table {
    signature: String,
    addr: u64,
    bytes: Vec<u8>,
}

/// Builds the tables for `num_cpus` and returns every table reachable from the RSDP:
/// XSDT, the XSDT's entries, then the FADT's DSDT and FACS.
fn build_tables(num_cpus: u8) -> Vec<Table> {
    let mem: GuestMemoryMmap =
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), layout::HIMEM_START as usize)])
            .expect("guest memory");
    let rsdp = create_acpi_tables(&mem, &AcpiConfig { num_cpus }).expect("ACPI tables");
    let xsdt_addr: u64 = mem.read_obj(GuestAddress(rsdp + 24)).unwrap();

    let read = |addr: u64| {
        let len: u32 = mem.read_obj(GuestAddress(addr + 4)).unwrap();
        let mut bytes = vec![0u8; len as usize];
        mem.read_slice(&mut bytes, GuestAddress(addr)).unwrap();
        Table {
            signature: String::from_utf8_lossy(&bytes[0..4]).into_owned(),
            addr,
            bytes,
        }
    };

    let xsdt = read(xsdt_addr);
    let mut tables = Vec::new();
    for entry in xsdt.bytes[36..].chunks_exact(8) {
        tables.push(read(u64::from_le_bytes(entry.try_into().unwrap())));
    }
    let fadt = tables
        .iter()
        .find(|t| t.signature == "FACP")
        .expect("FADT in XSDT");
    let facs_addr = u32::from_le_bytes(fadt.bytes[36..40].try_into().unwrap());
    let dsdt_addr = u32::from_le_bytes(fadt.bytes[40..44].try_into().unwrap());
    tables.push(read(u64::from(dsdt_addr)));
    tables.push(read(u64::from(facs_addr)));
    tables.push(xsdt);
    tables
}

/// A scratch directory of its own for each test (tests run in parallel).
fn scratch_dir(test: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("acpi_iasl_{test}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs iasl in `dir`, asserts it succeeded and returns its combined output.
fn iasl(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("iasl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run iasl ({e}); install the acpica-tools package"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iasl {args:?} failed:\n{text}");
    text
}

/// Writes `table` as `<sig>.dat`, disassembles it with `iasl -d`, asserts ACPICA had
/// nothing to complain about, and returns the disassembly.
fn disassemble(dir: &Path, table: &Table) -> String {
    let name = table.signature.to_lowercase();
    std::fs::write(dir.join(format!("{name}.dat")), &table.bytes).unwrap();
    let out = iasl(dir, &["-d", &format!("{name}.dat")]);
    let lower = out.to_lowercase();
    assert!(
        !lower.contains("error") && !lower.contains("warning") && !out.contains("****"),
        "iasl -d {name}.dat complained:\n{out}"
    );
    assert!(
        out.contains(&format!("ACPI: {}", table.signature)),
        "iasl did not recognise {}:\n{out}",
        table.signature
    );
    std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap()
}

/// Compiles `<name>.dsl` back with iasl and asserts a clean compile; returns the AML.
fn recompile(dir: &Path, name: &str) -> Vec<u8> {
    let out = iasl(dir, &[&format!("{name}.dsl")]);
    assert!(
        out.contains("Compilation successful. 0 Errors, 0 Warnings, 0 Remarks"),
        "recompiling {name}.dsl was not clean:\n{out}"
    );
    std::fs::read(dir.join(format!("{name}.aml"))).unwrap()
}

/// For data tables: the recompiled table must be byte-identical except the checksum (9)
/// and the creator ID/revision (28..36), which iasl replaces with its own.
fn assert_round_trips(dir: &Path, table: &Table) {
    let name = table.signature.to_lowercase();
    let aml = recompile(dir, &name);
    assert_eq!(aml.len(), table.bytes.len(), "{name} length");
    for (i, (a, b)) in aml.iter().zip(&table.bytes).enumerate() {
        let rewritten = table.bytes.len() >= 36 && (i == 9 || (28..36).contains(&i));
        assert!(
            rewritten || a == b,
            "{name} byte {i}: iasl {a:#04x}, ours {b:#04x}"
        );
    }
}

/// The `FieldName : Value` lines of a data table disassembly, whitespace-normalised.
fn fields(dsl: &str) -> Vec<(String, String)> {
    dsl.lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(" : ")?;
            // Drop the "[offset decimal length]" prefix if there is one.
            let name = name.rsplit(']').next().unwrap_or(name).trim();
            Some((name.to_string(), value.trim().to_string()))
        })
        .collect()
}

fn field_values<'a>(fields: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    fields
        .iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

/// The single value of field `name`.
fn field<'a>(fields: &'a [(String, String)], name: &str) -> &'a str {
    let values = field_values(fields, name);
    assert_eq!(values.len(), 1, "field {name:?}: {values:?}");
    values[0]
}

fn find<'a>(tables: &'a [Table], signature: &str) -> &'a Table {
    tables
        .iter()
        .find(|t| t.signature == signature)
        .unwrap_or_else(|| panic!("no {signature}"))
}

#[test]
fn fadt() {
    let dir = scratch_dir("fadt");
    let tables = build_tables(NUM_CPUS);
    let fadt = find(&tables, "FACP");
    let dsl = disassemble(&dir, fadt);
    let f = fields(&dsl);

    assert_eq!(field(&f, "Revision"), "06");
    assert_eq!(field(&f, "Table Length"), "00000114");
    assert_eq!(field(&f, "Oem ID"), "\"VIREO \"");
    assert_eq!(field(&f, "SCI Interrupt"), "0009");
    assert_eq!(field(&f, "SMI Command Port"), "00000000");
    assert_eq!(field(&f, "PM1A Event Block Address"), "00000600");
    assert_eq!(field(&f, "PM1A Control Block Address"), "00000604");
    assert_eq!(field(&f, "PM1 Event Block Length"), "04");
    assert_eq!(field(&f, "PM1 Control Block Length"), "02");
    assert_eq!(field(&f, "PM Timer Block Address"), "00000000");
    assert_eq!(field(&f, "PM Timer Block Length"), "00");
    assert_eq!(field(&f, "GPE0 Block Length"), "00");

    // 32-bit and 64-bit DSDT pointers agree and point at the DSDT.
    let dsdt_addr = find(&tables, "DSDT").addr;
    assert_eq!(
        field_values(&f, "DSDT Address"),
        [format!("{dsdt_addr:08X}"), format!("{dsdt_addr:016X}")]
    );
    // FACS through the 32-bit pointer only.
    let facs_addr = find(&tables, "FACS").addr;
    assert_eq!(
        field_values(&f, "FACS Address"),
        [format!("{facs_addr:08X}"), format!("{:016X}", 0)]
    );
    // X_PM1a_EVT_BLK and X_PM1a_CNT_BLK in SystemIO; everything else absent.
    assert_eq!(
        field_values(&f, "Space ID"),
        [
            "00 [SystemMemory]", // RESET_REG
            "01 [SystemIO]",     // X_PM1a_EVT_BLK
            "00 [SystemMemory]", // X_PM1b_EVT_BLK
            "01 [SystemIO]",     // X_PM1a_CNT_BLK
            "00 [SystemMemory]", // X_PM1b_CNT_BLK
            "00 [SystemMemory]", // X_PM2_CNT_BLK
            "00 [SystemMemory]", // X_PM_TMR_BLK
            "00 [SystemMemory]", // X_GPE0_BLK
            "00 [SystemMemory]", // X_GPE1_BLK
            "00 [SystemMemory]", // SLEEP_CONTROL_REG
            "00 [SystemMemory]", // SLEEP_STATUS_REG
        ]
    );
    let addresses = field_values(&f, "Address");
    assert_eq!(addresses[1], "0000000000000600");
    assert_eq!(addresses[3], "0000000000000604");
    assert_eq!(field_values(&f, "Bit Width")[1..4], ["20", "00", "10"]);

    // Boot architecture flags.
    assert_eq!(field(&f, "Legacy Devices Supported (V2)"), "1");
    assert_eq!(field(&f, "8042 Present on ports 60/64 (V2)"), "1");
    assert_eq!(field(&f, "VGA Not Present (V4)"), "1");
    assert_eq!(field(&f, "MSI Not Supported (V4)"), "0");
    assert_eq!(field(&f, "CMOS RTC Not Present (V5)"), "0");
    // Feature flags.
    assert_eq!(field(&f, "WBINVD instruction is operational (V1)"), "1");
    assert_eq!(field(&f, "All CPUs support C1 (V1)"), "1");
    assert_eq!(field(&f, "Control Method Power Button (V1)"), "0");
    assert_eq!(field(&f, "Control Method Sleep Button (V1)"), "1");
    assert_eq!(field(&f, "Reset Register Supported (V2)"), "0");
    assert_eq!(field(&f, "Hardware Reduced (V5)"), "0");
    assert_eq!(field(&f, "Hypervisor ID"), "2020204F45524956"); // "VIREO   "

    assert_round_trips(&dir, fadt);
}

#[test]
fn facs() {
    let dir = scratch_dir("facs");
    let tables = build_tables(NUM_CPUS);
    let facs = find(&tables, "FACS");
    let f = fields(&disassemble(&dir, facs));
    assert_eq!(field(&f, "Length"), "00000040");
    assert_eq!(field(&f, "Version"), "02");
    assert_round_trips(&dir, facs);
}

#[test]
fn madt() {
    for num_cpus in [1, NUM_CPUS, 255] {
        let dir = scratch_dir(&format!("madt_{num_cpus}"));
        let tables = build_tables(num_cpus);
        let madt = find(&tables, "APIC");
        let dsl = disassemble(&dir, madt);
        let f = fields(&dsl);

        assert_eq!(field(&f, "Local Apic Address"), "FEE00000");
        assert_eq!(field(&f, "PC-AT Compatibility"), "1");
        let types = field_values(&f, "Subtable Type");
        let count = |t: &str| types.iter().filter(|v| **v == t).count();
        assert_eq!(count("00 [Processor Local APIC]"), usize::from(num_cpus));
        assert_eq!(count("01 [I/O APIC]"), 1);
        assert_eq!(count("02 [Interrupt Source Override]"), 2);
        assert_eq!(count("04 [Local APIC NMI]"), 1);
        assert_eq!(types.len(), usize::from(num_cpus) + 4);

        // ACPI processor ID = APIC ID = index, all enabled.
        let ids: Vec<String> = (0..num_cpus).map(|i| format!("{i:02X}")).collect();
        assert_eq!(field_values(&f, "Local Apic ID"), ids);
        assert_eq!(
            field_values(&f, "Processor Enabled"),
            vec!["1"; usize::from(num_cpus)]
        );
        // Processor IDs of the LAPICs, then 0xFF (all) for the NMI entry.
        let mut uids = ids.clone();
        uids.push("FF".to_string());
        assert_eq!(field_values(&f, "Processor ID"), uids);

        assert_eq!(field(&f, "I/O Apic ID"), format!("{num_cpus:02X}"));
        assert_eq!(field_values(&f, "Address"), ["FEC00000"]);
        // IOAPIC GSI base, then the overrides' GSIs.
        assert_eq!(
            field_values(&f, "Interrupt"),
            ["00000000", "00000002", "00000009"]
        );
        assert_eq!(field_values(&f, "Source"), ["00", "09"]);
        // ISO IRQ0: conforming; ISO IRQ9: active high (1), level (3); NMI: conforming.
        assert_eq!(field_values(&f, "Polarity"), ["0", "1", "0"]);
        assert_eq!(field_values(&f, "Trigger Mode"), ["0", "3", "0"]);
        assert_eq!(field(&f, "Interrupt Input LINT"), "01");

        assert_round_trips(&dir, madt);
    }
}

#[test]
fn mcfg() {
    let dir = scratch_dir("mcfg");
    let tables = build_tables(NUM_CPUS);
    let mcfg = find(&tables, "MCFG");
    let f = fields(&disassemble(&dir, mcfg));
    assert_eq!(field(&f, "Base Address"), "00000000E0000000");
    assert_eq!(field(&f, "Segment Group Number"), "0000");
    assert_eq!(field(&f, "Start Bus Number"), "00");
    assert_eq!(
        field(&f, "End Bus Number"),
        format!("{:02X}", (layout::ECAM_SIZE >> 20) - 1)
    );
    assert_round_trips(&dir, mcfg);
}

#[test]
fn xsdt() {
    let dir = scratch_dir("xsdt");
    let tables = build_tables(NUM_CPUS);
    let f = fields(&disassemble(&dir, find(&tables, "XSDT")));
    let entries: Vec<String> = ["FACP", "APIC", "MCFG"]
        .iter()
        .map(|sig| format!("{:016X}", find(&tables, sig).addr))
        .collect();
    for (i, entry) in entries.iter().enumerate() {
        assert_eq!(field(&f, &format!("ACPI Table Address   {i}")), entry);
    }
    assert_round_trips(&dir, find(&tables, "XSDT"));
}

/// Text between `start` and the next line that is indented no deeper than `start`'s own
/// line, i.e. the body of an ASL block.
fn block<'a>(dsl: &'a str, start: &str) -> &'a str {
    let begin = dsl
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not in DSDT"));
    let line_start = dsl[..begin].rfind('\n').map_or(0, |i| i + 1);
    let indent = begin - line_start;
    let closing = format!("\n{}}}", " ".repeat(indent));
    let end = dsl[begin..]
        .find(&closing)
        .unwrap_or_else(|| panic!("end of {start:?}"));
    &dsl[begin..begin + end]
}

/// Collapses runs of whitespace so multi-line ASL can be matched.
fn squash(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[test]
fn dsdt() {
    let dir = scratch_dir("dsdt");
    let tables = build_tables(NUM_CPUS);
    let dsdt = find(&tables, "DSDT");
    let dsl = disassemble(&dir, dsdt);
    assert!(dsl.contains("DefinitionBlock (\"\", \"DSDT\", 2, \"VIREO \", \"VIREO   \""));

    // Soft-off: SLP_TYPa = SLP_TYPb = 5.
    assert!(
        squash(&dsl).contains(
            "Name (\\_S5, Package (0x04) // _S5_: S5 System State { 0x05, 0x05, Zero, Zero })"
        ),
        "{dsl}"
    );

    let pci0 = squash(block(&dsl, "Device (PCI0)"));
    assert!(pci0.contains("Name (_HID, EisaId (\"PNP0A08\")"));
    assert!(pci0.contains("Name (_CID, EisaId (\"PNP0A03\")"));
    for name in ["_SEG", "_UID", "_BBN"] {
        assert!(pci0.contains(&format!("Name ({name}, Zero)")), "{name}");
    }
    assert!(!pci0.contains("_ADR"));
    let expected_crs = [
        "WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0x0000, // Granularity 0x0000, // Range Minimum 0x0000, // Range Maximum 0x0000, // Translation Offset 0x0001, // Length",
        "IO (Decode16, 0x0CF8, // Range Minimum 0x0CF8, // Range Maximum 0x01, // Alignment 0x08, // Length )",
        "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity 0x0000, // Range Minimum 0x0CF7, // Range Maximum 0x0000, // Translation Offset 0x0CF8, // Length",
        "WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0x0000, // Granularity 0x0D00, // Range Minimum 0xFFFF, // Range Maximum 0x0000, // Translation Offset 0xF300, // Length",
        "DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, NonCacheable, ReadWrite, 0x00000000, // Granularity 0xC0000000, // Range Minimum 0xDFFFFFFF, // Range Maximum 0x00000000, // Translation Offset 0x20000000, // Length",
    ];
    for descriptor in expected_crs {
        assert!(pci0.contains(descriptor), "{descriptor}\nnot in\n{pci0}");
    }

    // _PRT: 31 slots x 4 pins, GSI = 16 + (slot + pin) % 8.
    let prt = squash(block(&dsl, "Name (_PRT, Package (0x7C)"));
    let entries: Vec<&str> = prt.split("Package (0x04) {").skip(1).collect();
    assert_eq!(entries.len(), 124);
    let pin_names = ["Zero", "One", "0x02", "0x03"];
    for (i, entry) in entries.iter().enumerate() {
        let slot = i / 4 + 1;
        let pin = i % 4;
        let gsi = 16 + (slot + pin) % 8;
        let expected = format!("0x{slot:04X}FFFF, {}, Zero, 0x{gsi:02X} }}", pin_names[pin]);
        assert!(entry.trim().starts_with(&expected), "{entry} != {expected}");
    }

    let com1 = squash(block(&dsl, "Device (COM1)"));
    assert!(com1.contains("Name (_HID, EisaId (\"PNP0501\")"));
    assert!(com1.contains("Name (_UID, Zero)"));
    assert!(com1.contains(
        "IO (Decode16, 0x03F8, // Range Minimum 0x03F8, // Range Maximum 0x01, // Alignment 0x08, // Length ) IRQNoFlags () {4}"
    ), "{com1}");

    let mbrd = squash(block(&dsl, "Device (MBRD)"));
    assert!(mbrd.contains("Name (_HID, EisaId (\"PNP0C02\")"));
    assert!(
        mbrd.contains(
            "Memory32Fixed (ReadWrite, 0xE0000000, // Address Base 0x00100000, // Address Length )"
        ),
        "{mbrd}"
    );
    assert!(mbrd.contains(
        "IO (Decode16, 0x0600, // Range Minimum 0x0600, // Range Maximum 0x01, // Alignment 0x04, // Length )"
    ));
    assert!(mbrd.contains(
        "IO (Decode16, 0x0604, // Range Minimum 0x0604, // Range Maximum 0x01, // Alignment 0x02, // Length )"
    ));

    // The disassembly compiles back cleanly: names, object types and resource descriptors
    // all pass iasl's semantic checks.
    recompile(&dir, "dsdt");
}
