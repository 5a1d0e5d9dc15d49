//! The memory path (seed 2.2, memory virtualization in software): segmentation, the page
//! walk (32-bit, PAE and 4-level) with accessed/dirty bits and NX, a software TLB that maps
//! linear pages straight to host pointers, and guest-physical access to RAM and MMIO.
//!
//! Pages that hold decoded instructions are tracked so that a write to them drops the stale
//! decodings (Linux patches its own text at boot): such pages never get a fast-path write
//! entry in the TLB.

use super::{cr, Cpu, Exception, Seg, R};
use rustc_hash::FxHashSet;

pub const PAGE_SIZE: u64 = 4096;
const PAGE_MASK: u64 = !(PAGE_SIZE - 1);
const TLB_BITS: u32 = 10;
const TLB_SIZE: usize = 1 << TLB_BITS;
/// The guest-physical address width we report in CPUID 0x80000008.
pub const PHYS_BITS: u32 = 40;

/// How memory is being accessed, for permission checks and #PF error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
    Exec,
}

/// One range of guest RAM backed by host memory.
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub gpa: u64,
    pub size: u64,
    pub host: *mut u8,
}

// SAFETY: the regions point into guest memory that the VMM keeps mapped for the lifetime of
// the VM; the emulator only reaches it from the vCPU thread that owns the `Mmu`.
unsafe impl Send for Region {}

#[derive(Clone, Copy)]
#[repr(C)]
struct TlbEntry {
    /// Linear page number, or u64::MAX when empty.
    vpn: u64,
    /// Host address of the page, or null if it is not RAM (MMIO).
    host: *mut u8,
    /// Guest-physical page address.
    phys: u64,
    /// Bit 0: a supervisor access is allowed; bit 1: a user access is allowed. Write entries
    /// are only set when the page is dirty and holds no decoded code, so a fast write needs no
    /// further bookkeeping.
    read: u8,
    write: u8,
    exec: u8,
    global: bool,
}

const EMPTY: TlbEntry = TlbEntry {
    vpn: u64::MAX,
    host: std::ptr::null_mut(),
    phys: 0,
    read: 0,
    write: 0,
    exec: 0,
    global: false,
};

pub struct Mmu {
    regions: Vec<Region>,
    tlb: Box<[TlbEntry]>,
    /// Physical page numbers holding decoded instructions.
    code_pages: FxHashSet<u64>,
    /// Physical pages whose code was written since the run loop last looked.
    pub dirty_code: Vec<u64>,
    /// Changes whenever a translation may have changed (any TLB flush): caches keyed by linear
    /// address (the block jump cache) are valid only for the generation they were made in.
    pub generation: u64,
}

// SAFETY: see `Region`; TLB host pointers point into those regions.
unsafe impl Send for Mmu {}

/// The TLB's layout, for the translation tier's inline lookups (`jit/gen.rs`).
pub(crate) mod tlb_layout {
    use super::TlbEntry;
    use std::mem::{offset_of, size_of};
    pub const ENTRIES: u64 = super::TLB_SIZE as u64;
    pub const ENTRY: u64 = size_of::<TlbEntry>() as u64;
    pub const VPN: i32 = offset_of!(TlbEntry, vpn) as i32;
    pub const HOST: i32 = offset_of!(TlbEntry, host) as i32;
    pub const READ: i32 = offset_of!(TlbEntry, read) as i32;
    pub const WRITE: i32 = offset_of!(TlbEntry, write) as i32;
}

impl Default for Mmu {
    fn default() -> Self {
        Self::new()
    }
}

impl Mmu {
    pub fn new() -> Self {
        Mmu {
            regions: Vec::new(),
            tlb: vec![EMPTY; TLB_SIZE].into_boxed_slice(),
            code_pages: FxHashSet::default(),
            dirty_code: Vec::new(),
            generation: 0,
        }
    }

    /// The first TLB entry, for generated code that looks entries up itself. Valid as long
    /// as the `Mmu` lives: the TLB is allocated once and never resized.
    pub(crate) fn tlb_ptr(&self) -> *const u8 {
        self.tlb.as_ptr() as *const u8
    }

