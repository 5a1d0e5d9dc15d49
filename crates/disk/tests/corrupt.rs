//! Corrupted images: random bytes and hostile values in the header, the L1 and refcount
//! tables, refcount blocks and L2 tables. Opening may fail and I/O may fail, but nothing
//! panics, allocates without bound or runs away.

mod common;

use common::*;
use std::path::Path;
use std::time::{Duration, Instant};
use vireo_disk::{DiskImage, Qcow2};

fn be64(b: &[u8], at: usize) -> u64 {
    b.get(at..at + 8)
        .map(|s| u64::from_be_bytes(s.try_into().unwrap()))
        .unwrap_or(0)
}

/// A small image with a bit of everything: data, zero and compressed clusters, several L2
/// tables and a snapshot.
fn source(dir: &TempDir, opts: &str) -> Vec<u8> {
    let path = dir.path("src.qcow2");
    create(&path, opts, "4M");
    qemu_io(
        &path,
        "qcow2",
        &[
            "write -q -c -P 0x21 3M 64k".into(),
            "write -q -P 0x11 0 1M".into(),
            "write -q -P 0x12 2M 512k".into(),
            "write -q -z 2M 4k".into(),
        ],
    );
    qemu_img(&["snapshot", "-c", "s", path.to_str().unwrap()]);
    qemu_write(&path, 0x13, 4096, 8192);
    std::fs::read(&path).unwrap()
}

/// The byte ranges worth corrupting: the header cluster, L1 table, refcount table, first
/// refcount block, first L2 table.
fn regions(img: &[u8], cluster: usize) -> Vec<(usize, usize)> {
    let l1 = be64(img, 40) as usize;
    let rt = be64(img, 48) as usize;
    let block = (be64(img, rt) & !0x1ff) as usize;
    let l2 = (be64(img, l1) & 0x00ff_ffff_ffff_fe00) as usize;
    vec![
        (0, 512),
        (l1, 64),
        (rt, 64),
        (block, cluster.min(4096)),
        (l2, cluster.min(4096)),
        (0, img.len()),
    ]
}

fn mutate(img: &mut [u8], regions: &[(usize, usize)], rng: &mut Rng) {
    let len = img.len();
    let (start, size) = regions[rng.below(regions.len() as u64) as usize];
    let size = size.max(8);
    for _ in 0..1 + rng.below(6) {
        let at = (start + rng.below(size as u64) as usize).min(len.saturating_sub(8));
        if rng.below(2) == 0 {
            img[at] = rng.next() as u8;
        } else {
            // Hostile 8-byte values, aligned like table entries.
            let at = at & !7;
            let v = match rng.below(8) {
                0 => u64::MAX,
                1 => 1 << 63,
                2 => (1 << 63) | (1 << 62) | rng.below(1 << 40),
                3 => (1 << 63) | (len as u64 & !0x1ff),
                4 => 1 << 63 | 0x200,
                5 => rng.below(len as u64 * 2) & !0x1ff,
                6 => 0,
                _ => rng.next(),
            };
            img[at..at + 8].copy_from_slice(&v.to_be_bytes());
        }
    }
}

/// Exercises an opened image; errors are fine, panics are not.
fn exercise(img: &Qcow2, rng: &mut Rng) {
    let size = img.size();
    let span = size.min(8 << 20);
    let mut buf = vec![0u8; 256 * 1024];
    for _ in 0..12 {
        let len = 1 + rng.below(buf.len() as u64);
        let off = rng.below(span);
        let b = &mut buf[..len as usize];
        let _ = match rng.below(5) {
            0 | 1 => img.read_at(b, off),
            2 => img.write_at(b, off),
            3 => img.write_zeroes(off, len, rng.below(2) == 0),
            _ => img.discard(off, len),
        };
    }
    let _ = img.flush();
}

fn fuzz(opts: &str, seed: u64, rounds: usize) {
    let dir = TempDir::new("corrupt");
    let cluster = opts
        .split(',')
        .find_map(|o| o.strip_prefix("cluster_size="))
        .map(|c| c.parse().unwrap())
        .unwrap_or(65536);
    let clean = source(&dir, opts);
    let regions = regions(&clean, cluster);
    let path = dir.path("bad.qcow2");
    let mut rng = Rng::new(seed);
    let (mut opened, mut refused) = (0, 0);
    for round in 0..rounds {
        let mut img = clean.clone();
        mutate(&mut img, &regions, &mut rng);
        std::fs::write(&path, &img).unwrap();
        let started = Instant::now();
        match Qcow2::open(&path, rng.below(4) == 0) {
            Ok(q) => {
                opened += 1;
                exercise(&q, &mut rng);
            }
            Err(e) => {
                refused += 1;
                assert!(!e.to_string().is_empty());
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "round {round} (seed {seed}) took {:?}",
            started.elapsed()
        );
        check_file_is_bounded(&path, img.len());
    }
    eprintln!("{opts}: {opened} opened, {refused} refused");
    // Both paths were taken: the corruption is neither always fatal nor always ignored.
    assert!(
        opened > rounds / 10 && refused > 0,
        "{opened} opened, {refused} refused"
    );
}

/// Writes to a corrupted image may grow it, but not without bound.
fn check_file_is_bounded(path: &Path, before: usize) {
    let len = std::fs::metadata(path).unwrap().len();
    assert!(
        len < before as u64 + (64 << 20),
        "a corrupted image grew from {before} to {len} bytes"
    );
}

#[test]
fn corrupted_v3_images_never_panic() {
    fuzz("compat=1.1,cluster_size=4096", 11, 1500);
}

#[test]
fn corrupted_v2_images_never_panic() {
    fuzz("compat=0.10,cluster_size=512", 12, 1000);
}

#[test]
fn corrupted_64k_images_never_panic() {
    fuzz("compat=1.1", 13, 1000);
}
