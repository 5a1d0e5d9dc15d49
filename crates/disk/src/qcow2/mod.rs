//! qcow2, QEMU's copy-on-write image format (docs/interop/qcow2.txt in QEMU), versions 2
//! and 3, refcount_bits=16, clusters of 512 bytes to 2 MiB.
//!
//! Guest clusters map through an L1 table (held in memory) and L2 tables (a small LRU cache)
//! to host clusters, whose reference counts live in refcount blocks found through the
//! refcount table (in memory). Writing allocates clusters (reusing freed ones, else at the
//! end of the file) and copies on write whatever is shared (refcount > 1: internal
//! snapshots), compressed or comes from the backing file.
//!
//! Served: internal snapshots (their clusters are kept: anything with a refcount above 1 is
//! copied on write), compressed clusters (zlib; read, and copied out when written), zero
//! clusters, lazy-refcount images that are clean, backing files (raw or qcow2, read-only,
//! chains up to [`crate::MAX_CHAIN`] deep). Refused, with the command that converts or
//! repairs the image: unknown incompatible features, the corrupt bit, the dirty bit (for
//! writing; reading is fine), external data files, extended L2 entries, encryption, zstd
//! compression, refcount widths other than 16 bits. Unknown auto-clear features (persistent
//! bitmaps) are cleared before the first write, as the spec asks: we do not maintain them.
//!
//! Crash consistency: new clusters get their refcount (written through) and their data
//! before anything points at them; L2 tables and L1 entries are updated in memory and
//! written back on flush (or when the cache evicts a table), after an fdatasync, so that
//! they never point at data or refcounts that might not be on disk; the L1 table is written
//! after the L2 tables it points at, with an fdatasync between; and clusters are freed
//! (refcount decremented) only after the tables that referenced them are on disk. A crash at
//! any point leaves at worst leaked clusters (`qemu-img check -r leaks`), and loses only
//! the writes since the last flush, which a guest does not expect to survive.

mod cache;
mod compress;
mod create;
mod header;
mod io;
mod map;
mod refcount;

pub use create::create;
pub use header::MAGIC;

use crate::open::{backing_path, open_backing, open_locked};
use crate::{check_range, DiskImage, OpenError};
use cache::TableCache;
use header::Header;
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// Bytes of L2 tables cached (QEMU's default covers 8 GiB with 64 KiB clusters; this, 32).
const L2_CACHE_BYTES: u64 = 4 << 20;
const REFCOUNT_CACHE_BYTES: u64 = 1 << 20;
const MIN_CACHED_TABLES: u64 = 4;

/// What an image is, as read from its header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Info {
    pub version: u32,
    pub cluster_size: u64,
    pub size: u64,
    /// Where the backing file was found, if the image has one.
    pub backing_file: Option<PathBuf>,
    /// As recorded in the image; `None` means it was probed.
    pub backing_format: Option<String>,
    pub snapshots: u32,
}

/// A qcow2 image. All methods take `&self`: the state is behind a mutex (one queue, one
/// worker thread, so it is uncontended).
pub struct Qcow2 {
    state: Mutex<State>,
    size: u64,
    readonly: bool,
    info: Info,
}

/// Sizes derived from the header.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Geometry {
    pub cluster_bits: u32,
    pub cluster_size: u64,
    pub l2_entries: u64,
    pub refcount_entries: u64,
    pub size: u64,
    /// L1 entries the virtual size needs (the table may be longer).
    pub l1_entries: u64,
    /// Compressed cluster descriptors: the sector count starts at this bit.
    pub csize_shift: u32,
    pub csize_mask: u64,
}

pub(crate) struct State {
    file: File,
    geo: Geometry,
    version: u32,
    l1: Vec<u64>,
    l1_offset: u64,
    /// The whole L1 table's length (it may go beyond what the virtual size needs).
    l1_bytes: u64,
    l1_dirty: BTreeSet<usize>,
    refcount_table: Vec<u64>,
    refcount_table_offset: u64,
    refcount_table_clusters: u64,
    l2_cache: TableCache<u64>,
    refcount_cache: TableCache<u16>,
    /// Host byte ranges whose clusters lose a reference once the tables that referenced them
    /// are on disk.
    pending_free: Vec<(u64, u64)>,
    /// No cluster below this one is free.
    free_hint: u64,
    /// Clusters in the file, counting those allocated but not yet written.
    end: u64,
    backing: Option<Box<dyn DiskImage>>,
    /// A cluster-sized buffer for copy-on-write, and one of zeros; allocated on the first
    /// write (backing files never need them).
    scratch: Vec<u8>,
    zeros: Vec<u8>,
    compressed: compress::Cache,
    /// Set while the refcount table grows: growth must not recurse.
    growing: bool,
    /// Set when a metadata update failed halfway: the in-memory tables may no longer match
    /// the file, so further writes are refused.
    broken: bool,
}

