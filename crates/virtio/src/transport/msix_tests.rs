//! MSI-X: masking, the pending bit array, function mask, disabled MSI-X, and interrupts from a
//! worker thread racing the vCPU thread's table writes and resets.

use super::common::STATUS_DRIVER_OK;
use super::test_support::*;
use super::*;
use crate::features::VERSION_1;
use std::sync::mpsc::channel;
use std::time::Duration;
use virtio_queue::mock::MockSplitQueue;
use vm_memory::GuestAddress;

const ADDR: u64 = 0xfee0_0000;

/// Negotiates, programs every vector (data 0x60 + v, all unmasked unless listed), assigns
/// vector q + 1 to queue q and 0 to config, and sets DRIVER_OK.
fn bring_up(d: &mut Driver, masked: &[u16]) -> crate::Activation {
    assert!(d.negotiate(VERSION_1));
    d.msix_control(true, true);
    for v in 0..d.table_size {
        d.program_vector(v, ADDR + u64::from(v) * 0x1000, 0x60 + u32::from(v), false);
        d.set_vector_masked(v, masked.contains(&v));
    }
    d.msix_control(true, false);
    d.common_write(MSIX_CONFIG, 2, 0);
    let mem = d.mem.clone();
    let queues = d.table_size - 1;
    for q in 0..queues {
        let m = MockSplitQueue::create(&mem, GuestAddress(0x1_0000 * (u64::from(q) + 1)), 16);
        let rings = (m.desc_table_addr().0, m.avail_addr().0, m.used_addr().0);
        assert_eq!(d.setup_queue(q, 16, rings, q + 1), q + 1);
        d.enable_queue(q);
    }
    d.add_status(STATUS_DRIVER_OK);
    assert!(d.pci.is_active());
    d.seen.lock().unwrap().act.take().unwrap()
}

fn msg(v: u16) -> (u64, u32) {
    (ADDR + u64::from(v) * 0x1000, 0x60 + u32::from(v))
}

#[test]
fn masked_vector_pends_until_unmasked() {
    let mut d = Driver::probe(FakeDevice::new(&[16, 16]));
    let act = bring_up(&mut d, &[1]);
    act.interrupt.queue(0);
    assert!(d.msi.take().is_empty(), "vector 1 is masked");
    assert_eq!(d.pba_bits(), 1 << 1);
    assert_eq!(d.read(d.isr.offset, 1), 1);
    // Another vector is unaffected.
    act.interrupt.queue(1);
    assert_eq!(d.msi.take(), vec![msg(2)]);
    // Unmasking delivers the pending message once and clears the pending bit.
    d.set_vector_masked(1, false);
    assert_eq!(d.msi.take(), vec![msg(1)]);
    assert_eq!(d.pba_bits(), 0);
    d.set_vector_masked(1, false);
    assert!(d.msi.take().is_empty());
    act.interrupt.queue(0);
    assert_eq!(d.msi.take(), vec![msg(1)]);
    // Reprogramming the address while masked: the pending message uses the new one.
    d.set_vector_masked(1, true);
    act.interrupt.queue(0);
    d.program_vector(1, 0xfee0_f000, 0x99, false);
    assert_eq!(d.msi.take(), vec![(0xfee0_f000, 0x99)]);
}

#[test]
fn function_mask_pends_every_vector() {
    let mut d = Driver::probe(FakeDevice::new(&[16, 16]));
    let act = bring_up(&mut d, &[]);
    d.msix_control(true, true);
    act.interrupt.queue(1);
    act.interrupt.config();
    assert!(d.msi.take().is_empty());
    assert_eq!(d.pba_bits(), 1 << 0 | 1 << 2);
    // An entry that is masked on its own stays pending when the function mask clears.
    d.set_vector_masked(2, true);
    d.msix_control(true, false);
    assert_eq!(d.msi.take(), vec![msg(0)]);
    assert_eq!(d.pba_bits(), 1 << 2);
    d.set_vector_masked(2, false);
    assert_eq!(d.msi.take(), vec![msg(2)]);
    assert_eq!(d.pba_bits(), 0);
}

