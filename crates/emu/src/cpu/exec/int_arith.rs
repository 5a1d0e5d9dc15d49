//! Arithmetic and logic: ADD ADC SUB SBB AND OR XOR CMP TEST, INC DEC NOT NEG, MUL IMUL DIV
//! IDIV, and the sign extensions of the accumulator (CBW ... CQO).

use super::{form, Form};
use crate::cpu::flags::Flags;
use crate::cpu::operand::{bits, sext, size_mask};
use crate::cpu::{Cpu, Exception, Handler, R};
use iced_x86::{Code, Instruction, Mnemonic, Register};

// Binary operations, numbered as the /digit of opcodes 80..83 (plus TEST).
const ADD: u8 = 0;
const OR: u8 = 1;
const ADC: u8 = 2;
const SBB: u8 = 3;
const AND: u8 = 4;
const SUB: u8 = 5;
const XOR: u8 = 6;
const CMP: u8 = 7;
const TEST: u8 = 8;

// Unary operations.
const INC: u8 = 0;
const DEC: u8 = 1;
const NOT: u8 = 2;
const NEG: u8 = 3;

pub(super) fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    Some(match ins.mnemonic() {
        M::Add => alu_form::<ADD>(ins)?,
        M::Or => alu_form::<OR>(ins)?,
        M::Adc => alu_form::<ADC>(ins)?,
        M::Sbb => alu_form::<SBB>(ins)?,
        M::And => alu_form::<AND>(ins)?,
        M::Sub => alu_form::<SUB>(ins)?,
        M::Xor => alu_form::<XOR>(ins)?,
        M::Cmp => alu_form::<CMP>(ins)?,
        M::Test => alu_form::<TEST>(ins)?,
        M::Inc => unary_form::<INC>(ins)?,
        M::Dec => unary_form::<DEC>(ins)?,
        M::Not => unary_form::<NOT>(ins)?,
        M::Neg => unary_form::<NEG>(ins)?,
        M::Mul => mul,
        M::Imul if ins.op_count() == 1 => imul1,
        M::Imul => imul_n,
        M::Div => div,
        M::Idiv => idiv,
        M::Cbw | M::Cwde | M::Cdqe => sext_acc,
        M::Cwd | M::Cdq | M::Cqo => sext_dx,
        _ => return None,
    })
}

fn alu_form<const OP: u8>(ins: &Instruction) -> Option<Handler> {
    Some(match (form(ins, 0), form(ins, 1)) {
        (Form::Reg, Form::Reg) => alu_rr::<OP>,
        (Form::Reg, Form::Imm) => alu_ri::<OP>,
        (Form::Reg, Form::Mem) => alu_rm::<OP>,
        (Form::Mem, Form::Reg) => alu_m::<OP, false>,
        (Form::Mem, Form::Imm) => alu_m::<OP, true>,
        _ => return None,
    })
}

fn unary_form<const OP: u8>(ins: &Instruction) -> Option<Handler> {
    Some(match form(ins, 0) {
        Form::Reg => unary_r::<OP>,
        Form::Mem => unary_m::<OP>,
        _ => return None,
    })
}

/// Whether the operation writes its destination (CMP and TEST do not).
#[inline(always)]
const fn writes(op: u8) -> bool {
    op != CMP && op != TEST
}

/// Performs a binary operation on `bits`-wide operands (`b` already truncated), records its
/// flags in `f` and returns the truncated result.
#[inline(always)]
fn alu<const OP: u8>(f: &mut Flags, a: u64, b: u64, bits: u32) -> u64 {
    let m = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    match OP {
        ADD => {
            let r = a.wrapping_add(b) & m;
            f.set_add(a, b, false, r, bits);
            r
        }
        ADC => {
            let c = f.cf();
            let r = a.wrapping_add(b).wrapping_add(c as u64) & m;
            f.set_add(a, b, c, r, bits);
            r
        }
        SUB | CMP => {
            let r = a.wrapping_sub(b) & m;
            f.set_sub(a, b, false, r, bits);
            r
        }
        SBB => {
            let c = f.cf();
            let r = a.wrapping_sub(b).wrapping_sub(c as u64) & m;
            f.set_sub(a, b, c, r, bits);
            r
        }
        AND | TEST => {
            let r = a & b;
            f.set_logic(r, bits);
            r
        }
        OR => {
            let r = a | b;
            f.set_logic(r, bits);
            r
        }
        _ => {
            let r = a ^ b;
            f.set_logic(r, bits);
            r
        }
    }
}

