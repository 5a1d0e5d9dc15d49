//! Handlers for the pools, volumes and snapshots.

use super::{absolute, body, Reply, Request, Shared};
use crate::error::{Result, StorageError};
use crate::pool::{Compression, DeviceSpec, PoolOptions, VolumeOptions};
use serde::Deserialize;
use serde_json::{json, Value};
use std::path::PathBuf;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolCreate {
    name: String,
    devices: Vec<DeviceSpec>,
    #[serde(default)]
    dedup: bool,
    #[serde(default)]
    compression: Compression,
    #[serde(default)]
    encryption_key_file: Option<PathBuf>,
    #[serde(default)]
    cache_bytes: u64,
    #[serde(default)]
    block_size: Option<u32>,
}

pub(super) fn pool_create(svc: &Shared, req: &Request) -> Result<Reply> {
    let b: PoolCreate = body(
        req,
        r#"{"name": "tank", "devices": [{"path": "/dev/sdb", "tier": "capacity"}]}"#,
    )?;
    if b.devices.is_empty() {
        return Err(StorageError::Invalid(
            "a pool needs at least one device (--device FILE)".into(),
        ));
    }
    for d in &b.devices {
        absolute(&d.path, "device")?;
    }
    if let Some(k) = &b.encryption_key_file {
        absolute(k, "encryption key file")?;
    }
    let defaults = PoolOptions::default();
    let opts = PoolOptions {
        dedup: b.dedup,
        compression: b.compression,
        encryption_key_file: b.encryption_key_file,
        cache_bytes: b.cache_bytes,
        block_size: b.block_size.unwrap_or(defaults.block_size),
    };
    let pool = svc.storage.pool_create(&b.name, &b.devices, opts)?;
    tracing::info!("created pool {}", b.name);
    Ok(Reply::with_status(201, json!(pool.info())))
}

