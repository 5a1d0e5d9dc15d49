//! Differential tests against the host CPU for SSE/SSE2/SSE3/SSSE3 and x87: every legacy
//! encoding of a listed mnemonic is run natively (in an executable page) and in the emulator
//! from the same random, edge-biased states, and the results are compared: the FXSAVE image
//! (FCW, FSW, abridged tags, MXCSR, ST0-7, XMM0-15), the general registers, the arithmetic
//! flags and a 64-byte memory operand.
//!
//! Operands: XMM0-7 / MM0-7 / ST(i), RAX/RCX/RDX (and their 32-bit forms), memory at [R15]
//! (natively a buffer in the state, in the emulator `DATA`). All SSE and x87 exceptions stay
//! masked, so nothing traps natively.

#![cfg(target_arch = "x86_64")]

use crate::cpu::exec::native_fn::NativeFn;
use crate::cpu::run::Stop;
use crate::testutil::{TestMachine, CODE, DATA};
use iced_x86::code_asm::*;
use iced_x86::{
    Code, Encoder, EncodingKind, Instruction, MemoryOperand, Mnemonic, OpCodeOperandKind as K,
    Register,
};

const FX: usize = 0;
const HOST: usize = 512;
const MEM: usize = 1024;
const GPR: usize = 1088;
const FLAGS: usize = GPR + 128;

#[repr(C, align(16))]
#[derive(Clone)]
struct State {
    fx: [u8; 512],
    host: [u8; 512],
    mem: [u8; 64],
    gpr: [u64; 16],
    flags: u64,
}

const REGS: [AsmRegister64; 16] = [
    rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
];

/// A native function `extern "sysv64" fn(*mut State)`: saves the host FPU state, loads the
/// test state (FXRSTOR, registers, flags; R15 = the memory buffer), runs the instruction,
/// stores the state back and restores the host FPU state.
struct Native(NativeFn<State>);

impl Native {
    fn new(ins: &[u8]) -> Native {
        let mut a = CodeAssembler::new(64).unwrap();
        for r in [rbx, rbp, r12, r13, r14, r15, rdi] {
            a.push(r).unwrap();
        }
        a.fxsave64(ptr(rdi + HOST as i32)).unwrap();
        a.fxrstor64(ptr(rdi + FX as i32)).unwrap();
        a.push(qword_ptr(rdi + FLAGS as i32)).unwrap();
        a.popfq().unwrap();
        for (i, &r) in REGS.iter().enumerate() {
            if i != 4 && i != 7 && i != 15 {
                a.mov(r, qword_ptr(rdi + (GPR + i * 8) as i32)).unwrap();
            }
        }
        a.lea(r15, ptr(rdi + MEM as i32)).unwrap();
        a.mov(rdi, qword_ptr(rdi + (GPR + 56) as i32)).unwrap();
        a.db(ins).unwrap();
        a.pushfq().unwrap();
        a.push(rdi).unwrap();
        a.mov(rdi, qword_ptr(rsp + 16)).unwrap();
        for (i, &r) in REGS.iter().enumerate() {
            if i != 4 && i != 7 && i != 15 {
                a.mov(qword_ptr(rdi + (GPR + i * 8) as i32), r).unwrap();
            }
        }
        a.pop(rax).unwrap();
        a.mov(qword_ptr(rdi + (GPR + 56) as i32), rax).unwrap();
        a.pop(rax).unwrap();
        a.mov(qword_ptr(rdi + FLAGS as i32), rax).unwrap();
        a.fxsave64(ptr(rdi + FX as i32)).unwrap();
        a.fxrstor64(ptr(rdi + HOST as i32)).unwrap();
        // The ABI wants DF clear (the test state may have set it).
        a.cld().unwrap();
        for r in [rdi, r15, r14, r13, r12, rbp, rbx] {
            a.pop(r).unwrap();
        }
        a.ret().unwrap();
        Native(NativeFn::new(&a.assemble(0).unwrap()))
    }

    fn run(&self, s: &mut State) {
        // SAFETY: the function assembled in `new` saves and restores every
        // callee-saved register, RSP and the host's x87/SSE state, and only touches the
        // (16-byte aligned) State it is given. The tested instruction only uses registers
        // and the State's memory buffer, with every FP exception masked, so it cannot fault.
        unsafe { self.0.call(s) }
    }
}

