//! Reads, writes, write-zeroes and discards, cluster by cluster. The caller checked that
//! the range lies within the virtual disk.

use super::compress::read_padded;
use super::map::{Mapping, COPIED, OFFSET_MASK, ZERO};
use super::{corrupt, State};
use std::io;
use std::os::unix::fs::FileExt;

/// What a zeroing operation may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Zero {
    /// Free whole clusters; leave partly covered ones alone.
    Discard,
    /// Make the range read as zeros; `unmap` allows freeing clusters.
    Zeroes { unmap: bool },
}

/// Walks `len` bytes at `offset` cluster by cluster: (guest cluster, offset in it, length,
/// position in the range).
fn pieces(offset: u64, len: u64, bits: u32) -> impl Iterator<Item = (u64, u64, u64, u64)> {
    let cs = 1u64 << bits;
    let mut pos = 0u64;
    std::iter::from_fn(move || {
        if pos >= len {
            return None;
        }
        let at = offset + pos;
        let within = at & (cs - 1);
        let n = (cs - within).min(len - pos);
        let piece = (at >> bits, within, n, pos);
        pos += n;
        Some(piece)
    })
}

impl State {
    pub(super) fn read(&mut self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bits = self.geo.cluster_bits;
        for (g, within, n, pos) in pieces(offset, buf.len() as u64, bits) {
            let Some(out) = buf.get_mut(pos as usize..(pos + n) as usize) else {
                break;
            };
            let entry = self.lookup(g)?;
            match self.classify(entry)? {
                Mapping::Unallocated => self.read_backing(out, (g << bits) + within)?,
                Mapping::Zero { .. } => out.fill(0),
                Mapping::Data(host) => read_padded(&self.file, out, host + within)?,
                Mapping::Compressed { offset, sectors } => {
                    let data = self.inflate(entry, offset, sectors)?;
                    let src = data
                        .get(within as usize..(within + n) as usize)
                        .ok_or_else(|| io::Error::other("qcow2: compressed cluster too short"))?;
                    out.copy_from_slice(src);
                }
            }
        }
        Ok(())
    }

    /// The backing file's bytes at guest offset `at`: zeros past its end, or without one.
    fn read_backing(&self, out: &mut [u8], at: u64) -> io::Result<()> {
        let Some(backing) = &self.backing else {
            out.fill(0);
            return Ok(());
        };
        let avail = backing.size().saturating_sub(at).min(out.len() as u64) as usize;
        let (head, tail) = out.split_at_mut(avail);
        if !head.is_empty() {
            backing.read_at(head, at)?;
        }
        tail.fill(0);
        Ok(())
    }

    /// Whether guest cluster `g` holds data only in the backing file's range.
    fn backing_covers(&self, g: u64) -> bool {
        let start = g << self.geo.cluster_bits;
        self.backing.as_ref().is_some_and(|b| b.size() > start)
    }

    pub(super) fn write(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        for (g, within, n, pos) in pieces(offset, data.len() as u64, self.geo.cluster_bits) {
            let Some(src) = data.get(pos as usize..(pos + n) as usize) else {
                break;
            };
            self.write_cluster(g, within, src)?;
        }
        self.bound_pending()
    }

    /// The refcount of a host cluster a mapping uses; 0 means the image is corrupt.
    fn used_refcount(&mut self, host: u64) -> io::Result<u16> {
        match self.refcount(host >> self.geo.cluster_bits)? {
            0 => Err(corrupt(format!(
                "cluster at {host:#x} is in use but has refcount 0"
            ))),
            rc => Ok(rc),
        }
    }

    fn write_cluster(&mut self, g: u64, within: u64, src: &[u8]) -> io::Result<()> {
        let entry = self.lookup(g)?;
        let mapping = self.classify(entry)?;
        if let Mapping::Data(host) = mapping {
            if self.used_refcount(host)? == 1 {
                let at = host + within;
                self.check_write(at, src.len() as u64)?;
                self.file.write_all_at(src, at)?;
                if entry & COPIED == 0 {
                    self.set_entry(g, entry | COPIED)?;
                }
                return Ok(());
            }
        }
        let mut buf = std::mem::take(&mut self.scratch);
        buf.resize(self.geo.cluster_size as usize, 0);
        let result = self.copy_on_write(g, within, src, entry, mapping, &mut buf);
        self.scratch = buf;
        result
    }

