//! Control and debug registers: MOV CRn/DRn, CLTS, LMSW, SMSW, INVLPG, WBINVD/INVD.

use super::need_cpl0;
use crate::cpu::operand::size_mask;
use crate::cpu::{cr, Cpu, Exception, Handler, R};
use iced_x86::{Code, Instruction, Register};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    Some(match ins.code() {
        Code::Mov_r32_cr | Code::Mov_r64_cr => mov_from_cr,
        Code::Mov_cr_r32 | Code::Mov_cr_r64 => mov_to_cr,
        Code::Mov_r32_dr | Code::Mov_r64_dr => mov_from_dr,
        Code::Mov_dr_r32 | Code::Mov_dr_r64 => mov_to_dr,
        Code::Clts => clts,
        Code::Lmsw_rm16 | Code::Lmsw_r32m16 | Code::Lmsw_r64m16 => lmsw,
        Code::Smsw_rm16 | Code::Smsw_r32m16 | Code::Smsw_r64m16 => smsw,
        Code::Invlpg_m => invlpg,
        Code::Wbinvd | Code::Invd => wbinvd,
        _ => return None,
    })
}

/// CR0 bits that exist; the others are ignored (ET always reads as one).
const CR0_BITS: u64 = cr::CR0_PE
    | cr::CR0_MP
    | cr::CR0_EM
    | cr::CR0_TS
    | cr::CR0_ET
    | cr::CR0_NE
    | cr::CR0_WP
    | cr::CR0_AM
    | cr::CR0_NW
    | cr::CR0_CD
    | cr::CR0_PG;

/// CR4 bits for the features we implement; setting any other bit is #GP.
const CR4_BITS: u64 = cr::CR4_TSD
    | cr::CR4_DE
    | cr::CR4_PSE
    | cr::CR4_PAE
    | cr::CR4_MCE
    | cr::CR4_PGE
    | cr::CR4_PCE
    | cr::CR4_OSFXSR
    | cr::CR4_OSXMMEXCPT
    | cr::CR4_FSGSBASE;

/// CR4 bits whose change invalidates every translation.
const CR4_PAGING: u64 =
    cr::CR4_PSE | cr::CR4_PAE | cr::CR4_PGE | cr::CR4_PCIDE | cr::CR4_SMEP | cr::CR4_SMAP;

fn cr_index(r: Register) -> u32 {
    (r as u32).wrapping_sub(Register::CR0 as u32)
}

fn dr_index(r: Register) -> u32 {
    (r as u32).wrapping_sub(Register::DR0 as u32)
}

impl Cpu {
    /// Reads control register `n` (CR8 through the platform's TPR).
    pub fn read_cr(&mut self, n: u32) -> R<u64> {
        Ok(match n {
            0 => self.cr0,
            2 => self.cr2,
            3 => self.cr3,
            4 => self.cr4,
            8 => self.platform.cr8(),
            _ => return Err(Exception::ud().into()),
        })
    }

    /// Writes control register `n` with the architectural checks: #GP on reserved bits and
    /// invalid combinations, TLB flushes, and the switch into or out of long mode.
    pub fn write_cr(&mut self, n: u32, v: u64) -> R {
        match n {
            0 => self.write_cr0(v)?,
            2 => self.cr2 = v,
            3 => {
                if self.long_mode() {
                    if v >> crate::cpu::mem::PHYS_BITS != 0 {
                        return Err(Exception::gp0().into());
                    }
                    self.cr3 = v;
                } else {
                    self.cr3 = v & 0xffff_ffff;
                }
                if self.cr4 & cr::CR4_PGE != 0 {
                    self.mem.flush_nonglobal();
                } else {
                    self.mem.flush_all();
                }
            }
            4 => {
                if v & !CR4_BITS != 0 || (self.long_mode() && v & cr::CR4_PAE == 0) {
                    return Err(Exception::gp0().into());
                }
                let old = self.cr4;
                self.cr4 = v;
                if (old ^ v) & CR4_PAGING != 0 {
                    self.mem.flush_all();
                }
                self.update_mode();
            }
            8 => {
                if v & !0xf != 0 {
                    return Err(Exception::gp0().into());
                }
                // A lower priority may let an interrupt in.
                self.platform.set_cr8(v);
            }
            _ => return Err(Exception::ud().into()),
        }
        self.end_block = true;
        Ok(())
    }

