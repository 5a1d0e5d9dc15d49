//! Images made and checked by QEMU's tools: what we write, QEMU reads (and `qemu-img check`
//! finds consistent), and what QEMU writes, we read.

mod common;

use common::*;
use vireo_disk::DiskImage;

const MIB: u64 = 1 << 20;

/// (qemu-img -o options, label): v3 and v2 images over the cluster size range.
const FORMATS: &[&str] = &[
    "compat=1.1,cluster_size=65536",
    "compat=1.1,cluster_size=512",
    "compat=1.1,cluster_size=4096",
    "compat=1.1,cluster_size=2M",
    "compat=0.10,cluster_size=65536",
    "compat=0.10,cluster_size=4096",
];

#[test]
fn what_we_write_qemu_reads_and_finds_consistent() {
    for opts in FORMATS {
        let dir = TempDir::new("we-write");
        let path = dir.path("disk.qcow2");
        create(&path, opts, "8M");
        let mut mirror = vec![0u8; 8 * MIB as usize];
        {
            let img = open(&path);
            assert_eq!(img.size(), 8 * MIB);
            // Whole clusters, pieces of clusters, across cluster and L2 boundaries.
            let writes: &[(u64, usize)] = &[
                (0, 4096),
                (512, 512),
                (65536 - 512, 1024),
                (3 * MIB - 7 * 512, 300 * 1024),
                (8 * MIB - 4096, 4096),
                (5 * MIB, 2 * MIB as usize),
                (5 * MIB + 1000, 77),
            ];
            for (i, &(off, len)) in writes.iter().enumerate() {
                let data = pattern(i as u64 + 1, len);
                img.write_at(&data, off).unwrap();
                mirror[off as usize..off as usize + len].copy_from_slice(&data);
            }
            img.write_zeroes(6 * MIB - 4096, 8192, false).unwrap();
            mirror[(6 * MIB - 4096) as usize..(6 * MIB + 4096) as usize].fill(0);
            img.write_zeroes(5 * MIB + MIB / 2, MIB / 4, true).unwrap();
            mirror[(5 * MIB + MIB / 2) as usize..(5 * MIB + 3 * MIB / 4) as usize].fill(0);
            assert_same(
                &format!("{opts}: our read-back"),
                &our_contents(&img),
                &mirror,
            );
            img.flush().unwrap();
        }
        check_clean(&path);
        assert_same(
            &format!("{opts}: as QEMU reads it"),
            &qemu_contents(&dir, &path),
            &mirror,
        );
        qemu_verify(&path, 0, 6 * MIB - 4096, 8192);
    }
}

#[test]
fn what_qemu_writes_we_read() {
    for opts in FORMATS {
        let dir = TempDir::new("qemu-writes");
        let path = dir.path("disk.qcow2");
        create(&path, opts, "4M");
        qemu_io(
            &path,
            "qcow2",
            &[
                "write -q -P 0x11 0 64k".into(),
                "write -q -P 0x22 100k 5k".into(),
                "write -q -P 0x33 3M 1M".into(),
                "write -q -z 3M 4k".into(),
            ],
        );
        let img = open(&path);
        let got = our_contents(&img);
        let mut want = vec![0u8; 4 * MIB as usize];
        want[..65536].fill(0x11);
        want[100 * 1024..105 * 1024].fill(0x22);
        want[3 * MIB as usize..4 * MIB as usize].fill(0x33);
        want[3 * MIB as usize..3 * MIB as usize + 4096].fill(0);
        assert_same(opts, &got, &want);
    }
}

#[test]
fn compressed_clusters_are_read_and_rewritten() {
    for cluster in ["65536", "4096", "512", "2M"] {
        let dir = TempDir::new("compressed");
        let raw = dir.path("src.raw");
        let path = dir.path("c.qcow2");
        // Compressible, but different in every cluster.
        let mut data: Vec<u8> = (0..6 * MIB)
            .map(|i| ((i / 4096) as u8).wrapping_mul(7) ^ ((i % 13) as u8))
            .collect();
        data[MIB as usize..2 * MIB as usize].fill(0); // some all-zero clusters too
        std::fs::write(&raw, &data).unwrap();
        qemu_img(&[
            "convert",
            "-c",
            "-O",
            "qcow2",
            "-o",
            &format!("cluster_size={cluster}"),
            raw.to_str().unwrap(),
            path.to_str().unwrap(),
        ]);
        let check = qemu_img(&["check", path.to_str().unwrap()]);
        assert!(check.contains("100.00% compressed"), "{check}");
        {
            let img = open(&path);
            assert_same(
                &format!("{cluster}: compressed read"),
                &our_contents(&img),
                &data,
            );
            // Small reads inside compressed clusters.
            let mut small = vec![0u8; 1000];
            img.read_at(&mut small, 4 * MIB + 12345).unwrap();
            assert_same(
                "small read",
                &small,
                &data[(4 * MIB + 12345) as usize..][..1000],
            );
            // Partial writes copy the rest of the cluster out of the compressed data.
            for (i, off) in [3 * MIB + 100, 4 * MIB - 512, 300].into_iter().enumerate() {
                let w = pattern(40 + i as u64, 1536);
                img.write_at(&w, off).unwrap();
                data[off as usize..off as usize + w.len()].copy_from_slice(&w);
            }
            img.write_zeroes(5 * MIB, 128 * 1024, true).unwrap();
            data[5 * MIB as usize..(5 * MIB + 128 * 1024) as usize].fill(0);
            img.discard(2 * MIB, 2 * MIB).unwrap();
            // A discard reads as zeros here (no backing file), but only whole clusters go.
            let mut after = vec![0u8; 2 * MIB as usize];
            img.read_at(&mut after, 2 * MIB).unwrap();
            data[2 * MIB as usize..4 * MIB as usize].copy_from_slice(&after);
            assert_same(
                &format!("{cluster}: after writes"),
                &our_contents(&img),
                &data,
            );
        }
        check_clean(&path);
        assert_same(
            &format!("{cluster}: QEMU's view"),
            &qemu_contents(&dir, &path),
            &data,
        );
    }
}

