//! Bad input to `vireo run`: each case must fail fast with a non-zero exit code
//! and an error on stderr that names the problem, never a panic.

mod common;

use common::*;
use std::time::Duration;

/// Bad input is rejected before any guest runs, so this is generous.
const ERROR_TIMEOUT: Duration = Duration::from_secs(10);

/// Run `vireo run ARGS`; expect a prompt failure whose stderr mentions one of `keywords`.
fn expect_error(args: &[&str], keywords: &[&str]) {
    let mut full = vec!["run"];
    full.extend_from_slice(args);
    let run = run_vireo(&full, ERROR_TIMEOUT);
    assert!(
        matches!(run.status.code(), Some(c) if c != 0),
        "expected a non-zero exit code (not a signal)\n{}",
        run.dump()
    );
    assert!(
        !run.stderr.contains("panicked"),
        "vireo panicked\n{}",
        run.dump()
    );
    let err = run.stderr.to_lowercase();
    assert!(
        keywords.iter().any(|k| err.contains(&k.to_lowercase())),
        "stderr should mention one of {keywords:?}\n{}",
        run.dump()
    );
}

/// A valid kernel, so that only the option under test is wrong.
fn good_kernel() -> String {
    payload("hello").to_str().unwrap().to_string()
}

#[test]
fn missing_kernel_file() {
    let missing =
        std::env::temp_dir().join(format!("vireo-test-{}-no-such-kernel", std::process::id()));
    expect_error(
        &["--kernel", missing.to_str().unwrap(), "--memory", "64M"],
        &["not found", "no such file", "does not exist"],
    );
}

#[test]
fn kernel_is_not_a_kernel() {
    let junk = TempFile::with_contents("junk-kernel", &pseudo_random_bytes(64 * 1024, 0xbad));
    expect_error(&["--kernel", junk.arg(), "--memory", "64M"], &["kernel"]);
}

#[test]
fn memory_zero() {
    expect_error(&["--kernel", &good_kernel(), "--memory", "0"], &["memory"]);
}

#[test]
fn memory_100t() {
    expect_error(
        &["--kernel", &good_kernel(), "--memory", "100T"],
        &["memory"],
    );
}

#[test]
fn cpus_zero() {
    expect_error(
        &["--kernel", &good_kernel(), "--memory", "64M", "--cpus", "0"],
        &["cpus"],
    );
}

#[test]
fn cpus_1000() {
    expect_error(
        &[
            "--kernel",
            &good_kernel(),
            "--memory",
            "64M",
            "--cpus",
            "1000",
        ],
        &["cpus"],
    );
}

#[test]
fn initrd_larger_than_memory() {
    let initrd = TempFile::sparse("big-initrd", 32 << 20);
    expect_error(
        &[
            "--kernel",
            &good_kernel(),
            "--memory",
            "16M",
            "--initrd",
            initrd.arg(),
        ],
        &["initrd"],
    );
}

/// The emulator runs one vCPU per VM for now: asking for more is refused up front.
#[test]
fn emulator_refuses_smp_clearly() {
    expect_error(
        &[
            "--kernel",
            &good_kernel(),
            "--memory",
            "64M",
            "--accel",
            "emu",
            "--cpus",
            "2",
        ],
        &["--cpus 1"],
    );
}

/// On a host whose /dev/kvm is the nested kvm_pvm, a 64-bit kernel can never run under KVM:
/// `--accel kvm` must say so at once instead of hanging, and `--accel auto` must fall back to
/// the emulator and run it.
#[test]
fn unusable_kvm_for_a_64bit_kernel_is_refused_or_emulated() {
    let k = payload_as("hello", ElfClass::Elf64);
    let run = run_kernel_on(Accel::Auto, &k, MEMORY_ARG, &[]);
    assert!(run.status.success(), "{}", run.dump());
    assert!(
        run.stdout.lines().any(|l| l == "vireo-pvh: hello"),
        "{}",
        run.dump()
    );
    if !kvm_is_pvm() {
        // A KVM with long mode runs the 64-bit guest itself, under both kvm and auto.
        let run = run_kernel_on(Accel::Kvm, &k, MEMORY_ARG, &[]);
        assert!(run.status.success(), "{}", run.dump());
        return;
    }
    expect_error(
        &[
            "--kernel",
            k.to_str().unwrap(),
            "--memory",
            "64M",
            "--accel",
            "kvm",
        ],
        &["kvm_pvm"],
    );
    // And auto did run it on the emulator: the hypervisor CPUID signature is the emulator's.
    let cpuid = payload_as("cpuid", ElfClass::Elf64);
    let run = run_kernel_on(Accel::Auto, &cpuid, MEMORY_ARG, &[]);
    assert!(run.status.success(), "{}", run.dump());
    let hv = run.line("cpuid hv-vendor ");
    assert_eq!(
        hv.split_once(" max-leaf ").map(|(sig, _)| sig),
        Some(Accel::Emu.hypervisor_signature()),
        "--accel auto should have picked the emulator\n{}",
        run.dump()
    );
}
