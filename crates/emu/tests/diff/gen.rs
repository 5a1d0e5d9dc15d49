//! Random instruction sequences over a wide set of 32-bit forms.
//!
//! Forms come from iced's opcode tables: every legacy-encoded `Code` of an allowed mnemonic whose
//! operand kinds we can fill (registers, memory in the data page or the stack window,
//! immediates). Special groups cover what needs set-up: string instructions (ESI/EDI/ECX set
//! first), division without #DE, XLAT, bit tests with a register bit offset into memory, forward
//! jumps, CALL/POP, PUSHFD/POPFD.
//!
//! Rules that keep both sides comparable:
//! - EBP always holds `EBP_BASE` (the data page's middle) and ESP only moves by push/pop, so
//!   every memory operand stays inside the compared windows; no generated instruction writes
//!   EBP or ESP explicitly.
//! - Flags an instruction leaves undefined (iced `rflags_undefined`) are tracked along every
//!   path; an instruction that would read an undefined flag is not generated, and the final
//!   comparison ignores the flags that are undefined at the end (or at a fault).

use super::layout::*;
use super::rng::Rng;
use iced_x86::{
    Code, Decoder, DecoderOptions, Encoder, EncodingKind, Instruction, InstructionInfoFactory,
    MemoryOperand, Mnemonic, OpAccess, OpCodeOperandKind as K, OpKind, Register, RflagsBits,
};

/// Mnemonics generated through the generic form tables.
const INT_MNEMONICS: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Add, Or, Adc, Sbb, And, Sub, Xor, Cmp, Test, Inc, Dec, Neg, Not, Mul, Imul, Div, Idiv, Rol,
        Ror, Rcl, Rcr, Shl, Sal, Shr, Sar, Shld, Shrd, Bt, Bts, Btr, Btc, Bsf, Bsr, Seto, Setno,
        Setb, Setae, Sete, Setne, Setbe, Seta, Sets, Setns, Setp, Setnp, Setl, Setge, Setle, Setg,
        Cmovo, Cmovno, Cmovb, Cmovae, Cmove, Cmovne, Cmovbe, Cmova, Cmovs, Cmovns, Cmovp, Cmovnp,
        Cmovl, Cmovge, Cmovle, Cmovg, Xchg, Xadd, Cmpxchg, Cmpxchg8b, Movzx, Movsx, Lea, Mov, Push,
        Pop, Lahf, Sahf, Cbw, Cwde, Cdq, Cwd, Bswap, Clc, Stc, Cmc, Cld, Std, Nop,
        // LZCNT is left out: the reference (kvm_pvm's instruction emulator) ignores the F3
        // prefix and runs it as BSR.
        Popcnt, Aaa, Aas, Daa, Das, Aam, Aad, Pushad,
    ]
};

/// SSE/SSE2 forms (only those KVM's reference can run end up compared; see the runner).
const SSE_MNEMONICS: &[Mnemonic] = {
    use Mnemonic::*;
    &[
        Movdqa, Movdqu, Movaps, Movups, Movapd, Movupd, Movd, Movq, Movss, Movsd, Movlpd, Movhpd,
        Movlps, Movhps, Movntdq, Movntps, Movntpd, Pxor, Por, Pand, Pandn, Paddb, Paddw, Paddd,
        Paddq, Psubb, Psubw, Psubd, Psubq, Paddsb, Paddsw, Paddusb, Paddusw, Psubsb, Psubsw,
        Psubusb, Psubusw, Pmullw, Pmulhw, Pmulhuw, Pmuludq, Pmaddwd, Pcmpeqb, Pcmpeqw, Pcmpeqd,
        Pcmpgtb, Pcmpgtw, Pcmpgtd, Psllw, Pslld, Psllq, Psrlw, Psrld, Psrlq, Psraw, Psrad, Pslldq,
        Psrldq, Punpcklbw, Punpcklwd, Punpckldq, Punpcklqdq, Punpckhbw, Punpckhwd, Punpckhdq,
        Punpckhqdq, Packsswb, Packssdw, Packuswb, Pshufd, Pshuflw, Pshufhw, Pmaxsw, Pmaxub, Pminsw,
        Pminub, Pavgb, Pavgw, Psadbw, Pmovmskb, Pextrw, Pinsrw, Addsd, Subsd, Mulsd, Divsd, Minsd,
        Maxsd, Sqrtsd, Comisd, Ucomisd, Cvtsi2sd, Cvtsd2si, Cvttsd2si, Cvtsd2ss, Cvtss2sd, Andpd,
        Andnpd, Orpd, Xorpd, Xorps, Andps, Orps, Unpcklpd, Unpckhpd, Shufpd, Cmpsd, Movmskpd,
        Addpd, Subpd, Mulpd, Cvtdq2pd, Cvttpd2dq, Addss, Mulss, Subss, Divss,
    ]
};

