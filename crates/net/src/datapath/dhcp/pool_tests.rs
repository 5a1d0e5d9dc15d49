use super::*;

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 0, last)
}

/// 10.0.0.1 .. 10.0.0.4 with the gateway .1 excluded: three addresses.
fn pool() -> Pool {
    Pool::new(ip(1), ip(4), vec![ip(1)])
}

#[test]
fn offers_then_grants_distinct_addresses_and_never_the_gateway() {
    let mut p = pool();
    let a = p.offer("a", None, 100).unwrap();
    let b = p.offer("b", None, 100).unwrap();
    assert_eq!((a, b), (ip(2), ip(3)));
    // A repeated DISCOVER gets the same offer.
    assert_eq!(p.offer("a", None, 101), Some(a));
    p.grant("a", "m", None, a, 102, 3600).unwrap();
    assert_eq!(p.grant("c", "m", None, b, 102, 3600), Err(Refused::Taken));
    assert_eq!(
        p.grant("c", "m", None, ip(1), 102, 3600),
        Err(Refused::NotInRange)
    );
    assert_eq!(
        p.grant("c", "m", None, ip(9), 102, 3600),
        Err(Refused::NotInRange)
    );
    assert_eq!(p.offer("c", None, 102), Some(ip(4)));
    // Exhausted: no offer while a, b, c hold everything.
    assert_eq!(p.offer("d", None, 103), None);
    // b's offer lapses: d gets it.
    assert_eq!(p.offer("d", None, 100 + OFFER_SECS + 1), Some(b));
}

#[test]
fn a_client_keeps_its_address_across_renewal_release_and_restore() {
    let mut p = pool();
    let a = p.offer("a", Some(ip(3)), 0).unwrap();
    assert_eq!(a, ip(3), "the requested address, being free");
    p.grant("a", "m", Some("h".into()), a, 0, 100).unwrap();
    p.grant("a", "m", None, a, 50, 100).unwrap();
    assert_eq!(p.leases()[0].expires, 150);
    assert!(p.release("a", a, 60));
    assert!(!p.release("a", a, 61), "already released");
    // Released: history keeps it for a; others get never-used addresses first.
    assert_eq!(p.offer("b", None, 70), Some(ip(2)));
    assert_eq!(p.offer("a", None, 70), Some(a));
    let saved = p.leases();
    let mut q = pool();
    q.restore(saved);
    assert_eq!(q.offer("a", None, 80), Some(a));
    // Expired history is reclaimed when nothing else is left.
    let mut r = pool();
    r.restore(p.leases());
    r.grant("x", "m", None, ip(2), 80, 100).unwrap();
    r.grant("y", "m", None, ip(4), 80, 100).unwrap();
    assert_eq!(r.offer("z", None, 81), Some(a));
}

#[test]
fn declined_addresses_rest_and_a_flood_of_discovers_is_bounded() {
    let mut p = pool();
    let a = p.offer("a", None, 0).unwrap();
    p.grant("a", "m", None, a, 0, 100).unwrap();
    assert!(!p.decline("b", a, 1), "not b's to decline");
    assert!(p.decline("a", a, 1));
    assert_eq!(p.offer("a", None, 2), Some(ip(3)));
    assert_eq!(p.grant("z", "m", None, a, 2, 100), Err(Refused::Taken));
    assert!(p.grant("z", "m", None, a, 2 + DECLINE_SECS, 100).is_ok());

    let mut big = Pool::new(
        Ipv4Addr::new(10, 0, 0, 0),
        Ipv4Addr::new(10, 255, 255, 255),
        vec![],
    );
    for i in 0..10_000 {
        big.offer(&format!("mac:{i}"), None, 5);
    }
    assert_eq!(big.offers(), MAX_OFFERS);
    assert!(big.leases().is_empty(), "offers are not leases");
    // They lapse, and new clients are served again.
    assert!(big.offer("late", None, 5 + OFFER_SECS).is_some());
    assert_eq!(big.offers(), 1);
}