    fn write_cr0(&mut self, v: u64) -> R {
        if v >> 32 != 0 {
            return Err(Exception::gp0().into());
        }
        let v = (v & CR0_BITS) | cr::CR0_ET;
        let invalid = (v & cr::CR0_PG != 0 && v & cr::CR0_PE == 0)
            || (v & cr::CR0_NW != 0 && v & cr::CR0_CD == 0);
        if invalid {
            return Err(Exception::gp0().into());
        }
        let old = self.cr0;
        let mut efer = self.efer;
        let pg_on = v & cr::CR0_PG != 0 && old & cr::CR0_PG == 0;
        let pg_off = v & cr::CR0_PG == 0 && old & cr::CR0_PG != 0;
        if pg_on && efer & cr::EFER_LME != 0 {
            // Entering long mode: PAE paging, from code that is not already 64-bit.
            if self.cr4 & cr::CR4_PAE == 0 || self.seg[crate::cpu::Seg::Cs as usize].l {
                return Err(Exception::gp0().into());
            }
            efer |= cr::EFER_LMA;
        }
        if pg_off && efer & cr::EFER_LMA != 0 {
            // Leaving long mode is only possible from compatibility mode.
            if self.long64 {
                return Err(Exception::gp0().into());
            }
            efer &= !cr::EFER_LMA;
        }
        self.cr0 = v;
        self.efer = efer;
        if (old ^ v) & (cr::CR0_PG | cr::CR0_PE | cr::CR0_WP) != 0 {
            self.mem.flush_all();
        }
        self.update_mode();
        Ok(())
    }
}

/// The width of a CR/DR move's general register: 64 bits in 64-bit mode, else 32.
fn gpr_mask(cpu: &Cpu) -> u64 {
    if cpu.long64 {
        u64::MAX
    } else {
        0xffff_ffff
    }
}

fn mov_from_cr(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_cpl0(cpu)?;
    let v = cpu.read_cr(cr_index(ins.op1_register()))? & gpr_mask(cpu);
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn mov_to_cr(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_cpl0(cpu)?;
    let v = cpu.reg(ins.op1_register()) & gpr_mask(cpu);
    cpu.write_cr(cr_index(ins.op0_register()), v)
}

/// DR4/DR5 alias DR6/DR7 unless CR4.DE makes them #UD.
fn dr_slot(cpu: &Cpu, n: u32) -> R<usize> {
    match n {
        0..=3 | 6 | 7 => Ok(n as usize),
        4 | 5 if cpu.cr4 & cr::CR4_DE == 0 => Ok(n as usize + 2),
        _ => Err(Exception::ud().into()),
    }
}

fn mov_from_dr(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_cpl0(cpu)?;
    let slot = dr_slot(cpu, dr_index(ins.op1_register()))?;
    let v = cpu.dr.get(slot).copied().unwrap_or(0) & gpr_mask(cpu);
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn mov_to_dr(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_cpl0(cpu)?;
    let slot = dr_slot(cpu, dr_index(ins.op0_register()))?;
    let v = cpu.reg(ins.op1_register()) & gpr_mask(cpu);
    if slot >= 6 && v >> 32 != 0 {
        return Err(Exception::gp0().into());
    }
    // Stored only: hardware breakpoints are not implemented.
    let v = match slot {
        6 => v | 0xffff_0ff0,
        7 => v | 0x400,
        _ => v,
    };
    if let Some(d) = cpu.dr.get_mut(slot) {
        *d = v;
    }
    Ok(())
}

fn clts(cpu: &mut Cpu, _: &Instruction) -> R {
    need_cpl0(cpu)?;
    cpu.cr0 &= !cr::CR0_TS;
    Ok(())
}

fn lmsw(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_cpl0(cpu)?;
    let v = cpu.read_op(ins, 0)? & 0xf;
    // PE can be set but not cleared.
    let new = (cpu.cr0 & !0xe) | v | (cpu.cr0 & cr::CR0_PE);
    cpu.write_cr(0, new)
}

fn smsw(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = cpu.op_size(ins, 0);
    let v = cpu.cr0 & size_mask(size);
    cpu.write_op(ins, 0, v)
}

fn invlpg(cpu: &mut Cpu, ins: &Instruction) -> R {
    need_cpl0(cpu)?;
    let off = cpu.ea(ins);
    // A non-canonical address invalidates nothing.
    if let Ok(lin) = cpu.linear(cpu.mem_seg(ins), off) {
        cpu.mem.flush_page(lin);
    }
    Ok(())
}

fn wbinvd(cpu: &mut Cpu, _: &Instruction) -> R {
    need_cpl0(cpu)
}
