//! The 16550A serial port (COM1), wrapping `vm-superio`'s UART.
//!
//! The UART logic (registers, FIFO, interrupt identification, loopback) is `vm-superio`'s, shared
//! with Firecracker and others; this module plugs it into Vireo: [`BusDevice`] for the port I/O
//! bus, an interrupt [`Trigger`] that pulses an [`IrqLine`], and a [`SerialEvents`] sink that
//! counts traffic and tells the console input path when the guest has drained the receive FIFO.
//!
//! Insert it on the port I/O bus at 0x3f8 with length [`SERIAL_LEN`] (8); its interrupt is IRQ 4.
//! The IRQ is pulsed (edge), as the guest programs ISA IRQs edge-triggered and as `vm-superio`
//! signals "an interrupt condition arose" rather than a level.

use std::convert::Infallible;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use vm_superio::serial::SerialEvents;
use vm_superio::Trigger;
use vmm_sys_util::eventfd::EventFd;

use crate::{BusDevice, IrqLine};

/// Number of ports of a 16550 (0x3f8..=0x3ff for COM1).
pub const SERIAL_LEN: u64 = 8;

/// Pulses the UART's interrupt line whenever `vm-superio` reports an interrupt condition.
pub struct IrqTrigger(pub Arc<dyn IrqLine>);

impl Trigger for IrqTrigger {
    type E = Infallible;

    fn trigger(&self) -> Result<(), Infallible> {
        self.0.pulse();
        Ok(())
    }
}

/// Per-device traffic counters, shared with whoever reports metrics. All counters only grow.
#[derive(Debug, Default)]
pub struct SerialMetrics {
    /// Bytes the guest transmitted that reached the output.
    pub tx_bytes: AtomicU64,
    /// Bytes the guest transmitted that the output failed to take (lost).
    pub tx_lost_bytes: AtomicU64,
    /// Bytes accepted into the receive FIFO by [`Serial::enqueue_input`].
    pub rx_bytes: AtomicU64,
    /// Guest reads of the receive buffer register (including reads of an empty FIFO).
    pub rx_reads: AtomicU64,
}

/// The `SerialEvents` sink: counts, and wakes the input path when the FIFO empties.
struct Events {
    metrics: Arc<SerialMetrics>,
    rx_ready: Option<EventFd>,
}

impl SerialEvents for Events {
    fn buffer_read(&self) {
        self.metrics.rx_reads.fetch_add(1, Ordering::Relaxed);
    }

    fn out_byte(&self) {
        self.metrics.tx_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn tx_lost_byte(&self) {
        self.metrics.tx_lost_bytes.fetch_add(1, Ordering::Relaxed);
    }

    fn in_buffer_empty(&self) {
        if let Some(fd) = &self.rx_ready {
            // The counter saturating (EAGAIN) still leaves the fd readable: nothing is lost.
            let _ = fd.write(1);
        }
    }
}

type Uart = vm_superio::Serial<IrqTrigger, Events, Box<dyn Write + Send>>;

/// A COM port: `vm-superio`'s 16550A on the port I/O bus.
pub struct Serial {
    uart: Uart,
    metrics: Arc<SerialMetrics>,
    /// Whether an output error has been logged yet: the guest keeps writing after a failure,
    /// and one log line per lost byte would flood the host's log.
    warned_output: bool,
}

impl Serial {
    /// `irq` is the port's interrupt (IRQ 4 for COM1); guest output goes to `out`, unbuffered
    /// (each byte is written and flushed as the guest sends it).
    pub fn new(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>) -> Self {
        Self::build(irq, out, None)
    }

    /// Like [`Serial::new`], and `rx_ready` is written whenever the guest finds the receive FIFO
    /// empty. The console input path waits on it after [`Serial::enqueue_input`] could not take
    /// everything (as Firecracker does), instead of polling.
    pub fn with_rx_ready(
        irq: Arc<dyn IrqLine>,
        out: Box<dyn Write + Send>,
        rx_ready: EventFd,
    ) -> Self {
        Self::build(irq, out, Some(rx_ready))
    }

