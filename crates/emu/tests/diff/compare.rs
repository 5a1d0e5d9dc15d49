//! Comparing a KVM outcome with an emulator outcome, and describing a divergence.

use super::layout::*;
use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use std::fmt::Write;

pub const REG_NAMES: [&str; 8] = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"];
/// RF: set in the EFLAGS image a fault pushes; not part of the compared state.
const RF: u32 = 1 << 16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    /// The emulator stopped (shut down: an exception it cannot deliver yet, most often #UD for an
    /// instruction not implemented) where KVM ran on.
    EmuFault,
    /// Both completed (or both faulted at the same place) with different state.
    State,
    /// Different ends otherwise (a fault on one side only, different vectors, ...).
    End,
}

pub struct Divergence {
    pub kind: Kind,
    /// The instruction the divergence is blamed on (for grouping): its disassembly with operands
    /// replaced by the form's name, e.g. the iced `Code`.
    pub blame: String,
    pub report: String,
}

/// Names the flags in `mask`.
pub fn flag_names(mask: u32) -> String {
    let names = [
        (0, "CF"),
        (2, "PF"),
        (4, "AF"),
        (6, "ZF"),
        (7, "SF"),
        (8, "TF"),
        (9, "IF"),
        (10, "DF"),
        (11, "OF"),
    ];
    let v: Vec<&str> = names
        .iter()
        .filter(|(b, _)| mask & (1 << b) != 0)
        .map(|(_, n)| *n)
        .collect();
    v.join(",")
}

/// Decodes the case's code.
pub fn decode(code: &[u8]) -> Vec<Instruction> {
    let mut d = Decoder::with_ip(32, code, CODE, DecoderOptions::NONE);
    let mut v = Vec::new();
    while d.can_decode() {
        v.push(d.decode());
    }
    v
}

pub fn disasm(ins: &Instruction) -> String {
    let mut s = String::new();
    IntelFormatter::new().format(ins, &mut s);
    s
}

/// The instruction at `eip`, if the case has one there.
fn insn_at(case: &Case, eip: u32) -> Option<Instruction> {
    decode(&case.code)
        .into_iter()
        .find(|i| i.ip() == u64::from(eip))
}

#[allow(clippy::needless_range_loop)]
fn diff_state(out: &mut String, kvm: &State, emu: &State, undef: u32) -> bool {
    let mut differs = false;
    for i in 0..8 {
        if kvm.gpr[i] != emu.gpr[i] {
            differs = true;
            let _ = writeln!(
                out,
                "  {}: kvm {:#010x}  emu {:#010x}",
                REG_NAMES[i], kvm.gpr[i], emu.gpr[i]
            );
        }
    }
    let mask = !(undef | RF);
    if kvm.eflags & mask != emu.eflags & mask {
        differs = true;
        let _ = writeln!(
            out,
            "  eflags: kvm {:#x}  emu {:#x}  (differ in {}; ignored undefined: {})",
            kvm.eflags,
            emu.eflags,
            flag_names((kvm.eflags ^ emu.eflags) & mask),
            flag_names(undef)
        );
    }
    for i in 0..8 {
        if kvm.xmm[i] != emu.xmm[i] {
            differs = true;
            let _ = writeln!(
                out,
                "  xmm{i}: kvm {:#034x}  emu {:#034x}",
                kvm.xmm[i], emu.xmm[i]
            );
        }
    }
    if kvm.mxcsr != emu.mxcsr {
        differs = true;
        let _ = writeln!(out, "  mxcsr: kvm {:#x}  emu {:#x}", kvm.mxcsr, emu.mxcsr);
    }
    for (name, base, a, b) in [
        ("data", DATA, &kvm.data, &emu.data),
        ("stack", STACK - STACK_BELOW, &kvm.stack, &emu.stack),
    ] {
        let bad: Vec<usize> = (0..a.len()).filter(|&i| a[i] != b[i]).collect();
        if let (Some(&first), Some(&last)) = (bad.first(), bad.last()) {
            differs = true;
            let hi = (last + 1).min(first + 32);
            let _ = writeln!(
                out,
                "  {name} memory differs at {} byte(s), {:#x}..{:#x}:\n    kvm {:02x?}\n    emu {:02x?}",
                bad.len(),
                base + first as u64,
                base + last as u64 + 1,
                &a[first..hi],
                &b[first..hi]
            );
        }
    }
    differs
}

