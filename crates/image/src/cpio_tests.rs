//! Round-trip tests: archives we write must be read back identically by the
//! system `cpio` (GNU cpio, `apt-get install cpio`) and `gzip`.

use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};

fn sample() -> Archive {
    let mut a = Archive::new();
    a.add_dir("/bin", 0o755)
        .add_file("/bin/tool", 0o755, b"#!/bin/sh\necho hi\n")
        .add_symlink("/bin/sh", "tool")
        .add_dir("etc", 0o700)
        // Implicit parent dirs and every padding remainder (0..=4 bytes).
        .add_file("deep/er/empty", 0o644, b"")
        .add_file("deep/er/one", 0o600, b"1")
        .add_file("deep/er/two", 0o640, b"22")
        .add_file("deep/er/three", 0o644, b"333")
        .add_file("deep/er/four", 0o644, b"4444")
        .add_file("etc/big", 0o644, &vec![0xa5; 70_001])
        .add_char_dev("/dev/console", 0o600, 5, 1);
    a
}

fn run_with_stdin(cmd: &mut Command, input: &[u8]) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("cannot run {cmd:?} ({e}); install it: apt-get install -y cpio gzip")
        });
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

/// Parses our own output back into (name, ino, mode, nlink, size) tuples.
fn parse(raw: &[u8]) -> Vec<(String, u32, u32, u32, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    loop {
        assert_eq!(&raw[pos..pos + 6], b"070701", "magic at {pos}");
        let field = |i: usize| {
            let s = std::str::from_utf8(&raw[pos + 6 + i * 8..pos + 14 + i * 8]).unwrap();
            u32::from_str_radix(s, 16).unwrap()
        };
        let (ino, mode, nlink, size, namesize) = (
            field(0),
            field(1),
            field(4),
            field(6) as usize,
            field(11) as usize,
        );
        let name = std::str::from_utf8(&raw[pos + 110..pos + 110 + namesize - 1])
            .unwrap()
            .to_string();
        assert_eq!(raw[pos + 110 + namesize - 1], 0, "name NUL");
        pos = (pos + 110 + namesize).next_multiple_of(4);
        pos = (pos + size).next_multiple_of(4);
        if name == TRAILER {
            assert_eq!(pos, raw.len(), "nothing after trailer");
            return out;
        }
        out.push((name, ino, mode, nlink, size));
    }
}

#[test]
fn layout_is_aligned_with_unique_inodes_and_parents_first() {
    let raw = sample().finish();
    assert_eq!(raw.len() % 4, 0);
    let entries = parse(&raw);
    let mut inos: Vec<u32> = entries.iter().map(|e| e.1).collect();
    inos.sort();
    inos.dedup();
    assert_eq!(inos.len(), entries.len(), "unique inodes");
    assert!(!inos.contains(&0));
    // Every parent directory precedes its children.
    for (i, (name, ..)) in entries.iter().enumerate() {
        if let Some((parent, _)) = name.rsplit_once('/') {
            let p = entries
                .iter()
                .position(|e| e.0 == parent)
                .expect("parent present");
            assert!(p < i, "{parent} before {name}");
        }
    }
    let nlink = |n: &str| entries.iter().find(|e| e.0 == n).unwrap().3;
    assert_eq!(nlink("deep"), 3, "deep has one subdir");
    assert_eq!(nlink("deep/er"), 2);
    assert_eq!(nlink("bin/tool"), 1);
}

#[test]
fn re_adding_a_path_replaces_it() {
    let mut a = Archive::new();
    a.add_file("x/y", 0o644, b"old")
        .add_dir("x", 0o700)
        .add_file("x/y", 0o600, b"new");
    let entries = parse(&a.finish());
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0].0, "x");
    assert_eq!(entries[0].2, S_IFDIR | 0o700);
    assert_eq!((entries[1].2, entries[1].4), (S_IFREG | 0o600, 3));
}

#[test]
fn system_cpio_extracts_identical_tree() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_with_stdin(
        Command::new("cpio")
            .args(["-idm", "--quiet", "--no-absolute-filenames"])
            .current_dir(dir.path()),
        &sample().finish(),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    // mknod may be refused in an unprivileged container; everything else must work.
    let unexpected: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("dev/console"))
        .collect();
    assert!(
        out.status.success() || unexpected.is_empty(),
        "cpio failed: {stderr}"
    );
    assert!(unexpected.is_empty(), "cpio complained: {stderr}");

    let root = dir.path();
    let check_file = |rel: &str, mode: u32, data: &[u8]| {
        let p = root.join(rel);
        assert_eq!(std::fs::read(&p).unwrap(), data, "{rel} contents");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o7777,
            mode,
            "{rel} mode"
        );
    };
    check_file("bin/tool", 0o755, b"#!/bin/sh\necho hi\n");
    check_file("deep/er/empty", 0o644, b"");
    check_file("deep/er/one", 0o600, b"1");
    check_file("deep/er/two", 0o640, b"22");
    check_file("deep/er/three", 0o644, b"333");
    check_file("deep/er/four", 0o644, b"4444");
    check_file("etc/big", 0o644, &vec![0xa5; 70_001]);
    assert_eq!(
        std::fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("tool")
    );
    let etc = std::fs::metadata(root.join("etc")).unwrap();
    assert!(etc.is_dir());
    assert_eq!(etc.permissions().mode() & 0o7777, 0o700);
    assert!(root.join("deep/er").is_dir());
    if let Ok(m) = std::fs::symlink_metadata(root.join("dev/console")) {
        assert!(m.file_type().is_char_device());
        assert_eq!(m.rdev(), makedev(5, 1));
    }
}

/// glibc's encoding of (major, minor) for small numbers.
fn makedev(major: u64, minor: u64) -> u64 {
    (major << 8) | minor
}

#[test]
fn system_cpio_lists_char_device() {
    // Listing needs no privileges, so the device node is always checked here.
    let out = run_with_stdin(
        Command::new("cpio").args(["-tv", "--quiet"]),
        &sample().finish(),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8_lossy(&out.stdout);
    let console = listing
        .lines()
        .find(|l| l.ends_with("dev/console"))
        .expect("dev/console listed");
    assert!(console.starts_with("crw-------"), "{console}");
    assert!(
        console.contains("5,") && console.contains(" 1 "),
        "{console}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("bin/sh -> tool")),
        "{listing}"
    );
}

#[test]
fn gzip_output_is_valid_and_decompresses_to_raw() {
    let a = sample();
    let gz = a.finish_gzip();
    let t = run_with_stdin(Command::new("gzip").arg("-t"), &gz);
    assert!(
        t.status.success(),
        "gzip -t: {}",
        String::from_utf8_lossy(&t.stderr)
    );
    let d = run_with_stdin(Command::new("gzip").arg("-dc"), &gz);
    assert_eq!(d.stdout, a.finish());
}

#[test]
#[should_panic(expected = "invalid cpio path")]
fn rejects_parent_components() {
    Archive::new().add_file("a/../b", 0o644, b"");
}
