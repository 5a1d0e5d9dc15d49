//! Data movement: register/memory moves, MOVD/MOVQ, scalar and half moves, masks,
//! floating-point shuffles and unpacks, and the bitwise PS/PD logic.

use super::{binop, check, check_sse, lane, mm_index, rd, set_lane, wr, xmm_index};
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Movaps | Movups | Movapd | Movupd | Movdqa | Movdqu | Lddqu | Movntps | Movntpd
        | Movntdq | Movntq => mov,
        Movnti => movnti,
        Movd => movd,
        Movq => movq,
        Movss => movss,
        Movhps | Movhpd => movhp,
        Movlps | Movlpd => movlp,
        Movhlps => movhlps,
        Movlhps => movlhps,
        Movmskps => movmskps,
        Movmskpd => movmskpd,
        Movddup => movddup,
        Movsldup => movsldup,
        Movshdup => movshdup,
        Shufps => shufps,
        Shufpd => shufpd,
        Unpcklps => unpcklps,
        Unpckhps => unpckhps,
        Unpcklpd => unpcklpd,
        Unpckhpd => unpckhpd,
        Andps | Andpd => andps,
        Andnps | Andnpd => andnps,
        Orps | Orpd => orps,
        Xorps | Xorpd => xorps,
        Movq2dq => movq2dq,
        Movdq2q => movdq2q,
        Maskmovdqu | Maskmovq => maskmov,
        _ => return None,
    })
}

/// A full-width copy `op0 = op1` (XMM, MMX or memory).
fn mov(cpu: &mut Cpu, ins: &Instruction) -> R {
    let mmx = check(cpu, ins)?;
    let v = rd(cpu, ins, 1)?;
    if mmx {
        cpu.fpu.enter_mmx();
    }
    wr(cpu, ins, 0, v)
}

/// MOVNTI: a plain general-register store.
fn movnti(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.read_op(ins, 1)?;
    cpu.write_op(ins, 0, v)
}

/// MOVD/MOVQ: moves the low 4/8 bytes, zero-extending into a vector register.
fn movdq(cpu: &mut Cpu, ins: &Instruction, mask: u128) -> R {
    let mmx = check(cpu, ins)?;
    let v = rd(cpu, ins, 1)? & mask;
    if mmx {
        cpu.fpu.enter_mmx();
    }
    wr(cpu, ins, 0, v)
}
fn movd(cpu: &mut Cpu, ins: &Instruction) -> R {
    movdq(cpu, ins, 0xffff_ffff)
}
fn movq(cpu: &mut Cpu, ins: &Instruction) -> R {
    movdq(cpu, ins, u128::from(u64::MAX))
}

/// MOVSS and MOVSD (the SSE2 one): register to register merges the low lane; a load
/// zero-extends; a store writes the low lane.
fn movs(cpu: &mut Cpu, ins: &Instruction, bits: u32) -> R {
    check_sse(cpu)?;
    let v = rd(cpu, ins, 1)?;
    let mask = (1u128 << bits) - 1;
    if ins.op0_kind() == OpKind::Register && ins.op1_kind() == OpKind::Register {
        let d = xmm_index(ins.op0_register());
        cpu.fpu.xmm[d] = (cpu.fpu.xmm[d] & !mask) | (v & mask);
        Ok(())
    } else {
        wr(cpu, ins, 0, v & mask)
    }
}
fn movss(cpu: &mut Cpu, ins: &Instruction) -> R {
    movs(cpu, ins, 32)
}
pub fn movsd(cpu: &mut Cpu, ins: &Instruction) -> R {
    movs(cpu, ins, 64)
}

/// MOVHPS/MOVHPD: the high quadword from/to memory.
fn movhp(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_sse(cpu)?;
    if ins.op0_kind() == OpKind::Memory {
        let v = rd(cpu, ins, 1)?;
        wr(cpu, ins, 0, v >> 64)
    } else {
        let m = rd(cpu, ins, 1)?;
        let d = xmm_index(ins.op0_register());
        cpu.fpu.xmm[d] = set_lane(cpu.fpu.xmm[d], 64, 1, m as u64);
        Ok(())
    }
}

/// MOVLPS/MOVLPD: the low quadword from/to memory.
fn movlp(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_sse(cpu)?;
    if ins.op0_kind() == OpKind::Memory {
        let v = rd(cpu, ins, 1)?;
        wr(cpu, ins, 0, v & u128::from(u64::MAX))
    } else {
        let m = rd(cpu, ins, 1)?;
        let d = xmm_index(ins.op0_register());
        cpu.fpu.xmm[d] = set_lane(cpu.fpu.xmm[d], 64, 0, m as u64);
        Ok(())
    }
}

fn movhlps(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_sse(cpu)?;
    binop(cpu, ins, |a, b| set_lane(a, 64, 0, lane(b, 64, 1)))
}
fn movlhps(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_sse(cpu)?;
    binop(cpu, ins, |a, b| set_lane(a, 64, 1, lane(b, 64, 0)))
}