/// Describes the case: code with disassembly, then the initial state.
pub fn describe_case(case: &Case) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "code ({} bytes): {:02x?}", case.code.len(), case.code);
    for ins in decode(&case.code) {
        let off = (ins.ip() - CODE) as usize;
        let bytes = &case.code[off..off + ins.len()];
        let undef = case.undef_at(ins.ip() as u32);
        let _ = writeln!(
            s,
            "  {:#x}: {:<30} {:<40} {}",
            ins.ip(),
            bytes
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" "),
            disasm(&ins),
            if undef != 0 {
                format!("(undefined before: {})", flag_names(undef))
            } else {
                String::new()
            }
        );
    }
    let _ = writeln!(
        s,
        "  {:#x}: e6 e9  out 0E9h,al (end)",
        CODE + case.code.len() as u64
    );
    let i = &case.init;
    let _ = write!(s, "init:");
    for (n, v) in REG_NAMES.iter().zip(i.gpr) {
        let _ = write!(s, " {n}={v:#x}");
    }
    let _ = writeln!(s, " eflags={:#x} ({})", i.eflags, flag_names(i.eflags));
    if i.xmm.iter().any(|&x| x != 0) {
        for (n, x) in i.xmm.iter().enumerate() {
            let _ = writeln!(s, "  xmm{n}={x:#034x}");
        }
        let _ = writeln!(s, "  mxcsr={:#x}", i.mxcsr);
    }
    s
}

/// The form (iced `Code`) of the instruction at `eip`, else of the case's first instruction.
fn blame_at(case: &Case, eip: Option<u32>) -> String {
    let all = decode(&case.code);
    let ins = eip
        .and_then(|e| insn_at(case, e))
        .or_else(|| all.last().copied());
    ins.map(|i| format!("{:?}", i.code()))
        .unwrap_or_else(|| "?".into())
}

fn end_name(o: &Outcome) -> String {
    match o {
        Outcome::Done(_) => "completed".into(),
        Outcome::Fault { vector, eip, .. } => match vector {
            Some(v) => format!("exception {v} at {eip:#x}"),
            None => format!("shutdown (undelivered exception) at {eip:#x}"),
        },
        Outcome::Other(s) => s.clone(),
    }
}

/// Compares; None if the outcomes agree.
pub fn compare(case: &Case, kvm: &Outcome, emu: &Outcome) -> Option<Divergence> {
    let mut out = String::new();
    let (kind, blame) = match (kvm, emu) {
        (Outcome::Done(k), Outcome::Done(e)) => {
            if !diff_state(&mut out, k, e, case.undef_end) {
                return None;
            }
            // Blame the last instruction; the report shows the whole sequence anyway.
            (Kind::State, blame_at(case, None))
        }
        (
            Outcome::Fault {
                vector: kv,
                eip: ke,
                state: ks,
            },
            Outcome::Fault {
                vector: ev,
                eip: ee,
                state: es,
            },
        ) if ke == ee && (ev.is_none() || ev == kv) => {
            if !diff_state(&mut out, ks, es, case.undef_at(*ke)) {
                return None;
            }
            (Kind::State, blame_at(case, Some(*ke)))
        }
        (Outcome::Done(_), Outcome::Fault { eip, vector, .. }) => {
            let _ = writeln!(
                out,
                "  kvm completed; emu {} at {eip:#x}",
                vector.map_or("shut down".to_string(), |v| format!("raised exception {v}"))
            );
            (Kind::EmuFault, blame_at(case, Some(*eip)))
        }
        _ => {
            let _ = writeln!(out, "  kvm: {}\n  emu: {}", end_name(kvm), end_name(emu));
            // Blame the emulator's fault if it has one (most often #UD: not implemented).
            let eip = match (kvm, emu) {
                (_, Outcome::Fault { eip, .. }) | (Outcome::Fault { eip, .. }, _) => Some(*eip),
                _ => None,
            };
            (Kind::End, blame_at(case, eip))
        }
    };
    let report = format!("{}{}", describe_case(case), out);
    Some(Divergence {
        kind,
        blame,
        report,
    })
}
