//! A storage pool (seed 4.1): one or more devices in tiers, carved into thin and thick
//! volumes with snapshots and clones, dedup, compression, encryption and a read cache.
//!
//! On disk: `DIR/pool.json` (settings and devices), `DIR/checkpoint` and `DIR/journal.N`
//! (the metadata, see [`journal`]); each device carries a label naming the pool. Data
//! blocks live on the devices, encoded by [`codec`].

mod alloc;
mod cache;
mod codec;
mod device;
mod io;
mod journal;
mod state;
#[cfg(test)]
mod tests;
mod tier;
mod tree;
mod types;

pub use io::Volume;
pub use types::*;

use alloc::SECTOR;
use cache::Cache;
use codec::Codec;
use device::{Device, DeviceConfig, DATA_START};
use journal::{Record, VolMeta};
use serde::{Deserialize, Serialize};
use state::State;
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use crate::error::{Result, StorageError};

/// A journal this long is folded into a new checkpoint at the next commit.
const CHECKPOINT_AFTER: u64 = 64 << 20;

#[derive(Serialize, Deserialize, Clone)]
struct PoolConfig {
    name: String,
    uuid: String,
    block_size: u32,
    dedup: bool,
    compression: Compression,
    encryption_key_file: Option<PathBuf>,
    cache_bytes: u64,
    devices: Vec<DeviceConfig>,
}

struct JournalFile {
    file: File,
    generation: u64,
    len: u64,
}

