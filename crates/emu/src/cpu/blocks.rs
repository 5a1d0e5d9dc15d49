//! The cache of decoded blocks.
//!
//! A block is the straight-line run of instructions from an address to the first control
//! transfer or the end of the page, decoded once by iced-x86 with each instruction's handler
//! resolved. Blocks are keyed by the guest-physical and the linear address of their first
//! byte and remember the code width they were decoded for (RIP-relative operands and branch
//! targets depend on the linear address). A write to a page holding blocks drops them (see
//! `mem.rs`).

use super::fast::{self, Fast};
use super::jit::Tr;
use super::run::MAX_BLOCK;
use super::{exec, Cpu, Fault, Handler};
use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, FlowControl, Instruction};
use rustc_hash::{FxHashMap, FxHashSet};
use std::cell::{Cell, RefCell};
use std::rc::Rc;

/// Blocks the cache holds at most. When it is full the blocks without a translation are
/// dropped (`BlockCache::make_room`), or all of them if that frees too little: processes that
/// map the same code at new addresses keep adding blocks, and so does a dynamic loader binding
/// a large library (thousands of PLT stubs and relocation paths, each run a few times).
pub(super) const MAX_BLOCKS: usize = 1 << 16;
const NO_PAGE: u64 = u64::MAX;
/// Entries of the direct-mapped front of the block cache.
const FAST_BITS: u32 = 12;
/// Longest trace translated as one unit, in blocks and in instructions.
const TRACE_BLOCKS: usize = 8;
const TRACE_INSNS: usize = 256;

pub struct Block {
    /// Linear address and code width the block was decoded for.
    pub(super) virt: u64,
    /// Physical address of its first byte.
    phys: u64,
    /// The physical page number of the second page of an instruction that crosses a page
    /// end (a one-instruction block), else `NO_PAGE`.
    next_page: u64,
    pub(super) bits: u32,
    /// Each instruction with its handler, the address of the next instruction and its fast
    /// form.
    pub(super) insns: Vec<(Instruction, Handler, u64, Fast)>,
    /// Cleared when a write to its page drops the block, for the jump cache's copies.
    pub(super) valid: Cell<bool>,
    /// In 64-bit mode, the two blocks that followed this one last (block chaining: a block
    /// ending in a conditional branch has two successors): the next lookup tries them first.
    /// Only blocks held by the cache's map get links, and a block leaving the map drops its
    /// links, so that the cycles links make (a loop links to itself) never outlive the map.
    pub(super) link: RefCell<[Option<Jump>; 2]>,
    /// Its translation to host code, or how often it ran so far (`jit/`).
    pub(super) tr: Cell<Tr>,
    /// The blocks its translation runs after it (a trace, see `BlockCache::trace`), each with
    /// the index of its first instruction in the translation.
    pub(super) trace: RefCell<Vec<(Rc<Block>, u32)>>,
    /// How much more often its final conditional branch was taken than not, as far as the
    /// run loop saw (saturating): the direction a trace follows.
    bias: Cell<i16>,
}

impl Block {
    /// Marks the block dropped from the cache and breaks its links.
    fn retire(&self) {
        self.valid.set(false);
        *self.link.borrow_mut() = [None, None];
        self.trace.borrow_mut().clear();
    }

    /// Counts the direction its final conditional branch took, now that RIP is `rip`.
    #[inline(always)]
    fn count_branch(&self, rip: u64) {
        if let Some((_, _, next, Fast::Jcc { target, .. })) = self.insns.last() {
            let b = self.bias.get();
            if rip == *target && rip != *next {
                self.bias.set(b.saturating_add(1));
            } else if rip == *next {
                self.bias.set(b.saturating_sub(1));
            }
        }
    }

    /// Where control most likely goes after the block when it does not leave through a
    /// return or an indirect branch: the likelier side of a conditional branch, the target of
    /// a direct jump or call, the next instruction after a block cut at its length limit.
    fn follow(&self) -> Option<u64> {
        let (ins, _, next, f) = self.insns.last()?;
        match *f {
            Fast::Jcc { target, .. } if self.bias.get() > 0 => Some(target),
            Fast::Jcc { .. } => Some(*next),
            Fast::Jmp { target } | Fast::Call { target } => Some(target),
            _ if self.insns.len() == MAX_BLOCK
                && ins.flow_control() == FlowControl::Next
                && ins.code() != Code::INVALID =>
            {
                Some(*next)
            }
            _ => None,
        }
    }

