//! Copying frames out of the guest's transmit chains and into its receive chains.
//!
//! Chains are guest input: a descriptor may point outside guest memory, a transmit chain
//! may claim more than a frame, a receive chain may be too short or device-readable. Every
//! access goes through `vm-memory`, which checks it against the memory table, and every
//! length is bounded before anything is copied; a bad chain costs the guest its frame,
//! never the service.

use vireo_virtio::net::{RxOffloads, MAX_PACKET_LEN, VNET_HDR_LEN};
use virtio_queue::DescriptorChain;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};

/// Guest RAM as the frontend shared it with us.
pub type Mem = GuestMemoryMmap<()>;

/// Copies a transmit chain (virtio-net header then frame, split across device-readable
/// descriptors however the driver likes) into `buf` as the switch's packet: a 12-byte
/// header then the frame. `hdr_len` is the guest's header (10 without VERSION_1 and
/// MRG_RXBUF: its missing `num_buffers` is zeroed). Returns the packet's length.
pub fn gather<M>(
    mem: &Mem,
    chain: DescriptorChain<M>,
    hdr_len: usize,
    buf: &mut Vec<u8>,
) -> Result<usize, &'static str>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    // The guest's header lands so that it ends where ours does.
    let shift = VNET_HDR_LEN.saturating_sub(hdr_len);
    buf.resize(MAX_PACKET_LEN, 0);
    let mut at = shift;
    let mut descriptors = 0usize;
    let mut last_had_next = false;
    for d in chain {
        descriptors += 1;
        last_had_next = d.has_next();
        if d.is_write_only() {
            // A transmit chain is device-readable only; a writable descriptor ends it.
            return Err("a device-writable descriptor in a transmit chain");
        }
        let len = d.len() as usize;
        let end = at
            .checked_add(len)
            .filter(|e| *e <= MAX_PACKET_LEN)
            .ok_or("a transmit chain larger than the largest frame")?;
        let dst = buf.get_mut(at..end).ok_or("bounds")?;
        mem.read_slice(dst, d.addr())
            .map_err(|_| "a transmit buffer outside guest memory")?;
        at = end;
    }
    if descriptors == 0 || last_had_next {
        return Err("an empty or broken transmit chain (a loop, a bad index or table)");
    }
    if at < VNET_HDR_LEN + super::super::frame::ETH_HDR_LEN {
        return Err("a transmit chain shorter than the header and an Ethernet header");
    }
    if shift > 0 {
        // Move the 10-byte header to the front and zero num_buffers after it.
        buf.copy_within(shift..shift + hdr_len, 0);
        if let Some(nb) = buf.get_mut(hdr_len..VNET_HDR_LEN) {
            nb.fill(0);
        }
    }
    Ok(at)
}

/// The switch's packet as it goes to the guest: its header, made what the driver accepted
/// and with `num_buffers` 1 (one chain per frame: MRG_RXBUF is not offered), and the frame
/// after it, in the pieces the switch handed over.
pub struct RxPacket<'a> {
    hdr: [u8; VNET_HDR_LEN],
    parts: &'a [&'a [u8]],
    frame_len: usize,
}

impl<'a> RxPacket<'a> {
    /// `parts`: a 12-byte header then the frame, the header possibly itself in pieces.
    /// Refused if it is shorter than its header, or its offloads are not the driver's.
    pub fn new(parts: &'a [&'a [u8]], offloads: RxOffloads) -> Result<Self, &'static str> {
        let mut hdr = [0u8; VNET_HDR_LEN];
        let mut got = 0;
        let mut len = 0usize;
        for p in parts {
            let take = (VNET_HDR_LEN - got).min(p.len());
            hdr[got..got + take].copy_from_slice(&p[..take]);
            got += take;
            len = len.saturating_add(p.len());
        }
        if got < VNET_HDR_LEN {
            return Err("a packet shorter than its header");
        }
        if !offloads.fix_header(&mut hdr) {
            return Err("the guest did not negotiate the frame's offloads");
        }
        hdr[10..12].copy_from_slice(&1u16.to_le_bytes());
        Ok(RxPacket {
            hdr,
            parts,
            frame_len: len - VNET_HDR_LEN,
        })
    }

    /// The frame: `parts` past the header's bytes.
    fn frame(&self) -> impl Iterator<Item = &'a [u8]> {
        let mut skip = VNET_HDR_LEN;
        self.parts.iter().filter_map(move |p| {
            let take = skip.min(p.len());
            skip -= take;
            p.get(take..).filter(|rest| !rest.is_empty())
        })
    }
}

/// Writes `packet` into a receive chain, its header cut to the guest's `hdr_len`. Returns
/// the bytes written, the used length.
pub fn scatter<M>(
    mem: &Mem,
    chain: DescriptorChain<M>,
    hdr_len: usize,
    packet: &RxPacket,
) -> Result<u32, &'static str>
where
    M: std::ops::Deref,
    M::Target: vm_memory::GuestMemory,
{
    let head: &[u8] = &packet.hdr[..hdr_len.min(VNET_HDR_LEN)];
    let total = head.len() + packet.frame_len;
    let mut src = std::iter::once(head).chain(packet.frame());
    let mut cur: &[u8] = src.next().unwrap_or(&[]);
    let mut written = 0usize;
    for d in chain {
        if written == total {
            break;
        }
        if !d.is_write_only() {
            return Err("a device-readable descriptor in a receive chain");
        }
        let mut room = d.len() as usize;
        let mut addr = d.addr();
        while room > 0 && written < total {
            while cur.is_empty() {
                match src.next() {
                    Some(s) => cur = s,
                    None => break,
                }
            }
            let n = room.min(cur.len());
            if n == 0 {
                break;
            }
            mem.write_slice(&cur[..n], addr)
                .map_err(|_| "a receive buffer outside guest memory")?;
            cur = &cur[n..];
            room -= n;
            written += n;
            addr = GuestAddress(addr.0.checked_add(n as u64).ok_or("address overflow")?);
        }
    }
    if written < total {
        return Err("the guest's receive buffer is too small for the frame");
    }
    u32::try_from(written).map_err(|_| "frame too large")
}
