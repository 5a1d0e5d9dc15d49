//! Pre-digested forms of the most frequent instructions, executed inline by the block loop.
//!
//! Register moves, ALU operations on registers, LEA, simple 64-bit loads and stores and
//! direct branches make up most of what a kernel and compiled user code execute. For them
//! the decoder records the register numbers, immediates and targets once, and the block loop
//! runs them without an indirect call or any iced-x86 operand decoding. Every other form
//! (and every corner of these: segment overrides, 16/8-bit operands, non-canonical targets)
//! keeps its general handler in `exec/`, which stays the reference for their semantics.

use super::flags::cc_number;
use super::mem::{read_host, write_host, Access};
use super::seg::canonical;
use super::{Cpu, Seg};
use iced_x86::{Code, FlowControl, Instruction, Mnemonic, OpKind, Register};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alu {
    Add,
    Or,
    Adc,
    Sbb,
    And,
    Sub,
    Xor,
    Cmp,
    Test,
}

/// A memory operand `[base + index << shift + disp]` with 64-bit registers (`NONE` = absent);
/// RIP-relative operands become an absolute `disp`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    seg: Seg,
    base: u8,
    index: u8,
    shift: u8,
    disp: u64,
}

const NONE: u8 = 0xff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Use the general handler.
    No,
    /// `mov` between registers; `w64` false means 32-bit (zero-extends).
    MovRR {
        w64: bool,
        d: u8,
        s: u8,
    },
    /// `mov reg, imm` with the value already extended to the full register.
    MovRI {
        d: u8,
        v: u64,
    },
    AluRR {
        op: Alu,
        w64: bool,
        d: u8,
        s: u8,
    },
    AluRI {
        op: Alu,
        w64: bool,
        d: u8,
        v: u64,
    },
    IncDec {
        dec: bool,
        w64: bool,
        d: u8,
    },
    Lea {
        d: u8,
        a: Addr,
    },
    /// `mov reg, [mem]` / `mov [mem], reg` of 4 or 8 bytes in 64-bit code, DS/SS segment.
    Load {
        size: u8,
        d: u8,
        a: Addr,
    },
    Store {
        size: u8,
        s: u8,
        a: Addr,
    },
    Jcc {
        cc: u8,
        target: u64,
    },
    Jmp {
        target: u64,
    },
    /// Two-operand `imul reg, reg`.
    Imul {
        w64: bool,
        d: u8,
        s: u8,
    },
    /// SHL/SHR/SAR of a register by a non-zero immediate count.
    Shift {
        op: u8,
        w64: bool,
        d: u8,
        count: u8,
    },
    Cmov {
        cc: u8,
        w64: bool,
        d: u8,
        s: u8,
    },
    /// One-operand `mul r64` / `mul r32`: RDX:RAX = RAX * reg.
    Mul {
        w64: bool,
        s: u8,
    },
    /// `setcc r8` for the low byte of a register (not AH..BH).
    Setcc {
        cc: u8,
        d: u8,
    },
    /// `movzx r32/r64, r8/r16` (zero-extends into the full register).
    MovzxRR {
        size: u8,
        d: u8,
        s: u8,
    },
    /// `movsxd r64, r32`.
    Movsxd {
        d: u8,
        s: u8,
    },
    /// `push r64` / `pop r64` in 64-bit code.
    Push {
        s: u8,
    },
    Pop {
        d: u8,
    },
    /// `call rel32` / `ret` in 64-bit code.
    Call {
        target: u64,
    },
    Ret,
    /// `op reg, [mem]`.
    AluRM {
        op: Alu,
        w64: bool,
        d: u8,
        a: Addr,
    },
    /// `op [mem], reg` and `op [mem], imm` (read-modify-write unless CMP/TEST).
    AluMR {
        op: Alu,
        w64: bool,
        s: u8,
        a: Addr,
    },
    AluMI {
        op: Alu,
        w64: bool,
        v: u64,
        a: Addr,
    },
    /// `movzx r32/r64, byte/word [mem]`.
    MovzxLoad {
        size: u8,
        d: u8,
        a: Addr,
    },
    /// `mov [mem], imm` of 4 or 8 bytes.
    StoreImm {
        size: u8,
        v: u64,
        a: Addr,
    },
}

