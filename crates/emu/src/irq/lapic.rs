//! One local APIC in xAPIC mode: the register page, interrupt acceptance and priority
//! (IRR/ISR/TMR, TPR/PPR), EOI, IPIs, the LVTs and the timer (one-shot, periodic and
//! TSC-deadline). Cross-APIC effects (IPIs, the EOI broadcast to the IOAPIC) are returned to
//! the chip as a [`WriteEffect`], so that more local APICs can be added for SMP.

/// The reset value of the APIC base address.
pub const DEFAULT_BASE: u64 = 0xfee0_0000;
/// Version 0x14 (integrated APIC), 6 LVT entries (max LVT index 5).
pub const VERSION: u32 = 0x0005_0014;
/// The count-mode timer's input clock before the divider (the CPUID 0x15 crystal).
pub const TIMER_HZ: u64 = crate::cpu::TSC_HZ;
/// Periodic mode never fires more often than this (KVM has a similar floor).
pub const MIN_PERIODIC_NS: u64 = 100_000;

pub const BASE_BSP: u64 = 1 << 8;
pub const BASE_X2APIC: u64 = 1 << 10;
pub const BASE_ENABLE: u64 = 1 << 11;
/// Bits of IA32_APIC_BASE that can be set: BSP, global enable and a 52-bit page address.
const BASE_VALID: u64 = BASE_BSP | BASE_ENABLE | 0x000f_ffff_ffff_f000;

pub const LVT_TIMER: usize = 0;
pub const LVT_THERMAL: usize = 1;
pub const LVT_PERF: usize = 2;
pub const LVT_LINT0: usize = 3;
pub const LVT_LINT1: usize = 4;
pub const LVT_ERROR: usize = 5;
pub const LVT_MASKED: u32 = 1 << 16;
/// Writable bits of each LVT (delivery status and remote IRR are read-only).
const LVT_WRITABLE: [u32; 6] = [0x7_00ff, 0x1_07ff, 0x1_07ff, 0x1_a7ff, 0x1_a7ff, 0x1_00ff];
const DM_EXTINT: u32 = 7;

const TIMER_ONESHOT: u32 = 0;
const TIMER_PERIODIC: u32 = 1;
const TIMER_TSC_DEADLINE: u32 = 2;

const ESR_SEND_ILLEGAL: u32 = 1 << 5;
const ESR_RECV_ILLEGAL: u32 = 1 << 6;

/// An interprocessor interrupt written to the ICR.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipi {
    pub vector: u8,
    /// 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 6 start-up.
    pub delivery: u8,
    pub logical: bool,
    pub dest: u8,
    pub level: bool,
    /// 0 destination field, 1 self, 2 all including self, 3 all excluding self.
    pub shorthand: u8,
}

/// What a register write asks of the rest of the chip.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteEffect {
    /// EOI of a level-triggered vector: broadcast to the IOAPIC.
    pub eoi_level: Option<u8>,
    pub ipi: Option<Ipi>,
    /// An interrupt may have become deliverable.
    pub notify: bool,
    /// The timer was reprogrammed: a sleeping vCPU must recompute its deadline.
    pub timer: bool,
}

#[derive(Debug, Clone)]
pub struct Lapic {
    /// IA32_APIC_BASE.
    pub base_msr: u64,
    pub id: u8,
    pub tpr: u8,
    ldr: u32,
    dfr: u32,
    svr: u32,
    pub irr: [u32; 8],
    pub isr: [u32; 8],
    pub tmr: [u32; 8],
    esr: u32,
    esr_pending: u32,
    icr_lo: u32,
    icr_hi: u32,
    pub lvt: [u32; 6],
    timer_init: u32,
    timer_dcr: u32,
    /// Count modes: the next expiry in host ns.
    timer_deadline: Option<u64>,
    /// Count modes: the period in ns (periodic mode re-arms with it).
    timer_period: u64,
    /// TSC-deadline mode: the deadline in host ns, 0 when disarmed.
    tsc_deadline: u64,
}

fn highest(regs: &[u32; 8]) -> Option<u8> {
    (0..8)
        .rev()
        .find(|&i| regs[i] != 0)
        .map(|i| (i * 32 + 31 - regs[i].leading_zeros() as usize) as u8)
}

fn bit(regs: &[u32; 8], v: u8) -> bool {
    regs[usize::from(v >> 5)] & (1 << (v & 31)) != 0
}

