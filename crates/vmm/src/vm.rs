//! Building and running one VM: memory, kernel, platform tables, devices, vCPUs, lifecycle.

use crate::config::{Accel, VmConfig};
use crate::state::{Verb, VmState};
use crate::vcpu::{self, Control, ExitCounters, Run, VcpuEvent};
use crate::{api, console, load, memory};
use std::sync::mpsc::{channel, Sender};
use std::sync::{Arc, Mutex};
use vireo_arch::{cpuid, loader};
use vireo_devices::{acpi_pm::AcpiPm, ExitReason, ExitSignal, IrqLine};
use vireo_emu::EmuHypervisor;
use vireo_hypervisor::{kvm::KvmHypervisor, Hypervisor};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the kernel {path}: {source}")]
    Kernel {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot open the initrd {path}: {source}")]
    Initrd {
        path: String,
        source: std::io::Error,
    },
    #[error("cannot load {path}: {source}")]
    Load {
        path: String,
        source: loader::LoadError,
    },
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    #[error("{0}")]
    Accel(String),
    #[error("hypervisor: {0}")]
    Hypervisor(#[from] vireo_hypervisor::Error),
    #[error("ACPI tables: {0}")]
    Acpi(String),
    #[error("{0}")]
    Device(String),
    #[error("vCPU {0}: {1}")]
    Vcpu(u32, String),
    #[error("the guest shut down vCPU {0} (a triple fault: the guest crashed or the kernel cannot run on this CPU backend)")]
    TripleFault(u32),
}

/// How a VM ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmOutcome {
    /// The guest powered off (ACPI S5).
    PowerOff,
    /// The guest rebooted (i8042 or backend reset): `vireo run` ends, like `-no-reboot`.
    Reset,
    /// Stopped through the API (hard stop).
    Stopped,
}

/// Everything that ends or changes the VM arrives on one channel to the VMM thread.
pub enum Event {
    Vcpu(VcpuEvent),
    Guest(ExitReason),
    ApiStop,
    ConsoleQuit,
}

/// The VM as the API sees it.
pub struct VmShared {
    pub state: Mutex<VmState>,
    pub config: VmConfig,
    pub accel: &'static str,
    pub counters: Vec<Arc<ExitCounters>>,
    pub control: Arc<Control>,
    pub threads: Mutex<Vec<vcpu::VcpuThread>>,
    pub power_button: Arc<Mutex<AcpiPm>>,
    pub events: Sender<Event>,
    /// Emptied when the VM ends, so that the devices are dropped (workers stopped, sockets
    /// removed) even while an API thread still holds the rest.
    pub devices: Mutex<Vec<crate::virtio::AttachedDevice>>,
    pub balloon: Option<vireo_virtio::balloon::BalloonControl>,
}

impl VmShared {
    /// Applies a lifecycle verb, refusing it when the state does not allow it.
    pub fn transition(&self, verb: Verb) -> Result<VmState, String> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let next = st.apply(verb)?;
        let threads = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        match verb {
            Verb::Pause => self.control.set(Run::Paused, &threads),
            Verb::Resume => self.control.set(Run::Running, &threads),
            Verb::Stop => {
                let _ = self.events.send(Event::ApiStop);
            }
            Verb::Start => {}
        }
        *st = next;
        Ok(next)
    }
}

struct GsiLine {
    vm: Arc<dyn vireo_hypervisor::Vm>,
    gsi: u32,
}

impl IrqLine for GsiLine {
    fn set_level(&self, high: bool) {
        if let Err(e) = self.vm.set_irq_level(self.gsi, high) {
            tracing::warn!("interrupt line {}: {e}", self.gsi);
        }
    }
}

