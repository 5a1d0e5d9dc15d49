//! Backing chains: reads fall through to the backing files, writes land in the top image
//! only, and the chain is found, probed, locked and bounded like QEMU does.

mod common;

use common::*;
use std::path::Path;
use vireo_disk::{DiskImage, OpenError, Qcow2};

const MIB: u64 = 1 << 20;

fn create_over(top: &Path, base: &str, base_fmt: &str, opts: &str, size: &str) {
    let o = if opts.is_empty() {
        String::new()
    } else {
        format!(",{opts}")
    };
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base,
        "-F",
        base_fmt,
        "-o",
        &format!("compat=1.1{o}"),
        top.to_str().unwrap(),
        size,
    ]);
}

#[test]
fn a_raw_base_is_read_through_and_left_unchanged() {
    for opts in ["", "cluster_size=4096", "compat=0.10"] {
        let dir = TempDir::new("raw-base");
        let base = dir.path("base.raw");
        let top = dir.path("top.qcow2");
        let base_data = pattern(1, 4 * MIB as usize);
        std::fs::write(&base, &base_data).unwrap();
        // Relative to the top image's directory, as QEMU resolves it.
        create_over(&top, "base.raw", "raw", opts, "4M");
        let mut want = base_data.clone();
        {
            let img = open(&top);
            assert_eq!(img.info().backing_format.as_deref(), Some("raw"));
            assert_same("reads come from the base", &our_contents(&img), &want);
            // Partial clusters are completed from the base.
            let w = pattern(2, 5000);
            img.write_at(&w, 70_000).unwrap();
            want[70_000..75_000].copy_from_slice(&w);
            img.write_zeroes(MIB, 3 * 65536 + 512, true).unwrap();
            want[MIB as usize..(MIB + 3 * 65536 + 512) as usize].fill(0);
            img.write_zeroes(2 * MIB + 100, 1000, false).unwrap();
            want[(2 * MIB + 100) as usize..(2 * MIB + 1100) as usize].fill(0);
            assert_same("after writes", &our_contents(&img), &want);
            // A discard frees whole clusters; what they read then depends on the version
            // (v3: zeros, v2: the base again), partial clusters keep their data.
            img.discard(3 * MIB, MIB).unwrap();
            let mut d = vec![0u8; MIB as usize];
            img.read_at(&mut d, 3 * MIB).unwrap();
            let expect = if opts.contains("0.10") {
                &base_data[3 * MIB as usize..]
            } else {
                &want[..0]
            };
            if expect.is_empty() {
                assert!(d.iter().all(|&b| b == 0), "{opts}: v3 discard reads zeros");
            } else {
                assert_same("v2 discard shows the base", &d, expect);
            }
            want[3 * MIB as usize..].copy_from_slice(&d);
        }
        check_clean(&top);
        assert_same(
            &format!("{opts}: QEMU's view"),
            &qemu_contents(&dir, &top),
            &want,
        );
        assert_same(
            "the base is untouched",
            &std::fs::read(&base).unwrap(),
            &base_data,
        );
    }
}

#[test]
fn a_qcow2_chain_reads_through_every_layer_and_writes_the_top() {
    let dir = TempDir::new("chain");
    let base = dir.path("base.qcow2");
    let mid = dir.path("mid.qcow2");
    let top = dir.path("top.qcow2");
    create(&base, "cluster_size=4096", "4M");
    qemu_io(
        &base,
        "qcow2",
        &[
            "write -q -c -P 0x12 1M 64k".into(),
            "write -q -P 0x11 0 1M".into(),
            "write -q -P 0x11 1088k 2M".into(),
        ],
    );
    create_over(
        &mid,
        base.to_str().unwrap(),
        "qcow2",
        "cluster_size=65536",
        "4M",
    );
    qemu_io(
        &mid,
        "qcow2",
        &[
            "write -q -P 0x22 512k 1M".into(),
            "write -q -z 2M 64k".into(),
        ],
    );
    // The top is larger than its backing file: the rest reads as zeros.
    create_over(&top, "mid.qcow2", "qcow2", "cluster_size=512", "6M");
    let files = |p: &Path| std::fs::read(p).unwrap();
    let (base_bytes, mid_bytes) = (files(&base), files(&mid));
    let mut want = qemu_contents(&dir, &top);
    assert_eq!(want.len(), 6 * MIB as usize);
    {
        let img = open(&top);
        assert_same("three layers", &our_contents(&img), &want);
        for (i, (off, len)) in [
            (1000u64, 3000usize),
            (4 * MIB - 256, 1024),
            (2 * MIB, 70_000),
        ]
        .into_iter()
        .enumerate()
        {
            let w = pattern(i as u64 + 7, len);
            img.write_at(&w, off).unwrap();
            want[off as usize..off as usize + len].copy_from_slice(&w);
        }
        assert_same("after writes", &our_contents(&img), &want);
    }
    check_clean(&top);
    assert_same("QEMU's view", &qemu_contents(&dir, &top), &want);
    assert!(files(&base) == base_bytes, "the base changed");
    assert!(files(&mid) == mid_bytes, "the middle layer changed");
}

