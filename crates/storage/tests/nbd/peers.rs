//! The server against real peers: qemu-io, qemu-img, qemu-nbd --list and fio's nbd engine.

use crate::client::{self, Client};
use crate::common::*;
use crate::device;
use std::process::{Command, Stdio};
use vireo_storage::nbd::Listen;

#[test]
fn qemu_io_reads_writes_discards_zeroes_and_flushes() {
    let dir = TmpDir::new("io");
    let srv = serve(&dir, vec![("pool/vol", device(&dir, "vol", 16 * MIB))]);
    let uri = srv.uri("pool/vol");
    qemu_io(
        &uri,
        &[
            "write -P 0xab 0 1M",
            "read -P 0xab 0 1M",
            "write -P 0xcd 4097 511", // unaligned
            "read -P 0xcd 4097 511",
            "read -P 0xab 0 4097",
            "read -P 0xab 4608 4096",
            "discard 0 64k",
            "read -P 0 0 64k",
            "read -P 0xab 64k 64k",
            "write -z 128k 64k",
            "read -P 0 128k 64k",
            "write -z -u 256k 64k",
            "read -P 0 256k 64k",
            "flush",
            "write -f -P 0x5a 2M 64k", // FUA
            "read -P 0x5a 2M 64k",
            "write -P 0x77 16773120 4096", // the last block
            "read -P 0x77 16773120 4096",
            "aio_write -P 0x31 4M 64k",
            "aio_write -P 0x32 5M 64k",
            "aio_flush",
            "read -P 0x31 4M 64k",
            "read -P 0x32 5M 64k",
        ],
    );
    // A new connection sees it all.
    qemu_io(
        &uri,
        &[
            "read -P 0xab 512k 512k",
            "read -P 0x5a 2M 64k",
            "read -P 0 8M 1M",
        ],
    );
    // And a wrong pattern is caught, so the checks above mean something.
    let out = qemu_io_cmd(&uri, &["read -P 0xab 2M 4k"]).output().unwrap();
    assert!(!out.status.success());
}

#[test]
fn qemu_img_convert_in_and_out_then_compare() {
    let dir = TmpDir::new("convert");
    // A source image with data here and there and holes between.
    let src = dir.path("src.img");
    let f = std::fs::File::create(&src).unwrap();
    f.set_len(8 * MIB).unwrap();
    for (i, at) in [0u64, 3 * MIB + 4096, 5 * MIB, 8 * MIB - 65536]
        .iter()
        .enumerate()
    {
        std::os::unix::fs::FileExt::write_all_at(&f, &pattern(i as u64, 65536), *at).unwrap();
    }
    let (backing, dev) = file_device(&dir, "vol", 8 * MIB, false);
    // Garbage where the source has holes: convert must zero it.
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::File::options().write(true).open(&backing).unwrap(),
        &[0x99; 65536],
        6 * MIB,
    )
    .unwrap();
    let srv = serve(&dir, vec![("pool/vol", dev)]);
    let uri = srv.uri("pool/vol");
    let s = src.to_str().unwrap();
    run(Command::new("qemu-img").args(["convert", "-n", "-f", "raw", "-O", "raw", s, &uri]));
    let out = run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw", s, &uri]));
    assert!(out.contains("Images are identical"), "{out}");
    run(Command::new("cmp").args([s, backing.to_str().unwrap()]));
    let qcow = dir.path("out.qcow2");
    let q = qcow.to_str().unwrap();
    run(Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "qcow2", &uri, q]));
    let out = run(Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "qcow2", s, q]));
    assert!(out.contains("Images are identical"), "{out}");
    // A difference is found, so the comparisons above mean something.
    qemu_io(&uri, &["write -P 0x01 7M 512"]);
    let out = Command::new("qemu-img")
        .args(["compare", "-f", "raw", "-F", "raw", s, &uri])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `(start, length)` of the runs `qemu-img map` reports as data.
fn data_runs(uri: &str) -> Vec<(u64, u64)> {
    let out = Command::new("qemu-img")
        .args(["map", "--output=json", "-f", "raw", uri])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let map: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    for e in map {
        let (start, len) = (e["start"].as_u64().unwrap(), e["length"].as_u64().unwrap());
        if e["data"].as_bool().unwrap() {
            assert!(!e["zero"].as_bool().unwrap(), "{e}");
            match runs.last_mut() {
                Some((s, l)) if *s + *l == start => *l += len,
                _ => runs.push((start, len)),
            }
        } else {
            assert!(e["zero"].as_bool().unwrap(), "a hole reads as zeros: {e}");
        }
    }
    runs
}

#[test]
fn qemu_img_map_shows_holes_and_data() {
    let dir = TmpDir::new("map");
    let srv = serve(&dir, vec![("pool/vol", device(&dir, "vol", 8 * MIB))]);
    let uri = srv.uri("pool/vol");
    assert_eq!(data_runs(&uri), vec![]);
    qemu_io(&uri, &["write -P 1 1M 64k", "write -P 2 3M 4k"]);
    assert_eq!(data_runs(&uri), vec![(MIB, 65536), (3 * MIB, 4096)]);
    qemu_io(&uri, &["discard 1M 64k"]);
    assert_eq!(data_runs(&uri), vec![(3 * MIB, 4096)]);
}

