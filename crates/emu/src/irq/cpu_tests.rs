//! End to end: guest code on the emulated CPU programs the chip through MMIO, ports and
//! MSRs, and takes its interrupts through the IDT.

use super::*;
use crate::cpu::run::Stop;
use crate::testutil::{TestMachine, CODE, DATA};
use iced_x86::code_asm::*;

const GDT: u64 = 0x3000;
const IDT: u64 = 0x4000;
const HANDLER: u64 = CODE + 0x1000;

/// A 32-bit flat protected-mode machine with a GDT, an IDT whose vectors 0x30-0x4f all go
/// to a handler that counts in DATA and EOIs the local APIC, and the chip as its platform.
fn machine(code: &[u8]) -> (TestMachine, Clock, Arc<Mutex<IrqChip>>) {
    let clock = Clock::manual();
    let chip = Arc::new(Mutex::new(IrqChip::new(
        clock.clone(),
        Arc::new(Waker::new()),
    )));
    let mut m = TestMachine::new32(code);
    m.cpu.platform = Box::new(ChipPlatform::new(chip.clone(), clock.clone()));
    let gdt: [u64; 4] = [0, 0x00cf_9a00_0000_ffff, 0, 0x00cf_9200_0000_ffff];
    for (i, d) in gdt.iter().enumerate() {
        m.load(GDT + i as u64 * 8, &d.to_le_bytes());
    }
    m.cpu.gdtr = vireo_hypervisor::Table {
        base: GDT,
        limit: 31,
    };
    for v in 0x30..0x50u64 {
        let gate = (HANDLER & 0xffff) | (0x08 << 16) | (0x8e00 << 32) | ((HANDLER >> 16) << 48);
        m.load(IDT + v * 8, &gate.to_le_bytes());
    }
    m.cpu.idtr = vireo_hypervisor::Table {
        base: IDT,
        limit: 0x7ff,
    };
    let mut a = CodeAssembler::new(32).unwrap();
    a.inc(dword_ptr(DATA as u32)).unwrap();
    a.mov(dword_ptr(0xfee0_00b0u32), 0).unwrap();
    a.iretd().unwrap();
    let handler = a.assemble(HANDLER).unwrap();
    m.load(HANDLER, &handler);
    (m, clock, chip)
}

fn count(m: &TestMachine) -> u32 {
    m.read_u64(DATA) as u32
}

#[test]
fn self_ipi_taken_through_idt() {
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(dword_ptr(0xfee0_00f0u32), 0x1ff).unwrap();
    a.mov(eax, dword_ptr(0xfee0_0030u32)).unwrap();
    a.mov(dword_ptr(0xfee0_0300u32), 0x4_0041).unwrap();
    a.sti().unwrap();
    a.nop().unwrap();
    a.nop().unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let (mut m, _, _) = machine(&code);
    assert_eq!(m.run(1000), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], 0x0005_0014);
    assert_eq!(count(&m), 1);
}

#[test]
fn pit_wakes_halted_cpu_through_ioapic() {
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(dword_ptr(0xfee0_00f0u32), 0x1ff).unwrap();
    // IOAPIC pin 2 -> vector 0x30.
    a.mov(byte_ptr(0xfec0_0000u32), 0x14).unwrap();
    a.mov(dword_ptr(0xfec0_0010u32), 0x30).unwrap();
    // PIC probe and mask, LINT0 masked as Linux does.
    a.mov(al, 0xfb).unwrap();
    a.out(0x21, al).unwrap();
    a.in_(al, 0x21).unwrap();
    a.movzx(ebx, al).unwrap();
    a.mov(al, 0xff).unwrap();
    a.out(0x21, al).unwrap();
    a.mov(dword_ptr(0xfee0_0350u32), 0x1_0700).unwrap();
    // PIT channel 0, mode 2, 1193 (1 kHz).
    a.mov(al, 0x34).unwrap();
    a.out(0x43, al).unwrap();
    a.mov(al, 0xa9).unwrap();
    a.out(0x40, al).unwrap();
    a.mov(al, 0x04).unwrap();
    a.out(0x40, al).unwrap();
    a.sti().unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.hlt().unwrap();
    a.jmp(top).unwrap();
    let code = a.assemble(CODE).unwrap();
    let (mut m, clock, chip) = machine(&code);
    assert_eq!(m.run(1000), Stop::Halt);
    assert_eq!(m.cpu.gpr[3], 0xfb);
    for _ in 0..10 {
        let next = chip.lock().unwrap().poll_timers().unwrap();
        clock.set_ns(next);
        chip.lock().unwrap().poll_timers();
        assert_eq!(m.run(1000), Stop::Halt);
    }
    assert_eq!(count(&m), 10);
}

#[test]
fn tsc_deadline_timer_via_wrmsr() {
    let mut a = CodeAssembler::new(32).unwrap();
    a.mov(dword_ptr(0xfee0_00f0u32), 0x1ff).unwrap();
    a.mov(dword_ptr(0xfee0_0320u32), 0x4_0042).unwrap();
    a.rdtsc().unwrap();
    a.add(eax, 5000).unwrap();
    a.adc(edx, 0).unwrap();
    a.mov(ecx, 0x6e0).unwrap();
    a.wrmsr().unwrap();
    a.sti().unwrap();
    a.hlt().unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let (mut m, clock, chip) = machine(&code);
    assert_eq!(m.run(1000), Stop::Halt);
    assert_eq!(count(&m), 0);
    let next = chip.lock().unwrap().poll_timers().unwrap();
    assert!(next <= 5000 + m.cpu.tsc_offset.unsigned_abs(), "{next}");
    clock.set_ns(next);
    chip.lock().unwrap().poll_timers();
    assert_eq!(m.run(1000), Stop::Halt);
    assert_eq!(count(&m), 1);
}
