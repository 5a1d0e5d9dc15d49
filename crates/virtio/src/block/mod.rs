//! virtio-blk over a raw image file or block device, or a qcow2 image (virtio 1.2, 5.2).
//!
//! One request queue served on a worker thread: read, write, flush, get-id, discard and write
//! zeroes, optionally rate limited (`bps=`, `iops=`). The image is locked like QEMU locks its
//! images (exclusive for read-write, shared for read-only and for backing files), so that two
//! VMs cannot write it at once. `cache=none` bypasses the host page cache (O_DIRECT) for raw
//! images, `cache=writeback` uses it; both honour FLUSH with fdatasync, so a guest's fsync
//! reaches the disk either way. qcow2 images (`vireo-disk`) always use the page cache.

mod disk;
mod exec;
mod file;
mod request;
mod worker;

use crate::device::read_config_bytes;
use crate::rate_limiter::RateLimiter;
use crate::worker::Worker;
use crate::{features, types, ActivateError, Activation, VirtioDevice};
use disk::Disk;
use file::AlignedBuf;
use std::path::PathBuf;
use std::sync::Arc;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_F_BLK_SIZE, VIRTIO_BLK_F_DISCARD, VIRTIO_BLK_F_FLUSH, VIRTIO_BLK_F_RO,
    VIRTIO_BLK_F_SEG_MAX, VIRTIO_BLK_F_TOPOLOGY, VIRTIO_BLK_F_WRITE_ZEROES,
};
use worker::{BlockWorker, CHUNK};

pub const SECTOR_SIZE: u64 = 512;
/// Length of the serial GET_ID returns.
pub const ID_BYTES: usize = 20;
pub const QUEUE_SIZE: u16 = 256;
/// Data segments per request: the queue minus the header and status descriptors.
pub const SEG_MAX: u32 = QUEUE_SIZE as u32 - 2;
/// Largest discard / write zeroes range, in sectors: just under 4 GiB (a guest's bio cannot
/// be larger), a multiple of the discard alignment.
pub const MAX_DISCARD_SECTORS: u32 = (u32::MAX >> 9) & !7;
pub const MAX_WRITE_ZEROES_SECTORS: u32 = MAX_DISCARD_SECTORS;
pub const MAX_DISCARD_SEG: u32 = 1;
/// Discard granularity hint for raw images: 4 KiB, the block size of common host
/// filesystems (a hole can only free whole blocks). qcow2 images ask for their cluster size.
pub const DISCARD_SECTOR_ALIGNMENT: u32 = 8;

/// How the image uses the host page cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// O_DIRECT: no host caching; the guest's page cache is the only one.
    None,
    /// The host page cache; FLUSH makes the data durable.
    Writeback,
}

/// How the image file stores the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DiskFormat {
    /// The file (or block device) is the disk, byte for byte.
    #[default]
    Raw,
    /// QEMU's qcow2 (versions 2 and 3), with its backing chain.
    Qcow2,
}

impl std::str::FromStr for DiskFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<DiskFormat, String> {
        match s {
            "raw" => Ok(DiskFormat::Raw),
            "qcow2" => Ok(DiskFormat::Qcow2),
            other => Err(format!(
                "unknown disk format {other:?}; use raw or qcow2 (convert others with `qemu-img convert -O qcow2`)"
            )),
        }
    }
}

impl std::fmt::Display for DiskFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DiskFormat::Raw => "raw",
            DiskFormat::Qcow2 => "qcow2",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockConfig {
    pub path: PathBuf,
    pub format: DiskFormat,
    pub readonly: bool,
    pub cache: CacheMode,
    /// Operations per second, if limited.
    pub iops: Option<u64>,
    /// Bytes per second, if limited.
    pub bps: Option<u64>,
    /// The serial the guest reads with GET_ID (`/sys/block/vda/serial`), at most 20 bytes.
    pub id: String,
}

#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("disk image {path} does not exist; create it first (e.g. `truncate -s 1G {path}`)")]
    NotFound { path: String },
    #[error("disk image {path} is not a regular file or a block device")]
    NotAFile { path: String },
    #[error(
        "disk image {path} cannot be opened read-write ({source}); attach it with readonly=on or make it writable"
    )]
    ReadWriteDenied {
        path: String,
        source: std::io::Error,
    },
    #[error("disk image {path} cannot be read: permission denied")]
    ReadDenied { path: String },
    #[error(
        "disk image {path} is {size} bytes, not a whole number of 512-byte sectors; resize it (e.g. `truncate -s %512 {path}`)"
    )]
    Size { path: String, size: u64 },
    #[error("{}", locked_message(path, *readonly))]
    Locked { path: String, readonly: bool },
    #[error(
        "disk image {path}: the filesystem refuses direct I/O (cache=none): {source}; use cache=writeback"
    )]
    DirectIo {
        path: String,
        source: std::io::Error,
    },
    #[error("disk image {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("disk serial {id:?} is {} bytes; at most 20 are allowed", id.len())]
    Id { id: String },
    #[error(
        "qcow2 image {path} does not exist; create it first (e.g. `qemu-img create -f qcow2 {path} 10G`)"
    )]
    Qcow2NotFound { path: String },
    #[error(
        "backing file {backing} of disk image {path} does not exist; restore it, or rebase the image onto another (`qemu-img rebase -u -F FORMAT -b NEW {path}`)"
    )]
    BackingNotFound { path: String, backing: String },
    #[error(
        "qcow2 image {path} has a virtual size of {size} bytes, not a whole number of 512-byte sectors; resize it (`qemu-img resize -f qcow2 {path} SIZE`)"
    )]
    VirtualSize { path: String, size: u64 },
    /// The image is not valid qcow2, or uses a feature we do not serve.
    #[error("{0}")]
    Image(vireo_disk::OpenError),
}

