//! Transmit chains: checked (device-readable only, inside guest memory, a header and a frame of
//! bounded size) and written to the tap straight from guest memory with one `writev`. The tap
//! parses the virtio-net header itself, so the guest's checksum and TSO requests pass through;
//! the kernel validates them and refuses a bad one with EINVAL.

use super::tap::Tap;
use super::{MAX_PACKET_LEN, VNET_HDR_LEN};
use crate::GuestMemory;
use std::io;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// The shortest frame worth sending: an Ethernet header.
const ETH_HLEN: usize = 14;
/// The most iovecs one writev takes (UIO_MAXIOV); a chain cut finer is copied instead.
const MAX_IOV: usize = 1024;

/// A checked transmit chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TxPacket {
    pub head: u16,
    /// Its buffers (address, length), none empty.
    pub segs: Vec<(u64, usize)>,
    /// Header and frame.
    pub len: usize,
}

impl TxPacket {
    /// Bytes of the Ethernet frame, the header excluded: what counters and limits count.
    pub(crate) fn frame_len(&self) -> u64 {
        self.len.saturating_sub(VNET_HDR_LEN) as u64
    }
}

pub(crate) fn check_chain(
    chain: virtio_queue::DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> Result<TxPacket, &'static str> {
    let head = chain.head_index();
    let mut segs = Vec::new();
    let mut len: usize = 0;
    for d in chain {
        if d.is_write_only() {
            return Err("a device-writable buffer in a transmit chain");
        }
        if d.len() == 0 {
            continue;
        }
        let n = usize::try_from(d.len()).map_err(|_| "a buffer larger than the address space")?;
        len = len.saturating_add(n);
        if len > MAX_PACKET_LEN {
            return Err("a transmit chain longer than the largest frame (64 KiB and headers)");
        }
        if !GuestMemoryBackend::check_range(mem, d.addr(), n) {
            return Err("a transmit buffer outside guest memory");
        }
        segs.push((d.addr().0, n));
    }
    if len < VNET_HDR_LEN + ETH_HLEN {
        return Err("a transmit chain shorter than the virtio-net and Ethernet headers");
    }
    Ok(TxPacket { head, segs, len })
}

/// Writes `pkt` to the tap. `bounce` (at least [`MAX_PACKET_LEN`] bytes) is used when the
/// chain has more pieces than one writev takes.
pub(crate) fn send(
    tap: &Tap,
    mem: &GuestMemory,
    pkt: &TxPacket,
    bounce: &mut [u8],
) -> io::Result<usize> {
    let mut guards = Vec::with_capacity(pkt.segs.len());
    let mut iov = Vec::with_capacity(pkt.segs.len());
    for &(addr, len) in &pkt.segs {
        for slice in GuestMemoryBackend::get_slices(mem, GuestAddress(addr), len) {
            let slice = slice.map_err(io::Error::other)?;
            let guard = slice.ptr_guard();
            iov.push(libc::iovec {
                iov_base: guard.as_ptr() as *mut libc::c_void,
                iov_len: slice.len(),
            });
            guards.push(guard);
        }
    }
    if iov.len() <= MAX_IOV {
        // SAFETY: each iovec is a slice of guest memory that check_chain found mapped; the
        // guards (and the memory, which `mem` keeps mapped) outlive the call.
        return unsafe { tap.writev(&iov) };
    }
    let buf = bounce
        .get_mut(..pkt.len)
        .ok_or_else(|| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
    let mut at = 0;
    for &(addr, len) in &pkt.segs {
        let dst = buf
            .get_mut(at..at + len)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EMSGSIZE))?;
        mem.read_slice(dst, GuestAddress(addr))
            .map_err(io::Error::other)?;
        at += len;
    }
    let one = [libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    }];
    // SAFETY: the iovec is `buf`, which we own and which outlives the call.
    unsafe { tap.writev(&one) }
}
