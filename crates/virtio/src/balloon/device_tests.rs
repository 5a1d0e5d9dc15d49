//! The device's face to the transport and the VMM: features, queue layout, configuration
//! space, the control, reset.

use super::harness::*;
use super::*;
use crate::features::VERSION_1;

fn cfg(stats: Option<u64>, reporting: bool) -> BalloonConfig {
    BalloonConfig {
        stats_interval: stats.map(Duration::from_millis),
        free_page_reporting: reporting,
        ..Default::default()
    }
}

#[test]
fn features_and_queue_count_follow_the_configuration() {
    let ram = ram();
    let cases = [
        (cfg(None, false), 0, 2),
        (cfg(Some(1000), false), STATS_VQ, 3),
        (cfg(None, true), REPORTING | PAGE_POISON, 3),
        (cfg(Some(1000), true), STATS_VQ | REPORTING | PAGE_POISON, 4),
        // A zero interval means no statistics.
        (cfg(Some(0), false), 0, 2),
    ];
    for (c, extra, queues) in cases {
        let (dev, _) = Balloon::new(c.clone(), &ram.mem).unwrap();
        let f = dev.features();
        let optional = STATS_VQ | REPORTING | PAGE_POISON | FREE_PAGE_HINT | MUST_TELL_HOST;
        assert_eq!(f & optional, extra, "{c:?}");
        assert!(f & VERSION_1 != 0);
        assert_eq!(dev.queue_max_sizes(), vec![QUEUE_SIZE; queues].as_slice());
        assert_eq!(dev.device_type(), types::BALLOON);
    }
    let (dev, _) = Balloon::new(
        BalloonConfig {
            deflate_on_oom: true,
            ..Default::default()
        },
        &ram.mem,
    )
    .unwrap();
    assert!(dev.features() & DEFLATE_ON_OOM != 0);
}

#[test]
fn queue_indices_skip_the_queues_of_features_not_negotiated() {
    use QueueRole::*;
    assert_eq!(queue_roles(VERSION_1), vec![Inflate, Deflate]);
    assert_eq!(
        queue_roles(VERSION_1 | STATS_VQ),
        vec![Inflate, Deflate, Stats]
    );
    assert_eq!(
        queue_roles(VERSION_1 | REPORTING),
        vec![Inflate, Deflate, Reporting]
    );
    assert_eq!(
        queue_roles(STATS_VQ | REPORTING),
        vec![Inflate, Deflate, Stats, Reporting]
    );
    assert_eq!(
        queue_roles(STATS_VQ | FREE_PAGE_HINT | REPORTING),
        vec![Inflate, Deflate, Stats, FreePageHint, Reporting]
    );
}

#[test]
fn activation_needs_inflate_and_deflate() {
    let ram = ram();
    let (mut dev, _) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    let act = Activation {
        mem: ram.mem.clone(),
        queues: Vec::new(),
        interrupt: Arc::new(Recorder::default()),
        features: VERSION_1,
        writes: None,
    };
    assert!(matches!(dev.activate(act), Err(ActivateError::Queues(_))));
}

#[test]
fn the_target_reaches_the_config_space_and_the_driver() {
    let ram = ram();
    let total: u64 = REGIONS.iter().map(|r| r.1).sum();
    let (mut dev, ctl) = Balloon::new(
        BalloonConfig {
            initial_target: 2 * MIB + 100,
            ..Default::default()
        },
        &ram.mem,
    )
    .unwrap();
    // Rounded down to pages, visible before any driver runs.
    assert_eq!(config_u32(&dev, 0), 512);
    assert_eq!(ctl.status().target_bytes, 2 * MIB);
    assert!(!ctl.status().active);

    // The driver has not acknowledged it yet: activation tells it.
    let drv = activate(&mut dev, &ram, VERSION_1, 2, 0);
    assert_eq!(drv.rec.configs(), 1);
    assert!(ctl.status().active);

    ctl.set_target(6 * MIB).unwrap();
    assert_eq!(config_u32(&dev, 0), 1536);
    assert_eq!(drv.rec.configs(), 2);
    assert_eq!(
        ctl.set_target(total + 1),
        Err(BalloonError::TooLarge {
            requested: total + 1,
            ram: total
        })
    );
    assert_eq!(config_u32(&dev, 0), 1536);
    assert_eq!(drv.rec.configs(), 2);
    assert!(Balloon::new(
        BalloonConfig {
            initial_target: total + 1,
            ..Default::default()
        },
        &ram.mem
    )
    .is_err());
    dev.reset();
}

