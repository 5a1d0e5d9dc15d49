//! Device writes into guest RAM ("DMA"), made by other threads behind the interpreter's back.
//!
//! The interpreter caches decoded instructions per physical page and learns of its own writes
//! through the MMU, but a virtio device thread writes guest memory directly: a disk read may
//! load a program into a page that held other code a moment ago. Devices report each write
//! here before they make it visible to the guest (before the used-ring update and interrupt),
//! and raise the vCPU's attention flag, which its run loop already checks between blocks for
//! interrupts: the vCPU applies the log before its next block, so the guest can never run
//! stale instructions from a page it was told is filled, and the loop pays no extra check.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use vireo_hypervisor::GuestWrites;

use crate::irq::Waker;

/// Past this many ranges waiting, the log stops recording and the vCPU forgets all code.
const MAX_RANGES: usize = 4096;

#[derive(Default)]
pub struct DeviceWrites {
    pending: AtomicBool,
    log: Mutex<Log>,
    /// Whose attention flag to raise (none for a CPU that no device writes to).
    waker: Option<Arc<Waker>>,
}

#[derive(Default)]
struct Log {
    ranges: Vec<(u64, u64)>,
    overflow: bool,
}

/// What the vCPU must drop.
pub enum Drained {
    Ranges(Vec<(u64, u64)>),
    Everything,
}

impl DeviceWrites {
    /// A log that raises `waker`'s attention flag when a device writes.
    pub fn new(waker: Arc<Waker>) -> Self {
        DeviceWrites {
            waker: Some(waker),
            ..Default::default()
        }
    }

    /// Whether anything was reported since the last [`DeviceWrites::drain`].
    #[inline]
    pub fn pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    pub fn drain(&self) -> Drained {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        self.pending.store(false, Ordering::Release);
        if std::mem::take(&mut log.overflow) {
            log.ranges.clear();
            Drained::Everything
        } else {
            Drained::Ranges(std::mem::take(&mut log.ranges))
        }
    }
}

impl GuestWrites for DeviceWrites {
    fn written(&self, gpa: u64, len: u64) {
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        if log.ranges.len() < MAX_RANGES {
            log.ranges.push((gpa, len));
        } else {
            log.overflow = true;
        }
        self.pending.store(true, Ordering::Release);
        if let Some(w) = &self.waker {
            // No unpark: a halted CPU runs no code until an interrupt wakes it anyway.
            w.attention().store(true, Ordering::Release);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_what_was_reported_then_overflows_to_everything() {
        let w = DeviceWrites::default();
        assert!(!w.pending());
        w.written(0x1000, 512);
        w.written(0x5000, 4096);
        assert!(w.pending());
        match w.drain() {
            Drained::Ranges(r) => assert_eq!(r, vec![(0x1000, 512), (0x5000, 4096)]),
            Drained::Everything => panic!("no overflow expected"),
        }
        assert!(!w.pending());
        for i in 0..=MAX_RANGES as u64 {
            w.written(i << 12, 1);
        }
        assert!(matches!(w.drain(), Drained::Everything));
        assert!(matches!(w.drain(), Drained::Ranges(r) if r.is_empty()));
    }

    #[test]
    fn a_reported_device_write_replaces_code_the_cpu_had_decoded() {
        use crate::testutil::{TestMachine, CODE};
        use std::sync::atomic::AtomicBool;
        // mov eax, 1; hlt
        let mut m = TestMachine::new32(&[0xb8, 1, 0, 0, 0, 0xf4]);
        let waker = Arc::new(Waker::new());
        m.cpu.device_writes = Arc::new(DeviceWrites::new(waker.clone()));
        let kick = AtomicBool::new(false);
        let run_from_start = |m: &mut TestMachine| {
            m.cpu.rip = CODE;
            m.cpu.halted = false;
            m.cpu.run(100, &kick, waker.attention());
            m.cpu.gpr[0]
        };
        assert_eq!(run_from_start(&mut m), 1);
        // A device rewrites the immediate: unreported, the decoded block still runs.
        m.write_behind(CODE + 1, &[2]);
        assert_eq!(run_from_start(&mut m), 1, "the block cache is real");
        // Reported, it raises the CPU's attention and the page's blocks are dropped.
        m.cpu.device_writes.written(CODE + 1, 1);
        assert!(waker.attention().load(Ordering::Relaxed));
        assert_eq!(run_from_start(&mut m), 2);
    }
}
