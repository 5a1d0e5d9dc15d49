//! What every serving path (NBD, vhost-user-blk, import/export) needs from a volume: a block
//! device read and written by byte offset.
//!
//! Offsets and lengths come from clients and guests: implementations check them
//! (`offset + len <= size()`, without overflow) and answer `InvalidInput` otherwise. Errors
//! map onto protocol errors by kind: `InvalidInput` → EINVAL, `PermissionDenied` → EPERM
//! (read-only), `StorageFull` → ENOSPC, anything else → EIO.

use std::io;

/// One run of a [`BlockDevice::block_status`] answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub len: u64,
    /// No space is allocated behind these bytes (a thin volume's unwritten blocks).
    pub hole: bool,
    /// These bytes read as zeros.
    pub zero: bool,
}

pub trait BlockDevice: Send + Sync {
    /// The size in bytes.
    fn size(&self) -> u64;
    /// The block size of the volume: writes aligned to it are the fastest, and discards free
    /// space only in whole blocks.
    fn block_size(&self) -> u32;
    fn read_only(&self) -> bool;
    /// Fills `buf` with the bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `data` at `offset`; with `fua` it is durable when this returns.
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()>;
    /// Makes every completed write durable.
    fn flush(&self) -> io::Result<()>;
    /// Frees the space behind the range: it reads as zeros afterwards.
    fn trim(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes the range read as zeros; `may_unmap` allows freeing its space.
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool, fua: bool) -> io::Result<()>;
    /// Describes the allocation of the range, from `offset`, in runs that cover at least one
    /// byte and at most `len` bytes in total.
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>>;
}

pub use vireo_disk::check_range;
