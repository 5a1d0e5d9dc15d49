//! Model-specific registers: the ones a Linux guest touches on the CPU identity we report.
//! Unknown MSRs raise #GP(0), which is what `rdmsr_safe`/`wrmsr_safe` probes expect.

use super::seg::canonical;
use super::{cr, Cpu, Exception, Seg};
use std::collections::HashSet;
use std::sync::Mutex;

pub const IA32_TSC: u32 = 0x10;
pub const IA32_PLATFORM_ID: u32 = 0x17;
pub const IA32_APIC_BASE: u32 = 0x1b;
pub const IA32_FEATURE_CONTROL: u32 = 0x3a;
pub const IA32_SPEC_CTRL: u32 = 0x48;
pub const IA32_PRED_CMD: u32 = 0x49;
pub const IA32_BIOS_SIGN_ID: u32 = 0x8b;
pub const IA32_MTRRCAP: u32 = 0xfe;
pub const IA32_ARCH_CAPABILITIES: u32 = 0x10a;
pub const IA32_SYSENTER_CS: u32 = 0x174;
pub const IA32_SYSENTER_ESP: u32 = 0x175;
pub const IA32_SYSENTER_EIP: u32 = 0x176;
pub const IA32_MISC_ENABLE: u32 = 0x1a0;
pub const IA32_PAT: u32 = 0x277;
pub const IA32_TSC_DEADLINE: u32 = 0x6e0;
pub const X2APIC_FIRST: u32 = 0x800;
pub const X2APIC_LAST: u32 = 0x8ff;
pub const EFER: u32 = 0xc000_0080;
pub const STAR: u32 = 0xc000_0081;
pub const LSTAR: u32 = 0xc000_0082;
pub const CSTAR: u32 = 0xc000_0083;
pub const SFMASK: u32 = 0xc000_0084;
pub const FS_BASE: u32 = 0xc000_0100;
pub const GS_BASE: u32 = 0xc000_0101;
pub const KERNEL_GS_BASE: u32 = 0xc000_0102;
pub const TSC_AUX: u32 = 0xc000_0103;

/// IA32_ARCH_CAPABILITIES: not affected by the speculative-execution bugs Linux knows about
/// (an interpreter has no such side channels).
pub const ARCH_CAPABILITIES: u64 = (1 << 0) // RDCL_NO
    | (1 << 1) // IBRS_ALL
    | (1 << 3) // SKIP_L1DFL_VMENTRY
    | (1 << 4) // SSB_NO
    | (1 << 5) // MDS_NO
    | (1 << 6) // PSCHANGE_MC_NO
    | (1 << 8) // TAA_NO
    | (1 << 13) // SBDR_SSDP_NO
    | (1 << 14) // FBSDP_NO
    | (1 << 15) // PSDP_NO
    | (1 << 20) // BHI_NO
    | (1 << 24) // PBRSB_NO
    | (1 << 26) // GDS_NO
    | (1 << 27) // RFDS_NO
    | (1 << 62); // ITS_NO: without it a guest assumes it may run on an affected host and
                 // sends every kernel `ret` through a return thunk

/// The power-on PAT (WB, WT, UC-, UC, repeated).
const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

#[derive(Debug, Clone)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub sfmask: u64,
    pub kernel_gs_base: u64,
    pub tsc_aux: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub misc_enable: u64,
    pub spec_ctrl: u64,
}

impl Default for Msrs {
    fn default() -> Self {
        Msrs {
            star: 0,
            lstar: 0,
            cstar: 0,
            sfmask: 0,
            kernel_gs_base: 0,
            tsc_aux: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: PAT_DEFAULT,
            misc_enable: 1,
            spec_ctrl: 0,
        }
    }
}

/// Logs an unknown MSR once per index and direction.
fn log_unknown(index: u32, write: bool, value: u64) {
    static SEEN: Mutex<Option<HashSet<(u32, bool)>>> = Mutex::new(None);
    let first = SEEN
        .lock()
        .map(|mut s| s.get_or_insert_with(HashSet::new).insert((index, write)))
        .unwrap_or(false);
    if first {
        if write {
            tracing::debug!("emu: wrmsr {index:#x} = {value:#x}: unknown MSR, #GP");
        } else {
            tracing::debug!("emu: rdmsr {index:#x}: unknown MSR, #GP");
        }
    }
}

/// Whether every byte of a PAT value is a valid memory type (0, 1, 4, 5, 6, 7).
fn pat_valid(v: u64) -> bool {
    v.to_le_bytes().iter().all(|&b| matches!(b, 0 | 1 | 4..=7))
}

