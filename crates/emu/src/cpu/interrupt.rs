//! Exception and interrupt delivery through the IDT: real mode (the IVT), 32-bit protected
//! mode (interrupt and trap gates, stack switch through the TSS) and long mode (16-byte gates,
//! IST stacks, SS:RSP always pushed).
//!
//! Delivery reads the gate, the target descriptor and the new stack and writes the frame
//! before it changes any register, so a fault during delivery leaves the interrupted state
//! intact for the next event: the double-fault rules pick that event (the fault itself, or
//! #DF), and a fault while delivering #DF shuts the CPU down (triple fault).

use super::seg::{canonical, is_null, sel_err, ty, Desc};
use super::{flags, Cpu, Exception, Fault, Seg, R};

/// How a software interrupt instruction was written: it decides the gate privilege check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SoftKind {
    /// INT n: the gate's DPL must be at least CPL.
    IntN,
    /// INT3 (breakpoint): like INT n.
    Int3,
    /// INTO (overflow): like INT n.
    Into,
    /// INT1 (ICEBP): delivered like a debug exception, without the DPL check.
    Int1,
}

/// One event to deliver.
#[derive(Debug, Clone, Copy)]
struct Event {
    vector: u8,
    error: Option<u32>,
    soft: Option<SoftKind>,
    /// The EXT bit of error codes raised during delivery: 1 unless a software interrupt.
    ext: u32,
}

impl Event {
    fn exception(e: Exception) -> Self {
        Event {
            vector: e.vector,
            error: e.error,
            soft: None,
            ext: 1,
        }
    }

    /// The error code for a problem with this vector's IDT entry.
    fn idt_err(&self) -> u32 {
        u32::from(self.vector) * 8 + 2 + self.ext
    }

    /// Software interrupts (other than INT1) are checked against the gate DPL.
    fn dpl_checked(&self) -> bool {
        matches!(
            self.soft,
            Some(SoftKind::IntN | SoftKind::Int3 | SoftKind::Into)
        )
    }
}

/// Exception classes for the double-fault rules: 0 benign, 1 contributory, 2 page fault.
fn class(vector: u8) -> u8 {
    match vector {
        Exception::DE | Exception::TS | Exception::NP | Exception::SS | Exception::GP => 1,
        Exception::PF => 2,
        _ => 0,
    }
}

/// Whether a fault `second` while delivering `first` becomes a double fault.
fn is_double(first: u8, second: u8) -> bool {
    let (a, b) = (class(first), class(second));
    (a == 1 && b == 1) || (a == 2 && b != 0)
}

impl Cpu {
    /// Delivers an exception raised by an instruction (RIP points at it; a #PF has already
    /// set CR2). Err(Fault::Shutdown) on a triple fault.
    pub fn raise(&mut self, e: Exception) -> Result<(), Fault> {
        let mut cur = e;
        // Delivery faults are contributory or #PF, so this ends within three rounds.
        for _ in 0..4 {
            self.delivering = Some(cur.vector);
            let r = self.deliver(Event::exception(cur), self.rip);
            self.delivering = None;
            match r {
                Ok(target) => {
                    self.rip = target;
                    self.next_rip = target;
                    self.end_block = false;
                    return Ok(());
                }
                Err(Fault::Ex(second)) => {
                    if cur.vector == Exception::DF {
                        break;
                    }
                    tracing::debug!(
                        "emu: {second:?} while delivering {cur:?} at {:#x}",
                        self.rip
                    );
                    cur = if is_double(cur.vector, second.vector) {
                        Exception::with_error(Exception::DF, 0)
                    } else {
                        second
                    };
                }
                Err(f) => return Err(f),
            }
        }
        tracing::warn!(
            "emu: triple fault at {:#x} (exception {e:?}): shutdown",
            self.rip
        );
        Err(Fault::Shutdown)
    }

    /// Delivers an external interrupt with `vector` (RIP points at the next instruction).
    pub fn interrupt(&mut self, vector: u8) -> Result<(), Fault> {
        self.halted = false;
        let ev = Event {
            vector,
            error: None,
            soft: None,
            ext: 1,
        };
        match self.deliver(ev, self.rip) {
            Ok(target) => {
                self.rip = target;
                self.next_rip = target;
                self.end_block = false;
                Ok(())
            }
            // The fault is reported against the instruction the interrupt would return to.
            Err(Fault::Ex(e)) => self.raise(e),
            Err(f) => Err(f),
        }
    }

    /// INT n / INT3 / INTO / INT1 from an instruction handler: the frame holds the address
    /// of the next instruction, and `next_rip` becomes the handler. A fault during delivery
    /// is returned (the state is untouched) and is raised against the INT instruction.
    pub fn software_interrupt(&mut self, vector: u8, kind: SoftKind) -> R {
        let ev = Event {
            vector,
            error: None,
            soft: Some(kind),
            ext: u32::from(kind == SoftKind::Int1),
        };
        let target = self.deliver(ev, self.next_rip)?;
        self.next_rip = target;
        self.end_block = true;
        Ok(())
    }

