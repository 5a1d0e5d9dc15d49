//! The pools a service owns: `STATE_DIR/pools/NAME/` each, opened at start.

use crate::block::BlockDevice;
use crate::error::{Result, StorageError};
use crate::pool::{DeviceSpec, Pool, PoolOptions};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};

pub struct Storage {
    dir: PathBuf,
    pools: RwLock<BTreeMap<String, Arc<Pool>>>,
}

/// Splits `POOL/VOL[@SNAP]`.
pub fn parse_volume_ref(name: &str) -> Result<(&str, &str)> {
    match name.split_once('/') {
        Some((pool, vol)) if !pool.is_empty() && !vol.is_empty() => Ok((pool, vol)),
        _ => Err(StorageError::Invalid(format!(
            "{name:?} is not a volume name: use POOL/VOL (or POOL/VOL@SNAP)"
        ))),
    }
}

impl Storage {
    /// Opens every pool under `dir/pools`, creating `dir` if needed.
    pub fn open(dir: &Path) -> Result<Storage> {
        let pools_dir = dir.join("pools");
        std::fs::create_dir_all(&pools_dir).map_err(StorageError::io(&pools_dir))?;
        let mut pools = BTreeMap::new();
        let entries = std::fs::read_dir(&pools_dir).map_err(StorageError::io(&pools_dir))?;
        for entry in entries {
            let entry = entry.map_err(StorageError::io(&pools_dir))?;
            if !entry.path().join("pool.json").exists() {
                continue;
            }
            let pool = Pool::open(&entry.path())?;
            pools.insert(pool.name().to_string(), pool);
        }
        Ok(Storage {
            dir: dir.to_path_buf(),
            pools: RwLock::new(pools),
        })
    }

    pub fn pool_create(
        &self,
        name: &str,
        devices: &[DeviceSpec],
        opts: PoolOptions,
    ) -> Result<Arc<Pool>> {
        let mut pools = self.pools.write().unwrap_or_else(|e| e.into_inner());
        if pools.contains_key(name) {
            return Err(StorageError::Conflict(format!(
                "pool {name} already exists"
            )));
        }
        // A device may belong to one pool only (Pool::create also finds other services'
        // labels on it).
        for pool in pools.values() {
            for path in pool.device_paths() {
                if devices.iter().any(|d| same_file(&d.path, &path)) {
                    return Err(StorageError::Conflict(format!(
                        "{} is already a device of pool {}",
                        path.display(),
                        pool.name()
                    )));
                }
            }
        }
        let pool = Pool::create(&self.dir.join("pools").join(name), name, devices, opts)?;
        pools.insert(name.to_string(), pool.clone());
        Ok(pool)
    }

    pub fn pool(&self, name: &str) -> Result<Arc<Pool>> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools.get(name).cloned().ok_or_else(|| {
            StorageError::NotFound(format!(
                "no pool named {name}: `vireo storage list` shows the pools"
            ))
        })
    }

    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let pools = self.pools.read().unwrap_or_else(|e| e.into_inner());
        pools.values().cloned().collect()
    }

    /// Opens `POOL/VOL` or `POOL/VOL@SNAP` for a serving path.
    pub fn open_export(&self, name: &str) -> Result<Arc<dyn BlockDevice>> {
        let (pool, vol) = parse_volume_ref(name)?;
        let vol: Arc<dyn BlockDevice> = self.pool(pool)?.open_volume(vol)?;
        Ok(vol)
    }

    /// `POOL/VOL` of every volume, for export listings.
    pub fn export_names(&self) -> Vec<String> {
        self.pools().iter().flat_map(|p| p.volume_names()).collect()
    }

    /// Makes every pool's acknowledged writes durable (at shutdown).
    pub fn commit_all(&self) -> Result<()> {
        for pool in self.pools() {
            pool.commit()?;
        }
        Ok(())
    }
}

fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => a == b,
    }
}
