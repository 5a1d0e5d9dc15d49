//! The fast forms must behave exactly like the general handlers: every case runs twice, with
//! and without them, from the same random state, and registers, defined flags, RIP and memory
//! must agree.

use super::DISABLED;
use crate::cpu::flags::{AF, ARITH};
use crate::cpu::mem::Access;
use crate::cpu::run::Stop;
use crate::testutil::{Rng, TestMachine, CODE, DATA, STACK};
use iced_x86::code_asm::*;

type Build = fn(&mut CodeAssembler) -> Result<(), IcedError>;

fn run(
    code: &[u8],
    regs: &[u64; 16],
    mem: &[u8],
    flags: u64,
    fast: bool,
    warm: bool,
) -> TestMachine {
    DISABLED.with(|d| d.set(!fast));
    let mut m = TestMachine::with_state(code, regs, mem, flags, warm);
    let stop = m.run(1000);
    DISABLED.with(|d| d.set(false));
    assert_eq!(stop, Stop::Halt);
    m
}

fn check(name: &str, build: Build, undefined: u64) {
    let mut a = CodeAssembler::new(64).unwrap();
    build(&mut a).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for case in 0..300 {
        let mut regs = [0u64; 16];
        for r in regs.iter_mut() {
            *r = rng.value();
        }
        regs[3] = DATA; // rbx: memory base
        regs[4] = 0x8_0000; // rsp
        regs[6] = rng.next() % 64; // rsi: index
        let mem: Vec<u8> = (0..1024).map(|_| rng.next() as u8).collect();
        let flags = rng.next() & (ARITH | crate::cpu::flags::DF);
        // Odd cases start with a cold TLB: the memory forms fall back to the handlers.
        let warm = case % 2 == 0;
        let f = run(&code, &regs, &mem, flags, true, warm);
        let g = run(&code, &regs, &mem, flags, false, warm);
        let what = format!("{name}, case {case}");
        assert_eq!(f.cpu.gpr, g.cpu.gpr, "{what}: registers");
        assert_eq!(f.cpu.rip, g.cpu.rip, "{what}: rip");
        let mask = !(undefined | AF);
        assert_eq!(
            f.cpu.flags.get() & mask,
            g.cpu.flags.get() & mask,
            "{what}: flags"
        );
        let d = DATA as usize;
        assert_eq!(f.ram()[d..d + 1024], g.ram()[d..d + 1024], "{what}: memory");
        let s = 0x7_f000;
        assert_eq!(f.ram()[s..0x8_0000], g.ram()[s..0x8_0000], "{what}: stack");
    }
}