pub(super) fn pool_add_device(svc: &Shared, p: &str, req: &Request) -> Result<Reply> {
    let spec: DeviceSpec = body(req, r#"{"path": "/dev/sdc", "tier": "fast"}"#)?;
    absolute(&spec.path, "device")?;
    let pool = svc.storage.pool(p)?;
    pool.add_device(&spec)?;
    tracing::info!("added {} to pool {p}", spec.path.display());
    Ok(Reply::ok(json!(pool.info())))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VolumeCreate {
    name: String,
    size: u64,
    #[serde(default)]
    thick: bool,
    #[serde(default)]
    iops: Option<u64>,
    #[serde(default)]
    bps: Option<u64>,
}

pub(super) fn volume_create(svc: &Shared, p: &str, req: &Request) -> Result<Reply> {
    let b: VolumeCreate = body(req, r#"{"name": "vm1", "size": 10737418240}"#)?;
    let pool = svc.storage.pool(p)?;
    let opts = VolumeOptions {
        thick: b.thick,
        iops: b.iops.filter(|&n| n > 0),
        bps: b.bps.filter(|&n| n > 0),
    };
    pool.volume_create(&b.name, b.size, &opts)?;
    tracing::info!("created volume {p}/{} ({} bytes)", b.name, b.size);
    Ok(Reply::with_status(201, json!(pool.volume_info(&b.name)?)))
}

pub(super) fn volume_delete(svc: &Shared, p: &str, v: &str) -> Result<Reply> {
    let pool = svc.storage.pool(p)?;
    let name = format!("{p}/{v}");
    svc.jobs.check_idle(&name)?;
    // The pool refuses while clones depend on it; once it is gone, its exports (and its
    // snapshots') only hold a volume whose I/O fails: stop them.
    pool.volume_delete(v)?;
    svc.vhost.stop_volume(&name);
    tracing::info!("deleted volume {name}");
    Ok(Reply::no_content())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    size: u64,
}

pub(super) fn volume_resize(svc: &Shared, p: &str, v: &str, req: &Request) -> Result<Reply> {
    let b: Resize = body(req, r#"{"size": 21474836480}"#)?;
    let pool = svc.storage.pool(p)?;
    pool.volume_resize(v, b.size)?;
    tracing::info!("resized volume {p}/{v} to {} bytes", b.size);
    Ok(Reply::ok(json!(pool.volume_info(v)?)))
}

/// `{"iops": N, "bps": N}`: a field left out keeps its limit; `0` or `null` removes it.
pub(super) fn volume_qos(svc: &Shared, p: &str, v: &str, req: &Request) -> Result<Reply> {
    let b: serde_json::Map<String, Value> = body(req, r#"{"iops": 1000, "bps": 0}"#)?;
    let pool = svc.storage.pool(p)?;
    let info = pool.volume_info(v)?;
    let limit = |key: &str, current: Option<u64>| -> Result<Option<u64>> {
        match b.get(key) {
            None => Ok(current),
            Some(Value::Null) => Ok(None),
            Some(x) => x.as_u64().map(|n| (n > 0).then_some(n)).ok_or_else(|| {
                StorageError::Invalid(format!(
                    "{key} must be a non-negative integer (0 or null: no limit)"
                ))
            }),
        }
    };
    if let Some(k) = b.keys().find(|k| *k != "iops" && *k != "bps") {
        return Err(StorageError::Invalid(format!(
            "unknown field {k:?}: QoS takes iops and bps"
        )));
    }
    let (iops, bps) = (limit("iops", info.iops)?, limit("bps", info.bps)?);
    pool.volume_set_qos(v, iops, bps)?;
    Ok(Reply::ok(json!(pool.volume_info(v)?)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Named {
    name: String,
}

pub(super) fn snapshot_info(svc: &Shared, p: &str, v: &str, snap: &str) -> Result<Value> {
    let full = format!("{p}/{v}@{snap}");
    svc.storage
        .pool(p)?
        .snapshots(v)?
        .into_iter()
        .find(|s| s.name == full)
        .map(|s| json!(s))
        .ok_or_else(|| {
            StorageError::NotFound(format!(
                "no snapshot {full}: `vireo storage snapshot list {p}/{v}` shows them"
            ))
        })
}

pub(super) fn snapshot_create(svc: &Shared, p: &str, v: &str, req: &Request) -> Result<Reply> {
    let b: Named = body(req, r#"{"name": "before-upgrade"}"#)?;
    svc.storage.pool(p)?.snapshot_create(v, &b.name)?;
    tracing::info!("created snapshot {p}/{v}@{}", b.name);
    let info = snapshot_info(svc, p, v, &b.name)
        .unwrap_or_else(|_| json!({ "name": format!("{p}/{v}@{}", b.name) }));
    Ok(Reply::with_status(201, info))
}

pub(super) fn snapshot_delete(svc: &Shared, p: &str, v: &str, snap: &str) -> Result<Reply> {
    let pool = svc.storage.pool(p)?;
    let name = format!("{p}/{v}@{snap}");
    snapshot_info(svc, p, v, snap)?;
    svc.jobs.check_idle(&name)?;
    svc.vhost.stop_volume(&name);
    pool.snapshot_delete(v, snap)?;
    tracing::info!("deleted snapshot {name}");
    Ok(Reply::no_content())
}

pub(super) fn clone(svc: &Shared, p: &str, v: &str, snap: &str, req: &Request) -> Result<Reply> {
    let b: Named = body(req, r#"{"name": "vm2"}"#)?;
    let pool = svc.storage.pool(p)?;
    pool.volume_clone(v, snap, &b.name)?;
    tracing::info!("cloned {p}/{v}@{snap} as {p}/{}", b.name);
    Ok(Reply::with_status(201, json!(pool.volume_info(&b.name)?)))
}

pub(super) fn rollback(svc: &Shared, p: &str, v: &str, snap: &str) -> Result<Reply> {
    let pool = svc.storage.pool(p)?;
    let name = format!("{p}/{v}");
    svc.jobs.check_idle(&name)?;
    // A VM on the volume would see its disk change under its filesystem.
    if let Some(socket) = svc.vhost.serving(&name) {
        return Err(StorageError::Conflict(format!(
            "{name} is served over vhost-user on {}: stop its VM and the export (`vireo storage vhost-user --stop --socket {}`) before rolling it back",
            socket.display(),
            socket.display()
        )));
    }
    pool.volume_rollback(v, snap)?;
    tracing::info!("rolled {name} back to @{snap}");
    Ok(Reply::ok(json!(pool.volume_info(v)?)))
}
