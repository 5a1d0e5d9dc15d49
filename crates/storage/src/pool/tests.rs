//! The engine against a plain mirror of what each volume should hold.

use super::*;
use crate::block::BlockDevice;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("vireo-pool-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn device(dir: &Path, name: &str, size: u64, tier: Tier) -> DeviceSpec {
    let path = dir.join(name);
    File::create(&path).unwrap().set_len(size).unwrap();
    DeviceSpec { path, tier }
}

fn pool(name: &str, opts: PoolOptions) -> (PathBuf, Arc<Pool>) {
    let dir = scratch(name);
    let devs = [device(&dir, "d0", 64 << 20, Tier::Capacity)];
    let pool = Pool::create(&dir.join("state"), "p", &devs, opts).unwrap();
    (dir, pool)
}

/// xorshift bytes: incompressible and distinct per seed.
fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn read(v: &Volume, off: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    v.read_at(&mut buf, off).unwrap();
    buf
}

/// Random writes, trims and reads against a mirror, then a reopen.
fn random_io(name: &str, opts: PoolOptions) {
    let (dir, p) = pool(name, opts);
    p.volume_create("v", 3 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let mut mirror = vec![0u8; 3 << 20];
    let mut x = 12345u64;
    let mut rnd = |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for i in 0..300 {
        let off = rnd(3 << 20) & !511;
        let len = (rnd(200_000) as usize + 1).min((3 << 20) - off as usize);
        match rnd(10) {
            0 => {
                v.trim(off, len as u64).unwrap();
                mirror[off as usize..off as usize + len].fill(0);
            }
            1..=5 => {
                let data = if i % 3 == 0 {
                    vec![(i % 7) as u8; len]
                } else {
                    noise(len, i)
                };
                v.write_at(&data, off, false).unwrap();
                mirror[off as usize..off as usize + len].copy_from_slice(&data);
            }
            _ => assert_eq!(
                read(&v, off, len),
                mirror[off as usize..off as usize + len],
                "read at {off}+{len}"
            ),
        }
        if i % 50 == 0 {
            p.commit().unwrap();
        }
    }
    assert_eq!(read(&v, 0, 3 << 20), mirror);
    v.flush().unwrap();
    drop(v);
    drop(p);
    let p = Pool::open(&dir.join("state")).unwrap();
    let v = p.open_volume("v").unwrap();
    assert_eq!(read(&v, 0, 3 << 20), mirror, "after reopening");
}

#[test]
fn random_io_plain() {
    random_io("plain", PoolOptions::default());
}

#[test]
fn random_io_all_features() {
    let dir = scratch("key");
    let key = dir.join("key");
    std::fs::write(&key, [9u8; 64]).unwrap();
    random_io(
        "features",
        PoolOptions {
            dedup: true,
            compression: Compression::Zstd,
            encryption_key_file: Some(key),
            cache_bytes: 1 << 20,
            block_size: 16384,
        },
    );
}

#[test]
fn snapshots_clones_rollback() {
    let (_dir, p) = pool("snap", PoolOptions::default());
    p.volume_create("v", 1 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let a = noise(1 << 20, 1);
    v.write_at(&a, 0, false).unwrap();
    p.snapshot_create("v", "s1").unwrap();
    let b = noise(4096, 2);
    v.write_at(&b, 8192, false).unwrap();
    let s1 = p.open_volume("v@s1").unwrap();
    assert_eq!(read(&s1, 0, 1 << 20), a);
    assert!(
        s1.write_at(&b, 0, false).is_err(),
        "snapshots are read-only"
    );
    let mut now = a.clone();
    now[8192..12288].copy_from_slice(&b);
    assert_eq!(read(&v, 0, 1 << 20), now);

    // One 64 KiB block was copied; the other 15 are shared.
    let info = p.volume_info("v").unwrap();
    assert_eq!(
        (info.allocated, info.unique, info.shared),
        (1 << 20, 65536, 15 * 65536)
    );
    assert_eq!(info.snapshots, vec!["p/v@s1".to_string()]);

    p.volume_clone("v", "s1", "c").unwrap();
    let c = p.open_volume("c").unwrap();
    c.write_at(&[7u8; 512], 0, false).unwrap();
    assert_eq!(read(&s1, 0, 512), a[..512]);
    assert_eq!(read(&v, 0, 512), a[..512]);
    assert_eq!(
        p.volume_info("c").unwrap().origin.as_deref(),
        Some("p/v@s1")
    );
    assert!(matches!(
        p.snapshot_delete("v", "s1"),
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        p.volume_delete("v"),
        Err(StorageError::Conflict(_))
    ));

    p.volume_rollback("v", "s1").unwrap();
    assert_eq!(read(&v, 0, 1 << 20), a);
    drop(c);
    p.volume_delete("c").unwrap();
    let used = p.info().used;
    p.snapshot_delete("v", "s1").unwrap();
    // Everything the snapshot held, the volume holds too: nothing is freed.
    assert_eq!(p.info().used, used);
    p.volume_delete("v").unwrap();
    assert_eq!(p.info().used, 0);
}

#[test]
fn dedup_and_compression_ratios() {
    let (_dir, p) = pool(
        "dedup",
        PoolOptions {
            dedup: true,
            compression: Compression::Lz4,
            ..PoolOptions::default()
        },
    );
    p.volume_create("v", 4 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let text: Vec<u8> = (0..65536u32).map(|i| b"vireo "[i as usize % 6]).collect();
    for i in 0..32 {
        v.write_at(&text, i * 65536, false).unwrap();
    }
    v.write_at(&noise(65536, 5), 40 * 65536, false).unwrap();
    let info = p.info();
    assert!(info.dedup_ratio > 16.0, "{info:?}");
    assert!(info.compression_ratio > 1.5, "{info:?}");
    assert!(info.used <= 65536 + 8192, "{info:?}");
    // Zero blocks become holes.
    v.write_at(&vec![0u8; 65536], 0, false).unwrap();
    assert_eq!(p.volume_info("v").unwrap().allocated, 32 * 65536);
}

#[test]
fn encrypted_devices_hold_no_plaintext() {
    let dir = scratch("crypt");
    let key = dir.join("key");
    std::fs::write(&key, "ab".repeat(64)).unwrap();
    let devs = [device(&dir, "d0", 32 << 20, Tier::Capacity)];
    let opts = PoolOptions {
        encryption_key_file: Some(key),
        ..PoolOptions::default()
    };
    let p = Pool::create(&dir.join("state"), "p", &devs, opts).unwrap();
    p.volume_create("v", 1 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let secret = b"TOP-SECRET-PLAINTEXT-MARKER-0123".repeat(2048);
    v.write_at(&secret, 0, true).unwrap();
    v.write_at(&secret[..4096], 65536 + 4096, true).unwrap();
    let raw = std::fs::read(dir.join("d0")).unwrap();
    assert!(!raw.windows(27).any(|w| w == &secret[..27]));
    assert_eq!(read(&v, 65536 + 4096, 4096), secret[..4096]);
}

#[test]
fn space_reservations_and_bad_input() {
    let (dir, p) = pool("space", PoolOptions::default());
    let free = p.info().free;
    let thick = VolumeOptions {
        thick: true,
        ..VolumeOptions::default()
    };
    assert!(matches!(
        p.volume_create("big", free + (1 << 20), &thick),
        Err(StorageError::NoSpace(_))
    ));
    p.volume_create("t", free - (2 << 20), &thick).unwrap();
    assert_eq!(p.info().free, 2 << 20);
    // A thin volume can only use what the reservation leaves.
    p.volume_create("thin", 8 << 20, &VolumeOptions::default())
        .unwrap();
    let thin = p.open_volume("thin").unwrap();
    let err = thin.write_at(&noise(4 << 20, 3), 0, false).unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::StorageFull);
    // The thick volume can still write all of itself.
    let t = p.open_volume("t").unwrap();
    t.write_at(&noise(1 << 20, 4), free - (3 << 20), false)
        .unwrap();

    assert!(matches!(
        p.volume_create("z", 0, &VolumeOptions::default()),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        p.volume_create("a/b", 4096, &VolumeOptions::default()),
        Err(StorageError::Invalid(_))
    ));
    assert!(matches!(
        p.volume_create("t", 4096, &VolumeOptions::default()),
        Err(StorageError::Conflict(_))
    ));
    assert!(matches!(
        p.volume_info("nope"),
        Err(StorageError::NotFound(_))
    ));
    assert!(matches!(
        p.volume_resize("thin", 4096),
        Err(StorageError::Invalid(_))
    ));
    let mut buf = [0u8; 512];
    assert!(thin.read_at(&mut buf, u64::MAX - 10).is_err());
    assert!(thin.read_at(&mut buf, 8 << 20).is_err());

    // A device of this pool can't join another, and the failed create leaves nothing.
    let again = [DeviceSpec {
        path: dir.join("d0"),
        tier: Tier::Capacity,
    }];
    let state2 = dir.join("state2");
    assert!(Pool::create(&state2, "q", &again, PoolOptions::default()).is_err());
    assert!(!state2.exists());
    let small = [device(&dir, "small", 1 << 20, Tier::Capacity)];
    match Pool::create(&state2, "q", &small, PoolOptions::default()) {
        Err(err) => assert!(err.to_string().contains("16 MiB"), "{err}"),
        Ok(_) => panic!("a 1 MiB device was accepted"),
    }
    assert!(!state2.exists());
}

#[test]
fn unflushed_writes_may_go_flushed_stay() {
    let (dir, p) = pool("crash", PoolOptions::default());
    p.volume_create("v", 1 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let a = noise(1 << 20, 8);
    v.write_at(&a, 0, false).unwrap();
    v.flush().unwrap();
    // New blocks elsewhere, never flushed: their records never reach the journal.
    p.volume_create("w", 1 << 20, &VolumeOptions::default())
        .unwrap();
    let w = p.open_volume("w").unwrap();
    w.write_at(&noise(65536, 9), 0, false).unwrap();
    v.trim(0, 65536).unwrap();
    drop((v, w, p));
    let p = Pool::open(&dir.join("state")).unwrap();
    let v = p.open_volume("v").unwrap();
    assert_eq!(read(&v, 0, 1 << 20), a);
    assert_eq!(p.volume_info("w").unwrap().allocated, 0);
}

#[test]
fn add_device_grows_a_live_pool() {
    let (dir, p) = pool("grow", PoolOptions::default());
    let size = p.info().size;
    p.add_device(&device(&dir, "d1", 32 << 20, Tier::Capacity))
        .unwrap();
    assert_eq!(p.info().size, size + (31 << 20));
    p.volume_create("v", 80 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let data = noise(80 << 20, 3);
    v.write_at(&data, 0, false).unwrap();
    assert_eq!(read(&v, 0, 80 << 20), data);
    assert!(p.info().devices.iter().all(|d| d.used > 0));
}

#[test]
fn hot_blocks_move_to_the_fast_tier() {
    let dir = scratch("tier");
    let devs = [
        device(&dir, "fast", 16 << 20, Tier::Fast),
        device(&dir, "slow", 64 << 20, Tier::Capacity),
    ];
    let p = Pool::create(&dir.join("state"), "p", &devs, PoolOptions::default()).unwrap();
    p.volume_create("v", 40 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    let data = noise(40 << 20, 6);
    v.write_at(&data, 0, false).unwrap();
    v.flush().unwrap();
    let tier_of = |p: &Pool, idx: u64| {
        let st = p.read_state();
        let id = st.vols.values().next().unwrap().map.get(idx);
        p.devices()[st.blocks[&id].loc.dev as usize].tier
    };
    // New blocks fill the fast device first.
    assert_eq!(tier_of(&p, 0), Tier::Fast);
    assert_eq!(tier_of(&p, 639), Tier::Capacity);
    let info = p.info();
    assert_eq!(info.devices[0].used, info.devices[0].size);
    // The last 8 MiB get hot.
    for _ in 0..3 {
        assert_eq!(read(&v, 32 << 20, 8 << 20), data[32 << 20..]);
    }
    let moved = p.rebalance_tiers().unwrap();
    assert_eq!(moved, 2 * 128, "128 hot blocks up, as many cold ones down");
    assert!((512..640).all(|i| tier_of(&p, i) == Tier::Fast));
    assert_eq!(read(&v, 0, 40 << 20), data);
    // Nothing is hot any more: a second pass moves nothing.
    assert_eq!(p.rebalance_tiers().unwrap(), 0);
}

#[test]
fn copy_on_write_rewrites_recycle_space() {
    // Every dedup write stores a new block and frees the old one, which is reusable only
    // after a commit: rewriting a volume many times over must not fill the pool.
    let (_dir, p) = pool(
        "recycle",
        PoolOptions {
            dedup: true,
            ..PoolOptions::default()
        },
    );
    p.volume_create("v", 16 << 20, &VolumeOptions::default())
        .unwrap();
    let v = p.open_volume("v").unwrap();
    for round in 0..6 {
        v.write_at(&noise(16 << 20, round + 1), 0, false).unwrap();
    }
    assert_eq!(read(&v, 0, 4096), noise(16 << 20, 6)[..4096]);
}

#[test]
fn qos_limits_bandwidth_after_one_second_of_burst() {
    let (_dir, p) = pool("qos", PoolOptions::default());
    let opts = VolumeOptions {
        bps: Some(8 << 20),
        ..VolumeOptions::default()
    };
    p.volume_create("v", 32 << 20, &opts).unwrap();
    let v = p.open_volume("v").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let start = std::time::Instant::now();
    // 8 MiB of burst, then 16 MiB at 8 MiB/s: 2 s.
    for i in 0..24 {
        v.read_at(&mut buf, i << 20).unwrap();
    }
    let secs = start.elapsed().as_secs_f64();
    assert!((1.8..2.4).contains(&secs), "24 MiB took {secs:.2} s");
    assert!(p.volume_info("v").unwrap().stats.throttled > 0);
    // Lifting the limit applies to open handles at once.
    p.volume_set_qos("v", None, None).unwrap();
    let start = std::time::Instant::now();
    for i in 0..24 {
        v.read_at(&mut buf, i << 20).unwrap();
    }
    assert!(start.elapsed().as_secs_f64() < 0.5);
}