/// The GPR number of a 32- or 64-bit register of the wanted width.
fn gpr(r: Register, w64: bool) -> Option<u8> {
    if w64 && r.is_gpr64() {
        Some((r as usize - Register::RAX as usize) as u8)
    } else if !w64 && r.is_gpr32() {
        Some((r as usize - Register::EAX as usize) as u8)
    } else {
        None
    }
}

/// The GPR number of a low-byte register (AL..R15L, not AH..BH).
fn gpr8(r: Register) -> Option<u8> {
    match r {
        Register::AH | Register::CH | Register::DH | Register::BH => None,
        _ if r.is_gpr8() => {
            let k = (r as usize - Register::AL as usize) as u8;
            Some(if k < 4 { k } else { k - 4 })
        }
        _ => None,
    }
}

/// The GPR number of a 16-bit register.
fn gpr16(r: Register) -> Option<u8> {
    r.is_gpr16()
        .then(|| (r as usize - Register::AX as usize) as u8)
}

fn alu_op(m: Mnemonic) -> Option<Alu> {
    Some(match m {
        Mnemonic::Add => Alu::Add,
        Mnemonic::Or => Alu::Or,
        Mnemonic::Adc => Alu::Adc,
        Mnemonic::Sbb => Alu::Sbb,
        Mnemonic::And => Alu::And,
        Mnemonic::Sub => Alu::Sub,
        Mnemonic::Xor => Alu::Xor,
        Mnemonic::Cmp => Alu::Cmp,
        Mnemonic::Test => Alu::Test,
        _ => return None,
    })
}

fn is_cmov(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Cmovo
            | Mnemonic::Cmovno
            | Mnemonic::Cmovb
            | Mnemonic::Cmovae
            | Mnemonic::Cmove
            | Mnemonic::Cmovne
            | Mnemonic::Cmovbe
            | Mnemonic::Cmova
            | Mnemonic::Cmovs
            | Mnemonic::Cmovns
            | Mnemonic::Cmovp
            | Mnemonic::Cmovnp
            | Mnemonic::Cmovl
            | Mnemonic::Cmovge
            | Mnemonic::Cmovle
            | Mnemonic::Cmovg
    )
}

fn is_setcc(m: Mnemonic) -> bool {
    matches!(
        m,
        Mnemonic::Seto
            | Mnemonic::Setno
            | Mnemonic::Setb
            | Mnemonic::Setae
            | Mnemonic::Sete
            | Mnemonic::Setne
            | Mnemonic::Setbe
            | Mnemonic::Seta
            | Mnemonic::Sets
            | Mnemonic::Setns
            | Mnemonic::Setp
            | Mnemonic::Setnp
            | Mnemonic::Setl
            | Mnemonic::Setge
            | Mnemonic::Setle
            | Mnemonic::Setg
    )
}

/// A 64-bit-register memory operand in DS or SS (no base in 64-bit mode), if it is one.
fn addr64(ins: &Instruction) -> Option<Addr> {
    let base = ins.memory_base();
    let index = ins.memory_index();
    let seg = match ins.memory_segment() {
        Register::DS => Seg::Ds,
        Register::SS => Seg::Ss,
        _ => return None,
    };
    let reg = |r: Register| -> Option<u8> {
        if r == Register::None {
            Some(NONE)
        } else {
            gpr(r, true)
        }
    };
    if base == Register::RIP {
        // iced computed the absolute address from the block's RIP.
        return Some(Addr {
            seg,
            base: NONE,
            index: NONE,
            shift: 0,
            disp: ins.ip_rel_memory_address(),
        });
    }
    Some(Addr {
        seg,
        base: reg(base)?,
        index: reg(index)?,
        shift: ins.memory_index_scale().trailing_zeros() as u8,
        disp: ins.memory_displacement64(),
    })
}

