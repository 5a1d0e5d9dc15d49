//! x87 control: FNINIT, FNCLEX, FLDCW/FNSTCW, FNSTSW, FWAIT, FFREE, FINCSTP/FDECSTP, FNOP,
//! FNSTENV/FLDENV, FNSAVE/FRSTOR.

use super::{check, note, st_index};
use crate::cpu::fpu::sw;
use crate::cpu::{cr, Cpu, Exception, Handler, R};
use iced_x86::{Instruction, MemorySize, Mnemonic, OpKind};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Fninit | Finit => finit,
        Fnclex | Fclex => fclex,
        Fldcw => fldcw,
        Fnstcw | Fstcw => fstcw,
        Fnstsw | Fstsw => fstsw,
        Wait => fwait,
        Ffree | Ffreep => ffree,
        Fincstp | Fdecstp => fincstp,
        Fnop | Fneni | Fndisi | Fnsetpm | Feni | Fdisi | Fsetpm => fnop,
        Fnstenv | Fstenv => fstenv,
        Fldenv => fldenv,
        Fnsave | Fsave => fsave,
        Frstor => frstor,
        _ => return None,
    })
}

/// Checks for non-waiting instructions (FN...): only CR0.EM/TS.
fn check_nowait(cpu: &Cpu, ins: &Instruction) -> R {
    if cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Exception::nm().into());
    }
    // The waiting forms (FINIT = WAIT + FNINIT ...) first check for a pending exception.
    let waiting = matches!(
        ins.mnemonic(),
        Mnemonic::Finit
            | Mnemonic::Fclex
            | Mnemonic::Fstcw
            | Mnemonic::Fstsw
            | Mnemonic::Fstenv
            | Mnemonic::Fsave
    );
    if waiting && cpu.fpu.fsw & sw::ES != 0 {
        return Err(Exception::new(Exception::MF).into());
    }
    Ok(())
}

fn finit(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_nowait(cpu, ins)?;
    cpu.fpu.init_x87();
    Ok(())
}

fn fclex(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_nowait(cpu, ins)?;
    cpu.fpu.fsw &= !(sw::EXC | sw::SF | sw::ES | sw::B);
    Ok(())
}

fn fldcw(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    let v = cpu.read(cpu.mem_seg(ins), cpu.ea(ins), 2)? as u16;
    cpu.fpu.fcw = v | 0x40;
    cpu.fpu.update_es();
    Ok(())
}

fn fstcw(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_nowait(cpu, ins)?;
    let v = u64::from(cpu.fpu.fcw);
    cpu.write(cpu.mem_seg(ins), cpu.ea(ins), 2, v)
}

fn fstsw(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_nowait(cpu, ins)?;
    let v = u64::from(cpu.fpu.fsw);
    if ins.op0_kind() == OpKind::Register {
        cpu.set_reg(ins.op0_register(), v);
        Ok(())
    } else {
        cpu.write(cpu.mem_seg(ins), cpu.ea(ins), 2, v)
    }
}

/// FWAIT: #NM when CR0.MP and CR0.TS, #MF when an unmasked exception is pending.
fn fwait(cpu: &mut Cpu, _: &Instruction) -> R {
    if cpu.cr0 & cr::CR0_MP != 0 && cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Exception::nm().into());
    }
    if cpu.fpu.fsw & sw::ES != 0 {
        return Err(Exception::new(Exception::MF).into());
    }
    Ok(())
}

fn ffree(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    cpu.fpu.set_empty(st_index(ins.op0_register()));
    if ins.mnemonic() == Mnemonic::Ffreep {
        let t = (cpu.fpu.top() + 1) & 7;
        cpu.fpu.set_top(t);
    }
    Ok(())
}

fn fincstp(cpu: &mut Cpu, ins: &Instruction) -> R {
    check(cpu)?;
    note(cpu, ins);
    let d = if ins.mnemonic() == Mnemonic::Fincstp {
        1
    } else {
        7
    };
    let t = (cpu.fpu.top() + d) & 7;
    cpu.fpu.set_top(t);
    cpu.fpu.fsw &= !sw::C1;
    Ok(())
}

