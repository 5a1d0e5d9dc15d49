//! Near control transfers: JMP, Jcc, CALL, RET, LOOP/LOOPcc, JCXZ/JECXZ/JRCXZ, ENTER and
//! LEAVE. Far transfers, INT/IRET and SYSCALL live in `system.rs`.
//!
//! Relative targets come from iced-x86, which computed them from the decode address with the
//! operand-size wrap (16/32/64 bits). Every handler reads its operands and does its stack
//! accesses before it changes a register, so a faulting branch can run again.

use crate::cpu::operand::size_mask;
use crate::cpu::seg::canonical;
use crate::cpu::{Cpu, Exception, Handler, Seg, R};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    if ins.is_jcc_short_or_near() {
        return Some(jcc);
    }
    if ins.is_jmp_short_or_near() {
        return Some(jmp_rel);
    }
    if ins.is_jmp_near_indirect() {
        return Some(jmp_rm);
    }
    if ins.is_call_near() {
        return Some(call_rel);
    }
    if ins.is_call_near_indirect() {
        return Some(call_rm);
    }
    if ins.is_loop() || ins.is_loopcc() {
        return Some(loop_);
    }
    if ins.is_jcx_short() {
        return Some(jcxz);
    }
    Some(match ins.code() {
        Code::Retnw | Code::Retnd | Code::Retnq => ret,
        Code::Retnw_imm16 | Code::Retnd_imm16 | Code::Retnq_imm16 => ret,
        Code::Enterw_imm16_imm8 | Code::Enterd_imm16_imm8 | Code::Enterq_imm16_imm8 => enter,
        Code::Leavew | Code::Leaved | Code::Leaveq => leave,
        _ => return None,
    })
}

/// Checks a near-branch target for the current mode and returns the new instruction pointer:
/// #GP(0) if it is not canonical in 64-bit mode, otherwise masked to `size` bytes: the
/// operand size decides the wrap, as in the SDM (a 66h-prefixed branch in 16-bit code reaches
/// a 32-bit EIP). The CS limit is not checked, as elsewhere in the emulator.
#[inline]
pub fn near_target(cpu: &Cpu, target: u64, size: usize) -> R<u64> {
    if cpu.long64 {
        if !canonical(target) {
            return Err(Exception::gp0().into());
        }
        Ok(target)
    } else {
        Ok(target & size_mask(size.min(4)))
    }
}

/// The operand size of a relative branch, in bytes (from its target's width).
#[inline]
fn rel_size(ins: &Instruction) -> usize {
    match ins.op0_kind() {
        OpKind::NearBranch16 => 2,
        OpKind::NearBranch32 => 4,
        _ => 8,
    }
}

/// The relative target of the instruction, checked.
#[inline]
fn rel_target(cpu: &Cpu, ins: &Instruction) -> R<u64> {
    near_target(cpu, ins.near_branch_target(), rel_size(ins))
}

fn jmp_rel(cpu: &mut Cpu, ins: &Instruction) -> R {
    cpu.next_rip = rel_target(cpu, ins)?;
    Ok(())
}

fn jmp_rm(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    let t = cpu.read_op(ins, 0)?;
    cpu.next_rip = near_target(cpu, t & size_mask(size), size)?;
    Ok(())
}

fn jcc(cpu: &mut Cpu, ins: &Instruction) -> R {
    if cpu.flags.cond_iced(ins.condition_code()) {
        cpu.next_rip = rel_target(cpu, ins)?;
    }
    Ok(())
}

/// Pushes the return address (the next instruction) and jumps to `target`.
#[inline]
fn call_to(cpu: &mut Cpu, target: u64, size: usize) -> R {
    let target = near_target(cpu, target, size)?;
    cpu.push(cpu.next_rip & size_mask(size), size)?;
    cpu.next_rip = target;
    Ok(())
}

fn call_rel(cpu: &mut Cpu, ins: &Instruction) -> R {
    call_to(cpu, ins.near_branch_target(), rel_size(ins))
}

fn call_rm(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    // The target operand may use RSP; it is read before the push changes it.
    let t = cpu.read_op(ins, 0)? & size_mask(size);
    call_to(cpu, t, size)
}

fn ret(cpu: &mut Cpu, ins: &Instruction) -> R {
    let (size, imm) = match ins.code() {
        Code::Retnw => (2, 0),
        Code::Retnd => (4, 0),
        Code::Retnq => (8, 0),
        Code::Retnw_imm16 => (2, u64::from(ins.immediate16())),
        Code::Retnd_imm16 => (4, u64::from(ins.immediate16())),
        _ => (8, u64::from(ins.immediate16())),
    };
    let t = cpu.peek(0, size)?;
    let target = near_target(cpu, t, size)?;
    let sp = cpu.gpr[4].wrapping_add(size as u64).wrapping_add(imm);
    cpu.set_sp(sp);
    cpu.next_rip = target;
    Ok(())
}

