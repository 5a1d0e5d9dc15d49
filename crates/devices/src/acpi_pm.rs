//! ACPI fixed-hardware power management: the PM1a event and control blocks.
//!
//! This is how an ACPI guest powers off (it writes SLP_TYP/SLP_EN to PM1_CNT, with the S5 value
//! from the DSDT's `\_S5` package) and how the host asks it to shut down (a power-button press:
//! PWRBTN_STS raises the SCI, and the guest's ACPI driver starts an orderly shutdown).
//!
//! One device serves both blocks, because the Vireo layout places them back to back: insert it on
//! the port I/O bus at the FADT's PM1a_EVT_BLK (0x600 on Vireo's machine) with length [`ACPI_PM_LEN`] (6):
//!
//! | offset | port  | register                 |
//! |--------|-------|--------------------------|
//! | 0      | 0x600 | PM1_STS (16-bit, W1C)    |
//! | 2      | 0x602 | PM1_EN (16-bit)          |
//! | 4      | 0x604 | PM1_CNT (16-bit)         |
//!
//! The FADT must describe exactly this (PM1_EVT_LEN 4, PM1_CNT_LEN 2). Should the two blocks
//! ever be placed apart, a small adapter that adds 4 to the control block's offsets can share
//! this device; the register logic does not depend on the ports.
//!
//! Registers are handled byte by byte, so any access size at any offset works; every field a
//! guest writes as a unit (a status bit, SLP_TYP together with SLP_EN) lies within one byte.
//!
//! We are permanently in ACPI mode: there is no SMI_CMD port and SCI_EN always reads 1, so the
//! guest never tries to switch modes. There is no PM timer, GPE block or sleep-button here.

use std::sync::Arc;

use crate::{BusDevice, ExitReason, ExitSignal, IrqLine};

/// Length of the combined event (4 bytes) and control (2 bytes) blocks.
pub const ACPI_PM_LEN: u64 = 6;

const STS_OFFSET: u64 = 0;
const EN_OFFSET: u64 = 2;
const CNT_OFFSET: u64 = 4;

// PM1_STS / PM1_EN bits.
const TMR_STS: u16 = 1 << 0;
const BM_STS: u16 = 1 << 4;
const GBL_STS: u16 = 1 << 5;
/// The power button was pressed (status) / may raise the SCI (enable).
pub const PWRBTN: u16 = 1 << 8;
const SLPBTN: u16 = 1 << 9;
const RTC_STS: u16 = 1 << 10;
const PCIEXP_WAKE: u16 = 1 << 14;
const WAK_STS: u16 = 1 << 15;
/// Status bits the guest can see set (and clear by writing 1).
const STS_MASK: u16 =
    TMR_STS | BM_STS | GBL_STS | PWRBTN | SLPBTN | RTC_STS | PCIEXP_WAKE | WAK_STS;
/// Enable bits the guest can set: those with a status bit that can raise the SCI, plus
/// PCIEXP_WAKE_DIS.
const EN_MASK: u16 = TMR_STS | GBL_STS | PWRBTN | SLPBTN | RTC_STS | PCIEXP_WAKE;
/// Status bits that raise the SCI when enabled (WAK_STS and BM_STS never do; PCIEXP_WAKE's enable
/// bit is a *disable*).
const SCI_MASK: u16 = TMR_STS | GBL_STS | PWRBTN | SLPBTN | RTC_STS;

// PM1_CNT bits.
const SCI_EN: u16 = 1 << 0;
const BM_RLD: u16 = 1 << 1;
const GBL_RLS: u16 = 1 << 2;
const SLP_TYP_SHIFT: u16 = 10;
const SLP_TYP_MASK: u16 = 0x7 << SLP_TYP_SHIFT;
const SLP_EN: u16 = 1 << 13;
/// PM1_CNT bits that read back as written. GBL_RLS and SLP_EN are write-only (read as 0).
const CNT_STORED: u16 = BM_RLD | SLP_TYP_MASK;

/// The SLP_TYP value for S5 (soft off). It must match the first element of the DSDT's `\_S5`
/// package, which is what the guest writes.
pub const S5_SLP_TYP: u16 = 5;

/// The PM1a event and control blocks. See the module documentation.
pub struct AcpiPm {
    exit: Arc<ExitSignal>,
    sci: Arc<dyn IrqLine>,
    /// Last level driven on the SCI, so the line is only touched when it changes.
    sci_level: bool,
    sts: u16,
    en: u16,
    cnt: u16,
}

impl AcpiPm {
    /// `sci` is the ACPI System Control Interrupt (IRQ 9), level-triggered.
    pub fn new(exit: Arc<ExitSignal>, sci: Arc<dyn IrqLine>) -> Self {
        Self {
            exit,
            sci,
            sci_level: false,
            sts: 0,
            en: 0,
            cnt: 0,
        }
    }

