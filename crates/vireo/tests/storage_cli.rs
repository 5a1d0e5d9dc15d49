//! `vireo storage`: a real service (`vireo storage serve` on sparse backing files) driven
//! through every CLI subcommand, with images made and checked by qemu-img and qemu-io, and
//! volumes read over NBD by qemu-img. Needs qemu-utils.

mod common;
mod storage;

use common::{run_vireo, vireo_bin};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use storage::*;

#[test]
fn a_missing_service_is_a_clear_error() {
    let dir = Scratch::new("missing");
    let sock = dir.path("nobody.sock");
    let run = run_vireo(
        &["storage", "--socket", sock.to_str().unwrap(), "list"],
        CLI_TIMEOUT,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    assert!(run.stderr.contains("cannot connect to"), "{}", run.dump());
    assert!(run.stderr.contains("vireo storage serve"), "{}", run.dump());
    assert!(run.stderr.contains("running?"), "{}", run.dump());
}

#[test]
fn pools_and_volumes_and_their_errors() {
    let dir = Scratch::new("lifecycle");
    let svc = with_pool(&dir);

    let out = svc.ok(&["list"]);
    assert!(out.contains("POOL") && out.contains("tank"), "{out}");
    let info = svc.json(&["pool", "info", "tank"]);
    assert_eq!(info["name"], "tank");
    assert_eq!(info["devices"].as_array().unwrap().len(), 2);
    let size = info["size"].as_u64().unwrap();
    assert!(size > 400 * MIB && size <= 512 * MIB, "{info}");

    let out = svc.ok(&["volume", "create", "tank/thin", "--size", "64M"]);
    assert!(
        out.contains("created volume tank/thin: 64 MiB, thin"),
        "{out}"
    );
    svc.ok(&[
        "volume", "create", "tank/fat", "--size", "32M", "--thick", "--iops", "500", "--bps", "10M",
    ]);
    let v = svc.json(&["volume", "info", "tank/fat"]);
    assert_eq!(v["size"], 32 * MIB);
    assert_eq!(v["thick"], true);
    assert_eq!(v["iops"], 500);
    assert_eq!(v["bps"], 10 * MIB);
    // Thick volumes reserve their space.
    assert!(
        svc.json(&["pool", "info", "tank"])["reserved"]
            .as_u64()
            .unwrap()
            >= 32 * MIB
    );

    let out = svc.ok(&["volume", "resize", "tank/thin", "--size", "128M"]);
    assert!(out.contains("128 MiB"), "{out}");
    assert_eq!(
        svc.json(&["volume", "info", "tank/thin"])["size"],
        128 * MIB
    );
    // Limits: one changed, the other kept; 0 removes one.
    let out = svc.ok(&["volume", "qos", "tank/fat", "--iops", "100"]);
    assert!(out.contains("100 iops, 10 MiB/s"), "{out}");
    let out = svc.ok(&["volume", "qos", "tank/fat", "--bps", "0"]);
    assert!(
        out.contains("tank/fat: 100 iops") && !out.contains("/s"),
        "{out}"
    );

    let out = svc.ok(&["list"]);
    assert!(
        out.contains("tank/thin") && out.contains("128 MiB"),
        "{out}"
    );
    assert!(out.contains("tank/fat") && out.contains("thick"), "{out}");
    let stats = svc.json(&["stats"]);
    assert_eq!(stats["volumes"].as_array().unwrap().len(), 2, "{stats}");
    assert!(stats["volumes"][0]["stats"]["reads"].is_u64(), "{stats}");
    let out = svc.ok(&["list", "--json"]);
    assert!(out.contains("\"pools\""), "{out}");

    let d3 = dir.sparse("d3.img", 64 * MIB);
    let out = svc.ok(&["pool", "add-device", "tank", "--device", &d3]);
    assert!(out.contains("added"), "{out}");
    assert_eq!(
        svc.json(&["pool", "info", "tank"])["devices"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Errors name the problem.
    svc.fails(
        &["volume", "create", "nope/v", "--size", "1G"],
        &["no pool named nope"],
    );
    svc.fails(&["pool", "info", "nope"], &["no pool named nope"]);
    svc.fails(&["volume", "create", "tank/zero", "--size", "0"], &["size"]);
    svc.fails(
        &["volume", "create", "tank/x", "--size", "10X"],
        &["unknown size unit"],
    );
    svc.fails(&["volume", "create", "tank", "--size", "1G"], &["POOL/VOL"]);
    svc.fails(
        &["volume", "create", "tank/thin", "--size", "1G"],
        &["already exists"],
    );
    svc.fails(
        &["volume", "create", "tank/bad name", "--size", "1G"],
        &["not a valid volume name"],
    );
    svc.fails(
        &["volume", "create", "tank/huge", "--size", "1T", "--thick"],
        &["space", "full", "room"],
    );
    svc.fails(
        &["volume", "resize", "tank/thin", "--size", "1M"],
        &["shrink"],
    );
    svc.fails(
        &["volume", "info", "tank/ghost"],
        &["no volume named ghost"],
    );
    svc.fails(
        &["volume", "delete", "tank/ghost"],
        &["no volume named ghost"],
    );
    svc.fails(&["snapshot", "create", "tank/thin"], &["POOL/VOL@SNAP"]);
    svc.fails(&["pool", "create", "tank", "--device", &d3], &["already"]);
    svc.fails(
        &[
            "pool",
            "create",
            "p2",
            "--device",
            &dir.path("absent.img").display().to_string(),
        ],
        &["absent.img"],
    );
    svc.fails(
        &[
            "pool",
            "create",
            "p2",
            "--device",
            &d3,
            "--compression",
            "gzip",
        ],
        &["unknown compression"],
    );

    let out = svc.ok(&["volume", "delete", "tank/fat"]);
    assert!(out.contains("deleted volume tank/fat"), "{out}");
    svc.fails(&["volume", "info", "tank/fat"], &["no volume named fat"]);
    let out = svc.ok(&["list"]);
    assert!(!out.contains("tank/fat"), "{out}");
}

#[test]
fn import_and_export_raw_and_qcow2() {
    let dir = Scratch::new("transfer");
    let svc = with_pool(&dir);
    // A qcow2 image made by QEMU: 1 MiB of 0x5a at 0, 512 KiB of 0xa5 at 40 MiB.
    let src = dir.path("src.qcow2");
    let src = src.to_str().unwrap();
    tool("qemu-img", &["create", "-q", "-f", "qcow2", src, "64M"]);
    tool(
        "qemu-io",
        &[
            "-c",
            "write -P 0x5a 0 1M",
            "-c",
            "write -P 0xa5 40M 512K",
            src,
        ],
    );

    let run = svc.run(&["volume", "import", "tank/img", src]);
    assert!(run.status.success(), "{}\n{}", run.dump(), svc.log());
    assert!(
        run.stdout.contains("(qcow2) into tank/img"),
        "{}",
        run.dump()
    );
    assert!(
        run.stderr.contains("created volume tank/img"),
        "{}",
        run.dump()
    );
    assert!(
        run.stderr.contains("100% 64 MiB/64 MiB") && run.stderr.contains("[####"),
        "a progress bar on stderr\n{}",
        run.dump()
    );
    let v = svc.json(&["volume", "info", "tank/img"]);
    assert_eq!(v["size"], 64 * MIB);
    // Zero blocks were not written: the volume stays thin.
    let allocated = v["allocated"].as_u64().unwrap();
    assert!(
        (3 * MIB / 2..=2 * MIB).contains(&allocated),
        "allocated {allocated}"
    );

    // Raw export: a sparse file with the same content.
    let raw = dir.path("out.raw");
    let raw = raw.to_str().unwrap();
    let out = svc.ok(&["volume", "export", "tank/img", raw]);
    assert!(out.contains("exported tank/img"), "{out}");
    same(raw, "raw", src, "qcow2");
    let m = std::fs::metadata(raw).unwrap();
    assert_eq!(m.len(), 64 * MIB);
    assert!(
        m.blocks() * 512 <= 4 * MIB,
        "the export is sparse: {} blocks",
        m.blocks()
    );

    // qcow2 export: a valid image with the same content, only the data allocated.
    let q = dir.path("out.qcow2");
    let q = q.to_str().unwrap();
    svc.ok(&["volume", "export", "tank/img", q, "--format", "qcow2"]);
    let check = tool("qemu-img", &["check", q]);
    assert!(check.contains("No errors"), "{check}");
    same(q, "qcow2", src, "qcow2");
    assert!(std::fs::metadata(q).unwrap().len() <= 4 * MIB);

    // A raw image imports too, into a volume made for it, and relative paths work.
    let run = Command::new(vireo_bin())
        .current_dir(&dir.0)
        .args(["storage", "--socket", svc.socket.to_str().unwrap()])
        .args(["volume", "import", "tank/fromraw", "out.raw"])
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    let back = dir.path("back.raw");
    let back = back.to_str().unwrap();
    svc.ok(&["volume", "export", "tank/fromraw", back]);
    same(back, "raw", src, "qcow2");

    // Into an existing volume: it must be large enough...
    svc.ok(&["volume", "create", "tank/small", "--size", "32M"]);
    svc.fails(
        &["volume", "import", "tank/small", src],
        &["smaller", "resize"],
    );
    // ...and what it held is replaced, zeros included.
    let junk = dir.raw_image("junk.raw", 96 * MIB, &[(0, 96 * MIB, 0x33)]);
    svc.ok(&["volume", "import", "tank/big", &junk]);
    svc.ok(&["volume", "import", "tank/big", src]);
    let big = dir.path("big.raw");
    let big = big.to_str().unwrap();
    svc.ok(&["volume", "export", "tank/big", big]);
    let want = dir.raw_image(
        "want.raw",
        96 * MIB,
        &[
            (0, MIB, 0x5a),
            (40 * MIB, MIB / 2, 0xa5),
            (64 * MIB, 32 * MIB, 0x33),
        ],
    );
    same(big, "raw", &want, "raw");

    // Bad files.
    svc.fails(
        &[
            "volume",
            "import",
            "tank/n",
            &dir.path("absent").display().to_string(),
        ],
        &["no such file"],
    );
    let empty = dir.sparse("empty.raw", 0);
    svc.fails(&["volume", "import", "tank/n", &empty], &["empty"]);
    svc.fails(
        &["volume", "export", "tank/ghost", raw],
        &["no volume named ghost"],
    );
    svc.fails(
        &[
            "volume",
            "export",
            "tank/img",
            &dir.path("d1.img").display().to_string(),
        ],
        &["device of pool tank"],
    );
    // A job that fails (the pool fills up) fails the client with the job's error.
    let small = dir.sparse("small.img", 32 * MIB);
    svc.ok(&["pool", "create", "small", "--device", &small]);
    let fat = dir.raw_image("fat.raw", 48 * MIB, &[(0, 48 * MIB, 0x01)]);
    let err = svc.fails(&["volume", "import", "small/fat", &fat], &["failed"]);
    assert!(err.contains("import of small/fat (job"), "{err}");
    let out = svc.ok(&["jobs"]);
    assert!(out.contains("import") && out.contains("done"), "{out}");
    assert!(out.contains("failed") && out.contains("available"), "{out}");
}

#[test]
fn snapshots_clones_and_rollback_keep_their_content() {
    let dir = Scratch::new("snapshots");
    let svc = with_pool(&dir);
    let a = dir.raw_image(
        "a.raw",
        16 * MIB,
        &[(0, 2 * MIB, 0x11), (9 * MIB, 4096, 0x12)],
    );
    let b = dir.raw_image("b.raw", 16 * MIB, &[(MIB, 3 * MIB, 0x22)]);
    let out_path = |n: &str| dir.path(n).display().to_string();

    svc.ok(&["volume", "import", "tank/v", &a]);
    let out = svc.ok(&["snapshot", "create", "tank/v@one"]);
    assert!(out.contains("created snapshot tank/v@one"), "{out}");
    svc.ok(&["volume", "import", "tank/v", &b]);

    // The snapshot still reads as A, the volume as B.
    svc.ok(&["volume", "export", "tank/v@one", &out_path("snap.raw")]);
    same(&out_path("snap.raw"), "raw", &a, "raw");
    svc.ok(&["volume", "export", "tank/v", &out_path("now.raw")]);
    same(&out_path("now.raw"), "raw", &b, "raw");

    // A clone starts as the snapshot and diverges on its own.
    let out = svc.ok(&["volume", "clone", "tank/v@one", "tank/c"]);
    assert!(out.contains("cloned tank/v@one as tank/c"), "{out}");
    svc.ok(&["volume", "export", "tank/c", &out_path("clone.raw")]);
    same(&out_path("clone.raw"), "raw", &a, "raw");
    let v = svc.json(&["volume", "info", "tank/c"]);
    assert_eq!(v["origin"], "tank/v@one");

    let out = svc.ok(&["snapshot", "list", "tank/v"]);
    assert!(
        out.contains("tank/v@one") && out.contains("tank/c"),
        "{out}"
    );
    let list = svc.json(&["snapshot", "list", "tank/v", "--json"]);
    assert_eq!(list[0]["name"], "tank/v@one");

    // Rollback: the volume reads as A again.
    svc.ok(&["snapshot", "create", "tank/v@two"]);
    let out = svc.ok(&["volume", "rollback", "tank/v@one"]);
    assert!(out.contains("rolled tank/v back"), "{out}");
    svc.ok(&["volume", "export", "tank/v", &out_path("rolled.raw")]);
    same(&out_path("rolled.raw"), "raw", &a, "raw");
    // Later snapshots are kept.
    svc.ok(&["volume", "export", "tank/v@two", &out_path("two.raw")]);
    same(&out_path("two.raw"), "raw", &b, "raw");
    assert!(differ(&out_path("two.raw"), &out_path("rolled.raw")));

    // What depends on what.
    svc.fails(&["volume", "delete", "tank/v"], &["clones"]);
    svc.fails(&["snapshot", "delete", "tank/v@one"], &["clones"]);
    svc.fails(
        &["volume", "clone", "tank/v@one", "other/c2"],
        &["same pool"],
    );
    svc.fails(
        &["volume", "rollback", "tank/v@nope"],
        &["no snapshot named nope"],
    );
    svc.fails(&["snapshot", "create", "tank/v@one"], &["already exists"]);
    svc.ok(&["volume", "delete", "tank/c"]);
    svc.ok(&["snapshot", "delete", "tank/v@one"]);
    let out = svc.ok(&["snapshot", "list", "tank/v"]);
    assert!(!out.contains("@one") && out.contains("@two"), "{out}");
    svc.ok(&["volume", "delete", "tank/v"]);
    assert!(!svc.ok(&["list"]).contains("tank/v"));
}

#[test]
fn sigterm_commits_and_the_state_reopens() {
    let dir = Scratch::new("restart");
    let svc = with_pool(&dir);
    let a = dir.raw_image("a.raw", 8 * MIB, &[(0, MIB, 0x44), (5 * MIB, 12345, 0x45)]);
    svc.ok(&["volume", "import", "tank/keep", &a]);
    svc.ok(&["snapshot", "create", "tank/keep@s"]);
    svc.ok(&[
        "volume",
        "create",
        "tank/empty",
        "--size",
        "8M",
        "--iops",
        "7",
    ]);
    let st = svc.terminate();
    assert!(st.success(), "{st}");
    assert!(!dir.path("api.sock").exists(), "the socket is removed");

    let svc = Service::start(&dir, &[]);
    let out = svc.ok(&["list"]);
    assert!(
        out.contains("tank/keep") && out.contains("tank/empty"),
        "{out}"
    );
    assert_eq!(svc.json(&["volume", "info", "tank/empty"])["iops"], 7);
    let back = dir.path("back.raw").display().to_string();
    svc.ok(&["volume", "export", "tank/keep@s", &back]);
    same(&back, "raw", &a, "raw");
    assert!(svc.terminate().success());
}

#[test]
fn one_service_per_socket_and_state_dir() {
    let dir = Scratch::new("exclusive");
    let svc = Service::start(&dir, &[]);
    let run = run_vireo(
        &[
            "storage",
            "serve",
            "--dir",
            dir.path("other").to_str().unwrap(),
            "--socket",
            svc.socket.to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    assert!(
        run.stderr.contains("another service is listening"),
        "{}",
        run.dump()
    );
    let run = run_vireo(
        &[
            "storage",
            "serve",
            "--dir",
            dir.path("state").to_str().unwrap(),
            "--socket",
            dir.path("second.sock").to_str().unwrap(),
        ],
        CLI_TIMEOUT,
    );
    assert_eq!(run.status.code(), Some(1), "{}", run.dump());
    assert!(run.stderr.contains("owns"), "{}", run.dump());
    // The first one is unharmed.
    svc.ok(&["list"]);
}

#[test]
fn vhost_user_exports_follow_their_volume() {
    let dir = Scratch::new("vhost");
    let svc = with_pool(&dir);
    svc.ok(&["volume", "create", "tank/vm", "--size", "16M"]);
    let sock = dir.path("vm.sock").display().to_string();
    let out = svc.ok(&["vhost-user", "tank/vm", "--socket", &sock]);
    assert!(out.contains("serving tank/vm over vhost-user-blk"), "{out}");
    assert!(Path::new(&sock).exists());
    let out = svc.ok(&["list"]);
    assert!(
        out.contains("VHOST-USER SOCKET") && out.contains(&sock),
        "{out}"
    );
    svc.fails(
        &["vhost-user", "tank/vm", "--socket", &sock],
        &["already serves"],
    );
    svc.fails(
        &["vhost-user", "tank/ghost", "--socket", &format!("{sock}2")],
        &["no volume named ghost"],
    );
    svc.fails(&["vhost-user", "--socket", &sock], &["give the volume"]);
    // Never over someone else's socket (here: the service's own API) or a file.
    let api = svc.socket.display().to_string();
    svc.fails(&["vhost-user", "tank/vm", "--socket", &api], &["in use"]);
    let file = dir.sparse("not-a-socket", 0);
    svc.fails(
        &["vhost-user", "tank/vm", "--socket", &file],
        &["not a socket"],
    );
    svc.ok(&["snapshot", "create", "tank/vm@s"]);
    svc.fails(
        &["volume", "rollback", "tank/vm@s"],
        &["served over vhost-user"],
    );

    let out = svc.ok(&["vhost-user", "--stop", "--socket", &sock]);
    assert!(out.contains("stopped"), "{out}");
    assert!(!Path::new(&sock).exists());
    svc.fails(
        &["vhost-user", "--stop", "--socket", &sock],
        &["no vhost-user export"],
    );

    // Deleting the volume stops its exports, the snapshot's too.
    svc.ok(&["vhost-user", "tank/vm", "--socket", &sock]);
    let snap_sock = dir.path("snap.sock").display().to_string();
    svc.ok(&["vhost-user", "tank/vm@s", "--socket", &snap_sock]);
    svc.ok(&["volume", "delete", "tank/vm"]);
    assert!(!Path::new(&sock).exists() && !Path::new(&snap_sock).exists());
    assert!(!svc.ok(&["list"]).contains("VHOST-USER"));
}

#[test]
fn nbd_serves_the_volumes() {
    let dir = Scratch::new("nbd");
    let nbd = dir.path("nbd.sock").display().to_string();
    let svc = Service::start(&dir, &["--nbd", &format!("unix:{nbd}")]);
    let d1 = dir.sparse("d1.img", 128 * MIB);
    svc.ok(&["pool", "create", "tank", "--device", &d1]);
    let a = dir.raw_image("a.raw", 8 * MIB, &[(MIB, MIB, 0x66)]);
    svc.ok(&["volume", "import", "tank/v", &a]);
    let uri = format!("nbd+unix:///tank/v?socket={nbd}");
    same(&uri, "raw", &a, "raw");
    // A write over NBD shows in an export.
    tool(
        "qemu-io",
        &["-f", "raw", "-c", "write -P 0x77 4M 64K", &uri],
    );
    let back = dir.path("back.raw").display().to_string();
    svc.ok(&["volume", "export", "tank/v", &back]);
    let want = dir.raw_image(
        "want.raw",
        8 * MIB,
        &[(MIB, MIB, 0x66), (4 * MIB, 65536, 0x77)],
    );
    same(&back, "raw", &want, "raw");
    let out = svc.ok(&["list"]);
    assert!(out.contains(&format!("NBD: unix:{nbd}")), "{out}");
    assert!(svc.terminate().success());
    assert!(!Path::new(&nbd).exists(), "the NBD socket is removed");
}
