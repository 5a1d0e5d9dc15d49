//! The translator's state: guest registers and flags as SSA values, memory through an inline
//! TLB lookup, and exits that leave the CPU exactly as the interpreter would.
//!
//! A translation is straight-line: instruction after instruction, with a side exit wherever a
//! fast form would answer `Step::Slow` (TLB miss, page split, non-canonical address). Side
//! exits and the final exit store the registers written so far, the lazy-flags record of the
//! last flag-setting instruction and RIP, and return how many instructions completed; the
//! block loop adds that to the instruction count and interprets the rest of the block from
//! there. As nothing merges, values need no variables: each is defined before every use.

use super::layout as l;
use crate::cpu::fast::{Addr, NONE};
use crate::cpu::flags::Op;
use crate::cpu::mem::tlb_layout as t;
use cranelift_codegen::ir::condcodes::IntCC;
use cranelift_codegen::ir::types::{I16, I32, I64, I8};
use cranelift_codegen::ir::{Block, InstBuilder, MemFlagsData, SigRef, Value};
use cranelift_frontend::FunctionBuilder;

/// The lazy-flags record the translation would leave, with its fields as values. `a`/`b`
/// `None`: not written by this kind of operation (LOGIC keeps the old ones). `carry` `None`:
/// a constant false.
#[derive(Clone, Copy)]
pub(super) struct Pending {
    pub op: Op,
    pub bits: u32,
    pub a: Option<Value>,
    pub b: Option<Value>,
    pub res: Value,
    pub carry: Option<Value>,
}

/// Where RIP goes at an exit.
#[derive(Clone, Copy)]
pub(super) enum Rip {
    Const(u64),
    Dyn(Value),
}

pub(super) struct Gen<'a> {
    pub b: FunctionBuilder<'a>,
    cpu: Value,
    tlb: Value,
    /// The `Until` the code was entered with.
    until: Value,
    /// Where the translated instructions start, after the entry's set-up: a trace that loops
    /// jumps back here.
    top: Block,
    /// 1 for a supervisor access, 2 for a user one (the TLB's permission bits).
    user: Value,
    regs: [Option<Value>; 16],
    dirty: u16,
    /// `None`: the flags are the ones in the Cpu (at entry, or after a `step`).
    pub flags: Option<Pending>,
    /// Which block of the trace is being translated (`super::PART_SHIFT`).
    pub part: u64,
    /// Whether the code has checked already that SSE instructions run (`jit/sse.rs`).
    pub sse_ok: bool,
    sigs: Sigs,
}

/// The signatures of the functions generated code calls.
pub(super) struct Sigs {
    /// `jit_cond(cpu, cc)`, for conditions on the flags in the Cpu.
    pub cond: SigRef,
    /// `jit_arith(cpu)`.
    pub arith: SigRef,
    /// `jit_step(cpu, item, k)`, for instructions without code of their own.
    pub step: SigRef,
}

/// Guest memory: unaligned, but never trapping (the TLB lookup checked it).
fn guest() -> MemFlagsData {
    MemFlagsData::new().with_notrap()
}

/// The Cpu struct and the TLB: aligned and always there.
pub(super) fn host() -> MemFlagsData {
    MemFlagsData::trusted()
}

impl<'a> Gen<'a> {
    pub fn new(mut b: FunctionBuilder<'a>, sigs: Sigs) -> Self {
        let entry = b.create_block();
        b.append_block_params_for_function_params(entry);
        b.switch_to_block(entry);
        let p = b.block_params(entry);
        let (cpu, tlb, until) = (p[0], p[1], p[2]);
        // CPL changes only where the translation ends (`jit_step`): one value serves all.
        let cpl = b.ins().uload8(I64, host(), cpu, l::CPL);
        let is_user = b.ins().icmp_imm_s(IntCC::Equal, cpl, 3);
        let is_user = b.ins().uextend(I64, is_user);
        let user = b.ins().iadd_imm_s(is_user, 1);
        let top = b.create_block();
        b.ins().jump(top, &[]);
        b.switch_to_block(top);
        Gen {
            b,
            cpu,
            tlb,
            until,
            top,
            user,
            regs: [None; 16],
            dirty: 0,
            flags: None,
            part: 0,
            sse_ok: false,
            sigs,
        }
    }

    /// The Cpu pointer the code was entered with.
    pub fn cpu(&self) -> Value {
        self.cpu
    }

