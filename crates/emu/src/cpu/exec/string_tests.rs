use crate::cpu::flags::{DF, IOPL};
use crate::cpu::io::{IoAccess, IoKind};
use crate::cpu::run::Stop;
use crate::cpu::{Exception, Fault, R};
use crate::testutil::{TestMachine, CODE, DATA, PML4};
use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions};

type T = Result<(), IcedError>;

const RCX: usize = 1;
const RSI: usize = 6;
const RDI: usize = 7;

fn asm64(f: impl FnOnce(&mut CodeAssembler) -> T) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    f(&mut a).unwrap();
    a.hlt().unwrap();
    a.assemble(CODE).unwrap()
}

/// Runs one instruction (given as bytes, at the current RIP) through its handler.
fn step(m: &mut TestMachine, bytes: &[u8]) -> R {
    let mut d = Decoder::with_ip(m.cpu.code_bits, bytes, m.cpu.rip, DecoderOptions::NONE);
    let ins = d.decode();
    m.cpu.next_rip = ins.next_ip();
    let h = crate::cpu::exec::resolve(&ins);
    h(&mut m.cpu, &ins)
}

fn bytes(m: &TestMachine, a: u64, n: usize) -> Vec<u8> {
    m.ram()[a as usize..a as usize + n].to_vec()
}

fn set_df(m: &mut TestMachine) {
    m.cpu.flags.set_bit(DF, true);
}

#[test]
fn movs_single_both_directions() {
    let code = asm64(|a| a.movsb());
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"xyz");
    m.cpu.gpr[RSI] = DATA + 1;
    m.cpu.gpr[RDI] = DATA + 0x100;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, DATA + 0x100, 2), b"y\0");
    assert_eq!((m.cpu.gpr[RSI], m.cpu.gpr[RDI]), (DATA + 2, DATA + 0x101));

    let code = asm64(|a| a.movsd());
    let mut m = TestMachine::new64(&code);
    set_df(&mut m);
    m.load(DATA, &0x1122_3344u32.to_le_bytes());
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RDI] = DATA + 0x100;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, DATA + 0x100, 4), 0x1122_3344u32.to_le_bytes());
    assert_eq!((m.cpu.gpr[RSI], m.cpu.gpr[RDI]), (DATA - 4, DATA + 0xfc));
}

#[test]
fn rep_movs_forward_and_backward() {
    let src: Vec<u8> = (0..64u8).collect();
    // Forward, words.
    let code = asm64(|a| a.rep().movsw());
    let mut m = TestMachine::new64(&code);
    m.load(DATA, &src);
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RDI] = DATA + 0x1000;
    m.cpu.gpr[RCX] = 32;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, DATA + 0x1000, 64), src);
    assert_eq!(m.cpu.gpr[RCX], 0);
    assert_eq!(m.cpu.gpr[RSI], DATA + 64);
    // Backward, qwords: start at the last element.
    let code = asm64(|a| a.rep().movsq());
    let mut m = TestMachine::new64(&code);
    set_df(&mut m);
    m.load(DATA, &src);
    m.cpu.gpr[RSI] = DATA + 56;
    m.cpu.gpr[RDI] = DATA + 0x1000 + 56;
    m.cpu.gpr[RCX] = 8;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, DATA + 0x1000, 64), src);
    assert_eq!(m.cpu.gpr[RSI], DATA - 8);
    assert_eq!(m.cpu.gpr[RDI], DATA + 0x1000 - 8);
}

#[test]
fn rep_with_zero_count_does_nothing() {
    for code in [
        asm64(|a| a.rep().movsb()),
        asm64(|a| a.rep().stosq()),
        asm64(|a| a.repe().cmpsb()),
        asm64(|a| a.repne().scasb()),
        asm64(|a| a.rep().lodsb()),
    ] {
        let mut m = TestMachine::new64(&code);
        m.cpu.gpr[RSI] = DATA;
        m.cpu.gpr[RDI] = DATA + 0x100;
        m.cpu.gpr[0] = 0x55;
        m.cpu.flags.set_sub(1, 2, false, u64::MAX, 64);
        let before = m.cpu.flags.get();
        assert_eq!(m.run(10), Stop::Halt);
        assert_eq!(m.cpu.gpr[RSI], DATA);
        assert_eq!(m.cpu.gpr[RDI], DATA + 0x100);
        assert_eq!(m.cpu.gpr[0], 0x55);
        assert_eq!(m.cpu.flags.get(), before);
        assert_eq!(m.ram()[DATA as usize + 0x100], 0);
    }
}

