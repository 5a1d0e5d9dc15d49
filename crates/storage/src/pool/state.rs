//! The pool's metadata in memory: volumes and snapshots with their block maps, the block
//! table (where each block is, how many map slots hold it, its dedup hash) and the free
//! space. Every change goes through [`State::apply`], live or replayed from the journal.

use super::alloc::Allocator;
use super::device::DATA_START;
use super::journal::{Checkpoint, Loc, Record, VolMeta};
use super::tree::{BlockMap, Forest};
use crate::error::{Result, StorageError};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::AtomicU32;

pub struct BlockRec {
    pub loc: Loc,
    /// Map slots (counted once per distinct leaf node) holding this block.
    pub refs: u32,
    pub hash: Option<[u8; 32]>,
    /// Accesses since the last tiering pass, decayed by each pass.
    pub heat: AtomicU32,
}

pub struct Vol {
    pub meta: VolMeta,
    pub map: BlockMap,
    /// Entries of the map that are not holes.
    pub mapped: u64,
}

/// Runs of sectors (device, start, count) freed since the last commit, and their total.
#[derive(Default)]
pub struct Pending {
    pub runs: Vec<(u16, u64, u64)>,
    pub sectors: u64,
}

impl Pending {
    fn push(&mut self, loc: &Loc) {
        self.runs.push((loc.dev, loc.sector, u64::from(loc.nsect)));
        self.sectors += u64::from(loc.nsect);
    }

    /// Puts back runs taken by a commit that failed, ahead of the ones freed since.
    pub fn restore(&mut self, mut taken: Pending) {
        taken.runs.append(&mut self.runs);
        taken.sectors += self.sectors;
        *self = taken;
    }
}

#[derive(Default)]
pub struct State {
    pub vols: BTreeMap<u32, Vol>,
    pub blocks: HashMap<u64, BlockRec>,
    pub ddt: HashMap<[u8; 32], u64>,
    pub next_id: u64,
    pub next_vid: u32,
    /// Per device; rebuilt from the block table at open.
    pub allocs: Vec<Allocator>,
    /// Sectors freed since the last commit: reusable once that commit is durable.
    pub pending: Pending,
    /// Encoded records not yet in the journal file.
    pub journal: Vec<u8>,
    pub block_size: u64,
}

impl State {
    pub fn vid(&self, name: &str) -> Option<u32> {
        self.vols
            .iter()
            .find(|(_, v)| v.meta.name == name)
            .map(|(&vid, _)| vid)
    }

    pub fn vol(&self, vid: u32) -> Result<&Vol> {
        self.vols
            .get(&vid)
            .ok_or_else(|| StorageError::NotFound("the volume was deleted".into()))
    }

    /// Applies a change and queues it for the journal.
    pub fn log(&mut self, rec: Record) {
        super::journal::encode(&rec, &mut self.journal);
        self.apply(rec);
    }

    pub fn apply(&mut self, rec: Record) {
        match rec {
            Record::Block { id, loc, hash } => {
                if let Some(h) = hash {
                    self.ddt.insert(h, id);
                }
                self.blocks.insert(
                    id,
                    BlockRec {
                        loc,
                        refs: 0,
                        hash,
                        heat: AtomicU32::new(0),
                    },
                );
                self.next_id = self.next_id.max(id + 1);
            }
            Record::Move { id, loc } => {
                if let Some(b) = self.blocks.get_mut(&id) {
                    let old = std::mem::replace(&mut b.loc, loc);
                    self.pending.push(&old);
                }
            }
            Record::Set { vid, idx, id } => {
                let Some(vol) = self.vols.get_mut(&vid) else {
                    return;
                };
                let blocks = &mut self.blocks;
                let old = vol.map.set(idx, id, &mut |c| {
                    if let Some(b) = blocks.get_mut(&c) {
                        b.refs += 1;
                    }
                });
                if id != 0 {
                    if let Some(b) = blocks.get_mut(&id) {
                        b.refs += 1;
                    }
                }
                vol.mapped = vol.mapped + u64::from(id != 0) - u64::from(old != 0);
                if old != 0 {
                    self.unref(old);
                }
            }
            Record::Create { vid, meta } => {
                self.vols.insert(
                    vid,
                    Vol {
                        meta,
                        map: BlockMap::default(),
                        mapped: 0,
                    },
                );
                self.next_vid = self.next_vid.max(vid + 1);
            }
            Record::Share { vid, from } => {
                let Some(src) = self.vols.get(&from) else {
                    return;
                };
                let (map, mapped) = (src.map.clone(), src.mapped);
                if let Some(vol) = self.vols.get_mut(&vid) {
                    let old = std::mem::replace(&mut vol.map, map);
                    vol.mapped = mapped;
                    self.release(old);
                }
            }
            Record::Resize { vid, size } => {
                if let Some(v) = self.vols.get_mut(&vid) {
                    v.meta.size = size;
                }
            }
            Record::Qos { vid, iops, bps } => {
                if let Some(v) = self.vols.get_mut(&vid) {
                    v.meta.iops = iops;
                    v.meta.bps = bps;
                }
            }
            Record::Delete { vid } => {
                if let Some(vol) = self.vols.remove(&vid) {
                    self.release(vol.map);
                }
            }
        }
    }