fn set_bit(regs: &mut [u32; 8], v: u8, on: bool) {
    let w = &mut regs[usize::from(v >> 5)];
    if on {
        *w |= 1 << (v & 31);
    } else {
        *w &= !(1 << (v & 31));
    }
}

impl Lapic {
    /// The local APIC of the CPU with APIC ID `id` (ID 0 is the bootstrap processor).
    pub fn new(id: u8) -> Self {
        let base_msr = DEFAULT_BASE | BASE_ENABLE | if id == 0 { BASE_BSP } else { 0 };
        let mut l = Lapic {
            base_msr,
            id,
            tpr: 0,
            ldr: 0,
            dfr: 0,
            svr: 0,
            irr: [0; 8],
            isr: [0; 8],
            tmr: [0; 8],
            esr: 0,
            esr_pending: 0,
            icr_lo: 0,
            icr_hi: 0,
            lvt: [0; 6],
            timer_init: 0,
            timer_dcr: 0,
            timer_deadline: None,
            timer_period: 0,
            tsc_deadline: 0,
        };
        l.reset();
        l
    }

    /// The power-up register state (the base MSR and the ID are kept). Like KVM, the BSP's
    /// LINT0 starts unmasked in ExtINT mode (virtual wire), so the 8259 reaches the CPU
    /// before the OS sets up the APIC.
    pub fn reset(&mut self) {
        self.tpr = 0;
        self.ldr = 0;
        self.dfr = 0xffff_ffff;
        self.svr = 0xff;
        self.irr = [0; 8];
        self.isr = [0; 8];
        self.tmr = [0; 8];
        self.esr = 0;
        self.esr_pending = 0;
        self.icr_lo = 0;
        self.icr_hi = 0;
        self.lvt = [LVT_MASKED; 6];
        if self.base_msr & BASE_BSP != 0 {
            self.lvt[LVT_LINT0] = DM_EXTINT << 8;
        }
        self.timer_init = 0;
        self.timer_dcr = 0;
        self.timer_deadline = None;
        self.timer_period = 0;
        self.tsc_deadline = 0;
    }

    /// Globally enabled (IA32_APIC_BASE bit 11).
    pub fn hw_enabled(&self) -> bool {
        self.base_msr & BASE_ENABLE != 0
    }

    /// Software enabled (SVR bit 8).
    pub fn sw_enabled(&self) -> bool {
        self.svr & 0x100 != 0
    }

    /// The physical address of the register page.
    pub fn base(&self) -> u64 {
        self.base_msr & 0x000f_ffff_ffff_f000
    }

    /// Writes IA32_APIC_BASE; false if the value is invalid (#GP).
    pub fn set_base_msr(&mut self, v: u64) -> bool {
        if v & !BASE_VALID != 0 {
            return false;
        }
        let was_enabled = self.hw_enabled();
        // The BSP flag is fixed by the platform.
        self.base_msr = (v & !BASE_BSP) | (self.base_msr & BASE_BSP);
        if was_enabled && !self.hw_enabled() {
            self.reset();
        }
        true
    }

    /// Processor priority.
    pub fn ppr(&self) -> u8 {
        let isrv = highest(&self.isr).unwrap_or(0);
        if self.tpr >> 4 >= isrv >> 4 {
            self.tpr
        } else {
            isrv & 0xf0
        }
    }

    /// The vector the CPU would take now, if any.
    pub fn pending(&self) -> Option<u8> {
        if !self.hw_enabled() {
            return None;
        }
        let v = highest(&self.irr)?;
        ((v & 0xf0) > (self.ppr() & 0xf0)).then_some(v)
    }

    /// The INTA: the pending vector moves from IRR to ISR.
    pub fn ack(&mut self) -> Option<u8> {
        let v = self.pending()?;
        set_bit(&mut self.irr, v, false);
        set_bit(&mut self.isr, v, true);
        Some(v)
    }

    /// Records an APIC error and raises the error LVT.
    fn error(&mut self, bits: u32) {
        self.esr_pending |= bits;
        let lvt = self.lvt[LVT_ERROR];
        if lvt & LVT_MASKED == 0 && lvt as u8 >= 16 && self.sw_enabled() {
            set_bit(&mut self.irr, lvt as u8, true);
            set_bit(&mut self.tmr, lvt as u8, false);
        }
    }

