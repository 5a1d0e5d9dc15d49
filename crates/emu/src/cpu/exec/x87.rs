//! x87 floating point with 80-bit extended precision.
//!
//! Values stay in their raw 80-bit form (see `fpu.rs`); arithmetic goes through
//! `rustc_apfloat`'s X87DoubleExtended (IEEE operations with every rounding mode and exact
//! status flags), square root and FPREM are exact integer algorithms. Precision control
//! (FCW.PC = single/double) rounds the truncated extended result plus a sticky bit once.
//! The transcendental instructions (F2XM1, FYL2X, FYL2XP1, FPTAN, FPATAN, FSIN, FCOS,
//! FSINCOS) are computed in f64 and are accurate to double precision only.
//!
//! Exceptions: flags accumulate in FSW; a masked one gets the IEEE masked response (stack
//! faults and invalid operations produce the QNaN indefinite); an unmasked IE/DE/ZE leaves
//! the destination unchanged and sets FSW.ES, and the next waiting x87 instruction raises #MF.

use crate::cpu::fpu::{sw, F80_INDEFINITE};
use crate::cpu::{cr, Cpu, Exception, Handler, R};
use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind, Register};
use rustc_apfloat::ieee::{Double, Single, X87DoubleExtended};
use rustc_apfloat::{Float, FloatConvert, Round, Status};

#[path = "x87_arith.rs"]
mod arith;
#[path = "x87_bcd.rs"]
mod bcd;
#[path = "x87_ctl.rs"]
mod ctl;
#[path = "x87_func.rs"]
mod func;

#[cfg(test)]
#[path = "x87_tests.rs"]
mod tests;

pub(crate) type X = X87DoubleExtended;

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Fld => fld,
        Fst | Fstp => fst,
        Fild => fild,
        Fist | Fistp | Fisttp => fist,
        Fld1 | Fldz | Fldpi | Fldl2e | Fldln2 | Fldl2t | Fldlg2 => fldconst,
        Fxch => fxch,
        Fcmovb | Fcmove | Fcmovbe | Fcmovu | Fcmovnb | Fcmovne | Fcmovnbe | Fcmovnu => fcmov,
        _ => {
            return arith::resolve(ins)
                .or_else(|| func::resolve(ins))
                .or_else(|| bcd::resolve(ins))
                .or_else(|| ctl::resolve(ins))
        }
    })
}

/// Device-not-available checks (CR0.EM/TS) and a pending unmasked exception (#MF).
pub(crate) fn check(cpu: &Cpu) -> R {
    if cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Exception::nm().into());
    }
    if cpu.fpu.fsw & sw::ES != 0 {
        return Err(Exception::new(Exception::MF).into());
    }
    Ok(())
}

/// Records the last instruction's opcode and instruction pointer (FOP/FIP/FCS) and, with a
/// memory operand, the data pointer.
pub(crate) fn note(cpu: &mut Cpu, ins: &Instruction) {
    cpu.fpu.fip = cpu.rip;
    cpu.fpu.fcs = cpu.seg[crate::cpu::Seg::Cs as usize].selector;
    if ins.op_count() > 0 && (0..ins.op_count()).any(|n| ins.op_kind(n) == OpKind::Memory) {
        cpu.fpu.fdp = cpu.ea(ins);
        cpu.fpu.fds = cpu.seg[cpu.mem_seg(ins) as usize].selector;
    }
}