/// Runs the instruction in the emulator from `s` and returns the final state.
fn emulate(ins: &[u8], s: &State) -> (State, Stop) {
    let mut code = ins.to_vec();
    code.push(0xf4);
    let mut m = TestMachine::new64(&code);
    assert!(m.cpu.fpu.fxrstor_image(&s.fx, true, 16));
    m.cpu.gpr = s.gpr;
    m.cpu.gpr[15] = DATA;
    m.cpu.flags.set(s.flags);
    m.load(DATA, &s.mem);
    let stop = m.run(10);
    let mut out = s.clone();
    out.fx = m.cpu.fpu.fxsave_image(true, 16);
    out.gpr = m.cpu.gpr;
    out.flags = m.cpu.flags.get();
    let d = DATA as usize;
    out.mem.copy_from_slice(&m.ram()[d..d + 64]);
    (out, stop)
}

pub(super) use crate::testutil::Rng;

/// The draws of the native differential tests, over the shared generator.
pub(super) trait Draw {
    fn pick<T: Copy>(&mut self, v: &[T]) -> T;
    fn f32(&mut self) -> u32;
    fn f64(&mut self) -> u64;
    fn vec(&mut self) -> u128;
    fn gpr(&mut self) -> u64;
    fn mxcsr(&mut self) -> u32;
}

impl Draw for Rng {
    fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[self.below(v.len() as u64) as usize]
    }

    fn f32(&mut self) -> u32 {
        const E: [u32; 24] = [
            0,
            0x8000_0000,
            0x7f80_0000,
            0xff80_0000,
            0x7fc0_0000,
            0xffc0_0000,
            0x7f80_0001,
            0x7fa0_1234,
            0x0000_0001,
            0x807f_ffff,
            0x0080_0000,
            0x7f7f_ffff,
            0x3f80_0000,
            0xbf80_0000,
            0x3f00_0000,
            0x3fc0_0000,
            0x4f00_0000,
            0xcf00_0000,
            0x5f00_0000,
            0xdf00_0000,
            0x4effffff,
            0x3f20_0000,
            0x4040_0000,
            0x0040_0000,
        ];
        match self.below(6) {
            0 | 1 => self.pick(&E),
            2 => ((self.below(2000) as i32 - 1000) as f32 / 4.0).to_bits(),
            3 => ((self.next() as i64 >> self.below(64)) as f32).to_bits(),
            _ => self.next() as u32,
        }
    }

    fn f64(&mut self) -> u64 {
        const E: [u64; 24] = [
            0,
            0x8000_0000_0000_0000,
            0x7ff0_0000_0000_0000,
            0xfff0_0000_0000_0000,
            0x7ff8_0000_0000_0000,
            0xfff8_0000_0000_0000,
            0x7ff0_0000_0000_0001,
            0x7ff4_0000_1234_0000,
            1,
            0x800f_ffff_ffff_ffff,
            0x0010_0000_0000_0000,
            0x7fef_ffff_ffff_ffff,
            0x3ff0_0000_0000_0000,
            0xbff0_0000_0000_0000,
            0x3fe0_0000_0000_0000,
            0x3ff8_0000_0000_0000,
            0x41e0_0000_0000_0000,
            0xc1e0_0000_0000_0000,
            0x43e0_0000_0000_0000,
            0xc3e0_0000_0000_0000,
            0x41df_ffff_ffc0_0000,
            0x3e80_0000_0000_0000,
            0x47ef_ffff_e000_0000,
            0x3690_0000_0000_0000,
        ];
        match self.below(6) {
            0 | 1 => self.pick(&E),
            2 => ((self.below(2000) as i64 - 1000) as f64 / 4.0).to_bits(),
            3 => ((self.next() as i64 >> self.below(64)) as f64).to_bits(),
            _ => self.next(),
        }
    }

    /// A 128-bit vector: float lanes, double lanes, integer edges or random bits.
    fn vec(&mut self) -> u128 {
        match self.below(5) {
            0 | 1 => (0..4).fold(0u128, |v, i| v | (u128::from(self.f32()) << (32 * i))),
            2 => u128::from(self.f64()) | (u128::from(self.f64()) << 64),
            3 => (0..8).fold(0u128, |v, i| {
                let x = self.pick(&[0u16, 1, 0x7f, 0x80, 0xff, 0x7fff, 0x8000, 0xffff, 0xff00]);
                let x = if self.below(3) == 0 {
                    self.next() as u16
                } else {
                    x
                };
                v | (u128::from(x) << (16 * i))
            }),
            _ => u128::from(self.next()) | (u128::from(self.next()) << 64),
        }
    }

    fn gpr(&mut self) -> u64 {
        match self.below(4) {
            0 => self.pick(&[
                0,
                1,
                0x7fff_ffff,
                0x8000_0000,
                u64::MAX,
                0xffff_ffff,
                0x8000,
            ]),
            1 => self.f64(),
            2 => (self.next() as i64 >> self.below(64)) as u64,
            _ => self.next(),
        }
    }

    /// MXCSR with every exception masked: random rounding, FZ, DAZ and sticky flags.
    fn mxcsr(&mut self) -> u32 {
        let mut m = 0x1f80 | ((self.below(4) as u32) << 13);
        if self.below(4) == 0 {
            m |= 1 << 15;
        }
        if self.below(4) == 0 {
            m |= 1 << 6;
        }
        if self.below(2) == 0 {
            m |= self.next() as u32 & 0x3f;
        }
        m
    }
}