#[test]
fn register_forms_match_the_handlers() {
    check(
        "alu rr",
        |a| {
            a.add(rax, rcx)?;
            a.adc(edx, eax)?;
            a.sbb(r8, r9)?;
            a.sub(r10d, r11d)?;
            a.and(rax, rdx)?;
            a.or(ecx, r8d)?;
            a.xor(r9, r9)?;
            a.cmp(rax, r10)?;
            a.test(ecx, edx)
        },
        0,
    );
    check(
        "alu ri",
        |a| {
            a.add(rax, 5)?;
            a.adc(edx, -1)?;
            a.sub(r8, 0x7fff_ffff)?;
            a.and(ecx, 0xff00)?;
            a.cmp(r9d, -3)?;
            a.test(rax, 0x4000_0000)
        },
        0,
    );
    check(
        "moves",
        |a| {
            a.mov(rax, rcx)?;
            a.mov(edx, r8d)?;
            a.mov(r9, 0x1234_5678_9abc_def0u64)?;
            a.mov(r10d, 0xdead_beefu32)?;
            a.movsxd(r11, ecx)?;
            a.lea(r12, qword_ptr(rbx + rsi * 8 + 0x10))?;
            a.inc(rdx)?;
            a.dec(r8d)
        },
        0,
    );
    check(
        "imul shifts cmov",
        |a| {
            a.imul_2(rax, rcx)?;
            a.imul_2(edx, r8d)?;
            a.shl(r9, 7)?;
            a.shr(r10d, 31)?;
            a.sar(r11, 63)?;
            a.cmp(rax, rdx)?;
            a.cmovb(r12, r13)?;
            a.cmovge(r14d, r15d)?;
            a.cmovne(eax, ecx)
        },
        crate::cpu::flags::SF
            | crate::cpu::flags::ZF
            | crate::cpu::flags::PF
            | crate::cpu::flags::OF,
    );
    check(
        "setcc movzx mul",
        |a| {
            a.cmp(rax, rcx)?;
            a.setb(sil)?;
            a.setl(r9b)?;
            a.sete(al)?;
            a.seta(ah)?;
            a.movzx(esi, sil)?;
            a.movzx(rdx, r9b)?;
            a.movzx(r10d, cx)?;
            a.movzx(ecx, bh)?;
            a.mul(r11)?;
            a.setc(dil)?;
            a.mul(r12d)?;
            a.seto(r13b)
        },
        crate::cpu::flags::SF | crate::cpu::flags::ZF | crate::cpu::flags::PF,
    );
    check(
        "branches",
        |a| {
            let mut l1 = a.create_label();
            let mut l2 = a.create_label();
            a.cmp(rax, rcx)?;
            a.jl(l1)?;
            a.add(rdx, 1)?;
            a.set_label(&mut l1)?;
            a.test(r8, r8)?;
            a.je(l2)?;
            a.jmp(l2)?;
            a.set_label(&mut l2)?;
            a.nop()
        },
        0,
    );
}

#[test]
fn word_forms_match_the_handlers() {
    check(
        "word registers",
        |a| {
            a.add(ax, cx)?;
            a.test(cx, cx)?;
            a.sub(dx, 0x7fff)?;
            a.adc(r8w, r9w)?;
            a.cmp(ax, dx)?;
            a.mov(r10w, r11w)?;
            a.mov(si, 0x8000)?;
            a.inc(r12w)?;
            a.dec(ax)?;
            a.xor(r13w, ax)?;
            a.sbb(cx, -1)?;
            a.or(dx, 0x40)
        },
        0,
    );
    check(
        "word memory",
        |a| {
            a.mov(word_ptr(rbx + rsi * 2), cx)?;
            a.mov(r9w, word_ptr(rbx + 0x10))?;
            a.cmp(word_ptr(rbx + 0x12), dx)?;
            a.add(ax, word_ptr(rbx + rsi * 2 + 4))?;
            a.mov(word_ptr(rbx + 0x21), 0x7f00)?;
            a.and(word_ptr(rbx + 0x30), 0xfff0)?;
            a.sub(word_ptr(rbx + rsi), r8w)?;
            a.test(word_ptr(rbx + 0x32), 0x8001)
        },
        0,
    );
}

#[test]
fn sse_moves_match_the_handlers() {
    check(
        "sse moves",
        |a| {
            a.movsd_2(xmm0, qword_ptr(rbx + 0x10))?;
            a.movss(xmm1, dword_ptr(rbx + rsi * 4))?;
            a.movq(xmm2, qword_ptr(rbx + 8))?;
            a.movd(xmm3, dword_ptr(rbx + 0x20))?;
            a.movups(xmm4, xmmword_ptr(rbx + rsi + 1))?;
            a.movaps(xmm5, xmmword_ptr(rbx + 0x40))?;
            a.movdqu(xmm6, xmmword_ptr(rbx + rsi * 8))?;
            a.movaps(xmm7, xmm4)?;
            a.movdqa(xmm8, xmm6)?;
            a.movsd_2(qword_ptr(rbx + 0x100), xmm0)?;
            a.movss(dword_ptr(rbx + 0x108), xmm1)?;
            a.movq(qword_ptr(rbx + 0x110), xmm2)?;
            a.movd(dword_ptr(rbx + 0x118), xmm3)?;
            a.movups(xmmword_ptr(rbx + rsi + 0x120), xmm7)?;
            a.movaps(xmmword_ptr(rbx + 0x180), xmm5)?;
            a.movdqu(xmmword_ptr(rbx + 0x190), xmm8)?;
            a.movq(rax, xmm4)?;
            a.movq(rcx, xmm3)
        },
        0,
    );
}

