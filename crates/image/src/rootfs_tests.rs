//! Staging tree, debugfs script and a real (tiny) image through e2fsprogs
//! (`apt-get install e2fsprogs`).

use super::*;

fn sample() -> Archive {
    let mut a = Archive::new();
    a.add_dir("tmp", 0o1777)
        .add_dir("root", 0o700)
        .add_dir("ro", 0o555)
        .add_file("ro/inside", 0o444, b"read only")
        .add_file("bin/busybox", 0o755, b"\x7fELF")
        .add_symlink("bin/sh", "/bin/busybox")
        .add_file("etc/hostname", 0o644, b"vireo\n")
        .add_char_dev("dev/console", 0o600, 5, 1);
    a
}

/// Runs an e2fsprogs tool and returns (success, stdout + stderr).
fn e2(tool: &str, args: &[&str], image: &Path) -> (bool, String) {
    let out = Command::new(find_tool(tool))
        .args(args)
        .arg(image)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} ({e}); {HINT}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn staging_tree_matches_archive_without_device_nodes() {
    let dir = tempfile::tempdir().unwrap();
    write_tree(&sample(), dir.path()).unwrap();
    let root = dir.path();
    let perm = |rel: &str| fs::symlink_metadata(root.join(rel)).unwrap().mode() & 0o7777;
    assert_eq!(perm("tmp"), 0o1777);
    assert_eq!(perm("root"), 0o700);
    assert_eq!(perm("ro"), 0o555, "mode set after its file was written");
    assert_eq!(perm("ro/inside"), 0o444);
    assert_eq!(perm("bin/busybox"), 0o755);
    assert_eq!(fs::read(root.join("ro/inside")).unwrap(), b"read only");
    assert_eq!(
        fs::read_link(root.join("bin/sh")).unwrap(),
        Path::new("/bin/busybox")
    );
    assert!(root.join("dev").is_dir());
    assert!(!root.join("dev/console").exists(), "left to debugfs");
    // Let tempdir clean up a read-only directory.
    set_perm(&root.join("ro"), 0o755).unwrap();
}

#[test]
fn debugfs_script_adds_console_then_normalises_every_entry() {
    let a = sample();
    let script = debugfs_script(&a).unwrap();
    assert!(
        script.starts_with(
            "cd \"/dev\"\nmknod \"console\" c 5 1\nsif \"/dev/console\" mode 020600\ncd /\n"
        ),
        "{script}"
    );
    for e in a.entries() {
        for field in ["uid 0", "gid 0", "atime 1", "mtime 1", "ctime 1"] {
            let line = format!("sif \"/{}\" {field}\n", e.path);
            assert!(script.contains(&line), "missing {line:?}");
        }
    }
    let mut bad = Archive::new();
    bad.add_file("etc/a\"b", 0o644, b"");
    assert!(debugfs_script(&bad).unwrap_err().contains("a\\\"b"));
}

#[test]
fn disk_size_is_content_plus_free_space_in_mib() {
    // 11 entries (with implicit parents) of one block each, plus 64 MiB.
    assert_eq!(disk_size(&sample()), 65 * MIB);
    let mut big = Archive::new();
    big.add_file("big", 0o644, &vec![0; 3 * MIB as usize + 1]);
    // "big" needs 3 MiB + one block.
    assert_eq!(disk_size(&big), 68 * MIB);
}

#[test]
fn ids_follow_content() {
    let (uuid, seed) = ids(&sample());
    assert_eq!((uuid.clone(), seed.clone()), ids(&sample()));
    assert_ne!(uuid, seed);
    let parts: Vec<usize> = uuid.split('-').map(str::len).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "{uuid}");
    assert_eq!(&uuid[14..15], "4", "version 4: {uuid}");
    assert!("89ab".contains(&uuid[19..20]), "RFC 4122 variant: {uuid}");
    let mut other = sample();
    other.add_file("etc/hostname", 0o644, b"other\n");
    assert_ne!(ids(&other).0, uuid);
}

#[test]
fn image_is_clean_ext4_with_root_owned_tree_and_reproducible() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("rootfs.ext4");
    let size = write(&sample(), &img).unwrap();
    assert_eq!(fs::metadata(&img).unwrap().len(), size);
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "rootfs.ext4")
        .collect();
    assert!(leftovers.is_empty(), "scratch files left: {leftovers:?}");

    let (clean, fsck) = e2("e2fsck", &["-fn"], &img);
    assert!(clean, "{fsck}");
    let (_, label) = e2("dumpe2fs", &["-h"], &img);
    assert!(
        label.contains("Filesystem volume name:   vireo-root"),
        "{label}"
    );
    let (_, console) = e2("debugfs", &["-R", "stat /dev/console"], &img);
    assert!(
        console.contains("Type: character special") && console.contains("Mode:  0600"),
        "{console}"
    );
    assert!(
        console.contains("Device major/minor number: 05:01"),
        "{console}"
    );
    let (_, hostname) = e2("debugfs", &["-R", "cat /etc/hostname"], &img);
    assert!(hostname.contains("vireo\n"), "{hostname}");
    // Owners are root and times fixed whoever runs the build.
    let (_, listing) = e2("debugfs", &["-R", "ls -l /bin"], &img);
    let busybox = listing
        .lines()
        .find(|l| l.ends_with(" busybox"))
        .unwrap_or_else(|| panic!("{listing}"));
    let fields: Vec<&str> = busybox.split_whitespace().collect();
    assert_eq!(fields[1..6], ["100755", "(1)", "0", "0", "4"], "{busybox}");
    assert!(busybox.contains("1-Jan-1970"), "{busybox}");

    let again = dir.path().join("again.ext4");
    write(&sample(), &again).unwrap();
    assert!(
        fs::read(&img).unwrap() == fs::read(&again).unwrap(),
        "same archive, different image bytes"
    );
}

#[test]
fn missing_e2fsprogs_error_says_how_to_install() {
    let tool = find_tool("mke2fs-not-installed");
    assert_eq!(
        tool,
        Path::new("mke2fs-not-installed"),
        "bare name fallback"
    );
    let err = output(&mut Command::new(tool), HINT)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("mke2fs-not-installed") && err.contains("apt-get install e2fsprogs"),
        "{err}"
    );
}
