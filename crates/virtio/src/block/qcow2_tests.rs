//! The device over qcow2 images (made and checked by qemu-img and qemu-io, from Debian's
//! qemu-utils): the same requests as over a raw file, and the image stays consistent.

use super::exec::{S_IOERR, S_OK};
use super::harness::*;
use super::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use virtio_bindings::virtio_blk::{
    VIRTIO_BLK_T_DISCARD as DISCARD, VIRTIO_BLK_T_FLUSH as FLUSH, VIRTIO_BLK_T_IN as IN,
    VIRTIO_BLK_T_OUT as OUT, VIRTIO_BLK_T_WRITE_ZEROES as WRITE_ZEROES,
    VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP as UNMAP,
};

fn tool(name: &str, args: &[&str]) -> String {
    let out = Command::new(name)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {name} (install qemu-utils): {e}"));
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !text.contains("failed"),
        "{name} {args:?}:\n{text}"
    );
    text
}

/// A qcow2 image in the temp dir (and its backing file, if any), removed when dropped.
struct Qcow2Image {
    path: PathBuf,
    /// Holds the unique name the image's path derives from.
    _name: TempImage,
}

impl Qcow2Image {
    fn new(name: &str, size: &str, extra: &[&str]) -> Qcow2Image {
        // A TempImage reserves a unique name; qemu-img then replaces the file.
        let slot = TempImage::new(name, &[]);
        let path = slot.0.with_extension("qcow2");
        let p = path.to_str().unwrap();
        let mut args = vec!["create", "-q", "-f", "qcow2"];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[p, size]);
        tool("qemu-img", &args);
        Qcow2Image { path, _name: slot }
    }

    fn io(&self, cmd: &str) -> String {
        tool(
            "qemu-io",
            &["-f", "qcow2", "-c", cmd, self.path.to_str().unwrap()],
        )
    }

    fn check(&self) {
        let out = tool("qemu-img", &["check", self.path.to_str().unwrap()]);
        assert!(out.contains("No errors were found"), "{out}");
    }
}

