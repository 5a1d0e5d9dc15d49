//! The NBD server against real peers (qemu-io, qemu-img, qemu-nbd --list, fio's nbd
//! engine) and a raw client for exact replies and hostile input, serving raw files
//! (`FileDevice`). `nbd_pool.rs` runs the same tests on pool volumes.
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

use common::{file_device, TmpDir};
use std::sync::Arc;
use vireo_storage::BlockDevice;

/// The device under test: a writable, initially empty (sparse) volume of `size` bytes.
pub fn device(dir: &TmpDir, name: &str, size: u64) -> Arc<dyn BlockDevice> {
    file_device(dir, name, size, false).1
}