fn invalid(path: &Path, reason: String) -> OpenError {
    OpenError::Invalid {
        path: path.to_path_buf(),
        reason,
    }
}

impl Geometry {
    fn new(h: &Header, path: &Path) -> Result<Geometry, OpenError> {
        let cluster_size = 1u64 << h.cluster_bits;
        let l2_entries = cluster_size / 8;
        let l1_entries = h.size.div_ceil(cluster_size).div_ceil(l2_entries);
        if l1_entries.saturating_mul(8) > header::MAX_L1_BYTES {
            return Err(invalid(
                path,
                format!(
                    "a virtual size of {} bytes needs an L1 table over 32 MiB with {cluster_size}-byte clusters",
                    h.size
                ),
            ));
        }
        let l1_size = u64::from(h.l1_size);
        if l1_size < l1_entries || l1_size * 8 > header::MAX_L1_BYTES {
            return Err(invalid(
                path,
                format!("an L1 table of {l1_size} entries does not fit the virtual size"),
            ));
        }
        Ok(Geometry {
            cluster_bits: h.cluster_bits,
            cluster_size,
            l2_entries,
            refcount_entries: cluster_size / 2,
            size: h.size,
            l1_entries,
            csize_shift: 62 - (h.cluster_bits - 8),
            csize_mask: (1u64 << (h.cluster_bits - 8)) - 1,
        })
    }
}

/// Checks that a table of `len` bytes at `offset` is cluster aligned and inside the file.
fn check_table(
    name: &str,
    offset: u64,
    len: u64,
    geo: &Geometry,
    file_len: u64,
) -> Result<(), String> {
    let end = offset.checked_add(len);
    if offset == 0 || !offset.is_multiple_of(geo.cluster_size) || end.is_none_or(|e| e > file_len) {
        return Err(format!(
            "the {name} ({len} bytes at {offset:#x}) is not cluster aligned inside the file"
        ));
    }
    Ok(())
}

