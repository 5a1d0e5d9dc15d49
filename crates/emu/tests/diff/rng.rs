//! A tiny deterministic PRNG (splitmix64), so a seed always gives the same corpus.

pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed ^ 0x9e37_79b9_7f4a_7c15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    pub fn u32(&mut self) -> u32 {
        self.next_u64() as u32
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    pub fn range(&mut self, lo: i64, hi_incl: i64) -> i64 {
        lo + self.below((hi_incl - lo + 1) as u64) as i64
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    /// An interesting 32-bit value: edges of every width, small numbers, or random bits.
    pub fn edge32(&mut self) -> u32 {
        const EDGES: [u32; 20] = [
            0,
            1,
            2,
            0xffff_ffff,
            0xffff_fffe,
            0x7fff_ffff,
            0x8000_0000,
            0x8000_0001,
            0x7f,
            0x80,
            0xff,
            0x100,
            0x7fff,
            0x8000,
            0xffff,
            0x1_0000,
            0xffff_ff80,
            0xffff_8000,
            0x5555_5555,
            0xaaaa_aaaa,
        ];
        match self.below(10) {
            0..=3 => *self.pick(&EDGES),
            4 => self.below(40) as u32,
            5 => (self.below(40) as u32).wrapping_neg(),
            6 => self.u32() & 0xff,
            7 => self.u32() & 0xffff,
            _ => self.u32(),
        }
    }

    pub fn edge64(&mut self) -> u64 {
        match self.below(6) {
            0 => u64::from(self.edge32()),
            1 => (u64::from(self.edge32()) << 32) | u64::from(self.edge32()),
            2 => *self.pick(&[
                0u64,
                u64::MAX,
                1 << 63,
                (1 << 63) - 1,
                0x3ff0_0000_0000_0000, // 1.0
                0xbff0_0000_0000_0000, // -1.0
                0x7ff0_0000_0000_0000, // +inf
                0x7ff8_0000_0000_0000, // qNaN
                0x7ff4_0000_0000_0000, // sNaN
                0x0000_0000_0000_0001, // denormal
                0x4059_0000_0000_0000, // 100.0
                0x41e0_0000_0000_0000, // 2^31
                0xc1e0_0000_0000_0000, // -2^31
            ]),
            3 => {
                // A "normal" double in a modest range.
                let exp = (1023 + self.range(-40, 40)) as u64;
                (self.next_u64() & 0x800f_ffff_ffff_ffff) | (exp << 52)
            }
            _ => self.next_u64(),
        }
    }
}
