//! Reading and writing volumes: the data path every serving protocol ends in.
//!
//! Reads and in-place overwrites run under the state's read lock, so many proceed at once.
//! A write that changes the metadata (a new block, a copy-on-write of a block a snapshot
//! shares, dedup, compression) takes the write lock, stores the block's data first and
//! only then logs the records that point at it.

use super::alloc::SECTOR;
use super::codec::{Codec, RAW};
use super::journal::{Loc, Record};
use super::state::State;
use super::types::{Tier, VolumeStats};
use super::{lock, Pool};
use crate::block::{BlockDevice, Extent};
use crate::error::StorageError;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use vireo_virtio::rate_limiter::TokenBucket;

/// Freed bytes awaiting a commit beyond which a write commits (see `Pool::write`).
const RECYCLE_AFTER: u64 = 64 << 20;

fn to_io(e: StorageError) -> io::Error {
    let kind = match e {
        StorageError::NoSpace(_) => io::ErrorKind::StorageFull,
        StorageError::Invalid(_) => io::ErrorKind::InvalidInput,
        _ => io::ErrorKind::Other,
    };
    io::Error::new(kind, e.to_string())
}

/// Counters and rate limits of one volume, shared by all its open handles.
pub struct VolRuntime {
    counters: [AtomicU64; 8],
    /// Whether `limits` holds a bucket: unlimited volumes (the usual case) skip its lock.
    limited: AtomicBool,
    limits: Mutex<(Option<TokenBucket>, Option<TokenBucket>)>,
    epoch: Instant,
}

enum Counter {
    Reads,
    Writes,
    ReadBytes,
    WrittenBytes,
    Flushes,
    Trims,
    Errors,
    Throttled,
}

/// A bucket of one second of `rate`: the burst a volume may take after idling.
fn bucket(rate: Option<u64>) -> Option<TokenBucket> {
    TokenBucket::with_refill(rate?, 0, Duration::from_secs(1))
}

impl VolRuntime {
    pub fn new(iops: Option<u64>, bps: Option<u64>) -> VolRuntime {
        VolRuntime {
            counters: Default::default(),
            limited: AtomicBool::new(iops.is_some() || bps.is_some()),
            limits: Mutex::new((bucket(iops), bucket(bps))),
            epoch: Instant::now(),
        }
    }

    pub fn set_limits(&self, iops: Option<u64>, bps: Option<u64>) {
        *lock(&self.limits) = (bucket(iops), bucket(bps));
        self.limited
            .store(iops.is_some() || bps.is_some(), Ordering::Relaxed);
    }

