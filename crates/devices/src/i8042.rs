//! The i8042 PS/2 keyboard controller, with a minimal keyboard behind it.
//!
//! We do not offer a keyboard to type on; the controller exists because a PC guest expects one:
//! Linux's `i8042` driver probes it at boot, the classic way to reboot a PC is to pulse the CPU
//! reset line through it (`reboot=k`, and Linux's fallback after the ACPI reset), and the host
//! can inject Ctrl+Alt+Del through it to ask the guest for an orderly reboot.
//!
//! Insert it on the port I/O bus at base 0x60 with length 5, so that port 0x60 (data) is offset 0
//! and port 0x64 (status/command) is offset 4. Ports 0x61–0x63 fall inside that range but belong
//! to other chips (0x61 is the speaker/PIT gate port, which KVM's in-kernel PIT handles): they read
//! as all-ones, like an unmapped port, and writes to them are dropped.
//!
//! Model (after Firecracker's and QEMU's controllers):
//! - Writes complete synchronously, so the input-buffer-full status bit is never set and the guest
//!   never waits to write.
//! - Controller replies and keyboard bytes share one bounded output queue; the status register's
//!   OBF bit says whether it is non-empty, and each read of port 0x60 pops one byte.
//! - IRQ 1 is edge-triggered (ISA): it is pulsed when a byte reaches the head of an empty queue,
//!   again after a read that leaves more bytes queued (Linux's handler reads one byte per
//!   interrupt), and when the guest enables the keyboard interrupt while a byte is waiting —
//!   always only while the command byte's keyboard-interrupt bit is set.
//! - There is no AUX (mouse) port. Linux detects this quickly because the AUX loopback command
//!   (0xD3) echoes its byte *without* the AUX-data status bit, which the driver treats as "no AUX
//!   port" at once instead of waiting 250 ms for an IRQ 12 that would never come. (Booting with
//!   `i8042.noaux` skips the probe entirely.)
//! - The command byte starts with translation off, so Linux leaves it off (it only keeps
//!   translation if firmware enabled it) and the keyboard speaks scan-code set 2 directly.
//!   Translation is therefore stored but never performed.

use std::collections::VecDeque;
use std::sync::Arc;

use crate::{BusDevice, ExitReason, ExitSignal, IrqLine};

/// Offset of the data port (0x60) from the device's base.
pub const DATA_OFFSET: u64 = 0;
/// Offset of the status/command port (0x64) from the device's base.
pub const COMMAND_OFFSET: u64 = 4;
/// Length of the port range to insert the controller at (0x60..=0x64).
pub const I8042_LEN: u64 = 5;

// Status register bits.
const SB_OUT_FULL: u8 = 0x01;
const SB_SYS_FLAG: u8 = 0x04;
/// Set when the last write went to the command port rather than the data port.
const SB_LAST_WAS_CMD: u8 = 0x08;
/// "Keyboard not inhibited" (the keylock switch is open). Linux warns if it reads clear.
const SB_KEYLOCK_OPEN: u8 = 0x10;

// Command byte ("controller RAM" byte 0) bits.
const CB_KBD_INT: u8 = 0x01;
const CB_SYS_FLAG: u8 = 0x04;
const CB_KBD_DISABLE: u8 = 0x10;
const CB_AUX_DISABLE: u8 = 0x20;
/// Power-on command byte: keyboard interrupt on, POST passed, translation off.
const CB_DEFAULT: u8 = CB_KBD_INT | CB_SYS_FLAG;

// Output port bits.
const OUTP_RESET_DEASSERTED: u8 = 0x01;
const OUTP_A20: u8 = 0x02;

