//! Differential tests against the host CPU: register-only integer instructions run natively
//! (in an executable page) and in the emulator from the same random states; the registers
//! and the architecturally defined flags must agree.

#![cfg(target_arch = "x86_64")]

use crate::cpu::exec::native_fn::NativeFn;
use crate::cpu::flags::{AF, ARITH, CF, OF, ZF};
use crate::cpu::run::Stop;
use crate::testutil::{Rng, TestMachine, CODE, STACK};
use iced_x86::code_asm::*;
use iced_x86::IcedError;

type Asm = fn(&mut CodeAssembler) -> Result<(), IcedError>;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
struct State {
    gpr: [u64; 16],
    flags: u64,
}

const REGS: [AsmRegister64; 16] = [
    rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
];

/// A native function `extern "sysv64" fn(*mut State)` that loads the state, runs the
/// instruction and stores the state back.
struct Native(NativeFn<State>);

impl Native {
    fn new(ins: Asm) -> Native {
        let mut a = CodeAssembler::new(64).unwrap();
        for r in [rbx, rbp, r12, r13, r14, r15, rdi] {
            a.push(r).unwrap();
        }
        a.push(qword_ptr(rdi + 128)).unwrap();
        a.popfq().unwrap();
        for (i, &r) in REGS.iter().enumerate() {
            if i != 4 && i != 7 {
                a.mov(r, qword_ptr(rdi + (i * 8) as i32)).unwrap();
            }
        }
        a.mov(rdi, qword_ptr(rdi + 56)).unwrap();
        ins(&mut a).unwrap();
        a.pushfq().unwrap();
        a.push(rdi).unwrap();
        a.mov(rdi, qword_ptr(rsp + 16)).unwrap();
        for (i, &r) in REGS.iter().enumerate() {
            if i != 4 && i != 7 {
                a.mov(qword_ptr(rdi + (i * 8) as i32), r).unwrap();
            }
        }
        a.pop(rax).unwrap();
        a.mov(qword_ptr(rdi + 56), rax).unwrap();
        a.pop(rax).unwrap();
        a.mov(qword_ptr(rdi + 128), rax).unwrap();
        for r in [rdi, r15, r14, r13, r12, rbp, rbx] {
            a.pop(r).unwrap();
        }
        a.ret().unwrap();
        Native(NativeFn::new(&a.assemble(0).unwrap()))
    }

    fn run(&self, s: &mut State) {
        // SAFETY: the function assembled in `new` saves and restores every
        // callee-saved register and RSP, and only touches the State it is given. The tested
        // instructions are register-only and cannot fault for the inputs used.
        unsafe { self.0.call(s) }
    }
}

/// The draws of this file: the edges of every operand size, as well as the shared ones.
trait Edges {
    fn edge_value(&mut self) -> u64;
}

impl Edges for Rng {
    /// Random values biased towards the edges of every operand size.
    fn edge_value(&mut self) -> u64 {
        const EDGES: [u64; 12] = [
            0,
            1,
            2,
            0x7f,
            0x80,
            0xff,
            0x7fff,
            0x8000,
            0xffff,
            0x7fff_ffff,
            0x8000_0000,
            0xffff_ffff,
        ];
        let r = self.next();
        match r % 8 {
            0 => EDGES[(r >> 8) as usize % EDGES.len()],
            1 => u64::MAX - EDGES[(r >> 8) as usize % EDGES.len()],
            2 => (r >> 8) & 0xff,
            3 => 0x8000_0000_0000_0000 ^ EDGES[(r >> 8) as usize % EDGES.len()],
            _ => self.next(),
        }
    }
}

