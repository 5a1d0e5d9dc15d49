//! The balloon behind the real virtio-pci transport, driven as Linux does: the configuration
//! through BAR 0, and a driver that declines some offered features (so queue indices move).

use super::harness::*;
use super::*;
use crate::features::VERSION_1;
use crate::transport::VirtioPci;
use vireo_devices::{BusDevice, MsiSink};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

const BAR0: u64 = 0xe000_0000;
const DEVICE_FEATURE_SELECT: u64 = 0x00;
const DEVICE_FEATURE: u64 = 0x04;
const DRIVER_FEATURE_SELECT: u64 = 0x08;
const DRIVER_FEATURE: u64 = 0x0c;
const NUM_QUEUES: u64 = 0x12;
const DEVICE_STATUS: u64 = 0x14;
const QUEUE_SELECT: u64 = 0x16;
const QUEUE_SIZE_REG: u64 = 0x18;
const QUEUE_ENABLE: u64 = 0x1c;
const QUEUE_DESC: u64 = 0x20;
const QUEUE_DRIVER: u64 = 0x28;
const QUEUE_DEVICE: u64 = 0x30;
const ISR: u64 = 0x1000;
const DEVICE_CFG: u64 = 0x2000;
const NOTIFY: u64 = 0x3000;
/// ACKNOWLEDGE | DRIVER, then FEATURES_OK, then DRIVER_OK.
const STATUS_DRIVER: u8 = 1 | 2;
const FEATURES_OK: u8 = 8;
const DRIVER_OK: u8 = 4;

struct NoMsi;
impl MsiSink for NoMsi {
    fn signal_msi(&self, _: u64, _: u32) {}
}

fn rd(pci: &mut VirtioPci, off: u64, len: usize) -> u64 {
    let mut b = [0u8; 8];
    pci.read(off, &mut b[..len]);
    u64::from_le_bytes(b)
}

fn wr(pci: &mut VirtioPci, off: u64, len: usize, v: u64) {
    pci.write(off, &v.to_le_bytes()[..len]);
}

fn device_features(pci: &mut VirtioPci) -> u64 {
    wr(pci, DEVICE_FEATURE_SELECT, 4, 0);
    let lo = rd(pci, DEVICE_FEATURE, 4);
    wr(pci, DEVICE_FEATURE_SELECT, 4, 1);
    lo | rd(pci, DEVICE_FEATURE, 4) << 32
}

/// Negotiates `features` and enables `rings` as queues 0, 1, ..., then DRIVER_OK.
fn start(pci: &mut VirtioPci, features: u64, rings: &[MockSplitQueue<GuestMemory>]) {
    wr(pci, DEVICE_STATUS, 1, STATUS_DRIVER.into());
    for half in 0..2 {
        wr(pci, DRIVER_FEATURE_SELECT, 4, half);
        wr(
            pci,
            DRIVER_FEATURE,
            4,
            features >> (32 * half) & 0xffff_ffff,
        );
    }
    wr(pci, DEVICE_STATUS, 1, (STATUS_DRIVER | FEATURES_OK).into());
    assert_eq!(rd(pci, DEVICE_STATUS, 1) as u8 & FEATURES_OK, FEATURES_OK);
    for (i, r) in rings.iter().enumerate() {
        wr(pci, QUEUE_SELECT, 2, i as u64);
        wr(pci, QUEUE_SIZE_REG, 2, 64);
        wr(pci, QUEUE_DESC, 8, r.desc_table_addr().0);
        wr(pci, QUEUE_DRIVER, 8, r.avail_addr().0);
        wr(pci, QUEUE_DEVICE, 8, r.used_addr().0);
        wr(pci, QUEUE_ENABLE, 2, 1);
    }
    wr(
        pci,
        DEVICE_STATUS,
        1,
        (STATUS_DRIVER | FEATURES_OK | DRIVER_OK).into(),
    );
    assert!(pci.is_active());
}

#[test]
fn a_driver_declining_stats_finds_reporting_at_queue_2() {
    let ram = ram();
    let c = BalloonConfig {
        initial_target: MIB,
        stats_interval: Some(Duration::from_secs(5)),
        free_page_reporting: true,
        ..Default::default()
    };
    let (dev, ctl) = Balloon::new(c, &ram.mem).unwrap();
    let mut pci =
        VirtioPci::new(Box::new(dev), ram.mem.clone(), Arc::new(NoMsi), None, BAR0).unwrap();
    // Everything offered gets a queue.
    assert_eq!(rd(&mut pci, NUM_QUEUES, 2), 4);
    let offered = device_features(&mut pci);
    assert_eq!(offered & (STATS_VQ | REPORTING), STATS_VQ | REPORTING);
    assert_eq!(rd(&mut pci, DEVICE_CFG, 4), 256);

    let rings: Vec<_> = (0..3)
        .map(|i| MockSplitQueue::create(&ram.mem, GuestAddress(0x1_0000 * (i + 1)), 64))
        .collect();
    start(&mut pci, VERSION_1 | REPORTING, &rings);
    // Activation told the driver about the pending target.
    assert_eq!(rd(&mut pci, ISR, 1), 2);

    // The driver inflates to the target and says so.
    ram.fill(DATA, PAGE_SIZE, 0x12);
    let len = ram.write_pfns(3 * MIB, &[(DATA >> PFN_SHIFT) as u32]);
    let inflate = &rings[0];
    inflate
        .add_desc_chains(&[desc(3 * MIB, len, false)], 0)
        .unwrap();
    wr(&mut pci, NOTIFY, 2, 0);
    wait_for("the inflate", || inflate.used().idx().load() == 1);
    assert!(ram.read(DATA, PAGE_SIZE).iter().all(|&b| b == 0));
    wr(&mut pci, DEVICE_CFG + 4, 4, 1);
    assert_eq!(ctl.status().actual_bytes, PAGE_SIZE);

    // Queue 2 is the reporting queue for this driver.
    ram.fill(DATA + MIB, 2 * PAGE_SIZE, 0x34);
    let report = &rings[2];
    report
        .add_desc_chains(&[desc(DATA + MIB, 2 * PAGE_SIZE as u32, true)], 0)
        .unwrap();
    wr(&mut pci, NOTIFY + 2 * 4, 2, 2);
    wait_for("the report", || report.used().idx().load() == 1);
    assert!(ram.read(DATA + MIB, 2 * PAGE_SIZE).iter().all(|&b| b == 0));

    // A new target reaches the driver through the configuration interrupt (the ISR read
    // first clears the queue interrupts).
    assert_eq!(rd(&mut pci, ISR, 1), 1);
    ctl.set_target(2 * MIB).unwrap();
    assert_eq!(rd(&mut pci, DEVICE_CFG, 4), 512);
    assert_eq!(rd(&mut pci, ISR, 1), 2);

    // Reset: the driver's state goes, the host's target stays.
    wr(&mut pci, DEVICE_STATUS, 1, 0);
    assert!(!ctl.status().active);
    assert_eq!(ctl.status().actual_bytes, 0);
    assert_eq!(rd(&mut pci, DEVICE_CFG, 4), 512);
    let counters = pci.counters();
    assert!(counters.contains(&("inflated_pages", 1)));
    assert!(counters.contains(&("reported_pages", 2)));
}

fn desc(addr: u64, len: u32, write: bool) -> virtio_queue::desc::RawDescriptor {
    use virtio_bindings::bindings::virtio_ring::VRING_DESC_F_WRITE;
    let flags = if write { VRING_DESC_F_WRITE as u16 } else { 0 };
    virtio_queue::desc::split::Descriptor::new(addr, len, flags, 0).into()
}
