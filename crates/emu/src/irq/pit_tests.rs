use super::*;

fn program(p: &mut Pit, ctrl: u8, count: u16, now: u64) {
    p.write(0x43, ctrl, now);
    let port = 0x40 + u16::from(ctrl >> 6);
    match (ctrl >> 4) & 3 {
        1 => p.write(port, count as u8, now),
        2 => p.write(port, (count >> 8) as u8, now),
        _ => {
            p.write(port, count as u8, now);
            p.write(port, (count >> 8) as u8, now);
        }
    }
}

fn read16(p: &mut Pit, port: u16, now: u64) -> u16 {
    let lo = p.read(port, now);
    let hi = p.read(port, now);
    u16::from_le_bytes([lo, hi])
}

#[test]
fn mode2_counts_down_and_latches() {
    let mut p = Pit::new();
    program(&mut p, 0x34, 11932, 0); // ~10 ms period
                                     // 1 ms = 1193 ticks.
    let v = read16(&mut p, 0x40, 1_000_000);
    assert!((10_735..=10_740).contains(&v), "{v}");
    // Latch at 2 ms, read later: the latched value.
    p.write(0x43, 0x00, 2_000_000);
    let v = read16(&mut p, 0x40, 5_000_000);
    assert!((9_540..=9_550).contains(&v), "{v}");
    // After wrapping a period it reloads.
    let v = read16(&mut p, 0x40, 11_000_000);
    assert!((10_735..=10_745).contains(&v), "{v}");
}

#[test]
fn mode2_irq_schedule_and_coalescing() {
    let mut p = Pit::new();
    program(&mut p, 0x34, 1193, 0); // 999.85 us
    let (fired, next) = p.poll(0);
    assert!(!fired);
    let t1 = next.unwrap();
    assert!((999_000..=1_000_000).contains(&t1), "{t1}");
    assert_eq!(p.poll(t1 - 1), (false, Some(t1)));
    let (fired, next) = p.poll(t1);
    assert!(fired);
    let t2 = next.unwrap();
    assert!((1_999_000..=2_000_000).contains(&t2), "{t2}");
    // A second late: one edge, and the next one in the future.
    let (fired, next) = p.poll(1_000_000_000);
    assert!(fired);
    let n = next.unwrap();
    assert!(n > 1_000_000_000 && n <= 1_001_000_000, "{n}");
    assert!(!p.poll(1_000_000_001).0);
}

#[test]
fn tiny_period_is_floored() {
    let mut p = Pit::new();
    program(&mut p, 0x34, 2, 0);
    let (_, next) = p.poll(0);
    let (fired, next2) = p.poll(next.unwrap());
    assert!(fired);
    assert!(next2.unwrap() >= next.unwrap() + MIN_IRQ_PERIOD_NS);
}

#[test]
fn mode0_one_shot_and_status() {
    let mut p = Pit::new();
    p.write(0x43, 0x30, 0); // ch0, lo/hi, mode 0
                            // Read-back status of channel 0 before a count: null count, out low.
    p.write(0x43, 0xe2, 0);
    assert_eq!(p.read(0x40, 0), 0x70);
    p.write(0x40, 0xe8, 0);
    p.write(0x40, 0x03, 0); // 1000 ticks = 838 us
    p.write(0x43, 0xe2, 0);
    assert_eq!(p.read(0x40, 0), 0x30, "out low, count loaded");
    let (_, next) = p.poll(0);
    let t = next.unwrap();
    assert!((838_000..=838_200).contains(&t), "{t}");
    assert!(p.poll(t).0);
    assert_eq!(p.poll(t + 10_000_000), (false, None));
    p.write(0x43, 0xe2, t);
    assert_eq!(
        p.read(0x40, t) & 0x80,
        0x80,
        "out high after terminal count"
    );
}

#[test]
fn mode4_strobe_one_shot() {
    let mut p = Pit::new();
    program(&mut p, 0x38, 100, 0);
    let (_, next) = p.poll(0);
    let t = next.unwrap();
    // Edge at count + 1 ticks.
    assert!((84_600..=84_700).contains(&t), "{t}");
    assert!(p.poll(t).0);
    assert_eq!(p.poll(t + 1_000_000).1, None);
}

#[test]
fn access_modes() {
    let mut p = Pit::new();
    // Low byte only.
    program(&mut p, 0x10 | 0x04, 0x50, 0);
    assert_eq!(p.read(0x40, 0), 0x50);
    // High byte only.
    program(&mut p, 0x20 | 0x04, 0x1200, 0);
    assert_eq!(p.read(0x40, 0), 0x12);
    // Read-back of a count latch with lo/hi.
    program(&mut p, 0x34, 0x1234, 0);
    p.write(0x43, 0xd2, 0); // latch count ch0
    assert_eq!(read16(&mut p, 0x40, 5_000_000), 0x1234);
}

#[test]
fn port61_gate_out_and_refresh() {
    let mut p = Pit::new();
    let a = p.read(0x61, 0);
    let b = p.read(0x61, 0);
    assert_ne!(a & 0x10, b & 0x10, "refresh toggles");
    // Channel 2, mode 0, gate on: out goes high after the count.
    p.write(0x61, 0x01, 0);
    program(&mut p, 0xb0, 1193, 0);
    assert_eq!(p.read(0x61, 500_000) & 0x21, 0x01);
    assert_eq!(p.read(0x61, 1_100_000) & 0x21, 0x21);
    p.write(0x61, 0x02, 0);
    assert_eq!(p.read(0x61, 0) & 0x03, 0x02);
}

#[test]
fn mode3_square_wave() {
    let mut p = Pit::new();
    program(&mut p, 0x36, 1000, 0);
    assert!(p.channels[0].out(100_000)); // 119 ticks
    assert!(!p.channels[0].out(600_000)); // 716 ticks
    let (_, next) = p.poll(0);
    assert!((838_000..=838_200).contains(&next.unwrap()));
}
