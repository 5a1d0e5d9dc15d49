//! Paravirtual I/O (seed 2.3): virtio 1.x devices on the modern PCI transport, the I/O path
//! that stock distribution kernels use.
//!
//! - [`device`]: what a device implements ([`VirtioDevice`]) and what it is given when the
//!   driver sets DRIVER_OK ([`Activation`]: guest memory, its queues, a way to interrupt).
//! - [`transport`]: the virtio-pci function (common, notify, ISR and device configuration
//!   regions in BAR 0, MSI-X table and PBA) that drives a [`VirtioDevice`].
//! - [`worker`]: the thread each active device runs its queues on.
//! - [`block`], [`rng`]: the devices. [`rate_limiter`]: token buckets for I/O QoS.
//!
//! Everything a guest writes to a queue is hostile: descriptor chains are parsed by
//! `virtio-queue` (bounds, loops, indirect tables) and a bad request gets an error status,
//! never a host panic.

pub mod balloon;
pub mod block;
pub mod console;
pub mod device;
pub mod net;
pub mod rate_limiter;
pub mod rng;
#[cfg(test)]
pub(crate) mod test_queue;
pub mod transport;
pub mod vhost_user;
pub mod vsock;
pub mod worker;

pub use device::{ActivateError, Activation, GuestWrites, Interrupt, QueueHandle, VirtioDevice};

/// Guest RAM as the devices see it (the VMM's memfd-backed regions).
pub type GuestMemory = vm_memory::GuestMemoryMmap<()>;

/// Device type numbers (virtio 1.2, section 5).
pub mod types {
    pub const NET: u32 = 1;
    pub const BLOCK: u32 = 2;
    pub const CONSOLE: u32 = 3;
    pub const RNG: u32 = 4;
    pub const BALLOON: u32 = 5;
    pub const VSOCK: u32 = 19;
}

/// Feature bits shared by all devices (virtio 1.2, section 6).
pub mod features {
    pub const RING_INDIRECT_DESC: u64 = 1 << 28;
    pub const RING_EVENT_IDX: u64 = 1 << 29;
    pub const VERSION_1: u64 = 1 << 32;
}