impl Cpu {
    /// Reads an MSR (RDMSR and the VMM). Err: the #GP the guest gets.
    pub fn read_msr(&mut self, index: u32) -> Result<u64, Exception> {
        let m = &self.msr;
        Ok(match index {
            IA32_TSC => self.tsc(),
            IA32_PLATFORM_ID | IA32_BIOS_SIGN_ID | IA32_MTRRCAP => 0,
            // Locked, with VMX off.
            IA32_FEATURE_CONTROL => 1,
            IA32_SPEC_CTRL => m.spec_ctrl,
            IA32_ARCH_CAPABILITIES => ARCH_CAPABILITIES,
            IA32_SYSENTER_CS => m.sysenter_cs,
            IA32_SYSENTER_ESP => m.sysenter_esp,
            IA32_SYSENTER_EIP => m.sysenter_eip,
            IA32_MISC_ENABLE => m.misc_enable,
            IA32_PAT => m.pat,
            EFER => self.efer,
            STAR => m.star,
            LSTAR => m.lstar,
            CSTAR => m.cstar,
            SFMASK => m.sfmask,
            FS_BASE => self.seg[Seg::Fs as usize].base,
            GS_BASE => self.seg[Seg::Gs as usize].base,
            KERNEL_GS_BASE => m.kernel_gs_base,
            TSC_AUX => m.tsc_aux,
            IA32_TSC_DEADLINE => match self.platform.rdmsr(index) {
                // Platform time to guest TSC; 0 (disarmed) stays 0.
                Some(0) => 0,
                Some(v) => v.wrapping_add(self.tsc_offset as u64),
                None => return Err(self.unknown(index, false, 0)),
            },
            IA32_APIC_BASE | X2APIC_FIRST..=X2APIC_LAST => match self.platform.rdmsr(index) {
                Some(v) => v,
                None => return Err(self.unknown(index, false, 0)),
            },
            _ => return Err(self.unknown(index, false, 0)),
        })
    }

    fn unknown(&self, index: u32, write: bool, value: u64) -> Exception {
        log_unknown(index, write, value);
        Exception::gp0()
    }

    /// Writes an MSR (WRMSR and the VMM's initial values). Err: the #GP the guest gets.
    pub fn write_msr(&mut self, index: u32, value: u64) -> Result<(), Exception> {
        let gp = Err(Exception::gp0());
        let need_canonical = matches!(
            index,
            LSTAR
                | CSTAR
                | FS_BASE
                | GS_BASE
                | KERNEL_GS_BASE
                | IA32_SYSENTER_ESP
                | IA32_SYSENTER_EIP
        );
        if need_canonical && !canonical(value) {
            return gp;
        }
        let m = &mut self.msr;
        match index {
            IA32_TSC => {
                // tsc() = now + offset = value.
                self.tsc_offset = value.wrapping_sub(self.platform.now_ns()) as i64;
            }
            // Microcode update signature: Linux writes 0 before reading it back.
            IA32_BIOS_SIGN_ID => {}
            IA32_SPEC_CTRL => {
                // IBRS, STIBP, SSBD, BHI_DIS_S.
                if value & !0x407 != 0 {
                    return gp;
                }
                m.spec_ctrl = value;
            }
            IA32_PRED_CMD => {
                if value & !1 != 0 {
                    return gp;
                }
            }
            IA32_SYSENTER_CS => m.sysenter_cs = value & 0xffff,
            IA32_SYSENTER_ESP => m.sysenter_esp = value,
            IA32_SYSENTER_EIP => m.sysenter_eip = value,
            IA32_MISC_ENABLE => m.misc_enable = value,
            IA32_PAT => {
                if !pat_valid(value) {
                    return gp;
                }
                m.pat = value;
            }
            EFER => return self.write_efer(value),
            STAR => m.star = value,
            LSTAR => m.lstar = value,
            CSTAR => m.cstar = value,
            SFMASK => m.sfmask = value & 0xffff_ffff,
            FS_BASE => self.seg[Seg::Fs as usize].base = value,
            GS_BASE => self.seg[Seg::Gs as usize].base = value,
            KERNEL_GS_BASE => m.kernel_gs_base = value,
            TSC_AUX => {
                if value >> 32 != 0 {
                    return gp;
                }
                m.tsc_aux = value;
            }
            IA32_TSC_DEADLINE => {
                // Guest TSC to platform time; 0 disarms.
                let v = if value == 0 {
                    0
                } else {
                    // A deadline before platform time 0 has passed already: fire at once.
                    (i128::from(value) - i128::from(self.tsc_offset)).clamp(1, u64::MAX.into())
                        as u64
                };
                return self.platform_write(index, v);
            }
            IA32_APIC_BASE | X2APIC_FIRST..=X2APIC_LAST => {
                return self.platform_write(index, value);
            }
            _ => return Err(self.unknown(index, true, value)),
        }
        Ok(())
    }

    fn platform_write(&mut self, index: u32, value: u64) -> Result<(), Exception> {
        match self.platform.wrmsr(index, value) {
            Some(true) => Ok(()),
            Some(false) => Err(Exception::gp0()),
            None => Err(self.unknown(index, true, value)),
        }
    }

    /// EFER: SCE, LME, NXE are writable; LMA follows CR0.PG and LME; LME cannot change while
    /// paging is on.
    fn write_efer(&mut self, value: u64) -> Result<(), Exception> {
        let writable = cr::EFER_SCE | cr::EFER_LME | cr::EFER_LMA | cr::EFER_NXE;
        if value & !writable != 0 {
            return Err(Exception::gp0());
        }
        let old = self.efer;
        if self.paging() && (old ^ value) & cr::EFER_LME != 0 {
            return Err(Exception::gp0());
        }
        self.efer = (value & !cr::EFER_LMA) | (old & cr::EFER_LMA);
        if (old ^ self.efer) & cr::EFER_NXE != 0 {
            self.mem.flush_all();
        }
        self.update_mode();
        Ok(())
    }
}
