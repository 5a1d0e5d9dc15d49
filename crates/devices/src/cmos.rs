//! The MC146818 real-time clock and its 128 bytes of CMOS memory.
//!
//! Insert it on the port I/O bus at base 0x70 with length 2: port 0x70 (offset 0) selects a
//! register, port 0x71 (offset 1) reads or writes it. Bit 7 of the index written to port 0x70 is
//! the chipset's NMI-disable bit, not part of the index; we mask it off (and do not model NMI
//! masking).
//!
//! Why a guest cares:
//! - Linux reads the wall-clock time from it at boot (`mach_get_cmos_time`) and `hwclock` reads and
//!   writes it later. The time comes from the host clock (UTC) on every read, so it never drifts
//!   and there is no update cycle to emulate: register A's update-in-progress bit always reads
//!   clear, so a guest never has to wait for it.
//! - Firmware-style memory-size registers (as QEMU and crosvm fill them) tell boot loaders and
//!   BIOSes how much RAM there is.
//!
//! Writes to the time registers are kept as an offset from host time (as crosvm does): the guest
//! can set its RTC (`hwclock --systohc`) and later reads follow the host clock from that point,
//! but the host clock itself is never touched. The offset lives as long as this device does.
//! While register B's SET bit is on, the time is frozen at the value it had when SET rose, and the
//! guest's writes edit that frozen copy; clearing SET commits it. Outside SET each field write is
//! committed at once. A write that leaves a field out of range (month 13, minute 60, …) is ignored.
//!
//! Not modelled: alarm, periodic and update-ended interrupts (no IRQ 8 — register C always reads
//! 0), daylight-saving adjustment, divider/rate behaviour (register A is plain storage apart from
//! UIP) and the CMOS checksum.

use std::time::{SystemTime, UNIX_EPOCH};

use crate::BusDevice;

/// Offset of the index port (0x70) from the device's base.
pub const INDEX_OFFSET: u64 = 0;
/// Offset of the data port (0x71) from the device's base.
pub const DATA_OFFSET: u64 = 1;
/// Length of the port range to insert the RTC at.
pub const CMOS_LEN: u64 = 2;

const NVRAM_SIZE: usize = 128;
const INDEX_MASK: u8 = 0x7f;

// Clock registers.
const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_WEEKDAY: u8 = 0x06;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_A: u8 = 0x0a;
const REG_B: u8 = 0x0b;
const REG_C: u8 = 0x0c;
const REG_D: u8 = 0x0d;
/// The century byte, at the offset the ACPI FADT's CENTURY field conventionally names.
const REG_CENTURY: u8 = 0x32;

/// Register A: update in progress (read-only).
const REG_A_UIP: u8 = 0x80;
/// Register A default: 32.768 kHz time base, 1024 Hz periodic rate.
const REG_A_DEFAULT: u8 = 0x26;
/// Register B: updates halted so the guest can set the time.
const REG_B_SET: u8 = 0x80;
/// Register B: binary (rather than BCD) data mode.
const REG_B_DM_BINARY: u8 = 0x04;
/// Register B: 24-hour (rather than 12-hour) mode.
const REG_B_24H: u8 = 0x02;
/// Register B default: 24-hour, BCD, no interrupts.
const REG_B_DEFAULT: u8 = REG_B_24H;
/// Register D: valid RAM and time (the battery is fine).
const REG_D_VRT: u8 = 0x80;
/// In 12-hour mode, bit 7 of the hours register marks PM.
const HOURS_PM: u8 = 0x80;

// Memory-size registers, as QEMU and crosvm fill them.
const REG_BASE_MEM_LO: usize = 0x15;
const REG_EXT_MEM_LO: usize = 0x17;
const REG_EXT_MEM2_LO: usize = 0x30;
const REG_MEM_ABOVE_16M_LO: usize = 0x34;
const REG_MEM_ABOVE_4G_LO: usize = 0x5b;

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
const GIB: u64 = 1024 * MIB;
/// Conventional memory reported to firmware: the usual 640 KiB.
const BASE_MEM_KIB: u64 = 640;

