//! Shared helpers for the integration tests: one image build per test
//! binary, and a QEMU driver.

#![allow(dead_code)] // each test binary uses a different subset

pub mod qemu;

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use vireo_image::{build, BuildOptions, GuestImage};

/// Download cache shared by all runs: `VIREO_IMAGE_CACHE`, or the
/// workspace's gitignored `.cache/image`.
pub fn cache_dir() -> PathBuf {
    match std::env::var_os("VIREO_IMAGE_CACHE") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/image"),
    }
}

/// Builds the image once per test binary into a scratch dir under
/// target/tmp (a fixed name per binary, so repeated runs do not pile up).
pub fn image(name: &str) -> &'static GuestImage {
    static IMAGE: OnceLock<GuestImage> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = std::fs::remove_dir_all(&out_dir);
        let started = std::time::Instant::now();
        let image = build(&BuildOptions {
            out_dir,
            cache_dir: cache_dir(),
        })
        .unwrap_or_else(|e| panic!("image build failed: {e}"));
        eprintln!("image build took {:.1}s", started.elapsed().as_secs_f64());
        image
    })
}

/// Runs an e2fsprogs tool (`debugfs`, `e2fsck`, ...) on an image and
/// returns (success, stdout + stderr). The tools live in /usr/sbin or
/// /sbin, which a regular user's PATH may lack.
pub fn e2fsprogs(tool: &str, args: &[&str], image: &Path) -> (bool, String) {
    let program = ["/usr/sbin", "/sbin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from(tool));
    let out = std::process::Command::new(program)
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); apt-get install -y e2fsprogs"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}
