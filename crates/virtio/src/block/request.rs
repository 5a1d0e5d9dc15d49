//! Parsing a request's descriptor chain (virtio 1.2, 5.2.6): a 16-byte device-readable header
//! (type, reserved, sector), the data, and a device-writable status byte at the very end.
//! With VERSION_1 (which implies ANY_LAYOUT) the driver may split or merge these parts across
//! descriptors any way it likes, so the request is seen as two byte streams: what the device
//! reads (header, then OUT data) and what it writes (IN data, then the status byte).
//!
//! Nothing here touches the disk; everything the guest gave is checked first: the chain's shape,
//! that every buffer is guest memory, and that the header is complete.

use crate::GuestMemory;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD, VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID, VIRTIO_BLK_T_IN,
    VIRTIO_BLK_T_OUT, VIRTIO_BLK_T_WRITE_ZEROES,
};
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryError};

pub(crate) const HEADER_LEN: u64 = 16;

/// Descriptors kept per request: the header, `seg_max` data segments and the status, with room
/// for drivers that split their buffers further. A longer chain gets IOERR.
const MAX_DESCRIPTORS: usize = 1024;

/// A guest buffer, or the part of one that belongs to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Segment {
    pub addr: GuestAddress,
    pub len: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    In,
    Out,
    Flush,
    GetId,
    Discard,
    WriteZeroes,
    Unsupported(u32),
}

impl Op {
    fn from_type(t: u32) -> Op {
        match t {
            VIRTIO_BLK_T_IN => Op::In,
            VIRTIO_BLK_T_OUT => Op::Out,
            VIRTIO_BLK_T_FLUSH => Op::Flush,
            VIRTIO_BLK_T_GET_ID => Op::GetId,
            VIRTIO_BLK_T_DISCARD => Op::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => Op::WriteZeroes,
            other => Op::Unsupported(other),
        }
    }
}

/// A request whose status byte can be written.
#[derive(Debug)]
pub(crate) struct Request {
    /// What to do, or why the request is malformed (answered with IOERR).
    pub op: Result<Op, &'static str>,
    pub sector: u64,
    /// Device-readable bytes after the header: OUT data, discard/write-zeroes ranges.
    pub readable: Vec<Segment>,
    /// Device-writable bytes before the status byte: IN data, the GET_ID buffer.
    pub writable: Vec<Segment>,
    pub status: GuestAddress,
}

impl Request {
    /// The bytes a rate limiter charges: the data moved.
    pub(crate) fn data_bytes(&self) -> u64 {
        match self.op {
            Ok(Op::In) => total_len(&self.writable),
            Ok(Op::Out) => total_len(&self.readable),
            _ => 0,
        }
    }

    fn malformed(&mut self, why: &'static str) {
        self.op = Err(why);
        self.readable.clear();
        self.writable.clear();
    }
}

pub(crate) fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().fold(0u64, |n, s| n.saturating_add(s.len))
}

fn in_memory(mem: &GuestMemory, s: &Segment) -> bool {
    usize::try_from(s.len).is_ok_and(|len| GuestMemoryBackend::check_range(mem, s.addr, len))
}

