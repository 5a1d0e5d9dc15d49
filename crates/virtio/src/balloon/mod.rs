//! virtio-balloon (device type 5, virtio 1.2 section 5.5): the host asks the guest to give
//! back memory, and the guest reports how its memory is used.
//!
//! - Inflate and deflate: the VMM sets a target size through [`BalloonControl::set_target`]
//!   (config `num_pages`, then a configuration interrupt). The driver allocates pages and lists
//!   their frame numbers on the inflate queue; each page is dropped from the host's memory
//!   (`madvise(MADV_REMOVE)` on the memfd-backed RAM, see `discard`). When the target shrinks
//!   it lists pages on the deflate queue and uses them again: they fault back in as zeros, so
//!   the host does nothing but count. The driver writes the balloon's size to config `actual`.
//! - Statistics (`STATS_VQ`, offered when a polling interval is configured): the driver posts
//!   one buffer of tagged values; the device keeps it and, every interval, gives it back, which
//!   the driver answers with a fresh buffer.
//! - Free page reporting (`REPORTING`): the driver lists free page blocks (typically 2 MiB)
//!   on the reporting queue, and they are dropped like inflated pages, without leaving the
//!   guest: the guest keeps using them and they come back as zeros. `PAGE_POISON` is offered
//!   with it, as Linux turns reporting off without it when it fills free pages (`init_on_free`,
//!   page poisoning); a guest that expects a non-zero pattern in free pages (its `poison_val`)
//!   gets its reports returned without anything dropped, as QEMU does.
//!
//! Queues that depend on features exist only if the feature was negotiated, and the ones after
//! them move down (Linux's `init_vqs` leaves them out of `find_vqs`, which numbers the queues
//! it sets up consecutively): see [`queue_roles`].

mod control;
mod discard;
mod stats;
mod worker;

#[cfg(test)]
mod device_tests;
#[cfg(test)]
mod discard_tests;
#[cfg(test)]
mod harness;
#[cfg(test)]
mod pfn_tests;
#[cfg(test)]
mod reporting_tests;
#[cfg(test)]
mod stats_tests;
#[cfg(test)]
mod transport_tests;

pub use control::{BalloonControl, BalloonError, BalloonStatus};
pub use stats::BalloonStats;

use crate::device::{read_config_bytes, ActivateError, Activation, QueueHandle};
use crate::worker::Worker;
use crate::{features, types, GuestMemory, VirtioDevice};
use control::{lock, ConfigState, Counters, Shared};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};
use worker::BalloonWorker;

/// The balloon's unit: page frame numbers and `num_pages`/`actual` count 4 KiB pages,
/// whatever the guest's or host's page size (`VIRTIO_BALLOON_PFN_SHIFT`).
pub const PAGE_SIZE: u64 = 4096;
const PFN_SHIFT: u32 = 12;
/// Every queue gets the same size, so that a queue keeps a valid size whichever role the
/// negotiated features give its index. Linux's page reporting needs at least 32 entries.
pub const QUEUE_SIZE: u16 = 256;

/// Feature bits of virtio-balloon (virtio 1.2, 5.5.3).
pub mod feature_bits {
    pub const MUST_TELL_HOST: u64 = 1 << 0;
    pub const STATS_VQ: u64 = 1 << 1;
    pub const DEFLATE_ON_OOM: u64 = 1 << 2;
    pub const FREE_PAGE_HINT: u64 = 1 << 3;
    pub const PAGE_POISON: u64 = 1 << 4;
    pub const REPORTING: u64 = 1 << 5;
}
use feature_bits::*;

/// `--balloon [size=SIZE][,stats=SECONDS][,free-page-reporting=on]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonConfig {
    /// Balloon size requested from boot, in bytes (rounded down to 4 KiB pages).
    pub initial_target: u64,
    /// How often the guest is asked for memory statistics; `None` or zero: never (the stats
    /// queue is not offered).
    pub stats_interval: Option<Duration>,
    /// Offer free page reporting: the guest hands back its free memory on its own.
    pub free_page_reporting: bool,
    /// Let the guest deflate the balloon when it would otherwise run out of memory.
    pub deflate_on_oom: bool,
}

/// Which queue an index of the transport is, for the negotiated `features` (virtio 1.2, 5.5.2:
/// inflateq, deflateq, statsq if STATS_VQ, free_page_vq if FREE_PAGE_HINT, reporting_vq if
/// REPORTING; the absent ones take no index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueRole {
    Inflate,
    Deflate,
    Stats,
    /// Never offered: free page hinting is for migration, which Vireo does not do.
    FreePageHint,
    Reporting,
}

pub fn queue_roles(features: u64) -> Vec<QueueRole> {
    let mut roles = vec![QueueRole::Inflate, QueueRole::Deflate];
    if features & STATS_VQ != 0 {
        roles.push(QueueRole::Stats);
    }
    if features & FREE_PAGE_HINT != 0 {
        roles.push(QueueRole::FreePageHint);
    }
    if features & REPORTING != 0 {
        roles.push(QueueRole::Reporting);
    }
    roles
}

pub struct Balloon {
    features: u64,
    stats_interval: Option<Duration>,
    /// One per queue of the offered features: the transport sizes its queue array before the
    /// driver negotiates, and a driver that accepts everything (Linux) uses them all.
    max_sizes: Vec<u16>,
    shared: Arc<Shared>,
    worker: Option<Worker>,
}