// Controller commands (written to port 0x64).
const CMD_READ_RAM_FIRST: u8 = 0x20;
const CMD_READ_RAM_LAST: u8 = 0x3f;
const CMD_WRITE_RAM_FIRST: u8 = 0x60;
const CMD_WRITE_RAM_LAST: u8 = 0x7f;
const CMD_PASSWORD_INSTALLED: u8 = 0xa4;
const CMD_DISABLE_AUX: u8 = 0xa7;
const CMD_ENABLE_AUX: u8 = 0xa8;
const CMD_TEST_AUX: u8 = 0xa9;
const CMD_SELF_TEST: u8 = 0xaa;
const CMD_TEST_KBD: u8 = 0xab;
const CMD_DISABLE_KBD: u8 = 0xad;
const CMD_ENABLE_KBD: u8 = 0xae;
const CMD_READ_INPUT_PORT: u8 = 0xc0;
const CMD_READ_OUTPUT_PORT: u8 = 0xd0;
const CMD_WRITE_OUTPUT_PORT: u8 = 0xd1;
const CMD_WRITE_KBD_OUTPUT: u8 = 0xd2;
const CMD_WRITE_AUX_OUTPUT: u8 = 0xd3;
const CMD_WRITE_AUX: u8 = 0xd4;
const CMD_DISABLE_A20: u8 = 0xdd;
const CMD_ENABLE_A20: u8 = 0xdf;
const CMD_PULSE_FIRST: u8 = 0xf0;

// Controller replies.
const CTL_SELF_TEST_OK: u8 = 0x55;
const CTL_INTERFACE_OK: u8 = 0x00;
const CTL_NO_PASSWORD: u8 = 0xf1;
/// Input port: bit 7 set means the keyboard is not inhibited.
const CTL_INPUT_PORT: u8 = 0x80;

// Keyboard commands (written to port 0x60) and replies.
const KBD_SET_LEDS: u8 = 0xed;
const KBD_ECHO: u8 = 0xee;
const KBD_SCANCODE_SET: u8 = 0xf0;
const KBD_IDENTIFY: u8 = 0xf2;
const KBD_SET_TYPEMATIC: u8 = 0xf3;
const KBD_RESET: u8 = 0xff;
const KBD_ACK: u8 = 0xfa;
const KBD_BAT_OK: u8 = 0xaa;
/// MF2 keyboard identity, as returned by `KBD_IDENTIFY` after the ACK.
const KBD_ID: [u8; 2] = [0xab, 0x83];

/// Set-2 scan codes for pressing and releasing Ctrl, Alt and Delete (Delete is an extended key,
/// hence the 0xE0 prefix; 0xF0 marks a release). Firecracker sends only the presses; we also
/// release the keys so that the guest does not see Ctrl and Alt held down forever if it decides
/// not to reboot.
const CTRL_ALT_DEL: [u8; 11] = [
    0x14, // Ctrl press
    0x11, // Alt press
    0xe0, 0x71, // Delete press
    0xe0, 0xf0, 0x71, // Delete release
    0xf0, 0x11, // Alt release
    0xf0, 0x14, // Ctrl release
];

/// Output queue capacity. A real controller holds one byte and the keyboard a small FIFO; 16
/// bytes (like Firecracker) is enough for the longest reply plus a key sequence, and the bound
/// keeps a guest that never reads from growing the queue.
pub const OUTPUT_QUEUE_LEN: usize = 16;

/// Errors from host-initiated input.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum I8042Error {
    #[error("the i8042 output queue has no room for the key sequence")]
    QueueFull,
}

/// What the next byte written to the data port means, after a controller command that takes a
/// parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PendingParam {
    /// Byte of controller RAM to write (0 is the command byte).
    Ram(u8),
    OutputPort,
    /// Queue the byte as if the keyboard sent it.
    KbdOutput,
    /// Queue the byte as if the AUX device sent it; without an AUX port it looks like keyboard
    /// data (see the module docs for why that is what we want).
    AuxOutput,
    /// Send the byte to the AUX device, which does not exist: dropped.
    Aux,
}

/// The PS/2 controller. See the module documentation for the model.
pub struct I8042 {
    exit: Arc<ExitSignal>,
    irq: Option<Arc<dyn IrqLine>>,
    /// Controller RAM; byte 0 is the command byte.
    ram: [u8; 32],
    output_port: u8,
    last_was_cmd: bool,
    pending: Option<PendingParam>,
    /// A keyboard command (0xED, 0xF0, 0xF3) waiting for its parameter byte.
    kbd_pending: Option<u8>,
    scancode_set: u8,
    out: VecDeque<u8>,
    /// What port 0x60 returns when the queue is empty: real hardware returns the stale buffer.
    last_read: u8,
}