    /// Adds guest RAM.
    ///
    /// # Safety
    /// `host..host+size` must stay mapped and writable for as long as the `Mmu` is used.
    pub unsafe fn add_region(&mut self, gpa: u64, host: *mut u8, size: u64) {
        self.regions.push(Region { gpa, size, host });
        self.regions.sort_by_key(|r| r.gpa);
        self.flush_all();
    }

    /// The host address of `len` bytes of RAM at `gpa`, if they are all inside one region.
    #[inline]
    pub fn host_ptr(&self, gpa: u64, len: u64) -> Option<*mut u8> {
        for r in &self.regions {
            if gpa >= r.gpa && gpa - r.gpa < r.size {
                let off = gpa - r.gpa;
                if len > r.size - off {
                    return None;
                }
                // SAFETY: off + len is inside the region, which is mapped (see add_region).
                return Some(unsafe { r.host.add(off as usize) });
            }
        }
        None
    }

    pub fn flush_all(&mut self) {
        self.generation += 1;
        self.tlb.fill(EMPTY);
    }

    /// Flushes the entries that are not global (a CR3 write with CR4.PGE).
    pub fn flush_nonglobal(&mut self) {
        self.generation += 1;
        for e in self.tlb.iter_mut() {
            if !e.global {
                *e = EMPTY;
            }
        }
    }

    pub fn flush_page(&mut self, lin: u64) {
        self.generation += 1;
        let vpn = lin >> 12;
        let e = &mut self.tlb[(vpn as usize) & (TLB_SIZE - 1)];
        if e.vpn == vpn {
            *e = EMPTY;
        }
    }

    /// Records that `phys_page` (a page number) holds decoded code: writes to it must take the
    /// slow path from now on.
    pub fn mark_code(&mut self, phys_page: u64) {
        if self.code_pages.insert(phys_page) {
            let phys = phys_page << 12;
            for e in self.tlb.iter_mut() {
                if e.vpn != u64::MAX && e.phys == phys {
                    e.write = 0;
                }
            }
        }
    }

    /// A write reached a physical range: drop the decoded code of the pages it touched.
    #[inline]
    pub fn note_write(&mut self, gpa: u64, len: u64) {
        if self.code_pages.is_empty() {
            return;
        }
        let first = gpa >> 12;
        let last = (gpa + len.max(1) - 1) >> 12;
        for p in first..=last {
            if self.code_pages.remove(&p) {
                self.dirty_code.push(p);
            }
        }
    }

    /// Forgets which pages hold code (the caller drops every decoded block), and the TLB
    /// entries that route writes to those pages through the slow path.
    pub fn forget_code(&mut self) {
        self.code_pages.clear();
        self.dirty_code.clear();
        self.flush_all();
    }

    /// Reads guest RAM at a physical address (the page walker, DMA-like helpers). Bytes
    /// outside RAM read as all ones.
    pub fn phys_read(&self, gpa: u64, buf: &mut [u8]) {
        match self.host_ptr(gpa, buf.len() as u64) {
            // SAFETY: host_ptr checked that the whole range is inside a mapped region.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) },
            None => buf.fill(0xff),
        }
    }

    /// Writes guest RAM at a physical address; writes outside RAM are dropped.
    pub fn phys_write(&mut self, gpa: u64, buf: &[u8]) {
        if let Some(p) = self.host_ptr(gpa, buf.len() as u64) {
            self.note_write(gpa, buf.len() as u64);
            // SAFETY: host_ptr checked that the whole range is inside a mapped region.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
        }
    }

    pub fn phys_read_u64(&self, gpa: u64) -> u64 {
        let mut b = [0u8; 8];
        self.phys_read(gpa, &mut b);
        u64::from_le_bytes(b)
    }

    pub fn phys_read_u32(&self, gpa: u64) -> u32 {
        let mut b = [0u8; 4];
        self.phys_read(gpa, &mut b);
        u32::from_le_bytes(b)
    }
}

/// Page-table entry bits.
const PTE_P: u64 = 1 << 0;
const PTE_W: u64 = 1 << 1;
const PTE_U: u64 = 1 << 2;
const PTE_A: u64 = 1 << 5;
const PTE_D: u64 = 1 << 6;
const PTE_PS: u64 = 1 << 7;
const PTE_G: u64 = 1 << 8;
const PTE_NX: u64 = 1 << 63;
const ADDR_MASK: u64 = ((1u64 << PHYS_BITS) - 1) & PAGE_MASK;

