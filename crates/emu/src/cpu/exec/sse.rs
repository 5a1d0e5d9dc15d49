//! SSE, SSE2, SSE3, SSSE3 and MMX: operand access shared by the `sse_*.rs` modules, and
//! the dispatch of every form we implement.
//!
//! Only legacy (non-VEX) encodings are handled: we advertise no AVX, so VEX forms stay #UD.
//! Packed-integer handlers serve both the MMX (64-bit) and XMM (128-bit) forms.

use crate::cpu::{cr, Cpu, Exception, Handler, R};
use iced_x86::{Code, Instruction, Mnemonic, OpKind, Register};

#[path = "sse_cvt.rs"]
mod cvt;
#[path = "sse_fp.rs"]
mod fp;
#[path = "sse_int.rs"]
mod int;
#[path = "sse_mov.rs"]
mod mov;
#[path = "sse_state.rs"]
mod state;

#[cfg(test)]
#[path = "sse_fp_tests.rs"]
mod fp_tests;
#[cfg(test)]
#[path = "sse_native_tests.rs"]
mod native_tests;
#[cfg(test)]
#[path = "sse_native_x87.rs"]
mod sse_native_x87;
#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;

/// SSE3 is implemented (CPUID.1:ECX.SSE3).
pub const HAS_SSE3: bool = true;
/// SSSE3 is implemented (CPUID.1:ECX.SSSE3).
pub const HAS_SSSE3: bool = true;

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    // Forms whose mnemonic is shared with string instructions or has several meanings.
    match ins.code() {
        Code::Movsd_xmm_xmmm64 | Code::Movsd_xmmm64_xmm => return Some(mov::movsd),
        Code::Cmpsd_xmm_xmmm64_imm8 => return Some(fp::cmpsd),
        Code::Movsd_m32_m32 | Code::Cmpsd_m32_m32 => return None,
        Code::Fxsave_m512byte | Code::Fxsave64_m512byte => return Some(state::fxsave),
        Code::Fxrstor_m512byte | Code::Fxrstor64_m512byte => return Some(state::fxrstor),
        Code::Pextrw_r32m16_xmm_imm8 | Code::Pextrw_r64m16_xmm_imm8 => return None,
        _ => {}
    }
    if ins.code().encoding() != iced_x86::EncodingKind::Legacy {
        return None;
    }
    mov::resolve(ins)
        .or_else(|| int::resolve(ins))
        .or_else(|| fp::resolve(ins))
        .or_else(|| cvt::resolve(ins))
        .or_else(|| state::resolve(ins))
}

/// Whether the instruction works on MMX registers (any operand is MMn).
#[inline]
pub(crate) fn is_mmx(ins: &Instruction) -> bool {
    (0..ins.op_count()).any(|n| ins.op_kind(n) == OpKind::Register && ins.op_register(n).is_mm())
}

/// The checks every SSE instruction makes: CR0.EM or !CR4.OSFXSR → #UD, CR0.TS → #NM.
#[inline]
pub(crate) fn check_sse(cpu: &Cpu) -> R {
    if cpu.cr0 & (cr::CR0_EM | cr::CR0_TS) != 0 || cpu.cr4 & cr::CR4_OSFXSR == 0 {
        if cpu.cr0 & cr::CR0_EM != 0 || cpu.cr4 & cr::CR4_OSFXSR == 0 {
            return Err(Exception::ud().into());
        }
        return Err(Exception::nm().into());
    }
    Ok(())
}

/// The checks an MMX instruction makes: CR0.EM → #UD, CR0.TS → #NM, pending x87 error → #MF.
#[inline]
pub(crate) fn check_mmx(cpu: &Cpu) -> R {
    if cpu.cr0 & cr::CR0_EM != 0 {
        return Err(Exception::ud().into());
    }
    if cpu.cr0 & cr::CR0_TS != 0 {
        return Err(Exception::nm().into());
    }
    if cpu.fpu.fsw & crate::cpu::fpu::sw::ES != 0 {
        return Err(Exception::new(Exception::MF).into());
    }
    Ok(())
}

/// The check for the instruction's register kind (MMX or SSE); for MMX also makes the
/// x87 → MMX transition (TOP = 0, all tags valid).
#[inline]
pub(crate) fn check(cpu: &mut Cpu, ins: &Instruction) -> R<bool> {
    if is_mmx(ins) {
        check_mmx(cpu)?;
        Ok(true)
    } else {
        check_sse(cpu)?;
        Ok(false)
    }
}

#[inline]
pub(crate) fn xmm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::XMM0 as usize) & 15
}

#[inline]
pub(crate) fn mm_index(r: Register) -> usize {
    (r as usize).wrapping_sub(Register::MM0 as usize) & 7
}

/// Whether a 16-byte legacy-SSE memory operand of this instruction must be aligned.
#[inline]
fn needs_align(ins: &Instruction) -> bool {
    !matches!(
        ins.mnemonic(),
        Mnemonic::Movups | Mnemonic::Movupd | Mnemonic::Movdqu | Mnemonic::Lddqu
    )
}

