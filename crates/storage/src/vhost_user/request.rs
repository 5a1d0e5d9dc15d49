//! Parsing a request's descriptor chain (virtio 1.2, 5.2.6): a 16-byte device-readable header
//! (type, reserved, sector), the data, and a device-writable status byte at the very end.
//! With VERSION_1 (which implies ANY_LAYOUT) the driver may split or merge these parts across
//! descriptors as it likes, so a request is two byte streams: what the device reads (header,
//! then OUT data or ranges) and what it writes (IN data or the serial, then the status).
//!
//! The chain is guest input: every buffer is checked to be guest memory before anything is
//! read, and nothing here touches the disk.

use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

/// Guest RAM as the frontend shared it with us.
pub type Mem = GuestMemoryMmap<()>;

const HEADER_LEN: usize = 16;

/// Descriptors kept per chain: `SEG_MAX` data segments plus header and status, with room for
/// drivers that split buffers further. Longer chains (an indirect table may hold 65535
/// entries) get IOERR.
pub const MAX_DESCRIPTORS: usize = 1024;

/// A guest buffer, or the part of one that belongs to a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    pub addr: GuestAddress,
    pub len: usize,
}

#[derive(Debug)]
pub struct Request {
    /// `VIRTIO_BLK_T_*`.
    pub kind: u32,
    pub sector: u64,
    /// Device-readable bytes after the header: OUT data, discard/write-zeroes ranges.
    pub readable: Vec<Segment>,
    /// Device-writable bytes before the status byte: IN data, the GET_ID buffer.
    pub writable: Vec<Segment>,
    pub status: GuestAddress,
}

#[derive(Debug)]
pub enum Parsed {
    /// There is no status byte the device could write: an empty or cut short chain, a last
    /// descriptor that is not device-writable or not guest memory. The chain goes back with
    /// a used length of 0.
    NoStatus(&'static str),
    /// The status byte is there, the rest is malformed: answered with IOERR.
    Malformed {
        status: GuestAddress,
        why: &'static str,
    },
    Request(Request),
}

pub fn total_len(segs: &[Segment]) -> u64 {
    segs.iter().map(|s| s.len as u64).sum()
}

/// Parses `chain` (virtio-queue bounds the walk by the table size and 2^32 bytes, follows
/// indirect tables and stops at invalid indices).
pub fn parse(mem: &Mem, chain: DescriptorChain<&Mem>) -> Parsed {
    let mut readable = Vec::new();
    let mut writable = Vec::new();
    let (mut count, mut misordered) = (0usize, false);
    let mut last = None;
    for d in chain {
        count += 1;
        last = Some(d);
        let seg = Segment {
            addr: d.addr(),
            len: d.len() as usize,
        };
        if d.is_write_only() {
            if writable.len() < MAX_DESCRIPTORS {
                writable.push(seg);
            }
        } else if !writable.is_empty() {
            misordered = true;
        } else if readable.len() < MAX_DESCRIPTORS {
            readable.push(seg);
        }
    }
    let Some(last) = last else {
        return Parsed::NoStatus("empty or invalid descriptor chain");
    };
    if last.has_next() {
        return Parsed::NoStatus("the chain is cut short (a loop, a bad index or table)");
    }
    if !last.is_write_only() || last.len() == 0 {
        return Parsed::NoStatus("the last descriptor is not a device-writable status byte");
    }
    let Some(status) = last
        .addr()
        .0
        .checked_add(u64::from(last.len()) - 1)
        .map(GuestAddress)
        .filter(|a| mem.check_range(*a, 1))
    else {
        return Parsed::NoStatus("the status byte is outside guest memory");
    };
    let malformed = |why| Parsed::Malformed { status, why };
    if misordered {
        return malformed("a device-readable descriptor follows a device-writable one");
    }
    if count > MAX_DESCRIPTORS {
        return malformed("too many descriptors");
    }
    // The status byte is not data.
    if let Some(s) = writable.last_mut() {
        s.len = s.len.saturating_sub(1);
    }
    let in_memory = |s: &Segment| s.len == 0 || mem.check_range(s.addr, s.len);
    if !readable.iter().chain(&writable).all(in_memory) {
        return malformed("a buffer is outside guest memory");
    }
    let Some(data) = split_off(&mut readable, HEADER_LEN) else {
        return malformed("the request header is incomplete");
    };
    let mut header = [0u8; HEADER_LEN];
    if read_stream(mem, &readable, &mut header).is_err() {
        return malformed("the request header is unreadable");
    }
    let [t0, t1, t2, t3, _, _, _, _, s @ ..] = header;
    Parsed::Request(Request {
        kind: u32::from_le_bytes([t0, t1, t2, t3]),
        sector: u64::from_le_bytes(s),
        readable: data,
        writable,
        status,
    })
}

/// Splits `segs` after `at` bytes: `segs` keeps the first `at` bytes and the rest is
/// returned; `None` if there are fewer than `at` bytes.
pub fn split_off(segs: &mut Vec<Segment>, at: usize) -> Option<Vec<Segment>> {
    let mut keep = Vec::new();
    let mut rest = Vec::new();
    let mut left = at;
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
                addr: GuestAddress(s.addr.0.wrapping_add(left as u64)),
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

/// Fills `buf` from the start of the stream `segs`; fails if the stream is shorter or a
/// buffer is not guest memory.
pub fn read_stream(mem: &Mem, segs: &[Segment], buf: &mut [u8]) -> Result<(), ()> {
    let mut rest = buf;
    for s in segs {
        if rest.is_empty() {
            break;
        }
        let n = s.len.min(rest.len());
        let (now, later) = rest.split_at_mut(n);
        mem.read_slice(now, s.addr).map_err(|_| ())?;
        rest = later;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(())
    }
}

/// Copies `buf` to the start of the stream `segs`; fails if the stream is shorter or a buffer
/// is not guest memory.
pub fn write_stream(mem: &Mem, segs: &[Segment], buf: &[u8]) -> Result<(), ()> {
    let mut rest = buf;
    for s in segs {
        if rest.is_empty() {
            break;
        }
        let n = s.len.min(rest.len());
        let (now, later) = rest.split_at(n);
        mem.write_slice(now, s.addr).map_err(|_| ())?;
        rest = later;
    }
    if rest.is_empty() {
        Ok(())
    } else {
        Err(())
    }
}