/// A source of wall-clock time, injectable so tests can fix the time.
pub trait Clock: Send {
    /// Seconds since the Unix epoch (UTC); negative before 1970.
    fn now(&self) -> i64;
}

/// The host's real-time clock (`CLOCK_REALTIME`, through `SystemTime`).
#[derive(Debug, Default, Clone, Copy)]
pub struct HostClock;

impl Clock for HostClock {
    fn now(&self) -> i64 {
        match SystemTime::now().duration_since(UNIX_EPOCH) {
            Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
            Err(e) => i64::try_from(e.duration().as_secs()).map_or(i64::MIN, |s| -s),
        }
    }
}

/// A broken-down UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct DateTime {
    year: i64,
    /// 1..=12
    month: u8,
    /// 1..=31
    day: u8,
    hour: u8,
    minute: u8,
    second: u8,
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
/// Out-of-range days are folded arithmetically (Feb 31 becomes Mar 2 or 3), which is how a
/// committed guest write normalises. `month` must be 1..=12.
fn days_from_civil(year: i64, month: u8, day: u8) -> i64 {
    let (m, d) = (i64::from(month), i64::from(day));
    let y = if m <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(days: i64) -> (i64, u8, u8) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u8; // 1..=31
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u8; // 1..=12
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

impl DateTime {
    /// Years are kept within what the RTC can show (centuries 0..=99), so every conversion stays
    /// far from i64 overflow whatever the clock or the guest says.
    fn from_unix(secs: i64) -> Self {
        const MIN: i64 = -62_167_219_200; // 0000-01-01T00:00:00Z
        const MAX: i64 = 253_402_300_799; // 9999-12-31T23:59:59Z
        let secs = secs.clamp(MIN, MAX);
        let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
        let tod = secs.rem_euclid(86_400);
        Self {
            year,
            month,
            day,
            hour: (tod / 3600) as u8,
            minute: (tod / 60 % 60) as u8,
            second: (tod % 60) as u8,
        }
    }

    fn to_unix(self) -> i64 {
        days_from_civil(self.year, self.month, self.day) * 86_400
            + i64::from(self.hour) * 3600
            + i64::from(self.minute) * 60
            + i64::from(self.second)
    }

    fn is_valid(&self) -> bool {
        (1..=12).contains(&self.month)
            && (1..=31).contains(&self.day)
            && self.hour < 24
            && self.minute < 60
            && self.second < 60
            && (0..=9999).contains(&self.year)
    }

    /// 1 = Sunday … 7 = Saturday, as the MC146818 counts.
    fn weekday(&self) -> u8 {
        // 1970-01-01 was a Thursday (5).
        ((days_from_civil(self.year, self.month, self.day) + 4).rem_euclid(7) + 1) as u8
    }
}

fn to_bcd(v: u8) -> u8 {
    ((v / 10) << 4) | (v % 10)
}

/// Decodes a BCD byte without validating it: invalid digits give out-of-range values, which
/// the caller rejects.
fn from_bcd(v: u8) -> u8 {
    (v >> 4) * 10 + (v & 0x0f)
}

/// The RTC and CMOS memory. See the module documentation for the model.
pub struct Cmos {
    index: u8,
    /// Last byte written to port 0x70 (index plus NMI bit), which port 0x70 reads back.
    index_port: u8,
    nvram: [u8; NVRAM_SIZE],
    clock: Box<dyn Clock>,
    /// Guest time minus host time, in seconds, from guest writes to the time registers.
    offset: i64,
    /// The time being edited while register B's SET bit is on.
    frozen: Option<DateTime>,
}

impl Cmos {
    /// `mem_below_4g` is the RAM below 4 GiB (RAM starts at address 0, so this is also where low
    /// RAM ends) and `mem_above_4g` the RAM from 4 GiB up; they fill the memory-size registers.
    pub fn new(mem_below_4g: u64, mem_above_4g: u64) -> Self {
        Self::with_clock(mem_below_4g, mem_above_4g, Box::new(HostClock))
    }

    /// Like [`Cmos::new`] with another time source (tests use a fixed clock).
    pub fn with_clock(mem_below_4g: u64, mem_above_4g: u64, clock: Box<dyn Clock>) -> Self {
        let mut nvram = [0u8; NVRAM_SIZE];
        nvram[usize::from(REG_A)] = REG_A_DEFAULT;
        nvram[usize::from(REG_B)] = REG_B_DEFAULT;
        nvram[usize::from(REG_D)] = REG_D_VRT;

        let mut put = |lo: usize, value: u64, bytes: usize| {
            for (i, b) in nvram.iter_mut().skip(lo).take(bytes).enumerate() {
                *b = (value >> (8 * i)) as u8;
            }
        };
        // Conventional memory in KiB.
        put(REG_BASE_MEM_LO, BASE_MEM_KIB, 2);
        // Extended memory above 1 MiB in KiB, saturating at 64 MiB (0xffff KiB), twice.
        let ext_kib = (mem_below_4g.saturating_sub(MIB) / KIB).min(0xffff);
        put(REG_EXT_MEM_LO, ext_kib, 2);
        put(REG_EXT_MEM2_LO, ext_kib, 2);
        // Memory between 16 MiB and 4 GiB in 64 KiB units.
        let above_16m =
            (mem_below_4g.min(4 * GIB).saturating_sub(16 * MIB) / (64 * KIB)).min(0xffff);
        put(REG_MEM_ABOVE_16M_LO, above_16m, 2);
        // Memory above 4 GiB in 64 KiB units (three bytes: up to 1 TiB).
        let above_4g = (mem_above_4g / (64 * KIB)).min(0xff_ffff);
        put(REG_MEM_ABOVE_4G_LO, above_4g, 3);

        Self {
            index: 0,
            index_port: 0,
            nvram,
            clock,
            offset: 0,
            frozen: None,
        }
    }

    fn reg_b(&self) -> u8 {
        self.nvram[usize::from(REG_B)]
    }

    /// The guest's current time: the frozen copy while SET is on, else host time plus offset.
    fn now(&self) -> DateTime {
        self.frozen
            .unwrap_or_else(|| DateTime::from_unix(self.clock.now().saturating_add(self.offset)))
    }

    fn encode(&self, v: u8) -> u8 {
        if self.reg_b() & REG_B_DM_BINARY != 0 {
            v
        } else {
            to_bcd(v)
        }
    }

    fn decode(&self, v: u8) -> u8 {
        if self.reg_b() & REG_B_DM_BINARY != 0 {
            v
        } else {
            from_bcd(v)
        }
    }

    fn encode_hours(&self, hour: u8) -> u8 {
        if self.reg_b() & REG_B_24H != 0 {
            return self.encode(hour);
        }
        let h12 = match hour % 12 {
            0 => 12,
            h => h,
        };
        let pm = if hour >= 12 { HOURS_PM } else { 0 };
        self.encode(h12) | pm
    }

    fn decode_hours(&self, v: u8) -> u8 {
        if self.reg_b() & REG_B_24H != 0 {
            return self.decode(v);
        }
        let h = self.decode(v & !HOURS_PM);
        match (h, v & HOURS_PM != 0) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h.saturating_add(12),
            (h, false) => h,
        }
    }

    fn read_reg(&self, index: u8) -> u8 {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_WEEKDAY | REG_DAY | REG_MONTH
            | REG_YEAR | REG_CENTURY => {
                let t = self.now();
                match index {
                    REG_SECONDS => self.encode(t.second),
                    REG_MINUTES => self.encode(t.minute),
                    REG_HOURS => self.encode_hours(t.hour),
                    REG_WEEKDAY => self.encode(t.weekday()),
                    REG_DAY => self.encode(t.day),
                    REG_MONTH => self.encode(t.month),
                    REG_YEAR => self.encode(t.year.rem_euclid(100) as u8),
                    _ => self.encode(t.year.div_euclid(100).rem_euclid(100) as u8),
                }
            }
            REG_A => self.nvram[usize::from(REG_A)] & !REG_A_UIP,
            // No interrupt ever becomes pending, so "read clears" has nothing to clear.
            REG_C => 0,
            REG_D => REG_D_VRT,
            _ => self.nvram[usize::from(index & INDEX_MASK)],
        }
    }

    /// Sets one time field; a write that leaves a field out of range changes nothing.
    fn write_time(&mut self, index: u8, value: u8) {
        let mut t = self.now();
        let v = self.decode(value);
        match index {
            REG_SECONDS => t.second = v,
            REG_MINUTES => t.minute = v,
            REG_HOURS => t.hour = self.decode_hours(value),
            REG_DAY => t.day = v,
            REG_MONTH => t.month = v,
            REG_YEAR => t.year = t.year.div_euclid(100) * 100 + i64::from(v),
            REG_CENTURY => t.year = i64::from(v) * 100 + t.year.rem_euclid(100),
            _ => return,
        }
        if !t.is_valid() {
            tracing::debug!("cmos: ignoring invalid time write {value:#04x} to {index:#04x}");
            return;
        }
        if self.frozen.is_some() {
            self.frozen = Some(t);
        } else {
            self.commit(t);
        }
    }

    fn commit(&mut self, t: DateTime) {
        self.offset = t.to_unix().saturating_sub(self.clock.now());
    }

    fn write_reg(&mut self, index: u8, value: u8) {
        match index {
            REG_SECONDS | REG_MINUTES | REG_HOURS | REG_DAY | REG_MONTH | REG_YEAR
            | REG_CENTURY => self.write_time(index, value),
            // The day of the week follows from the date.
            REG_WEEKDAY => {}
            REG_A => {
                let a = &mut self.nvram[usize::from(REG_A)];
                *a = (*a & REG_A_UIP) | (value & !REG_A_UIP);
            }
            REG_B => {
                let old = self.reg_b();
                if value & REG_B_SET != 0 && old & REG_B_SET == 0 {
                    self.frozen = Some(self.now());
                }
                self.nvram[usize::from(REG_B)] = value;
                if value & REG_B_SET == 0 {
                    if let Some(t) = self.frozen.take() {
                        self.commit(t);
                    }
                }
            }
            REG_C | REG_D => {}
            _ => self.nvram[usize::from(index & INDEX_MASK)] = value,
        }
    }

    fn read_byte(&mut self, offset: u64) -> u8 {
        match offset {
            INDEX_OFFSET => self.index_port,
            DATA_OFFSET => self.read_reg(self.index),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            INDEX_OFFSET => {
                self.index_port = value;
                self.index = value & INDEX_MASK;
            }
            DATA_OFFSET => self.write_reg(self.index, value),
            _ => {}
        }
    }
}

