//! Opening images: the errors a user sees, locking, the configuration the driver reads, and
//! cache=none.

use super::exec::S_OK;
use super::file::{open_error, AlignedBuf, BUF_ALIGN};
use super::harness::*;
use super::*;
use std::io;
use virtio_bindings::virtio_blk::{VIRTIO_BLK_T_IN as IN, VIRTIO_BLK_T_OUT as OUT};

fn open(cfg: BlockConfig) -> Result<Block, String> {
    Block::new(cfg).map_err(|e| e.to_string())
}

#[test]
fn a_missing_image_says_how_to_create_one() {
    let path = std::env::temp_dir().join("vireo-blk-does-not-exist.img");
    let e = open(config(&path)).err().unwrap();
    assert!(
        e.contains(&path.display().to_string()) && e.contains("truncate -s"),
        "{e}"
    );
}

#[test]
fn directories_and_character_devices_are_refused() {
    for path in [std::env::temp_dir(), "/dev/null".into()] {
        let e = open(config(&path)).err().unwrap();
        assert!(e.contains("not a regular file or a block device"), "{e}");
    }
}

#[test]
fn the_size_must_be_whole_sectors() {
    let img = TempImage::new("odd", &[0; 1000]);
    let e = open(config(&img.0)).err().unwrap();
    assert!(
        e.contains("1000 bytes") && e.contains("truncate -s %512"),
        "{e}"
    );
}

#[test]
fn permission_errors_suggest_readonly() {
    let path = std::path::Path::new("/images/a.img");
    let denied = || io::Error::from(io::ErrorKind::PermissionDenied);
    let e = open_error(path, false, denied()).to_string();
    assert!(
        e.contains("/images/a.img") && e.contains("readonly=on"),
        "{e}"
    );
    let e = open_error(path, false, io::Error::from_raw_os_error(libc::EROFS)).to_string();
    assert!(e.contains("readonly=on"), "{e}");
    let e = open_error(path, true, denied()).to_string();
    assert!(
        e.contains("permission denied") && !e.contains("readonly=on"),
        "{e}"
    );
}

#[test]
fn the_serial_is_at_most_20_bytes() {
    let img = TempImage::new("id", &[0; 512]);
    let e = open(BlockConfig {
        id: "x".repeat(21),
        ..config(&img.0)
    })
    .err()
    .unwrap();
    assert!(e.contains("at most 20"), "{e}");
    assert!(open(BlockConfig {
        id: "x".repeat(20),
        ..config(&img.0)
    })
    .is_ok());
}

#[test]
fn images_are_locked_like_qemu_does() {
    let img = TempImage::new("lock", &[0; 4096]);
    let ro = || BlockConfig {
        readonly: true,
        ..config(&img.0)
    };
    let writer = open(config(&img.0)).unwrap();
    let e = open(config(&img.0)).err().unwrap();
    assert!(
        e.contains("in use by another process") && e.contains("lock"),
        "{e}"
    );
    let e = open(ro()).err().unwrap();
    assert!(e.contains("open read-write by another process"), "{e}");
    drop(writer);

    // Readers share; a writer waits for all of them.
    let r1 = open(ro()).unwrap();
    let r2 = open(ro()).unwrap();
    assert!(open(config(&img.0)).is_err());
    drop((r1, r2));
    assert!(open(config(&img.0)).is_ok());
}

#[test]
fn config_space_and_features() {
    let img = TempImage::new("config", &vec![0; 1 << 20]);
    let b = Block::new(config(&img.0)).unwrap();
    assert_eq!(b.device_type(), 2);
    assert_eq!(b.queue_max_sizes(), &[256]);
    assert_eq!(b.capacity(), 2048);
    let f = b.features();
    for bit in [
        VIRTIO_BLK_F_SEG_MAX,
        VIRTIO_BLK_F_BLK_SIZE,
        VIRTIO_BLK_F_FLUSH,
        VIRTIO_BLK_F_DISCARD,
        VIRTIO_BLK_F_WRITE_ZEROES,
    ] {
        assert_ne!(f & 1 << bit, 0, "feature {bit}");
    }
    let common = features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC;
    assert_eq!(f & common, common);
    assert_eq!(f & 1 << VIRTIO_BLK_F_RO, 0);

    let mut c = [0u8; 64];
    b.read_config(0, &mut c);
    let u32_at = |o: usize| u32::from_le_bytes(c[o..o + 4].try_into().unwrap());
    assert_eq!(u64::from_le_bytes(c[..8].try_into().unwrap()), 2048);
    assert_eq!(u32_at(12), 254); // seg_max
    assert_eq!(u32_at(20), 512); // blk_size
    assert_eq!(u16::from_le_bytes([c[34], c[35]]), 1); // num_queues
    assert_eq!(u32_at(36), MAX_DISCARD_SECTORS);
    assert_eq!(u32_at(40), 1); // max_discard_seg
    assert_eq!(u32_at(44), 8); // discard_sector_alignment
    assert_eq!(u32_at(48), MAX_WRITE_ZEROES_SECTORS);
    assert_eq!(u32_at(52), 1); // max_write_zeroes_seg
    assert_eq!(c[56], 1); // write_zeroes_may_unmap
    assert_eq!(&c[60..], &[0; 4], "beyond the structure reads as zero");
    // Unaligned and partial reads.
    let mut two = [0u8; 2];
    b.read_config(1, &mut two);
    assert_eq!(two, [8, 0]);
    b.read_config(u64::MAX, &mut two);
    assert_eq!(two, [0, 0]);
}

