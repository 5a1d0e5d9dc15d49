//! Segment register loads and descriptor tables.
//!
//! Protected and long mode read descriptors from the GDT or LDT with the checks that matter
//! to an operating system (null selectors, presence, type and privilege); real mode forms the
//! base from the selector. Gates and the TSS have their own small helpers here, used by
//! interrupt delivery and the far transfers.

use super::{cr, Cpu, Exception, Seg, R};
use vireo_hypervisor::Segment;

/// Descriptor type bits (the 4-bit type field).
pub mod ty {
    /// Code segment (with the S bit set).
    pub const CODE: u8 = 8;
    /// Code: conforming; data: expand-down.
    pub const CONFORMING: u8 = 4;
    /// Code: readable; data: writable.
    pub const RW: u8 = 2;
    pub const ACCESSED: u8 = 1;
    /// System types.
    pub const LDT: u8 = 2;
    pub const TSS16_AVAIL: u8 = 1;
    pub const TSS16_BUSY: u8 = 3;
    pub const CALL_GATE16: u8 = 4;
    pub const TASK_GATE: u8 = 5;
    pub const INT_GATE16: u8 = 6;
    pub const TRAP_GATE16: u8 = 7;
    pub const TSS_AVAIL: u8 = 9;
    pub const TSS_BUSY: u8 = 0xb;
    pub const CALL_GATE: u8 = 0xc;
    pub const INT_GATE: u8 = 0xe;
    pub const TRAP_GATE: u8 = 0xf;
}

/// A raw 8-byte descriptor and where it lives.
#[derive(Debug, Clone, Copy)]
pub struct Desc {
    pub raw: u64,
    /// Linear address of the descriptor in its table.
    pub addr: u64,
}

impl Desc {
    #[inline]
    pub fn type_(&self) -> u8 {
        ((self.raw >> 40) & 0xf) as u8
    }
    /// The S bit: code or data (true) versus system (false).
    #[inline]
    pub fn s(&self) -> bool {
        (self.raw >> 44) & 1 == 1
    }
    #[inline]
    pub fn dpl(&self) -> u8 {
        ((self.raw >> 45) & 3) as u8
    }
    #[inline]
    pub fn present(&self) -> bool {
        (self.raw >> 47) & 1 == 1
    }
    #[inline]
    pub fn is_code(&self) -> bool {
        self.s() && self.type_() & ty::CODE != 0
    }
    #[inline]
    pub fn is_data(&self) -> bool {
        self.s() && self.type_() & ty::CODE == 0
    }
    #[inline]
    pub fn conforming(&self) -> bool {
        self.is_code() && self.type_() & ty::CONFORMING != 0
    }
    /// Long-mode (L) bit of a code descriptor.
    #[inline]
    pub fn l(&self) -> bool {
        (self.raw >> 53) & 1 == 1
    }
    #[inline]
    pub fn db(&self) -> bool {
        (self.raw >> 54) & 1 == 1
    }
    /// The descriptor cache a selector load produces.
    pub fn segment(&self, selector: u16) -> Segment {
        Segment::from_gdt_entry(selector, self.raw)
    }
    /// Gate fields: target selector and the low 32 bits of the offset.
    #[inline]
    pub fn gate_selector(&self) -> u16 {
        (self.raw >> 16) as u16
    }
    #[inline]
    pub fn gate_offset32(&self) -> u64 {
        (self.raw & 0xffff) | ((self.raw >> 32) & 0xffff_0000)
    }
}

/// The error code for a selector: index and table bits, RPL dropped.
#[inline]
pub fn sel_err(sel: u16) -> u32 {
    u32::from(sel & 0xfffc)
}

/// Whether a selector is null (index 0 in the GDT).
#[inline]
pub fn is_null(sel: u16) -> bool {
    sel & 0xfffc == 0
}

/// A canonical 48-bit linear address.
#[inline]
pub fn canonical(v: u64) -> bool {
    ((v as i64) << 16 >> 16) as u64 == v
}

impl Cpu {
    /// Protected mode is on (CR0.PE) and the CPU is not in virtual-8086 mode.
    #[inline]
    pub fn protected(&self) -> bool {
        self.cr0 & cr::CR0_PE != 0
    }

    /// Long mode is active (EFER.LMA): 64-bit or compatibility mode.
    #[inline]
    pub fn long_mode(&self) -> bool {
        self.efer & cr::EFER_LMA != 0
    }

