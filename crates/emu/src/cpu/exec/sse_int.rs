//! Packed-integer instructions (MMX, SSE2, SSSE3): logic, add/sub, compares, min/max,
//! multiplies, shifts, packs, unpacks, shuffles, PMOVMSKB, PSHUFB, PALIGNR.

use super::{binop, check, lane, map1, map2, rd, set_lane, vec_bytes, wr};
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Pand => pand,
        Pandn => pandn,
        Por => por,
        Pxor => pxor,
        Paddb => paddb,
        Paddw => paddw,
        Paddd => paddd,
        Paddq => paddq,
        Psubb => psubb,
        Psubw => psubw,
        Psubd => psubd,
        Psubq => psubq,
        Paddsb => paddsb,
        Paddsw => paddsw,
        Paddusb => paddusb,
        Paddusw => paddusw,
        Psubsb => psubsb,
        Psubsw => psubsw,
        Psubusb => psubusb,
        Psubusw => psubusw,
        Pcmpeqb => pcmpeqb,
        Pcmpeqw => pcmpeqw,
        Pcmpeqd => pcmpeqd,
        Pcmpgtb => pcmpgtb,
        Pcmpgtw => pcmpgtw,
        Pcmpgtd => pcmpgtd,
        Pminub => pminub,
        Pmaxub => pmaxub,
        Pminsw => pminsw,
        Pmaxsw => pmaxsw,
        Pavgb => pavgb,
        Pavgw => pavgw,
        Pmullw => pmullw,
        Pmulhw => pmulhw,
        Pmulhuw => pmulhuw,
        Pmuludq => pmuludq,
        Pmaddwd => pmaddwd,
        Psadbw => psadbw,
        Psllw => psllw,
        Pslld => pslld,
        Psllq => psllq,
        Psrlw => psrlw,
        Psrld => psrld,
        Psrlq => psrlq,
        Psraw => psraw,
        Psrad => psrad,
        Pslldq => pslldq,
        Psrldq => psrldq,
        Packsswb => packsswb,
        Packssdw => packssdw,
        Packuswb => packuswb,
        Punpcklbw => punpcklbw,
        Punpcklwd => punpcklwd,
        Punpckldq => punpckldq,
        Punpcklqdq => punpcklqdq,
        Punpckhbw => punpckhbw,
        Punpckhwd => punpckhwd,
        Punpckhdq => punpckhdq,
        Punpckhqdq => punpckhqdq,
        Pshufd => pshufd,
        Pshuflw => pshuflw,
        Pshufhw => pshufhw,
        Pshufw => pshufw,
        Pmovmskb => pmovmskb,
        Pextrw => pextrw,
        Pinsrw => pinsrw,
        Pshufb => pshufb,
        Palignr => palignr,
        Pabsb => pabsb,
        Pabsw => pabsw,
        Pabsd => pabsd,
        Psignb => psignb,
        Psignw => psignw,
        Psignd => psignd,
        Phaddw => phaddw,
        Phaddd => phaddd,
        Phaddsw => phaddsw,
        Phsubw => phsubw,
        Phsubd => phsubd,
        Phsubsw => phsubsw,
        Pmaddubsw => pmaddubsw,
        Pmulhrsw => pmulhrsw,
        _ => return None,
    })
}

macro_rules! lanewise {
    ($($name:ident, $bits:expr, |$a:ident, $b:ident| $e:expr;)*) => {$(
        fn $name(cpu: &mut Cpu, ins: &Instruction) -> R {
            binop(cpu, ins, |x, y| map2(x, y, $bits, |$a, $b| $e))
        }
    )*};
}

fn s8(v: u64) -> i64 {
    v as i8 as i64
}
fn s16(v: u64) -> i64 {
    v as i16 as i64
}
fn s32(v: u64) -> i64 {
    v as i32 as i64
}
fn sat_s8(v: i64) -> u64 {
    v.clamp(-128, 127) as u64
}
fn sat_s16(v: i64) -> u64 {
    v.clamp(-32768, 32767) as u64
}
fn sat_u8(v: i64) -> u64 {
    v.clamp(0, 255) as u64
}
fn sat_u16(v: i64) -> u64 {
    v.clamp(0, 65535) as u64
}
fn ones(c: bool) -> u64 {
    if c {
        u64::MAX
    } else {
        0
    }
}

