//! The i8254 programmable interval timer (ports 0x40-0x43) and the channel 2 gate / speaker
//! bits of port 0x61. Counters are computed from host time (`now_ns`) when read, so nothing
//! ticks in the background; channel 0's rising output edges (IRQ 0) are scheduled by
//! [`Pit::poll`].

/// Input clock of the counters.
pub const PIT_HZ: u64 = 1_193_182;

/// Channel 0 never interrupts more often than this (a guest programming a count of 2 would
/// otherwise ask for an interrupt every 1.7 us). KVM has the same kind of floor.
pub const MIN_IRQ_PERIOD_NS: u64 = 100_000;

/// Counter ticks in `ns` nanoseconds.
fn ticks(ns: u64) -> u64 {
    (u128::from(ns) * u128::from(PIT_HZ) / 1_000_000_000) as u64
}

/// Nanoseconds until tick `t` (rounded up, so that `ticks(ns_of(t)) >= t`).
fn ns_of(t: u64) -> u64 {
    let n = u128::from(t) * 1_000_000_000;
    n.div_ceil(u128::from(PIT_HZ)).min(u128::from(u64::MAX)) as u64
}

#[derive(Debug, Clone, Default)]
pub struct Channel {
    /// Reload value, 1..=0x10000 (a written 0 means 0x10000).
    count: u32,
    /// Host time at which the count was loaded (counting starts).
    load_ns: u64,
    /// A count has been written since the last control word.
    armed: bool,
    pub mode: u8,
    /// Access mode: 1 low byte, 2 high byte, 3 low then high.
    access: u8,
    bcd: bool,
    /// GATE input (always high for channels 0 and 1).
    gate: bool,
    /// Latched count (latch command or read-back).
    latched: Option<u16>,
    /// For a latched count in access mode 3: the low byte has been read.
    latch_hi_next: bool,
    status: Option<u8>,
    /// Access mode 3 reads: next read returns the high byte.
    read_hi: bool,
    /// Access mode 3 writes: the low byte has been written.
    write_hi: bool,
    write_lo: u8,
    /// A new count was written but not yet loaded into the counter.
    null_count: bool,
}

impl Channel {
    fn new(gate: bool) -> Self {
        Channel {
            count: 0x10000,
            access: 3,
            gate,
            ..Default::default()
        }
    }

    /// Ticks since the count was loaded.
    fn elapsed(&self, now: u64) -> u64 {
        ticks(now.saturating_sub(self.load_ns))
    }

    /// The current counter value.
    fn counter(&self, now: u64) -> u16 {
        if !self.armed {
            return self.count as u16;
        }
        let count = u64::from(self.count);
        let d = self.elapsed(now);
        let v = match self.mode {
            2 => count - d % count,
            3 => {
                // Counts down by two per clock, twice per period.
                let half = (2 * (d % count)) % count;
                count - half
            }
            _ => count.wrapping_sub(d),
        };
        v as u16
    }

    /// The OUT pin.
    pub fn out(&self, now: u64) -> bool {
        if !self.armed {
            // After a control word: mode 0 starts low, the others high.
            return self.mode != 0;
        }
        let count = u64::from(self.count);
        let d = self.elapsed(now);
        match self.mode {
            0 => d >= count,
            1 => d >= count,
            2 => !self.gate || count < 2 || d % count != count - 1,
            3 => !self.gate || d % count < count.div_ceil(2),
            _ => d != count, // 4, 5: strobe low for one clock at terminal count
        }
    }

    /// Host time of the first rising OUT edge strictly after `after`, if any.
    fn next_edge(&self, after: u64) -> Option<u64> {
        if !self.armed || !self.gate {
            return None;
        }
        let count = u64::from(self.count);
        let at = |t: u64| self.load_ns.saturating_add(ns_of(t));
        match self.mode {
            2 | 3 => {
                let k = if after < self.load_ns {
                    1
                } else {
                    self.elapsed(after) / count + 1
                };
                let mut t = at(k * count);
                if t <= after {
                    t = at((k + 1) * count);
                }
                Some(t)
            }
            0 | 1 => Some(at(count)).filter(|&t| t > after),
            _ => Some(at(count + 1)).filter(|&t| t > after),
        }
    }

    fn status_byte(&self, now: u64) -> u8 {
        (u8::from(self.out(now)) << 7)
            | (u8::from(self.null_count) << 6)
            | (self.access << 4)
            | (self.mode << 1)
            | u8::from(self.bcd)
    }

    fn latch(&mut self, now: u64) {
        if self.latched.is_none() {
            self.latched = Some(self.counter(now));
            self.latch_hi_next = false;
        }
    }

    fn load(&mut self, v: u16, now: u64) {
        self.count = if v == 0 { 0x10000 } else { u32::from(v) };
        self.load_ns = now;
        self.armed = true;
        self.null_count = false;
    }

