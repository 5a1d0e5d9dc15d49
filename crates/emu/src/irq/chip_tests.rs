use super::*;
use crate::cpu::Platform;

const APIC: u64 = 0xfee0_0000;

fn chip() -> (IrqChip, Clock, Arc<Waker>) {
    let clock = Clock::manual();
    let waker = Arc::new(Waker::new());
    (IrqChip::new(clock.clone(), waker.clone()), clock, waker)
}

fn lapic_w(c: &mut IrqChip, off: u64, v: u32) {
    assert!(c.mmio_write(APIC + off, &v.to_le_bytes()));
}

fn lapic_r(c: &mut IrqChip, off: u64) -> u32 {
    let mut b = [0; 4];
    assert!(c.mmio_read(APIC + off, &mut b));
    u32::from_le_bytes(b)
}

fn ioapic_w(c: &mut IrqChip, reg: u8, v: u32) {
    assert!(c.mmio_write(IOAPIC_BASE, &[reg]));
    assert!(c.mmio_write(IOAPIC_BASE + 0x10, &v.to_le_bytes()));
}

fn ioapic_r(c: &mut IrqChip, reg: u8) -> u32 {
    c.mmio_write(IOAPIC_BASE, &[reg]);
    let mut b = [0; 4];
    c.mmio_read(IOAPIC_BASE + 0x10, &mut b);
    u32::from_le_bytes(b)
}

/// Software-enables the APIC and masks LINT0 (the 8259 is not in use).
fn enable_apic(c: &mut IrqChip) {
    lapic_w(c, 0xf0, 0x1ff);
    lapic_w(c, 0x350, 0x1_0700);
}

/// Takes and EOIs the next APIC interrupt.
fn take(c: &mut IrqChip) -> Option<u8> {
    if !c.interrupt_pending() {
        return None;
    }
    let v = c.ack_interrupt();
    lapic_w(c, 0xb0, 0);
    v
}

#[test]
fn clock_manual_and_real() {
    let m = Clock::manual();
    let m2 = m.clone();
    assert_eq!(m.now_ns(), 0);
    m.advance(5);
    assert_eq!(m2.now_ns(), 5);
    m2.set_ns(100);
    assert_eq!(m.now_ns(), 100);
    let r = Clock::new();
    let a = r.now_ns();
    r.advance(1_000_000_000_000);
    assert!(r.now_ns() >= a && r.now_ns() < 1_000_000_000_000);
}

#[test]
fn waker_sets_attention_and_unparks() {
    let w = Arc::new(Waker::new());
    w.set_thread(std::thread::current());
    let w2 = w.clone();
    let h = std::thread::spawn(move || w2.notify());
    std::thread::park_timeout(std::time::Duration::from_secs(5));
    h.join().unwrap();
    assert!(w.attention().load(Ordering::SeqCst));
}

#[test]
fn pit_mode2_through_ioapic_at_programmed_rate() {
    let (mut c, clock, waker) = chip();
    enable_apic(&mut c);
    // IOAPIC pin 2 -> vector 0x30, edge, physical destination 0.
    ioapic_w(&mut c, 0x14, 0x30);
    ioapic_w(&mut c, 0x15, 0);
    c.pio_write(0x43, 0x34);
    c.pio_write(0x40, (1193u16 & 0xff) as u8); // ~1 kHz
    c.pio_write(0x40, (1193u16 >> 8) as u8);
    waker.attention().store(false, Ordering::SeqCst);
    let mut ticks = 0;
    let mut notified = 0;
    for _ in 0..2000 {
        clock.advance(50_000);
        let next = c.poll_timers().unwrap();
        assert!(next > clock.now_ns() && next <= clock.now_ns() + 1_000_000);
        if waker.attention().swap(false, Ordering::SeqCst) {
            notified += 1;
        }
        while let Some(v) = take(&mut c) {
            assert_eq!(v, 0x30);
            ticks += 1;
        }
    }
    // 100 ms at 1.0002 kHz.
    assert!((99..=101).contains(&ticks), "{ticks}");
    assert_eq!(notified, ticks);
}

