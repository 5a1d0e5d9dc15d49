//! virtio-pci devices seen by a booted Linux guest (the stock Debian kernel and its virtio_pci,
//! virtio_blk and virtio_rng modules): the guest finds the disks and the entropy source through
//! PCI and MSI-X, reads what the host wrote, makes a filesystem and writes files that the host
//! then checks with e2fsprogs, and a read-only disk refuses writes.

mod common;

use common::guest::{boot, image, scratch, wait_exit};
use common::vireo_bin;
use std::ffi::OsStr;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const MARKER: &str = "vireo-host-marker";

/// A sparse raw image of `size` bytes with MARKER at byte `at`.
fn raw_image(path: &Path, size: u64, at: u64) {
    let mut f = std::fs::File::create(path).unwrap();
    f.set_len(size).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(MARKER.as_bytes()).unwrap();
}

fn debugfs(image: &Path, request: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", request])
        .arg(image)
        .output()
        .expect("run debugfs (apt-get install e2fsprogs)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `vireo vm devices`: device id -> counter name -> value.
fn device_counters(api: &Path) -> serde_json::Value {
    let out = Command::new(vireo_bin())
        .args(["vm", "devices", "--api-socket"])
        .arg(api)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    list.as_array()
        .unwrap()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_string(), d["counters"].clone()))
        .collect::<serde_json::Map<_, _>>()
        .into()
}

fn disks_rng_and_filesystem(accel: &str) {
    let dir = scratch("virtio-linux", accel);
    let img = image(&dir.join("image"));
    let data = dir.join("data.img");
    let ro = dir.join("ro.img");
    raw_image(&data, 64 << 20, 1 << 20);
    raw_image(&ro, 8 << 20, 0);
    let disk_data = format!("path={}", data.display());
    let disk_ro = format!("path={},readonly=on", ro.display());
    let api = dir.join("api.sock");
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[
            OsStr::new("--disk"),
            OsStr::new(&disk_data),
            OsStr::new("--disk"),
            OsStr::new(&disk_ro),
            OsStr::new("--rng"),
            OsStr::new("--api-socket"),
            api.as_os_str(),
        ],
    );

    // Kernel messages (ext4 mounting) would interleave with the answers on the console.
    con.run("dmesg -n 1");

    // Sizes and flags come from the device's configuration space.
    assert_eq!(
        con.run("cat /sys/block/vda/size /sys/block/vda/ro"),
        "131072\r\n0"
    );
    assert_eq!(
        con.run("cat /sys/block/vdb/size /sys/block/vdb/ro"),
        "16384\r\n1"
    );

    // What the host wrote is what the guest reads.
    assert_eq!(
        con.run("dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 17"),
        MARKER
    );
    assert_eq!(con.run("head -c 17 /dev/vdb"), MARKER);
    let refused = con.run("echo x | dd of=/dev/vdb 2>&1; echo status=$?");
    assert!(
        refused.contains("error writing") && refused.ends_with("status=1"),
        "{refused}"
    );

    // A filesystem: written by the guest, checked by the host after poweroff.
    let mkfs = con.run(
        "mke2fs /dev/vda >/dev/null && mkdir -p /mnt && mount /dev/vda /mnt && \
         seq 1 50000 > /mnt/seq && echo hello-from-guest > /mnt/hello && \
         sha256sum /mnt/seq | head -c 64 && umount /mnt && echo; echo unmounted",
    );
    let expected: String = (1..=50000).map(|i| format!("{i}\n")).collect();
    let host_sum = {
        let mut c = Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        c.stdin
            .take()
            .unwrap()
            .write_all(expected.as_bytes())
            .unwrap();
        String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap()
    };
    assert!(mkfs.starts_with(&host_sum[..64]), "{mkfs}");
    assert!(mkfs.ends_with("unmounted"), "{mkfs}");

    // The guest's entropy source is the virtio device.
    assert_eq!(
        con.run("cat /sys/devices/virtual/misc/hw_random/rng_current"),
        "virtio_rng.0"
    );
    assert_eq!(
        con.run("dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \\n' | wc -c"),
        "64"
    );

    // The API counts what the devices did.
    let c = device_counters(&api);
    assert!(c["disk0"]["write_ops"].as_u64().unwrap() > 0, "{c}");
    assert!(
        c["disk0"]["write_bytes"].as_u64().unwrap() >= 50000 * 5,
        "{c}"
    );
    assert!(c["disk1"]["read_ops"].as_u64().unwrap() > 0, "{c}");
    assert_eq!(c["disk1"]["write_ops"].as_u64(), Some(0), "{c}");
    assert!(c["rng0"]["bytes"].as_u64().unwrap() >= 32, "{c}");

    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));

    let fsck = Command::new("e2fsck")
        .args(["-fn"])
        .arg(&data)
        .output()
        .expect("run e2fsck");
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    assert_eq!(debugfs(&data, "cat /hello"), "hello-from-guest\n");
    assert!(debugfs(&data, "cat /seq") == expected, "/seq differs");
}

