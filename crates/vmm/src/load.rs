//! Putting the guest into its memory before any vCPU exists: kernel, command line, initrd,
//! ACPI tables and the boot protocol's structures. Only the choice of entry for a bzImage depends
//! on the CPU backend (see [`GuestFiles::unpack_bzimage_for_pvh`]).

use crate::config::VmConfig;
use crate::memory::GuestMemory;
use crate::vm::VmError;
use std::fs::File;
use vireo_arch::{acpi, boot, bzimage, elf, layout, loader};
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

/// The guest's files, opened and checked before a CPU backend is chosen (the choice depends on
/// the kernel's format) and before guest memory is touched.
pub struct GuestFiles {
    kernel: File,
    format: loader::KernelFormat,
    initrd: Option<(File, u64)>,
    /// The `vmlinux` unpacked from a bzImage, to be entered through its PVH note instead.
    unpacked: Option<Vec<u8>>,
}

/// bzImages larger than this are not unpacked in the VMM (distribution kernels are ~15 MiB).
const MAX_BZIMAGE_TO_UNPACK: u64 = 128 << 20;

impl GuestFiles {
    pub fn format(&self) -> loader::KernelFormat {
        self.format
    }

    /// For the emulator: a bzImage's own decompressor would run interpreted (over a second
    /// before Linux prints anything), so unpack its `vmlinux` here and boot that through its
    /// PVH entry, as Firecracker and Cloud Hypervisor boot a `vmlinux`. Whenever that is not
    /// possible the bzImage boots as usual; either way the log says which path was taken.
    pub fn unpack_bzimage_for_pvh(&mut self, path: &std::path::Path) {
        if self.format != loader::KernelFormat::BzImage {
            return;
        }
        let started = std::time::Instant::now();
        match self.read_and_unpack() {
            Ok(u) => {
                tracing::info!(
                    "booting the vmlinux inside {} through its PVH entry {:#x}: unpacked its {} payload ({} KiB -> {} KiB) in {} ms",
                    path.display(),
                    u.pvh_entry,
                    u.compression,
                    u.compressed_len >> 10,
                    u.vmlinux.len() >> 10,
                    started.elapsed().as_millis()
                );
                self.unpacked = Some(u.vmlinux);
            }
            Err(why) => tracing::info!(
                "booting {} through its own decompressor (the bzImage path): cannot boot its vmlinux directly: {why}",
                path.display()
            ),
        }
    }

    fn read_and_unpack(&mut self) -> Result<bzimage::Unpacked, String> {
        use std::io::{Read, Seek, SeekFrom};
        let len = self.kernel.metadata().map_err(|e| e.to_string())?.len();
        if len > MAX_BZIMAGE_TO_UNPACK {
            return Err(format!(
                "the bzImage is larger than {} MiB",
                MAX_BZIMAGE_TO_UNPACK >> 20
            ));
        }
        let mut bz = Vec::with_capacity(len as usize);
        let read = self
            .kernel
            .seek(SeekFrom::Start(0))
            .and_then(|_| (&mut self.kernel).take(len).read_to_end(&mut bz))
            .and_then(|_| self.kernel.seek(SeekFrom::Start(0)));
        read.map_err(|e| format!("cannot read it: {e}"))?;
        bzimage::extract_pvh_vmlinux(&bz).map_err(|e| e.to_string())
    }
}

/// Opens the kernel and initrd and checks what can be checked without guest memory; user
/// mistakes come back as errors that say what to change.
pub fn open_guest(cfg: &VmConfig) -> Result<GuestFiles, VmError> {
    let kernel_path = cfg.kernel.display().to_string();
    let mut kernel = File::open(&cfg.kernel).map_err(|source| VmError::Kernel {
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
    let format = loader::probe_kernel(&mut kernel).map_err(|source| VmError::Load {
        path: kernel_path,
        source,
    })?;
    Ok(GuestFiles {
        kernel,
        format,
        initrd,
        unpacked: None,
    })
}

/// Loads the guest's files into `mem`: kernel, command line, initrd, ACPI tables and the boot
/// protocol's structures.
pub fn load_guest(
    cfg: &VmConfig,
    mem: &GuestMemory,
    files: GuestFiles,
) -> Result<LoadedGuest, VmError> {
    let kernel_path = cfg.kernel.display().to_string();
    let load_err = |source| VmError::Load {
        path: kernel_path.clone(),
        source,
    };
    let GuestFiles {
        kernel: mut kernel_file,
        initrd,
        unpacked,
        ..
    } = files;

    let ram_end = cfg.memory.min(layout::LOW_RAM_END);
    let unpacked = unpacked.and_then(|vmlinux| {
        elf::load_pvh_elf(mem, ram_end, &mut std::io::Cursor::new(vmlinux))
            .inspect_err(|e| {
                tracing::info!(
                    "cannot load the vmlinux unpacked from {kernel_path} ({e}); booting the bzImage instead"
                )
            })
            .ok()
    });
    let kernel = match unpacked {
        Some(k) => k,
        None => loader::load_kernel(mem, ram_end, &mut kernel_file).map_err(load_err)?,
    };
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
