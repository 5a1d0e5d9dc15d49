//! Data movement: MOV, MOVZX, MOVSX(D), LEA, XCHG, XADD, CMPXCHG(8B/16B), BSWAP, MOVBE, XLAT,
//! PUSH/POP of general registers, memory and immediates, and the NOP family.

use super::{form, Form};
use crate::cpu::flags::ZF;
use crate::cpu::operand::{bits, sext, size_mask};
use crate::cpu::{Cpu, Exception, Handler, R};
use iced_x86::{Instruction, Mnemonic, Register};

pub(super) fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    let f0 = form(ins, 0);
    let f1 = form(ins, 1);
    Some(match ins.mnemonic() {
        M::Mov => match (f0, f1) {
            (Form::Reg, Form::Reg) => mov_rr,
            (Form::Reg, Form::Imm) => mov_ri,
            (Form::Reg, Form::Mem) => mov_rm,
            (Form::Mem, Form::Reg) => mov_mr,
            (Form::Mem, Form::Imm) => mov_mi,
            // Segment, control, debug and test registers belong to the system group.
            _ => return None,
        },
        M::Movzx => match f1 {
            Form::Reg => movzx_rr,
            Form::Mem => movzx_rm,
            _ => return None,
        },
        M::Movsx | M::Movsxd => match f1 {
            Form::Reg => movsx_rr,
            Form::Mem => movsx_rm,
            _ => return None,
        },
        M::Lea => lea,
        M::Xchg => match (f0, f1) {
            (Form::Reg, Form::Reg) => xchg_rr,
            (Form::Mem, Form::Reg) | (Form::Reg, Form::Mem) => xchg_m,
            _ => return None,
        },
        M::Xadd => match f0 {
            Form::Reg => xadd_r,
            _ => xadd_m,
        },
        M::Cmpxchg => match f0 {
            Form::Reg => cmpxchg_r,
            _ => cmpxchg_m,
        },
        M::Cmpxchg8b => cmpxchg8b,
        M::Cmpxchg16b => cmpxchg16b,
        M::Bswap => bswap,
        M::Movbe => match f0 {
            Form::Reg => movbe_load,
            _ => movbe_store,
        },
        M::Xlatb => xlat,
        M::Push => match f0 {
            Form::Reg => push_r,
            Form::Imm => push_i,
            Form::Mem => push_m,
            // PUSH of a segment register: the system group.
            Form::Other => return None,
        },
        M::Pop => match f0 {
            Form::Reg => pop_r,
            Form::Mem => pop_m,
            _ => return None,
        },
        M::Nop
        | M::Reservednop
        | M::Endbr32
        | M::Endbr64
        | M::Pause
        | M::Lfence
        | M::Mfence
        | M::Sfence
        | M::Prefetch
        | M::Prefetchnta
        | M::Prefetcht0
        | M::Prefetcht1
        | M::Prefetcht2
        | M::Prefetchw
        | M::Prefetchwt1
        | M::Prefetchit0
        | M::Prefetchit1
        | M::Clflush
        | M::Clflushopt
        | M::Clwb
        // Without CET, the RDSSP encodings are NOPs.
        | M::Rdsspd
        | M::Rdsspq => nop,
        M::Ud0 | M::Ud1 | M::Ud2 => ud,
        _ => return None,
    })
}

fn mov_rr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.reg(ins.op1_register());
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn mov_ri(cpu: &mut Cpu, ins: &Instruction) -> R {
    cpu.set_reg(ins.op0_register(), ins.immediate(1));
    Ok(())
}

fn mov_rm(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let off = cpu.ea(ins);
    let v = cpu.read(cpu.mem_seg(ins), off, d.size())?;
    cpu.set_reg(d, v);
    Ok(())
}

fn mov_mr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let s = ins.op1_register();
    let off = cpu.ea(ins);
    cpu.write(cpu.mem_seg(ins), off, s.size(), cpu.reg(s))
}

fn mov_mi(cpu: &mut Cpu, ins: &Instruction) -> R {
    let off = cpu.ea(ins);
    let size = ins.memory_size().size();
    cpu.write(cpu.mem_seg(ins), off, size, ins.immediate(1))
}

