//! Configuration space: identity, capabilities and BAR 0 as a guest's PCI core sees them, the
//! PCI_CFG access window, BAR moves, and the function registered on a real PCI root and MMIO bus
//! the way the VMM registers it.

use super::test_support::*;
use super::*;
use crate::types;
use vireo_devices::pci::{PciBarKind, PciConfigMmio, PciRoot};
use vireo_devices::Bus;

#[test]
fn identity_and_capabilities() {
    for (ty, class) in [
        (types::BLOCK, 0x0100),
        (types::NET, 0x0200),
        (types::CONSOLE, 0x0780),
        (types::RNG, 0xff00),
        (types::VSOCK, 0x0780),
    ] {
        let mut dev = FakeDevice::new(&[128, 64, 32]);
        dev.device_type = ty;
        let mut d = Driver::probe(dev);
        let p = &mut d.pci;
        assert_eq!(cfg_read(p, 0, 2), 0x1af4);
        assert_eq!(cfg_read(p, 2, 2), 0x1040 + ty);
        assert_eq!(cfg_read(p, 8, 1), 1, "revision 1: modern only");
        assert_eq!(cfg_read(p, 0xa, 2), class);
        assert_eq!(cfg_read(p, 0x2c, 2), 0x1af4);
        assert_eq!(cfg_read(p, 0x2e, 2), 0x40);
        assert_eq!(cfg_read(p, 0x3d, 1), 0, "no INTx pin");
        assert_eq!(p.device_type(), ty);
    }
    let mut d = Driver::probe(FakeDevice::new(&[128, 64, 32]));
    // 64-bit non-prefetchable memory BAR 0 at BAR0, sized BAR0_SIZE.
    assert_eq!(cfg_read(&mut d.pci, 0x10, 4), BAR0 as u32 | 0x4);
    assert_eq!(cfg_read(&mut d.pci, 0x14, 4), (BAR0 >> 32) as u32);
    cfg_write(&mut d.pci, 0x10, 4, u32::MAX);
    assert_eq!(cfg_read(&mut d.pci, 0x10, 4), !(BAR0_SIZE as u32 - 1) | 0x4);
    cfg_write(&mut d.pci, 0x10, 4, BAR0 as u32);
    let bars = d.pci.bars();
    assert_eq!(bars.len(), 1);
    assert_eq!(
        (bars[0].kind, bars[0].prefetchable),
        (PciBarKind::Mmio64, false)
    );
    assert!(BAR0_SIZE.is_power_of_two());

    // Every region in BAR 0, page aligned, within the BAR, not overlapping.
    let mut regions = vec![
        (d.common.offset, u64::from(d.common.length)),
        (d.notify.offset, u64::from(d.notify.length)),
        (d.isr.offset, u64::from(d.isr.length)),
        (d.device.offset, u64::from(d.device.length)),
        (d.table, u64::from(d.table_size) * 16),
        (d.pba, 8),
    ];
    for r in [d.common, d.notify, d.isr, d.device] {
        assert_eq!(r.bar, 0);
    }
    assert!(
        d.common.length >= 0x38,
        "holds struct virtio_pci_common_cfg"
    );
    assert!(d.isr.length >= 1);
    assert_eq!(d.notify_mult, 4);
    assert!(u64::from(d.notify.length) >= 2 * u64::from(d.notify_mult) + 2);
    regions.sort();
    for w in regions.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0, "{regions:x?} overlap");
    }
    for (off, len) in &regions {
        assert_eq!(off % 0x1000, 0);
        assert!(off + len <= BAR0_SIZE);
    }
    assert_eq!(d.table_size, 4, "one vector per queue plus config");
    assert_ne!(d.pci_cfg, 0, "PCI_CFG capability present");
    assert_eq!(d.common_read(NUM_QUEUES, 2), 3);
}

#[test]
fn bar_moves_follow() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    assert_eq!(d.pci.bar0(), BAR0);
    let old = d.pci.notify_address(0).unwrap();
    let new_base = 0x1_2000_0000u64;
    cfg_write(&mut d.pci, 0x10, 4, new_base as u32);
    cfg_write(&mut d.pci, 0x14, 4, (new_base >> 32) as u32);
    let bar = d.pci.bars()[0];
    assert_eq!(bar.addr, new_base);
    d.pci.bar_moved(&bar, BAR0);
    assert_eq!(d.pci.bar0(), new_base);
    assert_eq!(d.pci.notify_address(0), Some(old - BAR0 + new_base));
}

