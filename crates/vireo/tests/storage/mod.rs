//! The harness of the `vireo storage` tests: a service on scratch files, the CLI against
//! it, and qemu-img / qemu-io to make and check images.

use super::common::{run_vireo, vireo_bin, Run};
use serde_json::Value;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

pub const MIB: u64 = 1 << 20;
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// A directory for one test, removed at the end.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn new(name: &str) -> Scratch {
        let p = std::env::temp_dir().join(format!("vireo-st-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// A sparse file of `len` bytes, e.g. a pool's backing device.
    pub fn sparse(&self, name: &str, len: u64) -> String {
        let p = self.path(name);
        File::create(&p).unwrap().set_len(len).unwrap();
        p.to_str().unwrap().to_string()
    }

    /// A raw image of `len` bytes: zeros except `byte` repeated over each (offset, len).
    pub fn raw_image(&self, name: &str, len: u64, runs: &[(u64, u64, u8)]) -> String {
        let p = self.sparse(name, len);
        let f = File::options().write(true).open(&p).unwrap();
        for &(at, n, byte) in runs {
            f.write_all_at(&vec![byte; n as usize], at).unwrap();
        }
        p
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `vireo storage serve` on `DIR/state`, API on `DIR/api.sock`.
pub struct Service {
    child: Child,
    pub socket: PathBuf,
    log: PathBuf,
}

impl Service {
    pub fn start(dir: &Scratch, extra: &[&str]) -> Service {
        let socket = dir.path("api.sock");
        let log = dir.path("serve.log");
        let child = Command::new(vireo_bin())
            .args(["storage", "serve", "--dir"])
            .arg(dir.path("state"))
            .arg("--socket")
            .arg(&socket)
            .args(extra)
            .env("VIREO_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .expect("start vireo storage serve");
        let mut svc = Service { child, socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&svc.socket).is_err() {
            if let Some(st) = svc.child.try_wait().unwrap() {
                panic!("the service exited ({st}) before listening:\n{}", svc.log());
            }
            assert!(
                Instant::now() < deadline,
                "the service did not listen:\n{}",
                svc.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        svc
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let mut full = vec!["storage", "--socket", self.socket.to_str().unwrap()];
        full.extend_from_slice(args);
        let run = run_vireo(&full, CLI_TIMEOUT);
        assert!(
            !run.stderr.contains("panicked"),
            "vireo panicked\n{}",
            run.dump()
        );
        run
    }

    /// Runs a client command that must succeed; returns its stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            run.status.success(),
            "{}\n--- service log ---\n{}",
            run.dump(),
            self.log()
        );
        run.stdout
    }

    /// Runs a client command that must fail with an error naming one of `keywords`.
    pub fn fails(&self, args: &[&str], keywords: &[&str]) -> String {
        let run = self.run(args);
        assert!(
            matches!(run.status.code(), Some(c) if c != 0),
            "expected a failure (not a signal)\n{}",
            run.dump()
        );
        let err = run.stderr.to_lowercase();
        assert!(
            keywords.iter().any(|k| err.contains(&k.to_lowercase())),
            "stderr should mention one of {keywords:?}\n{}",
            run.dump()
        );
        run.stderr
    }

    pub fn json(&self, args: &[&str]) -> Value {
        let out = self.ok(args);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: not JSON ({e}):\n{out}"))
    }

    /// SIGTERM, and the exit status.
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "no exit after SIGTERM:\n{}",
                self.log()
            );
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

pub fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {name} (install qemu-utils): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name} {args:?} failed:\n{text}");
    text
}

/// `qemu-img compare` of two images (formats given): they must read the same.
pub fn same(a: &str, a_fmt: &str, b: &str, b_fmt: &str) {
    tool("qemu-img", &["compare", "-f", a_fmt, "-F", b_fmt, a, b]);
}

pub fn differ(a: &str, b: &str) -> bool {
    let st = Command::new("qemu-img")
        .args(["compare", "-q", "-f", "raw", "-F", "raw", a, b])
        .status()
        .unwrap();
    st.code() == Some(1)
}

/// A pool `tank` on two 256 MiB sparse files (one fast, one capacity).
pub fn with_pool(dir: &Scratch) -> Service {
    let svc = Service::start(dir, &[]);
    let d1 = dir.sparse("d1.img", 256 * MIB);
    let d2 = dir.sparse("d2.img", 256 * MIB);
    let out = svc.ok(&[
        "pool",
        "create",
        "tank",
        "--device",
        &d1,
        "--device",
        &format!("{d2},tier=fast"),
    ]);
    assert!(out.contains("created pool tank"), "{out}");
    svc
}
