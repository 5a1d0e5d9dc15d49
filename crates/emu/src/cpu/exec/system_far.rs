//! Far transfers: JMP/CALL far through code segments, RETF (to the same or an outer
//! privilege level), and IRET/IRETD/IRETQ. Call gates and task switches are not supported
//! (#GP, logged); Linux uses neither.

use crate::cpu::operand::size_mask;
use crate::cpu::seg::{canonical, is_null, sel_err};
use crate::cpu::{flags, Cpu, Exception, Handler, Seg, R};
use iced_x86::{Code, Instruction, OpKind};
use vireo_hypervisor::Segment;

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match ins.code() {
        Jmp_ptr1616 | Jmp_ptr1632 | Jmp_m1616 | Jmp_m1632 | Jmp_m1664 => jmp_far,
        Call_ptr1616 | Call_ptr1632 | Call_m1616 | Call_m1632 | Call_m1664 => call_far,
        Retfw | Retfd | Retfq | Retfw_imm16 | Retfd_imm16 | Retfq_imm16 => retf,
        Iretw | Iretd | Iretq => iret,
        _ => return None,
    })
}

/// Operand size of a far transfer in bytes.
fn far_size(ins: &Instruction) -> usize {
    use Code::*;
    match ins.code() {
        Jmp_ptr1616 | Jmp_m1616 | Call_ptr1616 | Call_m1616 | Retfw | Retfw_imm16 | Iretw => 2,
        Jmp_m1664 | Call_m1664 | Retfq | Retfq_imm16 | Iretq => 8,
        _ => 4,
    }
}

/// The selector:offset a far JMP/CALL names.
fn far_target(cpu: &mut Cpu, ins: &Instruction, size: usize) -> R<(u16, u64)> {
    Ok(match ins.op0_kind() {
        OpKind::FarBranch16 => (ins.far_branch_selector(), u64::from(ins.far_branch16())),
        OpKind::FarBranch32 => (ins.far_branch_selector(), u64::from(ins.far_branch32())),
        _ => {
            let seg = cpu.mem_seg(ins);
            let off = cpu.ea(ins);
            let ip = cpu.read(seg, off, size)?;
            let sel = cpu.read(seg, off.wrapping_add(size as u64), 2)? as u16;
            (sel, ip)
        }
    })
}

/// Checks a target offset against the new code segment: canonical for 64-bit code, inside
/// the limit otherwise. Returns it masked to the operand size.
fn check_ip(cs: &Segment, ip: u64, size: usize, lma: bool) -> R<u64> {
    if lma && cs.l {
        if !canonical(ip) {
            return Err(Exception::gp0().into());
        }
        return Ok(ip);
    }
    let ip = ip & size_mask(size.min(4));
    if ip > u64::from(cs.limit) {
        return Err(Exception::gp0().into());
    }
    Ok(ip)
}

/// The code segment a far JMP/CALL may reach at the current privilege (no gates).
fn direct_target(cpu: &mut Cpu, sel: u16, ip: u64, size: usize) -> R<(Segment, u64)> {
    if is_null(sel) {
        return Err(Exception::gp0().into());
    }
    let d = cpu.read_desc(sel)?;
    if !d.is_code() {
        if !d.s() {
            tracing::warn!(
                "emu: far transfer through system descriptor type {:#x} (selector {sel:#x}) \
                 not supported",
                d.type_()
            );
        }
        return Err(Exception::gp(sel_err(sel)).into());
    }
    let cpl = cpu.cpl;
    let ok = if d.conforming() {
        d.dpl() <= cpl
    } else {
        (sel & 3) as u8 <= cpl && d.dpl() == cpl
    };
    if !ok {
        return Err(Exception::gp(sel_err(sel)).into());
    }
    let cs = cpu.code_segment(sel, cpl)?;
    let ip = check_ip(&cs, ip, size, cpu.long_mode())?;
    Ok((cs, ip))
}

