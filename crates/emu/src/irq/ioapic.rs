//! The I/O APIC (82093AA-style, version 0x11, 24 pins): IOREGSEL at +0, IOWIN at +0x10.
//!
//! Line semantics are KVM's: `set_pin(pin, true)` means the interrupt is *asserted*, whatever
//! the entry's polarity bit says (a device reports its logical state; the board's wiring and
//! the polarity setting cancel out). Edge-triggered pins latch an assertion edge in `irr`
//! until it can be delivered (so an edge that arrives while masked is delivered at unmask,
//! as KVM does); level-triggered pins deliver while asserted and remote IRR is clear, set
//! remote IRR, and are delivered again after the EOI if still asserted.

pub const PINS: usize = 24;
pub const VERSION: u32 = 0x0017_0011;

const MASKED: u64 = 1 << 16;
const TRIGGER_LEVEL: u64 = 1 << 15;
const REMOTE_IRR: u64 = 1 << 14;
const DELIVERY_STATUS: u64 = 1 << 12;

/// An interrupt message to the local APICs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IrqMsg {
    pub vector: u8,
    /// 0 fixed, 1 lowest priority, 2 SMI, 4 NMI, 5 INIT, 7 ExtINT.
    pub delivery: u8,
    /// Logical destination mode.
    pub logical: bool,
    pub dest: u8,
    /// Level-triggered (sets the TMR bit, so the EOI is broadcast back).
    pub level: bool,
}

#[derive(Debug, Clone)]
pub struct Ioapic {
    pub id: u8,
    ioregsel: u8,
    pub redir: [u64; PINS],
    /// Asserted inputs.
    pub level: u32,
    /// Requests waiting for delivery: latched edges, asserted level lines.
    pub irr: u32,
}

impl Ioapic {
    pub fn new(id: u8) -> Self {
        Ioapic {
            id: id & 0xf,
            ioregsel: 0,
            redir: [MASKED; PINS],
            level: 0,
            irr: 0,
        }
    }

    /// Drives input `pin`; returns true if the pin should now be serviced.
    pub fn set_pin(&mut self, pin: usize, asserted: bool) -> bool {
        if pin >= PINS {
            return false;
        }
        let bit = 1u32 << pin;
        let was = self.level & bit != 0;
        if asserted {
            self.level |= bit;
        } else {
            self.level &= !bit;
        }
        let entry = self.redir[pin];
        if entry & TRIGGER_LEVEL != 0 {
            if asserted {
                self.irr |= bit;
            } else {
                self.irr &= !bit;
            }
            asserted
        } else if asserted && !was {
            self.irr |= bit;
            true
        } else {
            false
        }
    }

    /// The message to send for `pin` if it has a deliverable request (masked entries and
    /// level entries waiting for their EOI have none). Edge requests are consumed.
    pub fn take_msg(&mut self, pin: usize) -> Option<IrqMsg> {
        let bit = 1u32 << pin;
        let e = *self.redir.get(pin)?;
        if self.irr & bit == 0 || e & MASKED != 0 {
            return None;
        }
        let level = e & TRIGGER_LEVEL != 0;
        if level && e & REMOTE_IRR != 0 {
            return None;
        }
        if !level {
            self.irr &= !bit;
        }
        Some(IrqMsg {
            vector: e as u8,
            delivery: ((e >> 8) & 7) as u8,
            logical: e & (1 << 11) != 0,
            dest: (e >> 56) as u8,
            level,
        })
    }

    /// A local APIC accepted the level-triggered message of `pin`.
    pub fn set_remote_irr(&mut self, pin: usize) {
        if let Some(e) = self.redir.get_mut(pin) {
            *e |= REMOTE_IRR;
        }
    }

    /// EOI broadcast for `vector`: clears remote IRR of the level entries with that vector;
    /// returns the pins to service again.
    pub fn eoi(&mut self, vector: u8) -> u32 {
        let mut again = 0;
        for (pin, e) in self.redir.iter_mut().enumerate() {
            if *e as u8 == vector && *e & TRIGGER_LEVEL != 0 && *e & REMOTE_IRR != 0 {
                *e &= !REMOTE_IRR;
                again |= 1 << pin;
            }
        }
        again & self.irr
    }

    fn read_reg(&self) -> u32 {
        match self.ioregsel {
            0x00 => u32::from(self.id) << 24,
            0x01 => VERSION,
            0x02 => u32::from(self.id) << 24,
            r @ 0x10..=0x3f => {
                let pin = usize::from((r - 0x10) / 2);
                let e = self.redir[pin];
                if r & 1 == 0 {
                    e as u32
                } else {
                    (e >> 32) as u32
                }
            }
            _ => 0,
        }
    }

    /// Writes the selected register; returns the pin to service if a redirection entry
    /// changed.
    fn write_reg(&mut self, v: u32) -> Option<usize> {
        match self.ioregsel {
            0x00 => {
                self.id = ((v >> 24) & 0xf) as u8;
                None
            }
            r @ 0x10..=0x3f => {
                let pin = usize::from((r - 0x10) / 2);
                let old = self.redir[pin];
                let mut e = if r & 1 == 0 {
                    // Delivery status and remote IRR are read-only.
                    let ro = DELIVERY_STATUS | REMOTE_IRR;
                    (old & !0xffff_ffff) | (old & ro) | (u64::from(v) & !ro)
                } else {
                    (old & 0xffff_ffff) | (u64::from(v & 0xff00_0000) << 32)
                };
                if e & TRIGGER_LEVEL == 0 {
                    e &= !REMOTE_IRR;
                }
                self.redir[pin] = e;
                // Switching to level: the request is the line's state. Switching to edge:
                // no edge has been seen yet.
                let bit = 1u32 << pin;
                match (old & TRIGGER_LEVEL != 0, e & TRIGGER_LEVEL != 0) {
                    (false, true) => self.irr = (self.irr & !bit) | (self.level & bit),
                    (true, false) => self.irr &= !bit,
                    _ => {}
                }
                Some(pin)
            }
            _ => None,
        }
    }

    /// MMIO read at `offset` within the IOAPIC page (32-bit registers; other sizes tolerated).
    pub fn mmio_read(&self, offset: u64) -> u32 {
        match offset {
            0x00 => u32::from(self.ioregsel),
            0x10 => self.read_reg(),
            _ => 0,
        }
    }

    /// MMIO write; returns a pin to service after a redirection-table change.
    pub fn mmio_write(&mut self, offset: u64, v: u32) -> Option<usize> {
        match offset {
            0x00 => {
                self.ioregsel = v as u8;
                None
            }
            0x10 => self.write_reg(v),
            _ => None, // 0x40 EOI register (version 0x20 only): ignored
        }
    }
}

#[cfg(test)]
#[path = "ioapic_tests.rs"]
mod tests;
