//! The emulated x86-64 CPU (seed 2.1, full virtualization): architectural state, the memory
//! path (segmentation, paging, TLB), a cache of decoded instructions, and one handler per
//! instruction.
//!
//! Instruction handlers live in `exec/`, grouped by kind. They all have the [`Handler`]
//! signature and reach the machine through the methods of [`Cpu`]: operand access
//! (`operand.rs`), memory (`mem.rs`), ports and MMIO (`io.rs`), exceptions (`interrupt.rs`).

pub mod blocks;
pub mod cpuid;
pub mod dma;
pub mod exec;
pub mod fast;
pub mod flags;
pub mod fpu;
pub mod interrupt;
pub mod io;
pub mod jit;
pub mod mem;
pub mod msr;
pub mod operand;
pub mod run;
pub mod seg;

use flags::Flags;
use iced_x86::{Instruction, Register};
use vireo_hypervisor::{CpuidEntry, Segment, Table};

/// Control register bits.
pub mod cr {
    pub const CR0_PE: u64 = 1 << 0;
    pub const CR0_MP: u64 = 1 << 1;
    pub const CR0_EM: u64 = 1 << 2;
    pub const CR0_TS: u64 = 1 << 3;
    pub const CR0_ET: u64 = 1 << 4;
    pub const CR0_NE: u64 = 1 << 5;
    pub const CR0_WP: u64 = 1 << 16;
    pub const CR0_AM: u64 = 1 << 18;
    pub const CR0_NW: u64 = 1 << 29;
    pub const CR0_CD: u64 = 1 << 30;
    pub const CR0_PG: u64 = 1 << 31;
    pub const CR4_VME: u64 = 1 << 0;
    pub const CR4_PVI: u64 = 1 << 1;
    pub const CR4_TSD: u64 = 1 << 2;
    pub const CR4_DE: u64 = 1 << 3;
    pub const CR4_PSE: u64 = 1 << 4;
    pub const CR4_PAE: u64 = 1 << 5;
    pub const CR4_MCE: u64 = 1 << 6;
    pub const CR4_PGE: u64 = 1 << 7;
    pub const CR4_PCE: u64 = 1 << 8;
    pub const CR4_OSFXSR: u64 = 1 << 9;
    pub const CR4_OSXMMEXCPT: u64 = 1 << 10;
    pub const CR4_UMIP: u64 = 1 << 11;
    pub const CR4_FSGSBASE: u64 = 1 << 16;
    pub const CR4_PCIDE: u64 = 1 << 17;
    pub const CR4_OSXSAVE: u64 = 1 << 18;
    pub const CR4_SMEP: u64 = 1 << 20;
    pub const CR4_SMAP: u64 = 1 << 21;
    pub const EFER_SCE: u64 = 1 << 0;
    pub const EFER_LME: u64 = 1 << 8;
    pub const EFER_LMA: u64 = 1 << 10;
    pub const EFER_NXE: u64 = 1 << 11;
}

/// A segment register, numbered as in the x86 encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Seg {
    Es = 0,
    Cs = 1,
    Ss = 2,
    Ds = 3,
    Fs = 4,
    Gs = 5,
}

impl Seg {
    #[inline]
    pub fn from_iced(r: Register) -> Seg {
        match r {
            Register::ES => Seg::Es,
            Register::CS => Seg::Cs,
            Register::SS => Seg::Ss,
            Register::FS => Seg::Fs,
            Register::GS => Seg::Gs,
            _ => Seg::Ds,
        }
    }
}

/// An exception to deliver to the guest through its IDT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    pub error: Option<u32>,
}

impl Exception {
    pub const DE: u8 = 0;
    pub const DB: u8 = 1;
    pub const NMI: u8 = 2;
    pub const BP: u8 = 3;
    pub const OF: u8 = 4;
    pub const BR: u8 = 5;
    pub const UD: u8 = 6;
    pub const NM: u8 = 7;
    pub const DF: u8 = 8;
    pub const TS: u8 = 10;
    pub const NP: u8 = 11;
    pub const SS: u8 = 12;
    pub const GP: u8 = 13;
    pub const PF: u8 = 14;
    pub const MF: u8 = 16;
    pub const AC: u8 = 17;
    pub const MC: u8 = 18;
    pub const XM: u8 = 19;

