//! Tests of the integer instructions in the emulator: memory forms, partial registers, both
//! 32-bit and 64-bit mode, the stack, and faults. Register-only flag behaviour is checked
//! against the host CPU in `int_tests2.rs`.

use crate::cpu::flags::{ARITH, CF, DF, OF, PF, SF, ZF};
use crate::cpu::run::Stop;
use crate::testutil::{TestMachine, CODE, DATA};
use iced_x86::code_asm::*;
use iced_x86::IcedError;

pub(super) type Asm = fn(&mut CodeAssembler) -> Result<(), IcedError>;

pub(super) fn asm(
    bits: u32,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

pub(super) fn m64(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> TestMachine {
    TestMachine::new64(&asm(64, f))
}

pub(super) fn m32(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> TestMachine {
    TestMachine::new32(&asm(32, f))
}

pub(super) fn halt(m: &mut TestMachine) {
    assert_eq!(m.run(10_000), Stop::Halt);
}

pub(super) fn rd(m: &TestMachine, addr: u64, size: usize) -> u64 {
    let mut b = [0u8; 8];
    b[..size].copy_from_slice(&m.ram()[addr as usize..addr as usize + size]);
    u64::from_le_bytes(b)
}

pub(super) fn arith(m: &TestMachine) -> u64 {
    m.cpu.flags.get() & ARITH
}

pub(super) const D: u64 = DATA;
pub(super) const D32: u32 = DATA as u32;

#[test]
fn mov_partial_registers() {
    let mut m = m64(|a| {
        a.mov(rax, 0x1111_2222_3333_4444u64)?;
        a.mov(ah, 0x55)?;
        a.mov(rbx, rax)?;
        a.mov(ax, 0x6677)?;
        a.mov(rcx, rax)?;
        a.mov(eax, 0x8899_aabbu32)?;
        a.mov(rdx, -1i64)?;
        a.mov(dl, bh)?;
        a.mov(rsi, -1i64)?;
        a.mov(sil, 0x12)?;
        a.mov(r9, -1i64)?;
        a.mov(r9w, 0x1234)?;
        a.mov(r10, -1i64)?;
        a.mov(r10d, r9d)
    });
    halt(&mut m);
    assert_eq!(m.cpu.gpr[3], 0x1111_2222_3333_5544);
    assert_eq!(m.cpu.gpr[1], 0x1111_2222_3333_6677);
    assert_eq!(m.cpu.gpr[0], 0x8899_aabb);
    assert_eq!(m.cpu.gpr[2], 0xffff_ffff_ffff_ff55);
    assert_eq!(m.cpu.gpr[6], 0xffff_ffff_ffff_ff12);
    assert_eq!(m.cpu.gpr[9], 0xffff_ffff_ffff_1234);
    assert_eq!(m.cpu.gpr[10], 0xffff_1234);
}

#[test]
fn mov_memory_64() {
    let mut code = asm(64, |a| {
        a.mov(rbx, D)?;
        a.mov(qword_ptr(rbx), 0x1234_5678_9abc_def0u64 as i64 as i32)?;
        a.mov(qword_ptr(rbx + 8), -2)?;
        a.mov(dword_ptr(rbx + 16), 0x8000_0000u32)?;
        a.mov(rcx, 3i64)?;
        a.mov(byte_ptr(rbx + rcx * 8 + 1), 0x7f)?;
        a.mov(rax, qword_ptr(rbx + 8))?;
        a.mov(edx, dword_ptr(rbx + 16))?;
        a.mov(si, word_ptr(rbx + 8))?;
        a.mov(word_ptr(rbx + 32), si)?;
        a.mov(dil, byte_ptr(rbx + 25))?;
        a.nop()
    });
    // Replace the HLT with moffs forms: mov rax, [moffs64]; mov [moffs64], al; hlt.
    code.pop();
    code.extend_from_slice(&[0x48, 0xa1]);
    code.extend_from_slice(&(D + 8).to_le_bytes());
    code.push(0xa2);
    code.extend_from_slice(&(D + 40).to_le_bytes());
    code.push(0xf4);
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[7] = 0xffff_ffff_ffff_ffff;
    halt(&mut m);
    assert_eq!(rd(&m, D, 8), 0xffff_ffff_9abc_def0);
    assert_eq!(rd(&m, D + 8, 8), 0xffff_ffff_ffff_fffe);
    assert_eq!(rd(&m, D + 16, 8), 0x8000_0000);
    assert_eq!(rd(&m, D + 24, 8), 0x7f00);
    assert_eq!(m.cpu.gpr[0], u64::MAX - 1);
    assert_eq!(m.cpu.gpr[2], 0x8000_0000);
    assert_eq!(rd(&m, D + 32, 2), 0xfffe);
    assert_eq!(m.cpu.gpr[7], 0xffff_ffff_ffff_ff7f);
    assert_eq!(rd(&m, D + 40, 1), 0xfe);
}

#[test]
fn mov_memory_32() {
    let mut code = asm(32, |a| {
        a.mov(ebx, D32)?;
        a.mov(dword_ptr(ebx + 4), 0xdead_beefu32)?;
        a.mov(ax, word_ptr(ebx + 6))?;
        a.movzx(ecx, byte_ptr(ebx + 7))?;
        a.movsx(edx, byte_ptr(ebx + 7))?;
        a.movsx(si, byte_ptr(ebx + 4))?;
        a.lea(edi, dword_ptr(ebx + ecx * 2 + 1))?;
        a.nop()
    });
    code.pop();
    // mov eax, [moffs32]
    code.push(0xa1);
    code.extend_from_slice(&(D32 + 4).to_le_bytes());
    code.push(0xf4);
    let mut m = TestMachine::new32(&code);
    m.cpu.gpr[0] = 0x1_0000_0000;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 0xdead_beef);
    assert_eq!(m.cpu.gpr[1], 0xde);
    assert_eq!(m.cpu.gpr[2], 0xffff_ffde);
    assert_eq!(m.cpu.gpr[6] & 0xffff, 0xffef);
    assert_eq!(m.cpu.gpr[7], D + 0xde * 2 + 1);
}

#[test]
fn lea_address_size() {
    let mut m = m64(|a| {
        a.lea(rax, qword_ptr(ebx + ecx))?;
        a.lea(rdx, qword_ptr(rbx + rcx * 4 - 8))?;
        a.lea(si, word_ptr(rbx + 0x10))?;
        a.db(&[0x4c, 0x8d, 0x05, 0, 0, 0, 0]) // lea r8, [rip]
    });
    m.cpu.gpr[3] = 0xffff_ffff;
    m.cpu.gpr[1] = 2;
    m.cpu.gpr[6] = 0xaaaa_aaaa_aaaa_aaaa;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 1);
    assert_eq!(m.cpu.gpr[2], 0xffff_ffff);
    assert_eq!(m.cpu.gpr[6], 0xaaaa_aaaa_aaaa_000f);
    // LEA r8, [rip]: the address of the next instruction (the HLT).
    assert_eq!(m.cpu.gpr[8], m.cpu.rip - 1);
}

#[test]
fn alu_memory_forms() {
    let mut m = m64(|a| {
        a.mov(rbx, D)?;
        a.mov(qword_ptr(rbx), 10)?;
        a.add(qword_ptr(rbx), rcx)?; // 10 + 5
        a.sub(qword_ptr(rbx), -1)?; // 16 (imm8 sign-extended)
        a.lock().adc(qword_ptr(rbx), 0)?; // CF from the SUB: 17
        a.mov(dword_ptr(rbx + 8), 0xffff_ffffu32)?;
        a.add(dword_ptr(rbx + 8), 1)?; // 0, CF, ZF
        a.setc(byte_ptr(rbx + 16))?;
        a.sbb(dword_ptr(rbx + 8), 0)?; // 0 - 0 - 1
        a.mov(rax, qword_ptr(rbx))?;
        a.add(rax, qword_ptr(rbx + 8))?;
        a.cmp(dword_ptr(rbx + 8), 0)?; // no write
        a.mov(byte_ptr(rbx + 24), 0x0f)?;
        a.or(byte_ptr(rbx + 24), 0xf0)?;
        a.xor(byte_ptr(rbx + 24), dl)?;
        a.and(word_ptr(rbx + 24), 0x0f3c)?;
        a.test(byte_ptr(rbx + 24), 0x80)
    });
    m.cpu.gpr[1] = 5;
    m.cpu.gpr[2] = 0x33;
    halt(&mut m);
    assert_eq!(rd(&m, D, 8), 17);
    assert_eq!(rd(&m, D + 8, 8), 0xffff_ffff);
    assert_eq!(rd(&m, D + 16, 1), 1);
    assert_eq!(m.cpu.gpr[0], 17 + 0xffff_ffff);
    assert_eq!(rd(&m, D + 24, 2), 0x0c);
    assert_eq!(arith(&m) & (ZF | SF | CF | OF), ZF);
}

#[test]
fn unary_memory_and_incdec_cf() {
    let mut m = m64(|a| {
        a.mov(rbx, D)?;
        a.mov(dword_ptr(rbx), 0x7fff_ffff)?;
        a.stc()?;
        a.inc(dword_ptr(rbx))?; // 0x80000000: OF SF, CF kept
        a.mov(byte_ptr(rbx + 4), 0)?;
        a.dec(byte_ptr(rbx + 4))?;
        a.mov(word_ptr(rbx + 6), 5)?;
        a.neg(word_ptr(rbx + 6))?;
        a.not(qword_ptr(rbx + 8))
    });
    halt(&mut m);
    assert_eq!(rd(&m, D, 4), 0x8000_0000);
    assert_eq!(rd(&m, D + 4, 1), 0xff);
    assert_eq!(rd(&m, D + 6, 2), 0xfffb);
    assert_eq!(rd(&m, D + 8, 8), u64::MAX);
    // NEG 5: CF set, SF set; NOT changes no flags.
    assert_eq!(arith(&m) & (CF | SF | ZF | OF), CF | SF);

    let mut m = m64(|a| {
        a.stc()?;
        a.inc(eax)?;
        a.setc(bl)?;
        a.seto(cl)
    });
    m.cpu.gpr[0] = 0xffff_ffff_7fff_ffff;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 0x8000_0000);
    assert_eq!(m.cpu.gpr[3] & 0xff, 1);
    assert_eq!(m.cpu.gpr[1] & 0xff, 1);
}