/// A random start state. `x87`: fill the x87 stack (some registers may be left empty).
fn random_state(rng: &mut Rng, x87: bool) -> State {
    let mut s = State {
        fx: [0; 512],
        host: [0; 512],
        mem: [0; 64],
        gpr: [0; 16],
        flags: 0x202 | (rng.next() & 0xcd5),
    };
    for g in s.gpr.iter_mut() {
        *g = rng.gpr();
    }
    for i in 0..4 {
        let v = rng.vec().to_le_bytes();
        s.mem[16 * i..16 * i + 16].copy_from_slice(&v);
    }
    // FCW: exceptions masked, random precision and rounding control.
    let pc = rng.pick(&[0u16, 2, 3, 3, 3]);
    let fcw = 0x7f | (pc << 8) | ((rng.below(4) as u16) << 10);
    s.fx[0..2].copy_from_slice(&fcw.to_le_bytes());
    let top = rng.below(8) as u16;
    let fsw = (top << 11) | (rng.next() as u16 & 0x3f & !0x40);
    s.fx[2..4].copy_from_slice(&fsw.to_le_bytes());
    s.fx[4] = if x87 {
        if rng.below(4) == 0 {
            rng.next() as u8
        } else {
            0xff
        }
    } else {
        0
    };
    s.fx[24..28].copy_from_slice(&rng.mxcsr().to_le_bytes());
    for i in 0..8 {
        let v = super::sse_native_x87::f80(rng).to_le_bytes();
        s.fx[32 + 16 * i..42 + 16 * i].copy_from_slice(&v[..10]);
    }
    for i in 0..16 {
        let v = rng.vec().to_le_bytes();
        s.fx[160 + 16 * i..176 + 16 * i].copy_from_slice(&v);
    }
    s
}

/// Picks operands for an encoding; None if some operand kind is not supported.
fn operands(rng: &mut Rng, code: Code) -> Option<Instruction> {
    let info = code.op_code();
    let kinds: Vec<K> = (0..info.op_count()).map(|i| info.op_kind(i)).collect();
    let mem = MemoryOperand::with_base(Register::R15);
    let xmm = |rng: &mut Rng| Register::XMM0 as u32 + rng.below(8) as u32;
    let mut regs: Vec<Option<Register>> = vec![];
    let mut imm: Option<u32> = None;
    let mut is_mem = None;
    for (i, k) in kinds.iter().enumerate() {
        let use_mem = rng.below(3) == 0;
        let r = match k {
            K::xmm_reg => Some(xmm(rng)),
            K::xmm_or_mem if !use_mem => Some(xmm(rng)),
            K::mm_reg => Some(Register::MM0 as u32 + rng.below(8) as u32),
            K::mm_or_mem if !use_mem => Some(Register::MM0 as u32 + rng.below(8) as u32),
            K::r32_reg | K::r32_rm => Some(Register::EAX as u32 + rng.below(3) as u32),
            K::r64_reg | K::r64_rm => Some(Register::RAX as u32 + rng.below(3) as u32),
            K::r32_or_mem if !use_mem => Some(Register::EAX as u32 + rng.below(3) as u32),
            K::r64_or_mem if !use_mem => Some(Register::RAX as u32 + rng.below(3) as u32),
            K::xmm_or_mem | K::mm_or_mem | K::r32_or_mem | K::r64_or_mem | K::mem => {
                is_mem = Some(i);
                None
            }
            K::imm8 => {
                imm = Some(rng.next() as u32 & 0xff);
                None
            }
            K::st0 => Some(Register::ST0 as u32),
            K::sti_opcode => Some(Register::ST0 as u32 + rng.below(8) as u32),
            _ => return None,
        };
        regs.push(r.map(iced_register));
    }
    let r = |i: usize| regs[i].unwrap_or(Register::None);
    let ins = match (kinds.len(), is_mem, imm.is_some()) {
        (0, _, _) => Instruction::with(code),
        (1, Some(_), _) => Instruction::with1(code, mem).ok()?,
        (1, None, false) => Instruction::with1(code, r(0)).ok()?,
        (2, None, false) => Instruction::with2(code, r(0), r(1)).ok()?,
        (2, Some(0), false) => Instruction::with2(code, mem, r(1)).ok()?,
        (2, Some(1), false) => Instruction::with2(code, r(0), mem).ok()?,
        (2, None, true) => Instruction::with2(code, r(0), imm? as i32).ok()?,
        (3, None, true) => Instruction::with3(code, r(0), r(1), imm? as i32).ok()?,
        (3, Some(1), true) => Instruction::with3(code, r(0), mem, imm? as i32).ok()?,
        (3, Some(0), true) => Instruction::with3(code, mem, r(1), imm? as i32).ok()?,
        _ => return None,
    };
    Some(ins)
}