fn movzx_rr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.reg(ins.op1_register());
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn movzx_rm(cpu: &mut Cpu, ins: &Instruction) -> R {
    let off = cpu.ea(ins);
    let v = cpu.read(cpu.mem_seg(ins), off, ins.memory_size().size())?;
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn movsx_rr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let s = ins.op1_register();
    let v = sext(cpu.reg(s), s.size());
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn movsx_rm(cpu: &mut Cpu, ins: &Instruction) -> R {
    let off = cpu.ea(ins);
    let size = ins.memory_size().size();
    let v = cpu.read(cpu.mem_seg(ins), off, size)?;
    cpu.set_reg(ins.op0_register(), sext(v, size));
    Ok(())
}

/// LEA: the effective address (no segment), truncated to the operand size.
fn lea(cpu: &mut Cpu, ins: &Instruction) -> R {
    let a = cpu.ea(ins);
    cpu.set_reg(ins.op0_register(), a);
    Ok(())
}

fn xchg_rr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let (r0, r1) = (ins.op0_register(), ins.op1_register());
    let (a, b) = (cpu.reg(r0), cpu.reg(r1));
    cpu.set_reg(r0, b);
    cpu.set_reg(r1, a);
    Ok(())
}

fn xchg_m(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = if form(ins, 0) == Form::Reg {
        ins.op0_register()
    } else {
        ins.op1_register()
    };
    let size = r.size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let m = cpu.read(seg, off, size)?;
    cpu.write(seg, off, size, cpu.reg(r))?;
    cpu.set_reg(r, m);
    Ok(())
}

fn xadd_r(cpu: &mut Cpu, ins: &Instruction) -> R {
    let (d, s) = (ins.op0_register(), ins.op1_register());
    let size = d.size();
    let (a, b) = (cpu.reg(d), cpu.reg(s));
    let r = a.wrapping_add(b) & size_mask(size);
    cpu.set_reg(s, a);
    cpu.set_reg(d, r);
    cpu.flags.set_add(a, b, false, r, bits(size));
    Ok(())
}

fn xadd_m(cpu: &mut Cpu, ins: &Instruction) -> R {
    let s = ins.op1_register();
    let size = s.size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let a = cpu.read(seg, off, size)?;
    let b = cpu.reg(s);
    let r = a.wrapping_add(b) & size_mask(size);
    cpu.write(seg, off, size, r)?;
    cpu.set_reg(s, a);
    cpu.flags.set_add(a, b, false, r, bits(size));
    Ok(())
}

/// AL, AX, EAX or RAX.
#[inline]
fn acc(size: usize) -> Register {
    match size {
        1 => Register::AL,
        2 => Register::AX,
        4 => Register::EAX,
        _ => Register::RAX,
    }
}

/// CMPXCHG with a register destination: on success only the destination is written, on
/// failure only the accumulator (as on hardware, including the 32-bit zero extension).
fn cmpxchg_r(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let size = d.size();
    let a = acc(size);
    let (av, dv) = (cpu.reg(a), cpu.reg(d));
    let res = av.wrapping_sub(dv) & size_mask(size);
    if av == dv {
        let v = cpu.reg(ins.op1_register());
        cpu.set_reg(d, v);
    } else {
        cpu.set_reg(a, dv);
    }
    cpu.flags.set_sub(av, dv, false, res, bits(size));
    Ok(())
}

/// CMPXCHG with a memory destination: the memory is written either way.
fn cmpxchg_m(cpu: &mut Cpu, ins: &Instruction) -> R {
    let s = ins.op1_register();
    let size = s.size();
    let a = acc(size);
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let dv = cpu.read(seg, off, size)?;
    let av = cpu.reg(a);
    let eq = av == dv;
    cpu.write(seg, off, size, if eq { cpu.reg(s) } else { dv })?;
    if !eq {
        cpu.set_reg(a, dv);
    }
    let res = av.wrapping_sub(dv) & size_mask(size);
    cpu.flags.set_sub(av, dv, false, res, bits(size));
    Ok(())
}

fn cmpxchg8b(cpu: &mut Cpu, ins: &Instruction) -> R {
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let m = cpu.read(seg, off, 8)?;
    let cmp = ((cpu.gpr[2] & 0xffff_ffff) << 32) | (cpu.gpr[0] & 0xffff_ffff);
    if m == cmp {
        let new = ((cpu.gpr[1] & 0xffff_ffff) << 32) | (cpu.gpr[3] & 0xffff_ffff);
        cpu.write(seg, off, 8, new)?;
        cpu.flags.update(0, ZF);
    } else {
        cpu.write(seg, off, 8, m)?;
        cpu.set_reg(Register::EAX, m);
        cpu.set_reg(Register::EDX, m >> 32);
        cpu.flags.update(ZF, 0);
    }
    Ok(())
}