/// The rounding mode in FCW.RC.
pub(crate) fn rc(cpu: &Cpu) -> Round {
    match (cpu.fpu.fcw >> 10) & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// Raises FSW exception flags `f` (plus C1 as given); returns true when the masked response
/// applies (no unmasked IE, DE or ZE among them).
pub(crate) fn signal(cpu: &mut Cpu, f: u16) -> bool {
    cpu.fpu.fsw |= f;
    cpu.fpu.update_es();
    f & !cpu.fpu.fcw & (sw::IE | sw::DE | sw::ZE) == 0
}

/// ST(i) or None with a stack-underflow exception raised (C1 = 0).
pub(crate) fn get(cpu: &mut Cpu, i: usize) -> Option<u128> {
    if cpu.fpu.is_empty(i) {
        cpu.fpu.fsw &= !sw::C1;
        None
    } else {
        Some(cpu.fpu.st(i))
    }
}

/// Handles a stack underflow: raises IE|SF; returns whether the masked response (store the
/// indefinite) applies.
pub(crate) fn underflow(cpu: &mut Cpu) -> bool {
    cpu.fpu.fsw &= !sw::C1;
    signal(cpu, sw::IE | sw::SF)
}

/// Pushes `v`, with the stack-overflow response if ST(7) is in use.
pub(crate) fn push(cpu: &mut Cpu, v: u128) {
    if !cpu.fpu.is_empty(7) {
        cpu.fpu.fsw |= sw::C1;
        if !signal(cpu, sw::IE | sw::SF) {
            return;
        }
        cpu.fpu.push(F80_INDEFINITE);
        return;
    }
    cpu.fpu.fsw &= !sw::C1;
    cpu.fpu.push(v);
}

/// ST index of an ST(i) register.
#[inline]
pub(crate) fn st_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::ST0 as usize) & 7
}

pub(crate) fn is_nan80(v: u128) -> bool {
    (v >> 64) as u16 & 0x7fff == 0x7fff && (v as u64) << 1 != 0
}
pub(crate) fn is_snan80(v: u128) -> bool {
    is_nan80(v) && (v as u64) & (1 << 62) == 0
}
/// Encodings the 387 and later reject (unnormals, pseudo-NaN/infinity): invalid operands.
pub(crate) fn is_unsupported(v: u128) -> bool {
    let e = (v >> 64) as u16 & 0x7fff;
    e != 0 && (v as u64) >> 63 == 0
}
pub(crate) fn is_denormal80(v: u128) -> bool {
    (v >> 64) as u16 & 0x7fff == 0 && v as u64 != 0
}
pub(crate) fn quiet80(v: u128) -> u128 {
    v | (1u128 << 62)
}

/// MXCSR-independent FSW flags from an apfloat status.
pub(crate) fn status_fsw(s: Status) -> u16 {
    let mut f = 0;
    if s.contains(Status::INVALID_OP) {
        f |= sw::IE;
    }
    if s.contains(Status::DIV_BY_ZERO) {
        f |= sw::ZE;
    }
    if s.contains(Status::OVERFLOW) {
        f |= sw::OE;
    }
    if s.contains(Status::UNDERFLOW) {
        f |= sw::UE;
    }
    if s.contains(Status::INEXACT) {
        f |= sw::PE;
    }
    f
}

/// Converts a memory float/integer of the instruction's memory size to 80 bits; the FSW
/// flags it raises (IE for SNaN, DE for denormals).
pub(crate) fn mem_to_f80(ins: &Instruction, raw: u128) -> (u128, u16) {
    match ins.memory_size() {
        MemorySize::Float32 => from_small(raw as u64, 32),
        MemorySize::Float64 => from_small(raw as u64, 64),
        MemorySize::Int16 => (int_to_f80(i64::from(raw as u16 as i16)), 0),
        MemorySize::Int32 => (int_to_f80(i64::from(raw as u32 as i32)), 0),
        MemorySize::Int64 => (int_to_f80(raw as u64 as i64), 0),
        _ => (raw & ((1 << 80) - 1), 0),
    }
}

/// An integer, exactly.
pub(crate) fn int_to_f80(v: i64) -> u128 {
    if v == 0 {
        return 0;
    }
    let sign = if v < 0 { 1u128 << 79 } else { 0 };
    let m = v.unsigned_abs();
    let lz = m.leading_zeros();
    let sig = m << lz;
    let exp = 16383 + 63 - lz;
    sign | (u128::from(exp) << 64) | u128::from(sig)
}