/// Hides an image's backing format extension (its type becomes an unknown one), as in
/// images made before QEMU recorded it.
fn strip_backing_format(path: &Path) {
    let mut b = std::fs::read(path).unwrap();
    let at = b
        .windows(4)
        .take(4096)
        .position(|w| w == [0xe2, 0x79, 0x2a, 0xca])
        .expect("a backing format extension");
    b[at..at + 4].copy_from_slice(&[0x7e, 0x57, 0x00, 0x01]);
    std::fs::write(path, b).unwrap();
}

#[test]
fn without_a_recorded_format_the_backing_file_is_probed() {
    let dir = TempDir::new("probe");
    let raw = dir.path("base.raw");
    let q = dir.path("base.qcow2");
    std::fs::write(&raw, pattern(4, MIB as usize)).unwrap();
    create(&q, "", "1M");
    qemu_write(&q, 0x44, 0, 65536);
    for (base, fmt) in [(&raw, "raw"), (&q, "qcow2")] {
        let top = dir.path(&format!("top-{fmt}.qcow2"));
        create_over(&top, base.to_str().unwrap(), fmt, "", "1M");
        let want = qemu_contents(&dir, &top);
        strip_backing_format(&top);
        let img = open(&top);
        assert_eq!(img.info().backing_format, None);
        assert_same(fmt, &our_contents(&img), &want);
    }
}

#[test]
fn backing_files_are_shared_locked_and_chains_are_bounded() {
    let dir = TempDir::new("lock");
    let base = dir.path("base.raw");
    std::fs::write(&base, vec![1u8; 65536]).unwrap();
    let (a, b) = (dir.path("a.qcow2"), dir.path("b.qcow2"));
    create_over(&a, "base.raw", "raw", "", "64K");
    create_over(&b, "base.raw", "raw", "", "64K");
    let ia = open(&a);
    let ib = open(&b); // two overlays share their base
    match Qcow2::open(&a, false) {
        Err(e @ OpenError::Locked { .. }) => assert!(e.to_string().contains("in use"), "{e}"),
        other => panic!("a second writer: {:?}", other.err()),
    }
    assert!(Qcow2::open(&a, true).is_err(), "a reader while written");
    // The base cannot be opened for writing while overlays read it.
    assert!(matches!(
        vireo_disk::Qcow2::open(&base, false),
        Err(OpenError::Locked { .. })
    ));
    drop((ia, ib));

    // An image that is its own backing file: read-write, the lock catches it; read-only,
    // the depth bound does.
    let selfish = dir.path("self.qcow2");
    create(&selfish, "", "64K");
    qemu_img(&[
        "rebase",
        "-u",
        "-f",
        "qcow2",
        "-b",
        "self.qcow2",
        "-F",
        "qcow2",
        selfish.to_str().unwrap(),
    ]);
    let e = Qcow2::open(&selfish, false).err().unwrap();
    assert!(matches!(e, OpenError::Locked { .. }), "{e}");
    let e = Qcow2::open(&selfish, true).err().unwrap().to_string();
    assert!(
        e.contains("deeper than 16") && e.contains("qemu-img convert"),
        "{e}"
    );

    // A missing backing file is named.
    let orphan = dir.path("orphan.qcow2");
    std::fs::write(dir.path("gone.raw"), [0u8; 512]).unwrap();
    create_over(&orphan, "gone.raw", "raw", "", "64K");
    std::fs::remove_file(dir.path("gone.raw")).unwrap();
    let e = Qcow2::open(&orphan, true).err().unwrap();
    assert!(e.path().ends_with("gone.raw"), "{e}");
    assert!(e.to_string().contains("No such file"), "{e}");
}

#[test]
fn backing_formats_other_than_raw_and_qcow2_are_refused() {
    let dir = TempDir::new("vmdk");
    let base = dir.path("base.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", base.to_str().unwrap(), "1M"]);
    let top = dir.path("top.qcow2");
    create_over(&top, "base.vmdk", "vmdk", "", "1M");
    let e = Qcow2::open(&top, false).err().unwrap().to_string();
    assert!(
        e.contains("\"vmdk\"") && e.contains("qemu-img convert"),
        "{e}"
    );
}