/// Runs `ins` natively and in the emulator from `n` random states and compares the GPRs and
/// the flags in `mask(input)`. `fix` adjusts the random input (e.g. to keep counts in range).
fn diff(name: &str, ins: Asm, mask: fn(&State) -> u64, fix: fn(&mut State)) {
    let native = Native::new(ins);
    let mut a = CodeAssembler::new(64).unwrap();
    ins(&mut a).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut m = TestMachine::new64(&code);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ name.len() as u64);
    for i in 0..400 {
        let mut s = State {
            gpr: [0; 16],
            flags: 0,
        };
        for g in s.gpr.iter_mut() {
            *g = rng.edge_value();
        }
        s.flags = (rng.next() & ARITH) | 2;
        // Small shift counts are the interesting ones.
        if i % 2 == 0 {
            s.gpr[1] = (s.gpr[1] & !0xff) | (rng.next() % 70);
        }
        fix(&mut s);
        let input = s;
        let mut hw = s;
        native.run(&mut hw);

        m.cpu.gpr = input.gpr;
        m.cpu.gpr[4] = STACK;
        m.cpu.flags.set(input.flags);
        m.cpu.rip = CODE;
        m.cpu.halted = false;
        assert_eq!(m.run(100), Stop::Halt, "{name}");
        let mut emu = State {
            gpr: m.cpu.gpr,
            flags: m.cpu.flags.get(),
        };
        emu.gpr[4] = hw.gpr[4];
        let fm = mask(&input);
        assert_eq!(
            emu.gpr, hw.gpr,
            "{name}: registers differ for input {input:x?}"
        );
        assert_eq!(
            emu.flags & fm,
            hw.flags & fm,
            "{name}: flags differ (mask {fm:#x}) for input {input:x?}: emu {:#x} hw {:#x}",
            emu.flags,
            hw.flags
        );
    }
}

fn all(_: &State) -> u64 {
    ARITH
}
fn no_af(_: &State) -> u64 {
    ARITH & !AF
}
fn cf_of(_: &State) -> u64 {
    CF | OF
}
fn cf_only(_: &State) -> u64 {
    CF
}
fn zf_only(_: &State) -> u64 {
    ZF
}
fn cf_zf(_: &State) -> u64 {
    CF | ZF
}
fn keep(_: &mut State) {}

/// Shifts: with a masked count of 0 nothing changes; OF is defined only for a count of 1;
/// for SHL/SHR a count of at least the operand size leaves CF undefined. (The host may be
/// Intel or AMD, which differ in the undefined flags.)
fn shift_mask(s: &State, bits: u64) -> u64 {
    let c = s.gpr[1] & if bits == 64 { 0x3f } else { 0x1f };
    match c {
        0 => ARITH,
        1 => ARITH & !AF,
        _ if c >= bits => ARITH & !(AF | OF | CF),
        _ => ARITH & !(AF | OF),
    }
}
/// Rotates change only CF and OF; OF is defined for a count of 1.
fn rot_mask(s: &State, bits: u64) -> u64 {
    let c = s.gpr[1] & if bits == 64 { 0x3f } else { 0x1f };
    if c <= 1 {
        ARITH
    } else {
        ARITH & !OF
    }
}

macro_rules! case {
    ($name:expr, $a:ident => $body:expr, $mask:expr) => {
        diff($name, |$a| $body, $mask, keep)
    };
    ($name:expr, $a:ident => $body:expr, $mask:expr, $fix:expr) => {
        diff($name, |$a| $body, $mask, $fix)
    };
}

