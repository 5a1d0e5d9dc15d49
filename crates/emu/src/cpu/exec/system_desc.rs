//! Descriptor-table instructions: LGDT/LIDT/SGDT/SIDT, LLDT/SLDT, LTR/STR, and the
//! descriptor probes LAR/LSL/VERR/VERW.

use super::need_cpl0;
use crate::cpu::seg::{is_null, sel_err, ty, Desc};
use crate::cpu::{flags, Cpu, Exception, Handler, R};
use iced_x86::{Code, Instruction};
use vireo_hypervisor::{Segment, Table};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    Some(match ins.code() {
        Code::Lgdt_m1632_16 | Code::Lgdt_m1632 | Code::Lgdt_m1664 => lgdt,
        Code::Lidt_m1632_16 | Code::Lidt_m1632 | Code::Lidt_m1664 => lidt,
        Code::Sgdt_m1632_16 | Code::Sgdt_m1632 | Code::Sgdt_m1664 => sgdt,
        Code::Sidt_m1632_16 | Code::Sidt_m1632 | Code::Sidt_m1664 => sidt,
        Code::Lldt_rm16 | Code::Lldt_r32m16 | Code::Lldt_r64m16 => lldt,
        Code::Ltr_rm16 | Code::Ltr_r32m16 | Code::Ltr_r64m16 => ltr,
        Code::Sldt_rm16 | Code::Sldt_r32m16 | Code::Sldt_r64m16 => sldt,
        Code::Str_rm16 | Code::Str_r32m16 | Code::Str_r64m16 => str_,
        Code::Lar_r16_rm16 | Code::Lar_r32_r32m16 | Code::Lar_r64_r64m16 => lar,
        Code::Lsl_r16_rm16 | Code::Lsl_r32_r32m16 | Code::Lsl_r64_r64m16 => lsl,
        Code::Verr_rm16 | Code::Verr_r32m16 | Code::Verr_r64m16 => verr,
        Code::Verw_rm16 | Code::Verw_r32m16 | Code::Verw_r64m16 => verw,
        _ => return None,
    })
}

/// Reads the limit and base of an LGDT/LIDT operand.
fn read_table(cpu: &mut Cpu, ins: &Instruction) -> R<Table> {
    need_cpl0(cpu)?;
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let wide = cpu.long64;
    let mut b = [0u8; 10];
    let n = if wide { 10 } else { 6 };
    cpu.read_bytes(seg, off, &mut b[..n])?;
    let limit = u16::from_le_bytes([b[0], b[1]]);
    let mut base = u64::from_le_bytes([b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9]]);
    if !wide {
        base &= 0xffff_ffff;
        if matches!(ins.code(), Code::Lgdt_m1632_16 | Code::Lidt_m1632_16) {
            base &= 0xff_ffff;
        }
    } else if !crate::cpu::seg::canonical(base) {
        return Err(Exception::gp0().into());
    }
    Ok(Table { base, limit })
}

fn write_table(cpu: &mut Cpu, ins: &Instruction, t: Table) -> R {
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    let mut b = [0u8; 10];
    b[..2].copy_from_slice(&t.limit.to_le_bytes());
    b[2..].copy_from_slice(&t.base.to_le_bytes());
    let n = if cpu.long64 { 10 } else { 6 };
    cpu.write_bytes(seg, off, &b[..n])
}

fn lgdt(cpu: &mut Cpu, ins: &Instruction) -> R {
    cpu.gdtr = read_table(cpu, ins)?;
    Ok(())
}

fn lidt(cpu: &mut Cpu, ins: &Instruction) -> R {
    cpu.idtr = read_table(cpu, ins)?;
    Ok(())
}

fn sgdt(cpu: &mut Cpu, ins: &Instruction) -> R {
    write_table(cpu, ins, cpu.gdtr)
}

fn sidt(cpu: &mut Cpu, ins: &Instruction) -> R {
    write_table(cpu, ins, cpu.idtr)
}

/// LLDT, LTR, SLDT, STR, LAR, LSL, VERR, VERW exist in protected mode only.
fn need_protected(cpu: &Cpu) -> R {
    if !cpu.protected() {
        return Err(Exception::ud().into());
    }
    Ok(())
}

/// Reads a system descriptor from the GDT (16 bytes in long mode) for LLDT/LTR.
fn system_desc(cpu: &mut Cpu, sel: u16, want: &[u8]) -> R<(Desc, Segment)> {
    if sel & 4 != 0 {
        return Err(Exception::gp(sel_err(sel)).into());
    }
    let size = if cpu.long_mode() { 16 } else { 8 };
    cpu.desc_addr(sel, size)?;
    let d = cpu.read_desc(sel)?;
    if d.s() || !want.contains(&d.type_()) {
        return Err(Exception::gp(sel_err(sel)).into());
    }
    if !d.present() {
        return Err(Exception::np(sel_err(sel)).into());
    }
    let mut s = d.segment(sel);
    if cpu.long_mode() {
        let high = cpu.read_desc_high(&d)?;
        s.base |= (high & 0xffff_ffff) << 32;
    }
    Ok((d, s))
}