#[test]
fn high_byte_and_memory_inc_dec_forms_match_the_handlers() {
    check(
        "high bytes, CDQE, INC/DEC on memory",
        |a| {
            a.add(rax, rcx)?; // flags for ADC to read
            a.or(ah, 0x40)?;
            a.test(ah, 8)?;
            a.adc(bh, 0x81)?;
            a.xor(ch, 0xff)?;
            a.and(dh, 0x0f)?;
            a.cmp(dh, 3)?;
            a.sub(ah, 200)?;
            a.movzx(ecx, ah)?;
            a.movzx(edx, bh)?;
            a.cdqe()?;
            a.inc(dword_ptr(rbx + 0x40))?;
            a.dec(qword_ptr(rbx + rsi * 8))?;
            a.inc(byte_ptr(rbx + 3))?;
            a.dec(word_ptr(rbx + 0x10).gs())
        },
        0,
    );
}

#[test]
fn bit_tests_match_the_handlers() {
    check(
        "bt",
        |a| {
            a.add(rax, rcx)?; // flags for BT to keep
            a.bt(rax, 63)?;
            a.bt(ecx, 37)?;
            a.bt(dx, 21)?;
            a.bt(dword_ptr(rbx + 0x10), 12)?;
            a.bt(qword_ptr(rbx + rsi * 8), 200)?;
            a.bt(word_ptr(rbx + 0x20), 15)
        },
        0,
    );
}

#[test]
fn byte_rotate_and_unary_forms_match_the_handlers() {
    check(
        "byte registers",
        |a| {
            a.cmp(al, cl)?;
            a.test(dl, r8b)?;
            a.add(sil, 5)?;
            a.adc(r9b, r10b)?;
            a.sbb(dil, -1)?;
            a.mov(r10b, r11b)?;
            a.mov(r12b, 0x80)?;
            a.inc(r13b)?;
            a.dec(al)?;
            a.shl(cl, 3)?;
            a.sar(dl, 7)?;
            a.xor(ah, al)?;
            a.mov(ch, 1)?;
            a.cmp(al, 0x41)
        },
        0,
    );
    check(
        "byte memory",
        |a| {
            a.sub(byte_ptr(rbx + 8), al)?;
            a.test(byte_ptr(rbx + rsi), 0x40)?;
            a.cmp(byte_ptr(rbx + 0x10), dl)?;
            a.mov(byte_ptr(rbx + 0x20), cl)?;
            a.mov(byte_ptr(rbx + 0x21), 0x7f)?;
            a.mov(r9b, byte_ptr(rbx + rsi))?;
            a.cmp(r9b, byte_ptr(rbx + 0x22))?;
            a.or(byte_ptr(rbx + 0x23), 0x81)?;
            a.add(r10b, byte_ptr(rbx + rsi + 3))
        },
        0,
    );
    check(
        "rotates and cl shifts",
        |a| {
            a.rol(eax, 7)?;
            a.ror(rdx, 13)?;
            a.rol(r8d, 31)?;
            a.ror(r9b, 9)?;
            a.shl(rax, cl)?;
            a.shr(r9d, cl)?;
            a.sar(r10, cl)?;
            a.ror(r11d, cl)?;
            a.rol(r12, cl)?;
            a.shl(r13d, 1)
        },
        crate::cpu::flags::OF,
    );
    check(
        "unary lea32 movsx bswap nop",
        |a| {
            a.neg(rax)?;
            a.not(ecx)?;
            a.neg(r8d)?;
            a.lea(r9d, dword_ptr(rbx + rsi * 4 + 8))?;
            a.movsx(r10, cl)?;
            a.movsx(r11d, dx)?;
            a.movsx(eax, byte_ptr(rbx + rsi))?;
            a.movsxd(rdx, dword_ptr(rbx + 0x40))?;
            a.movsx(r12, word_ptr(rbx + 0x50))?;
            a.bswap(r13)?;
            a.bswap(r14d)?;
            a.nop()?;
            a.nop_1(dword_ptr(rax))?;
            a.neg(r15)
        },
        0,
    );
    check(
        "gs and indirect branches",
        |a| {
            let mut f = a.create_label();
            let mut done = a.create_label();
            a.mov(rax, qword_ptr(rbx + 8).gs())?;
            a.add(dword_ptr(rbx + rsi + 0x10).gs(), ecx)?;
            a.mov(qword_ptr(rbx + 0x30).gs(), rdx)?;
            let mut back = a.create_label();
            a.lea(r8, ptr(f))?;
            a.call(r8)?;
            a.mov(qword_ptr(rbx + 0x300), r8)?;
            a.call(qword_ptr(rbx + 0x300))?;
            a.lea(r9, ptr(back))?;
            a.mov(qword_ptr(rbx + 0x308), r9)?;
            a.jmp(qword_ptr(rbx + 0x308))?;
            a.set_label(&mut back)?;
            a.lea(r9, ptr(done))?;
            a.jmp(r9)?;
            a.set_label(&mut f)?;
            a.add(r10, 1)?;
            a.ret()?;
            a.set_label(&mut done)?;
            a.nop()
        },
        0,
    );
}

