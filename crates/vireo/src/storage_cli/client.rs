//! The client side of the API: names to paths, requests, and following jobs.

use super::{s, show};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::time::Duration;

/// Splits `POOL/VOL` (refusing a snapshot name).
pub(super) fn volume_ref(name: &str) -> Result<(&str, &str), String> {
    let (p, v) = vireo_storage::parse_volume_ref(name).map_err(|e| e.to_string())?;
    if v.contains('@') {
        return Err(format!(
            "{name} names a snapshot; give the volume, POOL/VOL"
        ));
    }
    Ok((p, v))
}

/// Splits `POOL/VOL@SNAP`.
pub(super) fn snapshot_ref(name: &str) -> Result<(&str, &str, &str), String> {
    let (p, rest) = vireo_storage::parse_volume_ref(name).map_err(|e| e.to_string())?;
    match rest.split_once('@') {
        Some((v, snap)) if !v.is_empty() && !snap.is_empty() => Ok((p, v, snap)),
        _ => Err(format!(
            "{name:?} is not a snapshot name: use POOL/VOL@SNAP"
        )),
    }
}

pub(super) use crate::client::path_segment as seg;

pub(super) fn vol_path(p: &str, v: &str) -> String {
    format!("/api/v1/pools/{}/volumes/{}", seg(p), seg(v))
}

pub(super) fn snap_path(p: &str, v: &str, snap: &str) -> String {
    format!("{}/snapshots/{}", vol_path(p, v), seg(snap))
}

pub(super) type Client = crate::client::ServiceClient;

/// Polls a job until it ends, drawing its progress on stderr (redrawn in place on a
/// terminal, one final line otherwise).
pub(super) fn follow(c: &Client, job: &Value) -> Result<(), String> {
    let id = job["id"]
        .as_u64()
        .ok_or_else(|| format!("the service answered without a job id: {job}"))?;
    let tty = std::io::stderr().is_terminal();
    let mut err = std::io::stderr();
    loop {
        let j = c.call("GET", &format!("/api/v1/jobs/{id}"), None)?;
        let bar = show::progress(
            j["done"].as_u64().unwrap_or(0),
            j["total"].as_u64().unwrap_or(0),
        );
        match s(&j["state"]) {
            "running" => {
                if tty {
                    let _ = write!(err, "\r{bar}");
                    let _ = err.flush();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            "done" => {
                let _ = writeln!(err, "{}{bar}", if tty { "\r" } else { "" });
                return Ok(());
            }
            state => {
                if tty {
                    let _ = writeln!(err);
                }
                let why = match s(&j["error"]) {
                    "" => state.to_string(),
                    e => e.to_string(),
                };
                return Err(format!(
                    "{} of {} (job {id}) failed: {why}",
                    s(&j["kind"]),
                    s(&j["volume"])
                ));
            }
        }
    }
}
