//! The CPUID policy: what each vCPU reports about itself.
//!
//! Starts from what the backend can virtualize (KVM_GET_SUPPORTED_CPUID) and fills in the
//! per-vCPU facts that only the VMM knows: the APIC ID and the topology (one package, one
//! thread per core, `num_cpus` cores), so the guest's scheduler sees the right shape.

use vireo_hypervisor::CpuidEntry;

/// The hypervisor signature leaf base (0x40000000, "KVMKVMKVM\0\0\0" under KVM).
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;

const LEAF1_ECX_TSC_DEADLINE: u32 = 1 << 24;
const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_EDX_HTT: u32 = 1 << 28;

/// Bits needed to hold `n` distinct core IDs (ceil(log2(n))).
fn id_bits(n: u32) -> u32 {
    if n <= 1 {
        0
    } else {
        32 - (n - 1).leading_zeros()
    }
}

/// Builds the CPUID table of vCPU `cpu` out of `num_cpus`.
pub fn vcpu_cpuid(supported: &[CpuidEntry], cpu: u32, num_cpus: u32) -> Vec<CpuidEntry> {
    let core_bits = id_bits(num_cpus);
    let mut out: Vec<CpuidEntry> = Vec::with_capacity(supported.len() + 4);
    let has_leaf_1f = supported.iter().any(|e| e.function == 0x1f);
    for &e in supported {
        let mut e = e;
        match e.function {
            0 => e.eax = e.eax.max(0xb),
            1 => {
                e.ebx = (e.ebx & 0xffff) | (cpu << 24) | (num_cpus.min(255) << 16);
                e.ecx |= LEAF1_ECX_HYPERVISOR;
                if num_cpus > 1 {
                    e.edx |= LEAF1_EDX_HTT;
                } else {
                    e.edx &= !LEAF1_EDX_HTT;
                }
            }
            4 => {
                // Deterministic cache parameters: cores per package, and which caches the cores
                // share (level 3 is shared by all, lower levels are per core).
                let level = (e.eax >> 5) & 7;
                let sharing = if level >= 3 { num_cpus - 1 } else { 0 };
                e.eax = (e.eax & 0x3fff) | (sharing.min(0xfff) << 14) | ((num_cpus - 1) << 26);
            }
            // We do not virtualize the PMU: report no architectural performance counters.
            0xa => {
                e.eax = 0;
                e.ebx = 0;
                e.ecx = 0;
                e.edx = 0;
            }
            // Topology leaves are generated below.
            0xb | 0x1f => continue,
            0x8000_0008 => e.ecx = (e.ecx & !0xf0ff) | (core_bits << 12) | (num_cpus - 1),
            0x8000_001e => {
                e.eax = cpu;
                e.ebx &= !0xffff;
                e.ebx |= cpu & 0xff; // compute unit (core) id; one thread per core
                e.ecx &= !0xff; // node 0
            }
            _ => {}
        }
        out.push(e);
    }
    for function in [0xb].into_iter().chain(has_leaf_1f.then_some(0x1f)) {
        out.extend(topology_leaf(function, cpu, num_cpus, core_bits));
    }
    if let Some(e) = out.iter_mut().find(|e| e.function == HYPERVISOR_LEAF) {
        // Make sure the guest finds the features leaf that follows the signature.
        e.eax = e.eax.max(HYPERVISOR_LEAF + 1);
    }
    out
}

/// Extended topology enumeration (leaf 0xB / 0x1F): level 0 is SMT (one thread per core),
/// level 1 is the core level, and the leaf after the last level is invalid.
fn topology_leaf(function: u32, cpu: u32, num_cpus: u32, core_bits: u32) -> [CpuidEntry; 3] {
    let leaf = |index: u32, eax: u32, ebx: u32, kind: u32| CpuidEntry {
        function,
        index,
        significant_index: true,
        eax,
        ebx,
        ecx: index | (kind << 8),
        edx: cpu,
    };
    [
        leaf(0, 0, 1, 1),
        leaf(1, core_bits, num_cpus, 2),
        leaf(2, 0, 0, 0),
    ]
}

/// Whether the TSC-deadline timer mode is advertised (leaf 1 ECX bit 24).
pub fn has_tsc_deadline(entries: &[CpuidEntry]) -> bool {
    entries
        .iter()
        .any(|e| e.function == 1 && e.ecx & LEAF1_ECX_TSC_DEADLINE != 0)
}

