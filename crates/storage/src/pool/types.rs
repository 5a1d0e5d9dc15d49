//! The pool's public vocabulary: what users configure and what `info` reports.

use crate::error::{Result, StorageError};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::str::FromStr;

/// The storage class of a device (seed 4, tiering): new and hot blocks live on `fast`
/// devices, cold blocks migrate to `capacity` devices.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Fast,
    #[default]
    Capacity,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    #[default]
    Off,
    Lz4,
    Zstd,
}

impl FromStr for Compression {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<Compression> {
        match s {
            "off" | "none" => Ok(Compression::Off),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(StorageError::Invalid(format!(
                "unknown compression {s:?}: use lz4, zstd or off"
            ))),
        }
    }
}

/// A backing file or block device of a pool: `FILE[,tier=fast|capacity]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DeviceSpec {
    pub path: PathBuf,
    #[serde(default)]
    pub tier: Tier,
}

impl FromStr for DeviceSpec {
    type Err = StorageError;
    fn from_str(s: &str) -> Result<DeviceSpec> {
        let mut parts = s.split(',');
        let path = parts.next().unwrap_or_default();
        if path.is_empty() {
            return Err(StorageError::Invalid(
                "a device needs a path: --device FILE[,tier=fast|capacity]".into(),
            ));
        }
        let mut tier = Tier::default();
        for opt in parts {
            tier = match opt {
                "tier=fast" => Tier::Fast,
                "tier=capacity" => Tier::Capacity,
                _ => {
                    return Err(StorageError::Invalid(format!(
                        "unknown device option {opt:?}: use tier=fast or tier=capacity"
                    )))
                }
            };
        }
        Ok(DeviceSpec {
            path: PathBuf::from(path),
            tier,
        })
    }
}

/// Set at `pool create`; fixed for the pool's life.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PoolOptions {
    pub dedup: bool,
    pub compression: Compression,
    /// A file holding the 64-byte AES-256-XTS key (raw, or 128 hex digits). The pool
    /// remembers the path, never the key.
    pub encryption_key_file: Option<PathBuf>,
    /// The bound of the in-memory read cache, in bytes (0: none).
    pub cache_bytes: u64,
    /// The unit of allocation, snapshots, dedup and compression (4 KiB to 1 MiB, a power
    /// of two).
    pub block_size: u32,
}

impl Default for PoolOptions {
    fn default() -> PoolOptions {
        PoolOptions {
            dedup: false,
            compression: Compression::Off,
            encryption_key_file: None,
            cache_bytes: 0,
            block_size: 64 * 1024,
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct VolumeOptions {
    /// Reserve the whole size in the pool at creation.
    pub thick: bool,
    /// Operations per second (token bucket, one second of burst).
    pub iops: Option<u64>,
    /// Bytes per second (token bucket, one second of burst).
    pub bps: Option<u64>,
}

#[derive(Serialize, Clone, Debug)]
pub struct DeviceInfo {
    pub path: PathBuf,
    pub tier: Tier,
    /// Bytes usable for data.
    pub size: u64,
    /// Bytes holding blocks.
    pub used: u64,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct CacheInfo {
    pub capacity: u64,
    pub bytes: u64,
    pub hits: u64,
    pub misses: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct PoolInfo {
    pub name: String,
    pub block_size: u32,
    pub dedup: bool,
    pub compression: Compression,
    pub encrypted: bool,
    pub devices: Vec<DeviceInfo>,
    /// Bytes of all devices.
    pub size: u64,
    /// Bytes holding blocks.
    pub used: u64,
    /// Bytes reserved by thick volumes and not yet written.
    pub reserved: u64,
    /// What new data can still take: size - used - reserved.
    pub free: u64,
    /// Logical bytes referenced by all volumes and snapshots, before dedup and compression.
    pub referenced: u64,
    /// Logical bytes of unique blocks over the blocks stored (1.0 without dedup).
    pub dedup_ratio: f64,
    /// Bytes of the blocks stored over the bytes they take on the devices.
    pub compression_ratio: f64,
    pub volumes: usize,
    pub cache: CacheInfo,
}

#[derive(Serialize, Clone, Debug, Default)]
pub struct VolumeStats {
    pub reads: u64,
    pub writes: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    pub flushes: u64,
    pub trims: u64,
    pub errors: u64,
    /// Requests that waited for the rate limiter.
    pub throttled: u64,
}

#[derive(Serialize, Clone, Debug)]
pub struct VolumeInfo {
    /// `POOL/VOL`.
    pub name: String,
    pub size: u64,
    pub thick: bool,
    pub iops: Option<u64>,
    pub bps: Option<u64>,
    /// Logical bytes mapped (written and not trimmed).
    pub allocated: u64,
    /// Of those, bytes no snapshot, clone or duplicate shares.
    pub unique: u64,
    pub shared: u64,
    /// `POOL/VOL@SNAP` this volume was cloned from.
    pub origin: Option<String>,
    pub snapshots: Vec<String>,
    pub stats: VolumeStats,
}

#[derive(Serialize, Clone, Debug)]
pub struct SnapshotInfo {
    /// `POOL/VOL@SNAP`.
    pub name: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub size: u64,
    pub allocated: u64,
    /// Bytes only this snapshot holds: what deleting it frees.
    pub unique: u64,
    /// Volumes cloned from it.
    pub clones: Vec<String>,
}
