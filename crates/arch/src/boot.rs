//! Boot structures: the e820 memory map, the Linux zero page, the PVH start_info, and the
//! initial CPU state (GDT, identity page tables, registers) for each entry protocol.

use crate::layout::*;
use crate::loader::{write_checked, Entry, LoadError, LoadedKernel};
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use vireo_hypervisor::{Regs, Segment, Sregs, Table};
use vm_memory::GuestMemoryBackend;

pub const E820_RAM: u32 = 1;
pub const E820_RESERVED: u32 = 2;

/// One range of the guest's physical memory map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemRange {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// Where guest RAM lives for a VM of `mem_size` bytes: below the PCI hole, then above 4 GiB.
pub fn ram_regions(mem_size: u64) -> Vec<(u64, u64)> {
    let low = mem_size.min(LOW_RAM_END);
    let mut v = vec![(0, low)];
    if mem_size > LOW_RAM_END {
        v.push((HIGH_RAM_START, mem_size - LOW_RAM_END));
    }
    v
}

/// The e820 map the guest sees: RAM, with the BIOS area and ECAM reserved so that the guest
/// neither allocates over our ACPI tables nor distrusts the MCFG window.
pub fn e820_map(mem_size: u64) -> Vec<MemRange> {
    let low = mem_size.min(LOW_RAM_END);
    let mut v = vec![
        MemRange {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        MemRange {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    if low > HIMEM_START {
        v.push(MemRange {
            addr: HIMEM_START,
            size: low - HIMEM_START,
            kind: E820_RAM,
        });
    }
    v.push(MemRange {
        addr: ECAM_START,
        size: ECAM_SIZE,
        kind: E820_RESERVED,
    });
    if mem_size > LOW_RAM_END {
        v.push(MemRange {
            addr: HIGH_RAM_START,
            size: mem_size - LOW_RAM_END,
            kind: E820_RAM,
        });
    }
    v
}

/// Views a plain-old-data boot structure as bytes.
fn pod_bytes<T: Copy>(v: &T) -> &[u8] {
    // SAFETY: only used on the bindgen-generated, repr(C) boot structures of linux-loader,
    // which are plain integers and arrays without padding that could leak host data
    // (they are zero-initialised with Default before being filled).
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

/// Places the initrd as high as possible below `limit`, page-aligned, above the kernel.
pub fn place_initrd(
    kernel_end: u64,
    ram_end: u64,
    limit: u64,
    size: u64,
) -> Result<u64, LoadError> {
    let top = ram_end.min(limit);
    let addr = top.checked_sub(size).map(|a| a & !0xfff);
    match addr {
        Some(a) if a >= kernel_end => Ok(a),
        _ => Err(LoadError::DoesNotFit {
            addr: kernel_end,
            len: size,
            limit: top,
        }),
    }
}

/// Everything needed to finish booting once kernel, cmdline and initrd are in memory.
pub struct BootInfo {
    pub mem_size: u64,
    pub cmdline_len: usize,
    pub initrd: Option<(u64, u64)>,
    pub rsdp: u64,
}

/// Writes the zero page (Linux) or start_info (PVH) and returns the boot vCPU's registers.
pub fn write_boot_params<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &LoadedKernel,
    info: &BootInfo,
) -> Result<(Regs, Sregs), LoadError> {
    let ram_end = info.mem_size.min(LOW_RAM_END);
    let map = e820_map(info.mem_size);
    write_checked(mem, BOOT_GDT, &gdt_bytes(), ram_end)?;
    match kernel.entry {
        Entry::Linux64 { rip, header } => {
            let mut bp = boot_params {
                hdr: header,
                ..Default::default()
            };
            bp.hdr.type_of_loader = 0xff; // "undefined" boot loader
            bp.hdr.cmd_line_ptr = CMDLINE as u32;
            bp.hdr.cmdline_size = info.cmdline_len as u32;
            if let Some((addr, size)) = info.initrd {
                bp.hdr.ramdisk_image = addr as u32;
                bp.hdr.ramdisk_size = size as u32;
            }
            bp.acpi_rsdp_addr = info.rsdp;
            if map.len() > bp.e820_table.len() {
                return Err(LoadError::BzImage("too many e820 entries".into()));
            }
            for (slot, r) in bp.e820_table.iter_mut().zip(&map) {
                *slot = boot_e820_entry {
                    addr: r.addr,
                    size: r.size,
                    r#type: r.kind,
                };
            }
            bp.e820_entries = map.len() as u8;
            write_checked(mem, ZERO_PAGE, pod_bytes(&bp), ram_end)?;
            write_page_tables(mem, ram_end)?;
            Ok(linux64_state(rip))
        }
        Entry::Pvh { rip } => {
            if map.len() > PVH_MEMMAP_MAX {
                return Err(LoadError::Elf("too many memory map entries".into()));
            }
            let mut at = PVH_MEMMAP;
            for r in &map {
                let e = hvm_memmap_table_entry {
                    addr: r.addr,
                    size: r.size,
                    type_: r.kind,
                    reserved: 0,
                };
                write_checked(mem, at, pod_bytes(&e), ram_end)?;
                at += std::mem::size_of::<hvm_memmap_table_entry>() as u64;
            }
            let mut si = hvm_start_info {
                magic: 0x336e_c578,
                version: 1,
                cmdline_paddr: CMDLINE,
                rsdp_paddr: info.rsdp,
                memmap_paddr: PVH_MEMMAP,
                memmap_entries: map.len() as u32,
                ..Default::default()
            };
            if let Some((paddr, size)) = info.initrd {
                let m = hvm_modlist_entry {
                    paddr,
                    size,
                    ..Default::default()
                };
                write_checked(mem, at, pod_bytes(&m), ram_end)?;
                si.nr_modules = 1;
                si.modlist_paddr = at;
            }
            write_checked(mem, PVH_INFO, pod_bytes(&si), ram_end)?;
            Ok(pvh_state(rip))
        }
    }
}

// GDT selectors. Linux's 64-bit boot protocol wants __BOOT_CS = 0x10 and __BOOT_DS = 0x18;
// the PVH entry runs on the 32-bit code segment at 0x08.
const SEL_CODE32: u16 = 0x08;
const SEL_CODE64: u16 = 0x10;
const SEL_DATA: u16 = 0x18;
const SEL_TSS: u16 = 0x20;

const GDT: [u64; 5] = [
    0,
    0x00cf_9b00_0000_ffff, // flat 32-bit code, execute/read
    0x00af_9b00_0000_ffff, // flat 64-bit code
    0x00cf_9300_0000_ffff, // flat data, read/write
    0x0000_8b00_0000_0067, // 32-bit busy TSS at 0: VMX requires a usable TR
];

fn gdt_bytes() -> Vec<u8> {
    GDT.iter().flat_map(|e| e.to_le_bytes()).collect()
}

fn seg(sel: u16) -> Segment {
    Segment::from_gdt_entry(sel, GDT[usize::from(sel >> 3)])
}

fn base_sregs() -> Sregs {
    Sregs {
        ds: seg(SEL_DATA),
        es: seg(SEL_DATA),
        fs: seg(SEL_DATA),
        gs: seg(SEL_DATA),
        ss: seg(SEL_DATA),
        tr: seg(SEL_TSS),
        ldt: Segment {
            unusable: true,
            ..Default::default()
        },
        gdt: Table {
            base: BOOT_GDT,
            limit: (GDT.len() * 8 - 1) as u16,
        },
        ..Default::default()
    }
}

const CR0_PE: u64 = 1;
const CR0_ET: u64 = 1 << 4;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

fn pvh_state(rip: u64) -> (Regs, Sregs) {
    let regs = Regs {
        rip,
        rbx: PVH_INFO,
        rflags: 2,
        ..Default::default()
    };
    let sregs = Sregs {
        cs: seg(SEL_CODE32),
        cr0: CR0_PE | CR0_ET,
        ..base_sregs()
    };
    (regs, sregs)
}

fn linux64_state(rip: u64) -> (Regs, Sregs) {
    let regs = Regs {
        rip,
        rsi: ZERO_PAGE,
        rsp: BOOT_STACK,
        rbp: BOOT_STACK,
        rflags: 2,
        ..Default::default()
    };
    let sregs = Sregs {
        cs: seg(SEL_CODE64),
        cr0: CR0_PE | CR0_ET | CR0_PG,
        cr3: PML4,
        cr4: CR4_PAE,
        efer: EFER_LME | EFER_LMA,
        ..base_sregs()
    };
    (regs, sregs)
}

/// Identity-maps the first GiB with 2 MiB pages: enough for the kernel, zero page and command
/// line; the kernel builds its own page tables right away.
fn write_page_tables<M: GuestMemoryBackend>(mem: &M, ram_end: u64) -> Result<(), LoadError> {
    const PRESENT_RW: u64 = 0x3;
    const PS: u64 = 0x80;
    write_checked(mem, PML4, &(PDPT | PRESENT_RW).to_le_bytes(), ram_end)?;
    write_checked(mem, PDPT, &(PD | PRESENT_RW).to_le_bytes(), ram_end)?;
    let pd: Vec<u8> = (0..512u64)
        .flat_map(|i| ((i << 21) | PRESENT_RW | PS).to_le_bytes())
        .collect();
    write_checked(mem, PD, &pd, ram_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

    #[test]
    fn e820_reserves_bios_and_ecam_and_splits_high_ram() {
        let m = e820_map(4 << 30);
        let ram: u64 = m
            .iter()
            .filter(|r| r.kind == E820_RAM)
            .map(|r| r.size)
            .sum();
        assert_eq!(ram, (4 << 30) - (HIMEM_START - EBDA_START));
        assert!(m
            .iter()
            .any(|r| r.addr == ECAM_START && r.kind == E820_RESERVED));
        assert!(m
            .iter()
            .any(|r| r.addr == HIGH_RAM_START && r.size == 1 << 30));
        assert_eq!(
            ram_regions(4 << 30),
            vec![(0, LOW_RAM_END), (HIGH_RAM_START, 1 << 30)]
        );
        assert_eq!(ram_regions(64 << 20), vec![(0, 64 << 20)]);
    }

    #[test]
    fn initrd_goes_high_and_refuses_overlap() {
        assert_eq!(
            place_initrd(0x20_0000, 64 << 20, u64::MAX, 0x1800).unwrap(),
            (64 << 20) - 0x2000
        );
        assert!(place_initrd(0x20_0000, 16 << 20, u64::MAX, 32 << 20).is_err());
        assert!(place_initrd(60 << 20, 64 << 20, u64::MAX, 8 << 20).is_err());
    }

    #[test]
    fn pvh_start_info_lists_memory_and_initrd() {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let k = LoadedKernel {
            entry: Entry::Pvh { rip: 0x10_0000 },
            end: 0x20_0000,
            needs_long_mode: false,
        };
        let info = BootInfo {
            mem_size: 64 << 20,
            cmdline_len: 1,
            initrd: Some((0x300_0000, 0x1000)),
            rsdp: ACPI_START,
        };
        let (regs, sregs) = write_boot_params(&mem, &k, &info).unwrap();
        assert_eq!(regs.rbx, PVH_INFO);
        assert!(sregs.cs.db && !sregs.cs.l);
        let mut si = [0u8; 56];
        mem.read_slice(&mut si, GuestAddress(PVH_INFO)).unwrap();
        assert_eq!(
            u32::from_le_bytes(si[0..4].try_into().unwrap()),
            0x336e_c578
        );
        assert_eq!(u32::from_le_bytes(si[12..16].try_into().unwrap()), 1);
        assert_eq!(
            u64::from_le_bytes(si[32..40].try_into().unwrap()),
            ACPI_START
        );
        assert_eq!(u32::from_le_bytes(si[48..52].try_into().unwrap()), 4);
    }
}