    /// Accepts a fixed (or lowest-priority) interrupt; false if it was dropped.
    pub fn accept(&mut self, vector: u8, level: bool) -> bool {
        if !self.hw_enabled() || !self.sw_enabled() {
            return false;
        }
        if vector < 16 {
            self.error(ESR_RECV_ILLEGAL);
            return false;
        }
        set_bit(&mut self.irr, vector, true);
        set_bit(&mut self.tmr, vector, level);
        true
    }

    /// Whether a message with this destination is for this APIC.
    pub fn matches(&self, dest: u8, logical: bool) -> bool {
        if !logical {
            return dest == 0xff || dest == self.id;
        }
        if dest == 0xff {
            return true;
        }
        let ldr = (self.ldr >> 24) as u8;
        if self.dfr >> 28 == 0xf {
            ldr & dest != 0
        } else {
            // Cluster model: cluster in bits 7:4, members in bits 3:0.
            dest >> 4 == ldr >> 4 && dest & ldr & 0xf != 0
        }
    }

    /// Whether the 8259's INTR reaches the CPU: through LINT0 in ExtINT mode, or directly
    /// when the APIC is globally disabled.
    pub fn accepts_pic(&self) -> bool {
        let lint0 = self.lvt[LVT_LINT0];
        !self.hw_enabled() || (lint0 & LVT_MASKED == 0 && (lint0 >> 8) & 7 == DM_EXTINT)
    }

    pub fn cr8(&self) -> u64 {
        u64::from(self.tpr >> 4)
    }

    pub fn set_cr8(&mut self, v: u64) {
        self.tpr = ((v & 0xf) << 4) as u8;
    }

    fn timer_mode(&self) -> u32 {
        match (self.lvt[LVT_TIMER] >> 17) & 3 {
            TIMER_PERIODIC => TIMER_PERIODIC,
            TIMER_TSC_DEADLINE => TIMER_TSC_DEADLINE,
            _ => TIMER_ONESHOT,
        }
    }

    fn divisor(&self) -> u64 {
        let v = (self.timer_dcr & 3) | ((self.timer_dcr >> 1) & 4);
        if v == 7 {
            1
        } else {
            2 << v
        }
    }

    /// Nanoseconds per timer count.
    fn ns_per_count(&self) -> u64 {
        self.divisor() * 1_000_000_000 / TIMER_HZ
    }