/// Wider accesses are split into byte accesses to consecutive ports, as on the ISA bus: a
/// 16-bit write to port 0x70 sets the index and then writes the data port, which some guests do.
impl BusDevice for Cmos {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        crate::bus::split_read(offset, data, |o| self.read_byte(o));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        crate::bus::split_write(offset, data, |o, b| self.write_byte(o, b));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::Rng;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::sync::Arc;

    /// A clock the test can set and advance.
    #[derive(Clone, Default)]
    struct FakeClock(Arc<AtomicI64>);
    impl FakeClock {
        fn set(&self, t: i64) {
            self.0.store(t, Ordering::SeqCst);
        }
        fn advance(&self, s: i64) {
            self.0.fetch_add(s, Ordering::SeqCst);
        }
    }
    impl Clock for FakeClock {
        fn now(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn get(c: &mut Cmos, index: u8) -> u8 {
        c.write(INDEX_OFFSET, &[index]);
        let mut b = [0u8];
        c.read(DATA_OFFSET, &mut b);
        b[0]
    }

    fn set(c: &mut Cmos, index: u8, v: u8) {
        c.write(INDEX_OFFSET, &[index]);
        c.write(DATA_OFFSET, &[v]);
    }

    /// Reads the time as a guest would, decoding per register B.
    fn read_time(c: &mut Cmos) -> DateTime {
        let b = get(c, REG_B);
        let dec = |v: u8| {
            if b & REG_B_DM_BINARY != 0 {
                v
            } else {
                from_bcd(v)
            }
        };
        let raw_hour = get(c, REG_HOURS);
        let hour = if b & REG_B_24H != 0 {
            dec(raw_hour)
        } else {
            dec(raw_hour & 0x7f) % 12 + if raw_hour & 0x80 != 0 { 12 } else { 0 }
        };
        DateTime {
            year: i64::from(dec(get(c, REG_CENTURY))) * 100 + i64::from(dec(get(c, REG_YEAR))),
            month: dec(get(c, REG_MONTH)),
            day: dec(get(c, REG_DAY)),
            hour,
            minute: dec(get(c, REG_MINUTES)),
            second: dec(get(c, REG_SECONDS)),
        }
    }

    // 2024-02-29T13:45:07Z, a Thursday.
    const LEAP_DAY: i64 = 1_709_214_307;

    fn fixed(t: i64) -> (Cmos, FakeClock) {
        let clock = FakeClock::default();
        clock.set(t);
        (Cmos::with_clock(0, 0, Box::new(clock.clone())), clock)
    }

    #[test]
    fn calendar_conversions() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        for d in (-800_000..3_000_000).step_by(97) {
            let (y, m, day) = civil_from_days(d);
            assert_eq!(days_from_civil(y, m, day), d);
        }
        let t = DateTime::from_unix(LEAP_DAY);
        assert_eq!(
            t,
            DateTime {
                year: 2024,
                month: 2,
                day: 29,
                hour: 13,
                minute: 45,
                second: 7
            }
        );
        assert_eq!(t.to_unix(), LEAP_DAY);
        assert_eq!(t.weekday(), 5); // Thursday
        assert_eq!(DateTime::from_unix(0).weekday(), 5); // 1970-01-01, Thursday
                                                         // Extremes are clamped rather than overflowing.
        assert_eq!(DateTime::from_unix(i64::MIN).year, 0);
        assert_eq!(DateTime::from_unix(i64::MAX).year, 9999);
    }

