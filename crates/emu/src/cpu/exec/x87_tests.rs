//! Tests of the x87 instructions: 80-bit arithmetic, conversions, the register stack and its
//! tags, compares and the status word, environment save/restore.

use crate::cpu::flags;
use crate::cpu::fpu::{sw, F80_INDEFINITE};
use crate::cpu::run::Stop;
use crate::testutil::{TestMachine, CODE, DATA};
use iced_x86::code_asm::*;
use std::hint::black_box;

type Asm = Result<(), IcedError>;

fn run64(
    f: impl FnOnce(&mut CodeAssembler) -> Asm,
    setup: impl FnOnce(&mut TestMachine),
) -> TestMachine {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut m = TestMachine::new64(&code);
    setup(&mut m);
    assert_eq!(m.run(10_000), Stop::Halt);
    m
}

fn load_f64s(m: &mut TestMachine, vals: &[f64]) {
    for (i, v) in vals.iter().enumerate() {
        m.load(DATA + 8 * i as u64, &v.to_bits().to_le_bytes());
    }
}

fn f64_at(m: &TestMachine, off: u64) -> f64 {
    f64::from_bits(m.read_u64(DATA + off))
}

fn f80_at(m: &TestMachine, off: u64) -> u128 {
    let a = (DATA + off) as usize;
    let mut b = [0u8; 16];
    b[..10].copy_from_slice(&m.ram()[a..a + 10]);
    u128::from_le_bytes(b)
}

#[test]
fn arithmetic_matches_host() {
    let pairs = [
        (0.1, 0.2),
        (1.0, 3.0),
        (-7.25, 0.5),
        (1e300, 1e-300),
        (6.0, -4.0),
        (2.0, 0.0),
    ];
    for (a, b) in pairs {
        let m = run64(
            |c| {
                c.mov(rsi, DATA)?;
                c.fld(qword_ptr(rsi))?;
                c.fadd(qword_ptr(rsi + 8))?;
                c.fstp(qword_ptr(rsi + 0x100))?;
                c.fld(qword_ptr(rsi))?;
                c.fld(qword_ptr(rsi + 8))?;
                c.fsubp(st1, st0)?; // st1 = st1 - st0 = a - b
                c.fstp(qword_ptr(rsi + 0x108))?;
                c.fld(qword_ptr(rsi))?;
                c.fmul(qword_ptr(rsi + 8))?;
                c.fstp(qword_ptr(rsi + 0x110))?;
                c.fld(qword_ptr(rsi + 8))?;
                c.fdivr(qword_ptr(rsi))?; // a / b
                c.fstp(qword_ptr(rsi + 0x118))?;
                c.fld(qword_ptr(rsi))?;
                c.fld(qword_ptr(rsi + 8))?;
                c.fdivrp(st1, st0)?; // st1 = st0 / st1 = b / a
                c.fstp(qword_ptr(rsi + 0x120))
            },
            |m| load_f64s(m, &[a, b]),
        );
        let (x, y) = (black_box(a), black_box(b));
        assert_eq!(f64_at(&m, 0x100), x + y, "{a} + {b}");
        assert_eq!(f64_at(&m, 0x108), x - y, "{a} - {b}");
        assert_eq!(f64_at(&m, 0x110), x * y, "{a} * {b}");
        assert_eq!(f64_at(&m, 0x118).to_bits(), (x / y).to_bits(), "{a} / {b}");
        assert_eq!(f64_at(&m, 0x120), y / x, "{b} / {a}");
        assert_eq!(m.cpu.fpu.tags, 0);
    }
}