fn locked_message(path: &str, readonly: bool) -> String {
    if readonly {
        format!("disk image {path} is open read-write by another process (it holds the image lock); stop it first")
    } else {
        format!("disk image {path} is in use by another process (it holds the image lock); stop it, or attach the image with readonly=on in both")
    }
}

crate::device::counters! {
    /// Request and error counters, updated by the worker and read by the API.
    pub(crate) struct Counters {
        read_ops,
        write_ops,
        read_bytes,
        write_bytes,
        flush_ops,
        discard_ops,
        write_zeroes_ops,
        errors,
        throttled,
    }
}

pub struct Block {
    cfg: BlockConfig,
    disk: Arc<Disk>,
    id: [u8; ID_BYTES],
    features: u64,
    config: Vec<u8>,
    counters: Arc<Counters>,
    worker: Option<Worker>,
}

impl Block {
    /// Opens and locks the image. The lock is held until the `Block` is dropped.
    pub fn new(cfg: BlockConfig) -> Result<Block, BlockError> {
        let mut id = [0u8; ID_BYTES];
        if cfg.id.len() > ID_BYTES {
            return Err(BlockError::Id { id: cfg.id });
        }
        for (d, s) in id.iter_mut().zip(cfg.id.bytes()) {
            *d = s;
        }
        let disk = Disk::open(&cfg)?;
        let mut features = features::VERSION_1
            | features::RING_EVENT_IDX
            | features::RING_INDIRECT_DESC
            | 1 << VIRTIO_BLK_F_SEG_MAX
            | 1 << VIRTIO_BLK_F_BLK_SIZE
            | 1 << VIRTIO_BLK_F_TOPOLOGY
            | 1 << VIRTIO_BLK_F_FLUSH
            | 1 << VIRTIO_BLK_F_DISCARD
            | 1 << VIRTIO_BLK_F_WRITE_ZEROES;
        if cfg.readonly {
            features |= 1 << VIRTIO_BLK_F_RO;
        }
        let config = config_space(
            disk.size() / SECTOR_SIZE,
            disk.direct_align(),
            disk.discard_alignment(),
        );
        Ok(Block {
            cfg,
            disk: Arc::new(disk),
            id,
            features,
            config,
            counters: Arc::default(),
            worker: None,
        })
    }

    /// The disk's size in 512-byte sectors.
    pub fn capacity(&self) -> u64 {
        self.disk.size() / SECTOR_SIZE
    }
}

/// struct virtio_blk_config (virtio 1.2, 5.2.4), little endian, up to the write-zeroes fields.
fn config_space(capacity: u64, host_block: u64, discard_alignment: u32) -> Vec<u8> {
    let mut c = Vec::with_capacity(60);
    c.extend_from_slice(&capacity.to_le_bytes());
    // size_max: F_SIZE_MAX is not offered; requests of any segment size are served in chunks.
    c.extend_from_slice(&0u32.to_le_bytes());
    c.extend_from_slice(&SEG_MAX.to_le_bytes());
    // geometry (F_GEOMETRY not offered).
    c.extend_from_slice(&[0; 4]);
    c.extend_from_slice(&(SECTOR_SIZE as u32).to_le_bytes());
    // topology: 512-byte logical blocks in host-sized physical blocks, so that the guest
    // aligns its I/O to what O_DIRECT needs.
    let per_physical = (host_block / SECTOR_SIZE).max(1);
    c.push(per_physical.trailing_zeros() as u8);
    c.push(0); // alignment_offset
    c.extend_from_slice(&(per_physical as u16).to_le_bytes()); // min_io_size, in blocks
    c.extend_from_slice(&0u32.to_le_bytes()); // opt_io_size
    c.push(0); // writeback (F_CONFIG_WCE not offered)
    c.push(0);
    c.extend_from_slice(&1u16.to_le_bytes()); // num_queues
    c.extend_from_slice(&MAX_DISCARD_SECTORS.to_le_bytes());
    c.extend_from_slice(&MAX_DISCARD_SEG.to_le_bytes());
    c.extend_from_slice(&discard_alignment.to_le_bytes());
    c.extend_from_slice(&MAX_WRITE_ZEROES_SECTORS.to_le_bytes());
    c.extend_from_slice(&MAX_DISCARD_SEG.to_le_bytes()); // max_write_zeroes_seg
    c.push(1); // write_zeroes_may_unmap
    c.extend_from_slice(&[0; 3]);
    c
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        types::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        self.features
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        self.reset();
        let queue = act
            .queues
            .into_iter()
            .find(|q| q.index == 0)
            .ok_or_else(|| ActivateError::Queues("the request queue is not enabled".into()))?;
        let limiter = match (self.cfg.bps, self.cfg.iops) {
            (None, None) => None,
            (bps, iops) => Some(RateLimiter::from_rates(bps, iops)?),
        };
        let mut state = BlockWorker {
            queue,
            mem: act.mem,
            interrupt: act.interrupt,
            writes: act.writes,
            disk: self.disk.clone(),
            limiter,
            counters: self.counters.clone(),
            buf: AlignedBuf::new(CHUNK),
            id: self.id,
            readonly: self.cfg.readonly,
        };
        let sources = state.sources();
        let worker = Worker::spawn("vireo-blk", &sources, move |i| state.on_ready(i))?;
        self.worker = Some(worker);
        Ok(())
    }

    fn reset(&mut self) {
        // Stopping joins the thread; dropping it drops the queue and guest memory.
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.counters.snapshot()
    }
}

#[cfg(test)]
mod file_tests;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod hostile_tests;
#[cfg(test)]
mod limit_tests;
#[cfg(test)]
mod qcow2_tests;
#[cfg(test)]
mod request_tests;
