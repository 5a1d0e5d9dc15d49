//! Fast system calls and 64-bit segment bases: SYSCALL/SYSRET (Intel: 64-bit mode only),
//! SWAPGS, RDFSBASE/WRFSBASE/RDGSBASE/WRGSBASE.

use crate::cpu::seg::canonical;
use crate::cpu::{cr, flags, Cpu, Exception, Handler, Seg, R};
use iced_x86::{Code, Instruction};
use vireo_hypervisor::Segment;

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Code::*;
    Some(match ins.code() {
        Syscall => syscall,
        Sysretd | Sysretq => sysret,
        Swapgs => swapgs,
        Rdfsbase_r32 | Rdfsbase_r64 | Rdgsbase_r32 | Rdgsbase_r64 => rdbase,
        Wrfsbase_r32 | Wrfsbase_r64 | Wrgsbase_r32 | Wrgsbase_r64 => wrbase,
        _ => return None,
    })
}

/// The flat segment SYSCALL/SYSRET load: code (64-bit or 32-bit) or data, at `dpl`.
fn flat(selector: u16, code: bool, long: bool, dpl: u8) -> Segment {
    Segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: true,
        dpl,
        db: !long,
        s: true,
        l: long,
        g: true,
        avl: false,
        unusable: false,
    }
}

fn syscall(cpu: &mut Cpu, _: &Instruction) -> R {
    if !cpu.long64 || cpu.efer & cr::EFER_SCE == 0 {
        return Err(Exception::ud().into());
    }
    let rflags = cpu.flags.get();
    cpu.gpr[1] = cpu.next_rip;
    cpu.gpr[11] = rflags & !flags::RF;
    let sel = ((cpu.msr.star >> 32) as u16) & 0xfffc;
    cpu.seg[Seg::Cs as usize] = flat(sel, true, true, 0);
    cpu.seg[Seg::Ss as usize] = flat(sel.wrapping_add(8), false, false, 0);
    cpu.flags.set(rflags & !cpu.msr.sfmask & !flags::RF);
    cpu.next_rip = cpu.msr.lstar;
    cpu.update_mode();
    Ok(())
}

fn sysret(cpu: &mut Cpu, ins: &Instruction) -> R {
    if !cpu.long64 || cpu.efer & cr::EFER_SCE == 0 {
        return Err(Exception::ud().into());
    }
    if cpu.cpl != 0 {
        return Err(Exception::gp0().into());
    }
    let q = ins.code() == Code::Sysretq;
    let rcx = cpu.gpr[1];
    // Intel checks RCX in ring 0, before anything changes.
    if q && !canonical(rcx) {
        return Err(Exception::gp0().into());
    }
    let base = (cpu.msr.star >> 48) as u16;
    let cs = if q { base.wrapping_add(16) } else { base } | 3;
    cpu.seg[Seg::Cs as usize] = flat(cs, true, q, 3);
    cpu.seg[Seg::Ss as usize] = flat(base.wrapping_add(8) | 3, false, false, 3);
    cpu.flags.set((cpu.gpr[11] & 0x3c_7fd7) | flags::FIXED);
    cpu.next_rip = if q { rcx } else { rcx & 0xffff_ffff };
    cpu.update_mode();
    Ok(())
}

fn swapgs(cpu: &mut Cpu, _: &Instruction) -> R {
    if !cpu.long64 {
        return Err(Exception::ud().into());
    }
    if cpu.cpl != 0 {
        return Err(Exception::gp0().into());
    }
    let gs = &mut cpu.seg[Seg::Gs as usize].base;
    std::mem::swap(gs, &mut cpu.msr.kernel_gs_base);
    Ok(())
}

fn fsgs_allowed(cpu: &Cpu) -> R {
    if !cpu.long64 || cpu.cr4 & cr::CR4_FSGSBASE == 0 {
        return Err(Exception::ud().into());
    }
    Ok(())
}

fn base_seg(ins: &Instruction) -> Seg {
    match ins.code() {
        Code::Rdfsbase_r32 | Code::Rdfsbase_r64 | Code::Wrfsbase_r32 | Code::Wrfsbase_r64 => {
            Seg::Fs
        }
        _ => Seg::Gs,
    }
}

fn rdbase(cpu: &mut Cpu, ins: &Instruction) -> R {
    fsgs_allowed(cpu)?;
    let v = cpu.seg[base_seg(ins) as usize].base;
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn wrbase(cpu: &mut Cpu, ins: &Instruction) -> R {
    fsgs_allowed(cpu)?;
    let v = cpu.reg(ins.op0_register());
    if !canonical(v) {
        return Err(Exception::gp0().into());
    }
    cpu.seg[base_seg(ins) as usize].base = v;
    Ok(())
}
