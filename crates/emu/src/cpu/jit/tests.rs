//! The translation tier against the interpreter: random sequences of the supported
//! instructions from random states must leave identical registers, flags, RIP, instruction
//! counts and memory, with a warm TLB (the code's inline lookups hit) and a cold one (they
//! miss and exit mid-block to the interpreter); loops reuse translations; a write to a
//! translated block's page makes the new code run.

use crate::cpu::flags::ARITH;
use crate::cpu::run::Stop;
use crate::testutil::{Rng, TestMachine, CODE, DATA, STACK};
use iced_x86::code_asm::*;

// Destinations: never RBX (memory base), RSI (index) or RSP.
const R64: [AsmRegister64; 12] = [rax, rcx, rdx, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
const R32: [AsmRegister32; 12] = [
    eax, ecx, edx, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
];
const R8: [AsmRegister8; 12] = [
    al, cl, dl, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b,
];

type Asm = CodeAssembler;

/// Appends one random supported instruction.
fn emit(a: &mut Asm, g: &mut Rng) -> Result<(), IcedError> {
    let i = g.below(12) as usize;
    let j = g.below(12) as usize;
    let (q, q2, d, d2, b, b2) = (R64[i], R64[j], R32[i], R32[j], R8[i], R8[j]);
    let disp = (g.below(32) * 8) as i32;
    let mem: AsmMemoryOperand = rbx + rsi * 8 + disp;
    let imm = g.value() as i32;
    let op = g.below(9);
    macro_rules! alu {
        ($x:expr, $y:expr) => {
            alu!($x, $y, op)
        };
        // No TEST reg, mem encoding: CMP instead.
        (nt $x:expr, $y:expr) => {
            match op {
                0 => a.add($x, $y),
                1 => a.adc($x, $y),
                2 => a.sub($x, $y),
                3 => a.sbb($x, $y),
                4 => a.and($x, $y),
                5 => a.or($x, $y),
                6 => a.xor($x, $y),
                _ => a.cmp($x, $y),
            }
        };
        ($x:expr, $y:expr, $op:expr) => {
            match $op {
                0 => a.add($x, $y),
                1 => a.adc($x, $y),
                2 => a.sub($x, $y),
                3 => a.sbb($x, $y),
                4 => a.and($x, $y),
                5 => a.or($x, $y),
                6 => a.xor($x, $y),
                7 => a.cmp($x, $y),
                _ => a.test($x, $y),
            }
        };
    }
    match g.below(36) {
        0 => alu!(q, q2),
        1 => alu!(d, d2),
        2 => alu!(b, b2),
        3 => alu!(q, imm),
        4 => alu!(nt d, dword_ptr(mem)),
        5 => alu!(qword_ptr(rbx + disp), q2),
        6 => alu!(dword_ptr(rbx + disp), imm),
        7 => match op % 3 {
            0 => a.mov(q, q2),
            1 => a.mov(d, imm as u32),
            _ => a.mov(q, g.value()),
        },
        8 => match op % 4 {
            0 => a.mov(q, qword_ptr(mem)),
            1 => a.mov(dword_ptr(rbx + disp), d2),
            2 => a.mov(byte_ptr(mem), b2),
            _ => a.mov(b, byte_ptr(mem)),
        },
        9 => match op % 4 {
            0 => a.inc(q),
            1 => a.dec(d),
            2 => a.inc(b),
            _ => a.dec(q),
        },
        10 => match op % 3 {
            0 => a.neg(q),
            1 => a.neg(d),
            _ => a.not(q),
        },
        11 => a.lea(q, qword_ptr(q2 + rsi * 4 + disp)),
        12 => match op % 4 {
            0 => a.movzx(d, byte_ptr(mem)),
            1 => a.movzx(q, word_ptr(mem)),
            2 => a.movsx(q, byte_ptr(mem)),
            _ => a.movsxd(q, dword_ptr(mem)),
        },
        13 => match op % 3 {
            0 => a.movzx(d, b2),
            1 => a.movsx(q, b2),
            _ => a.movsxd(q, d2),
        },
        14 => {
            let c = (g.below(63) + 1) as u32;
            match op % 6 {
                0 => a.shl(q, c),
                1 => a.shr(q, c),
                2 => a.sar(q, c),
                3 => a.shl(d, c & 31),
                4 => a.shr(b, c & 31),
                _ => a.sar(d, c & 31),
            }
        }
        15 => match op % 2 {
            0 => a.imul_2(q, q2),
            _ => a.imul_2(d, d2),
        },
        16 => match op % 2 {
            0 => a.mul(q2),
            _ => a.mul(d2),
        },
        17 => match op {
            0 => a.cmovb(q, q2),
            1 => a.cmove(d, d2),
            2 => a.cmovl(q, q2),
            3 => a.cmovle(q, q2),
            4 => a.cmovs(d, d2),
            5 => a.cmovp(q, q2),
            6 => a.cmovo(q, q2),
            7 => a.cmova(q, q2),
            _ => a.cmovge(d, d2),
        },
        18 => match op {
            0 => a.setb(b),
            1 => a.sete(b),
            2 => a.setl(b),
            3 => a.setg(b),
            4 => a.setp(b),
            5 => a.seto(b),
            6 => a.setae(b),
            7 => a.setbe(b),
            _ => a.setns(b),
        },
        19 => match op % 2 {
            0 => a.bswap(q),
            _ => a.bswap(d),
        },
        20 => {
            a.push(q)?;
            a.pop(q2)
        }
        21 => alu!(byte_ptr(rbx + disp), b2),
        22 => a.mov(dword_ptr(rbx + disp), imm),
        23 => {
            let c = (g.below(63) + 1) as u32;
            match op % 6 {
                0 => a.rol(q, c),
                1 => a.ror(q, c),
                2 => a.rol(d, c & 31),
                3 => a.ror(d, c & 31),
                4 => a.rol(b, c & 31),
                _ => a.ror(b, c & 31),
            }
        }
        24 | 25 => {
            // RCX is also a destination: CL is whatever it holds (zero included).
            match op % 7 {
                0 => a.shl(q, cl),
                1 => a.shr(q, cl),
                2 => a.sar(d, cl),
                3 => a.rol(d, cl),
                4 => a.ror(q, cl),
                5 => a.shl(b, cl),
                _ => a.ror(b, cl),
            }
        }
        26 => {
            a.mov(ecx, (g.below(70)) as u32)?;
            a.shr(d, cl)
        }
        27 => alu!(nt q, qword_ptr(mem.gs())),
        28 => alu!(R16[i], R16[j]),
        29 => alu!(nt R16[i], word_ptr(mem)),
        30 => alu!(word_ptr(rbx + disp), R16[j]),
        31 => match op % 4 {
            0 => a.mov(word_ptr(mem), R16[j]),
            1 => a.mov(R16[i], word_ptr(mem)),
            2 => a.mov(R16[i], imm as u16 as u32),
            _ => a.inc(R16[i]),
        },
        32 => match op % 3 {
            0 => a.bt(q, g.below(256) as u32),
            1 => a.bt(dword_ptr(mem), g.below(256) as u32),
            _ => a.bt(qword_ptr(rbx + disp), g.below(256) as u32),
        },
        33 => {
            // An SSE load, a copy and a store, so that the XMM values reach memory.
            let (x, y) = (XMM[i % 8], XMM[j % 8]);
            let aligned = rbx + (disp & !15);
            match op % 4 {
                0 => a.movsd_2(x, qword_ptr(mem))?,
                1 => a.movd(x, dword_ptr(mem))?,
                2 => a.movups(x, xmmword_ptr(mem + 4))?,
                _ => a.movaps(x, xmmword_ptr(aligned))?,
            }
            a.movaps(y, x)?;
            match op % 3 {
                0 => a.movsd_2(qword_ptr(rbx + disp), y),
                1 => a.movdqu(xmmword_ptr(mem), y),
                _ => a.movdqa(xmmword_ptr(aligned), y),
            }
        }
        34 => {
            let h = [ah, ch, dh][i % 3];
            match op % 3 {
                0 => alu!(h, imm & 0xff),
                1 => a.movzx([eax, ecx, edx, edi][j % 4], h),
                _ => a.cdqe(),
            }
        }
        35 => match op % 4 {
            0 => a.inc(dword_ptr(mem)),
            1 => a.dec(qword_ptr(rbx + disp)),
            2 => a.inc(byte_ptr(mem)),
            _ => a.dec(word_ptr(rbx + disp)),
        },
        _ => alu!(R16[i], imm as i16 as i32),
    }
}

const XMM: [AsmRegisterXmm; 8] = [xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7];

const R16: [AsmRegister16; 12] = [ax, cx, dx, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w];

/// Appends one random instruction the tier has no code for: the translation calls the
/// interpreter's (`jit_step`) with the state in the Cpu, and goes on with the state it left.
fn emit_stepped(a: &mut Asm, g: &mut Rng) -> Result<(), IcedError> {
    let i = g.below(12) as usize;
    let j = g.below(12) as usize;
    let (q, q2, d, w, w2) = (R64[i], R64[j], R32[i], R16[i], R16[j]);
    let disp = (g.below(32) * 8) as i32;
    let mem: AsmMemoryOperand = rbx + rsi * 8 + disp;
    let bit = g.below(64) as u32;
    match g.below(12) {
        0 => a.btc(q, bit),
        1 => a.bts(d, bit & 31),
        2 => a.btr(qword_ptr(rbx + disp), bit),
        3 => a.imul_2(w, w2),
        4 => a.movsx(w, byte_ptr(mem)),
        5 => a.xchg(q, q2),
        6 => {
            a.movq(xmm1, q2)?;
            a.movq(q, xmm1)
        }
        7 => {
            a.pushfq()?;
            a.pop(q)
        }
        8 => match g.below(3) {
            0 => a.stc(),
            1 => a.clc(),
            _ => a.cmc(),
        },
        9 => a.cmpxchg(qword_ptr(rbx + disp), q2),
        10 => a.sahf(),
        _ => a.cqo(),
    }
}

/// Appends `n` random instructions; with `stepped`, a quarter of them without code in the tier.
fn emit_mix(a: &mut Asm, g: &mut Rng, n: u64, stepped: bool) -> Result<(), IcedError> {
    for _ in 0..n {
        if stepped && g.below(4) == 0 {
            emit_stepped(a, g)?;
        } else {
            emit(a, g)?;
        }
    }
    Ok(())
}

/// Runs `code` from a state; `jit` chooses the tier, `warm` whether the TLB holds the data and
/// stack pages before the start.
fn run(
    code: &[u8],
    regs: &[u64; 16],
    mem: &[u8],
    flags: u64,
    jit: bool,
    warm: bool,
) -> TestMachine {
    let mut m = TestMachine::with_state(code, regs, mem, flags, warm);
    m.cpu.jit.on = jit;
    m.cpu.jit.hot = 1;
    assert_eq!(m.run(100_000), Stop::Halt);
    m
}

fn same(x: &TestMachine, y: &TestMachine, what: &str) {
    assert_eq!(x.cpu.gpr, y.cpu.gpr, "{what}: registers");
    assert_eq!(x.cpu.rip, y.cpu.rip, "{what}: rip");
    assert_eq!(x.cpu.icount, y.cpu.icount, "{what}: instruction count");
    assert_eq!(x.cpu.flags.get(), y.cpu.flags.get(), "{what}: flags");
    let d = DATA as usize;
    assert_eq!(
        x.ram()[d..d + 0x800],
        y.ram()[d..d + 0x800],
        "{what}: memory"
    );
    let s = STACK as usize;
    assert_eq!(x.ram()[s - 64..s], y.ram()[s - 64..s], "{what}: stack");
}

fn state(g: &mut Rng) -> ([u64; 16], Vec<u8>, u64) {
    let mut regs = [0u64; 16];
    for r in regs.iter_mut() {
        *r = g.value();
    }
    regs[3] = DATA;
    regs[4] = STACK;
    regs[6] = g.below(64);
    let mem: Vec<u8> = (0..0x800).map(|_| g.next() as u8).collect();
    (regs, mem, g.next() & ARITH)
}

#[test]
fn random_sequences_match_the_interpreter() {
    let mut g = Rng(0x2545_f491_4f6c_dd1d);
    let mut translated = 0;
    for case in 0..400 {
        let mut a = CodeAssembler::new(64).unwrap();
        // Every other case mixes in instructions run through `jit_step`.
        let n = 1 + g.below(24);
        emit_mix(&mut a, &mut g, n, case % 2 == 1).unwrap();
        a.hlt().unwrap();
        let code = a.assemble(CODE).unwrap();
        let (regs, mem, flags) = state(&mut g);
        let warm = case % 3 != 0;
        let j = run(&code, &regs, &mem, flags, true, warm);
        let i = run(&code, &regs, &mem, flags, false, warm);
        same(&j, &i, &format!("case {case} (warm {warm})"));
        translated += j.cpu.jit.translated();
    }
    assert!(translated > 300, "only {translated} blocks translated");
}

/// Runs a loop of `code` that counts RSI down from 200 from a random state (the same for both
/// tiers: `g` is cloned), with the data area grown below DATA for the shrinking index.
fn run_loop(code: &[u8], g: &Rng, jit: bool) -> TestMachine {
    let (mut regs, mem, flags) = state(&mut g.clone());
    regs[3] = DATA - 8 * 200;
    let mut big = vec![0u8; 8 * 200];
    big.extend_from_slice(&mem);
    let mut m = TestMachine::new64(code);
    m.cpu.jit.on = jit;
    m.cpu.jit.hot = 16;
    m.load(DATA - 8 * 200, &big);
    m.cpu.gpr = regs;
    m.cpu.flags.set(flags);
    assert_eq!(m.run(1_000_000), Stop::Halt, "jit {jit}");
    m
}

/// A loop whose body and conditional branch are translated, run many times, with the exit
/// condition computed from flags set inside and outside the translation.
#[test]
fn loops_reuse_translations() {
    let mut g = Rng(0x9e37_79b9_7f4a_7c15);
    for case in 0..60 {
        let mut a = CodeAssembler::new(64).unwrap();
        a.mov(rsi, 200u64).unwrap();
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        for _ in 0..1 + g.below(12) {
            emit(&mut a, &mut g).unwrap();
        }
        // RSI counts down (emit never writes it), from 200: also the memory index, whose
        // operands stay inside the data area as it shrinks.
        a.sub(rsi, 1).unwrap();
        match case % 3 {
            0 => a.jnz(top).unwrap(),
            1 => a.jg(top).unwrap(),
            _ => {
                a.cmp(rsi, 0).unwrap();
                a.ja(top).unwrap()
            }
        }
        a.hlt().unwrap();
        let code = a.assemble(CODE).unwrap();
        let (j, i) = (run_loop(&code, &g, true), run_loop(&code, &g, false));
        same(&j, &i, &format!("loop {case}"));
        assert!(j.cpu.jit.translated() > 0, "loop {case} not translated");
    }
}

/// Loops through blocks joined by conditional branches on random flags (both directions
/// likely, so traces follow either), direct jumps and calls on the same page: translations
/// that run traces of blocks, leaving from any of them, must leave the interpreter's state.
#[test]
fn traces_match_the_interpreter() {
    let mut g = Rng(0x6a09_e667_f3bc_c908);
    let mut traced = 0;
    for case in 0..80 {
        let stepped = case % 2 == 1;
        let mut a = CodeAssembler::new(64).unwrap();
        let mut func = a.create_label();
        a.mov(rsi, 200u64).unwrap();
        let mut top = a.create_label();
        a.set_label(&mut top).unwrap();
        for _ in 0..3 {
            let n = 1 + g.below(4);
            emit_mix(&mut a, &mut g, n, stepped).unwrap();
            let mut skip = a.create_label();
            match g.below(4) {
                0 => a.jb(skip),
                1 => a.jge(skip),
                2 => a.jnz(skip),
                _ => a.jp(skip),
            }
            .unwrap();
            let n = 1 + g.below(4);
            emit_mix(&mut a, &mut g, n, stepped).unwrap();
            match g.below(4) {
                0 => a.call(func).unwrap(),
                3 => {
                    // Through memory (not followed by traces: an indirect call).
                    a.lea(rdx, ptr(func)).unwrap();
                    a.mov(qword_ptr(rbx + 0x7f8), rdx).unwrap();
                    a.call(qword_ptr(rbx + 0x7f8)).unwrap();
                }
                1 => {
                    let mut over = a.create_label();
                    a.jmp(over).unwrap();
                    emit(&mut a, &mut g).unwrap(); // never runs
                    a.set_label(&mut over).unwrap();
                    emit(&mut a, &mut g).unwrap();
                }
                _ => {}
            }
            a.set_label(&mut skip).unwrap();
            emit(&mut a, &mut g).unwrap();
        }
        a.sub(rsi, 1).unwrap();
        a.jnz(top).unwrap();
        a.hlt().unwrap();
        a.set_label(&mut func).unwrap();
        let n = 1 + g.below(6);
        emit_mix(&mut a, &mut g, n, stepped).unwrap();
        a.ret().unwrap();
        let code = a.assemble(CODE).unwrap();
        let (j, i) = (run_loop(&code, &g, true), run_loop(&code, &g, false));
        same(&j, &i, &format!("case {case}"));
        traced += j.cpu.jit.traced;
    }
    assert!(traced > 100, "only {traced} blocks translated in traces");
}

/// A TLB miss in a later block of a trace (a new data page every iteration): the code exits
/// there, and the interpreter finishes that block, which it knows, rather than decoding a new
/// block at the exit's address.
#[test]
fn a_tlb_miss_in_a_trace_exits_into_its_block() {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    let mut never = a.create_label();
    a.mov(rsi, 200u64).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(rax, rcx).unwrap();
    a.cmp(rsi, 1000).unwrap();
    a.jae(never).unwrap();
    a.mov(r9, rsi).unwrap(); // the trace follows the fall-through
    a.shl(r9, 12).unwrap();
    a.mov(r8, qword_ptr(rbx + r9)).unwrap(); // a TLB miss every time
    a.add(r10, r8).unwrap();
    a.dec(rsi).unwrap();
    a.jnz(top).unwrap();
    a.set_label(&mut never).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let run = |jit| {
        let mut m = TestMachine::new64(&code);
        m.cpu.jit.on = jit;
        m.cpu.jit.hot = 16;
        m.cpu.gpr[1] = 3;
        m.cpu.gpr[3] = DATA;
        for k in 1..=200 {
            m.load(DATA + (k << 12), &k.to_le_bytes());
        }
        assert_eq!(m.run(1_000_000), Stop::Halt, "jit {jit}");
        m
    };
    let (j, i) = (run(true), run(false));
    same(&j, &i, "page walk");
    assert_eq!(j.cpu.gpr[10], (1..=200).sum::<u64>());
    assert!(j.cpu.jit.traced > 0, "no trace");
    assert_eq!(j.cpu.blocks.len(), i.cpu.blocks.len(), "blocks decoded");
}

/// A trace that comes back to its head loops inside its translation (few entries for many
/// iterations), and stops where the run loop's budget says, with the state the interpreter
/// reaches.
#[test]
fn a_trace_that_loops_stays_in_its_translation() {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut top = a.create_label();
    let mut skip = a.create_label();
    a.mov(rsi, 10_000u64).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(rax, rcx).unwrap();
    a.cmp(rax, rdx).unwrap();
    a.jb(skip).unwrap();
    a.sub(rax, rdx).unwrap();
    a.set_label(&mut skip).unwrap();
    a.dec(rsi).unwrap();
    a.jnz(top).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let run = |jit, budget| {
        let mut m = TestMachine::new64(&code);
        m.cpu.jit.on = jit;
        m.cpu.jit.hot = 16;
        m.cpu.gpr[1] = 7;
        m.cpu.gpr[2] = 1000;
        let mut stops = 0;
        loop {
            match m.run(budget) {
                Stop::Halt => break,
                s => assert_eq!(s, Stop::Budget, "jit {jit}"),
            }
            stops += 1;
        }
        (m, stops)
    };
    let (i, _) = run(false, 1_000_000);
    let (j, _) = run(true, 1_000_000);
    same(&j, &i, "one budget");
    assert!(j.cpu.jit.traced > 0 || j.cpu.jit.translated() > 0);
    // Each of its 10,000 passes would be an entry; a side exit (about one pass in 143 takes
    // the other side of JB) and the return from the other side are two.
    assert!(
        j.cpu.jit.entered < 1000,
        "entered {} times",
        j.cpu.jit.entered
    );
    // The passes run inside the translation count as translated instructions: nearly all
    // of the loop's (the interpreter runs it until it is hot, and the side exits' blocks).
    assert!(
        j.cpu.jit.ran > i.cpu.icount * 9 / 10 && j.cpu.jit.ran <= j.cpu.icount,
        "ran {} of {}",
        j.cpu.jit.ran,
        j.cpu.icount
    );
    let (j, stops) = run(true, 97);
    same(&j, &i, "budgets of 97");
    // A run overshoots its budget by less than one trace (256 instructions).
    assert!(stops > i.cpu.icount / (97 + 256), "{stops} budget stops");
}

/// Calls the function `func` at `f` `times` times, adding each EAX to R8, then lets `patch`
/// rewrite it (RDI holds `f`) and calls it once more; with the tier on and off, in that order.
fn patched_after_calls(
    f: u64,
    func: &[u8],
    times: i32,
    patch: impl Fn(&mut Asm) -> Result<(), IcedError>,
) -> [(bool, TestMachine); 2] {
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(rdi, f).unwrap();
    a.mov(ecx, 0u32).unwrap();
    let mut top = a.create_label();
    a.set_label(&mut top).unwrap();
    a.call(rdi).unwrap();
    a.add(r8, rax).unwrap();
    a.inc(ecx).unwrap();
    a.cmp(ecx, times).unwrap();
    a.jb(top).unwrap();
    patch(&mut a).unwrap();
    a.call(rdi).unwrap();
    a.hlt().unwrap();
    let main = a.assemble(CODE).unwrap();
    [true, false].map(|jit| {
        let mut m = TestMachine::new64(&main);
        m.load(f, func);
        m.cpu.jit.on = jit;
        m.cpu.jit.hot = 16;
        assert_eq!(m.run(1_000_000), Stop::Halt, "jit {jit}");
        (jit, m)
    })
}

/// Self-modifying code: a function is called until translated, then the guest rewrites its
/// immediate; the next call must run the new instruction.
#[test]
fn a_write_to_translated_code_takes_effect() {
    let f = CODE + 0x1000;
    let mut b = CodeAssembler::new(64).unwrap();
    b.mov(eax, 7u32).unwrap(); // B8 imm32: the immediate is at f + 1
    b.add(eax, ecx).unwrap();
    b.ret().unwrap();
    let func = b.assemble(f).unwrap();
    for (jit, m) in patched_after_calls(f, &func, 200, |a| a.mov(dword_ptr(rdi + 1), 1000)) {
        assert_eq!(m.cpu.gpr[0], 1200, "jit {jit}: the new code ran");
        assert_eq!(
            m.cpu.gpr[8],
            (0..200).map(|c| 7 + c).sum::<u64>(),
            "jit {jit}"
        );
        assert_eq!(jit, m.cpu.jit.translated() > 0);
    }
}

/// Self-modifying code in a block that a translation runs in the trace of the block before
/// it: the write to their page drops both, and the next call runs the new immediate.
#[test]
fn a_write_to_a_block_in_a_trace_takes_effect() {
    let f = CODE + 0x1000;
    let mut b = CodeAssembler::new(64).unwrap();
    let mut far = b.create_label();
    b.cmp(ecx, 100_000).unwrap(); // 81 F9 imm32
    b.jae(far).unwrap(); // 73 rel8: the trace goes on after it
    b.mov(eax, 7u32).unwrap(); // B8 imm32: the immediate is at f + 9
    b.add(eax, ecx).unwrap();
    b.ret().unwrap();
    b.set_label(&mut far).unwrap();
    b.hlt().unwrap();
    let func = b.assemble(f).unwrap();
    for (jit, m) in patched_after_calls(f, &func, 200, |a| a.mov(dword_ptr(rdi + 9), 1000)) {
        assert_eq!(m.cpu.gpr[0], 1200, "jit {jit}: the new code ran");
        assert_eq!(jit, m.cpu.jit.traced > 0, "jit {jit}");
    }
}

/// A TLB miss in the middle of a translated block: the code exits at that instruction with
/// the instructions before it done, and the interpreter finishes the block.
#[test]
fn a_tlb_miss_mid_block_exits_precisely() {
    let mut a = CodeAssembler::new(64).unwrap();
    a.add(rax, rcx).unwrap();
    a.cmp(rax, 5).unwrap();
    a.mov(rdx, qword_ptr(rbx + 8)).unwrap(); // cold TLB: exits here
    a.setb(r8b).unwrap();
    a.add(rdx, 1).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut mem = vec![0u8; 0x800];
    mem[8] = 41;
    let mut regs = [0u64; 16];
    regs[0] = 1;
    regs[1] = 2;
    regs[3] = DATA;
    regs[4] = STACK;
    let j = run(&code, &regs, &mem, 0, true, false);
    let i = run(&code, &regs, &mem, 0, false, false);
    same(&j, &i, "tlb miss");
    assert!(j.cpu.jit.translated() >= 1);
    assert_eq!(j.cpu.gpr[2], 42);
    assert_eq!(j.cpu.gpr[8] & 0xff, 1);
    assert_eq!(j.cpu.icount, 6);
}

/// An instruction across a page end is cached and translated like any block, and a write to
/// its second page still makes the new bytes run.
#[test]
fn a_write_to_the_second_page_of_a_straddling_instruction_takes_effect() {
    // `mov eax, imm32` (B8 + 4 bytes) starting 2 bytes before the page end: the top two bytes
    // of the immediate are on the next page; `ret` follows.
    let f = CODE + 0x2000 - 2;
    let func = [0xb8, 0x07, 0x00, 0x00, 0x00, 0xc3];
    // The second page: EAX becomes 0x10007.
    for (jit, m) in patched_after_calls(f, &func, 100, |a| a.mov(byte_ptr(rdi + 3), 1)) {
        assert_eq!(m.cpu.gpr[0], 0x1_0007, "jit {jit}: the new bytes ran");
        assert_eq!(m.cpu.gpr[8], 700, "jit {jit}");
    }
}

/// An instruction run through `jit_step` that faults mid-block: the translation stops before
/// it with the instructions before it done, and the interpreter delivers the exception (here,
/// without an IDT, a triple fault) from the same state as without the tier.
#[test]
fn a_fault_in_a_stepped_instruction_is_delivered_from_a_precise_state() {
    let mut a = CodeAssembler::new(64).unwrap();
    a.add(rax, rcx).unwrap();
    a.bts(rax, 3).unwrap(); // through jit_step
    a.setb(r9b).unwrap();
    a.xor(edx, edx).unwrap();
    a.div(r8).unwrap(); // R8 = 0: #DE, through jit_step
    a.mov(r10, 1u64).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut regs = [0u64; 16];
    regs[0] = 5;
    regs[1] = 3;
    regs[4] = STACK;
    let run = |jit| {
        let mut m = TestMachine::new64(&code);
        m.cpu.jit.on = jit;
        m.cpu.jit.hot = 1;
        m.cpu.gpr = regs;
        assert_eq!(m.run(1000), Stop::Shutdown, "jit {jit}");
        m
    };
    let (j, i) = (run(true), run(false));
    assert_eq!(j.cpu.gpr, i.cpu.gpr);
    assert_eq!(j.cpu.icount, i.cpu.icount);
    assert!(j.cpu.jit.translated() >= 1);
    assert_eq!(j.cpu.gpr[9] & 0xff, 1, "bts saw bit 3 of 8");
    assert_eq!(j.cpu.gpr[10], 0, "nothing after the fault ran");
}

/// Port output in a translated block goes through `jit_step`, which ends the block so that the
/// run loop hands the write to the VMM, as the interpreter does.
#[test]
fn port_output_in_a_translated_block_exits_to_the_vmm() {
    let mut a = CodeAssembler::new(64).unwrap();
    a.mov(eax, 0x41u32).unwrap();
    a.mov(edx, 0x3f8u32).unwrap();
    a.out(dx, al).unwrap();
    a.inc(eax).unwrap();
    a.out(dx, al).unwrap();
    a.hlt().unwrap();
    let code = a.assemble(CODE).unwrap();
    for jit in [true, false] {
        let mut m = TestMachine::new64(&code);
        m.cpu.jit.on = jit;
        m.cpu.jit.hot = 1;
        let mut out = Vec::new();
        loop {
            match m.run(1000) {
                Stop::Io => {
                    while let Some(w) = m.cpu.io.writes.pop_front() {
                        out.push((w.addr, w.data[0]));
                    }
                }
                s => {
                    assert_eq!(s, Stop::Halt, "jit {jit}");
                    break;
                }
            }
        }
        assert_eq!(out, [(0x3f8, 0x41), (0x3f8, 0x42)], "jit {jit}");
        assert_eq!(m.cpu.icount, 6, "jit {jit}");
        assert_eq!(jit, m.cpu.jit.translated() > 0);
    }
}

/// A full block cache drops the blocks that ran a few times, not the translated ones: a hot
/// loop keeps its translation while cold code (runs of one-instruction blocks, as a dynamic
/// loader's PLT stubs are) fills the cache.
#[test]
fn a_full_block_cache_keeps_hot_translations() {
    use crate::cpu::blocks::MAX_BLOCKS;
    let mut a = CodeAssembler::new(64).unwrap();
    let mut hot = a.create_label();
    for _ in 0..2 {
        a.call(hot).unwrap();
        // Each `jmp` to the next instruction is a block of its own, run once.
        for _ in 0..MAX_BLOCKS * 3 / 4 {
            let mut next = a.create_label();
            a.jmp(next).unwrap();
            a.set_label(&mut next).unwrap();
        }
    }
    a.call(hot).unwrap();
    a.hlt().unwrap();
    // The hot function: RAX += 100 + 99 + ... + 1.
    let mut top = a.create_label();
    a.set_label(&mut hot).unwrap();
    a.mov(ecx, 100u32).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(rax, rcx).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.ret().unwrap();
    let code = a.assemble(CODE).unwrap();
    assert!(CODE + code.len() as u64 <= DATA);
    let [j, i] = [true, false].map(|jit| {
        let mut m = TestMachine::new64(&code);
        m.cpu.jit.on = jit;
        m.cpu.jit.hot = 16;
        assert_eq!(m.run(10_000_000), Stop::Halt, "jit {jit}");
        m
    });
    same(&j, &i, "cold code filling the cache");
    assert_eq!(j.cpu.gpr[0], 3 * 5050);
    // The loop was translated once: the cache made room without dropping it.
    assert_eq!(j.cpu.jit.translated(), 1);
    assert!(j.cpu.blocks.len() < MAX_BLOCKS);
}