#[cfg(test)]
thread_local! {
    /// Tests turn the fast forms off to compare them with the general handlers.
    pub static DISABLED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Chooses the fast form of a decoded instruction, for code of width `bits`.
pub fn digest(ins: &Instruction, bits: u32) -> Fast {
    #[cfg(test)]
    if DISABLED.with(|d| d.get()) {
        return Fast::No;
    }
    let m = ins.mnemonic();
    let k0 = ins.op_kind(0);
    let k1 = if ins.op_count() > 1 {
        ins.op_kind(1)
    } else {
        OpKind::Register
    };
    let is_imm = |k: OpKind| {
        matches!(
            k,
            OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate32
                | OpKind::Immediate32to64
                | OpKind::Immediate64
        )
    };
    match ins.flow_control() {
        FlowControl::ConditionalBranch => {
            let target = ins.near_branch_target();
            return match (cc_number(ins.condition_code()), ins.code()) {
                (Some(cc), _)
                    if ins.is_jcc_short_or_near()
                        && matches!(k0, OpKind::NearBranch64 | OpKind::NearBranch32)
                        && (bits != 64 || canonical(target)) =>
                {
                    let target = if bits == 64 {
                        target
                    } else {
                        target & 0xffff_ffff
                    };
                    Fast::Jcc { cc, target }
                }
                _ => Fast::No,
            };
        }
        FlowControl::UnconditionalBranch => {
            let target = ins.near_branch_target();
            return if matches!(ins.code(), Code::Jmp_rel8_64 | Code::Jmp_rel32_64)
                && canonical(target)
            {
                Fast::Jmp { target }
            } else if matches!(ins.code(), Code::Jmp_rel8_32 | Code::Jmp_rel32_32) && bits == 32 {
                Fast::Jmp {
                    target: target & 0xffff_ffff,
                }
            } else {
                Fast::No
            };
        }
        FlowControl::Call
            if ins.code() == Code::Call_rel32_64 && canonical(ins.near_branch_target()) =>
        {
            return Fast::Call {
                target: ins.near_branch_target(),
            };
        }
        FlowControl::Return if ins.code() == Code::Retnq => return Fast::Ret,
        FlowControl::Next => {}
        _ => return Fast::No,
    }
    if ins.has_lock_prefix() || ins.has_rep_prefix() || ins.has_repne_prefix() {
        return Fast::No;
    }
    let r0 = ins.op0_register();
    let r1 = ins.op1_register();
    if k0 == OpKind::Register {
        if let Some(cc) = cc_number(ins.condition_code()).filter(|_| is_setcc(m)) {
            return match gpr8(r0) {
                Some(d) => Fast::Setcc { cc, d },
                None => Fast::No,
            };
        }
        if m == Mnemonic::Movzx && k1 == OpKind::Register {
            let d = gpr(r0, true).or_else(|| gpr(r0, false));
            let s = match r1.size() {
                1 => gpr8(r1),
                2 => gpr16(r1),
                _ => None,
            };
            return match (d, s) {
                (Some(d), Some(s)) => Fast::MovzxRR {
                    size: r1.size() as u8,
                    d,
                    s,
                },
                _ => Fast::No,
            };
        }
        if m == Mnemonic::Mul && ins.op_count() == 1 {
            if let Some(s) = gpr(r0, true) {
                return Fast::Mul { w64: true, s };
            }
            if let Some(s) = gpr(r0, false) {
                return Fast::Mul { w64: false, s };
            }
        }
    }
    for w64 in [true, false] {
        if k0 == OpKind::Register {
            let Some(d) = gpr(r0, w64) else { continue };
            match m {
                Mnemonic::Mov if k1 == OpKind::Register => {
                    if let Some(s) = gpr(r1, w64) {
                        return Fast::MovRR { w64, d, s };
                    }
                }
                Mnemonic::Mov if is_imm(k1) => {
                    let v = ins.immediate(1);
                    let v = if w64 { v } else { v & 0xffff_ffff };
                    return Fast::MovRI { d, v };
                }
                Mnemonic::Mov if k1 == OpKind::Memory && bits == 64 => {
                    if let Some(a) = addr64(ins) {
                        return Fast::Load {
                            size: if w64 { 8 } else { 4 },
                            d,
                            a,
                        };
                    }
                }
                Mnemonic::Lea if bits == 64 && w64 => {
                    if let Some(a) = addr64(ins) {
                        return Fast::Lea { d, a };
                    }
                }
                Mnemonic::Imul if ins.op_count() == 2 && k1 == OpKind::Register => {
                    if let Some(s) = gpr(r1, w64) {
                        return Fast::Imul { w64, d, s };
                    }
                }
                Mnemonic::Shl | Mnemonic::Shr | Mnemonic::Sar if k1 == OpKind::Immediate8 => {
                    let count = ins.immediate8() & if w64 { 0x3f } else { 0x1f };
                    if count != 0 {
                        let op = match m {
                            Mnemonic::Shl => crate::cpu::exec::int::SHL,
                            Mnemonic::Shr => crate::cpu::exec::int::SHR,
                            _ => crate::cpu::exec::int::SAR,
                        };
                        return Fast::Shift { op, w64, d, count };
                    }
                }
                Mnemonic::Movsxd if w64 && k1 == OpKind::Register => {
                    if let Some(s) = gpr(r1, false) {
                        return Fast::Movsxd { d, s };
                    }
                }
                Mnemonic::Push if w64 && bits == 64 && ins.op_count() == 1 => {
                    return Fast::Push { s: d };
                }
                Mnemonic::Pop if w64 && bits == 64 && ins.op_count() == 1 => {
                    return Fast::Pop { d };
                }
                _ if ins.op_count() == 2 && k1 == OpKind::Register && m != Mnemonic::Mov => {
                    if let (Some(cc), true) = (cc_number(ins.condition_code()), is_cmov(m)) {
                        if let Some(s) = gpr(r1, w64) {
                            return Fast::Cmov { cc, w64, d, s };
                        }
                    }
                }
                _ => {}
            }
            match m {
                Mnemonic::Inc | Mnemonic::Dec if ins.op_count() == 1 => {
                    return Fast::IncDec {
                        dec: m == Mnemonic::Dec,
                        w64,
                        d,
                    };
                }
                _ => {}
            }
            if m == Mnemonic::Movzx && k1 == OpKind::Memory && bits == 64 {
                let size = ins.memory_size().size();
                if let (1 | 2, Some(a)) = (size, addr64(ins)) {
                    return Fast::MovzxLoad {
                        size: size as u8,
                        d,
                        a,
                    };
                }
            }
            if let Some(op) = alu_op(m) {
                if k1 == OpKind::Memory && bits == 64 {
                    if let Some(a) = addr64(ins) {
                        return Fast::AluRM { op, w64, d, a };
                    }
                }
                if k1 == OpKind::Register {
                    if let Some(s) = gpr(r1, w64) {
                        return Fast::AluRR { op, w64, d, s };
                    }
                } else if is_imm(k1) {
                    let v = ins.immediate(1);
                    let v = if w64 { v } else { v & 0xffff_ffff };
                    return Fast::AluRI { op, w64, d, v };
                }
            }
        } else if k0 == OpKind::Memory && bits == 64 {
            let size = ins.memory_size().size();
            if size != if w64 { 8 } else { 4 } {
                continue;
            }
            let Some(a) = addr64(ins) else {
                return Fast::No;
            };
            let size = size as u8;
            if k1 == OpKind::Register {
                let Some(s) = gpr(r1, w64) else { continue };
                if m == Mnemonic::Mov {
                    return Fast::Store { size, s, a };
                }
                if let Some(op) = alu_op(m) {
                    return Fast::AluMR { op, w64, s, a };
                }
            } else if is_imm(k1) {
                let v = ins.immediate(1);
                let v = if w64 { v } else { v & 0xffff_ffff };
                if m == Mnemonic::Mov {
                    return Fast::StoreImm { size, v, a };
                }
                if let Some(op) = alu_op(m) {
                    return Fast::AluMI { op, w64, v, a };
                }
            }
        }
    }
    Fast::No
}

/// What a fast form did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Done; the next instruction follows.
    Next,
    /// Done; a branch was taken to this address.
    Branch(u64),
    /// Nothing was changed: the general handler must run the instruction (no fast form, or
    /// a memory access off the TLB's fast path, or anything that may fault).
    Slow,
}