    /// The linear address of the descriptor `sel` names, checked against the table limit
    /// (`size` bytes: 8, or 16 for long-mode system descriptors). Err: #GP(selector).
    pub fn desc_addr(&self, sel: u16, size: u64) -> Result<u64, Exception> {
        let (base, limit) = if sel & 4 != 0 {
            if self.ldtr.unusable {
                return Err(Exception::gp(sel_err(sel)));
            }
            (self.ldtr.base, u64::from(self.ldtr.limit))
        } else {
            (self.gdtr.base, u64::from(self.gdtr.limit))
        };
        let off = u64::from(sel & !7);
        if off + size - 1 > limit {
            return Err(Exception::gp(sel_err(sel)));
        }
        Ok(base.wrapping_add(off))
    }

    /// Reads the 8-byte descriptor of `sel` (#GP(selector) past the table limit).
    pub fn read_desc(&mut self, sel: u16) -> R<Desc> {
        let addr = self.desc_addr(sel, 8)?;
        let raw = self.read_sys(addr, 8)?;
        Ok(Desc { raw, addr })
    }

    /// Reads the upper 8 bytes of a 16-byte long-mode system descriptor.
    pub fn read_desc_high(&mut self, d: &Desc) -> R<u64> {
        self.read_sys(d.addr.wrapping_add(8), 8)
    }

    /// Sets the accessed bit of a code or data descriptor, as a load does.
    pub fn set_accessed(&mut self, d: &Desc) -> R {
        if d.s() && d.type_() & ty::ACCESSED == 0 {
            let b = ((d.raw >> 40) as u8) | ty::ACCESSED;
            self.write_sys(d.addr.wrapping_add(5), 1, u64::from(b))?;
        }
        Ok(())
    }

    /// The unusable (null) segment a null selector load leaves behind.
    pub fn null_segment(sel: u16) -> Segment {
        Segment {
            selector: sel,
            unusable: true,
            dpl: (sel & 3) as u8,
            ..Default::default()
        }
    }

    /// Loads a data segment register (DS, ES, FS, GS) or SS with a selector, with the checks
    /// of MOV/POP/LDS. CS is loaded by the far transfers. Calls `update_mode` for SS.
    pub fn load_seg(&mut self, seg: Seg, sel: u16) -> R {
        if !self.protected() || self.flags.has(super::flags::VM) {
            let s = &mut self.seg[seg as usize];
            s.selector = sel;
            s.base = u64::from(sel) << 4;
            s.unusable = false;
            s.present = true;
            if seg == Seg::Ss {
                self.update_mode();
            }
            return Ok(());
        }
        let cpl = self.cpl;
        let rpl = (sel & 3) as u8;
        if seg == Seg::Ss {
            if is_null(sel) {
                // 64-bit mode allows a null SS below ring 3 with RPL = CPL.
                if self.long64 && cpl != 3 && rpl == cpl {
                    self.seg[Seg::Ss as usize] = Self::null_segment(sel);
                    self.update_mode();
                    return Ok(());
                }
                return Err(Exception::gp0().into());
            }
            let d = self.read_desc(sel)?;
            if rpl != cpl || d.dpl() != cpl || !d.is_data() || d.type_() & ty::RW == 0 {
                return Err(Exception::gp(sel_err(sel)).into());
            }
            if !d.present() {
                return Err(Exception::ss(sel_err(sel)).into());
            }
            self.set_accessed(&d)?;
            self.seg[Seg::Ss as usize] = d.segment(sel);
            self.update_mode();
            return Ok(());
        }
        if is_null(sel) {
            // Intel clears the base of a nulled FS/GS too.
            self.seg[seg as usize] = Self::null_segment(sel);
            return Ok(());
        }
        let d = self.read_desc(sel)?;
        let readable = d.is_data() || (d.is_code() && d.type_() & ty::RW != 0);
        if !readable {
            return Err(Exception::gp(sel_err(sel)).into());
        }
        if !d.conforming() && (rpl > d.dpl() || cpl > d.dpl()) {
            return Err(Exception::gp(sel_err(sel)).into());
        }
        if !d.present() {
            return Err(Exception::np(sel_err(sel)).into());
        }
        self.set_accessed(&d)?;
        self.seg[seg as usize] = d.segment(sel);
        Ok(())
    }

    /// Checks a code segment descriptor for a far JMP/CALL/RET/IRET target and returns the
    /// CS cache to load with the new privilege level `new_cpl` as RPL.
    pub fn code_segment(&mut self, sel: u16, new_cpl: u8) -> R<Segment> {
        if is_null(sel) {
            return Err(Exception::gp0().into());
        }
        let d = self.read_desc(sel)?;
        if !d.is_code() || (self.long_mode() && d.l() && d.db()) {
            return Err(Exception::gp(sel_err(sel)).into());
        }
        if !d.present() {
            return Err(Exception::np(sel_err(sel)).into());
        }
        self.set_accessed(&d)?;
        let mut s = d.segment((sel & 0xfffc) | u16::from(new_cpl));
        s.type_ |= ty::ACCESSED;
        Ok(s)
    }