const R8: [Register; 8] = {
    use Register::*;
    [AL, CL, DL, BL, AH, CH, DH, BH]
};
const R16: [Register; 8] = {
    use Register::*;
    [AX, CX, DX, BX, SP, BP, SI, DI]
};
const R32: [Register; 8] = {
    use Register::*;
    [EAX, ECX, EDX, EBX, ESP, EBP, ESI, EDI]
};
const XMM: [Register; 8] = {
    use Register::*;
    [XMM0, XMM1, XMM2, XMM3, XMM4, XMM5, XMM6, XMM7]
};

#[derive(Clone)]
struct Form {
    code: Code,
    kinds: Vec<K>,
}

enum Op {
    R(Register),
    M(MemoryOperand),
    I(u32),
}

/// Converts iced's `RflagsBits` to EFLAGS bits.
pub fn iced_to_eflags(f: u32) -> u32 {
    let map = [
        (RflagsBits::CF, 1 << 0),
        (RflagsBits::PF, 1 << 2),
        (RflagsBits::AF, 1 << 4),
        (RflagsBits::ZF, 1 << 6),
        (RflagsBits::SF, 1 << 7),
        (RflagsBits::DF, 1 << 10),
        (RflagsBits::OF, 1 << 11),
    ];
    map.iter()
        .filter(|(i, _)| f & i != 0)
        .fold(0, |a, (_, e)| a | e)
}

fn supported_kind(k: K, sse: bool) -> bool {
    matches!(
        k,
        K::r8_or_mem
            | K::r16_or_mem
            | K::r32_or_mem
            | K::r8_reg
            | K::r8_opcode
            | K::r16_reg
            | K::r16_rm
            | K::r16_opcode
            | K::r32_reg
            | K::r32_rm
            | K::r32_opcode
            | K::mem
            | K::imm8
            | K::imm8_const_1
            | K::imm8sex16
            | K::imm8sex32
            | K::imm16
            | K::imm32
            | K::al
            | K::cl
            | K::ax
            | K::eax
    ) || (sse && matches!(k, K::xmm_reg | K::xmm_rm | K::xmm_or_mem))
}

fn forms(mnemonics: &[Mnemonic], sse: bool) -> Vec<Form> {
    Code::values()
        .filter(|c| {
            let oc = c.op_code();
            oc.is_instruction()
                && oc.mode32()
                && oc.encoding() == EncodingKind::Legacy
                && mnemonics.contains(&oc.mnemonic())
                && oc.op_kinds().iter().all(|&k| supported_kind(k, sse))
                // 16-bit addressing forms and the like.
                && oc.address_size() != 16
        })
        .map(|c| Form {
            code: c,
            kinds: c.op_code().op_kinds().to_vec(),
        })
        .collect()
}

pub struct Generator {
    rng: Rng,
    int_forms: Vec<Form>,
    sse_forms: Vec<Form>,
    info: InstructionInfoFactory,
    /// Generate SSE forms too.
    pub sse: bool,
    /// This case mixes in SSE forms.
    sse_case: bool,
}

/// One instruction being added: its bytes and decoded form.
struct Built {
    bytes: Vec<u8>,
    ins: Instruction,
}

/// A sequence under construction: groups of instructions that jumps never enter midway.
#[derive(Default)]
struct Seq {
    /// Groups; a jump group is `Jump`.
    groups: Vec<Group>,
}

enum Group {
    Plain(Vec<Built>),
    /// A forward jump over the next `skip` groups. `cond`: opcode byte for short form.
    Jump {
        short_op: Vec<u8>,
        near_op: Option<Vec<u8>>,
        skip: usize,
        ins: Instruction,
    },
}

pub fn encode(ins: &Instruction) -> Option<Vec<u8>> {
    let mut e = Encoder::new(32);
    e.encode(ins, CODE).ok()?;
    Some(e.take_buffer())
}

fn decode_one(bytes: &[u8]) -> Instruction {
    Decoder::with_ip(32, bytes, CODE, DecoderOptions::NONE).decode()
}

fn build(code: Code, ops: &[Op]) -> Option<Instruction> {
    use Op::*;
    macro_rules! w1 {
        ($a:expr) => {
            match $a {
                R(r) => Instruction::with1(code, *r),
                M(m) => Instruction::with1(code, *m),
                I(i) => Instruction::with1(code, *i),
            }
        };
    }
    let r = match ops {
        [] => Ok(Instruction::with(code)),
        [a] => w1!(a),
        [a, b] => match (a, b) {
            (R(x), R(y)) => Instruction::with2(code, *x, *y),
            (R(x), M(y)) => Instruction::with2(code, *x, *y),
            (R(x), I(y)) => Instruction::with2(code, *x, *y),
            (M(x), R(y)) => Instruction::with2(code, *x, *y),
            (M(x), I(y)) => Instruction::with2(code, *x, *y),
            (I(x), I(y)) => Instruction::with2(code, *x, *y),
            _ => return None,
        },
        [a, b, c] => match (a, b, c) {
            (R(x), R(y), I(z)) => Instruction::with3(code, *x, *y, *z),
            (R(x), M(y), I(z)) => Instruction::with3(code, *x, *y, *z),
            (M(x), R(y), I(z)) => Instruction::with3(code, *x, *y, *z),
            (R(x), R(y), R(z)) => Instruction::with3(code, *x, *y, *z),
            (M(x), R(y), R(z)) => Instruction::with3(code, *x, *y, *z),
            _ => return None,
        },
        _ => return None,
    };
    r.ok()
}

