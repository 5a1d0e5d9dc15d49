//! vCPU threads (seed 2.1.2): one host thread per vCPU, exit dispatch to the device buses,
//! and the pause/stop handshake with the VMM.

use serde::Serialize;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering, Ordering::Relaxed};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;
use vireo_devices::Bus;
use vireo_hypervisor::{Vcpu, VcpuExit};

/// The signal that kicks a vCPU thread out of `KVM_RUN`.
pub fn kick_signal() -> i32 {
    libc::SIGRTMIN()
}

/// Installs the (empty) handler for the kick signal: its only job is to make `KVM_RUN` return
/// `EINTR` instead of killing the process.
pub fn install_kick_handler() -> std::io::Result<()> {
    extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
    vmm_sys_util::signal::register_signal_handler(kick_signal(), noop)
        .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
}

/// Why each vCPU left guest mode, for the API's per-vCPU exit counters.
#[derive(Default, Debug)]
pub struct ExitCounters {
    pub io_in: AtomicU64,
    pub io_out: AtomicU64,
    pub mmio_read: AtomicU64,
    pub mmio_write: AtomicU64,
    pub halt: AtomicU64,
    pub interrupted: AtomicU64,
}

#[derive(Serialize)]
pub struct ExitCountersSnapshot {
    pub io_in: u64,
    pub io_out: u64,
    pub mmio_read: u64,
    pub mmio_write: u64,
    pub halt: u64,
    pub interrupted: u64,
}

impl ExitCounters {
    pub fn snapshot(&self) -> ExitCountersSnapshot {
        ExitCountersSnapshot {
            io_in: self.io_in.load(Relaxed),
            io_out: self.io_out.load(Relaxed),
            mmio_read: self.mmio_read.load(Relaxed),
            mmio_write: self.mmio_write.load(Relaxed),
            halt: self.halt.load(Relaxed),
            interrupted: self.interrupted.load(Relaxed),
        }
    }
}

/// What the VMM wants the vCPU threads to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Run {
    Running = 0,
    Paused = 1,
    Stopping = 2,
}

/// Shared between the VMM and all vCPU threads.
///
/// The wish is an atomic so that the vCPU loop checks it after every exit without a lock; the
/// mutex and condvar only serve parking while paused.
#[derive(Default)]
pub struct Control {
    want: AtomicU8,
    parked: Mutex<usize>,
    cv: Condvar,
}

impl Control {
    pub fn wanted(&self) -> Run {
        match self.want.load(Ordering::Acquire) {
            0 => Run::Running,
            1 => Run::Paused,
            _ => Run::Stopping,
        }
    }

    fn parked(&self) -> std::sync::MutexGuard<'_, usize> {
        self.parked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks every vCPU to `run`; for a pause, returns once all of them have parked. Threads
    /// are kicked repeatedly because a kick that lands just before `KVM_RUN` is lost.
    pub fn set(&self, run: Run, threads: &[VcpuThread]) {
        {
            // Under the lock, so a vCPU between its check and its wait cannot miss the change.
            let _g = self.parked();
            self.want.store(run as u8, Ordering::Release);
            self.cv.notify_all();
        }
        if run != Run::Paused {
            return;
        }
        let mut parked = self.parked();
        while self.wanted() == Run::Paused && *parked < threads.len() {
            drop(parked);
            kick_all(threads);
            parked = self.parked();
            parked = self
                .cv
                .wait_timeout(parked, Duration::from_millis(2))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }

    /// Called by a vCPU thread between runs: parks while paused. Returns false to stop.
    fn checkpoint(&self) -> bool {
        let mut parked = self.parked();
        if self.wanted() == Run::Paused {
            *parked += 1;
            self.cv.notify_all();
            while self.wanted() == Run::Paused {
                parked = self.cv.wait(parked).unwrap_or_else(|p| p.into_inner());
            }
            *parked -= 1;
        }
        self.wanted() != Run::Stopping
    }
}

/// How the VMM reaches a vCPU thread: the kick signal (KVM returns from `KVM_RUN` with
/// `EINTR`) and, for backends that need it, the backend's own kicker.
#[derive(Clone)]
pub struct VcpuThread {
    pub thread: libc::pthread_t,
    pub kicker: Option<Arc<dyn vireo_hypervisor::Kick>>,
}

pub fn kick_all(threads: &[VcpuThread]) {
    for t in threads {
        if let Some(k) = &t.kicker {
            k.kick();
        }
        // SAFETY: `t.thread` is the pthread of a vCPU thread that is joined only after the
        // VMM stops kicking; a signal with an installed handler has no other effect.
        unsafe { libc::pthread_kill(t.thread, kick_signal()) };
    }
}

/// What a vCPU thread reports to the VMM when it stops on its own.
#[derive(Debug)]
pub enum VcpuEvent {
    /// The guest shut the CPU down (a triple fault).
    Shutdown(u32),
    /// The guest asked for a reset through the backend.
    Reset(u32),
    Failed(u32, String),
}

pub struct Buses {
    pub pio: Bus,
    pub mmio: Bus,
}

/// Runs a vCPU until the VMM stops it or the guest ends it.
pub fn run_loop(
    id: u32,
    mut vcpu: Box<dyn Vcpu>,
    buses: Arc<Buses>,
    ctl: Arc<Control>,
    counters: Arc<ExitCounters>,
    exit: Arc<vireo_devices::ExitSignal>,
    events: Sender<crate::vm::Event>,
) {
    let report = |e: VcpuEvent| {
        let _ = events.send(crate::vm::Event::Vcpu(e));
    };
    loop {
        if ctl.wanted() != Run::Running && !ctl.checkpoint() {
            return;
        }
        match vcpu.run() {
            Ok(VcpuExit::IoIn { port, data }) => {
                counters.io_in.fetch_add(1, Relaxed);
                buses.pio.read(u64::from(port), data);
            }
            Ok(VcpuExit::IoOut { port, data }) => {
                counters.io_out.fetch_add(1, Relaxed);
                buses.pio.write(u64::from(port), data);
                if exit.reason().is_some() {
                    // The write powered off or reset the machine: this vCPU must not run
                    // another guest instruction.
                    return;
                }
            }
            Ok(VcpuExit::MmioRead { addr, data }) => {
                counters.mmio_read.fetch_add(1, Relaxed);
                buses.mmio.read(addr, data);
            }
            Ok(VcpuExit::MmioWrite { addr, data }) => {
                counters.mmio_write.fetch_add(1, Relaxed);
                buses.mmio.write(addr, data);
                if exit.reason().is_some() {
                    return;
                }
            }
            Ok(VcpuExit::Halt) => {
                // Only backends without an in-kernel interrupt controller exit on HLT; wait
                // for the VMM rather than spin.
                counters.halt.fetch_add(1, Relaxed);
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(VcpuExit::Interrupted) => {
                counters.interrupted.fetch_add(1, Relaxed);
                vcpu.set_immediate_exit(false);
            }
            Ok(VcpuExit::Shutdown) => return report(VcpuEvent::Shutdown(id)),
            Ok(VcpuExit::Reset) => return report(VcpuEvent::Reset(id)),
            Ok(VcpuExit::Failed(why)) => return report(VcpuEvent::Failed(id, why)),
            Err(e) => return report(VcpuEvent::Failed(id, e.to_string())),
        }
    }
}
