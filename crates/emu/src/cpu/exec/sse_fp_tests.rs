//! Tests of SSE floating point: bit-exact against the host's IEEE arithmetic, x86 NaN rules,
//! rounding modes, conversions, compares and exceptions.

use super::tests::{run64, step};
use crate::cpu::fpu::mx;
use crate::cpu::{flags, Exception, Fault};
use iced_x86::code_asm::*;
use std::hint::black_box;

const F64S: &[f64] = &[
    0.0,
    -0.0,
    1.0,
    -1.5,
    3.0,
    0.1,
    1e308,
    -1e308,
    1e-310,
    2.5e-320,
    f64::MAX,
    f64::MIN_POSITIVE,
    f64::INFINITY,
    f64::NEG_INFINITY,
    123456789.123,
    -7.0e-5,
];

fn x86_nan2(a: u64, b: u64, q: u64, is_nan: impl Fn(u64) -> bool) -> Option<u64> {
    if is_nan(a) {
        Some(a | q)
    } else if is_nan(b) {
        Some(b | q)
    } else {
        None
    }
}

#[test]
fn double_arith_bit_exact() {
    let mut vals: Vec<u64> = F64S.iter().map(|v| v.to_bits()).collect();
    vals.push(0x7ff8_0000_0000_1234); // QNaN
    vals.push(0xfff0_0000_0000_0042); // SNaN
    let is_nan = |v: u64| f64::from_bits(v).is_nan();
    for &a in &vals {
        for &b in &vals {
            let m = run64(
                |c| {
                    for (r, f) in [(2, 0), (3, 1), (4, 2), (5, 3), (6, 4), (7, 5), (8, 6)] {
                        let dst = [xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8][r - 2];
                        c.movapd(dst, xmm0)?;
                        match f {
                            0 => c.addsd(dst, xmm1)?,
                            1 => c.subsd(dst, xmm1)?,
                            2 => c.mulsd(dst, xmm1)?,
                            3 => c.divsd(dst, xmm1)?,
                            4 => c.sqrtsd(dst, xmm1)?,
                            5 => c.minsd(dst, xmm1)?,
                            _ => c.maxsd(dst, xmm1)?,
                        }
                    }
                    Ok(())
                },
                |m| {
                    m.cpu.fpu.xmm[0] = u128::from(a) | (7u128 << 64);
                    m.cpu.fpu.xmm[1] = u128::from(b) | (9u128 << 64);
                },
            );
            let (fa, fb) = (black_box(f64::from_bits(a)), black_box(f64::from_bits(b)));
            let host = [fa + fb, fa - fb, fa * fb, fa / fb];
            for (i, h) in host.iter().enumerate() {
                let got = m.cpu.fpu.xmm[2 + i];
                assert_eq!(got >> 64, 7, "upper half kept");
                let want = match x86_nan2(a, b, 1 << 51, is_nan) {
                    Some(n) => n,
                    None if h.is_nan() => 0xfff8_0000_0000_0000,
                    None => h.to_bits(),
                };
                assert_eq!(got as u64, want, "op {i} on {a:#x} {b:#x}");
            }
            let s = fb.sqrt();
            let want_sqrt = if is_nan(b) {
                b | (1 << 51)
            } else if s.is_nan() {
                0xfff8_0000_0000_0000
            } else {
                s.to_bits()
            };
            assert_eq!(m.cpu.fpu.xmm[6] as u64, want_sqrt, "sqrt {b:#x}");
            let unord = is_nan(a) || is_nan(b);
            let min = if !unord && fa < fb { a } else { b };
            let max = if !unord && fa > fb { a } else { b };
            assert_eq!(m.cpu.fpu.xmm[7] as u64, min, "min {a:#x} {b:#x}");
            assert_eq!(m.cpu.fpu.xmm[8] as u64, max, "max {a:#x} {b:#x}");
        }
    }
}

