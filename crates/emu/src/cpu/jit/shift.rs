//! Shifts and rotates in generated code, with the flags of `exec/int_shift.rs` (the
//! reference): SHL/SHR/SAR leave a result record, ROL/ROR change CF and OF of the current
//! flags, which makes them explicit.

use super::gen::Gen;
use crate::cpu::exec::int::{ROL, ROR, SAR, SHL, SHR};
use crate::cpu::flags::{Op, CF, OF};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64, I8};
use cranelift_codegen::ir::{InstBuilder, Type, Value};

impl Gen<'_> {
    /// Bit `n` (a value) of `v`, as 0 or 1.
    fn bit_at(&mut self, v: Value, n: Value) -> Value {
        let s = self.b.ins().ushr(v, n);
        self.b.ins().band_imm_s(s, 1)
    }

    fn bit(&mut self, v: Value, n: u32) -> Value {
        let s = self.b.ins().ushr_imm_s(v, i64::from(n));
        self.b.ins().band_imm_s(s, 1)
    }

    /// Shifts or rotates `a` (`sz` bytes, truncated) by `count`, a non-zero count already
    /// masked to 31 or 63; records the flags and returns the truncated result.
    pub fn shift(&mut self, op: u8, sz: u8, a: Value, count: Value) -> Option<Value> {
        let b = u32::from(sz) * 8;
        let cm1 = self.b.ins().iadd_imm_s(count, -1);
        let (r, cf, of) = match op {
            SHL => {
                let r = self.b.ins().ishl(a, count);
                let r = self.trunc(r, sz);
                // The last bit shifted out: bit `b - count` of `a` (none past the width).
                let s = self.b.ins().ishl(a, cm1);
                let cf = self.bit(s, b - 1);
                let top = self.bit(r, b - 1);
                let of = self.b.ins().bxor(cf, top);
                (r, cf, of)
            }
            SHR | SAR => {
                let src = if op == SAR { self.sext(a, sz) } else { a };
                let r = if op == SAR {
                    self.b.ins().sshr(src, count)
                } else {
                    self.b.ins().ushr(src, count)
                };
                let r = self.trunc(r, sz);
                let cf = self.bit_at(src, cm1);
                let of = if op == SAR {
                    self.iconst(0)
                } else {
                    let x = self.bit(r, b - 1);
                    let y = self.bit(r, b - 2);
                    self.b.ins().bxor(x, y)
                };
                (r, cf, of)
            }
            ROL | ROR => {
                let ty: Type = match sz {
                    1 => I8,
                    4 => I32,
                    8 => I64,
                    _ => return None,
                };
                // The rotation is modulo the width (`count & (b - 1)` in the reference).
                let n = self.b.ins().band_imm_s(count, i64::from(b - 1));
                let narrow = if ty == I64 {
                    a
                } else {
                    self.b.ins().ireduce(ty, a)
                };
                let n = if ty == I64 {
                    n
                } else {
                    self.b.ins().ireduce(ty, n)
                };
                let rot = if op == ROL {
                    self.b.ins().rotl(narrow, n)
                } else {
                    self.b.ins().rotr(narrow, n)
                };
                let r = if ty == I64 {
                    rot
                } else {
                    self.b.ins().uextend(I64, rot)
                };
                let top = self.bit(r, b - 1);
                let (cf, of) = if op == ROL {
                    let cf = self.bit(r, 0);
                    (cf, self.b.ins().bxor(cf, top))
                } else {
                    let below = self.bit(r, b - 2);
                    (top, self.b.ins().bxor(top, below))
                };
                self.rot_flags(cf, of);
                return Some(r);
            }
            _ => return None,
        };
        let cf = self.b.ins().icmp_imm_s(IntCC::NotEqual, cf, 0);
        let zero = self.iconst(0);
        self.set_flags(Op::Result, b, Some(of), Some(zero), r, Some(cf));
        Some(r)
    }

    /// `Flags::update(CF | OF, ...)`: every arithmetic flag materialised, CF and OF replaced
    /// (`cf`, `of`: 0 or 1).
    fn rot_flags(&mut self, cf: Value, of: Value) {
        let of = self.b.ins().ishl_imm_s(of, 11);
        let set = self.b.ins().bor(cf, of);
        self.update_flags(CF | OF, set);
    }
}