    pub fn iconst(&mut self, v: u64) -> Value {
        self.b.ins().iconst(I64, v as i64)
    }

    /// A register's full 64 bits, loaded from the Cpu on first use.
    pub fn reg(&mut self, r: u8) -> Value {
        let i = usize::from(r & 15);
        if let Some(v) = self.regs[i] {
            return v;
        }
        let v = self
            .b
            .ins()
            .load(I64, host(), self.cpu, l::GPR + 8 * i as i32);
        self.regs[i] = Some(v);
        v
    }

    pub fn set_reg(&mut self, r: u8, v: Value) {
        let i = usize::from(r & 15);
        self.regs[i] = Some(v);
        self.dirty |= 1 << i;
    }

    /// Truncates to `sz` bytes.
    pub fn trunc(&mut self, v: Value, sz: u8) -> Value {
        if sz >= 8 {
            v
        } else {
            self.b
                .ins()
                .band_imm_s(v, crate::cpu::fast::mask(sz) as i64)
        }
    }

    /// A register of `sz` bytes (low byte for 1).
    pub fn get(&mut self, r: u8, sz: u8) -> Value {
        let v = self.reg(r);
        self.trunc(v, sz)
    }

    /// Writes `sz` bytes (`v` truncated): 4 zero-extends, 1 and 2 keep the rest of the
    /// register.
    pub fn put(&mut self, r: u8, sz: u8, v: Value) {
        if sz >= 4 {
            self.set_reg(r, v);
        } else {
            let old = self.reg(r);
            let keep = self
                .b
                .ins()
                .band_imm_s(old, !crate::cpu::fast::mask(sz) as i64);
            let nv = self.b.ins().bor(keep, v);
            self.set_reg(r, nv);
        }
    }

    /// `base + index << shift + disp`, without a segment base (LEA).
    pub fn ea(&mut self, a: &Addr) -> Value {
        let mut v = self.iconst(a.disp);
        if a.base != NONE {
            let r = self.reg(a.base);
            v = self.b.ins().iadd(v, r);
        }
        if a.index != NONE {
            let r = self.reg(a.index);
            let s = self.b.ins().ishl_imm_s(r, i64::from(a.shift));
            v = self.b.ins().iadd(v, s);
        }
        v
    }

    /// The linear address: FS and GS add their base (64-bit mode).
    pub fn lin(&mut self, a: &Addr) -> Value {
        let v = self.ea(a);
        if matches!(a.seg, crate::cpu::Seg::Fs | crate::cpu::Seg::Gs) {
            let base = self
                .b
                .ins()
                .load(I64, host(), self.cpu, l::seg_base(a.seg as usize));
            return self.b.ins().iadd(v, base);
        }
        v
    }

    /// Whether a 64-bit value is a canonical address.
    pub fn canonical(&mut self, v: Value) -> Value {
        let s = self.b.ins().ishl_imm_s(v, 16);
        let s = self.b.ins().sshr_imm_s(s, 16);
        self.b.ins().icmp(IntCC::Equal, s, v)
    }

    /// The host pointer for `size` bytes at `lin`, through the TLB's fast path exactly as
    /// `Cpu::ptr64`; anything else exits before instruction `k` (at `rip`).
    pub fn access(&mut self, lin: Value, size: u8, write: bool, k: u32, rip: u64) -> Value {
        let ok = self.canonical(lin);
        let vpn = self.b.ins().ushr_imm_s(lin, 12);
        let slot = self.b.ins().band_imm_s(vpn, (t::ENTRIES - 1) as i64);
        let off = self.b.ins().imul_imm_s(slot, t::ENTRY as i64);
        let e = self.b.ins().iadd(self.tlb, off);
        let evpn = self.b.ins().load(I64, host(), e, t::VPN);
        let same = self.b.ins().icmp(IntCC::Equal, evpn, vpn);
        let ok = self.b.ins().band(ok, same);
        let perm_at = if write { t::WRITE } else { t::READ };
        let perm = self.b.ins().uload8(I64, host(), e, perm_at);
        let perm = self.b.ins().band(perm, self.user);
        let allowed = self.b.ins().icmp_imm_s(IntCC::NotEqual, perm, 0);
        let ok = self.b.ins().band(ok, allowed);
        let page_off = self.b.ins().band_imm_s(lin, 0xfff);
        let end = self.b.ins().iadd_imm_s(page_off, i64::from(size));
        let inside = self
            .b
            .ins()
            .icmp_imm_s(IntCC::UnsignedLessThanOrEqual, end, 4096);
        let ok = self.b.ins().band(ok, inside);
        let hostp = self.b.ins().load(I64, host(), e, t::HOST);
        let ram = self.b.ins().icmp_imm_s(IntCC::NotEqual, hostp, 0);
        let ok = self.b.ins().band(ok, ram);
        self.exit_unless(ok, k, rip);
        self.b.ins().iadd(hostp, page_off)
    }