#[test]
fn several_connections_at_once() {
    let dir = TmpDir::new("multi");
    let srv = serve(&dir, vec![("pool/vol", device(&dir, "vol", 16 * MIB))]);
    let uri = srv.uri("pool/vol");
    // A connection held open throughout.
    let mut held = Client::connect(&socket(&srv));
    held.structured_replies();
    held.go("pool/vol");
    // Two qemu-io processes writing their halves side by side.
    let writers: Vec<_> = [(0x11u8, 0u64), (0x22, 8)]
        .iter()
        .map(|&(p, base)| {
            let cmds: Vec<String> = (0..64)
                .map(|i| format!("write -P {p:#x} {} 128k", base * MIB + i * 131072))
                .collect();
            let cmds: Vec<&str> = cmds.iter().map(|s| s.as_str()).collect();
            let mut cmd = qemu_io_cmd(&uri, &cmds);
            cmd.stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for w in writers {
        let out = w.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    qemu_io(&uri, &["read -P 0x11 0 8M", "read -P 0x22 8M 8M"]);
    // The held connection sees their writes, and they see its.
    let (data, _) = held.read_structured(1, 8 * MIB - 4096, 8192).unwrap();
    assert!(data[..4096].iter().all(|&b| b == 0x11) && data[4096..].iter().all(|&b| b == 0x22));
    assert_eq!(held.write(2, 4096, &[0x33; 4096]), 0);
    qemu_io(&uri, &["read -P 0x33 4k 4k"]);
}

#[test]
fn unix_and_tcp_uris() {
    let dir = TmpDir::new("uri");
    let dev = device(&dir, "vol", 4 * MIB);
    let tcp = serve_on(
        "tcp:127.0.0.1:0".parse().unwrap(),
        vec![("pool/vol", dev.clone())],
    );
    let Listen::Tcp(addr) = tcp.listen().clone() else {
        panic!()
    };
    let port: u16 = addr.rsplit_once(':').unwrap().1.parse().unwrap();
    assert_ne!(port, 0);
    qemu_io(
        &format!("nbd://127.0.0.1:{port}/pool/vol"),
        &["write -P 0x61 0 64k"],
    );
    let unix = serve(&dir, vec![("pool/vol", dev)]);
    let path = socket(&unix);
    qemu_io(
        &format!("nbd+unix:///pool/vol?socket={}", path.display()),
        &["read -P 0x61 0 64k"],
    );
    // Stopping removes the socket.
    assert!(path.exists());
    drop(unix);
    assert!(!path.exists());
}

#[test]
fn read_only_export_refuses_writes() {
    let dir = TmpDir::new("ro");
    let (path, _) = file_device(&dir, "ro", 4 * MIB, false);
    std::fs::write(&path, vec![0x42u8; 4 * MIB as usize]).unwrap();
    let (_, dev) = file_device(&dir, "ro", 4 * MIB, true);
    let srv = serve(&dir, vec![("pool/ro", dev)]);
    let uri = srv.uri("pool/ro");
    let out = qemu_io_cmd(&uri, &["write -P 1 0 4k"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ermission denied"),
        "{out:?}"
    );
    run(Command::new("qemu-io").args(["-r", "-f", "raw", &uri, "-c", "read -P 0x42 0 4M"]));
    // At the protocol level, every kind of write is refused and the connection lives on.
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    let (_, flags) = c.go("pool/ro");
    assert_ne!(flags & 2, 0, "NBD_FLAG_READ_ONLY");
    assert_eq!(c.write(1, 0, &[0; 4096]), client::EPERM);
    c.request(client::CMD_TRIM, 0, 2, 0, 4096);
    assert_eq!(c.status(2), client::EPERM);
    c.request(client::CMD_WRITE_ZEROES, 0, 3, 0, 4096);
    assert_eq!(c.status(3), client::EPERM);
    let (data, _) = c.read_structured(4, 0, 4096).unwrap();
    assert!(data.iter().all(|&b| b == 0x42));
    assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0x42));
}

#[test]
fn qemu_nbd_lists_exports() {
    let dir = TmpDir::new("list");
    let srv = serve(
        &dir,
        vec![
            ("pool/a", device(&dir, "a", 4 * MIB)),
            ("pool/b", file_device(&dir, "b", 2 * MIB, true).1),
        ],
    );
    let out = run(Command::new("qemu-nbd").args(["--list", "-k", socket(&srv).to_str().unwrap()]));
    for want in [
        "exports available: 2",
        "export: 'pool/a'",
        "size:  4194304",
        "export: 'pool/b'",
        "readonly",
        "trim zeroes",
        "multi",
        "min block: 1",
        "opt block: 4096",
        "max block: 33554432",
        "base:allocation",
    ] {
        assert!(out.contains(want), "{want:?} missing from:\n{out}");
    }
}

fn fio(uri: &str, args: &[&str]) -> String {
    let mut c = Command::new("fio");
    c.args(["--name=nbd", "--ioengine=nbd", &format!("--uri={uri}")])
        .args(args);
    let out = run(&mut c);
    assert!(!out.contains("verify: bad"), "{out}");
    out
}

#[test]
fn fio_nbd_engine_with_verification() {
    let dir = TmpDir::new("fio");
    let srv = serve(&dir, vec![("pool/vol", device(&dir, "vol", 32 * MIB))]);
    let uri = srv.uri("pool/vol");
    // Two connections at queue depth 16, each verifying its own half.
    fio(
        &uri,
        &[
            "--rw=randwrite",
            "--bs=4k",
            "--iodepth=16",
            "--size=16M",
            "--numjobs=2",
            "--offset_increment=16M",
            "--verify=crc32c",
            "--verify_fatal=1",
        ],
    );
    fio(
        &uri,
        &[
            "--rw=write",
            "--bs=1M",
            "--iodepth=8",
            "--size=32M",
            "--verify=crc32c",
            "--verify_fatal=1",
        ],
    );
}
