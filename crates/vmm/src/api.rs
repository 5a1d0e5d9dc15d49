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
use std::path::Path;
use std::sync::Arc;
use vireo_http::{unrouted, HttpServer, Reply, Request};

/// Listens until dropped; removes its socket file then.
pub struct ApiServer {
    _http: HttpServer,
}

impl ApiServer {
    pub fn start(path: &Path, vm: Arc<VmShared>) -> std::io::Result<ApiServer> {
        let http = HttpServer::start(path, Arc::new(move |req| route(req, &vm))).map_err(|e| {
            match e.kind() {
                std::io::ErrorKind::AddrInUse => std::io::Error::new(
                    std::io::ErrorKind::AddrInUse,
                    "another VMM is listening on it; choose another --api-socket path",
                ),
                _ => e,
            }
        })?;
        Ok(ApiServer { _http: http })
    }
}

fn route(req: &Request, vm: &VmShared) -> Reply {
    let action = req.path.strip_prefix("/api/v1/").unwrap_or("");
    let is_get = req.method == "GET";
    let is_put = req.method == "PUT" || req.method == "POST";
    let body = &req.body[..];
    match action {
        "vmm.ping" if is_get => Reply::ok(json!({ "version": env!("CARGO_PKG_VERSION") })),
        "vm.info" if is_get => Reply::ok(info(vm)),
        "vm.counters" if is_get => Reply::ok(counters(vm)),
        "vm.devices" if is_get => Reply::ok(devices(vm)),
        "vm.balloon" if is_get => balloon_status(vm),
        "vm.balloon" if is_put => balloon_resize(vm, body),
        "vm.pause" if is_put => verb(vm, Verb::Pause),
        "vm.resume" if is_put => verb(vm, Verb::Resume),
        "vm.stop" if is_put => verb(vm, Verb::Stop),
        "vm.shutdown" if is_put => {
            let st = *vm.state.lock().unwrap_or_else(|p| p.into_inner());
            if st != VmState::Running {
                return Reply::error(
                    409,
                    format!("cannot shut down a VM that is {st:?}; resume it first"),
                );
            }
            vm.power_button
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .press_power_button();
            Reply::no_content()
        }
        "vmm.ping" | "vm.info" | "vm.counters" | "vm.devices" => unrouted(req, &["GET"]),
        "vm.balloon" => unrouted(req, &["GET", "PUT"]),
        "vm.pause" | "vm.resume" | "vm.stop" | "vm.shutdown" => unrouted(req, &["PUT", "POST"]),
        _ => unrouted(req, &[]),
    }
}

fn verb(vm: &VmShared, v: Verb) -> Reply {
    match vm.transition(v) {
        Ok(_) => Reply::no_content(),
        Err(e) => Reply::error(409, e),
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
        return Reply::error(404, "this VM has no balloon: start it with --balloon");
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
    Reply::ok(json!({
        "target": st.target_bytes,
        "actual": st.actual_bytes,
        "active": st.active,
        "stats": stats,
    }))
}

fn balloon_resize(vm: &VmShared, body: &[u8]) -> Reply {
    let Some(b) = &vm.balloon else {
        return Reply::error(404, "this VM has no balloon: start it with --balloon");
    };
    let size = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v.get("size").and_then(Value::as_u64));
    let Some(size) = size else {
        return Reply::error(
            400,
            r#"give the balloon size in bytes: {"size": 268435456}"#,
        );
    };
    match b.set_target(size) {
        Ok(()) => Reply::no_content(),
        Err(e) => Reply::error(400, e.to_string()),
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
