//! A bare machine for tests: RAM, a CPU in a chosen mode, code loaded at a fixed address.
//! Used by the instruction tests and the differential tests against KVM.

use crate::cpu::run::Stop;
use crate::cpu::{cr, Cpu, NoPlatform, Seg};
use std::sync::atomic::AtomicBool;
use vireo_hypervisor::Segment;

/// Guest RAM size of a test machine.
pub const RAM: usize = 16 << 20;
/// Where the code goes.
pub const CODE: u64 = 0x10_0000;
/// Initial stack pointer (the stack grows down from here).
pub const STACK: u64 = 0x8_0000;
/// A scratch data area tests may use.
pub const DATA: u64 = 0x20_0000;
/// 64-bit mode page tables: PML4 here, PDPT at +0x1000, PD at +0x2000 (identity, 2 MiB pages,
/// first 1 GiB).
pub const PML4: u64 = 0x1000;

pub struct TestMachine {
    pub cpu: Cpu,
    ram: Box<[u8]>,
}

fn flat(selector: u16, type_: u8, l: bool, db: bool) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_,
        present: true,
        dpl: 0,
        db,
        s: true,
        l,
        g: true,
        avl: false,
        unusable: false,
    }
}

impl TestMachine {
    fn new() -> Self {
        let mut ram = vec![0u8; RAM].into_boxed_slice();
        let mut cpu = Cpu::new(Box::new(NoPlatform::default()));
        // SAFETY: `ram` is owned by the machine and outlives the CPU's use of it; the boxed
        // slice never moves its heap allocation.
        unsafe { cpu.mem.add_region(0, ram.as_mut_ptr(), RAM as u64) };
        cpu.rip = CODE;
        cpu.gpr[4] = STACK;
        TestMachine { cpu, ram }
    }

    /// Flat 32-bit protected mode, paging off.
    pub fn new32(code: &[u8]) -> Self {
        let mut m = Self::new();
        m.cpu.cr0 = cr::CR0_PE | cr::CR0_ET | cr::CR0_NE;
        m.cpu.seg = [flat(0x18, 3, false, true); 6];
        m.cpu.seg[Seg::Cs as usize] = flat(0x08, 0xb, false, true);
        m.cpu.update_mode();
        m.load(CODE, code);
        m
    }

    /// 64-bit long mode with the first GiB identity-mapped.
    pub fn new64(code: &[u8]) -> Self {
        let mut m = Self::new();
        let w = |m: &mut Self, a: u64, v: u64| m.load(a, &v.to_le_bytes());
        w(&mut m, PML4, (PML4 + 0x1000) | 3);
        w(&mut m, PML4 + 0x1000, (PML4 + 0x2000) | 3);
        for i in 0..512u64 {
            w(&mut m, PML4 + 0x2000 + i * 8, (i << 21) | 0x83);
        }
        m.cpu.cr3 = PML4;
        m.cpu.cr4 = cr::CR4_PAE | cr::CR4_OSFXSR | cr::CR4_OSXMMEXCPT;
        m.cpu.efer = cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE | cr::EFER_SCE;
        m.cpu.cr0 = cr::CR0_PE | cr::CR0_PG | cr::CR0_ET | cr::CR0_NE | cr::CR0_WP | cr::CR0_MP;
        m.cpu.seg = [flat(0x18, 3, false, true); 6];
        m.cpu.seg[Seg::Cs as usize] = flat(0x10, 0xb, true, false);
        m.cpu.update_mode();
        m.load(CODE, code);
        m
    }

    /// Copies bytes into guest RAM.
    pub fn load(&mut self, addr: u64, bytes: &[u8]) {
        let a = addr as usize;
        self.ram[a..a + bytes.len()].copy_from_slice(bytes);
        self.cpu.flush_code();
    }

    /// Writes guest RAM behind the CPU's back, as a device's DMA does: decoded code is kept.
    pub fn write_behind(&mut self, addr: u64, bytes: &[u8]) {
        let a = addr as usize;
        self.ram[a..a + bytes.len()].copy_from_slice(bytes);
    }

    pub fn ram(&self) -> &[u8] {
        &self.ram
    }

    pub fn read_u64(&self, addr: u64) -> u64 {
        let a = addr as usize;
        u64::from_le_bytes(self.ram[a..a + 8].try_into().unwrap_or([0; 8]))
    }

    /// A 64-bit machine for the differential tests of the fast forms and the translation
    /// tier: `mem` at DATA, the registers and arithmetic flags given, a GS base of 0x100 and,
    /// if `warm`, TLB entries for the data and stack pages (so memory forms take their fast
    /// path).
    pub fn with_state(code: &[u8], regs: &[u64; 16], mem: &[u8], flags: u64, warm: bool) -> Self {
        let mut m = TestMachine::new64(code);
        m.load(DATA, mem);
        m.cpu.gpr = *regs;
        m.cpu.flags.set(flags);
        m.cpu.seg[crate::cpu::Seg::Gs as usize].base = 0x100;
        if warm {
            for page in [DATA, STACK - 0x1000] {
                m.cpu
                    .translate(page, crate::cpu::mem::Access::Write, false)
                    .expect("the test's pages are mapped");
            }
        }
        m
    }

    /// Runs until HLT (or a shutdown, or an I/O exit, or `max` instructions).
    pub fn run(&mut self, max: u64) -> Stop {
        let kick = AtomicBool::new(false);
        let attention = AtomicBool::new(false);
        self.cpu.run(max, &kick, &attention)
    }
}

/// A tiny deterministic generator (xorshift) for randomized differential tests, with
/// edge-biased values.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    // Not an iterator: it never ends, and the tests call it by this short name.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// Zero, all ones, sign and 32-bit boundaries, or anything.
    pub fn value(&mut self) -> u64 {
        match self.below(6) {
            0 => 0,
            1 => u64::MAX,
            2 => 0x8000_0000_0000_0000,
            3 => 0x7fff_ffff,
            4 => 0x8000_0000,
            _ => self.next(),
        }
    }
}