#[test]
fn alu_32bit_mode() {
    // A 64-bit addition with ADD/ADC in 32-bit mode.
    let mut m = m32(|a| {
        a.add(eax, ecx)?;
        a.adc(edx, ebx)?;
        a.mov(esi, D32)?;
        a.sub(dword_ptr(esi), eax)?;
        a.sbb(dword_ptr(esi + 4), edx)?;
        a.setb(bl)
    });
    m.cpu.gpr[0] = 0xffff_fff0;
    m.cpu.gpr[1] = 0x20;
    m.cpu.gpr[2] = 1;
    m.cpu.gpr[3] = 2;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 0x10);
    assert_eq!(m.cpu.gpr[2], 4);
    // 0 - 0x4_0000_0010 borrows.
    assert_eq!(rd(&m, D, 8), 0u64.wrapping_sub(0x4_0000_0010));
    assert_eq!(m.cpu.gpr[3] & 0xff, 1);
}

#[test]
fn mul_div() {
    let mut m = m64(|a| {
        a.mov(rax, -1i64)?;
        a.mov(rbx, -1i64)?;
        a.mul(rbx)?; // RDX:RAX = (2^64-1)^2
        a.mov(rsi, rax)?;
        a.mov(rdi, rdx)?;
        a.mov(rax, 0i64)?;
        a.mov(rdx, 1i64)?;
        a.mov(rcx, 2i64)?;
        a.div(rcx)?; // 2^64 / 2
        a.mov(r8, rax)?;
        a.mov(r9, rdx)?;
        a.mov(eax, -7)?;
        a.cdq()?;
        a.mov(ecx, 2)?;
        a.idiv(ecx)?; // -3 rem -1
        a.mov(r10, rax)?;
        a.mov(r11, rdx)?;
        a.mov(ax, 1000)?;
        a.mov(cl, 7)?;
        a.div(cl)?; // AL = 142, AH = 6
        a.mov(r12, rax)?;
        a.mov(rbx, D)?;
        a.mov(dword_ptr(rbx), 3)?;
        a.mov(eax, 0x8000_0000u32)?;
        a.mul(dword_ptr(rbx))?;
        a.mov(r13, rdx)?;
        a.imul_3(r14d, dword_ptr(rbx), -5)?;
        a.imul_2(r15w, word_ptr(rbx))
    });
    m.cpu.gpr[15] = 0xffff_ffff_ffff_0004;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[6], 1);
    assert_eq!(m.cpu.gpr[7], u64::MAX - 1);
    assert_eq!(m.cpu.gpr[8], 0x8000_0000_0000_0000);
    assert_eq!(m.cpu.gpr[9], 0);
    assert_eq!(m.cpu.gpr[10], 0xffff_fffd);
    assert_eq!(m.cpu.gpr[11], 0xffff_ffff);
    assert_eq!(m.cpu.gpr[12] & 0xffff, (6 << 8) | 142);
    assert_eq!(m.cpu.gpr[0], 0x8000_0000);
    assert_eq!(m.cpu.gpr[13], 1);
    assert_eq!(m.cpu.gpr[14], 0xffff_fff1);
    assert_eq!(m.cpu.gpr[15], 0xffff_ffff_ffff_000c);
}

