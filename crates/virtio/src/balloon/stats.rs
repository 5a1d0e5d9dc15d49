//! Memory statistics the driver reports on the stats queue (virtio 1.2, 5.5.6.3): an array of
//! packed `struct virtio_balloon_stat { le16 tag; le64 val; }`, one per statistic it knows.

use std::time::SystemTime;

/// Bytes of one `virtio_balloon_stat` (packed).
pub(super) const STAT_LEN: usize = 10;
/// The most entries read from one buffer. Linux sends at most 16 (one per tag it knows, each
/// once); a longer buffer is hostile or a future driver, and its tail is ignored.
pub(super) const MAX_STATS: usize = 64;

/// The guest's memory statistics as last reported, each `None` if the driver did not send it.
/// Memory amounts are in bytes; the rest are event counts since the guest booted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BalloonStats {
    pub swap_in: Option<u64>,
    pub swap_out: Option<u64>,
    pub major_faults: Option<u64>,
    pub minor_faults: Option<u64>,
    pub free_memory: Option<u64>,
    pub total_memory: Option<u64>,
    pub available_memory: Option<u64>,
    pub disk_caches: Option<u64>,
    pub hugetlb_allocations: Option<u64>,
    pub hugetlb_failures: Option<u64>,
    pub oom_kills: Option<u64>,
    pub alloc_stalls: Option<u64>,
    pub async_scans: Option<u64>,
    pub direct_scans: Option<u64>,
    pub async_reclaims: Option<u64>,
    pub direct_reclaims: Option<u64>,
    /// When the driver last sent them.
    pub updated: Option<SystemTime>,
}

/// Tag numbers (in `virtio_balloon.h` order) and the names the API shows.
const NAMES: [&str; 16] = [
    "swap_in",
    "swap_out",
    "major_faults",
    "minor_faults",
    "free_memory",
    "total_memory",
    "available_memory",
    "disk_caches",
    "hugetlb_allocations",
    "hugetlb_failures",
    "oom_kills",
    "alloc_stalls",
    "async_scans",
    "direct_scans",
    "async_reclaims",
    "direct_reclaims",
];

impl BalloonStats {
    fn slot(&mut self, tag: u16) -> Option<&mut Option<u64>> {
        Some(match tag {
            0 => &mut self.swap_in,
            1 => &mut self.swap_out,
            2 => &mut self.major_faults,
            3 => &mut self.minor_faults,
            4 => &mut self.free_memory,
            5 => &mut self.total_memory,
            6 => &mut self.available_memory,
            7 => &mut self.disk_caches,
            8 => &mut self.hugetlb_allocations,
            9 => &mut self.hugetlb_failures,
            10 => &mut self.oom_kills,
            11 => &mut self.alloc_stalls,
            12 => &mut self.async_scans,
            13 => &mut self.direct_scans,
            14 => &mut self.async_reclaims,
            15 => &mut self.direct_reclaims,
            _ => return None,
        })
    }

    /// The values in tag order (as [`NAMES`]).
    fn values(&self) -> [Option<u64>; 16] {
        [
            self.swap_in,
            self.swap_out,
            self.major_faults,
            self.minor_faults,
            self.free_memory,
            self.total_memory,
            self.available_memory,
            self.disk_caches,
            self.hugetlb_allocations,
            self.hugetlb_failures,
            self.oom_kills,
            self.alloc_stalls,
            self.async_scans,
            self.direct_scans,
            self.async_reclaims,
            self.direct_reclaims,
        ]
    }

    /// The statistics the driver sent, by name, in tag order.
    pub fn named(&self) -> Vec<(&'static str, u64)> {
        NAMES
            .into_iter()
            .zip(self.values())
            .filter_map(|(name, v)| Some((name, v?)))
            .collect()
    }

    /// Parses one stats buffer. Unknown tags are skipped (a newer driver may send more), a
    /// repeated tag keeps its last value, and a trailing partial entry is ignored; returns the
    /// stats and whether the buffer was well formed (a whole number of entries, not beyond
    /// [`MAX_STATS`]).
    pub(super) fn parse(buf: &[u8], now: SystemTime) -> (BalloonStats, bool) {
        let mut s = BalloonStats {
            updated: Some(now),
            ..Default::default()
        };
        let entries = buf.chunks_exact(STAT_LEN);
        let clean = entries.remainder().is_empty() && buf.len() <= MAX_STATS * STAT_LEN;
        for e in entries.take(MAX_STATS) {
            let Ok([t0, t1, val @ ..]) = <[u8; STAT_LEN]>::try_from(e) else {
                continue;
            };
            if let Some(slot) = s.slot(u16::from_le_bytes([t0, t1])) {
                *slot = Some(u64::from_le_bytes(val));
            }
        }
        (s, clean)
    }
}