    /// Presses (and releases) the power button: the guest's ACPI driver sees PWRBTN_STS and, if
    /// it enabled PWRBTN_EN, gets an SCI. Linux (acpid/systemd-logind) then shuts down cleanly and
    /// finally powers off through PM1_CNT. Until the guest enables the event, the status bit just
    /// stays set, as on hardware; the guest sees it when it enables the button.
    pub fn press_power_button(&mut self) {
        self.sts |= PWRBTN;
        self.update_sci();
    }

    /// The guest has enabled the power-button event, i.e. its ACPI driver is up and a press
    /// will be noticed. Lets the VMM decide between a graceful request and a hard stop.
    pub fn power_button_enabled(&self) -> bool {
        self.en & PWRBTN != 0
    }

    fn update_sci(&mut self) {
        let level = self.sts & self.en & SCI_MASK != 0;
        if level != self.sci_level {
            self.sci_level = level;
            self.sci.set_level(level);
        }
    }

    fn pm1_cnt(&self) -> u16 {
        (self.cnt & CNT_STORED) | SCI_EN
    }

    fn write_cnt(&mut self, value: u16) {
        self.cnt = value & CNT_STORED;
        if value & GBL_RLS != 0 {
            // There is no firmware (SMM) to release the global lock to.
            tracing::debug!("acpi_pm: ignoring GBL_RLS");
        }
        if value & SLP_EN != 0 {
            let slp_typ = (value & SLP_TYP_MASK) >> SLP_TYP_SHIFT;
            if slp_typ == S5_SLP_TYP {
                tracing::info!("acpi_pm: guest entered S5, powering off");
                self.exit.raise(ExitReason::PowerOff);
            } else {
                tracing::warn!("acpi_pm: ignoring sleep request with SLP_TYP {slp_typ}");
            }
        }
    }

    /// Reads the 16-bit register containing `offset` (which is within the block).
    fn reg(&self, offset: u64) -> u16 {
        match offset & !1 {
            STS_OFFSET => self.sts,
            EN_OFFSET => self.en,
            CNT_OFFSET => self.pm1_cnt(),
            _ => 0xffff,
        }
    }

    fn read_byte(&self, offset: u64) -> u8 {
        if offset >= ACPI_PM_LEN {
            return 0xff;
        }
        (self.reg(offset) >> (8 * (offset & 1))) as u8
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        if offset >= ACPI_PM_LEN {
            return;
        }
        let shift = 8 * (offset & 1);
        let bits = u16::from(value) << shift;
        match offset & !1 {
            STS_OFFSET => self.sts &= !(bits & STS_MASK),
            EN_OFFSET => {
                let byte_mask = 0xffu16 << shift;
                self.en = (self.en & !byte_mask) | (bits & EN_MASK);
            }
            CNT_OFFSET => {
                // Keep the other byte as it reads, so a byte write leaves it alone (the
                // write-only action bits read as 0, so they only act in the written byte).
                let byte_mask = 0xffu16 << shift;
                self.write_cnt((self.pm1_cnt() & !byte_mask) | bits);
            }
            _ => {}
        }
    }
}