impl Generator {
    pub fn new(seed: u64, sse: bool) -> Self {
        Generator {
            rng: Rng::new(seed),
            int_forms: forms(INT_MNEMONICS, false),
            sse_forms: forms(SSE_MNEMONICS, true),
            info: InstructionInfoFactory::new(),
            sse,
            sse_case: false,
        }
    }

    /// Every form the generic generator may use.
    pub fn codes(&self) -> Vec<Code> {
        self.int_forms
            .iter()
            .chain(&self.sse_forms)
            .map(|f| f.code)
            .collect()
    }

    /// Keeps only the forms `keep` accepts (those the reference can run).
    pub fn retain(&mut self, keep: impl Fn(Code) -> bool) {
        self.int_forms.retain(|f| keep(f.code));
        self.sse_forms.retain(|f| keep(f.code));
    }

    /// A case of one instance of `code` (with its set-up), for probing the reference.
    pub fn single(&mut self, code: Code) -> Option<Case> {
        let f = Form {
            code,
            kinds: code.op_code().op_kinds().to_vec(),
        };
        let ins = self.fill(&f)?;
        let b = Self::built(&ins)?;
        let init = self.init_state();
        Some(Case {
            insns: vec![(0, 0)],
            undef_end: Self::flow_flags(&b.ins, 0)?,
            code: b.bytes,
            init,
            groups: vec![0],
        })
    }

    pub fn form_counts(&self) -> (usize, usize) {
        (self.int_forms.len(), self.sse_forms.len())
    }

    fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    /// A memory operand inside the data page (or sometimes the stack window), `size` bytes.
    fn mem(&mut self, size: u64, align: u64) -> MemoryOperand {
        let r = &mut self.rng;
        let mut off = r.below(DATA_SIZE as u64 - 32) as i64;
        if align > 1 && r.chance(85) {
            off &= !(align as i64 - 1);
        }
        let _ = size;
        let target = DATA as i64 + off;
        let ebp = i64::from(EBP_BASE);
        let seg = if r.chance(10) {
            *r.pick(&[
                Register::ES,
                Register::SS,
                Register::FS,
                Register::GS,
                Register::DS,
            ])
        } else {
            Register::None
        };
        let d = |v: i64| if (-128..128).contains(&v) { 1 } else { 4 };
        match r.below(9) {
            0 | 1 => MemoryOperand::new(Register::None, Register::None, 1, target, 4, false, seg),
            2..=4 => {
                let disp = target - ebp;
                MemoryOperand::new(Register::EBP, Register::None, 1, disp, d(disp), false, seg)
            }
            5 => {
                let s = *r.pick(&[1u32, 2, 4, 8]);
                let disp = target - ebp * (1 + i64::from(s));
                MemoryOperand::new(Register::EBP, Register::EBP, s, disp, 4, false, seg)
            }
            6 => {
                let s = *r.pick(&[1u32, 2, 4, 8]);
                let disp = target - ebp * i64::from(s);
                MemoryOperand::new(Register::None, Register::EBP, s, disp, 4, false, seg)
            }
            7 => {
                // [ebp] with a zero displacement where it fits the page.
                let disp = (off & 0x3f) - 0x20;
                MemoryOperand::new(Register::EBP, Register::None, 1, disp, d(disp), false, seg)
            }
            _ => {
                // The stack: [esp + disp].
                let disp = r.below(0x40) as i64;
                MemoryOperand::new(Register::ESP, Register::None, 1, disp, d(disp), false, seg)
            }
        }
    }