fn fnop(cpu: &mut Cpu, ins: &Instruction) -> R {
    if ins.mnemonic() == Mnemonic::Fnop {
        check(cpu)?;
    } else {
        check_nowait(cpu, ins)?;
    }
    Ok(())
}

/// The FPU environment image (protected-mode layout; 14 bytes with a 16-bit operand size,
/// else 28).
fn env_image(cpu: &Cpu, small: bool) -> Vec<u8> {
    let f = &cpu.fpu;
    let tw = f.full_tag_word();
    let mut b = Vec::with_capacity(28);
    if small {
        for w in [f.fcw, f.fsw, tw, f.fip as u16, f.fcs, f.fdp as u16, f.fds] {
            b.extend_from_slice(&w.to_le_bytes());
        }
    } else {
        for w in [f.fcw, f.fsw, tw] {
            b.extend_from_slice(&(u32::from(w) | 0xffff_0000).to_le_bytes());
        }
        b.extend_from_slice(&(f.fip as u32).to_le_bytes());
        b.extend_from_slice(&(u32::from(f.fcs) | (u32::from(f.fop & 0x7ff) << 16)).to_le_bytes());
        b.extend_from_slice(&(f.fdp as u32).to_le_bytes());
        b.extend_from_slice(&(u32::from(f.fds) | 0xffff_0000).to_le_bytes());
    }
    b
}

fn load_env(cpu: &mut Cpu, b: &[u8], small: bool) {
    let w = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let d = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let f = &mut cpu.fpu;
    if small {
        f.fcw = w(0);
        f.fsw = w(2);
        f.set_full_tag_word(w(4));
        f.fip = u64::from(w(6));
        f.fcs = w(8);
        f.fdp = u64::from(w(10));
        f.fds = w(12);
    } else {
        f.fcw = w(0);
        f.fsw = w(4);
        f.set_full_tag_word(w(8));
        f.fip = u64::from(d(12));
        f.fcs = w(16);
        f.fop = w(18) & 0x7ff;
        f.fdp = u64::from(d(20));
        f.fds = w(24);
    }
}

fn is_small(ins: &Instruction) -> bool {
    matches!(
        ins.memory_size(),
        MemorySize::FpuEnv14 | MemorySize::FpuState94
    )
}

fn fstenv(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_nowait(cpu, ins)?;
    let img = env_image(cpu, is_small(ins));
    cpu.write_bytes(cpu.mem_seg(ins), cpu.ea(ins), &img)?;
    // FNSTENV masks every exception afterwards.
    cpu.fpu.fcw |= 0x3f;
    cpu.fpu.update_es();
    Ok(())
}

fn fldenv(cpu: &mut Cpu, ins: &Instruction) -> R {
    if cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Exception::nm().into());
    }
    let small = is_small(ins);
    let mut b = [0u8; 28];
    let n = if small { 14 } else { 28 };
    cpu.read_bytes(cpu.mem_seg(ins), cpu.ea(ins), &mut b[..n])?;
    load_env(cpu, &b, small);
    Ok(())
}

fn fsave(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_nowait(cpu, ins)?;
    let small = is_small(ins);
    let mut img = env_image(cpu, small);
    for i in 0..8 {
        img.extend_from_slice(&cpu.fpu.st(i).to_le_bytes()[..10]);
    }
    cpu.write_bytes(cpu.mem_seg(ins), cpu.ea(ins), &img)?;
    cpu.fpu.init_x87();
    Ok(())
}

fn frstor(cpu: &mut Cpu, ins: &Instruction) -> R {
    if cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 {
        return Err(Exception::nm().into());
    }
    let small = is_small(ins);
    let env = if small { 14 } else { 28 };
    let mut b = [0u8; 108];
    cpu.read_bytes(cpu.mem_seg(ins), cpu.ea(ins), &mut b[..env + 80])?;
    load_env(cpu, &b[..env], small);
    for i in 0..8 {
        let mut v = [0u8; 16];
        v[..10].copy_from_slice(&b[env + 10 * i..env + 10 * i + 10]);
        let p = cpu.fpu.phys(i);
        cpu.fpu.st[p] = u128::from_le_bytes(v);
    }
    Ok(())
}
