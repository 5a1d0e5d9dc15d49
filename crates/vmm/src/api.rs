//! The management interface (seed 3.1.1): HTTP/JSON on a Unix socket, in the style of Cloud
//! Hypervisor's API, so `curl --unix-socket` and `vireo vm ...` both work.
//!
//! | method   | path                  | effect                                       |
//! |----------|-----------------------|----------------------------------------------|
//! | GET      | /api/v1/vmm.ping      | `{"version": ...}`                           |
//! | GET      | /api/v1/vm.info       | state, accelerator, configuration, vCPUs     |
//! | GET      | /api/v1/vm.counters   | per-vCPU exit counters                       |
//! | GET      | /api/v1/vm.devices    | virtio devices with their PCI slot, counters |
//! | GET      | /api/v1/vm.balloon    | balloon target, actual size, guest mem stats |
//! | PUT      | /api/v1/vm.balloon    | `{"size": BYTES}`: inflate or deflate        |
//! | PUT/POST | /api/v1/vm.pause      | Running → Paused                             |
//! | PUT/POST | /api/v1/vm.resume     | Paused → Running                             |
//! | PUT/POST | /api/v1/vm.shutdown   | graceful: presses the ACPI power button      |
//! | PUT/POST | /api/v1/vm.stop       | hard stop: the VM ends at once               |

use crate::state::{Verb, VmState};
use crate::vm::VmShared;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

const MAX_REQUEST: usize = 64 * 1024;

/// Listens until dropped; removes its socket file then.
pub struct ApiServer {
    path: PathBuf,
}

impl ApiServer {
    pub fn start(path: &Path, vm: Arc<VmShared>) -> std::io::Result<ApiServer> {
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another VMM is listening on it; choose another --api-socket path",
                ));
            }
            // A stale socket of a VMM that is gone.
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    if let Err(e) = serve(conn, &vm) {
                        tracing::debug!("API connection: {e}");
                    }
                }
            })?;
        Ok(ApiServer {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

struct Reply {
    status: u16,
    body: Option<Value>,
}

fn ok(body: Value) -> Reply {
    Reply {
        status: 200,
        body: Some(body),
    }
}

fn err(status: u16, msg: impl Into<String>) -> Reply {
    Reply {
        status,
        body: Some(json!({ "error": msg.into() })),
    }
}

fn serve(mut conn: UnixStream, vm: &VmShared) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    let (method, path, body_at, body_len) = loop {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(());
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(&buf) {
            Ok(httparse::Status::Complete(at)) => {
                let len = req
                    .headers
                    .iter()
                    .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                    .and_then(|h| std::str::from_utf8(h.value).ok()?.trim().parse().ok())
                    .unwrap_or(0usize);
                break (
                    req.method.unwrap_or("").to_string(),
                    req.path.unwrap_or("").to_string(),
                    at,
                    len,
                );
            }
            Ok(httparse::Status::Partial) if buf.len() < MAX_REQUEST => continue,
            Ok(httparse::Status::Partial) => {
                return respond(&mut conn, err(431, "request too large"))
            }
            Err(e) => return respond(&mut conn, err(400, format!("bad HTTP request: {e}"))),
        }
    };
    if body_len > MAX_REQUEST {
        return respond(&mut conn, err(413, "request body too large"));
    }
    while buf.len() < body_at + body_len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return respond(
                &mut conn,
                err(400, "request body shorter than Content-Length"),
            );
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = &buf[body_at..body_at + body_len];
    respond(&mut conn, route(&method, &path, body, vm))
}

fn route(method: &str, path: &str, body: &[u8], vm: &VmShared) -> Reply {
    let action = path.strip_prefix("/api/v1/").unwrap_or("");
    let is_get = method == "GET";
    let is_put = method == "PUT" || method == "POST";
    match action {
        "vmm.ping" if is_get => ok(json!({ "version": env!("CARGO_PKG_VERSION") })),
        "vm.info" if is_get => ok(info(vm)),
        "vm.counters" if is_get => ok(counters(vm)),
        "vm.devices" if is_get => ok(devices(vm)),
        "vm.balloon" if is_get => balloon_status(vm),
        "vm.balloon" if is_put => balloon_resize(vm, body),
        "vm.pause" if is_put => verb(vm, Verb::Pause),
        "vm.resume" if is_put => verb(vm, Verb::Resume),
        "vm.stop" if is_put => verb(vm, Verb::Stop),
        "vm.shutdown" if is_put => {
            let st = *vm.state.lock().unwrap_or_else(|p| p.into_inner());
            if st != VmState::Running {
                return err(
                    409,
                    format!("cannot shut down a VM that is {st:?}; resume it first"),
                );
            }
            vm.power_button
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .press_power_button();
            Reply {
                status: 204,
                body: None,
            }
        }
        "vmm.ping" | "vm.info" | "vm.counters" | "vm.devices" | "vm.balloon" | "vm.pause"
        | "vm.resume" | "vm.stop" | "vm.shutdown" => {
            err(405, format!("{method} is not allowed on {path}"))
        }
        _ => err(404, format!("no such endpoint: {path}")),
    }
}

fn verb(vm: &VmShared, v: Verb) -> Reply {
    match vm.transition(v) {
        Ok(_) => Reply {
            status: 204,
            body: None,
        },
        Err(e) => err(409, e),
    }
}

fn counters(vm: &VmShared) -> Value {
    let per_vcpu: serde_json::Map<String, Value> = vm
        .counters
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("vcpu{i}"), json!(c.snapshot())))
        .collect();
    Value::Object(per_vcpu)
}