/// #PF error code bits.
const PF_P: u32 = 1 << 0;
const PF_W: u32 = 1 << 1;
const PF_U: u32 = 1 << 2;
const PF_RSVD: u32 = 1 << 3;
const PF_I: u32 = 1 << 4;

/// The result of a successful page walk.
struct Walk {
    phys: u64,
    writable: bool,
    user: bool,
    exec: bool,
    dirty: bool,
    global: bool,
}

impl Cpu {
    /// Turns a segment-relative offset into a linear address (the segmentation unit).
    ///
    /// In 64-bit mode only FS and GS have a base and the address must be canonical. Outside
    /// it, segment limits are not checked: Linux and every 32-bit payload we run use flat
    /// segments.
    #[inline]
    pub fn linear(&self, seg: Seg, off: u64) -> R<u64> {
        if self.long64 {
            let lin = if (seg as u8) >= Seg::Fs as u8 {
                off.wrapping_add(self.seg[seg as usize].base)
            } else {
                off
            };
            if !super::seg::canonical(lin) {
                return Err(if seg == Seg::Ss {
                    Exception::ss(0)
                } else {
                    Exception::gp0()
                }
                .into());
            }
            Ok(lin)
        } else if self.cr0 & cr::CR0_PE != 0 {
            Ok(self.seg[seg as usize].base.wrapping_add(off) & 0xffff_ffff)
        } else {
            // Real mode: base + offset, with the A20 line enabled.
            Ok(self.seg[seg as usize].base.wrapping_add(off) & 0x1f_ffff)
        }
    }

    /// Walks the guest page tables for `lin`, setting accessed (and for writes dirty) bits.
    fn walk(&mut self, lin: u64, acc: Access, user: bool) -> Result<Walk, Exception> {
        let nxe = self.efer & cr::EFER_NXE != 0;
        let wp = self.cr0 & cr::CR0_WP != 0;
        let mut err = 0u32;
        if acc == Access::Write {
            err |= PF_W;
        }
        if user {
            err |= PF_U;
        }
        if acc == Access::Exec && nxe {
            err |= PF_I;
        }
        let fault = |cpu: &mut Cpu, code: u32| {
            cpu.cr2 = lin;
            Exception::with_error(Exception::PF, code)
        };

        let (levels, entry_size): (u32, u64) = if self.efer & cr::EFER_LMA != 0 {
            (4, 8)
        } else if self.cr4 & cr::CR4_PAE != 0 {
            (3, 8)
        } else {
            (2, 4)
        };
        let mut table = if levels == 3 {
            self.cr3 & 0xffff_ffe0
        } else {
            self.cr3 & ADDR_MASK
        };
        let mut writable = true;
        let mut user_ok = true;
        let mut exec = true;
        for level in (1..=levels).rev() {
            // Index bits: 9 per level for 8-byte entries (PAE's top level has 2), 10 for 4-byte.
            let (shift, bits) = match (entry_size, level) {
                (4, 2) => (22, 10),
                (4, _) => (12, 10),
                (_, l) => (12 + 9 * (l - 1), if levels == 3 && l == 3 { 2 } else { 9 }),
            };
            let idx = (lin >> shift) & ((1u64 << bits) - 1);
            let pte_addr = table + idx * entry_size;
            let mut pte = if entry_size == 8 {
                self.mem.phys_read_u64(pte_addr)
            } else {
                u64::from(self.mem.phys_read_u32(pte_addr))
            };
            if pte & PTE_P == 0 {
                return Err(fault(self, err));
            }
            // PAE PDPTEs have no R/W, U/S, A or NX bits.
            let pdpte = levels == 3 && level == 3;
            if entry_size == 8 && (pte & ADDR_MASK_RSVD != 0 || (!nxe && pte & PTE_NX != 0)) {
                return Err(fault(self, err | PF_P | PF_RSVD));
            }
            if !pdpte {
                writable &= pte & PTE_W != 0;
                user_ok &= pte & PTE_U != 0;
                if nxe && pte & PTE_NX != 0 {
                    exec = false;
                }
            }
            let large = !pdpte
                && level > 1
                && pte & PTE_PS != 0
                && (level == 2 || (level == 3 && levels == 4))
                && (entry_size == 8 || self.cr4 & cr::CR4_PSE != 0);
            if level == 1 || large {
                // Permission check before any A/D update, as the CPU does.
                let denied = (user && !user_ok)
                    || (acc == Access::Write && !writable && (user || wp))
                    || (acc == Access::Exec && !exec);
                if denied {
                    return Err(fault(self, err | PF_P));
                }
                let mut new = pte | PTE_A;
                if acc == Access::Write {
                    new |= PTE_D;
                }
                if new != pte {
                    self.write_pte(pte_addr, new, entry_size);
                    pte = new;
                }
                let page_size = 1u64 << shift;
                let base = if entry_size == 4 && large {
                    // PSE-36: bits 20:13 of the entry are physical address bits 39:32.
                    (pte & 0xffc0_0000) | ((pte >> 13) & 0xff) << 32
                } else {
                    pte & ADDR_MASK & !(page_size - 1)
                };
                let phys = base | (lin & (page_size - 1) & PAGE_MASK);
                return Ok(Walk {
                    phys,
                    writable,
                    user: user_ok,
                    exec,
                    dirty: pte & PTE_D != 0,
                    global: pte & PTE_G != 0 && self.cr4 & cr::CR4_PGE != 0,
                });
            }
            if !pdpte && pte & PTE_A == 0 {
                self.write_pte(pte_addr, pte | PTE_A, entry_size);
            }
            table = if entry_size == 8 {
                pte & ADDR_MASK
            } else {
                pte & 0xffff_f000
            };
        }
        unreachable!("the walk ends at level 1")
    }

