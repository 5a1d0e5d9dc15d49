//! Disk images as a block device sees them (seed 4, storage virtualization): a virtual disk
//! of a fixed size, read and written by byte offset, whatever file format stores it.
//!
//! - [`DiskImage`]: what a device needs from an image.
//! - [`Qcow2`]: QEMU's copy-on-write format (versions 2 and 3), with backing files,
//!   compressed clusters and internal snapshots kept intact.
//! - [`RawImage`]: a plain file, read-only (what raw backing files are opened as).
//!
//! Images are untrusted input: a corrupted or hostile image gives I/O errors, never a panic,
//! an unbounded allocation or an endless loop. Like QEMU, an image is locked while open
//! (`flock`: exclusive when written, shared when only read, as backing files are), so that
//! two VMs cannot write one image at once.

mod open;
pub mod qcow2;
mod raw;

pub use open::{probe, MAX_CHAIN};
pub use qcow2::Qcow2;
pub use raw::RawImage;

use std::io;
use std::path::PathBuf;

/// A virtual disk read and written by byte offset. Offsets and lengths come from the guest:
/// implementations check them (`offset + len <= size()`, without overflow) and answer with
/// `InvalidInput` otherwise.
pub trait DiskImage: Send + Sync {
    /// The virtual size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the disk's bytes at `offset`.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes `buf` at `offset`.
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes every completed write durable (data and the metadata that finds it).
    fn flush(&self) -> io::Result<()>;
    /// Lets the image free the space behind `len` bytes at `offset`. Advisory: what the
    /// range reads afterwards is unspecified (qcow2: zeros, or the backing file's data in a
    /// version 2 image; partly covered clusters keep their data).
    fn discard(&self, offset: u64, len: u64) -> io::Result<()>;
    /// Makes `len` bytes at `offset` read as zeros; `unmap` allows freeing their space.
    fn write_zeroes(&self, offset: u64, len: u64, unmap: bool) -> io::Result<()>;
    /// The unit, in bytes, in which [`DiskImage::discard`] frees space (a qcow2 cluster):
    /// what a device tells the guest to align its discards to.
    fn discard_granularity(&self) -> u64 {
        512
    }
}

/// Why an image could not be opened. Each message names the file and, where there is one,
/// the command that fixes it.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("disk image {}: {source}", path.display())]
    Io { path: PathBuf, source: io::Error },
    #[error("{}", locked_message(path, *readonly))]
    Locked { path: PathBuf, readonly: bool },
    #[error("disk image {} is not a valid qcow2 image: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("disk image {}: {feature} is not supported; {fix}", path.display())]
    Unsupported {
        path: PathBuf,
        feature: String,
        fix: String,
    },
}

impl OpenError {
    /// The file the error is about: the image itself or one of its backing files.
    pub fn path(&self) -> &std::path::Path {
        match self {
            OpenError::Io { path, .. }
            | OpenError::Locked { path, .. }
            | OpenError::Invalid { path, .. }
            | OpenError::Unsupported { path, .. } => path,
        }
    }
}

fn locked_message(path: &std::path::Path, readonly: bool) -> String {
    let path = path.display();
    if readonly {
        format!("disk image {path} is open read-write by another process (it holds the image lock); stop it first")
    } else {
        format!("disk image {path} is in use by another process (it holds the image lock); stop it, or open the image read-only in both")
    }
}

/// A range check shared by the formats (and the storage service's volumes): `len` bytes at
/// `offset` lie within `size`.
pub fn check_range(offset: u64, len: u64, size: u64) -> io::Result<()> {
    match offset.checked_add(len) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{len} bytes at {offset} lie beyond the end of the disk ({size} bytes)"),
        )),
    }
}