    fn count(&self, c: Counter, n: u64) {
        self.counters[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    /// Waits until the volume's buckets hold one operation and `bytes`.
    fn throttle(&self, bytes: u64) {
        if !self.limited.load(Ordering::Relaxed) {
            return;
        }
        let mut waited = false;
        loop {
            let wait = {
                let mut l = lock(&self.limits);
                let now = self.epoch.elapsed();
                let w_ops = l.0.as_mut().map_or(Duration::ZERO, |b| b.wait_time(1, now));
                let w_bytes =
                    l.1.as_mut()
                        .map_or(Duration::ZERO, |b| b.wait_time(bytes, now));
                let wait = w_ops.max(w_bytes);
                if wait.is_zero() {
                    if let Some(b) = l.0.as_mut() {
                        b.take(1);
                    }
                    if let Some(b) = l.1.as_mut() {
                        b.take(bytes);
                    }
                }
                wait
            };
            if wait.is_zero() {
                break;
            }
            waited = true;
            std::thread::sleep(wait);
        }
        if waited {
            self.count(Counter::Throttled, 1);
        }
    }

    pub fn stats(&self) -> VolumeStats {
        let c = |i: Counter| self.counters[i as usize].load(Ordering::Relaxed);
        VolumeStats {
            reads: c(Counter::Reads),
            writes: c(Counter::Writes),
            read_bytes: c(Counter::ReadBytes),
            written_bytes: c(Counter::WrittenBytes),
            flushes: c(Counter::Flushes),
            trims: c(Counter::Trims),
            errors: c(Counter::Errors),
            throttled: c(Counter::Throttled),
        }
    }
}

/// An open volume or snapshot: what the serving paths read and write.
pub struct Volume {
    pool: Arc<Pool>,
    vid: u32,
    name: String,
    read_only: bool,
    rt: Arc<VolRuntime>,
}

/// The part of a request inside one block: block index, offset in the block, and the
/// request's byte range.
struct Piece {
    idx: u64,
    off: usize,
    start: usize,
    end: usize,
}

fn pieces(offset: u64, len: usize, bs: u64) -> impl Iterator<Item = Piece> {
    let mut done = 0usize;
    std::iter::from_fn(move || {
        if done >= len {
            return None;
        }
        let pos = offset + done as u64;
        let off = (pos % bs) as usize;
        let n = (bs as usize - off).min(len - done);
        let p = Piece {
            idx: pos / bs,
            off,
            start: done,
            end: done + n,
        };
        done += n;
        Some(p)
    })
}

impl Volume {
    pub(super) fn new(
        pool: Arc<Pool>,
        vid: u32,
        name: String,
        read_only: bool,
        rt: Arc<VolRuntime>,
    ) -> Volume {
        Volume {
            pool,
            vid,
            name,
            read_only,
            rt,
        }
    }

    /// `POOL/VOL` or `POOL/VOL@SNAP`.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn writable(&self) -> io::Result<()> {
        if self.read_only {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} is a snapshot: snapshots are read-only", self.name),
            ));
        }
        Ok(())
    }

    /// A flush (also what FUA does), counted as one; errors are counted by the caller.
    fn commit(&self) -> io::Result<()> {
        self.rt.count(Counter::Flushes, 1);
        self.pool.commit().map_err(to_io)
    }

    fn unmap(&self, offset: u64, len: u64) -> io::Result<()> {
        self.rt.throttle(0);
        self.rt.count(Counter::Trims, 1);
        self.pool.trim(self, offset, len)
    }

    /// Counts a failed request once.
    fn counted<T>(&self, r: io::Result<T>) -> io::Result<T> {
        if r.is_err() {
            self.rt.count(Counter::Errors, 1);
        }
        r
    }

    fn check(&self, st: &State, offset: u64, len: u64) -> io::Result<()> {
        let size = st.vol(self.vid).map_err(to_io)?.meta.size;
        crate::block::check_range(offset, len, size)
    }
}

impl BlockDevice for Volume {
    fn size(&self) -> u64 {
        let st = self.pool.read_state();
        st.vols.get(&self.vid).map_or(0, |v| v.meta.size)
    }

    fn block_size(&self) -> u32 {
        self.pool.block_size as u32
    }

    fn read_only(&self) -> bool {
        self.read_only
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.rt.throttle(buf.len() as u64);
        self.rt.count(Counter::Reads, 1);
        self.rt.count(Counter::ReadBytes, buf.len() as u64);
        let r = self.pool.read(self, buf, offset);
        self.counted(r)
    }

    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.writable()?;
        self.rt.throttle(data.len() as u64);
        self.rt.count(Counter::Writes, 1);
        self.rt.count(Counter::WrittenBytes, data.len() as u64);
        let mut r = self.pool.write(self, data, offset);
        if r.is_ok() && fua {
            r = self.commit();
        }
        self.counted(r)
    }

    fn flush(&self) -> io::Result<()> {
        let r = self.commit();
        self.counted(r)
    }

    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.writable()?;
        let r = self.unmap(offset, len);
        self.counted(r)
    }

    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool, fua: bool) -> io::Result<()> {
        self.writable()?;
        let mut r = if may_unmap {
            self.unmap(offset, len)
        } else {
            self.rt.throttle(len);
            self.rt.count(Counter::Writes, 1);
            self.pool.write_zeroes(self, offset, len)
        };
        if r.is_ok() && fua {
            r = self.commit();
        }
        self.counted(r)
    }

    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        let st = self.pool.read_state();
        self.check(&st, offset, len)?;
        if len == 0 {
            return Ok(Vec::new());
        }
        let bs = self.pool.block_size;
        let vol = st.vol(self.vid).map_err(to_io)?;
        let end = offset + len;
        // Runs of mapped blocks, from the tree (holes cost nothing to skip). Enough for one
        // answer: past MAX_RUNS the client asks again for the rest.
        const MAX_RUNS: usize = 512;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut full = false;
        vol.map
            .for_each(offset / bs, (end - 1) / bs + 1, &mut |idx, _| {
                if full {
                    return;
                }
                if let Some(run) = runs.last_mut().filter(|r| r.1 == idx) {
                    run.1 += 1;
                } else if runs.len() == MAX_RUNS {
                    full = true;
                } else {
                    runs.push((idx, idx + 1));
                }
            });
        let extent = |len, hole| Extent {
            len,
            hole,
            zero: hole,
        };
        let mut out = Vec::new();
        let mut pos = offset;
        for (first, last) in runs {
            let (start, stop) = ((first * bs).max(offset), (last * bs).min(end));
            if start > pos {
                out.push(extent(start - pos, true));
            }
            out.push(extent(stop - start, false));
            pos = stop;
        }
        if !full && pos < end {
            out.push(extent(end - pos, true));
        }
        Ok(out)
    }
}

