//! Tests of the stack instructions, miscellaneous moves, the NOP family and fault atomicity.

use super::tests::{arith, halt, m32, m64, rd, Asm, D};
use crate::cpu::flags::{CF, ZF};
use crate::cpu::run::Stop;
use crate::testutil::{CODE, STACK};
use iced_x86::code_asm::*;

#[test]
fn push_pop_64() {
    let mut m = m64(|a| {
        a.push(rax)?;
        a.push(-2)?; // imm8 sign-extended to 64 bits
        a.push(0x1234_5678)?;
        a.mov(rbx, D)?;
        a.push(qword_ptr(rbx))?;
        a.pop(rcx)?;
        a.pop(dx)?; // 16-bit pop
        a.pop(qword_ptr(rsp + 8)) // address computed after the pop
    });
    m.cpu.gpr[0] = 0xaaaa;
    m.cpu.gpr[2] = 0xffff_ffff_ffff_ffff;
    m.load(D, &0x5555u64.to_le_bytes());
    halt(&mut m);
    let sp0 = STACK - 24 + 2;
    assert_eq!(m.cpu.gpr[1], 0x5555);
    assert_eq!(m.cpu.gpr[2], 0xffff_ffff_ffff_5678);
    // After POP DX, RSP = STACK-22; the pop reads 8 bytes there and stores at RSP+8 with RSP
    // already incremented to STACK-14.
    assert_eq!(m.cpu.gpr[4], sp0 + 8);
    let popped = rd(&m, STACK - 22, 8);
    assert_eq!(rd(&m, STACK - 14 + 8, 8), popped);
    assert_eq!(rd(&m, STACK - 16, 8), u64::MAX - 1);

    // PUSH RSP pushes the old value; POP RSP loads the popped value.
    let mut m = m64(|a| {
        a.push(rsp)?;
        a.pop(rax)?;
        a.push(rbx)?;
        a.pop(rsp)
    });
    m.cpu.gpr[3] = 0x1234;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], STACK);
    assert_eq!(m.cpu.gpr[4], 0x1234);
}

#[test]
fn push_pop_32() {
    let mut m = m32(|a| {
        a.push(eax)?;
        a.push(-1)?;
        a.push(word_ptr(ebx))?; // 66 FF /6: 2 bytes
        a.pop(cx)?;
        a.pop(edx)?;
        a.pop(dword_ptr(esp - 4))?;
        a.mov(esi, esp)
    });
    m.cpu.gpr[0] = 0x1122_3344;
    m.cpu.gpr[3] = D;
    m.load(D, &[0x99, 0x88]);
    halt(&mut m);
    assert_eq!(m.cpu.gpr[1] & 0xffff, 0x8899);
    assert_eq!(m.cpu.gpr[2], 0xffff_ffff);
    assert_eq!(m.cpu.gpr[6], STACK);
    // The last pop read [STACK-4] and wrote it to [new esp - 4] = the same place.
    assert_eq!(rd(&m, STACK - 4, 4), 0x1122_3344);
}

#[test]
fn misc_moves() {
    let mut m = m64(|a| {
        a.bswap(eax)?;
        a.bswap(rcx)?;
        a.mov(rbx, D)?;
        a.movbe(dword_ptr(rbx), edx)?;
        a.movbe(si, word_ptr(rbx))?;
        a.mov(byte_ptr(rbx + 5), 0x5a)?;
        a.mov(al, 5)?;
        a.xlatb()?;
        a.cbw()?;
        a.cwde()?;
        a.mov(r8, rax)?;
        a.mov(eax, 0x8000_0000u32)?;
        a.cdqe()?;
        a.cqo()
    });
    m.cpu.gpr[0] = 0x1122_3344;
    m.cpu.gpr[1] = 0x0102_0304_0506_0708;
    m.cpu.gpr[2] = 0xaabb_ccdd;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[1], 0x0807_0605_0403_0201);
    assert_eq!(rd(&m, D, 4), 0xddcc_bbaa);
    assert_eq!(m.cpu.gpr[6] & 0xffff, 0xaabb);
    assert_eq!(m.cpu.gpr[8], 0x5a);
    assert_eq!(m.cpu.gpr[0], 0xffff_ffff_8000_0000);
    assert_eq!(m.cpu.gpr[2], u64::MAX);
}

#[test]
fn nops_and_ud2() {
    let mut m = m64(|a| {
        a.nop()?;
        a.db(&[0x0f, 0x1f, 0x84, 0x00, 0x00, 0x00, 0x00, 0x00])?; // nopw 0(rax,rax,1)
        a.db(&[0x66, 0x2e, 0x0f, 0x1f, 0x84, 0, 0, 0, 0, 0])?;
        a.endbr64()?;
        a.endbr32()?;
        a.pause()?;
        a.lfence()?;
        a.mfence()?;
        a.sfence()?;
        a.prefetcht0(byte_ptr(rax))?;
        a.prefetchnta(byte_ptr(rax))?;
        a.prefetchw(byte_ptr(rax))?;
        a.clflush(byte_ptr(rax))?;
        a.clflushopt(byte_ptr(rax))?;
        a.db(&[0x87, 0xc0]) // xchg eax, eax: zero-extends in 64-bit mode
    });
    m.cpu.gpr[0] = 0xffff_ffff_0000_0000 | D;
    halt(&mut m);
    assert_eq!(m.cpu.gpr[0], D);
    let mut m = m64(|a| a.ud2());
    assert_eq!(m.run(100), Stop::Shutdown);
    assert_eq!(m.cpu.rip, CODE);
}

#[test]
fn faulting_rmw_changes_nothing() {
    // Addresses above the first GiB are not mapped in the 64-bit test machine.
    let bad = 0x8000_0000_0000u64;
    let progs: [Asm; 6] = [
        |a| a.add(qword_ptr(rbx), rcx),
        |a| a.xadd(qword_ptr(rbx), rcx),
        |a| a.xchg(qword_ptr(rbx), rcx),
        |a| a.pop(qword_ptr(rbx)),
        |a| a.shl(qword_ptr(rbx), 3),
        |a| a.cmpxchg(qword_ptr(rbx), rcx),
    ];
    for p in progs {
        let mut m = m64(p);
        m.cpu.gpr[3] = bad;
        m.cpu.gpr[1] = 7;
        m.cpu.flags.set(CF | ZF);
        assert_eq!(m.run(100), Stop::Shutdown);
        assert_eq!(m.cpu.gpr[1], 7);
        assert_eq!(m.cpu.gpr[4], STACK);
        assert_eq!(arith(&m), CF | ZF);
    }
}