    fn build(irq: Arc<dyn IrqLine>, out: Box<dyn Write + Send>, rx_ready: Option<EventFd>) -> Self {
        let metrics = Arc::new(SerialMetrics::default());
        let events = Events {
            metrics: metrics.clone(),
            rx_ready,
        };
        Self {
            uart: vm_superio::Serial::with_events(IrqTrigger(irq), events, out),
            metrics,
            warned_output: false,
        }
    }

    /// The traffic counters of this port.
    pub fn metrics(&self) -> Arc<SerialMetrics> {
        self.metrics.clone()
    }

    /// Free space in the receive FIFO.
    pub fn input_capacity(&self) -> usize {
        self.uart.fifo_capacity()
    }

    /// Offers console input to the guest. Returns how many leading bytes of `input` fit in the
    /// receive FIFO (possibly 0, also while the guest has the UART in loopback mode); the caller
    /// keeps the rest and retries later, e.g. when the `rx_ready` event fires. Raises the
    /// receive interrupt if the guest enabled it.
    pub fn enqueue_input(&mut self, input: &[u8]) -> usize {
        if input.is_empty() || self.uart.fifo_capacity() == 0 {
            return 0;
        }
        match self.uart.enqueue_raw_bytes(input) {
            Ok(n) => {
                self.metrics.rx_bytes.fetch_add(n as u64, Ordering::Relaxed);
                n
            }
            // FullFifo is excluded above and our trigger cannot fail; there is no I/O here.
            Err(e) => {
                tracing::debug!("serial: enqueue failed: {e}");
                0
            }
        }
    }

