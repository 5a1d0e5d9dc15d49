//! Returning receive buffers in groups. With MRG_RXBUF one packet fills several chains, and the
//! driver reads them as a unit as soon as it sees the first (Linux counts a packet whose later
//! buffers are not yet in the used ring as an error and drops it), so all of a packet's used
//! elements must become visible with one store of the used index. `Queue::add_used` publishes
//! each element on its own, hence this module, which does what QEMU's fill/flush pair does.

use crate::GuestMemory;
use std::num::Wrapping;
use std::sync::atomic::{fence, Ordering};
use virtio_bindings::virtio_ring::VRING_AVAIL_F_NO_INTERRUPT;
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};

/// Size of the used ring's header (flags, idx) and of one element (id, len).
const RING_HEADER: u64 = 4;
const USED_ELEM: u64 = 8;
const AVAIL_ELEM: u64 = 2;

/// Appends `entries` (head index, bytes written) to the used ring and publishes them at once.
pub(crate) fn publish(
    q: &mut Queue,
    mem: &GuestMemory,
    entries: &[(u16, u32)],
) -> Result<(), String> {
    let size = q.size();
    if size == 0 {
        return Err("the queue has no size".into());
    }
    let ring = q.used_ring();
    let mut next = Wrapping(q.next_used());
    for &(head, len) in entries {
        if head >= size {
            return Err(format!("descriptor index {head} beyond the queue"));
        }
        let slot = u64::from(next.0 % size);
        let addr = ring
            .checked_add(RING_HEADER + slot * USED_ELEM)
            .ok_or("the used ring wraps the address space")?;
        let mut elem = [0u8; 8];
        elem[..4].copy_from_slice(&u32::from(head).to_le_bytes());
        elem[4..].copy_from_slice(&len.to_le_bytes());
        mem.write_slice(&elem, GuestAddress(addr))
            .map_err(|e| format!("cannot write the used ring: {e}"))?;
        next += Wrapping(1);
    }
    let idx = ring
        .checked_add(2)
        .ok_or("the used ring wraps the address space")?;
    // Release: the elements (and the buffers' contents) are visible before the index.
    mem.store(next.0.to_le(), GuestAddress(idx), Ordering::Release)
        .map_err(|e| format!("cannot write the used index: {e}"))?;
    q.set_next_used(next.0);
    Ok(())
}

/// Whether the driver wants an interrupt for the used entries added since the used index was
/// `old` (virtio 1.2, 2.7.10): with EVENT_IDX, when the index moved past `used_event`;
/// otherwise unless it set VRING_AVAIL_F_NO_INTERRUPT.
pub(crate) fn needs_interrupt(q: &Queue, mem: &GuestMemory, old: u16) -> bool {
    let new = Wrapping(q.next_used());
    if new.0 == old {
        return false;
    }
    // The used index store is ordered before the read of the driver's event or flags.
    fence(Ordering::SeqCst);
    let avail = q.avail_ring();
    if q.event_idx_enabled() {
        let at = avail
            .checked_add(RING_HEADER + AVAIL_ELEM * u64::from(q.size()))
            .map(GuestAddress);
        let event = match at.map(|a| mem.load::<u16>(a, Ordering::Acquire)) {
            Some(Ok(e)) => Wrapping(u16::from_le(e)),
            // Unreadable: interrupt rather than risk a stalled driver.
            _ => return true,
        };
        // vring_need_event(): has new - old stepped over event?
        return (new - event - Wrapping(1)) < (new - Wrapping(old));
    }
    match mem.load::<u16>(GuestAddress(avail), Ordering::Acquire) {
        Ok(flags) => u16::from_le(flags) & VRING_AVAIL_F_NO_INTERRUPT as u16 == 0,
        Err(_) => true,
    }
}