#[test]
fn single_packed_arith_bit_exact() {
    let vals: Vec<f32> = vec![
        0.0,
        -0.0,
        1.0,
        0.1,
        -3.75,
        1e38,
        3e-39,
        f32::MAX,
        f32::INFINITY,
        -7.5e-6,
        16777217.0,
        1.0 / 3.0,
    ];
    for &a in &vals {
        for chunk in vals.chunks(4) {
            let mut b = [1.0f32; 4];
            b[..chunk.len()].copy_from_slice(chunk);
            let pack = |v: [f32; 4]| {
                v.iter()
                    .enumerate()
                    .fold(0u128, |r, (i, f)| r | (u128::from(f.to_bits()) << (32 * i)))
            };
            let av = [a, -a, a * 2.0, a / 3.0];
            let m = run64(
                |c| {
                    c.movaps(xmm2, xmm0)?;
                    c.addps(xmm2, xmm1)?;
                    c.movaps(xmm3, xmm0)?;
                    c.mulps(xmm3, xmm1)?;
                    c.movaps(xmm4, xmm0)?;
                    c.divps(xmm4, xmm1)?;
                    c.sqrtps(xmm5, xmm1)?;
                    c.movaps(xmm6, xmm0)?;
                    c.subss(xmm6, xmm1)
                },
                |m| {
                    m.cpu.fpu.xmm[0] = pack(av);
                    m.cpu.fpu.xmm[1] = pack(b);
                },
            );
            let fix = |v: f32| if v.is_nan() { 0xffc0_0000 } else { v.to_bits() };
            for i in 0..4 {
                let (x, y) = (black_box(av[i]), black_box(b[i]));
                let lane = |r: usize| (m.cpu.fpu.xmm[r] >> (32 * i)) as u32;
                assert_eq!(lane(2), fix(x + y), "add {x} {y}");
                assert_eq!(lane(3), fix(x * y), "mul {x} {y}");
                assert_eq!(lane(4), fix(x / y), "div {x} {y}");
                assert_eq!(lane(5), fix(y.sqrt()), "sqrt {y}");
            }
            assert_eq!(
                m.cpu.fpu.xmm[6] as u32,
                fix(black_box(av[0]) - black_box(b[0]))
            );
            assert_eq!(m.cpu.fpu.xmm[6] >> 32, pack(av) >> 32);
        }
    }
}

#[test]
fn rounding_modes() {
    let third = |rc: u32| {
        let m = run64(
            |c| c.divsd(xmm0, xmm1),
            |m| {
                m.cpu.fpu.xmm[0] = u128::from(1.0f64.to_bits());
                m.cpu.fpu.xmm[1] = u128::from(3.0f64.to_bits());
                m.cpu.fpu.mxcsr = 0x1f80 | (rc << 13);
            },
        );
        (m.cpu.fpu.xmm[0] as u64, m.cpu.fpu.mxcsr & 0x3f)
    };
    assert_eq!(third(0), (0x3fd5_5555_5555_5555, mx::PE));
    assert_eq!(third(1), (0x3fd5_5555_5555_5555, mx::PE));
    assert_eq!(third(2), (0x3fd5_5555_5555_5556, mx::PE));
    assert_eq!(third(3), (0x3fd5_5555_5555_5555, mx::PE));
    // SQRT honours RC too: sqrt(2) rounds down to nearest here, up gives the next value.
    let sqrt2 = |rc: u32| {
        run64(
            |c| c.sqrtsd(xmm0, xmm1),
            |m| {
                m.cpu.fpu.xmm[1] = u128::from(2.0f64.to_bits());
                m.cpu.fpu.mxcsr = 0x1f80 | (rc << 13);
            },
        )
        .cpu
        .fpu
        .xmm[0] as u64
    };
    let n = 2.0f64.sqrt().to_bits();
    assert_eq!(sqrt2(0), n);
    assert_eq!(sqrt2(2).max(sqrt2(1)) - sqrt2(2).min(sqrt2(1)), 1);
    assert!(sqrt2(3) == sqrt2(1));
    // CVTSD2SI under each rounding mode; CVTTSD2SI always truncates.
    for (rc, want) in [
        (0u32, [2i64, -2, 4]),
        (1, [2, -3, 3]),
        (2, [3, -2, 4]),
        (3, [2, -2, 3]),
    ] {
        let m = run64(
            |c| {
                c.cvtsd2si(rax, xmm0)?;
                c.cvtsd2si(rcx, xmm1)?;
                c.cvtsd2si(edx, xmm2)?;
                c.cvttsd2si(rbx, xmm1)
            },
            |m| {
                m.cpu.fpu.xmm[0] = u128::from(2.5f64.to_bits());
                m.cpu.fpu.xmm[1] = u128::from((-2.5f64).to_bits());
                m.cpu.fpu.xmm[2] = u128::from(3.5f64.to_bits());
                m.cpu.fpu.mxcsr = 0x1f80 | (rc << 13);
            },
        );
        assert_eq!(m.cpu.gpr[0] as i64, want[0], "rc {rc}");
        assert_eq!(m.cpu.gpr[1] as i64, want[1], "rc {rc}");
        assert_eq!(m.cpu.gpr[2], want[2] as u64, "rc {rc}");
        assert_eq!(m.cpu.gpr[3] as i64, -2);
    }
}

