//! Pre-digested forms of the most frequent instructions, executed inline by the block loop.
//!
//! Register moves, ALU operations on registers and memory, LEA, loads and stores, shifts and
//! rotates, SETcc/CMOVcc, MUL/IMUL, direct and register branches make up most of what a kernel
//! and compiled user code execute. For them the decoder records the register numbers,
//! immediates, targets and address recipes once, and the block loop runs them without an
//! indirect call or any iced-x86 operand decoding.
//!
//! A fast form never faults: it either completes or changes nothing and answers
//! [`Step::Slow`], and the general handler then runs the instruction. Memory is reached only
//! through the TLB's fast path (RAM, present, permitted, within a page; writes only to dirty
//! pages without decoded code), so a TLB miss, a page split, MMIO, a page fault or a write to
//! code all take the handler. This keeps the block loop free of per-instruction bookkeeping
//! and exceptions precise. Every other form (address-size overrides, non-canonical targets,
//! 16-bit shifts, AH..BH outside ALU-with-immediate and MOVZX) keeps its general handler in
//! `exec/`, which stays the reference for their semantics.

use super::flags::{cc_number, CF};
use super::mem::{read_host, write_host, Access};
use super::operand::sext;
use super::seg::canonical;
use super::{cr, Cpu, Seg};
use crate::cpu::exec::int::{shift_dyn, ROL, ROR, SAR, SHL, SHR};
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

/// A memory operand `seg:[base + index << shift + disp]` with 64-bit registers (`NONE` =
/// absent); RIP-relative operands become an absolute `disp`. Only FS and GS add a base.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addr {
    pub(super) seg: Seg,
    pub(super) base: u8,
    pub(super) index: u8,
    pub(super) shift: u8,
    pub(super) disp: u64,
}

pub(super) const NONE: u8 = 0xff;

