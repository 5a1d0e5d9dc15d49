//! Tests for exception and interrupt delivery.

use crate::cpu::interrupt::testenv::*;
use crate::cpu::run::Stop;
use crate::cpu::{flags, Exception, Seg};
use crate::testutil::{TestMachine, CODE, STACK};
use iced_x86::code_asm::*;

/// A 64-bit machine with the environment and a HLT handler for `vectors`.
fn machine(code: &[u8], vectors: &[u8]) -> TestMachine {
    let mut m = TestMachine::new64(code);
    setup64(&mut m);
    let h = handler(&mut m, 0, &asm(64, HANDLERS, |a| a.hlt()));
    for &v in vectors {
        gate64(&mut m, v, h, 0, 0, false);
    }
    m
}

fn frame(m: &TestMachine, i: u64) -> u64 {
    m.read_u64(m.cpu.gpr[4] + i * 8)
}

#[test]
fn ud_in_64bit_mode_pushes_a_full_frame() {
    let code = asm(64, CODE, |a| a.ud2());
    let mut m = machine(&code, &[Exception::UD]);
    m.cpu.gpr[4] = STACK - 8; // misaligned: the frame is aligned to 16
    m.cpu.flags.set_bit(flags::IF, true);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, HANDLERS + 1);
    assert_eq!(m.cpu.gpr[4], STACK - 16 - 40);
    assert_eq!(frame(&m, 0), CODE, "RIP of the faulting instruction");
    assert_eq!(frame(&m, 1), u64::from(KCODE));
    assert_ne!(frame(&m, 2) & flags::IF, 0);
    assert_eq!(frame(&m, 3), STACK - 8);
    assert_eq!(frame(&m, 4), 0x18);
    assert!(!m.cpu.flags.has(flags::IF), "interrupt gate clears IF");
}

#[test]
fn page_fault_sets_cr2_and_error_code() {
    let code = asm(64, CODE, |a| {
        a.mov(rax, qword_ptr(0x4000_0010u64))?;
        a.hlt()
    });
    let mut m = machine(&code, &[Exception::PF]);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.cr2, 0x4000_0010);
    assert_eq!(frame(&m, 0), 0, "not present, read, supervisor");
    assert_eq!(frame(&m, 1), CODE);
}

#[test]
fn divide_error_and_trap_gate_keeps_if() {
    let code = asm(64, CODE, |a| a.div(ecx));
    let mut m = TestMachine::new64(&code);
    setup64(&mut m);
    let h = handler(&mut m, 0, &asm(64, HANDLERS, |a| a.hlt()));
    gate64(&mut m, Exception::DE, h, 0, 0, true);
    m.cpu.gpr[0] = 1;
    m.cpu.flags.set_bit(flags::IF, true);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(frame(&m, 0), CODE);
    assert!(m.cpu.flags.has(flags::IF));
}

#[test]
fn int3_pushes_next_rip_and_iretq_returns() {
    let code = asm(64, CODE, |a| {
        a.int3()?;
        a.hlt()
    });
    let mut m = TestMachine::new64(&code);
    setup64(&mut m);
    let h = handler(
        &mut m,
        0,
        &asm(64, HANDLERS, |a| {
            a.mov(rbx, 0x1234u64)?;
            a.iretq()
        }),
    );
    gate64(&mut m, Exception::BP, h, 0, 0, false);
    m.cpu.flags.set_bit(flags::IF, true);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[3], 0x1234);
    assert_eq!(m.cpu.rip, CODE + 2);
    assert_eq!(m.cpu.gpr[4], STACK);
    assert!(m.cpu.flags.has(flags::IF), "IRETQ restores IF");
}

#[test]
fn ist_stack_is_used() {
    let code = asm(64, CODE, |a| a.int3());
    let mut m = TestMachine::new64(&code);
    setup64(&mut m);
    let h = handler(&mut m, 0, &asm(64, HANDLERS, |a| a.hlt()));
    gate64(&mut m, Exception::BP, h, 0, 1, false);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[4], IST1 - 40);
    assert_eq!(frame(&m, 0), CODE + 1);
    assert_eq!(frame(&m, 3), STACK);
}

/// A ring-3 machine: user pages, user CS/SS, kernel stack in the TSS.
fn user_machine(user: &[u8]) -> TestMachine {
    let mut m = TestMachine::new64(&[]);
    setup64(&mut m);
    user_pages(&mut m);
    m.load(USER_CODE, user);
    enter_user64(&mut m);
    m
}

