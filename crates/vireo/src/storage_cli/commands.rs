//! The client commands: each one API call (or a job followed to its end) and a line or
//! table of output.

use super::client::{follow, seg, snap_path, snapshot_ref, vol_path, volume_ref, Client};
use super::{absolute, s, show, ImageFormat, PoolCmd, SnapshotCmd, VhostUserArgs, VolumeCmd};
use serde_json::json;

pub(super) fn pool(c: &Client, cmd: PoolCmd) -> Result<(), String> {
    match cmd {
        PoolCmd::Create {
            name,
            devices,
            dedup,
            compression,
            encryption_key_file,
            cache,
            block_size,
        } => {
            let block_size = block_size
                .map(|b| u32::try_from(b).map_err(|_| format!("--block-size {b} is too large")))
                .transpose()?;
            let key = encryption_key_file.as_deref().map(absolute).transpose()?;
            let info = c.call(
                "POST",
                "/api/v1/pools",
                Some(json!({
                    "name": name,
                    "devices": devices,
                    "dedup": dedup,
                    "compression": compression,
                    "encryption_key_file": key,
                    "cache_bytes": cache.unwrap_or(0),
                    "block_size": block_size,
                })),
            )?;
            println!(
                "created pool {name}: {} on {} device(s), {} blocks",
                show::bytes(&info["size"]),
                info["devices"].as_array().map_or(0, Vec::len),
                show::bytes(&info["block_size"])
            );
        }
        PoolCmd::AddDevice { name, device } => {
            let info = c.call(
                "POST",
                &format!("/api/v1/pools/{}/devices", seg(&name)),
                Some(json!(device)),
            )?;
            println!(
                "added {} to pool {name}: {} now",
                device.path.display(),
                show::bytes(&info["size"])
            );
        }
        PoolCmd::Info { name } => {
            show::pretty(&c.call("GET", &format!("/api/v1/pools/{}", seg(&name)), None)?)
        }
        PoolCmd::Rebalance { name } => {
            let r = c.call(
                "POST",
                &format!("/api/v1/pools/{}/rebalance", seg(&name)),
                None,
            )?;
            println!("pool {name}: moved {} blocks between tiers", r["moved"]);
        }
    }
    Ok(())
}

