//! Builds the real guest image from Debian packages and inspects it.
//! Needs apt access to the Debian archive on first run (then cached in
//! `.cache/image` or `$VIREO_IMAGE_CACHE`), plus `cpio`, `gzip` and
//! e2fsprogs.

mod common;

use std::process::Command;

use vireo_image::modules::ModulesDep;

#[test]
fn kernel_is_a_bzimage() {
    let image = common::image("build-test");
    let kernel = std::fs::read(&image.kernel).unwrap();
    assert!(
        kernel.len() > 1_000_000,
        "kernel suspiciously small: {} bytes",
        kernel.len()
    );
    // The x86 boot protocol header magic lives at 0x202.
    assert_eq!(&kernel[0x202..0x206], b"HdrS", "not a bzImage");
    assert!(image.kernel.ends_with("vmlinuz"));
    assert!(
        image.kernel_version.starts_with("6.") && image.kernel_version.ends_with("-cloud-amd64"),
        "{}",
        image.kernel_version
    );
}

#[test]
fn initramfs_lists_init_busybox_and_virtio_modules() {
    let image = common::image("build-test");
    assert!(image.initrd.ends_with("initramfs.cpio.gz"));
    let out = Command::new("sh")
        .arg("-c")
        .arg("gzip -dc \"$1\" | cpio -t --quiet")
        .arg("sh")
        .arg(&image.initrd)
        .output()
        .expect("sh, gzip and cpio installed (apt-get install -y cpio)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    let has = |path: &str| listing.lines().any(|l| l == path);
    for path in [
        "init",
        "bin/busybox",
        "bin/sh",
        "sbin/acpid",
        "dev/console",
        "etc/acpid.conf",
        "etc/acpi/PWRF/00000080",
    ] {
        assert!(has(path), "{path} missing from initramfs:\n{listing}");
    }
    let moddir = format!("lib/modules/{}", image.kernel_version);
    for module in [
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_pci.ko",
        "kernel/drivers/virtio/virtio_pci_modern_dev.ko",
        "kernel/drivers/block/virtio_blk.ko",
        "kernel/drivers/net/virtio_net.ko",
        "kernel/drivers/char/hw_random/virtio-rng.ko",
        "kernel/drivers/char/virtio_console.ko",
        "kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko",
        "kernel/drivers/acpi/button.ko",
        "kernel/drivers/input/evdev.ko",
    ] {
        assert!(
            has(&format!("{moddir}/{module}")),
            "{module} missing:\n{listing}"
        );
    }
    assert!(has(&format!("{moddir}/modules.dep")));
    let applets = listing
        .lines()
        .filter(|l| l.starts_with("bin/") || l.contains("bin/"))
        .count();
    assert!(applets > 200, "only {applets} busybox links");
}

#[test]
fn rootfs_is_a_clean_ext4_with_the_initramfs_tree() {
    let image = common::image("build-test");
    assert!(image.rootfs.ends_with("rootfs.ext4"));
    let len = std::fs::metadata(&image.rootfs).unwrap().len();
    assert!(
        len >= 64 << 20 && len.is_multiple_of(1 << 20),
        "content + 64 MiB in whole MiB, got {len} bytes"
    );
    let (clean, fsck) = common::e2fsprogs("e2fsck", &["-fn"], &image.rootfs);
    assert!(clean, "e2fsck -fn:\n{fsck}");
    let (_, header) = common::e2fsprogs("dumpe2fs", &["-h"], &image.rootfs);
    for needle in [
        "Filesystem volume name:   vireo-root",
        "Filesystem state:         clean",
        "has_journal",
        "extent",
    ] {
        assert!(header.contains(needle), "{needle} missing:\n{header}");
    }

    // `ls -l` lines: inode, mode, (type), uid, gid, size, date, time, name.
    let ls =
        |dir: &str| common::e2fsprogs("debugfs", &["-R", &format!("ls -l {dir}")], &image.rootfs).1;
    let entry = |listing: &str, name: &str| -> Vec<String> {
        listing
            .lines()
            .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .find(|f| f.last().map(String::as_str) == Some(name))
            .unwrap_or_else(|| panic!("{name} missing:\n{listing}"))
    };
    let root = ls("/");
    let init = entry(&root, "init");
    assert_eq!(init[1], "100755", "/init: {init:?}");
    assert_eq!(init[3..5], ["0", "0"], "/init owned by root: {init:?}");
    assert_eq!(entry(&root, "tmp")[1], "41777");
    for dir in ["bin", "sbin", "etc", "lib", "proc", "sys", "dev", "run"] {
        assert!(entry(&root, dir)[1].starts_with("40"), "{dir} not a dir");
    }
    let busybox = entry(&ls("/bin"), "busybox");
    assert_eq!(busybox[1], "100755", "{busybox:?}");
    let busybox_size = busybox[5].parse::<u64>().unwrap();
    assert!(busybox_size > 1_000_000, "{busybox:?}");
    assert_eq!(entry(&ls("/dev"), "console")[1], "20600");

    // The same files as the initramfs, e.g. /init and the module list.
    let cat =
        |path: &str| common::e2fsprogs("debugfs", &["-R", &format!("cat {path}")], &image.rootfs).1;
    assert!(cat("/init").contains("switch_root"), "/init on disk");
    let modules = cat("/etc/vireo/modules");
    assert!(
        modules.contains(&format!(
            "/lib/modules/{}/kernel/drivers/block/virtio_blk.ko",
            image.kernel_version
        )),
        "{modules}"
    );
}

#[test]
fn modules_dir_resolves_extra_modules_like_kvm() {
    let image = common::image("build-test");
    let dep = std::fs::read_to_string(image.modules_dir.join("modules.dep")).unwrap();
    let md = ModulesDep::parse(&dep);
    assert!(md.len() > 500, "{} modules", md.len());
    let r = md.resolve(&["kvm_intel"]);
    assert!(r.missing.is_empty());
    let names: Vec<String> = r
        .load_order
        .iter()
        .map(|p| vireo_image::modules::module_name(p))
        .collect();
    assert_eq!(names.last().map(String::as_str), Some("kvm_intel"));
    assert!(names.contains(&"kvm".to_string()), "{names:?}");
    for path in &r.load_order {
        assert!(image.modules_dir.join(path).is_file(), "{path}");
    }
}

#[test]
fn rebuild_from_cache_is_reproducible() {
    let image = common::image("build-test");
    let out_dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("build-test-again");
    let again = vireo_image::build(&vireo_image::BuildOptions {
        out_dir,
        cache_dir: common::cache_dir(),
    })
    .unwrap();
    assert_eq!(again.kernel_version, image.kernel_version);
    // Plain assert!: a byte-vector diff would flood the log.
    assert!(
        std::fs::read(&again.initrd).unwrap() == std::fs::read(&image.initrd).unwrap(),
        "initramfs differs"
    );
    assert!(
        std::fs::read(&again.kernel).unwrap() == std::fs::read(&image.kernel).unwrap(),
        "kernel differs"
    );
    // mke2fs runs with a fixed clock and a content-derived UUID/hash seed.
    assert!(
        std::fs::read(&again.rootfs).unwrap() == std::fs::read(&image.rootfs).unwrap(),
        "rootfs.ext4 differs"
    );
}
