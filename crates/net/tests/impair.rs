//! Impairment (tc netem's model) measured by real stacks: `busybox ping` between two
//! namespaces behind tap ports, one port delayed, jittered or lossy. Needs root, iproute2,
//! busybox-static.

mod common;

use common::*;
use vireo_net::datapath::{Datapath, QosConfig};
use vireo_net::NetError;

/// What `busybox ping -q` summarized: (sent, received, min, avg, max RTT in ms).
#[derive(Debug)]
struct Pings {
    sent: u32,
    received: u32,
    min: f64,
    avg: f64,
    max: f64,
}

fn ping(from: &Ns, to: &str, count: u32, interval: &str) -> Pings {
    let o = from.exec(&[
        "busybox",
        "ping",
        "-q",
        "-c",
        &count.to_string(),
        "-i",
        interval,
        "-W",
        "2",
        to,
    ]);
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let num = |s: &str| s.trim().parse::<f64>().unwrap_or(f64::NAN);
    let mut p = Pings {
        sent: 0,
        received: 0,
        min: f64::NAN,
        avg: f64::NAN,
        max: f64::NAN,
    };
    for line in text.lines() {
        if line.contains("packets transmitted") {
            let words: Vec<&str> = line.split_whitespace().collect();
            p.sent = words.first().and_then(|w| w.parse().ok()).unwrap_or(0);
            p.received = words.get(3).and_then(|w| w.parse().ok()).unwrap_or(0);
        }
        if let Some(rtt) = line.strip_prefix("round-trip min/avg/max = ") {
            let v: Vec<f64> = rtt.trim_end_matches(" ms").split('/').map(num).collect();
            if let [min, avg, max] = v[..] {
                (p.min, p.avg, p.max) = (min, avg, max);
            }
        }
    }
    assert!(p.sent > 0, "no ping summary: {text}");
    p
}

/// Two namespaces on one network, their neighbours pinned so that lost ARP does not blur
/// the figures: (datapath, ns1, ns2). Port `i1` (ns1's) is the one impaired.
fn pair(tag: &str) -> (std::sync::Arc<Datapath>, Ns, Ns) {
    let dp = Datapath::new();
    dp.add_network("imp", None, Default::default()).unwrap();
    let (t1, t2) = (format!("nim{tag}1"), format!("nim{tag}2"));
    port(&dp, "i1", "imp", &t1, untagged());
    port(&dp, "i2", "imp", &t2, untagged());
    let (n1, n2) = (Ns::new(&format!("im{tag}1")), Ns::new(&format!("im{tag}2")));
    n1.attach(&t1, Some("10.207.0.1/24"));
    n2.attach(&t2, Some("10.207.0.2/24"));
    let (m1, m2) = (n1.mac(&t1), n2.mac(&t2));
    ok(&[
        "ip",
        "-n",
        &n1.0,
        "neigh",
        "replace",
        "10.207.0.2",
        "lladdr",
        &m2,
        "dev",
        &t1,
        "nud",
        "permanent",
    ]);
    ok(&[
        "ip",
        "-n",
        &n2.0,
        "neigh",
        "replace",
        "10.207.0.1",
        "lladdr",
        &m1,
        "dev",
        &t2,
        "nud",
        "permanent",
    ]);
    let warm = ping(&n1, "10.207.0.2", 3, "0.1");
    assert_eq!(warm.received, 3, "{warm:?}");
    (dp, n1, n2)
}

fn qos(delay: Option<u64>, jitter: Option<u64>, loss: Option<f64>) -> QosConfig {
    QosConfig {
        delay,
        jitter,
        loss,
        ..QosConfig::default()
    }
}

