//! Free space of one device, in 4 KiB sectors: a map of free runs, allocated next-fit so
//! that sequential writes land sequentially.
//!
//! Nothing of it is stored: at open it is rebuilt as the complement of the blocks the
//! maps reference. Freed runs wait in the pool's pending list until the commit that makes
//! their release durable (see `Pool::commit`), so a crash never finds a live block's
//! sectors holding another block's data.

use std::collections::BTreeMap;

pub const SECTOR: u64 = 4096;

pub struct Allocator {
    /// start → length of each free run; adjacent runs are always merged.
    free: BTreeMap<u64, u64>,
    free_sectors: u64,
    cursor: u64,
}

impl Allocator {
    /// All of `[start, end)` free except the `used` runs (start, len), which may be unsorted.
    pub fn new(start: u64, end: u64, mut used: Vec<(u64, u64)>) -> Allocator {
        used.sort_unstable();
        let mut a = Allocator {
            free: BTreeMap::new(),
            free_sectors: 0,
            cursor: start,
        };
        let mut pos = start;
        for (s, len) in used {
            if s > pos {
                a.insert(pos, s.min(end) - pos);
            }
            pos = pos.max(s + len);
        }
        if end > pos {
            a.insert(pos, end - pos);
        }
        a
    }

    pub fn free_sectors(&self) -> u64 {
        self.free_sectors
    }

    fn insert(&mut self, start: u64, len: u64) {
        if len > 0 {
            self.free.insert(start, len);
            self.free_sectors += len;
        }
    }

    /// `len` contiguous sectors, from the cursor on (wrapping).
    pub fn alloc(&mut self, len: u64) -> Option<u64> {
        let found = self
            .free
            .range(self.cursor..)
            .chain(self.free.range(..self.cursor))
            .find(|(_, &l)| l >= len)
            .map(|(&s, &l)| (s, l));
        let (s, l) = found?;
        self.free.remove(&s);
        self.free_sectors -= l;
        self.insert(s + len, l - len);
        self.cursor = s + len;
        Some(s)
    }

    /// Returns `[start, start+len)` to the free space, merging with its neighbours.
    pub fn release(&mut self, start: u64, len: u64) {
        let (mut s, mut l) = (start, len);
        if let Some((&ps, &pl)) = self.free.range(..s).next_back() {
            if ps + pl == s {
                self.free.remove(&ps);
                self.free_sectors -= pl;
                s = ps;
                l += pl;
            }
        }
        if let Some(&nl) = self.free.get(&(start + len)) {
            self.free.remove(&(start + len));
            self.free_sectors -= nl;
            l += nl;
        }
        self.insert(s, l);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alloc_release_merge() {
        let mut a = Allocator::new(10, 100, vec![(50, 10), (20, 5)]);
        assert_eq!(a.free_sectors(), 90 - 15);
        assert_eq!(a.alloc(10), Some(10)); // [10,20) fits exactly
        assert_eq!(a.alloc(16), Some(25)); // [25,50) holds 25
        assert_eq!(a.alloc(10), Some(60)); // 9 left at 41: too small
        a.release(10, 10);
        a.release(20, 5);
        a.release(25, 16);
        assert_eq!(a.free.get(&10), Some(&40));
        assert_eq!(a.alloc(200), None);
        assert_eq!(a.free_sectors(), 90 - 10 - 10);
    }
}