/// Operand sizes are in bytes: `sz` is 1, 4 or 8 unless said otherwise. A 1-byte register is
/// the low byte of a GPR (AL..R15L), written without touching the rest; a 4-byte result
/// zero-extends into the full register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fast {
    /// Use the general handler.
    No,
    /// NOP in any encoding.
    Nop,
    /// `mov` between registers.
    MovRR {
        sz: u8,
        d: u8,
        s: u8,
    },
    /// `mov reg, imm` with the value already truncated to the operand size.
    MovRI {
        sz: u8,
        d: u8,
        v: u64,
    },
    AluRR {
        op: Alu,
        sz: u8,
        d: u8,
        s: u8,
    },
    AluRI {
        op: Alu,
        sz: u8,
        d: u8,
        v: u64,
    },
    /// `op reg, [mem]`.
    AluRM {
        op: Alu,
        sz: u8,
        d: u8,
        a: Addr,
    },
    /// `op [mem], reg` and `op [mem], imm` (read-modify-write unless CMP/TEST).
    AluMR {
        op: Alu,
        sz: u8,
        s: u8,
        a: Addr,
    },
    AluMI {
        op: Alu,
        sz: u8,
        v: u64,
        a: Addr,
    },
    IncDec {
        dec: bool,
        sz: u8,
        d: u8,
    },
    /// NEG (`neg` true) or NOT of a 4- or 8-byte register.
    NegNot {
        neg: bool,
        sz: u8,
        d: u8,
    },
    /// LEA into a 4- or 8-byte register (the address truncated to it).
    Lea {
        sz: u8,
        d: u8,
        a: Addr,
    },
    /// `mov reg, [mem]`.
    Load {
        sz: u8,
        d: u8,
        a: Addr,
    },
    /// `mov [mem], reg`.
    Store {
        sz: u8,
        s: u8,
        a: Addr,
    },
    /// `mov [mem], imm`.
    StoreImm {
        sz: u8,
        v: u64,
        a: Addr,
    },
    /// `movzx r32/r64, byte/word [mem]`.
    MovzxLoad {
        size: u8,
        d: u8,
        a: Addr,
    },
    /// `movsx`/`movsxd` of a 1-, 2- or 4-byte memory operand into a 4- or 8-byte register.
    MovsxLoad {
        size: u8,
        sz: u8,
        d: u8,
        a: Addr,
    },
    /// `movzx r32/r64, r8/r16` (zero-extends into the full register).
    MovzxRR {
        size: u8,
        d: u8,
        s: u8,
    },
    /// `movsx r32/r64, r8/r16` and `movsxd r64, r32`.
    MovsxRR {
        size: u8,
        sz: u8,
        d: u8,
        s: u8,
    },
    Jcc {
        cc: u8,
        target: u64,
    },
    Jmp {
        target: u64,
    },
    /// `jmp r64` / `call r64` in 64-bit code.
    JmpR {
        s: u8,
    },
    CallR {
        s: u8,
    },
    /// `jmp qword [mem]` / `call qword [mem]` in 64-bit code.
    JmpM {
        a: Addr,
    },
    CallM {
        a: Addr,
    },
    /// Two-operand `imul reg, reg`.
    Imul {
        w64: bool,
        d: u8,
        s: u8,
    },
    /// One-operand `mul r64` / `mul r32`: RDX:RAX = RAX * reg.
    Mul {
        w64: bool,
        s: u8,
    },
    /// SHL/SHR/SAR/ROL/ROR of a register by a non-zero (masked) immediate count.
    Shift {
        op: u8,
        sz: u8,
        d: u8,
        count: u8,
    },
    /// The same by CL.
    ShiftCl {
        op: u8,
        sz: u8,
        d: u8,
    },
    Cmov {
        cc: u8,
        w64: bool,
        d: u8,
        s: u8,
    },
    /// `setcc r8` for the low byte of a register (not AH..BH).
    Setcc {
        cc: u8,
        d: u8,
    },
    /// INC or DEC of a memory operand.
    IncDecM {
        dec: bool,
        sz: u8,
        a: Addr,
    },
    /// An ALU operation on a high-byte register (AH, CH, DH, BH: bits 8..15 of register `h`)
    /// with an immediate.
    AluHI {
        op: Alu,
        h: u8,
        v: u64,
    },
    /// MOVZX of a high-byte register into a 4-byte register.
    MovzxHigh {
        d: u8,
        h: u8,
    },
    /// BT of a register with an immediate bit number (already taken modulo the width).
    BtRI {
        sz: u8,
        d: u8,
        bit: u8,
    },
    /// BT of a memory operand with an immediate bit number (modulo the operand's width).
    BtMI {
        sz: u8,
        bit: u8,
        a: Addr,
    },
    /// An SSE load of `size` bytes (4, 8 or 16) into XMM register `x`, zero-extended
    /// (MOVD, MOVQ, MOVSS, MOVSD; MOVUPS, MOVDQU and, `align`ed, MOVAPS and MOVDQA).
    XLoad {
        size: u8,
        x: u8,
        align: bool,
        a: Addr,
    },
    /// An SSE store of the low `size` bytes of XMM register `x`.
    XStore {
        size: u8,
        x: u8,
        align: bool,
        a: Addr,
    },
    /// A whole XMM register copied (MOVAPS, MOVUPS, MOVDQA, MOVDQU, MOVAPD, MOVUPD).
    XMove {
        d: u8,
        s: u8,
    },
    /// BSWAP of a 4- or 8-byte register.
    Bswap {
        w64: bool,
        d: u8,
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
}

/// The register holding a high-byte register in bits 8..15 (AH is in RAX).
fn high_byte(r: Register) -> Option<u8> {
    Some(match r {
        Register::AH => 0,
        Register::CH => 1,
        Register::DH => 2,
        Register::BH => 3,
        _ => return None,
    })
}

/// The GPR number of a register of `sz` bytes (1: AL..R15L, not AH..BH).
fn gpr(r: Register, sz: u8) -> Option<u8> {
    match sz {
        8 if r.is_gpr64() => Some((r as usize - Register::RAX as usize) as u8),
        4 if r.is_gpr32() => Some((r as usize - Register::EAX as usize) as u8),
        2 if r.is_gpr16() => Some((r as usize - Register::AX as usize) as u8),
        1 => match r {
            _ if high_byte(r).is_some() => None,
            _ if r.is_gpr8() => {
                let k = (r as usize - Register::AL as usize) as u8;
                Some(if k < 4 { k } else { k - 4 })
            }
            _ => None,
        },
        _ => None,
    }
}

/// Value masks by operand size in bytes (1, 2, 4 or 8).
static MASKS: [u64; 16] = {
    let mut m = [0u64; 16];
    m[1] = 0xff;
    m[2] = 0xffff;
    m[4] = 0xffff_ffff;
    m[8] = u64::MAX;
    m
};

