//! Putting the guest into its memory before any vCPU exists: kernel, command line, initrd,
//! ACPI tables and the boot protocol's structures. Nothing here depends on the CPU backend.

use crate::config::VmConfig;
use crate::memory::GuestMemory;
use crate::vm::VmError;
use std::fs::File;
use vireo_arch::{acpi, boot, layout, loader};
use vireo_hypervisor::{Regs, Sregs};
use vm_memory::{GuestAddress, ReadVolatile};

/// A guest ready to run: how to enter its kernel, and vCPU 0's registers for that.
pub struct LoadedGuest {
    pub kernel: loader::LoadedKernel,
    pub regs: Regs,
    pub sregs: Sregs,
}

/// Opens the initrd and checks it can fit before guest memory is touched.
fn open_initrd(cfg: &VmConfig) -> Result<Option<(File, u64)>, VmError> {
    let Some(p) = &cfg.initrd else {
        return Ok(None);
    };
    let path = p.display().to_string();
    let f = File::open(p).map_err(|source| VmError::Initrd {
        path: path.clone(),
        source,
    })?;
    let size = f
        .metadata()
        .map_err(|source| VmError::Initrd { path, source })?
        .len();
    if size >= cfg.memory {
        return Err(VmError::Config(format!(
            "the initrd {} ({} MiB) does not fit in --memory {} MiB; give the VM more memory",
            p.display(),
            size >> 20,
            cfg.memory >> 20
        )));
    }
    Ok(Some((f, size)))
}

/// Reads the initrd into the highest place the kernel accepts.
fn load_initrd(
    mem: &GuestMemory,
    kernel: &loader::LoadedKernel,
    ram_end: u64,
    (mut f, size): (File, u64),
) -> Result<(u64, u64), VmError> {
    let limit = match kernel.entry {
        loader::Entry::Linux64 { header, .. } if header.initrd_addr_max != 0 => {
            u64::from(header.initrd_addr_max) + 1
        }
        _ => u64::MAX,
    };
    let addr = boot::place_initrd(kernel.end, ram_end, limit, size).map_err(|_| {
        VmError::Config(format!(
            "the initrd ({} MiB) does not fit in guest memory above the kernel; give the VM more --memory",
            size >> 20
        ))
    })?;
    let mut slice =
        vm_memory::GuestMemoryBackend::get_slice(mem, GuestAddress(addr), size as usize)
            .map_err(|e| VmError::Config(format!("initrd: {e}")))?;
    f.read_exact_volatile(&mut slice)
        .map_err(|e| VmError::Config(format!("cannot read the initrd: {e}")))?;
    Ok((addr, size))
}

/// Loads everything `cfg` names into `mem`; user mistakes come back as errors that say what to
/// change.
pub fn load_guest(cfg: &VmConfig, mem: &GuestMemory) -> Result<LoadedGuest, VmError> {
    let kernel_path = cfg.kernel.display().to_string();
    let load_err = |source| VmError::Load {
        path: kernel_path.clone(),
        source,
    };
    let mut kernel_file = File::open(&cfg.kernel).map_err(|source| VmError::Kernel {
        path: kernel_path.clone(),
        source,
    })?;
    let initrd = open_initrd(cfg)?;
    if cfg.cmdline.len() + 1 > layout::CMDLINE_MAX {
        return Err(VmError::Config(format!(
            "--cmdline is {} bytes; the limit is {}",
            cfg.cmdline.len(),
            layout::CMDLINE_MAX - 1
        )));
    }

    let ram_end = cfg.memory.min(layout::LOW_RAM_END);
    let kernel = loader::load_kernel(mem, ram_end, &mut kernel_file).map_err(load_err)?;
    let mut cmdline = cfg.cmdline.clone().into_bytes();
    cmdline.push(0);
    vm_memory::Bytes::write_slice(mem, &cmdline, GuestAddress(layout::CMDLINE))
        .map_err(|e| VmError::Config(format!("cannot write the command line: {e}")))?;
    let initrd = initrd
        .map(|i| load_initrd(mem, &kernel, ram_end, i))
        .transpose()?;
    let rsdp = acpi::create_acpi_tables(
        mem,
        &acpi::AcpiConfig {
            num_cpus: cfg.cpus as u8,
        },
    )
    .map_err(|e| VmError::Acpi(e.to_string()))?;
    let (regs, sregs) = boot::write_boot_params(
        mem,
        &kernel,
        &boot::BootInfo {
            mem_size: cfg.memory,
            cmdline_len: cmdline.len(),
            initrd,
            rsdp,
        },
    )
    .map_err(load_err)?;
    Ok(LoadedGuest {
        kernel,
        regs,
        sregs,
    })
}