    pub const fn new(vector: u8) -> Self {
        Exception {
            vector,
            error: None,
        }
    }
    pub const fn with_error(vector: u8, error: u32) -> Self {
        Exception {
            vector,
            error: Some(error),
        }
    }
    pub const fn ud() -> Self {
        Self::new(Self::UD)
    }
    pub const fn de() -> Self {
        Self::new(Self::DE)
    }
    pub const fn nm() -> Self {
        Self::new(Self::NM)
    }
    pub const fn gp(error: u32) -> Self {
        Self::with_error(Self::GP, error)
    }
    pub const fn gp0() -> Self {
        Self::with_error(Self::GP, 0)
    }
    pub const fn ss(error: u32) -> Self {
        Self::with_error(Self::SS, error)
    }
    pub const fn np(error: u32) -> Self {
        Self::with_error(Self::NP, error)
    }
    pub const fn ts(error: u32) -> Self {
        Self::with_error(Self::TS, error)
    }
}

/// Why an instruction did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// The instruction raised an exception; the CPU state is as before the instruction
    /// (faults) and the run loop delivers it.
    Ex(Exception),
    /// The instruction needs data from the VMM (a port or MMIO read). It was abandoned
    /// without changing any state and runs again once the data is there.
    Exit,
    /// The guest shut the CPU down (triple fault).
    Shutdown,
}

impl From<Exception> for Fault {
    #[inline]
    fn from(e: Exception) -> Self {
        Fault::Ex(e)
    }
}

pub type R<T = ()> = Result<T, Fault>;

/// An instruction handler. `cpu.next_rip` holds the address of the next instruction when it is
/// called; control transfers change it. State changes must come after every access that can
/// fault or exit, so that an abandoned instruction can run again.
pub type Handler = fn(&mut Cpu, &Instruction) -> R;

/// What the CPU reaches without leaving `run`: the interrupt controllers and timers of the
/// emulated platform, which KVM would provide in the kernel.
pub trait Platform: Send {
    /// A port read; false if no platform device is there (the VMM's buses get it).
    fn pio_read(&mut self, port: u16, data: &mut [u8]) -> bool;
    fn pio_write(&mut self, port: u16, data: &[u8]) -> bool;
    /// A physical-address read outside RAM; false if it belongs to the VMM.
    fn mmio_read(&mut self, addr: u64, data: &mut [u8]) -> bool;
    fn mmio_write(&mut self, addr: u64, data: &[u8]) -> bool;
    /// Platform MSRs (APIC base, TSC deadline, x2APIC registers). None: not a platform MSR.
    fn rdmsr(&mut self, msr: u32) -> Option<u64>;
    /// Some(true): written; Some(false): a platform MSR but the value is invalid (#GP).
    fn wrmsr(&mut self, msr: u32, value: u64) -> Option<bool>;
    /// Whether an external interrupt is waiting for the CPU.
    fn interrupt_pending(&mut self) -> bool;
    /// Takes the highest-priority pending interrupt (the INTA cycle) and returns its vector.
    fn ack_interrupt(&mut self) -> Option<u8>;
    /// CR8: the task-priority register of the local APIC (bits 7:4 of TPR).
    fn cr8(&mut self) -> u64;
    fn set_cr8(&mut self, value: u64);
    /// Host monotonic time in nanoseconds since the VM started: the clock every timer and
    /// the TSC derive from.
    fn now_ns(&self) -> u64;
    /// Fires the timers that are due; returns the next deadline (in `now_ns` time), if any.
    fn poll_timers(&mut self) -> Option<u64>;
}

/// A platform with no devices at all, for unit tests and for running code fragments.
pub struct NoPlatform {
    start: std::time::Instant,
}

impl Default for NoPlatform {
    fn default() -> Self {
        NoPlatform {
            start: std::time::Instant::now(),
        }
    }
}

impl Platform for NoPlatform {
    fn pio_read(&mut self, _: u16, _: &mut [u8]) -> bool {
        false
    }
    fn pio_write(&mut self, _: u16, _: &[u8]) -> bool {
        false
    }
    fn mmio_read(&mut self, _: u64, _: &mut [u8]) -> bool {
        false
    }
    fn mmio_write(&mut self, _: u64, _: &[u8]) -> bool {
        false
    }
    fn rdmsr(&mut self, _: u32) -> Option<u64> {
        None
    }
    fn wrmsr(&mut self, _: u32, _: u64) -> Option<bool> {
        None
    }
    fn interrupt_pending(&mut self) -> bool {
        false
    }
    fn ack_interrupt(&mut self) -> Option<u8> {
        None
    }
    fn cr8(&mut self) -> u64 {
        0
    }
    fn set_cr8(&mut self, _: u64) {}
    fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }
    fn poll_timers(&mut self) -> Option<u64> {
        None
    }
}

/// The guest TSC ticks at this rate (reported in CPUID leaf 0x15 so Linux needs no
/// calibration): one tick per nanosecond of host time.
pub const TSC_HZ: u64 = 1_000_000_000;

