//! Images we cannot serve are refused with a message that names the feature and the
//! command that converts or repairs the image.

mod common;

use common::*;
use std::path::Path;
use vireo_disk::{DiskImage, OpenError, Qcow2};

fn refusal(path: &Path, readonly: bool) -> String {
    match Qcow2::open(path, readonly) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(e) => e.to_string(),
    }
}

fn set_incompatible(path: &Path, bits: u64) {
    let mut b = std::fs::read(path).unwrap();
    let v = u64::from_be_bytes(b[72..80].try_into().unwrap()) | bits;
    b[72..80].copy_from_slice(&v.to_be_bytes());
    std::fs::write(path, b).unwrap();
}

#[test]
fn features_we_do_not_serve_are_refused_with_a_fix() {
    let dir = TempDir::new("refuse");
    let p = |n: &str| dir.path(n);
    let make = |name: &str, opts: &str| {
        let path = p(name);
        create(&path, opts, "1M");
        path
    };
    let cases: Vec<(std::path::PathBuf, &[&str])> = vec![
        (
            make("extl2.qcow2", "extended_l2=on"),
            &["extended L2", "extended_l2=off"],
        ),
        (
            make(
                "data.qcow2",
                &format!("data_file={}", p("data.raw").display()),
            ),
            &["external data file", "qemu-img convert"],
        ),
        (
            make("rc8.qcow2", "refcount_bits=8"),
            &["refcount_bits=8", "qemu-img amend", "refcount_bits=16"],
        ),
        (
            make("zstd.qcow2", "compression_type=zstd"),
            &["zstd", "compression_type=zlib"],
        ),
    ];
    for (path, words) in &cases {
        let e = refusal(path, false);
        for w in *words {
            assert!(e.contains(w) && e.contains(path.to_str().unwrap()), "{e}");
        }
    }

    // An encrypted image, by its header's crypt_method (2 = LUKS): `qemu-img create` with LUKS
    // times its key derivation by CPU usage, which fails on a loaded machine.
    let enc = make("enc.qcow2", "");
    let mut b = std::fs::read(&enc).unwrap();
    b[32..36].copy_from_slice(&2u32.to_be_bytes());
    std::fs::write(&enc, b).unwrap();
    let e = refusal(&enc, true);
    assert!(
        e.contains("encryption") && e.contains("qemu-img convert"),
        "{e}"
    );

    // An incompatible feature from the future, named by the image's feature table or not.
    let future = make("future.qcow2", "");
    set_incompatible(&future, 1 << 40);
    let e = refusal(&future, true);
    assert!(
        e.contains("incompatible feature bit 40") && e.contains("qemu-img convert"),
        "{e}"
    );

    let corrupt = make("corrupt.qcow2", "");
    set_incompatible(&corrupt, 2);
    let e = refusal(&corrupt, true);
    assert!(
        e.contains("corrupt") && e.contains("qemu-img check -r all"),
        "{e}"
    );

    let raw = p("plain.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let e = refusal(&raw, false);
    assert!(e.contains("qcow2 magic") && e.contains("raw"), "{e}");
    assert!(matches!(
        Qcow2::open(&raw, false),
        Err(OpenError::Invalid { .. })
    ));
}

#[test]
fn a_dirty_image_is_read_only_until_repaired() {
    let dir = TempDir::new("dirty");
    let path = dir.path("lazy.qcow2");
    create(&path, "lazy_refcounts=on", "1M");
    qemu_write(&path, 0x77, 0, 4096);
    set_incompatible(&path, 1);
    let e = refusal(&path, false);
    assert!(
        e.contains("dirty") && e.contains("qemu-img check -r all"),
        "{e}"
    );
    // Reading needs no refcounts.
    let img = Qcow2::open(&path, true).unwrap();
    let mut b = vec![0u8; 4096];
    img.read_at(&mut b, 0).unwrap();
    assert!(b.iter().all(|&x| x == 0x77));
    drop(img);
    qemu_img(&["check", "-q", "-r", "all", path.to_str().unwrap()]);
    let img = open(&path);
    img.write_at(&[1; 512], 8192).unwrap();
}

#[test]
fn writing_clears_autoclear_features_we_do_not_maintain() {
    // A persistent dirty bitmap: we do not update it, so its autoclear bit goes, and QEMU
    // then ignores the bitmap rather than trusting it for an incremental backup.
    let dir = TempDir::new("bitmap");
    let path = dir.path("bm.qcow2");
    create(&path, "", "1M");
    qemu_img(&["bitmap", "--add", path.to_str().unwrap(), "b0"]);
    let autoclear = |p: &Path| {
        let b = std::fs::read(p).unwrap();
        u64::from_be_bytes(b[88..96].try_into().unwrap())
    };
    assert_eq!(autoclear(&path), 1);
    drop(Qcow2::open(&path, true).unwrap());
    assert_eq!(autoclear(&path), 1, "a reader changes nothing");
    let img = open(&path);
    img.write_at(&[9; 4096], 0).unwrap();
    drop(img);
    assert_eq!(autoclear(&path), 0);
    qemu_verify(&path, 9, 0, 4096);
    // The stale bitmap's clusters are leaked (as when any QEMU that predates bitmaps writes
    // the image): no harm to data, and `qemu-img check -r leaks` reclaims them.
    let out = std::process::Command::new("qemu-img")
        .args(["check", path.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "leaks only:\n{text}");
    qemu_img(&["check", "-q", "-r", "leaks", path.to_str().unwrap()]);
    check_clean(&path);
}
