//! The translation tier: hot blocks of 64-bit code become host machine code (Cranelift).
//!
//! A block that has run [`HOT`] times is translated, together with its trace: the blocks on its
//! page that control most likely reaches next through its fall-through, a direct jump or call,
//! or the likelier side of its conditional branch, and so on (`BlockCache::trace`). A branch
//! between them goes on in the same code, leaving only on the side the trace does not follow,
//! so registers and flags stay in host registers across blocks and the run loop's hop from
//! block to block is saved. Instructions with a fast form the translator supports (`ops.rs`)
//! become code, the others a call of the interpreter's code for them (`jit_step`), with the
//! state in the Cpu. Generated code follows the fast forms' rule:
//! it never faults. Memory goes through an inline lookup of the same TLB fast path, and on a miss
//! (or anything else a fast form would hand to its handler) the code stores the state as it
//! was before that instruction and returns its index, so the block loop re-executes it through
//! the general handler. Guest registers live in SSA values inside the block, the lazy-flags
//! record is left exactly as the interpreter would leave it.
//!
//! `VIREO_EMU_JIT=0` turns the tier off; `VIREO_EMU_JIT_HOT=N` sets the threshold.

mod chain;
mod code;
mod cond;
mod gen;
mod ops;
mod shift;
mod sse;

use super::fast::{Fast, Step};
use super::{Cpu, Handler};
pub use chain::Until;
use code::CodeRegion;
use cranelift_codegen::ir::types::{I32, I64};
use cranelift_codegen::ir::{AbiParam, Signature, UserFuncName};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::{control::ControlPlane, Context};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use iced_x86::Instruction;

/// Executions after which a block is translated.
pub const HOT: u32 = 2000;

/// Generated code: `(cpu, first TLB entry, when to stop looping) -> instructions completed`.
/// It has written back RIP, the registers and the flags record.
pub type Entry = unsafe extern "C" fn(*mut Cpu, *const u8, *const Until) -> u64;

/// A block's translation state.
#[derive(Clone, Copy)]
pub enum Tr {
    /// Executions so far.
    Cold(u32),
    /// Translated in region epoch `epoch` (stale once the region has been emptied).
    Code { entry: Entry, epoch: u64 },
    /// Compiling it failed: it stays interpreted.
    Never,
}

/// Offsets into `Cpu` for generated code.
mod layout {
    use crate::cpu::flags::Flags;
    use crate::cpu::Cpu;
    use std::mem::{offset_of, size_of};
    use vireo_hypervisor::Segment;

