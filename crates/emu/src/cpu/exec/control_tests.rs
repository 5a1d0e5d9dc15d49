use crate::cpu::run::Stop;
use crate::cpu::{Exception, Fault, R};
use crate::testutil::{TestMachine, CODE, DATA, STACK};
use iced_x86::code_asm::*;
use iced_x86::{BlockEncoderOptions, Decoder, DecoderOptions};

type T = Result<(), IcedError>;

/// Assembles `a` at CODE and returns the code and the address of each label.
fn asm(mut a: CodeAssembler, labels: &[CodeLabel]) -> (Vec<u8>, Vec<u64>) {
    let r = a
        .assemble_options(CODE, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .unwrap();
    let ips = labels.iter().map(|l| r.label_ip(l).unwrap()).collect();
    (r.inner.code_buffer, ips)
}

/// Runs one instruction (given as bytes, at the current RIP) through its handler.
fn step(m: &mut TestMachine, bytes: &[u8]) -> R {
    let mut d = Decoder::with_ip(m.cpu.code_bits, bytes, m.cpu.rip, DecoderOptions::NONE);
    let ins = d.decode();
    m.cpu.next_rip = ins.next_ip();
    let h = crate::cpu::exec::resolve(&ins);
    h(&mut m.cpu, &ins)
}

#[test]
fn jmp_forward_and_jcc() -> T {
    let mut a = CodeAssembler::new(64)?;
    let mut skip = a.create_label();
    let mut eq = a.create_label();
    let mut ne_path = a.create_label();
    a.jmp(skip)?;
    a.hlt()?;
    a.set_label(&mut skip)?;
    a.je(eq)?;
    a.set_label(&mut ne_path)?;
    a.hlt()?;
    a.set_label(&mut eq)?;
    a.hlt()?;
    let (code, ips) = asm(a, &[ne_path, eq]);

    let mut m = TestMachine::new64(&code);
    m.cpu.flags.set_sub(5, 5, false, 0, 64);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, ips[1] + 1);

    let mut m = TestMachine::new64(&code);
    m.cpu.flags.set_sub(5, 4, false, 1, 64);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, ips[0] + 1);
    Ok(())
}

#[test]
fn backward_loop_counts() -> T {
    let mut a = CodeAssembler::new(64)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    a.stosb()?;
    a.loop_(top)?;
    a.hlt()?;
    let (code, _) = asm(a, &[]);
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[1] = 5;
    m.cpu.gpr[0] = 0xaa;
    m.cpu.gpr[7] = DATA;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[1], 0);
    assert_eq!(m.cpu.gpr[7], DATA + 5);
    assert_eq!(
        &m.ram()[DATA as usize..DATA as usize + 6],
        &[0xaa, 0xaa, 0xaa, 0xaa, 0xaa, 0]
    );
    Ok(())
}

#[test]
fn loope_and_loopne() -> T {
    // LOOPE: scan while equal.
    let mut a = CodeAssembler::new(64)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    a.scasb()?;
    a.loope(top)?;
    a.hlt()?;
    let (code, _) = asm(a, &[]);
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"aaab");
    m.cpu.gpr[1] = 10;
    m.cpu.gpr[0] = u64::from(b'a');
    m.cpu.gpr[7] = DATA;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[1], 6);
    assert_eq!(m.cpu.gpr[7], DATA + 4);
    assert!(!m.cpu.flags.zf());

    // LOOPNE: scan until equal.
    let mut a = CodeAssembler::new(64)?;
    let mut top = a.create_label();
    a.set_label(&mut top)?;
    a.scasb()?;
    a.loopne(top)?;
    a.hlt()?;
    let (code, _) = asm(a, &[]);
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"xyzb");
    m.cpu.gpr[1] = 10;
    m.cpu.gpr[0] = u64::from(b'b');
    m.cpu.gpr[7] = DATA;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[1], 6);
    assert_eq!(m.cpu.gpr[7], DATA + 4);
    assert!(m.cpu.flags.zf());
    Ok(())
}

