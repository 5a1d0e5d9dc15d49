//! Lazy arithmetic flags.
//!
//! Most instructions set CF/PF/AF/ZF/SF/OF and most of those flags are never read: the next
//! instruction overwrites them. So an arithmetic instruction only records what it did (the
//! operation, its width, its operands and its result) and a flag is computed when something
//! reads it (a `Jcc`, `PUSHF`, an interrupt). This is what QEMU's TCG and Bochs do as well.

/// RFLAGS bits.
pub const CF: u64 = 1 << 0;
pub const PF: u64 = 1 << 2;
pub const AF: u64 = 1 << 4;
pub const ZF: u64 = 1 << 6;
pub const SF: u64 = 1 << 7;
pub const TF: u64 = 1 << 8;
pub const IF: u64 = 1 << 9;
pub const DF: u64 = 1 << 10;
pub const OF: u64 = 1 << 11;
pub const IOPL: u64 = 3 << 12;
pub const NT: u64 = 1 << 14;
pub const RF: u64 = 1 << 16;
pub const VM: u64 = 1 << 17;
pub const AC: u64 = 1 << 18;
pub const VIF: u64 = 1 << 19;
pub const VIP: u64 = 1 << 20;
pub const ID: u64 = 1 << 21;
/// The six arithmetic status flags.
pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
/// Bit 1 of RFLAGS always reads as one.
pub const FIXED: u64 = 1 << 1;

/// What the last flag-setting instruction did.
/// `repr(u8)`: generated code (`jit/`) stores it as a byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// The arithmetic flags are stored in `Flags::explicit`.
    Explicit,
    /// `res = a + b + carry_in` (ADD, ADC, XADD).
    Add,
    /// `res = a - b - borrow_in` (SUB, SBB, CMP, NEG with a = 0).
    Sub,
    /// AND/OR/XOR/TEST: CF = OF = 0, AF undefined (we report 0).
    Logic,
    /// INC/DEC: like ADD/SUB of 1 but CF is kept (stored in `carry`).
    Inc,
    Dec,
    /// ZF/SF/PF from `res`, CF in `carry`, OF in `a` and AF in `b` (non-zero: set): shifts,
    /// multiplies and bit operations.
    Result,
}

#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// Every RFLAGS bit that is not one of the six arithmetic flags (IF, DF, TF, IOPL, ...),
    /// plus, when `op == Explicit`, the arithmetic flags themselves.
    pub explicit: u64,
    pub op: Op,
    /// Operand width in bits: 8, 16, 32 or 64.
    pub bits: u32,
    pub a: u64,
    pub b: u64,
    pub res: u64,
    /// The carry-in of ADC/SBB, or the preserved CF of INC/DEC.
    pub carry: bool,
}

impl Default for Flags {
    fn default() -> Self {
        Flags {
            explicit: FIXED,
            op: Op::Explicit,
            bits: 64,
            a: 0,
            b: 0,
            res: 0,
            carry: false,
        }
    }
}

#[inline]
fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

#[inline]
fn sign(v: u64, bits: u32) -> bool {
    (v >> (bits - 1)) & 1 == 1
}

impl Flags {
    /// Records an addition: `res = a + b + carry_in` truncated to `bits`.
    #[inline]
    pub fn set_add(&mut self, a: u64, b: u64, carry_in: bool, res: u64, bits: u32) {
        self.op = Op::Add;
        self.bits = bits;
        self.a = a & mask(bits);
        self.b = b & mask(bits);
        self.res = res & mask(bits);
        self.carry = carry_in;
    }

    /// Records a subtraction: `res = a - b - borrow_in` truncated to `bits`.
    #[inline]
    pub fn set_sub(&mut self, a: u64, b: u64, borrow_in: bool, res: u64, bits: u32) {
        self.op = Op::Sub;
        self.bits = bits;
        self.a = a & mask(bits);
        self.b = b & mask(bits);
        self.res = res & mask(bits);
        self.carry = borrow_in;
    }

    /// Records a logical operation (CF = OF = 0).
    #[inline]
    pub fn set_logic(&mut self, res: u64, bits: u32) {
        self.op = Op::Logic;
        self.bits = bits;
        self.res = res & mask(bits);
    }

    /// Records INC (`dec == false`) or DEC of `a`, keeping the current CF.
    #[inline]
    pub fn set_incdec(&mut self, dec: bool, a: u64, res: u64, bits: u32) {
        let cf = self.cf();
        self.op = if dec { Op::Dec } else { Op::Inc };
        self.bits = bits;
        self.a = a & mask(bits);
        self.b = 1;
        self.res = res & mask(bits);
        self.carry = cf;
    }

    /// Sets the arithmetic flags from explicit values (`ARITH` bits of `value`).
    #[inline]
    pub fn set_arith(&mut self, value: u64) {
        self.explicit = (self.explicit & !ARITH) | (value & ARITH);
        self.op = Op::Explicit;
    }

