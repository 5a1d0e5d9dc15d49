//! x87 FSCALE, FXTRACT, FPREM/FPREM1 and the two-operand transcendental instructions
//! (FYL2X, FYL2XP1, FPATAN, FPTAN, FSINCOS; computed in f64).

use super::arith::{from_f64, nan_result, to_f64, SIGN};
use super::{
    check, get, is_denormal80, is_nan80, is_snan80, is_unsupported, note, push, quiet80, rc,
    signal, underflow, X,
};
use crate::cpu::fpu::{sw, F80_INDEFINITE};
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::{Float, Round};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Fscale => fscale,
        Fxtract => fxtract,
        Fprem | Fprem1 => fprem,
        Fyl2x | Fyl2xp1 | Fpatan => fyl2x,
        Fptan | Fsincos => fptan,
        _ => return None,
    })
}

/// FSCALE: ST(0) * 2^trunc(ST(1)).
fn fscale(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let (Some(a), Some(b)) = (get(cpu, 0), get(cpu, 1)) else {
        if underflow(cpu) {
            cpu.fpu.set_st(0, F80_INDEFINITE);
        }
        return Ok(());
    };
    cpu.fpu.fsw &= !sw::C1;
    let mut fl = 0;
    let r = if is_unsupported(a) || is_unsupported(b) {
        fl |= sw::IE;
        F80_INDEFINITE
    } else if is_nan80(a) || is_nan80(b) {
        if is_snan80(a) || is_snan80(b) {
            fl |= sw::IE;
        }
        nan_result(a, b)
    } else {
        let x = X::from_bits(a);
        let y = X::from_bits(b);
        if is_denormal80(a) || is_denormal80(b) {
            fl |= sw::DE;
        }
        if y.is_infinite() {
            // +inf scales to infinity (0 * inf invalid), -inf to zero (inf * 0 invalid).
            let bad = if y.is_negative() {
                x.is_infinite()
            } else {
                x.is_zero()
            };
            if bad {
                fl |= sw::IE;
                F80_INDEFINITE
            } else if x.is_zero() || x.is_infinite() {
                a
            } else if y.is_negative() {
                a & SIGN
            } else {
                (a & SIGN) | (0x7fffu128 << 64) | (1u128 << 63)
            }
        } else if x.is_zero() || x.is_infinite() {
            a
        } else {
            let mut ex = true;
            let n = y.to_i128_r(32, Round::TowardZero, &mut ex).value;
            let n = n.clamp(-100_000, 100_000) as i64;
            let (r, f) = scale80(a, n, rc(cpu));
            fl |= f;
            r
        }
    };
    if signal(cpu, fl) {
        cpu.fpu.set_st(0, r);
    }
    Ok(())
}

/// A finite nonzero 80-bit value times 2^n, rounded by `rm` (no precision control); the FSW
/// flags (OE, UE, PE, C1 = rounded up).
fn scale80(v: u128, n: i64, rm: Round) -> (u128, u16) {
    let sign = v & SIGN;
    let neg = sign != 0;
    let mut sig = v as u64;
    let mut e = i64::from((v >> 64) as u16 & 0x7fff);
    if e == 0 {
        let lz = sig.leading_zeros();
        sig <<= lz;
        e = 1 - i64::from(lz);
    }
    let ne = e + n;
    // Whether rounding moves away from zero, given the discarded bits.
    let up = |half: bool, more: bool, odd: bool| match rm {
        Round::NearestTiesToEven => half && (more || odd),
        Round::TowardPositive => !neg && (half || more),
        Round::TowardNegative => neg && (half || more),
        _ => false,
    };
    if ne >= 0x7fff {
        let fl = sw::OE | sw::PE;
        return if up(true, true, true) {
            (sign | (0x7fffu128 << 64) | (1u128 << 63), fl | sw::C1)
        } else {
            (sign | (0x7ffeu128 << 64) | u128::from(u64::MAX), fl)
        };
    }
    if ne >= 1 {
        return (sign | ((ne as u128) << 64) | u128::from(sig), 0);
    }
    // Denormal result: shift right by 1 - ne.
    let shift = (1 - ne) as u32;
    let full = u128::from(sig) << 64;
    let (shifted, sticky) = if shift >= 128 {
        (0, full != 0)
    } else {
        (full >> shift, full & ((1u128 << shift) - 1) != 0)
    };
    let kept = (shifted >> 64) as u64;
    let rem = shifted as u64;
    let half = rem >> 63 != 0;
    let more = rem << 1 != 0 || sticky;
    if !half && !more {
        return (sign | u128::from(kept), 0);
    }
    let mut fl = sw::UE | sw::PE;
    let mut r = sign | u128::from(kept);
    if up(half, more, kept & 1 != 0) {
        fl |= sw::C1;
        let k = kept + 1; // kept < 2^63: no overflow
        r = sign
            | if k >> 63 != 0 {
                (1u128 << 64) | u128::from(k)
            } else {
                u128::from(k)
            };
    }
    (r, fl)
}

