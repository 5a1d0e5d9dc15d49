//! SSE/SSE2 conversions between integers, singles and doubles (scalar, packed, and the MMX
//! forms). MXCSR.RC is honoured (the CVTT forms truncate); overflow and NaN give the
//! "integer indefinite" (the most negative integer) with IE.

use super::fp::{input, raise, round_mode, status_flags, P};
use super::{check, check_sse, lane, rd, set_lane, wr};
use crate::cpu::fpu::mx;
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic, OpKind};
use rustc_apfloat::ieee::{Double, Single};
use rustc_apfloat::{Float, FloatConvert, Round};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Cvtsi2ss => cvtsi2ss,
        Cvtsi2sd => cvtsi2sd,
        Cvtss2si => cvtss2si,
        Cvttss2si => cvttss2si,
        Cvtsd2si => cvtsd2si,
        Cvttsd2si => cvttsd2si,
        Cvtss2sd => cvtss2sd,
        Cvtsd2ss => cvtsd2ss,
        Cvtps2pd => cvtps2pd,
        Cvtpd2ps => cvtpd2ps,
        Cvtdq2ps => cvtdq2ps,
        Cvtps2dq => cvtps2dq,
        Cvttps2dq => cvttps2dq,
        Cvtdq2pd => cvtdq2pd,
        Cvtpd2dq => cvtpd2dq,
        Cvttpd2dq => cvttpd2dq,
        Cvtpi2ps => cvtpi2ps,
        Cvtps2pi => cvtps2pi,
        Cvttps2pi => cvttps2pi,
        Cvtpi2pd => cvtpi2pd,
        Cvtpd2pi => cvtpd2pi,
        Cvttpd2pi => cvttpd2pi,
        _ => return None,
    })
}

/// Float (`p`) to a signed integer of `width` bits.
pub(crate) fn f2i(p: P, x: u64, width: u32, trunc: bool, mxcsr: u32, fl: &mut u32) -> u64 {
    // Conversions to integers do not raise the denormal exception (DAZ still applies).
    let mut no_de = 0;
    let x = input(p, x, mxcsr, &mut no_de);
    let indefinite = 1u64 << (width - 1);
    if p.is_nan(x) {
        *fl |= mx::IE;
        return indefinite;
    }
    let rm = if trunc {
        Round::TowardZero
    } else {
        round_mode(mxcsr)
    };
    let mut exact = true;
    let r = match p {
        P::S => Single::from_bits(x.into()).to_i128_r(width as usize, rm, &mut exact),
        P::D => Double::from_bits(x.into()).to_i128_r(width as usize, rm, &mut exact),
    };
    let f = status_flags(r.status);
    if f & mx::IE != 0 {
        *fl |= mx::IE;
        return indefinite;
    }
    if !exact {
        *fl |= mx::PE;
    }
    let m = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    r.value as u64 & m
}

/// A signed integer to float (`p`), rounded by MXCSR.RC.
pub(crate) fn i2f(p: P, v: i64, mxcsr: u32, fl: &mut u32) -> u64 {
    let rm = round_mode(mxcsr);
    let (st, bits) = match p {
        P::S => {
            let r = Single::from_i128_r(v.into(), rm);
            (r.status, r.value.to_bits() as u64)
        }
        P::D => {
            let r = Double::from_i128_r(v.into(), rm);
            (r.status, r.value.to_bits() as u64)
        }
    };
    *fl |= status_flags(st);
    bits
}

/// Single to double or double to single.
pub(crate) fn f2f(from: P, x: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    let x = input(from, x, mxcsr, fl);
    if from.is_nan(x) {
        if from.is_snan(x) {
            *fl |= mx::IE;
        }
        return match from {
            P::S => {
                let sign = (x >> 31) << 63;
                sign | 0x7ff8_0000_0000_0000 | ((x & 0x3f_ffff) << 29)
            }
            P::D => {
                let sign = (x >> 63) << 31;
                sign | 0x7fc0_0000 | ((x >> 29) & 0x3f_ffff)
            }
        };
    }
    let rm = round_mode(mxcsr);
    let mut loses = false;
    match from {
        P::S => {
            let r: rustc_apfloat::StatusAnd<Double> =
                Single::from_bits(x.into()).convert_r(rm, &mut loses);
            *fl |= status_flags(r.status);
            r.value.to_bits() as u64
        }
        P::D => {
            let r: rustc_apfloat::StatusAnd<Single> =
                Double::from_bits(x.into()).convert_r(rm, &mut loses);
            *fl |= status_flags(r.status);
            // A directed-rounding overflow (to the largest single) is reported as inexact
            // only by rustc_apfloat.
            if x & !P::D.sign() >= 0x47f0_0000_0000_0000 && x & !P::D.sign() < 0x7ff0_0000_0000_0000
            {
                *fl |= mx::OE | mx::PE;
            }
            let b = r.value.to_bits() as u64;
            if mxcsr & mx::FZ != 0 && P::S.is_denormal(b) && mxcsr & (mx::UE << mx::MASK_SHIFT) != 0
            {
                *fl |= mx::UE | mx::PE;
                return b & P::S.sign();
            }
            b
        }
    }
}

/// The integer width of a general-register operand `n` (32 or 64 bits).
fn int_width(ins: &Instruction, n: u32) -> u32 {
    match ins.op_kind(n) {
        OpKind::Register => (ins.op_register(n).size() * 8) as u32,
        _ => (ins.memory_size().size() * 8) as u32,
    }
}

