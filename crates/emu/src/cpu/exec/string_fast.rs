//! Fast paths of REP MOVS and REP STOS (forward direction) on RAM: one call does the whole
//! elements that fit in the current source and destination pages with a host copy or fill.
//! Anything unusual (an element across a page, MMIO, a fault, an index wrap, an overlap whose
//! element-wise forward copy differs from `memmove`) returns 0 and the slow path does the next
//! element, raising the fault if there is one.

use super::{Str, RDI, RSI};
use crate::cpu::mem::{Access, PAGE_SIZE};
use crate::cpu::operand::size_mask;
use crate::cpu::{Cpu, Seg};

/// Bytes (whole elements) that can be done from index `idx` at linear `lin` without crossing
/// a page or wrapping the index register.
#[inline]
fn room(st: &Str, idx: u64, lin: u64) -> u64 {
    let page = PAGE_SIZE - (lin & (PAGE_SIZE - 1));
    let wrap = (size_mask(st.asz) - idx).saturating_add(1);
    page.min(wrap)
}

/// Translates `len` bytes at `lin` (within one page) to a host pointer, if they are RAM.
#[inline]
fn host(cpu: &mut Cpu, lin: u64, len: u64, acc: Access) -> Option<(u64, *mut u8)> {
    let user = cpu.cpl == 3;
    let phys = cpu.translate(lin, acc, user).ok()?;
    let p = cpu.mem.host_ptr(phys, len)?;
    Some((phys, p))
}

/// Records a fast write for the decoded-code tracking.
#[inline]
fn wrote(cpu: &mut Cpu, phys: u64, len: u64) {
    cpu.mem.note_write(phys, len);
    if !cpu.mem.dirty_code.is_empty() {
        cpu.end_block = true;
    }
}

pub(super) fn movs(cpu: &mut Cpu, st: &Str, count: u64) -> u64 {
    let size = st.size as u64;
    let s = st.get(cpu, RSI);
    let d = st.get(cpu, RDI);
    let (Ok(ls), Ok(ld)) = (cpu.linear(st.src, s), cpu.linear(Seg::Es, d)) else {
        return 0;
    };
    let bytes = count
        .saturating_mul(size)
        .min(room(st, s, ls))
        .min(room(st, d, ld));
    let n = bytes / size;
    if n == 0 {
        return 0;
    }
    let mut bytes = n * size;
    let Some((_, hs)) = host(cpu, ls, bytes, Access::Read) else {
        return 0;
    };
    let Some((pd, hd)) = host(cpu, ld, bytes, Access::Write) else {
        return 0;
    };
    // A forward element-wise copy equals memmove unless the destination starts inside the
    // source after its start: then it replicates the data. Copying only up to the start of
    // the destination keeps this chunk free of overlap; the next chunk reads what it wrote.
    let (a, b) = (hs as u64, hd as u64);
    if b > a && b - a < bytes {
        bytes = (b - a) / size * size;
        if bytes == 0 {
            return 0;
        }
    }
    let n = bytes / size;
    wrote(cpu, pd, bytes);
    // SAFETY: both ranges were checked by host_ptr to lie inside mapped guest RAM; `copy`
    // allows them to overlap.
    unsafe { std::ptr::copy(hs, hd, bytes as usize) };
    st.set(cpu, RSI, s.wrapping_add(bytes));
    st.set(cpu, RDI, d.wrapping_add(bytes));
    n
}

pub(super) fn stos(cpu: &mut Cpu, st: &Str, count: u64) -> u64 {
    let size = st.size as u64;
    let d = st.get(cpu, RDI);
    let Ok(ld) = cpu.linear(Seg::Es, d) else {
        return 0;
    };
    let bytes = count.saturating_mul(size).min(room(st, d, ld));
    let n = bytes / size;
    if n == 0 {
        return 0;
    }
    let bytes = n * size;
    let Some((pd, hd)) = host(cpu, ld, bytes, Access::Write) else {
        return 0;
    };
    wrote(cpu, pd, bytes);
    let v = cpu.gpr[0] & size_mask(st.size);
    let b = v as u8;
    let uniform = (0..st.size).all(|i| (v >> (8 * i)) as u8 == b);
    if uniform {
        // SAFETY: host_ptr checked that `bytes` bytes at `hd` are mapped guest RAM.
        unsafe { std::ptr::write_bytes(hd, b, bytes as usize) };
    } else {
        let pattern = v.to_le_bytes();
        for i in 0..n as usize {
            // SAFETY: element i lies inside the `bytes` checked by host_ptr.
            unsafe {
                std::ptr::copy_nonoverlapping(pattern.as_ptr(), hd.add(i * st.size), st.size)
            };
        }
    }
    st.set(cpu, RDI, d.wrapping_add(bytes));
    n
}
