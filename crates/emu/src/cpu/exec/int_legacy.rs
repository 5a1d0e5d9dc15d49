//! Legacy instructions that exist only outside 64-bit mode: the BCD adjustments (AAA AAS DAA
//! DAS AAM AAD), PUSHA/PUSHAD, POPA/POPAD and BOUND. iced does not decode them in 64-bit mode,
//! so the handlers need no mode check.

use crate::cpu::flags::{AF, CF, PF, SF, ZF};
use crate::cpu::operand::sext;
use crate::cpu::{Cpu, Exception, Handler, Seg, R};
use iced_x86::{Instruction, Mnemonic, Register};

pub(super) fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    Some(match ins.mnemonic() {
        M::Aaa => aaa,
        M::Aas => aas,
        M::Daa => daa,
        M::Das => das,
        M::Aam => aam,
        M::Aad => aad,
        M::Pusha | M::Pushad => pusha,
        M::Popa | M::Popad => popa,
        M::Bound => bound,
        _ => return None,
    })
}

/// ZF, SF and PF of an 8-bit result as RFLAGS bits.
fn szp8(v: u8) -> u64 {
    let mut f = 0;
    if v == 0 {
        f |= ZF;
    }
    if v & 0x80 != 0 {
        f |= SF;
    }
    if v.count_ones().is_multiple_of(2) {
        f |= PF;
    }
    f
}

fn ax(cpu: &Cpu) -> u16 {
    cpu.gpr[0] as u16
}

fn set_ax(cpu: &mut Cpu, v: u16) {
    cpu.gpr[0] = (cpu.gpr[0] & !0xffff) | u64::from(v);
}

/// AAA: ASCII adjust after addition. CF = AF = adjusted; OF/SF/ZF/PF are undefined (we report
/// them from AL, OF clear).
fn aaa(cpu: &mut Cpu, _ins: &Instruction) -> R {
    let v = ax(cpu);
    let adjust = (v & 0xf) > 9 || cpu.flags.af();
    let v = if adjust { v.wrapping_add(0x106) } else { v };
    let v = v & 0xff0f;
    set_ax(cpu, v);
    let f = szp8(v as u8) | if adjust { AF | CF } else { 0 };
    cpu.flags.set_arith(f);
    Ok(())
}

/// AAS: ASCII adjust after subtraction.
fn aas(cpu: &mut Cpu, _ins: &Instruction) -> R {
    let v = ax(cpu);
    let adjust = (v & 0xf) > 9 || cpu.flags.af();
    let v = if adjust {
        // AX -= 6; AH -= 1.
        v.wrapping_sub(6).wrapping_sub(0x100)
    } else {
        v
    };
    let v = v & 0xff0f;
    set_ax(cpu, v);
    let f = szp8(v as u8) | if adjust { AF | CF } else { 0 };
    cpu.flags.set_arith(f);
    Ok(())
}

/// DAA: decimal adjust AL after addition. OF is undefined (reported clear).
fn daa(cpu: &mut Cpu, _ins: &Instruction) -> R {
    let old_al = cpu.gpr[0] as u8;
    let old_cf = cpu.flags.cf();
    let mut al = old_al;
    let mut f = 0;
    if (al & 0xf) > 9 || cpu.flags.af() {
        al = al.wrapping_add(6);
        f |= AF;
    }
    if old_al > 0x99 || old_cf {
        al = al.wrapping_add(0x60);
        f |= CF;
    }
    cpu.gpr[0] = (cpu.gpr[0] & !0xff) | u64::from(al);
    cpu.flags.set_arith(f | szp8(al));
    Ok(())
}

/// DAS: decimal adjust AL after subtraction. OF is undefined (reported clear).
fn das(cpu: &mut Cpu, _ins: &Instruction) -> R {
    let old_al = cpu.gpr[0] as u8;
    let old_cf = cpu.flags.cf();
    let mut al = old_al;
    let mut f = 0;
    if (al & 0xf) > 9 || cpu.flags.af() {
        if al < 6 || old_cf {
            f |= CF;
        }
        al = al.wrapping_sub(6);
        f |= AF;
    }
    if old_al > 0x99 || old_cf {
        al = al.wrapping_sub(0x60);
        f |= CF;
    }
    cpu.gpr[0] = (cpu.gpr[0] & !0xff) | u64::from(al);
    cpu.flags.set_arith(f | szp8(al));
    Ok(())
}

