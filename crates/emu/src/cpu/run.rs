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

use super::fast::{self, Fast, Step};
use super::{exec, Cpu, Fault, Handler};
use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};
use rustc_hash::FxHashMap;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::{
    AtomicBool,
    Ordering::{Acquire, Relaxed},
};

/// Longest block, so that interrupts and budgets are checked often enough.
const MAX_BLOCK: usize = 64;
/// Entries of the direct-mapped front of the block cache.
const FAST_BITS: u32 = 12;

pub struct Block {
    /// Linear address and code width the block was decoded for.
    virt: u64,
    bits: u32,
    /// Each instruction with its handler, the address of the next instruction and its fast
    /// form.
    insns: Vec<(Instruction, Handler, u64, Fast)>,
    /// Cleared when a write to its page drops the block, for the jump cache's copies.
    valid: Cell<bool>,
    /// In 64-bit mode, the block that followed this one last time (block chaining): the
    /// next lookup tries it first. Only blocks held by the cache's map get links, and a block
    /// leaving the map drops its link, so that the cycles links make (a loop links to
    /// itself) never outlive the map.
    link: RefCell<Option<Jump>>,
}

impl Block {
    /// Marks the block dropped from the cache and breaks its link.
    fn retire(&self) {
        self.valid.set(false);
        self.link.borrow_mut().take();
    }
}

#[derive(Clone)]
/// A jump-cache entry: a block found for a linear RIP at some privilege level, valid while the
/// translations have not changed.
struct Jump {
    block: Rc<Block>,
    generation: u64,
    cpl: u8,
}

/// Decoded blocks: a hash map by physical address, fronted in 64-bit mode by a direct-mapped
/// jump cache by RIP that answers most lookups without translating RIP.
///
/// Blocks are reference-counted with `Rc`: the cache belongs to one `Cpu` and its blocks never
/// leave it, so no atomic counting is needed.
pub struct BlockCache {
    blocks: FxHashMap<u64, Rc<Block>>,
    /// In 64-bit mode, blocks by RIP, skipping the translation of RIP (the jump cache).
    fast: Vec<Option<Jump>>,
    /// Physical page number -> start addresses of the blocks in it.
    pages: FxHashMap<u64, Vec<u64>>,
}

// SAFETY: every `Rc<Block>` lives inside this cache or on the stack of the thread that runs
// the owning `Cpu`; moving the whole cache to another thread moves all of them together.
unsafe impl Send for BlockCache {}

impl Default for BlockCache {
    fn default() -> Self {
        BlockCache {
            blocks: FxHashMap::default(),
            fast: vec![None; 1 << FAST_BITS],
            pages: FxHashMap::default(),
        }
    }
}

#[inline]
fn fast_slot(rip: u64) -> usize {
    ((rip ^ (rip >> FAST_BITS)) as usize) & ((1 << FAST_BITS) - 1)
}

impl Drop for BlockCache {
    /// Breaks the links between blocks, which can form cycles.
    fn drop(&mut self) {
        self.clear();
    }
}

impl BlockCache {
    fn invalidate_page(&mut self, page: u64) {
        if let Some(starts) = self.pages.remove(&page) {
            for s in starts {
                if let Some(b) = self.blocks.remove(&s) {
                    b.retire();
                }
            }
        }
    }