    /// Continues if `ok`, otherwise exits before instruction `k`.
    pub fn exit_unless(&mut self, ok: Value, k: u32, rip: u64) {
        let cont = self.b.create_block();
        let out = self.b.create_block();
        self.b.ins().brif(ok, cont, &[], out, &[]);
        self.b.switch_to_block(out);
        self.exit(k, Rip::Const(rip));
        self.b.switch_to_block(cont);
    }

    pub fn load(&mut self, p: Value, size: u8) -> Value {
        let f = guest();
        match size {
            1 => self.b.ins().uload8(I64, f, p, 0),
            2 => self.b.ins().uload16(I64, f, p, 0),
            4 => self.b.ins().uload32(f, p, 0),
            _ => self.b.ins().load(I64, f, p, 0),
        }
    }

    pub fn store(&mut self, p: Value, size: u8, v: Value) {
        let f = guest();
        match size {
            1 => self.b.ins().istore8(f, v, p, 0),
            2 => self.b.ins().istore16(f, v, p, 0),
            4 => self.b.ins().istore32(f, v, p, 0),
            _ => self.b.ins().store(f, v, p, 0),
        };
    }

    /// Ends the current IR block: stores the registers written, the flags record and RIP,
    /// and returns `k`, the number of instructions completed.
    pub fn exit(&mut self, k: u32, rip: Rip) {
        self.sync();
        self.finish(k, rip);
    }

    /// Stores the registers written and the flags record into the Cpu.
    fn sync(&mut self) {
        for i in 0..16 {
            if self.dirty & (1 << i) != 0 {
                if let Some(v) = self.regs[i] {
                    self.b
                        .ins()
                        .store(host(), v, self.cpu, l::GPR + 8 * i as i32);
                }
            }
        }
        let Some(p) = self.flags else {
            return;
        };
        let op = self.b.ins().iconst(I8, i64::from(p.op as u8));
        self.b.ins().store(host(), op, self.cpu, l::F_OP);
        if p.op == Op::Explicit {
            // `Flags::set_arith`: only the explicit word (in `res` here) changes.
            self.b.ins().store(host(), p.res, self.cpu, l::F_EXPLICIT);
            return;
        }
        let bits = self.b.ins().iconst(I32, i64::from(p.bits));
        self.b.ins().store(host(), bits, self.cpu, l::F_BITS);
        if let Some(a) = p.a {
            self.b.ins().store(host(), a, self.cpu, l::F_A);
        }
        if let Some(v) = p.b {
            self.b.ins().store(host(), v, self.cpu, l::F_B);
        }
        self.b.ins().store(host(), p.res, self.cpu, l::F_RES);
        if p.op != Op::Logic {
            let c = match p.carry {
                Some(c) => c,
                None => self.b.ins().iconst(I8, 0),
            };
            self.b.ins().store(host(), c, self.cpu, l::F_CARRY);
        }
    }

    /// Runs instruction `k` (at `ip`, `item` in its block) through `jit_step`, with the state
    /// in the Cpu; returns what `jit_step` says unless the instruction completed and the
    /// translation goes on, with every register and the flags read from the Cpu again.
    pub fn step(&mut self, item: *const super::Item, k: u32, ip: u64) {
        self.sync();
        let rip = self.iconst(ip);
        self.b.ins().store(host(), rip, self.cpu, l::RIP);
        let f = self.iconst(super::jit_step as *const () as u64);
        let item = self.iconst(item as u64);
        let k = self.iconst(u64::from(k));
        let call = self
            .b
            .ins()
            .call_indirect(self.sigs.step, f, &[self.cpu, item, k]);
        let r = self.b.inst_results(call)[0];
        let on = self
            .b
            .ins()
            .icmp_imm_s(IntCC::Equal, r, super::STEP_ON as i64);
        let (cont, out) = (self.b.create_block(), self.b.create_block());
        self.b.ins().brif(on, cont, &[], out, &[]);
        self.b.switch_to_block(out);
        let r = self.tag(r);
        self.b.ins().return_(&[r]);
        self.b.switch_to_block(cont);
        self.regs = [None; 16];
        self.dirty = 0;
        self.flags = None;
        self.sse_ok = false;
    }

