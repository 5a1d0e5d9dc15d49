//! The harness of the `vireo net` tests: a real service (`vireo net serve`) on a scratch
//! state directory, the CLI against it, and network namespaces holding real Linux stacks
//! behind its taps. Needs root and iproute2.
#![allow(dead_code)] // each test file uses a part

use super::common::{run_vireo, vireo_bin, Run};
use serde_json::Value;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// A directory for one test, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("vireo-net-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vireo net serve` on `DIR/state`, API on `DIR/api.sock`.
pub struct Service {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Service {
    pub fn start(dir: &Scratch) -> Service {
        let socket = dir.0.join("api.sock");
        let log = dir
            .0
            .join(format!("serve-{}.log", Instant::now().elapsed().as_nanos()));
        let child = Command::new(vireo_bin())
            .args(["net", "serve", "--dir"])
            .arg(dir.0.join("state"))
            .arg("--socket")
            .arg(&socket)
            .env("VIREO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start vireo net serve");
        let mut svc = Service { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&svc.socket).is_err() {
            if let Some(st) = svc.child.try_wait().unwrap() {
                panic!("the service exited ({st}) before listening:\n{}", svc.log());
            }
            assert!(Instant::now() < deadline, "no listen:\n{}", svc.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        svc
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut full = vec!["net", "--socket", self.socket.to_str().unwrap()];
        full.extend_from_slice(args);
        let run = run_vireo(&full, CLI_TIMEOUT);
        assert!(!run.stderr.contains("panicked"), "{}", run.dump());
        run
    }

    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            run.status.success(),
            "{}\n--- service ---\n{}",
            run.dump(),
            self.log()
        );
        run.stdout
    }

    /// A client command that must fail with an error containing `what`.
    pub fn fails(&self, args: &[&str], what: &str) {
        let run = self.run(args);
        assert_eq!(run.status.code(), Some(1), "{}", run.dump());
        assert!(
            run.stderr.contains(what),
            "expected {what:?}\n{}",
            run.dump()
        );
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
    }

    /// A raw API request: (status, body).
    pub fn http(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        s.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        (status, body.to_string())
    }

    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success());
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "no exit:\n{}", self.log());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn sh(args: &[&str]) -> std::process::Output {
    Command::new(args[0]).args(&args[1..]).output().unwrap()
}

pub fn must(args: &[&str]) {
    let out = sh(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Network namespaces of one test, deleted (with what was moved into them) on drop.
pub struct Namespaces(pub Vec<String>);

impl Namespaces {
    pub fn new(tag: &str, n: usize) -> Namespaces {
        let names: Vec<String> = (0..n)
            .map(|i| format!("vnt-{tag}{i}-{}", std::process::id()))
            .collect();
        let ns = Namespaces(names);
        for name in &ns.0 {
            let _ = sh(&["ip", "netns", "del", name]);
            must(&["ip", "netns", "add", name]);
            must(&["ip", "-n", name, "link", "set", "lo", "up"]);
        }
        ns
    }

    /// Moves a tap the service created into namespace `i` as `ADDR/24`, up.
    pub fn plug(&self, i: usize, tap: &str, addr: &str) {
        let ns = &self.0[i];
        must(&["ip", "link", "set", tap, "netns", ns]);
        must(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{addr}/24"),
            "dev",
            tap,
        ]);
        must(&["ip", "-n", ns, "link", "set", tap, "up"]);
    }

    /// Whether namespace `i` gets an answer from `addr` (a few tries: ARP comes first).
    /// iputils' ping where installed, busybox's otherwise.
    pub fn ping(&self, i: usize, addr: &str) -> bool {
        let has_ping = Command::new("ping").arg("-V").output().is_ok();
        let ping: &[&str] = if has_ping {
            &["ping"]
        } else {
            &["busybox", "ping"]
        };
        let mut args = vec!["ip", "netns", "exec", &self.0[i]];
        args.extend_from_slice(ping);
        args.extend_from_slice(&["-c", "3", "-W", "1", addr]);
        sh(&args).status.success()
    }

    pub fn mac(&self, i: usize, tap: &str) -> String {
        let out = sh(&["ip", "-n", &self.0[i], "-j", "link", "show", tap]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v[0]["address"].as_str().unwrap().to_string()
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            let _ = sh(&["ip", "netns", "del", name]);
        }
    }
}

/// Tap names unique to this test process (15 characters at most).
pub fn tap(tag: &str) -> String {
    format!("vt{}{tag}", std::process::id() % 100_000)
}