impl Cpu {
    #[inline(always)]
    fn addr(&self, a: &Addr) -> u64 {
        let mut v = a.disp;
        if a.base != NONE {
            v = v.wrapping_add(self.gpr[(a.base & 15) as usize]);
        }
        if a.index != NONE {
            v = v.wrapping_add(self.gpr[(a.index & 15) as usize] << a.shift);
        }
        v
    }

    /// The host pointer for `size` bytes at a linear address in 64-bit mode, if the TLB's fast
    /// path allows the access (RAM, present, permitted, within one page; for writes, a dirty
    /// page that holds no decoded code). `None` means the general handler must do it.
    #[inline(always)]
    fn ptr64(&self, lin: u64, size: usize, acc: Access) -> Option<*mut u8> {
        if !self.long64 || !canonical(lin) {
            return None;
        }
        self.fast(lin, size, acc)
    }

    /// Computes `a op b` at 32 or 64 bits, records the flags, and returns the result if the
    /// operation writes one (CMP and TEST do not).
    #[inline(always)]
    fn alu_value(&mut self, op: Alu, w64: bool, a: u64, b: u64) -> Option<u64> {
        let (mask, bits) = if w64 {
            (u64::MAX, 64)
        } else {
            (0xffff_ffff, 32)
        };
        let (a, b) = (a & mask, b & mask);
        let f = &mut self.flags;
        Some(match op {
            Alu::Add => {
                let r = a.wrapping_add(b) & mask;
                f.set_add(a, b, false, r, bits);
                r
            }
            Alu::Adc => {
                let c = f.cf();
                let r = a.wrapping_add(b).wrapping_add(c as u64) & mask;
                f.set_add(a, b, c, r, bits);
                r
            }
            Alu::Sub | Alu::Cmp => {
                let r = a.wrapping_sub(b) & mask;
                f.set_sub(a, b, false, r, bits);
                if op == Alu::Cmp {
                    return None;
                }
                r
            }
            Alu::Sbb => {
                let c = f.cf();
                let r = a.wrapping_sub(b).wrapping_sub(c as u64) & mask;
                f.set_sub(a, b, c, r, bits);
                r
            }
            Alu::And | Alu::Test => {
                let r = a & b;
                f.set_logic(r, bits);
                if op == Alu::Test {
                    return None;
                }
                r
            }
            Alu::Or => {
                let r = a | b;
                f.set_logic(r, bits);
                r
            }
            Alu::Xor => {
                let r = a ^ b;
                f.set_logic(r, bits);
                r
            }
        })
    }

