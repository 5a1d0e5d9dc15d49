//! System instructions: HLT, CLI/STI, software interrupts, CPUID, MSRs, the TSC, and (in
//! the `system_*` modules) control registers, descriptor tables, segment loads, far
//! transfers and IRET, and SYSCALL/SYSRET.

use crate::cpu::interrupt::SoftKind;
use crate::cpu::{cr, flags, Cpu, Exception, Handler, R};
use iced_x86::{Instruction, Mnemonic};

#[path = "system_cr.rs"]
mod cr_regs;
#[path = "system_desc.rs"]
mod desc;
#[path = "system_far.rs"]
mod far;
#[path = "system_seg.rs"]
mod seg;
#[path = "system_sys.rs"]
mod sys;

#[cfg(test)]
#[path = "system_tests.rs"]
mod tests;

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    let h: Handler = match ins.mnemonic() {
        Mnemonic::Hlt => hlt,
        Mnemonic::Cli => cli,
        Mnemonic::Sti => sti,
        Mnemonic::Int => int_n,
        Mnemonic::Int3 => int3,
        Mnemonic::Into => into,
        Mnemonic::Int1 => int1,
        Mnemonic::Cpuid => cpuid,
        Mnemonic::Rdmsr => rdmsr,
        Mnemonic::Wrmsr => wrmsr,
        Mnemonic::Rdtsc => rdtsc,
        Mnemonic::Rdtscp => rdtscp,
        Mnemonic::Rdpid => rdpid,
        // Not implemented and not advertised: #UD without a warning.
        Mnemonic::Xgetbv
        | Mnemonic::Xsetbv
        | Mnemonic::Monitor
        | Mnemonic::Mwait
        | Mnemonic::Vmcall
        | Mnemonic::Invpcid => ud,
        _ => {
            return cr_regs::resolve(ins)
                .or_else(|| desc::resolve(ins))
                .or_else(|| far::resolve(ins))
                .or_else(|| seg::resolve(ins))
                .or_else(|| sys::resolve(ins))
        }
    };
    Some(h)
}

/// True when the current privilege may change IF and do I/O without a TSS bitmap check.
pub(crate) fn iopl_ok(cpu: &Cpu) -> bool {
    u64::from(cpu.cpl) <= (cpu.flags.get() & flags::IOPL) >> 12
}

/// Privileged instructions: #GP(0) outside ring 0 (real mode is ring 0).
pub(crate) fn need_cpl0(cpu: &Cpu) -> R {
    if cpu.cpl != 0 {
        return Err(Exception::gp0().into());
    }
    Ok(())
}

fn ud(_: &mut Cpu, _: &Instruction) -> R {
    Err(Exception::ud().into())
}

fn hlt(cpu: &mut Cpu, _: &Instruction) -> R {
    if cpu.cpl != 0 {
        return Err(Exception::gp0().into());
    }
    cpu.halted = true;
    cpu.end_block = true;
    Ok(())
}

fn cli(cpu: &mut Cpu, _: &Instruction) -> R {
    if cpu.cr0 & cr::CR0_PE != 0 && !iopl_ok(cpu) {
        return Err(Exception::gp0().into());
    }
    cpu.flags.set_bit(flags::IF, false);
    Ok(())
}

fn sti(cpu: &mut Cpu, _: &Instruction) -> R {
    if cpu.cr0 & cr::CR0_PE != 0 && !iopl_ok(cpu) {
        return Err(Exception::gp0().into());
    }
    if !cpu.flags.has(flags::IF) {
        cpu.flags.set_bit(flags::IF, true);
        // Interrupts stay blocked until after the next instruction (`sti; hlt` is atomic).
        cpu.int_shadow = true;
        cpu.end_block = true;
    }
    Ok(())
}

fn int_n(cpu: &mut Cpu, ins: &Instruction) -> R {
    cpu.software_interrupt(ins.immediate8(), SoftKind::IntN)
}

fn int3(cpu: &mut Cpu, _: &Instruction) -> R {
    cpu.software_interrupt(Exception::BP, SoftKind::Int3)
}

fn into(cpu: &mut Cpu, _: &Instruction) -> R {
    if cpu.flags.of() {
        cpu.software_interrupt(Exception::OF, SoftKind::Into)
    } else {
        Ok(())
    }
}

fn int1(cpu: &mut Cpu, _: &Instruction) -> R {
    cpu.software_interrupt(Exception::DB, SoftKind::Int1)
}

fn cpuid(cpu: &mut Cpu, _: &Instruction) -> R {
    let r = cpu.cpuid_query(cpu.gpr[0] as u32, cpu.gpr[1] as u32);
    for (i, v) in r.into_iter().enumerate() {
        // EAX, EBX, ECX, EDX are registers 0, 3, 1, 2.
        cpu.gpr[[0, 3, 1, 2][i]] = u64::from(v);
    }
    Ok(())
}

fn rdmsr(cpu: &mut Cpu, _: &Instruction) -> R {
    need_cpl0(cpu)?;
    let v = cpu.read_msr(cpu.gpr[1] as u32)?;
    cpu.gpr[0] = v & 0xffff_ffff;
    cpu.gpr[2] = v >> 32;
    Ok(())
}

fn wrmsr(cpu: &mut Cpu, _: &Instruction) -> R {
    need_cpl0(cpu)?;
    let v = (cpu.gpr[2] << 32) | (cpu.gpr[0] & 0xffff_ffff);
    cpu.write_msr(cpu.gpr[1] as u32, v)?;
    // EFER and the segment bases can change how code runs.
    cpu.end_block = true;
    Ok(())
}

/// CR4.TSD makes the TSC a ring-0 resource.
fn tsc_allowed(cpu: &Cpu) -> R {
    if cpu.cr4 & cr::CR4_TSD != 0 && cpu.cpl != 0 {
        return Err(Exception::gp0().into());
    }
    Ok(())
}

fn rdtsc(cpu: &mut Cpu, _: &Instruction) -> R {
    tsc_allowed(cpu)?;
    let t = cpu.tsc();
    cpu.gpr[0] = t & 0xffff_ffff;
    cpu.gpr[2] = t >> 32;
    Ok(())
}

fn rdtscp(cpu: &mut Cpu, _: &Instruction) -> R {
    tsc_allowed(cpu)?;
    let t = cpu.tsc();
    cpu.gpr[0] = t & 0xffff_ffff;
    cpu.gpr[2] = t >> 32;
    cpu.gpr[1] = cpu.msr.tsc_aux & 0xffff_ffff;
    Ok(())
}

fn rdpid(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.msr.tsc_aux;
    cpu.write_op(ins, 0, v)
}