#[test]
fn repe_cmps_stops_at_mismatch() {
    let code = asm64(|a| a.repe().cmpsb());
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"abcXef");
    m.load(DATA + 0x100, b"abcYef");
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RDI] = DATA + 0x100;
    m.cpu.gpr[RCX] = 10;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[RCX], 6);
    assert_eq!(m.cpu.gpr[RSI], DATA + 4);
    assert_eq!(m.cpu.gpr[RDI], DATA + 0x104);
    assert!(!m.cpu.flags.zf());
    assert!(m.cpu.flags.cf()); // 'X' < 'Y'

    // All equal: runs out of count with ZF set.
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"abc");
    m.load(DATA + 0x100, b"abc");
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RDI] = DATA + 0x100;
    m.cpu.gpr[RCX] = 3;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[RCX], 0);
    assert!(m.cpu.flags.zf());

    // CMPSD backward with REPNE: stops at the first equal dword.
    let code = asm64(|a| a.repne().cmpsd());
    let mut m = TestMachine::new64(&code);
    set_df(&mut m);
    let a: Vec<u8> = [1u32, 2, 3, 4]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let b: Vec<u8> = [1u32, 9, 9, 9]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    m.load(DATA, &a);
    m.load(DATA + 0x100, &b);
    m.cpu.gpr[RSI] = DATA + 12;
    m.cpu.gpr[RDI] = DATA + 0x10c;
    m.cpu.gpr[RCX] = 100;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[RCX], 96);
    assert_eq!(m.cpu.gpr[RSI], DATA - 4);
    assert!(m.cpu.flags.zf());
}

#[test]
fn scas_and_lods() {
    // REPNE SCASB: strlen-like search for 0.
    let code = asm64(|a| a.repne().scasb());
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"hello\0");
    m.cpu.gpr[RDI] = DATA;
    m.cpu.gpr[RCX] = u64::MAX;
    m.cpu.gpr[0] = 0x1200;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[RDI], DATA + 6);
    assert_eq!(m.cpu.gpr[RCX], u64::MAX - 6);
    assert!(m.cpu.flags.zf());

    // SCASW backward.
    let code = asm64(|a| a.scasw());
    let mut m = TestMachine::new64(&code);
    set_df(&mut m);
    m.load(DATA, &[0x34, 0x12]);
    m.cpu.gpr[RDI] = DATA;
    m.cpu.gpr[0] = 0x1235;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[RDI], DATA - 2);
    assert!(!m.cpu.flags.zf() && !m.cpu.flags.cf());

    // LODSB merges into RAX; LODSD zero-extends; LODSQ backward.
    let code = asm64(|a| {
        a.lodsb()?;
        a.hlt()?;
        a.lodsd()?;
        a.hlt()?;
        a.std()?;
        a.lodsq()
    });
    let mut m = TestMachine::new64(&code);
    m.load(
        DATA,
        &[
            0xab, 0x11, 0x22, 0x33, 0x44, 0, 0, 0, 0, 0xee, 0, 0, 0, 0, 0, 0, 0x77,
        ],
    );
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[0] = 0xffff_ffff_ffff_ff00;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], 0xffff_ffff_ffff_ffab);
    m.cpu.halted = false;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], 0x4433_2211);
    assert_eq!(m.cpu.gpr[RSI], DATA + 5);
    // Without STD implemented by the system helper yet, set DF by hand.
    set_df(&mut m);
    m.cpu.rip += 1; // skip STD
    m.cpu.gpr[RSI] = DATA + 9;
    m.cpu.halted = false;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], 0x7700_0000_0000_00ee);
    assert_eq!(m.cpu.gpr[RSI], DATA + 1);
}