    fn read(&mut self, now: u64) -> u8 {
        if let Some(s) = self.status.take() {
            return s;
        }
        if let Some(l) = self.latched {
            let [lo, hi] = l.to_le_bytes();
            return match self.access {
                1 => {
                    self.latched = None;
                    lo
                }
                2 => {
                    self.latched = None;
                    hi
                }
                _ => {
                    if self.latch_hi_next {
                        self.latched = None;
                        self.latch_hi_next = false;
                        hi
                    } else {
                        self.latch_hi_next = true;
                        lo
                    }
                }
            };
        }
        let [lo, hi] = self.counter(now).to_le_bytes();
        match self.access {
            1 => lo,
            2 => hi,
            _ => {
                self.read_hi = !self.read_hi;
                if self.read_hi {
                    lo
                } else {
                    hi
                }
            }
        }
    }

    fn write(&mut self, v: u8, now: u64) {
        match self.access {
            1 => self.load(u16::from(v), now),
            2 => self.load(u16::from(v) << 8, now),
            _ => {
                if self.write_hi {
                    self.write_hi = false;
                    self.load(u16::from_le_bytes([self.write_lo, v]), now);
                } else {
                    self.write_hi = true;
                    self.write_lo = v;
                    self.null_count = true;
                    // Mode 0 stops counting when the first byte of a new count is written.
                    if self.mode == 0 {
                        self.armed = false;
                    }
                }
            }
        }
    }

    fn control(&mut self, access: u8, mode: u8, bcd: bool) {
        self.access = access;
        // Modes 6 and 7 are aliases of 2 and 3.
        self.mode = if mode >= 6 { mode - 4 } else { mode };
        self.bcd = bcd;
        self.armed = false;
        self.latched = None;
        self.status = None;
        self.read_hi = false;
        self.write_hi = false;
        self.null_count = true;
    }

    fn set_gate(&mut self, gate: bool, now: u64) {
        if gate && !self.gate && self.armed && matches!(self.mode, 1 | 2 | 3 | 5) {
            // A rising gate (re)triggers these modes.
            self.load_ns = now;
        }
        self.gate = gate;
    }
}

/// The three channels and port 0x61.
#[derive(Debug, Clone)]
pub struct Pit {
    pub channels: [Channel; 3],
    /// Port 0x61 bit 1 (speaker data) and bits 2-3 (parity/IOCHK enables, stored only).
    port61: u8,
    /// Port 0x61 bit 4, toggling on each read.
    refresh: bool,
    /// Next scheduled rising edge of channel 0 (IRQ 0).
    next_irq: Option<u64>,
}

impl Default for Pit {
    fn default() -> Self {
        Self::new()
    }
}

impl Pit {
    pub fn new() -> Self {
        Pit {
            channels: [Channel::new(true), Channel::new(true), Channel::new(false)],
            port61: 0,
            refresh: false,
            next_irq: None,
        }
    }

    pub fn owns(port: u16) -> bool {
        matches!(port, 0x40..=0x43 | 0x61)
    }

    /// Recomputes channel 0's interrupt schedule after it was reprogrammed.
    fn reschedule(&mut self, now: u64) {
        self.next_irq = self.channels[0].next_edge(now.saturating_sub(1));
    }

    pub fn read(&mut self, port: u16, now: u64) -> u8 {
        match port {
            0x40..=0x42 => self.channels[usize::from(port - 0x40)].read(now),
            0x61 => {
                self.refresh = !self.refresh;
                let ch2 = &self.channels[2];
                (self.port61 & 0x0e)
                    | u8::from(ch2.gate)
                    | (u8::from(self.refresh) << 4)
                    | (u8::from(ch2.out(now)) << 5)
            }
            _ => 0xff, // 0x43 is write-only
        }
    }

    pub fn write(&mut self, port: u16, v: u8, now: u64) {
        match port {
            0x40..=0x42 => {
                let i = usize::from(port - 0x40);
                self.channels[i].write(v, now);
                if i == 0 {
                    self.reschedule(now);
                }
            }
            0x43 => {
                let sel = v >> 6;
                if sel == 3 {
                    // Read-back: bit 5 clear latches counts, bit 4 clear latches status.
                    for i in 0..3 {
                        if v & (2 << i) == 0 {
                            continue;
                        }
                        let ch = &mut self.channels[i];
                        if v & 0x20 == 0 {
                            ch.latch(now);
                        }
                        if v & 0x10 == 0 && ch.status.is_none() {
                            ch.status = Some(ch.status_byte(now));
                        }
                    }
                    return;
                }
                let i = usize::from(sel);
                let access = (v >> 4) & 3;
                if access == 0 {
                    self.channels[i].latch(now);
                } else {
                    self.channels[i].control(access, (v >> 1) & 7, v & 1 != 0);
                    if i == 0 {
                        self.reschedule(now);
                    }
                }
            }
            0x61 => {
                self.port61 = v & 0x0e;
                self.channels[2].set_gate(v & 1 != 0, now);
            }
            _ => {}
        }
    }

    /// Number of IRQ 0 edges due by `now` (0 or 1: missed periodic ticks are coalesced) and
    /// the time of the next one.
    pub fn poll(&mut self, now: u64) -> (bool, Option<u64>) {
        let Some(t) = self.next_irq else {
            return (false, None);
        };
        if t > now {
            return (false, Some(t));
        }
        let ch = &self.channels[0];
        self.next_irq = ch
            .next_edge(now)
            .map(|n| n.max(now.saturating_add(MIN_IRQ_PERIOD_NS)));
        (true, self.next_irq)
    }
}

#[cfg(test)]
#[path = "pit_tests.rs"]
mod tests;