#[test]
fn native_alu() {
    case!("add8", a => a.add(al, bl), all);
    case!("add8h", a => a.add(ah, bh), all);
    case!("add16", a => a.add(ax, bx), all);
    case!("add32", a => a.add(eax, ebx), all);
    case!("add64", a => a.add(rax, rbx), all);
    case!("addr9", a => a.add(r9b, sil), all);
    case!("adc8", a => a.adc(cl, dh), all);
    case!("adc16", a => a.adc(ax, bx), all);
    case!("adc32", a => a.adc(eax, ebx), all);
    case!("adc64", a => a.adc(rax, rbx), all);
    case!("sub8", a => a.sub(al, bl), all);
    case!("sub32", a => a.sub(eax, ebx), all);
    case!("sub64", a => a.sub(rax, rbx), all);
    case!("sbb8", a => a.sbb(al, bl), all);
    case!("sbb16", a => a.sbb(ax, bx), all);
    case!("sbb32", a => a.sbb(eax, ebx), all);
    case!("sbb64", a => a.sbb(rax, rbx), all);
    case!("cmp16", a => a.cmp(ax, bx), all);
    case!("cmp64", a => a.cmp(rax, rbx), all);
    case!("cmpimm", a => a.cmp(rax, -5), all);
    case!("addimm32", a => a.add(eax, 0x7fff_ffff), all);
    case!("subimm8", a => a.sub(ebx, 1), all);
    case!("and32", a => a.and(eax, ebx), no_af);
    case!("or64", a => a.or(rax, rbx), no_af);
    case!("xor8", a => a.xor(ah, cl), no_af);
    case!("test16", a => a.test(ax, bx), no_af);
    case!("testimm", a => a.test(rax, 0x80), no_af);
    case!("xorself", a => a.xor(eax, eax), no_af);
    case!("inc8", a => a.inc(al), all);
    case!("inc32", a => a.inc(ecx), all);
    case!("dec16", a => a.dec(dx), all);
    case!("dec64", a => a.dec(r10), all);
    case!("neg8", a => a.neg(bh), all);
    case!("neg64", a => a.neg(rax), all);
    case!("not32", a => a.not(eax), all);
}

#[test]
fn native_muldiv() {
    case!("mul8", a => a.mul(bl), cf_of);
    case!("mul16", a => a.mul(bx), cf_of);
    case!("mul32", a => a.mul(ebx), cf_of);
    case!("mul64", a => a.mul(rbx), cf_of);
    case!("imul8", a => a.imul(bh), cf_of);
    case!("imul16", a => a.imul(bx), cf_of);
    case!("imul32", a => a.imul(ebx), cf_of);
    case!("imul64", a => a.imul(rbx), cf_of);
    case!("imul2_16", a => a.imul_2(cx, bx), cf_of);
    case!("imul2_32", a => a.imul_2(ecx, ebx), cf_of);
    case!("imul2_64", a => a.imul_2(rcx, rbx), cf_of);
    case!("imul3_16", a => a.imul_3(cx, bx, -300), cf_of);
    case!("imul3_32", a => a.imul_3(ecx, ebx, 7), cf_of);
    case!("imul3_64", a => a.imul_3(rcx, rbx, -0x1234_5678), cf_of);
    // Division: keep the quotient in range (the high half below the divisor).
    fn fix_div(s: &mut State) {
        s.gpr[3] |= 1;
        s.gpr[2] = 0;
    }
    case!("div32", a => a.div(ebx), |_| 0, fix_div);
    case!("div64", a => a.div(rbx), |_| 0, fix_div);
    fn fix_idiv(s: &mut State) {
        s.gpr[3] = (s.gpr[3] | 1) & 0xffff;
        s.gpr[0] &= 0x7fff;
        s.gpr[2] = 0;
    }
    case!("idiv16", a => a.idiv(bx), |_| 0, fix_idiv);
    case!("idiv64", a => a.idiv(rbx), |_| 0, fix_idiv);
    case!("cbw", a => a.cbw(), all);
    case!("cwde", a => a.cwde(), all);
    case!("cdqe", a => a.cdqe(), all);
    case!("cwd", a => a.cwd(), all);
    case!("cdq", a => a.cdq(), all);
    case!("cqo", a => a.cqo(), all);
}

