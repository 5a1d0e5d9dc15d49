//! The interpreter loop over the cache of decoded blocks (`blocks.rs`).
//!
//! Interrupts are taken between blocks, which the architecture allows: an external interrupt
//! is recognized at some instruction boundary.

use super::blocks::Block;
use super::fast::Step;
use super::jit::Until;
use super::{Cpu, Fault};
use std::rc::Rc;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Relaxed},
};

/// Longest block, so that interrupts and budgets are checked often enough.
pub(super) const MAX_BLOCK: usize = 64;

/// Why `run` returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// The instruction budget is spent: time to poll timers and the VMM.
    Budget,
    /// A port or MMIO access needs the VMM (see `io.rs`).
    Io,
    /// HLT with nothing to wake the CPU yet.
    Halt,
    /// Triple fault.
    Shutdown,
    /// Another thread asked the CPU to stop (`kick`).
    Kicked,
}

impl Cpu {
    /// Runs until `budget` more instructions have executed or something needs the caller.
    /// `kick` is polled between blocks; `attention` says the interrupt state may have changed.
    pub fn run(&mut self, budget: u64, kick: &AtomicBool, attention: &AtomicBool) -> Stop {
        let end = self.icount.saturating_add(budget);
        let mut irq_waiting = true;
        // The block executed last, whose link may name the next one.
        let mut prev: Option<Rc<Block>> = None;
        loop {
            if !self.io.writes.is_empty() || self.io.pending_read.is_some() {
                return Stop::Io;
            }
            if kick.load(Relaxed) {
                return Stop::Kicked;
            }
            // A device sets its write log's flag before this one (cpu/dma.rs). Taking the flag
            // with one swap (Acquire) means a device that raises it again after we looked is
            // never overwritten: its raise stays for the next block. The plain load first keeps
            // the common, quiet case free of a locked instruction.
            if attention.load(Relaxed) && attention.swap(false, Acquire) {
                irq_waiting = true;
                if self.device_writes.pending() {
                    self.apply_device_writes();
                }
            }
            // While IF is clear a waiting interrupt stays waiting: POPF, IRET or STI may set
            // IF again without any notification.
            if irq_waiting && !self.int_shadow && self.flags.has(super::flags::IF) {
                irq_waiting = false;
                if self.platform.interrupt_pending() {
                    if let Some(v) = self.platform.ack_interrupt() {
                        self.halted = false;
                        if let Err(Fault::Shutdown) = self.interrupt(v) {
                            return Stop::Shutdown;
                        }
                        // Another interrupt may be waiting behind this one.
                        irq_waiting = true;
                    }
                }
            }
            if self.halted {
                return Stop::Halt;
            }
            if self.icount >= end {
                return Stop::Budget;
            }
            // An interrupt shadow (after STI or MOV SS) covers exactly one instruction, and so
            // does single-stepping (TF), which traps after it.
            let step = self.flags.has(super::flags::TF);
            let limit = if self.int_shadow || step {
                1
            } else {
                MAX_BLOCK
            };
            if self.int_shadow {
                irq_waiting = true;
            }
            let icount = self.icount;
            let until = Until {
                end,
                kick,
                attention,
            };
            match self.exec_block(limit, &mut prev, until) {
                Ok(()) if step && self.icount != icount => {
                    self.dr[6] |= 1 << 14; // DR6.BS
                    if let Err(Fault::Shutdown) =
                        self.raise(super::Exception::new(super::Exception::DB))
                    {
                        return Stop::Shutdown;
                    }
                }
                Ok(()) => {}
                Err(Fault::Exit) => return Stop::Io,
                Err(Fault::Shutdown) => return Stop::Shutdown,
                // exec_block delivers exceptions itself; one that escapes delivery is as fatal
                // as a triple fault, and must not take the host down.
                Err(Fault::Ex(e)) => {
                    tracing::error!("emu: undeliverable exception {e:?} at {:#x}", self.rip);
                    return Stop::Shutdown;
                }
            }
            if !self.mem.dirty_code.is_empty() {
                for p in std::mem::take(&mut self.mem.dirty_code) {
                    self.blocks.invalidate_page(p);
                }
            }
        }
    }

    /// Executes up to `limit` instructions of the block at RIP; exceptions are delivered.
    ///
    /// Fast forms (`fast.rs`) either complete or change nothing, so they run with RIP and the
    /// instruction count kept in locals; both are written back before a general handler runs
    /// (it may read them, fault or exit) and when the block ends.
    fn exec_block(
        &mut self,
        limit: usize,
        prev: &mut Option<Rc<Block>>,
        until: Until,
    ) -> Result<(), Fault> {
        let block = match self.lookup_block(prev.as_ref()) {
            Ok(b) => b,
            Err(Fault::Ex(e)) => return self.raise(e),
            Err(f) => return Err(f),
        };
        let block = prev.insert(block);
        let shadow = self.int_shadow;
        // The run loop returns before a block while device writes are queued, and a handler
        // that queues one ends the block: so none are queued when an instruction starts, and
        // an abandoned instruction's writes are all of them.
        debug_assert!(self.io.writes.is_empty());
        // A translation runs a prefix of the block (all of it, usually), perhaps after the
        // translations of blocks chained before it, and says how many of its instructions
        // completed; the interpreter goes on from there. Not when the block is cut short
        // (single-step, interrupt shadow).
        let start = if limit == MAX_BLOCK && block.bits == 64 && self.jit.on {
            self.run_translated(block, until)
        } else {
            0
        };
        let mut rip = self.rip;
        let mut done = 0u64;
        let insns = &block.insns[start..limit.min(block.insns.len())];
        for (ins, handler, next, f) in insns {
            match self.exec_fast(f, *next) {
                Step::Next => {
                    rip = *next;
                    done += 1;
                    continue;
                }
                Step::Branch(target) => {
                    rip = target;
                    done += 1;
                    continue;
                }
                Step::Slow => {}
            }
            self.rip = rip;
            // `done` restarts at the handler's own instruction once it completes.
            self.icount += done;
            self.next_rip = *next;
            match handler(self, ins) {
                Ok(()) => {
                    rip = self.next_rip;
                    done = 1;
                    self.io.commit();
                    if self.end_block {
                        self.end_block = false;
                        break;
                    }
                }
                Err(Fault::Ex(e)) => {
                    self.io.rewind(0);
                    self.io.commit();
                    self.end_block = false;
                    return self.raise(e);
                }
                Err(Fault::Exit) => {
                    self.io.rewind(0);
                    return Err(Fault::Exit);
                }
                Err(Fault::Shutdown) => return Err(Fault::Shutdown),
            }
        }
        self.rip = rip;
        self.icount += done;
        if shadow {
            self.int_shadow = false;
        }
        Ok(())
    }
}
