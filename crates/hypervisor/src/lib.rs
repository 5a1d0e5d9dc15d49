//! The CPU virtualization layer (seed 2.1): one vCPU/VM abstraction with a backend per
//! technique. `kvm` is hardware-assisted virtualization through Linux KVM; the software
//! backend (`emu`, full virtualization by an x86-64 emulator) plugs in behind the same traits.
//!
//! The VMM, the devices and the boot code only see [`Vm`] and [`Vcpu`]: they never know which
//! backend runs the guest.

pub mod kvm;
pub mod x86;

pub use x86::{CpuidEntry, Regs, Segment, Sregs, Table};

/// What stopped a vCPU and needs the VMM's attention.
///
/// I/O and MMIO exits borrow the backend's exchange buffer: for reads, the VMM fills `data`
/// before it calls [`Vcpu::run`] again.
#[derive(Debug)]
pub enum VcpuExit<'a> {
    IoIn {
        port: u16,
        data: &'a mut [u8],
    },
    IoOut {
        port: u16,
        data: &'a [u8],
    },
    MmioRead {
        addr: u64,
        data: &'a mut [u8],
    },
    MmioWrite {
        addr: u64,
        data: &'a [u8],
    },
    /// The vCPU halted with no interrupt controller in the backend to wake it.
    Halt,
    /// The guest triple-faulted or otherwise shut the CPU down.
    Shutdown,
    /// The guest asked for a reset through the backend (e.g. a PSCI or KVM system event).
    Reset,
    /// `run` was interrupted by a signal (a kick from the VMM): check for pause or stop.
    Interrupted,
    /// The backend could not continue; the string says why.
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open {path}: {source}")]
    Open {
        path: &'static str,
        source: std::io::Error,
    },
    #[error("{op} failed: {source}")]
    Ioctl {
        op: &'static str,
        source: std::io::Error,
    },
    #[error("{0}")]
    Unsupported(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// What a backend can run, so that `--accel auto` can choose and `--accel kvm` can refuse early
/// with a clear message instead of hanging in a guest that can never make progress.
#[derive(Debug, Clone)]
pub struct Capabilities {
    /// Can run 64-bit long-mode guests such as a stock x86-64 Linux kernel.
    pub long_mode: bool,
    /// If `long_mode` is false, the reason, to show to the user.
    pub long_mode_note: Option<String>,
    /// The most vCPUs one VM may have.
    pub max_vcpus: usize,
    /// Guest code runs in software emulation: work the VMM can do natively instead of the
    /// guest (unpacking a compressed kernel) is worth doing.
    pub emulated: bool,
}

/// One virtual machine of a backend: its guest memory map, interrupt controllers and vCPUs.
pub trait Vm: Send + Sync {
    /// Maps `size` bytes of host memory at `host_addr` into the guest at `guest_addr`.
    ///
    /// # Safety
    /// `host_addr..host_addr+size` must stay mapped and valid for as long as the VM exists.
    unsafe fn map_memory(
        &self,
        slot: u32,
        guest_addr: u64,
        host_addr: *mut u8,
        size: u64,
    ) -> Result<()>;

    /// Creates the vCPU with the given index (its APIC ID).
    fn create_vcpu(&self, id: u32) -> Result<Box<dyn Vcpu>>;

    /// Drives an interrupt line (GSI) of the VM's IOAPIC.
    fn set_irq_level(&self, gsi: u32, high: bool) -> Result<()>;

    /// Delivers a message-signalled interrupt (a PCI function's MSI/MSI-X write of `data` to
    /// `addr`) to the local APICs it addresses.
    fn signal_msi(&self, addr: u64, data: u32) -> Result<()>;

    /// Makes guest writes of any width to the MMIO address `addr` signal `fd` without leaving
    /// the backend (a virtio queue notification). Returns false when the backend has no such
    /// shortcut: the write then reaches the VMM as a [`VcpuExit::MmioWrite`] as usual.
    fn register_ioevent(&self, _addr: u64, _fd: &vmm_sys_util::eventfd::EventFd) -> Result<bool> {
        Ok(false)
    }

    /// The CPUID leaves this backend can present to a guest, before the VMM's policy.
    fn supported_cpuid(&self) -> Result<Vec<CpuidEntry>>;

    /// Where devices must report their writes into guest memory, for a backend that caches
    /// something derived from guest RAM that such writes invalidate (an emulator's decoded
    /// instructions). Hardware keeps its caches coherent itself: `None`.
    fn guest_writes(&self) -> Option<std::sync::Arc<dyn GuestWrites>> {
        None
    }
}

/// Told about a device's write into guest-physical memory (see [`Vm::guest_writes`]).
pub trait GuestWrites: Send + Sync {
    fn written(&self, gpa: u64, len: u64);
}

/// Interrupts a vCPU's `run` from another thread, for backends that a signal cannot reach
/// (a software CPU does not return on `EINTR`).
pub trait Kick: Send + Sync {
    fn kick(&self);
}

/// A virtual CPU. Runs on the thread that created it (KVM requires this for performance).
pub trait Vcpu: Send {
    fn set_regs(&mut self, regs: &Regs) -> Result<()>;
    fn regs(&self) -> Result<Regs>;
    fn set_sregs(&mut self, sregs: &Sregs) -> Result<()>;
    fn sregs(&self) -> Result<Sregs>;
    fn set_cpuid(&mut self, entries: &[CpuidEntry]) -> Result<()>;
    fn set_msrs(&mut self, msrs: &[(u32, u64)]) -> Result<()>;
    /// Resets the FPU/SSE state to the values a CPU has at power-on (FCW 0x37f, MXCSR 0x1f80).
    fn reset_fpu(&mut self) -> Result<()>;
    /// Programs the local APIC's LINT0 as ExtINT and LINT1 as NMI, as firmware does.
    fn setup_lapic(&mut self) -> Result<()>;
    /// Runs guest code until an exit that needs the VMM.
    fn run(&mut self) -> Result<VcpuExit<'_>>;
    /// Makes the next [`Vcpu::run`] return [`VcpuExit::Interrupted`] at once (or clears that),
    /// closing the race between a kick signal and entering the guest.
    fn set_immediate_exit(&mut self, on: bool);
    /// How to interrupt `run` from another thread besides the kick signal, if the backend
    /// needs one.
    fn kicker(&self) -> Option<std::sync::Arc<dyn Kick>> {
        None
    }
}

/// A CPU backend.
pub trait Hypervisor {
    fn name(&self) -> &'static str;
    fn capabilities(&self) -> &Capabilities;
    fn create_vm(&self) -> Result<Box<dyn Vm>>;
}