    #[test]
    fn fixed_clock_bcd_24h() {
        let (mut c, _) = fixed(LEAP_DAY);
        assert_eq!(get(&mut c, REG_B), 0x02);
        assert_eq!(get(&mut c, REG_SECONDS), 0x07);
        assert_eq!(get(&mut c, REG_MINUTES), 0x45);
        assert_eq!(get(&mut c, REG_HOURS), 0x13);
        assert_eq!(get(&mut c, REG_WEEKDAY), 0x05);
        assert_eq!(get(&mut c, REG_DAY), 0x29);
        assert_eq!(get(&mut c, REG_MONTH), 0x02);
        assert_eq!(get(&mut c, REG_YEAR), 0x24);
        assert_eq!(get(&mut c, REG_CENTURY), 0x20);
    }

    #[test]
    fn fixed_clock_binary_and_12h() {
        let (mut c, clock) = fixed(LEAP_DAY);
        set(&mut c, REG_B, REG_B_DM_BINARY | REG_B_24H);
        assert_eq!(get(&mut c, REG_SECONDS), 7);
        assert_eq!(get(&mut c, REG_MINUTES), 45);
        assert_eq!(get(&mut c, REG_HOURS), 13);
        assert_eq!(get(&mut c, REG_DAY), 29);
        assert_eq!(get(&mut c, REG_YEAR), 24);
        assert_eq!(get(&mut c, REG_CENTURY), 20);
        // 12-hour binary: 1 PM.
        set(&mut c, REG_B, REG_B_DM_BINARY);
        assert_eq!(get(&mut c, REG_HOURS), 0x80 | 1);
        // 12-hour BCD at 00:30 and 12:30: 12 AM and 12 PM.
        set(&mut c, REG_B, 0);
        clock.set(LEAP_DAY - 13 * 3600 - 15 * 60);
        assert_eq!(get(&mut c, REG_HOURS), 0x12);
        clock.set(LEAP_DAY - 3600 - 15 * 60);
        assert_eq!(get(&mut c, REG_HOURS), 0x80 | 0x12);
        clock.set(LEAP_DAY - 3 * 3600);
        assert_eq!(get(&mut c, REG_HOURS), 0x10);
        assert_eq!(read_time(&mut c).to_unix(), LEAP_DAY - 3 * 3600);
    }