    fn write_byte(&mut self, offset: u8, value: u8) {
        if let Err(e) = self.uart.write(offset, value) {
            // The byte was counted as lost; the guest cannot be told, so just log once.
            if !std::mem::replace(&mut self.warned_output, true) {
                tracing::warn!("serial: output failed, dropping guest output: {e}");
            }
        }
    }
}

/// Accesses wider than a byte are split into byte accesses to consecutive registers, as the ISA
/// bus does for an 8-bit device; bytes beyond the 8 registers read as all-ones.
impl BusDevice for Serial {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = match offset.checked_add(i as u64) {
                Some(o) if o < SERIAL_LEN => self.uart.read(o as u8),
                _ => 0xff,
            };
        }
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        for (i, &b) in data.iter().enumerate() {
            if let Some(o) = offset.checked_add(i as u64).filter(|&o| o < SERIAL_LEN) {
                self.write_byte(o as u8, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{Rng, TestIrq};
    use std::io;
    use std::sync::Mutex;

    const THR: u64 = 0;
    const IER: u64 = 1;
    const IIR: u64 = 2;
    const LCR: u64 = 3;
    const MCR: u64 = 4;
    const LSR: u64 = 5;
    const IER_RDA: u8 = 0x01;
    const IER_THRE: u8 = 0x02;
    const LSR_DR: u8 = 0x01;

    /// A `Write` that the test can inspect.
    #[derive(Clone, Default)]
    struct SharedBuf(Arc<Mutex<Vec<u8>>>);
    impl Write for SharedBuf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("broken"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn dev() -> (Serial, SharedBuf, Arc<TestIrq>) {
        let out = SharedBuf::default();
        let irq = Arc::new(TestIrq::default());
        (Serial::new(irq.clone(), Box::new(out.clone())), out, irq)
    }

    fn rd(s: &mut Serial, off: u64) -> u8 {
        let mut b = [0u8];
        s.read(off, &mut b);
        b[0]
    }

    #[test]
    fn output_reaches_writer_and_is_counted() {
        let (mut s, out, irq) = dev();
        for &b in b"hello\n" {
            s.write(THR, &[b]);
        }
        assert_eq!(out.0.lock().unwrap().as_slice(), b"hello\n");
        assert_eq!(s.metrics().tx_bytes.load(Ordering::Relaxed), 6);
        assert_eq!(irq.pulses(), 0, "THRE interrupt not enabled");
        // With THRE enabled, enabling raises it at once, and so does each transmitted byte
        // once the guest acknowledged the previous one (by reading IIR).
        s.write(IER, &[IER_THRE]);
        assert_eq!(irq.pulses(), 1);
        assert_eq!(rd(&mut s, IIR) & 0x0f, 0x02);
        s.write(THR, b"x");
        assert_eq!(irq.pulses(), 2);
    }

    #[test]
    fn input_respects_fifo_capacity() {
        let (mut s, _, irq) = dev();
        s.write(IER, &[IER_RDA]);
        assert_eq!(s.input_capacity(), 64);
        let input: Vec<u8> = (0..100).collect();
        assert_eq!(s.enqueue_input(&input), 64);
        assert_eq!(irq.pulses(), 1);
        assert_eq!(s.input_capacity(), 0);
        assert_eq!(s.enqueue_input(&input[64..]), 0);
        assert_eq!(s.enqueue_input(&[]), 0);
        assert_eq!(s.metrics().rx_bytes.load(Ordering::Relaxed), 64);
        // The guest reads the bytes in order.
        assert_eq!(rd(&mut s, LSR) & LSR_DR, LSR_DR);
        let got: Vec<u8> = (0..64).map(|_| rd(&mut s, THR)).collect();
        assert_eq!(got, input[..64]);
        assert_eq!(rd(&mut s, LSR) & LSR_DR, 0);
        assert_eq!(s.metrics().rx_reads.load(Ordering::Relaxed), 64);
        // Room again: the caller retries with the rest.
        assert_eq!(s.enqueue_input(&input[64..]), 36);
    }

    #[test]
    fn rx_ready_fires_when_drained() {
        let irq = Arc::new(TestIrq::default());
        let fd = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let mut s = Serial::with_rx_ready(irq, Box::new(io::sink()), fd.try_clone().unwrap());
        assert_eq!(s.enqueue_input(b"ab"), 2);
        rd(&mut s, THR);
        assert!(fd.read().is_err(), "not drained yet");
        rd(&mut s, THR);
        assert_eq!(fd.read().unwrap(), 1);
    }

    #[test]
    fn loopback_takes_no_input() {
        let (mut s, out, _) = dev();
        s.write(MCR, &[0x10]);
        assert_eq!(s.enqueue_input(b"abc"), 0);
        s.write(THR, b"z");
        assert!(out.0.lock().unwrap().is_empty());
        assert_eq!(rd(&mut s, THR), b'z');
    }

    #[test]
    fn broken_output_counts_lost_bytes() {
        let irq = Arc::new(TestIrq::default());
        let mut s = Serial::new(irq, Box::new(Broken));
        s.write(THR, b"a");
        s.write(THR, b"b");
        let m = s.metrics();
        assert_eq!(m.tx_lost_bytes.load(Ordering::Relaxed), 2);
        assert_eq!(m.tx_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn wide_and_out_of_range_accesses() {
        let (mut s, _, _) = dev();
        // A 16-bit write at LCR sets LCR and MCR.
        s.write(LCR, &[0x03, 0x0b]);
        assert_eq!(rd(&mut s, LCR), 0x03);
        assert_eq!(rd(&mut s, MCR), 0x0b);
        let mut b = [0u8; 4];
        s.read(6, &mut b);
        assert_eq!(b[2..], [0xff, 0xff]);
        s.read(u64::MAX, &mut b);
        assert_eq!(b, [0xff; 4]);
        s.write(u64::MAX - 1, &[1, 2, 3, 4]);
        s.write(256, &[1]); // must not alias register 0
    }

    #[test]
    fn hostile_guest_never_panics() {
        let (mut s, _, _) = dev();
        let mut rng = Rng::new(0x3f8);
        for i in 0..100_000u32 {
            if i.is_multiple_of(50) {
                s.enqueue_input(b"input");
            }
            let off = rng.next() % 9;
            let mut buf = [0u8; 8];
            let n = rng.size();
            if rng.coin() {
                s.read(off, &mut buf[..n]);
            } else {
                for b in &mut buf[..n] {
                    *b = rng.next() as u8;
                }
                s.write(off, &buf[..n]);
            }
        }
    }
}
