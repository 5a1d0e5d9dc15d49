//! The real peer: QEMU boots the Vireo guest (Debian kernel, busybox initramfs) with a disk
//! that is a pool volume (two tiers, lz4) served by [`VhostUserBlk`]. The guest checks what it was told about the disk, discards a
//! block, makes an ext2 filesystem, writes files and powers off; a second QEMU then connects
//! to the same backend (a restarted VM), finds the data, reboots in place (the device is
//! stopped and restarted on the same connection), finds it again and powers off. Finally the
//! pool is closed and opened again, and the host reads the files out of the volume's raw
//! export with debugfs.
//!
//! Needs qemu-system-x86 and e2fsprogs (debugfs), and the guest image's Debian packages
//! (cached in `.cache/image` of the workspace, or `VIREO_IMAGE_CACHE`).

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use vireo_image::console::{cached_image, Qemu, QemuOptions};
use vireo_storage::pool::{Compression, DeviceSpec, Pool, PoolOptions, Tier, VolumeOptions};
use vireo_storage::vhost_user::VhostUserBlk;
use vireo_storage::BlockDevice;

const DISK_BYTES: u64 = 256 << 20;
const ID: &str = "pool-a/vm-disk";

/// The served volume. Everything the guest sees of the disk goes through here, so a pool
/// volume can replace the file without touching the rest of the test.
fn serve(dev: Arc<dyn BlockDevice>, socket: &Path) -> VhostUserBlk {
    VhostUserBlk::start(socket, dev, ID).expect("start the vhost-user-blk backend")
}

/// Boots the guest with the disk behind `socket`. `reboot` lets an in-guest reboot restart
/// the machine instead of ending QEMU.
fn boot(img: &vireo_image::GuestImage, socket: &Path, reboot: bool) -> Qemu {
    let opts = QemuOptions {
        args: vec![
            "-chardev".into(),
            format!("socket,id=c,path={}", socket.display()).into(),
            "-device".into(),
            "vhost-user-blk-pci,chardev=c,num-queues=2".into(),
        ],
        reboot,
        ..QemuOptions::default()
    };
    Qemu::boot(img, &opts)
}

fn export(vol: &dyn BlockDevice, path: &Path) {
    let out = std::fs::File::create(path).unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < vol.size() {
        let n = (vol.size() - off).min(buf.len() as u64) as usize;
        vol.read_at(&mut buf[..n], off).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&out, &buf[..n], off).unwrap();
        off += n as u64;
    }
}

