//! What the backend tells the frontend about the disk: the virtio feature bits it offers and
//! the virtio-blk configuration space (virtio 1.2, 5.2.3 and 5.2.4), and the limits a request
//! must respect. The limits are chosen so that a conforming driver can never exceed the
//! request size cap: `SEG_MAX` segments of at most `SIZE_MAX` bytes.

use crate::block::BlockDevice;
use vhost::vhost_user::VhostUserVirtioFeatures;
use virtio_bindings::virtio_blk::*;
use virtio_bindings::virtio_config::VIRTIO_F_VERSION_1;
use virtio_bindings::virtio_ring::{VIRTIO_RING_F_EVENT_IDX, VIRTIO_RING_F_INDIRECT_DESC};

/// The unit of virtio-blk addresses and lengths.
pub const SECTOR: u64 = 512;
/// The largest queue a frontend may set up (QEMU's `queue-size` goes up to 1024).
pub const MAX_QUEUE_SIZE: usize = 1024;
/// Data segments per request: a 256-entry queue minus the header and status descriptors.
pub const SEG_MAX: u32 = 254;
/// The largest data segment.
pub const SIZE_MAX: u32 = 128 << 10;
/// The largest IN or OUT request, in bytes (31.75 MiB): larger ones get IOERR, so a guest
/// cannot make the backend allocate more than this per queue.
pub const MAX_REQUEST_BYTES: u64 = SEG_MAX as u64 * SIZE_MAX as u64;
/// Largest discard or write-zeroes range, in sectors: just under 4 GiB (a guest's bio cannot
/// be larger).
pub const MAX_RANGE_SECTORS: u32 = u32::MAX >> 9;
/// Ranges per DISCARD request (Linux merges adjacent discards up to this).
pub const MAX_DISCARD_SEG: u32 = 16;
/// Ranges per WRITE_ZEROES request (Linux always sends one).
pub const MAX_WRITE_ZEROES_SEG: u32 = 1;
/// Length of the serial GET_ID returns.
pub const ID_BYTES: usize = VIRTIO_BLK_ID_BYTES as usize;
/// Queues a backend may be started with: one worker thread each, at most 64 (the worker map
/// of `vhost-user-backend` is a 64-bit mask).
pub const MAX_QUEUES: u16 = 16;

/// `struct virtio_blk_config` up to `write_zeroes_may_unmap` and its padding: the fields of
/// the features we offer. Reads past it (secure erase, zones) see zeros.
pub const CONFIG_LEN: usize = 60;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// The virtio features offered for a device, which is read-only or not.
pub fn features(read_only: bool) -> u64 {
    let mut f = bit(VIRTIO_F_VERSION_1)
        | bit(VIRTIO_RING_F_INDIRECT_DESC)
        | bit(VIRTIO_RING_F_EVENT_IDX)
        | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
        | bit(VIRTIO_BLK_F_SIZE_MAX)
        | bit(VIRTIO_BLK_F_SEG_MAX)
        | bit(VIRTIO_BLK_F_BLK_SIZE)
        | bit(VIRTIO_BLK_F_TOPOLOGY)
        | bit(VIRTIO_BLK_F_FLUSH)
        | bit(VIRTIO_BLK_F_MQ);
    if read_only {
        f |= bit(VIRTIO_BLK_F_RO);
    } else {
        // Freeing or zeroing space is writing: not offered on a read-only disk.
        f |= bit(VIRTIO_BLK_F_DISCARD) | bit(VIRTIO_BLK_F_WRITE_ZEROES);
    }
    f
}

/// The device's block size in sectors, when it is a usable one (a power of two of at least
/// one sector); 1 otherwise.
fn block_sectors(dev: &dyn BlockDevice) -> u32 {
    let bs = dev.block_size();
    if bs.is_power_of_two() && u64::from(bs) >= SECTOR {
        bs / SECTOR as u32
    } else {
        1
    }
}

/// The configuration space. The guest addresses the disk in 512-byte logical blocks (what
/// every partitioning tool expects); the volume's block size is its physical block (capped at
/// 4 KiB, the largest a Linux filesystem block can be here), its optimal I/O size and its
/// discard granularity, so that filesystems align to it.
pub fn config_space(dev: &dyn BlockDevice, num_queues: u16) -> [u8; CONFIG_LEN] {
    let sectors = block_sectors(dev);
    let physical_exp = sectors.min(8).trailing_zeros() as u8;
    let mut c = [0u8; CONFIG_LEN];
    let mut put = |off: usize, bytes: &[u8]| {
        if let Some(dst) = c.get_mut(off..off + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    };
    put(0, &(dev.size() / SECTOR).to_le_bytes()); // capacity
    put(8, &SIZE_MAX.to_le_bytes());
    put(12, &SEG_MAX.to_le_bytes());
    put(20, &(SECTOR as u32).to_le_bytes()); // blk_size
    put(24, &[physical_exp, 0]); // physical_block_exp, alignment_offset
    put(26, &(sectors.min(u32::from(u16::MAX)) as u16).to_le_bytes()); // min_io_size
    put(28, &sectors.to_le_bytes()); // opt_io_size
    put(34, &num_queues.to_le_bytes());
    // Whole device blocks per range, so that a maximal range stays aligned.
    let max_range = MAX_RANGE_SECTORS / sectors * sectors;
    put(36, &max_range.to_le_bytes()); // max_discard_sectors
    put(40, &MAX_DISCARD_SEG.to_le_bytes());
    put(44, &sectors.to_le_bytes()); // discard_sector_alignment
    put(48, &max_range.to_le_bytes()); // max_write_zeroes_sectors
    put(52, &MAX_WRITE_ZEROES_SEG.to_le_bytes());
    put(56, &[1]); // write_zeroes_may_unmap
    c
}