impl BusDevice for AcpiPm {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        crate::bus::split_read(offset, data, |o| self.read_byte(o));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        crate::bus::split_write(offset, data, |o, b| self.write_byte(o, b));
        self.update_sci();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, TestIrq};

    fn dev() -> (AcpiPm, Arc<ExitSignal>, Arc<TestIrq>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let sci = Arc::new(TestIrq::default());
        (AcpiPm::new(exit.clone(), sci.clone()), exit, sci)
    }

    fn r16(d: &mut AcpiPm, off: u64) -> u16 {
        let mut b = [0u8; 2];
        d.read(off, &mut b);
        u16::from_le_bytes(b)
    }

    fn w16(d: &mut AcpiPm, off: u64, v: u16) {
        d.write(off, &v.to_le_bytes());
    }

    #[test]
    fn power_button_raises_sci_until_cleared() {
        let (mut d, exit, sci) = dev();
        assert_eq!(r16(&mut d, STS_OFFSET), 0);
        assert!(!d.power_button_enabled());
        // Enable the event, as Linux's ACPI button driver does.
        w16(&mut d, EN_OFFSET, PWRBTN);
        assert!(d.power_button_enabled());
        assert_eq!(r16(&mut d, EN_OFFSET), PWRBTN);
        assert!(!sci.level());
        d.press_power_button();
        assert!(sci.level());
        assert_eq!(r16(&mut d, STS_OFFSET) & PWRBTN, PWRBTN);
        // Writing 0 clears nothing, writing other bits clears nothing of ours.
        w16(&mut d, STS_OFFSET, 0);
        w16(&mut d, STS_OFFSET, TMR_STS | WAK_STS);
        assert!(sci.level());
        // Write-1-to-clear drops the line.
        w16(&mut d, STS_OFFSET, PWRBTN);
        assert!(!sci.level());
        assert_eq!(r16(&mut d, STS_OFFSET), 0);
        assert_eq!(sci.level_changes(), 2, "the line is only driven on changes");
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn press_before_enable_is_latched() {
        let (mut d, _, sci) = dev();
        d.press_power_button();
        assert!(!sci.level());
        assert_eq!(r16(&mut d, STS_OFFSET), PWRBTN);
        w16(&mut d, EN_OFFSET, PWRBTN);
        assert!(sci.level());
        // Disabling the event drops the line without clearing the status.
        w16(&mut d, EN_OFFSET, 0);
        assert!(!sci.level());
        assert_eq!(r16(&mut d, STS_OFFSET), PWRBTN);
    }

    #[test]
    fn byte_and_dword_accesses() {
        let (mut d, _, sci) = dev();
        // Byte write of PM1_EN's high byte enables the power button.
        d.write(EN_OFFSET + 1, &[(PWRBTN >> 8) as u8]);
        assert_eq!(r16(&mut d, EN_OFFSET), PWRBTN);
        d.press_power_button();
        // A dword read at 0 returns STS then EN.
        let mut b = [0u8; 4];
        d.read(0, &mut b);
        assert_eq!(
            u32::from_le_bytes(b),
            u32::from(PWRBTN) | u32::from(PWRBTN) << 16
        );
        // Clearing through a byte write to the high status byte.
        d.write(STS_OFFSET + 1, &[0x01]);
        assert!(!sci.level());
        // Reads past the block are all-ones.
        let mut b = [0u8; 4];
        d.read(4, &mut b);
        assert_eq!(b, [SCI_EN as u8, 0, 0xff, 0xff]);
    }

    #[test]
    fn pm1_cnt_reads_sci_en_and_stores_slp_typ() {
        let (mut d, exit, _) = dev();
        assert_eq!(r16(&mut d, CNT_OFFSET), SCI_EN);
        // Linux first writes SLP_TYP alone, then with SLP_EN.
        w16(&mut d, CNT_OFFSET, 3 << SLP_TYP_SHIFT);
        assert_eq!(r16(&mut d, CNT_OFFSET), SCI_EN | 3 << SLP_TYP_SHIFT);
        // S3 is not supported: ignored.
        w16(&mut d, CNT_OFFSET, 3 << SLP_TYP_SHIFT | SLP_EN);
        assert_eq!(exit.reason(), None);
        assert_eq!(r16(&mut d, CNT_OFFSET) & SLP_EN, 0, "SLP_EN is write-only");
        // Writing SCI_EN=0 cannot leave ACPI mode.
        w16(&mut d, CNT_OFFSET, 0);
        assert_eq!(r16(&mut d, CNT_OFFSET), SCI_EN);
    }

    #[test]
    fn s5_powers_off() {
        let (mut d, exit, _) = dev();
        w16(&mut d, CNT_OFFSET, S5_SLP_TYP << SLP_TYP_SHIFT);
        assert_eq!(exit.reason(), None);
        w16(
            &mut d,
            CNT_OFFSET,
            S5_SLP_TYP << SLP_TYP_SHIFT | SLP_EN | SCI_EN,
        );
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
        assert_eq!(exit.fd().read().unwrap(), 1);
    }

    #[test]
    fn s5_by_high_byte_write() {
        let (mut d, exit, _) = dev();
        d.write(
            CNT_OFFSET + 1,
            &[((S5_SLP_TYP << SLP_TYP_SHIFT | SLP_EN) >> 8) as u8],
        );
        assert_eq!(exit.reason(), Some(ExitReason::PowerOff));
    }

    #[test]
    fn low_byte_write_keeps_slp_typ() {
        let (mut d, exit, _) = dev();
        w16(&mut d, CNT_OFFSET, 2 << SLP_TYP_SHIFT);
        d.write(CNT_OFFSET, &[BM_RLD as u8]);
        assert_eq!(
            r16(&mut d, CNT_OFFSET),
            SCI_EN | BM_RLD | 2 << SLP_TYP_SHIFT
        );
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn hostile_guest_never_panics() {
        let (mut d, _, sci) = dev();
        let mut rng = Rng::new(0x600);
        for i in 0..100_000u32 {
            if i.is_multiple_of(100) {
                d.press_power_button();
            }
            let off = rng.next() % 7;
            let mut buf = [0u8; 8];
            let n = rng.size();
            if rng.coin() {
                d.read(off, &mut buf[..n]);
            } else {
                for b in &mut buf[..n] {
                    *b = rng.next() as u8;
                }
                d.write(off, &buf[..n]);
            }
            assert_eq!(sci.level(), d.sts & d.en & SCI_MASK != 0);
        }
        d.read(u64::MAX, &mut [0u8; 8]);
        d.write(u64::MAX, &[0xffu8; 8]);
    }
}
