//! SSE/SSE2/SSE3 floating-point arithmetic, MIN/MAX, SQRT, compares and (U)COMIS.
//!
//! Arithmetic goes through `rustc_apfloat` (IEEE single/double with every rounding mode and
//! exact status flags); NaN propagation follows the x86 rules (the first operand's NaN wins,
//! quieted; invalid operations give the negative "default NaN"). MXCSR.DAZ and MXCSR.FZ are
//! honoured. An unmasked exception sets its flag and raises #XM (CR4.OSXMMEXCPT) or #UD
//! without writing the destination.

use super::{check_sse, lane, rd, set_lane, wr};
use crate::cpu::fpu::mx;
use crate::cpu::{cr, flags, Cpu, Exception, Handler, R};
use iced_x86::{Instruction, Mnemonic};
use rustc_apfloat::ieee::{Double, Quad, Single};
use rustc_apfloat::{Float, FloatConvert, Round, Status, StatusAnd};

pub fn resolve(ins: &Instruction) -> Option<Handler> {
    use Mnemonic::*;
    Some(match ins.mnemonic() {
        Addss => addss,
        Addsd => addsd,
        Addps => addps,
        Addpd => addpd,
        Subss => subss,
        Subsd => subsd,
        Subps => subps,
        Subpd => subpd,
        Mulss => mulss,
        Mulsd => mulsd,
        Mulps => mulps,
        Mulpd => mulpd,
        Divss => divss,
        Divsd => divsd,
        Divps => divps,
        Divpd => divpd,
        Minss => minss,
        Minsd => minsd,
        Minps => minps,
        Minpd => minpd,
        Maxss => maxss,
        Maxsd => maxsd,
        Maxps => maxps,
        Maxpd => maxpd,
        Sqrtss => sqrtss,
        Sqrtsd => sqrtsd,
        Sqrtps => sqrtps,
        Sqrtpd => sqrtpd,
        Rcpss => rcpss,
        Rcpps => rcpps,
        Rsqrtss => rsqrtss,
        Rsqrtps => rsqrtps,
        Addsubps => addsubps,
        Addsubpd => addsubpd,
        Haddps => haddps,
        Haddpd => haddpd,
        Hsubps => hsubps,
        Hsubpd => hsubpd,
        Cmpss => cmpss,
        Cmpps => cmpps,
        Cmppd => cmppd,
        Comiss => comiss,
        Comisd => comisd,
        Ucomiss => ucomiss,
        Ucomisd => ucomisd,
        _ => return None,
    })
}

/// Single or double precision.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum P {
    S,
    D,
}

impl P {
    pub(crate) fn bits(self) -> u32 {
        match self {
            P::S => 32,
            P::D => 64,
        }
    }
    fn exp_mask(self) -> u64 {
        match self {
            P::S => 0x7f80_0000,
            P::D => 0x7ff0_0000_0000_0000,
        }
    }
    fn frac_mask(self) -> u64 {
        match self {
            P::S => 0x007f_ffff,
            P::D => 0x000f_ffff_ffff_ffff,
        }
    }
    pub(crate) fn sign(self) -> u64 {
        1 << (self.bits() - 1)
    }
    pub(crate) fn quiet_bit(self) -> u64 {
        (self.frac_mask() + 1) >> 1
    }
    pub(crate) fn is_nan(self, x: u64) -> bool {
        x & self.exp_mask() == self.exp_mask() && x & self.frac_mask() != 0
    }
    pub(crate) fn is_snan(self, x: u64) -> bool {
        self.is_nan(x) && x & self.quiet_bit() == 0
    }
    pub(crate) fn is_denormal(self, x: u64) -> bool {
        x & self.exp_mask() == 0 && x & self.frac_mask() != 0
    }
    /// The largest finite magnitude.
    pub(crate) fn largest(self) -> u64 {
        self.exp_mask() - 1
    }
    /// The negative quiet NaN an invalid operation returns.
    pub(crate) fn default_nan(self) -> u64 {
        self.sign() | self.exp_mask() | self.quiet_bit()
    }
    pub(crate) fn to_f64(self, x: u64) -> f64 {
        match self {
            P::S => f64::from(f32::from_bits(x as u32)),
            P::D => f64::from_bits(x),
        }
    }
}

