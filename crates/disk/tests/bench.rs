//! Rough throughput figures, qcow2 against a raw file on the same filesystem, through the
//! page cache (then with the flush that makes it durable, which the device bounds). Not run
//! by default (timing depends on the machine): `cargo test -p vireo-disk --release --test bench
//! -- --ignored --nocapture`.

mod common;

use common::*;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::time::Instant;
use vireo_disk::DiskImage;

const MIB: u64 = 1 << 20;
const TOTAL: u64 = 512 * MIB;

fn rate(what: &str, bytes: u64, started: Instant) {
    let s = started.elapsed().as_secs_f64();
    println!("{what:40} {:8.0} MB/s", bytes as f64 / s / 1e6);
}

#[test]
#[ignore]
fn sequential_and_random_throughput() {
    let dir = TempDir::new("bench");
    let chunk = pattern(1, MIB as usize);

    let raw_path = dir.path("raw.img");
    let raw = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&raw_path)
        .unwrap();
    raw.set_len(TOTAL).unwrap();
    let t = Instant::now();
    for i in 0..TOTAL / MIB {
        raw.write_all_at(&chunk, i * MIB).unwrap();
    }
    rate("raw: sequential 1 MiB writes", TOTAL, t);
    raw.sync_data().unwrap();
    rate("raw: ... and fdatasync", TOTAL, t);

    for opts in [
        "cluster_size=65536",
        "cluster_size=2097152",
        "cluster_size=4096",
    ] {
        let path = dir.path("q.qcow2");
        let _ = std::fs::remove_file(&path);
        create(&path, opts, "512M");
        let img = open(&path);
        let t = Instant::now();
        for i in 0..TOTAL / MIB {
            img.write_at(&chunk, i * MIB).unwrap();
        }
        rate(&format!("qcow2 {opts}: sequential allocating"), TOTAL, t);
        img.flush().unwrap();
        rate(&format!("qcow2 {opts}: ... and flush"), TOTAL, t);
        let t = Instant::now();
        for i in 0..TOTAL / MIB {
            img.write_at(&chunk, i * MIB).unwrap();
        }
        img.flush().unwrap();
        rate(&format!("qcow2 {opts}: sequential overwrite"), TOTAL, t);
        let mut buf = vec![0u8; MIB as usize];
        let t = Instant::now();
        for i in 0..TOTAL / MIB {
            img.read_at(&mut buf, i * MIB).unwrap();
        }
        rate(&format!("qcow2 {opts}: sequential read"), TOTAL, t);
        drop(img);

        // Random 4 KiB writes into a fresh image: every one allocates.
        let _ = std::fs::remove_file(&path);
        create(&path, opts, "512M");
        let img = open(&path);
        let mut rng = Rng::new(1);
        let n = 20_000u64;
        let t = Instant::now();
        for _ in 0..n {
            let off = rng.below(TOTAL / 4096) * 4096;
            img.write_at(&chunk[..4096], off).unwrap();
        }
        img.flush().unwrap();
        let s = t.elapsed().as_secs_f64();
        println!(
            "{:40} {:8.0} IOPS",
            format!("qcow2 {opts}: random 4K allocating"),
            n as f64 / s
        );
        drop(img);
        check_clean(&path);
    }
    let mut buf = vec![0u8; MIB as usize];
    let t = Instant::now();
    for i in 0..TOTAL / MIB {
        raw.read_exact_at(&mut buf, i * MIB).unwrap();
    }
    rate("raw: sequential read", TOTAL, t);
}