#[test]
fn conversions() {
    let m = run64(
        |c| {
            c.cvttsd2si(rax, xmm0)?; // NaN
            c.cvttsd2si(ecx, xmm1)?; // 1e20 overflows 32 bits
            c.cvttsd2si(rdx, xmm1)?; // and 64 bits
            c.cvtsi2sd(xmm3, rbx)?; // i64::MAX rounds to 2^63
            c.cvtsi2ss(xmm4, esi)?;
            c.cvtsd2ss(xmm5, xmm1)?;
            c.cvtss2sd(xmm6, xmm7)?; // SNaN single → quiet double
            c.cvtdq2pd(xmm8, xmm9)?;
            c.cvttps2dq(xmm10, xmm11)?;
            c.cvtpd2ps(xmm12, xmm13)?;
            c.cvttsd2si(edi, xmm14) // -2147483648.9 truncates to i32::MIN exactly
        },
        |m| {
            m.cpu.fpu.xmm[0] = u128::from(f64::NAN.to_bits());
            m.cpu.fpu.xmm[1] = u128::from(1e20f64.to_bits());
            m.cpu.gpr[3] = i64::MAX as u64;
            m.cpu.gpr[6] = (-16_777_217i32) as u32 as u64;
            m.cpu.fpu.xmm[3] = u128::MAX;
            m.cpu.fpu.xmm[7] = 0xff80_0001;
            m.cpu.fpu.xmm[9] =
                (u128::MAX << 64) | (u128::from(7u32) << 32) | u128::from((-5i32) as u32);
            m.cpu.fpu.xmm[11] = u128::from(1.9f32.to_bits())
                | (u128::from((-1.9f32).to_bits()) << 32)
                | (u128::from(3e9f32.to_bits()) << 64)
                | (u128::from(f32::NAN.to_bits()) << 96);
            m.cpu.fpu.xmm[12] = u128::MAX;
            m.cpu.fpu.xmm[13] =
                u128::from(0.1f64.to_bits()) | (u128::from(1e300f64.to_bits()) << 64);
            m.cpu.fpu.xmm[14] = u128::from((-2147483648.9f64).to_bits());
        },
    );
    assert_eq!(m.cpu.gpr[0], 0x8000_0000_0000_0000);
    assert_eq!(m.cpu.gpr[1], 0x8000_0000);
    assert_eq!(m.cpu.gpr[2], 0x8000_0000_0000_0000);
    assert_eq!(
        m.cpu.fpu.xmm[3],
        (u128::MAX << 64) | u128::from(9223372036854775808.0f64.to_bits())
    );
    assert_eq!(m.cpu.fpu.xmm[4] as u32, (-16_777_216.0f32).to_bits());
    assert_eq!(m.cpu.fpu.xmm[5] as u32, (1e20f64 as f32).to_bits());
    assert_eq!(m.cpu.fpu.xmm[6] as u64, 0xfff8_0000_2000_0000);
    assert_eq!(
        m.cpu.fpu.xmm[8],
        u128::from((-5.0f64).to_bits()) | (u128::from(7.0f64.to_bits()) << 64)
    );
    assert_eq!(
        m.cpu.fpu.xmm[10],
        1 | (0xffff_ffffu128 << 32) | (0x8000_0000u128 << 64) | (0x8000_0000u128 << 96)
    );
    assert_eq!(
        m.cpu.fpu.xmm[12],
        u128::from(0.1f32.to_bits()) | (u128::from(f32::INFINITY.to_bits()) << 32)
    );
    assert_eq!(m.cpu.gpr[7], 0x8000_0000);
    let f = m.cpu.fpu.mxcsr;
    assert_eq!(f & 0x3f, mx::IE | mx::OE | mx::PE);
}

