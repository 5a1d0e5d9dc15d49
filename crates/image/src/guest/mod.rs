//! What goes into the guest (the initramfs, and the same tree on the root
//! disk): busybox and its applet links, /init, the ACPI power-button wiring
//! and the virtio kernel modules.

use std::path::Path;
use std::process::Command;

use crate::command::output;
use crate::cpio::Archive;
use crate::modules::{module_name, read_module, ModulesDep};
use crate::ImageError;

/// Modules the guest loads at boot, before dependency resolution adds
/// whatever these need. `button` + `evdev` make the ACPI power button show
/// up as /dev/input/event*, which is what busybox acpid listens to.
/// `virtio_mmio` is for VMMs that describe virtio devices via ACPI instead of PCI.
pub const GUEST_MODULES: &[&str] = &[
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "virtio_mmio",
    "virtio_blk",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_rng",
    "virtio_console",
    "virtio_balloon",
    "vsock",
    "vmw_vsock_virtio_transport_common",
    "vmw_vsock_virtio_transport",
    "button",
    "evdev",
];

const INIT_SCRIPT: &str = include_str!("init.sh");

/// busybox acpid's action file: `<event key> <handler path under /etc/acpi>`.
/// Its built-in event map turns evdev KEY_POWER into "button/power PWRF ...",
/// which this line maps to the handler script.
const ACPID_CONF: &str = "PWRF PWRF/00000080\n";
/// Run (directly, so it needs the #!) by acpid on a power button press.
/// Plain `poweroff` signals PID 1, which shuts down like for a typed poweroff.
const POWER_BUTTON_HANDLER: &str = "#!/bin/sh\nexec poweroff\n";

const PROFILE: &str = "export PATH=/bin:/sbin:/usr/bin:/usr/sbin\nexport PS1='\\h:\\w\\$ '\n";

/// Used only if the host cannot run the extracted busybox (e.g. a non-x86
/// build host): the applets the guest's own scripts and a user need most.
const FALLBACK_APPLETS: &[&str] = &[
    "sh",
    "ash",
    "mount",
    "umount",
    "mkdir",
    "insmod",
    "rmmod",
    "lsmod",
    "modprobe",
    "cat",
    "echo",
    "ls",
    "poweroff",
    "reboot",
    "halt",
    "nproc",
    "awk",
    "sha256sum",
    "gzip",
    "gunzip",
    "sort",
    "date",
    "uname",
    "dmesg",
    "sleep",
    "head",
    "tail",
    "grep",
    "sed",
    "dd",
    "cp",
    "mv",
    "rm",
    "sync",
    "seq",
    "wc",
    "tr",
    "ip",
    "ifconfig",
    "setsid",
    "cttyhack",
    "acpid",
    "free",
    "top",
    "ps",
    "kill",
    "find",
    "chmod",
    "ln",
    "mknod",
    "hostname",
    "stty",
    "test",
    "[",
    "true",
    "false",
    "env",
    "printf",
    "md5sum",
    "cmp",
    "od",
    "hexdump",
    "vi",
    "more",
];

/// A module file to ship, already decompressed.
pub struct GuestModule {
    /// Path relative to lib/modules/<ver>/, always ending in `.ko`.
    pub path: String,
    pub data: Vec<u8>,
    /// Transitive dependencies (same path form), nearest first (depmod style).
    pub deps: Vec<String>,
}

/// Everything needed to assemble the initramfs.
pub struct GuestInputs<'a> {
    pub busybox: &'a [u8],
    /// Applet link paths relative to `/`, e.g. `bin/sh`, `usr/bin/awk`.
    pub applets: &'a [String],
    pub kernel_version: &'a str,
    /// Modules in load order.
    pub modules: &'a [GuestModule],
}

/// Lists busybox applets as paths (`bin/sh`, `sbin/acpid`, ...) by running
/// the extracted static binary with `--list-full`.
pub fn busybox_applets(busybox: &Path) -> Vec<String> {
    let hint = "the busybox-static binary is x86-64; building on another architecture uses a fallback applet list";
    match output(Command::new(busybox).arg("--list-full"), hint) {
        Ok(text) => text
            .lines()
            .map(|l| l.trim().trim_start_matches('/'))
            .filter(|l| {
                !l.is_empty() && !l.split('/').any(|c| c.is_empty() || c == ".." || c == ".")
            })
            .map(str::to_string)
            .collect(),
        Err(e) => {
            tracing::warn!(error = %e, "cannot list busybox applets; using a fallback list");
            FALLBACK_APPLETS
                .iter()
                .map(|a| format!("bin/{a}"))
                .collect()
        }
    }
}