    /// Delivers one event; returns the new RIP. Nothing changes unless it succeeds.
    fn deliver(&mut self, ev: Event, ret: u64) -> R<u64> {
        if !self.protected() {
            self.deliver_real(ev, ret)
        } else if self.long_mode() {
            self.deliver_long(ev, ret)
        } else {
            self.deliver_prot(ev, ret)
        }
    }

    /// Real mode: the interrupt vector table holds CS:IP pairs; FLAGS, CS, IP are pushed.
    fn deliver_real(&mut self, ev: Event, ret: u64) -> R<u64> {
        let off = u64::from(ev.vector) * 4;
        if off + 3 > u64::from(self.idtr.limit) {
            return Err(Exception::gp(ev.idt_err()).into());
        }
        let lin = self.idtr.base.wrapping_add(off);
        let entry = self.read_sys(lin, 4)?;
        let frame = [
            self.flags.get() & 0xffff,
            u64::from(self.seg[Seg::Cs as usize].selector),
            ret & 0xffff,
        ];
        let mut sp = self.gpr[4];
        let mask = if self.stack32 { 0xffff_ffff } else { 0xffff };
        for v in frame {
            sp = sp.wrapping_sub(2) & mask;
            self.write(Seg::Ss, sp, 2, v)?;
        }
        self.set_sp(sp);
        for f in [flags::IF, flags::TF, flags::AC, flags::RF] {
            self.flags.set_bit(f, false);
        }
        self.load_cs_real((entry >> 16) as u16);
        Ok(entry & 0xffff)
    }

    /// Reads and checks the gate of `ev` (`size`: 8 or 16 bytes) and the code segment it
    /// names. Returns the gate (low 8 bytes), its upper half, and the target descriptor.
    fn gate(&mut self, ev: &Event, size: u64) -> R<(Desc, u64, Desc)> {
        let off = u64::from(ev.vector) * size;
        if off + size - 1 > u64::from(self.idtr.limit) {
            return Err(Exception::gp(ev.idt_err()).into());
        }
        let addr = self.idtr.base.wrapping_add(off);
        let gate = Desc {
            raw: self.read_sys(addr, 8)?,
            addr,
        };
        let high = if size == 16 {
            self.read_sys(addr.wrapping_add(8), 8)?
        } else {
            0
        };
        let ok = match gate.type_() {
            ty::INT_GATE | ty::TRAP_GATE => true,
            ty::INT_GATE16 | ty::TRAP_GATE16 => size == 8,
            ty::TASK_GATE => {
                tracing::warn!("emu: task gate for vector {} not supported", ev.vector);
                false
            }
            _ => false,
        };
        if !ok || gate.s() {
            return Err(Exception::gp(ev.idt_err()).into());
        }
        if ev.dpl_checked() && gate.dpl() < self.cpl {
            return Err(Exception::gp(u32::from(ev.vector) * 8 + 2).into());
        }
        if !gate.present() {
            return Err(Exception::np(ev.idt_err()).into());
        }
        let sel = gate.gate_selector();
        if is_null(sel) {
            return Err(Exception::gp(ev.ext).into());
        }
        let d = self.read_desc(sel).map_err(|f| match f {
            Fault::Ex(e) if e.vector == Exception::GP => {
                Exception::gp(sel_err(sel) | ev.ext).into()
            }
            f => f,
        })?;
        let bad64 = size == 16 && (!d.l() || d.db());
        if !d.is_code() || d.dpl() > self.cpl || bad64 {
            return Err(Exception::gp(sel_err(sel) | ev.ext).into());
        }
        if !d.present() {
            return Err(Exception::np(sel_err(sel) | ev.ext).into());
        }
        Ok((gate, high, d))
    }

    /// Writes `vals` below `sp` (`size` bytes each) and returns the new stack pointer.
    /// `base`/`mask`: the stack segment base and the stack width (legacy mode); `long`:
    /// 64-bit addressing with canonical checks.
    #[allow(clippy::too_many_arguments)]
    fn push_frame(
        &mut self,
        base: u64,
        mut sp: u64,
        mask: u64,
        vals: &[u64],
        size: usize,
        user: bool,
        long: bool,
    ) -> R<u64> {
        for &v in vals {
            sp = sp.wrapping_sub(size as u64) & mask;
            let lin = if long {
                if !canonical(sp) {
                    return Err(Exception::ss(0).into());
                }
                sp
            } else {
                base.wrapping_add(sp) & 0xffff_ffff
            };
            self.write_lin(lin, size, v, user)?;
        }
        Ok(sp)
    }

