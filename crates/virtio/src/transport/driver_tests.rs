//! The transport driven the way Linux's `virtio_pci_modern` drives it: identity, capability
//! walk, negotiation, queue setup, DRIVER_OK, notifications, interrupts, reset.

use super::common::{STATUS_DRIVER_OK, STATUS_FAILED, STATUS_FEATURES_OK, STATUS_NEEDS_RESET};
use super::test_support::*;
use super::*;
use crate::features::{RING_EVENT_IDX, VERSION_1};
use virtio_queue::mock::MockSplitQueue;
use virtio_queue::{QueueOwnedT, QueueT};
use vm_memory::GuestAddress;

const RING1: u64 = 0x2_0000;

#[test]
fn linux_style_bring_up_notify_and_interrupt() {
    let mut d = Driver::probe(FakeDevice::new(&[256, 64]));
    let offered = d.device_features();
    assert_eq!(offered, VERSION_1 | RING_EVENT_IDX | 1 << 3);
    let wanted = VERSION_1 | RING_EVENT_IDX;
    assert!(d.negotiate(wanted));
    assert_eq!(d.common_read(DRIVER_FEATURE, 4), 1, "select is still 1");

    // vp_request_msix_vectors: enable with everything masked, program, unmask the function.
    d.msix_control(true, true);
    let msgs = [
        (0xfee0_0000u64, 0x30u32),
        (0xfee0_1000, 0x31),
        (0xfee0_2000, 0x32),
    ];
    for (v, (addr, data)) in msgs.iter().enumerate() {
        d.program_vector(v as u16, *addr, *data, false);
    }
    d.msix_control(true, false);
    d.common_write(MSIX_CONFIG, 2, 0);
    assert_eq!(d.common_read(MSIX_CONFIG, 2), 0);

    let mem = d.mem.clone();
    let mut mock = MockSplitQueue::create(&mem, GuestAddress(RING0), 16);
    mock.add_chain(1).unwrap();
    let r0 = (
        mock.desc_table_addr().0,
        mock.avail_addr().0,
        mock.used_addr().0,
    );
    assert_eq!(d.setup_queue(0, 16, r0, 1), 1);
    assert_eq!(d.setup_queue(1, 64, rings(&mem, RING1, 64), 2), 2);
    d.enable_queue(0);
    d.enable_queue(1);
    assert_eq!(d.common_read(QUEUE_ENABLE, 2), 1);
    assert!(d.seen.lock().unwrap().activations.is_empty());
    d.add_status(STATUS_DRIVER_OK);
    assert_eq!(
        d.status() & (STATUS_DRIVER_OK | STATUS_NEEDS_RESET),
        STATUS_DRIVER_OK
    );
    assert!(d.pci.is_active());

    let mut act = d.seen.lock().unwrap().act.take().unwrap();
    assert_eq!(
        d.seen.lock().unwrap().activations,
        vec![(wanted, vec![(0, 16), (1, 64)])]
    );
    assert_eq!(act.features, wanted);
    assert!(act.queues[0].queue.event_idx_enabled());
    assert_eq!(act.queues[1].queue.desc_table(), RING1);

    // Activation looked at each queue once, for buffers posted before DRIVER_OK.
    assert_eq!(act.queues[0].notify.read().unwrap(), 1);
    assert_eq!(act.queues[1].notify.read().unwrap(), 1);
    // A notification signals that queue's eventfd, and only that one.
    d.kick(0);
    assert_eq!(act.queues[0].notify.read().unwrap(), 1);
    assert!(act.queues[1].notify.read().is_err());
    // What the VMM registers as an ioeventfd reaches the device too.
    assert_eq!(d.pci.notify_address(1), Some(BAR0 + d.notify.offset + 4));
    assert_eq!(d.pci.notify_address(2), None);
    d.pci.notify_eventfd(1).unwrap().write(1).unwrap();
    assert_eq!(act.queues[1].notify.read().unwrap(), 1);

    // The device serves the chain the driver posted and interrupts from its own thread.
    let q0 = &mut act.queues[0];
    let chain = q0.queue.iter(&mem).unwrap().next().unwrap();
    let head = chain.head_index();
    let irq = act.interrupt.clone();
    std::thread::scope(|s| {
        s.spawn(|| crate::device::complete(q0, &mem, irq.as_ref(), head, 0));
    });
    assert_eq!(mock.used().idx().load(), 1);
    assert_eq!(d.msi.take(), vec![msgs[1]]);
    assert_eq!(d.read(d.isr.offset, 1), 1, "queue bit");
    assert_eq!(d.read(d.isr.offset, 1), 0, "read clears");

    let generation = d.common_read(CONFIG_GENERATION, 1);
    act.interrupt.config();
    assert_eq!(d.msi.take(), vec![msgs[0]]);
    assert_eq!(d.common_read(CONFIG_GENERATION, 1), (generation + 1) & 0xff);
    assert_eq!(d.read(d.isr.offset, 4), 2, "config bit");
    act.interrupt.queue(1);
    assert_eq!(d.msi.take(), vec![msgs[2]]);
    // A queue index the device does not have reaches no vector.
    act.interrupt.queue(99);
    assert!(d.msi.take().is_empty());
}