#[test]
fn native_shift() {
    case!("shl8", a => a.shl(al, cl), |s| shift_mask(s, 8));
    case!("shl8h", a => a.shl(bh, cl), |s| shift_mask(s, 8));
    case!("shl16", a => a.shl(ax, cl), |s| shift_mask(s, 16));
    case!("shl32", a => a.shl(eax, cl), |s| shift_mask(s, 32));
    case!("shl64", a => a.shl(rax, cl), |s| shift_mask(s, 64));
    case!("shr8", a => a.shr(al, cl), |s| shift_mask(s, 8));
    case!("shr16", a => a.shr(dx, cl), |s| shift_mask(s, 16));
    case!("shr32", a => a.shr(eax, cl), |s| shift_mask(s, 32));
    case!("shr64", a => a.shr(rax, cl), |s| shift_mask(s, 64));
    case!("sar8", a => a.sar(al, cl), |s| shift_mask(s, 8));
    case!("sar16", a => a.sar(ax, cl), |s| shift_mask(s, 16));
    case!("sar32", a => a.sar(eax, cl), |s| shift_mask(s, 32));
    case!("sar64", a => a.sar(rax, cl), |s| shift_mask(s, 64));
    case!("shl1", a => a.shl(eax, 1), no_af);
    case!("shr1", a => a.shr(ax, 1), no_af);
    case!("sar1", a => a.sar(rbx, 1), no_af);
    case!("shlimm", a => a.shl(rbx, 7), |_| ARITH & !(AF | OF));
    case!("rol8", a => a.rol(al, cl), |s| rot_mask(s, 8));
    case!("rol16", a => a.rol(ax, cl), |s| rot_mask(s, 16));
    case!("rol32", a => a.rol(eax, cl), |s| rot_mask(s, 32));
    case!("rol64", a => a.rol(rax, cl), |s| rot_mask(s, 64));
    case!("ror8", a => a.ror(ah, cl), |s| rot_mask(s, 8));
    case!("ror16", a => a.ror(ax, cl), |s| rot_mask(s, 16));
    case!("ror32", a => a.ror(eax, cl), |s| rot_mask(s, 32));
    case!("ror64", a => a.ror(rax, cl), |s| rot_mask(s, 64));
    case!("rcl8", a => a.rcl(al, cl), |s| rot_mask(s, 8));
    case!("rcl16", a => a.rcl(ax, cl), |s| rot_mask(s, 16));
    case!("rcl32", a => a.rcl(eax, cl), |s| rot_mask(s, 32));
    case!("rcl64", a => a.rcl(rax, cl), |s| rot_mask(s, 64));
    case!("rcr8", a => a.rcr(al, cl), |s| rot_mask(s, 8));
    case!("rcr16", a => a.rcr(ax, cl), |s| rot_mask(s, 16));
    case!("rcr32", a => a.rcr(eax, cl), |s| rot_mask(s, 32));
    case!("rcr64", a => a.rcr(rax, cl), |s| rot_mask(s, 64));
    case!("rol1", a => a.rol(eax, 1), all);
    case!("rcr1", a => a.rcr(bx, 1), all);
    fn fix16(s: &mut State) {
        s.gpr[1] = (s.gpr[1] & !0xff) | ((s.gpr[1] & 0xff) % 17);
    }
    case!("shld16", a => a.shld(ax, bx, cl), |s| shift_mask(s, 16), fix16);
    case!("shld32", a => a.shld(eax, ebx, cl), |s| shift_mask(s, 32));
    case!("shld64", a => a.shld(rax, rbx, cl), |s| shift_mask(s, 64));
    case!("shrd16", a => a.shrd(ax, bx, cl), |s| shift_mask(s, 16), fix16);
    case!("shrd32", a => a.shrd(eax, ebx, cl), |s| shift_mask(s, 32));
    case!("shrd64", a => a.shrd(rax, rbx, cl), |s| shift_mask(s, 64));
    case!("shldimm", a => a.shld(edx, esi, 5), |_| ARITH & !(AF | OF));
}