#[test]
fn divide_errors_fault() {
    // #DE: delivery is not implemented yet, so run() stops with Shutdown and the registers are
    // as before the instruction.
    let cases: [Asm; 5] = [
        |a| a.div(ecx),
        |a| a.idiv(rcx),
        |a| a.div(cl),
        |a| a.idiv(cx),
        |a| a.div(qword_ptr(rbx)),
    ];
    let setups: [(u64, u64, u64); 5] = [
        (5, 0, 0),                          // divide by zero
        (0, 0x8000_0000_0000_0000, !0),     // i128 min / -1
        (0x1000, 0, 2),                     // quotient 0x800 > 0xff
        (0, 0xffff_ffff_ffff_8000, 0xffff), // DX:AX = -2^31, / -1: overflow
        (0, 5, 0),                          // RDX >= divisor (memory divisor 0)
    ];
    for (f, (rax_, rdx_, rcx_)) in cases.iter().zip(setups) {
        let mut m = m64(f);
        m.cpu.gpr[0] = rax_;
        m.cpu.gpr[2] = rdx_;
        m.cpu.gpr[1] = rcx_;
        m.cpu.gpr[3] = D;
        assert_eq!(m.run(100), Stop::Shutdown);
        assert_eq!((m.cpu.gpr[0], m.cpu.gpr[2]), (rax_, rdx_));
        assert_eq!(m.cpu.rip, CODE);
    }
    // IDIV -128 / -1 in 8 bits; and in 32-bit mode.
    let mut m = m32(|a| a.idiv(bl));
    m.cpu.gpr[0] = 0xff80;
    m.cpu.gpr[3] = 0xff;
    assert_eq!(m.run(100), Stop::Shutdown);
    let mut m = m32(|a| a.div(ebx));
    m.cpu.gpr[2] = 7;
    m.cpu.gpr[3] = 7;
    assert_eq!(m.run(100), Stop::Shutdown);
}