/// The value mask of an operand of `sz` (1, 2, 4 or 8) bytes.
#[inline(always)]
pub(super) fn mask(sz: u8) -> u64 {
    MASKS[usize::from(sz & 15)]
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

fn shift_op(m: Mnemonic) -> Option<u8> {
    Some(match m {
        Mnemonic::Shl | Mnemonic::Sal => SHL,
        Mnemonic::Shr => SHR,
        Mnemonic::Sar => SAR,
        Mnemonic::Rol => ROL,
        Mnemonic::Ror => ROR,
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

/// A memory operand with 64-bit address registers, if it is one.
fn addr64(ins: &Instruction) -> Option<Addr> {
    let base = ins.memory_base();
    let index = ins.memory_index();
    let seg = match ins.memory_segment() {
        Register::ES => Seg::Es,
        Register::CS => Seg::Cs,
        Register::SS => Seg::Ss,
        Register::DS => Seg::Ds,
        Register::FS => Seg::Fs,
        Register::GS => Seg::Gs,
        _ => return None,
    };
    let reg = |r: Register| -> Option<u8> {
        if r == Register::None {
            Some(NONE)
        } else {
            gpr(r, 8)
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

fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate8to16
            | OpKind::Immediate16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32
            | OpKind::Immediate32to64
            | OpKind::Immediate64
    )
}

/// BT's immediate bit number, modulo the operand's width in bits.
fn bit_number(ins: &Instruction, sz: u8) -> u8 {
    ins.immediate8() & (sz * 8 - 1)
}

/// The SSE moves with a fast form: (size, alignment required, loads into XMM) by code.
fn sse_move(c: Code) -> Option<(u8, bool, bool)> {
    Some(match c {
        Code::Movd_xmm_rm32 | Code::Movss_xmm_xmmm32 => (4, false, true),
        Code::Movd_rm32_xmm | Code::Movss_xmmm32_xmm => (4, false, false),
        Code::Movq_xmm_rm64 | Code::Movq_xmm_xmmm64 | Code::Movsd_xmm_xmmm64 => (8, false, true),
        Code::Movq_rm64_xmm | Code::Movq_xmmm64_xmm | Code::Movsd_xmmm64_xmm => (8, false, false),
        Code::Movups_xmm_xmmm128 | Code::Movupd_xmm_xmmm128 | Code::Movdqu_xmm_xmmm128 => {
            (16, false, true)
        }
        Code::Movups_xmmm128_xmm | Code::Movupd_xmmm128_xmm | Code::Movdqu_xmmm128_xmm => {
            (16, false, false)
        }
        Code::Movaps_xmm_xmmm128 | Code::Movapd_xmm_xmmm128 | Code::Movdqa_xmm_xmmm128 => {
            (16, true, true)
        }
        Code::Movaps_xmmm128_xmm | Code::Movapd_xmmm128_xmm | Code::Movdqa_xmmm128_xmm => {
            (16, true, false)
        }
        _ => return None,
    })
}

/// The fast form of an SSE move: memory operands in 64-bit code, or a whole-register copy.
fn digest_sse(ins: &Instruction, bits: u32) -> Option<Fast> {
    let (size, align, load) = sse_move(ins.code())?;
    let xmm = |r: Register| {
        r.is_xmm()
            .then(|| (r as usize - Register::XMM0 as usize) as u8)
    };
    let (k0, k1) = (ins.op0_kind(), ins.op1_kind());
    if k0 == OpKind::Register && k1 == OpKind::Register {
        // Only the full copies: MOVSS/MOVSD between registers merge the low lane.
        return (size == 16).then_some(Fast::XMove {
            d: xmm(ins.op0_register())?,
            s: xmm(ins.op1_register())?,
        });
    }
    if bits != 64 {
        return None;
    }
    let x = xmm(if load {
        ins.op0_register()
    } else {
        ins.op1_register()
    })?;
    let a = addr64(ins)?;
    Some(if load {
        Fast::XLoad { size, x, align, a }
    } else {
        Fast::XStore { size, x, align, a }
    })
}

/// Chooses the fast form of a decoded instruction, for code of width `bits`.
pub fn digest(ins: &Instruction, bits: u32) -> Fast {
    #[cfg(test)]
    if DISABLED.with(|d| d.get()) {
        return Fast::No;
    }
    match ins.flow_control() {
        FlowControl::ConditionalBranch => {
            let target = ins.near_branch_target();
            let k0 = ins.op0_kind();
            return match cc_number(ins.condition_code()) {
                Some(cc)
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
        FlowControl::IndirectBranch | FlowControl::IndirectCall
            if matches!(ins.code(), Code::Jmp_rm64 | Code::Call_rm64)
                && ins.op0_kind() == OpKind::Memory =>
        {
            let a = (bits == 64 && !ins.has_lock_prefix())
                .then(|| addr64(ins))
                .flatten();
            return match (a, ins.code()) {
                (Some(a), Code::Jmp_rm64) => Fast::JmpM { a },
                (Some(a), _) => Fast::CallM { a },
                (None, _) => Fast::No,
            };
        }
        FlowControl::IndirectBranch
            if ins.code() == Code::Jmp_rm64 && ins.op0_kind() == OpKind::Register =>
        {
            return gpr(ins.op0_register(), 8).map_or(Fast::No, |s| Fast::JmpR { s });
        }
        FlowControl::IndirectCall
            if ins.code() == Code::Call_rm64 && ins.op0_kind() == OpKind::Register =>
        {
            return gpr(ins.op0_register(), 8).map_or(Fast::No, |s| Fast::CallR { s });
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
    if ins.has_lock_prefix() {
        return Fast::No;
    }
    // MOVSS and MOVSD are F3/F2-prefixed: the prefixes are part of their opcode there.
    if let Some(f) = digest_sse(ins, bits) {
        return f;
    }
    if ins.has_rep_prefix() || ins.has_repne_prefix() {
        return Fast::No;
    }
    digest_next(ins, bits).unwrap_or(Fast::No)
}

/// The fast form of an instruction that continues with the next one.
fn digest_next(ins: &Instruction, bits: u32) -> Option<Fast> {
    let m = ins.mnemonic();
    if m == Mnemonic::Nop {
        return Some(Fast::Nop);
    }
    if ins.code() == Code::Cdqe {
        return Some(Fast::MovsxRR {
            size: 4,
            sz: 8,
            d: 0,
            s: 0,
        });
    }
    let n = ins.op_count();
    let k0 = ins.op0_kind();
    let k1 = if n > 1 {
        ins.op1_kind()
    } else {
        OpKind::Register
    };
    let r0 = ins.op0_register();
    let r1 = ins.op1_register();
    // Memory operands only in 64-bit code (no segment bases but FS/GS, no limits).
    let mem = |k: OpKind| -> Option<Addr> {
        if k == OpKind::Memory && bits == 64 {
            addr64(ins)
        } else {
            None
        }
    };
    let imm = |sz: u8| ins.immediate(1) & mask(sz);
    if k0 == OpKind::Register {
        // Forms whose source and destination widths differ.
        if let Some(cc) = cc_number(ins.condition_code()).filter(|_| is_setcc(m)) {
            return Some(Fast::Setcc { cc, d: gpr(r0, 1)? });
        }
        let dsz = if r0.is_gpr64() { 8 } else { 4 };
        match m {
            Mnemonic::Movzx => {
                let d = gpr(r0, dsz)?;
                if let Some(h) = high_byte(r1).filter(|_| k1 == OpKind::Register && dsz == 4) {
                    return Some(Fast::MovzxHigh { d, h });
                }
                if k1 == OpKind::Register {
                    let size = r1.size() as u8;
                    return Some(Fast::MovzxRR {
                        size,
                        d,
                        s: gpr(r1, size)?,
                    });
                }
                let size = ins.memory_size().size() as u8;
                return Some(Fast::MovzxLoad {
                    size,
                    d,
                    a: mem(k1)?,
                });
            }
            Mnemonic::Movsx | Mnemonic::Movsxd => {
                let d = gpr(r0, dsz)?;
                if k1 == OpKind::Register {
                    let size = r1.size() as u8;
                    return Some(Fast::MovsxRR {
                        size,
                        sz: dsz,
                        d,
                        s: gpr(r1, size)?,
                    });
                }
                let size = ins.memory_size().size() as u8;
                if !matches!(size, 1 | 2 | 4) {
                    return None;
                }
                return Some(Fast::MovsxLoad {
                    size,
                    sz: dsz,
                    d,
                    a: mem(k1)?,
                });
            }
            Mnemonic::Mul if n == 1 => {
                return Some(Fast::Mul {
                    w64: dsz == 8,
                    s: gpr(r0, dsz)?,
                });
            }
            Mnemonic::Push if n == 1 && bits == 64 => {
                return Some(Fast::Push { s: gpr(r0, 8)? });
            }
            Mnemonic::Pop if n == 1 && bits == 64 => {
                return Some(Fast::Pop { d: gpr(r0, 8)? });
            }
            Mnemonic::Bswap => {
                return Some(Fast::Bswap {
                    w64: dsz == 8,
                    d: gpr(r0, dsz)?,
                });
            }
            _ => {}
        }
        if let Some(h) = high_byte(r0) {
            // `imm` only once the operand is known to be one (iced panics otherwise).
            if n != 2 || !is_imm(k1) {
                return None;
            }
            return Some(Fast::AluHI {
                op: alu_op(m)?,
                h,
                v: imm(1),
            });
        }
        let sz = r0.size() as u8;
        let d = gpr(r0, sz)?;
        let wide = sz >= 4;
        return match m {
            Mnemonic::Bt if is_imm(k1) => Some(Fast::BtRI {
                sz,
                d,
                bit: bit_number(ins, sz),
            }),
            Mnemonic::Mov if k1 == OpKind::Register => Some(Fast::MovRR {
                sz,
                d,
                s: gpr(r1, sz)?,
            }),
            Mnemonic::Mov if is_imm(k1) => Some(Fast::MovRI { sz, d, v: imm(sz) }),
            Mnemonic::Mov => Some(Fast::Load { sz, d, a: mem(k1)? }),
            Mnemonic::Lea if wide => Some(Fast::Lea { sz, d, a: mem(k1)? }),
            Mnemonic::Imul if wide && n == 2 && k1 == OpKind::Register => Some(Fast::Imul {
                w64: sz == 8,
                d,
                s: gpr(r1, sz)?,
            }),
            Mnemonic::Inc | Mnemonic::Dec if n == 1 => Some(Fast::IncDec {
                dec: m == Mnemonic::Dec,
                sz,
                d,
            }),
            Mnemonic::Neg | Mnemonic::Not if wide && n == 1 => Some(Fast::NegNot {
                neg: m == Mnemonic::Neg,
                sz,
                d,
            }),
            _ if is_cmov(m) && wide && k1 == OpKind::Register => Some(Fast::Cmov {
                cc: cc_number(ins.condition_code())?,
                w64: sz == 8,
                d,
                s: gpr(r1, sz)?,
            }),
            _ => {
                if let Some(op) = shift_op(m) {
                    // Not at 16 bits, where a count beyond the width is its own case.
                    if sz == 2 {
                        return None;
                    }
                    let cmask = if sz == 8 { 0x3f } else { 0x1f };
                    if k1 == OpKind::Register && r1 == Register::CL {
                        return Some(Fast::ShiftCl { op, sz, d });
                    }
                    if !is_imm(k1) {
                        return None;
                    }
                    let count = ins.immediate(1) as u8 & cmask;
                    return (count != 0).then_some(Fast::Shift { op, sz, d, count });
                }
                let op = alu_op(m)?;
                if n != 2 {
                    return None;
                }
                if k1 == OpKind::Register {
                    Some(Fast::AluRR {
                        op,
                        sz,
                        d,
                        s: gpr(r1, sz)?,
                    })
                } else if is_imm(k1) {
                    Some(Fast::AluRI {
                        op,
                        sz,
                        d,
                        v: imm(sz),
                    })
                } else {
                    Some(Fast::AluRM {
                        op,
                        sz,
                        d,
                        a: mem(k1)?,
                    })
                }
            }
        };
    }
    let a = mem(k0)?;
    let sz = ins.memory_size().size() as u8;
    if !matches!(sz, 1 | 2 | 4 | 8) {
        return None;
    }
    if n == 1 && matches!(m, Mnemonic::Inc | Mnemonic::Dec) {
        return Some(Fast::IncDecM {
            dec: m == Mnemonic::Dec,
            sz,
            a,
        });
    }
    if n != 2 {
        return None;
    }
    if k1 == OpKind::Register {
        let s = gpr(r1, sz)?;
        if m == Mnemonic::Mov {
            return Some(Fast::Store { sz, s, a });
        }
        return Some(Fast::AluMR {
            op: alu_op(m)?,
            sz,
            s,
            a,
        });
    }
    if !is_imm(k1) {
        return None;
    }
    if m == Mnemonic::Bt {
        return Some(Fast::BtMI {
            sz,
            bit: bit_number(ins, sz),
            a,
        });
    }
    let v = imm(sz);
    if m == Mnemonic::Mov {
        return Some(Fast::StoreImm { sz, v, a });
    }
    Some(Fast::AluMI {
        op: alu_op(m)?,
        sz,
        v,
        a,
    })
}

/// What a fast form did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Done; the next instruction follows.
    Next,
    /// Done; a branch was taken to this address.
    Branch(u64),
    /// Nothing was changed: the general handler must run the instruction.
    Slow,
}

impl Cpu {
    /// The linear address of a memory operand (64-bit mode: only FS and GS have a base).
    #[inline(always)]
    fn lin(&self, a: &Addr) -> u64 {
        let v = self.ea_fast(a);
        if matches!(a.seg, Seg::Fs | Seg::Gs) {
            return v.wrapping_add(self.seg[a.seg as usize].base);
        }
        v
    }

    /// The effective address of a memory operand (no segment base), for LEA.
    #[inline(always)]
    fn ea_fast(&self, a: &Addr) -> u64 {
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

    /// Whether SSE instructions run (else they raise #UD or #NM through their handlers).
    #[inline(always)]
    fn sse_ready(&self) -> bool {
        self.cr0 & (cr::CR0_EM | cr::CR0_TS) == 0 && self.cr4 & cr::CR4_OSFXSR != 0
    }

    /// The host pointer for an SSE move's `size` bytes at `a`, if SSE instructions run, the
    /// address is aligned where `align` asks for it and the TLB's fast path allows the access.
    #[inline(always)]
    fn sse_ptr(&self, a: &Addr, size: usize, align: bool, acc: Access) -> Option<*mut u8> {
        let lin = self.lin(a);
        if !self.sse_ready() || align && lin & 15 != 0 {
            return None;
        }
        self.ptr64(lin, size, acc)
    }

    /// Reads a register of `sz` bytes.
    #[inline(always)]
    fn get(&self, r: u8, sz: u8) -> u64 {
        self.gpr[(r & 15) as usize] & mask(sz)
    }

    /// Writes a register of `sz` bytes (`v` already truncated): a 4-byte write zero-extends,
    /// a 1- or 2-byte one keeps the rest of the register.
    #[inline(always)]
    fn put(&mut self, r: u8, sz: u8, v: u64) {
        if sz >= 4 {
            self.gpr[(r & 15) as usize] = v;
        } else {
            self.put_narrow(r, sz, v);
        }
    }

    /// The 1- and 2-byte cases of `put`, out of line: merged into `put`, the compiler would
    /// make every wide write depend on the register's old value.
    #[inline(never)]
    fn put_narrow(&mut self, r: u8, sz: u8, v: u64) {
        let i = (r & 15) as usize;
        let m = mask(sz);
        self.gpr[i] = (self.gpr[i] & !m) | (v & m);
    }

    /// INC or DEC of `a` (`sz` bytes, truncated): records the flags, returns the result.
    #[inline(always)]
    fn inc_dec(&mut self, dec: bool, sz: u8, a: u64) -> u64 {
        let r = if dec {
            a.wrapping_sub(1)
        } else {
            a.wrapping_add(1)
        } & mask(sz);
        self.flags.set_incdec(dec, a, r, u32::from(sz) * 8);
        r
    }

    /// Computes `a op b` at `sz` bytes (operands already truncated), records the flags, and
    /// returns the result if the operation writes one (CMP and TEST do not).
    #[inline(always)]
    fn alu_value(&mut self, op: Alu, sz: u8, a: u64, b: u64) -> Option<u64> {
        let m = mask(sz);
        let bits = u32::from(sz) * 8;
        let f = &mut self.flags;
        Some(match op {
            Alu::Add => {
                let r = a.wrapping_add(b) & m;
                f.set_add(a, b, false, r, bits);
                r
            }
            Alu::Adc => {
                let c = f.cf();
                let r = a.wrapping_add(b).wrapping_add(c as u64) & m;
                f.set_add(a, b, c, r, bits);
                r
            }
            Alu::Sub | Alu::Cmp => {
                let r = a.wrapping_sub(b) & m;
                f.set_sub(a, b, false, r, bits);
                if op == Alu::Cmp {
                    return None;
                }
                r
            }
            Alu::Sbb => {
                let c = f.cf();
                let r = a.wrapping_sub(b).wrapping_sub(c as u64) & m;
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
    fn alu(&mut self, op: Alu, sz: u8, d: u8, b: u64) {
        if let Some(r) = self.alu_value(op, sz, self.get(d, sz), b) {
            self.put(d, sz, r);
        }
    }

    /// `op [mem], b` on the fast path: the page must be writable unless the operation only
    /// reads (CMP, TEST), so that nothing can fail once the flags have changed.
    #[inline(always)]
    fn alu_mem(&mut self, op: Alu, sz: u8, a: &Addr, b: u64) -> Step {
        let writes = !matches!(op, Alu::Cmp | Alu::Test);
        self.rmw(sz, a, writes, |cpu, v| cpu.alu_value(op, sz, v, b))
    }

    /// Reads `sz` bytes at `a` on the fast path and, where `writes`, stores what `f` makes of
    /// them (if anything).
    #[inline(always)]
    fn rmw(
        &mut self,
        sz: u8,
        a: &Addr,
        writes: bool,
        f: impl FnOnce(&mut Self, u64) -> Option<u64>,
    ) -> Step {
        let size = sz as usize;
        let acc = if writes { Access::Write } else { Access::Read };
        let Some(p) = self.ptr64(self.lin(a), size, acc) else {
            return Step::Slow;
        };
        // SAFETY: `ptr64` returned a pointer with `size` readable (and, for a write access,
        // writable) bytes.
        let v = unsafe { read_host(p, size) };
        match f(self, v) {
            // SAFETY: as above, checked for writing.
            Some(r) if writes => unsafe { write_host(p, size, r) },
            _ => {}
        }
        Step::Next
    }

    /// Reads `size` bytes of memory on the fast path.
    #[inline(always)]
    fn load_fast(&self, a: &Addr, size: usize) -> Option<u64> {
        let p = self.ptr64(self.lin(a), size, Access::Read)?;
        // SAFETY: `ptr64` returned a pointer with `size` readable bytes.
        Some(unsafe { read_host(p, size) })
    }

    /// Stores `size` bytes on the fast path.
    #[inline(always)]
    fn store(&mut self, a: &Addr, size: usize, v: u64) -> Step {
        match self.ptr64(self.lin(a), size, Access::Write) {
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

    /// Reads the 8 bytes at RSP on the fast path, leaving RSP to the caller.
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
            Fast::Nop => {}
            Fast::MovRR { sz, d, s } => self.put(d, sz, self.get(s, sz)),
            Fast::MovRI { sz, d, v } => self.put(d, sz, v),
            Fast::AluRR { op, sz, d, s } => self.alu(op, sz, d, self.get(s, sz)),
            Fast::AluRI { op, sz, d, v } => self.alu(op, sz, d, v),
            Fast::AluRM { op, sz, d, a } => {
                let Some(b) = self.load_fast(&a, sz as usize) else {
                    return Step::Slow;
                };
                self.alu(op, sz, d, b);
            }
            Fast::AluMR { op, sz, s, a } => return self.alu_mem(op, sz, &a, self.get(s, sz)),
            Fast::AluMI { op, sz, v, a } => return self.alu_mem(op, sz, &a, v),
            Fast::IncDec { dec, sz, d } => {
                let r = self.inc_dec(dec, sz, self.get(d, sz));
                self.put(d, sz, r);
            }
            Fast::IncDecM { dec, sz, a } => {
                return self.rmw(sz, &a, true, |cpu, v| Some(cpu.inc_dec(dec, sz, v)))
            }
            Fast::NegNot { neg, sz, d } => {
                let m = mask(sz);
                let a = self.get(d, sz);
                let r = if neg {
                    let r = a.wrapping_neg() & m;
                    self.flags.set_sub(0, a, false, r, u32::from(sz) * 8);
                    r
                } else {
                    !a & m
                };
                self.put(d, sz, r);
            }
            Fast::Lea { sz, d, a } => self.put(d, sz, self.ea_fast(&a) & mask(sz)),
            Fast::Load { sz, d, a } => {
                let Some(v) = self.load_fast(&a, sz as usize) else {
                    return Step::Slow;
                };
                self.put(d, sz, v);
            }
            Fast::Store { sz, s, a } => return self.store(&a, sz as usize, self.get(s, sz)),
            Fast::StoreImm { sz, v, a } => return self.store(&a, sz as usize, v),
            Fast::MovzxLoad { size, d, a } => {
                let Some(v) = self.load_fast(&a, size as usize) else {
                    return Step::Slow;
                };
                self.gpr[(d & 15) as usize] = v;
            }
            Fast::MovsxLoad { size, sz, d, a } => {
                let Some(v) = self.load_fast(&a, size as usize) else {
                    return Step::Slow;
                };
                self.put(d, sz, sext(v, usize::from(size)) & mask(sz));
            }
            Fast::MovzxRR { size, d, s } => self.gpr[(d & 15) as usize] = self.get(s, size),
            Fast::MovsxRR { size, sz, d, s } => {
                self.put(d, sz, sext(self.get(s, size), usize::from(size)) & mask(sz));
            }
            Fast::Jcc { cc, target } => {
                if self.flags.cond(cc) {
                    return Step::Branch(target);
                }
            }
            Fast::Jmp { target } => return Step::Branch(target),
            Fast::JmpR { s } => {
                let target = self.gpr[(s & 15) as usize];
                if !canonical(target) {
                    return Step::Slow;
                }
                return Step::Branch(target);
            }
            Fast::CallR { s } => {
                let target = self.gpr[(s & 15) as usize];
                if !canonical(target) || !self.push_fast(next) {
                    return Step::Slow;
                }
                return Step::Branch(target);
            }
            Fast::JmpM { a } | Fast::CallM { a } => {
                let Some(target) = self.load_fast(&a, 8).filter(|t| canonical(*t)) else {
                    return Step::Slow;
                };
                if matches!(f, Fast::CallM { .. }) && !self.push_fast(next) {
                    return Step::Slow;
                }
                return Step::Branch(target);
            }
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
            Fast::Shift { op, sz, d, count } => {
                let a = self.get(d, sz);
                let r = shift_dyn(op, &mut self.flags, a, u32::from(count), usize::from(sz));
                self.put(d, sz, r);
            }
            Fast::ShiftCl { op, sz, d } => {
                let count = self.gpr[1] as u32 & if sz == 8 { 0x3f } else { 0x1f };
                let a = self.get(d, sz);
                // A zero count changes no flag, but a 4-byte destination is still written.
                let r = if count == 0 {
                    a
                } else {
                    shift_dyn(op, &mut self.flags, a, count, usize::from(sz))
                };
                self.put(d, sz, r);
            }
            Fast::XLoad { size, x, align, a } => {
                let size = usize::from(size);
                let Some(p) = self.sse_ptr(&a, size, align, Access::Read) else {
                    return Step::Slow;
                };
                // SAFETY: `ptr64` returned a pointer with `size` readable bytes.
                let v = unsafe { read_host(p, size.min(8)) };
                let hi = if size == 16 {
                    // SAFETY: as above, 16 bytes.
                    unsafe { read_host(p.add(8), 8) }
                } else {
                    0
                };
                self.fpu.xmm[usize::from(x & 15)] = u128::from(hi) << 64 | u128::from(v);
            }
            Fast::XStore { size, x, align, a } => {
                let size = usize::from(size);
                let Some(p) = self.sse_ptr(&a, size, align, Access::Write) else {
                    return Step::Slow;
                };
                let v = self.fpu.xmm[usize::from(x & 15)];
                // SAFETY: `ptr64` returned a pointer with `size` writable bytes.
                unsafe { write_host(p, size.min(8), v as u64) };
                if size == 16 {
                    // SAFETY: as above, 16 bytes.
                    unsafe { write_host(p.add(8), 8, (v >> 64) as u64) };
                }
            }
            Fast::XMove { d, s } => {
                if !self.sse_ready() {
                    return Step::Slow;
                }
                self.fpu.xmm[usize::from(d & 15)] = self.fpu.xmm[usize::from(s & 15)];
            }
            Fast::AluHI { op, h, v } => {
                let i = usize::from(h & 3);
                let a = (self.gpr[i] >> 8) & 0xff;
                if let Some(r) = self.alu_value(op, 1, a, v) {
                    self.gpr[i] = (self.gpr[i] & !0xff00) | (r & 0xff) << 8;
                }
            }
            Fast::MovzxHigh { d, h } => {
                self.gpr[usize::from(d & 15)] = (self.gpr[usize::from(h & 3)] >> 8) & 0xff;
            }
            Fast::BtRI { sz, d, bit } => {
                let v = self.get(d, sz);
                self.flags.update(CF, (v >> bit) & CF);
            }
            Fast::BtMI { sz, bit, a } => {
                let Some(v) = self.load_fast(&a, sz as usize) else {
                    return Step::Slow;
                };
                self.flags.update(CF, (v >> bit) & CF);
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
            Fast::Setcc { cc, d } => self.put(d, 1, self.flags.cond(cc) as u64),
            Fast::Bswap { w64, d } => {
                let i = (d & 15) as usize;
                self.gpr[i] = if w64 {
                    self.gpr[i].swap_bytes()
                } else {
                    u64::from((self.gpr[i] as u32).swap_bytes())
                };
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