/// The rounding mode in MXCSR.RC.
pub(crate) fn round_mode(mxcsr: u32) -> Round {
    match (mxcsr >> mx::RC_SHIFT) & 3 {
        0 => Round::NearestTiesToEven,
        1 => Round::TowardNegative,
        2 => Round::TowardPositive,
        _ => Round::TowardZero,
    }
}

/// MXCSR flag bits for an apfloat status.
pub(crate) fn status_flags(s: Status) -> u32 {
    let mut f = 0;
    if s.contains(Status::INVALID_OP) {
        f |= mx::IE;
    }
    if s.contains(Status::DIV_BY_ZERO) {
        f |= mx::ZE;
    }
    if s.contains(Status::OVERFLOW) {
        f |= mx::OE;
    }
    if s.contains(Status::UNDERFLOW) {
        f |= mx::UE;
    }
    if s.contains(Status::INEXACT) {
        f |= mx::PE;
    }
    f
}

/// Prepares an input: DAZ turns denormals into zeros, otherwise they raise DE.
#[inline]
pub(crate) fn input(p: P, x: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    if p.is_denormal(x) {
        if mxcsr & mx::DAZ != 0 {
            return x & p.sign();
        }
        *fl |= mx::DE;
    }
    x
}

/// Prepares the two inputs of a lane. A NaN operand takes precedence over the denormal
/// exception (SDM 11.5.2.x precedence), so DE is only raised when neither is a NaN.
#[inline]
pub(crate) fn inputs(p: P, a: u64, b: u64, mxcsr: u32, fl: &mut u32) -> (u64, u64) {
    if p.is_nan(a) || p.is_nan(b) {
        // DAZ still applies (MINPS/MAXPS return the other operand, zeroed).
        let mut no_de = 0;
        return (
            input(p, a, mxcsr, &mut no_de),
            input(p, b, mxcsr, &mut no_de),
        );
    }
    (input(p, a, mxcsr, fl), input(p, b, mxcsr, fl))
}

/// Applies FZ to a result: a denormal result becomes a signed zero (with UE and PE).
#[inline]
fn output(p: P, r: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    if mxcsr & mx::FZ != 0 && p.is_denormal(r) && mxcsr & (mx::UE << mx::MASK_SHIFT) != 0 {
        *fl |= mx::UE | mx::PE;
        return r & p.sign();
    }
    r
}

/// The x86 NaN result of a two-operand operation, if any operand is a NaN.
#[inline]
fn nan2(p: P, a: u64, b: u64, fl: &mut u32) -> Option<u64> {
    let (an, bn) = (p.is_nan(a), p.is_nan(b));
    if !an && !bn {
        return None;
    }
    if p.is_snan(a) || p.is_snan(b) {
        *fl |= mx::IE;
    }
    Some(if an { a } else { b } | p.quiet_bit())
}

#[derive(Clone, Copy)]
pub(crate) enum Op {
    Add,
    Sub,
    Mul,
    Div,
}

fn ap<F: Float>(op: Op, a: F, b: F, rm: Round) -> StatusAnd<F> {
    match op {
        Op::Add => a.add_r(b, rm),
        Op::Sub => a.sub_r(b, rm),
        Op::Mul => a.mul_r(b, rm),
        Op::Div => a.div_r(b, rm),
    }
}