impl I8042 {
    /// `irq` is the keyboard interrupt (IRQ 1); `None` leaves the guest to poll.
    pub fn new(exit: Arc<ExitSignal>, irq: Option<Arc<dyn IrqLine>>) -> Self {
        let mut ram = [0u8; 32];
        ram[0] = CB_DEFAULT;
        Self {
            exit,
            irq,
            ram,
            output_port: OUTP_RESET_DEASSERTED | OUTP_A20,
            last_was_cmd: false,
            pending: None,
            kbd_pending: None,
            scancode_set: 2,
            out: VecDeque::with_capacity(OUTPUT_QUEUE_LEN),
            last_read: 0,
        }
    }

    /// Queues the set-2 scan codes for pressing and releasing Ctrl+Alt+Del, so that the guest's
    /// keyboard driver sees the three-finger salute (Linux then runs its ctrl-alt-del action,
    /// usually an orderly reboot). All or nothing: fails if the queue lacks room for the sequence.
    pub fn send_ctrl_alt_del(&mut self) -> Result<(), I8042Error> {
        if OUTPUT_QUEUE_LEN - self.out.len() < CTRL_ALT_DEL.len() {
            return Err(I8042Error::QueueFull);
        }
        for b in CTRL_ALT_DEL {
            self.push(b);
        }
        Ok(())
    }

    /// The command byte (controller RAM byte 0).
    pub fn command_byte(&self) -> u8 {
        self.ram[0]
    }

    fn status(&self) -> u8 {
        let mut s = SB_KEYLOCK_OPEN;
        if !self.out.is_empty() {
            s |= SB_OUT_FULL;
        }
        // The status register's system flag mirrors the command byte's.
        if self.ram[0] & CB_SYS_FLAG != 0 {
            s |= SB_SYS_FLAG;
        }
        if self.last_was_cmd {
            s |= SB_LAST_WAS_CMD;
        }
        s
    }

    fn kbd_irq_enabled(&self) -> bool {
        self.ram[0] & CB_KBD_INT != 0
    }

    fn raise_irq(&self) {
        if self.kbd_irq_enabled() {
            if let Some(irq) = &self.irq {
                irq.pulse();
            }
        }
    }

    /// Queues one byte for the guest; drops it (with a debug log) when the queue is full.
    fn push(&mut self, byte: u8) {
        if self.out.len() >= OUTPUT_QUEUE_LEN {
            tracing::debug!("i8042: output queue full, dropping {byte:#04x}");
            return;
        }
        let was_empty = self.out.is_empty();
        self.out.push_back(byte);
        if was_empty {
            self.raise_irq();
        }
    }

    fn read_data(&mut self) -> u8 {
        if let Some(b) = self.out.pop_front() {
            self.last_read = b;
            if !self.out.is_empty() {
                self.raise_irq();
            }
        }
        self.last_read
    }

    fn reset_cpu(&self) {
        tracing::info!("i8042: guest pulsed the CPU reset line");
        self.exit.raise(ExitReason::Reset);
    }

    fn write_command(&mut self, cmd: u8) {
        self.last_was_cmd = true;
        // A new command abandons one still waiting for its parameter, as on real hardware.
        self.pending = None;
        match cmd {
            CMD_READ_RAM_FIRST..=CMD_READ_RAM_LAST => {
                let b = self.ram[usize::from(cmd & 0x1f)];
                self.push(b);
            }
            CMD_WRITE_RAM_FIRST..=CMD_WRITE_RAM_LAST => {
                self.pending = Some(PendingParam::Ram(cmd & 0x1f))
            }
            CMD_PASSWORD_INSTALLED => self.push(CTL_NO_PASSWORD),
            CMD_DISABLE_AUX => self.ram[0] |= CB_AUX_DISABLE,
            CMD_ENABLE_AUX => self.ram[0] &= !CB_AUX_DISABLE,
            CMD_TEST_AUX | CMD_TEST_KBD => self.push(CTL_INTERFACE_OK),
            CMD_SELF_TEST => {
                // A passing self test sets the system flag, as firmware's POST would have.
                self.ram[0] |= CB_SYS_FLAG;
                self.push(CTL_SELF_TEST_OK);
            }
            CMD_DISABLE_KBD => self.ram[0] |= CB_KBD_DISABLE,
            CMD_ENABLE_KBD => self.ram[0] &= !CB_KBD_DISABLE,
            CMD_READ_INPUT_PORT => self.push(CTL_INPUT_PORT),
            CMD_READ_OUTPUT_PORT => self.push(self.output_port),
            CMD_WRITE_OUTPUT_PORT => self.pending = Some(PendingParam::OutputPort),
            CMD_WRITE_KBD_OUTPUT => self.pending = Some(PendingParam::KbdOutput),
            CMD_WRITE_AUX_OUTPUT => self.pending = Some(PendingParam::AuxOutput),
            CMD_WRITE_AUX => self.pending = Some(PendingParam::Aux),
            CMD_DISABLE_A20 => self.output_port &= !OUTP_A20,
            CMD_ENABLE_A20 => self.output_port |= OUTP_A20,
            // 0xF0..=0xFF pulse the output-port lines whose bit is clear in the low nibble;
            // line 0 is the CPU reset (0xFE is the classic reboot command, 0xFF pulses nothing).
            CMD_PULSE_FIRST..=0xff => {
                if cmd & OUTP_RESET_DEASSERTED == 0 {
                    self.reset_cpu();
                }
            }
            _ => tracing::debug!("i8042: ignoring controller command {cmd:#04x}"),
        }
    }