fn iced_register(n: u32) -> Register {
    Register::values().nth(n as usize).unwrap_or(Register::None)
}

/// Every 64-bit-mode legacy encoding of the mnemonics.
pub(super) fn codes(mnemonics: &[Mnemonic]) -> Vec<Code> {
    Code::values()
        .filter(|c| {
            c.encoding() == EncodingKind::Legacy
                && mnemonics.contains(&c.mnemonic())
                && c.op_code().mode64()
                // SSE4.1 (not advertised).
                && !matches!(c, Code::Pextrw_r32m16_xmm_imm8 | Code::Pextrw_r64m16_xmm_imm8)
        })
        .collect()
}

/// A comparison mask / tolerance rule for one form.
pub(super) struct Check {
    /// FSW bits compared.
    pub fsw_mask: u16,
    /// EFLAGS bits compared.
    pub flags_mask: u64,
    /// Compare XMM lanes of 32-bit floats within this relative error (RCPPS/RSQRTPS).
    pub approx32: bool,
}

/// Runs `cases` random cases of each encoding in `codes`; returns the failure descriptions.
pub(super) fn run_codes(
    codes: &[Code],
    cases: usize,
    seed: u64,
    x87: bool,
    check: impl Fn(Code) -> Check,
) -> Vec<String> {
    let mut rng = Rng(seed);
    let mut fails = vec![];
    for &code in codes {
        let mut nfail = 0;
        for _ in 0..cases {
            let Some(ins) = operands(&mut rng, code) else {
                break;
            };
            let mut e = Encoder::new(64);
            if e.encode(&ins, CODE).is_err() {
                break;
            }
            let bytes = e.take_buffer();
            let native = Native::new(&bytes);
            let init = random_state(&mut rng, x87);
            let mut want = init.clone();
            native.run(&mut want);
            let (got, stop) = emulate(&bytes, &init);
            let c = check(code);
            let diff = compare(&want, &got, &c);
            if stop != Stop::Halt || !diff.is_empty() {
                nfail += 1;
                if nfail <= 2 {
                    fails.push(format!(
                        "{code:?} `{ins}` ({bytes:02x?}): stop {stop:?}{diff}\n  init: {}",
                        describe(&init, x87)
                    ));
                }
            }
        }
        if nfail > 2 {
            fails.push(format!("{code:?}: {nfail} failures of {cases}"));
        }
    }
    fails
}

fn describe(s: &State, x87: bool) -> String {
    let mut out = format!(
        "mxcsr={:#x} fcw={:#x} fsw={:#x} tags={:#x} flags={:#x} rax={:#x} rcx={:#x} rdx={:#x} mem0={:#034x}",
        u32::from_le_bytes(s.fx[24..28].try_into().unwrap()),
        u16::from_le_bytes(s.fx[0..2].try_into().unwrap()),
        u16::from_le_bytes(s.fx[2..4].try_into().unwrap()),
        s.fx[4],
        s.flags,
        s.gpr[0],
        s.gpr[1],
        s.gpr[2],
        u128::from_le_bytes(s.mem[0..16].try_into().unwrap()),
    );
    if x87 {
        for i in 0..8 {
            out += &format!(" st{i}={:#022x}", st(s, i));
        }
    } else {
        for i in 0..8 {
            out += &format!(" xmm{i}={:#034x}", xmm(s, i));
        }
    }
    out
}