    fn release(&mut self, map: BlockMap) {
        let mut gone = Vec::new();
        map.release(&mut |id| gone.push(id));
        for id in gone {
            self.unref(id);
        }
    }

    fn unref(&mut self, id: u64) {
        let Some(b) = self.blocks.get_mut(&id) else {
            return;
        };
        b.refs = b.refs.saturating_sub(1);
        if b.refs > 0 {
            return;
        }
        if let Some(b) = self.blocks.remove(&id) {
            if let Some(h) = b.hash {
                if self.ddt.get(&h) == Some(&id) {
                    self.ddt.remove(&h);
                }
            }
            self.pending.push(&b.loc);
        }
    }

    /// Bytes freed since the last commit.
    pub fn pending_bytes(&self) -> u64 {
        self.pending.sectors * super::alloc::SECTOR
    }

    /// Bytes thick volumes have reserved and not yet written.
    pub fn reserved_bytes(&self) -> u64 {
        self.vols
            .values()
            .filter(|v| v.meta.thick && v.meta.snapshot_of.is_none())
            .map(|v| {
                let blocks = v.meta.size.div_ceil(self.block_size);
                blocks.saturating_sub(v.mapped) * self.block_size
            })
            .sum()
    }

    pub fn checkpoint(&self, generation: u64) -> Checkpoint {
        Checkpoint {
            generation,
            next_id: self.next_id,
            next_vid: self.next_vid,
            vols: self
                .vols
                .iter()
                .map(|(&vid, v)| (vid, v.meta.clone()))
                .collect(),
            blocks: self
                .blocks
                .iter()
                .map(|(&id, b)| (id, b.loc, b.hash))
                .collect(),
            forest: Forest::store(self.vols.iter().map(|(&vid, v)| (vid, &v.map))),
        }
    }

    /// The state a checkpoint describes (free space not yet built: see `build_allocators`).
    pub fn from_checkpoint(cp: Checkpoint, block_size: u64) -> std::result::Result<State, String> {
        let mut st = State {
            next_id: cp.next_id.max(1),
            next_vid: cp.next_vid.max(1),
            block_size,
            ..State::default()
        };
        for (id, loc, hash) in cp.blocks {
            st.apply(Record::Block { id, loc, hash });
        }
        let metas: HashMap<u32, VolMeta> = cp.vols.into_iter().collect();
        let blocks = &mut st.blocks;
        let maps = cp.forest.load(&mut |id| {
            if let Some(b) = blocks.get_mut(&id) {
                b.refs += 1;
            }
        })?;
        for (vid, map) in maps {
            let meta = metas.get(&vid).cloned().ok_or("a map without its volume")?;
            let mut mapped = 0;
            map.for_each(0, u64::MAX, &mut |_, _| mapped += 1);
            st.vols.insert(vid, Vol { meta, map, mapped });
        }
        Ok(st)
    }

    /// Drops blocks nothing references (stored, then never mapped before a crash) and
    /// builds each device's free space as what the blocks leave.
    pub fn build_allocators(&mut self, device_sectors: &[u64]) {
        self.blocks.retain(|_, b| b.refs > 0);
        let ddt_ok: Vec<[u8; 32]> = self
            .ddt
            .iter()
            .filter(|(_, id)| !self.blocks.contains_key(id))
            .map(|(h, _)| *h)
            .collect();
        for h in ddt_ok {
            self.ddt.remove(&h);
        }
        let mut used: Vec<Vec<(u64, u64)>> = vec![Vec::new(); device_sectors.len()];
        for b in self.blocks.values() {
            if let Some(u) = used.get_mut(b.loc.dev as usize) {
                u.push((b.loc.sector, u64::from(b.loc.nsect)));
            }
        }
        self.allocs = device_sectors
            .iter()
            .zip(used)
            .map(|(&end, u)| Allocator::new(DATA_START, end, u))
            .collect();
        self.pending = Pending::default();
    }
}