    #[test]
    fn host_clock_bcd_and_binary() {
        let mut c = Cmos::new(0, 0);
        for b in [REG_B_24H, REG_B_24H | REG_B_DM_BINARY, 0, REG_B_DM_BINARY] {
            set(&mut c, REG_B, b);
            let guest = read_time(&mut c).to_unix();
            let host = HostClock.now();
            assert!(
                (host - guest).abs() <= 2,
                "mode {b:#x}: guest {guest} host {host}"
            );
        }
    }

    #[test]
    fn status_registers() {
        let (mut c, _) = fixed(LEAP_DAY);
        assert_eq!(get(&mut c, REG_A), REG_A_DEFAULT);
        set(&mut c, REG_A, 0xff);
        assert_eq!(get(&mut c, REG_A) & REG_A_UIP, 0, "UIP is never set");
        assert_eq!(get(&mut c, REG_C), 0);
        set(&mut c, REG_C, 0xff);
        assert_eq!(get(&mut c, REG_C), 0);
        assert_eq!(get(&mut c, REG_D), REG_D_VRT);
        set(&mut c, REG_D, 0);
        assert_eq!(get(&mut c, REG_D), REG_D_VRT);
    }

    #[test]
    fn nmi_bit_is_masked_and_nvram_is_storage() {
        let (mut c, _) = fixed(LEAP_DAY);
        set(&mut c, 0x80 | 0x40, 0xab);
        assert_eq!(get(&mut c, 0x40), 0xab);
        assert_eq!(get(&mut c, 0x80 | REG_SECONDS), 0x07);
        // 16-bit write to port 0x70: index then data.
        c.write(INDEX_OFFSET, &[0x41, 0xcd]);
        assert_eq!(get(&mut c, 0x41), 0xcd);
        let mut w = [0u8; 2];
        c.write(INDEX_OFFSET, &[0x41]);
        c.read(INDEX_OFFSET, &mut w);
        assert_eq!(w, [0x41, 0xcd]);
    }

