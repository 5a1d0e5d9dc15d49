//! Thousands of random writes, write-zeroes, discards, reads, flushes and reopenings against
//! a qcow2 image and an in-memory mirror; then the image must read like the mirror, for us
//! and for QEMU (`qemu-img compare`), and `qemu-img check` must find it clean.

mod common;

use common::*;
use std::path::Path;
use vireo_disk::DiskImage;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;

#[derive(Clone, Copy, PartialEq)]
enum Base {
    None,
    /// A raw base, smaller than the image (the rest reads as zeros).
    Raw,
    /// A qcow2 base written by qemu-io.
    Qcow2,
    /// No base, but an internal snapshot taken before the run.
    Snapshot,
}

struct Run {
    dir: TempDir,
    path: std::path::PathBuf,
    cluster: u64,
    v2: bool,
    backing: Vec<u8>,
}

fn setup(name: &str, opts: &str, base: Base) -> Run {
    let dir = TempDir::new(name);
    let path = dir.path("img.qcow2");
    let cluster = opts
        .split(',')
        .find_map(|o| o.strip_prefix("cluster_size="))
        .map(|c| c.parse().unwrap())
        .unwrap_or(65536);
    let v2 = opts.contains("compat=0.10");
    let p = |x: &Path| x.to_str().unwrap().to_string();
    match base {
        Base::None | Base::Snapshot => create(&path, opts, "16M"),
        Base::Raw => {
            let raw = dir.path("base.raw");
            std::fs::write(&raw, pattern(77, 12 * MIB as usize)).unwrap();
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.raw",
                "-F",
                "raw",
                "-o",
                opts,
                &p(&path),
                "16M",
            ]);
        }
        Base::Qcow2 => {
            let q = dir.path("base.qcow2");
            create(&q, "cluster_size=65536", "16M");
            qemu_io(
                &q,
                "qcow2",
                &[
                    "write -q -P 0x5b 0 6M".into(),
                    "write -q -P 0x6c 9M 3M".into(),
                    "write -q -z 1M 1M".into(),
                ],
            );
            qemu_img(&[
                "create",
                "-q",
                "-f",
                "qcow2",
                "-b",
                "base.qcow2",
                "-F",
                "qcow2",
                "-o",
                opts,
                &p(&path),
                "16M",
            ]);
        }
    }
    if base == Base::Snapshot {
        qemu_io(
            &path,
            "qcow2",
            &[
                "write -q -P 0x3c 0 10M".into(),
                "write -q -P 0x4d 2M 1M".into(),
            ],
        );
        qemu_img(&["snapshot", "-c", "snap", &p(&path)]);
    }
    let backing = match base {
        Base::Raw | Base::Qcow2 => {
            // What unallocated clusters show: the image as QEMU reads it before any write.
            qemu_contents(&dir, &path)
        }
        _ => vec![0; SIZE as usize],
    };
    Run {
        dir,
        path,
        cluster,
        v2,
        backing,
    }
}

/// A random range: mostly sector aligned, sometimes any bytes; mostly small, sometimes
/// spanning many clusters.
fn range(rng: &mut Rng, max: u64) -> (u64, u64) {
    let len = match rng.below(10) {
        0 => 1 + rng.below(max),
        1..=3 => 1 + rng.below(8192),
        _ => 512 * (1 + rng.below(max / 512)),
    };
    let len = len.min(SIZE);
    let mut off = rng.below(SIZE - len + 1);
    if rng.below(4) != 0 {
        off &= !511;
    }
    (off, len)
}

fn random_run(name: &str, opts: &str, base: Base, seed: u64, ops: usize) {
    random_run_cached(name, opts, base, seed, ops, None)
}

