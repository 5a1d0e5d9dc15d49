//! vhost-user-blk: a virtio-blk whose requests a storage backend (qemu-storage-daemon,
//! SPDK, ...) serves. The disk's geometry and limits are the backend's configuration space,
//! read once at connection; the driver's reads of it are answered here.

use super::frontend::UserDevice;
use super::{VhostUserError, REPLY_TIMEOUT};
use crate::device::read_config_bytes;
use crate::{features, types, ActivateError, Activation, VirtioDevice};
use std::path::Path;
use vhost::vhost_user::message::VhostUserConfigFlags;
use vhost::vhost_user::{VhostUserFrontend, VhostUserProtocolFeatures};
use virtio_bindings::virtio_blk::*;

/// `struct virtio_blk_config` up to `write_zeroes_may_unmap` and its padding (virtio 1.1):
/// what every backend has. Later fields (secure erase, zones) go with features not offered.
pub const CONFIG_LEN: usize = 60;
const WCE_OFFSET: u64 = 32;
const NUM_QUEUES_OFFSET: usize = 34;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// What the driver may be offered, if the backend offers it.
const SUPPORTED: u64 = features::VERSION_1
    | features::RING_EVENT_IDX
    | features::RING_INDIRECT_DESC
    | bit(VIRTIO_BLK_F_SIZE_MAX)
    | bit(VIRTIO_BLK_F_SEG_MAX)
    | bit(VIRTIO_BLK_F_GEOMETRY)
    | bit(VIRTIO_BLK_F_RO)
    | bit(VIRTIO_BLK_F_BLK_SIZE)
    | bit(VIRTIO_BLK_F_FLUSH)
    | bit(VIRTIO_BLK_F_TOPOLOGY)
    | bit(VIRTIO_BLK_F_CONFIG_WCE)
    | bit(VIRTIO_BLK_F_DISCARD)
    | bit(VIRTIO_BLK_F_WRITE_ZEROES);

pub struct VhostUserBlk {
    pub(super) dev: UserDevice,
    config: Vec<u8>,
}

impl VhostUserBlk {
    /// Connects to the backend listening on `socket`, negotiates, and reads the disk's
    /// configuration. Fails with an error naming the socket and the fix when the backend is
    /// not there or cannot serve a virtio-blk device.
    pub fn new(socket: &Path) -> Result<VhostUserBlk, VhostUserError> {
        let mut dev = UserDevice::connect("vhost-user-blk", socket, 1, REPLY_TIMEOUT)?;
        if !dev
            .conn
            .protocol()
            .contains(VhostUserProtocolFeatures::CONFIG)
        {
            return Err(dev.conn.backend_error(
                "does not offer the CONFIG protocol feature, needed to learn the disk's size"
                    .into(),
            ));
        }
        let mut config = dev.conn.get_config(0, CONFIG_LEN)?;
        // One request queue whatever the backend has: MQ is not offered, and a driver that
        // reads the field anyway must not believe in queues it cannot enable.
        if let Some(n) = config.get_mut(NUM_QUEUES_OFFSET..NUM_QUEUES_OFFSET + 2) {
            n.copy_from_slice(&1u16.to_le_bytes());
        }
        dev.set_features(SUPPORTED, 0);
        let blk = VhostUserBlk { dev, config };
        tracing::info!(
            socket = %socket.display(),
            sectors = blk.capacity(),
            read_only = blk.read_only(),
            "vhost-user-blk ready"
        );
        Ok(blk)
    }

    /// The disk's size in 512-byte sectors, as the backend reports it.
    pub fn capacity(&self) -> u64 {
        let mut b = [0u8; 8];
        read_config_bytes(&self.config, 0, &mut b);
        u64::from_le_bytes(b)
    }

    /// Whether the backend serves the disk read-only.
    pub fn read_only(&self) -> bool {
        self.dev.features() & bit(VIRTIO_BLK_F_RO) != 0
    }

    pub fn socket(&self) -> &Path {
        self.dev.conn.path()
    }
}

impl VirtioDevice for VhostUserBlk {
    fn device_type(&self) -> u32 {
        types::BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        self.dev.queue_max_sizes()
    }

    fn features(&self) -> u64 {
        self.dev.features()
    }

    fn read_config(&self, offset: u64, data: &mut [u8]) {
        read_config_bytes(&self.config, offset, data);
    }

    /// The only writable field is `wce` (CONFIG_WCE: the driver switches the cache between
    /// writeback and writethrough); the backend applies it.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let wce = self.dev.features() & bit(VIRTIO_BLK_F_CONFIG_WCE) != 0;
        if !(wce && offset == WCE_OFFSET && data.len() == 1) {
            tracing::debug!(
                offset,
                len = data.len(),
                "vhost-user-blk: config write ignored"
            );
            return;
        }
        // Flags 0: a write by the driver (QEMU's VHOST_SET_CONFIG_TYPE_FRONTEND); libvhost-user
        // backends refuse anything else, and drop the connection when they do.
        let sent = self.dev.conn.request("SET_CONFIG", |fe| {
            fe.set_config(WCE_OFFSET as u32, VhostUserConfigFlags::empty(), data)
        });
        match sent {
            Ok(()) => {
                if let (Some(b), Some(&v)) =
                    (self.config.get_mut(WCE_OFFSET as usize), data.first())
                {
                    *b = v;
                }
            }
            Err(e) => {
                self.dev.count_error();
                tracing::warn!("vhost-user-blk: cannot change the write cache mode: {e}");
            }
        }
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        self.dev.activate(act)
    }

    fn reset(&mut self) {
        self.dev.reset()
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        self.dev.counters()
    }
}
