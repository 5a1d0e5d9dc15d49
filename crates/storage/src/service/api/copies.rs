//! Handlers for what copies or serves a volume: import and export jobs, vhost-user
//! exports.

use super::{absolute, body, Reply, Request, Shared};
use crate::block::BlockDevice;
use crate::error::{Result, StorageError};
use crate::pool::VolumeOptions;
use crate::service::transfer::{self, Format, Source};
use serde::Deserialize;
use serde_json::json;
use std::path::{Path, PathBuf};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Import {
    file: PathBuf,
}

/// Starts copying an image file into `p/v`, creating the volume (thin, the image's size
/// rounded up to whole sectors) if it does not exist.
pub(super) fn import(svc: &Shared, p: &str, v: &str, req: &Request) -> Result<Reply> {
    let b: Import = body(req, r#"{"file": "/var/lib/images/debian.qcow2"}"#)?;
    absolute(&b.file, "image")?;
    let pool = svc.storage.pool(p)?;
    let name = format!("{p}/{v}");
    let claims = svc.claims.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(socket) = svc.vhost.serving(&name) {
        return Err(StorageError::Conflict(format!(
            "{name} is served over vhost-user on {}: stop the export before importing into it",
            socket.display()
        )));
    }
    let job = svc.jobs.begin("import", &name, b.file.clone())?;
    drop(claims);
    let prepared = (|| {
        let src = Source::open(&b.file)?;
        let size = src.size();
        let fresh = match pool.volume_info(v) {
            Ok(info) if info.size < size => {
                return Err(StorageError::Invalid(format!(
                    "{name} is {} bytes, smaller than the image {} ({size} bytes): resize it first (`vireo storage volume resize {name} --size {size}`) or import into a new volume",
                    info.size,
                    b.file.display()
                )))
            }
            Ok(_) => false,
            Err(StorageError::NotFound(_)) => {
                // Volumes are whole sectors.
                let vol_size = size.div_ceil(512).saturating_mul(512);
                pool.volume_create(v, vol_size, &VolumeOptions::default())?;
                tracing::info!("created volume {name} ({vol_size} bytes) for an import");
                true
            }
            Err(e) => return Err(e),
        };
        let vol = pool.open_volume(v)?;
        Ok((src, vol, fresh))
    })();
    let (src, vol, fresh) = match prepared {
        Ok(x) => x,
        Err(e) => {
            svc.jobs.abandon(&job);
            return Err(e);
        }
    };
    job.total
        .store(src.size(), std::sync::atomic::Ordering::Relaxed);
    let format = src.format();
    tracing::info!(
        "job {}: importing {} ({format}) into {name}",
        job.id,
        b.file.display(),
    );
    svc.jobs.run(job.clone(), move |j| {
        transfer::import(j, &src, vol.as_ref(), fresh)
    })?;
    let mut v = job.to_json();
    v["format"] = json!(format);
    v["created"] = json!(fresh);
    Ok(Reply::with_status(202, v))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Export {
    file: PathBuf,
    #[serde(default = "raw")]
    format: Format,
}

fn raw() -> Format {
    Format::Raw
}

/// Starts copying `p/v` (`v` may be `VOL@SNAP`) into a new image file.
pub(super) fn export(svc: &Shared, p: &str, v: &str, req: &Request) -> Result<Reply> {
    let b: Export = body(req, r#"{"file": "/tmp/vm1.qcow2", "format": "qcow2"}"#)?;
    absolute(&b.file, "image")?;
    let pool = svc.storage.pool(p)?;
    let name = format!("{p}/{v}");
    if let Some(owner) = pool_device_owner(svc, &b.file) {
        return Err(StorageError::Conflict(format!(
            "{} is a device of pool {owner}: export to another file",
            b.file.display()
        )));
    }
    let job = svc.jobs.begin("export", &name, b.file.clone())?;
    let prepared = pool.open_volume(v).and_then(|vol| {
        let out = transfer::create_target(&b.file, b.format, vol.size())?;
        Ok((vol, out))
    });
    let (vol, out) = match prepared {
        Ok(x) => x,
        Err(e) => {
            svc.jobs.abandon(&job);
            return Err(e);
        }
    };
    job.total
        .store(vol.size(), std::sync::atomic::Ordering::Relaxed);
    tracing::info!(
        "job {}: exporting {name} to {} ({:?})",
        job.id,
        b.file.display(),
        b.format
    );
    svc.jobs
        .run(job.clone(), move |j| transfer::export(j, vol.as_ref(), out))?;
    Ok(Reply::with_status(202, job.to_json()))
}

/// The pool whose device `path` is, if any (an export must never overwrite one).
fn pool_device_owner(svc: &Shared, path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let target = std::fs::metadata(path).ok()?;
    svc.storage.pools().iter().find_map(|pool| {
        let info = pool.info();
        info.devices
            .iter()
            .any(|d| {
                std::fs::metadata(&d.path)
                    .is_ok_and(|m| m.dev() == target.dev() && m.ino() == target.ino())
            })
            .then(|| info.name.clone())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VhostStart {
    volume: String,
    socket: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VhostStop {
    socket: PathBuf,
}

pub(super) fn vhost_start(svc: &Shared, req: &Request) -> Result<Reply> {
    let b: VhostStart = body(
        req,
        r#"{"volume": "tank/vm1", "socket": "/run/vireo/vm1.sock"}"#,
    )?;
    absolute(&b.socket, "vhost-user socket")?;
    let (pool, vol) = crate::registry::parse_volume_ref(&b.volume)?;
    let base = vol.split('@').next().unwrap_or(vol);
    svc.storage.pool(pool)?.volume_info(base)?;
    // A VM must not boot from a half-imported disk.
    let _claims = svc.claims.lock().unwrap_or_else(|p| p.into_inner());
    svc.jobs.check_not_importing(&format!("{pool}/{base}"))?;
    let v = svc.vhost.start(&svc.storage, &b.volume, &b.socket)?;
    Ok(Reply::with_status(201, v))
}

pub(super) fn vhost_stop(svc: &Shared, req: &Request) -> Result<Reply> {
    let b: VhostStop = body(req, r#"{"socket": "/run/vireo/vm1.sock"}"#)?;
    svc.vhost.stop(&b.socket)?;
    Ok(Reply::no_content())
}
