//! Executing a parsed request against the volume: the request's sectors become byte ranges
//! (checked for overflow and against the volume's size), data goes through a per-queue
//! buffer, and the outcome is a status byte and the number of bytes written to the guest.

use super::config::{
    ID_BYTES, MAX_DISCARD_SEG, MAX_RANGE_SECTORS, MAX_REQUEST_BYTES, MAX_WRITE_ZEROES_SEG, SECTOR,
};
use super::request::{read_stream, total_len, write_stream, Mem, Request};
use super::stats::Counters;
use crate::block::{check_range, BlockDevice};
use std::io;
use virtio_bindings::virtio_blk::*;

pub const S_OK: u8 = VIRTIO_BLK_S_OK as u8;
pub const S_IOERR: u8 = VIRTIO_BLK_S_IOERR as u8;
pub const S_UNSUPP: u8 = VIRTIO_BLK_S_UNSUPP as u8;

/// Bytes of one discard / write-zeroes range: sector (u64), sectors (u32), flags (u32).
const RANGE_LEN: usize = 16;

/// What a request needs besides the guest memory.
pub struct Target<'a> {
    pub dev: &'a dyn BlockDevice,
    /// The serial, NUL-padded.
    pub id: &'a [u8; ID_BYTES],
    pub counters: &'a Counters,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub status: u8,
    /// Bytes written to the guest's buffers before the status byte.
    pub written: u32,
}

impl Outcome {
    fn ok(written: u32) -> Outcome {
        Outcome {
            status: S_OK,
            written,
        }
    }

    fn status(status: u8) -> Outcome {
        Outcome { status, written: 0 }
    }
}