/// ST(0) is empty for an instruction that replaces it and pushes a second result (FXTRACT,
/// FPTAN, FSINCOS): both become the indefinite NaN if #IA is masked.
fn underflow_two_results(cpu: &mut Cpu) {
    if underflow(cpu) {
        cpu.fpu.set_st(0, F80_INDEFINITE);
        push(cpu, F80_INDEFINITE);
        // Underflow wins over an overflow of the push: C1 = 0.
        cpu.fpu.fsw &= !sw::C1;
    }
}

/// FXTRACT: ST(0) = exponent, then push the significand (in [1, 2)).
fn fxtract(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let Some(v) = get(cpu, 0) else {
        underflow_two_results(cpu);
        return Ok(());
    };
    if !cpu.fpu.is_empty(7) {
        // Stack overflow: the masked response replaces both results with the indefinite.
        cpu.fpu.fsw |= sw::C1;
        if signal(cpu, sw::IE | sw::SF) {
            cpu.fpu.set_st(0, F80_INDEFINITE);
            cpu.fpu.push(F80_INDEFINITE);
        }
        return Ok(());
    }
    let mut fl = 0;
    let e = (v >> 64) as u16 & 0x7fff;
    let (exp, sig) = if is_nan80(v) || is_unsupported(v) {
        if is_snan80(v) || is_unsupported(v) {
            fl |= sw::IE;
        }
        let q = if is_unsupported(v) {
            F80_INDEFINITE
        } else {
            quiet80(v)
        };
        (q, q)
    } else if e == 0 && v as u64 == 0 {
        fl |= sw::ZE;
        ((0x7fffu128 << 64) | (1u128 << 63) | SIGN, v)
    } else if e == 0x7fff {
        ((0x7fffu128 << 64) | (1u128 << 63), v)
    } else {
        let (mut sig, mut ee) = (v as u64, i64::from(e));
        if e == 0 {
            fl |= sw::DE;
            let lz = sig.leading_zeros();
            sig <<= lz;
            ee = 1 - i64::from(lz);
        }
        (
            super::int_to_f80(ee - 16383),
            (v & SIGN) | (0x3fffu128 << 64) | u128::from(sig),
        )
    };
    if !signal(cpu, fl) {
        return Ok(());
    }
    cpu.fpu.set_st(0, exp);
    push(cpu, sig);
    Ok(())
}

/// A pseudo-denormal (exponent 0, integer bit set) in its normal form (exponent 1), as the
/// hardware writes it back.
fn canon(v: u128) -> u128 {
    if (v >> 64) as u16 & 0x7fff == 0 && (v as u64) >> 63 != 0 {
        v | (1u128 << 64)
    } else {
        v
    }
}

/// FPREM (truncating quotient) and FPREM1 (IEEE, nearest): the exact partial remainder of
/// ST(0) / ST(1); C2 set while incomplete, else C0, C3, C1 = quotient bits 2, 1, 0.
fn fprem(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let (Some(a), Some(b)) = (get(cpu, 0), get(cpu, 1)) else {
        if underflow(cpu) {
            cpu.fpu.set_st(0, F80_INDEFINITE);
        }
        return Ok(());
    };
    let ieee = ins.mnemonic() == Mnemonic::Fprem1;
    let mut fl = 0;
    let (x, y) = (X::from_bits(a), X::from_bits(b));
    cpu.fpu.fsw &= !sw::CC;
    let r = if is_unsupported(a) || is_unsupported(b) {
        fl |= sw::IE;
        F80_INDEFINITE
    } else if is_nan80(a) || is_nan80(b) {
        if is_snan80(a) || is_snan80(b) {
            fl |= sw::IE;
        }
        nan_result(a, b)
    } else if x.is_infinite() || y.is_zero() {
        fl |= sw::IE;
        F80_INDEFINITE
    } else if x.is_zero() || y.is_infinite() {
        if is_denormal80(a) || is_denormal80(b) {
            fl |= sw::DE;
        }
        canon(a)
    } else {
        if is_denormal80(a) || is_denormal80(b) {
            fl |= sw::DE;
        }
        let norm = |v: u128| -> (u64, i64) {
            let e = i64::from((v >> 64) as u16 & 0x7fff);
            let s = v as u64;
            if e == 0 {
                let lz = s.leading_zeros();
                (s << lz, 1 - i64::from(lz))
            } else {
                (s, e)
            }
        };
        let (ma, ea) = norm(a);
        let (mb, eb) = norm(b);
        let d = ea - eb;
        let sign = a & SIGN;
        if d < 0 {
            // |a| < |b|: quotient 0 (FPREM1 may round it to 1).
            if ieee && (d == -1 && ma > mb) {
                let r = X::from_bits(a)
                    .sub_r(X::from_bits((b & !SIGN) | sign), Round::NearestTiesToEven);
                cpu.fpu.fsw |= sw::C1;
                r.value.to_bits()
            } else {
                canon(a)
            }
        } else {
            let complete = d < 64;
            let shift = if complete { d } else { 32 + (d % 32) };
            let n = u128::from(ma) << shift;
            let mbw = u128::from(mb);
            let mut q = n / mbw;
            let mut rem = n % mbw;
            let mut rsign = sign;
            if complete && ieee && (2 * rem > mbw || (2 * rem == mbw && q & 1 == 1)) {
                q += 1;
                rem = mbw - rem;
                rsign ^= SIGN;
            }
            let exp = if complete { eb } else { eb + (d - shift) };
            if complete {
                let mut cc = 0;
                if q & 4 != 0 {
                    cc |= sw::C0;
                }
                if q & 2 != 0 {
                    cc |= sw::C3;
                }
                if q & 1 != 0 {
                    cc |= sw::C1;
                }
                cpu.fpu.fsw |= cc;
            } else {
                cpu.fpu.fsw |= sw::C2;
            }
            if rem == 0 {
                sign
            } else {
                // rem * 2^(exp - 16383 - 63), rem < 2^64: normalize.
                let rem = rem as u64;
                let lz = i64::from(rem.leading_zeros());
                let mut e = exp - lz;
                let mut s = rem << lz;
                if e <= 0 {
                    // Denormal result.
                    s >>= (1 - e).min(63);
                    e = 0;
                }
                rsign | ((e as u128) << 64) | u128::from(s)
            }
        }
    };
    if signal(cpu, fl) {
        cpu.fpu.set_st(0, r);
    }
    Ok(())
}

