//! A raw file (or block device) as a [`BlockDevice`]: what the protocol layers are tested
//! against on their own, and what `import`/`export` read and write raw images through.

use crate::block::{check_range, BlockDevice, Extent};
use std::fs::{File, OpenOptions};
use std::io::{self, Seek};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

pub struct FileDevice {
    file: File,
    size: u64,
    read_only: bool,
}

impl FileDevice {
    pub fn open(path: &Path, read_only: bool) -> io::Result<FileDevice> {
        let file = OpenOptions::new().read(true).write(!read_only).open(path)?;
        // Block devices report a zero length in their metadata; seeking works for both.
        let size = (&file).seek(std::io::SeekFrom::End(0))?;
        Ok(FileDevice {
            file,
            size,
            read_only,
        })
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "the device is read-only",
            ));
        }
        Ok(())
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
        // SAFETY: fallocate on a file descriptor we own; the range was checked against the
        // file's size and KEEP_SIZE keeps it.
        let r = unsafe {
            libc::fallocate(
                self.file.as_raw_fd(),
                mode | libc::FALLOC_FL_KEEP_SIZE,
                offset as libc::off_t,
                len as libc::off_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    /// `lseek(SEEK_DATA/SEEK_HOLE)` from `offset`, or `end` past the last data.
    fn seek(&self, offset: u64, whence: libc::c_int, end: u64) -> io::Result<u64> {
        // SAFETY: lseek on a file descriptor we own. FileDevice is only read by pread/pwrite,
        // which ignore the file position this moves.
        let r = unsafe { libc::lseek(self.file.as_raw_fd(), offset as libc::off_t, whence) };
        if r >= 0 {
            Ok((r as u64).min(end))
        } else {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ENXIO) {
                Ok(end)
            } else {
                Err(e)
            }
        }
    }
}

impl BlockDevice for FileDevice {
    fn size(&self) -> u64 {
        self.size
    }

    fn block_size(&self) -> u32 {
        4096
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        check_range(offset, buf.len() as u64, self.size)?;
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.writable()?;
        check_range(offset, data.len() as u64, self.size)?;
        self.file.write_all_at(data, offset)?;
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.write_zeroes(offset, len, true, false)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool, fua: bool) -> io::Result<()> {
        self.writable()?;
        check_range(offset, len, self.size)?;
        if len == 0 {
            return Ok(());
        }
        let mode = if may_unmap {
            libc::FALLOC_FL_PUNCH_HOLE
        } else {
            libc::FALLOC_FL_ZERO_RANGE
        };
        if self.fallocate(mode, offset, len).is_err() {
            // Block devices and some filesystems: write the zeros.
            let zeros = vec![0u8; len.min(1 << 20) as usize];
            let mut done = 0;
            while done < len {
                let n = (len - done).min(zeros.len() as u64) as usize;
                self.file.write_all_at(&zeros[..n], offset + done)?;
                done += n as u64;
            }
        }
        if fua {
            self.file.sync_data()?;
        }
        Ok(())
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        check_range(offset, len, self.size)?;
        let end = offset + len;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = self.seek(pos, libc::SEEK_DATA, end)?;
            if data > pos {
                out.push(Extent {
                    len: data - pos,
                    hole: true,
                    zero: true,
                });
                pos = data;
                continue;
            }
            let hole = self.seek(pos, libc::SEEK_HOLE, end)?;
            out.push(Extent {
                len: hole.max(pos + 1).min(end) - pos,
                hole: false,
                zero: false,
            });
            pos = hole.max(pos + 1).min(end);
        }
        Ok(out)
    }
}