/// AAM imm8: AH = AL / imm8, AL = AL % imm8; #DE if imm8 is 0. OF/AF/CF undefined (clear).
fn aam(cpu: &mut Cpu, ins: &Instruction) -> R {
    let base = ins.immediate8();
    if base == 0 {
        return Err(Exception::de().into());
    }
    let al = cpu.gpr[0] as u8;
    let (q, r) = (al / base, al % base);
    set_ax(cpu, u16::from(q) << 8 | u16::from(r));
    cpu.flags.set_arith(szp8(r));
    Ok(())
}

/// AAD imm8: AL = AL + AH * imm8, AH = 0. OF/AF/CF undefined (clear).
fn aad(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = ax(cpu);
    let al = (v as u8).wrapping_add(((v >> 8) as u8).wrapping_mul(ins.immediate8()));
    set_ax(cpu, u16::from(al));
    cpu.flags.set_arith(szp8(al));
    Ok(())
}

/// The operand size (2 or 4) of PUSHA/POPA.
fn pusha_size(ins: &Instruction) -> usize {
    match ins.mnemonic() {
        Mnemonic::Pusha | Mnemonic::Popa => 2,
        _ => 4,
    }
}

/// PUSHA/PUSHAD: pushes AX/EAX, CX, DX, BX, the original SP, BP, SI, DI.
fn pusha(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = pusha_size(ins);
    let smask = if cpu.stack_size() == 2 {
        0xffff
    } else {
        0xffff_ffff
    };
    let sp = cpu.gpr[4] & smask;
    let new_sp = sp.wrapping_sub(8 * size as u64) & smask;
    let vals: [u64; 8] = std::array::from_fn(|i| cpu.gpr[i]);
    if new_sp < sp {
        // One access: it either faults as a whole or writes everything.
        let mut buf = [0u8; 32];
        for (i, v) in vals.iter().enumerate() {
            // EAX is pushed first, so it ends up at the highest address.
            let at = (7 - i) * size;
            buf[at..at + size].copy_from_slice(&v.to_le_bytes()[..size]);
        }
        cpu.write_bytes(Seg::Ss, new_sp, &buf[..8 * size])?;
    } else {
        // The stack pointer wraps: element by element (pushing the same values again if a
        // later one faults is harmless).
        for (i, &v) in vals.iter().enumerate() {
            let at = sp.wrapping_sub(((i + 1) * size) as u64) & smask;
            cpu.write(Seg::Ss, at, size, v)?;
        }
    }
    cpu.set_sp(new_sp);
    Ok(())
}

/// POPA/POPAD: pops DI, SI, BP, (skips SP), BX, DX, CX, AX.
fn popa(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = pusha_size(ins);
    let smask = if cpu.stack_size() == 2 {
        0xffff
    } else {
        0xffff_ffff
    };
    let sp = cpu.gpr[4] & smask;
    let mut vals = [0u64; 8];
    for (i, v) in vals.iter_mut().enumerate() {
        *v = cpu.read(Seg::Ss, sp.wrapping_add((i * size) as u64) & smask, size)?;
    }
    const R16: [Register; 8] = [
        Register::DI,
        Register::SI,
        Register::BP,
        Register::SP,
        Register::BX,
        Register::DX,
        Register::CX,
        Register::AX,
    ];
    const R32: [Register; 8] = [
        Register::EDI,
        Register::ESI,
        Register::EBP,
        Register::ESP,
        Register::EBX,
        Register::EDX,
        Register::ECX,
        Register::EAX,
    ];
    let regs = if size == 2 { &R16 } else { &R32 };
    for (i, (&r, &v)) in regs.iter().zip(vals.iter()).enumerate() {
        if i != 3 {
            cpu.set_reg(r, v);
        }
    }
    cpu.set_sp(sp.wrapping_add(8 * size as u64) & smask);
    Ok(())
}

/// BOUND r, m: #BR unless lower <= r <= upper (signed; the bounds are a pair in memory).
fn bound(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op0_register();
    let size = r.size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let lo = cpu.read(seg, off, size)?;
    let hi_off = off.wrapping_add(size as u64) & super::addr_mask(cpu, ins);
    let hi = cpu.read(seg, hi_off, size)?;
    let idx = sext(cpu.reg(r), size) as i64;
    if idx < sext(lo, size) as i64 || idx > sext(hi, size) as i64 {
        return Err(Exception::new(Exception::BR).into());
    }
    Ok(())
}

#[cfg(test)]
#[path = "int_legacy_tests.rs"]
mod tests;
