use super::*;

/// Linux's `init_8259A`: master at vector 0x30, slave at 0x38, normal EOI.
fn linux_init(p: &mut Pic) {
    p.write(0x21, 0xff);
    p.write(0xa1, 0xff);
    p.write(0x20, 0x11); // ICW1: edge, cascade, ICW4
    p.write(0x21, 0x30); // ICW2
    p.write(0x21, 0x04); // ICW3: slave on IRQ2
    p.write(0x21, 0x01); // ICW4: 8086 mode
    p.write(0xa0, 0x11);
    p.write(0xa1, 0x38);
    p.write(0xa1, 0x02);
    p.write(0xa1, 0x01);
    p.write(0x21, 0x00);
    p.write(0xa1, 0x00);
}

#[test]
fn linux_probe_reads_back_mask() {
    let mut p = Pic::new();
    p.write(0xa1, 0xff);
    p.write(0x21, 0xfb);
    assert_eq!(p.read(0x21), 0xfb);
    assert_eq!(p.read(0xa1), 0xff);
}

#[test]
fn init_sequence_and_master_irq() {
    let mut p = Pic::new();
    linux_init(&mut p);
    assert_eq!(p.read(0x21), 0);
    assert!(!p.output());
    p.set_irq(1, true);
    assert!(p.output());
    assert_eq!(p.inta(), 0x31);
    assert!(!p.output());
    // OCW3: read ISR.
    p.write(0x20, 0x0b);
    assert_eq!(p.read(0x20), 0x02);
    // Lower priority request waits while IRQ1 is in service; higher priority preempts.
    p.set_irq(1, false);
    p.set_irq(4, true);
    assert!(!p.output());
    p.set_irq(0, true);
    assert!(p.output());
    assert_eq!(p.inta(), 0x30);
    // Non-specific EOI ends IRQ0 (highest in service), then IRQ1.
    p.write(0x20, 0x20);
    assert!(!p.output());
    p.write(0x20, 0x20);
    assert!(p.output());
    assert_eq!(p.inta(), 0x34);
    // OCW3: read IRR.
    p.write(0x20, 0x0a);
    assert_eq!(p.read(0x20), 0);
    p.write(0x20, 0x64); // specific EOI for IRQ4
    assert_eq!(p.master.isr, 0);
}

#[test]
fn masked_irq_not_signalled() {
    let mut p = Pic::new();
    linux_init(&mut p);
    p.write(0x21, 0x02);
    p.set_irq(1, true);
    assert!(!p.output());
    p.write(0x21, 0x00);
    assert!(p.output());
    assert_eq!(p.inta(), 0x31);
}

#[test]
fn edge_needs_new_rising_edge() {
    let mut p = Pic::new();
    linux_init(&mut p);
    p.set_irq(3, true);
    assert_eq!(p.inta(), 0x33);
    p.write(0x20, 0x20);
    // Still high: no new edge.
    assert!(!p.output());
    p.set_irq(3, false);
    p.set_irq(3, true);
    assert!(p.output());
}

#[test]
fn slave_cascade() {
    let mut p = Pic::new();
    linux_init(&mut p);
    p.set_irq(12, true);
    assert!(p.output());
    assert_eq!(p.inta(), 0x3c);
    assert_eq!(p.slave.isr, 1 << 4);
    assert_eq!(p.master.isr, 1 << 2);
    p.write(0xa0, 0x20);
    p.write(0x20, 0x20);
    assert_eq!(p.slave.isr | p.master.isr, 0);
    assert!(!p.output());
}

#[test]
fn spurious_irq7_and_15() {
    let mut p = Pic::new();
    linux_init(&mut p);
    assert_eq!(p.inta(), 0x37);
    assert_eq!(p.master.isr, 0);
    // A slave request that goes away before INTA takes the cascade request with it.
    p.set_irq(10, true);
    assert!(p.output());
    p.write(0xa1, 0x04);
    assert!(!p.output());
    assert_eq!(p.inta(), 0x37);
    assert_eq!(p.slave.isr | p.master.isr, 0);
}

#[test]
fn level_triggered_via_elcr() {
    let mut p = Pic::new();
    linux_init(&mut p);
    p.write(0x4d1, 0x02); // IRQ 9 level
    assert_eq!(p.read(0x4d1), 0x02);
    p.write(0x4d0, 0xff);
    assert_eq!(p.read(0x4d0), 0xf8, "IRQ 0-2 cannot be level");
    p.write(0x4d0, 0);
    p.set_irq(9, true);
    assert_eq!(p.inta(), 0x39);
    p.write(0xa0, 0x20);
    p.write(0x20, 0x20);
    // Still asserted: delivered again.
    assert!(p.output());
    assert_eq!(p.inta(), 0x39);
    p.write(0xa0, 0x20);
    p.write(0x20, 0x20);
    p.set_irq(9, false);
    assert!(!p.output());
}

#[test]
fn auto_eoi_and_poll() {
    let mut p = Pic::new();
    p.write(0x20, 0x11);
    p.write(0x21, 0x08);
    p.write(0x21, 0x04);
    p.write(0x21, 0x03); // auto-EOI
    p.write(0x21, 0x00);
    p.set_irq(5, true);
    assert_eq!(p.inta(), 0x0d);
    assert_eq!(p.master.isr, 0);
    // Poll command.
    p.set_irq(6, true);
    p.write(0x20, 0x0c);
    assert_eq!(p.read(0x20), 0x86);
    p.write(0x20, 0x0c);
    assert_eq!(p.read(0x20), 0);
}