    fn write_data(&mut self, value: u8) {
        self.last_was_cmd = false;
        match self.pending.take() {
            Some(PendingParam::Ram(0)) => {
                let irq_was_enabled = self.kbd_irq_enabled();
                self.ram[0] = value;
                // Enabling the interrupt with a byte waiting is a rising edge on IRQ 1.
                if !irq_was_enabled && !self.out.is_empty() {
                    self.raise_irq();
                }
            }
            Some(PendingParam::Ram(i)) => self.ram[usize::from(i & 0x1f)] = value,
            Some(PendingParam::OutputPort) => {
                self.output_port = value;
                if value & OUTP_RESET_DEASSERTED == 0 {
                    self.reset_cpu();
                }
            }
            Some(PendingParam::KbdOutput | PendingParam::AuxOutput) => self.push(value),
            Some(PendingParam::Aux) => {
                tracing::debug!("i8042: no AUX device, dropping {value:#04x}")
            }
            None => {
                // Talking to the keyboard re-enables the keyboard interface (as on real
                // controllers and QEMU), so that its reply can reach the guest.
                self.ram[0] &= !CB_KBD_DISABLE;
                self.keyboard_write(value);
            }
        }
    }

    /// The keyboard's side: every command and parameter is acknowledged, since there is no
    /// physical keyboard that could fail.
    fn keyboard_write(&mut self, value: u8) {
        if let Some(cmd) = self.kbd_pending.take() {
            self.push(KBD_ACK);
            if cmd == KBD_SCANCODE_SET {
                match value {
                    // 0 asks which set is in use.
                    0 => self.push(self.scancode_set),
                    1..=3 => self.scancode_set = value,
                    _ => {}
                }
            }
            return;
        }
        match value {
            KBD_SET_LEDS | KBD_SCANCODE_SET | KBD_SET_TYPEMATIC => {
                self.kbd_pending = Some(value);
                self.push(KBD_ACK);
            }
            KBD_ECHO => self.push(KBD_ECHO),
            KBD_IDENTIFY => {
                self.push(KBD_ACK);
                KBD_ID.iter().for_each(|&b| self.push(b));
            }
            KBD_RESET => {
                self.scancode_set = 2;
                self.push(KBD_ACK);
                self.push(KBD_BAT_OK);
            }
            // Enable/disable scanning, set defaults, resend, set-3 key modes: nothing to model.
            _ => self.push(KBD_ACK),
        }
    }

    fn read_byte(&mut self, offset: u64) -> u8 {
        match offset {
            DATA_OFFSET => self.read_data(),
            COMMAND_OFFSET => self.status(),
            _ => 0xff,
        }
    }

    fn write_byte(&mut self, offset: u64, value: u8) {
        match offset {
            DATA_OFFSET => self.write_data(value),
            COMMAND_OFFSET => self.write_command(value),
            _ => {}
        }
    }
}

/// Accesses wider than a byte are split into byte accesses to consecutive ports, as the ISA bus
/// does for an 8-bit device.
impl BusDevice for I8042 {
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
    use crate::testing::{Rng, TestIrq};

