//! Differential tests: random 32-bit instruction sequences run on the emulator and on /dev/kvm
//! (flat protected mode, paging off), and the final registers, flags, XMM registers and memory
//! must match. See `diff/` for the runner and the generator.
//!
//! /dev/kvm is required: without it the tests fail with a message rather than skip.
//! Environment overrides for exploring: DIFF_SEED, DIFF_CASES, DIFF_MAX_GROUPS, DIFF_SHOW (how
//! many divergence groups to print in full).

mod diff;

use diff::compare::{compare, describe_case, Divergence, Kind};
use diff::gen::Generator;
use diff::layout::*;
use std::collections::BTreeMap;

const SEED: u64 = 0x5eed_0001;
const CASES: usize = 20_000;
const MAX_GROUPS: usize = 8;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| {
            let v = v.trim_start_matches("0x");
            v.parse().ok()
        })
        .unwrap_or(default)
}

fn kvm() -> diff::kvm::KvmRunner {
    diff::kvm::KvmRunner::new().unwrap_or_else(|e| {
        panic!(
            "the differential tests need /dev/kvm as their reference and it is not usable: {e}\n\
             (run them on a machine with KVM; they are never skipped)"
        )
    })
}

/// Whether KVM could not run the case at all (kvm_pvm's instruction emulator does not know
/// most SSE instructions: KVM_EXIT_INTERNAL_ERROR). Such cases are not comparisons.
fn reference_unsupported(o: &Outcome) -> bool {
    matches!(o, Outcome::Other(s) if s.contains("InternalError"))
}

struct Tally {
    /// (kind, form) -> (count, first report)
    groups: BTreeMap<(Kind, String), (usize, String)>,
    unsupported: BTreeMap<String, usize>,
    agreed: usize,
    total: usize,
}

fn run_corpus(seed: u64, cases: usize, max_groups: usize) -> Tally {
    let mut k = kvm();
    let mut e = diff::emu::EmuRunner::new();
    let mut g = Generator::new(seed, true);
    let dropped = probe_reference(&mut k, &mut g);
    eprintln!(
        "left out {} form(s) the KVM reference cannot run: {}",
        dropped.len(),
        dropped.join(" ")
    );
    let mut t = Tally {
        groups: BTreeMap::new(),
        unsupported: BTreeMap::new(),
        agreed: 0,
        total: 0,
    };
    for _ in 0..cases {
        let case = g.case(max_groups);
        t.total += 1;
        let ko = k
            .run(&case)
            .unwrap_or_else(|err| panic!("KVM failed: {err}"));
        if let Outcome::Other(_) = &ko {
            // Start from a clean VM after anything unexpected on the reference side.
            k = kvm();
        }
        if let Outcome::Other(msg) = &ko {
            let form = form_at_reported_eip(&case, msg);
            *t.unsupported.entry(form).or_default() += 1;
            continue;
        }
        let eo = e.run(&case);
        match compare(&case, &ko, &eo) {
            None => t.agreed += 1,
            Some(d) => {
                let d = minimize(&mut k, &mut e, &case, d);
                let entry = t.groups.entry((d.kind, d.blame)).or_insert((0, d.report));
                entry.0 += 1;
            }
        }
    }
    t
}

/// Drops the forms the reference cannot run: kvm_pvm runs 32-bit guest code through KVM's
/// instruction emulator, which does not know AAA/AAS/DAA/POPCNT or most SSE instructions beyond
/// the moves (they end in KVM_EXIT_INTERNAL_ERROR).
fn probe_reference(k: &mut diff::kvm::KvmRunner, g: &mut Generator) -> Vec<String> {
    let mut ok = Vec::new();
    let mut dropped = Vec::new();
    for code in g.codes() {
        let mut runs = true;
        for _ in 0..4 {
            let Some(case) = g.single(code) else { continue };
            let o = k
                .run(&case)
                .unwrap_or_else(|err| panic!("KVM failed: {err}"));
            if let Outcome::Other(_) = &o {
                *k = kvm();
            }
            if reference_unsupported(&o) {
                runs = false;
                break;
            }
        }
        if runs {
            ok.push(code);
        } else {
            dropped.push(format!("{code:?}"));
        }
    }
    g.retain(|c| ok.contains(&c));
    dropped
}

