//! What the NBD test binaries share: scratch directories, a test server with a map of
//! exports, and running the real peers.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use vireo_storage::nbd::{Exports, Listen, NbdServer};
use vireo_storage::{BlockDevice, FileDevice, StorageError};

pub const MIB: u64 = 1 << 20;

/// A scratch directory, removed when dropped.
pub struct TmpDir(PathBuf);

impl TmpDir {
    pub fn new(tag: &str) -> TmpDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("vireo-nbd-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TmpDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TmpDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The exports of a test server.
pub struct Devices(BTreeMap<String, Arc<dyn BlockDevice>>);

impl Exports for Devices {
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, StorageError> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| StorageError::NotFound(format!("no export named {name:?}")))
    }
    fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
    }
}

/// A raw file as a device; returns the file too, for tests about the backing file itself.
pub fn file_device(
    dir: &TmpDir,
    name: &str,
    size: u64,
    ro: bool,
) -> (PathBuf, Arc<dyn BlockDevice>) {
    let path = dir.path(name);
    if !path.exists() {
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
    }
    (path.clone(), Arc::new(FileDevice::open(&path, ro).unwrap()))
}

pub fn serve_on(listen: Listen, exports: Vec<(&str, Arc<dyn BlockDevice>)>) -> NbdServer {
    let map = exports
        .into_iter()
        .map(|(n, d)| (n.to_string(), d))
        .collect();
    NbdServer::start(&listen, Arc::new(Devices(map))).unwrap()
}

/// Serves `exports` on a Unix socket in `dir`.
pub fn serve(dir: &TmpDir, exports: Vec<(&str, Arc<dyn BlockDevice>)>) -> NbdServer {
    serve_on(Listen::Unix(dir.path("nbd.sock")), exports)
}

pub fn socket(server: &NbdServer) -> PathBuf {
    match server.listen() {
        Listen::Unix(p) => p.clone(),
        l => panic!("not a unix socket: {l}"),
    }
}

/// Runs a command that must succeed; returns its stdout and stderr.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}

pub fn qemu_io_cmd(uri: &str, cmds: &[&str]) -> Command {
    let mut c = Command::new("qemu-io");
    c.args(["-f", "raw", uri]);
    for cmd in cmds {
        c.args(["-c", cmd]);
    }
    c
}

/// qemu-io commands that must all succeed (pattern checks included).
pub fn qemu_io(uri: &str, cmds: &[&str]) -> String {
    let out = run(&mut qemu_io_cmd(uri, cmds));
    assert!(!out.contains("failed"), "qemu-io {cmds:?}:\n{out}");
    out
}

/// Bytes that do not repeat at any small period, so a misplaced block shows.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}