#[test]
fn extended_precision_results() {
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld1()?;
            c.fild(dword_ptr(rsi))?; // 3
            c.fdivp(st1, st0)?; // 1/3
            c.fld(st0)?;
            c.fstp(tword_ptr(rsi + 0x100))?;
            c.fstp(dword_ptr(rsi + 0x110))?;
            c.fild(dword_ptr(rsi + 4))?; // 2
            c.fsqrt()?;
            c.fstp(tword_ptr(rsi + 0x120))?;
            c.fldpi()?;
            c.fstp(tword_ptr(rsi + 0x130))?;
            c.fld(tword_ptr(rsi + 0x130))?;
            c.fchs()?;
            c.fstp(tword_ptr(rsi + 0x140))
        },
        |m| {
            m.load(DATA, &3i32.to_le_bytes());
            m.load(DATA + 4, &2i32.to_le_bytes());
        },
    );
    assert_eq!(f80_at(&m, 0x100), 0x3ffd_aaaa_aaaa_aaaa_aaab);
    assert_eq!(
        m.ram()[DATA as usize + 0x110..DATA as usize + 0x114],
        (1.0f32 / 3.0).to_le_bytes()
    );
    assert_eq!(f80_at(&m, 0x120), 0x3fff_b504_f333_f9de_6484);
    assert_eq!(f80_at(&m, 0x130), 0x4000_c90f_daa2_2168_c235);
    assert_eq!(f80_at(&m, 0x140), 0xc000_c90f_daa2_2168_c235);
    assert_ne!(m.cpu.fpu.fsw & sw::PE, 0);
}

#[test]
fn fild_fistp_round_trip() {
    for v in [
        i64::MIN,
        i64::MAX,
        -1,
        0,
        12_345_678_901_234_567,
        1 << 53 | 1,
    ] {
        let m = run64(
            |c| {
                c.mov(rsi, DATA)?;
                c.fild(qword_ptr(rsi))?;
                c.fistp(qword_ptr(rsi + 8))?;
                c.fild(qword_ptr(rsi))?;
                c.fisttp(qword_ptr(rsi + 16))
            },
            |m| m.load(DATA, &v.to_le_bytes()),
        );
        assert_eq!(m.read_u64(DATA + 8) as i64, v);
        assert_eq!(m.read_u64(DATA + 16) as i64, v);
        assert_eq!(m.cpu.fpu.fsw & sw::EXC, 0);
    }
    // 16- and 32-bit forms, rounding, and overflow to the integer indefinite.
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld(qword_ptr(rsi))?; // 2.5
            c.fist(word_ptr(rsi + 0x20))?; // nearest even: 2
            c.fisttp(dword_ptr(rsi + 0x28))?; // truncates: 2
            c.fld(qword_ptr(rsi + 8))?; // -3.5
            c.fistp(dword_ptr(rsi + 0x30))?; // -4
            c.fld(qword_ptr(rsi + 16))?; // 1e20
            c.fistp(dword_ptr(rsi + 0x38))?;
            c.fild(word_ptr(rsi + 0x40))?; // -2
            c.fistp(word_ptr(rsi + 0x48))
        },
        |m| {
            load_f64s(m, &[2.5, -3.5, 1e20]);
            m.load(DATA + 0x40, &(-2i16).to_le_bytes());
        },
    );
    assert_eq!(m.read_u64(DATA + 0x20) as u16, 2);
    assert_eq!(m.read_u64(DATA + 0x28) as u32, 2);
    assert_eq!(m.read_u64(DATA + 0x30) as u32 as i32, -4);
    assert_eq!(m.read_u64(DATA + 0x38) as u32, 0x8000_0000);
    assert_eq!(m.read_u64(DATA + 0x48) as u16 as i16, -2);
    assert_ne!(m.cpu.fpu.fsw & sw::IE, 0);
    assert_eq!(m.cpu.fpu.top(), 0);
}

#[test]
fn fcom_fnstsw() {
    let cc = sw::C0 | sw::C2 | sw::C3;
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld1()?;
            c.fld(qword_ptr(rsi))?; // 2.0
            c.fcom_2(st0, st1)?; // 2 > 1
            c.fnstsw(ax)?;
            c.mov(ebx, eax)?;
            c.fxch(st0, st1)?; // st0 = 1, st1 = 2
            c.fcom(qword_ptr(rsi))?; // 1 < 2
            c.fnstsw(ax)?;
            c.mov(ecx, eax)?;
            c.fcom(qword_ptr(rsi + 8))?; // 1 == 1
            c.fnstsw(word_ptr(rsi + 0x20))?;
            c.fucom(st0, st2)?; // unused st2: empty → underflow
            c.fnclex()?;
            c.fld(qword_ptr(rsi + 16))?; // NaN
            c.fucomp(st0, st1)?; // unordered, no IE
            c.fnstsw(ax)?;
            c.mov(edx, eax)?;
            c.fcompp()?; // 1 vs 2, pops both
            c.fnstsw(ax)
        },
        |m| load_f64s(m, &[2.0, 1.0, f64::NAN]),
    );
    assert_eq!(m.cpu.gpr[3] as u16 & cc, 0);
    assert_eq!(m.cpu.gpr[3] as u16 >> 11 & 7, 6);
    assert_eq!(m.cpu.gpr[1] as u16 & cc, sw::C0);
    assert_eq!(m.read_u64(DATA + 0x20) as u16 & cc, sw::C3);
    assert_eq!(m.cpu.gpr[2] as u16 & cc, cc);
    assert_eq!(m.cpu.gpr[2] as u16 & sw::IE, 0);
    assert_eq!(m.cpu.gpr[0] as u16 & cc, sw::C0);
    assert_eq!(m.cpu.fpu.top(), 0);
    assert_eq!(m.cpu.fpu.tags, 0);
}

