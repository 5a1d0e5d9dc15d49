//! Storage virtualization (seed section 4): a service that owns storage pools and serves
//! their volumes to VMs over vhost-user-blk and to host tools over NBD.
//!
//! - [`pool`]: the engine: devices in tiers, thin and thick volumes, snapshots and clones,
//!   dedup, compression, encryption, read cache, a journal for durability.
//! - [`registry::Storage`]: the pools one service owns.
//! - [`block::BlockDevice`]: what the serving paths (NBD, vhost-user-blk, import/export)
//!   need from a volume.

pub mod block;
pub mod error;
pub mod file;
pub mod pool;
pub mod registry;

pub use block::{BlockDevice, Extent};
pub use error::{Result, StorageError};
pub use file::FileDevice;
pub use registry::{parse_volume_ref, Storage};
pub mod nbd;
pub mod service;
pub mod vhost_user;
