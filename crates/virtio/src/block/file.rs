//! The raw image behind a disk: opening and locking it, and the I/O primitives the requests
//! need (positioned reads and writes, flush, discard, write zeroes).
//!
//! With `cache=none` the image is opened a second time with O_DIRECT. Direct I/O needs the
//! buffer, offset and length aligned to the host's logical block size; requests go through an
//! aligned bounce buffer, and the rare request that is still unaligned for the host (a
//! 512-byte write on a 4K-sector disk) goes through the buffered descriptor instead of a
//! read-modify-write: the kernel keeps both views of the file coherent, and fdatasync covers both.

use super::{BlockError, CacheMode, SECTOR_SIZE};
use std::fs::{File, OpenOptions, TryLockError};
use std::io::{self, Seek, SeekFrom};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

/// Alignment of bounce buffers: enough for O_DIRECT on any common device.
pub(crate) const BUF_ALIGN: usize = 4096;

/// A zero-filled heap buffer whose start is aligned to [`BUF_ALIGN`], built without unsafe
/// code by over-allocating and starting at the first aligned byte.
pub(crate) struct AlignedBuf {
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(len: usize) -> AlignedBuf {
        let raw = vec![0u8; len + BUF_ALIGN];
        let misalign = raw.as_ptr() as usize % BUF_ALIGN;
        let start = (BUF_ALIGN - misalign) % BUF_ALIGN;
        AlignedBuf { raw, start, len }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // In bounds: start < BUF_ALIGN and raw holds len + BUF_ALIGN bytes.
        &mut self.raw[self.start..self.start + self.len]
    }
}

pub(crate) struct DiskFile {
    /// Buffered descriptor; holds the image lock.
    file: File,
    /// The O_DIRECT descriptor for cache=none.
    direct: Option<File>,
    /// What direct I/O must be aligned to; raised if the host refuses an I/O at 512.
    direct_align: AtomicU64,
    size: u64,
    readonly: bool,
}

fn describe(path: &Path) -> String {
    path.display().to_string()
}

/// Turns an error opening `path` into one that says what to do about it.
pub(crate) fn open_error(path: &Path, readonly: bool, e: io::Error) -> BlockError {
    let path = describe(path);
    match e.kind() {
        io::ErrorKind::NotFound => BlockError::NotFound { path },
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem if !readonly => {
            BlockError::ReadWriteDenied { path, source: e }
        }
        io::ErrorKind::PermissionDenied => BlockError::ReadDenied { path },
        _ => BlockError::Open { path, source: e },
    }
}

fn open(path: &Path, readonly: bool, flags: i32) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(!readonly)
        .custom_flags(flags)
        .open(path)
}

impl DiskFile {
    pub(crate) fn open(
        path: &Path,
        readonly: bool,
        cache: CacheMode,
    ) -> Result<DiskFile, BlockError> {
        // Look before opening: opening a FIFO would block.
        let meta = std::fs::metadata(path).map_err(|e| open_error(path, readonly, e))?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(BlockError::NotAFile {
                path: describe(path),
            });
        }
        let mut file = open(path, readonly, 0).map_err(|e| open_error(path, readonly, e))?;

