//! Receive buffers: chains the driver posted on the receive queue, checked once when taken
//! from the ring and held (as guest addresses, not borrowed chains) until a packet fills them.
//! Holding them lets a packet that needs several buffers (MRG_RXBUF) wait for the driver to post
//! more without being dropped, and lets the device take a packet out of the tap only when it
//! has somewhere to put it.

use super::used;
use super::{MAX_PACKET_LEN, VNET_HDR_LEN};
use crate::{GuestMemory, GuestWrites};
use std::collections::VecDeque;
use std::sync::Arc;
use virtio_queue::{DescriptorChain, Queue};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

/// Where `num_buffers` sits in `struct virtio_net_hdr_v1`.
const NUM_BUFFERS: usize = 10;

/// One posted receive chain: its head and its device-writable buffers, all inside guest memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RxChain {
    pub head: u16,
    pub bufs: Vec<(u64, u32)>,
    /// Their total length, counted up to [`MAX_PACKET_LEN`]: no packet needs more.
    pub capacity: usize,
}

/// Checks a receive chain: only device-writable buffers, inside guest memory, room for at least
/// the header. A chain that fails is returned to the driver unused.
pub(crate) fn check_chain(
    chain: DescriptorChain<&GuestMemory>,
    mem: &GuestMemory,
) -> Result<RxChain, &'static str> {
    let head = chain.head_index();
    let mut bufs = Vec::new();
    let mut capacity: usize = 0;
    for d in chain {
        if !d.is_write_only() {
            return Err("a device-readable buffer in a receive chain");
        }
        if d.len() == 0 {
            continue;
        }
        let len = usize::try_from(d.len()).map_err(|_| "a buffer larger than the address space")?;
        if !GuestMemoryBackend::check_range(mem, d.addr(), len) {
            return Err("a receive buffer outside guest memory");
        }
        if capacity < MAX_PACKET_LEN {
            bufs.push((d.addr().0, d.len()));
            capacity = capacity.saturating_add(len);
        }
    }
    if capacity < VNET_HDR_LEN {
        return Err("a receive chain too short for the virtio-net header");
    }
    Ok(RxChain {
        head,
        bufs,
        capacity: capacity.min(MAX_PACKET_LEN),
    })
}

/// What became of a packet offered to the held buffers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// Written into this many chains, which are back in the used ring.
    Done(u16),
    /// The held chains are too small together: take more from the ring and retry.
    NeedMore,
    /// It can never fit (the driver's buffers are too small for it): drop it.
    TooBig,
    /// Guest memory could not be written; the chains were returned empty.
    Failed,
}

#[derive(Default)]
pub(crate) struct RxBuffers {
    chains: VecDeque<RxChain>,
}

impl RxBuffers {
    pub(crate) fn is_empty(&self) -> bool {
        self.chains.is_empty()
    }

    pub(crate) fn push(&mut self, chain: RxChain) {
        self.chains.push_back(chain);
    }

    /// Writes `packet` (header and frame) into the first held chains and returns them used,
    /// all in one publication. `mrg`: the packet may span chains (then `num_buffers` in its
    /// header says how many); otherwise it must fit the first one. `ring_size` bounds how many
    /// chains the driver can ever post.
    pub(crate) fn deliver(
        &mut self,
        packet: &mut [u8],
        mrg: bool,
        ring_size: u16,
        q: &mut Queue,
        mem: &GuestMemory,
        writes: &Option<Arc<dyn GuestWrites>>,
    ) -> Delivery {
        let Some(first) = self.chains.front() else {
            return Delivery::NeedMore;
        };
        let count = if mrg {
            let mut room = 0usize;
            let mut count = 0usize;
            for c in &self.chains {
                if room >= packet.len() {
                    break;
                }
                room = room.saturating_add(c.capacity);
                count += 1;
            }
            if room < packet.len() {
                // Every descriptor head is already ours: the driver cannot post more.
                if self.chains.len() >= usize::from(ring_size) {
                    return Delivery::TooBig;
                }
                return Delivery::NeedMore;
            }
            count
        } else if first.capacity < packet.len() {
            return Delivery::TooBig;
        } else {
            1
        };
        let Ok(num_buffers) = u16::try_from(count) else {
            return Delivery::TooBig;
        };
        if let Some(field) = packet.get_mut(NUM_BUFFERS..NUM_BUFFERS + 2) {
            field.copy_from_slice(&num_buffers.to_le_bytes());
        }

        let mut used = Vec::with_capacity(count);
        let mut rest: &[u8] = packet;
        let mut ok = true;
        for chain in self.chains.drain(..count) {
            let mut written = 0u32;
            for &(addr, len) in &chain.bufs {
                if rest.is_empty() {
                    break;
                }
                let n = rest.len().min(len as usize);
                let (part, tail) = rest.split_at(n);
                if let Err(e) = mem.write_slice(part, GuestAddress(addr)) {
                    tracing::warn!("virtio-net: cannot write a receive buffer: {e}");
                    ok = false;
                    break;
                }
                if let Some(w) = writes {
                    w.written(addr, n as u64);
                }
                rest = tail;
                written += n as u32;
            }
            used.push((chain.head, written));
        }
        if !ok {
            for u in &mut used {
                u.1 = 0;
            }
        }
        if let Err(e) = used::publish(q, mem, &used) {
            tracing::warn!("virtio-net: cannot return receive buffers: {e}");
            return Delivery::Failed;
        }
        if ok {
            Delivery::Done(num_buffers)
        } else {
            Delivery::Failed
        }
    }
}