#[test]
fn virtio_disks_and_rng_under_the_emulator() {
    disks_rng_and_filesystem("emu");
}

/// `bps=` holds a disk to its bandwidth: the guest reads 16 MiB from a disk limited to
/// 4 MiB/s, and the rate the host measures is within 10% of that.
fn rate_limited_disk(accel: &str) {
    const BPS: f64 = (4 << 20) as f64;
    let dir = scratch("virtio-linux", &format!("limit-{accel}"));
    let img = image(&dir.join("image"));
    let data = dir.join("data.img");
    raw_image(&data, 64 << 20, 0);
    let disk = format!("path={},bps=4M", data.display());
    let api = dir.join("api.sock");
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[
            OsStr::new("--disk"),
            OsStr::new(&disk),
            OsStr::new("--api-socket"),
            api.as_os_str(),
        ],
    );
    let before = device_counters(&api)["disk0"]["read_bytes"]
        .as_u64()
        .unwrap();
    let started = Instant::now();
    con.run("dd if=/dev/vda of=/dev/null bs=1M count=16 2>/dev/null");
    let elapsed = started.elapsed().as_secs_f64();
    let c = device_counters(&api);
    let bytes = c["disk0"]["read_bytes"].as_u64().unwrap() - before;
    assert!(bytes >= 16 << 20, "{c}");
    let rate = bytes as f64 / elapsed;
    eprintln!(
        "read {bytes} bytes in {elapsed:.2} s: {:.3} of the limit",
        rate / BPS
    );
    assert!(
        (0.9..=1.1).contains(&(rate / BPS)),
        "{rate} B/s for a limit of {BPS}"
    );
    assert!(c["disk0"]["throttled"].as_u64().unwrap() > 0, "{c}");
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}

#[test]
fn rate_limited_disk_under_the_emulator() {
    rate_limited_disk("emu");
}

/// `--console virtio`: typed input reaches a shell on the guest's hvc0 (the serial port still
/// carries the kernel's messages), and its answers come back.
fn virtio_console(accel: &str) {
    let dir = scratch("virtio-linux", &format!("console-{accel}"));
    let img = image(&dir.join("image"));
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[OsStr::new("--console"), OsStr::new("virtio")],
    );
    // The serial port's shell writes to the same stdout (its prompt, which ends with the
    // cursor query ESC[6n, can land anywhere, even before the answer on its line), so look
    // for the answer among the lines, after any such prompt.
    let has_line = |out: String, want: &str| {
        out.lines()
            .any(|l| l.rsplit("\x1b[6n").next().map(str::trim) == Some(want))
    };
    assert!(has_line(con.run("tty"), "/dev/hvc0"));
    assert!(has_line(con.run("echo $((6 * 7))"), "42"));
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}

#[test]
fn virtio_console_under_the_emulator() {
    virtio_console("emu");
}

/// The image's ext4 root disk: the guest mounts it as `/` (read-write) from virtio-blk, and
/// what it writes there is on the host's file after poweroff.
fn boot_from_root_disk(accel: &str) {
    let dir = scratch("virtio-linux", &format!("rootfs-{accel}"));
    let img = image(&dir.join("image"));
    let disk = dir.join("root.ext4");
    std::fs::copy(&img.rootfs, &disk).unwrap();
    let path = format!("path={}", disk.display());
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[
            OsStr::new("--disk"),
            OsStr::new(&path),
            OsStr::new("--cmdline"),
            OsStr::new("console=ttyS0 reboot=k panic=-1 root=/dev/vda"),
        ],
    );
    assert_eq!(
        con.run("grep ' / ' /proc/mounts | cut -d' ' -f1-3"),
        "/dev/vda / ext4"
    );
    con.run("echo written-on-the-root-disk > /persisted && sync");
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
    assert_eq!(
        debugfs(&disk, "cat /persisted"),
        "written-on-the-root-disk\n"
    );
    let fsck = Command::new("e2fsck")
        .arg("-fn")
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn boots_from_the_image_root_disk_under_the_emulator() {
    boot_from_root_disk("emu");
}