/// Parses `chain`. `Err` means there is no status byte the device can write (an empty or cut
/// short chain, a last descriptor that is not device-writable or not guest memory): such a
/// chain is returned unprocessed with a used length of 0.
pub(crate) fn parse(
    mem: &GuestMemory,
    chain: DescriptorChain<&GuestMemory>,
) -> Result<Request, &'static str> {
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let (mut count, mut seen_writable, mut misordered) = (0usize, false, false);
    let mut last = None;
    // virtio-queue bounds the walk (at most the table size, 2^32 bytes), follows indirect
    // tables and stops at anything invalid.
    for d in chain {
        count += 1;
        last = Some(d);
        let seg = Segment {
            addr: d.addr(),
            len: u64::from(d.len()),
        };
        if d.is_write_only() {
            seen_writable = true;
            if writable.len() < MAX_DESCRIPTORS {
                writable.push(seg);
            }
        } else if seen_writable {
            misordered = true;
        } else if readable.len() < MAX_DESCRIPTORS {
            readable.push(seg);
        }
    }
    let last = last.ok_or("empty or invalid descriptor chain")?;
    if last.has_next() {
        return Err("the descriptor chain is cut short (a loop, a bad index or indirect table)");
    }
    if !last.is_write_only() || last.len() == 0 {
        return Err("the last descriptor is not a device-writable status byte");
    }
    let status = last
        .addr()
        .checked_add(u64::from(last.len()) - 1)
        .filter(|a| GuestMemoryBackend::check_range(mem, *a, 1))
        .ok_or("the status byte is outside guest memory")?;

    let mut req = Request {
        op: Ok(Op::Unsupported(u32::MAX)),
        sector: 0,
        readable,
        writable,
        status,
    };
    if misordered {
        req.malformed("a device-readable descriptor follows a device-writable one");
        return Ok(req);
    }
    if count > MAX_DESCRIPTORS {
        req.malformed("too many descriptors");
        return Ok(req);
    }
    // The status byte is not data.
    if let Some(s) = req.writable.last_mut() {
        s.len -= 1;
    }
    if !req
        .readable
        .iter()
        .chain(&req.writable)
        .all(|s| in_memory(mem, s))
    {
        req.malformed("a buffer is outside guest memory");
        return Ok(req);
    }

    let mut header = [0u8; HEADER_LEN as usize];
    let data = split_off(&mut req.readable, HEADER_LEN);
    let Some(data) = data else {
        req.malformed("the request header is incomplete");
        return Ok(req);
    };
    if Cursor::new(&req.readable).read(mem, &mut header).is_err() {
        req.malformed("the request header is unreadable");
        return Ok(req);
    }
    req.readable = data;
    let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
    req.op = Ok(Op::from_type(u32::from_le_bytes([t0, t1, t2, t3])));
    req.sector = u64::from_le_bytes(s);
    Ok(req)
}

/// Splits `segs` after `at` bytes: `segs` keeps the first `at` bytes, the rest is returned.
/// `None` if there are fewer than `at` bytes.
fn split_off(segs: &mut Vec<Segment>, at: u64) -> Option<Vec<Segment>> {
    let mut rest = Vec::new();
    let mut left = at;
    let mut keep = Vec::new();
    for s in segs.drain(..) {
        if left >= s.len {
            left -= s.len;
            keep.push(s);
        } else if left > 0 {
            keep.push(Segment {
                addr: s.addr,
                len: left,
            });
            rest.push(Segment {
                addr: GuestAddress(s.addr.0.wrapping_add(left)),
                len: s.len - left,
            });
            left = 0;
        } else {
            rest.push(s);
        }
    }
    *segs = keep;
    (left == 0).then_some(rest)
}

/// A position in a stream of guest buffers, for copying to or from it piece by piece.
pub(crate) struct Cursor<'a> {
    segs: &'a [Segment],
    idx: usize,
    off: u64,
}

impl<'a> Cursor<'a> {
    pub(crate) fn new(segs: &'a [Segment]) -> Cursor<'a> {
        Cursor {
            segs,
            idx: 0,
            off: 0,
        }
    }

    /// Calls `f(address, length)` for the next pieces of the stream that make `len` bytes.
    fn walk<F>(&mut self, len: usize, mut f: F) -> Result<(), GuestMemoryError>
    where
        F: FnMut(GuestAddress, usize, usize) -> Result<(), GuestMemoryError>,
    {
        let mut done = 0usize;
        while done < len {
            let seg = self
                .segs
                .get(self.idx)
                .ok_or(GuestMemoryError::InvalidGuestAddress(GuestAddress(
                    u64::MAX,
                )))?;
            let left = seg.len - self.off;
            if left == 0 {
                self.idx += 1;
                self.off = 0;
                continue;
            }
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(len - done);
            f(GuestAddress(seg.addr.0.wrapping_add(self.off)), done, n)?;
            self.off += n as u64;
            done += n;
        }
        Ok(())
    }

    /// Fills `buf` from guest memory.
    pub(crate) fn read(
        &mut self,
        mem: &GuestMemory,
        buf: &mut [u8],
    ) -> Result<(), GuestMemoryError> {
        self.walk(buf.len(), |addr, at, n| {
            let dst = buf.get_mut(at..at + n).unwrap_or_default();
            mem.read_slice(dst, addr)
        })
    }

    /// Copies `buf` into guest memory.
    pub(crate) fn write(&mut self, mem: &GuestMemory, buf: &[u8]) -> Result<(), GuestMemoryError> {
        self.walk(buf.len(), |addr, at, n| {
            let src = buf.get(at..at + n).unwrap_or_default();
            mem.write_slice(src, addr)
        })
    }
}