    /// Any addressing form, for LEA (no access): every base/index/scale/displacement.
    fn lea_mem(&mut self) -> MemoryOperand {
        let r = &mut self.rng;
        if r.chance(15) {
            // 16-bit addressing.
            let forms: [(Register, Register); 10] = {
                use Register::*;
                [
                    (BX, SI),
                    (BX, DI),
                    (BP, SI),
                    (BP, DI),
                    (SI, None),
                    (DI, None),
                    (BP, None),
                    (BX, None),
                    (None, None),
                    (BX, SI),
                ]
            };
            let (b, i) = *r.pick(&forms);
            let disp = r.edge32() as i64 & 0xffff;
            let ds = if b == Register::None {
                2
            } else {
                *r.pick(&[0u32, 1, 2])
            };
            let disp = match ds {
                0 => 0,
                1 => (disp as u8 as i8) as i64,
                _ => disp as u16 as i16 as i64,
            };
            let ds = if ds == 0 && b == Register::BP { 1 } else { ds };
            return MemoryOperand::new(b, i, 1, disp, ds, false, Register::None);
        }
        let base = if r.chance(85) {
            *r.pick(&R32)
        } else {
            Register::None
        };
        let index = if r.chance(50) {
            *r.pick(&[
                Register::EAX,
                Register::ECX,
                Register::EDX,
                Register::EBX,
                Register::EBP,
                Register::ESI,
                Register::EDI,
            ])
        } else {
            Register::None
        };
        let scale = *r.pick(&[1u32, 2, 4, 8]);
        let disp = r.edge32() as i32 as i64;
        let ds = if base == Register::None {
            4
        } else {
            *r.pick(&[0u32, 1, 4])
        };
        let disp = match ds {
            0 => 0,
            1 => (disp as i8) as i64,
            _ => disp,
        };
        MemoryOperand::new(base, index, scale, disp, ds, false, Register::None)
    }

    fn imm(&mut self, k: K) -> u32 {
        let r = &mut self.rng;
        match k {
            K::imm8 => {
                if r.chance(50) {
                    *r.pick(&[
                        0u32, 1, 2, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 0x7f, 0x80, 0xff,
                    ])
                } else {
                    r.u32() & 0xff
                }
            }
            K::imm8sex16 | K::imm8sex32 => r.edge32() as u8 as i8 as i32 as u32,
            K::imm16 => r.edge32() & 0xffff,
            _ => r.edge32(),
        }
    }

    /// Fills a generic form's operands.
    fn fill(&mut self, f: &Form) -> Option<Instruction> {
        let mnem = f.code.op_code().mnemonic();
        let mem_size = |c: Code| c.op_code().memory_size().size() as u64;
        let mut ops = Vec::new();
        for &k in &f.kinds {
            let use_mem = self.rng.chance(40);
            let op = match k {
                K::r8_or_mem if use_mem => Op::M(self.mem(1, 1)),
                K::r16_or_mem if use_mem => Op::M(self.mem(2, 2)),
                K::r32_or_mem if use_mem => Op::M(self.mem(4, 4)),
                K::xmm_or_mem if use_mem => {
                    let sz = mem_size(f.code).max(1);
                    Op::M(self.mem(sz, sz))
                }
                K::mem => {
                    if mnem == Mnemonic::Lea {
                        Op::M(self.lea_mem())
                    } else {
                        let sz = mem_size(f.code).max(1);
                        Op::M(self.mem(sz, sz.min(16)))
                    }
                }
                K::r8_or_mem | K::r8_reg | K::r8_opcode => Op::R(*self.rng.pick(&R8)),
                K::r16_or_mem | K::r16_reg | K::r16_rm | K::r16_opcode => {
                    Op::R(*self.rng.pick(&R16))
                }
                K::r32_or_mem | K::r32_reg | K::r32_rm | K::r32_opcode => {
                    Op::R(*self.rng.pick(&R32))
                }
                K::xmm_reg | K::xmm_rm | K::xmm_or_mem => Op::R(*self.rng.pick(&XMM)),
                K::al => Op::R(Register::AL),
                K::cl => Op::R(Register::CL),
                K::ax => Op::R(Register::AX),
                K::eax => Op::R(Register::EAX),
                K::imm8_const_1 => Op::I(1),
                K::imm8 | K::imm8sex16 | K::imm8sex32 | K::imm16 | K::imm32 => Op::I(self.imm(k)),
                _ => return None,
            };
            ops.push(op);
        }
        let mut ins = build(f.code, &ops)?;
        // 16-bit SHLD/SHRD with a count above 16 leave an undefined result: keep it in range.
        if matches!(mnem, Mnemonic::Shld | Mnemonic::Shrd)
            && matches!(f.code.op_code().operand_size(), 16)
            && ins.op_kind(2) == OpKind::Immediate8
        {
            ins.set_immediate8(ins.immediate8() % 17);
        }
        let oc = f.code.op_code();
        if oc.can_use_lock_prefix() && ins.op0_kind() == OpKind::Memory && self.rng.chance(25) {
            ins.set_has_lock_prefix(true);
        }
        if !self.writes_ok(&ins) {
            return None;
        }
        Some(ins)
    }

    /// No explicit write to ESP or EBP (or SP/BP), and no implicit write to EBP.
    fn writes_ok(&mut self, ins: &Instruction) -> bool {
        let info = self.info.info(ins);
        for i in 0..ins.op_count() {
            if ins.op_kind(i) == OpKind::Register {
                let full = ins.op_register(i).full_register32();
                if (full == Register::ESP || full == Register::EBP)
                    && !matches!(info.op_access(i), OpAccess::Read | OpAccess::None)
                {
                    return false;
                }
            }
        }
        !info.used_registers().iter().any(|u| {
            u.register().full_register32() == Register::EBP
                && !matches!(u.access(), OpAccess::Read | OpAccess::None)
        })
    }

