//! SSE moves in generated code (`Fast::XLoad`, `XStore`, `XMove`): the XMM registers stay
//! in the Cpu, so a move is a copy between guest memory and the Cpu's register file.

use super::gen::{host, Gen};
use super::layout as l;
use super::ops::At;
use crate::cpu::cr;
use crate::cpu::fast::Fast;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{InstBuilder, Value};

impl Gen<'_> {
    /// Translates an SSE move; false for any other form.
    pub fn sse_move(&mut self, f: &Fast, at: &At) -> bool {
        let (k, ip) = (at.k, at.ip);
        match *f {
            Fast::XLoad { size, x, align, a } => {
                self.sse_ready(k, ip);
                let lin = self.lin(&a);
                self.aligned(lin, align, k, ip);
                let p = self.access(lin, size, false, k, ip);
                let lo = self.load(p, size.min(8));
                let hi = if size == 16 {
                    let p8 = self.b.ins().iadd_imm_s(p, 8);
                    self.load(p8, 8)
                } else {
                    self.iconst(0)
                };
                self.set_xmm(x, lo, hi);
            }
            Fast::XStore { size, x, align, a } => {
                self.sse_ready(k, ip);
                let lin = self.lin(&a);
                self.aligned(lin, align, k, ip);
                let p = self.access(lin, size, true, k, ip);
                let (lo, hi) = self.xmm(x);
                self.store(p, size.min(8), lo);
                if size == 16 {
                    let p8 = self.b.ins().iadd_imm_s(p, 8);
                    self.store(p8, 8, hi);
                }
            }
            Fast::XMove { d, s } => {
                self.sse_ready(k, ip);
                let (lo, hi) = self.xmm(s);
                self.set_xmm(d, lo, hi);
            }
            _ => return false,
        }
        true
    }

    /// Exits before instruction `k` unless SSE instructions run (`Cpu::sse_ready`); once per
    /// translation, as an instruction that changes CR0 or CR4 ends it.
    fn sse_ready(&mut self, k: u32, ip: u64) {
        if self.sse_ok {
            return;
        }
        let cpu = self.cpu();
        let cr0 = self.b.ins().load(I64, host(), cpu, l::CR0);
        let cr4 = self.b.ins().load(I64, host(), cpu, l::CR4);
        let off = self
            .b
            .ins()
            .band_imm_s(cr0, (cr::CR0_EM | cr::CR0_TS) as i64);
        let ok0 = self.b.ins().icmp_imm_s(IntCC::Equal, off, 0);
        let on = self.b.ins().band_imm_s(cr4, cr::CR4_OSFXSR as i64);
        let ok4 = self.b.ins().icmp_imm_s(IntCC::NotEqual, on, 0);
        let ok = self.b.ins().band(ok0, ok4);
        self.exit_unless(ok, k, ip);
        self.sse_ok = true;
    }

    /// Exits before instruction `k` if `align` and `lin` is not 16-byte aligned (the handler
    /// raises #GP).
    fn aligned(&mut self, lin: Value, align: bool, k: u32, ip: u64) {
        if align {
            let low = self.b.ins().band_imm_s(lin, 15);
            let ok = self.b.ins().icmp_imm_s(IntCC::Equal, low, 0);
            self.exit_unless(ok, k, ip);
        }
    }

    /// XMM register `x` as its low and high quadwords.
    fn xmm(&mut self, x: u8) -> (Value, Value) {
        let cpu = self.cpu();
        let at = l::XMM + 16 * i32::from(x & 15);
        let lo = self.b.ins().load(I64, host(), cpu, at);
        let hi = self.b.ins().load(I64, host(), cpu, at + 8);
        (lo, hi)
    }

    fn set_xmm(&mut self, x: u8, lo: Value, hi: Value) {
        let cpu = self.cpu();
        let at = l::XMM + 16 * i32::from(x & 15);
        self.b.ins().store(host(), lo, cpu, at);
        self.b.ins().store(host(), hi, cpu, at + 8);
    }
}
