//! String instructions (MOVS, STOS, LODS, CMPS, SCAS, INS, OUTS) with their REP prefixes,
//! and IN/OUT.
//!
//! A repeated instruction runs its iterations inside one handler call. Every iteration leaves
//! a consistent state: RCX, RSI and RDI move only after the iteration's accesses succeeded,
//! so a fault or an I/O exit in iteration k returns with iterations 0..k done and the
//! instruction (RIP unchanged) resumes at iteration k. Long runs stop after a bounded amount
//! of work with `next_rip = rip`, so that interrupts are not held off: the instruction then
//! simply continues the next time it runs.
//!
//! REP MOVS and REP STOS on RAM take a fast path (`string_fast.rs`) that copies or fills a
//! page at a time through host pointers.

#[path = "string_fast.rs"]
mod fast;
#[path = "string_io.rs"]
mod io;

use crate::cpu::operand::{bits, size_mask};
use crate::cpu::{flags, Cpu, Handler, Seg, R};
use iced_x86::{Instruction, Mnemonic, OpKind};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    Some(match ins.mnemonic() {
        Mnemonic::Movsb | Mnemonic::Movsw | Mnemonic::Movsq => movs,
        // MOVSD is also an SSE2 instruction; the string form has no register operands.
        Mnemonic::Movsd if is_string(ins) => movs,
        Mnemonic::Stosb | Mnemonic::Stosw | Mnemonic::Stosd | Mnemonic::Stosq => stos,
        Mnemonic::Lodsb | Mnemonic::Lodsw | Mnemonic::Lodsd | Mnemonic::Lodsq => lods,
        Mnemonic::Cmpsb | Mnemonic::Cmpsw | Mnemonic::Cmpsq => cmps,
        Mnemonic::Cmpsd if is_string(ins) => cmps,
        Mnemonic::Scasb | Mnemonic::Scasw | Mnemonic::Scasd | Mnemonic::Scasq => scas,
        _ => return io::resolve(ins),
    })
}

fn is_string(ins: &Instruction) -> bool {
    addr_size(ins).is_some()
}

/// Work done in one handler call before a repeated instruction yields (bytes; a slow
/// iteration counts as `SLOW_COST`).
const WORK_CAP: usize = 64 * 1024;
const SLOW_COST: usize = 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Repeat {
    /// No prefix: one iteration, RCX untouched.
    Once,
    /// REP, or REPE/REPNE on an instruction that ignores ZF: RCX times.
    Count,
    /// REPE: while ZF is set.
    WhileEqual,
    /// REPNE: while ZF is clear.
    WhileNotEqual,
}

/// What a string instruction works on, decided once per execution.
#[derive(Debug, Clone, Copy)]
struct Str {
    /// Element size in bytes.
    size: usize,
    /// Address size in bytes: the width of RSI/RDI/RCX.
    asz: usize,
    /// The source segment (DS or an override); the destination is always ES.
    src: Seg,
    /// Added to RSI/RDI per element: +size, or -size with DF set.
    step: u64,
    rep: Repeat,
}

/// The address size of a string instruction, from its implicit memory operands.
fn addr_size(ins: &Instruction) -> Option<usize> {
    (0..ins.op_count()).find_map(|i| match ins.op_kind(i) {
        OpKind::MemorySegSI | OpKind::MemoryESDI => Some(2),
        OpKind::MemorySegESI | OpKind::MemoryESEDI => Some(4),
        OpKind::MemorySegRSI | OpKind::MemoryESRDI => Some(8),
        _ => None,
    })
}

impl Str {
    fn new(cpu: &Cpu, ins: &Instruction, zf_cond: bool) -> Str {
        let size = ins.memory_size().size().clamp(1, 8);
        let rep = if ins.has_repe_prefix() {
            if zf_cond {
                Repeat::WhileEqual
            } else {
                Repeat::Count
            }
        } else if ins.has_repne_prefix() {
            if zf_cond {
                Repeat::WhileNotEqual
            } else {
                Repeat::Count
            }
        } else {
            Repeat::Once
        };
        Str {
            size,
            asz: addr_size(ins).unwrap_or((cpu.code_bits / 8) as usize),
            src: cpu.mem_seg(ins),
            step: if cpu.flags.has(flags::DF) {
                (size as u64).wrapping_neg()
            } else {
                size as u64
            },
            rep,
        }
    }

    /// RSI, RDI or RCX at the address size.
    #[inline]
    fn get(&self, cpu: &Cpu, r: usize) -> u64 {
        cpu.gpr[r] & size_mask(self.asz)
    }

    /// Writes RSI, RDI or RCX at the address size: a 16-bit register keeps the upper bits,
    /// a 32-bit one zero-extends.
    #[inline]
    fn set(&self, cpu: &mut Cpu, r: usize, v: u64) {
        let g = &mut cpu.gpr[r];
        *g = match self.asz {
            8 => v,
            4 => v & 0xffff_ffff,
            _ => (*g & !0xffff) | (v & 0xffff),
        };
    }

    /// Advances RSI or RDI by one element.
    #[inline]
    fn advance(&self, cpu: &mut Cpu, r: usize) {
        let v = self.get(cpu, r).wrapping_add(self.step);
        self.set(cpu, r, v);
    }
}