/// One lane of ADD/SUB/MUL/DIV.
pub(crate) fn arith(p: P, op: Op, a: u64, b: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    // A denormal divided by zero raises only ZE (observed on hardware: ZE without DE).
    let (a, b) = if matches!(op, Op::Div) && b & !p.sign() == 0 {
        inputs(p, a, b, mxcsr, &mut 0)
    } else {
        inputs(p, a, b, mxcsr, fl)
    };
    if let Some(n) = nan2(p, a, b, fl) {
        return n;
    }
    let rm = round_mode(mxcsr);
    let (st, bits) = match p {
        P::S => {
            let r = ap(
                op,
                Single::from_bits(a.into()),
                Single::from_bits(b.into()),
                rm,
            );
            (r.status, r.value.to_bits() as u64)
        }
        P::D => {
            let r = ap(
                op,
                Double::from_bits(a.into()),
                Double::from_bits(b.into()),
                rm,
            );
            (r.status, r.value.to_bits() as u64)
        }
    };
    let mut f = status_flags(st);
    if f & (mx::PE | mx::OE) == mx::PE && bits & !p.sign() == p.largest() && overflows(p, op, a, b)
    {
        f |= mx::OE;
    }
    *fl |= f;
    if f & mx::IE != 0 {
        return p.default_nan();
    }
    output(p, bits, mxcsr, fl)
}

/// Whether `a op b` overflows (its value rounded to the format's precision with an unbounded
/// exponent exceeds the largest finite number). rustc_apfloat reports an overflow that rounds
/// to the largest finite number (directed rounding) as INEXACT only. Computed toward zero in
/// a wider format, which is monotonic: |r| >= 2^(emax+1) exactly when the true value is.
fn overflows(p: P, op: Op, a: u64, b: u64) -> bool {
    let mut loses = false;
    match p {
        P::S => {
            let mut w = |x: u64| -> Double {
                let r: StatusAnd<Double> = Single::from_bits(x.into()).convert(&mut loses);
                r.value
            };
            let (wa, wb) = (w(a), w(b));
            let r = ap(op, wa, wb, Round::TowardZero).value;
            r.abs() >= Double::from_bits(0x47f0_0000_0000_0000)
        }
        P::D => {
            let mut w = |x: u64| -> Quad {
                let r: StatusAnd<Quad> = Double::from_bits(x.into()).convert(&mut loses);
                r.value
            };
            let (wa, wb) = (w(a), w(b));
            let r = ap(op, wa, wb, Round::TowardZero).value;
            r.abs() >= Quad::from_bits((16383u128 + 1024) << 112)
        }
    }
}

fn minmax(p: P, max: bool, a: u64, b: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    let (a, b) = inputs(p, a, b, mxcsr, fl);
    if p.is_nan(a) || p.is_nan(b) {
        *fl |= mx::IE;
        return b;
    }
    let (x, y) = (p.to_f64(a), p.to_f64(b));
    let pick_a = if max { x > y } else { x < y };
    if pick_a {
        a
    } else {
        b
    }
}

fn sqrt(p: P, _: u64, b: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    // The invalid operation (a negative denormal) takes precedence over DE.
    let mut de = 0;
    let x = input(p, b, mxcsr, &mut de);
    if x & p.sign() == 0 {
        *fl |= de;
    }
    if p.is_nan(x) {
        if p.is_snan(x) {
            *fl |= mx::IE;
        }
        return x | p.quiet_bit();
    }
    if x & p.sign() != 0 && x & !p.sign() != 0 {
        *fl |= mx::IE;
        return p.default_nan();
    }
    let rm = round_mode(mxcsr);
    // The host square root is correctly rounded to nearest; the residual r*r - x (exact
    // through a fused multiply-add) says on which side of the true root it lies. Tiny doubles
    // are scaled by 2^108 first (the root by 2^54, exactly) so that the residual does not
    // underflow.
    let (r, res, tiny) = match p {
        P::S => {
            let v = f64::from(f32::from_bits(x as u32));
            let r = v.sqrt() as f32;
            let rr = f64::from(r);
            (u64::from(r.to_bits()), rr * rr - v, false)
        }
        P::D => {
            let v = f64::from_bits(x);
            let tiny = v != 0.0 && v.abs() < f64::from_bits(0x0c00_0000_0000_0000);
            let v = if tiny {
                v * f64::from_bits(0x46b0_0000_0000_0000)
            } else {
                v
            };
            let r = v.sqrt();
            (r.to_bits(), r.mul_add(r, -v), tiny)
        }
    };
    if res == 0.0 || p.is_nan(r) || r & !p.sign() == p.exp_mask() || r & !p.sign() == 0 {
        return if tiny { unscale(r) } else { r };
    }
    *fl |= mx::PE;
    let r = match rm {
        Round::TowardNegative | Round::TowardZero if res > 0.0 => r - 1,
        Round::TowardPositive if res < 0.0 => r + 1,
        _ => r,
    };
    if tiny {
        unscale(r)
    } else {
        r
    }
}