lanewise! {
    paddb, 8, |a, b| a.wrapping_add(b);
    paddw, 16, |a, b| a.wrapping_add(b);
    paddd, 32, |a, b| a.wrapping_add(b);
    paddq, 64, |a, b| a.wrapping_add(b);
    psubb, 8, |a, b| a.wrapping_sub(b);
    psubw, 16, |a, b| a.wrapping_sub(b);
    psubd, 32, |a, b| a.wrapping_sub(b);
    psubq, 64, |a, b| a.wrapping_sub(b);
    paddsb, 8, |a, b| sat_s8(s8(a) + s8(b));
    paddsw, 16, |a, b| sat_s16(s16(a) + s16(b));
    paddusb, 8, |a, b| sat_u8(a as i64 + b as i64);
    paddusw, 16, |a, b| sat_u16(a as i64 + b as i64);
    psubsb, 8, |a, b| sat_s8(s8(a) - s8(b));
    psubsw, 16, |a, b| sat_s16(s16(a) - s16(b));
    psubusb, 8, |a, b| sat_u8(a as i64 - b as i64);
    psubusw, 16, |a, b| sat_u16(a as i64 - b as i64);
    pcmpeqb, 8, |a, b| ones(a == b);
    pcmpeqw, 16, |a, b| ones(a == b);
    pcmpeqd, 32, |a, b| ones(a == b);
    pcmpgtb, 8, |a, b| ones(s8(a) > s8(b));
    pcmpgtw, 16, |a, b| ones(s16(a) > s16(b));
    pcmpgtd, 32, |a, b| ones(s32(a) > s32(b));
    pminub, 8, |a, b| a.min(b);
    pmaxub, 8, |a, b| a.max(b);
    pminsw, 16, |a, b| s16(a).min(s16(b)) as u64;
    pmaxsw, 16, |a, b| s16(a).max(s16(b)) as u64;
    pavgb, 8, |a, b| (a + b + 1) >> 1;
    pavgw, 16, |a, b| (a + b + 1) >> 1;
    pmullw, 16, |a, b| (s16(a) * s16(b)) as u64;
    pmulhw, 16, |a, b| ((s16(a) * s16(b)) >> 16) as u64;
    pmulhuw, 16, |a, b| (a * b) >> 16;
    pmuludq, 64, |a, b| (a & 0xffff_ffff) * (b & 0xffff_ffff);
    pmaddwd, 32, |a, b| (s16(a) * s16(b) + s16(a >> 16) * s16(b >> 16)) as u64;
    psignb, 8, |a, b| if s8(b) < 0 { a.wrapping_neg() } else if b == 0 { 0 } else { a };
    psignw, 16, |a, b| if s16(b) < 0 { a.wrapping_neg() } else if b == 0 { 0 } else { a };
    psignd, 32, |a, b| if s32(b) < 0 { a.wrapping_neg() } else if b == 0 { 0 } else { a };
    pmulhrsw, 16, |a, b| ((((s16(a) * s16(b)) >> 14) + 1) >> 1) as u64;
    pmaddubsw, 16, |a, b| sat_s16(
        (a & 0xff) as i64 * s8(b) + ((a >> 8) & 0xff) as i64 * s8(b >> 8)
    );
}

fn pand(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| a & b)
}
fn pandn(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| !a & b)
}
fn por(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| a | b)
}
fn pxor(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| a ^ b)
}

fn unop(cpu: &mut Cpu, ins: &Instruction, f: impl Fn(u128) -> u128) -> R {
    binop(cpu, ins, |_, b| f(b))
}
fn pabsb(cpu: &mut Cpu, ins: &Instruction) -> R {
    unop(cpu, ins, |b| map1(b, 8, |x| s8(x).unsigned_abs()))
}
fn pabsw(cpu: &mut Cpu, ins: &Instruction) -> R {
    unop(cpu, ins, |b| map1(b, 16, |x| s16(x).unsigned_abs()))
}
fn pabsd(cpu: &mut Cpu, ins: &Instruction) -> R {
    unop(cpu, ins, |b| map1(b, 32, |x| s32(x).unsigned_abs()))
}

fn psadbw(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| {
        let sum = |h: u32| -> u64 {
            (0..8)
                .map(|i| lane(a, 8, h * 8 + i).abs_diff(lane(b, 8, h * 8 + i)))
                .sum()
        };
        u128::from(sum(0)) | (u128::from(sum(1)) << 64)
    })
}

