use super::*;

fn write(io: &mut Ioapic, reg: u8, v: u32) -> Option<usize> {
    io.mmio_write(0, u32::from(reg));
    io.mmio_write(0x10, v)
}

fn read(io: &mut Ioapic, reg: u8) -> u32 {
    io.mmio_write(0, u32::from(reg));
    io.mmio_read(0x10)
}

#[test]
fn id_version_and_reset_masked() {
    let mut io = Ioapic::new(1);
    assert_eq!(read(&mut io, 0), 1 << 24);
    assert_eq!(read(&mut io, 1), 0x0017_0011);
    assert_eq!(read(&mut io, 0x10), 0x1_0000);
    assert_eq!(io.mmio_read(0), 0x10);
    write(&mut io, 0, 0x0300_0000);
    assert_eq!(read(&mut io, 0), 0x0300_0000);
    assert_eq!(read(&mut io, 0x40), 0);
}

#[test]
fn redirection_entry_read_only_bits() {
    let mut io = Ioapic::new(1);
    assert_eq!(write(&mut io, 0x12, 0xffff_ffff), Some(1));
    assert_eq!(read(&mut io, 0x12), !(1 << 12) & !(1 << 14));
    write(&mut io, 0x13, 0xffff_ffff);
    assert_eq!(read(&mut io, 0x13), 0xff00_0000);
}

#[test]
fn edge_latched_while_masked() {
    let mut io = Ioapic::new(1);
    assert!(io.set_pin(4, true));
    assert_eq!(io.take_msg(4), None, "masked");
    write(&mut io, 0x18, 0x34);
    let m = io.take_msg(4).unwrap();
    assert_eq!((m.vector, m.level, m.dest), (0x34, false, 0));
    assert_eq!(io.take_msg(4), None, "edge consumed");
    assert!(!io.set_pin(4, true), "no new edge");
}

#[test]
fn level_remote_irr() {
    let mut io = Ioapic::new(1);
    write(&mut io, 0x10 + 2 * 9, 0x8039);
    assert!(io.set_pin(9, true));
    let m = io.take_msg(9).unwrap();
    assert!(m.level);
    io.set_remote_irr(9);
    assert_ne!(read(&mut io, 0x22) & (1 << 14), 0);
    assert_eq!(io.take_msg(9), None);
    assert_eq!(io.eoi(0x39), 1 << 9, "still asserted");
    io.set_remote_irr(9);
    io.set_pin(9, false);
    assert_eq!(io.eoi(0x39), 0);
    assert_eq!(read(&mut io, 0x22) & (1 << 14), 0);
}