    fn nv(c: &Cmos, lo: usize, bytes: usize) -> u64 {
        (0..bytes).fold(0, |acc, i| acc | u64::from(c.nvram[lo + i]) << (8 * i))
    }

    #[test]
    fn memory_size_registers() {
        let below = 0xc000_0000; // 3 GiB
        let above = 5 * GIB;
        let c = Cmos::with_clock(below, above, Box::new(FakeClock::default()));
        assert_eq!(nv(&c, REG_BASE_MEM_LO, 2), 640);
        assert_eq!(nv(&c, REG_EXT_MEM_LO, 2), 0xffff);
        assert_eq!(nv(&c, REG_EXT_MEM2_LO, 2), 0xffff);
        assert_eq!(
            nv(&c, REG_MEM_ABOVE_16M_LO, 2),
            (below - 16 * MIB) / (64 * KIB)
        );
        assert_eq!(nv(&c, REG_MEM_ABOVE_4G_LO, 3), above / (64 * KIB));

        // Small guests: below 16 MiB there is nothing to report in 0x34/0x35.
        let c = Cmos::with_clock(8 * MIB, 0, Box::new(FakeClock::default()));
        assert_eq!(nv(&c, REG_EXT_MEM_LO, 2), 7 * 1024);
        assert_eq!(nv(&c, REG_MEM_ABOVE_16M_LO, 2), 0);
        assert_eq!(nv(&c, REG_MEM_ABOVE_4G_LO, 3), 0);

        // Huge values saturate; "below 4 GiB" cannot exceed 4 GiB.
        let c = Cmos::with_clock(u64::MAX, u64::MAX, Box::new(FakeClock::default()));
        assert_eq!(
            nv(&c, REG_MEM_ABOVE_16M_LO, 2),
            (4 * GIB - 16 * MIB) / (64 * KIB)
        );
        assert_eq!(nv(&c, REG_MEM_ABOVE_4G_LO, 3), 0xff_ffff);
        // ... and are visible through the ports.
        let mut c = c;
        assert_eq!(get(&mut c, 0x35), 0xff);
    }

