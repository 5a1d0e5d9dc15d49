//! What the backend is told about guest memory and the rings: the regions with their memfd
//! and offset (SET_MEM_TABLE), and each ring's address in *our* address space
//! (SET_VRING_ADDR), which the backend maps to its own through the memory table.

use super::VhostUserError;
use crate::GuestMemory;
use std::os::fd::AsRawFd;
use vhost::{VhostUserMemoryRegionInfo, VringConfigData};
use virtio_queue::{Queue, QueueT};
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

/// The memory table: every region must be a mapping of a file the backend can map too.
/// The descriptors stay owned by `mem`, which outlives the request that sends them.
pub(crate) fn memory_table(
    mem: &GuestMemory,
) -> Result<Vec<VhostUserMemoryRegionInfo>, VhostUserError> {
    mem.iter()
        .map(|region| {
            let gpa = region.start_addr().0;
            let file = region
                .file_offset()
                .ok_or(VhostUserError::MemoryNotShareable { gpa })?;
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|_| VhostUserError::MemoryNotShareable { gpa })?;
            Ok(VhostUserMemoryRegionInfo {
                guest_phys_addr: gpa,
                memory_size: region.len(),
                userspace_addr: host as u64,
                mmap_offset: file.start(),
                mmap_handle: file.file().as_raw_fd(),
            })
        })
        .collect()
}

/// The host address of `[gpa, gpa + len)` if it lies inside one region.
fn host_range(mem: &GuestMemory, gpa: u64, len: u64) -> Option<u64> {
    let (region, offset) = mem.to_region_addr(GuestAddress(gpa))?;
    let end = offset.0.checked_add(len)?;
    if end > region.len() {
        return None;
    }
    region.get_host_address(offset).ok().map(|p| p as u64)
}

/// The bytes each ring of a split queue of `size` entries spans, event index fields included
/// (virtio 1.2, 2.7).
pub(crate) fn ring_sizes(size: u16) -> (u64, u64, u64) {
    let n = u64::from(size);
    (16 * n, 6 + 2 * n, 6 + 8 * n)
}

/// SET_VRING_ADDR's payload for queue `index`.
pub(crate) fn vring_config(
    mem: &GuestMemory,
    index: u16,
    queue: &Queue,
) -> Result<VringConfigData, VhostUserError> {
    let (desc_len, avail_len, used_len) = ring_sizes(queue.size());
    let translate = |ring: &'static str, gpa: u64, len: u64| {
        host_range(mem, gpa, len).ok_or(VhostUserError::Ring { index, ring, gpa })
    };
    Ok(VringConfigData {
        queue_max_size: queue.max_size(),
        queue_size: queue.size(),
        flags: 0,
        desc_table_addr: translate("descriptor table", queue.desc_table(), desc_len)?,
        avail_ring_addr: translate("available ring", queue.avail_ring(), avail_len)?,
        used_ring_addr: translate("used ring", queue.used_ring(), used_len)?,
        log_addr: None,
    })
}