#[test]
fn comisd_flags() {
    let arith = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF | flags::OF;
    for (a, b, want, ie_comi) in [
        (1.0f64, 2.0f64, flags::CF, false),
        (2.0, 1.0, 0, false),
        (-0.0, 0.0, flags::ZF, false),
        (f64::NAN, 1.0, flags::ZF | flags::PF | flags::CF, true),
        (f64::INFINITY, f64::MAX, 0, false),
    ] {
        for comi in [false, true] {
            let m = run64(
                |c| {
                    if comi {
                        c.comisd(xmm0, xmm1)
                    } else {
                        c.ucomisd(xmm0, xmm1)
                    }
                },
                |m| {
                    m.cpu.fpu.xmm[0] = u128::from(a.to_bits());
                    m.cpu.fpu.xmm[1] = u128::from(b.to_bits());
                    m.cpu.flags.set_arith(flags::OF | flags::SF | flags::AF);
                },
            );
            assert_eq!(m.cpu.flags.get() & arith, want, "{a} {b} comi {comi}");
            assert_eq!(m.cpu.fpu.mxcsr & mx::IE != 0, comi && ie_comi);
        }
    }
    // Single precision too.
    let m = run64(
        |c| c.ucomiss(xmm0, xmm1),
        |m| {
            m.cpu.fpu.xmm[0] = u128::from(1.5f32.to_bits());
            m.cpu.fpu.xmm[1] = u128::from(1.25f32.to_bits());
        },
    );
    assert_eq!(m.cpu.flags.get() & arith, 0);
}

#[test]
fn cmp_predicates() {
    let nan = f64::NAN.to_bits();
    let one = 1.0f64.to_bits();
    let two = 2.0f64.to_bits();
    for pred in 0..8u32 {
        let m = run64(
            |c| {
                c.movapd(xmm2, xmm0)?;
                c.cmppd(xmm2, xmm1, pred)?;
                c.movapd(xmm3, xmm1)?;
                c.cmpsd_3(xmm3, xmm0, pred)
            },
            |m| {
                m.cpu.fpu.xmm[0] = u128::from(one) | (u128::from(nan) << 64);
                m.cpu.fpu.xmm[1] = u128::from(two) | (u128::from(one) << 64);
            },
        );
        let t = |x: f64, y: f64| -> bool {
            let u = x.is_nan() || y.is_nan();
            match pred {
                0 => x == y,
                1 => x < y,
                2 => x <= y,
                3 => u,
                4 => x != y,
                5 => u || x >= y,
                6 => u || x > y,
                _ => !u,
            }
        };
        let m64 = |b: bool| if b { u64::MAX } else { 0 };
        assert_eq!(m.cpu.fpu.xmm[2] as u64, m64(t(1.0, 2.0)), "pred {pred}");
        assert_eq!(
            (m.cpu.fpu.xmm[2] >> 64) as u64,
            m64(t(f64::NAN, 1.0)),
            "pred {pred}"
        );
        assert_eq!(m.cpu.fpu.xmm[3] as u64, m64(t(2.0, 1.0)), "pred {pred}");
        assert_eq!((m.cpu.fpu.xmm[3] >> 64) as u64, one);
    }
}