/// The counter register of LOOP/JCXZ, chosen by the address size.
fn counter(code: Code) -> Register {
    use Code::*;
    match code {
        Loop_rel8_16_CX | Loop_rel8_32_CX | Loope_rel8_16_CX | Loope_rel8_32_CX
        | Loopne_rel8_16_CX | Loopne_rel8_32_CX | Jcxz_rel8_16 | Jcxz_rel8_32 => Register::CX,
        Loop_rel8_16_RCX | Loop_rel8_64_RCX | Loope_rel8_16_RCX | Loope_rel8_64_RCX
        | Loopne_rel8_16_RCX | Loopne_rel8_64_RCX | Jrcxz_rel8_16 | Jrcxz_rel8_64 => Register::RCX,
        _ => Register::ECX,
    }
}

fn loop_(cpu: &mut Cpu, ins: &Instruction) -> R {
    let reg = counter(ins.code());
    let count = cpu.reg(reg).wrapping_sub(1) & size_mask(reg.size());
    let taken = count != 0
        && match ins.mnemonic() {
            Mnemonic::Loope => cpu.flags.zf(),
            Mnemonic::Loopne => !cpu.flags.zf(),
            _ => true,
        };
    let target = if taken {
        Some(rel_target(cpu, ins)?)
    } else {
        None
    };
    cpu.set_reg(reg, count);
    if let Some(t) = target {
        cpu.next_rip = t;
    }
    Ok(())
}

fn jcxz(cpu: &mut Cpu, ins: &Instruction) -> R {
    if cpu.reg(counter(ins.code())) == 0 {
        cpu.next_rip = rel_target(cpu, ins)?;
    }
    Ok(())
}

/// The frame pointer register at the stack width (BP, EBP or RBP).
fn frame_reg(cpu: &Cpu) -> Register {
    match cpu.stack_size() {
        8 => Register::RBP,
        4 => Register::EBP,
        _ => Register::BP,
    }
}

/// The BP/EBP/RBP register of an operand size.
fn bp_of_size(size: usize) -> Register {
    match size {
        8 => Register::RBP,
        4 => Register::EBP,
        _ => Register::BP,
    }
}

fn enter(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size: usize = match ins.code() {
        Code::Enterw_imm16_imm8 => 2,
        Code::Enterd_imm16_imm8 => 4,
        _ => 8,
    };
    let alloc = u64::from(ins.immediate16());
    let level = u64::from(ins.immediate8_2nd() % 32);
    let smask = size_mask(cpu.stack_size());
    let fp = frame_reg(cpu);
    let mut bp = cpu.reg(fp);
    let rbp = cpu.gpr[5];
    let mut sp = cpu.gpr[4] & smask;
    let step = size as u64;

    // Reads of the outer frame pointers come first, then the writes, then the registers.
    let mut outer = [0u64; 31];
    for slot in outer.iter_mut().take(level.saturating_sub(1) as usize) {
        bp = bp.wrapping_sub(step) & smask;
        *slot = cpu.read(Seg::Ss, bp, size)?;
    }
    sp = sp.wrapping_sub(step) & smask;
    cpu.write(Seg::Ss, sp, size, rbp & size_mask(size))?;
    let frame = sp;
    if level > 0 {
        for &v in outer.iter().take(level as usize - 1) {
            sp = sp.wrapping_sub(step) & smask;
            cpu.write(Seg::Ss, sp, size, v)?;
        }
        sp = sp.wrapping_sub(step) & smask;
        cpu.write(Seg::Ss, sp, size, frame & size_mask(size))?;
    }
    let new_sp = sp.wrapping_sub(alloc) & smask;
    if cpu.long64 && !canonical(new_sp) {
        return Err(Exception::ss(0).into());
    }
    cpu.set_reg(bp_of_size(size), frame);
    cpu.set_sp(new_sp);
    Ok(())
}

fn leave(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size: usize = match ins.code() {
        Code::Leavew => 2,
        Code::Leaved => 4,
        _ => 8,
    };
    let bp = cpu.reg(frame_reg(cpu));
    let v = cpu.read(Seg::Ss, bp, size)?;
    cpu.set_sp(bp.wrapping_add(size as u64));
    cpu.set_reg(bp_of_size(size), v);
    Ok(())
}

#[cfg(test)]
#[path = "control_tests.rs"]
mod tests;