/// FYL2X (ST1 * log2 ST0), FYL2XP1 (ST1 * log2(ST0 + 1)), FPATAN (atan2(ST1, ST0)); then pop.
fn fyl2x(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let (Some(a), Some(b)) = (get(cpu, 0), get(cpu, 1)) else {
        if underflow(cpu) {
            cpu.fpu.set_st(1, F80_INDEFINITE);
            cpu.fpu.pop();
        }
        return Ok(());
    };
    let mut fl = 0;
    let r = if is_unsupported(a) || is_unsupported(b) {
        fl |= sw::IE;
        F80_INDEFINITE
    } else if is_nan80(a) || is_nan80(b) {
        if is_snan80(a) || is_snan80(b) {
            fl |= sw::IE;
        }
        nan_result(a, b)
    } else {
        let (x, y) = (to_f64(a), to_f64(b));
        let v = match ins.mnemonic() {
            Mnemonic::Fyl2x => {
                if x < 0.0 || (x == 0.0 && y == 0.0) || (x == 1.0 && y.is_infinite()) {
                    f64::NAN
                } else {
                    if x == 0.0 {
                        fl |= sw::ZE;
                    }
                    y * x.log2()
                }
            }
            Mnemonic::Fyl2xp1 => y * x.ln_1p() / std::f64::consts::LN_2,
            _ => y.atan2(x),
        };
        if v.is_nan() {
            fl |= sw::IE;
            F80_INDEFINITE
        } else {
            fl |= sw::PE;
            from_f64(v)
        }
    };
    cpu.fpu.fsw &= !sw::C1;
    if signal(cpu, fl) {
        cpu.fpu.set_st(1, r);
        cpu.fpu.pop();
    }
    Ok(())
}

/// FPTAN (ST0 = tan, push 1.0) and FSINCOS (ST0 = sin, push cos).
fn fptan(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let Some(v) = get(cpu, 0) else {
        underflow_two_results(cpu);
        return Ok(());
    };
    cpu.fpu.fsw &= !(sw::C1 | sw::C2);
    let e = (v >> 64) as u16 & 0x7fff;
    let mut fl = 0;
    let (r0, r1) = if is_unsupported(v) || (e == 0x7fff && (v as u64) << 1 == 0) {
        fl |= sw::IE;
        (F80_INDEFINITE, F80_INDEFINITE)
    } else if is_nan80(v) {
        if is_snan80(v) {
            fl |= sw::IE;
        }
        (quiet80(v), quiet80(v))
    } else if e >= 16383 + 63 {
        cpu.fpu.fsw |= sw::C2;
        return Ok(());
    } else {
        fl |= sw::PE;
        let x = to_f64(v);
        if ins.mnemonic() == Mnemonic::Fptan {
            (from_f64(x.tan()), from_f64(1.0))
        } else {
            (from_f64(x.sin()), from_f64(x.cos()))
        }
    };
    if !cpu.fpu.is_empty(7) {
        // Stack overflow: the masked response leaves ST(0) indefinite and pushes it.
        cpu.fpu.fsw |= sw::C1;
        if signal(cpu, sw::IE | sw::SF) {
            cpu.fpu.set_st(0, F80_INDEFINITE);
            cpu.fpu.push(F80_INDEFINITE);
        }
        return Ok(());
    }
    if signal(cpu, fl) {
        cpu.fpu.set_st(0, r0);
        push(cpu, r1);
    }
    Ok(())
}
