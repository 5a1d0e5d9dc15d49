//! Pieces of the test driver: the driver's side of a split ring, a private temp directory,
//! and what a host process does on the Unix sockets.

use super::harness::{QSIZE, TIMEOUT};
use crate::{GuestMemory, Interrupt, QueueHandle};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use virtio_queue::{Queue, QueueT};
use vm_memory::{Bytes, GuestAddress};
use vmm_sys_util::eventfd::EventFd;

/// A private directory in the temp dir, removed with what it holds.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("vireo-vsock-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct NoInterrupt;
impl Interrupt for NoInterrupt {
    fn queue(&self, _: u16) {}
    fn config(&self) {}
}

pub use crate::test_queue::RecordingWrites;

/// The driver's view of one split queue.
pub struct Ring {
    desc: u64,
    avail: u64,
    used: u64,
    avail_idx: u16,
    seen_used: u16,
    notify: EventFd,
}

impl Ring {
    /// A ring at `base` laid out as the spec says. (`MockSplitQueue` puts the used ring at
    /// the available ring's start + `size` bytes, inside the available ring once more than
    /// half of a 256-entry ring is in use, so it cannot carry this much traffic.)
    pub fn new(mem: &GuestMemory, base: u64, index: u16) -> (Ring, QueueHandle) {
        let desc = base;
        let avail = desc + 16 * u64::from(QSIZE);
        let used = (avail + 6 + 2 * u64::from(QSIZE) + 3) & !3;
        let end = used + 6 + 8 * u64::from(QSIZE);
        mem.write_slice(&vec![0; (end - base) as usize], GuestAddress(base))
            .unwrap();
        let mut queue = Queue::new(QSIZE).unwrap();
        queue.set_size(QSIZE);
        queue.set_desc_table_address(Some(desc as u32), Some((desc >> 32) as u32));
        queue.set_avail_ring_address(Some(avail as u32), Some((avail >> 32) as u32));
        queue.set_used_ring_address(Some(used as u32), Some((used >> 32) as u32));
        queue.set_event_idx(true);
        queue.set_ready(true);
        assert!(queue.is_valid(mem));
        let notify = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let ring = Ring {
            desc,
            avail,
            used,
            avail_idx: 0,
            seen_used: 0,
            notify: notify.try_clone().unwrap(),
        };
        let handle = QueueHandle {
            index,
            queue,
            notify,
        };
        (ring, handle)
    }

    pub fn write_desc(
        &self,
        mem: &GuestMemory,
        i: u16,
        addr: u64,
        len: u32,
        flags: u16,
        next: u16,
    ) {
        let a = self.desc + 16 * u64::from(i % QSIZE);
        mem.write_obj(addr.to_le(), GuestAddress(a)).unwrap();
        mem.write_obj(len.to_le(), GuestAddress(a + 8)).unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(a + 12)).unwrap();
        mem.write_obj(next.to_le(), GuestAddress(a + 14)).unwrap();
    }

    pub fn publish(&mut self, mem: &GuestMemory, head: u16) {
        let slot = self.avail + 4 + 2 * u64::from(self.avail_idx % QSIZE);
        mem.write_obj(head.to_le(), GuestAddress(slot)).unwrap();
        self.avail_idx = self.avail_idx.wrapping_add(1);
        mem.store(
            self.avail_idx.to_le(),
            GuestAddress(self.avail + 2),
            Ordering::Release,
        )
        .unwrap();
    }

    /// Writes an available index `ahead` entries past the real one, as a broken driver might.
    pub fn corrupt_avail_idx(&self, mem: &GuestMemory, ahead: u16) {
        let idx = self.avail_idx.wrapping_add(ahead);
        mem.store(idx.to_le(), GuestAddress(self.avail + 2), Ordering::Release)
            .unwrap();
    }

    pub fn kick(&self) {
        self.notify.write(1).unwrap();
    }

    fn used_idx(&self, mem: &GuestMemory) -> u16 {
        // An atomic load: a plain copy may tear while the device stores the index.
        let idx: u16 = mem
            .load(GuestAddress(self.used + 2), Ordering::Acquire)
            .unwrap();
        u16::from_le(idx)
    }

    /// The used entries (id, len) the device added since the last call.
    pub fn take_used(&mut self, mem: &GuestMemory) -> Vec<(u32, u32)> {
        let idx = self.used_idx(mem);
        std::sync::atomic::fence(Ordering::SeqCst);
        let mut out = Vec::new();
        while self.seen_used != idx {
            let slot = self.used + 4 + 8 * u64::from(self.seen_used % QSIZE);
            let id: u32 = mem.read_obj(GuestAddress(slot)).unwrap();
            let len: u32 = mem.read_obj(GuestAddress(slot + 4)).unwrap();
            out.push((u32::from_le(id), u32::from_le(len)));
            self.seen_used = self.seen_used.wrapping_add(1);
        }
        out
    }

    /// Waits for `n` used entries in all.
    pub fn wait_used(&mut self, mem: &GuestMemory, n: usize) -> Vec<(u32, u32)> {
        let deadline = Instant::now() + TIMEOUT;
        let mut got = Vec::new();
        while got.len() < n {
            got.extend(self.take_used(mem));
            assert!(
                Instant::now() < deadline,
                "the device used {} of {n} buffers",
                got.len()
            );
            std::thread::sleep(Duration::from_micros(100));
        }
        got
    }
}

/// A host process connecting to the device's socket and asking for guest port `port`.
pub fn host_connect(uds: &Path, port: u32) -> UnixStream {
    let s = UnixStream::connect(uds).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&s).write_all(format!("CONNECT {port}\n").as_bytes())
        .unwrap();
    s
}

/// Reads a line, newline included, byte by byte (nothing after it is consumed).
pub fn read_line(s: &UnixStream) -> String {
    let mut line = Vec::new();
    let mut b = [0u8; 1];
    while line.last() != Some(&b'\n') {
        let n = (&*s).read(&mut b).unwrap();
        assert_eq!(n, 1, "EOF after {:?}", String::from_utf8_lossy(&line));
        line.push(b[0]);
    }
    String::from_utf8(line).unwrap()
}

pub fn read_n(s: &UnixStream, n: usize) -> Vec<u8> {
    let mut v = vec![0; n];
    (&*s).read_exact(&mut v).unwrap();
    v
}

/// Asserts the stream reaches EOF with no more data.
pub fn expect_eof(s: &UnixStream) {
    let mut b = [0u8; 16];
    let n = (&*s).read(&mut b).unwrap();
    assert_eq!(n, 0, "data before EOF: {:?}", &b[..n]);
}

/// Asserts the device closed the stream: EOF, or a reset if it closed with input unread.
pub fn expect_closed(s: &UnixStream) {
    let mut b = [0u8; 16];
    match (&*s).read(&mut b) {
        Ok(n) => assert_eq!(n, 0, "data before EOF: {:?}", &b[..n]),
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionReset),
    }
}

/// `n` bytes of a pattern that shows misplaced or lost bytes.
pub fn pattern(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i * 7 + i / 251) as u8).collect()
}