fn st(s: &State, i: usize) -> u128 {
    let mut v = [0u8; 16];
    v[..10].copy_from_slice(&s.fx[32 + 16 * i..42 + 16 * i]);
    u128::from_le_bytes(v)
}

fn xmm(s: &State, i: usize) -> u128 {
    u128::from_le_bytes(s.fx[160 + 16 * i..176 + 16 * i].try_into().unwrap())
}

/// Whether two 32-bit float lanes agree within the RCPPS/RSQRTPS error bound (1.5 * 2^-12).
fn approx_eq32(a: u32, b: u32) -> bool {
    if a == b {
        return true;
    }
    let (x, y) = (f32::from_bits(a), f32::from_bits(b));
    if !x.is_finite() || !y.is_finite() || x == 0.0 || y == 0.0 {
        return false;
    }
    ((x - y) / x).abs() <= 1.5 / 4096.0 * 2.0
}

fn compare(want: &State, got: &State, c: &Check) -> String {
    let mut d = String::new();
    let u16_at = |s: &State, o: usize| u16::from_le_bytes([s.fx[o], s.fx[o + 1]]);
    let u32_at = |s: &State, o: usize| u32::from_le_bytes(s.fx[o..o + 4].try_into().unwrap());
    if u16_at(want, 0) != u16_at(got, 0) {
        d += &format!(
            "\n  fcw: host {:#x} emu {:#x}",
            u16_at(want, 0),
            u16_at(got, 0)
        );
    }
    let (fw, fg) = (u16_at(want, 2) & c.fsw_mask, u16_at(got, 2) & c.fsw_mask);
    if fw != fg {
        d += &format!("\n  fsw: host {fw:#x} emu {fg:#x} (mask {:#x})", c.fsw_mask);
    }
    if want.fx[4] != got.fx[4] {
        d += &format!("\n  tags: host {:#x} emu {:#x}", want.fx[4], got.fx[4]);
    }
    if u32_at(want, 24) != u32_at(got, 24) {
        d += &format!(
            "\n  mxcsr: host {:#x} emu {:#x}",
            u32_at(want, 24),
            u32_at(got, 24)
        );
    }
    for i in 0..8 {
        // Empty registers' contents are not compared (FXSAVE keeps whatever was there).
        let phys = (usize::from(u16_at(want, 2) >> 11 & 7) + i) & 7;
        if want.fx[4] & (1 << phys) == 0 && got.fx[4] & (1 << phys) == 0 {
            continue;
        }
        if st(want, i) != st(got, i) {
            d += &format!(
                "\n  st{i}: host {:#022x} emu {:#022x}",
                st(want, i),
                st(got, i)
            );
        }
    }
    for i in 0..16 {
        let (w, g) = (xmm(want, i), xmm(got, i));
        let same = if c.approx32 {
            (0..4).all(|l| approx_eq32((w >> (32 * l)) as u32, (g >> (32 * l)) as u32))
        } else {
            w == g
        };
        if !same {
            d += &format!("\n  xmm{i}: host {w:#034x} emu {g:#034x}");
        }
    }
    for i in 0..16 {
        if i != 4 && i != 15 && want.gpr[i] != got.gpr[i] {
            d += &format!("\n  gpr{i}: host {:#x} emu {:#x}", want.gpr[i], got.gpr[i]);
        }
    }
    let (fw, fg) = (want.flags & c.flags_mask, got.flags & c.flags_mask);
    if fw != fg {
        d += &format!("\n  flags: host {fw:#x} emu {fg:#x}");
    }
    if want.mem != got.mem {
        d += &format!(
            "\n  mem: host {:02x?}\n       emu  {:02x?}",
            want.mem, got.mem
        );
    }
    d
}

fn sse_check(code: Code) -> Check {
    use Mnemonic as M;
    Check {
        // EMMS: AMD also sets TOP to 0; Intel documents only the tag change (SDM vol. 1
        // 9.5.1: every MMX instruction but EMMS sets TOP to 0). Not compared.
        fsw_mask: if code.mnemonic() == M::Emms {
            !0x3800
        } else {
            0xffff
        },
        flags_mask: 0x8d5,
        approx32: matches!(
            code.mnemonic(),
            M::Rcpps | M::Rcpss | M::Rsqrtps | M::Rsqrtss
        ),
    }
}