    fn write_pte(&mut self, addr: u64, value: u64, size: u64) {
        if size == 8 {
            self.mem.phys_write(addr, &value.to_le_bytes());
        } else {
            self.mem.phys_write(addr, &(value as u32).to_le_bytes());
        }
    }

    /// Translates a linear address for an access, filling the TLB. Returns the TLB slot.
    fn tlb_fill(&mut self, lin: u64, acc: Access, user: bool) -> Result<usize, Exception> {
        let vpn = lin >> 12;
        let slot = (vpn as usize) & (TLB_SIZE - 1);
        let (phys, read, mut write, exec, global) = if self.paging() {
            let w = self.walk(lin, acc, user)?;
            let wp = self.cr0 & cr::CR0_WP != 0;
            let sup_write = w.writable || !wp;
            let read = 1 | if w.user { 2 } else { 0 };
            let write = if w.dirty {
                (sup_write as u8) | if w.user && w.writable { 2 } else { 0 }
            } else {
                0
            };
            let exec = if w.exec { read } else { 0 };
            (w.phys, read, write, exec, w.global)
        } else {
            (lin & PAGE_MASK, 3, 3, 3, false)
        };
        if self.mem.code_pages.contains(&(phys >> 12)) {
            write = 0;
        }
        let host = self
            .mem
            .host_ptr(phys, PAGE_SIZE)
            .unwrap_or(std::ptr::null_mut());
        self.mem.tlb[slot] = TlbEntry {
            vpn,
            host,
            phys,
            read,
            write,
            exec,
            global,
        };
        Ok(slot)
    }

    /// Translates a linear address to a physical one, checking permissions.
    pub fn translate(&mut self, lin: u64, acc: Access, user: bool) -> Result<u64, Exception> {
        let vpn = lin >> 12;
        let slot = (vpn as usize) & (TLB_SIZE - 1);
        let u = user as u8 + 1;
        let e = &self.mem.tlb[slot];
        let hit = e.vpn == vpn
            && match acc {
                Access::Read => e.read & u != 0,
                Access::Write => e.write & u != 0,
                Access::Exec => e.exec & u != 0,
            };
        if hit {
            return Ok(e.phys | (lin & !PAGE_MASK));
        }
        let slot = self.tlb_fill(lin, acc, user)?;
        Ok(self.mem.tlb[slot].phys | (lin & !PAGE_MASK))
    }