        // Like QEMU's image locking: a writer excludes everyone, readers exclude writers.
        let locked = if readonly {
            file.try_lock_shared()
        } else {
            file.try_lock()
        };
        match locked {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(BlockError::Locked {
                    path: describe(path),
                    readonly,
                })
            }
            Err(TryLockError::Error(e)) => {
                return Err(BlockError::Open {
                    path: describe(path),
                    source: e,
                })
            }
        }

        // Block devices report a zero length in their metadata; seeking works for both.
        let size = file.seek(SeekFrom::End(0)).map_err(|e| BlockError::Open {
            path: describe(path),
            source: e,
        })?;
        if !size.is_multiple_of(SECTOR_SIZE) {
            return Err(BlockError::Size {
                path: describe(path),
                size,
            });
        }

        let mut disk = DiskFile {
            file,
            direct: None,
            direct_align: AtomicU64::new(SECTOR_SIZE),
            size,
            readonly,
        };
        if cache == CacheMode::None {
            disk.open_direct(path)?;
        }
        Ok(disk)
    }

    fn open_direct(&mut self, path: &Path) -> Result<(), BlockError> {
        let refused = |source| BlockError::DirectIo {
            path: describe(path),
            source,
        };
        let direct = open(path, self.readonly, libc::O_DIRECT).map_err(|e| {
            if e.raw_os_error() == Some(libc::EINVAL) {
                refused(e)
            } else {
                open_error(path, self.readonly, e)
            }
        })?;
        // Find the alignment the host needs by reading the first sector, then a first page.
        let mut buf = AlignedBuf::new(BUF_ALIGN);
        let mut last = None;
        for align in [SECTOR_SIZE, BUF_ALIGN as u64] {
            // Reading past the end is fine (a short read): only the alignment is tested.
            let len = align as usize;
            let probe = buf.as_mut_slice().get_mut(..len).unwrap_or_default();
            match direct.read_at(probe, 0) {
                Ok(_) => {
                    self.direct_align.store(align, Ordering::Relaxed);
                    self.direct = Some(direct);
                    return Ok(());
                }
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last = Some(e),
                Err(e) => {
                    return Err(BlockError::Open {
                        path: describe(path),
                        source: e,
                    })
                }
            }
        }
        Err(refused(last.unwrap_or_else(|| {
            io::Error::from_raw_os_error(libc::EINVAL)
        })))
    }

    /// Size in bytes (a multiple of 512).
    pub(crate) fn size(&self) -> u64 {
        self.size
    }

    /// The alignment direct I/O needs (512 without O_DIRECT).
    pub(crate) fn direct_align(&self) -> u64 {
        self.direct_align.load(Ordering::Relaxed)
    }

    #[cfg(test)]
    pub(crate) fn set_direct_align(&self, align: u64) {
        self.direct_align.store(align, Ordering::Relaxed);
    }

    /// The descriptor to use for `len` bytes at `offset` from `buf`: the direct one when
    /// everything is aligned for it.
    fn pick(&self, buf: *const u8, len: usize, offset: u64) -> Option<&File> {
        let direct = self.direct.as_ref()?;
        let align = self.direct_align();
        let aligned = (buf as usize as u64 | len as u64 | offset).is_multiple_of(align);
        aligned.then_some(direct)
    }

    /// A direct I/O the host refused for its alignment: remember the stricter alignment, and
    /// let the caller retry through the page cache.
    fn refused_alignment(&self, e: &io::Error) -> bool {
        let refused = e.raw_os_error() == Some(libc::EINVAL);
        if refused {
            self.direct_align.store(BUF_ALIGN as u64, Ordering::Relaxed);
        }
        refused
    }

    pub(crate) fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(direct) = self.pick(buf.as_ptr(), buf.len(), offset) {
            match direct.read_exact_at(buf, offset) {
                Err(e) if self.refused_alignment(&e) => {}
                r => return r,
            }
        }
        self.file.read_exact_at(buf, offset)
    }

    pub(crate) fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if let Some(direct) = self.pick(buf.as_ptr(), buf.len(), offset) {
            match direct.write_all_at(buf, offset) {
                Err(e) if self.refused_alignment(&e) => {}
                r => return r,
            }
        }
        self.file.write_all_at(buf, offset)
    }

    /// Makes every completed write durable (both descriptors share the inode).
    pub(crate) fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn fallocate(&self, mode: i32, offset: u64, len: u64) -> io::Result<()> {
        let (Ok(off), Ok(len)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        // SAFETY: fallocate only acts on the file behind our descriptor; no memory is passed.
        let r = unsafe { libc::fallocate(self.file.as_raw_fd(), mode, off, len) };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// Makes `len` bytes at `offset` read as zeroes: by punching a hole when `unmap` allows
    /// freeing the space, else by FALLOC_FL_ZERO_RANGE, else by writing zeroes through
    /// `scratch` (for filesystems that support neither).
    pub(crate) fn write_zeroes(
        &self,
        offset: u64,
        len: u64,
        unmap: bool,
        scratch: &mut AlignedBuf,
    ) -> io::Result<()> {
        if len == 0 {
            return Ok(());
        }
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        if unmap
            && self
                .fallocate(libc::FALLOC_FL_PUNCH_HOLE | keep, offset, len)
                .is_ok()
        {
            return Ok(());
        }
        if self
            .fallocate(libc::FALLOC_FL_ZERO_RANGE | keep, offset, len)
            .is_ok()
        {
            return Ok(());
        }
        let zeroes = scratch.as_mut_slice();
        if zeroes.is_empty() {
            return Err(io::Error::from_raw_os_error(libc::ENOMEM));
        }
        zeroes.fill(0);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(zeroes.len() as u64) as usize;
            let chunk = zeroes.get(..n).unwrap_or_default();
            self.write_all_at(chunk, offset + done)?;
            done += n as u64;
        }
        Ok(())
    }
}
