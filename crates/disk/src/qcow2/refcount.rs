//! Reference counts: reading and setting them (allocating refcount blocks and growing the
//! refcount table when needed), and allocating clusters.
//!
//! Refcount updates are written through at once. New refcount blocks and a new refcount
//! table are made durable (fdatasync) before anything points at them: they are rare, and
//! a table entry pointing at a block that never reached the disk would lose refcounts.

use super::{corrupt, header, State};
use std::io;
use std::os::unix::fs::FileExt;

/// Refcount table entries hold bits 9-63 of the block's offset.
const RT_OFFSET_MASK: u64 = !0x1ff;
/// Deepest nesting of refcount updates (a block whose own refcount needs a block, inside a
/// table growth...): a handful in practice; more means the structures loop.
const MAX_DEPTH: u32 = 8;

pub(super) fn encode16(v: &[u16]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

pub(super) fn encode64(v: &[u64]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_be_bytes()).collect()
}

impl State {
    /// The byte length of the file as far as we allocated it.
    pub(super) fn file_end(&self) -> u64 {
        self.end.saturating_mul(self.geo.cluster_size)
    }

    /// Byte ranges that are never allocated nor overwritten as data or tables: the header
    /// cluster, the L1 table and the refcount table.
    fn reserved(&self) -> [(u64, u64); 3] {
        let cs = self.geo.cluster_size;
        [
            (0, cs),
            (self.l1_offset, self.l1_bytes),
            (
                self.refcount_table_offset,
                self.refcount_table_clusters * cs,
            ),
        ]
    }

    pub(super) fn overlaps_reserved(&self, offset: u64, len: u64) -> bool {
        let end = offset.saturating_add(len);
        self.reserved()
            .iter()
            .any(|&(o, l)| l > 0 && offset < o.saturating_add(l) && o < end)
    }

    fn reserved_cluster(&self, cluster: u64) -> bool {
        let cs = self.geo.cluster_size;
        self.overlaps_reserved(cluster.saturating_mul(cs), cs)
    }

    /// Refuses a write (data, an L2 table, a refcount) that would land on the header, the L1
    /// or the refcount table: only a corrupt image asks for one.
    pub(super) fn check_write(&self, offset: u64, len: u64) -> io::Result<()> {
        if self.overlaps_reserved(offset, len) {
            return Err(corrupt(format!(
                "a write at {offset:#x} would overwrite the header, L1 or refcount table"
            )));
        }
        Ok(())
    }

    /// The refcount block for refcount table index `ti`, if one is allocated.
    fn block_offset(&self, ti: u64) -> io::Result<Option<u64>> {
        let entry = usize::try_from(ti)
            .ok()
            .and_then(|i| self.refcount_table.get(i))
            .copied()
            .unwrap_or(0);
        let off = entry & RT_OFFSET_MASK;
        if off == 0 {
            return Ok(None);
        }
        let cs = self.geo.cluster_size;
        if !off.is_multiple_of(cs)
            || off.checked_add(cs).is_none_or(|e| e > self.file_end())
            || self.overlaps_reserved(off, cs)
        {
            return Err(corrupt(format!(
                "refcount block {ti} at {off:#x} is misplaced"
            )));
        }
        Ok(Some(off))
    }

    /// The refcount block at `off`, through the cache.
    fn block(&mut self, off: u64) -> io::Result<&mut Vec<u16>> {
        if !self.refcount_cache.contains(off) {
            let mut bytes = vec![0u8; self.geo.cluster_size as usize];
            self.file.read_exact_at(&mut bytes, off)?;
            let data = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            // Refcount blocks are written through: evicting one loses nothing.
            if let Some((victim, _)) = self.refcount_cache.victim() {
                self.refcount_cache.remove(victim);
            }
            self.refcount_cache.insert(off, data, None);
        }
        self.refcount_cache
            .get(off)
            .map(|s| &mut s.data)
            .ok_or_else(|| io::Error::other("qcow2: refcount cache lost a block"))
    }