fn api_json(api: &Path, args: &[&str]) -> serde_json::Value {
    let out = Command::new(vireo_bin())
        .args(["vm"])
        .args(args)
        .arg("--api-socket")
        .arg(api)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
}

fn guest_mem_total_kib(con: &mut common::guest::Console) -> u64 {
    con.run("awk '/MemTotal/ {print $2}' /proc/meminfo")
        .parse()
        .unwrap()
}

/// Host memory of the VMM's guest RAM mapping (a shared memfd).
fn rss_shmem_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssShmem:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// Waits until the guest's balloon driver reports `bytes` as the balloon's size.
fn wait_balloon(api: &Path, bytes: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let st = api_json(api, &["balloon"]);
        if st["actual"].as_u64() == Some(bytes) {
            return st;
        }
        assert!(
            Instant::now() < deadline,
            "balloon never reached {bytes}: {st}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The balloon, resized through the API: inflating lowers the guest's memory and gives the
/// pages back to the host; deflating returns them; the guest's statistics arrive.
fn balloon(accel: &str) {
    let dir = scratch("virtio-linux", &format!("balloon-{accel}"));
    let img = image(&dir.join("image"));
    let api = dir.join("api.sock");
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[
            OsStr::new("--balloon"),
            OsStr::new("stats=1,free-page-reporting=off"),
            OsStr::new("--api-socket"),
            api.as_os_str(),
        ],
    );
    let pid = guard.0.id();
    let total0 = guest_mem_total_kib(&mut con);
    // Touch 256 MiB in the guest and free it again: the host now holds those pages.
    con.run("dd if=/dev/zero of=/tmp/fill bs=1M count=256 2>/dev/null; rm /tmp/fill");
    let rss0 = rss_shmem_kib(pid);

    api_json(&api, &["balloon", "--size", "300M"]);
    wait_balloon(&api, 300 << 20);
    let total1 = guest_mem_total_kib(&mut con);
    let rss1 = rss_shmem_kib(pid);
    eprintln!("MemTotal {total0} -> {total1} KiB; host RssShmem {rss0} -> {rss1} KiB");
    assert_eq!(total0 - total1, 300 << 10, "guest MemTotal");
    assert!(
        rss0 - rss1 >= 200 << 10,
        "host memory returned: {rss0} -> {rss1} KiB"
    );

    api_json(&api, &["balloon", "--size", "0"]);
    let st = wait_balloon(&api, 0);
    assert_eq!(guest_mem_total_kib(&mut con), total0);
    // Statistics come every second: the guest's view of its memory.
    let c = device_counters(&api);
    assert!(
        st["stats"]["total_memory"].as_u64().unwrap_or(0) > 0,
        "{st} {c}"
    );
    assert!(
        c["balloon0"]["inflated_pages"].as_u64().unwrap() >= 300 << 8,
        "{c}"
    );
    assert!(
        c["balloon0"]["deflated_pages"].as_u64().unwrap() >= 300 << 8,
        "{c}"
    );

    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}

#[test]
fn balloon_under_the_emulator() {
    balloon("emu");
}

/// A disk served by another process over vhost-user (QEMU's qemu-storage-daemon): the guest
/// reads what the host wrote and its writes land in the backend's image. Guest RAM is a
/// shared memfd, which the backend maps.
fn vhost_user_disk(accel: &str) {
    let dir = scratch("virtio-linux", &format!("vhost-user-{accel}"));
    let img = image(&dir.join("image"));
    let data = dir.join("data.img");
    raw_image(&data, 64 << 20, 1 << 20);
    let sock = dir.join("blk.sock");
    let _daemon = common::guest::KillOnDrop(
        Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=f,filename={}",
                data.display()
            ))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={},writable=on",
                sock.display()
            ))
            .spawn()
            .expect("start qemu-storage-daemon (apt-get install qemu-system-x86)"),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sock.exists() {
        assert!(
            Instant::now() < deadline,
            "qemu-storage-daemon made no socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let disk = format!("vhost-user={}", sock.display());
    let (mut con, mut guard) = boot(&img, accel, &[OsStr::new("--disk"), OsStr::new(&disk)]);
    con.run("dmesg -n 1");
    assert_eq!(con.run("cat /sys/block/vda/size"), "131072");
    assert_eq!(
        con.run("dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 17"),
        MARKER
    );
    con.run(
        "echo written-through-vhost-user | dd of=/dev/vda bs=512 seek=4096 conv=fsync 2>/dev/null",
    );
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
    let bytes = std::fs::read(&data).unwrap();
    assert_eq!(
        &bytes[2 << 20..(2 << 20) + 27],
        b"written-through-vhost-user\n"
    );
}

#[test]
fn vhost_user_disk_under_the_emulator() {
    vhost_user_disk("emu");
}

/// The storage service's volumes as a VM's disks (issues 4 and 5 together): the image's
/// root filesystem is imported into a pool volume, `vireo storage vhost-user` serves it, and
/// the guest boots from it; what the guest writes is in the volume's export afterwards.
fn root_on_a_storage_volume(accel: &str) {
    let dir = scratch("virtio-linux", &format!("storage-{accel}"));
    let img = image(&dir.join("image"));
    let api = dir.join("storage.sock");
    let mut service = common::guest::KillOnDrop(
        Command::new(vireo_bin())
            .args(["storage", "serve", "--dir"])
            .arg(dir.join("state"))
            .arg("--socket")
            .arg(&api)
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    while !api.exists() {
        assert!(
            Instant::now() < deadline,
            "vireo storage serve made no socket"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let storage = |args: &[&OsStr]| {
        let out = Command::new(vireo_bin())
            .arg("storage")
            .arg("--socket")
            .arg(&api)
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let device = dir.join("pool.img");
    std::fs::File::create(&device)
        .and_then(|f| f.set_len(256 << 20))
        .unwrap();
    let sock = dir.join("root.sock");
    let export = dir.join("export.ext4");
    let s = OsStr::new;
    storage(&[
        s("pool"),
        s("create"),
        s("tank"),
        s("--device"),
        device.as_os_str(),
        s("--compression"),
        s("lz4"),
    ]);
    storage(&[
        s("volume"),
        s("import"),
        s("tank/root"),
        img.rootfs.as_os_str(),
    ]);
    storage(&[
        s("vhost-user"),
        s("tank/root"),
        s("--socket"),
        sock.as_os_str(),
    ]);
    let disk = format!("vhost-user={}", sock.display());
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[
            s("--disk"),
            s(&disk),
            s("--cmdline"),
            s("console=ttyS0 reboot=k panic=-1 root=/dev/vda"),
        ],
    );
    assert_eq!(
        con.run("grep ' / ' /proc/mounts | cut -d' ' -f1-3"),
        "/dev/vda / ext4"
    );
    con.run("echo written-on-a-pool-volume > /persisted && sync");
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
    storage(&[s("volume"), s("export"), s("tank/root"), export.as_os_str()]);
    assert_eq!(
        debugfs(&export, "cat /persisted"),
        "written-on-a-pool-volume\n"
    );
    service.0.kill().unwrap();
}

#[test]
fn root_on_a_storage_volume_under_the_emulator() {
    root_on_a_storage_volume("emu");
}

/// A guest that doesn't use MSI-X (`pci=nomsi`) gets the disk's interrupts on INTA#, through
/// the IOAPIC pin the ACPI `_PRT` names.
fn disk_with_intx(accel: &str) {
    let dir = scratch("virtio-linux", &format!("intx-{accel}"));
    let img = image(&dir.join("image"));
    let data = dir.join("data.img");
    raw_image(&data, 16 << 20, 1 << 20);
    let disk = format!("path={}", data.display());
    let (mut con, mut guard) = boot(
        &img,
        accel,
        &[
            OsStr::new("--disk"),
            OsStr::new(&disk),
            OsStr::new("--cmdline"),
            OsStr::new("console=ttyS0 reboot=k panic=-1 pci=nomsi"),
        ],
    );
    con.run("dmesg -n 1");
    assert_eq!(
        con.run("dd if=/dev/vda bs=512 skip=2048 count=1 2>/dev/null | head -c 17"),
        MARKER
    );
    let irqs = con.run("grep virtio /proc/interrupts");
    assert!(irqs.contains("IO-APIC") && !irqs.contains("MSI"), "{irqs}");
    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}

#[test]
fn disk_with_intx_under_the_emulator() {
    disk_with_intx("emu");
}
