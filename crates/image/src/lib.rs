//! vireo-image: builds a ready-to-boot Linux guest (kernel + initramfs,
//! plus an ext4 root disk) from Debian packages only, behind
//! `vireo image build`.
//!
//! The kernel is Debian's cloud kernel (`linux-image-*-cloud-amd64-unsigned`,
//! small and virtio-centric); userspace is a static busybox. Packages are
//! fetched with `apt-get download` into a cache and unpacked in Rust.
//!
//! The guest, booted with e.g. `console=ttyS0`:
//! - `/init` mounts proc, sysfs, devtmpfs and devpts, sets hostname `vireo`,
//!   and `insmod`s the virtio (PCI and MMIO), vsock, ACPI button and evdev
//!   modules ([`GUEST_MODULES`] plus their dependencies, in load order);
//! - starts busybox `acpid`, so an ACPI power button press powers off;
//! - prints `vireo guest ready`, then runs a job-control shell on the
//!   console (prompt `vireo:/# `);
//! - `poweroff`, `reboot`, `halt`, the power button, or leaving the shell
//!   shut the VM down (with `-no-reboot`, QEMU exits).
//!
//! With `root=/dev/XXX` on the command line (e.g. `root=/dev/vda` and
//! `rootfs.ext4` attached as a virtio disk), `/init` loads the modules,
//! mounts that disk read-write and `switch_root`s to it; the disk holds the
//! same tree, whose `/init` then sets up the same shell. If the disk does
//! not show up or mount, it says so and stays on the initramfs.

mod builder;
mod command;
pub mod console;
pub mod cpio;
pub mod deb;
mod error;
mod guest;
pub mod modules;
mod progress;
mod rootfs;

use std::path::PathBuf;

pub use error::ImageError;
pub use guest::GUEST_MODULES;

/// Where to put the image and where to keep downloads between builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Receives `vmlinuz`, `initramfs.cpio.gz` and `rootfs.ext4` (created
    /// if missing).
    pub out_dir: PathBuf,
    /// Holds `debs/` (downloaded packages) and `extract/` (unpacked trees).
    pub cache_dir: PathBuf,
}

/// A built guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuestImage {
    /// The kernel bzImage (`out_dir/vmlinuz`).
    pub kernel: PathBuf,
    /// The gzip-compressed cpio initramfs (`out_dir/initramfs.cpio.gz`).
    pub initrd: PathBuf,
    /// An ext4 root disk (`out_dir/rootfs.ext4`, label `vireo-root`) with
    /// the initramfs' tree and about 55 MiB free, for `root=/dev/vda` with
    /// the file as a virtio-blk disk. Booting writes to it, and rebuilding
    /// replaces it; made with e2fsprogs' mke2fs and debugfs.
    pub rootfs: PathBuf,
    /// Kernel release, e.g. `6.1.0-41-cloud-amd64`.
    pub kernel_version: String,
    /// The extracted `lib/modules/<ver>` tree in the cache, including a
    /// generated `modules.dep`, for tests that need more modules (kvm.ko).
    pub modules_dir: PathBuf,
}

/// Builds the guest image: resolves and downloads the newest cloud kernel
/// and busybox-static, extracts them, and writes kernel, initramfs and root
/// disk to `opts.out_dir`. Progress is printed to stderr.
pub fn build(opts: &BuildOptions) -> Result<GuestImage, ImageError> {
    builder::run(opts)
}
