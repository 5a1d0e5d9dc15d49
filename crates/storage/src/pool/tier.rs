//! Tiering (seed 4.3): new blocks go to fast devices while they have room; a background
//! pass, by the heat each block gathered (reads and writes since the previous pass, then
//! halved), moves the hottest blocks of the capacity tier up and, to make room, the
//! coldest blocks of the fast tier down.

use super::alloc::SECTOR;
use super::journal::Record;
use super::state::State;
use super::types::Tier;
use super::Pool;
use crate::error::{Result, StorageError};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often the background pass runs (`VIREO_TIER_INTERVAL` seconds overrides).
const INTERVAL: Duration = Duration::from_secs(30);
/// Blocks moved per pass at most (each move holds the pool's write lock while it copies).
const MAX_MOVES: usize = 4096;
/// A block must have been touched this often to earn a fast device.
const MIN_HEAT: u32 = 2;

pub fn start_background(pool: &Arc<Pool>) {
    let weak: Weak<Pool> = Arc::downgrade(pool);
    let interval = std::env::var("VIREO_TIER_INTERVAL")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(INTERVAL);
    let _ = std::thread::Builder::new()
        .name("tiering".into())
        .spawn(move || loop {
            // Sleep in short steps so the thread ends soon after the pool.
            let mut slept = Duration::ZERO;
            while slept < interval {
                std::thread::sleep(Duration::from_millis(200));
                slept += Duration::from_millis(200);
                if weak.strong_count() == 0 {
                    return;
                }
            }
            let Some(pool) = weak.upgrade() else {
                return;
            };
            match pool.rebalance_tiers() {
                Ok(0) => {}
                Ok(n) => tracing::info!(pool = %pool.name(), moved = n, "tiering pass"),
                Err(e) => tracing::warn!(pool = %pool.name(), "tiering pass: {e}"),
            }
        });
}

impl Pool {
    /// Moves blocks between tiers by their access heat now, instead of at the next
    /// background pass. Returns how many blocks moved.
    pub fn rebalance_tiers(&self) -> Result<u64> {
        let tiers: Vec<Tier> = self.devices().iter().map(|d| d.tier).collect();
        if !tiers.contains(&Tier::Fast) || !tiers.contains(&Tier::Capacity) {
            return Ok(0);
        }
        let hot = {
            let st = self.read_state();
            let mut hot: Vec<(u32, u64)> = self.heat_on(&st, Tier::Capacity, &tiers);
            hot.retain(|&(heat, _)| heat >= MIN_HEAT);
            hot.reverse(); // hottest first
            hot.truncate(MAX_MOVES);
            hot
        };
        // First pass: promote while the fast tier has room, and demote a colder block
        // for each hot one that does not fit. Demoted sectors are free after a commit.
        let (mut moved, waiting) = self.promote(&hot, &tiers, true)?;
        if !waiting.is_empty() {
            self.commit()?;
            moved += self.promote(&waiting, &tiers, false)?.0;
        }
        {
            let st = self.read_state();
            for b in st.blocks.values() {
                let h = b.heat.load(Ordering::Relaxed);
                b.heat.store(h / 2, Ordering::Relaxed);
            }
        }
        if moved > 0 {
            self.commit()?;
        }
        Ok(moved)
    }

    /// (heat, id) of the blocks on `tier`, coldest first.
    fn heat_on(&self, st: &State, tier: Tier, tiers: &[Tier]) -> Vec<(u32, u64)> {
        let mut v: Vec<(u32, u64)> = st
            .blocks
            .iter()
            .filter(|(_, b)| tiers.get(b.loc.dev as usize) == Some(&tier))
            .map(|(&id, b)| (b.heat.load(Ordering::Relaxed), id))
            .collect();
        v.sort_unstable();
        v
    }

    /// Moves `hot` blocks to the fast tier; with `demote`, makes room for those that do
    /// not fit by moving colder blocks down, and returns them to retry.
    fn promote(
        &self,
        hot: &[(u32, u64)],
        tiers: &[Tier],
        demote: bool,
    ) -> Result<(u64, Vec<(u32, u64)>)> {
        let cold = if demote {
            self.heat_on(&self.read_state(), Tier::Fast, tiers)
        } else {
            Vec::new()
        };
        let mut cold = cold.into_iter();
        let (mut moved, mut waiting) = (0, Vec::new());
        for &(heat, id) in hot {
            // The write lock for one move at a time: I/O goes on between moves.
            let mut st = self.write_state();
            if self.move_block(&mut st, id, Tier::Fast, tiers)? {
                moved += 1;
                continue;
            }
            match cold.next() {
                Some((cold_heat, cold_id)) if cold_heat < heat => {
                    if !self.move_block(&mut st, cold_id, Tier::Capacity, tiers)? {
                        break;
                    }
                    moved += 1;
                    waiting.push((heat, id));
                }
                _ => break,
            }
        }
        Ok((moved, waiting))
    }

    /// Copies block `id` to a device of `tier`; false when that tier has no room.
    fn move_block(&self, st: &mut State, id: u64, tier: Tier, tiers: &[Tier]) -> Result<bool> {
        let Some(rec) = st.blocks.get(&id) else {
            return Ok(false);
        };
        let old = rec.loc;
        let Some(new) = self.allocate_on(
            st,
            u64::from(old.nsect),
            old.codec,
            old.len,
            tiers,
            Some(tier),
        ) else {
            return Ok(false);
        };
        let io = |e| StorageError::Io {
            path: self.dir.clone(),
            source: e,
        };
        let mut buf = vec![0u8; (u64::from(old.nsect) * SECTOR) as usize];
        self.device(old.dev)
            .map_err(io)?
            .read(&mut buf, old.sector, 0)
            .map_err(io)?;
        // The encryption tweak is the sector's address: re-encrypt for the new place.
        self.codec.decrypt(&mut buf, Pool::tweak(&old, 0));
        self.codec.encrypt(&mut buf, Pool::tweak(&new, 0));
        self.device(new.dev)
            .map_err(io)?
            .write(&buf, new.sector, 0)
            .map_err(io)?;
        st.log(Record::Move { id, loc: new });
        Ok(true)
    }
}
