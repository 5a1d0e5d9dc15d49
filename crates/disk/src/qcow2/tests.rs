//! Unit tests on images built here byte by byte (the QEMU-made ones are in tests/).

use super::cache::TableCache;
use super::map::Mapping;
use super::*;
use crate::DiskImage;
use std::sync::atomic::{AtomicUsize, Ordering};

struct Temp(PathBuf);

impl Temp {
    fn new(name: &str, bytes: &[u8]) -> Temp {
        static N: AtomicUsize = AtomicUsize::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!(
            "vireo-disk-unit-{}-{n}-{name}.qcow2",
            std::process::id()
        ));
        std::fs::write(&p, bytes).unwrap();
        Temp(p)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

/// A minimal empty v3 image: header, refcount table, refcount block, L1 table, one cluster
/// each, all counted.
fn build(bits: u32, size: u64) -> Vec<u8> {
    let cs = 1usize << bits;
    let mut b = vec![0u8; 4 * cs];
    b[..4].copy_from_slice(&MAGIC);
    put32(&mut b, 4, 3);
    put32(&mut b, 20, bits);
    put64(&mut b, 24, size);
    let l1 = size.div_ceil(cs as u64).div_ceil(cs as u64 / 8);
    assert!(l1 * 8 <= cs as u64);
    put32(&mut b, 36, l1 as u32);
    put64(&mut b, 40, 3 * cs as u64);
    put64(&mut b, 48, cs as u64);
    put32(&mut b, 56, 1);
    put32(&mut b, 96, 4);
    put32(&mut b, 100, 104);
    put64(&mut b, cs, 2 * cs as u64);
    for c in 0..4 {
        b[2 * cs + 2 * c + 1] = 1;
    }
    b
}

fn open_bytes(name: &str, bytes: &[u8]) -> (Temp, Result<Qcow2, OpenError>) {
    let t = Temp::new(name, bytes);
    let r = Qcow2::open(&t.0, false);
    (t, r)
}

fn refusal(name: &str, bytes: &[u8]) -> String {
    match open_bytes(name, bytes).1 {
        Ok(_) => panic!("{name}: opened"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn a_built_image_reads_zeros_and_keeps_what_is_written() {
    let (t, img) = open_bytes("built", &build(9, 1 << 20));
    let img = img.unwrap();
    assert_eq!(img.info().cluster_size, 512);
    let mut buf = vec![1u8; 3000];
    img.read_at(&mut buf, 1000).unwrap();
    assert!(buf.iter().all(|&b| b == 0));
    let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    img.write_at(&data, 777).unwrap();
    drop(img);
    let img = Qcow2::open(&t.0, true).unwrap();
    let mut back = vec![0u8; data.len()];
    img.read_at(&mut back, 777).unwrap();
    assert!(back == data);
    // Out of range, and overflowing.
    assert!(img.read_at(&mut [0; 2], (1 << 20) - 1).is_err());
    assert!(img.read_at(&mut [0; 2], u64::MAX).is_err());
    assert_eq!(
        img.write_at(&[0; 1], 0).unwrap_err().kind(),
        std::io::ErrorKind::PermissionDenied
    );
}

#[test]
fn malformed_headers_are_refused_with_a_reason() {
    let good = build(12, 1 << 20);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("short", good[..50].to_vec(), "qcow2"),
        ("magic", with(&|b| b[0] = b'X'), "qcow2 magic"),
        ("version", with(&|b| put32(b, 4, 1)), "qcow2 version 1"),
        ("bits-small", with(&|b| put32(b, 20, 8)), "cluster_bits"),
        ("bits-large", with(&|b| put32(b, 20, 22)), "cluster_bits"),
        ("hdrlen", with(&|b| put32(b, 100, 100)), "header_length"),
        (
            "hdrlen-big",
            with(&|b| put32(b, 100, 8192)),
            "header_length",
        ),
        ("l1-small", with(&|b| put32(b, 36, 0)), "L1 table"),
        (
            "l1-unaligned",
            with(&|b| put64(b, 40, 3 * 4096 + 8)),
            "L1 table",
        ),
        ("l1-outside", with(&|b| put64(b, 40, 1 << 40)), "L1 table"),
        ("size", with(&|b| put64(b, 24, u64::MAX)), "32 MiB"),
        ("rt-none", with(&|b| put32(b, 56, 0)), "refcount table"),
        (
            "rt-huge",
            with(&|b| put32(b, 56, u32::MAX)),
            "refcount table",
        ),
        (
            "rt-outside",
            with(&|b| put64(b, 48, 1 << 50)),
            "refcount table",
        ),
        (
            "backing-long",
            with(&|b| {
                put64(b, 8, 4000);
                put32(b, 16, 2000);
            }),
            "backing file name",
        ),
        (
            "backing-outside",
            with(&|b| {
                put64(b, 8, 4090);
                put32(b, 16, 10);
            }),
            "backing file name",
        ),
        (
            "extension",
            with(&|b| {
                put32(b, 104, 0x1234);
                put32(b, 108, 5000);
            }),
            "overruns",
        ),
        ("crypt", with(&|b| put32(b, 32, 2)), "encryption"),
        ("refcount8", with(&|b| put32(b, 96, 3)), "refcount_bits=8"),
    ];
    for (name, bytes, want) in cases {
        let e = refusal(name, &bytes);
        assert!(e.contains(want), "{name}: {e}");
    }
}

#[test]
fn unknown_features_are_named_from_the_feature_table() {
    let mut b = build(12, 1 << 20);
    put64(&mut b, 72, 1 << 33);
    // A feature name table entry for incompatible bit 33.
    put32(&mut b, 104, 0x6803_f857);
    put32(&mut b, 108, 48);
    b[112] = 0;
    b[113] = 33;
    b[114..114 + 9].copy_from_slice(b"time warp");
    let e = refusal("feature", &b);
    assert!(
        e.contains("\"time warp\" (incompatible feature bit 33)"),
        "{e}"
    );
}

#[test]
fn cluster_descriptors_are_decoded() {
    let (_t, img) = open_bytes("classify", &build(16, 1 << 20));
    let img = img.unwrap();
    let st = img.lock().unwrap();
    // 64 KiB clusters: compressed offsets take 62 - 8 = 54 bits.
    let compressed = (1 << 62) | (3 << 54) | 0x12345;
    assert_eq!(
        st.classify(compressed).unwrap(),
        Mapping::Compressed {
            offset: 0x12345,
            sectors: 4
        }
    );
    assert_eq!(st.classify(0).unwrap(), Mapping::Unallocated);
    assert_eq!(st.classify(1 << 63).unwrap(), Mapping::Unallocated);
    assert_eq!(
        st.classify((1 << 63) | 0x30000).unwrap(),
        Mapping::Data(0x30000)
    );
    assert_eq!(st.classify(1).unwrap(), Mapping::Zero { prealloc: None });
    assert_eq!(
        st.classify(0x20001).unwrap(),
        Mapping::Zero {
            prealloc: Some(0x20000)
        }
    );
    assert!(st.classify(0x20200).is_err(), "unaligned");
}

#[test]
fn the_table_cache_evicts_the_least_recently_used() {
    let mut c: TableCache<u64> = TableCache::new(2);
    c.insert(10, vec![1], None);
    c.insert(20, vec![2], None);
    assert!(c.get(10).is_some());
    assert_eq!(c.victim(), Some((20, false)));
    c.get(20).unwrap().touch(0);
    c.get(10);
    assert_eq!(c.victim(), Some((20, true)));
    c.remove(20);
    assert_eq!(c.victim(), None);
    let s = c.get(10).unwrap();
    s.touch(5);
    s.touch(2);
    assert_eq!(s.dirty, Some((2, 6)));
    assert_eq!(c.dirty(), vec![10]);
}

#[test]
fn metadata_never_overwrites_the_header_or_tables() {
    // An L1 entry pointing at the refcount table as if it were an L2 table.
    let mut b = build(12, 1 << 20);
    put64(&mut b, 3 * 4096, (1 << 63) | 4096);
    let (t, img) = open_bytes("overlap", &b);
    let img = img.unwrap();
    assert!(img.read_at(&mut [0; 512], 0).is_err());
    assert!(img.write_at(&[1; 512], 0).is_err());
    drop(img);
    assert!(std::fs::read(&t.0).unwrap()[4096..4104] == b[4096..4104]);
}

#[test]
fn the_dirty_bit_blocks_writes_only() {
    let mut b = build(12, 1 << 20);
    put64(&mut b, 72, 1);
    let e = refusal("dirty", &b);
    assert!(
        e.contains("dirty bit") && e.contains("qemu-img check -r all"),
        "{e}"
    );
    let t = Temp::new("dirty-ro", &b);
    assert!(Qcow2::open(&t.0, true).is_ok());
}
