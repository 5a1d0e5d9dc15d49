//! Carrying out a parsed request against the image: every guest-given number (sector, length,
//! discard range) is checked against the disk before any I/O, with checked arithmetic.

use super::disk::Disk;
use super::file::AlignedBuf;
use super::request::{total_len, Cursor, Op, Request, Segment};
use super::{
    ID_BYTES, MAX_DISCARD_SECTORS, MAX_DISCARD_SEG, MAX_WRITE_ZEROES_SECTORS, SECTOR_SIZE,
};
use crate::GuestMemory;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP,
};

pub(crate) const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
pub(crate) const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
pub(crate) const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Size of one discard / write-zeroes range (struct virtio_blk_discard_write_zeroes).
const RANGE_LEN: usize = 16;

/// What a request did: its status, and how many data bytes it wrote into guest memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outcome {
    pub status: u8,
    pub written: u64,
}

impl Outcome {
    fn ok(written: u64) -> Outcome {
        Outcome {
            status: S_OK,
            written,
        }
    }

    fn status(status: u8) -> Outcome {
        Outcome { status, written: 0 }
    }
}

pub(crate) struct Exec<'a> {
    pub mem: &'a GuestMemory,
    pub disk: &'a Disk,
    pub buf: &'a mut AlignedBuf,
    pub id: &'a [u8; ID_BYTES],
    pub readonly: bool,
}

fn ioerr(why: &str) -> Outcome {
    tracing::debug!("virtio-blk: request failed: {why}");
    Outcome::status(S_IOERR)
}

impl Exec<'_> {
    pub(crate) fn run(&mut self, req: &Request) -> Outcome {
        let op = match req.op {
            Ok(op) => op,
            Err(why) => return ioerr(why),
        };
        match op {
            Op::In => self.read(req.sector, &req.writable),
            Op::Out => self.write(req.sector, &req.readable),
            Op::Flush => match self.disk.flush() {
                Ok(()) => Outcome::ok(0),
                Err(e) => ioerr(&format!("flush: {e}")),
            },
            Op::GetId => self.get_id(&req.writable),
            Op::Discard | Op::WriteZeroes => self.zero(op, &req.readable),
            Op::Unsupported(t) => {
                tracing::debug!("virtio-blk: unsupported request type {t}");
                Outcome::status(S_UNSUPP)
            }
        }
    }

    /// The byte offset of `len` bytes at `sector`, if they lie within the disk.
    fn range(&self, sector: u64, len: u64) -> Option<u64> {
        let offset = sector.checked_mul(SECTOR_SIZE)?;
        let end = offset.checked_add(len)?;
        (end <= self.disk.size()).then_some(offset)
    }

    fn read(&mut self, sector: u64, dst: &[Segment]) -> Outcome {
        let len = total_len(dst);
        if !len.is_multiple_of(SECTOR_SIZE) {
            return ioerr("read length is not a multiple of 512");
        }
        let Some(offset) = self.range(sector, len) else {
            return ioerr("read beyond the end of the disk");
        };
        let mut guest = Cursor::new(dst);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(self.buf.len() as u64) as usize;
            let Some(chunk) = self.buf.as_mut_slice().get_mut(..n) else {
                return ioerr("bounce buffer");
            };
            if let Err(e) = self.disk.read_exact_at(chunk, offset + done) {
                return Outcome {
                    status: S_IOERR,
                    written: done,
                }
                .log(&format!("read: {e}"));
            }
            if let Err(e) = guest.write(self.mem, chunk) {
                return Outcome {
                    status: S_IOERR,
                    written: done,
                }
                .log(&format!("read: {e}"));
            }
            done += n as u64;
        }
        Outcome::ok(len)
    }

    fn write(&mut self, sector: u64, src: &[Segment]) -> Outcome {
        if self.readonly {
            return ioerr("write to a read-only disk");
        }
        let len = total_len(src);
        if !len.is_multiple_of(SECTOR_SIZE) {
            return ioerr("write length is not a multiple of 512");
        }
        let Some(offset) = self.range(sector, len) else {
            return ioerr("write beyond the end of the disk");
        };
        let mut guest = Cursor::new(src);
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(self.buf.len() as u64) as usize;
            let Some(chunk) = self.buf.as_mut_slice().get_mut(..n) else {
                return ioerr("bounce buffer");
            };
            if let Err(e) = guest.read(self.mem, chunk) {
                return ioerr(&format!("write: {e}"));
            }
            if let Err(e) = self.disk.write_all_at(chunk, offset + done) {
                return ioerr(&format!("write: {e}"));
            }
            done += n as u64;
        }
        Outcome::ok(0)
    }

    fn get_id(&mut self, dst: &[Segment]) -> Outcome {
        // The serial, NUL-padded; a shorter buffer gets what fits.
        let n = total_len(dst).min(ID_BYTES as u64) as usize;
        let id = self.id.get(..n).unwrap_or_default();
        match Cursor::new(dst).write(self.mem, id) {
            Ok(()) => Outcome::ok(n as u64),
            Err(e) => ioerr(&format!("get id: {e}")),
        }
    }

    /// DISCARD and WRITE_ZEROES: every range is checked before any is carried out.
    fn zero(&mut self, op: Op, src: &[Segment]) -> Outcome {
        if self.readonly {
            return ioerr("discard or write zeroes on a read-only disk");
        }
        let len = total_len(src);
        let count = len / RANGE_LEN as u64;
        if !len.is_multiple_of(RANGE_LEN as u64) || count == 0 || count > u64::from(MAX_DISCARD_SEG)
        {
            return ioerr("bad discard / write zeroes range list");
        }
        let discard = op == Op::Discard;
        let max = if discard {
            MAX_DISCARD_SECTORS
        } else {
            MAX_WRITE_ZEROES_SECTORS
        };
        let mut guest = Cursor::new(src);
        let mut ranges = Vec::new();
        for _ in 0..count {
            let mut raw = [0u8; RANGE_LEN];
            if let Err(e) = guest.read(self.mem, &mut raw) {
                return ioerr(&format!("discard range: {e}"));
            }
            let [s @ .., _, _, _, _, _, _, _, _] = raw;
            let [_, _, _, _, _, _, _, _, n0, n1, n2, n3, f0, f1, f2, f3] = raw;
            let sector = u64::from_le_bytes(s);
            let sectors = u32::from_le_bytes([n0, n1, n2, n3]);
            let flags = u32::from_le_bytes([f0, f1, f2, f3]);
            let unmap = flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0;
            // Unknown flags, or UNMAP on a discard, are not ours to guess (virtio 1.2, 5.2.6.2).
            if flags & !VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0 || (discard && unmap) {
                return Outcome::status(S_UNSUPP);
            }
            if sectors > max {
                return ioerr("discard / write zeroes range too long");
            }
            let bytes = u64::from(sectors) * SECTOR_SIZE;
            let Some(offset) = self.range(sector, bytes) else {
                return ioerr("discard / write zeroes beyond the end of the disk");
            };
            ranges.push((offset, bytes, unmap));
        }
        for (offset, bytes, unmap) in ranges {
            let done = if discard {
                self.disk.discard(offset, bytes, self.buf)
            } else {
                self.disk.write_zeroes(offset, bytes, unmap, self.buf)
            };
            if let Err(e) = done {
                return ioerr(&format!("discard / write zeroes: {e}"));
            }
        }
        Outcome::ok(0)
    }
}

impl Outcome {
    fn log(self, why: &str) -> Outcome {
        tracing::debug!("virtio-blk: request failed: {why}");
        self
    }
}