#[test]
fn int_0x80_from_ring3_and_iretq_back() {
    let user = asm(64, USER_CODE, |a| {
        a.int(0x80)?;
        a.mov(rcx, rbx)?;
        a.int3()
    });
    let mut m = user_machine(&user);
    let sys = handler(
        &mut m,
        0,
        &asm(64, HANDLERS, |a| {
            a.mov(rbx, 0x77u64)?;
            a.mov(rdx, rsp)?;
            a.iretq()
        }),
    );
    let stop = handler(&mut m, 1, &asm(64, HANDLERS + 0x100, |a| a.hlt()));
    gate64(&mut m, 0x80, sys, 3, 0, false);
    gate64(&mut m, Exception::BP, stop, 3, 0, false);
    m.cpu.flags.set_bit(flags::IF, true);
    assert_eq!(m.cpu.cpl, 3);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[1], 0x77, "ring 3 ran after IRETQ");
    assert_eq!(m.cpu.gpr[2], KSTACK - 40, "the handler ran on RSP0");
    assert_eq!(m.cpu.cpl, 0);
    let stack_seg = m.cpu.seg[Seg::Ss as usize];
    assert!(
        stack_seg.unusable && stack_seg.selector == 0,
        "SS is null with RPL 0"
    );
    assert_eq!(frame(&m, 0), USER_CODE + 6, "INT3 pushes the next RIP");
    assert_eq!(frame(&m, 1), u64::from(UCODE));
    assert_eq!(frame(&m, 3), USER_STACK);
    assert_eq!(frame(&m, 4), u64::from(UDATA));
}

#[test]
fn int_n_through_a_dpl0_gate_from_ring3_is_gp() {
    let user = asm(64, USER_CODE, |a| a.int(0x81));
    let mut m = user_machine(&user);
    let h = handler(&mut m, 0, &asm(64, HANDLERS, |a| a.hlt()));
    gate64(&mut m, 0x81, h, 0, 0, false);
    gate64(&mut m, Exception::GP, h, 0, 0, false);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(frame(&m, 0), 0x81 * 8 + 2, "error code names the IDT entry");
    assert_eq!(frame(&m, 1), USER_CODE, "#GP points at the INT");
    assert_eq!(frame(&m, 2), u64::from(UCODE));
}

#[test]
fn stack_fault_during_delivery_becomes_double_fault() {
    let code = asm(64, CODE, |a| a.ud2());
    let mut m = machine(&code, &[Exception::UD, Exception::PF]);
    let df = handler(&mut m, 1, &asm(64, HANDLERS + 0x100, |a| a.hlt()));
    gate64(&mut m, Exception::DF, df, 0, 1, false);
    // An unmapped stack: #UD's frame faults (#PF), whose frame faults again (#DF).
    m.cpu.gpr[4] = 0x4000_1000;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, df + 1);
    assert_eq!(m.cpu.gpr[4], IST1 - 48);
    assert_eq!(frame(&m, 0), 0, "#DF error code");
    assert_eq!(frame(&m, 1), CODE, "state of the original instruction");
    assert_eq!(frame(&m, 4), 0x4000_1000);
    assert_eq!(m.cpu.cr2, 0x4000_0ff8);
}

#[test]
fn fault_without_handlers_is_a_triple_fault() {
    let code = asm(64, CODE, |a| a.ud2());
    let mut m = TestMachine::new64(&code);
    setup64(&mut m);
    assert_eq!(m.run(100), Stop::Shutdown);
    assert_eq!(m.cpu.rip, CODE, "state left at the faulting instruction");
}

#[test]
fn external_interrupt_wakes_and_returns_to_next_instruction() {
    let code = asm(64, CODE, |a| a.hlt());
    let mut m = machine(&code, &[0x20]);
    assert_eq!(m.run(100), Stop::Halt);
    assert!(m.cpu.halted);
    m.cpu.interrupt(0x20).expect("delivered");
    assert!(!m.cpu.halted);
    assert_eq!(m.cpu.rip, HANDLERS);
    assert_eq!(frame(&m, 0), CODE + 1);
}

#[test]
fn real_mode_interrupt_uses_the_ivt() {
    let code = asm(16, 0x10, |a| a.int3());
    let mut m = TestMachine::new32(&[]);
    m.cpu.cr0 = crate::cpu::cr::CR0_ET;
    for s in m.cpu.seg.iter_mut() {
        s.base = 0;
        s.selector = 0;
        s.db = false;
        s.limit = 0xffff;
    }
    m.cpu.seg[Seg::Cs as usize].selector = 0xffff;
    m.cpu.seg[Seg::Cs as usize].base = 0xffff0;
    m.cpu.update_mode();
    m.load(0x10_0000, &code);
    m.cpu.rip = 0x10;
    m.cpu.gpr[4] = 0x7000;
    m.cpu.idtr = vireo_hypervisor::Table {
        base: 0,
        limit: 0x3ff,
    };
    m.load(12, &[0x00, 0x05, 0x50, 0x00]); // 0050:0500 = 0xa00
    m.load(0xa00, &[0xf4]);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.seg[Seg::Cs as usize].base, 0x500);
    assert_eq!(m.cpu.rip, 0x501);
    assert_eq!(m.cpu.gpr[4], 0x7000 - 6);
    let r = m.ram();
    let w = |a: usize| u16::from_le_bytes([r[a], r[a + 1]]);
    assert_eq!(w(0x6ffa), 0x11, "IP after INT3");
    assert_eq!(w(0x6ffc), 0xffff, "CS");
}
