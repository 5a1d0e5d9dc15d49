//! The image behind the device, whatever its format: requests (exec.rs) are served against
//! a [`Disk`] without knowing whether it is a raw file or a qcow2 image.

use super::file::{open_error, AlignedBuf, DiskFile};
use super::{BlockConfig, BlockError, DiskFormat, DISCARD_SECTOR_ALIGNMENT, SECTOR_SIZE};
use std::io;
use vireo_disk::{DiskImage, OpenError, Qcow2};

pub(crate) enum Disk {
    /// A raw file or block device: O_DIRECT for cache=none, holes for discards.
    Raw(DiskFile),
    /// An image format (qcow2). It goes through the host page cache whatever the cache mode:
    /// its metadata updates are small unaligned writes that O_DIRECT cannot take. FLUSH
    /// still writes the metadata back and fdatasyncs, which is what a guest relies on.
    Image(Box<dyn DiskImage>),
}

impl Disk {
    /// Opens (and locks) the image `cfg` names, in its format.
    pub(crate) fn open(cfg: &BlockConfig) -> Result<Disk, BlockError> {
        match cfg.format {
            DiskFormat::Raw => Ok(Disk::Raw(DiskFile::open(
                &cfg.path,
                cfg.readonly,
                cfg.cache,
            )?)),
            DiskFormat::Qcow2 => {
                let image =
                    Qcow2::open(&cfg.path, cfg.readonly).map_err(|e| image_error(cfg, e))?;
                let size = image.size();
                if !size.is_multiple_of(SECTOR_SIZE) {
                    return Err(BlockError::VirtualSize {
                        path: cfg.path.display().to_string(),
                        size,
                    });
                }
                Ok(Disk::Image(Box::new(image)))
            }
        }
    }

    /// Size in bytes (a multiple of 512).
    pub(crate) fn size(&self) -> u64 {
        match self {
            Disk::Raw(f) => f.size(),
            Disk::Image(i) => i.size(),
        }
    }

    /// What the guest should align discards to, in sectors: a qcow2 image frees whole
    /// clusters only.
    pub(crate) fn discard_alignment(&self) -> u32 {
        match self {
            Disk::Raw(_) => DISCARD_SECTOR_ALIGNMENT,
            Disk::Image(i) => u32::try_from(i.discard_granularity() / SECTOR_SIZE)
                .unwrap_or(u32::MAX)
                .max(DISCARD_SECTOR_ALIGNMENT),
        }
    }

    /// The alignment the host needs for I/O (what the topology tells the guest).
    pub(crate) fn direct_align(&self) -> u64 {
        match self {
            Disk::Raw(f) => f.direct_align(),
            Disk::Image(_) => SECTOR_SIZE,
        }
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            Disk::Raw(f) => f.read_exact_at(buf, offset),
            Disk::Image(i) => i.read_at(buf, offset),
        }
    }

    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        match self {
            Disk::Raw(f) => f.write_all_at(buf, offset),
            Disk::Image(i) => i.write_at(buf, offset),
        }
    }

    pub(crate) fn flush(&self) -> io::Result<()> {
        match self {
            Disk::Raw(f) => f.flush(),
            Disk::Image(i) => i.flush(),
        }
    }

    /// WRITE_ZEROES: the range reads as zeros; `unmap` allows freeing it.
    pub(crate) fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut AlignedBuf,
    ) -> io::Result<()> {
        match self {
            Disk::Raw(f) => f.write_zeroes(offset, len, unmap, scratch),
            Disk::Image(i) => i.write_zeroes(offset, len, unmap),
        }
    }

    /// DISCARD: a raw file punches a hole (so the range reads as zeros); qcow2 frees the
    /// clusters the range covers whole.
    pub(crate) fn discard(
        &self,
        offset: u64,
        len: u64,
        scratch: &mut AlignedBuf,
    ) -> io::Result<()> {
        match self {
            Disk::Raw(f) => f.write_zeroes(offset, len, true, scratch),
            Disk::Image(i) => i.discard(offset, len),
        }
    }
}

/// Turns an error opening a qcow2 image (or one of its backing files) into one that says
/// what to do about it.
fn image_error(cfg: &BlockConfig, e: OpenError) -> BlockError {
    let image = cfg.path.display().to_string();
    match e {
        OpenError::Io { path, source } if source.kind() == io::ErrorKind::NotFound => {
            if path == cfg.path {
                BlockError::Qcow2NotFound { path: image }
            } else {
                BlockError::BackingNotFound {
                    path: image,
                    backing: path.display().to_string(),
                }
            }
        }
        // The image is opened as asked; its backing files read-only.
        OpenError::Io { path, source } => {
            open_error(&path, cfg.readonly || path != cfg.path, source)
        }
        OpenError::Locked { path, readonly } => BlockError::Locked {
            path: path.display().to_string(),
            readonly,
        },
        e => BlockError::Image(e),
    }
}
