//! Giving guest pages back to the host: the guest-physical range is looked up in guest RAM,
//! split at region boundaries, trimmed to whole host pages, and dropped with `madvise`.
//!
//! Guest RAM is normally a shared mapping of a memfd (the VMM's `memory::create`). For shmem,
//! `MADV_DONTNEED` only unmaps the pages from this process: the memfd keeps them, and the host
//! gets nothing back. `MADV_REMOVE` punches a hole in the file, which frees the memory; the
//! next guest access faults in a zero page. A private anonymous mapping (what tests and
//! `GuestMemoryMmap::from_ranges` build) is freed by `MADV_DONTNEED`, with the same zero
//! refault.

use crate::{GuestMemory, GuestWrites};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// What discarding one guest-physical range did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Discarded {
    /// Bytes of guest RAM dropped (now zero, backing freed).
    pub(super) freed: u64,
    /// Bytes of the range that lie outside guest RAM (ignored).
    pub(super) outside: u64,
    /// `madvise` calls that failed (the pages stay as they were).
    pub(super) failures: u64,
}

impl std::ops::AddAssign for Discarded {
    fn add_assign(&mut self, o: Self) {
        self.freed += o.freed;
        self.outside += o.outside;
        self.failures += o.failures;
    }
}

fn host_page_size() -> u64 {
    // SAFETY: sysconf has no memory-safety preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(n)
        .ok()
        .filter(|n| n.is_power_of_two())
        .unwrap_or(4096)
}

/// Discards `[gpa, gpa + len)`: the parts in guest RAM are freed (and reported to `writes`,
/// since they now read as zeros: a software CPU must drop code it decoded from them); the
/// rest is counted as outside. Only whole host pages are dropped: a partial page at either end
/// of a piece keeps its contents (and is neither freed nor outside).
pub(super) fn discard(
    mem: &GuestMemory,
    gpa: u64,
    len: u64,
    writes: &Option<Arc<dyn GuestWrites>>,
) -> Discarded {
    let mut out = Discarded::default();
    // A range that wraps the address space is cut at its top.
    let end = gpa.saturating_add(len);
    let page = host_page_size();
    let mut cur = gpa;
    while cur < end {
        let Some(region) = mem.find_region(GuestAddress(cur)) else {
            // Skip the hole up to the next region (or the end) in one step, so a hostile
            // range spanning terabytes of nothing costs one iteration per region.
            let next = mem
                .iter()
                .map(|r| r.start_addr().0)
                .filter(|&s| s > cur)
                .min()
                .unwrap_or(end)
                .min(end);
            out.outside += next - cur;
            cur = next;
            continue;
        };
        let start = region.start_addr().0;
        let region_end = start.saturating_add(region.len());
        let piece_end = end.min(region_end);
        out += discard_in_region(region, cur - start, piece_end - cur, page, cur, writes);
        cur = piece_end;
    }
    out
}

/// Discards `len` bytes at offset `off` of `region` (guest address `gpa`), trimmed inward to
/// host pages.
fn discard_in_region(
    region: &vm_memory::GuestRegionMmap<()>,
    off: u64,
    len: u64,
    page: u64,
    gpa: u64,
    writes: &Option<Arc<dyn GuestWrites>>,
) -> Discarded {
    let mut out = Discarded::default();
    let base = region.as_ptr() as u64;
    let (Some(host), Some(host_end)) = (base.checked_add(off), base.checked_add(off + len)) else {
        return out;
    };
    // Trim inward: madvise needs an aligned start, and rounding the length up would drop
    // bytes the guest did not give.
    let first = host.div_ceil(page).saturating_mul(page);
    let last = host_end / page * page;
    if last <= first {
        return out;
    }
    let shared = region.flags() & libc::MAP_SHARED != 0;
    let advice = if shared {
        libc::MADV_REMOVE
    } else {
        libc::MADV_DONTNEED
    };
    let size = last - first;
    // SAFETY: [first, last) lies inside this region's mapping, which `mem` keeps alive for
    // the call; dropping its pages only changes what the guest reads there (zeros), and no
    // Rust reference points into guest memory (vm-memory accesses it through volatile
    // slices), so no host object is invalidated.
    let rc = unsafe { libc::madvise(first as *mut libc::c_void, size as usize, advice) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        // Once: the cause (say, huge pages that 4 KiB balloon pages cannot split) would repeat
        // for every page; the errors counter keeps the count.
        static WARNED: AtomicBool = AtomicBool::new(false);
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                gpa,
                size,
                "virtio-balloon: cannot discard guest memory: {e}"
            );
        } else {
            tracing::debug!(
                gpa,
                size,
                "virtio-balloon: cannot discard guest memory: {e}"
            );
        }
        out.failures += 1;
        return out;
    }
    out.freed = size;
    if let Some(w) = writes {
        w.written(gpa + (first - host), size);
    }
    out
}

/// Turns guest page frame numbers into runs of consecutive frames `(first, count)`, sorted and
/// without duplicates (a driver may list a page twice; Linux lists them in allocation order,
/// so sorting is what finds the runs).
pub(super) fn runs(pfns: &mut Vec<u32>) -> Vec<(u64, u64)> {
    pfns.sort_unstable();
    pfns.dedup();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &p in pfns.iter() {
        let p = u64::from(p);
        match out.last_mut() {
            Some((first, count)) if *first + *count == p => *count += 1,
            _ => out.push((p, 1)),
        }
    }
    out
}