#[test]
fn the_driver_writes_actual_and_nothing_else() {
    let ram = ram();
    let (mut dev, ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    ctl.set_target(4 * MIB).unwrap();
    dev.write_config(4, &1000u32.to_le_bytes());
    assert_eq!(ctl.status().actual_bytes, 1000 * PAGE_SIZE);
    assert_eq!(config_u32(&dev, 4), 1000);
    // Byte by byte, as a driver may.
    for (i, b) in 0x0102u32.to_le_bytes().iter().enumerate() {
        dev.write_config(4 + i as u64, &[*b]);
    }
    assert_eq!(config_u32(&dev, 4), 0x0102);
    // num_pages is the host's; writes to it, past the structure, or straddling are harmless.
    dev.write_config(0, &7u32.to_le_bytes());
    dev.write_config(16, &[1, 2, 3, 4]);
    dev.write_config(u64::MAX, &[1, 2]);
    dev.write_config(2, &[0xff; 4]);
    assert_eq!(config_u32(&dev, 0), 1024);
    assert_eq!(config_u32(&dev, 4), 0xffff);
    // No free page hinting: its command id reads 0, as does what lies beyond the structure.
    assert_eq!(config_u32(&dev, 8), 0);
    assert_eq!(config_u32(&dev, 16), 0);
    // The driver's poison value (PAGE_POISON) reads back.
    dev.write_config(12, &0xaaaa_aaaau32.to_le_bytes());
    assert_eq!(config_u32(&dev, 12), 0xaaaa_aaaa);
    assert_eq!(config_u32(&dev, 14), 0xaaaa);
    let mut far = [0xaau8; 8];
    dev.read_config(u64::MAX - 2, &mut far);
    assert_eq!(far, [0; 8]);
}

#[test]
fn reset_stops_the_device_and_a_new_driver_starts_over() {
    let ram = ram();
    let (mut dev, ctl) = Balloon::new(BalloonConfig::default(), &ram.mem).unwrap();
    let first = activate(&mut dev, &ram, VERSION_1, 2, 0);
    assert_eq!(first.rec.configs(), 0);
    dev.write_config(4, &10u32.to_le_bytes());
    dev.write_config(12, &[0xaa]);
    dev.reset();
    let status = ctl.status();
    assert_eq!((status.active, status.actual_bytes), (false, 0));
    assert_eq!(config_u32(&dev, 12), 0);

    // Set while no driver runs: nobody is interrupted, the new driver is told at activation.
    ctl.set_target(MIB).unwrap();
    assert_eq!(first.rec.configs(), 0);
    let mut second = activate(&mut dev, &ram, VERSION_1, 2, 1);
    assert_eq!(second.rec.configs(), 1);

    ram.fill(DATA, PAGE_SIZE, 0x42);
    let len = ram.write_pfns(3 * MIB, &[(DATA >> PFN_SHIFT) as u32]);
    second.q(0).post(&[(3 * MIB, len, false)]);
    second.q(0).wait_all_used();
    dev.reset();
    assert!(ram.read(DATA, PAGE_SIZE).iter().all(|&b| b == 0));
    assert_eq!(counter(&dev, "inflated_pages"), 1);
    // A reset device is not signalled by the control.
    ctl.set_target(2 * MIB).unwrap();
    assert_eq!(second.rec.configs(), 1);
}