    pub const GPR: i32 = offset_of!(Cpu, gpr) as i32;
    pub const RIP: i32 = offset_of!(Cpu, rip) as i32;
    pub const CPL: i32 = offset_of!(Cpu, cpl) as i32;
    pub const ICOUNT: i32 = offset_of!(Cpu, icount) as i32;
    pub const UNTIL_END: i32 = offset_of!(super::Until<'static>, end) as i32;
    pub const UNTIL_KICK: i32 = offset_of!(super::Until<'static>, kick) as i32;
    pub const UNTIL_ATTENTION: i32 = offset_of!(super::Until<'static>, attention) as i32;
    pub const CR0: i32 = offset_of!(Cpu, cr0) as i32;
    pub const CR4: i32 = offset_of!(Cpu, cr4) as i32;
    pub const XMM: i32 = (offset_of!(Cpu, fpu) + offset_of!(crate::cpu::fpu::FpuState, xmm)) as i32;
    const FLAGS: usize = offset_of!(Cpu, flags);
    pub const F_OP: i32 = (FLAGS + offset_of!(Flags, op)) as i32;
    pub const F_BITS: i32 = (FLAGS + offset_of!(Flags, bits)) as i32;
    pub const F_A: i32 = (FLAGS + offset_of!(Flags, a)) as i32;
    pub const F_B: i32 = (FLAGS + offset_of!(Flags, b)) as i32;
    pub const F_RES: i32 = (FLAGS + offset_of!(Flags, res)) as i32;
    pub const F_EXPLICIT: i32 = (FLAGS + offset_of!(Flags, explicit)) as i32;
    pub const F_CARRY: i32 = (FLAGS + offset_of!(Flags, carry)) as i32;

    pub fn seg_base(seg: usize) -> i32 {
        (offset_of!(Cpu, seg) + seg * size_of::<Segment>() + offset_of!(Segment, base)) as i32
    }
}

/// Called by generated code for a condition on the flags in the Cpu.
///
/// # Safety
/// `cpu` is the pointer the generated code was entered with.
unsafe extern "C" fn jit_cond(cpu: *const Cpu, cc: u32) -> u32 {
    // SAFETY: generated code passes the `&mut Cpu` it was called with; the CPU is not
    // otherwise touched while the generated code runs.
    let cpu = unsafe { &*cpu };
    u32::from(cpu.flags.cond(cc as u8 & 15))
}

/// Called by generated code for the arithmetic flags in the Cpu, as RFLAGS bits.
///
/// # Safety
/// As `jit_cond`.
unsafe extern "C" fn jit_arith(cpu: *const Cpu) -> u64 {
    // SAFETY: as in `jit_cond`.
    let cpu = unsafe { &*cpu };
    cpu.flags.arith()
}

/// An instruction of a block, as the block cache holds it.
pub type Item = (Instruction, Handler, u64, Fast);

/// What `jit_step` returns for an instruction that completed and the code goes on; any other
/// value is what the code returns at once (`Entry`).
pub const STEP_ON: u64 = u64::MAX;

/// Set in an `Entry` result: the block ends there (its last instruction changed control flow
/// or something the run loop must see), the interpreter runs nothing more of it.
pub const ENDED: u64 = 1 << 32;

/// In an `Entry` result, from this bit: which block of the trace the translation left from (0
/// for the block translated, `n` for the n-th of its trace). The low 32 bits count the
/// instructions completed across all of them.
pub const PART_SHIFT: u32 = 40;

/// Called by generated code for an instruction it has no code for, with the registers, flags
/// and RIP in the Cpu (RIP that of the instruction) and `k` the instructions completed before
/// it in this pass of the translation (a looping trace counts earlier passes itself). Runs it
/// as the block loop does: its fast form, else its handler.
/// Returns [`STEP_ON`] if it completed and nothing changed that the run loop must see;
/// `(k + 1) | ENDED` if it completed and the block must end; `k` if it did not complete (a
/// fault, or I/O for the VMM): the state is as before it, and the interpreter runs it again
/// with the general treatment (exception delivery, the exit to the VMM).
///
/// # Safety
/// `cpu` is the pointer the generated code was entered with, `item` points into the
/// instructions of the block being run, which the block loop keeps alive.
unsafe extern "C" fn jit_step(cpu: *mut Cpu, item: *const Item, k: u64) -> u64 {
    // SAFETY: as documented: generated code passes the `&mut Cpu` it was called with and
    // holds no other reference to it during the call; the block outlives the call.
    let (cpu, (ins, handler, next, f)) = unsafe { (&mut *cpu, &*item) };
    match cpu.exec_fast(f, *next) {
        Step::Next => return STEP_ON,
        Step::Branch(target) => {
            cpu.rip = target;
            return (k + 1) | ENDED;
        }
        Step::Slow => {}
    }
    // The handler may read the instruction count (RDTSC, timers): make it exact. The block
    // loop adds the translation's instructions once it returns.
    cpu.icount += k;
    cpu.next_rip = *next;
    let r = handler(cpu, ins);
    cpu.icount -= k;
    match r {
        Ok(()) => {
            cpu.io.commit();
            cpu.rip = cpu.next_rip;
            // Handlers end the block themselves for everything the run loop must see before
            // the next instruction (I/O, HLT, STI and POPF raising IF or TF, MOV SS, mode and
            // control-register changes, writes to code); CPL changes only with control
            // transfers.
            if std::mem::take(&mut cpu.end_block) || cpu.rip != *next {
                (k + 1) | ENDED
            } else {
                STEP_ON
            }
        }
        Err(_) => {
            cpu.io.rewind(0);
            cpu.end_block = false;
            cpu.rip = ins.ip();
            k
        }
    }
}

/// The translator and its code memory; one per CPU, made on first use.
pub struct Jit {
    isa: OwnedTargetIsa,
    ctx: Context,
    fctx: FunctionBuilderContext,
    region: CodeRegion,
    /// Blocks translated (for logs and tests).
    pub translated: u64,
}

impl Jit {
    /// Whether the environment allows the tier (`VIREO_EMU_JIT=0` turns it off).
    pub fn enabled_by_env() -> bool {
        std::env::var("VIREO_EMU_JIT").map_or(true, |v| v.trim() != "0")
    }

    /// The translator for the host, or `None` if Cranelift does not support it.
    pub fn new() -> Option<Jit> {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").ok()?;
        // The IR is made by this translator only and the differential tests cover it; the
        // verifier would double the compile time of every block.
        flags.set("enable_verifier", "false").ok()?;
        let isa = cranelift_native::builder()
            .ok()?
            .finish(settings::Flags::new(flags))
            .ok()?;
        Some(Jit {
            isa,
            ctx: Context::new(),
            fctx: FunctionBuilderContext::new(),
            region: CodeRegion::new(code::REGION_SIZE)?,
            translated: 0,
        })
    }

    pub fn epoch(&self) -> u64 {
        self.region.epoch()
    }

    /// Translates a block and the blocks of its trace (`parts`, each the instructions of one
    /// block, each block where the one before goes on): instructions with a supported fast form
    /// become code, the others calls of `jit_step`. `None` for an empty block or if compilation
    /// fails.
    ///
    /// With `loops`, the last block goes on to the first: the code loops while the
    /// instruction budget, the kick and the attention flag allow (`Gen::back_edge`).
    pub fn translate(&mut self, parts: &[&[Item]], loops: bool) -> Option<Tr> {
        if parts.first().is_none_or(|p| p.is_empty()) {
            return None;
        }
        let call_conv = self.isa.default_call_conv();
        let mut sig = Signature::new(call_conv);
        sig.params.extend([AbiParam::new(I64); 3]);
        sig.returns.push(AbiParam::new(I64));
        let mut cond_sig = Signature::new(call_conv);
        cond_sig.params.push(AbiParam::new(I64));
        cond_sig.params.push(AbiParam::new(I32));
        cond_sig.returns.push(AbiParam::new(I32));

        self.ctx.clear();
        self.ctx.func.signature = sig;
        self.ctx.func.name = UserFuncName::default();
        let mut b = FunctionBuilder::new(&mut self.ctx.func, &mut self.fctx);
        let mut arith_sig = Signature::new(call_conv);
        arith_sig.params.push(AbiParam::new(I64));
        arith_sig.returns.push(AbiParam::new(I64));
        let mut step_sig = Signature::new(call_conv);
        step_sig.params.extend([AbiParam::new(I64); 3]);
        step_sig.returns.push(AbiParam::new(I64));
        let sigs = gen::Sigs {
            cond: b.import_signature(cond_sig),
            arith: b.import_signature(arith_sig),
            step: b.import_signature(step_sig),
        };
        let mut g = gen::Gen::new(b, sigs);
        let mut ended = false;
        let mut k0 = 0u32;
        'parts: for (i, items) in parts.iter().enumerate() {
            g.part = i as u64;
            // Where the next block of the trace starts: the code goes on there.
            let next = if i + 1 == parts.len() && loops {
                parts.first()
            } else {
                parts.get(i + 1)
            };
            let follow = next.and_then(|p| p.first()).map(|it| it.0.ip());
            for (j, item) in items.iter().enumerate() {
                let (ins, _, next, f) = item;
                let at = ops::At {
                    k: k0 + j as u32,
                    ip: ins.ip(),
                    next: *next,
                    follow: follow.filter(|_| j + 1 == items.len()),
                };
                match g.op(f, &at) {
                    ops::Done::Next => {}
                    ops::Done::End => {
                        ended = true;
                        break 'parts;
                    }
                    // No code of its own: the interpreter's, called from the translation.
                    ops::Done::No => g.step(item, at.k, at.ip),
                }
            }
            k0 += items.len() as u32;
        }
        if !ended && loops {
            let head = parts
                .first()
                .and_then(|p| p.first())
                .map_or(0, |i| i.0.ip());
            g.back_edge(k0, head);
        } else if !ended {
            // The block ends without a branch (its length limit, or an instruction that ends
            // blocks and fell through): it continues after its last instruction.
            let rip = parts.last().and_then(|p| p.last()).map_or(0, |i| i.2);
            g.exit(k0, gen::Rip::Const(rip));
        }
        g.b.seal_all_blocks();
        // Finishing resets the builder context for the next block.
        g.b.finalize(self.isa.frontend_config());
        let code = self
            .ctx
            .compile(&*self.isa, &mut ControlPlane::default())
            .ok()?;
        // Calls are by absolute address (`iconst` + `call_indirect`): nothing to relocate.
        if !code.buffer.relocs().is_empty() {
            return None;
        }
        let bytes = code.code_buffer();
        let p = match self.region.install(bytes) {
            Some(p) => p,
            None => {
                self.region.reset();
                self.region.install(bytes)?
            }
        };
        self.translated += 1;
        // SAFETY: `p` is the start of the function just compiled for the host with the
        // default calling convention and the signature `Entry` describes.
        let entry: Entry = unsafe { std::mem::transmute::<*const u8, Entry>(p) };
        Some(Tr::Code {
            entry,
            epoch: self.region.epoch(),
        })
    }
}

/// The CPU's translation tier: whether it is on, and the translator once made.
pub struct Tier {
    pub on: bool,
    /// Executions before a block is translated (tests lower it).
    pub hot: u32,
    /// Instructions completed in translated code.
    pub ran: u64,
    /// Blocks translated after another one, in its trace.
    pub traced: u64,
    /// Times translated code was entered from the block loop.
    pub entered: u64,
    jit: Option<Box<Jit>>,
}

impl Default for Tier {
    fn default() -> Self {
        Tier {
            on: Jit::enabled_by_env(),
            hot: std::env::var("VIREO_EMU_JIT_HOT")
                .ok()
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(HOT),
            ran: 0,
            traced: 0,
            entered: 0,
            jit: None,
        }
    }
}

impl Tier {
    /// The translator, made on first use; a host Cranelift cannot serve turns the tier off.
    pub fn get(&mut self) -> Option<&mut Jit> {
        if !self.on {
            return None;
        }
        if self.jit.is_none() {
            self.jit = Jit::new().map(Box::new);
            if self.jit.is_none() {
                tracing::warn!("emu: no code generator for this host, translation tier off");
                self.on = false;
            }
        }
        self.jit.as_deref_mut()
    }

    /// The current code epoch, if the translator exists.
    pub fn epoch(&self) -> Option<u64> {
        self.jit.as_ref().map(|j| j.epoch())
    }

    /// Blocks translated so far.
    pub fn translated(&self) -> u64 {
        self.jit.as_ref().map_or(0, |j| j.translated)
    }
}

#[cfg(test)]
mod tests;
