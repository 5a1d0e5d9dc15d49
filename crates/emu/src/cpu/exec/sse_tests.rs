//! Tests of the SSE integer, move and state instructions.

use crate::cpu::run::Stop;
use crate::cpu::{Exception, Fault};
use crate::testutil::{TestMachine, CODE, DATA};
use iced_x86::code_asm::*;
use iced_x86::Decoder;

type Asm = Result<(), IcedError>;

/// Assembles `f` + HLT and runs it in 64-bit mode after `setup`.
pub(super) fn run64(
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

/// Executes the single instruction `f` assembles, returning the handler's result.
pub(super) fn step(
    f: impl FnOnce(&mut CodeAssembler) -> Asm,
    setup: impl FnOnce(&mut TestMachine),
) -> (TestMachine, Result<(), Fault>) {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut m = TestMachine::new64(&code);
    setup(&mut m);
    let mut d = Decoder::with_ip(64, &code, CODE, 0);
    let ins = d.decode();
    m.cpu.next_rip = ins.next_ip();
    let h = crate::cpu::exec::resolve(&ins);
    let r = h(&mut m.cpu, &ins);
    (m, r)
}

fn x(m: &TestMachine, i: usize) -> u128 {
    m.cpu.fpu.xmm[i]
}

fn bytes(v: &[u8]) -> u128 {
    let mut b = [0u8; 16];
    b[..v.len()].copy_from_slice(v);
    u128::from_le_bytes(b)
}

#[test]
fn strlen_idiom_pcmpeqb_pmovmskb() {
    let m = run64(
        |a| {
            a.mov(rsi, DATA)?;
            a.movdqa(xmm0, xmmword_ptr(rsi))?;
            a.pxor(xmm1, xmm1)?;
            a.pcmpeqb(xmm1, xmm0)?;
            a.pmovmskb(eax, xmm1)?;
            a.bsf(ecx, eax)?;
            a.pminub(xmm0, xmmword_ptr(rsi + 16))?;
            a.movdqu(xmmword_ptr(rsi + 33), xmm0)
        },
        |m| {
            m.load(DATA, b"hello, world\0abcZZZZZZZZZZZZZZZZZZZZ");
            m.cpu.gpr[0] = u64::MAX;
        },
    );
    assert_eq!(m.cpu.gpr[0], 1 << 12);
    assert_eq!(m.cpu.gpr[1], 12);
    assert_eq!(&m.ram()[DATA as usize + 33..DATA as usize + 38], b"ZZZZZ");
}

#[test]
fn movdqa_misaligned_gp() {
    let (_, r) = step(|a| a.movdqa(xmm0, xmmword_ptr(DATA + 8)), |_| {});
    assert_eq!(r, Err(Fault::Ex(Exception::gp0())));
    let (_, r) = step(|a| a.movaps(xmmword_ptr(DATA + 4), xmm0), |_| {});
    assert_eq!(r, Err(Fault::Ex(Exception::gp0())));
    let (_, r) = step(|a| a.paddb(xmm0, xmmword_ptr(DATA + 4)), |_| {});
    assert_eq!(r, Err(Fault::Ex(Exception::gp0())));
    let (m, r) = step(
        |a| a.movups(xmm0, xmmword_ptr(DATA + 4)),
        |m| m.load(DATA + 4, &[7; 16]),
    );
    assert_eq!(r, Ok(()));
    assert_eq!(x(&m, 0), u128::from_le_bytes([7; 16]));
    // Scalar operands need no alignment.
    let (_, r) = step(|a| a.addsd(xmm0, qword_ptr(DATA + 4)), |_| {});
    assert_eq!(r, Ok(()));
}

#[test]
fn cr0_ts_em_and_osfxsr() {
    let (_, r) = step(
        |a| a.pxor(xmm0, xmm1),
        |m| m.cpu.cr0 |= crate::cpu::cr::CR0_TS,
    );
    assert_eq!(r, Err(Fault::Ex(Exception::nm())));
    let (_, r) = step(
        |a| a.pxor(xmm0, xmm1),
        |m| m.cpu.cr0 |= crate::cpu::cr::CR0_EM,
    );
    assert_eq!(r, Err(Fault::Ex(Exception::ud())));
    let (_, r) = step(
        |a| a.pxor(xmm0, xmm1),
        |m| m.cpu.cr4 &= !crate::cpu::cr::CR4_OSFXSR,
    );
    assert_eq!(r, Err(Fault::Ex(Exception::ud())));
}

#[test]
fn shuffles_and_unpacks() {
    let a0 = bytes(&[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15]);
    let b0 = bytes(&[
        16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31,
    ]);
    let m = run64(
        |a| {
            a.movdqa(xmm2, xmm0)?;
            a.pshufd(xmm2, xmm2, 0x1b)?; // reverse dwords
            a.movdqa(xmm3, xmm0)?;
            a.punpcklbw(xmm3, xmm1)?;
            a.movdqa(xmm4, xmm0)?;
            a.punpckhwd(xmm4, xmm1)?;
            a.movdqa(xmm5, xmm0)?;
            a.pshuflw(xmm5, xmm5, 0x00)?;
            a.movdqa(xmm6, xmm0)?;
            a.pslldq(xmm6, 3)?;
            a.movdqa(xmm7, xmm0)?;
            a.psrldq(xmm7, 5)?;
            a.movdqa(xmm8, xmm0)?;
            a.palignr(xmm8, xmm1, 4)?;
            a.movdqa(xmm9, xmm1)?;
            a.pshufb(xmm9, xmm10)?;
            a.movdqa(xmm11, xmm0)?;
            a.shufps(xmm11, xmm1, 0b01_00_11_10)?;
            a.movdqa(xmm12, xmm0)?;
            a.punpckhqdq(xmm12, xmm1)
        },
        |m| {
            m.cpu.fpu.xmm[0] = a0;
            m.cpu.fpu.xmm[1] = b0;
            m.cpu.fpu.xmm[10] = bytes(&[15, 0x80, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
        },
    );
    assert_eq!(
        x(&m, 2),
        bytes(&[12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3])
    );
    assert_eq!(
        x(&m, 3),
        bytes(&[0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23])
    );
    assert_eq!(
        x(&m, 4),
        bytes(&[8, 9, 24, 25, 10, 11, 26, 27, 12, 13, 28, 29, 14, 15, 30, 31])
    );
    assert_eq!(
        x(&m, 5),
        bytes(&[0, 1, 0, 1, 0, 1, 0, 1, 8, 9, 10, 11, 12, 13, 14, 15])
    );
    assert_eq!(x(&m, 6), a0 << 24);
    assert_eq!(x(&m, 7), a0 >> 40);
    // PALIGNR xmm8(a0), xmm1(b0), 4: bytes 4.. of b0:a0... (op1 is the low half).
    assert_eq!(x(&m, 8), (b0 >> 32) | (a0 << 96));
    assert_eq!(
        x(&m, 9),
        bytes(&[31, 0, 17, 17, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 16, 0])
    );
    assert_eq!(
        x(&m, 11),
        bytes(&[8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23])
    );
    assert_eq!(x(&m, 12), (a0 >> 64) | ((b0 >> 64) << 64));
}

#[test]
fn packed_arith_and_shifts() {
    let m = run64(
        |a| {
            a.movdqa(xmm2, xmm0)?;
            a.paddw(xmm2, xmm1)?;
            a.movdqa(xmm3, xmm0)?;
            a.psubusb(xmm3, xmm1)?;
            a.movdqa(xmm4, xmm0)?;
            a.psraw(xmm4, 4)?;
            a.movdqa(xmm5, xmm0)?;
            a.psrlq(xmm5, xmm6)?; // count 70: zero
            a.movdqa(xmm7, xmm0)?;
            a.pcmpgtb(xmm7, xmm1)?;
            a.movdqa(xmm8, xmm0)?;
            a.packuswb(xmm8, xmm1)?;
            a.movdqa(xmm9, xmm0)?;
            a.pmaddwd(xmm9, xmm1)?;
            a.movdqa(xmm10, xmm0)?;
            a.psadbw(xmm10, xmm1)?;
            a.movdqa(xmm11, xmm0)?;
            a.pmuludq(xmm11, xmm1)
        },
        |m| {
            m.cpu.fpu.xmm[0] = 0x8000_7fff_0001_ffff_1234_5678_9abc_def0;
            m.cpu.fpu.xmm[1] = 0x0001_0001_ffff_0001_1111_1111_1111_1111;
            m.cpu.fpu.xmm[6] = 70;
        },
    );
    assert_eq!(x(&m, 2), 0x8001_8000_0000_0000_2345_6789_abcd_f001);
    assert_eq!(x(&m, 3), 0x8000_7ffe_0000_fffe_0123_4567_89ab_cddf);
    assert_eq!(x(&m, 4), 0xf800_07ff_0000_ffff_0123_0567_f9ab_fdef);
    assert_eq!(x(&m, 5), 0);
    // Signed byte compare a > b.
    let exp7 = super::map2(
        x(&m, 0),
        0x0001_0001_ffff_0001_1111_1111_1111_1111,
        8,
        |a, b| {
            if (a as i8) > (b as i8) {
                0xff
            } else {
                0
            }
        },
    );
    assert_eq!(x(&m, 7), exp7);
    assert_eq!(x(&m, 8) as u64, 0x00ff_0100_ffff_0000);
    let w = |v: u128, i: u32| super::lane(v, 16, i) as i16 as i32;
    let (a, b) = (
        0x8000_7fff_0001_ffff_1234_5678_9abc_def0u128,
        0x0001_0001_ffff_0001_1111_1111_1111_1111u128,
    );
    let d0 = w(a, 0) * w(b, 0) + w(a, 1) * w(b, 1);
    assert_eq!(super::lane(x(&m, 9), 32, 0) as i32, d0);
    let sad0: u64 = (0..8)
        .map(|i| super::lane(a, 8, i).abs_diff(super::lane(b, 8, i)))
        .sum();
    assert_eq!(super::lane(x(&m, 10), 64, 0), sad0);
    assert_eq!(super::lane(x(&m, 11), 64, 0), 0x9abc_def0u64 * 0x1111_1111);
}

#[test]
fn movd_movq_movss_movhps() {
    let m = run64(
        |a| {
            a.mov(rax, 0x1122_3344_5566_7788u64)?;
            a.movq(xmm0, rax)?;
            a.movd(xmm1, eax)?;
            a.movd(ecx, xmm15)?;
            a.movq(rdx, xmm15)?;
            a.movss(xmm2, xmm15)?;
            a.movsd_2(xmm3, xmm15)?;
            a.mov(rsi, DATA)?;
            a.movhps(xmm4, qword_ptr(rsi))?;
            a.movlps(qword_ptr(rsi + 8), xmm15)?;
            a.movss(xmm5, dword_ptr(rsi))?;
            a.movq(xmm6, xmm15)?;
            a.movmskps(r8d, xmm15)?;
            a.movmskpd(r9d, xmm15)?;
            a.movhlps(xmm7, xmm15)?;
            a.unpcklpd(xmm14, xmm15)
        },
        |m| {
            for i in 0..15 {
                m.cpu.fpu.xmm[i] = u128::MAX;
            }
            m.cpu.fpu.xmm[15] = 0x8000_0000_0000_0001_0000_0002_8000_0003;
            m.cpu.fpu.xmm[14] = 0x5555;
            m.load(DATA, &0xaabb_ccdd_eeff_0011u64.to_le_bytes());
        },
    );
    assert_eq!(x(&m, 0), 0x1122_3344_5566_7788);
    assert_eq!(x(&m, 1), 0x5566_7788);
    assert_eq!(m.cpu.gpr[1], 0x8000_0003);
    assert_eq!(m.cpu.gpr[2], 0x0000_0002_8000_0003);
    assert_eq!(x(&m, 2), (u128::MAX << 32) | 0x8000_0003);
    assert_eq!(x(&m, 3), (u128::MAX << 64) | 0x0000_0002_8000_0003);
    assert_eq!(
        x(&m, 4),
        (0xaabb_ccdd_eeff_0011u128 << 64) | u128::from(u64::MAX)
    );
    assert_eq!(m.read_u64(DATA + 8), 0x0000_0002_8000_0003);
    assert_eq!(x(&m, 5), 0xeeff_0011);
    assert_eq!(x(&m, 6), 0x0000_0002_8000_0003);
    assert_eq!(m.cpu.gpr[8], 0b1001);
    assert_eq!(m.cpu.gpr[9], 0b10);
    assert_eq!(x(&m, 7), (u128::MAX << 64) | 0x8000_0000_0000_0001);
    assert_eq!(x(&m, 14), (0x0000_0002_8000_0003u128 << 64) | 0x5555);
}

#[test]
fn fxsave_fxrstor_round_trip() {
    let m = run64(
        |a| {
            a.mov(rsi, DATA)?;
            a.fld1()?;
            a.fldpi()?;
            a.fxsave64(ptr(rsi))?;
            a.fninit()?;
            a.pxor(xmm3, xmm3)?;
            a.fxrstor64(ptr(rsi))?;
            a.fstp(qword_ptr(rsi + 0x400))?;
            a.fstp(qword_ptr(rsi + 0x408))
        },
        |m| {
            m.cpu.fpu.xmm[3] = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210;
            m.cpu.fpu.mxcsr = 0x1f80 | 0x6000 | 1;
        },
    );
    let img = &m.ram()[DATA as usize..DATA as usize + 512];
    assert_eq!(u16::from_le_bytes([img[0], img[1]]), 0x37f);
    let fsw = u16::from_le_bytes([img[2], img[3]]);
    assert_eq!((fsw >> 11) & 7, 6);
    assert_eq!(img[4], 0b1100_0000);
    assert_eq!(u32::from_le_bytes(img[24..28].try_into().unwrap()), 0x7f81);
    assert_eq!(u32::from_le_bytes(img[28..32].try_into().unwrap()), 0xffff);
    // ST0 = pi, ST1 = 1.0.
    assert_eq!(
        &img[32..42],
        &[0x35, 0xc2, 0x68, 0x21, 0xa2, 0xda, 0x0f, 0xc9, 0x00, 0x40]
    );
    assert_eq!(&img[48..58], &[0, 0, 0, 0, 0, 0, 0, 0x80, 0xff, 0x3f]);
    assert_eq!(
        &img[160 + 48..160 + 64],
        &0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128.to_le_bytes()
    );
    assert_eq!(x(&m, 3), 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210);
    assert_eq!(
        f64::from_bits(m.read_u64(DATA + 0x400)),
        std::f64::consts::PI
    );
    assert_eq!(f64::from_bits(m.read_u64(DATA + 0x408)), 1.0);
    assert_eq!(m.cpu.fpu.tags, 0);
    assert_eq!(m.cpu.fpu.mxcsr, 0x7f81);
}

#[test]
fn fxrstor_checks() {
    let (_, r) = step(|a| a.fxsave(ptr(DATA + 8)), |_| {});
    assert_eq!(r, Err(Fault::Ex(Exception::gp0())));
    let mut img = [0u8; 512];
    img[24..28].copy_from_slice(&0x1_0000u32.to_le_bytes());
    let (_, r) = step(|a| a.fxrstor(ptr(DATA)), |m| m.load(DATA, &img));
    assert_eq!(r, Err(Fault::Ex(Exception::gp0())));
    let (_, r) = step(
        |a| a.ldmxcsr(dword_ptr(DATA)),
        |m| m.load(DATA, &0x1_1f80u32.to_le_bytes()),
    );
    assert_eq!(r, Err(Fault::Ex(Exception::gp0())));
    let (m, r) = step(
        |a| a.ldmxcsr(dword_ptr(DATA)),
        |m| m.load(DATA, &0x3f80u32.to_le_bytes()),
    );
    assert_eq!(r, Ok(()));
    assert_eq!(m.cpu.fpu.mxcsr, 0x3f80);
}

#[test]
fn mmx_basics() {
    let m = run64(
        |a| {
            a.mov(rax, 0x0102_0304_0506_0708u64)?;
            a.movq(mm0, rax)?;
            a.movq(mm1, mm0)?;
            a.paddb(mm1, mm0)?;
            a.pxor(mm2, mm2)?;
            a.punpcklbw(mm0, mm2)?;
            a.movq(rcx, mm1)?;
            a.movq(rdx, mm0)?;
            a.emms()
        },
        |_| {},
    );
    assert_eq!(m.cpu.gpr[1], 0x0204_0608_0a0c_0e10);
    assert_eq!(m.cpu.gpr[2], 0x0005_0006_0007_0008);
    assert_eq!(m.cpu.fpu.tags, 0);
    assert_eq!(m.cpu.fpu.st[1] >> 64, 0xffff);
}

#[test]
fn ssse3_sse3_and_maskmov() {
    let m = run64(
        |a| {
            a.pabsb(xmm2, xmm0)?;
            a.movdqa(xmm3, xmm0)?;
            a.phaddw(xmm3, xmm1)?;
            a.movdqa(xmm4, xmm0)?;
            a.pmaddubsw(xmm4, xmm1)?;
            a.movdqa(xmm5, xmm0)?;
            a.psignw(xmm5, xmm1)?;
            a.movddup(xmm6, xmm1)?;
            a.movapd(xmm7, xmm8)?;
            a.haddpd(xmm7, xmm9)?;
            a.movapd(xmm10, xmm8)?;
            a.addsubpd(xmm10, xmm9)?;
            a.mov(rdi, DATA)?;
            a.maskmovdqu(xmm1, xmm11)
        },
        |m| {
            m.cpu.fpu.xmm[0] = 0x0001_0002_fffe_8000_0380_ff7f_8001_7fff;
            m.cpu.fpu.xmm[1] = 0x0203_fffd_0000_0001_fe02_0101_ffff_0001;
            let pd = |a: f64, b: f64| u128::from(a.to_bits()) | (u128::from(b.to_bits()) << 64);
            m.cpu.fpu.xmm[8] = pd(1.5, 2.25);
            m.cpu.fpu.xmm[9] = pd(10.0, -4.0);
            m.cpu.fpu.xmm[11] = 0x80 | (0xff << 8) | (0x80 << 120);
            m.load(DATA, &[0xaa; 16]);
        },
    );
    let (a, b) = (
        0x0001_0002_fffe_8000_0380_ff7f_8001_7fffu128,
        0x0203_fffd_0000_0001_fe02_0101_ffff_0001u128,
    );
    assert_eq!(
        x(&m, 2),
        super::map1(a, 8, |v| (v as i8).unsigned_abs() as u64)
    );
    let w = |v: u128, i: u32| super::lane(v, 16, i);
    let hadd: Vec<u64> = (0..4)
        .map(|i| w(a, 2 * i).wrapping_add(w(a, 2 * i + 1)) & 0xffff)
        .chain((0..4).map(|i| w(b, 2 * i).wrapping_add(w(b, 2 * i + 1)) & 0xffff))
        .collect();
    for (i, h) in hadd.iter().enumerate() {
        assert_eq!(w(x(&m, 3), i as u32), *h);
    }
    for i in 0..8 {
        let byte = |v: u128, k: u32| super::lane(v, 8, k);
        let p = byte(a, 2 * i) as i64 * byte(b, 2 * i) as i8 as i64
            + byte(a, 2 * i + 1) as i64 * byte(b, 2 * i + 1) as i8 as i64;
        assert_eq!(w(x(&m, 4), i) as i16 as i64, p.clamp(-32768, 32767));
        let s = w(b, i) as i16;
        let want = if s < 0 {
            (w(a, i) as u16).wrapping_neg()
        } else if s == 0 {
            0
        } else {
            w(a, i) as u16
        };
        assert_eq!(w(x(&m, 5), i) as u16, want);
    }
    assert_eq!(x(&m, 6), (b & u128::from(u64::MAX)) * ((1u128 << 64) + 1));
    assert_eq!(x(&m, 7) as u64, 3.75f64.to_bits());
    assert_eq!((x(&m, 7) >> 64) as u64, 6.0f64.to_bits());
    assert_eq!(x(&m, 10) as u64, (-8.5f64).to_bits());
    assert_eq!((x(&m, 10) >> 64) as u64, (-1.75f64).to_bits());
    let mem = &m.ram()[DATA as usize..DATA as usize + 16];
    let bb = b.to_le_bytes();
    assert_eq!(mem[0], bb[0]);
    assert_eq!(mem[1], bb[1]);
    assert_eq!(mem[2], 0xaa);
    assert_eq!(mem[15], bb[15]);
}