/// Chooses the CPU backend: KVM when it can run this guest, else the emulator (`auto`), or
/// exactly the one asked for, refusing early and clearly when it cannot run the guest.
fn pick_backend(
    accel: Accel,
    needs_long_mode: bool,
    cpus: u32,
) -> Result<Box<dyn Hypervisor>, VmError> {
    let kvm = || -> Result<Box<dyn Hypervisor>, String> {
        let h = KvmHypervisor::new().map_err(|e| format!("KVM is not usable: {e}"))?;
        let caps = h.capabilities();
        if needs_long_mode && !caps.long_mode {
            return Err(format!(
                "KVM cannot run this 64-bit kernel: {}",
                caps.long_mode_note
                    .as_deref()
                    .unwrap_or("no long-mode support")
            ));
        }
        Ok(Box::new(h))
    };
    let emu = || -> Result<Box<dyn Hypervisor>, String> {
        let h = EmuHypervisor::new();
        let max = h.capabilities().max_vcpus;
        if cpus as usize > max {
            return Err(format!(
                "the emulator runs at most {max} vCPU per VM (SMP in the emulator comes later); use --cpus 1"
            ));
        }
        Ok(Box::new(h))
    };
    match accel {
        Accel::Kvm => kvm().map_err(|e| VmError::Accel(format!("--accel kvm: {e}"))),
        Accel::Emu => emu().map_err(|e| VmError::Accel(format!("--accel emu: {e}"))),
        Accel::Auto => kvm().or_else(|why_not_kvm| {
            let h = emu().map_err(|e| {
                VmError::Accel(format!(
                    "no CPU backend can run this guest: {why_not_kvm}; and {e}"
                ))
            })?;
            tracing::info!("{why_not_kvm}; using the emulator");
            Ok(h)
        }),
    }
}