fn alu_rr<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let a = cpu.reg(d);
    let b = cpu.reg(ins.op1_register());
    let r = alu::<OP>(&mut cpu.flags, a, b, bits(d.size()));
    if writes(OP) {
        cpu.set_reg(d, r);
    }
    Ok(())
}

fn alu_ri<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let size = d.size();
    let a = cpu.reg(d);
    let b = ins.immediate(1) & size_mask(size);
    let r = alu::<OP>(&mut cpu.flags, a, b, bits(size));
    if writes(OP) {
        cpu.set_reg(d, r);
    }
    Ok(())
}

fn alu_rm<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let size = d.size();
    let off = cpu.ea(ins);
    let b = cpu.read(cpu.mem_seg(ins), off, size)?;
    let a = cpu.reg(d);
    let r = alu::<OP>(&mut cpu.flags, a, b, bits(size));
    if writes(OP) {
        cpu.set_reg(d, r);
    }
    Ok(())
}

/// Memory destination; the source is a register or (IMM) an immediate.
fn alu_m<const OP: u8, const IMM: bool>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = ins.memory_size().size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let a = cpu.read(seg, off, size)?;
    let b = if IMM {
        ins.immediate(1) & size_mask(size)
    } else {
        cpu.reg(ins.op1_register())
    };
    let mut f = cpu.flags;
    let r = alu::<OP>(&mut f, a, b, bits(size));
    if writes(OP) {
        cpu.write(seg, off, size, r)?;
    }
    cpu.flags = f;
    Ok(())
}

#[inline(always)]
fn unary<const OP: u8>(f: &mut Flags, a: u64, size: usize) -> u64 {
    let m = size_mask(size);
    let b = bits(size);
    match OP {
        INC => {
            let r = a.wrapping_add(1) & m;
            f.set_incdec(false, a, r, b);
            r
        }
        DEC => {
            let r = a.wrapping_sub(1) & m;
            f.set_incdec(true, a, r, b);
            r
        }
        NOT => !a & m,
        _ => {
            let r = a.wrapping_neg() & m;
            f.set_sub(0, a, false, r, b);
            r
        }
    }
}

fn unary_r<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let a = cpu.reg(d);
    let r = unary::<OP>(&mut cpu.flags, a, d.size());
    cpu.set_reg(d, r);
    Ok(())
}

fn unary_m<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = ins.memory_size().size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let a = cpu.read(seg, off, size)?;
    let mut f = cpu.flags;
    let r = unary::<OP>(&mut f, a, size);
    cpu.write(seg, off, size, r)?;
    cpu.flags = f;
    Ok(())
}

/// The double-width accumulator of MUL/DIV: AX, DX:AX, EDX:EAX or RDX:RAX.
#[inline]
fn load_wide(cpu: &Cpu, size: usize) -> u128 {
    let a = cpu.gpr[0];
    let d = cpu.gpr[2];
    match size {
        1 => u128::from(a & 0xffff),
        2 => u128::from(((d & 0xffff) << 16) | (a & 0xffff)),
        4 => u128::from(((d & 0xffff_ffff) << 32) | (a & 0xffff_ffff)),
        _ => (u128::from(d) << 64) | u128::from(a),
    }
}

/// Stores a double-width product (`hi:lo`), or a quotient (`lo`) and remainder (`hi`): AH:AL,
/// DX:AX, EDX:EAX or RDX:RAX.
#[inline]
fn store_pair(cpu: &mut Cpu, size: usize, lo: u64, hi: u64) {
    match size {
        1 => cpu.set_reg(Register::AX, ((hi & 0xff) << 8) | (lo & 0xff)),
        2 => {
            cpu.set_reg(Register::AX, lo);
            cpu.set_reg(Register::DX, hi);
        }
        4 => {
            cpu.set_reg(Register::EAX, lo);
            cpu.set_reg(Register::EDX, hi);
        }
        _ => {
            cpu.gpr[0] = lo;
            cpu.gpr[2] = hi;
        }
    }
}

