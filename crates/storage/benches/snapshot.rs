//! Snapshot creation time against volume size (issue 5: under 1 ms for a 100 GiB volume
//! with 10 GiB written). Writes 10 GiB into a thin 100 GiB volume, flushes, then times
//! snapshot creation (including the commit that makes it durable) and a clone.
//!
//! `cargo bench -p vireo-storage --bench snapshot [-- GIB_WRITTEN]`; needs that much free
//! space in $TMPDIR.

use std::time::Instant;
use vireo_storage::pool::{DeviceSpec, Pool, PoolOptions, Tier, VolumeOptions};
use vireo_storage::BlockDevice;

fn main() {
    let gib: u64 = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10);
    let dir = std::env::temp_dir().join(format!("vireo-snapshot-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let dev = dir.join("dev");
    std::fs::File::create(&dev)
        .unwrap()
        .set_len((gib + 2) << 30)
        .unwrap();
    let pool = Pool::create(
        &dir.join("state"),
        "bench",
        &[DeviceSpec {
            path: dev,
            tier: Tier::Capacity,
        }],
        PoolOptions::default(),
    )
    .unwrap();
    pool.volume_create("v", 100 << 30, &VolumeOptions::default())
        .unwrap();
    let vol = pool.open_volume("v").unwrap();
    let chunk = vec![0x5au8; 4 << 20];
    let start = Instant::now();
    // Spread over the volume: every tenth 4 MiB run of the first 100 GiB.
    for i in 0..(gib << 8) {
        vol.write_at(&chunk, i * 10 * (4 << 20), false).unwrap();
    }
    vol.flush().unwrap();
    println!("wrote {gib} GiB in {:.1} s", start.elapsed().as_secs_f64());
    let mut times = Vec::new();
    for i in 0..5 {
        let t = Instant::now();
        pool.snapshot_create("v", &format!("s{i}")).unwrap();
        times.push(t.elapsed());
        // Dirty a little between snapshots, as a live volume would.
        vol.write_at(&chunk[..4096], i * 65536, false).unwrap();
    }
    let t = Instant::now();
    pool.volume_clone("v", "s0", "c").unwrap();
    let clone = t.elapsed();
    let info = pool.volume_info("v").unwrap();
    println!(
        "volume 100 GiB, {} GiB allocated: snapshot create {:?} (median of 5: {:?}), clone {:?}",
        info.allocated >> 30,
        times,
        {
            let mut s = times.clone();
            s.sort();
            s[2]
        },
        clone
    );
    drop((vol, pool));
    std::fs::remove_dir_all(&dir).unwrap();
}