#[test]
fn shifts_memory() {
    let mut m = m64(|a| {
        a.mov(rbx, D)?;
        a.mov(dword_ptr(rbx), 0x8000_0001u32)?;
        a.shl(dword_ptr(rbx), 1)?; // 2, CF
        a.setc(byte_ptr(rbx + 32))?;
        a.mov(qword_ptr(rbx + 8), -16)?;
        a.sar(qword_ptr(rbx + 8), cl)?; // cl = 2 -> -4
        a.mov(word_ptr(rbx + 16), 0x8001)?;
        a.rol(word_ptr(rbx + 16), 4)?; // 0x0018
        a.mov(dword_ptr(rbx + 20), 0x1234_5678)?;
        a.shld(dword_ptr(rbx + 20), edx, 8)?; // 0x345678ab
        a.mov(byte_ptr(rbx + 24), 0x81)?;
        a.rcr(byte_ptr(rbx + 24), 1)?; // CF from SHLD (0x12 & 1 = 0): 0x40, CF=1
        a.setc(byte_ptr(rbx + 33))?;
        a.mov(esi, 0xffff_ffffu32)?;
        a.shr(rsi, 64) // count masked to 0: unchanged
    });
    m.cpu.gpr[1] = 2;
    m.cpu.gpr[2] = 0xab00_0000;
    halt(&mut m);
    assert_eq!(rd(&m, D, 4), 2);
    assert_eq!(rd(&m, D + 32, 1), 1);
    assert_eq!(rd(&m, D + 8, 8), (-4i64) as u64);
    assert_eq!(rd(&m, D + 16, 2), 0x0018);
    assert_eq!(rd(&m, D + 20, 4), 0x3456_78ab);
    assert_eq!(rd(&m, D + 24, 1), 0x40);
    assert_eq!(rd(&m, D + 33, 1), 1);
    assert_eq!(m.cpu.gpr[6], 0xffff_ffff);
}

