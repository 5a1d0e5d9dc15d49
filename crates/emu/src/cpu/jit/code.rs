//! Executable memory for translated blocks.
//!
//! One mmap'd region per CPU, filled by bumping a pointer. Translations are never freed one by
//! one: when the region is full it is emptied whole and its epoch advances, and every
//! translation made in an earlier epoch is then stale (blocks check the epoch before entering
//! their code). That is what QEMU's TCG does with its translation buffer; it bounds the memory
//! and needs no allocator. A block dropped from the cache (its page was written) simply forgets
//! its entry point. The region is writable only while code is copied in (W^X).

use std::ptr::NonNull;

/// Bytes of generated code a CPU may hold before the region is emptied.
pub const REGION_SIZE: usize = 16 << 20;

pub struct CodeRegion {
    base: NonNull<u8>,
    size: usize,
    used: usize,
    /// Advances each time the region is emptied.
    epoch: u64,
}

// SAFETY: the region is private memory owned by one CPU; moving the CPU to another thread
// moves the region with it.
unsafe impl Send for CodeRegion {}

impl CodeRegion {
    pub fn new(size: usize) -> Option<CodeRegion> {
        // SAFETY: an anonymous private mapping at an address the kernel picks touches no
        // existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_EXEC,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return None;
        }
        Some(CodeRegion {
            base: NonNull::new(p as *mut u8)?,
            size,
            used: 0,
            epoch: 0,
        })
    }

    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Copies `code` in and returns its address, or `None` if it does not fit (the caller
    /// then empties the region with `reset` and tries again).
    pub fn install(&mut self, code: &[u8]) -> Option<*const u8> {
        // 16-byte aligned entry points, and whole pages for mprotect.
        let start = self.used.next_multiple_of(16);
        let end = start.checked_add(code.len())?;
        if end > self.size {
            return None;
        }
        let page = 4096;
        let lo = start / page * page;
        let hi = end.next_multiple_of(page).min(self.size);
        // SAFETY: lo..hi lies inside the mapping, whose pages hold only generated code; none of
        // it runs while we write (one CPU, one thread), and it is made executable again before
        // the address is returned. Writes go to bytes past `used`, never to live code.
        unsafe {
            let p = self.base.as_ptr().add(lo) as *mut libc::c_void;
            if libc::mprotect(p, hi - lo, libc::PROT_READ | libc::PROT_WRITE) != 0 {
                return None;
            }
            std::ptr::copy_nonoverlapping(code.as_ptr(), self.base.as_ptr().add(start), code.len());
            if libc::mprotect(p, hi - lo, libc::PROT_READ | libc::PROT_EXEC) != 0 {
                // Not executable: unusable, and the bytes stay unreachable.
                return None;
            }
        }
        self.used = end;
        // SAFETY: start < size.
        Some(unsafe { self.base.as_ptr().add(start) } as *const u8)
    }

    /// Empties the region: every translation handed out before is stale.
    pub fn reset(&mut self) {
        self.used = 0;
        self.epoch += 1;
    }
}

impl Drop for CodeRegion {
    fn drop(&mut self) {
        // SAFETY: the mapping was made in `new` with this size and nothing refers to it once
        // the owning CPU (and its blocks) are gone.
        unsafe {
            libc::munmap(self.base.as_ptr() as *mut libc::c_void, self.size);
        }
    }
}
