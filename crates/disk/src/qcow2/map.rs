//! Guest clusters to host clusters: L1 and L2 entries, the L2 table cache, and writing the
//! tables back in an order that never lets them point at what is not yet on disk.

use super::refcount::encode64;
use super::{corrupt, State};
use std::io;
use std::os::unix::fs::FileExt;

/// L1 and L2 entries: the table or cluster has refcount 1 (writable in place).
pub(super) const COPIED: u64 = 1 << 63;
pub(super) const COMPRESSED: u64 = 1 << 62;
/// Standard cluster descriptors (v3): the cluster reads as zeros.
pub(super) const ZERO: u64 = 1;
/// Bits 9-55: the host offset of an L2 table or of a standard cluster.
pub(super) const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
/// Frees waiting for the tables to be written back; more than this forces a write-back, so
/// that a long run of discards without a flush stays bounded.
const MAX_PENDING_FREES: usize = 4096;

/// What an L2 entry says about its guest cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Mapping {
    /// Read from the backing file (or zeros).
    Unallocated,
    /// Reads as zeros; `prealloc` is a host cluster kept for it.
    Zero { prealloc: Option<u64> },
    /// A standard cluster at this host offset.
    Data(u64),
    /// Deflated data at a byte offset, in `sectors` 512-byte sectors (counting the first).
    Compressed { offset: u64, sectors: u64 },
}

fn decode64(bytes: &[u8]) -> Vec<u64> {
    bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
        .collect()
}

impl State {
    pub(super) fn classify(&self, entry: u64) -> io::Result<Mapping> {
        if entry & COMPRESSED != 0 {
            let shift = self.geo.csize_shift;
            return Ok(Mapping::Compressed {
                offset: entry & ((1u64 << shift) - 1),
                sectors: ((entry >> shift) & self.geo.csize_mask) + 1,
            });
        }
        let offset = entry & OFFSET_MASK;
        if !offset.is_multiple_of(self.geo.cluster_size) {
            return Err(corrupt(format!("a cluster at {offset:#x} is not aligned")));
        }
        let host = (offset != 0).then_some(offset);
        Ok(match (entry & ZERO != 0, host) {
            (true, prealloc) => Mapping::Zero { prealloc },
            (false, Some(h)) => Mapping::Data(h),
            (false, None) => Mapping::Unallocated,
        })
    }

    /// Splits a guest cluster index into L1 and L2 indexes.
    fn indexes(&self, guest_cluster: u64) -> io::Result<(usize, usize)> {
        let l1i = guest_cluster / self.geo.l2_entries;
        if l1i >= self.geo.l1_entries {
            return Err(corrupt("guest cluster beyond the L1 table"));
        }
        Ok((l1i as usize, (guest_cluster % self.geo.l2_entries) as usize))
    }

    /// The L2 table behind L1 entry `l1i`, checked; 0 if none.
    fn l2_offset(&self, l1i: usize) -> io::Result<u64> {
        let entry = self.l1.get(l1i).copied().unwrap_or(0);
        let off = entry & OFFSET_MASK;
        if off == 0 {
            return Ok(0);
        }
        let cs = self.geo.cluster_size;
        if !off.is_multiple_of(cs)
            || off.checked_add(cs).is_none_or(|e| e > self.file_end())
            || self.overlaps_reserved(off, cs)
        {
            return Err(corrupt(format!("L2 table {l1i} at {off:#x} is misplaced")));
        }
        Ok(off)
    }

    /// Makes room for one more table in the L2 cache, writing back metadata first if the
    /// table to evict is dirty.
    fn make_room(&mut self) -> io::Result<()> {
        if let Some((victim, dirty)) = self.l2_cache.victim() {
            if dirty {
                self.sync_metadata()?;
            }
            self.l2_cache.remove(victim);
        }
        Ok(())
    }

    fn load_l2(&mut self, off: u64) -> io::Result<()> {
        if self.l2_cache.contains(off) {
            return Ok(());
        }
        let mut bytes = vec![0u8; self.geo.cluster_size as usize];
        self.file.read_exact_at(&mut bytes, off)?;
        self.make_room()?;
        self.l2_cache.insert(off, decode64(&bytes), None);
        Ok(())
    }

    fn cached_entry(&mut self, off: u64, l2i: usize) -> io::Result<u64> {
        self.l2_cache
            .get(off)
            .and_then(|s| s.data.get(l2i).copied())
            .ok_or_else(|| io::Error::other("qcow2: L2 cache lost a table"))
    }