#[test]
fn shift_count_zero_keeps_flags_but_zero_extends() {
    let mut m = m64(|a| {
        a.stc()?;
        a.shl(eax, cl)
    });
    m.cpu.gpr[0] = 0xffff_ffff_0000_0001;
    m.cpu.gpr[1] = 32; // masked to 0
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 1);
    assert!(m.cpu.flags.cf());
}

#[test]
fn exchange_instructions() {
    let mut m = m64(|a| {
        a.mov(rbx, D)?;
        a.mov(qword_ptr(rbx), 100)?;
        a.xchg(qword_ptr(rbx), rcx)?;
        a.mov(dword_ptr(rbx + 8), 7)?;
        a.lock().xadd(dword_ptr(rbx + 8), edx)?; // mem 10, edx 7
                                                 // CMPXCHG success: [rbx+16] == eax -> store esi
        a.mov(dword_ptr(rbx + 16), 42)?;
        a.mov(eax, 42)?;
        a.lock().cmpxchg(dword_ptr(rbx + 16), esi)?;
        a.setz(byte_ptr(rbx + 40))?;
        // failure: eax = memory value
        a.mov(eax, 1)?;
        a.cmpxchg(dword_ptr(rbx + 16), edi)?;
        a.setz(byte_ptr(rbx + 41))?;
        a.mov(r8, rax)?;
        a.xchg(byte_ptr(rbx), r9b)
    });
    m.cpu.gpr[1] = 5;
    m.cpu.gpr[2] = 3;
    m.cpu.gpr[6] = 0x77;
    m.cpu.gpr[7] = 0x99;
    m.cpu.gpr[9] = 0xabcd;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[1], 100);
    assert_eq!(rd(&m, D, 8), 0xcd);
    assert_eq!(m.cpu.gpr[9], 0xab05);
    assert_eq!(rd(&m, D + 8, 4), 10);
    assert_eq!(m.cpu.gpr[2], 7);
    assert_eq!(rd(&m, D + 16, 4), 0x77);
    assert_eq!(rd(&m, D + 40, 2), 0x0001);
    assert_eq!(m.cpu.gpr[8], 0x77);
}

#[test]
fn cmpxchg_register_zero_extension() {
    // Success writes only the destination; failure writes only the accumulator.
    let mut m = m64(|a| a.cmpxchg(ebx, ecx));
    m.cpu.gpr[0] = 0xaaaa_aaaa_0000_0005;
    m.cpu.gpr[3] = 0xbbbb_bbbb_0000_0005;
    m.cpu.gpr[1] = 0xcccc_cccc_0000_0009;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 0xaaaa_aaaa_0000_0005);
    assert_eq!(m.cpu.gpr[3], 9);
    assert!(m.cpu.flags.zf());
    let mut m = m64(|a| a.cmpxchg(ebx, ecx));
    m.cpu.gpr[0] = 0xaaaa_aaaa_0000_0004;
    m.cpu.gpr[3] = 0xbbbb_bbbb_0000_0005;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 5);
    assert_eq!(m.cpu.gpr[3], 0xbbbb_bbbb_0000_0005);
    assert!(!m.cpu.flags.zf() && m.cpu.flags.cf());
}

