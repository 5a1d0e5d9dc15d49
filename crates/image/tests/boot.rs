//! Boots the real guest image in QEMU (TCG, no KVM needed) and talks to its
//! serial console. Needs `qemu-system-x86_64` (apt-get install -y
//! qemu-system-x86). Each boot is bounded by timeouts and QEMU is killed if
//! anything goes wrong, so these tests cannot hang.

mod common;

use std::time::Duration;

use common::qemu::Qemu;

const READY: &str = "vireo guest ready";
const PROMPT: &str = "vireo:/# ";
const BOOT_TIMEOUT: Duration = Duration::from_secs(40);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// The values of `key=value` lines the shell printed. Each answer carries
/// such a marker: kernel messages share the console and may land between
/// (or inside) the shell's output lines.
fn values(console: &str, key: &str) -> Vec<String> {
    console
        .lines()
        .filter_map(|l| {
            l.trim_end_matches('\r')
                .strip_prefix(key)?
                .strip_prefix('=')
        })
        // The echoed command line wraps at 80 columns and may put a
        // `key=$(...)` at a line start too; real values have no `$`.
        .filter(|v| !v.contains('$'))
        .map(str::to_string)
        .collect()
}

/// Waits for QEMU to exit after a guest poweroff; returns the transcript.
fn expect_poweroff(vm: &mut Qemu) -> String {
    let status = vm.wait_exit(SHUTDOWN_TIMEOUT);
    let transcript = vm.transcript();
    let status =
        status.unwrap_or_else(|| panic!("guest did not power off; transcript:\n{transcript}"));
    assert!(
        status.success(),
        "qemu exited with {status}; transcript:\n{transcript}"
    );
    assert!(
        transcript.contains("reboot: Power down"),
        "not a clean power-off:\n{transcript}"
    );
    transcript
}

/// Boots and waits for the interactive shell's prompt.
fn boot_to_shell(extra: &[&str]) -> Qemu {
    let image = common::image("boot-test");
    let mut vm = Qemu::boot(image, extra);
    vm.wait_for(READY, BOOT_TIMEOUT);
    vm.wait_for(PROMPT, Duration::from_secs(10));
    eprintln!(
        "shell prompt after {:.1}s",
        vm.started.elapsed().as_secs_f64()
    );
    vm
}

#[test]
fn shell_works_virtio_modules_load_and_poweroff_exits() {
    let mut vm = boot_to_shell(&["-device", "virtio-rng-pci", "-device", "virtio-balloon-pci"]);
    vm.send(concat!(
        "echo $((6*7)); echo answer=$((6*7)); echo lsmod=$(lsmod | wc -l); ",
        "echo rng=$(cat /sys/class/misc/hw_random/rng_current); ",
        "for m in virtio_pci virtio_net vmw_vsock_virtio_transport; do [ -d /sys/module/$m ] && echo loaded=$m; done; ",
        "echo balloon=$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio); ",
        "echo host=$(hostname); poweroff\n"
    ));
    let transcript = expect_poweroff(&mut vm);
    eprintln!(
        "boot + commands + poweroff took {:.1}s",
        vm.started.elapsed().as_secs_f64()
    );

    let console = common::qemu::without_kernel_log(&transcript);
    let values = |key: &str| values(&console, key);
    assert_eq!(values("answer"), ["42"], "transcript:\n{transcript}");
    // lsmod prints a header plus one line per module (18 are loaded).
    let lsmod: Vec<usize> = values("lsmod")
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        lsmod.len() == 1 && lsmod[0] >= 15,
        "lsmod {lsmod:?}; transcript:\n{transcript}"
    );
    // The virtio-rng-pci and virtio-balloon-pci devices were bound by their drivers.
    assert_eq!(values("rng"), ["virtio_rng.0"], "transcript:\n{transcript}");
    assert_eq!(values("balloon"), ["1"], "transcript:\n{transcript}");
    assert_eq!(
        values("loaded"),
        ["virtio_pci", "virtio_net", "vmw_vsock_virtio_transport"],
        "transcript:\n{transcript}"
    );
    assert_eq!(values("host"), ["vireo"], "transcript:\n{transcript}");
    assert!(
        !console.contains("insmod"),
        "a module failed to load:\n{transcript}"
    );
}

#[test]
fn acpi_power_button_powers_off() {
    let mut vm = boot_to_shell(&[]);
    // Ctrl-A c switches QEMU's stdio from the serial port to the monitor.
    vm.send("\x01c");
    vm.wait_for("(qemu)", Duration::from_secs(10));
    vm.send("system_powerdown\n");
    let status = vm.wait_exit(SHUTDOWN_TIMEOUT);
    let transcript = vm.transcript();
    let status =
        status.unwrap_or_else(|| panic!("power button ignored; transcript:\n{transcript}"));
    assert!(
        status.success(),
        "qemu exited with {status}; transcript:\n{transcript}"
    );
    assert!(
        transcript.contains("vireo: poweroff"),
        "acpid handler did not run:\n{transcript}"
    );
    assert!(transcript.contains("reboot: Power down"));
}

