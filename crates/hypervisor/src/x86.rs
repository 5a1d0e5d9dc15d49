//! x86-64 register state in a backend-neutral form.

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Regs {
    pub rax: u64,
    pub rbx: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub rsp: u64,
    pub rbp: u64,
    pub r8: u64,
    pub r9: u64,
    pub r10: u64,
    pub r11: u64,
    pub r12: u64,
    pub r13: u64,
    pub r14: u64,
    pub r15: u64,
    pub rip: u64,
    pub rflags: u64,
}

/// A segment register with its hidden descriptor cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    pub base: u64,
    pub limit: u32,
    pub selector: u16,
    pub type_: u8,
    pub present: bool,
    pub dpl: u8,
    /// Default operand size (D/B bit).
    pub db: bool,
    /// Code or data (S bit): false for system segments such as the TSS and LDT.
    pub s: bool,
    /// 64-bit code segment (L bit).
    pub l: bool,
    pub g: bool,
    pub avl: bool,
    pub unusable: bool,
}

impl Segment {
    /// Decodes a GDT descriptor, as the CPU does when a selector is loaded.
    pub fn from_gdt_entry(selector: u16, entry: u64) -> Self {
        let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
        let limit = ((entry & 0xffff) | (((entry >> 48) & 0xf) << 16)) as u32;
        let g = (entry >> 55) & 1 == 1;
        Segment {
            base,
            // The granularity bit scales the limit to 4 KiB pages.
            limit: if g { (limit << 12) | 0xfff } else { limit },
            selector,
            type_: ((entry >> 40) & 0xf) as u8,
            s: (entry >> 44) & 1 == 1,
            dpl: ((entry >> 45) & 3) as u8,
            present: (entry >> 47) & 1 == 1,
            avl: (entry >> 52) & 1 == 1,
            l: (entry >> 53) & 1 == 1,
            db: (entry >> 54) & 1 == 1,
            g,
            unusable: false,
        }
    }
}

/// A descriptor table register (GDTR, IDTR).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Table {
    pub base: u64,
    pub limit: u16,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sregs {
    pub cs: Segment,
    pub ds: Segment,
    pub es: Segment,
    pub fs: Segment,
    pub gs: Segment,
    pub ss: Segment,
    pub tr: Segment,
    pub ldt: Segment,
    pub gdt: Table,
    pub idt: Table,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    pub apic_base: u64,
}

/// One CPUID leaf/subleaf and its four result registers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuidEntry {
    pub function: u32,
    pub index: u32,
    /// Whether `index` (ECX on input) selects a subleaf.
    pub significant_index: bool,
    pub eax: u32,
    pub ebx: u32,
    pub ecx: u32,
    pub edx: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_flat_code64_descriptor() {
        // The 64-bit kernel code descriptor Linux's boot GDT uses.
        let s = Segment::from_gdt_entry(0x10, 0x00af_9b00_0000_ffff);
        assert_eq!(s.base, 0);
        assert_eq!(s.limit, 0xffff_ffff);
        assert!(s.l && s.present && s.s && s.g && !s.db);
        assert_eq!(s.type_, 0xb);
    }

    #[test]
    fn decodes_flat_data32_descriptor() {
        let s = Segment::from_gdt_entry(0x18, 0x00cf_9300_0000_ffff);
        assert!(s.db && !s.l && s.g);
        assert_eq!(s.type_, 3);
        assert_eq!(s.limit, 0xffff_ffff);
    }
}
