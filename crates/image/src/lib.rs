//! vireo-image: builds a ready-to-boot Linux guest (kernel + initramfs)
//! from Debian packages only, behind `vireo image build`.
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

mod builder;
mod command;
pub mod cpio;
pub mod deb;
mod error;
mod guest;
pub mod modules;
mod progress;

use std::path::PathBuf;

pub use error::ImageError;
pub use guest::GUEST_MODULES;

/// Where to put the image and where to keep downloads between builds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Receives `vmlinuz` and `initramfs.cpio.gz` (created if missing).
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
    /// Kernel release, e.g. `6.1.0-41-cloud-amd64`.
    pub kernel_version: String,
    /// The extracted `lib/modules/<ver>` tree in the cache, including a
    /// generated `modules.dep`, for tests that need more modules (kvm.ko).
    pub modules_dir: PathBuf,
}

/// Builds the guest image: resolves and downloads the newest cloud kernel
/// and busybox-static, extracts them, and writes kernel and initramfs to
/// `opts.out_dir`. Progress is printed to stderr.
pub fn build(opts: &BuildOptions) -> Result<GuestImage, ImageError> {
    builder::run(opts)
}