#[test]
fn lapic_timer_through_chip_and_msrs() {
    let (mut c, clock, _) = chip();
    enable_apic(&mut c);
    lapic_w(&mut c, 0x3e0, 0xb);
    lapic_w(&mut c, 0x320, 0x40);
    lapic_w(&mut c, 0x380, 10_000);
    assert_eq!(c.poll_timers(), Some(10_000));
    clock.set_ns(10_000);
    assert_eq!(c.poll_timers(), None);
    assert_eq!(take(&mut c), Some(0x40));
    // TSC deadline through the MSR.
    lapic_w(&mut c, 0x320, 0x4_0041);
    assert_eq!(c.wrmsr(MSR_TSC_DEADLINE, 50_000), Some(true));
    assert_eq!(c.rdmsr(MSR_TSC_DEADLINE), Some(50_000));
    assert_eq!(c.poll_timers(), Some(50_000));
    clock.set_ns(60_000);
    c.poll_timers();
    assert_eq!(c.rdmsr(MSR_TSC_DEADLINE), Some(0));
    assert_eq!(take(&mut c), Some(0x41));
    assert_eq!(c.rdmsr(MSR_APIC_BASE), Some(0xfee0_0900));
    assert_eq!(c.rdmsr(0x10), None);
    assert_eq!(c.wrmsr(0x10, 0), None);
    assert_eq!(c.wrmsr(MSR_APIC_BASE, 1 << 10 | 0xfee0_0900), Some(false));
}

#[test]
fn level_triggered_redelivery_via_remote_irr() {
    let (mut c, _, _) = chip();
    enable_apic(&mut c);
    // SCI: pin 9, level, active high, vector 0x39.
    ioapic_w(&mut c, 0x22, 0x8039);
    c.set_irq_level(9, true);
    assert!(c.interrupt_pending());
    assert_eq!(c.ack_interrupt(), Some(0x39));
    assert_ne!(ioapic_r(&mut c, 0x22) & (1 << 14), 0, "remote IRR");
    assert!(!c.interrupt_pending());
    // EOI while still asserted: delivered again.
    lapic_w(&mut c, 0xb0, 0);
    assert!(c.interrupt_pending());
    assert_eq!(c.ack_interrupt(), Some(0x39));
    // The device deasserts, then the EOI: nothing more.
    c.set_irq_level(9, false);
    lapic_w(&mut c, 0xb0, 0);
    assert!(!c.interrupt_pending());
    assert_eq!(ioapic_r(&mut c, 0x22) & (1 << 14), 0);
    // Masked while asserted, delivered on unmask.
    ioapic_w(&mut c, 0x22, 0x1_8039);
    c.set_irq_level(9, true);
    assert!(!c.interrupt_pending());
    ioapic_w(&mut c, 0x22, 0x8039);
    assert_eq!(c.ack_interrupt(), Some(0x39));
}

#[test]
fn ioapic_logical_destination_and_mismatch() {
    let (mut c, _, _) = chip();
    enable_apic(&mut c);
    lapic_w(&mut c, 0xd0, 0x0100_0000);
    // Logical destination 1 (flat): matches.
    ioapic_w(&mut c, 0x18, 0x0834);
    ioapic_w(&mut c, 0x19, 0x0100_0000);
    c.set_irq_level(4, true);
    assert_eq!(take(&mut c), Some(0x34));
    c.set_irq_level(4, false);
    // Physical destination 3: no such CPU.
    ioapic_w(&mut c, 0x18, 0x0034);
    ioapic_w(&mut c, 0x19, 0x0300_0000);
    c.set_irq_level(4, true);
    assert!(!c.interrupt_pending());
}

#[test]
fn pic_through_lint0_extint() {
    let (mut c, clock, _) = chip();
    // Linux's probe and init, APIC still software-disabled (virtual wire).
    c.pio_write(0xa1, 0xff);
    c.pio_write(0x21, 0xfb);
    assert_eq!(c.pio_read(0x21), 0xfb);
    for (p, v) in [(0x20, 0x11), (0x21, 0x30), (0x21, 4), (0x21, 1)] {
        c.pio_write(p, v);
    }
    for (p, v) in [(0xa0, 0x11), (0xa1, 0x38), (0xa1, 2), (0xa1, 1)] {
        c.pio_write(p, v);
    }
    c.pio_write(0x21, 0xfa); // IRQ0 and the cascade unmasked
    c.pio_write(0xa1, 0xff);
    c.pio_write(0x43, 0x34);
    c.pio_write(0x40, 0x9c);
    c.pio_write(0x40, 0x2e); // 11932: 10 ms
    clock.set_ns(10_100_000);
    c.poll_timers();
    assert!(c.interrupt_pending());
    assert_eq!(c.ack_interrupt(), Some(0x30));
    assert!(!c.interrupt_pending());
    c.pio_write(0x20, 0x20);
    // LINT0 masked: the PIC no longer reaches the CPU.
    enable_apic(&mut c);
    clock.set_ns(20_100_000);
    c.poll_timers();
    assert!(!c.interrupt_pending());
    // APIC globally disabled: the PIC goes straight to the CPU, the page is not the APIC's.
    assert_eq!(c.wrmsr(MSR_APIC_BASE, 0xfee0_0000), Some(true));
    assert!(c.interrupt_pending());
    assert_eq!(c.ack_interrupt(), Some(0x30));
    assert!(!c.mmio_read(APIC + 0x30, &mut [0; 4]));
}

