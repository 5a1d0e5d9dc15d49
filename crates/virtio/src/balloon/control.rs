//! What the VMM holds ([`BalloonControl`]) and the state it shares with the device: the
//! configuration fields, the last statistics, the counters.

use super::{BalloonStats, PFN_SHIFT};
use crate::device::Interrupt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BalloonError {
    #[error("a balloon of {requested} bytes is larger than guest RAM ({ram} bytes)")]
    TooLarge { requested: u64, ram: u64 },
}

/// What [`BalloonControl::status`] reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BalloonStatus {
    /// The size the host asked for (config `num_pages`).
    pub target_bytes: u64,
    /// The size the driver says the balloon has (config `actual`); 0 until a driver runs.
    pub actual_bytes: u64,
    /// Whether a driver is running the device.
    pub active: bool,
    /// The guest's last memory statistics, if it sent any.
    pub stats: Option<BalloonStats>,
}

/// The state shared by the device, its worker and the control.
pub(super) struct ConfigState {
    pub(super) num_pages: u32,
    pub(super) actual: u32,
    /// What the driver fills its free pages with (only meaningful with PAGE_POISON).
    pub(super) poison_val: u32,
    /// The running activation's interrupt, for configuration changes.
    pub(super) interrupt: Option<Arc<dyn Interrupt>>,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) inflated_pages: AtomicU64,
    pub(super) deflated_pages: AtomicU64,
    pub(super) reported_pages: AtomicU64,
    pub(super) bad_pfns: AtomicU64,
    pub(super) stats_updates: AtomicU64,
    pub(super) errors: AtomicU64,
}

pub(super) struct Shared {
    pub(super) config: Mutex<ConfigState>,
    pub(super) stats: Mutex<Option<BalloonStats>>,
    pub(super) counters: Counters,
}

/// Locks, recovering from poisoning: a panic elsewhere must not wedge the device.
pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The VMM's handle on the balloon (API requests). Cheap to clone.
#[derive(Clone)]
pub struct BalloonControl {
    pub(super) shared: Arc<Shared>,
    pub(super) ram_bytes: u64,
}

impl BalloonControl {
    /// Asks the guest for a balloon of `bytes` (rounded down to 4 KiB pages): more than it has
    /// inflates, less deflates. Tells a running driver with a configuration interrupt; a driver
    /// that starts later reads it at probe.
    pub fn set_target(&self, bytes: u64) -> Result<(), BalloonError> {
        if bytes > self.ram_bytes {
            return Err(BalloonError::TooLarge {
                requested: bytes,
                ram: self.ram_bytes,
            });
        }
        let pages = u32::try_from(bytes >> PFN_SHIFT).unwrap_or(u32::MAX);
        let interrupt = {
            let mut c = lock(&self.shared.config);
            c.num_pages = pages;
            c.interrupt.clone()
        };
        // Raised outside our lock: the transport's interrupt state has its own.
        if let Some(i) = interrupt {
            i.config();
        }
        Ok(())
    }

    pub fn status(&self) -> BalloonStatus {
        let (target, actual, active) = {
            let c = lock(&self.shared.config);
            (c.num_pages, c.actual, c.interrupt.is_some())
        };
        BalloonStatus {
            target_bytes: u64::from(target) << PFN_SHIFT,
            actual_bytes: u64::from(actual) << PFN_SHIFT,
            active,
            stats: lock(&self.shared.stats).clone(),
        }
    }
}
