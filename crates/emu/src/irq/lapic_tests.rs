use super::*;

fn enabled() -> Lapic {
    let mut l = Lapic::new(0);
    l.write(0xf0, 0x1ff, 0);
    l
}

#[test]
fn reset_state() {
    let l = Lapic::new(0);
    assert_eq!(l.base_msr, 0xfee0_0900);
    assert_eq!(l.read(0x30, 0), 0x0005_0014);
    assert_eq!(l.read(0xf0, 0), 0xff);
    assert_eq!(l.read(0xe0, 0), 0xffff_ffff);
    assert_eq!(l.read(0x320, 0), LVT_MASKED);
    assert_eq!(l.read(0x350, 0), 0x700, "BSP LINT0 is ExtINT");
    assert!(l.accepts_pic());
    let ap = Lapic::new(1);
    assert_eq!(ap.base_msr, 0xfee0_0800);
    assert!(!ap.accepts_pic());
}

#[test]
fn software_disabled_drops_and_masks() {
    let mut l = Lapic::new(0);
    assert!(!l.accept(0x40, false));
    l.write(0x320, 0x40, 0);
    assert_eq!(
        l.read(0x320, 0),
        0x1_0040,
        "LVT stays masked while disabled"
    );
    l.write(0xf0, 0x1ff, 0);
    assert!(l.accept(0x40, false));
    l.write(0x350, 0x700, 0);
    l.write(0xf0, 0xff, 0);
    assert_ne!(
        l.read(0x350, 0) & LVT_MASKED,
        0,
        "disabling masks every LVT"
    );
}

#[test]
fn priority_tpr_ppr() {
    let mut l = enabled();
    assert!(l.accept(0x45, false));
    assert!(l.accept(0x85, false));
    l.write(0x80, 0x50, 0);
    assert_eq!(l.read(0xa0, 0), 0x50);
    assert_eq!(l.ack(), Some(0x85));
    assert_eq!(l.read(0xa0, 0), 0x80);
    assert_eq!(l.read(0x100 + 0x10 * 4, 0), 1 << 5, "ISR bit 0x85");
    assert_eq!(l.pending(), None);
    l.write(0xb0, 0, 0);
    assert_eq!(l.read(0xa0, 0), 0x50);
    assert_eq!(l.pending(), None, "0x45 is below TPR");
    assert!(l.accept(0x55, false));
    assert_eq!(l.pending(), None, "same class as TPR is blocked");
    l.set_cr8(4);
    assert_eq!(l.read(0x80, 0), 0x40);
    assert_eq!(l.cr8(), 4);
    assert_eq!(l.pending(), Some(0x55));
    l.set_cr8(0);
    assert_eq!(l.ack(), Some(0x55));
    // 0x45 is a lower class than 0x55 in service.
    assert_eq!(l.pending(), None);
    l.write(0xb0, 0, 0);
    assert_eq!(l.ack(), Some(0x45));
}

#[test]
fn higher_class_preempts_in_service() {
    let mut l = enabled();
    l.accept(0x31, false);
    assert_eq!(l.ack(), Some(0x31));
    l.accept(0x3f, false);
    assert_eq!(l.pending(), None, "same class waits");
    l.accept(0x40, false);
    assert_eq!(l.ack(), Some(0x40));
    l.write(0xb0, 0, 0);
    l.write(0xb0, 0, 0);
    assert_eq!(l.ack(), Some(0x3f));
}

#[test]
fn illegal_vectors_set_esr() {
    let mut l = enabled();
    l.write(0x370, 0xfe, 0); // error LVT
    assert!(!l.accept(5, false));
    assert_eq!(
        l.read(0x280, 0),
        0,
        "ESR reads the state latched at the last write"
    );
    l.write(0x280, 0, 0);
    assert_eq!(l.read(0x280, 0), 0x40);
    assert_eq!(l.pending(), Some(0xfe));
    let fx = l.write(0x300, 0x4_0003, 0);
    assert_eq!(fx.ipi, None);
    l.write(0x280, 0, 0);
    assert_eq!(l.read(0x280, 0), 0x20);
    l.write(0x280, 0, 0);
    assert_eq!(l.read(0x280, 0), 0);
}

#[test]
fn eoi_reports_level_vectors() {
    let mut l = enabled();
    l.accept(0x39, true);
    assert_eq!(l.read(0x180 + 0x10, 0), 1 << 25, "TMR");
    assert_eq!(l.ack(), Some(0x39));
    let fx = l.write(0xb0, 0, 0);
    assert_eq!(fx.eoi_level, Some(0x39));
    l.accept(0x39, false);
    l.ack();
    assert_eq!(l.write(0xb0, 0, 0).eoi_level, None);
}

#[test]
fn destination_matching() {
    let mut l = enabled();
    assert!(l.matches(0, false));
    assert!(l.matches(0xff, false));
    assert!(!l.matches(1, false));
    assert!(!l.matches(1, true), "LDR 0 matches nothing");
    l.write(0xd0, 0x0100_0000, 0);
    assert!(l.matches(1, true));
    assert!(l.matches(3, true));
    assert!(!l.matches(2, true));
    assert!(l.matches(0xff, true));
    // Cluster model: cluster 1, member 2.
    l.write(0xe0, 0x0fff_ffff, 0);
    assert_eq!(l.read(0xe0, 0), 0x0fff_ffff);
    l.write(0xd0, 0x1200_0000, 0);
    assert!(l.matches(0x12, true));
    assert!(l.matches(0x13, true));
    assert!(!l.matches(0x22, true));
    assert!(!l.matches(0x11, true));
}