pub struct Pool {
    dir: PathBuf,
    name: String,
    /// Only `add_device` changes it; never taken while holding the state or devices lock.
    config: Mutex<PoolConfig>,
    state: RwLock<State>,
    devices: RwLock<Vec<Arc<Device>>>,
    codec: Codec,
    block_size: u64,
    dedup: bool,
    compression: Compression,
    cache: Cache,
    journal: Mutex<JournalFile>,
    /// Per volume id: counters and rate limiters, shared by every open handle.
    runtime: Mutex<HashMap<u32, Arc<io::VolRuntime>>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn check_name(kind: &str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "{name:?} is not a valid {kind} name: use 1 to 64 letters, digits, '-', '_' or '.'"
        )))
    }
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random_uuid() -> Result<String> {
    let mut b = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut b, 0))
        .map_err(StorageError::io("/dev/urandom"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

fn write_config(dir: &Path, cfg: &PoolConfig) -> Result<()> {
    let path = dir.join("pool.json");
    let tmp = dir.join("pool.json.new");
    let body = serde_json::to_vec_pretty(cfg).unwrap_or_default();
    std::fs::write(&tmp, body)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(StorageError::io(&path))?;
    journal::sync_dir(dir)
}

impl Pool {
    /// Creates a pool named `name` whose state lives in `dir` (which must not exist).
    /// Nothing is left behind when it fails.
    pub fn create(
        dir: &Path,
        name: &str,
        devices: &[DeviceSpec],
        opts: PoolOptions,
    ) -> Result<Arc<Pool>> {
        check_name("pool", name)?;
        if devices.is_empty() {
            return Err(StorageError::Invalid(
                "a pool needs at least one device: --device FILE[,tier=fast|capacity]".into(),
            ));
        }
        let bs = opts.block_size;
        if !bs.is_power_of_two() || !(4096..=1 << 20).contains(&bs) {
            return Err(StorageError::Invalid(format!(
                "block size {bs} must be a power of two from 4K to 1M"
            )));
        }
        if let Some(k) = &opts.encryption_key_file {
            codec::read_key_file(k)?;
        }
        let configs: Vec<DeviceConfig> = devices
            .iter()
            .map(|d| DeviceConfig {
                path: std::path::absolute(&d.path).unwrap_or_else(|_| d.path.clone()),
                tier: d.tier,
            })
            .collect();
        // Opening checks each device (size, label, lock) before anything is written.
        let opened = configs
            .iter()
            .map(|c| Device::open(c, None))
            .collect::<Result<Vec<_>>>()?;
        if dir.exists() {
            return Err(StorageError::Conflict(format!(
                "{} already exists: pool {name} was created before",
                dir.display()
            )));
        }
        let cfg = PoolConfig {
            name: name.to_string(),
            uuid: random_uuid()?,
            block_size: bs,
            dedup: opts.dedup,
            compression: opts.compression,
            encryption_key_file: opts
                .encryption_key_file
                .map(|k| std::path::absolute(&k).unwrap_or(k)),
            cache_bytes: opts.cache_bytes,
            devices: configs,
        };
        let made = (|| {
            std::fs::create_dir_all(dir).map_err(StorageError::io(dir))?;
            let st = State {
                next_id: 1,
                next_vid: 1,
                block_size: u64::from(bs),
                ..State::default()
            };
            journal::write_checkpoint(dir, &st.checkpoint(0))?;
            write_config(dir, &cfg)?;
            for (i, d) in opened.iter().enumerate() {
                d.write_label(name, &cfg.uuid, i as u16)?;
            }
            Ok(())
        })();
        if let Err(e) = made {
            opened.iter().for_each(|d| d.erase_label());
            let _ = std::fs::remove_dir_all(dir);
            return Err(e);
        }
        drop(opened);
        Pool::open(dir)
    }

    /// Opens the pool whose state lives in `dir`, replaying its journal.
    pub fn open(dir: &Path) -> Result<Arc<Pool>> {
        let cfg_path = dir.join("pool.json");
        let cfg: PoolConfig = std::fs::read(&cfg_path)
            .map_err(StorageError::io(&cfg_path))
            .and_then(|b| {
                serde_json::from_slice(&b)
                    .map_err(|e| StorageError::Invalid(format!("{}: {e}", cfg_path.display())))
            })?;
        let key = match &cfg.encryption_key_file {
            Some(k) => Some(codec::read_key_file(k)?),
            None => None,
        };
        let devices = cfg
            .devices
            .iter()
            .enumerate()
            .map(|(i, c)| Device::open(c, Some((&cfg.uuid, i as u16))).map(Arc::new))
            .collect::<Result<Vec<_>>>()?;
        let cp = journal::read_checkpoint(dir)?;
        let generation = cp.generation;
        let bs = u64::from(cfg.block_size);
        let mut st = State::from_checkpoint(cp, bs).map_err(|e| {
            StorageError::Invalid(format!("{}: corrupt checkpoint: {e}", dir.display()))
        })?;
        let jpath = journal::journal_path(dir, generation);
        let records = match std::fs::read(&jpath) {
            Ok(data) => journal::decode_all(&data),
            // A crash between the checkpoint's rename and the journal's creation.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(StorageError::io(&jpath)(e)),
        };
        tracing::info!(pool = %cfg.name, records = records.len(), "replaying the journal");
        for rec in records {
            st.apply(rec);
        }
        st.build_allocators(&devices.iter().map(|d| d.sectors).collect::<Vec<_>>());
        // A fresh checkpoint: the replayed journal (and any torn tail) is folded in.
        let file = journal::write_checkpoint(dir, &st.checkpoint(generation + 1))?;
        let pool = Arc::new(Pool {
            dir: dir.to_path_buf(),
            name: cfg.name.clone(),
            codec: Codec::new(cfg.compression, key.as_ref()),
            block_size: bs,
            dedup: cfg.dedup,
            compression: cfg.compression,
            cache: Cache::new(cfg.cache_bytes),
            config: Mutex::new(cfg),
            state: RwLock::new(st),
            devices: RwLock::new(devices),
            journal: Mutex::new(JournalFile {
                file,
                generation: generation + 1,
                len: 0,
            }),
            runtime: Mutex::new(HashMap::new()),
        });
        tier::start_background(&pool);
        Ok(pool)
    }

    pub fn name(&self) -> String {
        self.name.clone()
    }

    fn read_state(&self) -> RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_state(&self) -> RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn devices(&self) -> RwLockReadGuard<'_, Vec<Arc<Device>>> {
        self.devices.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a device to a live pool: its space is usable at once.
    pub fn add_device(&self, spec: &DeviceSpec) -> Result<()> {
        let mut cfg = lock(&self.config);
        let dc = DeviceConfig {
            path: std::path::absolute(&spec.path).unwrap_or_else(|_| spec.path.clone()),
            tier: spec.tier,
        };
        let dev = Device::open(&dc, None)?;
        let index = cfg.devices.len() as u16;
        let mut next = cfg.clone();
        next.devices.push(dc);
        dev.write_label(&cfg.name, &cfg.uuid, index)?;
        if let Err(e) = write_config(&self.dir, &next) {
            dev.erase_label();
            return Err(e);
        }
        *cfg = next;
        // Lock order, everywhere: state, then devices (the data path holds the state's read
        // lock while it looks a device up).
        let mut st = self.write_state();
        let mut devices = self.devices.write().unwrap_or_else(|e| e.into_inner());
        st.allocs
            .push(alloc::Allocator::new(DATA_START, dev.sectors, Vec::new()));
        devices.push(Arc::new(dev));
        Ok(())
    }

    pub fn info(&self) -> PoolInfo {
        let cfg = lock(&self.config).clone();
        let st = self.read_state();
        let devices = self.devices();
        let bs = self.block_size;
        let mut infos = Vec::new();
        let (mut size, mut used) = (0, 0);
        for (d, a) in devices.iter().zip(&st.allocs) {
            let dsize = d.sectors.saturating_sub(DATA_START) * SECTOR;
            let dused = dsize.saturating_sub(a.free_sectors() * SECTOR);
            size += dsize;
            used += dused;
            infos.push(DeviceInfo {
                path: d.path.clone(),
                tier: d.tier,
                size: dsize,
                used: dused,
            });
        }
        let reserved = st.reserved_bytes();
        let refs: u64 = st.blocks.values().map(|b| u64::from(b.refs)).sum();
        let stored_sectors: u64 = st.blocks.values().map(|b| u64::from(b.loc.nsect)).sum();
        let nblocks = st.blocks.len() as u64;
        let ratio = |a: u64, b: u64| if b == 0 { 1.0 } else { a as f64 / b as f64 };
        PoolInfo {
            name: cfg.name,
            block_size: cfg.block_size,
            dedup: cfg.dedup,
            compression: cfg.compression,
            encrypted: cfg.encryption_key_file.is_some(),
            devices: infos,
            size,
            used,
            reserved,
            free: size.saturating_sub(used).saturating_sub(reserved),
            referenced: st.vols.values().map(|v| v.mapped * bs).sum(),
            dedup_ratio: ratio(refs, nblocks),
            compression_ratio: ratio(nblocks * bs, stored_sectors * SECTOR),
            volumes: st
                .vols
                .values()
                .filter(|v| v.meta.snapshot_of.is_none())
                .count(),
            cache: self.cache.info(),
        }
    }

    /// Bytes new blocks may still take: free sectors less thick reservations.
    fn check_space(&self, st: &State, size: u64) -> Result<()> {
        let free: u64 = st.allocs.iter().map(|a| a.free_sectors() * SECTOR).sum();
        let avail = free.saturating_sub(st.reserved_bytes());
        if size > avail {
            return Err(StorageError::NoSpace(format!(
                "pool {} has {avail} bytes available, {size} are needed: add a device \
                 (`vireo storage pool add-device`) or free space",
                self.name
            )));
        }
        Ok(())
    }

    fn check_size(&self, size: u64) -> Result<()> {
        if size == 0 || !size.is_multiple_of(512) {
            return Err(StorageError::Invalid(format!(
                "volume size {size} must be a positive multiple of 512 bytes"
            )));
        }
        if size.div_ceil(self.block_size) > tree::MAX_BLOCKS {
            return Err(StorageError::Invalid(format!(
                "volume size {size} is too large"
            )));
        }
        Ok(())
    }

    /// The id of volume `vol` (not a snapshot).
    fn volume_vid(st: &State, vol: &str) -> Result<u32> {
        st.vid(vol)
            .filter(|_| !vol.contains('@'))
            .ok_or_else(|| StorageError::NotFound(format!("no volume named {vol} in this pool")))
    }

    fn snapshot_vid(st: &State, vol: &str, snap: &str) -> Result<u32> {
        Pool::volume_vid(st, vol)?;
        st.vid(&format!("{vol}@{snap}")).ok_or_else(|| {
            StorageError::NotFound(format!("volume {vol} has no snapshot named {snap}"))
        })
    }

    /// Applies metadata changes and makes them durable before returning.
    fn change(&self, f: impl FnOnce(&mut State) -> Result<Vec<Record>>) -> Result<()> {
        {
            let mut st = self.write_state();
            let records = f(&mut st)?;
            for r in records {
                st.log(r);
            }
        }
        self.commit()
    }

    pub fn volume_create(&self, vol: &str, size: u64, opts: &VolumeOptions) -> Result<()> {
        check_name("volume", vol)?;
        self.check_size(size)?;
        self.change(|st| {
            if st.vid(vol).is_some() {
                return Err(StorageError::Conflict(format!(
                    "volume {vol} already exists"
                )));
            }
            if opts.thick {
                self.check_space(st, size.div_ceil(self.block_size) * self.block_size)?;
            }
            let vid = st.next_vid;
            Ok(vec![Record::Create {
                vid,
                meta: VolMeta {
                    name: vol.to_string(),
                    size,
                    thick: opts.thick,
                    iops: opts.iops.filter(|&n| n > 0),
                    bps: opts.bps.filter(|&n| n > 0),
                    snapshot_of: None,
                    origin: None,
                    created: now(),
                },
            }])
        })
    }

    pub fn volume_resize(&self, vol: &str, size: u64) -> Result<()> {
        self.check_size(size)?;
        self.change(|st| {
            let vid = Pool::volume_vid(st, vol)?;
            let meta = &st.vol(vid)?.meta;
            if size < meta.size {
                return Err(StorageError::Invalid(format!(
                    "volume {vol} has {} bytes: shrinking would lose data; only growing is supported",
                    meta.size
                )));
            }
            if meta.thick {
                let bs = self.block_size;
                self.check_space(st, (size.div_ceil(bs) - meta.size.div_ceil(bs)) * bs)?;
            }
            Ok(vec![Record::Resize { vid, size }])
        })
    }

    /// The clones made from snapshots of `vids`.
    fn clones_of(st: &State, vids: &[u32]) -> Vec<String> {
        st.vols
            .values()
            .filter(|v| v.meta.origin.is_some_and(|o| vids.contains(&o)))
            .map(|v| v.meta.name.clone())
            .collect()
    }

    /// Deletes a volume and its snapshots; refused while clones depend on them.
    pub fn volume_delete(&self, vol: &str) -> Result<()> {
        self.change(|st| {
            let vid = Pool::volume_vid(st, vol)?;
            let mut doomed: Vec<u32> = st
                .vols
                .iter()
                .filter(|(_, v)| v.meta.snapshot_of == Some(vid))
                .map(|(&s, _)| s)
                .collect();
            let clones = Pool::clones_of(st, &doomed);
            if !clones.is_empty() {
                return Err(StorageError::Conflict(format!(
                    "volume {vol} has clones ({}): delete them first",
                    clones.join(", ")
                )));
            }
            doomed.push(vid);
            Ok(doomed
                .into_iter()
                .map(|vid| Record::Delete { vid })
                .collect())
        })
    }

    pub fn volume_set_qos(&self, vol: &str, iops: Option<u64>, bps: Option<u64>) -> Result<()> {
        let (iops, bps) = (iops.filter(|&n| n > 0), bps.filter(|&n| n > 0));
        let mut vid = 0;
        self.change(|st| {
            vid = Pool::volume_vid(st, vol)?;
            Ok(vec![Record::Qos { vid, iops, bps }])
        })?;
        if let Some(rt) = lock(&self.runtime).get(&vid) {
            rt.set_limits(iops, bps);
        }
        Ok(())
    }

    fn full_name(&self, name: &str) -> String {
        format!("{}/{name}", self.name)
    }

    /// Logical bytes of `map` held by nothing else, and shared ones.
    fn unique_shared(&self, st: &State, vid: u32) -> (u64, u64) {
        let (mut unique, mut shared) = (0, 0);
        if let Some(v) = st.vols.get(&vid) {
            v.map.for_each_owned(&mut |id, exclusive| {
                let only = exclusive && st.blocks.get(&id).is_some_and(|b| b.refs == 1);
                if only {
                    unique += self.block_size;
                } else {
                    shared += self.block_size;
                }
            });
        }
        (unique, shared)
    }

    pub fn volume_info(&self, vol: &str) -> Result<VolumeInfo> {
        let st = self.read_state();
        let vid = Pool::volume_vid(&st, vol)?;
        Ok(self.info_of(&st, vid))
    }

    fn info_of(&self, st: &State, vid: u32) -> VolumeInfo {
        let Some(v) = st.vols.get(&vid) else {
            return VolumeInfo {
                name: String::new(),
                size: 0,
                thick: false,
                iops: None,
                bps: None,
                allocated: 0,
                unique: 0,
                shared: 0,
                origin: None,
                snapshots: Vec::new(),
                stats: VolumeStats::default(),
            };
        };
        let (unique, shared) = self.unique_shared(st, vid);
        VolumeInfo {
            name: self.full_name(&v.meta.name),
            size: v.meta.size,
            thick: v.meta.thick,
            iops: v.meta.iops,
            bps: v.meta.bps,
            allocated: v.mapped * self.block_size,
            unique,
            shared,
            origin: v
                .meta
                .origin
                .and_then(|o| st.vols.get(&o))
                .map(|o| self.full_name(&o.meta.name)),
            snapshots: st
                .vols
                .values()
                .filter(|s| s.meta.snapshot_of == Some(vid))
                .map(|s| self.full_name(&s.meta.name))
                .collect(),
            stats: lock(&self.runtime)
                .get(&vid)
                .map(|rt| rt.stats())
                .unwrap_or_default(),
        }
    }

    /// `POOL/VOL` of every volume (not snapshots): cheaper than [`Pool::volumes`].
    pub fn volume_names(&self) -> Vec<String> {
        let st = self.read_state();
        st.vols
            .values()
            .filter(|v| v.meta.snapshot_of.is_none())
            .map(|v| self.full_name(&v.meta.name))
            .collect()
    }

    /// The paths of the pool's devices.
    pub fn device_paths(&self) -> Vec<PathBuf> {
        lock(&self.config)
            .devices
            .iter()
            .map(|d| d.path.clone())
            .collect()
    }

    pub fn volumes(&self) -> Vec<VolumeInfo> {
        let st = self.read_state();
        st.vols
            .iter()
            .filter(|(_, v)| v.meta.snapshot_of.is_none())
            .map(|(&vid, _)| self.info_of(&st, vid))
            .collect()
    }

    /// Takes a read-only snapshot: O(1), whatever the volume's size.
    pub fn snapshot_create(&self, vol: &str, snap: &str) -> Result<()> {
        check_name("snapshot", snap)?;
        self.change(|st| {
            let of = Pool::volume_vid(st, vol)?;
            let name = format!("{vol}@{snap}");
            if st.vid(&name).is_some() {
                return Err(StorageError::Conflict(format!(
                    "snapshot {name} already exists"
                )));
            }
            let src = &st.vol(of)?.meta;
            let vid = st.next_vid;
            Ok(vec![
                Record::Create {
                    vid,
                    meta: VolMeta {
                        name,
                        size: src.size,
                        thick: false,
                        iops: None,
                        bps: None,
                        snapshot_of: Some(of),
                        origin: None,
                        created: now(),
                    },
                },
                Record::Share { vid, from: of },
            ])
        })
    }

    pub fn snapshot_delete(&self, vol: &str, snap: &str) -> Result<()> {
        self.change(|st| {
            let vid = Pool::snapshot_vid(st, vol, snap)?;
            let clones = Pool::clones_of(st, &[vid]);
            if !clones.is_empty() {
                return Err(StorageError::Conflict(format!(
                    "snapshot {vol}@{snap} has clones ({}): delete them first",
                    clones.join(", ")
                )));
            }
            Ok(vec![Record::Delete { vid }])
        })
    }

    pub fn snapshots(&self, vol: &str) -> Result<Vec<SnapshotInfo>> {
        let st = self.read_state();
        let of = Pool::volume_vid(&st, vol)?;
        Ok(st
            .vols
            .iter()
            .filter(|(_, v)| v.meta.snapshot_of == Some(of))
            .map(|(&vid, v)| SnapshotInfo {
                name: self.full_name(&v.meta.name),
                created: v.meta.created,
                size: v.meta.size,
                allocated: v.mapped * self.block_size,
                unique: self.unique_shared(&st, vid).0,
                clones: Pool::clones_of(&st, &[vid])
                    .iter()
                    .map(|c| self.full_name(c))
                    .collect(),
            })
            .collect())
    }

    /// Makes `new`, a writable volume sharing every block of `vol@snap`.
    pub fn volume_clone(&self, vol: &str, snap: &str, new: &str) -> Result<()> {
        check_name("volume", new)?;
        self.change(|st| {
            let from = Pool::snapshot_vid(st, vol, snap)?;
            if st.vid(new).is_some() {
                return Err(StorageError::Conflict(format!(
                    "volume {new} already exists"
                )));
            }
            let size = st.vol(from)?.meta.size;
            let vid = st.next_vid;
            Ok(vec![
                Record::Create {
                    vid,
                    meta: VolMeta {
                        name: new.to_string(),
                        size,
                        thick: false,
                        iops: None,
                        bps: None,
                        snapshot_of: None,
                        origin: Some(from),
                        created: now(),
                    },
                },
                Record::Share { vid, from },
            ])
        })
    }

    /// Returns `vol` to its content at `snap`; later snapshots are kept.
    pub fn volume_rollback(&self, vol: &str, snap: &str) -> Result<()> {
        self.change(|st| {
            let vid = Pool::volume_vid(st, vol)?;
            let from = Pool::snapshot_vid(st, vol, snap)?;
            let size = st.vol(from)?.meta.size;
            Ok(vec![
                Record::Share { vid, from },
                Record::Resize { vid, size },
            ])
        })
    }

    /// Opens `VOL` (writable) or `VOL@SNAP` (read-only) for I/O.
    pub fn open_volume(self: &Arc<Self>, name: &str) -> Result<Arc<Volume>> {
        let st = self.read_state();
        let vid = match name.split_once('@') {
            Some((vol, snap)) => Pool::snapshot_vid(&st, vol, snap)?,
            None => Pool::volume_vid(&st, name)?,
        };
        let meta = &st.vol(vid)?.meta;
        let rt = lock(&self.runtime)
            .entry(vid)
            .or_insert_with(|| Arc::new(io::VolRuntime::new(meta.iops, meta.bps)))
            .clone();
        Ok(Arc::new(Volume::new(
            self.clone(),
            vid,
            self.full_name(name),
            meta.snapshot_of.is_some(),
            rt,
        )))
    }

    /// Makes everything acknowledged so far durable: the devices' data, then the journal
    /// records that find it; then frees the space released since the last commit.
    pub fn commit(&self) -> Result<()> {
        let mut j = lock(&self.journal);
        let (buf, pending) = {
            let mut st = self.write_state();
            (
                std::mem::take(&mut st.journal),
                std::mem::take(&mut st.pending),
            )
        };
        let devices: Vec<Arc<Device>> = self.devices().clone();
        let durable = (|| {
            for d in &devices {
                d.sync().map_err(StorageError::io(&d.path))?;
            }
            if !buf.is_empty() {
                let jpath = journal::journal_path(&self.dir, j.generation);
                j.file
                    .write_all_at(&buf, j.len)
                    .and_then(|_| j.file.sync_data())
                    .map_err(StorageError::io(&jpath))?;
            }
            Ok(())
        })();
        if let Err(e) = durable {
            // Nothing of it is durable: the next commit writes it all again, at the same
            // place in the journal, before what was logged since.
            let mut st = self.write_state();
            let mut later = std::mem::replace(&mut st.journal, buf);
            st.journal.append(&mut later);
            st.pending.restore(pending);
            return Err(e);
        }
        j.len += buf.len() as u64;
        let mut st = self.write_state();
        self.release(&mut st, &devices, pending);
        if j.len > CHECKPOINT_AFTER {
            // Under the state lock nothing writes: the checkpoint holds only synced data.
            for d in &devices {
                d.sync().map_err(StorageError::io(&d.path))?;
            }
            j.file = journal::write_checkpoint(&self.dir, &st.checkpoint(j.generation + 1))?;
            j.generation += 1;
            j.len = 0;
            st.journal.clear();
            let pending = std::mem::take(&mut st.pending);
            self.release(&mut st, &devices, pending);
        }
        Ok(())
    }

    fn release(&self, st: &mut State, devices: &[Arc<Device>], pending: state::Pending) {
        for (dev, sector, n) in pending.runs {
            if let (Some(a), Some(d)) = (st.allocs.get_mut(dev as usize), devices.get(dev as usize))
            {
                a.release(sector, n);
                d.punch(sector, n);
            }
        }
    }
}
