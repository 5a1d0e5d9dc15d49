//! Builds the real guest image from Debian packages and inspects it.
//! Needs apt access to the Debian archive on first run (then cached in
//! `.cache/image` or `$VIREO_IMAGE_CACHE`), plus `cpio` and `gzip`.

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
}