/// `cache`: the number of L2 tables and refcount blocks to cache, if not the default.
fn random_run_cached(
    name: &str,
    opts: &str,
    base: Base,
    seed: u64,
    ops: usize,
    cache: Option<usize>,
) {
    let run = setup(name, opts, base);
    let mut mirror = qemu_contents(&run.dir, &run.path);
    let snapshot = mirror.clone();
    let mut rng = Rng::new(seed);
    let reopen = || {
        let img = open(&run.path);
        if let Some(n) = cache {
            img.set_cache_size(n, n).unwrap();
        }
        img
    };
    let mut img = reopen();
    let cs = run.cluster;
    for op in 0..ops {
        let (off, len) = range(&mut rng, 512 * 1024);
        let (o, l) = (off as usize, len as usize);
        let ctx = || format!("{name} seed {seed} op {op}: {len} bytes at {off:#x}");
        match rng.below(100) {
            0..=44 => {
                let data = rng.bytes(l);
                img.write_at(&data, off)
                    .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                mirror[o..o + l].copy_from_slice(&data);
            }
            45..=59 => {
                let unmap = rng.below(2) == 0;
                img.write_zeroes(off, len, unmap)
                    .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                mirror[o..o + l].fill(0);
            }
            60..=69 => {
                img.discard(off, len)
                    .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                // Whole clusters go: zeros, or the backing file's data in a v2 image.
                let first = off.div_ceil(cs) * cs;
                let end = (off + len) / cs * cs;
                if first < end {
                    let (a, b) = (first as usize, end as usize);
                    if run.v2 {
                        mirror[a..b].copy_from_slice(&run.backing[a..b]);
                    } else {
                        mirror[a..b].fill(0);
                    }
                }
            }
            70..=94 => {
                let mut got = vec![0u8; l];
                img.read_at(&mut got, off)
                    .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                assert_same(&ctx(), &got, &mirror[o..o + l]);
            }
            95..=97 => img.flush().unwrap(),
            _ => {
                drop(img);
                img = reopen();
            }
        }
    }
    assert_same(&format!("{name}: final read"), &our_contents(&img), &mirror);
    drop(img);
    check_clean(&run.path);
    let raw = run.dir.path("mirror.raw");
    std::fs::write(&raw, &mirror).unwrap();
    qemu_img(&[
        "compare",
        "-f",
        "qcow2",
        "-F",
        "raw",
        run.path.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    if base == Base::Snapshot {
        qemu_img(&["snapshot", "-a", "snap", run.path.to_str().unwrap()]);
        check_clean(&run.path);
        assert_same(
            "the snapshot",
            &qemu_contents(&run.dir, &run.path),
            &snapshot,
        );
    }
}

#[test]
fn random_v3_64k() {
    random_run("v3-64k", "compat=1.1", Base::None, 1, 3000);
}

#[test]
fn random_v3_4k_over_raw() {
    random_run(
        "v3-4k-raw",
        "compat=1.1,cluster_size=4096",
        Base::Raw,
        2,
        3000,
    );
}

#[test]
fn random_v3_512_over_qcow2() {
    random_run(
        "v3-512-qcow2",
        "compat=1.1,cluster_size=512",
        Base::Qcow2,
        3,
        2000,
    );
}

#[test]
fn random_v2_64k_over_raw() {
    random_run("v2-64k-raw", "compat=0.10", Base::Raw, 4, 3000);
}

#[test]
fn random_v2_4k() {
    random_run(
        "v2-4k",
        "compat=0.10,cluster_size=4096",
        Base::None,
        5,
        3000,
    );
}

#[test]
fn random_v3_2m() {
    random_run(
        "v3-2m",
        "compat=1.1,cluster_size=2097152",
        Base::None,
        6,
        1500,
    );
}

#[test]
fn random_with_a_snapshot() {
    random_run(
        "snap",
        "compat=1.1,cluster_size=16384",
        Base::Snapshot,
        7,
        3000,
    );
}

#[test]
fn random_v2_with_a_snapshot() {
    random_run("v2-snap", "compat=0.10", Base::Snapshot, 8, 2000);
}

#[test]
fn random_with_tiny_caches() {
    // Two cached tables: dirty L2 tables are evicted (and written back) all the time.
    random_run_cached(
        "tiny-cache",
        "compat=1.1,cluster_size=4096",
        Base::Raw,
        9,
        3000,
        Some(2),
    );
    random_run_cached(
        "tiny-cache-512",
        "compat=1.1,cluster_size=512",
        Base::Snapshot,
        10,
        1500,
        Some(1),
    );
}
