//! Entering translations from the block loop, and running them back to back.
//!
//! Between two blocks the run loop checks for interrupts, device writes, I/O, the budget and
//! code that was written. Translated code does none of the things that raise those (no I/O,
//! no write to a page holding code, no change of IF or mode): an instruction it hands to the
//! interpreter (`jit_step`) that does one ends the translation with `ENDED`. So after a
//! translation that completed its whole block the next block can start at once if its
//! translation is current and nothing is waiting: the budget is not spent and neither the
//! kick nor the attention flag is up. The next block is one the finished block links to
//! (`run.rs`), valid only for the RIP, CPL and translations of now. A translation that ran a
//! trace says which of its blocks it left from: that one's links say what comes next, and the
//! interpreter finishes that one after a side exit.

use super::{Entry, Item, Tr, ENDED, PART_SHIFT};
use crate::cpu::blocks::Block;
use crate::cpu::Cpu;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

/// When the run loop wants control back. Generated code that loops reads it (`repr(C)`,
/// offsets in `layout`).
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Until<'a> {
    /// Instruction count at which the budget is spent.
    pub end: u64,
    pub kick: &'a AtomicBool,
    pub attention: &'a AtomicBool,
}

impl Cpu {
    /// Runs the translation of `block`, if it has one, and while each completes its whole
    /// block the translations of the blocks linked after it; `block` ends as the last one
    /// entered, or the linked block that has no code yet. Returns how many of its
    /// instructions completed (the instruction count and RIP are up to date): the interpreter
    /// does the rest.
    pub(in crate::cpu) fn run_translated(&mut self, block: &mut Rc<Block>, until: Until) -> usize {
        let Some(mut entry) = self.jit_entry(block) else {
            return 0;
        };
        loop {
            let tlb = self.mem.tlb_ptr();
            // SAFETY: `entry` is live code of the current region epoch (checked by
            // `jit_entry`) with the `Entry` signature; it reads and writes only this Cpu's
            // registers, flags, RIP and instruction counts, the TLB that `tlb` points to (not
            // resized while it runs), guest RAM through host pointers that TLB holds, and
            // `until`, which lives across the call.
            let before = self.icount;
            let r = unsafe { entry(self, tlb, &until) };
            self.jit.entered += 1;
            let mut k = r as u32;
            self.icount += u64::from(k);
            // A looping trace has counted its passes into `icount` itself (`jit_step`
            // leaves it as it found it).
            self.jit.ran += self.icount - before;
            let part = (r >> PART_SHIFT) as u8;
            if part != 0 {
                // It left from a block of the trace: that block is the one the interpreter
                // goes on with, or whose links say what runs next.
                let Some((b, first)) = block.trace.borrow().get(usize::from(part) - 1).cloned()
                else {
                    return block.insns.len();
                };
                k = k.saturating_sub(first);
                *block = b;
            }
            let n = block.insns.len();
            let k = (k as usize).min(n);
            if r & ENDED != 0 {
                // An instruction run by `jit_step` ended the block: nothing is left of it,
                // and the run loop must look at the state before anything else runs.
                return n;
            }
            if k < n
                || self.icount >= until.end
                || until.kick.load(Relaxed)
                || until.attention.load(Relaxed)
                || !self.long64
            {
                return k;
            }
            let Some(next) = block.linked(self) else {
                return k;
            };
            // `jit_entry` has counted this execution of `next`: without code, the interpreter
            // runs it from here, rather than the run loop finding and counting it again.
            let e = self.jit_entry(&next);
            *block = next;
            match e {
                Some(e) => entry = e,
                None => return 0,
            }
        }
    }

    /// The translation of a block if it has a current one; counts executions and translates
    /// the block when it gets hot.
    fn jit_entry(&mut self, block: &Block) -> Option<Entry> {
        match block.tr.get() {
            Tr::Code { entry, epoch } => {
                if self.jit.epoch() == Some(epoch) {
                    return Some(entry);
                }
                // The code region was emptied since: translate again when hot.
                block.tr.set(Tr::Cold(0));
                None
            }
            Tr::Cold(n) if n.saturating_add(1) < self.jit.hot => {
                block.tr.set(Tr::Cold(n + 1));
                None
            }
            Tr::Cold(_) => {
                // A block outside the cache is not tracked for writes: never translated.
                if !block.valid.get() {
                    return None;
                }
                let (trace, loops) = self.blocks.trace(block);
                let parts: Vec<&[Item]> = std::iter::once(&block.insns[..])
                    .chain(trace.iter().map(|b| &b.insns[..]))
                    .collect();
                let t = self
                    .jit
                    .get()?
                    .translate(&parts, loops)
                    .unwrap_or(Tr::Never);
                self.jit.traced += trace.len() as u64;
                let mut first = block.insns.len() as u32;
                *block.trace.borrow_mut() = trace
                    .into_iter()
                    .map(|b| {
                        let at = first;
                        first += b.insns.len() as u32;
                        (b, at)
                    })
                    .collect();
                block.tr.set(t);
                match t {
                    Tr::Code { entry, .. } => Some(entry),
                    _ => None,
                }
            }
            Tr::Never => None,
        }
    }
}
