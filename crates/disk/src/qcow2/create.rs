//! Making a new, empty qcow2 image: what `qemu-img create -f qcow2 -o compat=1.1` writes,
//! minus the optional extensions. Data then goes in through the ordinary write path.
//!
//! Layout: the header cluster, the refcount table, the refcount blocks that count the
//! metadata clusters, and the L1 table (all zeros: nothing is mapped yet). Everything later
//! (L2 tables, data, more refcount blocks) is allocated by the engine as it writes.

use super::header::{MAGIC, MAX_CLUSTER_BITS, MAX_L1_BYTES, MIN_CLUSTER_BITS};
use super::Qcow2;
use crate::OpenError;
use std::fs::{OpenOptions, TryLockError};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const HEADER_LEN: u32 = 104;
/// refcount_bits = 1 << 4 = 16, the only width the engine serves.
const REFCOUNT_ORDER: u32 = 4;

/// Where the metadata of a new image lies, in clusters.
struct Layout {
    cluster_size: u64,
    l1_entries: u64,
    refcount_table_clusters: u64,
    refcount_blocks: u64,
    l1_clusters: u64,
}

impl Layout {
    fn new(size: u64, cluster_bits: u32) -> Result<Layout, String> {
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(format!(
                "cluster_bits {cluster_bits}: clusters of 512 bytes to 2 MiB (9 to 21) are supported"
            ));
        }
        let cs = 1u64 << cluster_bits;
        let l1_entries = size.div_ceil(cs).div_ceil(cs / 8);
        if l1_entries.saturating_mul(8) > MAX_L1_BYTES {
            return Err(format!(
                "a virtual size of {size} bytes needs an L1 table over 32 MiB with {cs}-byte clusters; use larger clusters"
            ));
        }
        // An empty image has no L1 table at all (offset 0), as QEMU makes it.
        let l1_clusters = (l1_entries * 8).div_ceil(cs);
        // The refcount blocks count every metadata cluster, themselves included, and the
        // refcount table must hold one entry per block: grow both until they agree.
        let (mut rt, mut rb) = (1u64, 1u64);
        loop {
            let clusters = 1 + rt + rb + l1_clusters;
            let need_rb = clusters.div_ceil(cs / 2);
            let need_rt = (need_rb * 8).div_ceil(cs);
            if need_rb == rb && need_rt == rt {
                break;
            }
            rb = need_rb.max(rb);
            rt = need_rt.max(rt);
        }
        Ok(Layout {
            cluster_size: cs,
            l1_entries,
            refcount_table_clusters: rt,
            refcount_blocks: rb,
            l1_clusters,
        })
    }

    fn refcount_table_offset(&self) -> u64 {
        self.cluster_size
    }

    fn refcount_blocks_offset(&self) -> u64 {
        (1 + self.refcount_table_clusters) * self.cluster_size
    }

    fn l1_offset(&self) -> u64 {
        if self.l1_entries == 0 {
            return 0;
        }
        self.refcount_blocks_offset() + self.refcount_blocks * self.cluster_size
    }

    fn clusters(&self) -> u64 {
        1 + self.refcount_table_clusters + self.refcount_blocks + self.l1_clusters
    }

    fn header(&self, size: u64, cluster_bits: u32) -> Vec<u8> {
        let mut h = vec![0u8; HEADER_LEN as usize + 8];
        let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
        put(0, &MAGIC);
        put(4, &3u32.to_be_bytes());
        put(20, &cluster_bits.to_be_bytes());
        put(24, &size.to_be_bytes());
        // l1_entries <= 4 Mi (MAX_L1_BYTES / 8): it fits a u32.
        put(36, &(self.l1_entries as u32).to_be_bytes());
        put(40, &self.l1_offset().to_be_bytes());
        put(48, &self.refcount_table_offset().to_be_bytes());
        put(56, &(self.refcount_table_clusters as u32).to_be_bytes());
        put(96, &REFCOUNT_ORDER.to_be_bytes());
        put(100, &HEADER_LEN.to_be_bytes());
        // Bytes 104..112 stay zero: the end of the (empty) header extension list.
        h
    }
}

/// Creates an empty qcow2 (version 3) image of `size` bytes with clusters of
/// `1 << cluster_bits` bytes at `path`, replacing any file there, and opens it for writing.
pub fn create(path: &Path, size: u64, cluster_bits: u32) -> Result<Qcow2, OpenError> {
    let layout = Layout::new(size, cluster_bits).map_err(|reason| OpenError::Invalid {
        path: path.to_path_buf(),
        reason,
    })?;
    let io_err = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io_err)?;
        // Truncate only what nobody else has open: the lock is QEMU's, as in open_locked.
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(OpenError::Locked {
                    path: path.to_path_buf(),
                    readonly: false,
                })
            }
            Err(TryLockError::Error(e)) => return Err(io_err(e)),
        }
        write_metadata(&file, &layout, size, cluster_bits).map_err(io_err)?;
        // The lock goes with the file; Qcow2::open takes its own.
    }
    Qcow2::open(path, false)
}