#[test]
fn loop_with_ecx_counter() {
    // 67 E2 FD: loop (ECX) back to itself... use a stosb body: AA 67 E2 FC; F4.
    let code = [0xaa, 0x67, 0xe2, 0xfc, 0xf4];
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[1] = 0xffff_ffff_0000_0003;
    m.cpu.gpr[7] = DATA;
    assert_eq!(m.run(100), Stop::Halt);
    // ECX counted 3 -> 0; writing ECX zero-extends RCX.
    assert_eq!(m.cpu.gpr[1], 0);
    assert_eq!(m.cpu.gpr[7], DATA + 3);
}

#[test]
fn jrcxz_and_jecxz() {
    // jrcxz +1; hlt; hlt
    let code = [0xe3, 0x01, 0xf4, 0xf4];
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[1] = 1 << 32;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.rip, CODE + 3);
    // jecxz +1 (67 E3 01)
    let code = [0x67, 0xe3, 0x01, 0xf4, 0xf4];
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[1] = 1 << 32;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.rip, CODE + 5);
    // jecxz in 32-bit code; jcxz (67 E3) there tests CX.
    let code = [0x67, 0xe3, 0x01, 0xf4, 0xf4];
    let mut m = TestMachine::new32(&code);
    m.cpu.gpr[1] = 0x1_0000;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.rip, CODE + 5);
}

#[test]
fn call_ret_stack() -> T {
    let mut a = CodeAssembler::new(64)?;
    let mut f = a.create_label();
    let mut after = a.create_label();
    a.call(f)?;
    a.set_label(&mut after)?;
    a.hlt()?;
    a.set_label(&mut f)?;
    a.hlt()?;
    a.ret()?;
    let (code, ips) = asm(a, &[after, f]);
    let mut m = TestMachine::new64(&code);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, ips[1] + 1);
    assert_eq!(m.cpu.gpr[4], STACK - 8);
    assert_eq!(m.read_u64(STACK - 8), ips[0]);
    m.cpu.halted = false;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, ips[0] + 1);
    assert_eq!(m.cpu.gpr[4], STACK);
    Ok(())
}

#[test]
fn call_indirect_and_ret_imm() -> T {
    let mut a = CodeAssembler::new(64)?;
    let mut f = a.create_label();
    let mut g = a.create_label();
    let mut after = a.create_label();
    a.call(rax)?;
    a.call(qword_ptr(rbx))?;
    a.set_label(&mut after)?;
    a.hlt()?;
    a.set_label(&mut f)?;
    a.ret()?;
    a.set_label(&mut g)?;
    a.ret_1(16)?;
    let (code, ips) = asm(a, &[f, g, after]);
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = ips[0];
    m.cpu.gpr[3] = DATA;
    m.load(DATA, &ips[1].to_le_bytes());
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.rip, ips[2] + 1);
    assert_eq!(m.cpu.gpr[4], STACK + 16);
    Ok(())
}

#[test]
fn call_ret_32bit() -> T {
    let mut a = CodeAssembler::new(32)?;
    let mut f = a.create_label();
    let mut after = a.create_label();
    a.call(f)?;
    a.set_label(&mut after)?;
    a.hlt()?;
    a.set_label(&mut f)?;
    a.hlt()?;
    a.ret_1(4)?;
    let (code, ips) = asm(a, &[after]);
    let mut m = TestMachine::new32(&code);
    m.load(STACK - 8, &[0xee; 8]);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[4], STACK - 4);
    assert_eq!(m.read_u64(STACK - 8), (ips[0] << 32) | 0xeeee_eeee);
    m.cpu.halted = false;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[4], STACK + 4);
    assert_eq!(m.cpu.rip, ips[0] + 1);
    Ok(())
}

#[test]
fn enter_leave_level0() -> T {
    let mut a = CodeAssembler::new(64)?;
    a.enter(32u32, 0u32)?;
    a.hlt()?;
    a.leave()?;
    a.hlt()?;
    let (code, _) = asm(a, &[]);
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[5] = 0x1234_5678_9abc;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[5], STACK - 8);
    assert_eq!(m.cpu.gpr[4], STACK - 8 - 32);
    assert_eq!(m.read_u64(STACK - 8), 0x1234_5678_9abc);
    m.cpu.halted = false;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[5], 0x1234_5678_9abc);
    assert_eq!(m.cpu.gpr[4], STACK);
    Ok(())
}