    /// The end of a trace that goes back to its head (at `head`): counts the `n` instructions
    /// of the pass and runs the next one, unless the run loop must see the state first (the
    /// budget is spent, or the kick or attention flag is up, as `jit/chain.rs` checks between
    /// translations): then it returns with nothing of the head done.
    pub fn back_edge(&mut self, n: u32, head: u64) {
        self.sync();
        let count = self.add_to(l::ICOUNT, n);
        let end = self.b.ins().load(I64, host(), self.until, l::UNTIL_END);
        let mut ok = self.b.ins().icmp(IntCC::UnsignedLessThan, count, end);
        for at in [l::UNTIL_KICK, l::UNTIL_ATTENTION] {
            let flag = self.b.ins().load(I64, host(), self.until, at);
            let up = self.b.ins().uload8(I64, host(), flag, 0);
            let down = self.b.ins().icmp_imm_s(IntCC::Equal, up, 0);
            ok = self.b.ins().band(ok, down);
        }
        let out = self.b.create_block();
        self.b.ins().brif(ok, self.top, &[], out, &[]);
        self.b.switch_to_block(out);
        let rip = self.iconst(head);
        self.b.ins().store(host(), rip, self.cpu, l::RIP);
        let zero = self.iconst(0);
        self.b.ins().return_(&[zero]);
    }

    /// Adds `n` to the counter at `at` in the Cpu; returns the new value.
    fn add_to(&mut self, at: i32, n: u32) -> Value {
        let v = self.b.ins().load(I64, host(), self.cpu, at);
        let v = self.b.ins().iadd_imm_s(v, i64::from(n));
        self.b.ins().store(host(), v, self.cpu, at);
        v
    }

    /// Stores RIP and returns `k`.
    fn finish(&mut self, k: u32, rip: Rip) {
        let rip = match rip {
            Rip::Const(v) => self.iconst(v),
            Rip::Dyn(v) => v,
        };
        self.b.ins().store(host(), rip, self.cpu, l::RIP);
        let k = self.b.ins().iconst(I64, i64::from(k));
        let r = self.tag(k);
        self.b.ins().return_(&[r]);
    }

    /// A result with the trace block it leaves from.
    fn tag(&mut self, r: Value) -> Value {
        if self.part == 0 {
            return r;
        }
        self.b
            .ins()
            .bor_imm_s(r, (self.part << super::PART_SHIFT) as i64)
    }

    /// `Flags::explicit` as the translation would leave it.
    pub fn explicit(&mut self) -> Value {
        match self.flags {
            Some(p) if p.op == Op::Explicit => p.res,
            _ => self.b.ins().load(I64, host(), self.cpu, l::F_EXPLICIT),
        }
    }

    /// Calls `jit_arith`: the arithmetic flags of the Cpu's record (valid while `flags` is
    /// `None`).
    pub fn arith_at_entry(&mut self) -> Value {
        let f = self.iconst(super::jit_arith as *const () as u64);
        let call = self.b.ins().call_indirect(self.sigs.arith, f, &[self.cpu]);
        self.b.inst_results(call)[0]
    }

    /// Calls `jit_cond` on the flags in the Cpu (valid only while `flags` is `None`).
    pub fn cond_at_entry(&mut self, cc: u8) -> Value {
        let f = self.iconst(super::jit_cond as *const () as u64);
        let cc = self.b.ins().iconst(I32, i64::from(cc));
        let call = self
            .b
            .ins()
            .call_indirect(self.sigs.cond, f, &[self.cpu, cc]);
        let r = self.b.inst_results(call)[0];
        self.b.ins().icmp_imm_s(IntCC::NotEqual, r, 0)
    }

    /// Sign-extends the low `size` bytes of `v` to 64 bits.
    pub fn sext(&mut self, v: Value, size: u8) -> Value {
        let ty = match size {
            1 => I8,
            2 => I16,
            4 => I32,
            _ => return v,
        };
        let n = self.b.ins().ireduce(ty, v);
        self.b.ins().sextend(I64, n)
    }
}
