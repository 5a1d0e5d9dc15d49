//! The VM's paravirtual devices (seed 2.3): each a virtio-pci function on bus 0 whose BAR 0 is
//! placed in the 32-bit PCI window and routed on the MMIO bus, interrupting through MSI-X.

use crate::config::{ConsoleConfig, NetBackend, VmConfig};
use crate::memory::GuestMemory;
use crate::vm::VmError;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vireo_arch::layout;
use vireo_devices::{pci::PciRoot, Bus, IrqLine, MsiSink};
use vireo_hypervisor::Vm;
use vireo_virtio::balloon::{Balloon, BalloonConfig, BalloonControl};
use vireo_virtio::block::{Block, BlockConfig};
use vireo_virtio::console::{Console, ConsoleInput};
use vireo_virtio::net::{Net, NetConfig};
use vireo_virtio::rng::Rng;
use vireo_virtio::transport::{VirtioPci, BAR0_SIZE};
use vireo_virtio::vhost_user::{VhostUserBlk, VhostUserNet};
use vireo_virtio::vsock::{Vsock, VsockConfig};
use vireo_virtio::VirtioDevice;

/// One attached device, as the API lists it.
pub struct AttachedDevice {
    /// `disk0`, `rng0`, ...
    pub id: String,
    pub pci_slot: u8,
    pub function: Arc<Mutex<VirtioPci>>,
}

impl AttachedDevice {
    pub fn counters(&self) -> Vec<(&'static str, u64)> {
        self.function
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .counters()
    }
}

/// MSI-X messages go to the backend's interrupt controller.
struct MsiToVm(Arc<dyn Vm>);

impl MsiSink for MsiToVm {
    fn signal_msi(&self, addr: u64, data: u32) {
        if let Err(e) = self.0.signal_msi(addr, data) {
            tracing::warn!("MSI {addr:#x}/{data:#x}: {e}");
        }
    }
}

/// The attached devices, and the virtio console's input if there is one.
pub struct Attached {
    pub devices: Vec<AttachedDevice>,
    pub console_input: Option<Arc<ConsoleInput>>,
    pub balloon: Option<BalloonControl>,
}

/// Creates the devices `cfg` asks for and plugs each into PCI bus 0 and the MMIO bus; `line`
/// gives the interrupt line of a GSI, for the functions' INTA#.
pub fn attach(
    cfg: &VmConfig,
    vm: &Arc<dyn Vm>,
    mem: &GuestMemory,
    pci: &Arc<Mutex<PciRoot>>,
    mmio: &mut Bus,
    line: &dyn Fn(u32) -> Arc<dyn IrqLine>,
) -> Result<Attached, VmError> {
    let (wanted, console_input, balloon) = create(cfg, mem)?;
    let msi: Arc<dyn MsiSink> = Arc::new(MsiToVm(vm.clone()));
    let mut next = layout::PCI_MMIO32_START;
    let mut devices = Vec::new();
    for (id, device) in wanted {
        let bar = next.next_multiple_of(BAR0_SIZE);
        next = bar + BAR0_SIZE;
        if next > layout::PCI_MMIO32_START + layout::PCI_MMIO32_SIZE {
            return Err(VmError::Device(format!(
                "{id}: no room left in the PCI memory window; attach fewer devices"
            )));
        }
        let function = VirtioPci::new(device, mem.clone(), msi.clone(), vm.guest_writes(), bar)
            .map_err(|e| VmError::Device(format!("{id}: {e}")))?;
        // Queue notifications go straight from KVM to the device's worker, without a trip
        // through the vCPU thread and the bus.
        for q in 0..function.num_queues() {
            if let (Some(addr), Some(fd)) = (function.notify_address(q), function.notify_eventfd(q))
            {
                vm.register_ioevent(addr, fd)
                    .map_err(|e| VmError::Device(format!("{id}: queue {q} notification: {e}")))?;
            }
        }
        let function = Arc::new(Mutex::new(function));
        let pci_slot = pci
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_device(function.clone())
            .map_err(|e| VmError::Device(format!("{id}: {e}")))?;
        mmio.insert(bar, BAR0_SIZE, function.clone())
            .map_err(|e| VmError::Device(format!("{id}: {e}")))?;
        // INTA# as the DSDT's _PRT routes it, for guests without MSI-X (`pci=nomsi`).
        function
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .set_intx(line(vireo_arch::acpi::pci_irq_gsi(pci_slot, 0)));
        tracing::info!(device = %id, slot = pci_slot, bar = format_args!("{bar:#x}"), "virtio-pci device attached");
        devices.push(AttachedDevice {
            id,
            pci_slot,
            function,
        });
    }
    Ok(Attached {
        devices,
        console_input,
        balloon,
    })
}