    fn dev() -> (I8042, Arc<ExitSignal>, Arc<TestIrq>) {
        let exit = Arc::new(ExitSignal::new().unwrap());
        let irq = Arc::new(TestIrq::default());
        let d = I8042::new(exit.clone(), Some(irq.clone() as Arc<dyn IrqLine>));
        (d, exit, irq)
    }

    fn status(d: &mut I8042) -> u8 {
        let mut b = [0u8];
        d.read(COMMAND_OFFSET, &mut b);
        b[0]
    }

    fn cmd(d: &mut I8042, c: u8) {
        d.write(COMMAND_OFFSET, &[c]);
    }

    fn data_out(d: &mut I8042, v: u8) {
        d.write(DATA_OFFSET, &[v]);
    }

    fn data_in(d: &mut I8042) -> u8 {
        let mut b = [0u8];
        d.read(DATA_OFFSET, &mut b);
        b[0]
    }

    /// Reads everything queued, as Linux's `i8042_flush` does.
    fn drain(d: &mut I8042) -> Vec<u8> {
        let mut v = Vec::new();
        while status(d) & SB_OUT_FULL != 0 {
            v.push(data_in(d));
            assert!(v.len() <= OUTPUT_QUEUE_LEN);
        }
        v
    }

    #[test]
    fn power_on_state() {
        let (mut d, exit, _) = dev();
        let s = status(&mut d);
        assert_eq!(s & SB_OUT_FULL, 0);
        assert_ne!(s & SB_KEYLOCK_OPEN, 0);
        assert_ne!(s & SB_SYS_FLAG, 0);
        assert_eq!(s & 0x02, 0, "input buffer is never full");
        cmd(&mut d, 0x20);
        assert_ne!(status(&mut d) & SB_LAST_WAS_CMD, 0);
        assert_eq!(drain(&mut d), vec![CB_DEFAULT]);
        assert_eq!(exit.reason(), None);
    }

    /// The sequence of Linux's `i8042_probe` (selftest, CTR read/write, AUX check, keyboard
    /// enable) followed by atkbd's probe.
    #[test]
    fn linux_probe_sequence() {
        let (mut d, exit, irq) = dev();
        assert!(drain(&mut d).is_empty());
        // Self test.
        cmd(&mut d, CMD_SELF_TEST);
        assert_eq!(drain(&mut d), vec![0x55]);
        // Read the CTR twice until stable, then write it back with the keyboard disabled.
        cmd(&mut d, 0x20);
        let ctr = drain(&mut d)[0];
        cmd(&mut d, 0x20);
        assert_eq!(drain(&mut d), vec![ctr]);
        let ctr = (ctr | CB_KBD_DISABLE) & !CB_KBD_INT;
        cmd(&mut d, 0x60);
        data_out(&mut d, ctr);
        assert_eq!(d.command_byte(), ctr);
        assert!(drain(&mut d).is_empty());
        // The replies so far were signalled: the power-on command byte enables IRQ 1.
        assert_eq!(irq.pulses(), 3);
        // AUX loopback: the byte comes back, but without the AUX-data bit.
        cmd(&mut d, CMD_WRITE_AUX_OUTPUT);
        data_out(&mut d, 0x5a);
        let s = status(&mut d);
        assert_ne!(s & SB_OUT_FULL, 0);
        assert_eq!(
            s & 0x20,
            0,
            "no AUX data bit: Linux concludes there is no AUX port"
        );
        assert_eq!(drain(&mut d), vec![0x5a]);
        cmd(&mut d, CMD_TEST_AUX);
        assert_eq!(drain(&mut d), vec![0x00]);
        cmd(&mut d, CMD_TEST_KBD);
        assert_eq!(drain(&mut d), vec![0x00]);
        // Toggling the AUX-disable bit is visible in the CTR.
        cmd(&mut d, CMD_DISABLE_AUX);
        assert_ne!(d.command_byte() & CB_AUX_DISABLE, 0);
        cmd(&mut d, CMD_ENABLE_AUX);
        assert_eq!(d.command_byte() & CB_AUX_DISABLE, 0);
        // No interrupts since: the keyboard interrupt was disabled.
        assert_eq!(irq.pulses(), 3);
        // Enable the keyboard port and its interrupt.
        cmd(&mut d, 0x60);
        data_out(&mut d, (ctr & !CB_KBD_DISABLE) | CB_KBD_INT);
        assert_eq!(irq.pulses(), 3, "nothing queued, so no edge");
        // atkbd: GETID, then deactivate/activate.
        data_out(&mut d, KBD_IDENTIFY);
        assert_eq!(irq.pulses(), 4);
        assert_eq!(drain(&mut d), vec![KBD_ACK, 0xab, 0x83]);
        assert_eq!(irq.pulses(), 6, "one interrupt per byte");
        data_out(&mut d, 0xf5);
        assert_eq!(drain(&mut d), vec![KBD_ACK]);
        data_out(&mut d, KBD_SET_LEDS);
        assert_eq!(drain(&mut d), vec![KBD_ACK]);
        data_out(&mut d, 0x00);
        assert_eq!(drain(&mut d), vec![KBD_ACK]);
        data_out(&mut d, KBD_SET_TYPEMATIC);
        data_out(&mut d, 0x20);
        assert_eq!(drain(&mut d), vec![KBD_ACK, KBD_ACK]);
        data_out(&mut d, 0xf4);
        assert_eq!(drain(&mut d), vec![KBD_ACK]);
        assert_eq!(exit.reason(), None);
    }