#[test]
fn features_ok_refused() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    assert!(!d.negotiate(RING_EVENT_IDX), "no VERSION_1");
    assert!(!d.negotiate(VERSION_1 | 1 << 40), "unoffered bit");
    assert!(!d.negotiate(VERSION_1 | 1 << 5), "unoffered bit");
    // A bit beyond the 64 modelled ones.
    d.negotiate(0);
    d.common_write(DRIVER_FEATURE_SELECT, 4, 2);
    d.common_write(DRIVER_FEATURE, 4, 1);
    d.common_write(DRIVER_FEATURE_SELECT, 4, 1);
    d.common_write(DRIVER_FEATURE, 4, VERSION_1 >> 32);
    d.add_status(STATUS_FEATURES_OK);
    assert_eq!(d.status() & STATUS_FEATURES_OK, 0);
    // DRIVER_OK without FEATURES_OK does not activate.
    d.add_status(STATUS_DRIVER_OK);
    assert_eq!(d.status() & STATUS_DRIVER_OK, 0);
    assert!(d.seen.lock().unwrap().activations.is_empty());
    // Linux then gives up.
    d.add_status(STATUS_FAILED);
    assert_ne!(d.status() & STATUS_FAILED, 0);

    // Accepted features are frozen at FEATURES_OK.
    assert!(d.negotiate(VERSION_1));
    d.common_write(DRIVER_FEATURE_SELECT, 4, 0);
    d.common_write(DRIVER_FEATURE, 4, 1 << 3);
    assert_eq!(d.common_read(DRIVER_FEATURE, 4), 0);
    assert!(d.negotiate(VERSION_1 | 1 << 3));
}

#[test]
fn reset_calls_the_device_and_clears_state() {
    let mut d = Driver::probe(FakeDevice::new(&[32, 32]));
    bring_up(&mut d, &[32, 16]);
    assert!(d.pci.is_active());
    let act = d.seen.lock().unwrap().act.take().unwrap();
    act.interrupt.queue(0);
    assert_eq!(d.msi.take().len(), 1);
    let resets = d.seen.lock().unwrap().resets;

    d.common_write(DEVICE_STATUS, 1, 0);
    assert_eq!(d.seen.lock().unwrap().resets, resets + 1);
    assert_eq!(d.pci.counters(), vec![("resets", resets as u64 + 1)]);
    assert!(!d.pci.is_active());
    assert_eq!(d.status(), 0);
    assert_eq!(d.common_read(MSIX_CONFIG, 2), u64::from(NO_VECTOR));
    d.common_write(DRIVER_FEATURE_SELECT, 4, 1);
    assert_eq!(d.common_read(DRIVER_FEATURE, 4), 0);
    for q in 0..2 {
        d.common_write(QUEUE_SELECT, 2, q);
        assert_eq!(d.common_read(QUEUE_ENABLE, 2), 0);
        assert_eq!(d.common_read(QUEUE_SIZE, 2), 32, "back to the maximum");
        assert_eq!(d.common_read(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
        assert_eq!(d.common_read(QUEUE_DESC, 8), 0);
        assert_eq!(d.common_read(QUEUE_DRIVER, 8), 0);
        assert_eq!(d.common_read(QUEUE_DEVICE, 8), 0);
    }
    // The ISR bit set before the reset is gone.
    assert_eq!(d.read(d.isr.offset, 1), 0);
    // The old activation's interrupt no longer reaches the driver.
    act.interrupt.queue(0);
    act.interrupt.config();
    assert!(d.msi.take().is_empty());
    assert_eq!(d.read(d.isr.offset, 1), 0);
    // Notifications after a reset are ignored (the device is not running).
    d.kick(0);
    assert!(act.queues[0].notify.read().is_err());

    // The function comes up again.
    bring_up(&mut d, &[32, 32]);
    assert_eq!(d.seen.lock().unwrap().activations.len(), 2);
}

#[test]
fn queue_size_and_vector_bounds() {
    let mut d = Driver::probe(FakeDevice::new(&[256, 8]));
    assert!(d.negotiate(VERSION_1));
    d.common_write(QUEUE_SELECT, 2, 0);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 256);
    for refused in [512u64, 0, 100, 0xffff] {
        d.common_write(QUEUE_SIZE, 2, refused);
        assert_eq!(d.common_read(QUEUE_SIZE, 2), 256, "size {refused}");
    }
    d.common_write(QUEUE_SIZE, 2, 64);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 64);
    d.common_write(QUEUE_SIZE, 2, 1);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 1);
    // The vector table has 3 entries: 0..=2.
    d.common_write(QUEUE_MSIX_VECTOR, 2, 2);
    assert_eq!(d.common_read(QUEUE_MSIX_VECTOR, 2), 2);
    d.common_write(QUEUE_MSIX_VECTOR, 2, 3);
    assert_eq!(d.common_read(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    d.common_write(MSIX_CONFIG, 2, 7);
    assert_eq!(d.common_read(MSIX_CONFIG, 2), u64::from(NO_VECTOR));
    d.common_write(MSIX_CONFIG, 2, 2);
    assert_eq!(d.common_read(MSIX_CONFIG, 2), 2);
    // Queues that do not exist: size 0, writes dropped.
    d.common_write(QUEUE_SELECT, 2, 2);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 0);
    d.common_write(QUEUE_SIZE, 2, 4);
    d.common_write(QUEUE_ENABLE, 2, 1);
    d.common_write(QUEUE_MSIX_VECTOR, 2, 1);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 0);
    assert_eq!(d.common_read(QUEUE_ENABLE, 2), 0);
    assert_eq!(d.common_read(QUEUE_MSIX_VECTOR, 2), u64::from(NO_VECTOR));
    // Writing 0 to queue_enable does not disable.
    d.common_write(QUEUE_SELECT, 2, 1);
    d.common_write(QUEUE_ENABLE, 2, 1);
    d.common_write(QUEUE_ENABLE, 2, 0);
    assert_eq!(d.common_read(QUEUE_ENABLE, 2), 1);
    assert_eq!(d.common_read(QUEUE_NOTIFY_OFF, 2), 1);
}