impl Balloon {
    /// A balloon for a guest with RAM `mem`, and the control the VMM keeps.
    pub fn new(
        cfg: BalloonConfig,
        mem: &GuestMemory,
    ) -> Result<(Balloon, BalloonControl), BalloonError> {
        let ram_bytes = mem.iter().map(|r| r.len()).sum();
        let stats_interval = cfg.stats_interval.filter(|d| !d.is_zero());
        let mut features =
            features::VERSION_1 | features::RING_EVENT_IDX | features::RING_INDIRECT_DESC;
        if stats_interval.is_some() {
            features |= STATS_VQ;
        }
        if cfg.free_page_reporting {
            features |= REPORTING | PAGE_POISON;
        }
        if cfg.deflate_on_oom {
            features |= DEFLATE_ON_OOM;
        }
        let shared = Arc::new(Shared {
            config: Mutex::new(ConfigState {
                num_pages: 0,
                actual: 0,
                poison_val: 0,
                interrupt: None,
            }),
            stats: Mutex::new(None),
            counters: Counters::default(),
        });
        let control = BalloonControl { shared, ram_bytes };
        control.set_target(cfg.initial_target)?;
        let balloon = Balloon {
            features,
            stats_interval,
            max_sizes: vec![QUEUE_SIZE; queue_roles(features).len()],
            shared: control.shared.clone(),
            worker: None,
        };
        Ok((balloon, control))
    }
}

impl VirtioDevice for Balloon {
    fn device_type(&self) -> u32 {
        types::BALLOON
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &self.max_sizes
    }

    fn features(&self) -> u64 {
        self.features
    }

    /// `struct virtio_balloon_config`: num_pages, actual, free_page_hint_cmd_id (0: no hinting),
    /// poison_val.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut cfg = [0u8; 16];
        {
            let c = lock(&self.shared.config);
            cfg[0..4].copy_from_slice(&c.num_pages.to_le_bytes());
            cfg[4..8].copy_from_slice(&c.actual.to_le_bytes());
            cfg[12..16].copy_from_slice(&c.poison_val.to_le_bytes());
        }
        read_config_bytes(&cfg, offset, data)
    }

    /// `actual` and `poison_val` are the driver's to write, at any width and alignment; the
    /// rest is the device's.
    fn write_config(&mut self, offset: u64, data: &[u8]) {
        let mut c = lock(&self.shared.config);
        let mut words = [c.actual.to_le_bytes(), c.poison_val.to_le_bytes()];
        for (i, &b) in data.iter().enumerate() {
            let slot = offset.checked_add(i as u64).and_then(|o| match o {
                4..=7 => words[0].get_mut((o - 4) as usize),
                12..=15 => words[1].get_mut((o - 12) as usize),
                _ => None,
            });
            match slot {
                Some(s) => *s = b,
                None => tracing::debug!(offset, "virtio-balloon: write to a read-only field"),
            }
        }
        c.actual = u32::from_le_bytes(words[0]);
        c.poison_val = u32::from_le_bytes(words[1]);
    }

    fn activate(&mut self, act: Activation) -> Result<(), ActivateError> {
        let roles = queue_roles(act.features);
        let mut by_role: Vec<(QueueRole, QueueHandle)> = Vec::new();
        for q in act.queues {
            match roles.get(usize::from(q.index)) {
                Some(&role) => by_role.push((role, q)),
                None => tracing::debug!(
                    queue = q.index,
                    "virtio-balloon: queue beyond the negotiated features, ignored"
                ),
            }
        }
        let mut take = |role| {
            by_role
                .iter()
                .position(|(r, _)| *r == role)
                .map(|i| by_role.swap_remove(i).1)
        };
        let (Some(inflate), Some(deflate)) = (take(QueueRole::Inflate), take(QueueRole::Deflate))
        else {
            return Err(ActivateError::Queues(
                "virtio-balloon needs its inflate and deflate queues".into(),
            ));
        };
        let stats = take(QueueRole::Stats);
        let reporting = take(QueueRole::Reporting);
        // Dropping a page makes it read as zeros: wrong for a guest that checks its free pages
        // hold another pattern. The driver wrote its value before DRIVER_OK.
        let keep_reported =
            act.features & PAGE_POISON != 0 && lock(&self.shared.config).poison_val != 0;
        let interval = stats.as_ref().and(self.stats_interval);
        let mut w = BalloonWorker::new(worker::Queues {
            inflate,
            deflate,
            stats,
            reporting,
            interval,
            keep_reported,
            mem: act.mem,
            interrupt: act.interrupt.clone(),
            writes: act.writes,
            shared: self.shared.clone(),
        })?;
        let sources = w.sources();
        self.worker = Some(Worker::spawn("virtio-balloon", &sources, move |i| {
            w.handle(i)
        })?);
        let pending = {
            let mut c = lock(&self.shared.config);
            c.interrupt = Some(act.interrupt.clone());
            c.num_pages != c.actual
        };
        // A target set before the driver ran: Linux reads it at probe, but a driver that
        // does not is told now.
        if pending {
            act.interrupt.config();
        }
        Ok(())
    }

    fn reset(&mut self) {
        if let Some(mut w) = self.worker.take() {
            w.stop();
        }
        let mut c = lock(&self.shared.config);
        c.interrupt = None;
        // A new driver starts with an empty balloon; the host's target stays.
        c.actual = 0;
        c.poison_val = 0;
    }

    fn counters(&self) -> Vec<(&'static str, u64)> {
        let c = &self.shared.counters;
        vec![
            ("inflated_pages", c.inflated_pages.load(Relaxed)),
            ("deflated_pages", c.deflated_pages.load(Relaxed)),
            ("reported_pages", c.reported_pages.load(Relaxed)),
            ("bad_pfns", c.bad_pfns.load(Relaxed)),
            ("stats_updates", c.stats_updates.load(Relaxed)),
            ("errors", c.errors.load(Relaxed)),
        ]
    }
}