    fn built(ins: &Instruction) -> Option<Built> {
        let bytes = encode(ins)?;
        let ins = decode_one(&bytes);
        Some(Built { bytes, ins })
    }

    fn raw(bytes: &[u8]) -> Built {
        Built {
            bytes: bytes.to_vec(),
            ins: decode_one(bytes),
        }
    }

    fn mov_r32(r: Register, v: u32) -> Built {
        Self::built(&Instruction::with2(Code::Mov_r32_imm32, r, v).expect("mov")).expect("mov")
    }

    /// A generic form, with set-up where the form needs it.
    fn generic(&mut self, sse: bool) -> Option<Vec<Built>> {
        let f = if sse {
            self.rng.pick(&self.sse_forms).clone()
        } else {
            self.rng.pick(&self.int_forms).clone()
        };
        let ins = self.fill(&f)?;
        let mnem = ins.mnemonic();
        let mut g = Vec::new();
        // BT* into memory with a register bit offset: keep the offset small.
        if matches!(
            mnem,
            Mnemonic::Bt | Mnemonic::Bts | Mnemonic::Btr | Mnemonic::Btc
        ) && ins.op0_kind() == OpKind::Memory
            && ins.op1_kind() == OpKind::Register
        {
            let r = ins.op1_register().full_register32();
            if r == Register::ESP || r == Register::EBP {
                return None;
            }
            g.push(Self::mov_r32(r, self.rng.range(-200, 200) as u32));
        }
        // 16-bit SHLD/SHRD by CL: a count above 16 gives an undefined result.
        if matches!(mnem, Mnemonic::Shld | Mnemonic::Shrd)
            && ins.op_count() == 3
            && ins.op2_kind() == OpKind::Register
            && f.code.op_code().operand_size() == 16
        {
            let c = self.rng.below(17) as u32;
            g.push(Self::built(
                &Instruction::with2(Code::Mov_r8_imm8, Register::CL, c).ok()?,
            )?);
        }
        g.push(Self::built(&ins)?);
        Some(g)
    }

    /// DIV/IDIV set up so that no #DE happens.
    fn safe_div(&mut self) -> Option<Vec<Built>> {
        let signed = self.rng.chance(50);
        let size = *self.rng.pick(&[1u32, 2, 4]);
        // A divisor whose every byte is in 1..=0xfe: non-zero and not -1 at any width.
        let mut v = 0u32;
        for _ in 0..4 {
            v = (v << 8) | (1 + self.rng.below(0xfe) as u32);
        }
        let mut g = Vec::new();
        let (op, dv): (Op, u32) = if self.rng.chance(60) {
            let r32 = *self
                .rng
                .pick(&[Register::ECX, Register::EBX, Register::ESI, Register::EDI]);
            g.push(Self::mov_r32(r32, v));
            let idx = R32.iter().position(|&r| r == r32).unwrap_or(1);
            match size {
                1 => {
                    let hi = idx < 4 && self.rng.chance(50);
                    if idx >= 4 {
                        // SI/DI have no 8-bit halves in 32-bit code: use CL.
                        g.pop();
                        g.push(Self::mov_r32(Register::ECX, v));
                        (Op::R(Register::CL), v & 0xff)
                    } else if hi {
                        (Op::R(R8[idx + 4]), (v >> 8) & 0xff)
                    } else {
                        (Op::R(R8[idx]), v & 0xff)
                    }
                }
                2 => (Op::R(R16[idx]), v & 0xffff),
                _ => (Op::R(r32), v),
            }
        } else {
            let m = self.mem(4, 4);
            g.push(Self::built(
                &Instruction::with2(Code::Mov_rm32_imm32, m, v).ok()?,
            )?);
            let dv = match size {
                1 => v & 0xff,
                2 => v & 0xffff,
                _ => v,
            };
            (Op::M(m), dv)
        };
        if signed {
            let c = match size {
                1 => Code::Cbw,
                2 => Code::Cwd,
                _ => Code::Cdq,
            };
            g.push(Self::built(&Instruction::with(c))?);
        } else {
            let hi = self.rng.below(u64::from(dv)) as u32;
            match size {
                1 => g.push(Self::built(
                    &Instruction::with2(Code::Mov_r8_imm8, Register::AH, hi).ok()?,
                )?),
                _ => g.push(Self::mov_r32(Register::EDX, hi)),
            }
        }
        let code = match (signed, size, &op) {
            (false, 1, _) => Code::Div_rm8,
            (false, 2, _) => Code::Div_rm16,
            (false, _, _) => Code::Div_rm32,
            (true, 1, _) => Code::Idiv_rm8,
            (true, 2, _) => Code::Idiv_rm16,
            (true, _, _) => Code::Idiv_rm32,
        };
        g.push(Self::built(&build(code, &[op])?)?);
        Some(g)
    }