    fn current_count(&self, now: u64) -> u32 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            return 0;
        }
        match self.timer_deadline {
            Some(d) => (d.saturating_sub(now) / self.ns_per_count().max(1))
                .min(u64::from(self.timer_init)) as u32,
            None => 0,
        }
    }

    /// Starts the count-mode timer from `count`.
    fn start_timer(&mut self, count: u64, now: u64) {
        let period = u64::from(self.timer_init) * self.ns_per_count();
        if self.timer_init == 0 || period == 0 {
            self.timer_deadline = None;
            return;
        }
        self.timer_period = if self.timer_mode() == TIMER_PERIODIC {
            period.max(MIN_PERIODIC_NS)
        } else {
            period
        };
        self.timer_deadline = Some(now.saturating_add(count * self.ns_per_count()));
    }

    /// The TSC deadline (host ns, 0 = disarmed) as read through IA32_TSC_DEADLINE.
    pub fn tsc_deadline(&self) -> u64 {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline
        } else {
            0
        }
    }

    /// Writes IA32_TSC_DEADLINE (host ns); ignored outside TSC-deadline mode.
    pub fn set_tsc_deadline(&mut self, ns: u64) {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            self.tsc_deadline = ns;
        }
    }

    /// The timer's next expiry, if armed.
    pub fn timer_next(&self) -> Option<u64> {
        if self.timer_mode() == TIMER_TSC_DEADLINE {
            (self.tsc_deadline != 0).then_some(self.tsc_deadline)
        } else {
            self.timer_deadline
        }
    }

    /// Fires the timer if it is due; returns whether it fired (an interrupt may be
    /// pending) and the next expiry. Missed periodic expiries are coalesced.
    pub fn poll_timer(&mut self, now: u64) -> (bool, Option<u64>) {
        let due = match self.timer_next() {
            Some(t) if t <= now => t,
            next => return (false, next),
        };
        match self.timer_mode() {
            TIMER_TSC_DEADLINE => self.tsc_deadline = 0,
            TIMER_PERIODIC => {
                let p = self.timer_period.max(1);
                let mut next = due.saturating_add(p);
                if next <= now {
                    next = now.saturating_add(p);
                }
                self.timer_deadline = Some(next);
            }
            _ => self.timer_deadline = None,
        }
        let lvt = self.lvt[LVT_TIMER];
        if lvt & LVT_MASKED == 0 {
            self.accept(lvt as u8, false);
        }
        (true, self.timer_next())
    }

    /// Reads the 32-bit register at `offset` (16-byte aligned) in the APIC page.
    pub fn read(&self, offset: u32, now: u64) -> u32 {
        match offset {
            0x20 => u32::from(self.id) << 24,
            0x30 => VERSION,
            0x80 => u32::from(self.tpr),
            0xa0 => u32::from(self.ppr()),
            0xd0 => self.ldr,
            0xe0 => self.dfr,
            0xf0 => self.svr,
            0x100..=0x170 => self.isr[(offset as usize - 0x100) >> 4],
            0x180..=0x1f0 => self.tmr[(offset as usize - 0x180) >> 4],
            0x200..=0x270 => self.irr[(offset as usize - 0x200) >> 4],
            0x280 => self.esr,
            0x300 => self.icr_lo,
            0x310 => self.icr_hi,
            0x320..=0x370 => self.lvt[(offset as usize - 0x320) >> 4],
            0x380 => self.timer_init,
            0x390 => self.current_count(now),
            0x3e0 => self.timer_dcr,
            _ => 0,
        }
    }

    /// Writes the 32-bit register at `offset` (16-byte aligned).
    pub fn write(&mut self, offset: u32, v: u32, now: u64) -> WriteEffect {
        let mut fx = WriteEffect::default();
        match offset {
            0x20 => self.id = (v >> 24) as u8,
            0x80 => {
                self.tpr = v as u8;
                fx.notify = true;
            }
            0xb0 => {
                if let Some(vec) = highest(&self.isr) {
                    set_bit(&mut self.isr, vec, false);
                    if bit(&self.tmr, vec) {
                        fx.eoi_level = Some(vec);
                    }
                }
                fx.notify = true;
            }
            0xd0 => self.ldr = v & 0xff00_0000,
            0xe0 => self.dfr = v | 0x0fff_ffff,
            0xf0 => {
                self.svr = v & 0x1ff;
                if !self.sw_enabled() {
                    for l in &mut self.lvt {
                        *l |= LVT_MASKED;
                    }
                }
                fx.notify = true;
            }
            0x280 => {
                self.esr = self.esr_pending;
                self.esr_pending = 0;
            }
            0x300 => {
                self.icr_lo = v & 0x000c_cfff;
                let ipi = Ipi {
                    vector: v as u8,
                    delivery: ((v >> 8) & 7) as u8,
                    logical: v & (1 << 11) != 0,
                    dest: (self.icr_hi >> 24) as u8,
                    level: v & (1 << 15) != 0,
                    shorthand: ((v >> 18) & 3) as u8,
                };
                if matches!(ipi.delivery, 0 | 1) && ipi.vector < 16 {
                    self.error(ESR_SEND_ILLEGAL);
                } else {
                    fx.ipi = Some(ipi);
                }
                fx.notify = true;
            }
            0x310 => self.icr_hi = v & 0xff00_0000,
            0x320..=0x370 => {
                let i = (offset as usize - 0x320) >> 4;
                let old_mode = self.timer_mode();
                let mut val = v & LVT_WRITABLE[i];
                if !self.sw_enabled() {
                    val |= LVT_MASKED;
                }
                self.lvt[i] = (self.lvt[i] & !LVT_WRITABLE[i]) | val;
                if i == LVT_TIMER && self.timer_mode() != old_mode {
                    // Changing the timer mode disarms the timer.
                    self.timer_init = 0;
                    self.timer_deadline = None;
                    self.tsc_deadline = 0;
                    fx.timer = true;
                }
                fx.notify = true;
            }
            // The initial count is ignored in TSC-deadline mode.
            0x380 if self.timer_mode() != TIMER_TSC_DEADLINE => {
                self.timer_init = v;
                self.start_timer(u64::from(v), now);
                fx.timer = true;
            }
            0x3e0 => {
                let remaining = self.current_count(now);
                self.timer_dcr = v & 0xb;
                if self.timer_deadline.is_some() {
                    self.start_timer(u64::from(remaining), now);
                    fx.timer = true;
                }
            }
            _ => {} // read-only or reserved
        }
        fx
    }
}

#[cfg(test)]
#[path = "lapic_tests.rs"]
mod tests;