    /// Checks a stack segment for a return to privilege `cpl` (IRET/RETF to an outer level,
    /// or an inner stack from the TSS); `to64`: the target is 64-bit code, where a null SS
    /// is allowed below ring 3. Errors use `err` (the #GP of a return, the #TS of a stack
    /// switch) and #SS for a missing segment.
    pub fn stack_segment(&mut self, sel: u16, cpl: u8, to64: bool, ts: bool) -> R<Segment> {
        let bad = |e: u32| -> Exception {
            if ts {
                Exception::ts(e)
            } else {
                Exception::gp(e)
            }
        };
        if is_null(sel) {
            if to64 && cpl != 3 && (sel & 3) as u8 == cpl {
                return Ok(Self::null_segment(sel));
            }
            return Err(bad(0).into());
        }
        let d = self.read_desc(sel).map_err(|f| match f {
            super::Fault::Ex(e) if e.vector == Exception::GP => bad(sel_err(sel)).into(),
            f => f,
        })?;
        if (sel & 3) as u8 != cpl || d.dpl() != cpl || !d.is_data() || d.type_() & ty::RW == 0 {
            return Err(bad(sel_err(sel)).into());
        }
        if !d.present() {
            return Err(Exception::ss(sel_err(sel)).into());
        }
        self.set_accessed(&d)?;
        let mut s = d.segment(sel);
        s.type_ |= ty::ACCESSED;
        Ok(s)
    }

    /// After a return to an outer privilege level: data segments the new level may not use
    /// become null.
    pub fn null_inaccessible_segments(&mut self) {
        let cpl = self.cpl;
        for seg in [Seg::Es, Seg::Ds, Seg::Fs, Seg::Gs] {
            let s = &self.seg[seg as usize];
            if s.unusable {
                continue;
            }
            let conforming_code =
                s.type_ & (ty::CODE | ty::CONFORMING) == (ty::CODE | ty::CONFORMING);
            if s.dpl < cpl && !conforming_code {
                // Keep FS/GS bases in 64-bit mode would be AMD behaviour; Intel nulls.
                self.seg[seg as usize] = Self::null_segment(0);
            }
        }
    }

    /// Reads a stack pointer for privilege level `dpl` from the current TSS: (SS, ESP) in
    /// legacy mode, RSP (SS is null) in long mode. `ist` selects an IST entry (long mode).
    pub fn tss_stack(&mut self, dpl: u8, ist: u8, ext: u32) -> R<(u16, u64)> {
        let tr = self.tr;
        if !tr.present || tr.unusable {
            return Err(Exception::ts(sel_err(tr.selector) | ext).into());
        }
        let limit = u64::from(tr.limit);
        if self.long_mode() {
            let off = if ist != 0 {
                0x24 + (u64::from(ist) - 1) * 8
            } else {
                4 + u64::from(dpl) * 8
            };
            if off + 7 > limit {
                return Err(Exception::ts(sel_err(tr.selector) | ext).into());
            }
            let rsp = self.read_sys(tr.base.wrapping_add(off), 8)?;
            return Ok((u16::from(dpl), rsp));
        }
        if tr.type_ & 8 != 0 {
            // 32-bit TSS: ESPn at 4 + 8n, SSn at 8 + 8n.
            let off = 4 + u64::from(dpl) * 8;
            if off + 5 > limit {
                return Err(Exception::ts(sel_err(tr.selector) | ext).into());
            }
            let esp = self.read_sys(tr.base.wrapping_add(off), 4)?;
            let ss = self.read_sys(tr.base.wrapping_add(off + 4), 2)? as u16;
            Ok((ss, esp))
        } else {
            // 16-bit TSS: SPn at 2 + 4n, SSn at 4 + 4n.
            let off = 2 + u64::from(dpl) * 4;
            if off + 3 > limit {
                return Err(Exception::ts(sel_err(tr.selector) | ext).into());
            }
            let sp = self.read_sys(tr.base.wrapping_add(off), 2)?;
            let ss = self.read_sys(tr.base.wrapping_add(off + 2), 2)? as u16;
            Ok((ss, sp))
        }
    }

    /// Loads CS for a transfer in real or virtual-8086 mode.
    pub fn load_cs_real(&mut self, sel: u16) {
        let s = &mut self.seg[Seg::Cs as usize];
        s.selector = sel;
        s.base = u64::from(sel) << 4;
        self.update_mode();
    }
}
