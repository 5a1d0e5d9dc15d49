//! Operand access for instruction handlers: registers, immediates, memory operands (effective
//! addresses), and the stack.

use super::{Cpu, Exception, Seg, R};
use iced_x86::{Instruction, OpKind, Register};

/// Width in bits of a value of `size` bytes, for the lazy flags.
#[inline]
pub fn bits(size: usize) -> u32 {
    (size * 8) as u32
}

/// All ones in the low `size` bytes.
#[inline]
pub fn size_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

/// Sign-extends the low `size` bytes of `v`.
#[inline]
pub fn sext(v: u64, size: usize) -> u64 {
    match size {
        1 => v as i8 as i64 as u64,
        2 => v as i16 as i64 as u64,
        4 => v as i32 as i64 as u64,
        _ => v,
    }
}

/// iced-x86 numbers the general-purpose registers in blocks: AL..R15L (1..=20, where 5..=8
/// are AH, CH, DH, BH), AX..R15W (21..=36), EAX..R15D (37..=52), RAX..R15 (53..=68). Register
/// access is the hottest path of the interpreter, so it is computed from that numbering.
const GPR8: usize = Register::AL as usize;
const GPR16: usize = Register::AX as usize;
const GPR64_END: usize = Register::R15 as usize;
const _: () = assert!(
    Register::AH as usize == GPR8 + 4
        && Register::R15L as usize == GPR8 + 19
        && Register::R15W as usize == GPR16 + 15
        && Register::EAX as usize == GPR16 + 16
        && Register::RAX as usize == GPR16 + 32
        && GPR64_END == GPR16 + 47
);

impl Cpu {
    /// Reads a general-purpose register of any width, zero-extended.
    #[inline(always)]
    pub fn reg(&self, r: Register) -> u64 {
        let n = r as usize;
        if (GPR16..=GPR64_END).contains(&n) {
            let k = n - GPR16;
            let v = self.gpr[k & 15];
            return match k >> 4 {
                0 => v & 0xffff,
                1 => v & 0xffff_ffff,
                _ => v,
            };
        }
        if (GPR8..GPR16).contains(&n) {
            let k = n - GPR8;
            return match k {
                0..=3 => self.gpr[k] & 0xff,
                4..=7 => (self.gpr[k - 4] >> 8) & 0xff,
                _ => self.gpr[(k - 4) & 15] & 0xff,
            };
        }
        self.other_reg(r)
    }

    /// Writes a general-purpose register with x86 rules: 32-bit writes zero the upper half,
    /// 8- and 16-bit writes keep the other bits.
    #[inline(always)]
    pub fn set_reg(&mut self, r: Register, v: u64) {
        let n = r as usize;
        if (GPR16..=GPR64_END).contains(&n) {
            let k = n - GPR16;
            let slot = &mut self.gpr[k & 15];
            *slot = match k >> 4 {
                0 => (*slot & !0xffff) | (v & 0xffff),
                1 => v & 0xffff_ffff,
                _ => v,
            };
            return;
        }
        if (GPR8..GPR16).contains(&n) {
            let k = n - GPR8;
            match k {
                0..=3 => self.gpr[k] = (self.gpr[k] & !0xff) | (v & 0xff),
                4..=7 => self.gpr[k - 4] = (self.gpr[k - 4] & !0xff00) | ((v & 0xff) << 8),
                _ => {
                    let i = (k - 4) & 15;
                    self.gpr[i] = (self.gpr[i] & !0xff) | (v & 0xff);
                }
            }
            return;
        }
        // Segment and control registers have their own instructions; a handler that gets
        // here has a bug, which must not take the host down.
        tracing::warn!("emu: write to unsupported register {r:?} ignored");
    }

    fn other_reg(&self, r: Register) -> u64 {
        if r.is_segment_register() {
            return u64::from(self.seg[Seg::from_iced(r) as usize].selector);
        }
        match r {
            Register::RIP => self.rip,
            Register::EIP => self.rip & 0xffff_ffff,
            _ => 0,
        }
    }

    /// The address size of a memory operand, in bytes.
    #[inline]
    pub(crate) fn addr_size(&self, ins: &Instruction) -> usize {
        let b = ins.memory_base();
        let i = ins.memory_index();
        let wide = |r: Register| r.is_gpr64() || r == Register::RIP;
        let mid = |r: Register| r.is_gpr32() || r == Register::EIP;
        if wide(b) || wide(i) {
            8
        } else if mid(b) || mid(i) {
            4
        } else if b.is_gpr16() || i.is_gpr16() {
            2
        } else {
            match ins.memory_displ_size() {
                2 | 4 | 8 => ins.memory_displ_size() as usize,
                _ => (self.code_bits / 8) as usize,
            }
        }
    }