#[test]
fn odd_width_common_accesses() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    assert!(d.negotiate(VERSION_1));
    // A 64-bit write to a queue address sets both halves; a 64-bit read returns both.
    d.common_write(QUEUE_DESC, 8, 0x1234_5678_9abc_def0);
    assert_eq!(d.common_read(QUEUE_DESC, 4), 0x9abc_def0);
    assert_eq!(d.common_read(QUEUE_DESC + 4, 4), 0x1234_5678);
    assert_eq!(d.common_read(QUEUE_DESC, 8), 0x1234_5678_9abc_def0);
    // A dword read at device_status composes status, generation and queue_select.
    d.common_write(QUEUE_SELECT, 2, 0x0102);
    let v = d.common_read(DEVICE_STATUS, 4);
    assert_eq!(v, u64::from(d.status()) | 0x0102 << 16);
    // A byte write into the middle of a 16-bit field is ignored.
    d.common_write(QUEUE_SELECT, 2, 0);
    d.common_write(QUEUE_SIZE + 1, 1, 0);
    assert_eq!(d.common_read(QUEUE_SIZE, 2), 16);
    // An unaligned dword write over generation/select/size is split down to bytes, none of
    // which is a whole field: nothing changes.
    d.common_write(DEVICE_STATUS + 1, 4, 0xffff_ffff);
    assert_eq!(d.common_read(QUEUE_SELECT, 2), 0);
    // Past the structure: zeros.
    assert_eq!(d.common_read(0x38, 8), 0);
    assert_eq!(d.read(0xffc, 4), 0);
}

