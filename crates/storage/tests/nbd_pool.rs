//! The NBD tests of `nbd.rs`, with pool volumes as the exports: the whole stack under
//! qemu-io, qemu-img and fio. (Tests about backing files still use raw files.)
//!
//! Needs qemu-utils and fio (Debian packages).

#[path = "nbd/client.rs"]
mod client;
#[path = "nbd/common.rs"]
mod common;
#[path = "nbd/hostile.rs"]
mod hostile;
#[path = "nbd/peers.rs"]
mod peers;
#[path = "nbd/protocol.rs"]
mod protocol;

use common::{TmpDir, MIB};
use std::sync::Arc;
use vireo_storage::pool::{DeviceSpec, Pool, PoolOptions, VolumeOptions};
use vireo_storage::BlockDevice;

/// The device under test: a thin volume of `size` bytes in a pool of its own, with 4 KiB
/// blocks so that allocation shows at the granularity the tests write.
pub fn device(dir: &TmpDir, name: &str, size: u64) -> Arc<dyn BlockDevice> {
    let dev = dir.path(&format!("{name}.pooldev"));
    std::fs::File::create(&dev)
        .unwrap()
        .set_len(2 * size + 64 * MIB)
        .unwrap();
    let spec = DeviceSpec {
        path: dev,
        tier: Default::default(),
    };
    let opts = PoolOptions {
        block_size: 4096,
        ..Default::default()
    };
    let pool = Pool::create(&dir.path(&format!("{name}.pool")), name, &[spec], opts).unwrap();
    pool.volume_create("vol", size, &VolumeOptions::default())
        .unwrap();
    pool.open_volume("vol").unwrap()
}