/// A single (bits 32) or double (64) to 80 bits (exact); NaNs keep their payload and stay
/// signaling (IE is reported), so that a two-NaN operation can still tell them apart; the
/// caller quiets the result.
pub(crate) fn from_small(x: u64, bits: u32) -> (u128, u16) {
    let (ebits, fbits) = if bits == 32 { (8, 23) } else { (11, 52) };
    let sign = u128::from((x >> (bits - 1)) & 1) << 79;
    let emax = (1u64 << ebits) - 1;
    let e = (x >> fbits) & emax;
    let f = x & ((1u64 << fbits) - 1);
    if e == emax {
        let sig = (1u64 << 63) | (f << (63 - fbits));
        let v = sign | (0x7fffu128 << 64) | u128::from(sig);
        let fl = if f != 0 && f >> (fbits - 1) == 0 {
            sw::IE
        } else {
            0
        };
        return (v, fl);
    }
    let bias = (1i64 << (ebits - 1)) - 1;
    if e == 0 {
        if f == 0 {
            return (sign, 0);
        }
        // Denormal: normalize.
        let lz = f.leading_zeros();
        let sig = f << lz;
        let exp = 16383 + (1 - bias) + (63 - i64::from(lz)) - i64::from(fbits);
        return (sign | ((exp as u128) << 64) | u128::from(sig), sw::DE);
    }
    let sig = (1u64 << 63) | (f << (63 - fbits));
    let exp = (e as i64) - bias + 16383;
    (sign | ((exp as u128) << 64) | u128::from(sig), 0)
}

/// 80 bits to a single or double, rounded by `rm`; flags raised.
pub(crate) fn to_small(v: u128, bits: u32, rm: Round) -> (u64, u16) {
    if is_unsupported(v) {
        return (
            if bits == 32 {
                0xffc0_0000
            } else {
                0xfff8_0000_0000_0000
            },
            sw::IE,
        );
    }
    if is_nan80(v) {
        let sign = ((v >> 79) & 1) as u64;
        let sig = v as u64;
        let fl = if is_snan80(v) { sw::IE } else { 0 };
        return if bits == 32 {
            ((sign << 31) | 0x7fc0_0000 | ((sig >> 40) & 0x7f_ffff), fl)
        } else {
            (
                (sign << 63) | 0x7ff8_0000_0000_0000 | ((sig >> 11) & 0xf_ffff_ffff_ffff),
                fl,
            )
        };
    }
    let x = X::from_bits(v);
    let conv = |rm: Round| -> (Status, u64, f64) {
        let mut loses = false;
        if bits == 32 {
            let r: rustc_apfloat::StatusAnd<Single> = x.convert_r(rm, &mut loses);
            let b = r.value.to_bits() as u32;
            (r.status, u64::from(b), f64::from(f32::from_bits(b).abs()))
        } else {
            let r: rustc_apfloat::StatusAnd<Double> = x.convert_r(rm, &mut loses);
            let b = r.value.to_bits() as u64;
            (r.status, b, f64::from_bits(b).abs())
        }
    };
    let (st, r, mag) = conv(rm);
    // No #D here: FST/FSTP do not signal denormal operands (Intel SDM, FST). C1 = rounded up.
    let mut fl = status_fsw(st);
    if fl & sw::PE != 0 && mag > conv(Round::TowardZero).2 {
        fl |= sw::C1;
    }
    if fl & (sw::PE | sw::OE) == sw::PE && mag.is_finite() {
        // apfloat reports an overflow that a directed rounding turns into the largest finite
        // value as merely inexact: it was one if rounding away from zero gives infinity.
        let away = if v & (1 << 79) != 0 {
            Round::TowardNegative
        } else {
            Round::TowardPositive
        };
        if conv(away).2.is_infinite() {
            fl |= sw::OE;
        }
    }
    (r, fl)
}

fn fld(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let (v, fl) = if ins.op0_kind() == OpKind::Memory {
        let raw = read_mem80(cpu, ins)?;
        let (v, fl) = mem_to_f80(ins, raw);
        let v = if fl & sw::IE != 0 { quiet80(v) } else { v };
        (v, fl)
    } else {
        match get(cpu, st_index(ins.op0_register())) {
            Some(v) => (v, 0),
            None => {
                note(cpu, ins);
                if underflow(cpu) {
                    push(cpu, F80_INDEFINITE);
                    // Underflow of the source wins over an overflow of the push: C1 = 0.
                    cpu.fpu.fsw &= !sw::C1;
                }
                return Ok(());
            }
        }
    };
    note(cpu, ins);
    // A stack overflow takes precedence over the operand's own exceptions (SNaN, denormal).
    if !cpu.fpu.is_empty(7) || signal(cpu, fl) {
        push(cpu, v);
    }
    Ok(())
}