/// `debugfs -R CMD` on the host's view of the disk.
fn debugfs(disk: &Path, cmd: &str) -> String {
    let out = Command::new("debugfs")
        .args(["-R", cmd])
        .arg(disk)
        .output()
        .expect("run debugfs (apt-get install e2fsprogs)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn md5(path: &Path) -> String {
    let out = Command::new("md5sum")
        .arg(path)
        .output()
        .expect("run md5sum");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Mounts the disk on /mnt and returns /file's text and /big's checksum.
fn read_back(q: &mut Qemu) -> (String, String) {
    assert_eq!(
        q.run("mount -t ext4 /dev/vda /mnt && echo mounted"),
        "mounted"
    );
    let file = q.run("cat /mnt/file");
    let sum = q.run("md5sum /mnt/big | cut -d' ' -f1");
    assert_eq!(q.run("umount /mnt && echo unmounted"), "unmounted");
    (file, sum)
}

#[test]
fn linux_guest_writes_a_filesystem_restarts_and_finds_its_data() {
    let started = Instant::now();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vhost-user-qemu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = cached_image(&dir.join("image"));
    eprintln!("image ready after {:?}", started.elapsed());
    // The disk is a thin volume of a two-tier pool with lz4 compression.
    let devices: Vec<DeviceSpec> = [
        ("fast", 64 << 20, Tier::Fast),
        ("slow", 512 << 20, Tier::Capacity),
    ]
    .into_iter()
    .map(|(name, size, tier)| {
        let path = dir.join(name);
        std::fs::File::create(&path)
            .and_then(|f| f.set_len(size))
            .unwrap();
        DeviceSpec { path, tier }
    })
    .collect();
    let opts = PoolOptions {
        compression: Compression::Lz4,
        ..PoolOptions::default()
    };
    let state = dir.join("pool");
    let pool = Pool::create(&state, "p", &devices, opts).unwrap();
    pool.volume_create("disk", DISK_BYTES, &VolumeOptions::default())
        .unwrap();
    let socket = dir.join("vhost.sock");
    let dev: Arc<dyn BlockDevice> = pool.open_volume("disk").unwrap();
    let block_size = dev.block_size();
    let blk = serve(dev, &socket);

    // First VM: the disk as described, a discard, a filesystem with two files.
    let mut q = boot(&img, &socket, false);
    assert_eq!(q.run("cat /sys/block/vda/serial"), ID);
    assert_eq!(
        q.run("cat /sys/block/vda/size"),
        (DISK_BYTES / 512).to_string()
    );
    assert_eq!(
        q.run("ls /sys/block/vda/mq | wc -l"),
        "2",
        "two request queues"
    );
    assert_eq!(q.run("cat /sys/block/vda/ro"), "0");
    let q_attr = |q: &mut Qemu, a: &str| q.run(&format!("cat /sys/block/vda/queue/{a}"));
    assert_eq!(q_attr(&mut q, "logical_block_size"), "512");
    assert_eq!(q_attr(&mut q, "physical_block_size"), "4096");
    // Discards free whole pool blocks.
    assert_eq!(
        q_attr(&mut q, "discard_granularity"),
        block_size.to_string()
    );
    assert_ne!(q_attr(&mut q, "write_zeroes_max_bytes"), "0");
    let block_100 = "dd if=/dev/vda bs=4096 skip=100 count=1 2>/dev/null | tr -d '\\0' | wc -c";
    q.run("printf vireo-trim-me | dd of=/dev/vda bs=4096 seek=100 conv=fsync 2>/dev/null");
    assert_eq!(q.run(block_100), "13");
    q.run("blkdiscard -o 409600 -l 4096 /dev/vda");
    assert_eq!(q.run(block_100), "0", "a discarded block reads as zeros");
    assert_eq!(
        q.run("mke2fs -F /dev/vda >/dev/null 2>&1 && echo made"),
        "made"
    );
    q.run("mkdir -p /mnt");
    assert_eq!(
        q.run("mount -t ext4 /dev/vda /mnt && echo mounted"),
        "mounted"
    );
    q.run("echo vireo-vhost-data > /mnt/file");
    // Written from the second CPU, whose requests go to the second queue.
    q.run("taskset 2 dd if=/dev/urandom of=/mnt/big bs=1M count=8 conv=fsync 2>/dev/null");
    let sum = q.run("md5sum /mnt/big | cut -d' ' -f1");
    assert_eq!(sum.len(), 32, "{sum}");
    // A deleted file's blocks go back to the volume.
    q.run("taskset 1 dd if=/dev/urandom of=/mnt/gone bs=1M count=2 conv=fsync 2>/dev/null");
    q.run("rm /mnt/gone");
    let trimmed = q.run("fstrim -v /mnt");
    assert!(trimmed.contains("trimmed"), "{trimmed}");
    // Both queues completed requests (each has its own interrupt).
    let irqs = q.run("grep virtio0-req /proc/interrupts");
    let per_queue: Vec<u64> = irqs
        .lines()
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .filter_map(|t| t.parse::<u64>().ok())
                .sum()
        })
        .collect();
    assert!(
        per_queue.len() == 2 && per_queue.iter().all(|&n| n > 0),
        "{irqs}"
    );
    assert_eq!(q.run("sync && umount /mnt && echo unmounted"), "unmounted");
    q.poweroff();
    let first = blk.stats();
    eprintln!("first VM done after {:?}: {first:?}", started.elapsed());
    assert!(
        first.write_ops > 0 && first.read_ops > 0 && first.flushes > 0,
        "{first:?}"
    );
    assert!(first.discards >= 2, "{first:?}");

    // Second VM on the same backend: the data is there, and again after a reboot in place.
    let mut q = boot(&img, &socket, true);
    q.run("mkdir -p /mnt");
    assert_eq!(
        read_back(&mut q),
        ("vireo-vhost-data".to_string(), sum.clone())
    );
    q.send("reboot");
    q.skip_output();
    q.shell();
    q.run("mkdir -p /mnt");
    assert_eq!(
        read_back(&mut q),
        ("vireo-vhost-data".to_string(), sum.clone())
    );
    q.poweroff();
    let second = blk.stats();
    eprintln!("second VM done after {:?}: {second:?}", started.elapsed());
    assert_eq!(second.connections, 2, "{second:?}");
    assert_eq!(second.errors, 0, "{second:?}");

    // The host sees the same files in the volume, after the pool is closed and opened
    // again, exported to a raw file.
    drop(blk);
    assert!(!socket.exists(), "the backend removes its socket");
    pool.commit().unwrap();
    drop(pool);
    let pool = Pool::open(&state).unwrap();
    let disk = dir.join("disk.img");
    export(&*pool.open_volume("disk").unwrap(), &disk);
    assert_eq!(debugfs(&disk, "cat /file").trim(), "vireo-vhost-data");
    let big = dir.join("big");
    debugfs(&disk, &format!("dump /big {}", big.display()));
    assert_eq!(md5(&big), sum);
    eprintln!("done after {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
