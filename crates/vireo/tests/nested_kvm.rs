//! Linux under `--accel kvm`, nested: QEMU TCG (`-cpu max` exposes AMD SVM with nested
//! paging) boots the Debian cloud kernel with `kvm` and `kvm-amd` loaded; inside it a static
//! `vireo` boots the same stock kernel and the image's busybox initramfs with `--accel kvm`:
//! the bzImage with 1 vCPU and with 2, then the ELF vmlinux inside it through its PVH entry.
//! The test types commands into the inner guest's shell through both serial consoles and
//! checks the answers; `poweroff`, `reboot` and the API's graceful shutdown must each end
//! `vireo run` with status 0.
//!
//! This is the only way to run a 64-bit Linux guest under KVM on machines whose `/dev/kvm`
//! is `kvm_pvm` (see ARCHITECTURE.md); on a machine with a real `/dev/kvm` it works the same.

mod common;

use common::guest::{extract_vmlinux, guest_tool, image, workspace, Console, KillOnDrop};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use vireo_image::cpio::Archive;

/// A statically linked `vireo` that runs inside the outer guest's initramfs, which has no
/// libc. CI builds it first and passes VIREO_STATIC_BIN; otherwise we build it here.
fn static_vireo() -> PathBuf {
    if let Some(p) = std::env::var_os("VIREO_STATIC_BIN") {
        return PathBuf::from(p);
    }
    let target_dir = workspace().join("target/static");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace())
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args(["build", "--release", "-p", "vireo"])
        .args(["--target", "x86_64-unknown-linux-gnu", "--target-dir"])
        .arg(&target_dir)
        .status()
        .expect("run cargo to build the static vireo");
    assert!(status.success(), "building the static vireo failed");
    target_dir.join("x86_64-unknown-linux-gnu/release/vireo")
}

/// The outer guest's /init: load KVM, then boot the inner VM with 1 and then 2 vCPUs.
const OUTER_INIT: &str = r#"#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in irqbypass kvm kvm-amd tun; do insmod /nested/$m.ko || echo "OUTER: insmod $m failed"; done
[ -c /dev/kvm ] && echo "OUTER: /dev/kvm ready"
# The 2-vCPU run also gets every kind of virtio device (MSI-X and ioeventfds under KVM): a
# disk, entropy, a network card on a tap that this outer machine addresses, a vsock whose
# guest-initiated connection reaches a Unix socket here, and a balloon inflated at boot.
dd if=/dev/zero of=/disk.img bs=1M count=32 2>/dev/null
(for i in $(seq 600); do ip link show vt0 >/dev/null 2>&1 && break; sleep 0.1; done
 ip addr add 10.0.9.1/24 dev vt0 && ip link set vt0 up) &
/nested/vsock uds-reply /v.sock_5000 > /vsock.out &
for run in "vmlinuz 1 inner" "vmlinuz 2 inner-tools --disk path=/disk.img --rng --net tap=vt0 --vsock cid=5,socket=/v.sock --balloon size=64M" "vmlinux 1 inner"; do
  set -- $run
  kernel=$1 cpus=$2 initrd=$3
  shift 3
  echo "OUTER: booting inner guest $kernel with $cpus vCPUs"
  /nested/vireo run --accel kvm --cpus $cpus --memory 256M "$@" \
      --kernel /nested/$kernel --initrd /nested/$initrd.cpio.gz \
      --cmdline "console=ttyS0 reboot=k panic=-1"
  echo "OUTER: VIREO_EXIT=$?"
done
echo "OUTER: VSOCK=$(cat /vsock.out)"
echo "OUTER: DISK=$(head -c 16 /disk.img)"

# Graceful shutdown through the API: the ACPI power button, which the guest's acpid turns
# into poweroff; the inner console goes to a file, which also shows when the guest is up.
/nested/vireo run --accel kvm --memory 256M --console file=/inner.log \
    --api-socket /api.sock --kernel /nested/vmlinuz --initrd /nested/inner.cpio.gz \
    --cmdline "console=ttyS0 reboot=k panic=-1" </dev/null &