/// Horizontal add/sub: the result is the pairwise op on the lanes of `a`, then of `b`.
fn horizontal(
    cpu: &mut Cpu,
    ins: &Instruction,
    bits: u32,
    f: impl Fn(u64, u64) -> u64 + Copy,
) -> R {
    let width = vec_bytes(ins) * 8;
    binop(cpu, ins, |a, b| {
        let n = width / bits;
        let mut r = 0u128;
        for i in 0..n / 2 {
            r = set_lane(
                r,
                bits,
                i,
                f(lane(a, bits, 2 * i), lane(a, bits, 2 * i + 1)),
            );
            r = set_lane(
                r,
                bits,
                i + n / 2,
                f(lane(b, bits, 2 * i), lane(b, bits, 2 * i + 1)),
            );
        }
        r
    })
}
fn phaddw(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, 16, |x, y| x.wrapping_add(y))
}
fn phaddd(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, 32, |x, y| x.wrapping_add(y))
}
fn phaddsw(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, 16, |x, y| sat_s16(s16(x) + s16(y)))
}
fn phsubw(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, 16, |x, y| x.wrapping_sub(y))
}
fn phsubd(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, 32, |x, y| x.wrapping_sub(y))
}
fn phsubsw(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, 16, |x, y| sat_s16(s16(x) - s16(y)))
}

/// Shifts by a count from an immediate or from the low 64 bits of a register/memory operand.
fn shift(cpu: &mut Cpu, ins: &Instruction, bits: u32, kind: u8) -> R {
    binop(cpu, ins, |a, c| {
        let c = c as u64;
        map1(a, bits, |x| {
            let m = if bits == 64 {
                u64::MAX
            } else {
                (1u64 << bits) - 1
            };
            match kind {
                0 if c < u64::from(bits) => (x << c) & m,
                1 if c < u64::from(bits) => x >> c,
                2 => {
                    let sx = ((x << (64 - bits)) as i64) >> (64 - bits);
                    (sx >> c.min(u64::from(bits) - 1)) as u64 & m
                }
                _ => 0,
            }
        })
    })
}
fn psllw(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 16, 0)
}
fn pslld(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 32, 0)
}
fn psllq(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 64, 0)
}
fn psrlw(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 16, 1)
}
fn psrld(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 32, 1)
}
fn psrlq(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 64, 1)
}
fn psraw(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 16, 2)
}
fn psrad(cpu: &mut Cpu, ins: &Instruction) -> R {
    shift(cpu, ins, 32, 2)
}
fn pslldq(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, c| if c >= 16 { 0 } else { a << (c * 8) })
}
fn psrldq(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, c| if c >= 16 { 0 } else { a >> (c * 8) })
}

/// Packs the lanes of `a` then `b` (each `bits` wide) into lanes half as wide.
fn pack(cpu: &mut Cpu, ins: &Instruction, bits: u32, sat: fn(i64) -> u64) -> R {
    let width = vec_bytes(ins) * 8;
    binop(cpu, ins, |a, b| {
        let n = width / bits;
        let sx = |v: u64| ((v << (64 - bits)) as i64) >> (64 - bits);
        let mut r = 0u128;
        for i in 0..n {
            r = set_lane(r, bits / 2, i, sat(sx(lane(a, bits, i))));
            r = set_lane(r, bits / 2, i + n, sat(sx(lane(b, bits, i))));
        }
        r
    })
}
fn packsswb(cpu: &mut Cpu, ins: &Instruction) -> R {
    pack(cpu, ins, 16, sat_s8)
}
fn packssdw(cpu: &mut Cpu, ins: &Instruction) -> R {
    pack(cpu, ins, 32, sat_s16)
}
fn packuswb(cpu: &mut Cpu, ins: &Instruction) -> R {
    pack(cpu, ins, 16, sat_u8)
}

/// Interleaves the low (`high` false) or high halves of `a` and `b`.
fn unpack(cpu: &mut Cpu, ins: &Instruction, bits: u32, high: bool) -> R {
    let width = vec_bytes(ins) * 8;
    binop(cpu, ins, |a, b| {
        let n = width / bits / 2;
        let base = if high { n } else { 0 };
        let mut r = 0u128;
        for i in 0..n {
            r = set_lane(r, bits, 2 * i, lane(a, bits, base + i));
            r = set_lane(r, bits, 2 * i + 1, lane(b, bits, base + i));
        }
        r
    })
}
fn punpcklbw(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 8, false)
}
fn punpcklwd(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 16, false)
}
fn punpckldq(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 32, false)
}
fn punpcklqdq(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 64, false)
}
fn punpckhbw(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 8, true)
}
fn punpckhwd(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 16, true)
}
fn punpckhdq(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 32, true)
}
fn punpckhqdq(cpu: &mut Cpu, ins: &Instruction) -> R {
    unpack(cpu, ins, 64, true)
}

