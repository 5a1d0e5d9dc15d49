//! Fast forms in generated code, each with the semantics of `Cpu::exec_fast` (`fast.rs`),
//! which stays the reference; the differential tests (`jit/tests.rs`) hold them together.

use super::gen::{Gen, Rip};
use crate::cpu::fast::{Alu, Fast};
use crate::cpu::flags::Op;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{InstBuilder, Value};

/// What translating one instruction did.
pub(super) enum Done {
    /// Translated; the next instruction follows.
    Next,
    /// Translated and the translation ended with it (a branch: its exits are emitted).
    End,
    /// No code of its own: the translation calls the interpreter's (`Gen::step`).
    No,
}

/// The instruction being translated: its index in the block and its addresses.
pub(super) struct At {
    pub k: u32,
    pub ip: u64,
    pub next: u64,
    /// For the last instruction of a block in a trace: where the next block of the trace
    /// starts, so that a branch there goes on with it instead of leaving.
    pub follow: Option<u64>,
}

impl Gen<'_> {
    /// `a op b` at `sz` bytes (truncated operands): records the flags and returns the result
    /// if the operation writes one.
    fn alu_value(&mut self, op: Alu, sz: u8, a: Value, b: Value) -> Option<Value> {
        let bits = u32::from(sz) * 8;
        let (a_, b_) = (Some(a), Some(b));
        let r = match op {
            Alu::Add | Alu::Adc => {
                let c = (op == Alu::Adc).then(|| self.cf());
                let mut r = self.b.ins().iadd(a, b);
                if let Some(c) = c {
                    let c64 = self.b.ins().uextend(I64, c);
                    r = self.b.ins().iadd(r, c64);
                }
                let r = self.trunc(r, sz);
                self.set_flags(Op::Add, bits, a_, b_, r, c);
                r
            }
            Alu::Sub | Alu::Cmp | Alu::Sbb => {
                let c = (op == Alu::Sbb).then(|| self.cf());
                let mut r = self.b.ins().isub(a, b);
                if let Some(c) = c {
                    let c64 = self.b.ins().uextend(I64, c);
                    r = self.b.ins().isub(r, c64);
                }
                let r = self.trunc(r, sz);
                self.set_flags(Op::Sub, bits, a_, b_, r, c);
                r
            }
            Alu::And | Alu::Test | Alu::Or | Alu::Xor => {
                let r = match op {
                    Alu::Or => self.b.ins().bor(a, b),
                    Alu::Xor => self.b.ins().bxor(a, b),
                    _ => self.b.ins().band(a, b),
                };
                self.set_flags(Op::Logic, bits, None, None, r, None);
                r
            }
        };
        (!matches!(op, Alu::Cmp | Alu::Test)).then_some(r)
    }

    fn alu(&mut self, op: Alu, sz: u8, d: u8, b: Value) {
        let a = self.get(d, sz);
        if let Some(r) = self.alu_value(op, sz, a, b) {
            self.put(d, sz, r);
        }
    }

    /// Translates one fast form.
    pub fn op(&mut self, f: &Fast, at: &At) -> Done {
        let (k, ip) = (at.k, at.ip);
        match *f {
            Fast::Nop => {}
            Fast::MovRR { sz, d, s } => {
                let v = self.get(s, sz);
                self.put(d, sz, v);
            }
            Fast::MovRI { sz, d, v } => {
                let v = self.iconst(v);
                self.put(d, sz, v);
            }
            Fast::AluRR { op, sz, d, s } => {
                let b = self.get(s, sz);
                self.alu(op, sz, d, b);
            }
            Fast::AluRI { op, sz, d, v } => {
                let b = self.iconst(v);
                self.alu(op, sz, d, b);
            }
            Fast::AluRM { op, sz, d, a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, sz, false, k, ip);
                let b = self.load(p, sz);
                self.alu(op, sz, d, b);
            }
            Fast::AluMR { op, sz, a, .. } | Fast::AluMI { op, sz, a, .. } => {
                let b = match *f {
                    Fast::AluMR { s, .. } => self.get(s, sz),
                    Fast::AluMI { v, .. } => self.iconst(v),
                    _ => return Done::No,
                };
                let writes = !matches!(op, Alu::Cmp | Alu::Test);
                let lin = self.lin(&a);
                let p = self.access(lin, sz, writes, k, ip);
                let v = self.load(p, sz);
                if let Some(r) = self.alu_value(op, sz, v, b) {
                    self.store(p, sz, r);
                }
            }
            Fast::IncDec { dec, sz, d } => {
                let a = self.get(d, sz);
                let r = self.inc_dec(dec, sz, a);
                self.put(d, sz, r);
            }
            Fast::IncDecM { dec, sz, a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, sz, true, k, ip);
                let v = self.load(p, sz);
                let r = self.inc_dec(dec, sz, v);
                self.store(p, sz, r);
            }
            Fast::NegNot { neg, sz, d } => {
                let a = self.get(d, sz);
                let r = if neg {
                    let r = self.b.ins().ineg(a);
                    let r = self.trunc(r, sz);
                    let zero = self.iconst(0);
                    self.set_flags(Op::Sub, u32::from(sz) * 8, Some(zero), Some(a), r, None);
                    r
                } else {
                    let r = self.b.ins().bnot(a);
                    self.trunc(r, sz)
                };
                self.put(d, sz, r);
            }
            Fast::Lea { sz, d, a } => {
                let v = self.ea(&a);
                let v = self.trunc(v, sz);
                self.put(d, sz, v);
            }
            Fast::Load { sz, d, a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, sz, false, k, ip);
                let v = self.load(p, sz);
                self.put(d, sz, v);
            }
            Fast::Store { sz, s, a } => {
                let v = self.get(s, sz);
                let lin = self.lin(&a);
                let p = self.access(lin, sz, true, k, ip);
                self.store(p, sz, v);
            }
            Fast::StoreImm { sz, v, a } => {
                let v = self.iconst(v);
                let lin = self.lin(&a);
                let p = self.access(lin, sz, true, k, ip);
                self.store(p, sz, v);
            }
            Fast::MovzxLoad { size, d, a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, size, false, k, ip);
                let v = self.load(p, size);
                self.set_reg(d, v);
            }
            Fast::MovsxLoad { size, sz, d, a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, size, false, k, ip);
                let v = self.load(p, size);
                let v = self.sext(v, size);
                let v = self.trunc(v, sz);
                self.put(d, sz, v);
            }
            Fast::MovzxRR { size, d, s } => {
                let v = self.get(s, size);
                self.set_reg(d, v);
            }
            Fast::MovsxRR { size, sz, d, s } => {
                let v = self.get(s, size);
                let v = self.sext(v, size);
                let v = self.trunc(v, sz);
                self.put(d, sz, v);
            }
            Fast::Shift { op, sz, d, count } => {
                let a = self.get(d, sz);
                let count = self.iconst(u64::from(count));
                let Some(r) = self.shift(op, sz, a, count) else {
                    return Done::No;
                };
                self.put(d, sz, r);
            }
            Fast::ShiftCl { op, sz, d } => {
                // A zero count changes no flag: the interpreter takes that case, so that the
                // flags here stay of one known kind.
                let cl = self.reg(1);
                let count = self
                    .b
                    .ins()
                    .band_imm_s(cl, if sz == 8 { 0x3f } else { 0x1f });
                let nonzero = self.b.ins().icmp_imm_s(IntCC::NotEqual, count, 0);
                self.exit_unless(nonzero, k, ip);
                let a = self.get(d, sz);
                let Some(r) = self.shift(op, sz, a, count) else {
                    return Done::No;
                };
                self.put(d, sz, r);
            }
            Fast::Imul { w64, d, s } => {
                let (a, b) = (self.reg(d), self.reg(s));
                let (res, overflow) = if w64 {
                    let lo = self.b.ins().imul(a, b);
                    let hi = self.b.ins().smulhi(a, b);
                    let sign = self.b.ins().sshr_imm_s(lo, 63);
                    (lo, self.b.ins().icmp(IntCC::NotEqual, hi, sign))
                } else {
                    let (a, b) = (self.sext(a, 4), self.sext(b, 4));
                    let p = self.b.ins().imul(a, b);
                    let p32 = self.sext(p, 4);
                    let o = self.b.ins().icmp(IntCC::NotEqual, p, p32);
                    (self.trunc(p, 4), o)
                };
                self.set_reg(d, res);
                let of = self.b.ins().uextend(I64, overflow);
                let zero = self.iconst(0);
                let bits = if w64 { 64 } else { 32 };
                self.set_flags(Op::Result, bits, Some(of), Some(zero), res, Some(overflow));
            }
            Fast::Mul { w64, s } => {
                let (a, b) = (self.reg(0), self.reg(s));
                let (lo, hi) = if w64 {
                    (self.b.ins().imul(a, b), self.b.ins().umulhi(a, b))
                } else {
                    let (a, b) = (self.trunc(a, 4), self.trunc(b, 4));
                    let p = self.b.ins().imul(a, b);
                    (self.trunc(p, 4), self.b.ins().ushr_imm_s(p, 32))
                };
                self.set_reg(0, lo);
                self.set_reg(2, hi);
                let c = self.b.ins().icmp_imm_s(IntCC::NotEqual, hi, 0);
                let of = self.b.ins().uextend(I64, c);
                let zero = self.iconst(0);
                let bits = if w64 { 64 } else { 32 };
                self.set_flags(Op::Result, bits, Some(of), Some(zero), lo, Some(c));
            }
            Fast::Cmov { cc, w64, d, s } => {
                let c = self.cond(cc);
                let (x, y) = (self.reg(s), self.reg(d));
                let v = self.b.ins().select(c, x, y);
                let v = if w64 { v } else { self.trunc(v, 4) };
                self.set_reg(d, v);
            }
            Fast::Setcc { cc, d } => {
                let c = self.cond(cc);
                let v = self.b.ins().uextend(I64, c);
                self.put(d, 1, v);
            }
            Fast::Bswap { w64, d } => {
                let a = self.reg(d);
                let v = if w64 {
                    self.b.ins().bswap(a)
                } else {
                    let n = self.b.ins().ireduce(I32, a);
                    let n = self.b.ins().bswap(n);
                    self.b.ins().uextend(I64, n)
                };
                self.set_reg(d, v);
            }
            Fast::AluHI { op, h, v } => {
                let r = self.reg(h);
                let a = self.b.ins().ushr_imm_s(r, 8);
                let a = self.b.ins().band_imm_s(a, 0xff);
                let b = self.iconst(v);
                if let Some(res) = self.alu_value(op, 1, a, b) {
                    let keep = self.b.ins().band_imm_s(r, !0xff00);
                    let res = self.b.ins().ishl_imm_s(res, 8);
                    let nv = self.b.ins().bor(keep, res);
                    self.set_reg(h, nv);
                }
            }
            Fast::MovzxHigh { d, h } => {
                let r = self.reg(h);
                let v = self.b.ins().ushr_imm_s(r, 8);
                let v = self.b.ins().band_imm_s(v, 0xff);
                self.set_reg(d, v);
            }
            Fast::BtRI { sz, d, bit } => {
                let v = self.get(d, sz);
                self.bt(v, bit);
            }
            Fast::BtMI { sz, bit, a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, sz, false, k, ip);
                let v = self.load(p, sz);
                self.bt(v, bit);
            }
            Fast::Push { s } => {
                let v = self.reg(s);
                self.push(v, k, ip);
            }
            Fast::Pop { d } => {
                let sp = self.reg(4);
                let p = self.access(sp, 8, false, k, ip);
                let v = self.load(p, 8);
                let nsp = self.b.ins().iadd_imm_s(sp, 8);
                self.set_reg(4, nsp);
                self.set_reg(d, v);
            }
            _ if self.sse_move(f, at) => {}
            _ => return self.branch(f, at),
        }
        Done::Next
    }

    /// INC or DEC of `a` (`sz` bytes), keeping CF: records the flags, returns the result.
    fn inc_dec(&mut self, dec: bool, sz: u8, a: Value) -> Value {
        let cf = self.cf();
        let r = self.b.ins().iadd_imm_s(a, if dec { -1 } else { 1 });
        let r = self.trunc(r, sz);
        let one = self.iconst(1);
        let op = if dec { Op::Dec } else { Op::Inc };
        self.set_flags(op, u32::from(sz) * 8, Some(a), Some(one), r, Some(cf));
        r
    }

    /// BT: CF is bit `bit` of `v`.
    fn bt(&mut self, v: Value, bit: u8) {
        let s = self.b.ins().ushr_imm_s(v, i64::from(bit));
        let cf = self.b.ins().band_imm_s(s, 1);
        self.update_flags(crate::cpu::flags::CF, cf);
    }

    /// Pushes 8 bytes, or exits before instruction `k`.
    fn push(&mut self, v: Value, k: u32, ip: u64) {
        let sp = self.reg(4);
        let nsp = self.b.ins().iadd_imm_s(sp, -8);
        let p = self.access(nsp, 8, true, k, ip);
        self.store(p, 8, v);
        self.set_reg(4, nsp);
    }

    /// The control transfers: they end the block, so they emit its final exits.
    fn branch(&mut self, f: &Fast, at: &At) -> Done {
        let (k, ip, next) = (at.k, at.ip, at.next);
        let to = match *f {
            Fast::Jcc { cc, target } => {
                // The side a trace follows goes on in this code; the other leaves. Without a
                // trace to follow, the fall-through is the side that goes on (to the exit
                // below).
                let (go, away) = if at.follow == Some(target) {
                    (target, next)
                } else {
                    (next, target)
                };
                if go != away {
                    let c = self.cond(cc);
                    let (on, off) = (self.b.create_block(), self.b.create_block());
                    let (when_c, else_c) = if go == target { (on, off) } else { (off, on) };
                    self.b.ins().brif(c, when_c, &[], else_c, &[]);
                    self.b.switch_to_block(off);
                    self.exit(k + 1, Rip::Const(away));
                    self.b.switch_to_block(on);
                }
                Rip::Const(go)
            }
            Fast::Jmp { target } => Rip::Const(target),
            Fast::JmpR { s } | Fast::CallR { s } => {
                let t = self.reg(s);
                self.indirect(t, matches!(f, Fast::CallR { .. }), at)
            }
            Fast::JmpM { a } | Fast::CallM { a } => {
                let lin = self.lin(&a);
                let p = self.access(lin, 8, false, k, ip);
                let t = self.load(p, 8);
                self.indirect(t, matches!(f, Fast::CallM { .. }), at)
            }
            Fast::Call { target } => {
                let n = self.iconst(next);
                self.push(n, k, ip);
                Rip::Const(target)
            }
            Fast::Ret => {
                let sp = self.reg(4);
                let p = self.access(sp, 8, false, k, ip);
                let t = self.load(p, 8);
                let ok = self.canonical(t);
                self.exit_unless(ok, k, ip);
                let nsp = self.b.ins().iadd_imm_s(sp, 8);
                self.set_reg(4, nsp);
                Rip::Dyn(t)
            }
            _ => return Done::No,
        };
        if matches!(to, Rip::Const(t) if at.follow == Some(t)) {
            // The trace goes on with the block at the target.
            return Done::Next;
        }
        self.exit(k + 1, to);
        Done::End
    }

    /// A jump or call to `t`, a target known only at run time.
    fn indirect(&mut self, t: Value, call: bool, at: &At) -> Rip {
        let ok = self.canonical(t);
        self.exit_unless(ok, at.k, at.ip);
        if call {
            let n = self.iconst(at.next);
            self.push(n, at.k, at.ip);
        }
        Rip::Dyn(t)
    }
}