#[test]
fn pci_cfg_window_reaches_bar0() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    let cap = d.pci_cfg;
    let window = |d: &mut Driver, bar: u32, off: u64, len: u32| {
        cfg_write(&mut d.pci, cap + 4, 1, bar);
        cfg_write(&mut d.pci, cap + 8, 4, off as u32);
        cfg_write(&mut d.pci, cap + 12, 4, len);
    };
    // Read the device features through the window.
    d.common_write(DEVICE_FEATURE_SELECT, 4, 1);
    let at = d.common.offset + DEVICE_FEATURE;
    window(&mut d, 0, at, 4);
    assert_eq!(cfg_read(&mut d.pci, cap + 16, 4), 1, "VERSION_1 >> 32");
    assert_eq!(cfg_read(&mut d.pci, cap + 8, 4) as u64, DEVICE_FEATURE);
    // Write the status through the window (1 byte).
    let at = d.common.offset + DEVICE_STATUS;
    window(&mut d, 0, at, 1);
    cfg_write(&mut d.pci, cap + 16, 4, 0x01);
    assert_eq!(d.status(), 1);
    cfg_write(&mut d.pci, cap + 16, 1, 0x03);
    assert_eq!(d.status(), 3);
    assert_eq!(cfg_read(&mut d.pci, cap + 16, 1), 3);
    // Queue select through a 2-byte window, read back through the BAR.
    let at = d.common.offset + QUEUE_SELECT;
    window(&mut d, 0, at, 2);
    cfg_write(&mut d.pci, cap + 16, 4, 0xffff_0007);
    assert_eq!(d.common_read(QUEUE_SELECT, 2), 7);
    // Unusable windows are ignored: another BAR, bad length, misaligned, outside the BAR.
    for (bar, off, len) in [
        (1, d.common.offset + QUEUE_SELECT, 2),
        (0, d.common.offset + QUEUE_SELECT, 3),
        (0, d.common.offset + QUEUE_SELECT + 1, 2),
        (0, BAR0_SIZE, 4),
        (0, u64::from(u32::MAX - 1), 2),
    ] {
        window(&mut d, bar, off, len);
        cfg_write(&mut d.pci, cap + 16, 4, 0);
        assert_eq!(d.common_read(QUEUE_SELECT, 2), 7);
    }
    // Reads through the window have the BAR's side effects: the ISR clears.
    bring_up(&mut d, &[16]);
    let act = d.seen.lock().unwrap().act.take().unwrap();
    act.interrupt.queue(0);
    let at = d.isr.offset;
    window(&mut d, 0, at, 1);
    assert_eq!(cfg_read(&mut d.pci, cap + 16, 4), 1);
    assert_eq!(d.read(d.isr.offset, 1), 0);
}

#[test]
fn registered_on_the_pci_root_and_mmio_bus() {
    let mem = guest_memory();
    let msi = Arc::new(RecordingMsi::default());
    let dev = FakeDevice::new(&[16, 16]);
    let seen = dev.seen.clone();
    let pci = VirtioPci::new(Box::new(dev), mem, msi.clone(), None, BAR0).unwrap();
    let pci = Arc::new(Mutex::new(pci));
    let root = Arc::new(Mutex::new(PciRoot::new()));
    let slot = root.lock().unwrap().add_device(pci.clone()).unwrap();
    let mut bus = Bus::new();
    bus.insert(BAR0, BAR0_SIZE, pci.clone()).unwrap();
    assert_eq!(root.lock().unwrap().bars()[0].1.addr, BAR0);

    let mut ecam = PciConfigMmio::new(root.clone());
    let cfg = u64::from(slot) << 15;
    let mut b = [0u8; 4];
    ecam.read(cfg, &mut b);
    assert_eq!(u32::from_le_bytes(b), 0x1044_1af4, "virtio-rng, modern");

    // The common configuration through the bus, relative to BAR 0.
    let mut w = [0u8; 2];
    bus.read(BAR0 + 0x12, &mut w);
    assert_eq!(u16::from_le_bytes(w), 2, "num_queues");
    bus.write(BAR0 + 0x14, &[1]);
    assert_eq!(pci.lock().unwrap().common.status, 1);

    // The guest moves BAR 0 (low dword, then high): the root tells the function.
    let new_base = 0x2_0000_8000u64;
    ecam.write(cfg + 0x10, &(new_base as u32).to_le_bytes());
    ecam.write(cfg + 0x14, &((new_base >> 32) as u32).to_le_bytes());
    let p = pci.lock().unwrap();
    assert_eq!(p.bar0(), new_base);
    assert_eq!(p.notify_address(1), Some(new_base + NOTIFY_OFFSET + 4));
    assert_eq!(root.lock().unwrap().bars()[0].1.addr, new_base);
    drop(p);
    assert!(seen.lock().unwrap().activations.is_empty());
}
