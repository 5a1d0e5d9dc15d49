//! The interpreter loop over a cache of decoded blocks.
//!
//! A block is the straight-line run of instructions from an address to the first control
//! transfer or the end of the page, decoded once by iced-x86 with each instruction's handler
//! resolved. Blocks are keyed by the guest-physical address of their first byte and remember
//! the linear address and code width they were decoded for (RIP-relative operands and branch
//! targets depend on it). A write to a page holding blocks drops them (see `mem.rs`).
//!
//! Interrupts are taken between blocks, which the architecture allows: an external interrupt
//! is recognized at some instruction boundary.

use super::{exec, Cpu, Fault, Handler};
use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};
use rustc_hash::FxHashMap;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

/// Longest block, so that interrupts and budgets are checked often enough.
const MAX_BLOCK: usize = 64;

pub struct Block {
    /// Linear address and code width the block was decoded for.
    virt: u64,
    bits: u32,
    insns: Vec<(Instruction, Handler)>,
}

#[derive(Default)]
pub struct BlockCache {
    blocks: FxHashMap<u64, Arc<Block>>,
    /// Physical page number -> start addresses of the blocks in it.
    pages: FxHashMap<u64, Vec<u64>>,
}

impl BlockCache {
    fn invalidate_page(&mut self, page: u64) {
        if let Some(starts) = self.pages.remove(&page) {
            for s in starts {
                self.blocks.remove(&s);
            }
        }
    }

    pub fn clear(&mut self) {
        self.blocks.clear();
        self.pages.clear();
    }

    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }
}

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
        loop {
            if !self.io.writes.is_empty() || self.io.pending_read.is_some() {
                return Stop::Io;
            }
            if kick.load(Relaxed) {
                return Stop::Kicked;
            }
            if attention.load(Relaxed) {
                attention.store(false, Relaxed);
                irq_waiting = true;
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
            // An interrupt shadow (after STI or MOV SS) covers exactly one instruction.
            let limit = if self.int_shadow { 1 } else { MAX_BLOCK };
            if self.int_shadow {
                irq_waiting = true;
            }
            match self.exec_block(limit) {
                Ok(()) => {}
                Err(Fault::Exit) => return Stop::Io,
                Err(Fault::Shutdown) => return Stop::Shutdown,
                Err(Fault::Ex(_)) => unreachable!("exec_block delivers exceptions"),
            }
            if !self.mem.dirty_code.is_empty() {
                for p in std::mem::take(&mut self.mem.dirty_code) {
                    self.blocks.invalidate_page(p);
                }
            }
        }
    }

    /// Executes up to `limit` instructions of the block at RIP; exceptions are delivered.
    fn exec_block(&mut self, limit: usize) -> Result<(), Fault> {
        let block = match self.lookup_block() {
            Ok(b) => b,
            Err(Fault::Ex(e)) => return self.raise(e),
            Err(f) => return Err(f),
        };
        let shadow = self.int_shadow;
        for (ins, handler) in block.insns.iter().take(limit) {
            self.next_rip = self.mask_ip(ins.next_ip());
            let writes_before = self.io.writes.len();
            let r = handler(self, ins);
            match r {
                Ok(()) => {
                    self.rip = self.next_rip;
                    self.icount += 1;
                    self.io.commit();
                    if shadow {
                        self.int_shadow = false;
                    }
                    if self.end_block || !self.io.writes.is_empty() {
                        self.end_block = false;
                        return Ok(());
                    }
                }
                Err(Fault::Ex(e)) => {
                    self.io.rewind(writes_before);
                    self.io.commit();
                    self.end_block = false;
                    return self.raise(e);
                }
                Err(Fault::Exit) => {
                    self.io.rewind(writes_before);
                    return Err(Fault::Exit);
                }
                Err(Fault::Shutdown) => return Err(Fault::Shutdown),
            }
        }
        Ok(())
    }

    /// Finds or decodes the block at RIP.
    fn lookup_block(&mut self) -> Result<Arc<Block>, Fault> {
        let lin = self.linear(super::Seg::Cs, self.rip)?;
        let phys = self.translate(lin, super::mem::Access::Exec, self.cpl == 3)?;
        if let Some(b) = self.blocks.blocks.get(&phys) {
            if b.virt == self.rip && b.bits == self.code_bits {
                return Ok(b.clone());
            }
        }
        let block = Arc::new(self.decode_block(lin)?);
        if block.insns.len() > 1 || !crosses_page(&block) {
            self.mem.mark_code(phys >> 12);
            self.blocks.pages.entry(phys >> 12).or_default().push(phys);
            self.blocks.blocks.insert(phys, block.clone());
        }
        Ok(block)
    }

    /// Decodes instructions from RIP to the first control transfer or the end of the page.
    fn decode_block(&mut self, lin: u64) -> Result<Block, Fault> {
        let mut buf = [0u8; 4096 + 15];
        let (_, n) = self.fetch(lin, &mut buf[..4096])?;
        let mut insns = Vec::with_capacity(8);
        let mut decoder =
            Decoder::with_ip(self.code_bits, &buf[..n], self.rip, DecoderOptions::NONE);
        let mut ins = Instruction::default();
        while decoder.can_decode() && insns.len() < MAX_BLOCK {
            decoder.decode_out(&mut ins);
            if decoder.last_error() == DecoderError::NoMoreBytes {
                if !insns.is_empty() {
                    break;
                }
                // The first instruction straddles the page end: fetch across it.
                let (_, m) = self.fetch(lin.wrapping_add(n as u64), &mut buf[n..n + 15])?;
                let mut d = Decoder::with_ip(
                    self.code_bits,
                    &buf[..n + m],
                    self.rip,
                    DecoderOptions::NONE,
                );
                d.decode_out(&mut ins);
                insns.push((ins, exec::resolve(&ins)));
                break;
            }
            let stop = ins.code() == Code::INVALID || ins.flow_control() != FlowControl::Next;
            insns.push((ins, exec::resolve(&ins)));
            if stop {
                break;
            }
        }
        if insns.is_empty() {
            // Nothing decodable in the rest of the page: a straddling invalid encoding.
            ins = Instruction::default();
            insns.push((ins, exec::resolve(&ins)));
        }
        Ok(Block {
            virt: self.rip,
            bits: self.code_bits,
            insns,
        })
    }

    /// Drops every decoded block (after the guest's memory map changes wholesale).
    pub fn flush_code(&mut self) {
        self.blocks.clear();
    }
}

/// A one-instruction block whose instruction runs past its page is not cached: its second
/// page is not tracked for writes.
fn crosses_page(b: &Block) -> bool {
    b.insns
        .first()
        .map(|(i, _)| (i.ip() & 0xfff) + i.len() as u64 > 0x1000)
        .unwrap_or(false)
}