#[test]
fn internal_snapshots_keep_their_data() {
    for opts in ["compat=1.1", "compat=0.10,cluster_size=4096"] {
        let dir = TempDir::new("snapshot");
        let path = dir.path("s.qcow2");
        create(&path, opts, "4M");
        qemu_io(
            &path,
            "qcow2",
            &[
                "write -q -P 0xaa 0 4M".into(),
                "write -q -P 0xbb 1M 64k".into(),
            ],
        );
        let before = qemu_contents(&dir, &path);
        qemu_img(&["snapshot", "-c", "before", path.to_str().unwrap()]);
        let mut now = before.clone();
        {
            let img = open(&path);
            assert_eq!(img.info().snapshots, 1);
            let w = pattern(9, 100_000);
            img.write_at(&w, 1000).unwrap();
            now[1000..101_000].copy_from_slice(&w);
            img.write_at(&[0x5a; 4096], 3 * MIB).unwrap();
            now[3 * MIB as usize..3 * MIB as usize + 4096].fill(0x5a);
            img.write_zeroes(2 * MIB, MIB / 2, true).unwrap();
            now[2 * MIB as usize..(2 * MIB + MIB / 2) as usize].fill(0);
            img.discard(MIB, 2 * 65536).unwrap();
            let mut after = vec![0u8; 2 * 65536];
            img.read_at(&mut after, MIB).unwrap();
            now[MIB as usize..(MIB + 2 * 65536) as usize].copy_from_slice(&after);
            assert_same("our view", &our_contents(&img), &now);
        }
        check_clean(&path);
        assert_same(
            "QEMU's view of the active layer",
            &qemu_contents(&dir, &path),
            &now,
        );
        qemu_img(&["snapshot", "-a", "before", path.to_str().unwrap()]);
        check_clean(&path);
        assert_same("the snapshot", &qemu_contents(&dir, &path), &before);
        // Deleting it leaves a consistent image too.
        qemu_img(&["snapshot", "-d", "before", path.to_str().unwrap()]);
        check_clean(&path);
    }
}

#[test]
fn the_refcount_table_grows_when_the_image_does() {
    // 512-byte clusters: one refcount table cluster covers 64 blocks of 256 clusters (8 MiB
    // of file), so writing 24 MiB needs a larger table.
    let dir = TempDir::new("grow");
    let path = dir.path("g.qcow2");
    create(&path, "cluster_size=512", "32M");
    let data = pattern(3, 24 * MIB as usize);
    {
        let img = open(&path);
        for (i, chunk) in data.chunks(MIB as usize).enumerate() {
            img.write_at(chunk, i as u64 * MIB).unwrap();
        }
        let mut back = vec![0u8; data.len()];
        img.read_at(&mut back, 0).unwrap();
        assert_same("read back", &back, &data);
    }
    check_clean(&path);
    let qemu = qemu_contents(&dir, &path);
    assert_same("QEMU's view", &qemu[..data.len()], &data);
    let info = qemu_img(&["info", path.to_str().unwrap()]);
    assert!(info.contains("cluster_size: 512"), "{info}");
}

#[test]
fn freed_clusters_are_reused() {
    let dir = TempDir::new("reuse");
    let path = dir.path("r.qcow2");
    create(&path, "cluster_size=65536", "64M");
    let img = open(&path);
    let data = pattern(5, 8 * MIB as usize);
    img.write_at(&data, 0).unwrap();
    img.flush().unwrap();
    let len = std::fs::metadata(&path).unwrap().len();
    img.discard(0, 8 * MIB).unwrap();
    img.flush().unwrap();
    img.write_at(&data, 16 * MIB).unwrap();
    img.flush().unwrap();
    let grown = std::fs::metadata(&path).unwrap().len();
    assert!(
        grown <= len + 2 * 65536,
        "the file grew from {len} to {grown} instead of reusing freed clusters"
    );
    drop(img);
    check_clean(&path);
}