#[test]
fn memory_and_stack_forms_match_the_handlers() {
    check(
        "load store",
        |a| {
            a.mov(rax, qword_ptr(rbx + rsi * 8))?;
            a.mov(ecx, dword_ptr(rbx + 0x100))?;
            a.mov(qword_ptr(rbx + rsi + 0x200), rdx)?;
            a.mov(dword_ptr(rbx + 0x40), r8d)?;
            a.mov(qword_ptr(rbx + 0x48), 0x1234_5678)?;
            a.mov(dword_ptr(rbx + 0x50), 0x8765_4321u32)?;
            a.movzx(r9d, byte_ptr(rbx + rsi))?;
            a.movzx(r10, word_ptr(rbx + 0x21))
        },
        0,
    );
    check(
        "alu memory",
        |a| {
            a.add(rax, qword_ptr(rbx + rsi * 8))?;
            a.sub(ecx, dword_ptr(rbx + 8))?;
            a.add(qword_ptr(rbx + 0x30), rdx)?;
            a.xor(dword_ptr(rbx + 0x34), r8d)?;
            a.cmp(qword_ptr(rbx + rsi), r9)?;
            a.adc(qword_ptr(rbx + 0x60), 7)?;
            a.and(dword_ptr(rbx + 0x64), -16)?;
            a.test(qword_ptr(rbx + 0x68), r10)?;
            a.cmp(dword_ptr(rbx + 0x70), 0x55)
        },
        0,
    );
    check(
        "stack",
        |a| {
            let mut f = a.create_label();
            let mut done = a.create_label();
            a.push(rax)?;
            a.push(rcx)?;
            a.pop(rdx)?;
            a.call(f)?;
            a.jmp(done)?;
            a.set_label(&mut f)?;
            a.pop(r8)?;
            a.push(r8)?;
            a.ret()?;
            a.set_label(&mut done)?;
            a.pop(r9)
        },
        0,
    );
}