#[test]
fn fcomi_flags_and_fcmov() {
    let arith = flags::CF | flags::PF | flags::AF | flags::ZF | flags::SF | flags::OF;
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld(qword_ptr(rsi))?; // 2
            c.fld(qword_ptr(rsi + 8))?; // 1: st0 = 1, st1 = 2
            c.fcomi(st0, st1)?;
            c.pushfq()?;
            c.pop(rbx)?;
            c.fcmovb(st0, st1)?; // CF set: st0 = 2
            c.fucomip(st0, st1)?; // equal, pops
            c.pushfq()?;
            c.pop(rcx)?;
            c.fstp(qword_ptr(rsi + 0x20))
        },
        |m| load_f64s(m, &[2.0, 1.0]),
    );
    assert_eq!(m.cpu.gpr[3] & arith, flags::CF);
    assert_eq!(m.cpu.gpr[1] & arith, flags::ZF);
    assert_eq!(f64_at(&m, 0x20), 2.0);
    assert_eq!(m.cpu.fpu.tags, 0);
}

#[test]
fn stack_overflow_underflow_and_tags() {
    let m = run64(
        |c| {
            for _ in 0..8 {
                c.fld1()?;
            }
            Ok(())
        },
        |_| {},
    );
    assert_eq!(m.cpu.fpu.tags, 0xff);
    assert_eq!(m.cpu.fpu.top(), 0);
    assert_eq!(m.cpu.fpu.fsw & sw::IE, 0);
    assert_eq!(m.cpu.fpu.full_tag_word(), 0);

    let m = run64(
        |c| {
            for _ in 0..9 {
                c.fld1()?;
            }
            Ok(())
        },
        |_| {},
    );
    let f = m.cpu.fpu.fsw;
    assert_eq!(f & (sw::IE | sw::SF | sw::C1), sw::IE | sw::SF | sw::C1);
    assert_eq!(m.cpu.fpu.st(0), F80_INDEFINITE);

    let m = run64(
        |c| {
            c.fldz()?;
            c.fadd_2(st0, st3)?; // st3 empty
            c.fldz()?;
            c.ffree(st1)?;
            c.fincstp()?;
            c.fdecstp()
        },
        |_| {},
    );
    let f = m.cpu.fpu.fsw;
    assert_eq!(f & (sw::IE | sw::SF | sw::C1), sw::IE | sw::SF);
    assert_eq!(m.cpu.fpu.top(), 6);
    // ST0 = +0 (zero tag), ST1 freed.
    let tw = m.cpu.fpu.full_tag_word();
    assert_eq!(tw, 0xdfff);
}

#[test]
fn fxam_classes() {
    let classes = |v: f64| {
        let m = run64(
            |c| {
                c.fld(qword_ptr(DATA))?;
                c.fxam()
            },
            |m| load_f64s(m, &[v]),
        );
        m.cpu.fpu.fsw & (sw::C0 | sw::C1 | sw::C2 | sw::C3)
    };
    assert_eq!(classes(1.0), sw::C2);
    assert_eq!(classes(-1.0), sw::C2 | sw::C1);
    assert_eq!(classes(0.0), sw::C3);
    assert_eq!(classes(f64::INFINITY), sw::C2 | sw::C0);
    assert_eq!(classes(f64::NAN), sw::C0);
    // Doubles' denormals are normal in extended precision.
    assert_eq!(classes(1e-310), sw::C2);
    let m = run64(|c| c.fxam(), |_| {});
    assert_eq!(m.cpu.fpu.fsw & (sw::C0 | sw::C2 | sw::C3), sw::C3 | sw::C0);
}