#[test]
fn logic_and_shuffle_pd() {
    let m = run64(
        |c| {
            c.movapd(xmm2, xmm0)?;
            c.andnpd(xmm2, xmm1)?;
            c.movapd(xmm3, xmm0)?;
            c.xorpd(xmm3, xmm1)?;
            c.movapd(xmm4, xmm0)?;
            c.shufpd(xmm4, xmm1, 1)?;
            c.movapd(xmm5, xmm0)?;
            c.unpckhpd(xmm5, xmm1)
        },
        |m| {
            m.cpu.fpu.xmm[0] = (0x8000_0000_0000_0000u128 << 64) | 0x8000_0000_0000_0000;
            m.cpu.fpu.xmm[1] =
                (u128::from((-2.0f64).to_bits()) << 64) | u128::from((-3.0f64).to_bits());
        },
    );
    assert_eq!(
        m.cpu.fpu.xmm[2],
        (u128::from(2.0f64.to_bits()) << 64) | u128::from(3.0f64.to_bits())
    );
    assert_eq!(
        m.cpu.fpu.xmm[3],
        (u128::from(2.0f64.to_bits()) << 64) | u128::from(3.0f64.to_bits())
    );
    assert_eq!(
        m.cpu.fpu.xmm[4],
        (u128::from((-3.0f64).to_bits()) << 64) | 0x8000_0000_0000_0000
    );
    assert_eq!(
        m.cpu.fpu.xmm[5],
        (u128::from((-2.0f64).to_bits()) << 64) | 0x8000_0000_0000_0000
    );
}

#[test]
fn unmasked_exception_raises_xm() {
    let (m, r) = step(
        |c| c.divsd(xmm0, xmm1),
        |m| {
            m.cpu.fpu.xmm[0] = u128::from(1.0f64.to_bits());
            m.cpu.fpu.mxcsr = 0x1f80 & !(mx::ZE << mx::MASK_SHIFT);
        },
    );
    assert_eq!(r, Err(Fault::Ex(Exception::new(Exception::XM))));
    assert_eq!(m.cpu.fpu.xmm[0] as u64, 1.0f64.to_bits());
    assert_ne!(m.cpu.fpu.mxcsr & mx::ZE, 0);
    let (_, r) = step(
        |c| c.divsd(xmm0, xmm1),
        |m| {
            m.cpu.fpu.mxcsr = 0x1f80 & !(mx::IE << mx::MASK_SHIFT);
            m.cpu.cr4 &= !crate::cpu::cr::CR4_OSXMMEXCPT;
        },
    );
    assert_eq!(r, Err(Fault::Ex(Exception::ud())));
}

#[test]
fn daz_and_ftz() {
    let tiny = 1e-310f64.to_bits();
    let m = run64(
        |c| {
            c.movapd(xmm2, xmm0)?;
            c.addsd(xmm2, xmm1)?;
            c.movapd(xmm3, xmm1)?;
            c.mulsd(xmm3, xmm4)
        },
        |m| {
            m.cpu.fpu.xmm[0] = u128::from(tiny);
            m.cpu.fpu.xmm[1] = u128::from(1e-300f64.to_bits());
            m.cpu.fpu.xmm[4] = u128::from(1e-15f64.to_bits());
            m.cpu.fpu.mxcsr = 0x1f80 | mx::DAZ | mx::FZ;
        },
    );
    assert_eq!(m.cpu.fpu.xmm[2] as u64, 1e-300f64.to_bits());
    assert_eq!(m.cpu.fpu.xmm[3] as u64, 0);
    assert_ne!(m.cpu.fpu.mxcsr & mx::UE, 0);
}
