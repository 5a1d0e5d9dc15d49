//! The `emu` backend behind the hypervisor traits: the VMM, devices and boot code drive it
//! exactly as they drive KVM.

use crate::cpu::run::Stop;
use crate::cpu::{dma::DeviceWrites, io::IoKind, Cpu};
use crate::irq::{ChipPlatform, Clock, IrqChip, Waker};
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vireo_hypervisor::{
    Capabilities, CpuidEntry, Error, GuestWrites, Hypervisor, Kick, Regs, Result, Sregs, Vcpu,
    VcpuExit, Vm,
};

/// Instructions between two looks at the timers and the VMM. About 100-300 µs of guest time:
/// fine-grained enough for a 250 Hz tick and high-resolution timers, coarse enough to cost
/// nothing measurable.
const BUDGET: u64 = 20_000;
/// The longest a halted vCPU sleeps without looking around.
const MAX_HALT_SLEEP: Duration = Duration::from_millis(50);

pub struct EmuHypervisor {
    caps: Capabilities,
}

impl Default for EmuHypervisor {
    fn default() -> Self {
        Self::new()
    }
}

impl EmuHypervisor {
    pub fn new() -> Self {
        EmuHypervisor {
            caps: Capabilities {
                long_mode: true,
                long_mode_note: None,
                // SMP in the emulator comes later.
                max_vcpus: 1,
                emulated: true,
            },
        }
    }
}

impl Hypervisor for EmuHypervisor {
    fn name(&self) -> &'static str {
        "emu"
    }

    fn capabilities(&self) -> &Capabilities {
        &self.caps
    }

    fn create_vm(&self) -> Result<Box<dyn Vm>> {
        let clock = Clock::new();
        let waker = Arc::new(Waker::new());
        Ok(Box::new(EmuVm {
            regions: Mutex::new(Vec::new()),
            device_writes: Arc::new(DeviceWrites::new(waker.clone())),
            chip: Arc::new(Mutex::new(IrqChip::new(clock.clone(), waker.clone()))),
            clock,
            waker,
        }))
    }
}

#[derive(Clone, Copy)]
struct RamRegion {
    gpa: u64,
    host: usize,
    size: u64,
}

pub struct EmuVm {
    regions: Mutex<Vec<RamRegion>>,
    device_writes: Arc<DeviceWrites>,
    chip: Arc<Mutex<IrqChip>>,
    clock: Clock,
    waker: Arc<Waker>,
}

impl EmuVm {
    fn chip(&self) -> std::sync::MutexGuard<'_, IrqChip> {
        self.chip.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Vm for EmuVm {
    unsafe fn map_memory(
        &self,
        _slot: u32,
        guest_addr: u64,
        host_addr: *mut u8,
        size: u64,
    ) -> Result<()> {
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RamRegion {
                gpa: guest_addr,
                host: host_addr as usize,
                size,
            });
        Ok(())
    }

    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>> {
        if id != 0 {
            return Err(Error::Unsupported(
                "the emulator runs one vCPU per VM (SMP comes later): use --cpus 1".into(),
            ));
        }
        let platform = ChipPlatform::new(self.chip.clone(), self.clock.clone());
        let mut cpu = Cpu::new(Box::new(platform));
        cpu.device_writes = self.device_writes.clone();
        for r in self
            .regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            // SAFETY: the VMM guarantees (map_memory's contract) that the region stays mapped
            // for as long as the VM, and so this vCPU, exists.
            unsafe { cpu.mem.add_region(r.gpa, r.host as *mut u8, r.size) };
        }
        Ok(Box::new(EmuVcpu {
            cpu,
            waker: self.waker.clone(),
            kick: Arc::new(EmuKick {
                flag: AtomicBool::new(false),
                waker: self.waker.clone(),
            }),
            buf: [0; 8],
            awaiting_read: false,
            thread_registered: false,
            next_poll: 0,
            profile: std::env::var_os("VIREO_EMU_PROFILE").map(|p| Profile {
                path: p.into(),
                samples: Default::default(),
                taken: 0,
            }),
        }))
    }

    fn set_irq_level(&self, gsi: u32, high: bool) -> Result<()> {
        self.chip().set_irq_level(gsi, high);
        Ok(())
    }

    fn signal_msi(&self, addr: u64, data: u32) -> Result<()> {
        self.chip().msi(addr, data);
        Ok(())
    }

    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>> {
        Ok(crate::cpu::cpuid::supported())
    }

    fn guest_writes(&self) -> Option<Arc<dyn GuestWrites>> {
        Some(self.device_writes.clone())
    }
}

