//! The CPUID the emulator reports: exactly what it implements. The VMM's policy adds the
//! per-vCPU facts (APIC ID, topology leaves, cache sharing) before installing the table with
//! `set_cpuid`; [`Cpu::cpuid_query`] answers the guest's CPUID from that table.

use super::exec::sse::{HAS_SSE3, HAS_SSSE3};
use super::Cpu;
use vireo_hypervisor::CpuidEntry;

/// Highest basic leaf.
pub const MAX_BASIC: u32 = 0x16;
/// Highest extended leaf.
pub const MAX_EXTENDED: u32 = 0x8000_0008;
/// The hypervisor leaves.
pub const HYPERVISOR: u32 = 0x4000_0000;

// Leaf 1 ECX.
const ECX_SSE3: u32 = 1 << 0;
const ECX_SSSE3: u32 = 1 << 9;
const ECX_CX16: u32 = 1 << 13;
const ECX_POPCNT: u32 = 1 << 23;
const ECX_TSC_DEADLINE: u32 = 1 << 24;
const ECX_HYPERVISOR: u32 = 1 << 31;
// Leaf 1 EDX.
const EDX_FPU: u32 = 1 << 0;
const EDX_PSE: u32 = 1 << 3;
const EDX_TSC: u32 = 1 << 4;
const EDX_MSR: u32 = 1 << 5;
const EDX_PAE: u32 = 1 << 6;
const EDX_CX8: u32 = 1 << 8;
const EDX_APIC: u32 = 1 << 9;
const EDX_PGE: u32 = 1 << 13;
const EDX_CMOV: u32 = 1 << 15;
const EDX_PAT: u32 = 1 << 16;
const EDX_CLFSH: u32 = 1 << 19;
const EDX_MMX: u32 = 1 << 23;
const EDX_FXSR: u32 = 1 << 24;
const EDX_SSE: u32 = 1 << 25;
const EDX_SSE2: u32 = 1 << 26;
// Leaf 7 subleaf 0.
const EBX7_FSGSBASE: u32 = 1 << 0;
const EBX7_ERMS: u32 = 1 << 9;
const EDX7_IBRS_IBPB: u32 = 1 << 26;
const EDX7_STIBP: u32 = 1 << 27;
const EDX7_ARCH_CAPABILITIES: u32 = 1 << 29;
const EDX7_SSBD: u32 = 1 << 31;
// Leaf 7 subleaf 2.
const EDX72_BHI_CTRL: u32 = 1 << 4;
// Leaf 0x80000001.
const ECX81_LAHF_LM: u32 = 1 << 0;
const ECX81_ABM: u32 = 1 << 5;
const EDX81_SYSCALL: u32 = 1 << 11;
const EDX81_NX: u32 = 1 << 20;
const EDX81_PDPE1GB: u32 = 1 << 26;
const EDX81_RDTSCP: u32 = 1 << 27;
const EDX81_LM: u32 = 1 << 29;

/// Family 6, model 0x8f (extended model 8, model 0xf), stepping 8.
const SIGNATURE: u32 = (0x8 << 16) | (6 << 8) | (0xf << 4) | 8;

const BRAND: &[u8] = b"Vireo x86-64 emulator";
/// 12 bytes: EBX, ECX, EDX of leaf 0x40000000.
const HV_SIGNATURE: &[u8; 12] = b"VireoEmuVMM\0";

fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        significant_index: false,
        eax,
        ebx,
        ecx,
        edx,
    }
}

fn subleaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index,
        significant_index: true,
        eax,
        ebx,
        ecx,
        edx,
    }
}

/// Four little-endian dwords of `bytes` starting at `at`, zero-padded.
fn dwords(bytes: &[u8], at: usize) -> [u32; 4] {
    let mut out = [0u32; 4];
    for (i, d) in out.iter_mut().enumerate() {
        let mut b = [0u8; 4];
        for (j, x) in b.iter_mut().enumerate() {
            *x = bytes.get(at + i * 4 + j).copied().unwrap_or(0);
        }
        *d = u32::from_le_bytes(b);
    }
    out
}

/// A leaf-4 cache descriptor: `kind` 1 data, 2 instruction, 3 unified.
fn cache(index: u32, kind: u32, level: u32, ways: u32, size_kib: u32, edx: u32) -> CpuidEntry {
    const LINE: u32 = 64;
    let sets = size_kib * 1024 / (ways * LINE);
    subleaf(
        4,
        index,
        kind | (level << 5) | (1 << 8),
        ((ways - 1) << 22) | (LINE - 1),
        sets - 1,
        edx,
    )
}