    /// The linked block that is the block for RIP now, if any.
    #[inline(always)]
    pub(super) fn linked(&self, cpu: &Cpu) -> Option<Rc<Block>> {
        let links = self.link.borrow();
        links
            .iter()
            .flatten()
            .find(|j| cpu.jump_valid(j))
            .map(|j| j.block.clone())
    }
}

#[derive(Clone)]
/// A jump-cache entry: a block found for a linear RIP at some privilege level, valid while the
/// translations have not changed.
pub(super) struct Jump {
    pub(super) block: Rc<Block>,
    generation: u64,
    cpl: u8,
}

/// Decoded blocks: a hash map by physical address, fronted in 64-bit mode by a direct-mapped
/// jump cache by RIP that answers most lookups without translating RIP.
///
/// Blocks are reference-counted with `Rc`: the cache belongs to one `Cpu` and its blocks never
/// leave it, so no atomic counting is needed.
pub struct BlockCache {
    /// By (physical, linear) address of the first byte: processes that map the same code at
    /// different addresses (one binary, address-space randomization) each keep theirs.
    blocks: FxHashMap<(u64, u64), Rc<Block>>,
    /// In 64-bit mode, blocks by RIP, skipping the translation of RIP (the jump cache).
    fast: Vec<Option<Jump>>,
    /// Physical page number -> start addresses of the blocks in it.
    pages: FxHashMap<u64, Vec<(u64, u64)>>,
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
    pub(super) fn invalidate_page(&mut self, page: u64) {
        if let Some(starts) = self.pages.remove(&page) {
            for s in starts {
                if let Some(b) = self.blocks.remove(&s) {
                    b.retire();
                }
            }
        }
    }

    /// The blocks a translation of `head` runs after it: from each block to the block it
    /// most likely goes to (`Block::follow`), while that is decoded already, new to the trace
    /// and on head's page. One page means one mapping (the head's being current makes theirs
    /// current) and one invalidation (a write that drops any of them drops the head). Also
    /// whether the last of them (or the head alone) goes back to the head: a loop.
    pub(super) fn trace(&self, head: &Block) -> (Vec<Rc<Block>>, bool) {
        let mut out: Vec<Rc<Block>> = Vec::new();
        if head.bits != 64 || head.next_page != NO_PAGE {
            return (out, false);
        }
        let mut len = head.insns.len();
        let mut at = head.follow();
        while let Some(x) = at.filter(|_| out.len() + 1 < TRACE_BLOCKS) {
            if x >> 12 != head.virt >> 12 {
                break;
            }
            let key = (head.phys & !0xfff | x & 0xfff, x);
            let Some(b) = self.blocks.get(&key) else {
                break;
            };
            let seen = std::ptr::eq(&**b, head) || out.iter().any(|o| Rc::ptr_eq(o, b));
            len += b.insns.len();
            if seen || !b.valid.get() || b.bits != 64 || b.next_page != NO_PAGE || len > TRACE_INSNS
            {
                break;
            }
            at = b.follow();
            out.push(b.clone());
        }
        (out, at == Some(head.virt))
    }