    #[inline(always)]
    fn alu(&mut self, op: Alu, w64: bool, d: u8, b: u64) {
        let i = (d & 15) as usize;
        if let Some(r) = self.alu_value(op, w64, self.gpr[i], b) {
            // A 32-bit result zero-extends into the full register.
            self.gpr[i] = r;
        }
    }

    /// `op [mem], b` on the fast path: the page must be writable unless the operation only
    /// reads (CMP, TEST), so that nothing can fail once the flags have changed.
    #[inline(always)]
    fn alu_mem(&mut self, op: Alu, w64: bool, a: &Addr, b: u64) -> Step {
        let size = if w64 { 8 } else { 4 };
        let writes = !matches!(op, Alu::Cmp | Alu::Test);
        let acc = if writes { Access::Write } else { Access::Read };
        let Some(p) = self.ptr64(self.addr(a), size, acc) else {
            return Step::Slow;
        };
        // SAFETY: `ptr64` returned a pointer with `size` readable (and, for a write access,
        // writable) bytes.
        let v = unsafe { read_host(p, size) };
        if let Some(r) = self.alu_value(op, w64, v, b) {
            // SAFETY: as above; `writes` is true for every operation that returns a result.
            unsafe { write_host(p, size, r) };
        }
        Step::Next
    }