/// Undoes the 2^54 scaling of a square root of a tiny double (exact: the root is normal).
fn unscale(r: u64) -> u64 {
    (f64::from_bits(r) * f64::from_bits(0x3c90_0000_0000_0000)).to_bits()
}

/// Denormal inputs count as zeros and denormal results are flushed to zero (whatever DAZ and
/// FZ say); NaNs are quieted; no flags.
fn rcp(_: P, _: u64, b: u64, _: u32, _: &mut u32) -> u64 {
    approx(b as u32, |x| 1.0 / x)
}
fn rsqrt(_: P, _: u64, b: u64, _: u32, _: &mut u32) -> u64 {
    approx(
        b as u32,
        |x| if x < 0.0 { f32::NAN } else { 1.0 / x.sqrt() },
    )
}
fn approx(b: u32, f: impl Fn(f32) -> f32) -> u64 {
    let p = P::S;
    let x = u64::from(b);
    if p.is_nan(x) {
        return x | p.quiet_bit();
    }
    let x = if p.is_denormal(x) { x & p.sign() } else { x };
    let r = f(f32::from_bits(x as u32));
    let r = if r.is_nan() {
        p.default_nan()
    } else {
        u64::from(r.to_bits())
    };
    if p.is_denormal(r) {
        r & p.sign()
    } else {
        r
    }
}

type LaneFn = fn(P, u64, u64, u32, &mut u32) -> u64;

/// Raises the MXCSR flags `fl`; an unmasked one makes #XM (or #UD without OSXMMEXCPT).
pub(crate) fn raise(cpu: &mut Cpu, fl: u32) -> R {
    cpu.fpu.mxcsr |= fl;
    let masks = (cpu.fpu.mxcsr >> mx::MASK_SHIFT) & 0x3f;
    if fl & !masks & 0x3f != 0 {
        if cpu.cr4 & cr::CR4_OSXMMEXCPT != 0 {
            return Err(Exception::new(Exception::XM).into());
        }
        return Err(Exception::ud().into());
    }
    Ok(())
}

/// Runs `f` on the low lane (`scalar`) or every lane of op0 and op1, then writes op0.
fn run(cpu: &mut Cpu, ins: &Instruction, p: P, scalar: bool, f: LaneFn) -> R {
    check_sse(cpu)?;
    let b = rd(cpu, ins, 1)?;
    let a = rd(cpu, ins, 0)?;
    let mxcsr = cpu.fpu.mxcsr;
    let mut fl = 0;
    let bits = p.bits();
    let n = if scalar { 1 } else { 128 / bits };
    let mut r = a;
    for i in 0..n {
        r = set_lane(
            r,
            bits,
            i,
            f(p, lane(a, bits, i), lane(b, bits, i), mxcsr, &mut fl),
        );
    }
    raise(cpu, fl)?;
    wr(cpu, ins, 0, r)
}

macro_rules! fp_ops {
    ($($name:ident, $p:expr, $scalar:expr, $f:expr;)*) => {$(
        fn $name(cpu: &mut Cpu, ins: &Instruction) -> R {
            run(cpu, ins, $p, $scalar, $f)
        }
    )*};
}