fn set_cs(cpu: &mut Cpu, cs: Segment, ip: u64) {
    cpu.seg[Seg::Cs as usize] = cs;
    cpu.update_mode();
    cpu.next_rip = ip;
}

/// Real mode and virtual-8086 mode: CS is just a paragraph number.
fn real_mode(cpu: &Cpu) -> bool {
    !cpu.protected() || cpu.flags.has(flags::VM)
}

fn jmp_far(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = far_size(ins);
    let (sel, ip) = far_target(cpu, ins, size)?;
    if real_mode(cpu) {
        cpu.load_cs_real(sel);
        cpu.next_rip = ip & size_mask(size);
        return Ok(());
    }
    let (cs, ip) = direct_target(cpu, sel, ip, size)?;
    set_cs(cpu, cs, ip);
    Ok(())
}

/// Writes `vals` (pushed in order) below the stack pointer, then moves it: all or nothing.
fn push_all(cpu: &mut Cpu, vals: &[u64], size: usize) -> R {
    let width = size_mask(cpu.stack_size());
    let mut sp = cpu.gpr[4];
    for &v in vals {
        sp = sp.wrapping_sub(size as u64) & width;
        cpu.write(Seg::Ss, sp, size, v)?;
    }
    cpu.set_sp(sp);
    Ok(())
}

fn call_far(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = far_size(ins);
    let (sel, ip) = far_target(cpu, ins, size)?;
    let old_cs = u64::from(cpu.seg[Seg::Cs as usize].selector);
    let ret = cpu.next_rip;
    if real_mode(cpu) {
        push_all(cpu, &[old_cs, ret], size)?;
        cpu.load_cs_real(sel);
        cpu.next_rip = ip & size_mask(size);
        return Ok(());
    }
    let (cs, ip) = direct_target(cpu, sel, ip, size)?;
    push_all(cpu, &[old_cs, ret], size)?;
    set_cs(cpu, cs, ip);
    Ok(())
}

/// Checks the code segment of a return (RETF/IRET) to privilege `rpl`.
fn return_cs(cpu: &mut Cpu, sel: u16) -> R<Segment> {
    let rpl = (sel & 3) as u8;
    if is_null(sel) {
        return Err(Exception::gp0().into());
    }
    if rpl < cpu.cpl {
        return Err(Exception::gp(sel_err(sel)).into());
    }
    let d = cpu.read_desc(sel)?;
    if !d.is_code() || (d.conforming() && d.dpl() > rpl) || (!d.conforming() && d.dpl() != rpl) {
        return Err(Exception::gp(sel_err(sel)).into());
    }
    cpu.code_segment(sel, rpl)
}

/// Loads RSP after a return that switched stacks, with the width of the new stack.
fn set_new_sp(cpu: &mut Cpu, sp: u64, ss: &Segment, from64: bool) {
    cpu.gpr[4] = if from64 {
        sp
    } else if ss.db {
        sp & 0xffff_ffff
    } else {
        (cpu.gpr[4] & !0xffff) | (sp & 0xffff)
    };
}

fn retf(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = far_size(ins);
    let imm = if ins.op_count() > 0 {
        u64::from(ins.immediate16())
    } else {
        0
    };
    let sz = size as u64;
    let ip = cpu.peek(0, size)?;
    let sel = cpu.peek(sz, size)? as u16;
    if real_mode(cpu) {
        let sp = cpu.gpr[4].wrapping_add(2 * sz + imm);
        cpu.set_sp(sp);
        cpu.load_cs_real(sel);
        cpu.next_rip = ip & size_mask(size);
        return Ok(());
    }
    let cs = return_cs(cpu, sel)?;
    let lma = cpu.long_mode();
    let ip = check_ip(&cs, ip, size, lma)?;
    let rpl = (sel & 3) as u8;
    if rpl == cpu.cpl {
        let sp = cpu.gpr[4].wrapping_add(2 * sz + imm);
        cpu.set_sp(sp);
        set_cs(cpu, cs, ip);
        return Ok(());
    }
    // To an outer level: the caller's SS:SP follow the parameters.
    let new_sp = cpu.peek(2 * sz + imm, size)?;
    let ss_sel = cpu.peek(3 * sz + imm, size)? as u16;
    let ss = cpu.stack_segment(ss_sel, rpl, lma && cs.l, false)?;
    let from64 = cpu.long64;
    cpu.seg[Seg::Ss as usize] = ss;
    set_new_sp(cpu, new_sp.wrapping_add(imm), &ss, from64);
    set_cs(cpu, cs, ip);
    cpu.null_inaccessible_segments();
    Ok(())
}