type Created = (
    Vec<(String, Box<dyn VirtioDevice>)>,
    Option<Arc<ConsoleInput>>,
    Option<BalloonControl>,
);

/// The device models, in a fixed order (console, disks, nets, rng, balloon, vsock) so that the
/// guest sees the same PCI addresses on every boot. Any error (a missing image, a busy tap)
/// comes before anything is plugged in, and drops what was created so far.
fn create(cfg: &VmConfig, mem: &GuestMemory) -> Result<Created, VmError> {
    let mut wanted: Vec<(String, Box<dyn VirtioDevice>)> = Vec::new();
    let mut console_input = None;
    if cfg.console == ConsoleConfig::Virtio {
        let out = crate::console::output(&cfg.console)
            .map_err(|e| VmError::Device(format!("console output: {e}")))?;
        let console =
            Console::new(out).map_err(|e| VmError::Device(format!("virtio-console: {e}")))?;
        console_input = Some(console.input());
        wanted.push(("console0".into(), Box::new(console)));
    }
    for (i, d) in cfg.disks.iter().enumerate() {
        let id = format!("disk{i}");
        if let Some(socket) = &d.vhost_user {
            let disk = VhostUserBlk::new(socket).map_err(|e| {
                VmError::Device(format!("--disk vhost-user={}: {e}", socket.display()))
            })?;
            wanted.push((id, Box::new(disk)));
            continue;
        }
        let block = Block::new(BlockConfig {
            path: d.path.clone(),
            format: d.format,
            readonly: d.readonly,
            cache: d.cache,
            iops: d.iops,
            bps: d.bps,
            id: format!("vireo-disk{i}"),
        })
        .map_err(|e| VmError::Device(format!("--disk {}: {e}", d.path.display())))?;
        wanted.push((id, Box::new(block)));
    }
    for (i, n) in cfg.nets.iter().enumerate() {
        let id = format!("net{i}");
        match &n.backend {
            NetBackend::Tap(tap) => {
                let net = Net::new(NetConfig {
                    tap: tap.clone(),
                    mac: n.mac,
                    bps: n.bps,
                    pps: n.pps,
                })
                .map_err(|e| VmError::Device(format!("--net tap={tap}: {e}")))?;
                wanted.push((id, Box::new(net)));
            }
            NetBackend::VhostUser(socket) => {
                let net = VhostUserNet::new(socket, n.mac).map_err(|e| {
                    VmError::Device(format!("--net vhost-user={}: {e}", socket.display()))
                })?;
                wanted.push((id, Box::new(net)));
            }
        }
    }
    if cfg.rng {
        wanted.push(("rng0".into(), Box::new(Rng::new())));
    }
    let mut balloon = None;
    if let Some(b) = &cfg.balloon {
        let (device, control) = Balloon::new(
            BalloonConfig {
                initial_target: b.size,
                stats_interval: b.stats.map(Duration::from_secs),
                free_page_reporting: b.free_page_reporting,
                deflate_on_oom: false,
            },
            mem,
        )
        .map_err(|e| VmError::Device(format!("--balloon: {e}")))?;
        balloon = Some(control);
        wanted.push(("balloon0".into(), Box::new(device)));
    }
    if let Some(v) = &cfg.vsock {
        let vsock = Vsock::new(VsockConfig {
            guest_cid: v.cid,
            uds_path: v.socket.clone(),
        })
        .map_err(|e| VmError::Device(format!("--vsock: {e}")))?;
        wanted.push(("vsock0".into(), Box::new(vsock)));
    }

    Ok((wanted, console_input, balloon))
}
