//! x87 arithmetic, comparisons, FSQRT, FRNDINT, FSCALE, FXTRACT, FPREM/FPREM1 and the
//! transcendental instructions.

use super::{
    check, get, is_denormal80, is_nan80, is_snan80, is_unsupported, mem_to_f80, note, quiet80, rc,
    read_mem80, signal, st_index, status_fsw, underflow, X,
};
use crate::cpu::fpu::{sw, F80_INDEFINITE};
use crate::cpu::{flags, Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic, OpKind};
use rustc_apfloat::{Float, Round};
use std::cmp::Ordering;

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Fadd | Faddp | Fiadd | Fsub | Fsubp | Fisub | Fsubr | Fsubrp | Fisubr | Fmul | Fmulp
        | Fimul | Fdiv | Fdivp | Fidiv | Fdivr | Fdivrp | Fidivr => binary,
        Fcom | Fcomp | Fcompp | Fucom | Fucomp | Fucompp | Ficom | Ficomp | Ftst => fcom,
        Fcomi | Fcomip | Fucomi | Fucomip => fcomi,
        Fchs | Fabs => fsign,
        Fxam => fxam,
        Fsqrt | Frndint | F2xm1 | Fsin | Fcos => unary,
        _ => return None,
    })
}

pub(crate) const SIGN: u128 = 1 << 79;

#[derive(Clone, Copy)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

/// Whether FCW.PC asks for a single or double precision significand.
fn reduced_pc(cpu: &Cpu) -> bool {
    matches!((cpu.fpu.fcw >> 8) & 3, 0 | 2)
}

/// Rounds an extended result to FCW.PC (24 or 53 significand bits) when PC is not 64.
/// `sticky`: `v` is a truncated result and nonzero bits were lost below it (so that rounding
/// the exact result once, not twice, gives the answer).
fn precision(cpu: &Cpu, v: u128, rm: Round, fl: &mut u16, sticky: bool) -> u128 {
    let keep = match (cpu.fpu.fcw >> 8) & 3 {
        0 => 24,
        2 => 53,
        _ => return v,
    };
    let e = (v >> 64) as u16 & 0x7fff;
    if e == 0x7fff || v as u64 == 0 {
        return v;
    }
    let sig = v as u64;
    let drop = 64 - keep;
    let rem = sig & ((1u64 << drop) - 1);
    if rem == 0 && !sticky {
        return v;
    }
    *fl |= sw::PE;
    if e == 0 {
        // A tiny result that loses bits: masked underflow.
        *fl |= sw::UE;
    }
    let neg = v & SIGN != 0;
    let half = 1u64 << (drop - 1);
    let mut t = sig >> drop;
    let inc = match rm {
        Round::NearestTiesToEven => rem > half || (rem == half && (sticky || t & 1 == 1)),
        Round::TowardPositive => !neg,
        Round::TowardNegative => neg,
        _ => false,
    };
    let mut exp = u128::from(e);
    if inc {
        t += 1;
        if t >> keep != 0 {
            t >>= 1;
            exp += 1;
        } else if e == 0 && (t << drop) >> 63 != 0 {
            // A denormal rounded up to the smallest normal.
            exp = 1;
        }
    }
    (v & SIGN) | (exp << 64) | u128::from(t << drop)
}

/// A NaN or an unsupported encoding: the operand's handling precedes a denormal exception.
pub(crate) fn special(v: u128) -> bool {
    is_nan80(v) || is_unsupported(v)
}

/// The x87 NaN result of a two-operand operation: SNaN beats nothing, QNaN beats SNaN,
/// two of a kind: the larger significand.
pub(crate) fn nan_result(a: u128, b: u128) -> u128 {
    let r = match (is_nan80(a), is_nan80(b)) {
        (true, false) => a,
        (false, true) => b,
        _ => {
            let (qa, qb) = (!is_snan80(a), !is_snan80(b));
            if qa != qb {
                if qa {
                    a
                } else {
                    b
                }
            } else if (b as u64) > (a as u64) {
                b
            } else {
                a
            }
        }
    };
    quiet80(r)
}

