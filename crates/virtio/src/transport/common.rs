//! The common configuration structure (`struct virtio_pci_common_cfg`, virtio 1.2, 4.1.4.3):
//! feature negotiation, the device status state machine, and per-queue setup, ending in the
//! device's activation at DRIVER_OK.
//!
//! Drivers access each field at its natural width. Any other access is handled without harm:
//! reads are composed byte by byte from the fields they overlap (no read has side effects),
//! and a write wider than the field it starts at is split into naturally aligned halves, so a
//! 64-bit write to a queue address sets both halves; what still fits no field is ignored.

use super::msix::{self, Source, TransportInterrupt};
use super::{lock, VirtioPci, NO_VECTOR};
use crate::device::{Activation, QueueHandle};
use crate::features::{RING_EVENT_IDX, VERSION_1};
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::GuestAddress;

pub(super) const STATUS_DRIVER_OK: u8 = 4;
pub(super) const STATUS_FEATURES_OK: u8 = 8;
pub(super) const STATUS_NEEDS_RESET: u8 = 0x40;
pub(super) const STATUS_FAILED: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Field {
    DeviceFeatureSelect,
    DeviceFeature,
    DriverFeatureSelect,
    DriverFeature,
    MsixConfig,
    NumQueues,
    DeviceStatus,
    ConfigGeneration,
    QueueSelect,
    QueueSize,
    QueueMsixVector,
    QueueEnable,
    QueueNotifyOff,
    QueueDescLo,
    QueueDescHi,
    QueueDriverLo,
    QueueDriverHi,
    QueueDeviceLo,
    QueueDeviceHi,
}

/// (offset, size, field), in offset order.
const FIELDS: [(u64, u64, Field); 19] = [
    (0x00, 4, Field::DeviceFeatureSelect),
    (0x04, 4, Field::DeviceFeature),
    (0x08, 4, Field::DriverFeatureSelect),
    (0x0c, 4, Field::DriverFeature),
    (0x10, 2, Field::MsixConfig),
    (0x12, 2, Field::NumQueues),
    (0x14, 1, Field::DeviceStatus),
    (0x15, 1, Field::ConfigGeneration),
    (0x16, 2, Field::QueueSelect),
    (0x18, 2, Field::QueueSize),
    (0x1a, 2, Field::QueueMsixVector),
    (0x1c, 2, Field::QueueEnable),
    (0x1e, 2, Field::QueueNotifyOff),
    (0x20, 4, Field::QueueDescLo),
    (0x24, 4, Field::QueueDescHi),
    (0x28, 4, Field::QueueDriverLo),
    (0x2c, 4, Field::QueueDriverHi),
    (0x30, 4, Field::QueueDeviceLo),
    (0x34, 4, Field::QueueDeviceHi),
];

fn field_at(off: u64) -> Option<(u64, u64, Field)> {
    FIELDS
        .iter()
        .copied()
        .find(|&(start, size, _)| off >= start && off < start + size)
}

/// What the driver configured for one queue.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct QueueConfig {
    pub(super) size: u16,
    pub(super) enabled: bool,
    pub(super) desc: u64,
    pub(super) driver: u64,
    pub(super) device: u64,
}

/// The driver-visible state of the common configuration (vectors live in the shared
/// interrupt state). A reset replaces it with [`CommonCfg::new`].
pub(super) struct CommonCfg {
    device_feature_select: u32,
    driver_feature_select: u32,
    driver_features: u64,
    /// The driver wrote a bit beyond the 64 feature bits we model: FEATURES_OK is refused.
    unknown_features: bool,
    pub(super) status: u8,
    queue_select: u16,
    pub(super) queues: Vec<QueueConfig>,
}

impl CommonCfg {
    pub(super) fn new(max_sizes: &[u16]) -> Self {
        Self {
            device_feature_select: 0,
            driver_feature_select: 0,
            driver_features: 0,
            unknown_features: false,
            status: 0,
            queue_select: 0,
            queues: max_sizes
                .iter()
                .map(|&size| QueueConfig {
                    size,
                    ..Default::default()
                })
                .collect(),
        }
    }
}

