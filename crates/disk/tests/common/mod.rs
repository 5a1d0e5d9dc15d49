//! Shared by the integration tests: temp dirs, QEMU's tools (qemu-img, qemu-io, from
//! Debian's qemu-utils) as the reference, a deterministic PRNG and an in-memory mirror.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use vireo_disk::{DiskImage, OpenError, Qcow2};

/// A directory in the temp dir, removed when dropped.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("vireo-disk-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(tool: &str, args: &[&str]) -> (i32, String) {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (install qemu-utils): {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

/// Runs qemu-img, which must succeed; returns its output.
pub fn qemu_img(args: &[&str]) -> String {
    let (code, text) = run("qemu-img", args);
    assert_eq!(code, 0, "qemu-img {args:?} failed:\n{text}");
    text
}

/// `qemu-img create -f qcow2 -o OPTS PATH SIZE`.
pub fn create(path: &Path, opts: &str, size: &str) {
    let p = path.to_str().unwrap();
    if opts.is_empty() {
        qemu_img(&["create", "-q", "-f", "qcow2", p, size]);
    } else {
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, p, size]);
    }
}

/// Runs qemu-io commands on an image; none may fail.
pub fn qemu_io(path: &Path, format: &str, cmds: &[String]) -> String {
    let mut args = vec!["-f", format];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(path.to_str().unwrap());
    let (code, text) = run("qemu-io", &args);
    assert!(
        code == 0 && !text.contains("failed") && !text.contains("error"),
        "qemu-io {args:?}:\n{text}"
    );
    text
}

/// Asserts with qemu-io that `len` bytes at `off` all hold `byte`.
pub fn qemu_verify(path: &Path, byte: u8, off: u64, len: u64) {
    qemu_io(
        path,
        "qcow2",
        &[format!("read -q -P {byte:#x} {off} {len}")],
    );
}

pub fn qemu_write(path: &Path, byte: u8, off: u64, len: u64) {
    qemu_io(
        path,
        "qcow2",
        &[format!("write -q -P {byte:#x} {off} {len}")],
    );
}

/// `qemu-img check`: no corruption and no leaked clusters.
pub fn check_clean(path: &Path) {
    let (code, text) = run(
        "qemu-img",
        &["check", "-f", "qcow2", path.to_str().unwrap()],
    );
    assert!(
        code == 0 && text.contains("No errors were found"),
        "qemu-img check {}: exit {code}\n{text}",
        path.display()
    );
}

/// The whole virtual disk as QEMU reads it.
pub fn qemu_contents(dir: &TempDir, path: &Path) -> Vec<u8> {
    let raw = dir.path("qemu-view.raw");
    qemu_img(&[
        "convert",
        "-O",
        "raw",
        path.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    let v = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    v
}

/// The whole virtual disk as we read it.
pub fn our_contents(img: &dyn DiskImage) -> Vec<u8> {
    let mut v = vec![0u8; img.size() as usize];
    img.read_at(&mut v, 0).unwrap();
    v
}

/// Opens an image read-write. Retries while it is locked: a process that another test
/// thread forks inherits our descriptors (and their flock) until it execs, so a lock can
/// outlive our close by a moment.
pub fn open(path: &Path) -> Qcow2 {
    for _ in 0..200 {
        match Qcow2::open(path, false) {
            Err(OpenError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(5))
            }
            r => return r.unwrap_or_else(|e| panic!("{e}")),
        }
    }
    panic!("{} stays locked", path.display())
}

/// xorshift64*: deterministic, so a failure can be replayed from its seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Bytes that differ at every position (so misplaced data shows).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| (i.wrapping_mul(31) ^ seed.wrapping_mul(17) ^ (i >> 9)) as u8)
        .collect()
}

/// Where two buffers first differ, for assertion messages.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(a.len().min(b.len()));
    }
    a.iter().zip(b).position(|(x, y)| x != y)
}

pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: differs at byte {i:#x} (len {} vs {}): got {:?} want {:?}",
            got.len(),
            want.len(),
            got.get(i..i + 8),
            want.get(i..i + 8)
        );
    }
}