/// Reads the memory operand (its `memory_size`, at most 16 bytes), checking the alignment of
/// 16-byte operands.
pub(crate) fn read_mem(cpu: &mut Cpu, ins: &Instruction) -> R<u128> {
    let size = ins.memory_size().size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    if size >= 16 {
        if needs_align(ins) && cpu.linear(seg, off)? & 15 != 0 {
            return Err(Exception::gp0().into());
        }
        let mut b = [0u8; 16];
        cpu.read_bytes(seg, off, &mut b)?;
        Ok(u128::from_le_bytes(b))
    } else {
        Ok(u128::from(cpu.read(seg, off, size.max(1))?))
    }
}

/// Writes the memory operand (its `memory_size` bytes of `v`).
pub(crate) fn write_mem(cpu: &mut Cpu, ins: &Instruction, v: u128) -> R {
    let size = ins.memory_size().size();
    let seg = cpu.mem_seg(ins);
    let off = cpu.ea(ins);
    if size >= 16 {
        if needs_align(ins) && cpu.linear(seg, off)? & 15 != 0 {
            return Err(Exception::gp0().into());
        }
        cpu.write_bytes(seg, off, &v.to_le_bytes())
    } else {
        cpu.write(seg, off, size.max(1), v as u64)
    }
}

/// Reads operand `n`: XMM, MMX or general register, memory, or immediate.
#[inline]
pub(crate) fn rd(cpu: &mut Cpu, ins: &Instruction, n: u32) -> R<u128> {
    match ins.op_kind(n) {
        OpKind::Register => {
            let r = ins.op_register(n);
            Ok(if r.is_xmm() {
                cpu.fpu.xmm[xmm_index(r)]
            } else if r.is_mm() {
                u128::from(cpu.fpu.mm(mm_index(r)))
            } else {
                u128::from(cpu.reg(r))
            })
        }
        OpKind::Memory => read_mem(cpu, ins),
        _ => Ok(u128::from(ins.immediate(n))),
    }
}

/// Writes operand `n`: a whole XMM register, an MMX register (low 64 bits), a general
/// register (x86 merge rules), or memory.
#[inline]
pub(crate) fn wr(cpu: &mut Cpu, ins: &Instruction, n: u32, v: u128) -> R {
    match ins.op_kind(n) {
        OpKind::Register => {
            let r = ins.op_register(n);
            if r.is_xmm() {
                cpu.fpu.xmm[xmm_index(r)] = v;
            } else if r.is_mm() {
                cpu.fpu.set_mm(mm_index(r), v as u64);
            } else {
                cpu.set_reg(r, v as u64);
            }
            Ok(())
        }
        OpKind::Memory => write_mem(cpu, ins, v),
        _ => Err(Exception::ud().into()),
    }
}

/// Lane `i` of `bits` bits.
#[inline]
pub(crate) fn lane(v: u128, bits: u32, i: u32) -> u64 {
    let m = if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    };
    (v >> (i * bits)) as u64 & m
}

/// Replaces lane `i` of `bits` bits.
#[inline]
pub(crate) fn set_lane(v: u128, bits: u32, i: u32, x: u64) -> u128 {
    let m: u128 = if bits >= 64 {
        u128::from(u64::MAX)
    } else {
        (1u128 << bits) - 1
    };
    let sh = i * bits;
    (v & !(m << sh)) | ((u128::from(x) & m) << sh)
}

/// Applies `f` lane by lane to the lanes of `bits` bits of `a` and `b` (16 bytes).
#[inline]
pub(crate) fn map2(a: u128, b: u128, bits: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let mut r = 0u128;
    for i in 0..128 / bits {
        r = set_lane(r, bits, i, f(lane(a, bits, i), lane(b, bits, i)));
    }
    r
}

/// Applies `f` to each lane of `a`.
#[inline]
pub(crate) fn map1(a: u128, bits: u32, f: impl Fn(u64) -> u64) -> u128 {
    map2(a, 0, bits, |x, _| f(x))
}

/// The common shape `op0 = f(op0, op1)` for MMX or XMM.
#[inline]
pub(crate) fn binop(cpu: &mut Cpu, ins: &Instruction, f: impl Fn(u128, u128) -> u128) -> R {
    let mmx = check(cpu, ins)?;
    let b = rd(cpu, ins, 1)?;
    let a = rd(cpu, ins, 0)?;
    let r = f(a, b);
    if mmx {
        cpu.fpu.enter_mmx();
    }
    wr(cpu, ins, 0, r)
}

/// The width in bytes of the vector registers the instruction uses (8 MMX, 16 XMM).
#[inline]
pub(crate) fn vec_bytes(ins: &Instruction) -> u32 {
    if is_mmx(ins) {
        8
    } else {
        16
    }
}
