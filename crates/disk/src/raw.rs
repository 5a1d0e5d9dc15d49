//! A raw image opened read-only: what raw backing files are. (Raw guest disks are served by
//! the block device's own file layer, which adds O_DIRECT and hole punching.)

use crate::open::open_locked;
use crate::{check_range, DiskImage, OpenError};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

pub struct RawImage {
    file: File,
    size: u64,
}

fn read_only() -> io::Error {
    io::Error::new(
        io::ErrorKind::PermissionDenied,
        "the raw image is open read-only",
    )
}

impl RawImage {
    /// Opens `path` read-only, with a shared lock.
    pub fn open(path: &Path) -> Result<RawImage, OpenError> {
        let (file, size) = open_locked(path, true)?;
        Ok(RawImage { file, size })
    }
}

impl DiskImage for RawImage {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, _buf: &[u8], _offset: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn discard(&self, _offset: u64, _len: u64) -> io::Result<()> {
        Err(read_only())
    }

    fn write_zeroes(&self, _offset: u64, _len: u64, _unmap: bool) -> io::Result<()> {
        Err(read_only())
    }
}
