//! x87 part of the native differential tests (see `sse_native_tests.rs`): arithmetic,
//! comparisons, conversions, loads and stores, from random stacks of edge-biased 80-bit values
//! under every precision and rounding control.

#![cfg(target_arch = "x86_64")]

use super::native_tests::{codes, run_codes, Check, Draw, Rng};
use iced_x86::{Code, Mnemonic};

/// A random 80-bit value: specials (zeros, infinities, NaNs, denormals, pseudo-denormals,
/// unnormals), values converted from doubles, integers, and random bits.
pub(super) fn f80(rng: &mut Rng) -> u128 {
    const J: u64 = 1 << 63;
    let sign = u128::from(rng.below(2) as u16) << 79;
    let mk = |e: u16, m: u64| (u128::from(e) << 64) | u128::from(m);
    let v = match rng.below(12) {
        0 => mk(0, 0),
        1 => mk(0x7fff, J),
        2 => mk(0x7fff, J | 1 << 62 | (rng.next() >> 40)),
        3 => mk(0x7fff, J | (1 + (rng.next() >> 30))),
        4 => mk(0, rng.next() >> rng.below(63)),
        5 => mk(0, J | (rng.next() >> 1)),
        6 => mk(1 + rng.below(0x7ffe) as u16, rng.next() >> 1),
        7 => mk(0x3fff + rng.below(70) as u16, J | (rng.next() >> 1)),
        8 => {
            let x = (rng.next() as i64 >> rng.below(64)) as f64;
            f64_to_f80(x.to_bits())
        }
        9 => mk(
            0x3fff - 10 + rng.below(20) as u16,
            J | (rng.next() & !(u64::MAX >> 12)),
        ),
        10 => mk(
            rng.pick::<u16>(&[1, 0x7ffe, 0x3fff, 0x3ffe, 0x403e, 0x401e]),
            J | (rng.next() >> rng.below(64)),
        ),
        _ => mk(rng.next() as u16 & 0x7fff, rng.next()),
    };
    v | sign
}

fn f64_to_f80(b: u64) -> u128 {
    let sign = u128::from(b >> 63) << 79;
    let e = (b >> 52) & 0x7ff;
    let m = b & ((1 << 52) - 1);
    sign | if e == 0 && m == 0 {
        0
    } else if e == 0x7ff {
        (0x7fffu128 << 64) | u128::from(1u64 << 63 | m << 11)
    } else if e == 0 {
        let sh = m.leading_zeros();
        let exp = 0x3c01 - (sh as u64 - 11);
        (u128::from(exp) << 64) | u128::from(m << sh)
    } else {
        (u128::from(e + 0x3c00) << 64) | u128::from(1u64 << 63 | m << 11)
    }
}

fn x87_check(code: Code) -> Check {
    use Mnemonic as M;
    let full = matches!(
        code.mnemonic(),
        M::Fcom
            | M::Fcomp
            | M::Fcompp
            | M::Fucom
            | M::Fucomp
            | M::Fucompp
            | M::Ficom
            | M::Ficomp
            | M::Ftst
            | M::Fxam
            | M::Fprem
            | M::Fprem1
            | M::Fcomi
            | M::Fcomip
            | M::Fucomi
            | M::Fucomip
    );
    Check {
        fsw_mask: if full { 0xffff } else { 0xbaff },
        flags_mask: 0x8d5,
        approx32: false,
    }
}

const ARITH: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Fadd, Faddp, Fiadd, Fsub, Fsubp, Fisub, Fsubr, Fsubrp, Fisubr, Fmul, Fmulp, Fimul, Fdiv,
        Fdivp, Fidiv, Fdivr, Fdivrp, Fidivr, Fchs, Fabs, Fsqrt, Frndint, Fscale, Fxtract, Fprem,
        Fprem1,
    ]
};

const CMP: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Fcom, Fcomp, Fcompp, Fucom, Fucomp, Fucompp, Ficom, Ficomp, Fcomi, Fcomip, Fucomi, Fucomip,
        Ftst, Fxam,
    ]
};

const MOVE: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Fld, Fst, Fstp, Fild, Fist, Fistp, Fisttp, Fxch, Fld1, Fldz, Fldpi, Fldl2e, Fldl2t, Fldlg2,
        Fldln2, Fcmovb, Fcmove, Fcmovbe, Fcmovu, Fcmovnb, Fcmovne, Fcmovnbe, Fcmovnu, Fincstp,
        Fdecstp, Ffree, Fbld, Fbstp, Fnop,
    ]
};

fn run(m: &[Mnemonic], cases: usize, seed: u64) {
    let codes: Vec<Code> = codes(m)
        .into_iter()
        .filter(|c| !matches!(c, Code::Ffreep_sti))
        .collect();
    let fails = run_codes(&codes, cases, seed, true, x87_check);
    if !fails.is_empty() {
        panic!("{} divergence(s):\n{}", fails.len(), fails.join("\n"));
    }
}

#[test]
fn native_x87_arith() {
    run(ARITH, 300, 0x8787_0001);
}

#[test]
fn native_x87_compare() {
    run(CMP, 300, 0x8787_0002);
}

#[test]
fn native_x87_move() {
    run(MOVE, 300, 0x8787_0003);
}
