//! Port I/O: IN, OUT, INS and OUTS (with REP).
//!
//! In protected mode an access needs CPL <= IOPL; the TSS I/O permission bitmap is not
//! consulted. A port the platform does not handle goes to
//! the VMM: a write is queued and the repeated instruction pauses after that iteration, a
//! read abandons the iteration (`Fault::Exit`) until the data is there.

use super::{repeat, Str, RDI, RSI};
use crate::cpu::mem::Access;
use crate::cpu::{cr, flags, Cpu, Exception, Handler, Seg, R};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

pub(super) fn resolve(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::In => in_,
        Mnemonic::Out => out,
        Mnemonic::Insb | Mnemonic::Insw | Mnemonic::Insd => ins_,
        Mnemonic::Outsb | Mnemonic::Outsw | Mnemonic::Outsd => outs,
        _ => return None,
    })
}

/// #GP(0) unless the current privilege may use ports (CPL <= IOPL in protected mode; the
/// TSS bitmap, which would allow more, is not consulted).
fn check_io(cpu: &Cpu) -> R {
    if cpu.cr0 & cr::CR0_PE != 0 {
        let iopl = (cpu.flags.get() & flags::IOPL) >> 12;
        if u64::from(cpu.cpl) > iopl {
            return Err(Exception::gp0().into());
        }
    }
    Ok(())
}

/// The port of operand `n`: an 8-bit immediate or DX.
fn port(cpu: &Cpu, ins: &Instruction, n: u32) -> u16 {
    match ins.op_kind(n) {
        OpKind::Immediate8 => u16::from(ins.immediate8()),
        _ => cpu.gpr[2] as u16,
    }
}

fn in_(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_io(cpu)?;
    let r = ins.op0_register();
    let v = cpu.port_in(port(cpu, ins, 1), r.size())?;
    cpu.set_reg(r, u64::from(v));
    Ok(())
}

fn out(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_io(cpu)?;
    let r = ins.op1_register();
    let v = cpu.reg(r) as u32;
    cpu.port_out(port(cpu, ins, 0), r.size(), v)
}

fn ins_(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_io(cpu)?;
    let st = Str::new(cpu, ins, false);
    let p = cpu.reg(Register::DX) as u16;
    repeat(cpu, &st, None, |cpu, st| {
        let d = st.get(cpu, RDI);
        // The destination must be writable before the port is read: a device read can have
        // side effects and must not be repeated after a page fault.
        let first = cpu.linear(Seg::Es, d)?;
        let last = cpu.linear(Seg::Es, d.wrapping_add(st.size as u64 - 1))?;
        let user = cpu.cpl == 3;
        cpu.translate(first, Access::Write, user)?;
        cpu.translate(last, Access::Write, user)?;
        let v = cpu.port_in(p, st.size)?;
        cpu.write(Seg::Es, d, st.size, u64::from(v))?;
        st.advance(cpu, RDI);
        Ok(())
    })
}

fn outs(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_io(cpu)?;
    let st = Str::new(cpu, ins, false);
    let p = cpu.reg(Register::DX) as u16;
    repeat(cpu, &st, None, |cpu, st| {
        let v = cpu.read(st.src, st.get(cpu, RSI), st.size)?;
        cpu.port_out(p, st.size, v as u32)?;
        st.advance(cpu, RSI);
        Ok(())
    })
}
