//! Interpreter and translated-code throughput on the instruction mixes that dominate a Linux boot (big-number
//! arithmetic: multiplies, adds with carry, shifts) and compression (byte loads and compares).
//! Prints guest instructions per second; run with `cargo bench -p vireo-emu --bench interp`.

use iced_x86::code_asm::*;
use std::time::Instant;
use vireo_emu::cpu::run::Stop;
use vireo_emu::testutil::{TestMachine, DATA};

fn alu_loop(a: &mut CodeAssembler, iterations: u64) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(rcx, iterations)?;
    a.mov(r9, 0x1234_5678u64)?;
    a.mov(r10, 0x9abc_def0u64)?;
    a.set_label(&mut top)?;
    a.mov(rax, rcx)?;
    a.imul_2(rax, r9)?;
    a.mov(rdx, rax)?;
    a.shr(rdx, 32)?;
    a.imul_2(rdx, r10)?;
    a.add(rsi, rax)?;
    a.adc(rdi, rdx)?;
    a.mov(r8d, eax)?;
    a.cmp(rdx, rax)?;
    a.cmovae(rdx, r8)?;
    a.dec(rcx)?;
    a.jne(top)?;
    Ok(())
}

fn mem_loop(a: &mut CodeAssembler, iterations: u64) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(rcx, iterations)?;
    a.mov(rbx, DATA)?;
    a.set_label(&mut top)?;
    a.mov(rax, rcx)?;
    a.and(rax, 0xffff)?;
    a.movzx(edx, byte_ptr(rbx + rax))?;
    a.movzx(r8d, byte_ptr(rbx + rax + 1))?;
    let mut next = a.create_label();
    a.cmp(edx, r8d)?;
    a.jne(next)?; // a conditional branch to the next instruction, as compare loops have
    a.set_label(&mut next)?;
    a.nop()?;
    a.add(dword_ptr(rbx + rax * 4 + 0x10000), edx)?;
    a.mov(qword_ptr(rbx + 0x80000), rcx)?;
    a.dec(rcx)?;
    a.jne(top)?;
    Ok(())
}

fn bench(name: &str, build: fn(&mut CodeAssembler, u64) -> Result<(), IcedError>, jit: bool) {
    let mut a = CodeAssembler::new(64).expect("assembler");
    build(&mut a, 3_000_000).expect("assemble loop");
    a.hlt().expect("hlt");
    let code = a.assemble(vireo_emu::testutil::CODE).expect("assemble");
    let mut m = TestMachine::new64(&code);
    m.cpu.jit.on = jit;
    let t = Instant::now();
    let mut stop = Stop::Budget;
    while stop == Stop::Budget {
        stop = m.run(1 << 20);
    }
    let secs = t.elapsed().as_secs_f64();
    assert_eq!(stop, Stop::Halt);
    let n = m.cpu.icount;
    println!(
        "{name:>10} {}: {:>6.1} M instructions in {secs:.3} s = {:>6.1} MIPS",
        if jit { "translated " } else { "interpreted" },
        n as f64 / 1e6,
        n as f64 / secs / 1e6
    );
}

fn main() {
    for jit in [false, true] {
        bench("alu", alu_loop, jit);
        bench("memory", mem_loop, jit);
    }
}