/// A copy of the built root disk in a temp dir, so a boot that writes to
/// it leaves the shared image alone.
fn rootfs_copy(image: &vireo_image::GuestImage) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("rootfs.ext4");
    std::fs::copy(&image.rootfs, &disk).unwrap();
    (dir, disk)
}

fn virtio_disk(path: &std::path::Path) -> [String; 4] {
    [
        "-drive".into(),
        format!("file={},if=none,id=d,format=raw", path.display()),
        "-device".into(),
        "virtio-blk-pci,drive=d".into(),
    ]
}

#[test]
fn boots_from_ext4_root_disk_and_writes_persist() {
    let image = common::image("boot-test");
    let (_dir, disk) = rootfs_copy(image);
    let args = virtio_disk(&disk);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = Qemu::boot_with_cmdline(image, "console=ttyS0 panic=-1 root=/dev/vda", &args);
    vm.wait_for("vireo: switching to root /dev/vda", BOOT_TIMEOUT);
    vm.wait_for(READY, Duration::from_secs(20));
    vm.wait_for(PROMPT, Duration::from_secs(10));
    eprintln!(
        "disk root shell after {:.1}s",
        vm.started.elapsed().as_secs_f64()
    );
    vm.send(concat!(
        "echo root=$(grep ' / ' /proc/mounts | cut -d' ' -f1-4 | tr ' ' ,); ",
        "echo blk=$([ -d /sys/module/virtio_blk ] && echo loaded); ",
        "echo vireo-disk-ok > /persisted; sync; ",
        "echo host=$(hostname); poweroff\n"
    ));
    let transcript = expect_poweroff(&mut vm);
    let console = common::qemu::without_kernel_log(&transcript);
    let roots = values(&console, "root");
    assert!(
        roots.len() == 1 && roots[0].starts_with("/dev/vda,/,ext4,rw"),
        "/ is not the read-write ext4 disk: {roots:?}; transcript:\n{transcript}"
    );
    assert_eq!(values(&console, "blk"), ["loaded"], "{transcript}");
    assert_eq!(values(&console, "host"), ["vireo"], "{transcript}");
    // The disk's /init ran without reloading modules or retrying root=.
    assert_eq!(console.matches(READY).count(), 1, "{transcript}");
    assert!(!console.contains("insmod"), "{transcript}");
    assert!(!console.contains("cannot mount root"), "{transcript}");

    let (_, file) = common::e2fsprogs("debugfs", &["-R", "cat /persisted"], &disk);
    assert!(file.contains("vireo-disk-ok"), "file not on disk: {file}");
    // poweroff remounts / read-only first, so nothing waits in the journal
    // (e2fsck -n would only warn about a needed recovery).
    let (clean, fsck) = common::e2fsprogs("e2fsck", &["-fn"], &disk);
    assert!(
        clean && !fsck.contains("journal"),
        "disk not clean after poweroff:\n{fsck}"
    );
    let (_, header) = common::e2fsprogs("dumpe2fs", &["-h"], &disk);
    assert!(
        header.contains("Filesystem state:         clean") && !header.contains("needs_recovery"),
        "journal not flushed:\n{header}"
    );
    assert!(!console.contains("cannot remount"), "{transcript}");
}

#[test]
fn unmountable_root_falls_back_to_initramfs_shell() {
    let image = common::image("boot-test");
    // A blank disk: /dev/vda appears, but holds no filesystem.
    let dir = tempfile::tempdir().unwrap();
    let blank = dir.path().join("blank.img");
    std::fs::write(&blank, vec![0u8; 1 << 20]).unwrap();
    let args = virtio_disk(&blank);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut vm = Qemu::boot_with_cmdline(image, "console=ttyS0 panic=-1 root=/dev/vda", &args);
    vm.wait_for("vireo: cannot mount root /dev/vda as ext4", BOOT_TIMEOUT);
    vm.wait_for(READY, Duration::from_secs(10));
    vm.wait_for(PROMPT, Duration::from_secs(10));
    vm.send("echo root=$(grep ' / ' /proc/mounts | cut -d' ' -f3); poweroff\n");
    let transcript = expect_poweroff(&mut vm);
    let console = common::qemu::without_kernel_log(&transcript);
    let roots = values(&console, "root");
    assert!(
        roots.len() == 1 && roots[0] != "ext4",
        "expected the initramfs as /: {roots:?}; transcript:\n{transcript}"
    );
}
