//! The i8259A programmable interrupt controller pair (master at 0x20/0x21, slave at
//! 0xa0/0xa1 cascaded on the master's IRQ2) with the ELCR edge/level registers at
//! 0x4d0/0x4d1. The model follows the 8259A data sheet: ICW1-ICW4 initialization, OCW1 (the
//! mask), OCW2 (EOI, rotation, priority), OCW3 (IRR/ISR read, poll, special mask mode),
//! auto-EOI, fully nested and special fully nested mode, spurious IRQ 7/15.

/// One 8259A.
#[derive(Debug, Clone, Default)]
pub struct Pic8259 {
    /// Line levels seen last (edge detection).
    last_irr: u8,
    /// Interrupt request register.
    pub irr: u8,
    /// Interrupt mask register (OCW1).
    pub imr: u8,
    /// In-service register.
    pub isr: u8,
    /// The IRQ with the highest priority is `priority_add` (rotation).
    priority_add: u8,
    /// Vector of IRQ 0 (ICW2, bits 7:3).
    pub irq_base: u8,
    /// OCW3 RR/RIS: read ISR (true) or IRR (false) at the command port.
    read_isr: bool,
    /// OCW3 P: the next command-port read is a poll.
    poll: bool,
    special_mask: bool,
    /// 0: ready (data port = OCW1); 1..3: expecting ICW2..ICW4.
    init_state: u8,
    auto_eoi: bool,
    rotate_on_auto_eoi: bool,
    special_fully_nested: bool,
    init4: bool,
    single: bool,
    /// Edge/level control register (1 = level).
    pub elcr: u8,
    /// Which ELCR bits exist.
    elcr_mask: u8,
}

impl Pic8259 {
    /// Power-on state: all inputs masked (until the OS initializes the chip, a request
    /// would arrive with vector base 0, on top of the CPU exceptions).
    fn new(elcr_mask: u8) -> Self {
        Pic8259 {
            elcr_mask,
            imr: 0xff,
            ..Default::default()
        }
    }

    /// ICW1: everything but ELCR and level-triggered requests is reset.
    fn init_reset(&mut self) {
        let elcr = self.elcr;
        let elcr_mask = self.elcr_mask;
        let irr = self.irr & elcr;
        *self = Pic8259 {
            elcr,
            elcr_mask,
            irr,
            ..Default::default()
        };
    }

    /// Priority (0 = highest) of the highest-priority bit in `mask`, 8 if none.
    fn priority(&self, mask: u8) -> u8 {
        if mask == 0 {
            return 8;
        }
        let mut p = 0;
        while mask & (1 << ((p + self.priority_add) & 7)) == 0 {
            p += 1;
        }
        p
    }

    /// The IRQ this chip would signal now, if any.
    fn pending_irq(&self, is_master: bool) -> Option<u8> {
        let p = self.priority(self.irr & !self.imr);
        if p == 8 {
            return None;
        }
        let mut in_service = self.isr;
        if self.special_mask {
            in_service &= !self.imr;
        }
        if self.special_fully_nested && is_master {
            // A slave in service does not block other slave interrupts.
            in_service &= !(1 << 2);
        }
        if p < self.priority(in_service) {
            Some((p + self.priority_add) & 7)
        } else {
            None
        }
    }

    fn set_irq(&mut self, irq: u8, level: bool) {
        let mask = 1u8 << (irq & 7);
        if self.elcr & mask != 0 {
            if level {
                self.irr |= mask;
                self.last_irr |= mask;
            } else {
                self.irr &= !mask;
                self.last_irr &= !mask;
            }
        } else if level {
            if self.last_irr & mask == 0 {
                self.irr |= mask;
            }
            self.last_irr |= mask;
        } else {
            self.last_irr &= !mask;
        }
    }

    /// The acknowledge of `irq`: ISR set (unless auto-EOI), edge request cleared.
    fn intack(&mut self, irq: u8) {
        let mask = 1u8 << (irq & 7);
        if self.auto_eoi {
            if self.rotate_on_auto_eoi {
                self.priority_add = (irq + 1) & 7;
            }
        } else {
            self.isr |= mask;
        }
        if self.elcr & mask == 0 {
            self.irr &= !mask;
        }
    }

    fn write_command(&mut self, v: u8) {
        if v & 0x10 != 0 {
            // ICW1 (bit 3 LTIM, level-triggered mode for all inputs, is not modelled: the
            // ELCR decides).
            self.init_reset();
            self.init_state = 1;
            self.init4 = v & 1 != 0;
            self.single = v & 2 != 0;
        } else if v & 0x08 != 0 {
            // OCW3.
            if v & 0x04 != 0 {
                self.poll = true;
            }
            if v & 0x02 != 0 {
                self.read_isr = v & 1 != 0;
            }
            if v & 0x40 != 0 {
                self.special_mask = v & 0x20 != 0;
            }
        } else {
            // OCW2.
            let cmd = v >> 5;
            match cmd {
                0 | 4 => self.rotate_on_auto_eoi = cmd == 4,
                1 | 5 => {
                    // Non-specific EOI (and rotate).
                    let p = self.priority(self.isr);
                    if p != 8 {
                        let irq = (p + self.priority_add) & 7;
                        self.isr &= !(1 << irq);
                        if cmd == 5 {
                            self.priority_add = (irq + 1) & 7;
                        }
                    }
                }
                3 => self.isr &= !(1 << (v & 7)),
                6 => self.priority_add = ((v & 7) + 1) & 7,
                7 => {
                    let irq = v & 7;
                    self.isr &= !(1 << irq);
                    self.priority_add = (irq + 1) & 7;
                }
                _ => {} // 2: no operation
            }
        }
    }