    /// The flags every gate clears; interrupt gates clear IF as well.
    fn gate_flags(&mut self, gate_type: u8) {
        for f in [flags::TF, flags::NT, flags::RF, flags::VM] {
            self.flags.set_bit(f, false);
        }
        if gate_type & 1 == 0 {
            self.flags.set_bit(flags::IF, false);
        }
    }

    /// 32-bit protected mode through 8-byte interrupt and trap gates.
    fn deliver_prot(&mut self, ev: Event, ret: u64) -> R<u64> {
        let (gate, _, d) = self.gate(&ev, 8)?;
        let sel = gate.gate_selector();
        let gate32 = gate.type_() & 8 != 0;
        let size = if gate32 { 4 } else { 2 };
        let target = if gate32 {
            gate.gate_offset32()
        } else {
            gate.raw & 0xffff
        };
        let cpl = self.cpl;
        let old_ss = u64::from(self.seg[Seg::Ss as usize].selector);
        let old_sp = self.gpr[4];
        let old_cs = u64::from(self.seg[Seg::Cs as usize].selector);
        let eflags = self.flags.get() & 0xffff_ffff;
        let mut vals: Vec<u64> = Vec::with_capacity(6);
        let (new_cpl, new_ss) = if !d.conforming() && d.dpl() < cpl {
            let new_cpl = d.dpl();
            let (ss_sel, esp) = self.tss_stack(new_cpl, 0, ev.ext)?;
            let ss = self.stack_segment(ss_sel, new_cpl, false, true)?;
            vals.extend([old_ss, old_sp]);
            (new_cpl, Some((ss, esp)))
        } else {
            (cpl, None)
        };
        vals.extend([eflags, old_cs, ret]);
        if let Some(e) = ev.error {
            vals.push(u64::from(e));
        }
        let (base, sp, db) = match &new_ss {
            Some((ss, esp)) => (ss.base, *esp, ss.db),
            None => (self.seg[Seg::Ss as usize].base, self.gpr[4], self.stack32),
        };
        let mask = if db { 0xffff_ffff } else { 0xffff };
        self.set_accessed(&d)?;
        let sp = self.push_frame(base, sp, mask, &vals, size, new_cpl == 3, false)?;
        // Commit.
        if let Some((ss, _)) = new_ss {
            self.seg[Seg::Ss as usize] = ss;
        }
        self.gpr[4] = if db { sp } else { (self.gpr[4] & !0xffff) | sp };
        let mut cs = d.segment((sel & 0xfffc) | u16::from(new_cpl));
        cs.type_ |= ty::ACCESSED;
        self.seg[Seg::Cs as usize] = cs;
        self.gate_flags(gate.type_());
        self.update_mode();
        Ok(target)
    }

    /// Long mode through 16-byte gates: IST stacks, 16-byte alignment, SS:RSP always pushed.
    fn deliver_long(&mut self, ev: Event, ret: u64) -> R<u64> {
        let (gate, high, d) = self.gate(&ev, 16)?;
        let sel = gate.gate_selector();
        let target = gate.gate_offset32() | (high << 32);
        if !canonical(target) {
            return Err(Exception::gp(ev.ext).into());
        }
        let ist = ((gate.raw >> 32) & 7) as u8;
        let cpl = self.cpl;
        let new_cpl = if !d.conforming() && d.dpl() < cpl {
            d.dpl()
        } else {
            cpl
        };
        let rsp = if new_cpl != cpl || ist != 0 {
            self.tss_stack(new_cpl, ist, ev.ext)?.1
        } else {
            self.gpr[4]
        };
        let mut vals = [
            u64::from(self.seg[Seg::Ss as usize].selector),
            self.gpr[4],
            self.flags.get(),
            u64::from(self.seg[Seg::Cs as usize].selector),
            ret,
            0,
        ];
        let n = match ev.error {
            Some(e) => {
                vals[5] = u64::from(e);
                6
            }
            None => 5,
        };
        self.set_accessed(&d)?;
        let rsp = self.push_frame(0, rsp & !0xf, u64::MAX, &vals[..n], 8, new_cpl == 3, true)?;
        // Commit.
        if new_cpl != cpl {
            self.seg[Seg::Ss as usize] = Self::null_segment(u16::from(new_cpl));
        }
        self.gpr[4] = rsp;
        let mut cs = d.segment((sel & 0xfffc) | u16::from(new_cpl));
        cs.type_ |= ty::ACCESSED;
        self.seg[Seg::Cs as usize] = cs;
        self.gate_flags(gate.type_());
        self.update_mode();
        Ok(target)
    }
}

#[cfg(test)]
#[path = "system_int_tests.rs"]
mod tests;

/// Test fixtures shared with the system instruction tests.
#[cfg(test)]
#[path = "system_testenv.rs"]
pub(crate) mod testenv;