fn cmpxchg16b(cpu: &mut Cpu, ins: &Instruction) -> R {
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    if cpu.linear(seg, off)? & 15 != 0 {
        return Err(Exception::gp0().into());
    }
    let hi_off = off.wrapping_add(8);
    let lo = cpu.read(seg, off, 8)?;
    let hi = cpu.read(seg, hi_off, 8)?;
    // The operand is aligned, so both halves are in one page: if the first write succeeds,
    // so does the second.
    if lo == cpu.gpr[0] && hi == cpu.gpr[2] {
        cpu.write(seg, off, 8, cpu.gpr[3])?;
        cpu.write(seg, hi_off, 8, cpu.gpr[1])?;
        cpu.flags.update(0, ZF);
    } else {
        cpu.write(seg, off, 8, lo)?;
        cpu.write(seg, hi_off, 8, hi)?;
        cpu.gpr[0] = lo;
        cpu.gpr[2] = hi;
        cpu.flags.update(ZF, 0);
    }
    Ok(())
}

fn bswap(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op0_register();
    let v = cpu.reg(r);
    let v = match r.size() {
        8 => v.swap_bytes(),
        4 => u64::from((v as u32).swap_bytes()),
        // 16-bit BSWAP is undefined; processors clear the register.
        _ => 0,
    };
    cpu.set_reg(r, v);
    Ok(())
}

#[inline]
fn swap(v: u64, size: usize) -> u64 {
    match size {
        2 => u64::from((v as u16).swap_bytes()),
        4 => u64::from((v as u32).swap_bytes()),
        _ => v.swap_bytes(),
    }
}

fn movbe_load(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let off = cpu.ea(ins);
    let v = cpu.read(cpu.mem_seg(ins), off, d.size())?;
    cpu.set_reg(d, swap(v, d.size()));
    Ok(())
}

fn movbe_store(cpu: &mut Cpu, ins: &Instruction) -> R {
    let s = ins.op1_register();
    let off = cpu.ea(ins);
    cpu.write(cpu.mem_seg(ins), off, s.size(), swap(cpu.reg(s), s.size()))
}

/// XLAT: AL = [seg:(R/E)BX + AL] (the decoder reports AL as the index register).
fn xlat(cpu: &mut Cpu, ins: &Instruction) -> R {
    let off = cpu.ea(ins);
    let v = cpu.read(cpu.mem_seg(ins), off, 1)?;
    cpu.set_reg(Register::AL, v);
    Ok(())
}

fn push_r(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op0_register();
    let v = cpu.reg(r);
    cpu.push(v, r.size())
}

fn push_i(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.stack_op_size(ins);
    cpu.push(ins.immediate(0), size)
}

fn push_m(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = ins.memory_size().size();
    let off = cpu.ea(ins);
    let v = cpu.read(cpu.mem_seg(ins), off, size)?;
    cpu.push(v, size)
}

fn pop_r(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op0_register();
    let v = cpu.pop(r.size())?;
    // POP RSP: the popped value replaces the incremented stack pointer.
    cpu.set_reg(r, v);
    Ok(())
}

/// POP to memory: an RSP-based address is computed with RSP after the pop.
fn pop_m(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = ins.memory_size().size();
    let v = cpu.peek(0, size)?;
    let old = cpu.gpr[4];
    let sp = cpu.gpr[4].wrapping_add(size as u64);
    cpu.set_sp(sp);
    let off = cpu.ea(ins);
    let new = cpu.gpr[4];
    cpu.gpr[4] = old;
    cpu.write(cpu.mem_seg(ins), off, size, v)?;
    cpu.gpr[4] = new;
    Ok(())
}

fn nop(_: &mut Cpu, _: &Instruction) -> R {
    Ok(())
}

/// UD0/UD1/UD2: the intended #UD, not logged.
fn ud(_: &mut Cpu, _: &Instruction) -> R {
    Err(Exception::ud().into())
}
