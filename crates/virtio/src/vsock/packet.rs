//! The virtio-vsock wire format (virtio 1.2, 5.10.6): the 44-byte little-endian header that
//! starts every packet, reading one from a transmit chain and writing one into a receive chain.

use crate::GuestMemory;
use std::io::{Read, Write};
use virtio_queue::DescriptorChain;

pub const HDR_LEN: usize = 44;
/// The host's CID: what the guest connects to (VMADDR_CID_HOST).
pub const HOST_CID: u64 = 2;
/// The most payload one packet carries either way (Linux's VIRTIO_VSOCK_MAX_PKT_BUF_SIZE). A
/// longer transmit packet is malformed; received packets are cut to fit the driver's buffer.
pub const MAX_PAYLOAD: usize = 64 * 1024;

pub const TYPE_STREAM: u16 = 1;

pub const OP_REQUEST: u16 = 1;
pub const OP_RESPONSE: u16 = 2;
pub const OP_RST: u16 = 3;
pub const OP_SHUTDOWN: u16 = 4;
pub const OP_RW: u16 = 5;
pub const OP_CREDIT_UPDATE: u16 = 6;
pub const OP_CREDIT_REQUEST: u16 = 7;

/// SHUTDOWN flags: the sender will receive no more / send no more.
pub const SHUTDOWN_RCV: u32 = 1;
pub const SHUTDOWN_SEND: u32 = 2;
pub const SHUTDOWN_BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// `struct virtio_vsock_event` id: the driver must drop every connection and re-read the CID.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// `struct virtio_vsock_hdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub kind: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

fn le_u64(b: &[u8; HDR_LEN], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

fn le_u32(b: &[u8; HDR_LEN], at: usize) -> u32 {
    let mut v = [0u8; 4];
    v.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(v)
}

fn le_u16(b: &[u8; HDR_LEN], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

impl Header {
    // The offsets below are constants inside a fixed 44-byte array: they cannot go out of bounds
    // whatever the bytes hold.
    pub fn from_bytes(b: &[u8; HDR_LEN]) -> Header {
        Header {
            src_cid: le_u64(b, 0),
            dst_cid: le_u64(b, 8),
            src_port: le_u32(b, 16),
            dst_port: le_u32(b, 20),
            len: le_u32(b, 24),
            kind: le_u16(b, 28),
            op: le_u16(b, 30),
            flags: le_u32(b, 32),
            buf_alloc: le_u32(b, 36),
            fwd_cnt: le_u32(b, 40),
        }
    }

    pub fn to_bytes(self) -> [u8; HDR_LEN] {
        let mut b = [0u8; HDR_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.kind.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }
}

/// Why a transmit chain was dropped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("unreadable descriptor chain: {0}")]
    Chain(String),
    #[error("{0} readable bytes, fewer than a header")]
    Short(usize),
    #[error("payload length {len} exceeds the chain's {avail} bytes")]
    Truncated { len: u32, avail: usize },
    #[error("payload length {0} exceeds {MAX_PAYLOAD}")]
    TooLong(u32),
    #[error("source CID {0} is not the guest's")]
    SrcCid(u64),
    #[error("socket type {0} is not STREAM")]
    Kind(u16),
    #[error("unknown operation {0}")]
    Op(u16),
    #[error("operation {op} carries {len} payload bytes")]
    PayloadOnControl { op: u16, len: u32 },
}

/// Reads a transmit chain's header and payload (into `buf`, at most [`MAX_PAYLOAD`] bytes) and
/// checks everything that does not depend on connection state. Returns the header; its `len`
/// bytes of payload are at the start of `buf`.
pub fn read_tx(
    chain: &DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    guest_cid: u64,
    buf: &mut [u8],
) -> Result<Header, Malformed> {
    let mut r = chain
        .clone()
        .reader(mem)
        .map_err(|e| Malformed::Chain(format!("{e:?}")))?;
    let avail = r.available_bytes();
    if avail < HDR_LEN {
        return Err(Malformed::Short(avail));
    }
    let mut raw = [0u8; HDR_LEN];
    r.read_exact(&mut raw)
        .map_err(|e| Malformed::Chain(e.to_string()))?;
    let hdr = Header::from_bytes(&raw);
    check(&hdr, guest_cid)?;
    let len = hdr.len as usize;
    if len > avail - HDR_LEN {
        return Err(Malformed::Truncated {
            len: hdr.len,
            avail: avail - HDR_LEN,
        });
    }
    let dst = buf.get_mut(..len).ok_or(Malformed::TooLong(hdr.len))?;
    r.read_exact(dst)
        .map_err(|e| Malformed::Chain(e.to_string()))?;
    Ok(hdr)
}

/// The checks on a header alone. The destination CID is not among them: a packet for another
/// CID is well formed, just unroutable (the caller refuses it).
pub fn check(hdr: &Header, guest_cid: u64) -> Result<(), Malformed> {
    if hdr.src_cid != guest_cid {
        return Err(Malformed::SrcCid(hdr.src_cid));
    }
    if hdr.kind != TYPE_STREAM {
        return Err(Malformed::Kind(hdr.kind));
    }
    if !(OP_REQUEST..=OP_CREDIT_REQUEST).contains(&hdr.op) {
        return Err(Malformed::Op(hdr.op));
    }
    if hdr.len as usize > MAX_PAYLOAD {
        return Err(Malformed::TooLong(hdr.len));
    }
    if hdr.op != OP_RW && hdr.len != 0 {
        return Err(Malformed::PayloadOnControl {
            op: hdr.op,
            len: hdr.len,
        });
    }
    Ok(())
}

/// How many payload bytes a receive chain can take after the header: `None` if the chain is
/// unusable (unwritable memory, or no room for a header and at least one byte).
pub fn rx_room(chain: &DescriptorChain<&GuestMemory>, mem: &GuestMemory) -> Option<usize> {
    let w = chain.clone().writer(mem).ok()?;
    let room = w.available_bytes().checked_sub(HDR_LEN)?;
    (room > 0).then_some(room.min(MAX_PAYLOAD))
}

/// Writes `hdr` (its `len` set to the payload's) and `payload` into a receive chain; returns
/// the bytes written.
pub fn write_rx(
    chain: &DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
    hdr: &Header,
    payload: &[u8],
) -> std::io::Result<usize> {
    let mut w = chain
        .clone()
        .writer(mem)
        .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
    let mut hdr = *hdr;
    hdr.len = u32::try_from(payload.len()).map_err(std::io::Error::other)?;
    w.write_all(&hdr.to_bytes())?;
    w.write_all(payload)?;
    Ok(HDR_LEN + payload.len())
}

#[cfg(test)]
#[path = "packet_tests.rs"]
mod tests;
