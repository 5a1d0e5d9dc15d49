//! VhostUserBlk against a real backend: qemu-storage-daemon exporting a raw image over
//! vhost-user-blk (Debian's qemu-system-common, installed by .ci/run with qemu-system-x86).

use super::test_support::*;
use super::{VhostUserBlk, VhostUserError};
use crate::features::{RING_EVENT_IDX, VERSION_1};
use crate::{Activation, GuestMemory, VirtioDevice};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use virtio_bindings::virtio_blk::*;

const SECTORS: u64 = 2048;

/// Sector `s` of the test image is filled with the byte `s + 1`.
fn pattern(first: u64, count: u64) -> Vec<u8> {
    (first..first + count)
        .flat_map(|s| std::iter::repeat_n((s + 1) as u8, 512))
        .collect()
}

/// A qemu-storage-daemon exporting `image`, killed when dropped.
struct Daemon {
    child: Child,
    sock: PathBuf,
}

impl Daemon {
    fn start(dir: &TempDir, image: &Path) -> Daemon {
        let sock = dir.join("blk.sock");
        let child = Command::new("qemu-storage-daemon")
            .arg("--blockdev")
            .arg(format!(
                "driver=file,node-name=f,filename={}",
                image.display()
            ))
            .arg("--export")
            .arg(format!(
                "type=vhost-user-blk,id=e,node-name=f,addr.type=unix,addr.path={},writable=on",
                sock.display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run qemu-storage-daemon (Debian's qemu-system-common)");
        let mut d = Daemon { child, sock };
        wait_for(Duration::from_secs(20), || {
            d.sock.exists() || d.child.try_wait().unwrap().is_some()
        });
        if !d.sock.exists() {
            let _ = d.child.kill();
            let mut err = String::new();
            if let Some(mut e) = d.child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut err);
            }
            panic!("qemu-storage-daemon did not start: {err}");
        }
        d
    }

    fn signal(&self, sig: libc::c_int) {
        // SAFETY: sends a signal to our own child process, by its id.
        unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.kill();
    }
}

struct Setup {
    dir: TempDir,
    image: PathBuf,
    daemon: Daemon,
    mem: GuestMemory,
    irq: Arc<RecordingIrq>,
    writes: Arc<RecordingWrites>,
}

fn setup(name: &str) -> Setup {
    let dir = TempDir::new(name);
    let image = dir.join("disk.img");
    std::fs::write(&image, pattern(0, SECTORS)).unwrap();
    let daemon = Daemon::start(&dir, &image);
    Setup {
        dir,
        image,
        daemon,
        mem: shared_memory(),
        irq: Arc::default(),
        writes: Arc::default(),
    }
}

impl Setup {
    /// Activates `blk` with one queue whose rings are at `rings` (buffers in low RAM).
    fn activate(&self, blk: &mut VhostUserBlk, rings: u64, features: u64) -> TestQueue {
        let (tq, handle) = TestQueue::new(&self.mem, 0, rings, LOW + 0x10_0000);
        blk.activate(Activation {
            mem: self.mem.clone(),
            queues: vec![handle],
            interrupt: self.irq.clone(),
            features,
            writes: Some(self.writes.clone()),
        })
        .unwrap();
        tq
    }
}

/// A submitted request: its head and where its IN data and status go.
struct Submitted {
    head: u16,
    data: u64,
    status: u64,
}

/// A request's result.
struct Done {
    status: u8,
    used_len: u32,
    data_addr: u64,
    data: Vec<u8>,
    status_addr: u64,
}

fn submit(tq: &mut TestQueue, kind: u32, sector: u64, out: &[u8], in_len: u32) -> Submitted {
    let mut h = kind.to_le_bytes().to_vec();
    h.extend_from_slice(&[0; 4]);
    h.extend_from_slice(&sector.to_le_bytes());
    let header = tq.put(&h);
    let mut descs = vec![(header, 16, 0)];
    if !out.is_empty() {
        descs.push((tq.put(out), out.len() as u32, 0));
    }
    let data = tq.alloc(u64::from(in_len));
    if in_len > 0 {
        descs.push((data, in_len, WRITE));
    }
    let status = tq.put(&[0xff]);
    descs.push((status, 1, WRITE));
    let head = tq.add_chain(&descs);
    tq.kick();
    Submitted { head, data, status }
}

fn request(tq: &mut TestQueue, kind: u32, sector: u64, out: &[u8], in_len: u32) -> Done {
    let sub = submit(tq, kind, sector, out, in_len);
    let used = tq.wait_used(1);
    assert_eq!(used[0].0, u32::from(sub.head));
    Done {
        status: tq.get(sub.status, 1)[0],
        used_len: used[0].1,
        data_addr: sub.data,
        data: tq.get(sub.data, in_len as usize),
        status_addr: sub.status,
    }
}

/// Waits until `[addr, addr + len)` was reported written, and `n` interrupts forwarded.
fn wait_reported(s: &Setup, addr: u64, len: u64, n: u64) {
    assert!(
        wait_for(Duration::from_secs(5), || s.writes.covers(addr, len)),
        "{addr:#x}+{len} not reported: {:x?}",
        s.writes.all()
    );
    wait_irqs(&s.irq, n);
}

fn wait_irqs(irq: &RecordingIrq, n: u64) {
    assert!(
        wait_for(Duration::from_secs(5), || irq.count(0) >= n),
        "interrupt {n} was not forwarded (got {})",
        irq.count(0)
    );
}

#[test]
fn serves_reads_and_writes_through_qemu_storage_daemon() {
    let s = setup("rw");
    let mut blk = VhostUserBlk::new(&s.daemon.sock).unwrap();

    // Configuration and features come from the backend.
    assert_eq!(blk.capacity(), SECTORS);
    let mut cap = [0u8; 8];
    blk.read_config(0, &mut cap);
    assert_eq!(u64::from_le_bytes(cap), SECTORS);
    let f = blk.features();
    assert_ne!(f & VERSION_1, 0);
    assert_ne!(f & (1 << VIRTIO_BLK_F_FLUSH), 0);
    assert_eq!(
        f & (1 << 30),
        0,
        "PROTOCOL_FEATURES is not a virtio feature"
    );
    assert_eq!(f & (1 << VIRTIO_BLK_F_MQ), 0);
    assert!(!blk.read_only());
    assert_eq!(counter(&blk, "backend_connected"), 1);

    // The write cache switch goes to the backend (qemu-storage-daemon offers CONFIG_WCE).
    assert_ne!(f & (1 << VIRTIO_BLK_F_CONFIG_WCE), 0);
    blk.write_config(32, &[0]);
    let mut wce = [0xff];
    blk.read_config(32, &mut wce);
    assert_eq!(wce, [0]);
    let backend = blk.dev.conn.get_config(0, super::blk::CONFIG_LEN).unwrap();
    assert_eq!(backend[32], 0, "the backend applied it");
    blk.write_config(32, &[1]);
    blk.write_config(0, &[0; 8]);
    assert_eq!(blk.capacity(), SECTORS, "other fields are read-only");

    // Rings in high RAM, buffers in low RAM: both regions go through the memory table.
    // Without EVENT_IDX the backend signals every completion.
    let mut tq = s.activate(&mut blk, HIGH + 0x1000, f & !RING_EVENT_IDX);

    let read = request(&mut tq, VIRTIO_BLK_T_IN, 3, &[], 1024);
    assert_eq!(read.status, VIRTIO_BLK_S_OK as u8);
    assert_eq!(read.used_len, 1025);
    assert_eq!(read.data, pattern(3, 2));
    wait_reported(&s, read.data_addr, 1024, 1);
    assert!(s.writes.covers(read.status_addr, 1));

    let write = request(&mut tq, VIRTIO_BLK_T_OUT, 10, &[0xab; 512], 0);
    assert_eq!(write.status, VIRTIO_BLK_S_OK as u8);
    let flush = request(&mut tq, VIRTIO_BLK_T_FLUSH, 0, &[], 0);
    assert_eq!(flush.status, VIRTIO_BLK_S_OK as u8);
    let image = std::fs::read(&s.image).unwrap();
    assert_eq!(image[10 * 512..11 * 512], [0xab; 512]);
    assert_eq!(image[11 * 512..12 * 512], pattern(11, 1)[..]);
    wait_reported(&s, flush.status_addr, 1, 3);
    assert!(counter(&blk, "used_entries") >= 3);
    assert!(counter(&blk, "interrupts") >= 3);
    assert_eq!(counter(&blk, "errors"), 0);

    // Reset stops the rings; a new activation (new rings, as after a driver reset) works.
    blk.reset();
    let mut tq = s.activate(&mut blk, HIGH + 0x20_0000, f);
    let read = request(&mut tq, VIRTIO_BLK_T_IN, 10, &[], 512);
    assert_eq!(read.status, VIRTIO_BLK_S_OK as u8);
    assert_eq!(read.data, [0xab; 512]);
    wait_reported(&s, read.data_addr, 512, 4);
    blk.reset();
    assert_eq!(counter(&blk, "errors"), 0);
    drop(s.dir);
}

#[test]
fn backend_killed_mid_way_fails_cleanly() {
    let mut s = setup("kill");
    let mut blk = VhostUserBlk::new(&s.daemon.sock).unwrap();
    let f = blk.features() & !RING_EVENT_IDX;
    let mut tq = s.activate(&mut blk, HIGH, f);
    assert_eq!(
        request(&mut tq, VIRTIO_BLK_T_IN, 0, &[], 512).data,
        pattern(0, 1)
    );

    s.daemon.kill();
    // Requests go nowhere, and nothing hangs or panics on our side.
    submit(&mut tq, VIRTIO_BLK_T_IN, 1, &[], 512);
    assert!(tq.try_wait_used(1, Duration::from_millis(300)).is_none());
    assert!(wait_for(Duration::from_secs(2), || counter(
        &blk,
        "backend_connected"
    ) == 0));
    let t = Instant::now();
    blk.reset();
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(counter(&blk, "errors") > 0);

    let (_, handle) = TestQueue::new(&s.mem, 0, HIGH + 0x10_0000, LOW + 0x10_0000);
    let err = blk
        .activate(Activation {
            mem: s.mem.clone(),
            queues: vec![handle],
            interrupt: s.irq.clone(),
            features: f,
            writes: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains(&s.daemon.sock.display().to_string()), "{err}");

    // The socket is stale now: a new device says so.
    match VhostUserBlk::new(&s.daemon.sock) {
        Err(VhostUserError::Refused { .. } | VhostUserError::NoSocket { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("connected to a dead backend"),
    }
}

#[test]
fn stuck_backend_is_disconnected_after_the_timeout() {
    let s = setup("stuck");
    let mut blk = VhostUserBlk::new(&s.daemon.sock).unwrap();
    blk.dev.conn.set_timeout(Duration::from_millis(300));
    let f = blk.features();
    let _tq = s.activate(&mut blk, HIGH, f);

    s.daemon.signal(libc::SIGSTOP);
    let t = Instant::now();
    blk.reset();
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(counter(&blk, "backend_connected"), 0);

    let (_, handle) = TestQueue::new(&s.mem, 0, HIGH + 0x10_0000, LOW + 0x10_0000);
    let err = blk
        .activate(Activation {
            mem: s.mem.clone(),
            queues: vec![handle],
            interrupt: s.irq.clone(),
            features: f,
            writes: None,
        })
        .unwrap_err()
        .to_string();
    assert!(err.contains("disconnected"), "{err}");
}
