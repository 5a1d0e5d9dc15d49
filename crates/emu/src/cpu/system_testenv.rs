//! Shared test fixtures for the system tests: a Linux-like GDT, a 64-bit TSS, an IDT built
//! in test memory, and user-accessible page tables.

#![allow(dead_code)]

use crate::cpu::{cr, Seg};
use crate::testutil::{TestMachine, PML4};
use vireo_hypervisor::{Segment, Table};

pub const GDT: u64 = 0x5000;
pub const IDT: u64 = 0x6000;
pub const TSS: u64 = 0x8000;
/// Handler code, one 0x100-byte slot per handler.
pub const HANDLERS: u64 = 0x30_0000;
/// Ring-0 stack (TSS RSP0) and IST1.
pub const KSTACK: u64 = 0x9_0000;
pub const IST1: u64 = 0xa_0000;
pub const USER_CODE: u64 = 0x40_0000;
pub const USER_STACK: u64 = 0x50_0000;

pub const KCODE32: u16 = 0x08;
pub const KCODE: u16 = 0x10;
pub const KDATA: u16 = 0x18;
pub const UCODE32: u16 = 0x23;
pub const UDATA: u16 = 0x2b;
pub const UCODE: u16 = 0x33;
pub const TSS_SEL: u16 = 0x38;

pub const GDT_ENTRIES: [u64; 7] = [
    0,
    0x00cf_9b00_0000_ffff, // 0x08 32-bit kernel code
    0x00af_9b00_0000_ffff, // 0x10 64-bit kernel code
    0x00cf_9300_0000_ffff, // 0x18 kernel data
    0x00cf_fb00_0000_ffff, // 0x20 32-bit user code
    0x00cf_f300_0000_ffff, // 0x28 user data
    0x00af_fb00_0000_ffff, // 0x30 64-bit user code
];

pub fn w64(m: &mut TestMachine, addr: u64, v: u64) {
    m.load(addr, &v.to_le_bytes());
}

/// Writes the GDT (with a 64-bit TSS descriptor at 0x38) and points GDTR at it.
pub fn setup_gdt(m: &mut TestMachine) {
    for (i, e) in GDT_ENTRIES.iter().enumerate() {
        w64(m, GDT + i as u64 * 8, *e);
    }
    let tss_lo = 0x67 | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | (((TSS >> 24) & 0xff) << 56);
    w64(m, GDT + 0x38, tss_lo);
    w64(m, GDT + 0x40, TSS >> 32);
    m.cpu.gdtr = Table {
        base: GDT,
        limit: 0x47,
    };
}

/// A 64-bit environment: GDT, TSS (RSP0 = KSTACK, IST1 = IST1, loaded and busy), empty IDT.
pub fn setup64(m: &mut TestMachine) {
    setup_gdt(m);
    w64(m, TSS + 4, KSTACK);
    w64(m, TSS + 0x24, IST1);
    m.cpu.tr = Segment {
        base: TSS,
        limit: 0x67,
        selector: TSS_SEL,
        type_: 0xb,
        present: true,
        ..Default::default()
    };
    m.cpu.idtr = Table {
        base: IDT,
        limit: 0xfff,
    };
}

/// A 64-bit interrupt (or trap) gate for `vector` to `handler` in the kernel code segment.
pub fn gate64(m: &mut TestMachine, vector: u8, handler: u64, dpl: u64, ist: u64, trap: bool) {
    let ty: u64 = if trap { 0xf } else { 0xe };
    let lo = (handler & 0xffff)
        | (u64::from(KCODE) << 16)
        | (ist << 32)
        | (ty << 40)
        | (dpl << 45)
        | (1 << 47)
        | (((handler >> 16) & 0xffff) << 48);
    let at = IDT + u64::from(vector) * 16;
    w64(m, at, lo);
    w64(m, at + 8, handler >> 32);
}

/// Loads handler code for slot `n` and returns its address.
pub fn handler(m: &mut TestMachine, n: u64, code: &[u8]) -> u64 {
    let at = HANDLERS + n * 0x100;
    m.load(at, code);
    at
}

/// Makes the identity map of the first GiB user-accessible.
pub fn user_pages(m: &mut TestMachine) {
    w64(m, PML4, (PML4 + 0x1000) | 7);
    w64(m, PML4 + 0x1000, (PML4 + 0x2000) | 7);
    for i in 0..512u64 {
        w64(m, PML4 + 0x2000 + i * 8, (i << 21) | 0x87);
    }
    m.cpu.mem.flush_all();
}

/// Switches the CPU to ring 3 64-bit code at USER_CODE with the user stack.
pub fn enter_user64(m: &mut TestMachine) {
    let code = Segment::from_gdt_entry(UCODE, GDT_ENTRIES[6]);
    let data = Segment::from_gdt_entry(UDATA, GDT_ENTRIES[5]);
    m.cpu.seg = [data; 6];
    m.cpu.seg[Seg::Cs as usize] = code;
    m.cpu.rip = USER_CODE;
    m.cpu.gpr[4] = USER_STACK;
    m.cpu.update_mode();
}

/// Builds the 64-bit identity page tables (as `new64` does) for a 32-bit machine.
pub fn page_tables(m: &mut TestMachine) {
    w64(m, PML4, (PML4 + 0x1000) | 3);
    w64(m, PML4 + 0x1000, (PML4 + 0x2000) | 3);
    for i in 0..512u64 {
        w64(m, PML4 + 0x2000 + i * 8, (i << 21) | 0x83);
    }
}

/// The bits of CR0 a 64-bit test machine runs with.
pub const CR0_LONG: u64 = cr::CR0_PE | cr::CR0_PG | cr::CR0_ET | cr::CR0_NE;

/// Assembles `f`'s code at `ip`.
pub fn asm(
    bits: u32,
    ip: u64,
    f: impl FnOnce(&mut iced_x86::code_asm::CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Vec<u8> {
    let mut a = iced_x86::code_asm::CodeAssembler::new(bits).expect("assembler");
    f(&mut a).expect("instructions");
    a.assemble(ip).expect("assemble")
}
