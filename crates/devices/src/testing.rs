//! Test doubles shared by the device unit tests.

use crate::IrqLine;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// An interrupt line that records what the device did with it.
#[derive(Default)]
pub struct TestIrq {
    level: AtomicBool,
    pulses: AtomicUsize,
    level_changes: AtomicUsize,
}

impl TestIrq {
    pub fn level(&self) -> bool {
        self.level.load(Ordering::SeqCst)
    }
    pub fn pulses(&self) -> usize {
        self.pulses.load(Ordering::SeqCst)
    }
    pub fn level_changes(&self) -> usize {
        self.level_changes.load(Ordering::SeqCst)
    }
}

impl IrqLine for TestIrq {
    fn set_level(&self, high: bool) {
        self.level.store(high, Ordering::SeqCst);
        self.level_changes.fetch_add(1, Ordering::SeqCst);
    }
    fn pulse(&self) {
        self.pulses.fetch_add(1, Ordering::SeqCst);
    }
}

/// A tiny deterministic PRNG (xorshift64*) for the "hostile guest" tests, so the crate does not
/// need a `rand` dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn coin(&mut self) -> bool {
        self.next() & 1 == 0
    }
    /// One of the access sizes a guest can produce (1..=8 bytes).
    pub fn size(&mut self) -> usize {
        (self.next() % 8) as usize + 1
    }
}