#[test]
fn self_ipi() {
    let (mut c, _, waker) = chip();
    enable_apic(&mut c);
    waker.attention().store(false, Ordering::SeqCst);
    lapic_w(&mut c, 0x300, 0x4_00f3); // shorthand self
    assert!(waker.attention().load(Ordering::SeqCst));
    assert_eq!(take(&mut c), Some(0xf3));
    lapic_w(&mut c, 0x310, 0); // physical destination 0 = this CPU
    lapic_w(&mut c, 0x300, 0x00e1);
    assert_eq!(take(&mut c), Some(0xe1));
    lapic_w(&mut c, 0x300, 0x8_00e2); // all including self
    assert_eq!(take(&mut c), Some(0xe2));
    lapic_w(&mut c, 0x300, 0xc_00e3); // all excluding self
    lapic_w(&mut c, 0x310, 0x0500_0000);
    lapic_w(&mut c, 0x300, 0x00e4); // another CPU
    lapic_w(&mut c, 0x300, 0x4_0500); // INIT to self: ignored
    assert_eq!(take(&mut c), None);
    assert_eq!(
        lapic_r(&mut c, 0x300) & (1 << 12),
        0,
        "delivery status idle"
    );
}

#[test]
fn msi_delivery() {
    let (mut c, _, waker) = chip();
    enable_apic(&mut c);
    waker.attention().store(false, Ordering::SeqCst);
    c.msi(0xfee0_0000, 0x41);
    assert!(waker.attention().load(Ordering::SeqCst));
    assert_eq!(take(&mut c), Some(0x41));
    lapic_w(&mut c, 0xd0, 0x0100_0000);
    c.msi(0xfee0_1004, 0x42); // logical 1
    assert_eq!(take(&mut c), Some(0x42));
    c.msi(0xfee0_2004, 0x43); // logical 2: not us
    c.msi(0xfee0_1000, 0x44); // physical 1: not us
    c.msi(0xfec0_0000, 0x45); // not an MSI address
    c.msi(0xfee0_0000, 0x405); // NMI: not modelled
    c.msi(0xfee0_0000, 0x05); // illegal vector
    assert_eq!(take(&mut c), None);
    c.msi(0xfee0_0000, 0x0146); // lowest priority
    assert_eq!(take(&mut c), Some(0x46));
}

#[test]
fn mmio_sizes_and_unknown_registers() {
    let (mut c, _, _) = chip();
    let mut b = [0u8; 8];
    assert!(c.mmio_read(APIC + 0x30, &mut b[..1]));
    assert_eq!(b[0], 0x14);
    assert!(c.mmio_read(APIC + 0x32, &mut b[..2]));
    assert_eq!(&b[..2], &[5, 0]);
    assert!(c.mmio_read(APIC + 0x30, &mut b));
    assert_eq!(b, [0x14, 0, 5, 0, 0, 0, 0, 0]);
    assert!(c.mmio_read(APIC + 0x40, &mut b[..4]));
    assert_eq!(&b[..4], &[0; 4]);
    // A 16-bit write merges into TPR.
    assert!(c.mmio_write(APIC + 0x80, &[0x20, 0]));
    assert_eq!(lapic_r(&mut c, 0x80), 0x20);
    assert!(c.mmio_write(APIC + 0x81, &[0x33]));
    assert_eq!(lapic_r(&mut c, 0x80), 0x20);
    // Outside both devices.
    assert!(!c.mmio_read(0xfed0_0000, &mut b));
    assert!(!c.mmio_write(0xfee0_1000, &b));
    assert!(c.mmio_read(IOAPIC_BASE + 0xff0, &mut b[..4]));
    assert!(!c.mmio_read(IOAPIC_BASE + 0x1000, &mut b[..4]));
}

