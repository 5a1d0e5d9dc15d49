//! Linux under `--accel emu`: Vireo's own x86-64 emulator boots the stock Debian cloud kernel
//! and the image's busybox initramfs on this machine, with the same machine model and devices
//! as under KVM. The test types commands into the guest's shell and checks the answers
//! against the host; the guest's `poweroff` and `reboot` must each end `vireo run` with
//! status 0.

mod common;

use common::guest::{boot, extract_vmlinux, image, scratch, wait_exit};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

fn host_sha256(data: &[u8]) -> String {
    use std::io::Write;
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn linux_boots_under_the_emulator_computes_and_powers_off() {
    let img = image(&scratch("emu-linux", "poweroff").join("image"));
    let (mut con, mut guard) = boot(&img, "emu", &[]);

    assert_eq!(con.run("uname -m"), "x86_64");
    assert_eq!(con.run("nproc"), "1");

    let expected: String = (1..=20000).map(|i| format!("{i}\n")).collect();
    let sum = con.run("seq 1 20000 > /tmp/f; sha256sum /tmp/f");
    assert!(
        sum.starts_with(&host_sha256(expected.as_bytes())),
        "guest sha256sum: {sum}"
    );

    // Integer and floating-point arithmetic and printf formatting. The image's busybox (Debian's
    // busybox-static) is built without awk's libm support ("Math support is not compiled in"),
    // so sqrt(2) is computed with Newton's method: 8 steps from 1 converge to within an ulp.
    let awk = con.run(
        "awk 'BEGIN { s = 0; for (i = 1; i <= 1000; i++) s += i * i; r = 1; for (i = 0; i < 8; i++) r = (r + 2 / r) / 2; printf \"%d %.6f %.3e\\n\", s, r, 1/3 }'",
    );
    assert_eq!(awk, "333833500 1.414214 3.333e-01");

    let gz = con.run("gzip -c /tmp/f > /tmp/f.gz && gunzip -c /tmp/f.gz | cmp - /tmp/f && echo same; ls -l /tmp/f.gz | awk '{print ($5 < 50000)}'");
    // Lines end in "\r\n" on the serial console (the tty's ONLCR).
    assert_eq!(gz.lines().collect::<Vec<_>>(), ["same", "1"], "{gz:?}");

    assert_eq!(
        con.run("printf '30\\n4\\n200\\n1\\n' | sort -n | tr '\\n' ' '"),
        "1 4 30 200"
    );

    let guest: u64 = con.run("date +%s").parse().expect("date +%s");
    let host = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        guest.abs_diff(host) < 60,
        "guest time {guest} vs host {host}"
    );

    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}

#[test]
fn guest_reboot_ends_vireo_run() {
    let img = image(&scratch("emu-linux", "reboot").join("image"));
    let (mut con, mut guard) = boot(&img, "emu", &[]);
    con.send("reboot");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
}

/// Under the emulator Vireo unpacks the bzImage's payload itself (to skip the interpreted
/// decompressor): on the real Debian kernel the result must be byte for byte what the `lz4`
/// tool makes of it, and an ELF with a PVH entry.
#[test]
fn native_bzimage_unpack_matches_lz4() {
    let img = image(&scratch("emu-linux", "unpack").join("image"));
    let bz = std::fs::read(&img.kernel).unwrap();
    let u = vireo_arch::bzimage::extract_pvh_vmlinux(&bz).expect("unpack the Debian bzImage");
    assert!(matches!(
        u.compression,
        vireo_arch::bzimage::Compression::Lz4Legacy
    ));
    assert_ne!(u.pvh_entry, 0);
    assert!(
        u.vmlinux == extract_vmlinux(&img.kernel),
        "differs from lz4 -dc"
    );
}