    /// A string instruction with ESI/EDI in the data page and a small count.
    fn string(&mut self) -> Vec<Built> {
        let r = &mut self.rng;
        let mut g = vec![
            Self::mov_r32(Register::ESI, (DATA + 0x400 + r.below(0x800)) as u32),
            Self::mov_r32(Register::EDI, (DATA + 0x400 + r.below(0x800)) as u32),
            Self::mov_r32(Register::ECX, *r.pick(&[0u32, 1, 2, 3, 5, 8, 13, 16])),
        ];
        if r.chance(30) {
            g.push(Self::raw(if r.chance(50) { &[0xfd] } else { &[0xfc] })); // std / cld
        }
        let op: u8 = *r.pick(&[0xa4, 0xa5, 0xa6, 0xa7, 0xaa, 0xab, 0xac, 0xad, 0xae, 0xaf]);
        let compares = matches!(op, 0xa6 | 0xa7 | 0xae | 0xaf);
        let mut bytes = Vec::new();
        match r.below(3) {
            0 => {}
            1 => bytes.push(0xf3),
            _ => bytes.push(if compares { 0xf2 } else { 0xf3 }),
        }
        if op & 1 == 1 && r.chance(40) {
            bytes.push(0x66);
        }
        if r.chance(10) && !matches!(op, 0xaa | 0xab | 0xae | 0xaf) {
            bytes.push(*r.pick(&[0x26u8, 0x36, 0x64, 0x65])); // source segment override
        }
        bytes.push(op);
        g.push(Self::raw(&bytes));
        g
    }

    /// A jump over the next `skip` groups.
    fn jump(&mut self, skip: usize) -> Group {
        let r = &mut self.rng;
        let (short_op, near_op): (Vec<u8>, Option<Vec<u8>>) = match r.below(10) {
            0..=5 => {
                let cc = r.below(16) as u8;
                (vec![0x70 + cc], Some(vec![0x0f, 0x80 + cc]))
            }
            6 => (vec![0xeb], Some(vec![0xe9])),
            7 => (vec![0xe3], None),                           // jecxz
            _ => (vec![*r.pick(&[0xe0u8, 0xe1, 0xe2])], None), // loopne/loope/loop
        };
        let mut b = short_op.clone();
        b.push(0);
        let ins = decode_one(&b);
        Group::Jump {
            short_op,
            near_op,
            skip,
            ins,
        }
    }

    fn group(&mut self, remaining: usize) -> Option<Group> {
        let r = self.rng.below(100);
        let g = match r {
            0..=5 if remaining > 0 => {
                let skip = self.rng.below(remaining as u64 + 1) as usize;
                return Some(self.jump(skip));
            }
            6..=9 => self.string(),
            10..=13 => self.safe_div()?,
            14 => {
                // XLAT with EBX in the data page.
                vec![
                    Self::mov_r32(Register::EBX, (DATA + self.rng.below(0xf00)) as u32),
                    Self::raw(&[0xd7]),
                ]
            }
            15 => {
                // CALL to the next instruction, POP the return address.
                let reg = *self.rng.pick(&[0x58u8, 0x59, 0x5a, 0x5b, 0x5e, 0x5f]);
                vec![Self::raw(&[0xe8, 0, 0, 0, 0]), Self::raw(&[reg])]
            }
            16 => {
                // POPFD of a value with random arithmetic flags and DF (never TF/IF/AC/NT).
                let v = (self.rng.u32() & 0x8d5) | 2;
                let p = if self.rng.chance(50) {
                    Self::built(&Instruction::with1(Code::Pushd_imm32, v).ok()?)?
                } else {
                    // Bit 7 clear: the sign extension must not set high EFLAGS bits.
                    Self::built(&Instruction::with1(Code::Pushd_imm8, (v & 0x57) as i32).ok()?)?
                };
                vec![p, Self::raw(&[0x9d])]
            }
            17 => {
                // PUSHFD and pop it.
                let reg = *self.rng.pick(&[0x58u8, 0x59, 0x5a, 0x5b, 0x5e, 0x5f]);
                vec![Self::raw(&[0x9c]), Self::raw(&[reg])]
            }
            18..=44 if self.sse_case => self.generic(true)?,
            _ => self.generic(false)?,
        };
        Some(Group::Plain(g))
    }