/// The VMM's way into a running emulated vCPU: a flag the interpreter polls between blocks,
/// and an unpark for a halted one.
struct EmuKick {
    flag: AtomicBool,
    waker: Arc<Waker>,
}

impl Kick for EmuKick {
    fn kick(&self) {
        self.flag.store(true, Relaxed);
        self.waker.notify();
    }
}

pub struct EmuVcpu {
    cpu: Cpu,
    waker: Arc<Waker>,
    kick: Arc<EmuKick>,
    /// The data of the last I/O exit.
    buf: [u8; 8],
    /// The last exit was a read: `buf` holds the VMM's answer.
    awaiting_read: bool,
    /// The waker knows this vCPU's thread (the first `run` registers it: every `run` happens
    /// on that thread).
    thread_registered: bool,
    /// Instruction count at which the timers are next polled. Kept across `run` calls:
    /// a guest busy with port I/O (a serial console) exits long before any budget runs out.
    next_poll: u64,
    profile: Option<Profile>,
}

/// A sampling profile of the guest (`VIREO_EMU_PROFILE=FILE`): the guest RIP every time the
/// instruction budget runs out, written as `rip count` lines to map against System.map.
struct Profile {
    path: std::path::PathBuf,
    samples: rustc_hash::FxHashMap<u64, u64>,
    taken: u64,
}

impl Profile {
    fn sample(&mut self, rip: u64) {
        *self.samples.entry(rip).or_default() += 1;
        self.taken += 1;
        if self.taken.is_multiple_of(4096) {
            self.write();
        }
    }

    fn write(&self) {
        let text: String = self
            .samples
            .iter()
            .map(|(rip, n)| format!("{rip:x} {n}\n"))
            .collect();
        if let Err(e) = std::fs::write(&self.path, text) {
            tracing::warn!("profile {}: {e}", self.path.display());
        }
    }
}

impl Drop for EmuVcpu {
    fn drop(&mut self) {
        tracing::info!(
            "emu: vCPU executed {} instructions ({} in translated code, entered {} times); {} \
             decoded blocks cached, {} translated, {} more in their traces",
            self.cpu.icount,
            self.cpu.jit.ran,
            self.cpu.jit.entered,
            self.cpu.blocks.len(),
            self.cpu.jit.translated(),
            self.cpu.jit.traced
        );
        if let Some(p) = &self.profile {
            p.write();
        }
    }
}

impl EmuVcpu {
    fn exit(&mut self) -> Option<VcpuExit<'_>> {
        if let Some(w) = self.cpu.io.writes.pop_front() {
            self.buf = w.data;
            let data = &self.buf[..w.len.min(8)];
            return Some(match w.kind {
                IoKind::Pio => VcpuExit::IoOut {
                    port: w.addr as u16,
                    data,
                },
                IoKind::Mmio => VcpuExit::MmioWrite { addr: w.addr, data },
            });
        }
        if let Some(r) = self.cpu.io.pending_read {
            self.awaiting_read = true;
            self.buf = [0xff; 8];
            let data = &mut self.buf[..r.len.min(8)];
            return Some(match r.kind {
                IoKind::Pio => VcpuExit::IoIn {
                    port: r.addr as u16,
                    data,
                },
                IoKind::Mmio => VcpuExit::MmioRead { addr: r.addr, data },
            });
        }
        None
    }

    /// Sleeps while halted, until the next timer deadline or a notification.
    fn halt_wait(&mut self) {
        let next = self.cpu.platform.poll_timers();
        if self.waker.attention().load(Relaxed) || self.kick.flag.load(Relaxed) {
            return;
        }
        let now = self.cpu.platform.now_ns();
        let sleep = next
            .map(|t| Duration::from_nanos(t.saturating_sub(now)))
            .unwrap_or(MAX_HALT_SLEEP)
            .min(MAX_HALT_SLEEP);
        if !sleep.is_zero() {
            std::thread::park_timeout(sleep);
        }
        self.cpu.platform.poll_timers();
    }
}

impl Vcpu for EmuVcpu {
    fn set_regs(&mut self, r: &Regs) -> Result<()> {
        let c = &mut self.cpu;
        c.gpr = [
            r.rax, r.rcx, r.rdx, r.rbx, r.rsp, r.rbp, r.rsi, r.rdi, r.r8, r.r9, r.r10, r.r11,
            r.r12, r.r13, r.r14, r.r15,
        ];
        c.rip = r.rip;
        c.flags.set(r.rflags);
        Ok(())
    }