pub struct Cpu {
    /// RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI, R8..R15 (encoding order).
    pub gpr: [u64; 16],
    pub rip: u64,
    /// The address of the next instruction; control transfers set it.
    pub next_rip: u64,
    pub flags: Flags,
    /// ES, CS, SS, DS, FS, GS with their descriptor caches.
    pub seg: [Segment; 6],
    pub ldtr: Segment,
    pub tr: Segment,
    pub gdtr: Table,
    pub idtr: Table,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub xcr0: u64,
    pub dr: [u64; 8],
    pub msr: msr::Msrs,
    pub fpu: fpu::FpuState,
    pub cpuid: Vec<CpuidEntry>,
    pub mem: mem::Mmu,
    pub platform: Box<dyn Platform>,
    pub io: io::IoState,
    /// Current privilege level.
    pub cpl: u8,
    /// Cached from CR0, EFER and CS: the code is 64-bit (long mode, CS.L).
    pub long64: bool,
    /// Cached: the default operand/address size of the code segment in bits (16, 32, 64).
    pub code_bits: u32,
    /// Cached: SS.B, the stack is 32-bit (outside 64-bit mode).
    pub stack32: bool,
    pub halted: bool,
    /// Interrupts are blocked until after the next instruction (STI, MOV SS, POP SS).
    pub int_shadow: bool,
    /// Set by handlers that change how code is fetched or decoded (mode switches, paging,
    /// self-modifying code): the run loop leaves the current block.
    pub end_block: bool,
    /// Instructions executed.
    pub icount: u64,
    /// Added to the host clock to form the guest TSC (written through IA32_TSC).
    pub tsc_offset: i64,
    /// Set while an exception is being delivered, to detect double and triple faults.
    pub delivering: Option<u8>,
    pub blocks: blocks::BlockCache,
    /// The translation tier for hot blocks (`jit/`).
    pub jit: jit::Tier,
    /// Writes other threads (devices) made into guest RAM, applied before each block.
    pub device_writes: std::sync::Arc<dma::DeviceWrites>,
}

impl Cpu {
    pub fn new(platform: Box<dyn Platform>) -> Self {
        let mut cpu = Cpu {
            gpr: [0; 16],
            rip: 0xfff0,
            next_rip: 0,
            flags: Flags::default(),
            seg: [Segment::default(); 6],
            ldtr: Segment::default(),
            tr: Segment::default(),
            gdtr: Table::default(),
            idtr: Table {
                base: 0,
                limit: 0x3ff,
            },
            cr0: cr::CR0_ET | cr::CR0_NW | cr::CR0_CD,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            efer: 0,
            xcr0: 1,
            dr: [0, 0, 0, 0, 0xffff_0ff0, 0x400, 0xffff_0ff0, 0x400],
            msr: msr::Msrs::default(),
            fpu: fpu::FpuState::default(),
            cpuid: Vec::new(),
            mem: mem::Mmu::new(),
            platform,
            io: io::IoState::default(),
            cpl: 0,
            long64: false,
            code_bits: 16,
            stack32: false,
            halted: false,
            int_shadow: false,
            end_block: false,
            icount: 0,
            tsc_offset: 0,
            delivering: None,
            blocks: blocks::BlockCache::default(),
            jit: jit::Tier::default(),
            device_writes: Default::default(),
        };
        // Real-mode reset state: every segment is a 64 KiB data/code segment.
        for (i, s) in cpu.seg.iter_mut().enumerate() {
            *s = Segment {
                base: 0,
                limit: 0xffff,
                selector: 0,
                type_: if i == Seg::Cs as usize { 0xb } else { 0x3 },
                present: true,
                s: true,
                ..Default::default()
            };
        }
        cpu.seg[Seg::Cs as usize].selector = 0xf000;
        cpu.seg[Seg::Cs as usize].base = 0xffff_0000;
        cpu.update_mode();
        cpu
    }

    /// Recomputes the cached mode bits after CR0, EFER or CS change.
    pub fn update_mode(&mut self) {
        let pe = self.cr0 & cr::CR0_PE != 0;
        let lma = self.efer & cr::EFER_LMA != 0;
        let cs = &self.seg[Seg::Cs as usize];
        self.long64 = lma && cs.l;
        self.code_bits = if self.long64 {
            64
        } else if pe && cs.db {
            32
        } else {
            16
        };
        self.stack32 = pe && self.seg[Seg::Ss as usize].db;
        self.cpl = if !pe { 0 } else { (cs.selector & 3) as u8 };
        self.end_block = true;
    }

    /// Whether paging is on.
    #[inline]
    pub fn paging(&self) -> bool {
        self.cr0 & cr::CR0_PG != 0
    }

    /// The guest's time-stamp counter.
    #[inline]
    pub fn tsc(&self) -> u64 {
        // TSC_HZ is 1 GHz: one tick per nanosecond.
        self.platform.now_ns().wrapping_add(self.tsc_offset as u64)
    }
}
