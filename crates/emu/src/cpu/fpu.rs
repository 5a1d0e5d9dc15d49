//! x87, MMX and SSE register state, and the FXSAVE image.
//!
//! The eight x87 data registers are kept as raw 80-bit values (`u128`, the memory layout:
//! significand in bits 0..64, exponent in 64..79, sign in bit 79) indexed by PHYSICAL register
//! number; ST(i) is physical register (TOP + i) & 7. TOP lives in FSW bits 11..13. The tags are
//! kept in the abridged (FXSAVE) form, one bit per physical register (1 = not empty); the full
//! two-bit tag word is computed from the register contents when FNSTENV/FNSAVE need it. MMX
//! register i is the significand of physical register i.

/// FSW bits.
pub mod sw {
    pub const IE: u16 = 1 << 0;
    pub const DE: u16 = 1 << 1;
    pub const ZE: u16 = 1 << 2;
    pub const OE: u16 = 1 << 3;
    pub const UE: u16 = 1 << 4;
    pub const PE: u16 = 1 << 5;
    pub const SF: u16 = 1 << 6;
    pub const ES: u16 = 1 << 7;
    pub const C0: u16 = 1 << 8;
    pub const C1: u16 = 1 << 9;
    pub const C2: u16 = 1 << 10;
    pub const TOP: u16 = 7 << 11;
    pub const C3: u16 = 1 << 14;
    pub const B: u16 = 1 << 15;
    pub const CC: u16 = C0 | C1 | C2 | C3;
    /// The six exception flags.
    pub const EXC: u16 = 0x3f;
}

/// MXCSR bits.
pub mod mx {
    pub const IE: u32 = 1 << 0;
    pub const DE: u32 = 1 << 1;
    pub const ZE: u32 = 1 << 2;
    pub const OE: u32 = 1 << 3;
    pub const UE: u32 = 1 << 4;
    pub const PE: u32 = 1 << 5;
    pub const DAZ: u32 = 1 << 6;
    /// Exception masks start here (IM = bit 7 ... PM = bit 12).
    pub const MASK_SHIFT: u32 = 7;
    pub const RC_SHIFT: u32 = 13;
    pub const FZ: u32 = 1 << 15;
    /// The bits FXRSTOR/LDMXCSR accept (MXCSR_MASK in the FXSAVE image).
    pub const WRITABLE: u32 = 0xffff;
}

/// The 80-bit QNaN "real indefinite".
pub const F80_INDEFINITE: u128 = 0xffff_c000_0000_0000_0000;

#[derive(Debug, Clone)]
pub struct FpuState {
    pub fcw: u16,
    /// Includes TOP (bits 11..13).
    pub fsw: u16,
    /// Abridged tag word: bit i set = physical register i is not empty.
    pub tags: u8,
    /// Last x87 opcode (11 bits), instruction and data pointers.
    pub fop: u16,
    pub fip: u64,
    pub fcs: u16,
    pub fdp: u64,
    pub fds: u16,
    /// Physical x87 registers R0..R7 as raw 80-bit values.
    pub st: [u128; 8],
    pub mxcsr: u32,
    pub xmm: [u128; 16],
}

impl Default for FpuState {
    fn default() -> Self {
        FpuState {
            fcw: 0x37f,
            fsw: 0,
            tags: 0,
            fop: 0,
            fip: 0,
            fcs: 0,
            fdp: 0,
            fds: 0,
            st: [0; 8],
            mxcsr: 0x1f80,
            xmm: [0; 16],
        }
    }
}

/// The full two-bit tag of an 80-bit value in a non-empty register: 0 valid, 1 zero,
/// 2 special (NaN, infinity, denormal, unsupported).
pub fn tag_of(v: u128) -> u16 {
    let exp = (v >> 64) as u16 & 0x7fff;
    let sig = v as u64;
    if exp == 0x7fff {
        2
    } else if exp == 0 {
        if sig == 0 {
            1
        } else {
            2
        }
    } else if sig >> 63 == 0 {
        2
    } else {
        0
    }
}

impl FpuState {
    #[inline]
    pub fn top(&self) -> usize {
        usize::from((self.fsw >> 11) & 7)
    }

    #[inline]
    pub fn set_top(&mut self, top: usize) {
        self.fsw = (self.fsw & !sw::TOP) | (((top & 7) as u16) << 11);
    }

    /// Physical register number of ST(i).
    #[inline]
    pub fn phys(&self, i: usize) -> usize {
        (self.top() + i) & 7
    }

    #[inline]
    pub fn st(&self, i: usize) -> u128 {
        self.st[self.phys(i)]
    }

    #[inline]
    pub fn set_st(&mut self, i: usize, v: u128) {
        let p = self.phys(i);
        self.st[p] = v & ((1u128 << 80) - 1);
        self.tags |= 1 << p;
    }

    #[inline]
    pub fn is_empty(&self, i: usize) -> bool {
        self.tags & (1 << self.phys(i)) == 0
    }

    #[inline]
    pub fn set_empty(&mut self, i: usize) {
        let p = self.phys(i);
        self.tags &= !(1 << p);
    }

