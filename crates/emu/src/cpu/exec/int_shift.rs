//! Shifts and rotates: SHL/SAL SHR SAR ROL ROR RCL RCR, SHLD SHRD.
//!
//! The count is masked to 5 bits (6 for 64-bit operands); a masked count of 0 changes no flag.
//! OF is architecturally defined only for a count of 1; for other counts we extend the
//! count-1 formula as Bochs does (for the shifts and rotates this matched an AMD host for
//! every count; SHLD/SHRD differ for some counts). AF is undefined and reported as 0.

use super::{form, Form};
use crate::cpu::flags::{Flags, CF, OF};
use crate::cpu::operand::{bits, sext};
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub(crate) const ROL: u8 = 0;
pub(crate) const ROR: u8 = 1;
const RCL: u8 = 2;
const RCR: u8 = 3;
pub(crate) const SHL: u8 = 4;
pub(crate) const SHR: u8 = 5;
pub(crate) const SAR: u8 = 7;

const SHLD: bool = true;
const SHRD: bool = false;

pub(super) fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    Some(match ins.mnemonic() {
        M::Rol => shift_form::<ROL>(ins)?,
        M::Ror => shift_form::<ROR>(ins)?,
        M::Rcl => shift_form::<RCL>(ins)?,
        M::Rcr => shift_form::<RCR>(ins)?,
        M::Shl | M::Sal => shift_form::<SHL>(ins)?,
        M::Shr => shift_form::<SHR>(ins)?,
        M::Sar => shift_form::<SAR>(ins)?,
        M::Shld => shd_form::<SHLD>(ins)?,
        M::Shrd => shd_form::<SHRD>(ins)?,
        _ => return None,
    })
}

fn shift_form<const OP: u8>(ins: &Instruction) -> Option<Handler> {
    let cl = ins.op1_kind() == OpKind::Register;
    Some(match (form(ins, 0), cl) {
        (Form::Reg, false) => shift_r::<OP, false>,
        (Form::Reg, true) => shift_r::<OP, true>,
        (Form::Mem, false) => shift_m::<OP, false>,
        (Form::Mem, true) => shift_m::<OP, true>,
        _ => return None,
    })
}

fn shd_form<const LEFT: bool>(ins: &Instruction) -> Option<Handler> {
    Some(match form(ins, 0) {
        Form::Reg => shd::<LEFT, false>,
        Form::Mem => shd::<LEFT, true>,
        _ => return None,
    })
}

/// The masked count of a shift, from CL or an immediate.
#[inline(always)]
fn count<const CL: bool>(cpu: &Cpu, ins: &Instruction, size: usize) -> u32 {
    let raw = if CL {
        cpu.gpr[1] as u32
    } else {
        u32::from(ins.immediate8())
    };
    raw & if size == 8 { 0x3f } else { 0x1f }
}

#[inline(always)]
fn bit(v: u64, n: u32) -> bool {
    (v >> n) & 1 != 0
}

/// SHL, SHR, SAR, ROL or ROR chosen at run time (for the block loop's fast forms); `count`
/// is non-zero and already masked.
#[inline(always)]
pub(crate) fn shift_dyn(op: u8, f: &mut Flags, a: u64, count: u32, size: usize) -> u64 {
    match op {
        SHL => shift::<SHL>(f, a, count, size),
        SHR => shift::<SHR>(f, a, count, size),
        ROL => shift::<ROL>(f, a, count, size),
        ROR => shift::<ROR>(f, a, count, size),
        _ => shift::<SAR>(f, a, count, size),
    }
}