#[test]
fn stos_all_sizes_and_df() {
    let code = asm64(|a| {
        a.stosb()?;
        a.stosw()?;
        a.stosd()?;
        a.stosq()
    });
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = 0x8877_6655_4433_2211;
    m.cpu.gpr[RDI] = DATA;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(
        bytes(&m, DATA, 16),
        [
            0x11, 0x11, 0x22, 0x11, 0x22, 0x33, 0x44, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77,
            0x88, 0
        ]
    );
    assert_eq!(m.cpu.gpr[RDI], DATA + 15);

    let code = asm64(|a| a.rep().stosw());
    let mut m = TestMachine::new64(&code);
    set_df(&mut m);
    m.cpu.gpr[0] = 0xbeef;
    m.cpu.gpr[RDI] = DATA + 6;
    m.cpu.gpr[RCX] = 3;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(
        bytes(&m, DATA, 10),
        [0, 0, 0xef, 0xbe, 0xef, 0xbe, 0xef, 0xbe, 0, 0]
    );
    assert_eq!(m.cpu.gpr[RDI], DATA);
}

/// The element-wise forward copy the architecture defines.
fn reference_movs(mem: &mut [u8], src: usize, dst: usize, size: usize, count: usize) {
    for i in 0..count {
        let e = mem[src + i * size..src + (i + 1) * size].to_vec();
        mem[dst + i * size..dst + (i + 1) * size].copy_from_slice(&e);
    }
}

#[test]
fn overlapping_movs() {
    for (size, dist, count) in [
        (1usize, 1i64, 100usize),
        (1, 3, 20_000),
        (8, 8, 2_000),
        (8, 3, 2_000),
        (8, 4100, 3_000),
        (1, -1, 10_000),
        (8, -5, 3_000),
        (4, 0, 1_000),
    ] {
        let code = asm64(|a| match size {
            1 => a.rep().movsb(),
            4 => a.rep().movsd(),
            _ => a.rep().movsq(),
        });
        let mut m = TestMachine::new64(&code);
        let region = 0x10000 + count * size + 8;
        let pattern: Vec<u8> = (0..region).map(|i| (i * 7 + i / 251) as u8).collect();
        let base = DATA + 0x20000;
        m.load(base, &pattern);
        let src = base + 0x8000;
        let dst = (src as i64 + dist) as u64;
        m.cpu.gpr[RSI] = src;
        m.cpu.gpr[RDI] = dst;
        m.cpu.gpr[RCX] = count as u64;
        assert_eq!(m.run(1_000_000), Stop::Halt);
        let mut expect = pattern.clone();
        reference_movs(&mut expect, 0x8000, (0x8000 + dist) as usize, size, count);
        let got = bytes(&m, base, region);
        let bad = got.iter().zip(&expect).position(|(a, b)| a != b);
        assert_eq!(bad, None, "size {size} dist {dist}");
        assert_eq!(m.cpu.gpr[RCX], 0);
        assert_eq!(m.cpu.gpr[RSI], src + (count * size) as u64);
        assert_eq!(m.cpu.gpr[RDI], dst + (count * size) as u64);
    }
}

#[test]
fn rep_stosq_over_several_pages() {
    let code = asm64(|a| a.rep().stosq());
    let mut m = TestMachine::new64(&code);
    let n = 3 * 512 + 5;
    let dst = DATA + 4;
    m.load(DATA, &[0xcc; 4]);
    m.load(dst + n * 8, &[0xcc; 4]);
    m.cpu.gpr[0] = 0x0102_0304_0506_0708;
    m.cpu.gpr[RDI] = dst;
    m.cpu.gpr[RCX] = n;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[RCX], 0);
    assert_eq!(m.cpu.gpr[RDI], dst + n * 8);
    for i in 0..n {
        assert_eq!(
            m.read_u64(dst + i * 8),
            0x0102_0304_0506_0708,
            "element {i}"
        );
    }
    assert_eq!(bytes(&m, DATA, 4), [0xcc; 4]);
    assert_eq!(bytes(&m, dst + n * 8, 4), [0xcc; 4]);
}