fn movmsk(cpu: &mut Cpu, ins: &Instruction, bits: u32) -> R {
    check_sse(cpu)?;
    let v = rd(cpu, ins, 1)?;
    let m = (0..128 / bits).fold(0u64, |m, i| m | ((lane(v, bits, i) >> (bits - 1)) << i));
    cpu.set_reg(ins.op0_register().full_register32(), m);
    Ok(())
}
fn movmskps(cpu: &mut Cpu, ins: &Instruction) -> R {
    movmsk(cpu, ins, 32)
}
fn movmskpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    movmsk(cpu, ins, 64)
}

/// `op0 = f(op1)` for SSE3 duplicating moves.
fn dup(cpu: &mut Cpu, ins: &Instruction, f: fn(u128) -> u128) -> R {
    check_sse(cpu)?;
    let v = rd(cpu, ins, 1)?;
    wr(cpu, ins, 0, f(v))
}
fn movddup(cpu: &mut Cpu, ins: &Instruction) -> R {
    dup(cpu, ins, |v| {
        let l = v & u128::from(u64::MAX);
        l | (l << 64)
    })
}
fn movsldup(cpu: &mut Cpu, ins: &Instruction) -> R {
    dup(cpu, ins, |v| {
        let (a, c) = (lane(v, 32, 0), lane(v, 32, 2));
        [a, a, c, c]
            .iter()
            .enumerate()
            .fold(0, |r, (i, &x)| set_lane(r, 32, i as u32, x))
    })
}
fn movshdup(cpu: &mut Cpu, ins: &Instruction) -> R {
    dup(cpu, ins, |v| {
        let (b, d) = (lane(v, 32, 1), lane(v, 32, 3));
        [b, b, d, d]
            .iter()
            .enumerate()
            .fold(0, |r, (i, &x)| set_lane(r, 32, i as u32, x))
    })
}

fn shufps(cpu: &mut Cpu, ins: &Instruction) -> R {
    let imm = u32::from(ins.immediate8());
    binop(cpu, ins, |a, b| {
        let s = |i: u32| (imm >> (2 * i)) & 3;
        let r = set_lane(0, 32, 0, lane(a, 32, s(0)));
        let r = set_lane(r, 32, 1, lane(a, 32, s(1)));
        let r = set_lane(r, 32, 2, lane(b, 32, s(2)));
        set_lane(r, 32, 3, lane(b, 32, s(3)))
    })
}
fn shufpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    let imm = u32::from(ins.immediate8());
    binop(cpu, ins, |a, b| {
        let r = set_lane(0, 64, 0, lane(a, 64, imm & 1));
        set_lane(r, 64, 1, lane(b, 64, (imm >> 1) & 1))
    })
}

fn interleave(a: u128, b: u128, bits: u32, base: u32) -> u128 {
    let n = 128 / bits / 2;
    (0..n).fold(0, |r, i| {
        let r = set_lane(r, bits, 2 * i, lane(a, bits, base + i));
        set_lane(r, bits, 2 * i + 1, lane(b, bits, base + i))
    })
}
fn unpcklps(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| interleave(a, b, 32, 0))
}
fn unpckhps(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| interleave(a, b, 32, 2))
}
fn unpcklpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| interleave(a, b, 64, 0))
}
fn unpckhpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| interleave(a, b, 64, 1))
}

fn andps(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| a & b)
}
fn andnps(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| !a & b)
}
fn orps(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| a | b)
}
fn xorps(cpu: &mut Cpu, ins: &Instruction) -> R {
    binop(cpu, ins, |a, b| a ^ b)
}

fn movq2dq(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu, ins)?;
    let v = cpu.fpu.mm(mm_index(ins.op1_register()));
    cpu.fpu.enter_mmx();
    cpu.fpu.xmm[xmm_index(ins.op0_register())] = u128::from(v);
    Ok(())
}
fn movdq2q(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu, ins)?;
    let v = cpu.fpu.xmm[xmm_index(ins.op1_register())] as u64;
    cpu.fpu.enter_mmx();
    cpu.fpu.set_mm(mm_index(ins.op0_register()), v);
    Ok(())
}

/// MASKMOVDQU/MASKMOVQ: stores the bytes of op1 whose mask byte (op2) has its top bit set, to
/// [rDI] (op0; segment DS or override).
fn maskmov(cpu: &mut Cpu, ins: &Instruction) -> R {
    let mmx = check(cpu, ins)?;
    let n = if mmx { 8 } else { 16 };
    let data = rd(cpu, ins, 1)?;
    let mask = rd(cpu, ins, 2)?;
    let seg = crate::cpu::Seg::from_iced(ins.memory_segment());
    let di = match ins.op0_kind() {
        OpKind::MemorySegDI => cpu.gpr[7] & 0xffff,
        OpKind::MemorySegEDI => cpu.gpr[7] & 0xffff_ffff,
        _ => cpu.gpr[7],
    };
    // Check every byte first so that a fault leaves memory untouched.
    let mut buf = [0u8; 16];
    cpu.read_bytes(seg, di, &mut buf[..n])?;
    for i in 0..n as u32 {
        if lane(mask, 8, i) & 0x80 != 0 {
            buf[i as usize] = lane(data, 8, i) as u8;
        }
    }
    if mmx {
        cpu.fpu.enter_mmx();
    }
    cpu.write_bytes(seg, di, &buf[..n])
}