/// Shifts or rotates `a` (`bits` wide) by a non-zero masked `count`, recording the flags.
#[inline(always)]
fn shift<const OP: u8>(f: &mut Flags, a: u64, count: u32, size: usize) -> u64 {
    let b = bits(size);
    let m = if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
    let rot_flags = |f: &mut Flags, cf: bool, of: bool| {
        f.update(CF | OF, if cf { CF } else { 0 } | if of { OF } else { 0 });
    };
    match OP {
        ROL => {
            let n = count & (b - 1);
            let r = if n == 0 {
                a
            } else {
                ((a << n) | (a >> (b - n))) & m
            };
            let cf = bit(r, 0);
            rot_flags(f, cf, cf ^ bit(r, b - 1));
            r
        }
        ROR => {
            let n = count & (b - 1);
            let r = if n == 0 {
                a
            } else {
                ((a >> n) | (a << (b - n))) & m
            };
            rot_flags(f, bit(r, b - 1), bit(r, b - 1) ^ bit(r, b - 2));
            r
        }
        RCL | RCR => {
            let n = match b {
                8 => count % 9,
                16 => count % 17,
                _ => count,
            };
            // A rotation by a multiple of the width + 1 changes nothing but OF.
            let w = b + 1;
            let wm = (1u128 << w) - 1;
            let v = (u128::from(f.cf()) << b) | u128::from(a);
            let rv = if n == 0 {
                v
            } else if OP == RCL {
                ((v << n) | (v >> (w - n))) & wm
            } else {
                ((v >> n) | (v << (w - n))) & wm
            };
            let r = rv as u64 & m;
            let cf = (rv >> b) & 1 != 0;
            let of = if OP == RCL {
                cf ^ bit(r, b - 1)
            } else {
                bit(r, b - 1) ^ bit(r, b - 2)
            };
            rot_flags(f, cf, of);
            r
        }
        SHL => {
            let wide = u128::from(a) << count;
            let r = wide as u64 & m;
            let cf = (wide >> b) & 1 != 0;
            f.set_result(r, b, cf, cf ^ bit(r, b - 1), false);
            r
        }
        SHR => {
            let r = a >> count;
            let cf = bit(a, count - 1);
            f.set_result(r, b, cf, bit(r, b - 1) ^ bit(r, b - 2), false);
            r
        }
        _ => {
            let s = sext(a, size) as i64;
            let r = (s >> count) as u64 & m;
            let cf = (s >> (count - 1)) & 1 != 0;
            f.set_result(r, b, cf, false, false);
            r
        }
    }
}

fn shift_r<const OP: u8, const CL: bool>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let size = d.size();
    let c = count::<CL>(cpu, ins, size);
    let a = cpu.reg(d);
    let r = if c == 0 {
        a
    } else {
        shift::<OP>(&mut cpu.flags, a, c, size)
    };
    // Written even for a zero count: a 32-bit destination is zero-extended.
    cpu.set_reg(d, r);
    Ok(())
}

fn shift_m<const OP: u8, const CL: bool>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = ins.memory_size().size();
    let c = count::<CL>(cpu, ins, size);
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let a = cpu.read(seg, off, size)?;
    if c == 0 {
        return Ok(());
    }
    let mut f = cpu.flags;
    let r = shift::<OP>(&mut f, a, c, size);
    cpu.write(seg, off, size, r)?;
    cpu.flags = f;
    Ok(())
}

/// SHLD (LEFT) / SHRD: shifts the destination, filling from the source register. For 16-bit
/// operands a count above 16 is undefined; we shift through dest:src:dest as P6-family
/// processors do.
#[inline(always)]
fn shd_op<const LEFT: bool>(f: &mut Flags, a: u64, s: u64, count: u32, size: usize) -> u64 {
    let b = bits(size);
    let m = if b >= 64 { u64::MAX } else { (1u64 << b) - 1 };
    let (r, cf) = if size == 2 {
        let v = (u128::from(a) << 32) | (u128::from(s) << 16) | u128::from(a);
        if LEFT {
            let x = v << count;
            ((x >> 32) as u64 & m, (x >> 48) & 1 != 0)
        } else {
            ((v >> count) as u64 & m, (v >> (count - 1)) & 1 != 0)
        }
    } else if LEFT {
        let v = (u128::from(a) << b) | u128::from(s);
        ((v << count >> b) as u64 & m, bit(a, b - count))
    } else {
        let v = (u128::from(s) << b) | u128::from(a);
        ((v >> count) as u64 & m, (v >> (count - 1)) & 1 != 0)
    };
    let of = if LEFT {
        cf ^ bit(r, b - 1)
    } else {
        bit(r, b - 1) ^ bit(r, b - 2)
    };
    f.set_result(r, b, cf, of, false);
    r
}

fn shd<const LEFT: bool, const MEM: bool>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let s = ins.op1_register();
    let size = s.size();
    let raw = if ins.op2_kind() == OpKind::Register {
        cpu.gpr[1] as u32
    } else {
        u32::from(ins.immediate8())
    };
    let c = raw & if size == 8 { 0x3f } else { 0x1f };
    let sv = cpu.reg(s);
    if MEM {
        let seg = cpu.mem_seg(ins);
        let off = cpu.ea(ins);
        let a = cpu.read(seg, off, size)?;
        if c == 0 {
            return Ok(());
        }
        let mut f = cpu.flags;
        let r = shd_op::<LEFT>(&mut f, a, sv, c, size);
        cpu.write(seg, off, size, r)?;
        cpu.flags = f;
    } else {
        let d = ins.op0_register();
        let a = cpu.reg(d);
        let r = if c == 0 {
            a
        } else {
            shd_op::<LEFT>(&mut cpu.flags, a, sv, c, size)
        };
        cpu.set_reg(d, r);
    }
    Ok(())
}