#[test]
fn long_rep_yields_and_resumes() {
    let code = [0xf3, 0xaa, 0xf4]; // rep stosb; hlt
    let mut m = TestMachine::new64(&code);
    m.cpu.rip = CODE;
    m.cpu.gpr[0] = 0x5a;
    m.cpu.gpr[RDI] = DATA;
    m.cpu.gpr[RCX] = 1 << 20;
    assert_eq!(step(&mut m, &code), Ok(()));
    assert!(m.cpu.gpr[RCX] > 0 && m.cpu.gpr[RCX] < 1 << 20);
    assert_eq!(m.cpu.next_rip, CODE);
    assert!(m.cpu.end_block);
    let done = (1 << 20) - m.cpu.gpr[RCX];
    assert_eq!(m.cpu.gpr[RDI], DATA + done);

    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = 0x5a;
    m.cpu.gpr[RDI] = DATA;
    m.cpu.gpr[RCX] = 1 << 20;
    assert_eq!(m.run(10_000), Stop::Halt);
    assert_eq!(m.cpu.gpr[RCX], 0);
    assert!(bytes(&m, DATA, 1 << 20).iter().all(|&b| b == 0x5a));
    assert_eq!(m.ram()[(DATA + (1 << 20)) as usize], 0);
}

#[test]
fn address_size_32_in_long_mode() {
    // 67 F3 AA: rep stosb with EDI/ECX.
    let code = [0x67, 0xf3, 0xaa, 0xf4];
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = 0x77;
    m.cpu.gpr[RDI] = 0xffff_ffff_0000_0000 | DATA;
    m.cpu.gpr[RCX] = 0x1_0000_0003;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, DATA, 4), [0x77, 0x77, 0x77, 0]);
    assert_eq!(m.cpu.gpr[RDI], DATA + 3);
    assert_eq!(m.cpu.gpr[RCX], 0);

    // 67 A4: movsb with ESI/EDI.
    let code = [0x67, 0xa4, 0xf4];
    let mut m = TestMachine::new64(&code);
    m.load(DATA, &[0x42]);
    m.cpu.gpr[RSI] = 0x5_0000_0000 | DATA;
    m.cpu.gpr[RDI] = 0x5_0000_0000 | (DATA + 8);
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.ram()[DATA as usize + 8], 0x42);
    assert_eq!((m.cpu.gpr[RSI], m.cpu.gpr[RDI]), (DATA + 1, DATA + 9));
}

#[test]
fn address_size_16_in_32bit_mode() {
    // 67 F3 AA in 32-bit code: rep stosb with DI/CX, DI wraps at 64 KiB.
    let code = [0x67, 0xf3, 0xaa, 0xf4];
    let mut m = TestMachine::new32(&code);
    m.cpu.gpr[0] = 0x99;
    m.cpu.gpr[RDI] = 0x1234_fffe;
    m.cpu.gpr[RCX] = 0xabcd_0004;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, 0xfffe, 2), [0x99, 0x99]);
    assert_eq!(bytes(&m, 0, 2), [0x99, 0x99]);
    assert_eq!(m.cpu.gpr[RDI], 0x1234_0002);
    assert_eq!(m.cpu.gpr[RCX], 0xabcd_0000);

    // Plain 32-bit rep movsd.
    let code = [0xf3, 0xa5, 0xf4];
    let mut m = TestMachine::new32(&code);
    m.load(DATA, &[1, 2, 3, 4, 5, 6, 7, 8]);
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RDI] = DATA + 0x40;
    m.cpu.gpr[RCX] = 2;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(bytes(&m, DATA + 0x40, 8), [1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(m.cpu.gpr[RDI], DATA + 0x48);
}

#[test]
fn segment_override_on_source() {
    // 64-bit: FS-based source (64 A4: movsb fs:[rsi]).
    let code = [0x64, 0xa4, 0xf4];
    let mut m = TestMachine::new64(&code);
    m.cpu.seg[crate::cpu::Seg::Fs as usize].base = 0x1000;
    m.load(DATA + 0x1000, &[0x3c]);
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RDI] = DATA + 0x10;
    assert_eq!(m.run(10), Stop::Halt);
    assert_eq!(m.ram()[DATA as usize + 0x10], 0x3c);
}