fn add(p: P, a: u64, b: u64, m: u32, fl: &mut u32) -> u64 {
    arith(p, Op::Add, a, b, m, fl)
}
fn sub(p: P, a: u64, b: u64, m: u32, fl: &mut u32) -> u64 {
    arith(p, Op::Sub, a, b, m, fl)
}
fn mul(p: P, a: u64, b: u64, m: u32, fl: &mut u32) -> u64 {
    arith(p, Op::Mul, a, b, m, fl)
}
fn div(p: P, a: u64, b: u64, m: u32, fl: &mut u32) -> u64 {
    arith(p, Op::Div, a, b, m, fl)
}
fn min(p: P, a: u64, b: u64, m: u32, fl: &mut u32) -> u64 {
    minmax(p, false, a, b, m, fl)
}
fn max(p: P, a: u64, b: u64, m: u32, fl: &mut u32) -> u64 {
    minmax(p, true, a, b, m, fl)
}

fp_ops! {
    addss, P::S, true, add;
    addsd, P::D, true, add;
    addps, P::S, false, add;
    addpd, P::D, false, add;
    subss, P::S, true, sub;
    subsd, P::D, true, sub;
    subps, P::S, false, sub;
    subpd, P::D, false, sub;
    mulss, P::S, true, mul;
    mulsd, P::D, true, mul;
    mulps, P::S, false, mul;
    mulpd, P::D, false, mul;
    divss, P::S, true, div;
    divsd, P::D, true, div;
    divps, P::S, false, div;
    divpd, P::D, false, div;
    minss, P::S, true, min;
    minsd, P::D, true, min;
    minps, P::S, false, min;
    minpd, P::D, false, min;
    maxss, P::S, true, max;
    maxsd, P::D, true, max;
    maxps, P::S, false, max;
    maxpd, P::D, false, max;
    sqrtss, P::S, true, sqrt;
    sqrtsd, P::D, true, sqrt;
    sqrtps, P::S, false, sqrt;
    sqrtpd, P::D, false, sqrt;
    rcpss, P::S, true, rcp;
    rcpps, P::S, false, rcp;
    rsqrtss, P::S, true, rsqrt;
    rsqrtps, P::S, false, rsqrt;
}

/// ADDSUB: even lanes subtract, odd lanes add.
fn addsub(cpu: &mut Cpu, ins: &Instruction, p: P) -> R {
    check_sse(cpu)?;
    let b = rd(cpu, ins, 1)?;
    let a = rd(cpu, ins, 0)?;
    let m = cpu.fpu.mxcsr;
    let mut fl = 0;
    let bits = p.bits();
    let mut r = 0;
    for i in 0..128 / bits {
        let op = if i % 2 == 0 { Op::Sub } else { Op::Add };
        r = set_lane(
            r,
            bits,
            i,
            arith(p, op, lane(a, bits, i), lane(b, bits, i), m, &mut fl),
        );
    }
    raise(cpu, fl)?;
    wr(cpu, ins, 0, r)
}
fn addsubps(cpu: &mut Cpu, ins: &Instruction) -> R {
    addsub(cpu, ins, P::S)
}
fn addsubpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    addsub(cpu, ins, P::D)
}

/// HADD/HSUB: pairs of op0's lanes, then pairs of op1's lanes.
fn horizontal(cpu: &mut Cpu, ins: &Instruction, p: P, op: Op) -> R {
    check_sse(cpu)?;
    let b = rd(cpu, ins, 1)?;
    let a = rd(cpu, ins, 0)?;
    let m = cpu.fpu.mxcsr;
    let mut fl = 0;
    let bits = p.bits();
    let n = 128 / bits;
    let mut r = 0;
    for i in 0..n / 2 {
        let x = arith(
            p,
            op,
            lane(a, bits, 2 * i),
            lane(a, bits, 2 * i + 1),
            m,
            &mut fl,
        );
        let y = arith(
            p,
            op,
            lane(b, bits, 2 * i),
            lane(b, bits, 2 * i + 1),
            m,
            &mut fl,
        );
        r = set_lane(r, bits, i, x);
        r = set_lane(r, bits, i + n / 2, y);
    }
    raise(cpu, fl)?;
    wr(cpu, ins, 0, r)
}
fn haddps(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, P::S, Op::Add)
}
fn haddpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, P::D, Op::Add)
}
fn hsubps(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, P::S, Op::Sub)
}
fn hsubpd(cpu: &mut Cpu, ins: &Instruction) -> R {
    horizontal(cpu, ins, P::D, Op::Sub)
}