fn report(fails: Vec<String>) {
    if !fails.is_empty() {
        panic!("{} divergence(s):\n{}", fails.len(), fails.join("\n"));
    }
}

const SSE_FP: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Addps, Addss, Subps, Subss, Mulps, Mulss, Divps, Divss, Sqrtps, Sqrtss, Maxps, Maxss,
        Minps, Minss, Cmpps, Cmpss, Comiss, Ucomiss, Andps, Andnps, Orps, Xorps, Shufps, Unpcklps,
        Unpckhps, Addpd, Addsd, Subpd, Subsd, Mulpd, Mulsd, Divpd, Divsd, Sqrtpd, Sqrtsd, Maxpd,
        Maxsd, Minpd, Minsd, Cmppd, Cmpsd, Comisd, Ucomisd, Andpd, Andnpd, Orpd, Xorpd, Shufpd,
        Unpcklpd, Unpckhpd, Addsubps, Addsubpd, Haddps, Haddpd, Hsubps, Hsubpd, Rcpps, Rcpss,
        Rsqrtps, Rsqrtss,
    ]
};

const SSE_CVT: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Cvtsi2ss, Cvtss2si, Cvttss2si, Cvtsi2sd, Cvtsd2si, Cvttsd2si, Cvtdq2pd, Cvtdq2ps, Cvtpd2dq,
        Cvtpd2ps, Cvtps2dq, Cvtps2pd, Cvtsd2ss, Cvtss2sd, Cvttpd2dq, Cvttps2dq, Cvtpi2ps, Cvtps2pi,
        Cvttps2pi, Cvtpi2pd, Cvtpd2pi, Cvttpd2pi,
    ]
};

const SSE_INT: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Paddb, Paddw, Paddd, Paddq, Psubb, Psubw, Psubd, Psubq, Paddsb, Paddsw, Paddusb, Paddusw,
        Psubsb, Psubsw, Psubusb, Psubusw, Pmullw, Pmulhw, Pmulhuw, Pmuludq, Pmaddwd, Psadbw,
        Pcmpeqb, Pcmpeqw, Pcmpeqd, Pcmpgtb, Pcmpgtw, Pcmpgtd, Pand, Pandn, Por, Pxor, Psllw, Pslld,
        Psllq, Psrlw, Psrld, Psrlq, Psraw, Psrad, Pslldq, Psrldq, Punpcklbw, Punpcklwd, Punpckldq,
        Punpcklqdq, Punpckhbw, Punpckhwd, Punpckhdq, Punpckhqdq, Packsswb, Packssdw, Packuswb,
        Pshufd, Pshuflw, Pshufhw, Pshufw, Pmaxsw, Pmaxub, Pminsw, Pminub, Pavgb, Pavgw, Pmovmskb,
        Pextrw, Pinsrw, Pabsb, Pabsw, Pabsd, Palignr, Phaddw, Phaddd, Phaddsw, Phsubw, Phsubd,
        Phsubsw, Pmaddubsw, Pmulhrsw, Pshufb, Psignb, Psignw, Psignd,
    ]
};

const SSE_MOV: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Movaps, Movups, Movapd, Movupd, Movdqa, Movdqu, Movss, Movsd, Movhlps, Movlhps, Movlps,
        Movhps, Movlpd, Movhpd, Movmskps, Movmskpd, Movd, Movq, Movq2dq, Movdq2q, Movshdup,
        Movsldup, Movddup, Lddqu, Movntps, Movntpd, Movntdq, Movnti, Emms,
    ]
};

#[test]
fn native_sse_fp() {
    report(run_codes(
        &codes(SSE_FP),
        300,
        0x5555_0001,
        false,
        sse_check,
    ));
}

#[test]
fn native_sse_cvt() {
    report(run_codes(
        &codes(SSE_CVT),
        300,
        0x5555_0002,
        false,
        sse_check,
    ));
}

#[test]
fn native_sse_int() {
    report(run_codes(
        &codes(SSE_INT),
        150,
        0x5555_0003,
        false,
        sse_check,
    ));
}

#[test]
fn native_sse_mov() {
    report(run_codes(
        &codes(SSE_MOV),
        100,
        0x5555_0004,
        false,
        sse_check,
    ));
}