impl Drop for Qcow2Image {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn qcow2_config(path: &Path) -> BlockConfig {
    BlockConfig {
        format: DiskFormat::Qcow2,
        ..config(path)
    }
}

#[test]
fn a_qcow2_image_serves_every_request() {
    let img = Qcow2Image::new("q-serve", "4M", &["-o", "cluster_size=4096"]);
    img.io("write -q -P 0x61 0 64k");
    let mut h = Harness::new(qcow2_config(&img.path));
    assert_eq!(h.block.capacity(), 8192);
    let mut c = [0u8; 4];
    h.block.read_config(44, &mut c);
    assert_eq!(
        u32::from_le_bytes(c),
        8,
        "discards aligned to 4 KiB clusters"
    );
    assert_eq!(h.request(IN, 1, &[], 1024).data, vec![0x61; 1024]);
    assert_eq!(h.request(IN, 200, &[], 512).data, vec![0; 512]);

    let data: Vec<u8> = (0..12288u32).map(|i| (i * 13 % 251) as u8).collect();
    assert_eq!(h.request(OUT, 3, &data, 0).status, S_OK); // partly over qemu's data
    assert_eq!(h.request(OUT, 4000, &[0x7e; 512], 0).status, S_OK);
    assert_eq!(h.request(IN, 3, &[], 12288).data, data);
    assert_eq!(
        h.request(WRITE_ZEROES, 0, &range(64, 16, UNMAP), 0).status,
        S_OK
    );
    assert_eq!(h.request(DISCARD, 0, &range(96, 32, 0), 0).status, S_OK);
    assert_eq!(h.request(IN, 64, &[], 512).data, vec![0; 512]);
    assert_eq!(h.request(FLUSH, 0, &[], 0).status, S_OK);
    // Beyond the end.
    assert_eq!(h.request(IN, 8192, &[], 512).status, S_IOERR);
    assert_eq!(
        (
            h.counter("write_ops"),
            h.counter("flush_ops"),
            h.counter("discard_ops")
        ),
        (2, 1, 1)
    );
    drop(h);

    img.check();
    img.io(&format!("read -q -P 0x7e {} 512", 4000 * 512));
    img.io(&format!("read -q -P 0 {} {}", 64 * 512, 16 * 512));
    img.io(&format!("read -q -P 0x61 {} {}", 80 * 512, 16 * 512));
    // The discard freed whole 4 KiB clusters: they read as zeros.
    img.io(&format!("read -q -P 0 {} {}", 96 * 512, 32 * 512));
    img.io(&format!("read -q -P 0x61 {} {}", 27 * 512, 37 * 512));
}

#[test]
fn a_readonly_qcow2_image_refuses_writes() {
    let img = Qcow2Image::new("q-ro", "1M", &[]);
    img.io("write -q -P 0x33 0 4k");
    let before = std::fs::read(&img.path).unwrap();
    let mut h = Harness::new(BlockConfig {
        readonly: true,
        ..qcow2_config(&img.path)
    });
    assert_ne!(h.block.features() & 1 << VIRTIO_BLK_F_RO, 0);
    assert_eq!(h.request(IN, 0, &[], 512).data, vec![0x33; 512]);
    assert_eq!(h.request(OUT, 0, &[1; 512], 0).status, S_IOERR);
    assert_eq!(
        h.request(WRITE_ZEROES, 0, &range(0, 1, 0), 0).status,
        S_IOERR
    );
    assert_eq!(h.request(FLUSH, 0, &[], 0).status, S_OK);
    drop(h);
    assert!(std::fs::read(&img.path).unwrap() == before);
}

#[test]
fn qcow2_images_and_their_backing_files_are_locked() {
    let base = TempImage::patterned("q-base", 128);
    let b = base.0.to_str().unwrap();
    let top = Qcow2Image::new("q-top", "64K", &["-b", b, "-F", "raw"]);
    let other = Qcow2Image::new("q-top2", "64K", &["-b", b, "-F", "raw"]);
    let mut h = Harness::new(qcow2_config(&top.path));
    assert_eq!(h.request(IN, 5, &[], 512).data, pattern(5, 1));
    assert_eq!(h.request(OUT, 5, &[9; 512], 0).status, S_OK);

    let e = Block::new(qcow2_config(&top.path)).err().unwrap();
    assert!(matches!(e, BlockError::Locked { .. }), "{e}");
    // Overlays share their base; nobody may write it meanwhile.
    let second = Block::new(qcow2_config(&other.path)).unwrap();
    let e = Block::new(config(&base.0)).err().unwrap();
    assert!(matches!(e, BlockError::Locked { .. }), "{e}");
    assert!(Block::new(BlockConfig {
        readonly: true,
        ..config(&base.0)
    })
    .is_ok());
    drop((h, second));
    assert!(base.contents() == pattern(0, 128), "the base is unchanged");
    top.check();
}

#[test]
fn qcow2_open_errors_say_what_to_do() {
    let raw = TempImage::new("q-raw", &[0; 4096]);
    let e = Block::new(qcow2_config(&raw.0)).err().unwrap().to_string();
    assert!(e.contains("qcow2 magic") && e.contains("raw"), "{e}");

    let missing = std::env::temp_dir().join("vireo-blk-missing.qcow2");
    let e = Block::new(qcow2_config(&missing))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("qemu-img create -f qcow2"), "{e}");

    let gone = TempImage::new("q-gone", &[0; 4096]);
    let top = Qcow2Image::new(
        "q-orphan",
        "4K",
        &["-b", gone.0.to_str().unwrap(), "-F", "raw"],
    );
    drop(gone);
    let e = Block::new(qcow2_config(&top.path))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("backing file") && e.contains("qemu-img rebase"),
        "{e}"
    );

    let lazy = Qcow2Image::new("q-l2", "1M", &["-o", "extended_l2=on"]);
    let e = Block::new(qcow2_config(&lazy.path))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("extended L2") && e.contains("qemu-img convert"),
        "{e}"
    );

    assert_eq!("qcow2".parse(), Ok(DiskFormat::Qcow2));
    assert_eq!("raw".parse(), Ok(DiskFormat::Raw));
    assert!("vmdk"
        .parse::<DiskFormat>()
        .unwrap_err()
        .contains("qemu-img convert"));
    assert_eq!(DiskFormat::default(), DiskFormat::Raw);
}

#[test]
fn cache_none_serves_qcow2_through_the_page_cache() {
    let img = Qcow2Image::new("q-direct", "1M", &[]);
    let mut h = Harness::new(BlockConfig {
        cache: CacheMode::None,
        ..qcow2_config(&img.path)
    });
    // A lone 512-byte write at an odd sector: fine without O_DIRECT's alignment.
    assert_eq!(h.request(OUT, 3, &[0x44; 512], 0).status, S_OK);
    assert_eq!(h.request(FLUSH, 0, &[], 0).status, S_OK);
    let mut c = [0u8; 4];
    h.block.read_config(24, &mut c);
    assert_eq!(c[0], 0, "physical_block_exp: 512-byte blocks");
    h.block.read_config(44, &mut c);
    assert_eq!(
        u32::from_le_bytes(c),
        128,
        "discards aligned to 64 KiB clusters"
    );
    drop(h);
    img.io(&format!("read -q -P 0x44 {} 512", 3 * 512));
    img.check();
}
