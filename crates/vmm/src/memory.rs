//! Guest RAM (seed 2.2): memfd-backed regions, so that the same pages can later be shared with
//! vhost-user device services and merged by KSM, laid out by the platform's address map.

use std::fs::File;
use std::os::fd::FromRawFd;
use vireo_arch::boot::ram_regions;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

pub use vireo_virtio::GuestMemory;

#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("cannot create the guest memory file: {0}")]
    Memfd(std::io::Error),
    #[error("cannot size the guest memory to {size} bytes: {source}")]
    Resize { size: u64, source: std::io::Error },
    #[error("cannot map guest memory: {0}")]
    Map(String),
}

/// Allocates `size` bytes of guest RAM. Pages are only touched (and so only cost host memory)
/// when the guest uses them.
pub fn create(size: u64) -> Result<GuestMemory, MemoryError> {
    // SAFETY: the name is a valid NUL-terminated string and the flags are constants; the
    // returned descriptor is checked and then owned by the File.
    let fd = unsafe { libc::memfd_create(c"vireo-guest-ram".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh descriptor that nothing else owns.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|source| MemoryError::Resize { size, source })?;
    let mut offset = 0;
    let mut ranges = Vec::new();
    for (base, len) in ram_regions(size) {
        let f = file.try_clone().map_err(MemoryError::Memfd)?;
        ranges.push((
            GuestAddress(base),
            len as usize,
            Some(FileOffset::new(f, offset)),
        ));
        offset += len;
    }
    GuestMemory::from_ranges_with_files(ranges).map_err(|e| MemoryError::Map(e.to_string()))
}

/// Maps every region of guest RAM into a VM of the backend.
pub fn map_into(vm: &dyn vireo_hypervisor::Vm, mem: &GuestMemory) -> vireo_hypervisor::Result<()> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|e| vireo_hypervisor::Error::Unsupported(e.to_string()))?;
        // SAFETY: the regions are owned by `mem`, which the VM object outlives by construction
        // (the VMM drops the backend VM before guest memory).
        unsafe { vm.map_memory(slot as u32, region.start_addr().0, host, region.len())? };
    }
    Ok(())
}
