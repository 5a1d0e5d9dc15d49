//! Bit operations (BT BTS BTR BTC, BSF BSR, TZCNT LZCNT POPCNT), SETcc, CMOVcc and the flag
//! instructions (LAHF SAHF CLC STC CMC CLD STD).

use super::{addr_mask, cc_num, cc_table, form, Form};
use crate::cpu::flags::{AF, CF, DF, PF, SF, ZF};
use crate::cpu::operand::{bits, sext};
use crate::cpu::{Cpu, Handler, R};
use iced_x86::{Instruction, Mnemonic, OpKind, Register};

/// Whether we report BMI1. Without it the TZCNT encoding (F3 0F BC) executes as BSF, as on
/// processors that predate it.
const BMI1: bool = false;

const BT: u8 = 0;
const BTS: u8 = 1;
const BTR: u8 = 2;
const BTC: u8 = 3;

pub(super) fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic as M;
    Some(match ins.mnemonic() {
        M::Bt => bt_form::<BT>(ins)?,
        M::Bts => bt_form::<BTS>(ins)?,
        M::Btr => bt_form::<BTR>(ins)?,
        M::Btc => bt_form::<BTC>(ins)?,
        M::Bsf => bsf,
        M::Tzcnt if BMI1 => tzcnt,
        M::Tzcnt => bsf,
        M::Bsr => bsr,
        M::Lzcnt => lzcnt,
        M::Popcnt => popcnt,
        M::Seto
        | M::Setno
        | M::Setb
        | M::Setae
        | M::Sete
        | M::Setne
        | M::Setbe
        | M::Seta
        | M::Sets
        | M::Setns
        | M::Setp
        | M::Setnp
        | M::Setl
        | M::Setge
        | M::Setle
        | M::Setg => {
            let cc = cc_num(ins.condition_code())?;
            let table: [Handler; 16] = match form(ins, 0) {
                Form::Reg => cc_table!(setcc_r),
                Form::Mem => cc_table!(setcc_m),
                _ => return None,
            };
            *table.get(cc)?
        }
        M::Cmovo
        | M::Cmovno
        | M::Cmovb
        | M::Cmovae
        | M::Cmove
        | M::Cmovne
        | M::Cmovbe
        | M::Cmova
        | M::Cmovs
        | M::Cmovns
        | M::Cmovp
        | M::Cmovnp
        | M::Cmovl
        | M::Cmovge
        | M::Cmovle
        | M::Cmovg => {
            let cc = cc_num(ins.condition_code())?;
            let table: [Handler; 16] = match form(ins, 1) {
                Form::Reg => cc_table!(cmov_r),
                Form::Mem => cc_table!(cmov_m),
                _ => return None,
            };
            *table.get(cc)?
        }
        M::Lahf => lahf,
        M::Sahf => sahf,
        M::Clc => clc,
        M::Stc => stc,
        M::Cmc => cmc,
        M::Cld => cld,
        M::Std => std_,
        _ => return None,
    })
}

fn bt_form<const OP: u8>(ins: &Instruction) -> Option<Handler> {
    Some(match (form(ins, 0), form(ins, 1)) {
        (Form::Reg, Form::Reg | Form::Imm) => bt_r::<OP>,
        (Form::Mem, Form::Imm) => bt_mi::<OP>,
        (Form::Mem, Form::Reg) => bt_mr::<OP>,
        _ => return None,
    })
}

/// Applies a bit operation to bit `n` of `v`: (new value, old bit).
#[inline(always)]
fn bt_op<const OP: u8>(v: u64, n: u32) -> (u64, bool) {
    let b = 1u64 << n;
    let r = match OP {
        BTS => v | b,
        BTR => v & !b,
        BTC => v ^ b,
        _ => v,
    };
    (r, v & b != 0)
}

#[inline(always)]
fn set_cf(cpu: &mut Cpu, cf: bool) {
    cpu.flags.update(CF, if cf { CF } else { 0 });
}

/// Register destination; the bit offset (register or immediate) is taken modulo the size.
fn bt_r<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let size = d.size();
    let off = if ins.op1_kind() == OpKind::Register {
        cpu.reg(ins.op1_register())
    } else {
        u64::from(ins.immediate8())
    };
    let (r, cf) = bt_op::<OP>(cpu.reg(d), (off & u64::from(bits(size) - 1)) as u32);
    if OP != BT {
        cpu.set_reg(d, r);
    }
    set_cf(cpu, cf);
    Ok(())
}

/// Memory destination, immediate offset: modulo the operand size.
fn bt_mi<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let size = ins.memory_size().size();
    let n = u32::from(ins.immediate8()) & (bits(size) - 1);
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    bt_mem::<OP>(cpu, seg, off, size, n)
}

/// Memory destination, register offset: a signed bit offset from the operand's address, which
/// may reach outside the operand.
fn bt_mr<const OP: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let r = ins.op1_register();
    let size = r.size();
    let bit_off = sext(cpu.reg(r), size) as i64;
    let units = bit_off >> (size.trailing_zeros() + 3);
    let disp = (units as u64).wrapping_mul(size as u64);
    let off = cpu.ea(ins).wrapping_add(disp) & addr_mask(cpu, ins);
    let n = (bit_off as u32) & (bits(size) - 1);
    bt_mem::<OP>(cpu, cpu.mem_seg(ins), off, size, n)
}