#[test]
fn aligned_buffers_are_aligned() {
    for len in [0, 1, 512, 1 << 20] {
        let mut b = AlignedBuf::new(len);
        let s = b.as_mut_slice();
        assert_eq!(s.len(), len);
        assert_eq!(s.as_ptr() as usize % BUF_ALIGN, 0);
    }
}

#[test]
fn cache_none_reads_and_writes_through_o_direct() {
    let img = TempImage::patterned("direct", 64);
    let cfg = BlockConfig {
        cache: CacheMode::None,
        ..config(&img.0)
    };
    let block = match Block::new(cfg) {
        Ok(b) => b,
        Err(e @ BlockError::DirectIo { .. }) => {
            // tmpfs before Linux 6.6: the error must say what to do.
            assert!(e.to_string().contains("cache=writeback"), "{e}");
            return;
        }
        Err(e) => panic!("{e}"),
    };
    let mut h = Harness::with_block(block, true);
    // Aligned for any host (4 KiB), then a lone 512-byte sector at an odd offset.
    let data: Vec<u8> = (0..8192).map(|i| (i * 7) as u8).collect();
    assert_eq!(h.request(OUT, 8, &data, 0).status, S_OK);
    assert_eq!(h.request(OUT, 3, &[0xee; 512], 0).status, S_OK);
    assert_eq!(h.request(IN, 8, &[], 8192).data, data);
    assert_eq!(h.request(IN, 3, &[], 512).data, vec![0xee; 512]);
    assert_eq!(h.request(IN, 2, &[], 1536).data[..512], pattern(2, 1)[..]);
    let file = img.contents();
    assert_eq!(&file[8 * 512..8 * 512 + 8192], &data[..]);
    assert_eq!(&file[3 * 512..4 * 512], &[0xee; 512][..]);
}

#[test]
fn activation_needs_the_request_queue() {
    use crate::{ActivateError, Activation};
    use std::sync::Arc;
    let img = TempImage::new("activate", &[0; 512]);
    let mut b = Block::new(config(&img.0)).unwrap();
    let mem = crate::GuestMemory::from_ranges(&[(vm_memory::GuestAddress(0), 1 << 20)]).unwrap();
    let e = b
        .activate(Activation {
            mem,
            queues: Vec::new(),
            interrupt: Arc::new(RecordingInterrupt::default()),
            features: b.features(),
            writes: None,
        })
        .err()
        .unwrap();
    assert!(matches!(e, ActivateError::Queues(_)), "{e}");
    // Reset without an activation is harmless.
    b.reset();
}

#[test]
fn a_device_can_be_reset_and_activated_again() {
    let img = TempImage::patterned("reactivate", 8);
    let mut h = Harness::new(config(&img.0));
    assert_eq!(h.request(IN, 1, &[], 512).data, pattern(1, 1));
    h.block.reset();
    // A fresh driver on fresh memory, same image (and the same lock).
    let block = std::mem::replace(
        &mut h.block,
        Block::new(config(&TempImage::new("other", &[0; 512]).0)).unwrap(),
    );
    let mut h2 = Harness::with_block(block, true);
    assert_eq!(h2.request(IN, 2, &[], 512).data, pattern(2, 1));
    assert_eq!(h2.counter("read_ops"), 2, "counters survive a reset");
}

#[test]
fn io_unaligned_for_the_host_goes_through_the_page_cache_coherently() {
    use super::file::DiskFile;
    let img = TempImage::patterned("align", 16);
    let disk = match DiskFile::open(&img.0, false, CacheMode::None) {
        Ok(d) => d,
        Err(BlockError::DirectIo { .. }) => return,
        Err(e) => panic!("{e}"),
    };
    // As on a 4K-sector host: a 512-byte write cannot use O_DIRECT.
    disk.set_direct_align(4096);
    let mut buf = AlignedBuf::new(4096);
    buf.as_mut_slice()[..512].fill(0x77);
    disk.write_all_at(&buf.as_mut_slice()[..512], 512).unwrap();
    // An aligned direct read sees it.
    disk.read_exact_at(buf.as_mut_slice(), 0).unwrap();
    let mut expected = pattern(0, 8);
    expected[512..1024].fill(0x77);
    assert!(buf.as_mut_slice() == &expected[..]);
    // And an aligned direct write is seen by an unaligned read.
    buf.as_mut_slice().fill(0x33);
    disk.write_all_at(buf.as_mut_slice(), 4096).unwrap();
    let mut small = AlignedBuf::new(512);
    disk.read_exact_at(small.as_mut_slice(), 4608).unwrap();
    assert_eq!(small.as_mut_slice(), &[0x33; 512][..]);
    disk.flush().unwrap();
    assert_eq!(&img.contents()[512..1024], &[0x77; 512][..]);
}