    /// The host pointer for a fast access of `size` bytes at `lin`, if the TLB allows it.
    #[inline(always)]
    pub(super) fn fast(&self, lin: u64, size: usize, acc: Access) -> Option<*mut u8> {
        let vpn = lin >> 12;
        let e = &self.mem.tlb[(vpn as usize) & (TLB_SIZE - 1)];
        let u = (self.cpl == 3) as u8 + 1;
        let ok = match acc {
            Access::Read => e.read,
            Access::Write => e.write,
            Access::Exec => e.exec,
        } & u
            != 0;
        let off = lin & !PAGE_MASK;
        if e.vpn == vpn && ok && off + size as u64 <= PAGE_SIZE && !e.host.is_null() {
            // SAFETY: off + size is within the 4 KiB page the entry maps, which lies inside a
            // guest RAM region (host_ptr checked the whole page).
            Some(unsafe { e.host.add(off as usize) })
        } else {
            None
        }
    }

    /// Reads `size` (1, 2, 4 or 8) bytes at a linear address.
    #[inline]
    pub fn read_lin(&mut self, lin: u64, size: usize, user: bool) -> R<u64> {
        if user == (self.cpl == 3) {
            if let Some(p) = self.fast(lin, size, Access::Read) {
                // SAFETY: `fast` returned a pointer with `size` readable bytes.
                return Ok(unsafe { read_host(p, size) });
            }
        }
        let mut b = [0u8; 8];
        self.access_slow(lin, &mut b[..size], Access::Read, user)?;
        Ok(u64::from_le_bytes(b))
    }

    /// Writes `size` (1, 2, 4 or 8) bytes at a linear address.
    #[inline]
    pub fn write_lin(&mut self, lin: u64, size: usize, value: u64, user: bool) -> R {
        if user == (self.cpl == 3) {
            if let Some(p) = self.fast(lin, size, Access::Write) {
                // SAFETY: `fast` returned a pointer with `size` writable bytes.
                unsafe { write_host(p, size, value) };
                return Ok(());
            }
        }
        let mut b = value.to_le_bytes();
        self.access_slow(lin, &mut b[..size], Access::Write, user)
    }

    /// Reads from a segment:offset with the current privilege.
    #[inline]
    pub fn read(&mut self, seg: Seg, off: u64, size: usize) -> R<u64> {
        let lin = self.linear(seg, off)?;
        self.read_lin(lin, size, self.cpl == 3)
    }

    /// Writes to a segment:offset with the current privilege.
    #[inline]
    pub fn write(&mut self, seg: Seg, off: u64, size: usize, value: u64) -> R {
        let lin = self.linear(seg, off)?;
        self.write_lin(lin, size, value, self.cpl == 3)
    }

    /// Reads any number of bytes (vectors, FXSAVE areas, descriptors).
    #[inline]
    pub fn read_bytes(&mut self, seg: Seg, off: u64, buf: &mut [u8]) -> R {
        let lin = self.linear(seg, off)?;
        if let Some(p) = self.fast(lin, buf.len(), Access::Read) {
            // SAFETY: `fast` returned a pointer with `buf.len()` readable bytes.
            unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
            return Ok(());
        }
        self.access_slow(lin, buf, Access::Read, self.cpl == 3)
    }

    /// Writes any number of bytes; nothing is written unless every page is writable.
    #[inline]
    pub fn write_bytes(&mut self, seg: Seg, off: u64, buf: &[u8]) -> R {
        let lin = self.linear(seg, off)?;
        if let Some(p) = self.fast(lin, buf.len(), Access::Write) {
            // SAFETY: `fast` returned a pointer with `buf.len()` writable bytes.
            unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
            return Ok(());
        }
        let mut small = [0u8; 64];
        if buf.len() <= small.len() {
            let b = &mut small[..buf.len()];
            b.copy_from_slice(buf);
            return self.access_slow(lin, b, Access::Write, self.cpl == 3);
        }
        let mut b = buf.to_vec();
        self.access_slow(lin, &mut b, Access::Write, self.cpl == 3)
    }

    /// Reads for an implicit supervisor access (descriptor tables, the TSS, the IDT).
    pub fn read_sys(&mut self, lin: u64, size: usize) -> R<u64> {
        self.read_lin(lin, size, false)
    }

    pub fn write_sys(&mut self, lin: u64, size: usize, value: u64) -> R {
        self.write_lin(lin, size, value, false)
    }