/// Replaces the low or high half of a 64-bit value.
fn set_half(v: &mut u64, high: bool, half: u32) {
    *v = if high {
        (*v & 0xffff_ffff) | u64::from(half) << 32
    } else {
        (*v & !0xffff_ffff) | u64::from(half)
    };
}

/// 32 bits of a feature word through a select register (0 = bits 0-31, 1 = bits 32-63).
fn feature_window(features: u64, select: u32) -> u64 {
    match select {
        0 => features & 0xffff_ffff,
        1 => features >> 32,
        _ => 0,
    }
}

impl VirtioPci {
    pub(super) fn common_read(&mut self, off: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            let o = off + i as u64;
            *b = match field_at(o) {
                Some((start, _, f)) => (self.field_value(f) >> (8 * (o - start))) as u8,
                None => 0,
            };
        }
    }

    pub(super) fn common_write(&mut self, off: u64, data: &[u8]) {
        match field_at(off) {
            Some((start, size, f)) if start == off && size == data.len() as u64 => {
                let mut bytes = [0u8; 8];
                if let Some(dst) = bytes.get_mut(..data.len()) {
                    dst.copy_from_slice(data);
                }
                self.write_field(f, u64::from_le_bytes(bytes));
            }
            _ if data.len() > 1 && data.len().is_power_of_two() => {
                let (lo, hi) = data.split_at(data.len() / 2);
                self.common_write(off, lo);
                self.common_write(off + lo.len() as u64, hi);
            }
            _ => tracing::debug!(off, len = data.len(), "virtio-pci: odd common cfg write"),
        }
    }

    fn selected_queue(&self) -> Option<&QueueConfig> {
        self.common
            .queues
            .get(usize::from(self.common.queue_select))
    }

    fn field_value(&self, f: Field) -> u64 {
        let c = &self.common;
        let q = self.selected_queue();
        let sel = usize::from(c.queue_select);
        match f {
            Field::DeviceFeatureSelect => c.device_feature_select.into(),
            Field::DeviceFeature => feature_window(self.device_features, c.device_feature_select),
            Field::DriverFeatureSelect => c.driver_feature_select.into(),
            Field::DriverFeature => feature_window(c.driver_features, c.driver_feature_select),
            Field::MsixConfig => lock(&self.irq).config_vector.into(),
            Field::NumQueues => c.queues.len() as u64,
            Field::DeviceStatus => c.status.into(),
            Field::ConfigGeneration => lock(&self.irq).config_generation.into(),
            Field::QueueSelect => c.queue_select.into(),
            // A queue that does not exist has size 0: how the driver learns the count too.
            Field::QueueSize => q.map_or(0, |q| q.size).into(),
            Field::QueueMsixVector => lock(&self.irq)
                .queue_vectors
                .get(sel)
                .copied()
                .unwrap_or(NO_VECTOR)
                .into(),
            Field::QueueEnable => q.is_some_and(|q| q.enabled).into(),
            // Queue q notifies at q * multiplier in the notify region.
            Field::QueueNotifyOff => q.map_or(0, |_| sel as u64),
            Field::QueueDescLo => q.map_or(0, |q| q.desc & 0xffff_ffff),
            Field::QueueDescHi => q.map_or(0, |q| q.desc >> 32),
            Field::QueueDriverLo => q.map_or(0, |q| q.driver & 0xffff_ffff),
            Field::QueueDriverHi => q.map_or(0, |q| q.driver >> 32),
            Field::QueueDeviceLo => q.map_or(0, |q| q.device & 0xffff_ffff),
            Field::QueueDeviceHi => q.map_or(0, |q| q.device >> 32),
        }
    }

    fn write_field(&mut self, f: Field, v: u64) {
        let c = &mut self.common;
        match f {
            Field::DeviceFeatureSelect => c.device_feature_select = v as u32,
            Field::DriverFeatureSelect => c.driver_feature_select = v as u32,
            // Features are settled once FEATURES_OK is set.
            Field::DriverFeature if c.status & STATUS_FEATURES_OK == 0 => {
                match c.driver_feature_select {
                    0 => set_half(&mut c.driver_features, false, v as u32),
                    1 => set_half(&mut c.driver_features, true, v as u32),
                    _ => c.unknown_features |= v != 0,
                }
            }
            Field::QueueSelect => c.queue_select = v as u16,
            Field::DeviceStatus => self.write_status(v as u8),
            Field::MsixConfig => {
                let mut irq = lock(&self.irq);
                irq.config_vector = irq.checked_vector(v as u16);
            }
            Field::QueueMsixVector => {
                let sel = usize::from(c.queue_select);
                let mut irq = lock(&self.irq);
                let vector = irq.checked_vector(v as u16);
                if let Some(slot) = irq.queue_vectors.get_mut(sel) {
                    *slot = vector;
                }
            }
            _ => self.write_queue_field(f, v),
        }
    }

    /// Writes a field of the selected queue's setup; read-only fields are ignored.
    fn write_queue_field(&mut self, f: Field, v: u64) {
        // Queue setup is frozen once the device runs: it was handed to the device.
        if self.common.status & STATUS_DRIVER_OK != 0 {
            return;
        }
        let sel = usize::from(self.common.queue_select);
        let max = self.max_sizes.get(sel).copied().unwrap_or(0);
        let Some(q) = self.common.queues.get_mut(sel) else {
            return;
        };
        let half = v as u32;
        match f {
            Field::QueueSize => {
                // The split ring needs a power of two (virtio 1.2, 2.7); other sizes are
                // refused and the previous size stays.
                let size = v as u16;
                if size.is_power_of_two() && size <= max {
                    q.size = size;
                } else {
                    tracing::debug!(size, queue = sel, "virtio-pci: queue size refused");
                }
            }
            // The driver must not write 0 (4.1.4.3.2): only a reset disables a queue.
            Field::QueueEnable => q.enabled |= v == 1,
            Field::QueueDescLo => set_half(&mut q.desc, false, half),
            Field::QueueDescHi => set_half(&mut q.desc, true, half),
            Field::QueueDriverLo => set_half(&mut q.driver, false, half),
            Field::QueueDriverHi => set_half(&mut q.driver, true, half),
            Field::QueueDeviceLo => set_half(&mut q.device, false, half),
            Field::QueueDeviceHi => set_half(&mut q.device, true, half),
            _ => {}
        }
    }

    /// Whether the driver's features can be accepted: only offered bits, VERSION_1 among them
    /// (a modern device does not speak the legacy interface).
    fn features_acceptable(&self) -> bool {
        let driver = self.common.driver_features;
        driver & !self.device_features == 0
            && !self.common.unknown_features
            && driver & VERSION_1 != 0
    }

    /// The device status state machine (virtio 1.2, 2.1 and 3.1.1). The driver only adds bits;
    /// writing 0 resets. DEVICE_NEEDS_RESET is the device's to set.
    fn write_status(&mut self, value: u8) {
        if value == 0 {
            self.reset_device();
            return;
        }
        let old = self.common.status;
        let mut new = old | (value & !STATUS_NEEDS_RESET);
        let settling = new & STATUS_FEATURES_OK != 0 && old & STATUS_FEATURES_OK == 0;
        if settling && !self.features_acceptable() {
            tracing::warn!(
                features = self.common.driver_features,
                offered = self.device_features,
                "virtio-pci: refusing the driver's features"
            );
            // Read back without FEATURES_OK: the driver learns it was refused.
            new &= !STATUS_FEATURES_OK;
        }
        let starting = new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0;
        if starting && (new & STATUS_FEATURES_OK == 0 || new & STATUS_FAILED != 0) {
            tracing::warn!(
                status = new,
                "virtio-pci: DRIVER_OK before FEATURES_OK, ignored"
            );
            new &= !STATUS_DRIVER_OK;
        }
        self.common.status = new;
        if new & STATUS_DRIVER_OK != 0 && old & STATUS_DRIVER_OK == 0 {
            self.activate();
        }
    }

    /// Status 0: the device stops (its worker joined) and everything negotiated is forgotten.
    pub(super) fn reset_device(&mut self) {
        self.device.reset();
        self.active = false;
        self.common = CommonCfg::new(&self.max_sizes);
        lock(&self.irq).reset();
    }

    /// DRIVER_OK: hands the enabled queues to the device.
    fn activate(&mut self) {
        let features = self.common.driver_features & self.device_features;
        let queues = match self.build_queues(features) {
            Ok(q) => q,
            Err(why) => return self.needs_reset(&why),
        };
        let epoch = lock(&self.irq).epoch;
        let act = Activation {
            mem: self.mem.clone(),
            queues,
            interrupt: Arc::new(TransportInterrupt {
                irq: self.irq.clone(),
                msi: self.msi.clone(),
                epoch,
            }),
            features,
            writes: self.writes.clone(),
        };
        match self.device.activate(act) {
            Ok(()) => {
                self.active = true;
                // A driver may post buffers and notify before DRIVER_OK (Linux's balloon
                // driver posts its statistics buffer that way), and such notifications were
                // dropped: let every queue look at its ring once now.
                for (i, qc) in self.common.queues.iter().enumerate() {
                    if let (true, Some(fd)) = (qc.enabled, self.notify.get(i)) {
                        let _ = fd.write(1);
                    }
                }
            }
            Err(e) => self.needs_reset(&format!("activation failed: {e}")),
        }
    }

    fn build_queues(&self, features: u64) -> Result<Vec<QueueHandle>, String> {
        let mut handles = Vec::new();
        for (i, (qc, &max)) in self.common.queues.iter().zip(&self.max_sizes).enumerate() {
            if !qc.enabled {
                continue;
            }
            let bad = |what: &str| format!("queue {i}: {what}");
            let mut queue = Queue::new(max).map_err(|e| bad(&e.to_string()))?;
            queue
                .try_set_size(qc.size)
                .map_err(|e| bad(&e.to_string()))?;
            queue
                .try_set_desc_table_address(GuestAddress(qc.desc))
                .map_err(|e| bad(&e.to_string()))?;
            queue
                .try_set_avail_ring_address(GuestAddress(qc.driver))
                .map_err(|e| bad(&e.to_string()))?;
            queue
                .try_set_used_ring_address(GuestAddress(qc.device))
                .map_err(|e| bad(&e.to_string()))?;
            queue.set_ready(true);
            queue.set_event_idx(features & RING_EVENT_IDX != 0);
            if !queue.is_valid(&self.mem) {
                return Err(bad("rings are not in guest memory"));
            }
            let notify = self
                .notify
                .get(i)
                .ok_or_else(|| bad("no eventfd"))?
                .try_clone()
                .map_err(|e| bad(&format!("cannot clone its eventfd: {e}")))?;
            handles.push(QueueHandle {
                index: i as u16,
                queue,
                notify,
            });
        }
        Ok(handles)
    }

    /// The device cannot run what the driver set up: DEVICE_NEEDS_RESET and a configuration
    /// interrupt tell the driver (4.1.4.3.1 / 2.1.2).
    fn needs_reset(&mut self, why: &str) {
        tracing::warn!("virtio-pci: device needs reset: {why}");
        self.common.status |= STATUS_NEEDS_RESET;
        let msg = lock(&self.irq).raise(Source::Config);
        msix::deliver(self.msi.as_ref(), msg);
    }
}
