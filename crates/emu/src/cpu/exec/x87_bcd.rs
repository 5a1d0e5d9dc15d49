//! x87 packed-BCD load and store: FBLD and FBSTP.
//!
//! The 10-byte format: 18 decimal digits, two per byte in bytes 0..9 (low nibble = lower
//! digit), sign in bit 7 of byte 9 (bits 0..6 ignored).

use super::{
    check, f80_to_int, get, int_to_f80, is_nan80, is_unsupported, note, push, rc, read_mem80,
    signal,
};
use crate::cpu::fpu::sw;
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Fbld => fbld,
        Mnemonic::Fbstp => fbstp,
        _ => return None,
    })
}

/// The packed-BCD indefinite FBSTP stores on a masked invalid operation.
const BCD_INDEFINITE: u128 = 0xffff_c000_0000_0000_0000;

const SIGN: u128 = 1 << 79;

/// FBLD: push the packed-BCD integer (exactly). Nibbles above 9 are not checked (the result
/// is undefined per the SDM); they count with their binary value.
fn fbld(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let raw = read_mem80(cpu, ins)?;
    let mut m: u64 = 0;
    for i in (0..9).rev() {
        let b = (raw >> (8 * i)) as u8;
        m = m
            .wrapping_mul(100)
            .wrapping_add(u64::from(b >> 4) * 10 + u64::from(b & 15));
    }
    let neg = (raw >> 79) & 1 != 0;
    let v = int_to_f80(m as i64 & i64::MAX) | if neg { SIGN } else { 0 };
    note(cpu, ins);
    push(cpu, v);
    Ok(())
}

/// FBSTP: store ST(0) rounded to an integer (FCW.RC) as packed BCD, then pop.
fn fbstp(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let src = get(cpu, 0);
    let (out, fl, up) = match src {
        None => (BCD_INDEFINITE, sw::IE | sw::SF, false),
        Some(v) if is_nan80(v) || is_unsupported(v) => (BCD_INDEFINITE, sw::IE, false),
        Some(v) => match f80_to_int(v, 64, rc(cpu)) {
            (Some(i), inexact, up) if i.unsigned_abs() <= 999_999_999_999_999_999 => {
                let mut m = i.unsigned_abs();
                let mut out: u128 = 0;
                for d in 0..18 {
                    out |= u128::from(m % 10) << (4 * d);
                    m /= 10;
                }
                if v & SIGN != 0 {
                    out |= SIGN;
                }
                (out, if inexact { sw::PE } else { 0 }, up)
            }
            _ => (BCD_INDEFINITE, sw::IE, false),
        },
    };
    if fl & !cpu.fpu.fcw & sw::IE == 0 {
        let seg = cpu.mem_seg(ins);
        let off = cpu.ea(ins);
        cpu.write_bytes(seg, off, &out.to_le_bytes()[..10])?;
    }
    note(cpu, ins);
    // C1 = 0 on stack underflow, else whether the integer was rounded up.
    cpu.fpu.fsw &= !sw::C1;
    if up {
        cpu.fpu.fsw |= sw::C1;
    }
    if signal(cpu, fl) {
        cpu.fpu.pop();
    }
    Ok(())
}
