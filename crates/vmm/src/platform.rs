//! The machine's legacy platform devices, wired to their ports and interrupt lines.

use crate::config::VmConfig;
use crate::vcpu::Buses;
use crate::vm::VmError;
use std::sync::{Arc, Mutex};
use vireo_arch::layout::{self, ports};
use vireo_devices::{
    acpi_pm::{self, AcpiPm},
    cmos::{Cmos, CMOS_LEN},
    i8042::{I8042, I8042_LEN},
    pci::{PciConfigIo, PciConfigMmio, PciRoot, ECAM_BUS_SIZE, PCI_CONFIG_IO_LEN},
    serial::{Serial, SERIAL_LEN},
    Bus, BusDevice, ExitSignal, IrqLine,
};

// The ACPI tables (arch) describe what the devices implement: keep the two in step.
const _: () = assert!(acpi_pm::S5_SLP_TYP == ports::S5_SLP_TYP as u16);
const _: () = assert!(
    acpi_pm::ACPI_PM_LEN == (ports::PM1A_EVT_LEN + ports::PM1A_CNT_LEN) as u64
        && ports::PM1A_CNT == ports::PM1A_EVT + ports::PM1A_EVT_LEN as u16
);
const _: () = assert!(ECAM_BUS_SIZE == layout::ECAM_SIZE);

pub struct Platform {
    pub buses: Buses,
    pub serial: Arc<Mutex<Serial>>,
    pub acpi_pm: Arc<Mutex<AcpiPm>>,
    /// PCI bus 0, for the VMM to add its devices to.
    pub pci: Arc<Mutex<PciRoot>>,
}

impl Platform {
    pub fn new(
        cfg: &VmConfig,
        exit: &Arc<ExitSignal>,
        line: &dyn Fn(u32) -> Arc<dyn IrqLine>,
    ) -> Result<Platform, VmError> {
        let out = crate::console::output(&cfg.console)
            .map_err(|e| VmError::Device(format!("console output: {e}")))?;
        let serial = Arc::new(Mutex::new(Serial::new(line(ports::COM1_IRQ), out)));
        let acpi_pm = Arc::new(Mutex::new(AcpiPm::new(exit.clone(), line(ports::SCI_IRQ))));
        let low = cfg.memory.min(layout::LOW_RAM_END);
        let high = cfg.memory.saturating_sub(layout::LOW_RAM_END);
        let pci = Arc::new(Mutex::new(PciRoot::new()));

        let mut pio = Bus::new();
        let mut mmio = Bus::new();
        let add = |bus: &mut Bus, base: u64, len: u64, dev: Arc<Mutex<dyn BusDevice>>| {
            bus.insert(base, len, dev)
                .map_err(|e| VmError::Device(e.to_string()))
        };
        add(&mut pio, ports::COM1.into(), SERIAL_LEN, serial.clone())?;
        add(
            &mut pio,
            ports::I8042.into(),
            I8042_LEN,
            Arc::new(Mutex::new(I8042::new(
                exit.clone(),
                Some(line(ports::I8042_IRQ)),
            ))),
        )?;
        add(
            &mut pio,
            ports::CMOS.into(),
            CMOS_LEN,
            Arc::new(Mutex::new(Cmos::new(low, high))),
        )?;
        add(
            &mut pio,
            ports::PCI_CONFIG.into(),
            PCI_CONFIG_IO_LEN,
            Arc::new(Mutex::new(PciConfigIo::new(pci.clone()))),
        )?;
        add(
            &mut pio,
            ports::PM1A_EVT.into(),
            acpi_pm::ACPI_PM_LEN,
            acpi_pm.clone(),
        )?;
        add(
            &mut mmio,
            layout::ECAM_START,
            layout::ECAM_SIZE,
            Arc::new(Mutex::new(PciConfigMmio::new(pci.clone()))),
        )?;
        Ok(Platform {
            buses: Buses { pio, mmio },
            serial,
            acpi_pm,
            pci,
        })
    }
}