/// `a op b` in extended precision: the result and the FSW flags (C1 = rounded up).
fn compute(cpu: &Cpu, op: Op, a: u128, b: u128) -> (u128, u16) {
    if is_unsupported(a) || is_unsupported(b) {
        return (F80_INDEFINITE, sw::IE);
    }
    if is_nan80(a) || is_nan80(b) {
        let fl = if is_snan80(a) || is_snan80(b) {
            sw::IE
        } else {
            0
        };
        return (nan_result(a, b), fl);
    }
    let mut fl = 0;
    if is_denormal80(a) || is_denormal80(b) {
        fl |= sw::DE;
    }
    let rm = rc(cpu);
    let (x, y) = (X::from_bits(a), X::from_bits(b));
    let go = |rm| match op {
        Op::Add => x.add_r(y, rm),
        Op::Sub => x.sub_r(y, rm),
        Op::Mul => x.mul_r(y, rm),
        Op::Div => x.div_r(y, rm),
    };
    let r = go(rm);
    let mut f = status_fsw(r.status);
    if f & sw::IE != 0 {
        return (F80_INDEFINITE, fl | sw::IE);
    }
    if f & sw::ZE != 0 {
        // Divide-by-zero has priority over the denormal-operand exception.
        fl &= !sw::DE;
    }
    if f & sw::PE != 0 && f & sw::OE == 0 && r.value.is_finite() {
        // apfloat reports an overflow that a directed rounding turns into the largest finite
        // value as merely inexact: it was one if rounding away from zero gives infinity.
        let away = if r.value.is_negative() {
            Round::TowardNegative
        } else {
            Round::TowardPositive
        };
        if go(away).value.is_infinite() {
            f |= sw::OE;
        }
    }
    fl |= f;
    let tz = go(Round::TowardZero);
    let mut v = if reduced_pc(cpu) && f & sw::OE == 0 && !tz.value.is_zero() {
        // Round the exact result once to PC: the truncated extended result plus a sticky bit.
        let sticky = tz.status.contains(rustc_apfloat::Status::INEXACT);
        precision(cpu, tz.value.to_bits(), rm, &mut fl, sticky)
    } else {
        precision(cpu, r.value.to_bits(), rm, &mut fl, false)
    };
    if fl & sw::PE != 0 {
        let t = X::from_bits(precision(
            cpu,
            tz.value.to_bits(),
            Round::TowardZero,
            &mut 0,
            false,
        ));
        if X::from_bits(v).abs() > t.abs() {
            fl |= sw::C1;
        }
    }
    v &= (1 << 80) - 1;
    (v, fl)
}

/// FADD/FSUB/FSUBR/FMUL/FDIV/FDIVR and their P and I forms.
fn binary(cpu: &mut Cpu, ins: &Instruction) -> R {
    use Mnemonic::*;
    check(cpu)?;
    let m = ins.mnemonic();
    let (op, rev) = match m {
        Fadd | Faddp | Fiadd => (Op::Add, false),
        Fsub | Fsubp | Fisub => (Op::Sub, false),
        Fsubr | Fsubrp | Fisubr => (Op::Sub, true),
        Fmul | Fmulp | Fimul => (Op::Mul, false),
        Fdiv | Fdivp | Fidiv => (Op::Div, false),
        _ => (Op::Div, true),
    };
    let pop = matches!(m, Faddp | Fsubp | Fsubrp | Fmulp | Fdivp | Fdivrp);
    // Destination ST(d) and the other operand.
    let (d, src, mfl) = if ins.op0_kind() == OpKind::Memory {
        let raw = read_mem80(cpu, ins)?;
        let (v, f) = mem_to_f80(ins, raw);
        (0, Some(v), f)
    } else {
        let d = st_index(ins.op0_register());
        let s = st_index(ins.op1_register());
        (d, get(cpu, s), 0)
    };
    note(cpu, ins);
    let dst = get(cpu, d);
    let (r, fl) = match (dst, src) {
        (Some(a), Some(b)) => {
            // A NaN or unsupported operand takes precedence over the memory operand's
            // denormal exception.
            let mfl = if special(a) || special(b) { 0 } else { mfl };
            let (a, b) = if rev { (b, a) } else { (a, b) };
            let (r, fl) = compute(cpu, op, a, b);
            // Divide-by-zero has priority over the denormal-operand exception.
            let mfl = if fl & sw::ZE != 0 { 0 } else { mfl };
            (r, fl | mfl)
        }
        _ => {
            if !underflow(cpu) {
                return Ok(());
            }
            (F80_INDEFINITE, 0)
        }
    };
    cpu.fpu.fsw &= !sw::C1;
    if !signal(cpu, fl) {
        return Ok(());
    }
    cpu.fpu.set_st(d, r);
    if pop {
        cpu.fpu.pop();
    }
    Ok(())
}

/// Compares two 80-bit values: None when unordered; the invalid flag per `quiet`.
fn compare(a: u128, b: u128, quiet: bool) -> (Option<Ordering>, u16) {
    if is_unsupported(a) || is_unsupported(b) {
        return (None, sw::IE);
    }
    if is_nan80(a) || is_nan80(b) {
        let fl = if !quiet || is_snan80(a) || is_snan80(b) {
            sw::IE
        } else {
            0
        };
        return (None, fl);
    }
    let fl = if is_denormal80(a) || is_denormal80(b) {
        sw::DE
    } else {
        0
    };
    (X::from_bits(a).partial_cmp(&X::from_bits(b)), fl)
}