/// Reads the memory operand (up to 10 bytes).
pub(crate) fn read_mem80(cpu: &mut Cpu, ins: &Instruction) -> R<u128> {
    let size = ins.memory_size().size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    if size > 8 {
        let mut b = [0u8; 16];
        cpu.read_bytes(seg, off, &mut b[..size.min(16)])?;
        Ok(u128::from_le_bytes(b))
    } else {
        Ok(u128::from(cpu.read(seg, off, size.max(1))?))
    }
}

fn write_mem80(cpu: &mut Cpu, ins: &Instruction, v: u128) -> R {
    let size = ins.memory_size().size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    if size > 8 {
        cpu.write_bytes(seg, off, &v.to_le_bytes()[..size.min(16)])
    } else {
        cpu.write(seg, off, size.max(1), v as u64)
    }
}

fn fst(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let pop = ins.mnemonic() == Mnemonic::Fstp;
    let src = get(cpu, 0);
    let rm = rc(cpu);
    if ins.op0_kind() == OpKind::Memory {
        let (out, fl) = match src {
            None => (None, sw::IE | sw::SF),
            Some(v) => match ins.memory_size() {
                MemorySize::Float32 => {
                    let (r, f) = to_small(v, 32, rm);
                    (Some(u128::from(r)), f)
                }
                MemorySize::Float64 => {
                    let (r, f) = to_small(v, 64, rm);
                    (Some(u128::from(r)), f)
                }
                _ => (Some(v), 0),
            },
        };
        let masked = fl & !cpu.fpu.fcw & (sw::IE | sw::DE | sw::ZE) == 0;
        let out = match out {
            Some(o) => o,
            None => match ins.memory_size() {
                MemorySize::Float32 => 0xffc0_0000,
                MemorySize::Float64 => 0xfff8_0000_0000_0000,
                _ => F80_INDEFINITE,
            },
        };
        if masked {
            write_mem80(cpu, ins, out)?;
        }
        note(cpu, ins);
        cpu.fpu.fsw &= !sw::C1;
        if signal(cpu, fl) && pop {
            cpu.fpu.pop();
        }
        return Ok(());
    }
    note(cpu, ins);
    let d = st_index(ins.op0_register());
    match src {
        Some(v) => {
            cpu.fpu.fsw &= !sw::C1;
            cpu.fpu.set_st(d, v);
        }
        None => {
            if !underflow(cpu) {
                return Ok(());
            }
            cpu.fpu.set_st(d, F80_INDEFINITE);
        }
    }
    if pop {
        cpu.fpu.pop();
    }
    Ok(())
}

fn fild(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let raw = read_mem80(cpu, ins)?;
    let (v, _) = mem_to_f80(ins, raw);
    note(cpu, ins);
    push(cpu, v);
    Ok(())
}

/// 80 bits to a signed integer of `width` bits with rounding `rm`: the value or None
/// (invalid: NaN, infinity, out of range), and whether it was inexact / rounded up.
pub(crate) fn f80_to_int(v: u128, width: u32, rm: Round) -> (Option<i64>, bool, bool) {
    if is_unsupported(v) || is_nan80(v) {
        return (None, false, false);
    }
    let x = X::from_bits(v);
    let mut exact = true;
    let r = x.to_i128_r(width as usize, rm, &mut exact);
    if r.status.contains(Status::INVALID_OP) {
        return (None, false, false);
    }
    let up = !exact && {
        let mut e2 = true;
        let t = x.to_i128_r(width as usize, Round::TowardZero, &mut e2);
        r.value.unsigned_abs() > t.value.unsigned_abs()
    };
    (Some(r.value as i64), !exact, up)
}