#[test]
fn one_shot_timer() {
    let mut l = enabled();
    l.write(0x3e0, 0xb, 0); // divide by 1
    l.write(0x320, 0x40, 0);
    l.write(0x380, 1000, 100);
    assert_eq!(l.read(0x380, 0), 1000);
    assert_eq!(l.read(0x390, 600), 500);
    assert_eq!(l.poll_timer(1099), (false, Some(1100)));
    assert_eq!(l.poll_timer(1100), (true, None));
    assert_eq!(l.read(0x390, 1200), 0);
    assert_eq!(l.pending(), Some(0x40));
    assert_eq!(l.poll_timer(10_000), (false, None));
}

#[test]
fn divide_configuration() {
    let mut l = enabled();
    for (dcr, div) in [
        (0, 2),
        (1, 4),
        (2, 8),
        (3, 16),
        (8, 32),
        (9, 64),
        (0xa, 128),
        (0xb, 1),
    ] {
        l.write(0x3e0, dcr, 0);
        l.write(0x380, 100, 0);
        assert_eq!(l.timer_next(), Some(100 * div), "dcr {dcr:#x}");
    }
    l.write(0x380, 0, 0);
    assert_eq!(l.timer_next(), None, "count 0 stops the timer");
}

#[test]
fn periodic_timer_coalesces() {
    let mut l = enabled();
    l.write(0x3e0, 0xb, 0);
    l.write(0x320, 0x2_0041, 0);
    l.write(0x380, 200_000, 0);
    let mut fired = 0;
    let mut t = 0;
    while t <= 10_000_000 {
        if l.poll_timer(t).0 {
            fired += 1;
            assert_eq!(l.ack(), Some(0x41));
            l.write(0xb0, 0, t);
        }
        t += 10_000;
    }
    assert_eq!(fired, 50);
    // Ten seconds late: one interrupt, re-armed a period from now.
    let (f, next) = l.poll_timer(20_000_000_000);
    assert!(f);
    assert_eq!(next, Some(20_000_200_000));
    let c = l.read(0x390, 20_000_100_000);
    assert_eq!(c, 100_000);
}

#[test]
fn masked_timer_runs_silently() {
    let mut l = enabled();
    l.write(0x3e0, 0xb, 0);
    l.write(0x320, 0x1_0040, 0);
    l.write(0x380, 10, 0);
    assert!(l.poll_timer(10).0);
    assert_eq!(l.pending(), None);
}

#[test]
fn tsc_deadline_timer() {
    let mut l = enabled();
    // Ignored in one-shot mode.
    l.set_tsc_deadline(500);
    assert_eq!(l.tsc_deadline(), 0);
    assert_eq!(l.timer_next(), None);
    l.write(0x320, 0x4_0042, 0);
    l.write(0x380, 1000, 0);
    assert_eq!(
        l.read(0x380, 0),
        0,
        "initial count ignored in TSC-deadline mode"
    );
    l.set_tsc_deadline(5000);
    assert_eq!(l.tsc_deadline(), 5000);
    assert_eq!(l.read(0x390, 0), 0);
    assert_eq!(l.poll_timer(4999), (false, Some(5000)));
    assert_eq!(l.poll_timer(6000), (true, None));
    assert_eq!(l.tsc_deadline(), 0);
    assert_eq!(l.ack(), Some(0x42));
    // 0 disarms; a deadline in the past fires at once.
    l.set_tsc_deadline(9000);
    l.set_tsc_deadline(0);
    assert_eq!(l.poll_timer(10_000), (false, None));
    l.set_tsc_deadline(1);
    assert!(l.poll_timer(10_000).0);
    // Leaving the mode disarms.
    l.set_tsc_deadline(20_000);
    l.write(0x320, 0x42, 0);
    assert_eq!(l.timer_next(), None);
}

#[test]
fn base_msr() {
    let mut l = enabled();
    assert!(!l.set_base_msr(0xfee0_0000 | BASE_ENABLE | BASE_X2APIC));
    assert!(!l.set_base_msr(0xfee0_0001));
    assert!(l.set_base_msr(0xfed0_0000 | BASE_ENABLE));
    assert_eq!(l.base(), 0xfed0_0000);
    assert_eq!(l.base_msr, 0xfed0_0900, "BSP bit kept");
    l.accept(0x50, false);
    assert!(l.set_base_msr(0xfed0_0000));
    assert!(!l.hw_enabled());
    assert_eq!(l.pending(), None);
    assert!(l.accepts_pic());
    assert!(l.set_base_msr(0xfee0_0000 | BASE_ENABLE));
    assert!(!l.sw_enabled(), "re-enabled in reset state");
    assert_eq!(l.irr, [0; 8]);
}
