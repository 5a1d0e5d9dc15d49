//! The fast forms must behave exactly like the general handlers: every case runs twice, with
//! and without them, from the same random state, and registers, defined flags, RIP and memory
//! must agree.

use super::DISABLED;
use crate::cpu::flags::{AF, ARITH};
use crate::cpu::run::Stop;
use crate::testutil::{TestMachine, CODE, DATA};
use iced_x86::code_asm::*;

type Build = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// A tiny deterministic generator with edge-biased values.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn value(&mut self) -> u64 {
        match self.next() % 6 {
            0 => 0,
            1 => u64::MAX,
            2 => 0x8000_0000_0000_0000,
            3 => 0x7fff_ffff,
            4 => 0x8000_0000,
            _ => self.next(),
        }
    }
}

fn run(code: &[u8], regs: &[u64; 16], mem: &[u8], flags: u64, fast: bool) -> TestMachine {
    DISABLED.with(|d| d.set(!fast));
    let mut m = TestMachine::new64(code);
    m.load(DATA, mem);
    m.cpu.gpr = *regs;
    m.cpu.flags.set(flags);
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
        let f = run(&code, &regs, &mem, flags, true);
        let g = run(&code, &regs, &mem, flags, false);
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