fn fist(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let width = (ins.memory_size().size() * 8) as u32;
    let pop = ins.mnemonic() != Mnemonic::Fist;
    let rm = if ins.mnemonic() == Mnemonic::Fisttp {
        Round::TowardZero
    } else {
        rc(cpu)
    };
    let src = get(cpu, 0);
    let indefinite = 1u64 << (width - 1);
    let (out, fl, up) = match src {
        None => (indefinite, sw::IE | sw::SF, false),
        Some(v) => match f80_to_int(v, width, rm) {
            (None, _, _) => (indefinite, sw::IE, false),
            (Some(i), inexact, up) => (i as u64, if inexact { sw::PE } else { 0 }, up),
        },
    };
    let masked = fl & !cpu.fpu.fcw & sw::IE == 0;
    if masked {
        let seg = cpu.mem_seg(ins);
        let off = cpu.ea(ins);
        cpu.write(seg, off, (width / 8) as usize, out)?;
    }
    note(cpu, ins);
    cpu.fpu.fsw &= !sw::C1;
    if up {
        cpu.fpu.fsw |= sw::C1;
    }
    if signal(cpu, fl) && pop {
        cpu.fpu.pop();
    }
    Ok(())
}

fn fldconst(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    // The constants are stored rounded to nearest; FLDPI etc. under RC=down/zero round the
    // last bit down as hardware does.
    let (sig, exp, round_down): (u64, u16, bool) = match ins.mnemonic() {
        Mnemonic::Fld1 => (1 << 63, 0x3fff, false),
        Mnemonic::Fldz => (0, 0, false),
        Mnemonic::Fldpi => (0xc90f_daa2_2168_c235, 0x4000, true),
        Mnemonic::Fldl2e => (0xb8aa_3b29_5c17_f0bc, 0x3fff, true),
        Mnemonic::Fldln2 => (0xb172_17f7_d1cf_79ac, 0x3ffe, true),
        Mnemonic::Fldl2t => (0xd49a_784b_cd1b_8afe, 0x4000, false),
        _ => (0x9a20_9a84_fbcf_f799, 0x3ffd, true), // FLDLG2
    };
    let mut sig = sig;
    let r = rc(cpu);
    if round_down && matches!(r, Round::TowardNegative | Round::TowardZero) {
        sig -= 1;
    }
    if ins.mnemonic() == Mnemonic::Fldl2t && r == Round::TowardPositive {
        sig += 1;
    }
    note(cpu, ins);
    push(cpu, (u128::from(exp) << 64) | u128::from(sig));
    Ok(())
}

fn fxch(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let i = if ins.op_count() > 1 {
        st_index(ins.op1_register())
    } else {
        1
    };
    note(cpu, ins);
    let (a, b) = (get(cpu, 0), get(cpu, i));
    if a.is_none() || b.is_none() {
        if !underflow(cpu) {
            return Ok(());
        }
    } else {
        cpu.fpu.fsw &= !sw::C1;
    }
    cpu.fpu.set_st(0, b.unwrap_or(F80_INDEFINITE));
    cpu.fpu.set_st(i, a.unwrap_or(F80_INDEFINITE));
    Ok(())
}

fn fcmov(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let i = st_index(ins.op1_register());
    let f = &cpu.flags;
    let cond = match ins.mnemonic() {
        Mnemonic::Fcmovb => f.cf(),
        Mnemonic::Fcmove => f.zf(),
        Mnemonic::Fcmovbe => f.cf() || f.zf(),
        Mnemonic::Fcmovu => f.pf(),
        Mnemonic::Fcmovnb => !f.cf(),
        Mnemonic::Fcmovne => !f.zf(),
        Mnemonic::Fcmovnbe => !f.cf() && !f.zf(),
        _ => !f.pf(),
    };
    note(cpu, ins);
    let (a, b) = (get(cpu, 0), get(cpu, i));
    if a.is_none() || b.is_none() {
        if underflow(cpu) {
            cpu.fpu.set_st(0, F80_INDEFINITE);
        }
        return Ok(());
    }
    if let (true, Some(v)) = (cond, b) {
        cpu.fpu.set_st(0, v);
    }
    Ok(())
}