    /// Drops the blocks that have no translation and are in no translated trace, keeping the
    /// hot code and its translations; empties the cache if more than half of it stays.
    fn make_room(&mut self) {
        let translated = |b: &Block| matches!(b.tr.get(), Tr::Code { .. });
        let mut traced: FxHashSet<*const Block> = FxHashSet::default();
        for b in self.blocks.values().filter(|b| translated(b)) {
            traced.extend(b.trace.borrow().iter().map(|(m, _)| Rc::as_ptr(m)));
        }
        self.blocks.retain(|_, b| {
            let keep = translated(b) || traced.contains(&Rc::as_ptr(b));
            if !keep {
                b.retire();
            }
            keep
        });
        if self.blocks.len() > MAX_BLOCKS / 2 {
            self.clear();
            return;
        }
        let blocks = &self.blocks;
        self.pages.retain(|_, starts| {
            starts.retain(|k| blocks.contains_key(k));
            !starts.is_empty()
        });
        // The jump cache's copies of dropped blocks would keep them alive.
        for j in &mut self.fast {
            if j.as_ref().is_some_and(|j| !j.block.valid.get()) {
                *j = None;
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

impl Cpu {
    /// Finds or decodes the block at RIP: first through the link of the block executed
    /// before (`prev`), then the jump cache, then by physical address.
    #[inline]
    pub(super) fn lookup_block(&mut self, prev: Option<&Rc<Block>>) -> Result<Rc<Block>, Fault> {
        if self.long64 {
            // Only 64-bit blocks are translated, so only they need the counts for traces
            // (and only while the tier is on: it never comes back on).
            if let (Some(p), true) = (prev, self.jit.on) {
                p.count_branch(self.rip);
            }
            if let Some(b) = prev.and_then(|p| p.linked(self)) {
                return Ok(b);
            }
        }
        let block = self.find_block()?;
        if self.long64 {
            if let Some(p) = prev {
                // Only blocks in the cache's map link, and only to blocks in it (`Block::link`).
                if p.valid.get() && block.valid.get() {
                    // The newest link first; the older one stays as the second, unless it is
                    // a stale link to this same block (a CR3 write made it miss): then the
                    // other successor stays.
                    let mut links = p.link.borrow_mut();
                    let [first, second] = std::mem::take(&mut *links);
                    let keep = match first {
                        Some(j) if Rc::ptr_eq(&j.block, &block) => second,
                        first => first,
                    };
                    let j = Jump {
                        block: block.clone(),
                        generation: self.mem.generation,
                        cpl: self.cpl,
                    };
                    *links = [Some(j), keep];
                }
            }
        }
        Ok(block)
    }

    /// Whether a jump-cache entry or link is the block for RIP now.
    #[inline(always)]
    pub(super) fn jump_valid(&self, j: &Jump) -> bool {
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
        // A jump-cache entry that only went stale (a TLB flush, a CR3 write: several per
        // context switch) is still right if RIP maps to the same physical address: refreshing
        // it is cheaper than the map lookup.
        if self.long64 {
            if let Some(j) = &mut self.blocks.fast[slot] {
                let b = &j.block;
                if b.virt == self.rip
                    && b.phys == phys
                    && b.next_page == NO_PAGE
                    && b.bits == 64
                    && b.valid.get()
                {
                    j.generation = self.mem.generation;
                    j.cpl = self.cpl;
                    return Ok(b.clone());
                }
            }
        }
        let key = (phys, self.rip);
        let next_lin = (lin & !0xfff).wrapping_add(0x1000);
        let found = self.blocks.blocks.get(&key).cloned();
        let block = match found {
            Some(b) if b.bits == self.code_bits && b.next_page == NO_PAGE => b,
            // An instruction across two pages: the second must still be the same one.
            Some(b) if b.bits == self.code_bits && self.page_of(next_lin)? == b.next_page => b,
            _ => {
                if self.blocks.blocks.len() >= MAX_BLOCKS {
                    self.blocks.make_room();
                }
                let mut block = self.decode_block(lin, phys)?;
                let mut pages = vec![phys >> 12];
                if crosses_page(&block) {
                    // Tracked for writes in both pages.
                    block.next_page = self.page_of(next_lin)?;
                    pages.push(block.next_page);
                }
                let block = Rc::new(block);
                for page in pages {
                    self.mem.mark_code(page);
                    let starts = self.blocks.pages.entry(page).or_default();
                    if !starts.contains(&key) {
                        starts.push(key);
                    }
                }
                if let Some(old) = self.blocks.blocks.insert(key, block.clone()) {
                    old.retire();
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
    ///
    /// Out of line: its 4 KiB buffer would otherwise make every block's stack frame large.
    #[inline(never)]
    fn decode_block(&mut self, lin: u64, phys: u64) -> Result<Block, Fault> {
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
            link: RefCell::new([None, None]),
            tr: Cell::new(Tr::Cold(0)),
            trace: RefCell::new(Vec::new()),
            bias: Cell::new(0),
            virt: self.rip,
            phys,
            next_page: NO_PAGE,
            bits: self.code_bits,
            insns,
        })
    }

    /// The physical page number of the code at linear address `lin`.
    fn page_of(&mut self, lin: u64) -> Result<u64, Fault> {
        Ok(self.translate(lin, super::mem::Access::Exec, self.cpl == 3)? >> 12)
    }

    /// Drops the blocks decoded from pages that devices wrote.
    pub(super) fn apply_device_writes(&mut self) {
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

/// Whether a (one-instruction) block's instruction runs past the end of its page.
fn crosses_page(b: &Block) -> bool {
    b.insns
        .first()
        .map(|(i, _, _, _)| (i.ip() & 0xfff) + i.len() as u64 > 0x1000)
        .unwrap_or(false)
}