#[test]
fn cmpxchg8b_16b() {
    let prog = |a: &mut CodeAssembler| {
        a.mov(rsi, D)?;
        a.lock().cmpxchg8b(qword_ptr(rsi))?;
        a.setz(byte_ptr(rsi + 64))?;
        a.lock().cmpxchg16b(xmmword_ptr(rsi + 16))?;
        a.setz(byte_ptr(rsi + 65))
    };
    // Both succeed.
    let mut m = m64(prog);
    m.load(D, &0x1111_2222_3333_4444u64.to_le_bytes());
    m.load(D + 16, &5u64.to_le_bytes());
    m.load(D + 24, &6u64.to_le_bytes());
    m.cpu.gpr[2] = 0x1111_2222;
    m.cpu.gpr[0] = 0x3333_4444;
    m.cpu.gpr[1] = 0xaaaa_bbbb;
    m.cpu.gpr[3] = 0xcccc_dddd;
    halt(&mut m);
    assert_eq!(rd(&m, D, 8), 0xaaaa_bbbb_cccc_dddd);
    assert_eq!(rd(&m, D + 64, 2), 0x0001);
    // 16B compared RDX:RAX = 0x1111_2222:0x3333_4444 with 6:5: fails, loads it.
    assert_eq!((m.cpu.gpr[0], m.cpu.gpr[2]), (5, 6));
    // Failure of 8B (memory unchanged, EDX:EAX loaded); success of 16B.
    let mut m = m64(|a| {
        a.mov(rsi, D)?;
        a.cmpxchg8b(qword_ptr(rsi))?;
        a.setz(byte_ptr(rsi + 64))?;
        a.mov(rax, 5i64)?;
        a.mov(rdx, 6i64)?;
        a.cmpxchg16b(xmmword_ptr(rsi + 16))?;
        a.setz(byte_ptr(rsi + 65))
    });
    m.load(D, &0x1111_2222_3333_4444u64.to_le_bytes());
    m.load(D + 16, &5u64.to_le_bytes());
    m.load(D + 24, &6u64.to_le_bytes());
    m.cpu.gpr[1] = 0x77;
    m.cpu.gpr[3] = 0x88;
    halt(&mut m);
    assert_eq!(rd(&m, D, 8), 0x1111_2222_3333_4444);
    assert_eq!(rd(&m, D + 64, 2), 0x0100);
    assert_eq!((rd(&m, D + 16, 8), rd(&m, D + 24, 8)), (0x88, 0x77));

    let mut m = m32(|a| {
        a.mov(esi, D32)?;
        a.cmpxchg8b(qword_ptr(esi))
    });
    m.load(D, &0x1111_2222_3333_4444u64.to_le_bytes());
    halt(&mut m);
    assert_eq!((m.cpu.gpr[0], m.cpu.gpr[2]), (0x3333_4444, 0x1111_2222));
    assert!(!m.cpu.flags.zf());

    // CMPXCHG16B needs a 16-byte aligned operand.
    let mut m = m64(|a| {
        a.mov(rsi, D + 8)?;
        a.cmpxchg16b(xmmword_ptr(rsi))
    });
    assert_eq!(m.run(100), Stop::Shutdown);
}

#[test]
fn bit_test_memory_offsets() {
    let mut m = m64(|a| {
        a.mov(rbx, D + 16)?;
        a.bts(qword_ptr(rbx), rax)?; // bit 100: byte 16+12, bit 4
        a.bt(dword_ptr(rbx), ecx)?; // bit -1: byte 15 bit 7
        a.setc(dl)?;
        a.btr(word_ptr(rbx), si)?; // bit -17: word at -4, bit 15
        a.btc(dword_ptr(rbx), 35) // imm masked: bit 3 of dword at 16
    });
    m.cpu.gpr[0] = 100;
    m.cpu.gpr[1] = 0xffff_ffff;
    m.cpu.gpr[6] = 0xffef; // -17
    m.load(D + 15, &[0x80]);
    m.load(D + 12, &[0xff, 0xff]);
    halt(&mut m);
    assert_eq!(rd(&m, D + 28, 1), 0x10);
    assert_eq!(m.cpu.gpr[2] & 0xff, 1);
    assert_eq!(rd(&m, D + 12, 2), 0x7fff);
    assert_eq!(rd(&m, D + 16, 1), 0x08);

    // 32-bit mode with a register destination: the offset is taken modulo 32.
    let mut m = m32(|a| {
        a.bts(eax, ecx)?;
        a.setc(bl)
    });
    m.cpu.gpr[1] = 33;
    m.cpu.gpr[0] = 2;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 2);
    assert_eq!(m.cpu.gpr[3] & 0xff, 1);
}