    /// The effective address (offset in its segment) of the instruction's memory operand.
    #[inline]
    pub fn ea(&self, ins: &Instruction) -> u64 {
        let base = ins.memory_base();
        let index = ins.memory_index();
        // The common case in 64-bit code: 64-bit base (and index) registers.
        if base.is_gpr64() && (index == Register::None || index.is_gpr64()) {
            let mut off = ins.memory_displacement64().wrapping_add(self.reg(base));
            if index != Register::None {
                off =
                    off.wrapping_add(self.reg(index) << ins.memory_index_scale().trailing_zeros());
            }
            return off;
        }
        let mut off = match base {
            // iced already computed the absolute target from the decode address.
            Register::RIP | Register::EIP => return ins.ip_rel_memory_address(),
            Register::None => ins.memory_displacement64(),
            b => ins.memory_displacement64().wrapping_add(self.reg(b)),
        };
        if index != Register::None {
            off = off.wrapping_add(self.reg(index) << ins.memory_index_scale().trailing_zeros());
        }
        off & size_mask(self.addr_size(ins))
    }

    /// The segment of the instruction's memory operand (default or override).
    #[inline]
    pub fn mem_seg(&self, ins: &Instruction) -> Seg {
        Seg::from_iced(ins.memory_segment())
    }

    /// The size in bytes of operand `n`.
    #[inline]
    pub fn op_size(&self, ins: &Instruction, n: u32) -> usize {
        match ins.op_kind(n) {
            OpKind::Register => ins.op_register(n).size(),
            OpKind::Memory => ins.memory_size().size(),
            OpKind::Immediate8 | OpKind::Immediate8_2nd => 1,
            OpKind::Immediate16 | OpKind::Immediate8to16 => 2,
            OpKind::Immediate32 | OpKind::Immediate8to32 => 4,
            _ => 8,
        }
    }

    /// Reads operand `n` (register, memory or immediate), zero-extended to 64 bits.
    /// Immediates that the instruction sign-extends come sign-extended to the operand size.
    #[inline]
    pub fn read_op(&mut self, ins: &Instruction, n: u32) -> R<u64> {
        match ins.op_kind(n) {
            OpKind::Register => Ok(self.reg(ins.op_register(n))),
            OpKind::Memory => {
                let size = ins.memory_size().size();
                let off = self.ea(ins);
                self.read(self.mem_seg(ins), off, size.min(8))
            }
            OpKind::Immediate8to16 => Ok(ins.immediate(n) & 0xffff),
            OpKind::Immediate8to32 => Ok(ins.immediate(n) & 0xffff_ffff),
            _ => Ok(ins.immediate(n)),
        }
    }

    /// Writes operand `n` (register or memory).
    #[inline]
    pub fn write_op(&mut self, ins: &Instruction, n: u32, v: u64) -> R {
        match ins.op_kind(n) {
            OpKind::Register => {
                self.set_reg(ins.op_register(n), v);
                Ok(())
            }
            OpKind::Memory => {
                let size = ins.memory_size().size();
                let off = self.ea(ins);
                self.write(self.mem_seg(ins), off, size.min(8), v)
            }
            _ => Err(Exception::ud().into()),
        }
    }

    /// The stack pointer's width in bytes.
    #[inline]
    pub fn stack_size(&self) -> usize {
        if self.long64 {
            8
        } else if self.stack32 {
            4
        } else {
            2
        }
    }

    #[inline]
    fn rsp_masked(&self, v: u64) -> u64 {
        v & size_mask(self.stack_size())
    }

    /// Pushes `size` bytes. RSP changes only if the write succeeds.
    #[inline]
    pub fn push(&mut self, v: u64, size: usize) -> R {
        let sp = self.rsp_masked(self.gpr[4].wrapping_sub(size as u64));
        self.write(Seg::Ss, sp, size, v)?;
        self.set_sp(sp);
        Ok(())
    }

    /// Pops `size` bytes. RSP changes only if the read succeeds.
    #[inline]
    pub fn pop(&mut self, size: usize) -> R<u64> {
        let sp = self.rsp_masked(self.gpr[4]);
        let v = self.read(Seg::Ss, sp, size)?;
        self.set_sp(sp.wrapping_add(size as u64));
        Ok(v)
    }

    /// Reads the value `depth` bytes above the stack pointer without popping.
    #[inline]
    pub fn peek(&mut self, depth: u64, size: usize) -> R<u64> {
        let sp = self.rsp_masked(self.gpr[4].wrapping_add(depth));
        self.read(Seg::Ss, sp, size)
    }

    /// Sets the stack pointer, keeping the bits above the stack width.
    #[inline]
    pub fn set_sp(&mut self, sp: u64) {
        self.gpr[4] = match self.stack_size() {
            8 => sp,
            4 => sp & 0xffff_ffff,
            _ => (self.gpr[4] & !0xffff) | (sp & 0xffff),
        };
    }

    /// The operand size of a stack operation of the instruction (push/pop/call/ret).
    #[inline]
    pub fn stack_op_size(&self, ins: &Instruction) -> usize {
        let inc = ins.stack_pointer_increment().unsigned_abs() as usize;
        match inc {
            2 | 4 | 8 => inc,
            _ => {
                if self.long64 {
                    8
                } else {
                    (self.code_bits / 8) as usize
                }
            }
        }
    }

    /// Masks an instruction pointer to the current code width.
    #[inline]
    pub fn mask_ip(&self, ip: u64) -> u64 {
        match self.code_bits {
            64 => ip,
            32 => ip & 0xffff_ffff,
            _ => ip & 0xffff,
        }
    }
}
