//! Helpers for tests that boot the Linux guest image: building it, typing into its serial
//! console, and cleaning up the VMM process.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Boot to the shell; generous because CI machines are slow and debug builds slower.
pub const BOOT_TIMEOUT: Duration = Duration::from_secs(600);

/// A fresh directory for one test's files.
pub fn scratch(suite: &str, name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{suite}-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Starts `vireo run --accel ACCEL` on the image with `extra` options and waits for the guest's
/// shell.
pub fn boot(
    img: &vireo_image::GuestImage,
    accel: &str,
    extra: &[&std::ffi::OsStr],
) -> (Console, KillOnDrop) {
    boot_cmd(Command::new(super::vireo_bin()), img, accel, extra)
}

/// [`boot`] with `cmd` as the program that runs `vireo` (e.g. `ip netns exec NS vireo`).
pub fn boot_cmd(
    mut cmd: Command,
    img: &vireo_image::GuestImage,
    accel: &str,
    extra: &[&std::ffi::OsStr],
) -> (Console, KillOnDrop) {
    let started = Instant::now();
    let mut child = cmd
        .args(["run", "--accel", accel, "--memory", "512M", "--kernel"])
        .arg(&img.kernel)
        .arg("--initrd")
        .arg(&img.initrd)
        .args(extra)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start vireo");
    let mut con = Console::attach(&mut child, "");
    let guard = KillOnDrop(child);
    con.expect("vireo guest ready", BOOT_TIMEOUT);
    eprintln!("guest ready after {:?}", started.elapsed());
    (con, guard)
}

/// Waits for `vireo run` to end on its own and returns its exit status code.
pub fn wait_exit(guard: &mut KillOnDrop, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = guard.0.try_wait().unwrap() {
            return status.code();
        }
        assert!(
            Instant::now() < deadline,
            "vireo run did not end within {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The workspace root (for tests that build other crates in it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guest image, built once and cached like `vireo image build` does.
#[allow(unused_imports)] // as `dead_code` for the rest: not every test crate boots the image
pub use vireo_image::console::cached_image as image;

/// The ELF `vmlinux` inside a bzImage (its payload is LZ4, legacy frame format), decompressed
/// with the `lz4` tool, as the kernel's own scripts/extract-vmlinux does.
pub fn extract_vmlinux(bzimage: &Path) -> Vec<u8> {
    let data = std::fs::read(bzimage).unwrap();
    let at = data
        .windows(4)
        .position(|w| w == [0x02, 0x21, 0x4c, 0x18])
        .expect("the bzImage payload is not LZ4");
    let mut lz4 = Command::new("lz4")
        .args(["-dc", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("run lz4 (apt-get install lz4)");
    let mut input = lz4.stdin.take().unwrap();
    let payload = data[at..].to_vec();
    // lz4 stops at the end of its stream and may close stdin early: trailing bytes are fine.
    let feeder = std::thread::spawn(move || input.write_all(&payload));
    let out = lz4.wait_with_output().unwrap();
    let _ = feeder.join();
    assert!(
        out.stdout.starts_with(b"\x7fELF"),
        "lz4 did not yield an ELF"
    );
    out.stdout
}

pub use vireo_image::console::Console;

/// Kills and reaps the VMM process when the test ends, passed or not.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An ext4 image holding host programs for the guest, which has only busybox: each program
/// and the shared libraries it links (as `ldd` lists them) go to `/lib` and `/NAME` on the
/// disk. A dynamic one runs in the guest as `/t/lib/ld-linux-x86-64.so.2 --library-path /t/lib
/// /t/NAME` once the disk is mounted on /t; a static one as `/t/NAME`.
pub fn tools_disk(dir: &Path, programs: &[&Path]) -> PathBuf {
    let stage = dir.join("tools-stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(stage.join("lib")).unwrap();
    for p in programs {
        std::fs::copy(p, stage.join(p.file_name().unwrap())).unwrap();
        let ldd = Command::new("ldd").arg(p).output().expect("run ldd");
        for lib in String::from_utf8_lossy(&ldd.stdout)
            .split_whitespace()
            .filter(|w| w.starts_with('/'))
        {
            let lib = Path::new(lib);
            std::fs::copy(lib, stage.join("lib").join(lib.file_name().unwrap())).unwrap();
        }
    }
    let image = dir.join("tools.ext4");
    let _ = std::fs::remove_file(&image);
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-d"])
        .arg(&stage)
        .arg(&image)
        .arg("128M")
        .output()
        .expect("run mke2fs (apt-get install e2fsprogs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    image
}

/// A static build of the guest tool `tests/guest-tools/NAME.c`.
pub fn guest_tool(dir: &Path, name: &str) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/guest-tools/{name}.c"));
    let out = dir.join(name);
    let status = Command::new("gcc")
        .args(["-static", "-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .expect("run gcc");
    assert!(status.success(), "building {}", src.display());
    out
}