pid=$!
for i in $(seq 600); do grep -q "vireo guest ready" /inner.log 2>/dev/null && break; sleep 0.2; done
sleep 1
/nested/vireo vm info --api-socket /api.sock | grep -q '"Running"' && echo "OUTER: API says Running"
/nested/vireo vm shutdown --api-socket /api.sock && echo "OUTER: power button pressed"
wait $pid
echo "OUTER: SHUTDOWN_EXIT=$?"
poweroff -f
"#;

#[test]
fn linux_boots_under_nested_kvm_with_1_and_2_vcpus() {
    // Per process: two concurrent runs must not overwrite each other's outer initrd.
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("nested-kvm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = image(&dir.join("image"));
    let vireo = static_vireo();

    // Linux unpacks concatenated initramfs archives in order, so the outer initrd is the
    // image's (busybox) followed by our overlay with its own /init.
    let mut overlay = Archive::new();
    overlay.add_dir("nested", 0o755);
    overlay.add_file("init", 0o755, OUTER_INIT.as_bytes());
    overlay.add_file("nested/vireo", 0o755, &std::fs::read(&vireo).unwrap());
    overlay.add_file(
        "nested/vmlinuz",
        0o644,
        &std::fs::read(&img.kernel).unwrap(),
    );
    overlay.add_file("nested/vmlinux", 0o644, &extract_vmlinux(&img.kernel));
    let inner = std::fs::read(&img.initrd).unwrap();
    overlay.add_file("nested/inner.cpio.gz", 0o644, &inner);
    // The inner guest that gets the virtio devices also gets the vsock tool (Linux unpacks
    // concatenated archives in order).
    let vsock_tool = std::fs::read(guest_tool(&dir, "vsock")).unwrap();
    let mut tools = Archive::new();
    tools.add_file("bin/vsock", 0o755, &vsock_tool);
    let mut inner_tools = inner.clone();
    inner_tools.extend_from_slice(&tools.finish_gzip());
    overlay.add_file("nested/inner-tools.cpio.gz", 0o644, &inner_tools);
    overlay.add_file("nested/vsock", 0o755, &vsock_tool);
    for (name, rel) in [
        ("irqbypass", "kernel/virt/lib/irqbypass.ko"),
        ("kvm", "kernel/arch/x86/kvm/kvm.ko"),
        ("kvm-amd", "kernel/arch/x86/kvm/kvm-amd.ko"),
        ("tun", "kernel/drivers/net/tun.ko"),
    ] {
        let data = vireo_image::modules::read_module(&img.modules_dir.join(rel))
            .unwrap_or_else(|e| panic!("module {rel}: {e}"));
        overlay.add_file(&format!("nested/{name}.ko"), 0o644, &data);
    }
    let mut initrd = std::fs::read(&img.initrd).unwrap();
    initrd.extend_from_slice(&overlay.finish_gzip());
    let outer_initrd = dir.join("outer.cpio.gz");
    std::fs::write(&outer_initrd, &initrd).unwrap();

    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg,thread=multi",
            "-cpu",
            "max",
            "-smp",
            "2",
            "-m",
            "2G",
        ])
        .args([
            "-nographic",
            "-no-reboot",
            "-nodefaults",
            "-serial",
            "stdio",
        ])
        .arg("-kernel")
        .arg(&img.kernel)
        .arg("-initrd")
        .arg(&outer_initrd)
        .args(["-append", "console=ttyS0 panic=-1 reboot=t quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86)");
    let mut con = Console::attach(&mut child, "");
    let _guard = KillOnDrop(child);

    con.expect("OUTER: /dev/kvm ready", Duration::from_secs(120));
    // The bzImage (64-bit boot protocol) with 1 and 2 vCPUs, then the ELF vmlinux (PVH entry).
    for (kernel, cpus) in [("vmlinuz", 1), ("vmlinuz", 2), ("vmlinux", 1)] {
        let started = Instant::now();
        con.expect(
            &format!("OUTER: booting inner guest {kernel} with {cpus} vCPUs"),
            Duration::from_secs(60),
        );
        con.expect("vireo guest ready", Duration::from_secs(240));
        eprintln!(
            "inner guest {kernel} with {cpus} vCPUs ready after {:?}",
            started.elapsed()
        );
        // ash's line editor queries the terminal (ESC[6n) at each prompt and can swallow
        // typed input while it waits for the answer; a plain read loop has no editor.
        std::thread::sleep(Duration::from_secs(1));
        con.send("while read -r l; do eval \"$l\"; done");
        std::thread::sleep(Duration::from_secs(1));
        assert_eq!(con.run("nproc"), cpus.to_string());
        assert_eq!(
            con.run("grep -c ^processor /proc/cpuinfo"),
            cpus.to_string()
        );
        assert_eq!(con.run("echo $((123456789 * 3))"), "370370367");
        assert_eq!(
            con.run("echo round-trip-data > /tmp/f && cat /tmp/f"),
            "round-trip-data"
        );
        // The host bridge, found through the DSDT's PCI0 and the MCFG's ECAM window.
        assert_eq!(
            con.run("cat /sys/bus/pci/devices/0000:00:00.0/vendor"),
            "0x8086"
        );
        let reserved = con.run("dmesg | grep -c 'MMCONFIG.*reserved'");
        assert!(reserved.parse::<u32>().is_ok_and(|n| n > 0), "{reserved}");
        if cpus == 2 {
            // virtio-blk and virtio-rng through PCI and MSI-X: data written by the guest
            // reaches the outer machine's file (checked below), and reads come back from it.
            con.run("dmesg -n 1");
            assert_eq!(con.run("cat /sys/block/vda/size"), "65536");
            assert_eq!(
                con.run("echo nested-disk-data | dd of=/dev/vda conv=fsync 2>/dev/null; echo 3 > /proc/sys/vm/drop_caches; head -c 16 /dev/vda"),
                "nested-disk-data"
            );
            assert_eq!(
                con.run("cat /sys/devices/virtual/misc/hw_random/rng_current"),
                "virtio_rng.0"
            );
            assert!(con
                .run("grep -c virtio /proc/interrupts")
                .parse::<u32>()
                .is_ok_and(|n| n >= 2));
            // The network card on the outer machine's tap.
            let ping = con.run(
                "ip link set eth0 up && ip addr add 10.0.9.2/24 dev eth0 && ping -c 2 -W 10 10.0.9.1 | grep received",
            );
            assert!(ping.contains("2 packets received"), "{ping}");
            // vsock: CID 2 port 5000 is the outer machine's /v.sock_5000.
            assert_eq!(
                con.run("vsock connect 2 5000 hello-nested"),
                "reply:hello-nested"
            );
            // The balloon took 64 MiB at boot: MemTotal is below 256 - 64 MiB.
            let total: u64 = con
                .run("awk '/MemTotal/ {print $2}' /proc/meminfo")
                .parse()
                .unwrap();
            assert!(total < 192 * 1024, "MemTotal {total} KiB");
            // Both CPUs take interrupts: the scheduler really uses the second one.
            let out = con.run("grep -E '^ *LOC:' /proc/interrupts");
            let counts: Vec<u64> = out
                .split_whitespace()
                .skip(1)
                .take(2)
                .filter_map(|t| t.parse().ok())
                .collect();
            assert_eq!(counts.len(), 2, "{out}");
            assert!(counts.iter().all(|&c| c > 0), "{out}");
        }
        // ACPI S5, except with 2 vCPUs: reboot through the i8042 reset line (reboot=k).
        con.send(if cpus == 1 { "poweroff" } else { "reboot" });
        let tail = con.expect("OUTER: VIREO_EXIT=", Duration::from_secs(120));
        assert!(!tail.contains("vireo: error"), "{tail}");
        let status = con.expect("\n", Duration::from_secs(5));
        assert_eq!(status.trim(), "0", "vireo run must end with status 0");
    }
    con.expect("OUTER: VSOCK=uds got hello-nested", Duration::from_secs(30));
    con.expect("OUTER: DISK=nested-disk-data", Duration::from_secs(30));
    con.expect("OUTER: API says Running", Duration::from_secs(240));
    con.expect("OUTER: power button pressed", Duration::from_secs(30));
    let status = con.expect("OUTER: SHUTDOWN_EXIT=", Duration::from_secs(120));
    assert!(!status.contains("vireo: error"), "{status}");
    let status = con.expect("\n", Duration::from_secs(5));
    assert_eq!(
        status.trim(),
        "0",
        "graceful shutdown must end vireo run with status 0"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