#[test]
fn fprem_quotient_bits() {
    let rem = |a: f64, b: f64, ieee: bool| {
        let m = run64(
            |c| {
                c.fld(qword_ptr(DATA + 8))?;
                c.fld(qword_ptr(DATA))?;
                if ieee {
                    c.fprem1()?;
                } else {
                    c.fprem()?;
                }
                // FSTP rewrites C1 (rounding direction): save FSW first.
                c.fnstsw(word_ptr(DATA + 0x18))?;
                c.fstp(qword_ptr(DATA + 0x10))
            },
            |m| load_f64s(m, &[a, b]),
        );
        let fsw = m.read_u64(DATA + 0x18) as u16;
        (f64_at(&m, 0x10), fsw & (sw::C0 | sw::C1 | sw::C2 | sw::C3))
    };
    assert_eq!(rem(10.0, 3.0, false), (1.0, sw::C3 | sw::C1)); // q = 3
    assert_eq!(rem(11.0, 3.0, false), (2.0, sw::C3 | sw::C1));
    assert_eq!(rem(11.0, 3.0, true), (-1.0, sw::C0)); // q = 4
    assert_eq!(rem(-7.5, 2.0, false), (-1.5, sw::C3 | sw::C1));
    assert_eq!(rem(5.0, 0.5, false), (0.0, sw::C3)); // q = 10 = 0b1010
    assert_eq!(rem(0.1, 0.03, false).0, 0.1 % 0.03);
    // A huge exponent difference needs several steps (C2 set).
    let (_, cc) = rem(1e300, 3.0, false);
    assert_ne!(cc & sw::C2, 0);
}

#[test]
fn rounding_scale_extract() {
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld(qword_ptr(rsi))?; // -2.5
            c.frndint()?;
            c.fstp(qword_ptr(rsi + 0x20))?;
            c.fldcw(word_ptr(rsi + 0x18))?; // RC = down
            c.fld(qword_ptr(rsi))?;
            c.frndint()?;
            c.fstp(qword_ptr(rsi + 0x28))?;
            c.fnstcw(word_ptr(rsi + 0x30))?;
            c.fninit()?;
            c.fld(qword_ptr(rsi + 8))?; // 3 (scale)
            c.fld(qword_ptr(rsi))?; // -2.5
            c.fscale()?;
            c.fstp(qword_ptr(rsi + 0x38))?;
            c.fstp(st0)?;
            c.fld(qword_ptr(rsi + 16))?; // 40
            c.fxtract()?; // st0 = 1.25, st1 = 5
            c.fstp(qword_ptr(rsi + 0x40))?;
            c.fstp(qword_ptr(rsi + 0x48))
        },
        |m| {
            load_f64s(m, &[-2.5, 3.0, 40.0]);
            m.load(DATA + 0x18, &0x077fu16.to_le_bytes());
        },
    );
    assert_eq!(f64_at(&m, 0x20), -2.0);
    assert_eq!(f64_at(&m, 0x28), -3.0);
    assert_eq!(m.read_u64(DATA + 0x30) as u16, 0x077f);
    assert_eq!(f64_at(&m, 0x38), -20.0);
    assert_eq!(f64_at(&m, 0x40), 1.25);
    assert_eq!(f64_at(&m, 0x48), 5.0);
    assert_eq!(m.cpu.fpu.tags, 0);
}

#[test]
fn precision_control_and_store_rounding() {
    // PC = double: 1/3 is rounded to 53 bits inside the register.
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fldcw(word_ptr(rsi))?;
            c.fld1()?;
            c.fild(dword_ptr(rsi + 4))?;
            c.fdivp(st1, st0)?;
            c.fstp(tword_ptr(rsi + 0x10))
        },
        |m| {
            m.load(DATA, &0x027fu16.to_le_bytes());
            m.load(DATA + 4, &3i32.to_le_bytes());
        },
    );
    let want = {
        let (v, _) = super::from_small((1.0f64 / 3.0).to_bits(), 64);
        v
    };
    assert_eq!(f80_at(&m, 0x10), want);
}

