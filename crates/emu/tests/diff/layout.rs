//! The guest both sides run: flat 32-bit protected mode, paging off, the emulator test machine's
//! addresses (code at CODE, stack below STACK, a data page at DATA), plus a GDT and an IDT whose
//! 32 exception vectors each lead to a stub `out (VEC_PORT + vector), al` so that an exception
//! ends the run with an I/O exit naming the vector.

pub use vireo_emu::testutil::{CODE, DATA, STACK};

pub const RAM: usize = vireo_emu::testutil::RAM;
pub const TSS: u64 = 0x0;
pub const GDT: u64 = 0x800;
pub const IDT: u64 = 0x1000;
pub const STUBS: u64 = 0x2000;
/// The port of the `out` that ends every sequence.
pub const END_PORT: u16 = 0xe9;
/// Exception stubs write to VEC_PORT + vector (0xc0..0xdf: nothing in KVM's kernel lives there).
pub const VEC_PORT: u16 = 0xc0;
pub const DATA_SIZE: usize = 0x1000;
/// The compared stack window: [STACK - STACK_BELOW, STACK + STACK_ABOVE).
pub const STACK_BELOW: u64 = 0x400;
pub const STACK_ABOVE: u64 = 0x100;
/// Where EBP points (the base register of generated memory operands): the data page's middle.
pub const EBP_BASE: u32 = (DATA + 0x800) as u32;
pub const END_BYTES: [u8; 2] = [0xe6, END_PORT as u8];

pub const SEL_CODE: u16 = 0x08;
pub const SEL_DATA: u16 = 0x18;
pub const SEL_TSS: u16 = 0x20;
pub const GDT_ENTRIES: [u64; 5] = [
    0,
    0x00cf_9b00_0000_ffff, // flat 32-bit code
    0x00af_9b00_0000_ffff, // flat 64-bit code (unused)
    0x00cf_9300_0000_ffff, // flat data
    0x0000_8b00_0000_0067, // 32-bit busy TSS at 0: VMX requires a usable TR
];

pub const CR0: u64 = 0x33; // PE | MP | ET | NE
pub const CR4: u64 = (1 << 9) | (1 << 10); // OSFXSR | OSXMMEXCPT

/// Vectors that push an error code.
pub fn has_error_code(v: u8) -> bool {
    matches!(v, 8 | 10..=14 | 17)
}

/// The fixed parts of guest memory: (address, bytes).
pub fn fixed_image() -> Vec<(u64, Vec<u8>)> {
    let gdt: Vec<u8> = GDT_ENTRIES.iter().flat_map(|e| e.to_le_bytes()).collect();
    let mut idt = Vec::new();
    let mut stubs = Vec::new();
    for v in 0..32u64 {
        let off = STUBS + v * 8;
        // 32-bit interrupt gate, present, DPL 0.
        let gate: u64 =
            (off & 0xffff) | (u64::from(SEL_CODE) << 16) | (0x8e00u64 << 32) | ((off >> 16) << 48);
        idt.extend_from_slice(&gate.to_le_bytes());
        let mut stub = vec![0xe6, VEC_PORT as u8 + v as u8, 0xeb, 0xfe];
        stub.resize(8, 0xcc);
        stubs.extend(stub);
    }
    vec![(GDT, gdt), (IDT, idt), (STUBS, stubs), (TSS, vec![0; 0x68])]
}

/// Architectural state the harness sets and compares.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    /// EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI.
    pub gpr: [u32; 8],
    pub eflags: u32,
    pub xmm: [u128; 8],
    pub mxcsr: u32,
    pub data: Vec<u8>,
    /// The stack window.
    pub stack: Vec<u8>,
}

/// One test case: code (without the final `out`), the initial state, and per instruction its
/// offset in the code and which flags are undefined on entry to it (the generator's analysis).
#[derive(Clone)]
pub struct Case {
    pub code: Vec<u8>,
    pub init: State,
    /// (offset in `code`, undefined-flags mask before this instruction).
    pub insns: Vec<(usize, u32)>,
    /// Flags undefined at the end.
    pub undef_end: u32,
    /// Index in `insns` where each group starts (groups are set-up plus instruction; jumps
    /// never land inside one, and minimization drops whole groups).
    pub groups: Vec<usize>,
}

impl Case {
    /// The flags that may differ when execution stops at `eip`.
    pub fn undef_at(&self, eip: u32) -> u32 {
        let off = (eip as u64).wrapping_sub(CODE) as usize;
        self.insns
            .iter()
            .find(|(o, _)| *o == off)
            .map(|(_, u)| *u)
            .unwrap_or(self.undef_end)
    }
}

/// How a run ended.
#[derive(Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Reached the final `out`.
    Done(State),
    /// An exception at `eip`; `state` is the state before the faulting instruction. `vector` is
    /// None when the emulator shut down without delivering it (delivery not implemented yet).
    Fault {
        vector: Option<u8>,
        eip: u32,
        state: State,
    },
    /// Anything else (unexpected exit, internal error, budget exhausted).
    Other(String),
}

/// Reads a guest state's memory windows through `read(addr, len)`.
pub fn read_windows(read: &dyn Fn(u64, usize) -> Vec<u8>) -> (Vec<u8>, Vec<u8>) {
    (
        read(DATA, DATA_SIZE),
        read(STACK - STACK_BELOW, (STACK_BELOW + STACK_ABOVE) as usize),
    )
}

/// Turns a stop at an exception stub (port VEC_PORT + v) into the state at the fault: ESP, EIP
/// and EFLAGS from the exception frame, as they were before the faulting instruction.
pub fn fault_from_stub(vector: u8, mut st: State, read: &dyn Fn(u64, usize) -> Vec<u8>) -> Outcome {
    let esp = u64::from(st.gpr[4]);
    let ec = if has_error_code(vector) { 4 } else { 0 };
    let frame = read(esp + ec, 12);
    let eip = u32::from_le_bytes([frame[0], frame[1], frame[2], frame[3]]);
    let eflags = u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]);
    st.gpr[4] = (esp + ec + 12) as u32;
    st.eflags = eflags;
    // The frame itself lies below the old ESP: not part of the compared state.
    let lo = STACK - STACK_BELOW;
    for a in esp..esp + ec + 12 {
        if a >= lo && a < STACK + STACK_ABOVE {
            st.stack[(a - lo) as usize] = 0;
        }
    }
    Outcome::Fault {
        vector: Some(vector),
        eip,
        state: st,
    }
}