    /// Sets the arithmetic flags to the result-based values of `res` (ZF/SF/PF) plus the given
    /// CF, OF and AF: for shifts, multiplies and bit operations.
    #[inline]
    pub fn set_result(&mut self, res: u64, bits: u32, cf: bool, of: bool, af: bool) {
        self.op = Op::Result;
        self.bits = bits;
        self.res = res & mask(bits);
        self.carry = cf;
        self.a = u64::from(of);
        self.b = u64::from(af);
    }

    /// Changes single arithmetic flags and keeps the others (BT, CLC/STC/CMC, ...).
    #[inline]
    pub fn update(&mut self, clear: u64, set: u64) {
        let cur = self.arith();
        self.set_arith((cur & !clear) | set);
    }

    #[inline]
    pub fn cf(&self) -> bool {
        match self.op {
            Op::Explicit => self.explicit & CF != 0,
            // With a carry-in the sum wrapped if it is not above `a`; without, if it is below.
            Op::Add => self.res < self.a || (self.carry && self.res == self.a),
            Op::Sub => self.a < self.b || (self.carry && self.a == self.b),
            Op::Logic => false,
            Op::Inc | Op::Dec | Op::Result => self.carry,
        }
    }

    #[inline]
    pub fn zf(&self) -> bool {
        match self.op {
            Op::Explicit => self.explicit & ZF != 0,
            _ => self.res == 0,
        }
    }

    #[inline]
    pub fn sf(&self) -> bool {
        match self.op {
            Op::Explicit => self.explicit & SF != 0,
            _ => sign(self.res, self.bits),
        }
    }

    #[inline]
    pub fn pf(&self) -> bool {
        match self.op {
            Op::Explicit => self.explicit & PF != 0,
            _ => parity(self.res),
        }
    }

    #[inline]
    pub fn af(&self) -> bool {
        match self.op {
            Op::Explicit => self.explicit & AF != 0,
            Op::Logic => false,
            Op::Result => self.b != 0,
            _ => (self.a ^ self.b ^ self.res) & 0x10 != 0,
        }
    }

    #[inline]
    pub fn of(&self) -> bool {
        let bits = self.bits;
        match self.op {
            Op::Explicit => self.explicit & OF != 0,
            Op::Add | Op::Inc => sign((self.a ^ self.res) & (self.b ^ self.res), bits),
            Op::Sub | Op::Dec => sign((self.a ^ self.b) & (self.a ^ self.res), bits),
            Op::Logic => false,
            Op::Result => self.a != 0,
        }
    }

    /// The six arithmetic flags as RFLAGS bits.
    #[inline]
    pub fn arith(&self) -> u64 {
        if self.op == Op::Explicit {
            return self.explicit & ARITH;
        }
        let mut f = 0;
        if self.cf() {
            f |= CF;
        }
        if self.pf() {
            f |= PF;
        }
        if self.af() {
            f |= AF;
        }
        if self.zf() {
            f |= ZF;
        }
        if self.sf() {
            f |= SF;
        }
        if self.of() {
            f |= OF;
        }
        f
    }

    /// The full RFLAGS value.
    #[inline]
    pub fn get(&self) -> u64 {
        (self.explicit & !ARITH) | self.arith() | FIXED
    }

    /// Loads all of RFLAGS (the caller has already applied privilege rules).
    #[inline]
    pub fn set(&mut self, value: u64) {
        self.explicit = (value & 0x3f_7fd7) | FIXED;
        self.op = Op::Explicit;
    }

    /// Tests a non-arithmetic flag such as IF or DF.
    #[inline]
    pub fn has(&self, bit: u64) -> bool {
        self.explicit & bit != 0
    }

    /// Sets or clears non-arithmetic flags such as IF, DF, TF, AC.
    #[inline]
    pub fn set_bit(&mut self, bit: u64, on: bool) {
        debug_assert_eq!(bit & ARITH, 0);
        if on {
            self.explicit |= bit;
        } else {
            self.explicit &= !bit;
        }
    }

    /// Evaluates a condition code (the low nibble of Jcc/SETcc/CMOVcc opcodes).
    ///
    /// After a CMP/SUB without borrow-in the unsigned and signed orders of the operands
    /// answer directly (B, E, BE, L, LE); everything else computes the flags involved.
    #[inline]
    pub fn cond(&self, cc: u8) -> bool {
        if self.op == Op::Sub && !self.carry {
            // Shifting both operands to the top keeps their signed order at any width.
            let sh = 64 - self.bits;
            let (sa, sb) = ((self.a << sh) as i64, (self.b << sh) as i64);
            let r = match cc >> 1 {
                1 => self.a < self.b,
                2 => self.a == self.b,
                3 => self.a <= self.b,
                6 => sa < sb,
                7 => sa <= sb,
                _ => return self.cond_flags(cc),
            };
            return r ^ (cc & 1 == 1);
        }
        self.cond_flags(cc)
    }

    /// `cond` from the individual flags.
    #[inline]
    fn cond_flags(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r ^ (cc & 1 == 1)
    }

    /// Evaluates an iced-x86 condition code (`None` is always true).
    #[inline]
    pub fn cond_iced(&self, cc: iced_x86::ConditionCode) -> bool {
        cc_number(cc).is_none_or(|n| self.cond(n))
    }
}