/// Why a request failed: the guest's fault (logged at debug level, a guest can repeat it at
/// will) or the device's (a warning).
enum Fail {
    Guest(&'static str),
    Unsupported(&'static str),
    Device(io::Error),
}

impl From<io::Error> for Fail {
    fn from(e: io::Error) -> Fail {
        // The volume checks ranges too; what it calls invalid input came from the guest.
        if e.kind() == io::ErrorKind::InvalidInput || e.kind() == io::ErrorKind::PermissionDenied {
            Fail::Guest("the volume refused the request")
        } else {
            Fail::Device(e)
        }
    }
}

/// Runs `req`; `scratch` is the queue's data buffer, grown as needed (up to the request cap).
pub fn execute(mem: &Mem, req: &Request, t: &Target, scratch: &mut Vec<u8>) -> Outcome {
    let result = match req.kind {
        VIRTIO_BLK_T_IN => read(mem, req, t, scratch),
        VIRTIO_BLK_T_OUT => write(mem, req, t, scratch),
        VIRTIO_BLK_T_FLUSH => {
            t.counters.flushes.add(1);
            t.dev.flush().map(|()| 0).map_err(Fail::Device)
        }
        VIRTIO_BLK_T_GET_ID => get_id(mem, req, t),
        VIRTIO_BLK_T_DISCARD => ranges(mem, req, t, false),
        VIRTIO_BLK_T_WRITE_ZEROES => ranges(mem, req, t, true),
        _ => Err(Fail::Unsupported("unknown request type")),
    };
    match result {
        Ok(written) => Outcome::ok(written),
        Err(Fail::Unsupported(why)) => {
            tracing::debug!(
                kind = req.kind,
                "vhost-user-blk: unsupported request: {why}"
            );
            Outcome::status(S_UNSUPP)
        }
        Err(Fail::Guest(why)) => {
            t.counters.errors.add(1);
            tracing::debug!(
                kind = req.kind,
                sector = req.sector,
                "vhost-user-blk: bad request: {why}"
            );
            Outcome::status(S_IOERR)
        }
        Err(Fail::Device(e)) => {
            t.counters.errors.add(1);
            tracing::warn!(
                kind = req.kind,
                sector = req.sector,
                "vhost-user-blk: the volume failed a request: {e}"
            );
            Outcome::status(S_IOERR)
        }
    }
}

/// The byte range of `len` bytes at `sector`, inside the volume.
fn byte_range(dev: &dyn BlockDevice, sector: u64, len: u64) -> Result<u64, Fail> {
    let offset = sector
        .checked_mul(SECTOR)
        .ok_or(Fail::Guest("the sector number overflows"))?;
    check_range(offset, len, dev.size()).map_err(|_| Fail::Guest("beyond the end of the disk"))?;
    Ok(offset)
}

/// The data length of an IN or OUT request, checked: whole sectors, at most the cap.
fn data_len(len: u64) -> Result<usize, Fail> {
    if !len.is_multiple_of(SECTOR) {
        return Err(Fail::Guest("the data is not a whole number of sectors"));
    }
    if len > MAX_REQUEST_BYTES {
        return Err(Fail::Guest("the request is larger than the 31.75 MiB cap"));
    }
    usize::try_from(len).map_err(|_| Fail::Guest("the request is too large"))
}

/// `len` bytes of the scratch buffer, growing it first.
fn buffer(scratch: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if scratch.len() < len {
        scratch.resize(len, 0);
    }
    scratch.get_mut(..len).unwrap_or_default()
}

fn read(mem: &Mem, req: &Request, t: &Target, scratch: &mut Vec<u8>) -> Result<u32, Fail> {
    let len = data_len(total_len(&req.writable))?;
    let offset = byte_range(t.dev, req.sector, len as u64)?;
    let buf = buffer(scratch, len);
    t.dev.read_at(buf, offset)?;
    write_stream(mem, &req.writable, buf).map_err(|_| Fail::Guest("unwritable guest buffer"))?;
    t.counters.read_ops.add(1);
    t.counters.read_bytes.add(len as u64);
    Ok(len as u32)
}

fn write(mem: &Mem, req: &Request, t: &Target, scratch: &mut Vec<u8>) -> Result<u32, Fail> {
    if t.dev.read_only() {
        return Err(Fail::Guest("write to a read-only disk"));
    }
    let len = data_len(total_len(&req.readable))?;
    let offset = byte_range(t.dev, req.sector, len as u64)?;
    let buf = buffer(scratch, len);
    read_stream(mem, &req.readable, buf).map_err(|_| Fail::Guest("unreadable guest buffer"))?;
    // Durability comes with FLUSH: the driver sends one whenever the guest needs it.
    t.dev.write_at(buf, offset, false)?;
    t.counters.write_ops.add(1);
    t.counters.write_bytes.add(len as u64);
    Ok(0)
}

fn get_id(mem: &Mem, req: &Request, t: &Target) -> Result<u32, Fail> {
    let n = (total_len(&req.writable) as usize).min(ID_BYTES);
    let id = t.id.get(..n).unwrap_or_default();
    write_stream(mem, &req.writable, id).map_err(|_| Fail::Guest("unwritable guest buffer"))?;
    Ok(n as u32)
}

/// One discard or write-zeroes range, checked.
struct Range {
    offset: u64,
    len: u64,
    unmap: bool,
}

/// DISCARD (`zero == false`) or WRITE_ZEROES: every range is checked before any is executed.
fn ranges(mem: &Mem, req: &Request, t: &Target, zero: bool) -> Result<u32, Fail> {
    if t.dev.read_only() {
        return Err(Fail::Guest("discard or write zeroes on a read-only disk"));
    }
    let max_seg = if zero {
        MAX_WRITE_ZEROES_SEG
    } else {
        MAX_DISCARD_SEG
    };
    let total = total_len(&req.readable);
    if total == 0 || !total.is_multiple_of(RANGE_LEN as u64) {
        return Err(Fail::Guest("the ranges are not whole 16-byte segments"));
    }
    if total > u64::from(max_seg) * RANGE_LEN as u64 {
        return Err(Fail::Guest("more ranges than the device allows"));
    }
    let mut raw = vec![0u8; total as usize];
    read_stream(mem, &req.readable, &mut raw).map_err(|_| Fail::Guest("unreadable ranges"))?;
    let mut checked = Vec::new();
    for seg in raw.chunks_exact(RANGE_LEN) {
        let sector = u64::from_le_bytes(field(seg, 0));
        let count = u32::from_le_bytes(field(seg, 8));
        let flags = u32::from_le_bytes(field(seg, 12));
        // The only flag is UNMAP, and only for write zeroes (virtio 1.2, 5.2.6.2).
        let allowed = if zero {
            VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP
        } else {
            0
        };
        if flags & !allowed != 0 {
            return Err(Fail::Unsupported("unknown range flags"));
        }
        if count > MAX_RANGE_SECTORS {
            return Err(Fail::Guest("a range is larger than the device allows"));
        }
        let len = u64::from(count) * SECTOR;
        checked.push(Range {
            offset: byte_range(t.dev, sector, len)?,
            len,
            unmap: flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP != 0,
        });
    }
    for r in checked {
        if zero {
            t.dev.write_zeroes(r.offset, r.len, r.unmap, false)?;
            t.counters.write_zeroes.add(1);
        } else {
            t.dev.trim(r.offset, r.len)?;
            t.counters.discards.add(1);
        }
    }
    Ok(0)
}

/// `N` bytes of `seg` at `at` (zeros if it is shorter).
fn field<const N: usize>(seg: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = seg.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}