    /// Decrements TOP and stores `v` in the new ST(0) (no overflow check).
    #[inline]
    pub fn push(&mut self, v: u128) {
        let t = (self.top() + 7) & 7;
        self.set_top(t);
        self.set_st(0, v);
    }

    /// Marks ST(0) empty and increments TOP.
    #[inline]
    pub fn pop(&mut self) {
        self.set_empty(0);
        let t = (self.top() + 1) & 7;
        self.set_top(t);
    }

    /// The full 16-bit tag word (two bits per physical register).
    pub fn full_tag_word(&self) -> u16 {
        (0..8).fold(0u16, |acc, p| {
            let t = if self.tags & (1 << p) == 0 {
                3
            } else {
                tag_of(self.st[p])
            };
            acc | (t << (2 * p))
        })
    }

    /// Loads the tags from a full tag word (11 = empty, anything else = not empty).
    pub fn set_full_tag_word(&mut self, tw: u16) {
        self.tags = (0..8).fold(0u8, |acc, p| {
            if (tw >> (2 * p)) & 3 == 3 {
                acc
            } else {
                acc | (1 << p)
            }
        });
    }

    /// FNINIT: x87 state to its initial values (MXCSR and XMM are kept).
    pub fn init_x87(&mut self) {
        self.fcw = 0x37f;
        self.fsw = 0;
        self.tags = 0;
        self.fop = 0;
        self.fip = 0;
        self.fcs = 0;
        self.fdp = 0;
        self.fds = 0;
    }

    /// Recomputes FSW.ES and FSW.B from the exception flags and masks.
    pub fn update_es(&mut self) {
        let unmasked = self.fsw & !self.fcw & sw::EXC;
        if unmasked != 0 {
            self.fsw |= sw::ES | sw::B;
        } else {
            self.fsw &= !(sw::ES | sw::B);
        }
    }

    /// MMX register i (the significand of physical register i).
    #[inline]
    pub fn mm(&self, i: usize) -> u64 {
        self.st[i & 7] as u64
    }

    /// Writes MMX register i: exponent/sign all ones, as hardware does.
    #[inline]
    pub fn set_mm(&mut self, i: usize, v: u64) {
        self.st[i & 7] = (0xffffu128 << 64) | u128::from(v);
    }

    /// The FPU-state transition every MMX instruction (but EMMS) makes: TOP = 0, all tags
    /// valid.
    #[inline]
    pub fn enter_mmx(&mut self) {
        self.set_top(0);
        self.tags = 0xff;
    }

    /// The 512-byte FXSAVE image. `rex_w`: 64-bit FIP/FDP format; `nxmm`: registers saved
    /// (16 in 64-bit mode, 8 otherwise).
    pub fn fxsave_image(&self, rex_w: bool, nxmm: usize) -> [u8; 512] {
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&self.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&self.fsw.to_le_bytes());
        b[4] = self.tags;
        b[6..8].copy_from_slice(&self.fop.to_le_bytes());
        if rex_w {
            b[8..16].copy_from_slice(&self.fip.to_le_bytes());
            b[16..24].copy_from_slice(&self.fdp.to_le_bytes());
        } else {
            b[8..12].copy_from_slice(&(self.fip as u32).to_le_bytes());
            b[12..14].copy_from_slice(&self.fcs.to_le_bytes());
            b[16..20].copy_from_slice(&(self.fdp as u32).to_le_bytes());
            b[20..22].copy_from_slice(&self.fds.to_le_bytes());
        }
        b[24..28].copy_from_slice(&self.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&mx::WRITABLE.to_le_bytes());
        for i in 0..8 {
            let v = self.st(i).to_le_bytes();
            b[32 + 16 * i..32 + 16 * i + 10].copy_from_slice(&v[..10]);
        }
        for i in 0..nxmm.min(16) {
            b[160 + 16 * i..176 + 16 * i].copy_from_slice(&self.xmm[i].to_le_bytes());
        }
        b
    }

    /// Loads an FXSAVE image. Returns false (and changes nothing) if MXCSR has reserved bits
    /// set (#GP).
    pub fn fxrstor_image(&mut self, b: &[u8; 512], rex_w: bool, nxmm: usize) -> bool {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let u64_at = |o: usize| u64::from(u32_at(o)) | (u64::from(u32_at(o + 4)) << 32);
        let mxcsr = u32_at(24);
        if mxcsr & !mx::WRITABLE != 0 {
            return false;
        }
        self.fcw = u16_at(0);
        self.fsw = u16_at(2);
        self.tags = b[4];
        self.fop = u16_at(6) & 0x7ff;
        if rex_w {
            self.fip = u64_at(8);
            self.fdp = u64_at(16);
        } else {
            self.fip = u64::from(u32_at(8));
            self.fcs = u16_at(12);
            self.fdp = u64::from(u32_at(16));
            self.fds = u16_at(20);
        }
        self.mxcsr = mxcsr;
        for i in 0..8 {
            let mut v = [0u8; 16];
            v[..10].copy_from_slice(&b[32 + 16 * i..32 + 16 * i + 10]);
            let p = self.phys(i);
            self.st[p] = u128::from_le_bytes(v);
        }
        for i in 0..nxmm.min(16) {
            let mut v = [0u8; 16];
            v.copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
            self.xmm[i] = u128::from_le_bytes(v);
        }
        true
    }
}