fn write_metadata(file: &std::fs::File, l: &Layout, size: u64, bits: u32) -> io::Result<()> {
    let cs = l.cluster_size;
    file.set_len(0)?;
    file.set_len(l.clusters() * cs)?;
    file.write_all_at(&l.header(size, bits), 0)?;
    // The refcount table points at the blocks, which sit one after the other.
    let table: Vec<u8> = (0..l.refcount_blocks)
        .flat_map(|i| (l.refcount_blocks_offset() + i * cs).to_be_bytes())
        .collect();
    file.write_all_at(&table, l.refcount_table_offset())?;
    // Every metadata cluster has one reference; they are the first clusters of the file.
    let counts: Vec<u8> = (0..l.clusters()).flat_map(|_| 1u16.to_be_bytes()).collect();
    file.write_all_at(&counts, l.refcount_blocks_offset())?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DiskImage;
    use std::path::PathBuf;
    use std::process::Command;

    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = std::env::temp_dir()
                .join(format!("vireo-qcow2-create-{}-{tag}", std::process::id()));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn qemu_img(args: &[&str]) -> String {
        let out = Command::new("qemu-img")
            .args(args)
            .output()
            .expect("run qemu-img (install qemu-utils)");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "qemu-img {args:?} failed:\n{text}");
        text
    }

    fn pattern(seed: u8, len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn new_images_pass_qemu_img_check_and_hold_what_is_written() {
        let dir = TempDir::new("check");
        // (virtual size, cluster bits): tiny clusters need a multi-cluster L1 table; huge
        // clusters a huge image; an unaligned size; an empty image.
        for (size, bits) in [
            (64u64 << 20, 16u32),
            (8 << 20, 9),
            ((3 << 20) + 4096 + 512, 12),
            (0, 16),
            (1 << 40, 21),
        ] {
            let img = dir.0.join(format!("{size}-{bits}.qcow2"));
            let raw = dir.0.join(format!("{size}-{bits}.raw"));
            let q = create(&img, size, bits).unwrap();
            assert_eq!(q.size(), size);
            assert_eq!(q.info().cluster_size, 1 << bits);
            let check = qemu_img(&["check", img.to_str().unwrap()]);
            assert!(check.contains("No errors"), "{check}");

            // Write the same data to the image and a raw file; qemu-img must see the same.
            let f = std::fs::File::create(&raw).unwrap();
            f.set_len(size).unwrap();
            if size >= 3 << 20 {
                for (i, at) in [0u64, 4096 + 17, 2 << 20, size - 70_000].iter().enumerate() {
                    let data = pattern(i as u8 + 1, 65_000);
                    q.write_at(&data, *at).unwrap();
                    f.write_all_at(&data, *at).unwrap();
                }
            }
            q.flush().unwrap();
            drop(q);
            let check = qemu_img(&["check", img.to_str().unwrap()]);
            assert!(check.contains("No errors"), "{check}");
            let info = qemu_img(&["info", "--output=json", img.to_str().unwrap()]);
            assert!(
                info.contains(&format!("\"virtual-size\": {size}")),
                "{info}"
            );
            assert!(info.contains("\"compat\": \"1.1\""), "{info}");
            if size <= 64 << 20 {
                qemu_img(&[
                    "compare",
                    "-f",
                    "qcow2",
                    "-F",
                    "raw",
                    img.to_str().unwrap(),
                    raw.to_str().unwrap(),
                ]);
            }
        }
    }

    #[test]
    fn create_replaces_a_file_and_refuses_bad_geometry() {
        let dir = TempDir::new("replace");
        let img = dir.0.join("x.qcow2");
        std::fs::write(&img, vec![0xffu8; 300_000]).unwrap();
        drop(create(&img, 1 << 20, 16).unwrap());
        let check = qemu_img(&["check", img.to_str().unwrap()]);
        assert!(check.contains("No errors"), "{check}");
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 4 << 16);

        let e = create(&img, 1 << 20, 8).err().unwrap().to_string();
        assert!(e.contains("cluster_bits 8"), "{e}");
        let e = create(&img, 1 << 50, 9).err().unwrap().to_string();
        assert!(e.contains("larger clusters"), "{e}");
    }

    #[test]
    fn create_refuses_an_image_in_use() {
        let dir = TempDir::new("locked");
        let img = dir.0.join("busy.qcow2");
        let q = create(&img, 1 << 20, 16).unwrap();
        q.write_at(&[7u8; 512], 0).unwrap();
        let e = create(&img, 1 << 20, 16).err().unwrap();
        assert!(matches!(e, OpenError::Locked { .. }), "{e}");
        drop(q);
        // Untouched by the refused create.
        let q = Qcow2::open(&img, true).unwrap();
        let mut buf = [0u8; 512];
        q.read_at(&mut buf, 0).unwrap();
        assert_eq!(buf, [7u8; 512]);
    }
}