/// The form of the instruction at the EIP named in a KVM error message, if any.
fn form_at_reported_eip(case: &Case, msg: &str) -> String {
    let eip = msg
        .split("at eip 0x")
        .nth(1)
        .and_then(|h| u64::from_str_radix(h.trim(), 16).ok());
    diff::compare::decode(&case.code)
        .into_iter()
        .find(|i| Some(i.ip()) == eip)
        .map(|i| format!("{:?}", i.code()))
        .unwrap_or_else(|| format!("? ({msg})"))
}

/// Shrinks a straight-line divergent case by dropping instructions while the same kind of
/// divergence on the same form remains.
fn minimize(
    k: &mut diff::kvm::KvmRunner,
    e: &mut diff::emu::EmuRunner,
    case: &Case,
    d: Divergence,
) -> Divergence {
    let mut best = (case.clone(), d);
    loop {
        let insns = diff::compare::decode(&best.0.code);
        if best.0.groups.len() <= 1
            || insns.iter().any(|i| {
                i.is_jcc_short_or_near()
                    || i.is_jmp_short_or_near()
                    || i.is_loop()
                    || i.is_loopcc()
                    || i.is_jcx_short()
            })
        {
            return best.1;
        }
        let mut improved = false;
        for drop in 0..best.0.groups.len() {
            let Some(c) = diff::gen::without_group(&best.0, &insns, drop) else {
                continue;
            };
            let ko = match k.run(&c) {
                Ok(o) if !reference_unsupported(&o) => o,
                _ => continue,
            };
            let eo = e.run(&c);
            if let Some(nd) = compare(&c, &ko, &eo) {
                if nd.kind == best.1.kind {
                    best = (c, nd);
                    improved = true;
                    break;
                }
            }
        }
        if !improved {
            return best.1;
        }
    }
}

fn summary(t: &Tally) -> String {
    let mut s = format!(
        "{} cases: {} agree, {} not runnable on the KVM reference, {} diverge in {} group(s)\n",
        t.total,
        t.agreed,
        t.unsupported.values().sum::<usize>(),
        t.groups.values().map(|g| g.0).sum::<usize>(),
        t.groups.len()
    );
    for ((kind, form), (n, _)) in &t.groups {
        s += &format!("  {kind:?} {form}: {n}\n");
    }
    if !t.unsupported.is_empty() {
        s += "not runnable on the reference (form at the exit):";
        for (form, n) in &t.unsupported {
            s += &format!(" {form}({n})");
        }
        s += "\n";
    }
    s
}

#[test]
fn corpus_matches_kvm() {
    let seed = env_or("DIFF_SEED", SEED);
    let cases = env_or("DIFF_CASES", CASES);
    let max_groups = env_or("DIFF_MAX_GROUPS", MAX_GROUPS);
    let show = env_or("DIFF_SHOW", 40usize);
    let t = run_corpus(seed, cases, max_groups);
    let sum = summary(&t);
    eprintln!("{sum}");
    if t.groups.is_empty() {
        return;
    }
    let mut details = String::new();
    // State divergences first: they are the real bugs; EmuFault is mostly "not implemented".
    let mut groups: Vec<_> = t.groups.iter().collect();
    groups.sort_by_key(|((kind, _), _)| match kind {
        Kind::State => 0,
        Kind::End => 1,
        Kind::EmuFault => 2,
    });
    for ((kind, form), (n, report)) in groups.into_iter().take(show) {
        details += &format!("=== {kind:?} {form} ({n} case(s)); first:\n{report}\n");
    }
    panic!("emulator diverges from KVM (seed {seed:#x})\n{sum}\n{details}");
}

/// The harness itself: a case of known instructions agrees with KVM.
#[test]
fn harness_agrees_on_simple_code() {
    let mut k = kvm();
    let mut e = diff::emu::EmuRunner::new();
    let mut g = Generator::new(1, false);
    let mut init = g.init_state();
    init.gpr[0] = 5;
    init.gpr[3] = 7;
    // add eax, ebx; mov [ebp], eax; xor esi,esi; div esi (#DE)
    let case = Case {
        code: vec![0x01, 0xd8, 0x89, 0x45, 0x00],
        init,
        insns: vec![(0, 0), (2, 0)],
        undef_end: 0,
        groups: vec![0, 1],
    };
    let ko = k.run(&case).expect("kvm run");
    let Outcome::Done(s) = &ko else {
        panic!("kvm did not complete:\n{}", describe_case(&case))
    };
    assert_eq!(s.gpr[0], 12);
    assert_eq!(&s.data[0x800..0x804], &12u32.to_le_bytes());
    let eo = e.run(&case);
    if let Some(d) = compare(&case, &ko, &eo) {
        panic!("{}", d.report);
    }
}