#[test]
fn platform_trait() {
    let clock = Clock::manual();
    let chip = Arc::new(Mutex::new(IrqChip::new(
        clock.clone(),
        Arc::new(Waker::new()),
    )));
    let mut p = ChipPlatform::new(chip.clone(), clock.clone());
    let mut b = [0u8; 4];
    assert!(!p.pio_read(0x3f8, &mut b[..1]));
    assert!(!p.pio_write(0x3f8, &[0]));
    assert!(p.pio_write(0x21, &[0xfb]));
    assert!(p.pio_read(0x21, &mut b[..1]));
    assert_eq!(b[0], 0xfb);
    // A 16-bit ELCR access covers both registers.
    assert!(p.pio_write(0x4d0, &[0x08, 0x02]));
    assert!(p.pio_read(0x4d0, &mut b[..2]));
    assert_eq!(&b[..2], &[0x08, 0x02]);
    assert!(p.mmio_write(APIC + 0xf0, &0x1ffu32.to_le_bytes()));
    p.set_cr8(3);
    assert_eq!(p.cr8(), 3);
    assert!(p.mmio_read(APIC + 0x80, &mut b));
    assert_eq!(u32::from_le_bytes(b), 0x30);
    p.set_cr8(0);
    assert!(p.mmio_write(APIC + 0x300, &0x4_0050u32.to_le_bytes()));
    assert!(p.interrupt_pending());
    assert_eq!(p.ack_interrupt(), Some(0x50));
    assert!(!p.interrupt_pending());
    assert_eq!(p.rdmsr(0x1b), Some(0xfee0_0900));
    assert_eq!(p.rdmsr(0xc000_0080), None);
    clock.set_ns(1234);
    assert_eq!(p.now_ns(), 1234);
    assert_eq!(p.poll_timers(), None);
    // Device threads drive lines concurrently.
    let c2 = chip.clone();
    std::thread::spawn(move || c2.lock().unwrap().msi(0xfee0_0000, 0x60))
        .join()
        .unwrap();
    assert_eq!(p.ack_interrupt(), Some(0x60));
}

/// xorshift64*: deterministic pseudo-random numbers.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn hostile_random_accesses_do_not_panic() {
    let (mut c, clock, _) = chip();
    let mut r = Rng(0x1234_5678_9abc_def1);
    const PORTS: [u16; 12] = [
        0x20, 0x21, 0xa0, 0xa1, 0x4d0, 0x4d1, 0x40, 0x41, 0x42, 0x43, 0x61, 0x4d1,
    ];
    let mut acks = 0;
    for _ in 0..100_000 {
        let x = r.next();
        let v = r.next();
        let size = 1 + (x >> 8) as usize % 8;
        let mut buf = v.to_le_bytes();
        // Half of the MMIO accesses hit a register exactly, the others anywhere.
        let off = if x & (1 << 40) != 0 {
            ((x >> 20) % 0x40) * 0x10
        } else {
            (x >> 20) % 0x1000
        };
        match x % 16 {
            0 | 1 => {
                let base = c.lapic.base();
                c.mmio_write(base + off, &buf[..size]);
            }
            2 => {
                let base = c.lapic.base();
                c.mmio_read(base + off, &mut buf[..size]);
            }
            3 => {
                c.mmio_write(IOAPIC_BASE + off, &buf[..size]);
            }
            4 => {
                c.mmio_write(IOAPIC_BASE, &[(v >> 32) as u8 & 0x3f]);
                c.mmio_write(IOAPIC_BASE + 0x10, &buf[..4]);
            }
            5 => {
                c.mmio_read(IOAPIC_BASE + off, &mut buf[..size]);
            }
            6 => c.pio_write(PORTS[(x >> 20) as usize % PORTS.len()], v as u8),
            7 => {
                c.pio_read(PORTS[(x >> 20) as usize % PORTS.len()]);
            }
            8 => {
                let msr = [MSR_APIC_BASE, MSR_TSC_DEADLINE][(x >> 20) as usize % 2];
                // Mostly keep the APIC where it is, sometimes move or disable it.
                let val = if msr == MSR_APIC_BASE && x & 0x100_0000 != 0 {
                    0xfee0_0900
                } else {
                    v
                };
                c.wrmsr(msr, val);
                c.rdmsr(msr);
            }
            9 => c.set_irq_level((x >> 20) as u32 % 40, v & 1 != 0),
            10 => c.msi(0xfee0_0000 | ((x >> 20) & 0xff_fff), v as u32),
            11 => {
                clock.advance(v % 2_000_000);
                c.poll_timers();
            }
            12 | 13 => {
                if c.interrupt_pending() && c.ack_interrupt().is_some() {
                    acks += 1;
                }
                let base = c.lapic.base();
                c.mmio_write(base + 0xb0, &[0; 4]);
            }
            14 => {
                // Keep the APIC software-enabled most of the time.
                let base = c.lapic.base();
                c.mmio_write(base + 0xf0, &(0x100 | v as u32).to_le_bytes());
            }
            _ => {
                c.set_cr8(v);
                c.cr8();
            }
        }
    }
    assert!(acks > 200, "the random walk reached few interrupts: {acks}");
}