fn cvtsi2(cpu: &mut Cpu, ins: &Instruction, p: P) -> R {
    check_sse(cpu)?;
    let v = rd(cpu, ins, 1)? as u64;
    let v = if int_width(ins, 1) == 64 {
        v as i64
    } else {
        i64::from(v as i32)
    };
    let mut fl = 0;
    let r = i2f(p, v, cpu.fpu.mxcsr, &mut fl);
    raise(cpu, fl)?;
    let d = super::xmm_index(ins.op0_register());
    cpu.fpu.xmm[d] = set_lane(cpu.fpu.xmm[d], p.bits(), 0, r);
    Ok(())
}
fn cvtsi2ss(cpu: &mut Cpu, ins: &Instruction) -> R {
    cvtsi2(cpu, ins, P::S)
}
fn cvtsi2sd(cpu: &mut Cpu, ins: &Instruction) -> R {
    cvtsi2(cpu, ins, P::D)
}

fn cvt2si(cpu: &mut Cpu, ins: &Instruction, p: P, trunc: bool) -> R {
    check_sse(cpu)?;
    let x = lane(rd(cpu, ins, 1)?, p.bits(), 0);
    let width = int_width(ins, 0);
    let mut fl = 0;
    let r = f2i(p, x, width, trunc, cpu.fpu.mxcsr, &mut fl);
    raise(cpu, fl)?;
    cpu.set_reg(ins.op0_register(), r);
    Ok(())
}
fn cvtss2si(cpu: &mut Cpu, ins: &Instruction) -> R {
    cvt2si(cpu, ins, P::S, false)
}
fn cvttss2si(cpu: &mut Cpu, ins: &Instruction) -> R {
    cvt2si(cpu, ins, P::S, true)
}
fn cvtsd2si(cpu: &mut Cpu, ins: &Instruction) -> R {
    cvt2si(cpu, ins, P::D, false)
}
fn cvttsd2si(cpu: &mut Cpu, ins: &Instruction) -> R {
    cvt2si(cpu, ins, P::D, true)
}

/// A lane-by-lane conversion: `n` lanes of `in_bits` from op1 to lanes of `out_bits`, which
/// replace the low lanes of `base(op0)`.
fn convert(
    cpu: &mut Cpu,
    ins: &Instruction,
    n: u32,
    in_bits: u32,
    out_bits: u32,
    keep_dest: bool,
    f: impl Fn(u64, u32, &mut u32) -> u64,
) -> R {
    let mmx = check(cpu, ins)?;
    let src = rd(cpu, ins, 1)?;
    let dst = rd(cpu, ins, 0)?;
    let m = cpu.fpu.mxcsr;
    let mut fl = 0;
    let mut r = if keep_dest { dst } else { 0 };
    for i in 0..n {
        r = set_lane(r, out_bits, i, f(lane(src, in_bits, i), m, &mut fl));
    }
    raise(cpu, fl)?;
    if mmx {
        cpu.fpu.enter_mmx();
    }
    wr(cpu, ins, 0, r)
}

fn cvtss2sd(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 1, 32, 64, true, |x, m, fl| f2f(P::S, x, m, fl))
}
fn cvtsd2ss(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 1, 64, 32, true, |x, m, fl| f2f(P::D, x, m, fl))
}
fn cvtps2pd(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 32, 64, false, |x, m, fl| f2f(P::S, x, m, fl))
}
fn cvtpd2ps(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 64, 32, false, |x, m, fl| f2f(P::D, x, m, fl))
}
fn cvtdq2ps(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 4, 32, 32, false, |x, m, fl| {
        i2f(P::S, i64::from(x as i32), m, fl)
    })
}
fn cvtps2dq(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 4, 32, 32, false, |x, m, fl| {
        f2i(P::S, x, 32, false, m, fl)
    })
}
fn cvttps2dq(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 4, 32, 32, false, |x, m, fl| {
        f2i(P::S, x, 32, true, m, fl)
    })
}
fn cvtdq2pd(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 32, 64, false, |x, m, fl| {
        i2f(P::D, i64::from(x as i32), m, fl)
    })
}
fn cvtpd2dq(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 64, 32, false, |x, m, fl| {
        f2i(P::D, x, 32, false, m, fl)
    })
}
fn cvttpd2dq(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 64, 32, false, |x, m, fl| {
        f2i(P::D, x, 32, true, m, fl)
    })
}
fn cvtpi2ps(cpu: &mut Cpu, ins: &Instruction) -> R {
    // The XMM destination keeps its upper half; only a register source is an MMX access.
    convert(cpu, ins, 2, 32, 32, true, |x, m, fl| {
        i2f(P::S, i64::from(x as i32), m, fl)
    })
}
fn cvtps2pi(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 32, 32, false, |x, m, fl| {
        f2i(P::S, x, 32, false, m, fl)
    })
}
fn cvttps2pi(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 32, 32, false, |x, m, fl| {
        f2i(P::S, x, 32, true, m, fl)
    })
}
fn cvtpi2pd(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 32, 64, false, |x, m, fl| {
        i2f(P::D, i64::from(x as i32), m, fl)
    })
}
fn cvtpd2pi(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 64, 32, false, |x, m, fl| {
        f2i(P::D, x, 32, false, m, fl)
    })
}
fn cvttpd2pi(cpu: &mut Cpu, ins: &Instruction) -> R {
    convert(cpu, ins, 2, 64, 32, false, |x, m, fl| {
        f2i(P::D, x, 32, true, m, fl)
    })
}