#[inline(always)]
fn bt_mem<const OP: u8>(cpu: &mut Cpu, seg: crate::cpu::Seg, off: u64, size: usize, n: u32) -> R {
    let v = cpu.read(seg, off, size)?;
    let (r, cf) = bt_op::<OP>(v, n);
    if OP != BT {
        cpu.write(seg, off, size, r)?;
    }
    set_cf(cpu, cf);
    Ok(())
}

/// BSF: ZF says whether the source was zero; then the destination is left unchanged.
fn bsf(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.read_op(ins, 1)?;
    if v == 0 {
        cpu.flags.update(0, ZF);
    } else {
        cpu.set_reg(ins.op0_register(), u64::from(v.trailing_zeros()));
        cpu.flags.update(ZF, 0);
    }
    Ok(())
}

fn bsr(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.read_op(ins, 1)?;
    if v == 0 {
        cpu.flags.update(0, ZF);
    } else {
        cpu.set_reg(ins.op0_register(), u64::from(63 - v.leading_zeros()));
        cpu.flags.update(ZF, 0);
    }
    Ok(())
}

/// TZCNT/LZCNT flags: CF = the source was zero, ZF = the result is zero.
#[inline]
fn count_flags(cpu: &mut Cpu, src_zero: bool, res: u64) {
    let mut f = 0;
    if src_zero {
        f |= CF;
    }
    if res == 0 {
        f |= ZF;
    }
    cpu.flags.update(CF | ZF, f);
}

fn tzcnt(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let v = cpu.read_op(ins, 1)?;
    let res = if v == 0 {
        u64::from(bits(d.size()))
    } else {
        u64::from(v.trailing_zeros())
    };
    cpu.set_reg(d, res);
    count_flags(cpu, v == 0, res);
    Ok(())
}

fn lzcnt(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let b = bits(d.size());
    let v = cpu.read_op(ins, 1)?;
    // The value is zero-extended: subtract the bits above the operand.
    let res = u64::from(v.leading_zeros() - (64 - b));
    cpu.set_reg(d, res);
    count_flags(cpu, v == 0, res);
    Ok(())
}

fn popcnt(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.read_op(ins, 1)?;
    cpu.set_reg(ins.op0_register(), u64::from(v.count_ones()));
    cpu.flags.set_arith(if v == 0 { ZF } else { 0 });
    Ok(())
}

fn setcc_r<const CC: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.flags.cond(CC) as u64;
    cpu.set_reg(ins.op0_register(), v);
    Ok(())
}

fn setcc_m<const CC: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.flags.cond(CC) as u64;
    let off = cpu.ea(ins);
    cpu.write(cpu.mem_seg(ins), off, 1, v)
}

/// CMOVcc: a 32-bit destination is zero-extended even when the condition is false.
#[inline(always)]
fn cmov_set<const CC: u8>(cpu: &mut Cpu, d: Register, v: u64) {
    if cpu.flags.cond(CC) {
        cpu.set_reg(d, v);
    } else if d.size() == 4 {
        let cur = cpu.reg(d);
        cpu.set_reg(d, cur);
    }
}

fn cmov_r<const CC: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let v = cpu.reg(ins.op1_register());
    cmov_set::<CC>(cpu, ins.op0_register(), v);
    Ok(())
}

/// The memory source is read whatever the condition (and can fault).
fn cmov_m<const CC: u8>(cpu: &mut Cpu, ins: &Instruction) -> R {
    let d = ins.op0_register();
    let off = cpu.ea(ins);
    let v = cpu.read(cpu.mem_seg(ins), off, d.size())?;
    cmov_set::<CC>(cpu, d, v);
    Ok(())
}

/// LAHF: AH = SF:ZF:0:AF:0:PF:1:CF.
fn lahf(cpu: &mut Cpu, _: &Instruction) -> R {
    let f = cpu.flags.get() & (SF | ZF | AF | PF | CF);
    cpu.set_reg(Register::AH, f | 2);
    Ok(())
}

/// SAHF: loads SF, ZF, AF, PF and CF from AH.
fn sahf(cpu: &mut Cpu, _: &Instruction) -> R {
    let m = SF | ZF | AF | PF | CF;
    let ah = cpu.reg(Register::AH);
    cpu.flags.update(m, ah & m);
    Ok(())
}

fn clc(cpu: &mut Cpu, _: &Instruction) -> R {
    cpu.flags.update(CF, 0);
    Ok(())
}

fn stc(cpu: &mut Cpu, _: &Instruction) -> R {
    cpu.flags.update(0, CF);
    Ok(())
}

fn cmc(cpu: &mut Cpu, _: &Instruction) -> R {
    let cf = cpu.flags.cf();
    cpu.flags.update(CF, if cf { 0 } else { CF });
    Ok(())
}

fn cld(cpu: &mut Cpu, _: &Instruction) -> R {
    cpu.flags.set_bit(DF, false);
    Ok(())
}

fn std_(cpu: &mut Cpu, _: &Instruction) -> R {
    cpu.flags.set_bit(DF, true);
    Ok(())
}