#[test]
fn bit_scans() {
    let mut m = m64(|a| {
        a.mov(rbx, D)?;
        a.bsf(eax, dword_ptr(rbx))?; // zero source: RAX unchanged, ZF
        a.setz(cl)?;
        a.bsr(rdx, qword_ptr(rbx + 8))?;
        a.popcnt(rsi, qword_ptr(rbx + 8))?;
        a.lzcnt(di, word_ptr(rbx))?; // 16, CF
        a.setc(ch)?;
        a.tzcnt(r8, qword_ptr(rbx + 8))
    });
    m.cpu.gpr[0] = 0xdead_beef_dead_beef;
    m.load(D + 8, &0x0010_0000_0000_0f00u64.to_le_bytes());
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], 0xdead_beef_dead_beef);
    assert_eq!(m.cpu.gpr[1] & 0xffff, 0x0101);
    assert_eq!(m.cpu.gpr[2], 52);
    assert_eq!(m.cpu.gpr[6], 5);
    assert_eq!(m.cpu.gpr[7] & 0xffff, 16);
    assert_eq!(m.cpu.gpr[8], 8);
}

#[test]
fn setcc_cmov() {
    let mut m = m64(|a| {
        a.mov(rbx, D)?;
        a.cmp(eax, 5)?; // eax = 3: below, less
        a.setb(byte_ptr(rbx))?;
        a.setg(byte_ptr(rbx + 1))?;
        a.cmova(ecx, edx)?; // false: ecx zero-extended
        a.cmovb(rsi, qword_ptr(rbx + 8))?;
        a.cmovl(di, dx)
    });
    m.cpu.gpr[0] = 3;
    m.cpu.gpr[1] = 0xffff_ffff_0000_0001;
    m.cpu.gpr[2] = 0x1234_5678;
    m.cpu.gpr[7] = 0xffff_ffff_ffff_ffff;
    m.load(D + 8, &0x0102_0304_0506_0708u64.to_le_bytes());
    halt(&mut m);
    assert_eq!(rd(&m, D, 2), 0x0001);
    assert_eq!(m.cpu.gpr[1], 1);
    assert_eq!(m.cpu.gpr[6], 0x0102_0304_0506_0708);
    assert_eq!(m.cpu.gpr[7], 0xffff_ffff_ffff_5678);

    // CMOV reads its memory operand even when the condition is false: a fault.
    let mut m = m64(|a| {
        a.xor(eax, eax)?;
        a.mov(rbx, 0x8000_0000_0000u64)?;
        a.cmovnz(rax, qword_ptr(rbx))
    });
    assert_eq!(m.run(100), Stop::Shutdown);
}

#[test]
fn flag_instructions() {
    let mut m = m64(|a| {
        a.mov(ah, 0xff)?;
        a.sahf()?;
        a.setc(bl)?;
        a.sets(bh)?;
        a.cmc()?;
        a.setc(cl)?;
        a.stc()?;
        a.lahf()?;
        a.mov(dl, ah)?;
        a.clc()?;
        a.std()
    });
    m.cpu.flags.set(OF);
    halt(&mut m);
    assert_eq!(m.cpu.gpr[3] & 0xffff, 0x0101);
    assert_eq!(m.cpu.gpr[1] & 0xff, 0);
    assert_eq!(m.cpu.gpr[2] & 0xff, 0xd7);
    assert_eq!(arith(&m), OF | ZF | SF | PF | crate::cpu::flags::AF);
    assert!(m.cpu.flags.has(DF));
    let mut m = m64(|a| a.cld());
    m.cpu.flags.set(DF);
    halt(&mut m);
    assert!(!m.cpu.flags.has(DF));
}