fn fcom(cpu: &mut Cpu, ins: &Instruction) -> R {
    use Mnemonic::*;
    check(cpu)?;
    let m = ins.mnemonic();
    let quiet = matches!(m, Fucom | Fucomp | Fucompp);
    let pops = match m {
        Fcomp | Fucomp | Ficomp => 1,
        Fcompp | Fucompp => 2,
        _ => 0,
    };
    let (b, mfl) = if m == Ftst {
        (Some(0u128), 0)
    } else if ins.op_count() > 0 && ins.op0_kind() == OpKind::Memory {
        let raw = read_mem80(cpu, ins)?;
        let (v, f) = mem_to_f80(ins, raw);
        (Some(v), f)
    } else {
        let i = match ins.op_count() {
            0 => 1,
            1 => st_index(ins.op0_register()),
            _ => st_index(ins.op1_register()),
        };
        (get(cpu, i), 0)
    };
    note(cpu, ins);
    let a = get(cpu, 0);
    let (ord, fl) = match (a, b) {
        (Some(a), Some(b)) => {
            let mfl = if special(a) || special(b) { 0 } else { mfl };
            let (o, f) = compare(a, b, quiet);
            (o, f | mfl)
        }
        _ => {
            cpu.fpu.fsw &= !sw::C1;
            (None, sw::IE | sw::SF)
        }
    };
    if !signal(cpu, fl) {
        return Ok(());
    }
    let cc = match ord {
        None => sw::C3 | sw::C2 | sw::C0,
        Some(Ordering::Less) => sw::C0,
        Some(Ordering::Equal) => sw::C3,
        Some(Ordering::Greater) => 0,
    };
    let c1 = if fl & sw::SF != 0 {
        0
    } else {
        cpu.fpu.fsw & sw::C1
    };
    cpu.fpu.fsw = (cpu.fpu.fsw & !sw::CC) | cc | c1;
    if fl & sw::SF == 0 {
        cpu.fpu.fsw &= !sw::C1;
    }
    for _ in 0..pops {
        cpu.fpu.pop();
    }
    Ok(())
}

fn fcomi(cpu: &mut Cpu, ins: &Instruction) -> R {
    use Mnemonic::*;
    check(cpu)?;
    let m = ins.mnemonic();
    let quiet = matches!(m, Fucomi | Fucomip);
    let pop = matches!(m, Fcomip | Fucomip);
    let i = st_index(ins.op1_register());
    note(cpu, ins);
    let (ord, fl) = match (get(cpu, 0), get(cpu, i)) {
        (Some(a), Some(b)) => compare(a, b, quiet),
        _ => (None, sw::IE | sw::SF),
    };
    cpu.fpu.fsw &= !sw::C1;
    if !signal(cpu, fl) {
        return Ok(());
    }
    let f = match ord {
        None => flags::ZF | flags::PF | flags::CF,
        Some(Ordering::Less) => flags::CF,
        Some(Ordering::Equal) => flags::ZF,
        Some(Ordering::Greater) => 0,
    };
    cpu.flags.set_arith(f);
    if pop {
        cpu.fpu.pop();
    }
    Ok(())
}

fn fsign(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    match get(cpu, 0) {
        Some(v) => {
            let r = if ins.mnemonic() == Mnemonic::Fchs {
                v ^ SIGN
            } else {
                v & !SIGN
            };
            cpu.fpu.fsw &= !sw::C1;
            cpu.fpu.set_st(0, r);
        }
        None => {
            if underflow(cpu) {
                cpu.fpu.set_st(0, F80_INDEFINITE);
            }
        }
    }
    Ok(())
}

fn fxam(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let v = cpu.fpu.st(0);
    let c1 = if v & SIGN != 0 { sw::C1 } else { 0 };
    let e = (v >> 64) as u16 & 0x7fff;
    let sig = v as u64;
    let cc = if cpu.fpu.is_empty(0) {
        sw::C3 | sw::C0
    } else if is_unsupported(v) {
        0
    } else if e == 0x7fff {
        if sig << 1 == 0 {
            sw::C2 | sw::C0
        } else {
            sw::C0
        }
    } else if e == 0 {
        if sig == 0 {
            sw::C3
        } else {
            sw::C3 | sw::C2
        }
    } else {
        sw::C2
    };
    cpu.fpu.fsw = (cpu.fpu.fsw & !sw::CC) | cc | c1;
    Ok(())
}

/// Builds an 80-bit value from an f64 (exact).
pub(crate) fn from_f64(x: f64) -> u128 {
    super::from_small(x.to_bits(), 64).0
}

