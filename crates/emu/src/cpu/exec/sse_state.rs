//! MXCSR access, FXSAVE/FXRSTOR, EMMS, and the SSE fences.

use super::{check_mmx, check_sse};
use crate::cpu::fpu::mx;
use crate::cpu::{cr, Cpu, Exception, Handler, R};
use iced_x86::{Code, Instruction, Mnemonic};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Ldmxcsr => ldmxcsr,
        Mnemonic::Stmxcsr => stmxcsr,
        Mnemonic::Emms => emms,
        Mnemonic::Lfence | Mnemonic::Sfence | Mnemonic::Mfence => fence,
        _ => return None,
    })
}

fn ldmxcsr(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_sse(cpu)?;
    let v = cpu.read(cpu.mem_seg(ins), cpu.ea(ins), 4)? as u32;
    if v & !mx::WRITABLE != 0 {
        return Err(Exception::gp0().into());
    }
    cpu.fpu.mxcsr = v;
    Ok(())
}

fn stmxcsr(cpu: &mut Cpu, ins: &Instruction) -> R {
    check_sse(cpu)?;
    let v = u64::from(cpu.fpu.mxcsr);
    cpu.write(cpu.mem_seg(ins), cpu.ea(ins), 4, v)
}

fn emms(cpu: &mut Cpu, _: &Instruction) -> R {
    check_mmx(cpu)?;
    cpu.fpu.tags = 0;
    Ok(())
}

fn fence(_: &mut Cpu, _: &Instruction) -> R {
    Ok(())
}

/// FXSAVE/FXRSTOR: CR0.EM or CR0.TS → #NM; the area must be 16-byte aligned.
fn fx_check(cpu: &Cpu, ins: &Instruction) -> R<(crate::cpu::Seg, u64, bool, usize)> {
    if cpu.cr0 & cr::CR0_EM != 0 || cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Exception::nm().into());
    }
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    if cpu.linear(seg, off)? & 15 != 0 {
        return Err(Exception::gp0().into());
    }
    let rex_w = matches!(
        ins.code(),
        Code::Fxsave64_m512byte | Code::Fxrstor64_m512byte
    );
    let nxmm = if cpu.long64 { 16 } else { 8 };
    Ok((seg, off, rex_w, nxmm))
}

pub fn fxsave(cpu: &mut Cpu, ins: &Instruction) -> R {
    let (seg, off, rex_w, nxmm) = fx_check(cpu, ins)?;
    let img = cpu.fpu.fxsave_image(rex_w, nxmm);
    // Bytes 464..512 are left to software.
    cpu.write_bytes(seg, off, &img[..464])
}

pub fn fxrstor(cpu: &mut Cpu, ins: &Instruction) -> R {
    let (seg, off, rex_w, nxmm) = fx_check(cpu, ins)?;
    let mut img = [0u8; 512];
    cpu.read_bytes(seg, off, &mut img)?;
    let mut f = cpu.fpu.clone();
    if !f.fxrstor_image(&img, rex_w, nxmm) {
        return Err(Exception::gp0().into());
    }
    cpu.fpu = f;
    Ok(())
}