const RCX: usize = 1;
const RSI: usize = 6;
const RDI: usize = 7;

/// A fast path: does a run of whole elements (at most `count`) at once, updating RSI/RDI,
/// and returns how many; 0 when it does not apply (the slow path does the next element).
type Fast = fn(&mut Cpu, &Str, u64) -> u64;

/// Elements below which the fast path is not tried.
const FAST_MIN_BYTES: u64 = 64;

/// Runs the instruction once, or with a REP prefix up to RCX times. `iter` does one
/// iteration: its accesses, then the index registers.
#[inline]
fn repeat(
    cpu: &mut Cpu,
    st: &Str,
    fast: Option<Fast>,
    mut iter: impl FnMut(&mut Cpu, &Str) -> R,
) -> R {
    if st.rep == Repeat::Once {
        return iter(cpu, st);
    }
    let mut work = 0usize;
    loop {
        let mut count = st.get(cpu, RCX);
        if count == 0 {
            return Ok(());
        }
        let mut done = 0;
        if let Some(f) = fast {
            if count.saturating_mul(st.size as u64) >= FAST_MIN_BYTES {
                done = f(cpu, st, count);
            }
        }
        if done > 0 {
            count -= done.min(count);
            st.set(cpu, RCX, count);
            work += (done as usize).saturating_mul(st.size);
        } else {
            iter(cpu, st)?;
            count -= 1;
            st.set(cpu, RCX, count);
            cpu.io.commit();
            work += SLOW_COST;
            let stop = match st.rep {
                Repeat::WhileEqual => !cpu.flags.zf(),
                Repeat::WhileNotEqual => cpu.flags.zf(),
                _ => false,
            };
            if stop {
                return Ok(());
            }
        }
        if count == 0 {
            return Ok(());
        }
        if !cpu.io.writes.is_empty() || work >= WORK_CAP {
            // Continue later: after the VMM handled the write, or after pending interrupts.
            cpu.next_rip = cpu.rip;
            cpu.end_block = true;
            return Ok(());
        }
    }
}

fn movs(cpu: &mut Cpu, ins: &Instruction) -> R {
    let st = Str::new(cpu, ins, false);
    let fast = if cpu.flags.has(flags::DF) {
        None
    } else {
        Some(fast::movs as Fast)
    };
    repeat(cpu, &st, fast, |cpu, st| {
        let v = cpu.read(st.src, st.get(cpu, RSI), st.size)?;
        cpu.write(Seg::Es, st.get(cpu, RDI), st.size, v)?;
        st.advance(cpu, RSI);
        st.advance(cpu, RDI);
        Ok(())
    })
}

fn stos(cpu: &mut Cpu, ins: &Instruction) -> R {
    let st = Str::new(cpu, ins, false);
    let fast = if cpu.flags.has(flags::DF) {
        None
    } else {
        Some(fast::stos as Fast)
    };
    let v = cpu.gpr[0] & size_mask(st.size);
    repeat(cpu, &st, fast, |cpu, st| {
        cpu.write(Seg::Es, st.get(cpu, RDI), st.size, v)?;
        st.advance(cpu, RDI);
        Ok(())
    })
}

/// Writes AL/AX/EAX/RAX with the x86 merge rules.
#[inline]
fn set_acc(cpu: &mut Cpu, size: usize, v: u64) {
    let g = &mut cpu.gpr[0];
    *g = match size {
        8 => v,
        4 => v & 0xffff_ffff,
        2 => (*g & !0xffff) | (v & 0xffff),
        _ => (*g & !0xff) | (v & 0xff),
    };
}

fn lods(cpu: &mut Cpu, ins: &Instruction) -> R {
    let st = Str::new(cpu, ins, false);
    repeat(cpu, &st, None, |cpu, st| {
        let v = cpu.read(st.src, st.get(cpu, RSI), st.size)?;
        set_acc(cpu, st.size, v);
        st.advance(cpu, RSI);
        Ok(())
    })
}

fn cmps(cpu: &mut Cpu, ins: &Instruction) -> R {
    let st = Str::new(cpu, ins, true);
    repeat(cpu, &st, None, |cpu, st| {
        let a = cpu.read(st.src, st.get(cpu, RSI), st.size)?;
        let b = cpu.read(Seg::Es, st.get(cpu, RDI), st.size)?;
        cpu.flags
            .set_sub(a, b, false, a.wrapping_sub(b), bits(st.size));
        st.advance(cpu, RSI);
        st.advance(cpu, RDI);
        Ok(())
    })
}

fn scas(cpu: &mut Cpu, ins: &Instruction) -> R {
    let st = Str::new(cpu, ins, true);
    let a = cpu.gpr[0] & size_mask(st.size);
    repeat(cpu, &st, None, |cpu, st| {
        let b = cpu.read(Seg::Es, st.get(cpu, RDI), st.size)?;
        cpu.flags
            .set_sub(a, b, false, a.wrapping_sub(b), bits(st.size));
        st.advance(cpu, RDI);
        Ok(())
    })
}

#[cfg(test)]
#[path = "string_tests.rs"]
mod tests;