#[test]
fn disabled_msix_only_sets_the_isr() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    let act = bring_up(&mut d, &[]);
    d.msix_control(false, false);
    act.interrupt.queue(0);
    act.interrupt.config();
    act.interrupt.queue(0);
    assert!(d.msi.take().is_empty());
    assert_eq!(d.pba_bits(), 0, "nothing pends while MSI-X is off");
    assert_eq!(d.read(d.isr.offset, 1), 3);
    // Re-enabling delivers nothing that was dropped.
    d.msix_control(true, false);
    assert!(d.msi.take().is_empty());
    // A vector of NO_VECTOR never delivers.
    d.common_write(QUEUE_SELECT, 2, 0);
    d.common_write(QUEUE_MSIX_VECTOR, 2, u64::from(NO_VECTOR));
    act.interrupt.queue(0);
    assert!(d.msi.take().is_empty());
    assert_eq!(d.read(d.isr.offset, 1), 1);
}

#[test]
fn table_and_pba_registers() {
    let mut d = Driver::probe(FakeDevice::new(&[16, 16, 16]));
    // Entries start masked, zeroed.
    for v in 0..d.table_size {
        let e = d.table + u64::from(v) * 16;
        assert_eq!(d.read(e, 8), 0);
        assert_eq!(d.read(e + 8, 8), 1 << 32);
    }
    // 64-bit accesses to the address, byte accesses anywhere.
    d.write(d.table + 16, 8, 0x0000_0001_fee0_1000);
    assert_eq!(d.read(d.table + 16, 4), 0xfee0_1000);
    assert_eq!(d.read(d.table + 20, 4), 1);
    d.write(d.table + 24, 1, 0x42);
    assert_eq!(d.read(d.table + 24, 4), 0x42);
    // Past the table and in the PBA: writes do nothing.
    let end = d.table + u64::from(d.table_size) * 16;
    d.write(end, 8, u64::MAX);
    assert_eq!(d.read(end, 8), 0);
    d.write(d.pba, 8, u64::MAX);
    assert_eq!(d.pba_bits(), 0);
    // Message control: enable and function mask are writable, the table size is not.
    cfg_write(&mut d.pci, d.msix_cap + 2, 2, 0xffff);
    assert_eq!(
        cfg_read(&mut d.pci, d.msix_cap + 2, 2),
        0xc000 | u32::from(d.table_size - 1)
    );
    cfg_write(&mut d.pci, d.msix_cap + 4, 4, 0x1234_5678);
    assert_eq!(cfg_read(&mut d.pci, d.msix_cap + 4, 4), d.table as u32);
}

/// The device's worker interrupts on every notification while the vCPU side notifies,
/// toggles masks and resets (which joins the worker): no deadlock, messages arrive.
#[test]
fn worker_interrupts_race_table_writes_and_resets() {
    let (tx, rx) = channel();
    let t = std::thread::spawn(move || {
        let mut dev = FakeDevice::new(&[16, 16]);
        dev.threaded = true;
        let mut d = Driver::probe(dev);
        let mut delivered = 0;
        for round in 0..20 {
            let _act = bring_up(&mut d, &[]);
            for i in 0..200u16 {
                d.kick(i % 2);
                let v = 1 + i % 2;
                d.set_vector_masked(v, i % 3 == 0);
                if i % 50 == 0 {
                    d.msix_control(true, round % 2 == 0);
                    d.msix_control(true, false);
                }
                delivered += d.msi.take().len();
            }
            // Reset while the worker may be mid-interrupt.
            d.common_write(DEVICE_STATUS, 1, 0);
        }
        tx.send(delivered).unwrap();
    });
    let delivered = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("deadlock: the vCPU side did not finish");
    t.join().unwrap();
    assert!(delivered > 0);
}

/// An interrupt line that remembers its level.
#[derive(Default)]
struct Line(std::sync::atomic::AtomicBool);

impl vireo_devices::IrqLine for Line {
    fn set_level(&self, high: bool) {
        self.0.store(high, std::sync::atomic::Ordering::SeqCst);
    }
}

#[test]
fn without_msix_interrupts_go_to_the_intx_line_until_the_isr_is_read() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    let line = Arc::new(Line::default());
    d.pci.set_intx(line.clone());
    // The configuration space now says INTA#.
    assert_eq!((cfg_read(&mut d.pci, 0x3c, 4) >> 8) & 0xff, 1);
    let act = bring_up(&mut d, &[]);
    d.msix_control(false, false);
    let high = || line.0.load(std::sync::atomic::Ordering::SeqCst);
    assert!(!high());
    act.interrupt.queue(0);
    assert!(high(), "asserted with the ISR");
    assert!(d.msi.take().is_empty());
    assert_eq!(d.read(d.isr.offset, 1), 1);
    assert!(!high(), "reading the ISR deasserts it");
    // With MSI-X on, the line stays quiet.
    d.msix_control(true, false);
    act.interrupt.queue(0);
    assert!(!high());
    assert_eq!(d.msi.take().len(), 1);
}
