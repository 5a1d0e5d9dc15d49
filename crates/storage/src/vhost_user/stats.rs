//! Counters of one served volume, kept across frontend connections, for `vireo storage stats`.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Counters {
    pub connections: Counter,
    pub read_ops: Counter,
    pub read_bytes: Counter,
    pub write_ops: Counter,
    pub write_bytes: Counter,
    pub flushes: Counter,
    pub discards: Counter,
    pub write_zeroes: Counter,
    /// Requests answered with IOERR, and chains returned unprocessed.
    pub errors: Counter,
}

/// A snapshot of a [`super::VhostUserBlk`]'s counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct VhostUserStats {
    /// Frontends accepted so far (a VM restart is a new connection).
    pub connections: u64,
    /// Whether a frontend is connected now.
    pub connected: bool,
    pub read_ops: u64,
    pub read_bytes: u64,
    pub write_ops: u64,
    pub write_bytes: u64,
    pub flushes: u64,
    /// Discard ranges executed.
    pub discards: u64,
    /// Write-zeroes ranges executed.
    pub write_zeroes: u64,
    /// Requests answered with an I/O error, and malformed chains.
    pub errors: u64,
}

impl Counters {
    pub fn snapshot(&self, connected: bool) -> VhostUserStats {
        VhostUserStats {
            connections: self.connections.get(),
            connected,
            read_ops: self.read_ops.get(),
            read_bytes: self.read_bytes.get(),
            write_ops: self.write_ops.get(),
            write_bytes: self.write_bytes.get(),
            flushes: self.flushes.get(),
            discards: self.discards.get(),
            write_zeroes: self.write_zeroes.get(),
            errors: self.errors.get(),
        }
    }
}