    /// Flags undefined after `ins` when `undef` were undefined before; None if `ins` reads an
    /// undefined flag.
    fn flow_flags(ins: &Instruction, undef: u32) -> Option<u32> {
        let read = iced_to_eflags(ins.rflags_read());
        if read & undef != 0 {
            return None;
        }
        let undefined = iced_to_eflags(ins.rflags_undefined());
        let modified = iced_to_eflags(ins.rflags_modified());
        // A count in CL may be 0 (no flag changes) and REP may run no iteration: flags written
        // "defined" are only as defined as before.
        let maybe = (0..ins.op_count()).any(|i| {
            ins.op_kind(i) == OpKind::Register
                && ins.op_register(i) == Register::CL
                && matches!(
                    ins.mnemonic(),
                    Mnemonic::Rol
                        | Mnemonic::Ror
                        | Mnemonic::Rcl
                        | Mnemonic::Rcr
                        | Mnemonic::Shl
                        | Mnemonic::Sal
                        | Mnemonic::Shr
                        | Mnemonic::Sar
                        | Mnemonic::Shld
                        | Mnemonic::Shrd
                )
        }) || ins.has_rep_prefix()
            || ins.has_repne_prefix();
        // SHL/SHR leave CF undefined when the count reaches the operand width, which only 8- and
        // 16-bit operands can see (counts are masked to 5 bits).
        let mut undefined = undefined;
        // AAM/AAD: the reference (KVM's instruction emulator, em_aam/em_aad) computes SF/ZF/PF
        // from all of EAX instead of AL (e.g. `aad 15h` with EAX=0x28d750f1: AL=0x81 but SF=0).
        // The registers are still compared; these flags are checked by the native unit tests.
        if matches!(ins.mnemonic(), Mnemonic::Aam | Mnemonic::Aad) {
            undefined |= iced_to_eflags(RflagsBits::SF | RflagsBits::ZF | RflagsBits::PF);
        }
        if matches!(
            ins.mnemonic(),
            Mnemonic::Shl | Mnemonic::Sal | Mnemonic::Shr
        ) {
            let width = if ins.op0_kind() == OpKind::Register {
                ins.op0_register().size() as u32 * 8
            } else {
                ins.memory_size().size() as u32 * 8
            };
            let count = match ins.op1_kind() {
                OpKind::Immediate8 => Some(u32::from(ins.immediate8()) & 31),
                OpKind::Register => None,
                _ => Some(1),
            };
            if width < 32 && count.is_none_or(|c| c >= width) {
                undefined |= 1;
            }
        }
        Some(if maybe {
            undef | undefined
        } else {
            (undef & !modified) | undefined
        })
    }

    /// A random case of 1..=max_groups groups.
    pub fn case(&mut self, max_groups: usize) -> Case {
        let n = 1 + self.rng.below(max_groups as u64) as usize;
        let init = self.init_state();
        self.sse_case = self.sse && !self.sse_forms.is_empty() && self.rng.chance(30);
        let mut seq = Seq::default();
        // Undefined flags flowing into each group index (from jumps), and from fallthrough.
        let mut incoming = vec![0u32; n + 1];
        let mut reached = vec![false; n + 1];
        let mut undef = 0u32;
        let mut falls = true;
        let mut insns_undef: Vec<Vec<u32>> = Vec::new();
        let mut i = 0;
        let mut tries = 0;
        while i < n {
            let in_undef = if falls {
                undef | if reached[i] { incoming[i] } else { 0 }
            } else {
                incoming[i]
            };
            tries += 1;
            let Some(g) = self.group(n - i - 1) else {
                continue;
            };
            // Flag flow through the group.
            let mut u = in_undef;
            let mut per = Vec::new();
            let ok = match &g {
                Group::Plain(v) => v.iter().all(|b| {
                    per.push(u);
                    match Self::flow_flags(&b.ins, u) {
                        Some(nu) => {
                            u = nu;
                            true
                        }
                        None => false,
                    }
                }),
                Group::Jump { ins, .. } => {
                    per.push(u);
                    Self::flow_flags(ins, u).is_some()
                }
            };
            if !ok {
                if tries > 1000 {
                    break;
                }
                continue;
            }
            falls = true;
            if let Group::Jump { skip, ins, .. } = &g {
                let t = i + 1 + skip;
                incoming[t] |= u;
                reached[t] = true;
                if ins.mnemonic() == Mnemonic::Jmp {
                    falls = false;
                }
            }
            undef = u;
            insns_undef.push(per);
            seq.groups.push(g);
            i += 1;
        }
        let n = seq.groups.len();
        let undef_end = if falls {
            undef | if reached[n] { incoming[n] } else { 0 }
        } else {
            incoming[n]
        };
        self.layout(seq, init, insns_undef, undef_end)
    }