impl Pool {
    /// The pool-wide address of a device sector: the encryption tweak.
    pub(super) fn tweak(loc: &Loc, sector_in_block: u64) -> u128 {
        (u128::from(loc.dev) << 64) | u128::from(loc.sector + sector_in_block)
    }

    pub(super) fn device(&self, dev: u16) -> io::Result<Arc<super::device::Device>> {
        self.devices()
            .get(dev as usize)
            .cloned()
            .ok_or_else(|| io::Error::other("a block on a device the pool does not have"))
    }

    /// Reads bytes `[off, off+out.len())` of block `id`.
    fn read_block(&self, st: &State, id: u64, off: usize, out: &mut [u8]) -> io::Result<()> {
        let rec = st
            .blocks
            .get(&id)
            .ok_or_else(|| io::Error::other(format!("block {id} is missing")))?;
        rec.heat.fetch_add(1, Ordering::Relaxed);
        let loc = rec.loc;
        let dev = self.device(loc.dev)?;
        if loc.codec == RAW && !self.codec.encrypted() {
            return dev.read(out, loc.sector, off as u64);
        }
        if loc.codec == RAW {
            // Decrypt only the sectors the range touches.
            let first = off as u64 / SECTOR;
            let last = (off + out.len()) as u64;
            let n = last.div_ceil(SECTOR) - first;
            let mut buf = vec![0u8; (n * SECTOR) as usize];
            dev.read(&mut buf, loc.sector + first, 0)?;
            self.codec.decrypt(&mut buf, Pool::tweak(&loc, first));
            let skip = off - (first * SECTOR) as usize;
            out.copy_from_slice(&buf[skip..skip + out.len()]);
            return Ok(());
        }
        let block = match self.cache.get(id) {
            Some(b) => b,
            None => {
                let mut stored = vec![0u8; loc.nsect as usize * SECTOR as usize];
                dev.read(&mut stored, loc.sector, 0)?;
                self.codec.decrypt(&mut stored, Pool::tweak(&loc, 0));
                let mut block = vec![0u8; self.block_size as usize];
                Codec::decompress(loc.codec, &stored, loc.len, &mut block)?;
                let block: Arc<[u8]> = block.into();
                self.cache.insert(id, block.clone());
                block
            }
        };
        let src = block
            .get(off..off + out.len())
            .ok_or_else(|| io::Error::other("read past a block"))?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn read(&self, vol: &Volume, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let st = self.read_state();
        vol.check(&st, offset, buf.len() as u64)?;
        let map = &st.vol(vol.vid).map_err(to_io)?.map;
        for p in pieces(offset, buf.len(), self.block_size) {
            let out = &mut buf[p.start..p.end];
            match map.get(p.idx) {
                0 => out.fill(0),
                id => self.read_block(&st, id, p.off, out)?,
            }
        }
        Ok(())
    }

    /// Where the block at `idx` is, if it may be overwritten in place: raw, held by this map
    /// alone, not deduplicated, and (when encrypted) written in whole sectors. Counts the
    /// access in its heat.
    fn in_place(&self, st: &State, vid: u32, p: &Piece) -> Option<Loc> {
        if self.dedup {
            return None;
        }
        let map = &st.vols.get(&vid)?.map;
        let rec = st.blocks.get(&map.get(p.idx))?;
        let aligned = (p.off as u64).is_multiple_of(SECTOR)
            && ((p.end - p.start) as u64).is_multiple_of(SECTOR);
        let ok = rec.loc.codec == RAW
            && rec.refs == 1
            && (aligned || !self.codec.encrypted())
            && map.exclusive(p.idx);
        if ok {
            rec.heat.fetch_add(1, Ordering::Relaxed);
        }
        ok.then_some(rec.loc)
    }

    /// Raw blocks are never cached (see `cache`), so nothing goes stale here.
    fn write_in_place(&self, loc: &Loc, p: &Piece, data: &[u8]) -> io::Result<()> {
        let dev = self.device(loc.dev)?;
        if self.codec.encrypted() {
            let mut buf = data.to_vec();
            let first = p.off as u64 / SECTOR;
            self.codec.encrypt(&mut buf, Pool::tweak(loc, first));
            dev.write(&buf, loc.sector, p.off as u64)
        } else {
            dev.write(data, loc.sector, p.off as u64)
        }
    }

    fn write(&self, vol: &Volume, data: &[u8], offset: u64) -> io::Result<()> {
        let mut slow = Vec::new();
        {
            let st = self.read_state();
            vol.check(&st, offset, data.len() as u64)?;
            for p in pieces(offset, data.len(), self.block_size) {
                match self.in_place(&st, vol.vid, &p) {
                    Some(loc) => self.write_in_place(&loc, &p, &data[p.start..p.end])?,
                    None => slow.push(p),
                }
            }
        }
        if slow.is_empty() {
            return Ok(());
        }
        let mut done = 0;
        let mut retried = false;
        loop {
            let result = {
                let mut st = self.write_state();
                let mut r = Ok(());
                while let Some(p) = slow.get(done) {
                    r = self.write_block(&mut st, vol.vid, p, &data[p.start..p.end]);
                    if r.is_err() {
                        break;
                    }
                    done += 1;
                }
                r.map(|_| st.pending_bytes())
            };
            match result {
                // Copy-on-write frees space that is reusable only after a commit: commit
                // before the freed space grows large, so that rewrites don't fill the pool.
                Ok(pending) if pending > RECYCLE_AFTER => {
                    self.commit().map_err(to_io)?;
                    return Ok(());
                }
                Ok(_) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::StorageFull && !retried => {
                    retried = true;
                    self.commit().map_err(to_io)?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Writes part of a block through a new block (under the write lock).
    fn write_block(&self, st: &mut State, vid: u32, p: &Piece, data: &[u8]) -> io::Result<()> {
        if let Some(loc) = self.in_place(st, vid, p) {
            return self.write_in_place(&loc, p, data);
        }
        let old = st.vol(vid).map_err(to_io)?.map.get(p.idx);
        let thick_new = old == 0 && st.vols.get(&vid).is_some_and(|v| v.meta.thick);
        let bs = self.block_size as usize;
        let plain = !self.compressing() && !self.dedup && !self.codec.encrypted();
        if old == 0 && plain {
            // A fresh block: zero it cheaply, then write only what the request carries.
            let nsect = self.block_size / SECTOR;
            let loc = self.allocate(st, nsect, RAW, self.block_size as u32, thick_new)?;
            let dev = self.device(loc.dev)?;
            if data.len() < bs && !dev.zero(loc.sector, nsect) {
                dev.write(&vec![0u8; bs], loc.sector, 0)?;
            }
            dev.write(data, loc.sector, p.off as u64)?;
            let id = st.next_id;
            st.log(Record::Block {
                id,
                loc,
                hash: None,
            });
            st.log(Record::Set {
                vid,
                idx: p.idx,
                id,
            });
            return Ok(());
        }
        let mut block = vec![0u8; bs];
        if old != 0 && data.len() < bs {
            self.read_block(st, old, 0, &mut block)?;
        }
        block[p.off..p.off + data.len()].copy_from_slice(data);
        let id = self.store(st, &block, thick_new)?;
        st.log(Record::Set {
            vid,
            idx: p.idx,
            id,
        });
        Ok(())
    }

    /// Stores a whole block (deduplicated, compressed, encrypted as the pool says) and
    /// returns its id; 0 for a block of zeros when compression is on (ZFS does the same:
    /// such blocks become holes).
    fn store(&self, st: &mut State, block: &[u8], thick_new: bool) -> io::Result<u64> {
        if self.compressing() && block.iter().all(|&b| b == 0) {
            return Ok(0);
        }
        let hash = self.dedup.then(|| self.codec.hash(block));
        if let Some(&id) = hash.as_ref().and_then(|h| st.ddt.get(h)) {
            return Ok(id);
        }
        let (codec, mut stored, len) = self
            .codec
            .compress(block)
            .unwrap_or_else(|| (RAW, block.to_vec(), block.len() as u32));
        let nsect = stored.len() as u64 / SECTOR;
        let loc = self.allocate(st, nsect, codec, len, thick_new)?;
        self.codec.encrypt(&mut stored, Pool::tweak(&loc, 0));
        self.device(loc.dev)?.write(&stored, loc.sector, 0)?;
        let id = st.next_id;
        st.log(Record::Block { id, loc, hash });
        Ok(id)
    }

    fn compressing(&self) -> bool {
        self.compression != super::Compression::Off
    }

    /// Sectors for a new block: on a fast device while fast devices have room, else on
    /// the device with the most free space. `reserved`: a thick volume's first write of
    /// this block, paid for by its reservation.
    pub(super) fn allocate(
        &self,
        st: &mut State,
        nsect: u64,
        codec: u8,
        len: u32,
        reserved: bool,
    ) -> io::Result<Loc> {
        if !reserved {
            self.check_space(st, nsect * SECTOR).map_err(to_io)?;
        }
        let tiers: Vec<Tier> = self.devices().iter().map(|d| d.tier).collect();
        self.allocate_on(st, nsect, codec, len, &tiers, None)
            .ok_or_else(|| {
                to_io(StorageError::NoSpace(
                    "no device has room for a block".into(),
                ))
            })
    }

    /// Allocates on `only` tier if given, else preferring fast devices.
    pub(super) fn allocate_on(
        &self,
        st: &mut State,
        nsect: u64,
        codec: u8,
        len: u32,
        tiers: &[Tier],
        only: Option<Tier>,
    ) -> Option<Loc> {
        let order: &[Tier] = match only {
            Some(Tier::Fast) => &[Tier::Fast],
            Some(Tier::Capacity) => &[Tier::Capacity],
            None => &[Tier::Fast, Tier::Capacity],
        };
        for tier in order {
            let mut devs: Vec<usize> = (0..st.allocs.len())
                .filter(|&i| tiers.get(i) == Some(tier))
                .collect();
            devs.sort_by_key(|&i| std::cmp::Reverse(st.allocs[i].free_sectors()));
            for i in devs {
                if let Some(sector) = st.allocs[i].alloc(nsect) {
                    return Some(Loc {
                        dev: i as u16,
                        sector,
                        nsect: nsect as u32,
                        codec,
                        len,
                    });
                }
            }
        }
        None
    }

    fn trim(&self, vol: &Volume, offset: u64, len: u64) -> io::Result<()> {
        let bs = self.block_size;
        let mut st = self.write_state();
        vol.check(&st, offset, len)?;
        let end = offset + len;
        let first_full = offset.div_ceil(bs);
        let last_full = end / bs;
        // Whole blocks become holes.
        if first_full < last_full {
            let mut mapped = Vec::new();
            let map = &st.vol(vol.vid).map_err(to_io)?.map;
            map.for_each(first_full, last_full, &mut |idx, _| mapped.push(idx));
            for idx in mapped {
                st.log(Record::Set {
                    vid: vol.vid,
                    idx,
                    id: 0,
                });
            }
        }
        drop(st);
        // Partial blocks at the edges read as zeros afterwards.
        let head_end = end.min(first_full * bs);
        if offset < head_end {
            self.write_zeroes(vol, offset, head_end - offset)?;
        }
        let tail_start = (last_full * bs).max(offset).max(head_end);
        if tail_start < end {
            self.write_zeroes(vol, tail_start, end - tail_start)?;
        }
        Ok(())
    }

    /// Writes zeros over a range, skipping blocks that are holes already.
    fn write_zeroes(&self, vol: &Volume, offset: u64, len: u64) -> io::Result<()> {
        let bs = self.block_size;
        let zeros = vec![0u8; bs as usize];
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let n = (bs - pos % bs).min(end - pos);
            // A hole of a thin volume reads as zeros already; a thick volume keeps written
            // zeros allocated.
            let skip = {
                let st = self.read_state();
                vol.check(&st, pos, n)?;
                let v = st.vol(vol.vid).map_err(to_io)?;
                !v.meta.thick && v.map.get(pos / bs) == 0
            };
            if !skip {
                self.write(vol, &zeros[..n as usize], pos)?;
            }
            pos += n;
        }
        Ok(())
    }
}