/// The x86 encoding (0..16, the low nibble of Jcc/SETcc/CMOVcc) of an iced-x86 condition
/// code; `None` for instructions without one.
pub fn cc_number(cc: iced_x86::ConditionCode) -> Option<u8> {
    use iced_x86::ConditionCode as C;
    Some(match cc {
        C::o => 0,
        C::no => 1,
        C::b => 2,
        C::ae => 3,
        C::e => 4,
        C::ne => 5,
        C::be => 6,
        C::a => 7,
        C::s => 8,
        C::ns => 9,
        C::p => 10,
        C::np => 11,
        C::l => 12,
        C::ge => 13,
        C::le => 14,
        C::g => 15,
        C::None => return None,
    })
}

/// x86 parity: set when the low byte has an even number of one bits.
#[inline]
pub fn parity(v: u64) -> bool {
    (v as u8).count_ones().is_multiple_of(2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_flags_are_recorded_lazily() {
        for bits in [8, 16, 32, 64] {
            for res in [
                0u64,
                1,
                0x80,
                0xff,
                0x8000,
                0x8000_0000,
                1 << 63,
                u64::MAX,
                0x1234,
            ] {
                for k in 0..8u32 {
                    let (cf, of, af) = (k & 1 != 0, k & 2 != 0, k & 4 != 0);
                    let mut f = Flags::default();
                    f.set_result(res, bits, cf, of, af);
                    let r = res & mask(bits);
                    let mut want = 0;
                    for (on, bit) in [
                        (cf, CF),
                        (of, OF),
                        (af, AF),
                        (r == 0, ZF),
                        (sign(r, bits), SF),
                        (parity(r), PF),
                    ] {
                        if on {
                            want |= bit;
                        }
                    }
                    assert_eq!(f.arith(), want, "{res:#x}/{bits} {k}");
                    // Changing one flag keeps the others.
                    f.update(CF, 0);
                    assert_eq!(f.arith(), want & !CF);
                }
            }
        }
    }

    #[test]
    fn compare_shortcut_matches_the_flags() {
        let edges = [
            0u64,
            1,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
        ];
        let mut vals: Vec<u64> = edges.to_vec();
        vals.extend([
            0xffff_ffff,
            0x7fff_ffff_ffff_ffff,
            0x8000_0000_0000_0000,
            u64::MAX,
            42,
        ]);
        for bits in [8, 16, 32, 64] {
            for &a in &vals {
                for &b in &vals {
                    let (a, b) = (a & mask(bits), b & mask(bits));
                    let mut f = Flags::default();
                    f.set_sub(a, b, false, a.wrapping_sub(b), bits);
                    for cc in 0..16 {
                        assert_eq!(
                            f.cond(cc),
                            f.cond_flags(cc),
                            "{a:#x} - {b:#x} /{bits} cc {cc}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn add_carry_and_overflow() {
        let mut f = Flags::default();
        f.set_add(0xff, 1, false, 0x100, 8);
        assert!(f.cf() && f.zf() && !f.sf() && !f.of() && f.af());
        f.set_add(0x7f, 1, false, 0x80, 8);
        assert!(!f.cf() && f.of() && f.sf());
        // ADC with carry-in where b is all ones: 5 + 0xff + 1 = 5 (carry out).
        f.set_add(5, 0xff, true, 5 + 0xff + 1, 8);
        assert!(f.cf());
        f.set_add(0, 0xffff_ffff_ffff_ffff, true, 0, 64);
        assert!(f.cf() && f.zf());
    }

    #[test]
    fn sub_borrow() {
        let mut f = Flags::default();
        f.set_sub(1, 2, false, 1u64.wrapping_sub(2), 32);
        assert!(f.cf() && f.sf() && !f.zf() && !f.of());
        f.set_sub(0x80, 1, false, 0x7f, 8);
        assert!(f.of() && !f.cf());
        f.set_sub(5, 5, true, u64::MAX, 8);
        assert!(f.cf());
    }

    #[test]
    fn incdec_keeps_cf() {
        let mut f = Flags::default();
        f.set_arith(CF);
        f.set_incdec(false, 0x7f, 0x80, 8);
        assert!(f.cf() && f.of() && f.sf());
        f.set_arith(0);
        f.set_incdec(true, 0, u64::MAX, 16);
        assert!(!f.cf() && f.sf() && !f.of());
    }

    #[test]
    fn rflags_round_trip_and_conditions() {
        let mut f = Flags::default();
        f.set(IF | CF | ZF | DF);
        assert_eq!(f.get(), IF | CF | ZF | DF | FIXED);
        assert!(f.cond(2) && f.cond(4) && f.cond(6) && !f.cond(7));
        f.set_sub(1, 2, false, u64::MAX, 64);
        // 1 < 2: below, less, not equal.
        assert!(f.cond(2) && f.cond(12) && f.cond(5) && !f.cond(15));
        assert!(f.has(IF) && f.has(DF));
    }
}