    /// Writes a whole new cluster for `g`: its old contents (from wherever they come) with
    /// `src` at `within`, into a fresh cluster (or its own preallocated one).
    fn copy_on_write(
        &mut self,
        g: u64,
        within: u64,
        src: &[u8],
        entry: u64,
        mapping: Mapping,
        buf: &mut [u8],
    ) -> io::Result<()> {
        let cs = self.geo.cluster_size;
        let bits = self.geo.cluster_bits;
        let partial = src.len() as u64 != cs;
        // Whether the rest of the cluster is zeros (then it need not be read).
        let zeros_around = match mapping {
            Mapping::Zero { .. } => true,
            Mapping::Unallocated => !self.backing_covers(g),
            _ => false,
        };
        // Old contents are read before allocating, so that a failing read leaks nothing.
        if partial && !zeros_around {
            match mapping {
                Mapping::Unallocated => self.read_backing(buf, g << bits)?,
                Mapping::Data(host) => read_padded(&self.file, buf, host)?,
                Mapping::Compressed { offset, sectors } => {
                    let data = self.inflate(entry, offset, sectors)?;
                    let n = buf.len().min(data.len());
                    buf[..n].copy_from_slice(&data[..n]);
                }
                Mapping::Zero { .. } => buf.fill(0),
            }
        }

        let (target, old) = match mapping {
            Mapping::Zero {
                prealloc: Some(host),
            } if self.used_refcount(host)? == 1 => (host, None),
            Mapping::Zero {
                prealloc: Some(host),
            }
            | Mapping::Data(host) => {
                self.used_refcount(host)?;
                (self.alloc_cluster()?, Some((host, cs)))
            }
            Mapping::Compressed { offset, sectors } => {
                (self.alloc_cluster()?, Some((offset & !511, sectors * 512)))
            }
            Mapping::Unallocated | Mapping::Zero { prealloc: None } => {
                (self.alloc_cluster()?, None)
            }
        };
        self.check_write(target, cs)?;
        // A new cluster past the end of the file already reads as zeros: when that is what
        // the rest of it should hold, only the new data needs writing (a small write into a
        // fresh 2 MiB cluster stays small).
        if zeros_around && old.is_none() && target >= self.file.metadata()?.len() {
            self.file.write_all_at(src, target + within)?;
        } else {
            if partial && zeros_around {
                buf.fill(0);
            }
            buf.get_mut(within as usize..within as usize + src.len())
                .ok_or_else(|| io::Error::other("qcow2: write crosses a cluster"))?
                .copy_from_slice(src);
            self.file.write_all_at(buf, target)?;
        }
        self.set_entry(g, target | COPIED)?;
        self.pending_free.extend(old);
        Ok(())
    }

    pub(super) fn zero(&mut self, offset: u64, len: u64, how: Zero) -> io::Result<()> {
        let cs = self.geo.cluster_size;
        for (g, within, n, _) in pieces(offset, len, self.geo.cluster_bits) {
            if n == cs {
                self.zero_cluster(g, how)?;
            } else if how != Zero::Discard && !self.reads_as_zeros(g)? {
                let zeros = self.take_zeros();
                let result =
                    self.write_cluster(g, within, zeros.get(..n as usize).unwrap_or_default());
                self.zeros = zeros;
                result?;
            }
            self.bound_pending()?;
        }
        Ok(())
    }

    /// A cluster of zeros, to be put back in `self.zeros` after use.
    fn take_zeros(&mut self) -> Vec<u8> {
        let mut zeros = std::mem::take(&mut self.zeros);
        zeros.resize(self.geo.cluster_size as usize, 0);
        zeros
    }

    fn reads_as_zeros(&mut self, g: u64) -> io::Result<bool> {
        let entry = self.lookup(g)?;
        Ok(match self.classify(entry)? {
            Mapping::Zero { .. } => true,
            Mapping::Unallocated => !self.backing_covers(g),
            _ => false,
        })
    }

    /// Makes a whole guest cluster read as zeros (or, for a discard, frees it).
    fn zero_cluster(&mut self, g: u64, how: Zero) -> io::Result<()> {
        let entry = self.lookup(g)?;
        let mapping = self.classify(entry)?;
        let v3 = self.version >= 3;
        let backing = self.backing_covers(g);
        if mapping == Mapping::Unallocated && !backing {
            // Already zeros, and nothing to free: no need for an L2 table to say so.
            return Ok(());
        }
        let in_place = match mapping {
            Mapping::Data(host) => self.used_refcount(host)? == 1,
            _ => false,
        };
        let new = match how {
            // Like QEMU: a discarded cluster of a v2 image shows the backing file again.
            Zero::Discard if v3 && backing => ZERO,
            Zero::Discard => 0,
            // Keep the allocation when asked to: a preallocated zero cluster.
            Zero::Zeroes { unmap: false } if v3 && in_place => entry | ZERO | COPIED,
            Zero::Zeroes { unmap: false } if v3 && matches!(mapping, Mapping::Zero { .. }) => entry,
            Zero::Zeroes { .. } if v3 => ZERO,
            // Version 2 has no zero flag: zeros over a backing file, or in a cluster we must
            // keep, are written.
            Zero::Zeroes { unmap } if backing || (in_place && !unmap) => {
                let zeros = self.take_zeros();
                let result = self.write_cluster(g, 0, &zeros);
                self.zeros = zeros;
                return result;
            }
            Zero::Zeroes { .. } => 0,
        };
        if new == entry {
            return Ok(());
        }
        let kept = new & OFFSET_MASK;
        let old = match mapping {
            Mapping::Data(host)
            | Mapping::Zero {
                prealloc: Some(host),
            } if host != kept => {
                self.used_refcount(host)?;
                Some((host, self.geo.cluster_size))
            }
            Mapping::Compressed { offset, sectors } => Some((offset & !511, sectors * 512)),
            _ => None,
        };
        self.set_entry(g, new)?;
        self.pending_free.extend(old);
        Ok(())
    }
}
