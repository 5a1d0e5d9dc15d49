//! A small least-recently-used cache of metadata tables (L2 tables, refcount blocks), keyed
//! by their offset in the image. L2 tables may be dirty: the caller writes them back (in the
//! right order with respect to other metadata) before they leave the cache.

use std::collections::HashMap;

pub(crate) struct Slot<T> {
    pub data: Vec<T>,
    /// Entries changed since the table was last written: `lo..hi`.
    pub dirty: Option<(usize, usize)>,
    used: u64,
}

impl<T> Slot<T> {
    /// Records that entry `i` changed.
    pub fn touch(&mut self, i: usize) {
        self.dirty = Some(match self.dirty {
            Some((lo, hi)) => (lo.min(i), hi.max(i + 1)),
            None => (i, i + 1),
        });
    }
}

pub(crate) struct TableCache<T> {
    slots: HashMap<u64, Slot<T>>,
    capacity: usize,
    clock: u64,
}

impl<T> TableCache<T> {
    pub fn new(capacity: usize) -> TableCache<T> {
        TableCache {
            slots: HashMap::new(),
            capacity: capacity.max(1),
            clock: 0,
        }
    }

    pub fn get(&mut self, offset: u64) -> Option<&mut Slot<T>> {
        self.clock += 1;
        let now = self.clock;
        let slot = self.slots.get_mut(&offset)?;
        slot.used = now;
        Some(slot)
    }

    pub fn contains(&self, offset: u64) -> bool {
        self.slots.contains_key(&offset)
    }

    /// The table to evict before one more can be inserted, and whether it is dirty.
    pub fn victim(&self) -> Option<(u64, bool)> {
        if self.slots.len() < self.capacity {
            return None;
        }
        self.slots
            .iter()
            .min_by_key(|(_, s)| s.used)
            .map(|(&off, s)| (off, s.dirty.is_some()))
    }

    /// Inserts (or replaces) a table; the caller made room with [`Self::victim`].
    pub fn insert(&mut self, offset: u64, data: Vec<T>, dirty: Option<(usize, usize)>) {
        self.clock += 1;
        self.slots.insert(
            offset,
            Slot {
                data,
                dirty,
                used: self.clock,
            },
        );
    }

    pub fn remove(&mut self, offset: u64) -> Option<Slot<T>> {
        self.slots.remove(&offset)
    }

    /// The offsets of the dirty tables, in file order.
    pub fn dirty(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .slots
            .iter()
            .filter(|(_, s)| s.dirty.is_some())
            .map(|(&o, _)| o)
            .collect();
        v.sort_unstable();
        v
    }
}