/// `op0 = f(op1, imm8)`.
fn shuf_imm(cpu: &mut Cpu, ins: &Instruction, f: impl Fn(u128, u32) -> u128) -> R {
    let mmx = check(cpu, ins)?;
    let src = rd(cpu, ins, 1)?;
    let r = f(src, ins.immediate8().into());
    if mmx {
        cpu.fpu.enter_mmx();
    }
    wr(cpu, ins, 0, r)
}
fn shuffle4(src: u128, bits: u32, base: u32, imm: u32) -> u128 {
    let mut r = src;
    for i in 0..4 {
        let sel = (imm >> (2 * i)) & 3;
        r = set_lane(r, bits, base + i, lane(src, bits, base + sel));
    }
    r
}
fn pshufd(cpu: &mut Cpu, ins: &Instruction) -> R {
    shuf_imm(cpu, ins, |s, imm| shuffle4(s, 32, 0, imm))
}
fn pshuflw(cpu: &mut Cpu, ins: &Instruction) -> R {
    shuf_imm(cpu, ins, |s, imm| shuffle4(s, 16, 0, imm))
}
fn pshufhw(cpu: &mut Cpu, ins: &Instruction) -> R {
    shuf_imm(cpu, ins, |s, imm| shuffle4(s, 16, 4, imm))
}
fn pshufw(cpu: &mut Cpu, ins: &Instruction) -> R {
    shuf_imm(cpu, ins, |s, imm| shuffle4(s, 16, 0, imm))
}

fn pmovmskb(cpu: &mut Cpu, ins: &Instruction) -> R {
    let mmx = check(cpu, ins)?;
    let n = vec_bytes(ins);
    let v = rd(cpu, ins, 1)?;
    let mut m = 0u64;
    for i in 0..n {
        m |= ((v >> (8 * i + 7)) as u64 & 1) << i;
    }
    if mmx {
        cpu.fpu.enter_mmx();
    }
    // Zero-extended into the 32- or 64-bit destination.
    let r = ins.op0_register();
    cpu.set_reg(r.full_register32(), m);
    if r.is_gpr64() {
        cpu.set_reg(r, m);
    }
    Ok(())
}

fn pextrw(cpu: &mut Cpu, ins: &Instruction) -> R {
    let mmx = check(cpu, ins)?;
    let n = vec_bytes(ins) / 2;
    let v = rd(cpu, ins, 1)?;
    let i = u32::from(ins.immediate8()) % n;
    if mmx {
        cpu.fpu.enter_mmx();
    }
    let r = ins.op0_register();
    let w = lane(v, 16, i);
    cpu.set_reg(r.full_register32(), w);
    if r.is_gpr64() {
        cpu.set_reg(r, w);
    }
    Ok(())
}

fn pinsrw(cpu: &mut Cpu, ins: &Instruction) -> R {
    let mmx = check(cpu, ins)?;
    let n = vec_bytes(ins) / 2;
    let w = rd(cpu, ins, 1)? as u64 & 0xffff;
    let a = rd(cpu, ins, 0)?;
    let i = u32::from(ins.immediate8()) % n;
    if mmx {
        cpu.fpu.enter_mmx();
    }
    wr(cpu, ins, 0, set_lane(a, 16, i, w))
}

fn pshufb(cpu: &mut Cpu, ins: &Instruction) -> R {
    let n = vec_bytes(ins);
    binop(cpu, ins, |a, b| {
        let mut r = 0u128;
        for i in 0..n {
            let sel = lane(b, 8, i);
            if sel & 0x80 == 0 {
                r = set_lane(r, 8, i, lane(a, 8, (sel as u32) % n));
            }
        }
        r
    })
}

fn palignr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let n = vec_bytes(ins);
    let imm = u32::from(ins.immediate8());
    binop(cpu, ins, |a, b| {
        // The byte string b:a (b low), shifted right by imm bytes.
        let mut r = 0u128;
        for i in 0..n {
            let k = i + imm;
            let byte = if k < n {
                lane(b, 8, k)
            } else if k < 2 * n {
                lane(a, 8, k - n)
            } else {
                0
            };
            r = set_lane(r, 8, i, byte);
        }
        r
    })
}
