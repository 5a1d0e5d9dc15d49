//! vhost-user-net: a virtio-net whose frames a network backend (a virtual switch, passt, a
//! DPDK application) moves, with one receive and one transmit queue. The configuration space
//! (MAC, link status) is ours; offloads and mergeable receive buffers are whatever the backend
//! offers.

use super::frontend::UserDevice;
use super::{VhostUserError, REPLY_TIMEOUT};
use crate::device::read_config_bytes;
use crate::net::{config_space, format_mac, random_mac};
use crate::{features, types, ActivateError, Activation, VirtioDevice};
use std::path::Path;
use std::time::Duration;
use vhost::vhost_user::VhostUserProtocolFeatures;
use virtio_bindings::virtio_net::*;

const fn bit(b: u32) -> u64 {
    1 << b
}

/// What the driver may be offered if the backend offers it: the data path's features. Not the
/// control queue (and so nothing that needs it) nor multiqueue.
const SUPPORTED: u64 = features::VERSION_1
    | features::RING_EVENT_IDX
    | features::RING_INDIRECT_DESC
    | bit(VIRTIO_NET_F_CSUM)
    | bit(VIRTIO_NET_F_GUEST_CSUM)
    | bit(VIRTIO_NET_F_GUEST_TSO4)
    | bit(VIRTIO_NET_F_GUEST_TSO6)
    | bit(VIRTIO_NET_F_GUEST_ECN)
    | bit(VIRTIO_NET_F_GUEST_UFO)
    | bit(VIRTIO_NET_F_HOST_TSO4)
    | bit(VIRTIO_NET_F_HOST_TSO6)
    | bit(VIRTIO_NET_F_HOST_ECN)
    | bit(VIRTIO_NET_F_HOST_UFO)
    | bit(VIRTIO_NET_F_MRG_RXBUF);

/// Served from our configuration space whatever the backend offers.
const LOCAL: u64 = bit(VIRTIO_NET_F_MAC) | bit(VIRTIO_NET_F_STATUS);

pub struct VhostUserNet {
    pub(super) dev: UserDevice,
    mac: [u8; 6],
    config: Vec<u8>,
}

impl VhostUserNet {
    /// Connects to the backend listening on `socket` and negotiates. The guest's MAC is `mac`;
    /// without one, the backend's (if it has one) or a random locally administered one.
    pub fn new(socket: &Path, mac: Option<[u8; 6]>) -> Result<VhostUserNet, VhostUserError> {
        Self::with_timeout(socket, mac, REPLY_TIMEOUT)
    }

    /// [`VhostUserNet::new`] with another bound on each of the backend's replies.
    pub(super) fn with_timeout(
        socket: &Path,
        mac: Option<[u8; 6]>,
        timeout: Duration,
    ) -> Result<VhostUserNet, VhostUserError> {
        if let Some(m) = mac.filter(|m| m[0] & 1 != 0) {
            return Err(VhostUserError::MulticastMac {
                mac: format_mac(&m),
            });
        }
        let mut dev = UserDevice::connect("vhost-user-net", socket, 2, timeout)?;
        let mac = match mac {
            Some(m) => m,
            None => backend_mac(&mut dev)?.unwrap_or_else(random_mac),
        };
        dev.set_features(SUPPORTED, LOCAL);
        tracing::info!(socket = %socket.display(), mac = %format_mac(&mac), "vhost-user-net ready");
        Ok(VhostUserNet {
            dev,
            mac,
            config: config_space(&mac),
        })
    }

    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }

    pub fn socket(&self) -> &Path {
        self.dev.conn.path()
    }
}

/// The MAC in the backend's configuration space, if it offers one and a usable one.
fn backend_mac(dev: &mut UserDevice) -> Result<Option<[u8; 6]>, VhostUserError> {
    let offers = dev.conn.backend_features() & bit(VIRTIO_NET_F_MAC) != 0;
    let config = dev
        .conn
        .protocol()
        .contains(VhostUserProtocolFeatures::CONFIG);
    if !(offers && config) {
        return Ok(None);
    }
    let bytes = dev.conn.get_config(0, 6)?;
    let Ok(mac) = <[u8; 6]>::try_from(bytes.as_slice()) else {
        return Ok(None);
    };
    if mac[0] & 1 != 0 || mac == [0; 6] {
        tracing::warn!(mac = %format_mac(&mac), "vhost-user-net: backend's MAC is unusable; using a random one");
        return Ok(None);
    }
    Ok(Some(mac))
}

impl VirtioDevice for VhostUserNet {
    fn device_type(&self) -> u32 {
        types::NET
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