fn lldt(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_protected(cpu)?;
    need_cpl0(cpu)?;
    let sel = cpu.read_op(ins, 0)? as u16;
    if is_null(sel) {
        cpu.ldtr = Cpu::null_segment(sel);
        return Ok(());
    }
    let (_, s) = system_desc(cpu, sel, &[ty::LDT])?;
    cpu.ldtr = s;
    Ok(())
}

fn ltr(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_protected(cpu)?;
    need_cpl0(cpu)?;
    let sel = cpu.read_op(ins, 0)? as u16;
    if is_null(sel) {
        return Err(Exception::gp0().into());
    }
    let types: &[u8] = if cpu.long_mode() {
        &[ty::TSS_AVAIL]
    } else {
        &[ty::TSS_AVAIL, ty::TSS16_AVAIL]
    };
    let (d, mut s) = system_desc(cpu, sel, types)?;
    // Mark the TSS busy.
    let access = ((d.raw >> 40) as u8) | 2;
    cpu.write_sys(d.addr.wrapping_add(5), 1, u64::from(access))?;
    s.type_ |= 2;
    cpu.tr = s;
    Ok(())
}

fn sldt(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_protected(cpu)?;
    let v = u64::from(cpu.ldtr.selector);
    cpu.write_op(ins, 0, v)
}

fn str_(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_protected(cpu)?;
    let v = u64::from(cpu.tr.selector);
    cpu.write_op(ins, 0, v)
}

/// The descriptor a probe instruction names, or None if the selector is null or past the
/// table limit (the probes report that in ZF instead of faulting).
fn probe(cpu: &mut Cpu, sel: u16) -> R<Option<Desc>> {
    if is_null(sel) {
        return Ok(None);
    }
    match cpu.desc_addr(sel, 8) {
        Ok(addr) => Ok(Some(Desc {
            raw: cpu.read_sys(addr, 8)?,
            addr,
        })),
        Err(_) => Ok(None),
    }
}

/// The privilege rule of the probes: conforming code is visible from everywhere, anything
/// else needs DPL >= CPL and DPL >= RPL.
fn visible(cpu: &Cpu, d: &Desc, sel: u16) -> bool {
    d.conforming() || (d.dpl() >= cpu.cpl && d.dpl() >= (sel & 3) as u8)
}

fn set_zf(cpu: &mut Cpu, on: bool) {
    cpu.flags.update(flags::ZF, if on { flags::ZF } else { 0 });
}

fn lar_lsl(cpu: &mut Cpu, ins: &Instruction, lar: bool) -> R {
    need_protected(cpu)?;
    let sel = cpu.read_op(ins, 1)? as u16;
    let d = probe(cpu, sel)?;
    let valid = d.filter(|d| {
        let type_ok = d.s()
            || match (cpu.long_mode(), lar) {
                (true, true) => matches!(d.type_(), 2 | 9 | 0xb | 0xc),
                (true, false) => matches!(d.type_(), 2 | 9 | 0xb),
                (false, true) => matches!(d.type_(), 1..=5 | 9 | 0xb | 0xc),
                (false, false) => matches!(d.type_(), 1..=3 | 9 | 0xb),
            };
        type_ok && visible(cpu, d, sel)
    });
    match valid {
        Some(d) => {
            let v = if lar {
                (d.raw >> 32) & 0x00f0_ff00
            } else {
                u64::from(d.segment(sel).limit)
            };
            cpu.write_op(ins, 0, v)?;
            set_zf(cpu, true);
        }
        None => set_zf(cpu, false),
    }
    Ok(())
}

fn lar(cpu: &mut Cpu, ins: &Instruction) -> R {
    lar_lsl(cpu, ins, true)
}

fn lsl(cpu: &mut Cpu, ins: &Instruction) -> R {
    lar_lsl(cpu, ins, false)
}

fn verify(cpu: &mut Cpu, ins: &Instruction, write: bool) -> R {
    need_protected(cpu)?;
    let sel = cpu.read_op(ins, 0)? as u16;
    let d = probe(cpu, sel)?;
    let ok = d.is_some_and(|d| {
        let kind_ok = if write {
            d.is_data() && d.type_() & ty::RW != 0
        } else {
            d.is_data() || (d.is_code() && d.type_() & ty::RW != 0)
        };
        kind_ok && visible(cpu, &d, sel)
    });
    set_zf(cpu, ok);
    Ok(())
}

fn verr(cpu: &mut Cpu, ins: &Instruction) -> R {
    verify(cpu, ins, false)
}

fn verw(cpu: &mut Cpu, ins: &Instruction) -> R {
    verify(cpu, ins, true)
}
