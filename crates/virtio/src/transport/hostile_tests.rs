//! A hostile driver: random accesses of every width at random offsets of BAR 0 and
//! configuration space, interleaved with status changes and random queue addresses. The
//! transport must neither panic nor hang, and must stay usable afterwards.

use super::common::{STATUS_DRIVER_OK, STATUS_FEATURES_OK};
use super::test_support::*;
use super::*;
use crate::features::VERSION_1;
use std::time::{Duration, Instant};

const STATUSES: [u8; 8] = [0, 1, 3, 0x0b, 0x0f, 0x8f, 0x4f, 0xff];

fn random_status(rng: &mut Rng) -> u8 {
    STATUSES[rng.below(STATUSES.len() as u64) as usize]
}

/// A queue address: often valid-looking, sometimes anywhere (wrapping, unaligned, huge).
fn random_addr(rng: &mut Rng) -> u64 {
    match rng.below(4) {
        0 => rng.next(),
        1 => u64::MAX - rng.below(0x1000),
        _ => rng.below(MEM_SIZE as u64 + 0x2000) & !rng.below(16),
    }
}

#[test]
fn random_accesses_never_panic_or_hang() {
    let mut dev = FakeDevice::new(&[256, 16, 1]);
    // Each activation starts a real worker thread; resets join it.
    dev.threaded = true;
    let mut d = Driver::probe(dev);
    let mut rng = Rng::new(0x5eed_1234_9876_0001);
    let start = Instant::now();
    for i in 0..100_000u32 {
        let width = [1usize, 2, 4, 8][rng.below(4) as usize];
        let mut buf = rng.next().to_le_bytes();
        match rng.below(16) {
            // BAR 0, mostly the interesting first pages, sometimes anywhere past it.
            0..=5 => {
                let off = match rng.below(8) {
                    0 => rng.next(),
                    1 => BAR0_SIZE - rng.below(16),
                    _ => rng.below(0x6000),
                };
                if rng.below(2) == 0 {
                    d.pci.write(off, &buf[..width]);
                } else {
                    d.pci.read(off, &mut buf[..width]);
                }
            }
            // The common configuration, field by field.
            6..=9 => {
                let off = rng.below(0x40);
                if rng.below(3) == 0 {
                    d.pci.read(off, &mut buf[..width]);
                } else {
                    d.pci.write(off, &buf[..width]);
                }
            }
            // Configuration space, any register, any byte lanes (PCI_CFG and MSI-X included).
            10..=12 => {
                let space = if rng.below(2) == 0 { 64 } else { 1024 };
                let reg = rng.below(space) as usize;
                if rng.below(2) == 0 {
                    d.pci.read_config_register(reg);
                } else {
                    let mask = [0xff, 0xffff, 0xffff_0000, u32::MAX, rng.next() as u32]
                        [rng.below(5) as usize];
                    d.pci.write_config_register(reg, rng.next() as u32, mask);
                }
            }
            // Status changes, including the full bring-up order.
            13 => d.common_write(DEVICE_STATUS, 1, u64::from(random_status(&mut rng))),
            14 => {
                let q = rng.below(4);
                d.common_write(QUEUE_SELECT, 2, q);
                for field in [QUEUE_DESC, QUEUE_DRIVER, QUEUE_DEVICE] {
                    d.common_write(field, 8, random_addr(&mut rng));
                }
                d.common_write(QUEUE_SIZE, 2, 1 << rng.below(10));
                d.common_write(QUEUE_ENABLE, 2, rng.below(2));
            }
            _ => {
                // Activate with whatever queues were set up; sometimes with good features.
                if rng.below(2) == 0 {
                    d.common_write(DRIVER_FEATURE_SELECT, 4, 1);
                    d.common_write(DRIVER_FEATURE, 4, VERSION_1 >> 32);
                }
                if rng.below(2) == 0 {
                    let v = rng.below(u64::from(d.table_size) + 1) as u16;
                    d.msix_control(true, rng.below(4) == 0);
                    d.program_vector(v, rng.next(), rng.next() as u32, rng.below(3) == 0);
                    d.common_write(MSIX_CONFIG, 2, u64::from(v));
                    d.common_write(QUEUE_MSIX_VECTOR, 2, u64::from(v));
                }
                d.add_status(STATUS_FEATURES_OK);
                d.add_status(STATUS_DRIVER_OK);
                if let Some(act) = d.seen.lock().unwrap().act.as_ref() {
                    act.interrupt.queue(rng.below(4) as u16);
                    act.interrupt.config();
                }
            }
        }
        if i % 10_000 == 0 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "too slow: {i} accesses in {:?}",
                start.elapsed()
            );
        }
    }
    // The random driver got deep: devices were activated (with workers) and interrupted.
    let activations = d.seen.lock().unwrap().activations.len();
    let resets = d.seen.lock().unwrap().resets;
    let msis = d.msi.take().len();
    assert!(activations > 10, "only {activations} activations");
    assert!(resets > 10, "only {resets} resets");
    assert!(msis > 10, "only {msis} interrupts delivered");
    // Still a working function: a clean bring-up succeeds.
    d.common_write(DEVICE_STATUS, 1, 0);
    cfg_write(&mut d.pci, 0x10, 4, BAR0 as u32);
    cfg_write(&mut d.pci, 0x14, 4, (BAR0 >> 32) as u32);
    assert!(d.negotiate(VERSION_1));
    d.common_write(QUEUE_SELECT, 2, 2);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 1);
    d.setup_queue(2, 1, (0x1_0000, 0x1_1000, 0x1_2000), 3);
    d.enable_queue(2);
    d.add_status(STATUS_DRIVER_OK);
    assert!(d.pci.is_active());
}