/// The RFLAGS an IRET loads, from the popped image, with the privilege rules of the CPL the
/// IRET runs at.
fn iret_flags(cpu: &Cpu, image: u64, size: usize) -> u64 {
    let old = cpu.flags.get();
    let mut mask = flags::ARITH | flags::TF | flags::DF | flags::NT;
    if size > 2 {
        mask |= flags::RF | flags::AC | flags::ID;
    }
    if !cpu.protected() {
        mask |= flags::IF | flags::IOPL;
    } else {
        let iopl = (old & flags::IOPL) >> 12;
        if u64::from(cpu.cpl) <= iopl {
            mask |= flags::IF;
        }
        if cpu.cpl == 0 {
            mask |= flags::IOPL;
            if size > 2 {
                mask |= flags::VIF | flags::VIP;
            }
        }
    }
    (old & !mask) | (image & mask)
}

fn iret(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = far_size(ins);
    let sz = size as u64;
    let ip = cpu.peek(0, size)?;
    let sel = cpu.peek(sz, size)? as u16;
    let image = cpu.peek(2 * sz, size)?;
    if real_mode(cpu) {
        let new = iret_flags(cpu, image, size);
        let sp = cpu.gpr[4].wrapping_add(3 * sz);
        cpu.set_sp(sp);
        cpu.flags.set(new);
        cpu.load_cs_real(sel);
        cpu.next_rip = ip & size_mask(size);
        return Ok(());
    }
    if cpu.flags.has(flags::NT) {
        // A nested-task return: no task switching here (and #GP in long mode anyway).
        if !cpu.long_mode() {
            tracing::warn!("emu: IRET with NT set (task return) not supported");
        }
        return Err(Exception::gp0().into());
    }
    if !cpu.long_mode() && image & flags::VM != 0 && cpu.cpl == 0 {
        tracing::warn!("emu: IRET to virtual-8086 mode not supported");
        return Err(Exception::gp0().into());
    }
    let cs = return_cs(cpu, sel)?;
    let lma = cpu.long_mode();
    let ip = check_ip(&cs, ip, size, lma)?;
    let rpl = (sel & 3) as u8;
    let from64 = cpu.long64;
    // 64-bit mode always pops SS:RSP; elsewhere only a return to an outer level does.
    let stack = if from64 || rpl != cpu.cpl {
        let new_sp = cpu.peek(3 * sz, size)?;
        let ss_sel = cpu.peek(4 * sz, size)? as u16;
        let ss = cpu.stack_segment(ss_sel, rpl, lma && cs.l, false)?;
        Some((ss, new_sp))
    } else {
        None
    };
    let new_flags = iret_flags(cpu, image, size);
    let outer = rpl > cpu.cpl;
    match stack {
        Some((ss, new_sp)) => {
            cpu.seg[Seg::Ss as usize] = ss;
            set_new_sp(cpu, new_sp, &ss, from64);
        }
        None => {
            let sp = cpu.gpr[4].wrapping_add(3 * sz);
            cpu.set_sp(sp);
        }
    }
    cpu.flags.set(new_flags);
    set_cs(cpu, cs, ip);
    if outer {
        cpu.null_inaccessible_segments();
    }
    Ok(())
}
