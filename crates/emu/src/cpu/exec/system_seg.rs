//! Segment register moves (MOV Sreg, PUSH/POP Sreg, LDS/LES/LFS/LGS/LSS) and PUSHF/POPF.

use crate::cpu::operand::size_mask;
use crate::cpu::{flags, Cpu, Exception, Handler, Seg, R};
use iced_x86::{Code, Instruction, Register};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match ins.code() {
        Mov_Sreg_rm16 | Mov_Sreg_r32m16 | Mov_Sreg_r64m16 => mov_to_sreg,
        Mov_rm16_Sreg | Mov_r32m16_Sreg | Mov_r64m16_Sreg => mov_from_sreg,
        Pushw_ES | Pushd_ES | Pushw_CS | Pushd_CS | Pushw_SS | Pushd_SS | Pushw_DS | Pushd_DS
        | Pushw_FS | Pushd_FS | Pushq_FS | Pushw_GS | Pushd_GS | Pushq_GS => push_sreg,
        Popw_ES | Popd_ES | Popw_SS | Popd_SS | Popw_DS | Popd_DS | Popw_FS | Popd_FS | Popq_FS
        | Popw_GS | Popd_GS | Popq_GS => pop_sreg,
        Lds_r16_m1616 | Lds_r32_m1632 | Les_r16_m1616 | Les_r32_m1632 | Lfs_r16_m1616
        | Lfs_r32_m1632 | Lfs_r64_m1664 | Lgs_r16_m1616 | Lgs_r32_m1632 | Lgs_r64_m1664
        | Lss_r16_m1616 | Lss_r32_m1632 | Lss_r64_m1664 => load_far_pointer,
        Pushfw | Pushfd | Pushfq => pushf,
        Popfw | Popfd | Popfq => popf,
        _ => return None,
    })
}

fn mov_to_sreg(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op0_register();
    if r == Register::CS || !r.is_segment_register() {
        return Err(Exception::ud().into());
    }
    let sel = cpu.read_op(ins, 1)? as u16;
    let seg = Seg::from_iced(r);
    cpu.load_seg(seg, sel)?;
    if seg == Seg::Ss {
        cpu.int_shadow = true;
        cpu.end_block = true;
    }
    Ok(())
}

fn mov_from_sreg(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op1_register();
    if !r.is_segment_register() {
        return Err(Exception::ud().into());
    }
    let sel = u64::from(cpu.seg[Seg::from_iced(r) as usize].selector);
    cpu.write_op(ins, 0, sel)
}

fn push_sreg(cpu: &mut Cpu, ins: &Instruction) -> R {
    let sel = u64::from(cpu.seg[Seg::from_iced(ins.op0_register()) as usize].selector);
    let size = cpu.stack_op_size(ins);
    cpu.push(sel, size)
}

fn pop_sreg(cpu: &mut Cpu, ins: &Instruction) -> R {
    let seg = Seg::from_iced(ins.op0_register());
    let size = cpu.stack_op_size(ins);
    let sel = cpu.peek(0, size)? as u16;
    // Pop with the old stack width, then load; undo the pop if the load faults.
    let old = cpu.gpr[4];
    cpu.set_sp(old.wrapping_add(size as u64));
    if let Err(e) = cpu.load_seg(seg, sel) {
        cpu.gpr[4] = old;
        return Err(e);
    }
    if seg == Seg::Ss {
        cpu.int_shadow = true;
        cpu.end_block = true;
    }
    Ok(())
}

fn load_far_pointer(cpu: &mut Cpu, ins: &Instruction) -> R {
    let dst = ins.op0_register();
    let size = dst.size();
    let seg = match ins.mnemonic() {
        iced_x86::Mnemonic::Lds => Seg::Ds,
        iced_x86::Mnemonic::Les => Seg::Es,
        iced_x86::Mnemonic::Lfs => Seg::Fs,
        iced_x86::Mnemonic::Lgs => Seg::Gs,
        _ => Seg::Ss,
    };
    let ms = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let v = cpu.read(ms, off, size)?;
    let sel = cpu.read(ms, off.wrapping_add(size as u64), 2)? as u16;
    cpu.load_seg(seg, sel)?;
    cpu.set_reg(dst, v);
    Ok(())
}

fn pushf(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.stack_op_size(ins);
    // The image never shows VM or RF.
    let v = cpu.flags.get() & !(flags::VM | flags::RF);
    cpu.push(v & size_mask(size), size)
}

/// The RFLAGS bits POPF may change at the current privilege.
fn popf_mask(cpu: &Cpu, size: usize) -> u64 {
    let mut mask = flags::ARITH | flags::TF | flags::DF | flags::NT | flags::AC | flags::ID;
    let iopl = (cpu.flags.get() & flags::IOPL) >> 12;
    if cpu.cpl == 0 {
        mask |= flags::IOPL;
    }
    if u64::from(cpu.cpl) <= iopl {
        mask |= flags::IF;
    }
    if size == 2 {
        mask &= 0xffff;
    }
    mask
}

fn popf(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.stack_op_size(ins);
    let v = cpu.peek(0, size)?;
    let old = cpu.flags.get();
    let mask = popf_mask(cpu, size);
    let mut new = (old & !mask) | (v & mask);
    if size > 2 {
        new &= !flags::RF;
    }
    let sp = cpu.gpr[4].wrapping_add(size as u64);
    cpu.set_sp(sp);
    cpu.flags.set(new);
    if new & !old & (flags::IF | flags::TF) != 0 {
        // Let the run loop look for pending interrupts.
        cpu.end_block = true;
    }
    Ok(())
}
