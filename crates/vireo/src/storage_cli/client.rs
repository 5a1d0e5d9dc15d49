//! The client side of the API: names to paths, requests, and following jobs.

use super::{s, show};
use serde_json::Value;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vireo_storage::service::DEFAULT_SOCKET;

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

/// Percent-encodes one path segment.
pub(super) fn seg(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) fn vol_path(p: &str, v: &str) -> String {
    format!("/api/v1/pools/{}/volumes/{}", seg(p), seg(v))
}

pub(super) fn snap_path(p: &str, v: &str, snap: &str) -> String {
    format!("{}/snapshots/{}", vol_path(p, v), seg(snap))
}

pub(super) struct Client {
    pub(super) socket: PathBuf,
}

impl Client {
    /// One API call; a non-2xx answer becomes its `error` message.
    pub(super) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, String> {
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let server = if self.socket == Path::new(DEFAULT_SOCKET) {
            "vireo storage serve --dir STATE_DIR".to_string()
        } else {
            format!(
                "vireo storage serve --dir STATE_DIR --socket {}",
                self.socket.display()
            )
        };
        let (status, text) = crate::client::request(&self.socket, method, path, &body, &server)?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        match value.get("error").and_then(Value::as_str) {
            Some(msg) => Err(msg.to_string()),
            None => Err(format!("{method} {path}: HTTP {status}: {value}")),
        }
    }
}

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