#[test]
fn native_bits() {
    case!("bt16", a => a.bt(ax, bx), cf_only);
    case!("bt64", a => a.bt(rax, rbx), cf_only);
    case!("bts32", a => a.bts(eax, ebx), cf_only);
    case!("btr64", a => a.btr(rax, rcx), cf_only);
    case!("btc16", a => a.btc(dx, cx), cf_only);
    case!("btsimm", a => a.bts(rax, 45), cf_only);
    case!("btrimm", a => a.btr(ax, 19), cf_only);
    fn fix_zero(s: &mut State) {
        if s.gpr[3] & 0x30 == 0x30 {
            s.gpr[3] = 0;
        }
    }
    case!("bsf16", a => a.bsf(ax, bx), zf_only, fix_zero);
    case!("bsf32", a => a.bsf(eax, ebx), zf_only, fix_zero);
    case!("bsf64", a => a.bsf(rax, rbx), zf_only, fix_zero);
    case!("bsr16", a => a.bsr(ax, bx), zf_only, fix_zero);
    case!("bsr32", a => a.bsr(eax, ebx), zf_only, fix_zero);
    case!("bsr64", a => a.bsr(rax, rbx), zf_only, fix_zero);
    case!("lzcnt16", a => a.lzcnt(ax, bx), cf_zf, fix_zero);
    case!("lzcnt32", a => a.lzcnt(eax, ebx), cf_zf, fix_zero);
    case!("lzcnt64", a => a.lzcnt(rax, rbx), cf_zf, fix_zero);
    case!("popcnt16", a => a.popcnt(ax, bx), all, fix_zero);
    case!("popcnt64", a => a.popcnt(rax, rbx), all, fix_zero);
}

#[test]
fn native_moves_and_flags() {
    case!("xchg8", a => a.xchg(ah, bl), all);
    case!("xchg32", a => a.xchg(eax, ebx), all);
    case!("xchg32self", a => a.xchg(ecx, ecx), all);
    case!("xadd16", a => a.xadd(ax, bx), all);
    case!("xadd64", a => a.xadd(rax, rbx), all);
    fn fix_eq(s: &mut State) {
        if s.gpr[5] & 1 == 0 {
            s.gpr[0] = s.gpr[3];
        }
    }
    case!("cmpxchg8", a => a.cmpxchg(bl, cl), all, fix_eq);
    case!("cmpxchg32", a => a.cmpxchg(ebx, ecx), all, fix_eq);
    case!("cmpxchg64", a => a.cmpxchg(rbx, rcx), all, fix_eq);
    case!("bswap32", a => a.bswap(ebx), all);
    case!("bswap64", a => a.bswap(r11), all);
    case!("movzx8", a => a.movzx(eax, bh), all);
    case!("movzx16", a => a.movzx(rax, bx), all);
    case!("movsx8", a => a.movsx(ax, bl), all);
    case!("movsx16", a => a.movsx(rax, bx), all);
    case!("movsxd", a => a.movsxd(rax, ebx), all);
    case!("mov32", a => a.mov(eax, ebx), all);
    case!("mov8h", a => a.mov(ah, dl), all);
    case!("movimm", a => a.mov(rax, 0x1234_5678_9abc_def0u64), all);
    case!("movimm32", a => a.mov(r8d, 0x8000_0000u32), all);
    case!("lea", a => a.lea(eax, dword_ptr(rbx + rcx * 4 + 0x10)), all);
    case!("lea16", a => a.lea(ax, word_ptr(rbx + rcx * 2 - 3)), all);
    case!("lahf", a => a.lahf(), all);
    case!("sahf", a => a.sahf(), all);
    case!("clc", a => a.clc(), all);
    case!("stc", a => a.stc(), all);
    case!("cmc", a => a.cmc(), all);
    case!("seta", a => a.seta(al), all);
    case!("setl", a => a.setl(bh), all);
    case!("setle", a => a.setle(r9b), all);
    case!("setp", a => a.setp(cl), all);
    case!("seto", a => a.seto(dl), all);
    case!("cmovg32", a => a.cmovg(eax, ebx), all);
    case!("cmovbe64", a => a.cmovbe(rax, rbx), all);
    case!("cmovs16", a => a.cmovs(ax, bx), all);
    case!("cmovno32", a => a.cmovno(ecx, edx), all);
    case!("cmovnp32", a => a.cmovnp(ecx, edx), all);
    case!("cmovge32", a => a.cmovge(ecx, edx), all);
}