#[test]
fn invalid_queue_or_failed_activation_needs_reset() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    assert!(d.negotiate(VERSION_1));
    d.msix_control(true, false);
    d.program_vector(0, 0xfee0_0000, 0x55, false);
    d.common_write(MSIX_CONFIG, 2, 0);
    // Rings beyond guest memory.
    d.setup_queue(
        0,
        16,
        (MEM_SIZE as u64, MEM_SIZE as u64 + 0x1000, 0x2000),
        1,
    );
    d.enable_queue(0);
    d.add_status(STATUS_DRIVER_OK);
    assert_ne!(d.status() & STATUS_NEEDS_RESET, 0);
    assert!(!d.pci.is_active());
    assert!(d.seen.lock().unwrap().activations.is_empty());
    assert_eq!(d.msi.take(), vec![(0xfee0_0000, 0x55)], "config interrupt");
    assert_eq!(d.read(d.isr.offset, 1), 2);
    // The driver cannot clear NEEDS_RESET except by resetting.
    d.common_write(DEVICE_STATUS, 1, 0x0f);
    assert_ne!(d.status() & STATUS_NEEDS_RESET, 0);

    // A misaligned descriptor table is refused too.
    assert!(d.negotiate(VERSION_1));
    d.common_write(MSIX_CONFIG, 2, 0);
    d.setup_queue(0, 16, (RING0 + 8, RING0 + 0x100, RING0 + 0x200), 1);
    d.enable_queue(0);
    d.add_status(STATUS_DRIVER_OK);
    assert_ne!(d.status() & STATUS_NEEDS_RESET, 0);

    // The device refuses to start.
    let mut dev = FakeDevice::new(&[16]);
    dev.fail_activate = true;
    let mut d = Driver::probe(dev);
    bring_up(&mut d, &[16]);
    assert_ne!(d.status() & STATUS_NEEDS_RESET, 0);
    assert!(!d.pci.is_active());
    assert_eq!(d.msi.take(), vec![(0xfee0_0000, 0x40)]);
    // A reset recovers.
    d.common_write(DEVICE_STATUS, 1, 0);
    assert_eq!(d.status(), 0);
}

#[test]
fn notifications_before_driver_ok_are_ignored() {
    let mut d = Driver::probe(FakeDevice::new(&[16, 16]));
    assert!(d.negotiate(VERSION_1));
    d.kick(0);
    assert!(d.pci.notify_eventfd(0).unwrap().read().is_err());
    // Offsets past the last queue do nothing either.
    bring_up(&mut d, &[16, 16]);
    d.write(d.notify.offset + 8, 2, 2);
    d.write(d.notify.offset + 0xffc, 4, 0);
    assert!(d.pci.notify_eventfd(0).unwrap().read().is_err());
    assert!(d.pci.notify_eventfd(1).unwrap().read().is_err());
    // Any width at a queue's address notifies it.
    d.write(d.notify.offset + 4, 4, 1);
    assert_eq!(d.pci.notify_eventfd(1).unwrap().read().unwrap(), 1);
}

#[test]
fn device_config_is_forwarded() {
    let mut d = Driver::probe(FakeDevice::new(&[16]));
    assert_eq!(d.read(d.device.offset, 4), 0xa3a2_a1a0);
    assert_eq!(d.read(d.device.offset + 4, 4), 0xa5a4);
    assert_eq!(d.read(d.device.offset + 0x100, 1), 0);
    d.write(d.device.offset + 2, 2, 0xbeef);
    assert_eq!(
        d.seen.lock().unwrap().config_writes,
        vec![(2, vec![0xef, 0xbe])]
    );
}

#[test]
fn unusable_devices_are_refused() {
    let msi: Arc<dyn MsiSink> = Arc::new(RecordingMsi::default());
    let make = |sizes: &[u16], bar0| {
        VirtioPci::new(
            Box::new(FakeDevice::new(sizes)),
            guest_memory(),
            msi.clone(),
            None,
            bar0,
        )
    };
    assert!(matches!(make(&[], BAR0), Err(TransportError::Device(_))));
    assert!(matches!(make(&[100], BAR0), Err(TransportError::Device(_))));
    assert!(matches!(make(&[0], BAR0), Err(TransportError::Device(_))));
    assert!(matches!(
        make(&[16; MAX_QUEUES + 1], BAR0),
        Err(TransportError::Device(_))
    ));
    assert!(matches!(
        make(&[16], BAR0 + 0x1000),
        Err(TransportError::Pci(_))
    ));
    let pci = make(&[16; MAX_QUEUES], BAR0).unwrap();
    assert_eq!(pci.num_queues() as usize, MAX_QUEUES);
}

#[test]
fn a_queue_the_driver_left_disabled_is_never_served() {
    let mut d = Driver::probe(FakeDevice::new(&[16, 16]));
    assert!(d.negotiate(VERSION_1));
    let mem = d.mem.clone();
    let r0 = rings(&mem, RING0, 16);
    d.setup_queue(0, 16, r0, 1);
    d.enable_queue(0);
    // Queue 1 gets rings but is never enabled.
    let r1 = rings(&mem, RING0 + 0x1_0000, 16);
    d.setup_queue(1, 16, r1, 2);
    d.add_status(STATUS_DRIVER_OK);
    assert!(d.pci.is_active());
    let act = d.seen.lock().unwrap().act.take().unwrap();
    let given: Vec<u16> = act.queues.iter().map(|q| q.index).collect();
    assert_eq!(given, vec![0], "only the enabled queue reaches the device");
    // Notifying the disabled queue wakes nothing the device holds.
    let _ = act.queues[0].notify.read();
    d.kick(1);
    assert!(act.queues[0].notify.read().is_err());
}