    pub(super) fn refcount(&mut self, cluster: u64) -> io::Result<u16> {
        let e = self.geo.refcount_entries;
        let Some(block) = self.block_offset(cluster / e)? else {
            return Ok(0);
        };
        let idx = (cluster % e) as usize;
        Ok(self.block(block)?.get(idx).copied().unwrap_or(0))
    }

    pub(super) fn set_refcount(&mut self, cluster: u64, value: u16) -> io::Result<()> {
        self.set_refcount_at(cluster, value, 0)
    }

    fn set_refcount_at(&mut self, cluster: u64, value: u16, depth: u32) -> io::Result<()> {
        if depth > MAX_DEPTH {
            return Err(corrupt("refcount structures nest too deeply"));
        }
        let e = self.geo.refcount_entries;
        let ti = cluster / e;
        let block = match self.block_offset(ti)? {
            Some(b) => b,
            None if value == 0 => return Ok(()),
            None => {
                if ti >= self.refcount_table.len() as u64 {
                    self.grow_table(ti, depth)?;
                }
                // Growing may have allocated this very block (to count the new table).
                match self.block_offset(ti)? {
                    Some(b) => b,
                    None => self.alloc_block(ti, depth)?,
                }
            }
        };
        let idx = cluster % e;
        self.file
            .write_all_at(&value.to_be_bytes(), block + 2 * idx)?;
        if let Some(slot) = self.block(block)?.get_mut(idx as usize) {
            *slot = value;
        }
        if value == 0 {
            self.free_hint = self.free_hint.min(cluster);
            // A freed cluster may be reused for anything: forget what it held.
            self.l2_cache.remove(cluster << self.geo.cluster_bits);
            self.compressed.clear();
        }
        Ok(())
    }

    /// Allocates the refcount block for table index `ti` at the end of the file. If the block
    /// counts itself, its own refcount goes inside; else in the block that covers it.
    fn alloc_block(&mut self, ti: u64, depth: u32) -> io::Result<u64> {
        let e = self.geo.refcount_entries;
        let n = self.end;
        self.end += 1;
        let off = n << self.geo.cluster_bits;
        let mut data = vec![0u16; e as usize];
        let own = n / e == ti;
        if own {
            if let Some(r) = data.get_mut((n % e) as usize) {
                *r = 1;
            }
        }
        self.file.write_all_at(&encode16(&data), off)?;
        if !own {
            self.set_refcount_at(n, 1, depth + 1)?;
        }
        self.file.sync_data()?;
        let slot = usize::try_from(ti)
            .ok()
            .and_then(|i| self.refcount_table.get_mut(i))
            .ok_or_else(|| io::Error::other("qcow2: refcount table too short"))?;
        *slot = off;
        self.file
            .write_all_at(&off.to_be_bytes(), self.refcount_table_offset + 8 * ti)?;
        if let Some((victim, _)) = self.refcount_cache.victim() {
            self.refcount_cache.remove(victim);
        }
        self.refcount_cache.insert(off, data, None);
        Ok(off)
    }

    /// Moves the refcount table to a larger one at the end of the file that covers index
    /// `ti`: the new table is written, counted and synced before the header points at it,
    /// and the old one is freed after.
    fn grow_table(&mut self, ti: u64, depth: u32) -> io::Result<()> {
        if self.growing {
            return Err(corrupt("the refcount table grew while growing"));
        }
        let cs = self.geo.cluster_size;
        let e = self.geo.refcount_entries;
        let per_cluster = cs / 8;
        let max_clusters = header::MAX_REFTABLE_BYTES / cs;
        let too_large = || {
            io::Error::new(
                io::ErrorKind::StorageFull,
                "qcow2: the refcount table would outgrow 8 MiB; the image cannot grow further",
            )
        };
        let mut entries = (ti.saturating_add(1)).max(self.refcount_table.len() as u64 * 2);
        let mut clusters = 0;
        let mut covered = false;
        for _ in 0..8 {
            clusters = entries.div_ceil(per_cluster);
            if clusters > max_clusters {
                return Err(too_large());
            }
            // The new table must also count itself and the blocks that count it.
            let reach = self.end.saturating_add(clusters + clusters / e + 4);
            let needed = reach.div_ceil(e);
            if clusters * per_cluster >= needed {
                covered = true;
                break;
            }
            entries = needed;
        }
        if !covered {
            return Err(too_large());
        }
        let start = self.end;
        self.end += clusters;
        let (old_offset, old_clusters) = (self.refcount_table_offset, self.refcount_table_clusters);
        self.growing = true;
        let switched = self.switch_table(start, clusters, depth);
        self.growing = false;
        if let Err(e) = switched {
            // Memory now describes a table the header may not point at.
            self.broken = true;
            return Err(e);
        }
        let first = old_offset >> self.geo.cluster_bits;
        for c in first..first + old_clusters {
            let rc = self.refcount(c)?;
            if rc > 0 {
                self.set_refcount_at(c, rc - 1, depth + 1)?;
            }
        }
        Ok(())
    }