    /// The way Linux's `mc146818_set_time` sets the clock: SET on, fields, SET off.
    #[test]
    fn guest_sets_time_with_set_bit() {
        let (mut c, clock) = fixed(LEAP_DAY);
        let b = get(&mut c, REG_B);
        set(&mut c, REG_B, b | REG_B_SET);
        clock.advance(10); // frozen while SET is on
        assert_eq!(get(&mut c, REG_SECONDS), 0x07);
        for (reg, v) in [
            (REG_YEAR, 0x99),
            (REG_MONTH, 0x12),
            (REG_DAY, 0x31),
            (REG_HOURS, 0x23),
            (REG_MINUTES, 0x59),
            (REG_SECONDS, 0x58),
            (REG_CENTURY, 0x19),
        ] {
            set(&mut c, reg, v);
        }
        set(&mut c, REG_B, b);
        let t = read_time(&mut c);
        assert_eq!(
            t,
            DateTime {
                year: 1999,
                month: 12,
                day: 31,
                hour: 23,
                minute: 59,
                second: 58
            }
        );
        // Time runs on from there with the host clock.
        clock.advance(3);
        let t = read_time(&mut c);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second),
            (2000, 1, 1, 0, 0, 1)
        );
    }

    #[test]
    fn single_field_writes_and_invalid_values() {
        let (mut c, _) = fixed(LEAP_DAY);
        set(&mut c, REG_MINUTES, 0x05);
        assert_eq!(get(&mut c, REG_MINUTES), 0x05);
        assert_eq!(get(&mut c, REG_HOURS), 0x13);
        // Invalid BCD, out-of-range fields: ignored.
        set(&mut c, REG_MINUTES, 0x6a);
        set(&mut c, REG_MONTH, 0x13);
        set(&mut c, REG_MONTH, 0x00);
        set(&mut c, REG_HOURS, 0x24);
        set(&mut c, REG_DAY, 0x32);
        let t = read_time(&mut c);
        assert_eq!((t.month, t.day, t.hour, t.minute), (2, 29, 13, 5));
        // 12-hour write: 12 AM is hour 0.
        set(&mut c, REG_B, 0);
        set(&mut c, REG_HOURS, 0x12);
        set(&mut c, REG_B, REG_B_24H);
        assert_eq!(get(&mut c, REG_HOURS), 0x00);
        set(&mut c, REG_B, 0);
        set(&mut c, REG_HOURS, 0x80 | 0x11);
        set(&mut c, REG_B, REG_B_24H);
        assert_eq!(get(&mut c, REG_HOURS), 0x23);
        // Weekday writes are ignored: it follows the date.
        set(&mut c, REG_WEEKDAY, 0x01);
        assert_eq!(get(&mut c, REG_WEEKDAY), 0x05);
    }

    #[test]
    fn hostile_guest_never_panics() {
        let (mut c, clock) = fixed(LEAP_DAY);
        let mut rng = Rng::new(0x70);
        for i in 0..200_000u64 {
            if i.is_multiple_of(1000) {
                clock.set(rng.next() as i64);
            }
            let off = rng.next() % 3;
            let mut buf = [0u8; 8];
            let n = rng.size();
            if rng.coin() {
                c.read(off, &mut buf[..n]);
            } else {
                for b in &mut buf[..n] {
                    *b = rng.next() as u8;
                }
                c.write(off, &buf[..n]);
            }
        }
        c.read(u64::MAX, &mut [0u8; 8]);
        c.write(u64::MAX, &[0u8; 8]);
    }
}
