//! Kernel loaders: the Linux bzImage boot protocol, and ELF images with a PVH entry note
//! (64-bit `vmlinux`, or 32-bit PVH payloads).

use crate::layout::HIMEM_START;
use linux_loader::loader::bootparam::setup_header;
use linux_loader::loader::{BzImage, KernelLoader};
use std::io::{Read, Seek, SeekFrom};
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, ReadVolatile};

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read the kernel: {0}")]
    Io(#[from] std::io::Error),
    #[error("not a kernel image: neither a Linux bzImage (no \"HdrS\" header) nor an ELF file")]
    UnknownFormat,
    #[error("the bzImage is not a 64-bit kernel (xloadflags lacks XLF_KERNEL_64); only x86-64 kernels boot by direct 64-bit entry")]
    Not64Bit,
    #[error("bzImage boot protocol {0:#x} is too old; Vireo needs 2.06 or later")]
    OldProtocol(u16),
    #[error("cannot load the bzImage: {0}")]
    BzImage(String),
    #[error("ELF image: {0}")]
    Elf(String),
    #[error("the ELF image has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY); Vireo boots ELF kernels through PVH")]
    NoPvhNote,
    #[error("kernel segment at {addr:#x}+{len:#x} does not fit in guest memory (low RAM ends at {limit:#x}); give the VM more --memory")]
    DoesNotFit { addr: u64, len: u64, limit: u64 },
}

/// How the vCPU must enter the loaded kernel.
#[derive(Debug, Clone, Copy)]
pub enum Entry {
    /// Linux 64-bit boot protocol: long mode, RSI = zero page, at `startup_64`.
    Linux64 { rip: u64, header: setup_header },
    /// PVH: 32-bit protected mode, paging off, EBX = `hvm_start_info`.
    Pvh { rip: u64 },
}

#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    pub entry: Entry,
    /// First guest address past the kernel image.
    pub end: u64,
    /// The kernel switches to (or starts in) 64-bit long mode.
    pub needs_long_mode: bool,
}

/// A kernel image's format, as its first bytes tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelFormat {
    /// A Linux bzImage (setup header with "HdrS").
    BzImage,
    /// An ELF file; `is64` for ELF64.
    Elf { is64: bool },
}

impl KernelFormat {
    /// Whether a CPU backend must support long mode to run it: the bzImage loader only accepts
    /// 64-bit kernels, and an ELF64 PVH image switches to long mode itself.
    pub fn needs_long_mode(self) -> bool {
        match self {
            KernelFormat::BzImage => true,
            KernelFormat::Elf { is64 } => is64,
        }
    }
}

/// Tells a kernel image's format from its first bytes, leaving the file at its start.
pub fn probe_kernel<F: Read + Seek>(image: &mut F) -> Result<KernelFormat, LoadError> {
    let mut head = [0u8; 0x210];
    image.seek(SeekFrom::Start(0))?;
    let n = read_up_to(image, &mut head)?;
    image.seek(SeekFrom::Start(0))?;
    if n >= 0x206 && &head[0x202..0x206] == b"HdrS" {
        Ok(KernelFormat::BzImage)
    } else if n >= 4 && head[..4] == *b"\x7fELF" {
        Ok(KernelFormat::Elf { is64: head[4] == 2 })
    } else {
        Err(LoadError::UnknownFormat)
    }
}

/// Loads a kernel image of any supported format into guest memory below `ram_end`.
pub fn load_kernel<M: GuestMemoryBackend, F: Read + Seek + ReadVolatile>(
    mem: &M,
    ram_end: u64,
    image: &mut F,
) -> Result<LoadedKernel, LoadError> {
    match probe_kernel(image)? {
        KernelFormat::BzImage => load_bzimage(mem, ram_end, image),
        KernelFormat::Elf { .. } => crate::elf::load_pvh_elf(mem, ram_end, image),
    }
}

fn read_up_to<F: Read>(f: &mut F, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn load_bzimage<M: GuestMemoryBackend, F: Read + Seek + ReadVolatile>(
    mem: &M,
    ram_end: u64,
    image: &mut F,
) -> Result<LoadedKernel, LoadError> {
    const XLF_KERNEL_64: u16 = 1 << 0;
    let res = BzImage::load(mem, None, image, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| LoadError::BzImage(e.to_string()))?;
    let header = res
        .setup_header
        .ok_or_else(|| LoadError::BzImage("no setup header".into()))?;
    let version = header.version;
    if version < 0x0206 {
        return Err(LoadError::OldProtocol(version));
    }
    if header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(LoadError::Not64Bit);
    }
    let load = res.kernel_load.0;
    // The kernel decompresses itself in place and needs init_size bytes from its load address.
    let need = load + u64::from(header.init_size).max(res.kernel_end - load);
    if need > ram_end {
        return Err(LoadError::DoesNotFit {
            addr: load,
            len: need - load,
            limit: ram_end,
        });
    }
    Ok(LoadedKernel {
        // startup_64 sits 0x200 bytes into the protected-mode code (boot protocol 2.06+).
        entry: Entry::Linux64 {
            rip: load + 0x200,
            header,
        },
        end: need,
        needs_long_mode: true,
    })
}

/// Writes `data` at `addr`, refusing anything that would spill past `ram_end`.
pub(crate) fn write_checked<M: GuestMemoryBackend>(
    mem: &M,
    addr: u64,
    data: &[u8],
    ram_end: u64,
) -> Result<(), LoadError> {
    let len = data.len() as u64;
    match addr.checked_add(len) {
        Some(end) if end <= ram_end => mem
            .write_slice(data, GuestAddress(addr))
            .map_err(|e| LoadError::Elf(e.to_string())),
        _ => Err(LoadError::DoesNotFit {
            addr,
            len,
            limit: ram_end,
        }),
    }
}