/// Makes the 2 MiB page at 4 MiB not present.
fn unmap_4m(m: &mut TestMachine) {
    m.load(PML4 + 0x2000 + 2 * 8, &0u64.to_le_bytes());
    m.cpu.mem.flush_all();
}

#[test]
fn fault_mid_rep_keeps_completed_iterations() {
    const HOLE: u64 = 4 << 20;
    // Slow path: rep stosb, ten bytes before the hole.
    let mut m = TestMachine::new64(&[]);
    unmap_4m(&mut m);
    m.cpu.rip = CODE;
    m.cpu.gpr[RDI] = HOLE - 10;
    m.cpu.gpr[RCX] = 20;
    m.cpu.gpr[0] = 0x11;
    let r = step(&mut m, &[0xf3, 0xaa]);
    assert!(matches!(r, Err(Fault::Ex(e)) if e.vector == Exception::PF));
    assert_eq!(m.cpu.cr2, HOLE);
    assert_eq!(m.cpu.gpr[RCX], 10);
    assert_eq!(m.cpu.gpr[RDI], HOLE);
    assert_eq!(bytes(&m, HOLE - 10, 10), [0x11; 10]);

    // Fast path: rep stosq over two pages, then the hole.
    let mut m = TestMachine::new64(&[]);
    unmap_4m(&mut m);
    m.cpu.rip = CODE;
    m.cpu.gpr[RDI] = HOLE - 0x2000;
    m.cpu.gpr[RCX] = 0x1000;
    let r = step(&mut m, &[0xf3, 0x48, 0xab]);
    assert!(matches!(r, Err(Fault::Ex(e)) if e.vector == Exception::PF));
    assert_eq!(m.cpu.gpr[RCX], 0xc00);
    assert_eq!(m.cpu.gpr[RDI], HOLE);

    // MOVS with the source in the hole: nothing done.
    let mut m = TestMachine::new64(&[]);
    unmap_4m(&mut m);
    m.cpu.rip = CODE;
    m.cpu.gpr[RSI] = HOLE;
    m.cpu.gpr[RDI] = DATA;
    m.cpu.gpr[RCX] = 0x100;
    let r = step(&mut m, &[0xf3, 0x48, 0xa5]);
    assert!(matches!(r, Err(Fault::Ex(e)) if e.vector == Exception::PF && e.error == Some(0)));
    assert_eq!(m.cpu.gpr[RCX], 0x100);
    assert_eq!(m.cpu.gpr[RSI], HOLE);
}

#[test]
fn rep_stos_over_own_code_invalidates_it() {
    // rep stosb; 80 x nop; hlt. The stosb turns the nops into HLTs.
    let mut code = vec![0xf3, 0xaa];
    code.extend([0x90; 80]);
    code.push(0xf4);
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = 0xf4;
    m.cpu.gpr[RDI] = CODE + 2;
    m.cpu.gpr[RCX] = 80;
    assert_eq!(m.run(1000), Stop::Halt);
    assert_eq!(m.cpu.rip, CODE + 3);
}

fn pio(port: u64, data: &[u8]) -> IoAccess {
    let mut d = [0u8; 8];
    d[..data.len()].copy_from_slice(data);
    IoAccess {
        kind: IoKind::Pio,
        addr: port,
        len: data.len(),
        data: d,
    }
}