#[test]
fn delay_adds_to_the_round_trip_and_removing_it_restores() {
    let (dp, n1, _n2) = pair("d");
    let before = ping(&n1, "10.207.0.2", 10, "0.05");
    assert_eq!(before.received, 10, "{before:?}");
    assert!(before.max < 50.0, "unimpaired: {before:?}");
    // Counted from here: while the namespaces came up, a frame flooded to a tap whose link
    // was not up yet may have been refused (seen once in CI).
    let drops = dp.port_stats("i1").unwrap().drops;

    dp.set_qos("i1", &qos(Some(50), None, None)).unwrap();
    let delayed = ping(&n1, "10.207.0.2", 10, "0.05");
    println!("unimpaired {before:?}, delayed by 50 ms {delayed:?}");
    assert_eq!(delayed.received, 10, "{delayed:?}");
    assert!(delayed.min >= 50.0, "{delayed:?}");
    assert!(delayed.max < 150.0, "{delayed:?}");
    // The other direction is not delayed: only frames entering the switch from i1 are.
    let from_2 = ping(&_n2, "10.207.0.1", 10, "0.05");
    assert!(from_2.min >= 50.0, "the reply still crosses i1: {from_2:?}");

    dp.set_qos("i1", &QosConfig::default()).unwrap();
    let after = ping(&n1, "10.207.0.2", 10, "0.05");
    assert_eq!(after.received, 10, "{after:?}");
    assert!(after.max < 50.0, "restored: {after:?}");
    assert_eq!(
        dp.port_stats("i1").unwrap().drops,
        drops,
        "the delay line lost frames"
    );
}

#[test]
fn jitter_spreads_the_delay_within_its_bounds() {
    let (dp, n1, _n2) = pair("j");
    dp.set_qos("i1", &qos(Some(60), Some(30), None)).unwrap();
    let p = ping(&n1, "10.207.0.2", 40, "0.05");
    println!("delay 60 ms, jitter 30 ms: {p:?}");
    assert_eq!(p.received, 40, "{p:?}");
    // Released at arrival + 60 ms ± 30 ms (never before the frame ahead: a frame may wait
    // a little longer than its draw, never less).
    assert!(p.min >= 30.0, "{p:?}");
    assert!(p.max < 30.0 + 60.0 + 30.0 + 40.0, "{p:?}");
    assert!(p.max - p.min > 10.0, "the delay varies: {p:?}");
}

#[test]
fn loss_drops_the_given_share_and_counts_it() {
    let (dp, n1, _n2) = pair("l");
    dp.set_qos("i1", &qos(None, None, Some(30.0))).unwrap();
    let p = ping(&n1, "10.207.0.2", 200, "0.01");
    let lost = f64::from(p.sent - p.received) / f64::from(p.sent);
    println!("loss 30%: {p:?}, lost {:.1}%", lost * 100.0);
    // 200 draws at 30%: a standard deviation of 3.2 points; ±12 points is over 3.5 of them.
    assert!((0.18..=0.42).contains(&lost), "{p:?}");
    let drops = dp.port_stats("i1").unwrap().drops;
    assert!(
        drops >= u64::from(p.sent - p.received),
        "every lost ping is a counted drop: {drops} < {}",
        p.sent - p.received
    );

    dp.set_qos("i1", &QosConfig::default()).unwrap();
    let after = ping(&n1, "10.207.0.2", 50, "0.01");
    assert_eq!(after.received, 50, "restored: {after:?}");
}

#[test]
fn bad_impairments_are_refused_and_change_nothing() {
    let (dp, n1, _n2) = pair("b");
    dp.set_qos("i1", &qos(Some(20), None, None)).unwrap();
    for (bad, what) in [
        (qos(None, None, Some(101.0)), "loss"),
        (qos(None, None, Some(-1.0)), "loss"),
        (qos(Some(60_001), None, None), "delay"),
        (qos(None, Some(10), None), "jitter"),
    ] {
        match dp.set_qos("i1", &bad) {
            Err(NetError::Invalid(m)) => assert!(m.contains(what), "{m}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // The 20 ms delay set before is still there.
    let p = ping(&n1, "10.207.0.2", 5, "0.05");
    assert!(p.min >= 20.0, "{p:?}");
}