/// CMPxx predicate `pred` (0..7) on one lane: all ones if true.
fn cmp_lane(p: P, pred: u32, a: u64, b: u64, mxcsr: u32, fl: &mut u32) -> u64 {
    let (a, b) = inputs(p, a, b, mxcsr, fl);
    let unord = p.is_nan(a) || p.is_nan(b);
    // LT, LE, NLT, NLE signal on any NaN; the others only on SNaN.
    if (unord && matches!(pred & 7, 1 | 2 | 5 | 6)) || p.is_snan(a) || p.is_snan(b) {
        *fl |= mx::IE;
    }
    let (x, y) = (p.to_f64(a), p.to_f64(b));
    let t = match pred & 7 {
        0 => x == y,
        1 => x < y,
        2 => x <= y,
        3 => unord,
        4 => x != y,
        5 => unord || x >= y,
        6 => unord || x > y,
        _ => !unord,
    };
    let all = if p == P::S { 0xffff_ffff } else { u64::MAX };
    if t {
        all
    } else {
        0
    }
}

fn cmp(cpu: &mut Cpu, ins: &Instruction, p: P, scalar: bool) -> R {
    check_sse(cpu)?;
    let b = rd(cpu, ins, 1)?;
    let a = rd(cpu, ins, 0)?;
    let pred = u32::from(ins.immediate8());
    let m = cpu.fpu.mxcsr;
    let mut fl = 0;
    let bits = p.bits();
    let n = if scalar { 1 } else { 128 / bits };
    let mut r = a;
    for i in 0..n {
        let v = cmp_lane(p, pred, lane(a, bits, i), lane(b, bits, i), m, &mut fl);
        r = set_lane(r, bits, i, v);
    }
    raise(cpu, fl)?;
    wr(cpu, ins, 0, r)
}
fn cmpss(cpu: &mut Cpu, ins: &Instruction) -> R {
    cmp(cpu, ins, P::S, true)
}
pub fn cmpsd(cpu: &mut Cpu, ins: &Instruction) -> R {
    cmp(cpu, ins, P::D, true)
}
fn cmpps(cpu: &mut Cpu, ins: &Instruction) -> R {
    cmp(cpu, ins, P::S, false)
}
fn cmppd(cpu: &mut Cpu, ins: &Instruction) -> R {
    cmp(cpu, ins, P::D, false)
}

/// (U)COMISS/SD: ZF, PF, CF from the comparison; OF, SF, AF cleared.
fn comi(cpu: &mut Cpu, ins: &Instruction, p: P, signal_qnan: bool) -> R {
    check_sse(cpu)?;
    let b = rd(cpu, ins, 1)?;
    let a = rd(cpu, ins, 0)?;
    let m = cpu.fpu.mxcsr;
    let mut fl = 0;
    let (a, b) = inputs(p, lane(a, p.bits(), 0), lane(b, p.bits(), 0), m, &mut fl);
    let unord = p.is_nan(a) || p.is_nan(b);
    if (unord && signal_qnan) || p.is_snan(a) || p.is_snan(b) {
        fl |= mx::IE;
    }
    raise(cpu, fl)?;
    let (x, y) = (p.to_f64(a), p.to_f64(b));
    let f = if unord {
        flags::ZF | flags::PF | flags::CF
    } else if x < y {
        flags::CF
    } else if x == y {
        flags::ZF
    } else {
        0
    };
    cpu.flags.set_arith(f);
    Ok(())
}
fn comiss(cpu: &mut Cpu, ins: &Instruction) -> R {
    comi(cpu, ins, P::S, true)
}
fn comisd(cpu: &mut Cpu, ins: &Instruction) -> R {
    comi(cpu, ins, P::D, true)
}
fn ucomiss(cpu: &mut Cpu, ins: &Instruction) -> R {
    comi(cpu, ins, P::S, false)
}
fn ucomisd(cpu: &mut Cpu, ins: &Instruction) -> R {
    comi(cpu, ins, P::D, false)
}