/// What the emulator implements, in CPUID form.
pub fn supported() -> Vec<CpuidEntry> {
    let vendor = dwords(b"GenuineIntel", 0);
    let mut ecx1 = ECX_CX16 | ECX_POPCNT | ECX_TSC_DEADLINE | ECX_HYPERVISOR;
    if HAS_SSE3 {
        ecx1 |= ECX_SSE3;
    }
    if HAS_SSSE3 {
        ecx1 |= ECX_SSSE3;
    }
    let edx1 = EDX_FPU
        | EDX_PSE
        | EDX_TSC
        | EDX_MSR
        | EDX_PAE
        | EDX_CX8
        | EDX_APIC
        | EDX_PGE
        | EDX_CMOV
        | EDX_PAT
        | EDX_CLFSH
        | EDX_MMX
        | EDX_FXSR
        | EDX_SSE
        | EDX_SSE2;
    let hv = dwords(HV_SIGNATURE, 0);
    let mut v = vec![
        // Vendor "GenuineIntel" is EBX, EDX, ECX.
        leaf(0, MAX_BASIC, vendor[0], vendor[2], vendor[1]),
        // CLFLUSH line size 8 quadwords (64 bytes); APIC ID and counts come from the VMM.
        leaf(1, SIGNATURE, 8 << 8, ecx1, edx1),
        // Descriptor 0xff: the caches are described by leaf 4.
        leaf(2, 0x0000_ff01, 0, 0, 0),
        cache(0, 1, 1, 8, 32, 0),
        cache(1, 2, 1, 8, 32, 0),
        cache(2, 3, 2, 16, 1024, 0),
        // Inclusive L3.
        cache(3, 3, 3, 16, 8192, 1 << 1),
        subleaf(4, 4, 0, 0, 0, 0),
        leaf(6, 0, 0, 0, 0),
        subleaf(
            7,
            0,
            2, // the highest subleaf
            EBX7_FSGSBASE | EBX7_ERMS,
            0,
            EDX7_IBRS_IBPB | EDX7_STIBP | EDX7_ARCH_CAPABILITIES | EDX7_SSBD,
        ),
        subleaf(7, 1, 0, 0, 0, 0),
        // BHI_DIS_S in IA32_SPEC_CTRL: a guest that sees a hypervisor assumes Branch History
        // Injection and otherwise clears the branch history in software on every syscall.
        subleaf(7, 2, 0, 0, 0, EDX72_BHI_CTRL),
        leaf(0xa, 0, 0, 0, 0),
        // A 1 GHz crystal with a 1:1 ratio: the TSC runs at TSC_HZ.
        leaf(0x15, 1, 1, super::TSC_HZ as u32, 0),
        leaf(0x16, 1000, 1000, 1000, 0),
        leaf(HYPERVISOR, HYPERVISOR + 1, hv[0], hv[1], hv[2]),
        leaf(HYPERVISOR + 1, 0, 0, 0, 0),
        leaf(0x8000_0000, MAX_EXTENDED, 0, 0, 0),
        leaf(
            0x8000_0001,
            0,
            0,
            ECX81_LAHF_LM | ECX81_ABM,
            EDX81_SYSCALL | EDX81_NX | EDX81_PDPE1GB | EDX81_RDTSCP | EDX81_LM,
        ),
    ];
    for i in 0..3u32 {
        let d = dwords(BRAND, i as usize * 16);
        v.push(leaf(0x8000_0002 + i, d[0], d[1], d[2], d[3]));
    }
    v.extend([
        leaf(0x8000_0005, 0, 0, 0, 0),
        // L2: 1 MiB, 16-way (code 8), 64-byte lines.
        leaf(0x8000_0006, 0, 0, (1024 << 16) | (8 << 12) | 64, 0),
        // Invariant TSC.
        leaf(0x8000_0007, 0, 0, 0, 1 << 8),
        leaf(0x8000_0008, (48 << 8) | super::mem::PHYS_BITS, 0, 0, 0),
    ]);
    v
}

/// Finds `function`/`index` in a CPUID table.
fn find(table: &[CpuidEntry], function: u32, index: u32) -> Option<&CpuidEntry> {
    table
        .iter()
        .find(|e| e.function == function && (!e.significant_index || e.index == index))
}

/// Answers CPUID from a table the way Intel does: a leaf above the highest leaf of its
/// range returns the highest basic leaf; a leaf in range but absent returns zeros.
pub fn query(table: &[CpuidEntry], function: u32, index: u32) -> [u32; 4] {
    let max_of = |f: u32| find(table, f, 0).map(|e| e.eax);
    let max_basic = max_of(0).unwrap_or(0);
    let in_range = match function {
        0..=0x3fff_ffff => function <= max_basic,
        0x4000_0000..=0x4fff_ffff => {
            max_of(HYPERVISOR).is_some_and(|m| function <= m.max(HYPERVISOR))
        }
        0x8000_0000..=0x8fff_ffff => max_of(0x8000_0000).is_some_and(|m| function <= m),
        _ => false,
    };
    let function = if in_range { function } else { max_basic };
    find(table, function, index)
        .map(|e| [e.eax, e.ebx, e.ecx, e.edx])
        .unwrap_or([0; 4])
}

impl Cpu {
    /// CPUID as the guest sees it: the table the VMM installed, or, when it installed none
    /// (tests, code fragments), [`supported`].
    pub fn cpuid_query(&self, function: u32, index: u32) -> [u32; 4] {
        if self.cpuid.is_empty() {
            query(&supported(), function, index)
        } else {
            query(&self.cpuid, function, index)
        }
    }
}