    #[test]
    fn keyboard_reset_echo_and_scancode_set() {
        let (mut d, _, _) = dev();
        data_out(&mut d, KBD_RESET);
        assert_eq!(drain(&mut d), vec![KBD_ACK, KBD_BAT_OK]);
        data_out(&mut d, KBD_ECHO);
        assert_eq!(drain(&mut d), vec![KBD_ECHO]);
        data_out(&mut d, KBD_SCANCODE_SET);
        data_out(&mut d, 0);
        assert_eq!(drain(&mut d), vec![KBD_ACK, KBD_ACK, 2]);
        data_out(&mut d, KBD_SCANCODE_SET);
        data_out(&mut d, 3);
        data_out(&mut d, KBD_SCANCODE_SET);
        data_out(&mut d, 0);
        assert_eq!(drain(&mut d), vec![KBD_ACK, KBD_ACK, KBD_ACK, KBD_ACK, 3]);
        // Writing to the keyboard re-enables a disabled keyboard interface.
        cmd(&mut d, CMD_DISABLE_KBD);
        assert_ne!(d.command_byte() & CB_KBD_DISABLE, 0);
        data_out(&mut d, 0xf4);
        assert_eq!(d.command_byte() & CB_KBD_DISABLE, 0);
        assert_eq!(drain(&mut d), vec![KBD_ACK]);
        // Reading an empty buffer returns the stale byte.
        assert_eq!(data_in(&mut d), KBD_ACK);
    }

    #[test]
    fn output_port_and_controller_ram() {
        let (mut d, exit, _) = dev();
        cmd(&mut d, CMD_READ_OUTPUT_PORT);
        assert_eq!(drain(&mut d), vec![OUTP_RESET_DEASSERTED | OUTP_A20]);
        cmd(&mut d, CMD_DISABLE_A20);
        cmd(&mut d, CMD_READ_OUTPUT_PORT);
        assert_eq!(drain(&mut d), vec![OUTP_RESET_DEASSERTED]);
        cmd(&mut d, CMD_WRITE_OUTPUT_PORT);
        data_out(&mut d, OUTP_RESET_DEASSERTED | OUTP_A20);
        assert_eq!(exit.reason(), None);
        cmd(&mut d, CMD_READ_OUTPUT_PORT);
        assert_eq!(drain(&mut d), vec![0x03]);
        cmd(&mut d, 0x65);
        data_out(&mut d, 0x42);
        cmd(&mut d, 0x25);
        assert_eq!(drain(&mut d), vec![0x42]);
        cmd(&mut d, CMD_WRITE_KBD_OUTPUT);
        data_out(&mut d, 0x1c);
        assert_eq!(drain(&mut d), vec![0x1c]);
        // Writing to the absent AUX device is dropped.
        cmd(&mut d, CMD_WRITE_AUX);
        data_out(&mut d, 0xff);
        assert!(drain(&mut d).is_empty());
        // A new command abandons a pending parameter: 0x20 must not become the CTR.
        cmd(&mut d, 0x60);
        cmd(&mut d, 0x20);
        assert_eq!(drain(&mut d), vec![CB_DEFAULT]);
    }