    /// Reads instruction bytes at a linear address: as many as fit in the page, up to `buf`.
    pub fn fetch(&mut self, lin: u64, buf: &mut [u8]) -> Result<(u64, usize), Exception> {
        let user = self.cpl == 3;
        let phys = self.translate(lin, Access::Exec, user)?;
        let n = buf.len().min((PAGE_SIZE - (lin & !PAGE_MASK)) as usize);
        match self.mem.host_ptr(phys, n as u64) {
            // SAFETY: host_ptr checked the range.
            Some(p) => unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), n) },
            // Executing from MMIO: we do not support it; the bytes read as 0xff (#UD soon).
            None => buf[..n].fill(0xff),
        }
        Ok((phys, n))
    }

    /// The general access path: page splits, TLB misses, dirty-bit updates, writes to pages
    /// holding code, and MMIO. For writes, every page is translated before any byte changes.
    pub fn access_slow(&mut self, lin: u64, buf: &mut [u8], acc: Access, user: bool) -> R {
        let mut pieces: [(u64, usize, usize); 2] = [(0, 0, 0); 2];
        let mut n = 0;
        let mut done = 0;
        while done < buf.len() {
            let a = lin.wrapping_add(done as u64);
            let len = (buf.len() - done).min((PAGE_SIZE - (a & !PAGE_MASK)) as usize);
            let phys = self.translate(a, acc, user)?;
            if n < 2 {
                pieces[n] = (phys, done, len);
                n += 1;
            } else {
                // Large accesses (FXSAVE, descriptors) are done piece by piece.
                self.phys_access(phys, &mut buf[done..done + len], acc)?;
            }
            done += len;
        }
        for &(phys, start, len) in &pieces[..n] {
            self.phys_access(phys, &mut buf[start..start + len], acc)?;
        }
        Ok(())
    }

    /// Accesses guest-physical memory: RAM, then the platform devices, then the VMM.
    pub fn phys_access(&mut self, phys: u64, buf: &mut [u8], acc: Access) -> R {
        if let Some(p) = self.mem.host_ptr(phys, buf.len() as u64) {
            if acc == Access::Write {
                self.mem.note_write(phys, buf.len() as u64);
                if !self.mem.dirty_code.is_empty() {
                    self.end_block = true;
                }
                // SAFETY: host_ptr checked the range.
                unsafe { std::ptr::copy_nonoverlapping(buf.as_ptr(), p, buf.len()) };
            } else {
                // SAFETY: host_ptr checked the range.
                unsafe { std::ptr::copy_nonoverlapping(p, buf.as_mut_ptr(), buf.len()) };
            }
            return Ok(());
        }
        if acc == Access::Write {
            self.mmio_write(phys, buf)
        } else {
            self.mmio_read(phys, buf)
        }
    }
}

/// Reserved physical-address bits in 8-byte entries (above PHYS_BITS, below bit 52).
const ADDR_MASK_RSVD: u64 = ((1u64 << 52) - 1) & !((1u64 << PHYS_BITS) - 1);

/// Reads `size` bytes little-endian from a host pointer.
///
/// # Safety
/// `p` must point to `size` readable bytes.
#[inline(always)]
pub unsafe fn read_host(p: *const u8, size: usize) -> u64 {
    // SAFETY: the caller guarantees `size` readable bytes; unaligned reads are allowed.
    unsafe {
        match size {
            1 => u64::from(*p),
            2 => u64::from((p as *const u16).read_unaligned()),
            4 => u64::from((p as *const u32).read_unaligned()),
            _ => (p as *const u64).read_unaligned(),
        }
    }
}

/// Writes the low `size` bytes of `v` little-endian to a host pointer.
///
/// # Safety
/// `p` must point to `size` writable bytes.
#[inline(always)]
pub unsafe fn write_host(p: *mut u8, size: usize, v: u64) {
    // SAFETY: the caller guarantees `size` writable bytes; unaligned writes are allowed.
    unsafe {
        match size {
            1 => *p = v as u8,
            2 => (p as *mut u16).write_unaligned(v as u16),
            4 => (p as *mut u32).write_unaligned(v as u32),
            _ => (p as *mut u64).write_unaligned(v),
        }
    }
}