/// Builds the VM described by `cfg`, runs it to the end, and says how it ended.
pub fn run_vm(cfg: VmConfig) -> Result<VmOutcome, VmError> {
    cfg.validate().map_err(VmError::Config)?;
    let mem = memory::create(cfg.memory)?;
    let mut files = load::open_guest(&cfg)?;
    let hv = pick_backend(cfg.accel, files.format().needs_long_mode(), cfg.cpus)?;
    if hv.capabilities().emulated {
        files.unpack_bzimage_for_pvh(&cfg.kernel);
    }
    let guest = load::load_guest(&cfg, &mem, files)?;
    tracing::info!(
        backend = hv.name(),
        "loaded kernel {}",
        cfg.kernel.display()
    );

    let vm: Arc<dyn vireo_hypervisor::Vm> = Arc::from(hv.create_vm()?);
    memory::map_into(vm.as_ref(), &mem)?;

    let (events_tx, events) = channel();
    let exit = Arc::new(ExitSignal::new().map_err(|e| VmError::Device(e.to_string()))?);
    let line = |gsi| -> Arc<dyn IrqLine> {
        Arc::new(GsiLine {
            vm: vm.clone(),
            gsi,
        })
    };
    let mut platform = crate::platform::Platform::new(&cfg, &exit, &line)?;
    let attached = crate::virtio::attach(
        &cfg,
        &vm,
        &mem,
        &platform.pci,
        &mut platform.buses.mmio,
        &line,
    )?;

    let input = match attached.console_input {
        Some(c) => console::InputTarget::Virtio(c),
        None => console::InputTarget::Serial(platform.serial.clone()),
    };
    let console = console::Console::start(&cfg.console, input, events_tx.clone())
        .map_err(|e| VmError::Device(format!("console: {e}")))?;

    let vcpus = create_vcpus(vm.as_ref(), &cfg, &guest)?;

    let control = Arc::new(Control::default());
    let shared = Arc::new(VmShared {
        state: Mutex::new(VmState::Created),
        config: cfg.clone(),
        accel: hv.name(),
        counters: (0..cfg.cpus).map(|_| Arc::default()).collect(),
        control: control.clone(),
        threads: Mutex::new(Vec::new()),
        power_button: platform.acpi_pm.clone(),
        events: events_tx.clone(),
        devices: Mutex::new(attached.devices),
        balloon: attached.balloon,
    });
    let _api = match &cfg.api_socket {
        Some(path) => Some(
            api::ApiServer::start(path, shared.clone())
                .map_err(|e| VmError::Device(format!("API socket {}: {e}", path.display())))?,
        ),
        None => None,
    };
    exit_watcher(exit.clone(), events_tx.clone());

    vcpu::install_kick_handler().map_err(|e| VmError::Device(format!("signal handler: {e}")))?;
    let buses = Arc::new(platform.buses);
    let mut handles = Vec::new();
    for (id, v) in vcpus.into_iter().enumerate() {
        let kicker = v.kicker();
        let (b, c, n, x, e) = (
            buses.clone(),
            control.clone(),
            shared.counters[id].clone(),
            exit.clone(),
            events_tx.clone(),
        );
        let h = std::thread::Builder::new()
            .name(format!("vcpu{id}"))
            .spawn(move || vcpu::run_loop(id as u32, v, b, c, n, x, e))
            .map_err(|e| VmError::Device(format!("cannot start vCPU thread: {e}")))?;
        {
            use std::os::unix::thread::JoinHandleExt;
            shared
                .threads
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(vcpu::VcpuThread {
                    thread: h.as_pthread_t(),
                    kicker,
                });
        }
        handles.push(h);
    }
    shared.transition(Verb::Start).map_err(VmError::Config)?;

    // Whatever ends the VM arrives here; a closed channel means everyone else is gone.
    let outcome = match events.recv() {
        Err(_) | Ok(Event::ApiStop | Event::ConsoleQuit) => Ok(VmOutcome::Stopped),
        Ok(Event::Guest(ExitReason::PowerOff)) => Ok(VmOutcome::PowerOff),
        Ok(Event::Guest(ExitReason::Reset) | Event::Vcpu(VcpuEvent::Reset(_))) => {
            Ok(VmOutcome::Reset)
        }
        Ok(Event::Vcpu(VcpuEvent::Shutdown(id))) => Err(VmError::TripleFault(id)),
        Ok(Event::Vcpu(VcpuEvent::Failed(id, why))) => Err(VmError::Vcpu(id, why)),
    };

    {
        let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
        *st = VmState::Stopped;
    }
    let threads = shared
        .threads
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    control.set(Run::Stopping, &threads);
    for (h, t) in handles.into_iter().zip(threads) {
        while !h.is_finished() {
            vcpu::kick_all(std::slice::from_ref(&t));
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let _ = h.join();
    }
    drop(console);
    // The buses (dropped on return) and this list hold the last references to the devices.
    drop(std::mem::take(
        &mut *shared.devices.lock().unwrap_or_else(|p| p.into_inner()),
    ));
    outcome
}

/// Creates and configures every vCPU; vCPU 0 gets the boot entry state.
fn create_vcpus(
    vm: &dyn vireo_hypervisor::Vm,
    cfg: &VmConfig,
    guest: &load::LoadedGuest,
) -> Result<Vec<Box<dyn vireo_hypervisor::Vcpu>>, VmError> {
    let supported = vm.supported_cpuid()?;
    (0..cfg.cpus)
        .map(|id| {
            let mut v = vm.create_vcpu(id)?;
            v.set_cpuid(&cpuid::vcpu_cpuid(&supported, id, cfg.cpus))?;
            if guest.kernel.needs_long_mode {
                v.set_msrs(&cpuid::boot_msrs())?;
            }
            v.reset_fpu()?;
            v.setup_lapic()?;
            if id == 0 {
                v.set_sregs(&guest.sregs)?;
                v.set_regs(&guest.regs)?;
            }
            Ok(v)
        })
        .collect()
}

/// Forwards the devices' exit signal (poweroff, reset) to the VMM's event channel.
fn exit_watcher(exit: Arc<ExitSignal>, events: Sender<Event>) {
    std::thread::spawn(move || {
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(exit.fd()),
            events: libc::POLLIN,
            revents: 0,
        };
        loop {
            // SAFETY: pfd is a valid pollfd for the duration of the call.
            let r = unsafe { libc::poll(&mut pfd, 1, -1) };
            if r > 0 {
                if let Some(reason) = exit.reason() {
                    let _ = events.send(Event::Guest(reason));
                    return;
                }
                let _ = exit.fd().read();
            }
        }
    });
}