    pub fn clear(&mut self) {
        for b in self.blocks.values() {
            b.retire();
        }
        self.blocks.clear();
        self.pages.clear();
        self.fast.fill(None);
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
            match self.exec_block(limit, &mut prev) {
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
    fn exec_block(&mut self, limit: usize, prev: &mut Option<Rc<Block>>) -> Result<(), Fault> {
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
        let mut rip = self.rip;
        let mut done = 0u64;
        let insns = &block.insns[..limit.min(block.insns.len())];
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

    /// Finds or decodes the block at RIP: first through the link of the block executed
    /// before (`prev`), then the jump cache, then by physical address.
    #[inline]
    fn lookup_block(&mut self, prev: Option<&Rc<Block>>) -> Result<Rc<Block>, Fault> {
        if self.long64 {
            if let Some(p) = prev {
                if let Some(j) = &*p.link.borrow() {
                    if self.jump_valid(j) {
                        return Ok(j.block.clone());
                    }
                }
            }
        }
        let block = self.find_block()?;
        if self.long64 {
            if let Some(p) = prev {
                // Only blocks in the cache's map link, and only to blocks in it (`Block::link`).
                if p.valid.get() && block.valid.get() {
                    *p.link.borrow_mut() = Some(Jump {
                        block: block.clone(),
                        generation: self.mem.generation,
                        cpl: self.cpl,
                    });
                }
            }
        }
        Ok(block)
    }

    /// Whether a jump-cache entry or link is the block for RIP now.
    #[inline(always)]
    fn jump_valid(&self, j: &Jump) -> bool {
        let b = &j.block;
        b.virt == self.rip
            && j.generation == self.mem.generation
            && j.cpl == self.cpl
            && b.bits == 64
            && b.valid.get()
    }

    /// The jump cache and the map by physical address; decodes on a miss.
    #[inline]
    fn find_block(&mut self) -> Result<Rc<Block>, Fault> {
        let slot = fast_slot(self.rip);
        if self.long64 {
            if let Some(j) = &self.blocks.fast[slot] {
                if self.jump_valid(j) {
                    return Ok(j.block.clone());
                }
            }
        }
        let lin = self.linear(super::Seg::Cs, self.rip)?;
        let phys = self.translate(lin, super::mem::Access::Exec, self.cpl == 3)?;
        let block = match self.blocks.blocks.get(&phys) {
            Some(b) if b.virt == self.rip && b.bits == self.code_bits => b.clone(),
            _ => {
                let block = Rc::new(self.decode_block(lin)?);
                if block.insns.len() > 1 || !crosses_page(&block) {
                    self.mem.mark_code(phys >> 12);
                    let starts = self.blocks.pages.entry(phys >> 12).or_default();
                    if !starts.contains(&phys) {
                        starts.push(phys);
                    }
                    if let Some(old) = self.blocks.blocks.insert(phys, block.clone()) {
                        old.retire();
                    }
                } else {
                    // Not tracked for writes: must not be found again without decoding, nor
                    // linked to (it is not in the map: `valid` false keeps links away).
                    block.valid.set(false);
                    return Ok(block);
                }
                block
            }
        };
        if self.long64 {
            self.blocks.fast[slot] = Some(Jump {
                block: block.clone(),
                generation: self.mem.generation,
                cpl: self.cpl,
            });
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
                insns.push((
                    ins,
                    exec::resolve(&ins),
                    self.mask_ip(ins.next_ip()),
                    fast::digest(&ins, self.code_bits),
                ));
                break;
            }
            let stop = ins.code() == Code::INVALID || ins.flow_control() != FlowControl::Next;
            insns.push((
                ins,
                exec::resolve(&ins),
                self.mask_ip(ins.next_ip()),
                fast::digest(&ins, self.code_bits),
            ));
            if stop {
                break;
            }
        }
        if insns.is_empty() {
            // Nothing decodable in the rest of the page: a straddling invalid encoding.
            ins = Instruction::default();
            insns.push((ins, exec::resolve(&ins), self.rip, Fast::No));
        }
        Ok(Block {
            valid: Cell::new(true),
            link: RefCell::new(None),
            virt: self.rip,
            bits: self.code_bits,
            insns,
        })
    }

    /// Drops the blocks decoded from pages that devices wrote.
    fn apply_device_writes(&mut self) {
        match self.device_writes.drain() {
            super::dma::Drained::Ranges(ranges) => {
                for (gpa, len) in ranges {
                    self.mem.note_write(gpa, len);
                }
                for p in std::mem::take(&mut self.mem.dirty_code) {
                    self.blocks.invalidate_page(p);
                }
            }
            super::dma::Drained::Everything => {
                self.mem.forget_code();
                self.blocks.clear();
            }
        }
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
        .map(|(i, _, _, _)| (i.ip() & 0xfff) + i.len() as u64 > 0x1000)
        .unwrap_or(false)
}