    /// Loads `size` bytes into a register on the fast path.
    #[inline(always)]
    fn load(&mut self, d: u8, a: &Addr, size: usize) -> Step {
        match self.ptr64(self.addr(a), size, Access::Read) {
            Some(p) => {
                // SAFETY: `ptr64` returned a pointer with `size` readable bytes.
                self.gpr[(d & 15) as usize] = unsafe { read_host(p, size) };
                Step::Next
            }
            None => Step::Slow,
        }
    }

    /// Stores `size` bytes on the fast path.
    #[inline(always)]
    fn store(&mut self, a: &Addr, size: usize, v: u64) -> Step {
        match self.ptr64(self.addr(a), size, Access::Write) {
            Some(p) => {
                // SAFETY: `ptr64` returned a pointer with `size` writable bytes.
                unsafe { write_host(p, size, v) };
                Step::Next
            }
            None => Step::Slow,
        }
    }

    /// Pushes 8 bytes on the fast path (64-bit mode: SS has no base, RSP is 64 bits wide).
    #[inline(always)]
    fn push_fast(&mut self, v: u64) -> bool {
        let sp = self.gpr[4].wrapping_sub(8);
        match self.ptr64(sp, 8, Access::Write) {
            Some(p) => {
                // SAFETY: `ptr64` returned a pointer with 8 writable bytes.
                unsafe { write_host(p, 8, v) };
                self.gpr[4] = sp;
                true
            }
            None => false,
        }
    }

    /// Pops 8 bytes on the fast path, leaving RSP to the caller.
    #[inline(always)]
    fn peek_fast(&self) -> Option<u64> {
        let p = self.ptr64(self.gpr[4], 8, Access::Read)?;
        // SAFETY: `ptr64` returned a pointer with 8 readable bytes.
        Some(unsafe { read_host(p, 8) })
    }

