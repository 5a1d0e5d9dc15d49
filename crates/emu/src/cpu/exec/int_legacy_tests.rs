//! Unit tests of the legacy 32-bit instructions (BCD adjustments, PUSHA/POPA, BOUND), with
//! results worked out from the SDM pseudo-code.

use crate::cpu::flags::{AF, CF, PF, SF, ZF};
use crate::cpu::run::Stop;
use crate::testutil::{TestMachine, DATA, STACK};

const HLT: u8 = 0xf4;

/// Runs `code` (then HLT) in 32-bit mode from EAX = `eax` and the arithmetic flags `flags`;
/// returns (EAX, arithmetic flags).
fn run(code: &[u8], eax: u64, flags: u64) -> (u64, u64) {
    let mut c = code.to_vec();
    c.push(HLT);
    let mut m = TestMachine::new32(&c);
    m.cpu.gpr[0] = eax;
    m.cpu.flags.set_arith(flags);
    assert_eq!(m.run(100), Stop::Halt);
    (m.cpu.gpr[0], m.cpu.flags.arith())
}

#[test]
fn aaa_aas() {
    // AL=0xFA: low nibble > 9, AX += 0x106 (carrying into AH), AL &= 0xF.
    assert_eq!(run(&[0x37], 0x1234_00fa, 0).0, 0x1234_0200);
    assert_eq!(run(&[0x37], 0x1234_00fa, 0).1 & (CF | AF), CF | AF);
    // AL=0x05, AF clear: no adjustment, AL &= 0xF; CF=AF=0.
    assert_eq!(run(&[0x37], 0x0135, AF | CF).0, 0x020b);
    let (v, f) = run(&[0x37], 0x0135, 0);
    assert_eq!((v, f & (CF | AF)), (0x0105, 0));
    // AAS: AL=0x0B: AX -= 6, AH -= 1 -> AX = 0x0205 - ... = 0x0105 & 0xff0f.
    let (v, f) = run(&[0x3f], 0x020b, 0);
    assert_eq!((v, f & (CF | AF)), (0x0105, CF | AF));
    // AL=0x02 with AF: AX=0x0302 - 6 = 0x02fc, AH -= 1 -> 0x01fc, AL &= 0xF -> 0x010c.
    let (v, _) = run(&[0x3f], 0x0302, AF);
    assert_eq!(v, 0x010c);
}

#[test]
fn daa_das() {
    // 0x9A: +6 = 0xA0 (AF), old AL > 0x99: +0x60 = 0x00 (CF), ZF.
    let (v, f) = run(&[0x27], 0x9a, 0);
    assert_eq!(v, 0);
    assert_eq!(f & (CF | AF | ZF | SF), CF | AF | ZF);
    // 0x15 + AF: 0x1b, no CF.
    let (v, f) = run(&[0x27], 0x15, AF);
    assert_eq!((v, f & (CF | AF)), (0x1b, AF));
    // 0x45 with CF: 0xa5, CF, SF.
    let (v, f) = run(&[0x27], 0x45, CF);
    assert_eq!((v, f & (CF | AF | SF)), (0xa5, CF | SF));
    // DAS: 0x03 with AF: borrow from AL-6 sets CF; 0xfd, old AL <= 0x99, no second step.
    let (v, f) = run(&[0x2f], 0x03, AF);
    assert_eq!((v, f & (CF | AF)), (0xfd, CF | AF));
    // 0xff with CF|AF: -6 = 0xf9, -0x60 = 0x99, CF, AF.
    let (v, f) = run(&[0x2f], 0xffff, CF | AF);
    assert_eq!((v, f & (CF | AF | SF)), (0xff99, CF | AF | SF));
    // 0x20: nothing to adjust.
    let (v, f) = run(&[0x2f], 0x20, 0);
    assert_eq!((v, f & (CF | AF)), (0x20, 0));
}

#[test]
fn aam_aad() {
    // aam 0x1f on AL=0x21: AH=1, AL=2.
    let (v, f) = run(&[0xd4, 0x1f], 0xffff_0021, 0);
    assert_eq!(v, 0xffff_0102);
    assert_eq!(f & (ZF | SF | PF), 0);
    // aam 10 on AL=0x00 with a nonzero upper EAX: ZF from AL only.
    let (v, f) = run(&[0xd4, 0x0a], 0x0001_0000, 0);
    assert_eq!((v, f & (ZF | PF)), (0x0001_0000, ZF | PF));
    // aad 0x15, EAX=0x28d750f1: AL = 0xf1 + 0x50 * 0x15 = 0x81; SF from AL.
    let (v, f) = run(&[0xd5, 0x15], 0x28d7_50f1, 0);
    assert_eq!((v, f & (ZF | SF | PF)), (0x28d7_0081, SF | PF));
    // aam 0: #DE (no IDT here, so the CPU shuts down) and EAX is unchanged.
    let mut m = TestMachine::new32(&[0xd4, 0x00, HLT]);
    m.cpu.gpr[0] = 0x55;
    assert_eq!(m.run(100), Stop::Shutdown);
    assert_eq!(m.cpu.gpr[0], 0x55);
}

#[test]
fn pushad_popad() {
    // pushad; mov dword [esp+12], 0 (the saved ESP); xor eax..edi; popad.
    let code = [
        0x60, // pushad
        0xc7, 0x44, 0x24, 0x0c, 0, 0, 0, 0, // mov dword [esp+12], 0
        0x31, 0xc0, 0x31, 0xc9, 0x31, 0xd2, 0x31, 0xdb, 0x31, 0xed, 0x31, 0xf6, 0x31,
        0xff, // xor all but esp
        0x61, // popad
        HLT,
    ];
    let mut m = TestMachine::new32(&code);
    let init: [u64; 8] = [1, 2, 3, 4, STACK, 6, 7, 8];
    m.cpu.gpr[..8].copy_from_slice(&init);
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(&m.cpu.gpr[..8], &init);
    // The pushed image: EDI at the lowest address, the original ESP in the middle.
    let base = (STACK - 32) as usize;
    let word =
        |i: usize| u32::from_le_bytes(m.ram()[base + 4 * i..base + 4 * i + 4].try_into().unwrap());
    assert_eq!(
        (0..8).map(word).collect::<Vec<_>>(),
        [8, 7, 6, 0, 4, 3, 2, 1]
    );
    // 16-bit forms: pushaw / popaw keep the upper halves.
    let code = [0x66, 0x60, 0x31, 0xc0, 0x66, 0x61, HLT];
    let mut m = TestMachine::new32(&code);
    m.cpu.gpr[0] = 0xdead_1234;
    assert_eq!(m.run(100), Stop::Halt);
    assert_eq!(m.cpu.gpr[0], 0x1234);
    assert_eq!(m.cpu.gpr[4], STACK);
}

#[test]
fn bound() {
    // bound eax, [DATA] with bounds -5..=10.
    let mut code = vec![0x62, 0x05];
    code.extend_from_slice(&(DATA as u32).to_le_bytes());
    code.push(HLT);
    for (idx, ok) in [
        (0u64, true),
        (10, true),
        (11, false),
        ((-5i64) as u64, true),
        ((-6i64) as u64, false),
    ] {
        let mut m = TestMachine::new32(&code);
        m.load(DATA, &(-5i32).to_le_bytes());
        m.load(DATA + 4, &10i32.to_le_bytes());
        m.cpu.gpr[0] = idx & 0xffff_ffff;
        let want = if ok { Stop::Halt } else { Stop::Shutdown };
        assert_eq!(m.run(100), want, "index {idx:#x}");
    }
}