/// Picks the guest modules from a kernel module tree, in load order.
/// Wanted modules this kernel does not have as files are reported via
/// tracing: they are fine if built in (listed in modules.builtin).
pub fn select_modules(modules_dir: &Path, md: &ModulesDep) -> Result<Vec<GuestModule>, ImageError> {
    let resolved = md.resolve(GUEST_MODULES);
    let builtin = std::fs::read_to_string(modules_dir.join("modules.builtin")).unwrap_or_default();
    for name in &resolved.missing {
        if builtin.lines().any(|l| module_name(l) == module_name(name)) {
            tracing::debug!(module = %name, "built into the kernel");
        } else {
            tracing::warn!(module = %name, "module not found in the kernel package; skipping");
        }
    }
    resolved
        .load_order
        .iter()
        .map(|rel| {
            let deps = md
                .dependencies_of(rel)
                .iter()
                .rev()
                .map(|d| ko_path(d))
                .collect();
            Ok(GuestModule {
                path: ko_path(rel),
                data: read_module(&modules_dir.join(rel))?,
                deps,
            })
        })
        .collect()
}

/// `foo.ko.xz` -> `foo.ko`: modules are stored decompressed.
fn ko_path(rel: &str) -> String {
    match rel.find(".ko.") {
        Some(i) => format!("{}.ko", &rel[..i]),
        None => rel.to_string(),
    }
}

/// Builds the initramfs archive.
pub fn assemble(inputs: &GuestInputs<'_>) -> Archive {
    let mut a = Archive::new();
    for dir in [
        "bin", "sbin", "usr/bin", "usr/sbin", "dev", "proc", "sys", "run", "etc", "var/log", "lib",
    ] {
        a.add_dir(dir, 0o755);
    }
    a.add_dir("root", 0o700).add_dir("tmp", 0o1777);
    a.add_symlink("var/run", "/run");
    // The kernel opens /dev/console for init's stdio before /init runs,
    // i.e. before devtmpfs is mounted, so the node must be in the archive.
    a.add_char_dev("dev/console", 0o600, 5, 1);

    a.add_file("bin/busybox", 0o755, inputs.busybox);
    for applet in inputs.applets {
        if applet != "bin/busybox" && !a.contains(applet) {
            a.add_symlink(applet, "/bin/busybox");
        }
    }

    a.add_file("init", 0o755, INIT_SCRIPT.as_bytes());
    a.add_file("etc/hostname", 0o644, b"vireo\n");
    a.add_file("etc/passwd", 0o644, b"root:x:0:0:root:/root:/bin/sh\n");
    a.add_file("etc/group", 0o644, b"root:x:0:\n");
    a.add_file("etc/profile", 0o644, PROFILE.as_bytes());
    a.add_file("etc/acpid.conf", 0o644, ACPID_CONF.as_bytes());
    a.add_file(
        "etc/acpi/PWRF/00000080",
        0o755,
        POWER_BUTTON_HANDLER.as_bytes(),
    );

    let moddir = format!("lib/modules/{}", inputs.kernel_version);
    a.add_dir(&moddir, 0o755);
    let mut load_list = String::new();
    let mut modules_dep = String::new();
    for m in inputs.modules {
        a.add_file(&format!("{moddir}/{}", m.path), 0o644, &m.data);
        load_list.push_str(&format!("/{moddir}/{}\n", m.path));
        modules_dep.push_str(&format!("{}:", m.path));
        for d in &m.deps {
            modules_dep.push_str(&format!(" {d}"));
        }
        modules_dep.push('\n');
    }
    // A modules.dep for just the shipped modules lets `modprobe` work too.
    a.add_file(
        &format!("{moddir}/modules.dep"),
        0o644,
        modules_dep.as_bytes(),
    );
    a.add_file("etc/vireo/modules", 0o644, load_list.as_bytes());
    a
}

#[cfg(test)]
mod tests;
