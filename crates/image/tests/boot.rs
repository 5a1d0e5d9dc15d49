//! Boots the real guest image in QEMU (TCG, no KVM needed) and talks to its
//! serial console. Needs `qemu-system-x86_64` (apt-get install -y
//! qemu-system-x86). Each boot is bounded by timeouts and QEMU is killed if
//! anything goes wrong, so these tests cannot hang.

mod common;

use std::time::Duration;

use common::qemu::Qemu;

const READY: &str = "vireo guest ready";
const PROMPT: &str = "vireo:/# ";
const BOOT_TIMEOUT: Duration = Duration::from_secs(40);
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(20);

/// Boots and waits for the interactive shell's prompt.
fn boot_to_shell(extra: &[&str]) -> Qemu {
    let image = common::image("boot-test");
    let mut vm = Qemu::boot(image, extra);
    vm.wait_for(READY, BOOT_TIMEOUT);
    vm.wait_for(PROMPT, Duration::from_secs(10));
    eprintln!(
        "shell prompt after {:.1}s",
        vm.started.elapsed().as_secs_f64()
    );
    vm
}

#[test]
fn shell_works_virtio_modules_load_and_poweroff_exits() {
    let mut vm = boot_to_shell(&["-device", "virtio-rng-pci", "-device", "virtio-balloon-pci"]);
    // Each answer carries a `key=` marker: kernel messages share the
    // console and may land between (or inside) the shell's output lines.
    vm.send(concat!(
        "echo $((6*7)); echo answer=$((6*7)); echo lsmod=$(lsmod | wc -l); ",
        "echo rng=$(cat /sys/class/misc/hw_random/rng_current); ",
        "for m in virtio_pci virtio_net vmw_vsock_virtio_transport; do [ -d /sys/module/$m ] && echo loaded=$m; done; ",
        "echo balloon=$(ls /sys/bus/virtio/drivers/virtio_balloon | grep -c virtio); ",
        "echo host=$(hostname); poweroff\n"
    ));
    let status = vm.wait_exit(SHUTDOWN_TIMEOUT);
    let transcript = vm.transcript();
    let status =
        status.unwrap_or_else(|| panic!("guest did not power off; transcript:\n{transcript}"));
    assert!(
        status.success(),
        "qemu exited with {status}; transcript:\n{transcript}"
    );
    eprintln!(
        "boot + commands + poweroff took {:.1}s",
        vm.started.elapsed().as_secs_f64()
    );

    let console = common::qemu::without_kernel_log(&transcript);
    let values = |key: &str| -> Vec<String> {
        console
            .lines()
            .filter_map(|l| {
                l.trim_end_matches('\r')
                    .strip_prefix(key)?
                    .strip_prefix('=')
            })
            // The echoed command line wraps at 80 columns and may put a
            // `key=$(...)` at a line start too; real values have no `$`.
            .filter(|v| !v.contains('$'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(values("answer"), ["42"], "transcript:\n{transcript}");
    // lsmod prints a header plus one line per module (18 are loaded).
    let lsmod: Vec<usize> = values("lsmod")
        .iter()
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        lsmod.len() == 1 && lsmod[0] >= 15,
        "lsmod {lsmod:?}; transcript:\n{transcript}"
    );
    // The virtio-rng-pci and virtio-balloon-pci devices were bound by their drivers.
    assert_eq!(values("rng"), ["virtio_rng.0"], "transcript:\n{transcript}");
    assert_eq!(values("balloon"), ["1"], "transcript:\n{transcript}");
    assert_eq!(
        values("loaded"),
        ["virtio_pci", "virtio_net", "vmw_vsock_virtio_transport"],
        "transcript:\n{transcript}"
    );
    assert_eq!(values("host"), ["vireo"], "transcript:\n{transcript}");
    assert!(
        !console.contains("insmod"),
        "a module failed to load:\n{transcript}"
    );
    assert!(
        transcript.contains("reboot: Power down"),
        "not a clean power-off:\n{transcript}"
    );
}

#[test]
fn acpi_power_button_powers_off() {
    let mut vm = boot_to_shell(&[]);
    // Ctrl-A c switches QEMU's stdio from the serial port to the monitor.
    vm.send("\x01c");
    vm.wait_for("(qemu)", Duration::from_secs(10));
    vm.send("system_powerdown\n");
    let status = vm.wait_exit(SHUTDOWN_TIMEOUT);
    let transcript = vm.transcript();
    let status =
        status.unwrap_or_else(|| panic!("power button ignored; transcript:\n{transcript}"));
    assert!(
        status.success(),
        "qemu exited with {status}; transcript:\n{transcript}"
    );
    assert!(
        transcript.contains("vireo: poweroff"),
        "acpid handler did not run:\n{transcript}"
    );
    assert!(transcript.contains("reboot: Power down"));
}
