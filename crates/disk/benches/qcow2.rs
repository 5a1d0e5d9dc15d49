//! qcow2 throughput, Vireo's engine side by side with QEMU's block layer (`qemu-img bench`,
//! qemu-utils) in one run: `cargo bench -p vireo-disk --bench qcow2`. Both sides do the same
//! requests on a fresh image of the same geometry, one at a time, through the host page cache
//! (`qemu-img bench -t writeback -d 1`), and the ratio is printed per row:
//! - sequential 1 MiB writes into an empty image (every cluster allocated), then reads of them;
//! - 4 KiB writes, one per cluster (each allocates a cluster and updates L2 and refcounts).
//!
//! The qemu-img figure includes its process start and image open (some tens of ms); ours
//! starts after the open.

#[path = "../tests/common/mod.rs"]
mod common;

use common::*;
use std::path::Path;
use std::process::Command;
use std::time::Instant;
use vireo_disk::DiskImage;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 512 * MIB;

/// (request size, step between requests, count, write?)
struct Pattern {
    size: u64,
    step: u64,
    count: u64,
    write: bool,
}

fn ours(path: &Path, p: &Pattern) -> f64 {
    let img = open(path);
    let mut buf = pattern(1, p.size as usize);
    let t = Instant::now();
    for i in 0..p.count {
        if p.write {
            img.write_at(&buf, i * p.step).unwrap();
        } else {
            img.read_at(&mut buf, i * p.step).unwrap();
        }
    }
    t.elapsed().as_secs_f64()
}

fn qemu(path: &Path, p: &Pattern) -> f64 {
    let mut cmd = Command::new("qemu-img");
    cmd.args(["bench", "-f", "qcow2", "-t", "writeback", "-d", "1", "-q"]);
    if p.write {
        cmd.arg("-w");
    }
    cmd.args(["-c", &p.count.to_string(), "-s", &p.size.to_string()])
        .args(["-S", &p.step.to_string()])
        .arg(path);
    let t = Instant::now();
    let out = cmd
        .output()
        .expect("run qemu-img (apt-get install qemu-utils)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed().as_secs_f64()
}

fn main() {
    let dir = TempDir::new("bench");
    let path = dir.path("q.qcow2");
    println!(
        "| {:52} | {:>12} | {:>12} | ratio |",
        "qcow2, 512 MiB image", "Vireo", "qemu-img"
    );
    println!(
        "|{}|{}|{}|-------|",
        "-".repeat(54),
        "-".repeat(14),
        "-".repeat(14)
    );
    for cluster in [65536u64, 2 * MIB, 4096] {
        let opts = format!("cluster_size={cluster}");
        let seq = |write| Pattern {
            size: MIB,
            step: MIB,
            count: SIZE / MIB,
            write,
        };
        let per_cluster = Pattern {
            size: 4096,
            step: cluster,
            count: SIZE / cluster,
            write: true,
        };
        let mut times = Vec::new();
        for run in [ours, qemu] {
            let _ = std::fs::remove_file(&path);
            create(&path, &opts, "512M");
            let write = run(&path, &seq(true));
            let read = run(&path, &seq(false));
            let _ = std::fs::remove_file(&path);
            create(&path, &opts, "512M");
            let small = run(&path, &per_cluster);
            check_clean(&path);
            times.push((write, read, small));
        }
        let ((w0, r0, s0), (w1, r1, s1)) = (times[0], times[1]);
        let mbs = |t: f64| SIZE as f64 / t / 1e6;
        let iops = |t: f64| per_cluster.count as f64 / t;
        for (what, v, q, unit) in [
            (
                "sequential 1 MiB allocating writes",
                mbs(w0),
                mbs(w1),
                "MB/s",
            ),
            ("sequential 1 MiB reads", mbs(r0), mbs(r1), "MB/s"),
            (
                "4 KiB writes, one per new cluster",
                iops(s0),
                iops(s1),
                "IOPS",
            ),
        ] {
            let name = format!("{opts}: {what}");
            println!(
                "| {name:52} | {v:7.0} {unit} | {q:7.0} {unit} | {:4.2}x |",
                v / q
            );
        }
    }
}