/// MSR values every vCPU starts with (as Firecracker and Cloud Hypervisor set them).
pub fn boot_msrs() -> Vec<(u32, u64)> {
    const IA32_SYSENTER_CS: u32 = 0x174;
    const IA32_SYSENTER_ESP: u32 = 0x175;
    const IA32_SYSENTER_EIP: u32 = 0x176;
    const STAR: u32 = 0xc000_0081;
    const LSTAR: u32 = 0xc000_0082;
    const CSTAR: u32 = 0xc000_0083;
    const SYSCALL_MASK: u32 = 0xc000_0084;
    const KERNEL_GS_BASE: u32 = 0xc000_0102;
    const IA32_TSC: u32 = 0x10;
    const IA32_MISC_ENABLE: u32 = 0x1a0;
    const MISC_ENABLE_FAST_STRING: u64 = 1;
    vec![
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (STAR, 0),
        (CSTAR, 0),
        (KERNEL_GS_BASE, 0),
        (SYSCALL_MASK, 0),
        (LSTAR, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(function: u32, index: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            significant_index: false,
            eax,
            ebx,
            ecx,
            edx,
        }
    }

    fn supported() -> Vec<CpuidEntry> {
        vec![
            leaf(0, 0, 0xd, 0x6874_7541, 0x444d_4163, 0x6974_6e65),
            leaf(1, 0, 0x00a2_0f12, 0x0001_0800, 0x1, 0x1 << 28),
            leaf(4, 0, (1 << 5) | 1, 0, 0, 0),
            leaf(4, 3, (3 << 5) | 3, 0, 0, 0),
            leaf(0xa, 0, 0x0703_0002, 0, 0, 0),
            leaf(0xb, 0, 9, 9, 9, 9),
            leaf(HYPERVISOR_LEAF, 0, 0, 0x4b4d_564b, 0x564b_4d56, 0x4d),
            leaf(0x8000_0008, 0, 0x3030, 0, 0x7007, 0),
        ]
    }

    fn get(t: &[CpuidEntry], f: u32, i: u32) -> CpuidEntry {
        *t.iter().find(|e| e.function == f && e.index == i).unwrap()
    }

    #[test]
    fn per_vcpu_apic_id_and_counts() {
        let t = vcpu_cpuid(&supported(), 3, 4);
        let l1 = get(&t, 1, 0);
        assert_eq!(l1.ebx >> 24, 3);
        assert_eq!((l1.ebx >> 16) & 0xff, 4);
        assert_eq!(l1.ebx & 0xffff, 0x0800, "CLFLUSH size kept");
        assert_ne!(l1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_ne!(l1.edx & LEAF1_EDX_HTT, 0);
        assert_eq!(get(&t, 4, 0).eax >> 26, 3);
        assert_eq!((get(&t, 4, 0).eax >> 14) & 0xfff, 0, "L1 is per core");
        assert_eq!((get(&t, 4, 3).eax >> 14) & 0xfff, 3, "L3 is shared by all");
        assert_eq!(get(&t, 0xa, 0).eax, 0, "no PMU");
        assert_eq!(get(&t, 0x8000_0008, 0).ecx & 0xff, 3);
        assert_eq!((get(&t, 0x8000_0008, 0).ecx >> 12) & 0xf, 2);
        assert_eq!(get(&t, HYPERVISOR_LEAF, 0).eax, HYPERVISOR_LEAF + 1);
    }

    #[test]
    fn topology_leaves_describe_one_package() {
        let t = vcpu_cpuid(&supported(), 2, 3);
        let smt = get(&t, 0xb, 0);
        let core = get(&t, 0xb, 1);
        let end = get(&t, 0xb, 2);
        assert_eq!((smt.eax, smt.ebx, smt.ecx >> 8, smt.edx), (0, 1, 1, 2));
        assert_eq!((core.eax, core.ebx, core.ecx >> 8, core.edx), (2, 3, 2, 2));
        assert_eq!((end.ebx, end.ecx >> 8), (0, 0));
        assert_eq!(t.iter().filter(|e| e.function == 0xb).count(), 3);
        assert!(t.iter().all(|e| e.function != 0x1f));
    }

    #[test]
    fn single_cpu_has_no_htt() {
        let t = vcpu_cpuid(&supported(), 0, 1);
        assert_eq!(get(&t, 1, 0).edx & LEAF1_EDX_HTT, 0);
        assert_eq!(get(&t, 0xb, 1).eax, 0);
        assert_eq!(id_bits(1), 0);
        assert_eq!(id_bits(2), 1);
        assert_eq!(id_bits(5), 3);
    }
}
