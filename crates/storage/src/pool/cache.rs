//! The bounded in-memory read cache (`--cache SIZE`): decoded blocks (decompressed,
//! decrypted) by block id, least recently used first out. Raw blocks are left to the host's
//! page cache. Only raw blocks are written in place and ids are never reused, so a cached
//! block never goes stale.

use super::types::CacheInfo;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

pub struct Cache {
    capacity: u64,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    blocks: HashMap<u64, (Arc<[u8]>, u64)>,
    /// Last use → id.
    lru: BTreeMap<u64, u64>,
    tick: u64,
    bytes: u64,
    hits: u64,
    misses: u64,
}

impl Cache {
    pub fn new(capacity: u64) -> Cache {
        Cache {
            capacity,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn get(&self, id: u64) -> Option<Arc<[u8]>> {
        if self.capacity == 0 {
            return None;
        }
        let mut c = self.lock();
        c.tick += 1;
        let tick = c.tick;
        match c.blocks.get_mut(&id) {
            Some((data, used)) => {
                let (data, old) = (data.clone(), std::mem::replace(used, tick));
                c.lru.remove(&old);
                c.lru.insert(tick, id);
                c.hits += 1;
                Some(data)
            }
            None => {
                c.misses += 1;
                None
            }
        }
    }

    pub fn insert(&self, id: u64, data: Arc<[u8]>) {
        let len = data.len() as u64;
        if len > self.capacity {
            return;
        }
        let mut c = self.lock();
        while c.bytes + len > self.capacity {
            let Some((_, victim)) = c.lru.pop_first() else {
                break;
            };
            if let Some((d, _)) = c.blocks.remove(&victim) {
                c.bytes -= d.len() as u64;
            }
        }
        c.tick += 1;
        let tick = c.tick;
        if let Some((old, used)) = c.blocks.insert(id, (data, tick)) {
            c.bytes -= old.len() as u64;
            c.lru.remove(&used);
        }
        c.lru.insert(tick, id);
        c.bytes += len;
    }

    pub fn info(&self) -> CacheInfo {
        let c = self.lock();
        CacheInfo {
            capacity: self.capacity,
            bytes: c.bytes,
            hits: c.hits,
            misses: c.misses,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used() {
        let c = Cache::new(300);
        for id in 1..=3 {
            c.insert(id, vec![id as u8; 100].into());
        }
        assert!(c.get(1).is_some());
        c.insert(4, vec![4; 100].into());
        assert!(c.get(2).is_none(), "2 was the least recently used");
        assert!(c.get(1).is_some() && c.get(3).is_some() && c.get(4).is_some());
        let info = c.info();
        assert_eq!(info.bytes, 300);
        assert_eq!((info.hits, info.misses), (4, 1));
    }
}