    fn switch_table(&mut self, start: u64, clusters: u64, depth: u32) -> io::Result<()> {
        let cs = self.geo.cluster_size;
        let offset = start << self.geo.cluster_bits;
        self.refcount_table.resize((clusters * cs / 8) as usize, 0);
        self.refcount_table_offset = offset;
        self.refcount_table_clusters = clusters;
        self.file
            .write_all_at(&encode64(&self.refcount_table), offset)?;
        for c in start..start + clusters {
            self.set_refcount_at(c, 1, depth + 1)?;
        }
        self.file.sync_data()?;
        let mut fields = [0u8; 12];
        fields[..8].copy_from_slice(&offset.to_be_bytes());
        fields[8..].copy_from_slice(&(clusters as u32).to_be_bytes());
        self.file
            .write_all_at(&fields, header::FIELD_REFCOUNT_TABLE)?;
        self.file.sync_data()
    }

    /// Allocates one cluster (refcount 1): the first free one at or after the hint, else one
    /// at the end of the file. Returns its offset.
    pub(super) fn alloc_cluster(&mut self) -> io::Result<u64> {
        let c = self.find_free()?;
        self.free_hint = c + 1;
        if c >= self.end {
            self.end = c + 1;
        }
        self.set_refcount(c, 1)?;
        Ok(c << self.geo.cluster_bits)
    }

    fn find_free(&mut self) -> io::Result<u64> {
        let e = self.geo.refcount_entries;
        let mut c = self.free_hint.max(1);
        while c < self.end {
            let ti = c / e;
            let block_end = ((ti + 1) * e).min(self.end);
            match self.block_offset(ti)? {
                // No block: every cluster it would count is free.
                None => {
                    while c < block_end && self.reserved_cluster(c) {
                        c += 1;
                    }
                    if c < block_end {
                        return Ok(c);
                    }
                }
                Some(b) => {
                    let mut first = (c - ti * e) as usize;
                    let last = (block_end - ti * e) as usize;
                    loop {
                        let data = self.block(b)?;
                        let pos = data
                            .get(first..last)
                            .and_then(|s| s.iter().position(|&r| r == 0));
                        let Some(p) = pos else { break };
                        let candidate = ti * e + (first + p) as u64;
                        if !self.reserved_cluster(candidate) {
                            return Ok(candidate);
                        }
                        first += p + 1;
                    }
                }
            }
            c = block_end;
        }
        Ok(self.end)
    }

    /// Drops one reference to each cluster that `len` bytes at `offset` touch.
    pub(super) fn release(&mut self, offset: u64, len: u64) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let bits = self.geo.cluster_bits;
        let last = offset.saturating_add(len - 1) >> bits;
        let mut underflow = false;
        for c in offset >> bits..=last {
            match self.refcount(c)? {
                0 => underflow = true,
                rc => self.set_refcount(c, rc - 1)?,
            }
        }
        if underflow {
            return Err(corrupt(format!(
                "freeing {len} bytes at {offset:#x}: a cluster's refcount is already 0"
            )));
        }
        Ok(())
    }
}