    fn regs(&self) -> Result<Regs> {
        let g = &self.cpu.gpr;
        Ok(Regs {
            rax: g[0],
            rcx: g[1],
            rdx: g[2],
            rbx: g[3],
            rsp: g[4],
            rbp: g[5],
            rsi: g[6],
            rdi: g[7],
            r8: g[8],
            r9: g[9],
            r10: g[10],
            r11: g[11],
            r12: g[12],
            r13: g[13],
            r14: g[14],
            r15: g[15],
            rip: self.cpu.rip,
            rflags: self.cpu.flags.get(),
        })
    }

    fn set_sregs(&mut self, s: &Sregs) -> Result<()> {
        let c = &mut self.cpu;
        c.seg = [s.es, s.cs, s.ss, s.ds, s.fs, s.gs];
        c.tr = s.tr;
        c.ldtr = s.ldt;
        c.gdtr = s.gdt;
        c.idtr = s.idt;
        c.cr0 = s.cr0;
        c.cr2 = s.cr2;
        c.cr3 = s.cr3;
        c.cr4 = s.cr4;
        c.efer = s.efer;
        c.platform.set_cr8(s.cr8);
        if s.apic_base != 0 {
            c.platform.wrmsr(0x1b, s.apic_base);
        }
        c.mem.flush_all();
        c.flush_code();
        c.update_mode();
        Ok(())
    }

    fn sregs(&self) -> Result<Sregs> {
        let c = &self.cpu;
        Ok(Sregs {
            es: c.seg[0],
            cs: c.seg[1],
            ss: c.seg[2],
            ds: c.seg[3],
            fs: c.seg[4],
            gs: c.seg[5],
            tr: c.tr,
            ldt: c.ldtr,
            gdt: c.gdtr,
            idt: c.idtr,
            cr0: c.cr0,
            cr2: c.cr2,
            cr3: c.cr3,
            cr4: c.cr4,
            cr8: 0,
            efer: c.efer,
            apic_base: 0,
        })
    }

    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()> {
        self.cpu.cpuid = entries.to_vec();
        Ok(())
    }

    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()> {
        for &(index, value) in msrs {
            self.cpu.write_msr(index, value).map_err(|e| {
                Error::Unsupported(format!(
                    "the emulator refused MSR {index:#x} = {value:#x} ({e:?})"
                ))
            })?;
        }
        Ok(())
    }

    fn reset_fpu(&mut self) -> Result<()> {
        self.cpu.fpu = Default::default();
        Ok(())
    }

    fn setup_lapic(&mut self) -> Result<()> {
        // LINT0 in ExtINT mode (the PIC), LINT1 as NMI, as firmware leaves them.
        const LAPIC: u64 = 0xfee0_0000;
        let p = &mut self.cpu.platform;
        p.mmio_write(LAPIC + 0x350, &0x700u32.to_le_bytes());
        p.mmio_write(LAPIC + 0x360, &0x400u32.to_le_bytes());
        Ok(())
    }

    fn run(&mut self) -> Result<VcpuExit<'_>> {
        if !self.thread_registered {
            self.waker.set_thread(std::thread::current());
            self.thread_registered = true;
        }
        if std::mem::take(&mut self.awaiting_read) {
            let buf = self.buf;
            self.cpu.io.complete_read(&buf);
        }
        loop {
            if self.kick.flag.load(Relaxed) {
                return Ok(VcpuExit::Interrupted);
            }
            // An exit waiting from the last instruction goes first. (Borrowck: decide with a
            // check, then return the borrow.)
            if !self.cpu.io.writes.is_empty() || self.cpu.io.pending_read.is_some() {
                return Ok(self.exit().unwrap_or(VcpuExit::Interrupted));
            }
            if self.cpu.icount >= self.next_poll {
                self.cpu.platform.poll_timers();
                self.next_poll = self.cpu.icount + BUDGET;
            }
            let budget = self.next_poll - self.cpu.icount;
            match self
                .cpu
                .run(budget, &self.kick.flag, self.waker.attention())
            {
                Stop::Budget => {
                    if let Some(p) = &mut self.profile {
                        p.sample(self.cpu.rip);
                    }
                }
                Stop::Io => {}
                Stop::Halt => self.halt_wait(),
                Stop::Kicked => return Ok(VcpuExit::Interrupted),
                Stop::Shutdown => return Ok(VcpuExit::Shutdown),
            }
        }
    }

    fn set_immediate_exit(&mut self, on: bool) {
        self.kick.flag.store(on, Relaxed);
    }

    fn kicker(&self) -> Option<Arc<dyn Kick>> {
        Some(self.kick.clone())
    }
}