    /// The L2 entry of a guest cluster (0 if its L2 table is not allocated).
    pub(super) fn lookup(&mut self, guest_cluster: u64) -> io::Result<u64> {
        let (l1i, l2i) = self.indexes(guest_cluster)?;
        let off = self.l2_offset(l1i)?;
        if off == 0 {
            return Ok(0);
        }
        self.load_l2(off)?;
        self.cached_entry(off, l2i)
    }

    /// Sets the L2 entry of a guest cluster, in the cache (written back by
    /// [`Self::sync_metadata`]).
    pub(super) fn set_entry(&mut self, guest_cluster: u64, value: u64) -> io::Result<()> {
        let (l1i, l2i) = self.indexes(guest_cluster)?;
        let off = self.l2_for_write(l1i)?;
        let slot = self
            .l2_cache
            .get(off)
            .ok_or_else(|| io::Error::other("qcow2: L2 cache lost a table"))?;
        let entry = slot
            .data
            .get_mut(l2i)
            .ok_or_else(|| io::Error::other("qcow2: L2 index out of range"))?;
        *entry = value;
        slot.touch(l2i);
        Ok(())
    }

    /// The L2 table for L1 entry `l1i`, ready to be changed: allocated if there is none, and
    /// copied if a snapshot shares it (its refcount is not 1).
    fn l2_for_write(&mut self, l1i: usize) -> io::Result<u64> {
        let off = self.l2_offset(l1i)?;
        let bits = self.geo.cluster_bits;
        if off != 0 {
            match self.refcount(off >> bits)? {
                0 => return Err(corrupt(format!("L2 table at {off:#x} has refcount 0"))),
                1 => {
                    self.load_l2(off)?;
                    self.mark_l1(l1i, off | COPIED);
                    return Ok(off);
                }
                _ => {}
            }
        }
        let data = if off == 0 {
            vec![0; self.geo.l2_entries as usize]
        } else {
            self.load_l2(off)?;
            self.l2_cache
                .get(off)
                .map(|s| s.data.clone())
                .ok_or_else(|| io::Error::other("qcow2: L2 cache lost a table"))?
        };
        let new = self.alloc_cluster()?;
        self.make_room()?;
        let len = data.len();
        self.l2_cache.insert(new, data, Some((0, len)));
        self.mark_l1(l1i, new | COPIED);
        if off != 0 {
            self.pending_free.push((off, self.geo.cluster_size));
        }
        Ok(new)
    }

    fn mark_l1(&mut self, l1i: usize, value: u64) {
        if let Some(e) = self.l1.get_mut(l1i) {
            if *e != value {
                *e = value;
                self.l1_dirty.insert(l1i);
            }
        }
    }

    /// Writes dirty metadata back: after an fdatasync (data and refcounts first), the L2
    /// tables; after another, the L1 entries pointing at them; after a third, the frees of
    /// the clusters they no longer reference.
    pub(super) fn sync_metadata(&mut self) -> io::Result<()> {
        let tables = self.l2_cache.dirty();
        let l1 = !self.l1_dirty.is_empty();
        if !tables.is_empty() || l1 {
            self.file.sync_data()?;
        }
        for &off in &tables {
            let Some(slot) = self.l2_cache.get(off) else {
                continue;
            };
            let Some((lo, hi)) = slot.dirty else {
                continue;
            };
            let bytes = encode64(slot.data.get(lo..hi).unwrap_or_default());
            let at = off + 8 * lo as u64;
            self.check_write(at, bytes.len() as u64)?;
            self.file.write_all_at(&bytes, at)?;
            if let Some(slot) = self.l2_cache.get(off) {
                slot.dirty = None;
            }
        }
        if l1 {
            if !tables.is_empty() {
                self.file.sync_data()?;
            }
            while let Some(&i) = self.l1_dirty.first() {
                let entry = self.l1.get(i).copied().unwrap_or(0);
                self.file
                    .write_all_at(&entry.to_be_bytes(), self.l1_offset + 8 * i as u64)?;
                self.l1_dirty.remove(&i);
            }
        }
        if self.pending_free.is_empty() {
            return Ok(());
        }
        self.file.sync_data()?;
        let mut result = Ok(());
        for (off, len) in std::mem::take(&mut self.pending_free) {
            // Keep going: a failure leaks the rest's clusters at worst.
            if let Err(e) = self.release(off, len) {
                tracing::warn!("qcow2: freeing clusters: {e}");
                result = Err(e);
            }
        }
        result
    }

    /// Writes metadata back if too many frees are waiting.
    pub(super) fn bound_pending(&mut self) -> io::Result<()> {
        if self.pending_free.len() > MAX_PENDING_FREES {
            self.sync_metadata()?;
        }
        Ok(())
    }
}