fn balloon_status(vm: &VmShared) -> Reply {
    let Some(b) = &vm.balloon else {
        return err(404, "this VM has no balloon: start it with --balloon");
    };
    let st = b.status();
    let stats: serde_json::Map<String, Value> = st
        .stats
        .as_ref()
        .map(|s| {
            s.named()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect()
        })
        .unwrap_or_default();
    ok(json!({
        "target": st.target_bytes,
        "actual": st.actual_bytes,
        "active": st.active,
        "stats": stats,
    }))
}

fn balloon_resize(vm: &VmShared, body: &[u8]) -> Reply {
    let Some(b) = &vm.balloon else {
        return err(404, "this VM has no balloon: start it with --balloon");
    };
    let size = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("size").and_then(Value::as_u64));
    let Some(size) = size else {
        return err(
            400,
            r#"give the balloon size in bytes: {"size": 268435456}"#,
        );
    };
    match b.set_target(size) {
        Ok(()) => Reply {
            status: 204,
            body: None,
        },
        Err(e) => err(400, e.to_string()),
    }
}

fn devices(vm: &VmShared) -> Value {
    vm.devices
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|d| {
            let counters: serde_json::Map<String, Value> = d
                .counters()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect();
            json!({
                "id": d.id,
                "pci": format!("0000:00:{:02x}.0", d.pci_slot),
                "counters": counters,
            })
        })
        .collect()
}

fn info(vm: &VmShared) -> Value {
    let c = &vm.config;
    json!({
        "state": *vm.state.lock().unwrap_or_else(|p| p.into_inner()),
        "accel": vm.accel,
        "config": {
            "cpus": c.cpus,
            "memory": c.memory,
            "kernel": c.kernel,
            "initrd": c.initrd,
            "cmdline": c.cmdline,
        },
        "vcpus": vm.counters.iter().enumerate()
            .map(|(i, c)| json!({ "id": i, "exits": c.snapshot() }))
            .collect::<Vec<_>>(),
    })
}

fn respond(conn: &mut UnixStream, r: Reply) -> std::io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        431 => "Request Header Fields Too Large",
        _ => "Error",
    };
    let body = r.body.map(|b| format!("{b}\n")).unwrap_or_default();
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", r.status);
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}
