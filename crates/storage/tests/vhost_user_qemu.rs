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

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vireo_storage::pool::{Compression, DeviceSpec, Pool, PoolOptions, Tier, VolumeOptions};
use vireo_storage::vhost_user::VhostUserBlk;
use vireo_storage::BlockDevice;

const DISK_BYTES: u64 = 256 << 20;
const ID: &str = "pool-a/vm-disk";
const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The served volume. Everything the guest sees of the disk goes through here, so a pool
/// volume can replace the file without touching the rest of the test.
fn serve(dev: Arc<dyn BlockDevice>, socket: &Path) -> VhostUserBlk {
    VhostUserBlk::start(socket, dev, ID).expect("start the vhost-user-blk backend")
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The guest image, built once and cached like `vireo image build` does.
fn image(out: &Path) -> vireo_image::GuestImage {
    let cache = std::env::var_os("VIREO_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(".cache/image"));
    vireo_image::build(&vireo_image::BuildOptions {
        out_dir: out.to_path_buf(),
        cache_dir: cache,
    })
    .expect("vireo image build")
}

/// A guest's serial console through QEMU's stdio, and the QEMU process (killed on drop).
struct Qemu {
    child: Child,
    out: Arc<Mutex<String>>,
    stdin: ChildStdin,
    seen: usize,
}

impl Qemu {
    /// Boots the image with the disk behind `socket` (a frontend needs guest RAM it can share:
    /// a memfd backend) and waits for the shell. `reboot` lets an in-guest reboot restart the
    /// machine instead of ending QEMU.
    fn boot(img: &vireo_image::GuestImage, socket: &Path, reboot: bool) -> Qemu {
        let started = Instant::now();
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", "512M"])
            .args(["-object", "memory-backend-memfd,id=m,size=512M,share=on"])
            .args(["-numa", "node,memdev=m", "-chardev"])
            .arg(format!("socket,id=c,path={}", socket.display()))
            .args(["-device", "vhost-user-blk-pci,chardev=c,num-queues=2"])
            .args(["-nographic", "-nodefaults", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&img.kernel)
            .arg("-initrd")
            .arg(&img.initrd)
            .args(["-append", "console=ttyS0 panic=-1 quiet"]);
        if !reboot {
            cmd.arg("-no-reboot");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86)");
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let s = String::from_utf8_lossy(&buf[..n]);
                print!("{s}");
                sink.lock().unwrap().push_str(&s);
            }
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let mut q = Qemu {
            child,
            out,
            stdin,
            seen: 0,
        };
        q.shell();
        eprintln!("guest ready after {:?}", started.elapsed());
        q
    }

    /// Waits for the guest's shell and swaps it for a plain read loop: ash's line editor
    /// queries the terminal at each prompt and can swallow typed input meanwhile.
    fn shell(&mut self) {
        self.expect("vireo guest ready", BOOT_TIMEOUT);
        std::thread::sleep(Duration::from_secs(1));
        self.send("while read -r l; do eval \"$l\"; done");
        std::thread::sleep(Duration::from_millis(500));
        self.run("dmesg -n 1");
    }

    /// Waits until `needle` appears after what was consumed so far; returns the text up to it.
    fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.out.lock().unwrap();
                if let Some(i) = out[self.seen..].find(needle) {
                    let text = out[self.seen..self.seen + i + needle.len()].to_string();
                    self.seen += i + needle.len();
                    return text;
                }
            }
            if Instant::now() > deadline {
                let out = self.out.lock().unwrap();
                let tail = &out[out.len().saturating_sub(3000)..];
                panic!("timed out waiting for {needle:?}; console tail:\n{tail}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send(&mut self, line: &str) {
        self.stdin.write_all(line.as_bytes()).unwrap();
        self.stdin.write_all(b"\n").unwrap();
        self.stdin.flush().unwrap();
    }

    /// Runs a shell command in the guest; returns what it printed.
    fn run(&mut self, cmd: &str) -> String {
        // The markers are computed by the shell, so the echo of the typed line never matches.
        self.send(&format!("echo BEGIN-$((1+1)); {cmd}; echo END-$((2+2))"));
        self.expect("BEGIN-2", COMMAND_TIMEOUT);
        let text = self.expect("END-4", COMMAND_TIMEOUT);
        text.trim_end_matches("END-4").trim().to_string()
    }

    /// Powers the guest off and waits for QEMU to exit.
    fn poweroff(mut self) {
        self.send("poweroff");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(status.success(), "qemu exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "qemu did not exit after poweroff"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    let img = image(&dir.join("image"));
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
    let mut q = Qemu::boot(&img, &socket, false);
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
    let mut q = Qemu::boot(&img, &socket, true);
    q.run("mkdir -p /mnt");
    assert_eq!(
        read_back(&mut q),
        ("vireo-vhost-data".to_string(), sum.clone())
    );
    q.send("reboot");
    q.seen = q.out.lock().unwrap().len();
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