fn read_table(file: &File, offset: u64, entries: u64, path: &Path) -> Result<Vec<u64>, OpenError> {
    let mut bytes = vec![0u8; (entries * 8) as usize];
    file.read_exact_at(&mut bytes, offset)
        .map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_be_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

impl Qcow2 {
    /// Opens the image at `path` (read-write unless `readonly`) and its backing chain
    /// (read-only). The image is locked, exclusively unless `readonly`; backing files get
    /// a shared lock.
    pub fn open(path: &Path, readonly: bool) -> Result<Qcow2, OpenError> {
        Qcow2::open_at_depth(path, readonly, 0)
    }

    pub(crate) fn open_backing(path: &Path, depth: u32) -> Result<Qcow2, OpenError> {
        Qcow2::open_at_depth(path, true, depth)
    }

    fn open_at_depth(path: &Path, readonly: bool, depth: u32) -> Result<Qcow2, OpenError> {
        let (file, file_len) = open_locked(path, readonly)?;
        let h = Header::read(&file, file_len, path)?;
        h.check_features(path, readonly)?;
        let geo = Geometry::new(&h, path)?;
        let cs = geo.cluster_size;

        let l1_offset = h.l1_table_offset;
        if geo.l1_entries > 0 {
            check_table("L1 table", l1_offset, geo.l1_entries * 8, &geo, file_len)
                .map_err(|r| invalid(path, r))?;
        }
        let l1 = read_table(&file, l1_offset, geo.l1_entries, path)?;

        let rt_clusters = u64::from(h.refcount_table_clusters);
        let rt_len = rt_clusters * cs;
        if rt_clusters == 0 || rt_len > header::MAX_REFTABLE_BYTES {
            return Err(invalid(
                path,
                format!("a refcount table of {rt_clusters} clusters is not valid"),
            ));
        }
        let rt_offset = h.refcount_table_offset;
        check_table("refcount table", rt_offset, rt_len, &geo, file_len)
            .map_err(|r| invalid(path, r))?;
        let refcount_table = read_table(&file, rt_offset, rt_len / 8, path)?;

        let backing_file = h.backing_file.as_deref().map(|n| backing_path(path, n));
        let backing = match &backing_file {
            Some(p) => Some(open_backing(p, h.backing_format.as_deref(), depth + 1)?),
            None => None,
        };

        let state = State {
            file,
            geo,
            version: h.version,
            l1,
            l1_offset,
            l1_bytes: u64::from(h.l1_size) * 8,
            l1_dirty: BTreeSet::new(),
            refcount_table,
            refcount_table_offset: rt_offset,
            refcount_table_clusters: rt_clusters,
            l2_cache: TableCache::new((L2_CACHE_BYTES / cs).max(MIN_CACHED_TABLES) as usize),
            refcount_cache: TableCache::new(
                (REFCOUNT_CACHE_BYTES / cs).max(MIN_CACHED_TABLES) as usize
            ),
            pending_free: Vec::new(),
            free_hint: 1,
            end: file_len.div_ceil(cs),
            backing,
            scratch: Vec::new(),
            zeros: Vec::new(),
            compressed: compress::Cache::default(),
            growing: false,
            broken: false,
        };
        if !readonly && h.autoclear != 0 {
            // We keep no auto-clear feature (bitmaps) up to date, so the spec wants their
            // bits cleared before the first write.
            let io = |source| OpenError::Io {
                path: path.to_path_buf(),
                source,
            };
            state
                .file
                .write_all_at(&0u64.to_be_bytes(), header::FIELD_AUTOCLEAR)
                .map_err(io)?;
            state.file.sync_data().map_err(io)?;
        }
        Ok(Qcow2 {
            state: Mutex::new(state),
            size: geo.size,
            readonly,
            info: Info {
                version: h.version,
                cluster_size: cs,
                size: geo.size,
                backing_file,
                backing_format: h.backing_format.clone(),
                snapshots: h.nb_snapshots,
            },
        })
    }

    pub fn info(&self) -> &Info {
        &self.info
    }

    /// Resizes the metadata caches to hold `l2_tables` L2 tables and `refcount_blocks`
    /// refcount blocks (at least one each). By default they hold 4 MiB and 1 MiB of tables.
    pub fn set_cache_size(&self, l2_tables: usize, refcount_blocks: usize) -> std::io::Result<()> {
        let mut state = self.lock()?;
        // Dirty tables are written back first, so dropping the old caches loses nothing.
        state.sync_metadata()?;
        state.l2_cache = TableCache::new(l2_tables);
        state.refcount_cache = TableCache::new(refcount_blocks);
        Ok(())
    }

    fn lock(&self) -> std::io::Result<MutexGuard<'_, State>> {
        self.state
            .lock()
            .map_err(|_| std::io::Error::other("qcow2: the image state was poisoned by a panic"))
    }

    fn writable(&self) -> std::io::Result<MutexGuard<'_, State>> {
        if self.readonly {
            return Err(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                "the qcow2 image is open read-only",
            ));
        }
        let state = self.lock()?;
        if state.broken {
            return Err(corrupt(
                "an earlier metadata update failed halfway; reopen the image after `qemu-img check -r all`",
            ));
        }
        Ok(state)
    }
}

/// The error for an image whose metadata is inconsistent.
pub(crate) fn corrupt(why: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("qcow2 image corrupt: {why}"))
}

impl DiskImage for Qcow2 {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.lock()?.read(buf, offset)
    }

    fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.writable()?.write(buf, offset)
    }

    fn flush(&self) -> std::io::Result<()> {
        if self.readonly {
            return Ok(());
        }
        let mut state = self.lock()?;
        state.sync_metadata()?;
        state.file.sync_data()
    }

    fn discard(&self, offset: u64, len: u64) -> std::io::Result<()> {
        check_range(offset, len, self.size)?;
        self.writable()?.zero(offset, len, io::Zero::Discard)
    }

    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> std::io::Result<()> {
        check_range(offset, len, self.size)?;
        self.writable()?
            .zero(offset, len, io::Zero::Zeroes { unmap })
    }

    fn discard_granularity(&self) -> u64 {
        self.info.cluster_size
    }
}

impl Drop for Qcow2 {
    fn drop(&mut self) {
        if self.readonly {
            return;
        }
        if let Ok(mut state) = self.lock() {
            if state.broken {
                return;
            }
            if let Err(e) = state.sync_metadata().and_then(|()| state.file.sync_data()) {
                tracing::warn!("qcow2: writing back metadata on close failed: {e}");
            }
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