    /// Lays out the groups, resolving jump displacements.
    fn layout(&mut self, seq: Seq, init: State, per: Vec<Vec<u32>>, undef_end: u32) -> Case {
        // Sizes: jumps use the short form unless the near form is chosen or needed.
        let near: Vec<bool> = seq
            .groups
            .iter()
            .map(|g| {
                matches!(
                    g,
                    Group::Jump {
                        near_op: Some(_),
                        ..
                    }
                ) && self.rng.chance(25)
            })
            .collect();
        let size = |i: usize, g: &Group, near: &[bool]| match g {
            Group::Plain(v) => v.iter().map(|b| b.bytes.len()).sum::<usize>(),
            Group::Jump {
                short_op, near_op, ..
            } => {
                if near[i] {
                    near_op.as_ref().map_or(0, |o| o.len()) + 4
                } else {
                    short_op.len() + 1
                }
            }
        };
        let mut near = near;
        // Short jumps whose target is too far become near (or skip fewer groups: loop/jecxz).
        let mut skips: Vec<usize> = seq
            .groups
            .iter()
            .map(|g| {
                if let Group::Jump { skip, .. } = g {
                    *skip
                } else {
                    0
                }
            })
            .collect();
        loop {
            let sizes: Vec<usize> = seq
                .groups
                .iter()
                .enumerate()
                .map(|(i, g)| size(i, g, &near))
                .collect();
            let mut changed = false;
            for (i, g) in seq.groups.iter().enumerate() {
                if let Group::Jump { near_op, .. } = g {
                    let dist: usize = sizes[i + 1..i + 1 + skips[i]].iter().sum();
                    if !near[i] && dist > 127 {
                        if near_op.is_some() {
                            near[i] = true;
                        } else {
                            skips[i] -= 1;
                        }
                        changed = true;
                    }
                }
            }
            if !changed {
                break;
            }
        }
        let sizes: Vec<usize> = seq
            .groups
            .iter()
            .enumerate()
            .map(|(i, g)| size(i, g, &near))
            .collect();
        let mut code = Vec::new();
        let mut insns = Vec::new();
        let mut groups = Vec::new();
        for (i, g) in seq.groups.iter().enumerate() {
            groups.push(insns.len());
            match g {
                Group::Plain(v) => {
                    for (b, u) in v.iter().zip(&per[i]) {
                        insns.push((code.len(), *u));
                        code.extend_from_slice(&b.bytes);
                    }
                }
                Group::Jump {
                    short_op, near_op, ..
                } => {
                    insns.push((code.len(), per[i][0]));
                    let dist: usize = sizes[i + 1..i + 1 + skips[i]].iter().sum();
                    if near[i] {
                        code.extend_from_slice(near_op.as_ref().expect("near form"));
                        code.extend_from_slice(&(dist as u32).to_le_bytes());
                    } else {
                        code.extend_from_slice(short_op);
                        code.push(dist as u8);
                    }
                }
            }
        }
        Case {
            code,
            init,
            insns,
            undef_end,
            groups,
        }
    }

    pub fn init_state(&mut self) -> State {
        let r = &mut self.rng;
        let mut gpr = [0u32; 8];
        for g in gpr.iter_mut() {
            *g = r.edge32();
        }
        gpr[4] = STACK as u32;
        gpr[5] = EBP_BASE;
        // Arithmetic flags at random, DF sometimes.
        let mut eflags = (r.u32() & 0x8d5) | 2;
        if r.chance(70) {
            eflags &= !(1 << 10);
        }
        let mut xmm = [0u128; 8];
        for x in xmm.iter_mut() {
            *x = (u128::from(r.edge64()) << 64) | u128::from(r.edge64());
        }
        let mxcsr = if r.chance(80) {
            0x1f80
        } else {
            0x1f80 | ((r.below(4) as u32) << 13) | if r.chance(30) { 0x8040 } else { 0 }
        };
        let mut data = vec![0u8; DATA_SIZE];
        for chunk in data.chunks_mut(4) {
            chunk.copy_from_slice(&r.edge32().to_le_bytes());
        }
        let mut stack = vec![0u8; (STACK_BELOW + STACK_ABOVE) as usize];
        for chunk in stack.chunks_mut(4) {
            chunk.copy_from_slice(&r.edge32().to_le_bytes());
        }
        State {
            gpr,
            eflags,
            xmm,
            mxcsr,
            data,
            stack,
        }
    }
}

/// `case` (straight-line code only) without its group `drop`, with the flag analysis redone;
/// None if the remaining code would read an undefined flag.
pub fn without_group(case: &Case, insns: &[Instruction], drop: usize) -> Option<Case> {
    let start = *case.groups.get(drop)?;
    let end = case.groups.get(drop + 1).copied().unwrap_or(insns.len());
    let mut code = Vec::new();
    let mut per = Vec::new();
    let mut groups = Vec::new();
    let mut undef = 0u32;
    for (i, ins) in insns.iter().enumerate() {
        if (start..end).contains(&i) {
            continue;
        }
        if case.groups.contains(&i) {
            groups.push(per.len());
        }
        let off = (ins.ip() - CODE) as usize;
        per.push((code.len(), undef));
        code.extend_from_slice(&case.code[off..off + ins.len()]);
        undef = Generator::flow_flags(&decode_one(&case.code[off..off + ins.len()]), undef)?;
    }
    Some(Case {
        code,
        init: case.init.clone(),
        insns: per,
        undef_end: undef,
        groups,
    })
}