fn mul(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    let src = cpu.read_op(ins, 0)?;
    let a = cpu.gpr[0] & size_mask(size);
    let p = u128::from(a) * u128::from(src);
    let m = size_mask(size);
    let lo = p as u64 & m;
    let hi = (p >> bits(size)) as u64 & m;
    store_pair(cpu, size, lo, hi);
    let c = hi != 0;
    cpu.flags.set_result(lo, bits(size), c, c, false);
    Ok(())
}

/// One-operand IMUL: the accumulator times the operand, double width.
fn imul1(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    let src = cpu.read_op(ins, 0)?;
    let a = sext(cpu.gpr[0], size) as i64;
    let p = i128::from(a) * i128::from(sext(src, size) as i64);
    let m = size_mask(size);
    let lo = p as u64 & m;
    let hi = (p >> bits(size)) as u64 & m;
    store_pair(cpu, size, lo, hi);
    let c = i128::from(sext(lo, size) as i64) != p;
    cpu.flags.set_result(lo, bits(size), c, c, false);
    Ok(())
}

/// Two- and three-operand IMUL: a truncated product in a register.
fn imul_n(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let size = d.size();
    let (a, b) = if ins.op_count() == 3 {
        (cpu.read_op(ins, 1)?, ins.immediate(2))
    } else {
        (cpu.reg(d), cpu.read_op(ins, 1)?)
    };
    let p = i128::from(sext(a, size) as i64) * i128::from(sext(b, size) as i64);
    let res = p as u64 & size_mask(size);
    let c = i128::from(sext(res, size) as i64) != p;
    cpu.set_reg(d, res);
    cpu.flags.set_result(res, bits(size), c, c, false);
    Ok(())
}

fn div(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    let d = u128::from(cpu.read_op(ins, 0)? & size_mask(size));
    if d == 0 {
        return Err(Exception::de().into());
    }
    let n = load_wide(cpu, size);
    let q = n / d;
    let r = n % d;
    if q > u128::from(size_mask(size)) {
        return Err(Exception::de().into());
    }
    store_pair(cpu, size, q as u64, r as u64);
    Ok(())
}

fn idiv(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    let d = i128::from(sext(cpu.read_op(ins, 0)?, size) as i64);
    if d == 0 {
        return Err(Exception::de().into());
    }
    // Sign-extend the double-width dividend from 2 * bits.
    let shift = 128 - 2 * bits(size);
    let n = ((load_wide(cpu, size) << shift) as i128) >> shift;
    let (Some(q), Some(r)) = (n.checked_div(d), n.checked_rem(d)) else {
        return Err(Exception::de().into());
    };
    let half = 1i128 << (bits(size) - 1);
    if q < -half || q >= half {
        return Err(Exception::de().into());
    }
    let m = size_mask(size);
    store_pair(cpu, size, q as u64 & m, r as u64 & m);
    Ok(())
}

/// CBW, CWDE, CDQE: sign-extends the lower half of the accumulator into all of it.
fn sext_acc(cpu: &mut Cpu, ins: &Instruction) -> R {
    let a = cpu.gpr[0];
    match ins.code() {
        Code::Cbw => cpu.set_reg(Register::AX, sext(a, 1)),
        Code::Cwde => cpu.set_reg(Register::EAX, sext(a, 2)),
        _ => cpu.gpr[0] = sext(a, 4),
    }
    Ok(())
}

/// CWD, CDQ, CQO: fills DX/EDX/RDX with the sign of AX/EAX/RAX.
fn sext_dx(cpu: &mut Cpu, ins: &Instruction) -> R {
    let (size, reg) = match ins.code() {
        Code::Cwd => (2, Register::DX),
        Code::Cdq => (4, Register::EDX),
        _ => (8, Register::RDX),
    };
    let neg = (sext(cpu.gpr[0], size) as i64) < 0;
    cpu.set_reg(reg, if neg { u64::MAX } else { 0 });
    Ok(())
}