#[test]
fn enter_nested() -> T {
    let mut a = CodeAssembler::new(64)?;
    a.enter(16u32, 3u32)?;
    a.hlt()?;
    let (code, _) = asm(a, &[]);
    let mut m = TestMachine::new64(&code);
    let old_bp = DATA + 0x100;
    m.cpu.gpr[5] = old_bp;
    m.load(old_bp - 8, &0x1111u64.to_le_bytes());
    m.load(old_bp - 16, &0x2222u64.to_le_bytes());
    assert_eq!(m.run(100), Stop::Halt);
    let frame = STACK - 8;
    assert_eq!(m.read_u64(STACK - 8), old_bp);
    assert_eq!(m.read_u64(STACK - 16), 0x1111);
    assert_eq!(m.read_u64(STACK - 24), 0x2222);
    assert_eq!(m.read_u64(STACK - 32), frame);
    assert_eq!(m.cpu.gpr[5], frame);
    assert_eq!(m.cpu.gpr[4], STACK - 32 - 16);
    Ok(())
}

#[test]
fn enter_leave_32bit_nested() -> T {
    let mut a = CodeAssembler::new(32)?;
    a.enter(8u32, 2u32)?;
    a.hlt()?;
    a.leave()?;
    a.hlt()?;
    let (code, _) = asm(a, &[]);
    let mut m = TestMachine::new32(&code);
    let old_bp = DATA + 0x100;
    m.cpu.gpr[5] = old_bp;
    m.load(old_bp - 4, &0x4444u32.to_le_bytes());
    assert_eq!(m.run(100), Stop::Halt);
    let frame = STACK - 4;
    let rd = |m: &TestMachine, a: u64| m.read_u64(a) & 0xffff_ffff;
    assert_eq!(rd(&m, STACK - 4), old_bp);
    assert_eq!(rd(&m, STACK - 8), 0x4444);
    assert_eq!(rd(&m, STACK - 12), frame);
    assert_eq!(m.cpu.gpr[5], frame);
    assert_eq!(m.cpu.gpr[4], STACK - 12 - 8);
    m.cpu.halted = false;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[5], old_bp);
    assert_eq!(m.cpu.gpr[4], STACK);
    Ok(())
}

#[test]
fn non_canonical_targets_fault_without_side_effects() {
    let mut m = TestMachine::new64(&[]);
    m.cpu.rip = CODE;
    // jmp rax
    m.cpu.gpr[0] = 0x8000_0000_0000_0000;
    assert_eq!(
        step(&mut m, &[0xff, 0xe0]),
        Err(Fault::Ex(Exception::gp0()))
    );
    // call rax: nothing pushed
    assert_eq!(
        step(&mut m, &[0xff, 0xd0]),
        Err(Fault::Ex(Exception::gp0()))
    );
    assert_eq!(m.cpu.gpr[4], STACK);
    // ret with a non-canonical address on the stack: RSP unchanged
    m.cpu.gpr[4] = STACK - 8;
    m.load(STACK - 8, &0x0000_8000_0000_0000u64.to_le_bytes());
    assert_eq!(step(&mut m, &[0xc3]), Err(Fault::Ex(Exception::gp0())));
    assert_eq!(m.cpu.gpr[4], STACK - 8);
    // a canonical high-half target is fine
    m.cpu.gpr[0] = 0xffff_8000_0000_1000;
    assert_eq!(step(&mut m, &[0xff, 0xe0]), Ok(()));
    assert_eq!(m.cpu.next_rip, 0xffff_8000_0000_1000);
}

#[test]
fn sixteen_bit_operand_wraps_target() {
    // 32-bit code, jmp ax (66 FF E0): EIP = AX.
    let mut m = TestMachine::new32(&[]);
    m.cpu.rip = CODE;
    m.cpu.gpr[0] = 0x1234_5678;
    assert_eq!(step(&mut m, &[0x66, 0xff, 0xe0]), Ok(()));
    assert_eq!(m.cpu.next_rip, 0x5678);
    // call with 16-bit operand size pushes 2 bytes.
    assert_eq!(step(&mut m, &[0x66, 0xff, 0xd0]), Ok(()));
    assert_eq!(m.cpu.gpr[4], STACK - 2);
}