    fn write_data(&mut self, v: u8) {
        match self.init_state {
            1 => {
                self.irq_base = v & 0xf8;
                self.init_state = match (self.single, self.init4) {
                    (true, true) => 3,
                    (true, false) => 0,
                    (false, _) => 2,
                };
            }
            2 => self.init_state = if self.init4 { 3 } else { 0 },
            3 => {
                self.special_fully_nested = v & 0x10 != 0;
                self.auto_eoi = v & 0x02 != 0;
                self.init_state = 0;
            }
            _ => self.imr = v,
        }
    }
}

/// The master/slave pair.
#[derive(Debug, Clone)]
pub struct Pic {
    pub master: Pic8259,
    pub slave: Pic8259,
}

impl Default for Pic {
    fn default() -> Self {
        Self::new()
    }
}

impl Pic {
    pub fn new() -> Self {
        Pic {
            // IRQ 0, 1, 2 (master) and 8, 13 (slave) are always edge-triggered.
            master: Pic8259::new(0xf8),
            slave: Pic8259::new(0xde),
        }
    }

    /// Whether `port` belongs to the PIC pair or the ELCR.
    pub fn owns(port: u16) -> bool {
        matches!(port, 0x20 | 0x21 | 0xa0 | 0xa1 | 0x4d0 | 0x4d1)
    }

    /// Propagates the slave's output to the master's IRQ 2. The cascade input follows the
    /// slave's INT level (it is not edge-latched), so a slave request that goes away before
    /// the master acknowledges it does not turn into a spurious interrupt.
    fn update(&mut self) {
        if self.slave.pending_irq(false).is_some() {
            self.master.irr |= 1 << 2;
            self.master.last_irr |= 1 << 2;
        } else {
            self.master.irr &= !(1 << 2);
            self.master.last_irr &= !(1 << 2);
        }
    }

    /// Drives IRQ line `irq` (0..15).
    pub fn set_irq(&mut self, irq: u32, level: bool) {
        match irq {
            0..=7 => self.master.set_irq(irq as u8, level),
            8..=15 => self.slave.set_irq((irq - 8) as u8, level),
            _ => return,
        }
        self.update();
    }

    /// The INTR output of the master.
    pub fn output(&self) -> bool {
        self.master.pending_irq(true).is_some()
    }

    /// The INTA cycle: the vector of the highest-priority request (spurious IRQ 7 or 15 if
    /// the request went away).
    pub fn inta(&mut self) -> u8 {
        let vector = match self.master.pending_irq(true) {
            Some(2) => {
                let irq2 = match self.slave.pending_irq(false) {
                    Some(i) => {
                        self.slave.intack(i);
                        i
                    }
                    None => 7,
                };
                self.master.intack(2);
                self.slave.irq_base.wrapping_add(irq2)
            }
            Some(irq) => {
                self.master.intack(irq);
                self.master.irq_base.wrapping_add(irq)
            }
            None => self.master.irq_base.wrapping_add(7),
        };
        self.update();
        vector
    }

    fn poll_read(&mut self, slave: bool) -> u8 {
        let r = if slave {
            match self.slave.pending_irq(false) {
                Some(irq) => {
                    self.slave.intack(irq);
                    // The master sees the cascade acknowledged as well.
                    self.master.isr &= !(1 << 2);
                    self.master.irr &= !(1 << 2);
                    irq | 0x80
                }
                None => 0,
            }
        } else {
            match self.master.pending_irq(true) {
                Some(irq) => {
                    self.master.intack(irq);
                    irq | 0x80
                }
                None => 0,
            }
        };
        self.update();
        r
    }

    pub fn read(&mut self, port: u16) -> u8 {
        match port {
            0x20 | 0xa0 => {
                let slave = port == 0xa0;
                let chip = if slave {
                    &mut self.slave
                } else {
                    &mut self.master
                };
                if chip.poll {
                    chip.poll = false;
                    self.poll_read(slave)
                } else if chip.read_isr {
                    chip.isr
                } else {
                    chip.irr
                }
            }
            0x21 => self.master.imr,
            0xa1 => self.slave.imr,
            0x4d0 => self.master.elcr,
            0x4d1 => self.slave.elcr,
            _ => 0xff,
        }
    }

    pub fn write(&mut self, port: u16, v: u8) {
        match port {
            0x20 => self.master.write_command(v),
            0x21 => self.master.write_data(v),
            0xa0 => self.slave.write_command(v),
            0xa1 => self.slave.write_data(v),
            0x4d0 => self.master.elcr = v & self.master.elcr_mask,
            0x4d1 => self.slave.elcr = v & self.slave.elcr_mask,
            _ => return,
        }
        self.update();
    }
}

#[cfg(test)]
#[path = "pic_tests.rs"]
mod tests;