#[test]
fn env_and_save_round_trip() {
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld1()?;
            c.fldl2e()?;
            c.fldcw(word_ptr(rsi + 0x300))?;
            c.fnsave(ptr(rsi))?;
            c.fld1()?; // state is reset by FNSAVE: this is the only value
            c.frstor(ptr(rsi))?;
            c.fstp(tword_ptr(rsi + 0x200))?;
            c.fstp(tword_ptr(rsi + 0x210))?;
            c.fnstenv(ptr(rsi + 0x100))?;
            c.fnstcw(word_ptr(rsi + 0x220))
        },
        |m| m.load(DATA + 0x300, &0x0f7fu16.to_le_bytes()),
    );
    let r = m.ram();
    let d = DATA as usize;
    assert_eq!(u16::from_le_bytes([r[d], r[d + 1]]), 0x0f7f);
    // Tag word after two pushes: R6, R7 valid, others empty.
    assert_eq!(u16::from_le_bytes([r[d + 8], r[d + 9]]), 0x0fff);
    assert_eq!(f80_at(&m, 0x200), 0x3fff_b8aa_3b29_5c17_f0bc); // FLDL2E, rounded to nearest
    assert_eq!(f80_at(&m, 0x210), 0x3fff_8000_0000_0000_0000);
    // FNSTENV stored the empty tag word and then masked everything.
    assert_eq!(u16::from_le_bytes([r[d + 0x108], r[d + 0x109]]), 0xffff);
    assert_eq!(m.read_u64(DATA + 0x220) as u16, 0x0f7f);
    assert_eq!(m.cpu.fpu.tags, 0);
}

#[test]
fn float_memory_conversions() {
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld(dword_ptr(rsi))?; // 0.1f
            c.fstp(qword_ptr(rsi + 0x10))?;
            c.fld(qword_ptr(rsi + 8))?; // 1e300
            c.fstp(dword_ptr(rsi + 0x18))?; // overflow → +inf
            c.fld(dword_ptr(rsi + 4))?; // SNaN single
            c.fstp(qword_ptr(rsi + 0x20))
        },
        |m| {
            m.load(DATA, &0.1f32.to_bits().to_le_bytes());
            m.load(DATA + 4, &0x7f80_0001u32.to_le_bytes());
            m.load(DATA + 8, &1e300f64.to_bits().to_le_bytes());
        },
    );
    assert_eq!(f64_at(&m, 0x10), f64::from(0.1f32));
    assert_eq!(m.read_u64(DATA + 0x18) as u32, f32::INFINITY.to_bits());
    assert_eq!(m.read_u64(DATA + 0x20), 0x7ff8_0000_2000_0000);
    let f = m.cpu.fpu.fsw;
    assert_eq!(f & (sw::IE | sw::OE | sw::PE), sw::IE | sw::OE | sw::PE);
}

#[test]
fn transcendental_approximations() {
    let m = run64(
        |c| {
            c.mov(rsi, DATA)?;
            c.fld(qword_ptr(rsi))?; // 0.5
            c.fsin()?;
            c.fstp(qword_ptr(rsi + 0x10))?;
            c.fld(qword_ptr(rsi + 8))?; // 8
            c.fld1()?;
            c.fxch(st0, st1)?; // st0 = 8, st1 = 1
            c.fyl2x()?; // 1 * log2(8)
            c.fstp(qword_ptr(rsi + 0x18))?;
            c.fld(qword_ptr(rsi))?;
            c.fptan()?;
            c.fstp(qword_ptr(rsi + 0x20))?; // 1.0
            c.fstp(qword_ptr(rsi + 0x28))?; // tan(0.5)
            c.fld1()?;
            c.fld1()?;
            c.fpatan()?; // atan2(1, 1)
            c.fstp(qword_ptr(rsi + 0x30))
        },
        |m| load_f64s(m, &[0.5, 8.0]),
    );
    assert!((f64_at(&m, 0x10) - 0.5f64.sin()).abs() < 1e-15);
    assert_eq!(f64_at(&m, 0x18), 3.0);
    assert_eq!(f64_at(&m, 0x20), 1.0);
    assert!((f64_at(&m, 0x28) - 0.5f64.tan()).abs() < 1e-15);
    assert!((f64_at(&m, 0x30) - std::f64::consts::FRAC_PI_4).abs() < 1e-15);
    assert_eq!(m.cpu.fpu.tags, 0);
}
