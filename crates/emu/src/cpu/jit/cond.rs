//! Flags in generated code: the lazy record of `flags.rs`, computed at translation time.
//!
//! While the translation has set no flag, a condition reads the Cpu's record through
//! `jit_cond` (a call into `Flags::cond`). Once an instruction of the block has set them, the
//! record is a set of SSA values of a known kind and a condition is computed inline, with
//! the same formulas as `Flags`.

use super::gen::{Gen, Pending};
use crate::cpu::flags::{Op, ARITH, CF, OF, PF, SF, ZF};
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I64, I8};
use cranelift_codegen::ir::{InstBuilder, Value};

impl Gen<'_> {
    /// Records the flags of an operation (`a`, `b`, `res` already truncated to `bits`).
    pub fn set_flags(
        &mut self,
        op: Op,
        bits: u32,
        a: Option<Value>,
        b: Option<Value>,
        res: Value,
        carry: Option<Value>,
    ) {
        self.flags = Some(Pending {
            op,
            bits,
            a,
            b,
            res,
            carry,
        });
    }

    fn false_(&mut self) -> Value {
        self.b.ins().iconst(I8, 0)
    }

    fn bit_set(&mut self, v: Value, n: u32) -> Value {
        let s = self.b.ins().ushr_imm_s(v, i64::from(n));
        let s = self.b.ins().band_imm_s(s, 1);
        self.b.ins().icmp_imm_s(IntCC::NotEqual, s, 0)
    }

    /// An explicit flag (`Op::Explicit`: the flags word is in `res`).
    fn explicit_bit(&mut self, p: &Pending, flag: u64) -> Value {
        let v = self.b.ins().band_imm_s(p.res, flag as i64);
        self.b.ins().icmp_imm_s(IntCC::NotEqual, v, 0)
    }

    /// The six arithmetic flags as RFLAGS bits (`Flags::arith`).
    pub fn arith(&mut self) -> Value {
        let Some(p) = self.flags else {
            return self.arith_at_entry();
        };
        if p.op == Op::Explicit {
            return self.b.ins().band_imm_s(p.res, ARITH as i64);
        }
        let af = match (p.op, p.a, p.b) {
            (Op::Logic, ..) => self.false_(),
            (Op::Result, _, Some(b)) => self.b.ins().icmp_imm_s(IntCC::NotEqual, b, 0),
            (_, Some(a), Some(b)) => {
                let x = self.b.ins().bxor(a, b);
                let x = self.b.ins().bxor(x, p.res);
                self.bit_set(x, 4)
            }
            _ => self.false_(),
        };
        let bits = [
            (self.cf(), 0),
            (self.pf(&p), 2),
            (af, 4),
            (self.zf(&p), 6),
            (self.sf(&p), 7),
            (self.of(&p), 11),
        ];
        let mut v = self.iconst(0);
        for (flag, at) in bits {
            let w = self.b.ins().uextend(I64, flag);
            let w = self.b.ins().ishl_imm_s(w, at);
            v = self.b.ins().bor(v, w);
        }
        v
    }

    /// `Flags::update(clear, set)`: every arithmetic flag materialised, those in `clear`
    /// replaced by `set`'s.
    pub fn update_flags(&mut self, clear: u64, set: Value) {
        let cur = self.arith();
        let kept = self.b.ins().band_imm_s(cur, !clear as i64);
        let arith = self.b.ins().bor(kept, set);
        let old = self.explicit();
        let other = self.b.ins().band_imm_s(old, !ARITH as i64);
        let explicit = self.b.ins().bor(other, arith);
        self.set_flags(Op::Explicit, 64, None, None, explicit, None);
    }

    /// CF, as an `I8` boolean.
    pub fn cf(&mut self) -> Value {
        let Some(p) = self.flags else {
            return self.cond_at_entry(2);
        };
        if p.op == Op::Explicit {
            return self.explicit_bit(&p, CF);
        }
        let (Some(a), Some(b)) = (p.a, p.b) else {
            return match p.carry {
                Some(c) if p.op != Op::Logic => c,
                _ => self.false_(),
            };
        };
        let carry_eq = |g: &mut Self, x: Value, y: Value| -> Option<Value> {
            let c = p.carry?;
            let eq = g.b.ins().icmp(IntCC::Equal, x, y);
            Some(g.b.ins().band(eq, c))
        };
        match p.op {
            Op::Add => {
                let lt = self.b.ins().icmp(IntCC::UnsignedLessThan, p.res, a);
                match carry_eq(self, p.res, a) {
                    Some(e) => self.b.ins().bor(lt, e),
                    None => lt,
                }
            }
            Op::Sub => {
                let lt = self.b.ins().icmp(IntCC::UnsignedLessThan, a, b);
                match carry_eq(self, a, b) {
                    Some(e) => self.b.ins().bor(lt, e),
                    None => lt,
                }
            }
            Op::Logic | Op::Explicit => self.false_(),
            Op::Inc | Op::Dec | Op::Result => p.carry.unwrap_or_else(|| self.false_()),
        }
    }

    fn zf(&mut self, p: &Pending) -> Value {
        if p.op == Op::Explicit {
            return self.explicit_bit(p, ZF);
        }
        self.b.ins().icmp_imm_s(IntCC::Equal, p.res, 0)
    }

    fn sf(&mut self, p: &Pending) -> Value {
        if p.op == Op::Explicit {
            return self.explicit_bit(p, SF);
        }
        self.bit_set(p.res, p.bits - 1)
    }

    fn pf(&mut self, p: &Pending) -> Value {
        if p.op == Op::Explicit {
            return self.explicit_bit(p, PF);
        }
        let low = self.b.ins().band_imm_s(p.res, 0xff);
        let n = self.b.ins().popcnt(low);
        let odd = self.b.ins().band_imm_s(n, 1);
        self.b.ins().icmp_imm_s(IntCC::Equal, odd, 0)
    }

    fn of(&mut self, p: &Pending) -> Value {
        if p.op == Op::Explicit {
            return self.explicit_bit(p, OF);
        }
        let zero = self.b.ins().iconst(I64, 0);
        let (a, b) = (p.a.unwrap_or(zero), p.b.unwrap_or(zero));
        match p.op {
            Op::Add | Op::Inc => {
                let x = self.b.ins().bxor(a, p.res);
                let y = self.b.ins().bxor(b, p.res);
                let v = self.b.ins().band(x, y);
                self.bit_set(v, p.bits - 1)
            }
            Op::Sub | Op::Dec => {
                let x = self.b.ins().bxor(a, b);
                let y = self.b.ins().bxor(a, p.res);
                let v = self.b.ins().band(x, y);
                self.bit_set(v, p.bits - 1)
            }
            Op::Result => self.b.ins().icmp_imm_s(IntCC::NotEqual, a, 0),
            Op::Logic | Op::Explicit => self.false_(),
        }
    }

    /// Evaluates condition code `cc` (0..16) as an `I8` boolean, like `Flags::cond`.
    pub fn cond(&mut self, cc: u8) -> Value {
        let Some(p) = self.flags else {
            return self.cond_at_entry(cc);
        };
        let r = match (p.op, p.a, p.b, p.carry, cc >> 1) {
            // After CMP/SUB the operands' orders answer directly.
            (Op::Sub, Some(a), Some(b), None, 1 | 2 | 3 | 6 | 7) => {
                let cmp = match cc >> 1 {
                    1 => IntCC::UnsignedLessThan,
                    2 => IntCC::Equal,
                    3 => IntCC::UnsignedLessThanOrEqual,
                    6 => IntCC::SignedLessThan,
                    _ => IntCC::SignedLessThanOrEqual,
                };
                let (x, y) = if matches!(cc >> 1, 6 | 7) && p.bits < 64 {
                    let sh = i64::from(64 - p.bits);
                    (
                        self.b.ins().ishl_imm_s(a, sh),
                        self.b.ins().ishl_imm_s(b, sh),
                    )
                } else {
                    (a, b)
                };
                self.b.ins().icmp(cmp, x, y)
            }
            _ => match cc >> 1 {
                0 => self.of(&p),
                1 => self.cf(),
                2 => self.zf(&p),
                3 => {
                    let c = self.cf();
                    let z = self.zf(&p);
                    self.b.ins().bor(c, z)
                }
                4 => self.sf(&p),
                5 => self.pf(&p),
                6 => {
                    let s = self.sf(&p);
                    let o = self.of(&p);
                    self.b.ins().bxor(s, o)
                }
                _ => {
                    let s = self.sf(&p);
                    let o = self.of(&p);
                    let l = self.b.ins().bxor(s, o);
                    let z = self.zf(&p);
                    self.b.ins().bor(z, l)
                }
            },
        };
        if cc & 1 == 1 {
            self.b.ins().bxor_imm_s(r, 1)
        } else {
            r
        }
    }
}