#[test]
fn out_and_in_exit_to_the_vmm() -> T {
    let code = asm64(|a| {
        a.out(0x80, al)?;
        a.out(dx, eax)?;
        a.in_(al, dx)?;
        a.in_(eax, 0x71)
    });
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[0] = 0xffff_ffff_1122_3344;
    m.cpu.gpr[2] = 0x3f8;
    assert_eq!(m.run(100), Stop::Io);
    assert_eq!(m.cpu.io.writes.pop_front(), Some(pio(0x80, &[0x44])));
    assert!(m.cpu.io.writes.is_empty());
    assert_eq!(m.run(100), Stop::Io);
    assert_eq!(
        m.cpu.io.writes.pop_front(),
        Some(pio(0x3f8, &[0x44, 0x33, 0x22, 0x11]))
    );
    assert_eq!(m.run(100), Stop::Io);
    assert_eq!(m.cpu.io.pending_read, Some(pio(0x3f8, &[0])));
    let rip = m.cpu.rip;
    m.cpu.io.complete_read(&[0x5a]);
    assert_eq!(m.run(100), Stop::Io);
    assert_eq!(m.cpu.gpr[0], 0xffff_ffff_1122_335a);
    assert!(m.cpu.rip > rip);
    assert_eq!(m.cpu.io.pending_read, Some(pio(0x71, &[0, 0, 0, 0])));
    m.cpu.io.complete_read(&[1, 2, 3, 4]);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], 0x0403_0201);
    Ok(())
}

#[test]
fn rep_outs_pauses_after_each_queued_write() {
    let code = asm64(|a| a.rep().outsb());
    let mut m = TestMachine::new64(&code);
    m.load(DATA, b"abc");
    m.cpu.gpr[RSI] = DATA;
    m.cpu.gpr[RCX] = 3;
    m.cpu.gpr[2] = 0xe9;
    for (i, c) in b"abc".iter().enumerate() {
        assert_eq!(m.run(100), Stop::Io);
        assert_eq!(m.cpu.io.writes.pop_front(), Some(pio(0xe9, &[*c])));
        assert!(m.cpu.io.writes.is_empty());
        assert_eq!(m.cpu.gpr[RCX], 2 - i as u64);
        if i < 2 {
            assert_eq!(m.cpu.rip, CODE);
        }
    }
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[RSI], DATA + 3);
}

#[test]
fn rep_ins_replays_each_iteration() {
    let code = asm64(|a| a.rep().insw());
    let mut m = TestMachine::new64(&code);
    m.cpu.gpr[RDI] = DATA;
    m.cpu.gpr[RCX] = 3;
    m.cpu.gpr[2] = 0x1f0;
    for i in 0..3u64 {
        assert_eq!(m.run(100), Stop::Io);
        assert_eq!(m.cpu.io.pending_read, Some(pio(0x1f0, &[0, 0])));
        assert_eq!(m.cpu.gpr[RCX], 3 - i);
        assert_eq!(m.cpu.gpr[RDI], DATA + 2 * i);
        assert_eq!(m.cpu.rip, CODE);
        m.cpu.io.complete_read(&[i as u8 + 1, 0xa0]);
    }
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(bytes(&m, DATA, 7), [1, 0xa0, 2, 0xa0, 3, 0xa0, 0]);
    assert_eq!(m.cpu.gpr[RCX], 0);
}

#[test]
fn io_needs_iopl_in_protected_mode() {
    let mut m = TestMachine::new64(&[]);
    m.cpu.rip = CODE;
    m.cpu.cpl = 3;
    let gp = Err(Fault::Ex(Exception::gp0()));
    assert_eq!(step(&mut m, &[0xe6, 0x80]), gp); // out 0x80, al
    assert_eq!(step(&mut m, &[0xec]), gp); // in al, dx
    assert_eq!(step(&mut m, &[0x6e]), gp); // outsb
    assert_eq!(step(&mut m, &[0x6c]), gp); // insb
    assert!(m.cpu.io.writes.is_empty());
    let f = m.cpu.flags.get();
    m.cpu.flags.set(f | IOPL);
    assert_eq!(step(&mut m, &[0xe6, 0x80]), Ok(()));
    assert_eq!(m.cpu.io.writes.len(), 1);
}
