//! A writer killed (SIGKILL) in the middle of random writes, zeroes, discards and flushes
//! leaves an image that `qemu-img check` finds free of corruption (leaked clusters at
//! worst), with every flushed write intact: metadata reaches the file in dependency order.

mod common;

use common::*;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use vireo_disk::DiskImage;

const MIB: u64 = 1 << 20;
const CHILD: &str = "VIREO_DISK_CRASH_CHILD";

/// The child: makes the first MiB durable, says so, then writes at random until killed.
fn child(path: &Path, seed: u64) {
    let img = open(path);
    img.write_at(&pattern(1, MIB as usize), 0).unwrap();
    img.flush().unwrap();
    println!("flushed");
    let mut rng = Rng::new(seed);
    loop {
        let len = 1 + rng.below(200_000);
        let off = MIB + rng.below(7 * MIB - len);
        match rng.below(10) {
            0..=5 => img.write_at(&rng.bytes(len as usize), off).unwrap(),
            6 => img.write_zeroes(off, len, rng.below(2) == 0).unwrap(),
            7 | 8 => img.discard(off, len).unwrap(),
            _ => img.flush().unwrap(),
        }
    }
}

#[test]
fn a_killed_writer_leaves_no_corruption() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (seed, path) = spec.split_once(':').unwrap();
        child(Path::new(path), seed.parse().unwrap());
        return;
    }
    for (round, opts) in ["cluster_size=4096", "cluster_size=512", "compat=0.10"]
        .iter()
        .enumerate()
    {
        let dir = TempDir::new("crash");
        let path = dir.path("c.qcow2");
        create(&path, opts, "8M");
        let mut proc = Command::new(std::env::current_exe().unwrap())
            .args([
                "a_killed_writer_leaves_no_corruption",
                "--exact",
                "--nocapture",
            ])
            .env(CHILD, format!("{round}:{}", path.display()))
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = BufReader::new(proc.stdout.take().unwrap());
        let mut line = String::new();
        while !line.contains("flushed") {
            line.clear();
            assert!(out.read_line(&mut line).unwrap() > 0, "the child died");
        }
        std::thread::sleep(Duration::from_millis(300 + 200 * round as u64));
        proc.kill().unwrap();
        proc.wait().unwrap();

        let check = Command::new("qemu-img")
            .args(["check", path.to_str().unwrap()])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&check.stdout);
        // 0: clean; 3: leaked clusters only. 2 would be corruption.
        assert!(matches!(check.status.code(), Some(0 | 3)), "{opts}: {text}");
        eprintln!(
            "{opts}: {}",
            text.lines()
                .filter(|l| l.contains("leaked") || l.contains("allocated"))
                .collect::<Vec<_>>()
                .join(" / ")
        );
        qemu_img(&["check", "-q", "-r", "leaks", path.to_str().unwrap()]);
        check_clean(&path);
        let img = open(&path);
        let mut first = vec![0u8; MIB as usize];
        img.read_at(&mut first, 0).unwrap();
        assert_same("flushed data", &first, &pattern(1, MIB as usize));
        img.write_at(&[7; 4096], 5 * MIB).unwrap();
        drop(img);
        check_clean(&path);
    }
}