/// A fault in the middle of a block leaves the same precise state with and without the fast
/// forms: the instructions before it done, RIP at the faulting one, the count of instructions
/// executed, CR2.
#[test]
fn a_fault_mid_block_is_precise() {
    let mut a = CodeAssembler::new(64).unwrap();
    a.add(rax, rcx).unwrap();
    a.mov(qword_ptr(rbx + 8), rax).unwrap();
    a.inc(rdx).unwrap();
    a.mov(r8, qword_ptr(rsi)).unwrap(); // rsi: unmapped (above the first GiB)
    a.add(r9, 1).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut regs = [7u64; 16];
    regs[3] = DATA;
    regs[4] = STACK;
    regs[6] = 0x4000_0010;
    let outcome = |fast: bool| {
        DISABLED.with(|d| d.set(!fast));
        let mut m = TestMachine::new64(&code);
        m.cpu.gpr = regs;
        m.cpu.translate(DATA, Access::Write, false).unwrap();
        let stop = m.run(1000);
        DISABLED.with(|d| d.set(false));
        (
            stop,
            m.cpu.gpr,
            m.cpu.rip,
            m.cpu.cr2,
            m.cpu.icount,
            m.ram()[DATA as usize + 8],
        )
    };
    let f = outcome(true);
    assert_eq!(f, outcome(false));
    assert_eq!(f.3, 0x4000_0010, "cr2");
    assert_eq!(f.1[0], 14, "the add before the fault is done");
    assert_eq!(f.1[2], 8, "the inc before the fault is done");
    assert_eq!(f.1[9], 7, "the add after the fault is not");
    assert_eq!(f.5, 14, "the store before the fault is done");
}

/// The instructions the differential tests rely on do get a fast form (a form that silently
/// fell back to its handler would make them compare the handler with itself).
#[test]
fn the_hot_forms_are_digested() {
    use super::{digest, Fast};
    let mut a = CodeAssembler::new(64).unwrap();
    let mut l = a.create_label();
    a.set_label(&mut l).unwrap();
    a.test(dl, r8b).unwrap();
    a.test(cx, cx).unwrap();
    a.mov(word_ptr(rdx + rbx * 2), cx).unwrap();
    a.cmp(word_ptr(rbx + 0x10), r8w).unwrap();
    a.add(ax, 0x1234).unwrap();
    a.bt(dword_ptr(rdi), 12).unwrap();
    a.bt(rax, 5).unwrap();
    a.or(ah, 0x40).unwrap();
    a.movzx(eax, ah).unwrap();
    a.cdqe().unwrap();
    a.inc(dword_ptr(rbx + 0x40).gs()).unwrap();
    a.movsd_2(xmm0, qword_ptr(rbx + 0x10)).unwrap();
    a.movsd_2(qword_ptr(rsp + 8), xmm0).unwrap();
    a.movaps(xmm1, xmm0).unwrap();
    a.movdqu(xmm6, xmmword_ptr(rbx + rsi * 8)).unwrap();
    a.cmp(byte_ptr(rbx + 0x10), dl).unwrap();
    a.mov(byte_ptr(rbx + 0x21), 0x7f).unwrap();
    a.mov(r9b, byte_ptr(rbx + rsi)).unwrap();
    a.rol(eax, 7).unwrap();
    a.ror(r9b, 9).unwrap();
    a.shl(rax, cl).unwrap();
    a.shl(r13d, 1).unwrap();
    a.neg(rax).unwrap();
    a.not(ecx).unwrap();
    a.lea(r9d, dword_ptr(rbx + rsi * 4 + 8)).unwrap();
    a.movsx(r10, cl).unwrap();
    a.movsxd(rdx, dword_ptr(rbx + 0x40)).unwrap();
    a.movzx(esi, sil).unwrap();
    a.setb(sil).unwrap();
    a.mul(r11).unwrap();
    a.bswap(r14d).unwrap();
    a.nop_1(dword_ptr(rax)).unwrap();
    a.mov(rax, qword_ptr(rbx + 8).gs()).unwrap();
    a.add(dword_ptr(rbx + rsi + 0x10).gs(), ecx).unwrap();
    a.call(r8).unwrap();
    a.jmp(r9).unwrap();
    a.call(qword_ptr(rbx + 8)).unwrap();
    a.jmp(qword_ptr(rax + 0x100)).unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut d = iced_x86::Decoder::with_ip(64, &code, CODE, iced_x86::DecoderOptions::NONE);
    while d.can_decode() {
        let ins = d.decode();
        assert_ne!(digest(&ins, 64), Fast::No, "{ins}");
    }
}