/// An 80-bit value as the nearest f64.
pub(crate) fn to_f64(v: u128) -> f64 {
    f64::from_bits(super::to_small(v, 64, Round::NearestTiesToEven).0)
}

/// Exact square root of a finite, positive, normal-or-denormal 80-bit value, rounded by `rm`.
fn sqrt80(v: u128, rm: Round) -> (u128, bool) {
    let mut e = i32::from((v >> 64) as u16 & 0x7fff);
    let mut sig = v as u64;
    if e == 0 {
        // Denormal: normalize (exponent of a denormal is that of 1).
        let lz = sig.leading_zeros();
        sig <<= lz;
        e = 1 - lz as i32;
    }
    // value = sig * 2^(e - 16383 - 63). Make the power even and scale sig to 2^126..2^128.
    let p = e - 16383 - 63;
    let (n, p) = if p & 1 != 0 {
        ((sig as u128) << 63, p - 63)
    } else {
        ((sig as u128) << 64, p - 64)
    };
    let r = n.isqrt();
    let rem = n - r * r;
    let mut root = r as u64;
    let half_up = rem > r;
    let inexact = rem != 0;
    let inc = inexact
        && match rm {
            Round::NearestTiesToEven => half_up,
            Round::TowardPositive => true,
            _ => false,
        };
    let mut exp = (p / 2) + 63 + 16383;
    if inc {
        root = root.wrapping_add(1);
        if root == 0 {
            root = 1 << 63;
            exp += 1;
        }
    }
    ((u128::from(exp as u16) << 64) | u128::from(root), inexact)
}

/// One-operand instructions on ST(0): FSQRT, FRNDINT, F2XM1, FSIN, FCOS.
fn unary(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let Some(v) = get(cpu, 0) else {
        if underflow(cpu) {
            cpu.fpu.set_st(0, F80_INDEFINITE);
        }
        return Ok(());
    };
    let m = ins.mnemonic();
    let rm = rc(cpu);
    let neg = v & SIGN != 0;
    let e = (v >> 64) as u16 & 0x7fff;
    let zero = e == 0 && v as u64 == 0;
    let inf = e == 0x7fff && (v as u64) << 1 == 0;
    let mut fl = 0;
    cpu.fpu.fsw &= !(sw::C1 | sw::C2);
    let r = if is_unsupported(v) {
        fl |= sw::IE;
        F80_INDEFINITE
    } else if is_nan80(v) {
        if is_snan80(v) {
            fl |= sw::IE;
        }
        quiet80(v)
    } else {
        // Invalid (square root of a negative) has priority over the denormal exception.
        if is_denormal80(v) && !(m == Mnemonic::Fsqrt && neg && !zero) {
            fl |= sw::DE;
        }
        match m {
            Mnemonic::Fsqrt => {
                if zero || (inf && !neg) {
                    v
                } else if neg {
                    fl |= sw::IE;
                    F80_INDEFINITE
                } else {
                    let (r, inexact) = sqrt80(v, rm);
                    if inexact {
                        fl |= sw::PE;
                    }
                    let r = precision(cpu, r, rm, &mut fl, false);
                    // C1 = rounded up (the result is positive).
                    let t = sqrt80(v, Round::TowardZero).0;
                    if fl & sw::PE != 0
                        && X::from_bits(r)
                            > X::from_bits(precision(cpu, t, Round::TowardZero, &mut 0, false))
                    {
                        fl |= sw::C1;
                    }
                    r
                }
            }
            Mnemonic::Frndint => {
                let r = X::from_bits(v).round_to_integral(rm);
                fl |= status_fsw(r.status) & (sw::PE | sw::IE);
                if r.value.abs() > X::from_bits(v).abs() {
                    fl |= sw::C1;
                }
                r.value.to_bits()
            }
            Mnemonic::F2xm1 => {
                if zero {
                    v
                } else {
                    fl |= sw::PE;
                    from_f64((to_f64(v) * std::f64::consts::LN_2).exp_m1())
                }
            }
            _ => {
                // FSIN/FCOS: out of range (|x| >= 2^63) sets C2 and leaves ST(0).
                if inf {
                    fl |= sw::IE;
                    F80_INDEFINITE
                } else if e >= 16383 + 63 {
                    cpu.fpu.fsw |= sw::C2;
                    return Ok(());
                } else if zero && m == Mnemonic::Fsin {
                    v
                } else {
                    fl |= sw::PE;
                    let x = to_f64(v);
                    from_f64(if m == Mnemonic::Fsin {
                        x.sin()
                    } else {
                        x.cos()
                    })
                }
            }
        }
    };
    if signal(cpu, fl) {
        cpu.fpu.set_st(0, r);
    }
    Ok(())
}
