//! Integer instructions: data movement, arithmetic and logic, multiply and divide, shifts and
//! rotates, bit operations, conditional moves and sets, the stack (PUSH/POP), flag
//! instructions and the NOP family.
//!
//! `resolve` picks a handler once per decoded instruction. Hot instructions get handlers
//! specialized for their operand form (register/register, register/memory, ...) and, through
//! const generics, for their operation, so that the per-execution work is a handful of loads,
//! the operation itself and a lazy-flags record.

#[path = "int_arith.rs"]
mod arith;
#[path = "int_bit.rs"]
mod bit;
#[path = "int_legacy.rs"]
mod legacy;
#[path = "int_mov.rs"]
mod mov;
#[path = "int_shift.rs"]
mod shift;

pub(crate) use shift::{shift_dyn, ROL, ROR, SAR, SHL, SHR};

#[cfg(test)]
#[path = "int_tests.rs"]
mod tests;
#[cfg(test)]
#[path = "int_tests2.rs"]
mod tests2;
#[cfg(test)]
#[path = "int_tests3.rs"]
mod tests3;

use crate::cpu::{Cpu, Handler};
use iced_x86::{ConditionCode, Instruction, OpKind};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    arith::resolve(ins)
        .or_else(|| mov::resolve(ins))
        .or_else(|| shift::resolve(ins))
        .or_else(|| bit::resolve(ins))
        .or_else(|| legacy::resolve(ins))
}

/// The operand forms handlers are specialized for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    /// A general-purpose register.
    Reg,
    Mem,
    Imm,
    /// Anything else (segment, control, debug registers, ...): not ours.
    Other,
}

/// The form of operand `n`.
fn form(ins: &Instruction, n: u32) -> Form {
    match ins.op_kind(n) {
        OpKind::Register if ins.op_register(n).is_gpr() => Form::Reg,
        OpKind::Register => Form::Other,
        OpKind::Memory => Form::Mem,
        OpKind::Immediate8
        | OpKind::Immediate16
        | OpKind::Immediate32
        | OpKind::Immediate64
        | OpKind::Immediate8to16
        | OpKind::Immediate8to32
        | OpKind::Immediate8to64
        | OpKind::Immediate32to64 => Form::Imm,
        _ => Form::Other,
    }
}

/// The condition-code number (the low nibble of the Jcc/SETcc/CMOVcc opcode).
fn cc_num(cc: ConditionCode) -> Option<usize> {
    crate::cpu::flags::cc_number(cc).map(usize::from)
}

/// A table of 16 instantiations of a handler generic over the condition code.
macro_rules! cc_table {
    ($f:ident) => {
        [
            $f::<0>, $f::<1>, $f::<2>, $f::<3>, $f::<4>, $f::<5>, $f::<6>, $f::<7>, $f::<8>,
            $f::<9>, $f::<10>, $f::<11>, $f::<12>, $f::<13>, $f::<14>, $f::<15>,
        ]
    };
}
use cc_table;

/// The address-size mask of the instruction's memory operand, for instructions that address
/// memory beyond the operand (BT with a register offset).
fn addr_mask(cpu: &Cpu, ins: &Instruction) -> u64 {
    crate::cpu::operand::size_mask(cpu.addr_size(ins))
}
