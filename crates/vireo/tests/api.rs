//! The management API on a running VM: `curl --unix-socket` and `vireo vm ...` against
//! `vireo run --api-socket`, with the `idle` PVH payload on this machine's /dev/kvm.

mod common;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Vm {
    child: Child,
    sock: String,
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.sock);
    }
}

fn start(tag: &str, cpus: &str) -> Vm {
    let sock = std::env::temp_dir()
        .join(format!("vireo-api-{tag}-{}.sock", std::process::id()))
        .display()
        .to_string();
    let kernel = common::payload("idle");
    let child = Command::new(common::vireo_bin())
        .args(["run", "--accel", "kvm", "--memory", "64M", "--cpus", cpus])
        .arg("--kernel")
        .arg(&kernel)
        .args(["--api-socket", &sock])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start vireo");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !Path::new(&sock).exists() {
        assert!(Instant::now() < deadline, "API socket never appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    Vm { child, sock }
}

fn vm_cmd(vm: &Vm, verb: &str) -> (bool, String, String) {
    let out = Command::new(common::vireo_bin())
        .args(["vm", verb, "--api-socket", &vm.sock])
        .output()
        .expect("run vireo vm");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn info(vm: &Vm) -> serde_json::Value {
    let (ok, out, err) = vm_cmd(vm, "info");
    assert!(ok, "vm info failed: {err}");
    serde_json::from_str(&out).expect("vm info prints JSON")
}

fn curl(vm: &Vm, method: &str, path: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "-w",
            "\n%{http_code}",
            "--unix-socket",
            &vm.sock,
            "-X",
            method,
        ])
        .arg(format!("http://localhost{path}"))
        .output()
        .expect("run curl (apt-get install curl)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn lifecycle_through_cli_and_curl() {
    let mut vm = start("life", "2");
    let info0 = info(&vm);
    assert_eq!(info0["state"], "Running");
    assert_eq!(info0["accel"], "kvm");
    assert_eq!(info0["config"]["cpus"], 2);
    assert_eq!(info0["config"]["memory"], 64 << 20);
    assert_eq!(info0["vcpus"].as_array().unwrap().len(), 2);

    // The payload printed over COM1 by port I/O: vCPU 0 must have counted those exits.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let i = info(&vm);
        if i["vcpus"][0]["exits"]["io_out"].as_u64().unwrap_or(0) > 10 {
            break;
        }
        assert!(Instant::now() < deadline, "no I/O exits counted: {i}");
        std::thread::sleep(Duration::from_millis(50));
    }

    let (ok, _, err) = vm_cmd(&vm, "pause");
    assert!(ok, "{err}");
    assert_eq!(info(&vm)["state"], "Paused");
    let (ok, _, err) = vm_cmd(&vm, "pause");
    assert!(!ok && err.contains("cannot pause"), "{err}");
    let (ok, _, err) = vm_cmd(&vm, "shutdown");
    assert!(!ok && err.contains("resume it first"), "{err}");

    let (code, body) = curl(&vm, "PUT", "/api/v1/vm.resume");
    assert_eq!(code, 204, "{body}");
    let (code, body) = curl(&vm, "GET", "/api/v1/vm.info");
    assert_eq!(code, 200);
    assert!(body.contains("\"Running\""), "{body}");
    let (code, body) = curl(&vm, "GET", "/api/v1/vm.counters");
    assert_eq!(code, 200);
    assert!(body.contains("vcpu1"), "{body}");
    let (code, _) = curl(&vm, "GET", "/api/v1/vm.nonsense");
    assert_eq!(code, 404);
    let (code, _) = curl(&vm, "DELETE", "/api/v1/vm.pause");
    assert_eq!(code, 405);

    let (ok, _, err) = vm_cmd(&vm, "stop");
    assert!(ok, "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = vm.child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "vireo run did not end after vm stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stdout = String::new();
    vm.child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    assert!(status.success(), "exit status {status}");
    assert!(stdout.contains("vireo-pvh: idle"), "{stdout}");
    assert!(!Path::new(&vm.sock).exists(), "socket file left behind");
}

#[test]
fn client_reports_a_missing_vmm_clearly() {
    let vm = Vm {
        child: Command::new("true").spawn().unwrap(),
        sock: "/nonexistent/vireo.sock".into(),
    };
    let (ok, _, err) = vm_cmd(&vm, "info");
    assert!(!ok);
    assert!(err.contains("cannot connect"), "{err}");
}