pub(super) fn volume(c: &Client, cmd: VolumeCmd) -> Result<(), String> {
    match cmd {
        VolumeCmd::Create {
            name,
            size,
            thick,
            iops,
            bps,
        } => {
            let (p, v) = volume_ref(&name)?;
            let info = c.call(
                "POST",
                &format!("/api/v1/pools/{}/volumes", seg(p)),
                Some(json!({ "name": v, "size": size, "thick": thick, "iops": iops, "bps": bps })),
            )?;
            println!(
                "created volume {name}: {}, {}",
                show::bytes(&info["size"]),
                if thick { "thick" } else { "thin" }
            );
        }
        VolumeCmd::Resize { name, size } => {
            let (p, v) = volume_ref(&name)?;
            let info = c.call(
                "POST",
                &format!("{}/resize", vol_path(p, v)),
                Some(json!({ "size": size })),
            )?;
            println!("resized {name} to {}", show::bytes(&info["size"]));
        }
        VolumeCmd::Delete { name } => {
            let (p, v) = volume_ref(&name)?;
            c.call("DELETE", &vol_path(p, v), None)?;
            println!("deleted volume {name}");
        }
        VolumeCmd::Info { name } => {
            let (p, v) = volume_ref(&name)?;
            show::pretty(&c.call("GET", &vol_path(p, v), None)?);
        }
        VolumeCmd::Qos { name, iops, bps } => {
            let (p, v) = volume_ref(&name)?;
            let mut body = serde_json::Map::new();
            if let Some(n) = iops {
                body.insert("iops".into(), json!(n));
            }
            if let Some(n) = bps {
                body.insert("bps".into(), json!(n));
            }
            let info = c.call("PUT", &format!("{}/qos", vol_path(p, v)), Some(body.into()))?;
            println!("{name}: {}", show::qos(&info));
        }
        VolumeCmd::Clone { snapshot, new } => {
            let (p, v, snap) = snapshot_ref(&snapshot)?;
            let (np, nv) = volume_ref(&new)?;
            if np != p {
                return Err(format!(
                    "a clone shares its snapshot's blocks, so it lives in the same pool: use {p}/{nv}"
                ));
            }
            c.call(
                "POST",
                &format!("{}/clone", snap_path(p, v, snap)),
                Some(json!({ "name": nv })),
            )?;
            println!("cloned {snapshot} as {new}");
        }
        VolumeCmd::Rollback { snapshot } => {
            let (p, v, snap) = snapshot_ref(&snapshot)?;
            c.call("POST", &format!("{}/rollback", snap_path(p, v, snap)), None)?;
            println!("rolled {p}/{v} back to {snapshot}");
        }
        VolumeCmd::Import { name, file } => {
            let (p, v) = volume_ref(&name)?;
            let file = absolute(&file)?;
            let job = c.call(
                "POST",
                &format!("{}/import", vol_path(p, v)),
                Some(json!({ "file": file })),
            )?;
            if job["created"] == json!(true) {
                eprintln!("created volume {name} for the image");
            }
            follow(c, &job)?;
            println!(
                "imported {} ({}) into {name}",
                file.display(),
                s(&job["format"])
            );
        }
        VolumeCmd::Export { name, file, format } => {
            let (p, rest) = vireo_storage::parse_volume_ref(&name).map_err(|e| e.to_string())?;
            let path = match rest.split_once('@') {
                Some((v, snap)) => format!("{}/export", snap_path(p, v, snap)),
                None => format!("{}/export", vol_path(p, rest)),
            };
            let file = absolute(&file)?;
            let format = match format {
                ImageFormat::Raw => "raw",
                ImageFormat::Qcow2 => "qcow2",
            };
            let job = c.call(
                "POST",
                &path,
                Some(json!({ "file": file, "format": format })),
            )?;
            follow(c, &job)?;
            println!("exported {name} to {} ({format})", file.display());
        }
    }
    Ok(())
}

pub(super) fn snapshot(c: &Client, cmd: SnapshotCmd) -> Result<(), String> {
    match cmd {
        SnapshotCmd::Create { name } => {
            let (p, v, snap) = snapshot_ref(&name)?;
            c.call(
                "POST",
                &format!("{}/snapshots", vol_path(p, v)),
                Some(json!({ "name": snap })),
            )?;
            println!("created snapshot {name}");
        }
        SnapshotCmd::Delete { name } => {
            let (p, v, snap) = snapshot_ref(&name)?;
            c.call("DELETE", &snap_path(p, v, snap), None)?;
            println!("deleted snapshot {name}");
        }
        SnapshotCmd::List { volume, json } => {
            let (p, v) = volume_ref(&volume)?;
            let list = c.call("GET", &format!("{}/snapshots", vol_path(p, v)), None)?;
            if json {
                show::pretty(&list);
            } else {
                print!("{}", show::snapshots(&list));
            }
        }
    }
    Ok(())
}

pub(super) fn vhost_user(c: &Client, a: VhostUserArgs) -> Result<(), String> {
    let socket = absolute(&a.socket)?;
    if a.stop {
        c.call(
            "DELETE",
            "/api/v1/vhost-user",
            Some(json!({ "socket": socket })),
        )?;
        println!("stopped the vhost-user export on {}", socket.display());
        return Ok(());
    }
    let Some(volume) = a.volume else {
        return Err(
            "give the volume to serve (vireo storage vhost-user POOL/VOL --socket PATH), or --stop"
                .into(),
        );
    };
    vireo_storage::parse_volume_ref(&volume).map_err(|e| e.to_string())?;
    c.call(
        "POST",
        "/api/v1/vhost-user",
        Some(json!({ "volume": volume, "socket": socket })),
    )?;
    println!(
        "serving {volume} over vhost-user-blk on {} (vireo run --disk vhost-user={})",
        socket.display(),
        socket.display()
    );
    Ok(())
}