    /// Runs a fast form, `next` being the address of the following instruction. A fast form
    /// either completes or changes nothing and answers `Step::Slow`: it never faults, so the
    /// block loop needs no bookkeeping for it.
    #[inline(always)]
    pub(super) fn exec_fast(&mut self, f: &Fast, next: u64) -> Step {
        match *f {
            Fast::No => return Step::Slow,
            Fast::MovRR { w64, d, s } => {
                let v = self.gpr[(s & 15) as usize];
                self.gpr[(d & 15) as usize] = if w64 { v } else { v & 0xffff_ffff };
            }
            Fast::MovRI { d, v } => self.gpr[(d & 15) as usize] = v,
            Fast::AluRR { op, w64, d, s } => {
                let b = self.gpr[(s & 15) as usize];
                self.alu(op, w64, d, b);
            }
            Fast::AluRI { op, w64, d, v } => self.alu(op, w64, d, v),
            Fast::IncDec { dec, w64, d } => {
                let (mask, bits) = if w64 {
                    (u64::MAX, 64)
                } else {
                    (0xffff_ffff, 32)
                };
                let i = (d & 15) as usize;
                let a = self.gpr[i] & mask;
                let r = if dec {
                    a.wrapping_sub(1)
                } else {
                    a.wrapping_add(1)
                } & mask;
                self.flags.set_incdec(dec, a, r, bits);
                self.gpr[i] = r;
            }
            Fast::Lea { d, a } => self.gpr[(d & 15) as usize] = self.addr(&a),
            Fast::Load { size, d, a } => return self.load(d, &a, size as usize),
            Fast::Store { size, s, a } => {
                let v = self.gpr[(s & 15) as usize];
                return self.store(&a, size as usize, v);
            }
            Fast::Jcc { cc, target } => {
                if self.flags.cond(cc) {
                    return Step::Branch(target);
                }
            }
            Fast::Jmp { target } => return Step::Branch(target),
            Fast::AluRM { op, w64, d, a } => {
                let size = if w64 { 8 } else { 4 };
                let Some(p) = self.ptr64(self.addr(&a), size, Access::Read) else {
                    return Step::Slow;
                };
                // SAFETY: `ptr64` returned a pointer with `size` readable bytes.
                let b = unsafe { read_host(p, size) };
                self.alu(op, w64, d, b);
            }
            Fast::AluMR { op, w64, s, a } => {
                let b = self.gpr[(s & 15) as usize];
                return self.alu_mem(op, w64, &a, b);
            }
            Fast::AluMI { op, w64, v, a } => return self.alu_mem(op, w64, &a, v),
            Fast::MovzxLoad { size, d, a } => return self.load(d, &a, size as usize),
            Fast::StoreImm { size, v, a } => return self.store(&a, size as usize, v),
            Fast::Imul { w64, d, s } => {
                let (a, b) = (self.gpr[(d & 15) as usize], self.gpr[(s & 15) as usize]);
                let (res, overflow, bits) = if w64 {
                    let (r, o) = (a as i64).overflowing_mul(b as i64);
                    (r as u64, o, 64)
                } else {
                    let (r, o) = (a as i32).overflowing_mul(b as i32);
                    (u64::from(r as u32), o, 32)
                };
                self.gpr[(d & 15) as usize] = res;
                self.flags.set_result(res, bits, overflow, overflow, false);
            }
            Fast::Mul { w64, s } => {
                let b = self.gpr[(s & 15) as usize];
                let (lo, hi, bits) = if w64 {
                    let p = u128::from(self.gpr[0]) * u128::from(b);
                    (p as u64, (p >> 64) as u64, 64)
                } else {
                    let p = (self.gpr[0] & 0xffff_ffff) * (b & 0xffff_ffff);
                    (p & 0xffff_ffff, p >> 32, 32)
                };
                self.gpr[0] = lo;
                self.gpr[2] = hi;
                let c = hi != 0;
                self.flags.set_result(lo, bits, c, c, false);
            }
            Fast::Shift { op, w64, d, count } => {
                let i = (d & 15) as usize;
                let size = if w64 { 8 } else { 4 };
                let a = if w64 {
                    self.gpr[i]
                } else {
                    self.gpr[i] & 0xffff_ffff
                };
                let r = crate::cpu::exec::int::shift_dyn(
                    op,
                    &mut self.flags,
                    a,
                    u32::from(count),
                    size,
                );
                self.gpr[i] = if w64 { r } else { r & 0xffff_ffff };
            }
            Fast::Cmov { cc, w64, d, s } => {
                let i = (d & 15) as usize;
                let v = if self.flags.cond(cc) {
                    self.gpr[(s & 15) as usize]
                } else {
                    self.gpr[i]
                };
                // A 32-bit CMOV zero-extends its destination whatever the condition.
                self.gpr[i] = if w64 { v } else { v & 0xffff_ffff };
            }
            Fast::Setcc { cc, d } => {
                let i = (d & 15) as usize;
                self.gpr[i] = (self.gpr[i] & !0xff) | self.flags.cond(cc) as u64;
            }
            Fast::MovzxRR { size, d, s } => {
                let v = self.gpr[(s & 15) as usize];
                self.gpr[(d & 15) as usize] = if size == 1 { v & 0xff } else { v & 0xffff };
            }
            Fast::Movsxd { d, s } => {
                self.gpr[(d & 15) as usize] = self.gpr[(s & 15) as usize] as i32 as i64 as u64;
            }
            Fast::Push { s } => {
                let v = self.gpr[(s & 15) as usize];
                if !self.push_fast(v) {
                    return Step::Slow;
                }
            }
            Fast::Pop { d } => {
                let Some(v) = self.peek_fast() else {
                    return Step::Slow;
                };
                // `pop rsp` loads the popped value: the increment comes first.
                self.gpr[4] = self.gpr[4].wrapping_add(8);
                self.gpr[(d & 15) as usize] = v;
            }
            Fast::Call { target } => {
                if !self.push_fast(next) {
                    return Step::Slow;
                }
                return Step::Branch(target);
            }
            Fast::Ret => {
                let Some(target) = self.peek_fast() else {
                    return Step::Slow;
                };
                if !canonical(target) {
                    return Step::Slow;
                }
                self.gpr[4] = self.gpr[4].wrapping_add(8);
                return Step::Branch(target);
            }
        }
        Step::Next
    }
}

#[cfg(test)]
#[path = "fast_tests.rs"]
mod tests;