    #[test]
    fn reset_via_output_port() {
        let (mut d, exit, _) = dev();
        cmd(&mut d, CMD_WRITE_OUTPUT_PORT);
        data_out(&mut d, OUTP_A20);
        assert_eq!(exit.reason(), Some(ExitReason::Reset));
    }

    #[test]
    fn reset_via_pulse_commands() {
        for c in CMD_PULSE_FIRST..=0xff {
            let (mut d, exit, _) = dev();
            cmd(&mut d, c);
            let expect = (c & 1 == 0).then_some(ExitReason::Reset);
            assert_eq!(exit.reason(), expect, "command {c:#x}");
            if expect.is_some() {
                assert_eq!(exit.fd().read().unwrap(), 1);
            }
        }
    }

    #[test]
    fn ctrl_alt_del() {
        let (mut d, _, irq) = dev();
        d.send_ctrl_alt_del().unwrap();
        assert_eq!(irq.pulses(), 1);
        let bytes = drain(&mut d);
        assert_eq!(bytes, CTRL_ALT_DEL.to_vec());
        assert_eq!(&bytes[..4], &[0x14, 0x11, 0xe0, 0x71]);
        // Not enough room for a second sequence while the first is unread: all or nothing.
        d.send_ctrl_alt_del().unwrap();
        assert_eq!(d.send_ctrl_alt_del(), Err(I8042Error::QueueFull));
        assert_eq!(drain(&mut d).len(), CTRL_ALT_DEL.len());
    }

    #[test]
    fn interrupt_follows_command_byte() {
        let (mut d, _, irq) = dev();
        cmd(&mut d, 0x60);
        data_out(&mut d, CB_SYS_FLAG); // interrupts off
        d.send_ctrl_alt_del().unwrap();
        assert_eq!(irq.pulses(), 0);
        // Enabling the interrupt with data waiting raises it.
        cmd(&mut d, 0x60);
        data_out(&mut d, CB_SYS_FLAG | CB_KBD_INT);
        assert_eq!(irq.pulses(), 1);
        drain(&mut d);
        assert_eq!(irq.pulses(), CTRL_ALT_DEL.len());
        // Without an IRQ line the controller still works (polled).
        let exit = Arc::new(ExitSignal::new().unwrap());
        let mut d = I8042::new(exit, None);
        d.send_ctrl_alt_del().unwrap();
        assert_eq!(drain(&mut d).len(), CTRL_ALT_DEL.len());
    }

    #[test]
    fn queue_is_bounded() {
        let (mut d, _, _) = dev();
        for _ in 0..100 {
            data_out(&mut d, KBD_IDENTIFY);
        }
        assert_eq!(drain(&mut d).len(), OUTPUT_QUEUE_LEN);
    }

    #[test]
    fn other_ports_and_wide_accesses() {
        let (mut d, _, _) = dev();
        let mut b = [0u8; 3];
        d.read(1, &mut b);
        assert_eq!(b, [0xff; 3]);
        let mut b = [0u8; 4];
        // A 16-bit read at 0x64 reads the status then the (unmapped) port 0x65.
        let mut w = [0u8; 2];
        d.read(COMMAND_OFFSET, &mut w);
        assert_eq!(w[1], 0xff);
        assert_eq!(w[0] & SB_KEYLOCK_OPEN, SB_KEYLOCK_OPEN);
        // A 16-bit write at 0x60 reaches the data port, the high byte goes to 0x61 (dropped).
        d.write(DATA_OFFSET, &[KBD_ECHO, 0x12]);
        assert_eq!(drain(&mut d), vec![KBD_ECHO]);
        d.write(u64::MAX, &[1, 2, 3]);
        d.read(u64::MAX - 1, &mut b);
    }

    #[test]
    fn hostile_guest_never_panics() {
        let (mut d, _, _) = dev();
        let mut rng = Rng::new(0x8042);
        for _ in 0..100_000 {
            let off = rng.next() % 6;
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
            assert!(d.out.len() <= OUTPUT_QUEUE_LEN);
        }
    }
}
