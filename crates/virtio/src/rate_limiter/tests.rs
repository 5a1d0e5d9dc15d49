use super::*;

const MS: Duration = Duration::from_millis(1);

fn limiter(bw: Option<TokenBucket>, ops: Option<TokenBucket>) -> (RateLimiter, FakeClock) {
    let clock = FakeClock::new();
    let l = RateLimiter::with_clock(bw, ops, Box::new(clock.clone())).unwrap();
    (l, clock)
}

#[test]
fn a_bucket_starts_full_and_refills_over_its_refill_time() {
    let mut b = TokenBucket::new(1000, 0, 100).unwrap();
    assert_eq!(b.available(Duration::ZERO), 1000);
    assert_eq!(b.try_take(1000, Duration::ZERO), Ok(()));
    // Empty: 500 tokens take half the refill time.
    assert_eq!(b.try_take(500, Duration::ZERO), Err(50 * MS));
    assert_eq!(b.available(25 * MS), 250);
    assert_eq!(b.try_take(500, 49 * MS), Err(MS));
    assert_eq!(b.try_take(500, 50 * MS), Ok(()));
    // Never more than the size, however long it idles.
    assert_eq!(b.available(Duration::from_secs(3600)), 1000);
}

#[test]
fn the_one_time_burst_is_spent_first_and_never_refilled() {
    let mut b = TokenBucket::new(100, 300, 1000).unwrap();
    assert_eq!(b.available(Duration::ZERO), 400);
    assert_eq!(b.try_take(350, Duration::ZERO), Ok(()));
    // 300 from the burst, 50 from the bucket.
    assert_eq!(b.available(Duration::ZERO), 50);
    assert_eq!(b.available(Duration::from_secs(10)), 100);
}

#[test]
fn a_failed_take_takes_nothing_not_even_the_burst() {
    let mut b = TokenBucket::new(100, 10, 1000).unwrap();
    b.take(100);
    assert_eq!(b.available(Duration::ZERO), 10);
    assert!(b.try_take(50, Duration::ZERO).is_err());
    assert_eq!(b.available(Duration::ZERO), 10);
}

#[test]
fn requests_larger_than_the_bucket_pass_when_full_and_leave_a_debt() {
    let mut b = TokenBucket::new(100, 0, 1000).unwrap();
    // 250 tokens: the bucket is full, so it passes, 150 tokens in debt.
    assert_eq!(b.try_take(250, Duration::ZERO), Ok(()));
    assert_eq!(b.available(Duration::ZERO), 0);
    // The next one waits for the debt (1.5 s) and its own 10 tokens (0.1 s).
    assert_eq!(b.try_take(10, Duration::ZERO), Err(1600 * MS));
    // Another oversized request waits for a full bucket again: 1.5 s + 1 s.
    assert_eq!(b.wait_time(1000, Duration::ZERO), 2500 * MS);
    assert_eq!(b.try_take(1000, 2500 * MS), Ok(()));
}

#[test]
fn zero_size_or_refill_limits_nothing() {
    assert!(TokenBucket::new(0, 10, 100).is_none());
    assert!(TokenBucket::new(10, 10, 0).is_none());
    assert!(TokenBucket::per_second(0).is_none());
    let (mut l, _) = limiter(None, None);
    assert!(l.is_unlimited());
    for _ in 0..1000 {
        assert!(l.consume_request(1 << 30));
    }
    assert_eq!(l.throttled(), 0);
}

#[test]
fn per_second_buckets_hold_a_tenth_of_a_second() {
    let b = TokenBucket::per_second(10_000_000).unwrap();
    assert_eq!((b.size(), b.refill_time()), (1_000_000, 100 * MS));
    // Slow rates still hold a whole token, refilled at the configured rate.
    let b = TokenBucket::per_second(5).unwrap();
    assert_eq!((b.size(), b.refill_time()), (1, 200 * MS));
    let b = TokenBucket::per_second(3).unwrap();
    assert_eq!(b.size(), 1);
    assert_eq!(b.refill_time(), Duration::from_nanos(333_333_333));
}

/// Drives a bucket as a greedy device would and returns the tokens it got in `secs` seconds.
fn greedy(mut b: TokenBucket, request: u64, secs: u64) -> u64 {
    let end = Duration::from_secs(secs);
    let (mut now, mut got) = (Duration::ZERO, 0u64);
    loop {
        match b.try_take(request, now) {
            Ok(()) => got += request,
            Err(wait) => now += wait,
        }
        if now > end {
            return got;
        }
    }
}

#[test]
fn a_greedy_user_gets_the_configured_rate() {
    let rate = 3_000_000;
    // Small, awkward and oversized requests all converge to the rate (plus the initial
    // bucket, a tenth of a second).
    for request in [4096, 65_537, 1 << 20] {
        let got = greedy(TokenBucket::per_second(rate).unwrap(), request, 10);
        let expected = rate * 10 + rate / 10;
        let err = got.abs_diff(expected) as f64 / expected as f64;
        assert!(
            err < 0.02,
            "request {request}: got {got}, expected {expected}"
        );
    }
}

#[test]
fn a_request_is_all_or_nothing_across_both_buckets() {
    let (mut l, clock) = limiter(
        TokenBucket::new(1000, 0, 1000),
        TokenBucket::new(10, 0, 1000),
    );
    assert!(l.consume_request(900));
    // Ops would pass, bytes would not: neither is taken.
    assert!(!l.consume_request(900));
    assert!(l.is_blocked());
    assert_eq!(l.throttled(), 1);
    assert_eq!(l.ops().map(|b| b.clone().available(clock.now())), Some(9));
    // While blocked even a free request waits for the timer.
    assert!(!l.consume(1, TokenKind::Ops));
    assert_eq!(l.throttled(), 1);
}

#[test]
fn the_wait_is_the_longest_of_the_two_buckets() {
    let (mut l, _) = limiter(TokenBucket::new(1000, 0, 1000), TokenBucket::new(1, 0, 100));
    assert!(l.consume(1000, TokenKind::Bytes));
    assert!(l.consume(1, TokenKind::Ops));
    assert_eq!(l.wait_time(500, TokenKind::Bytes), 500 * MS);
    assert_eq!(l.wait_time(1, TokenKind::Ops), 100 * MS);
}

#[test]
fn give_back_refunds_up_to_a_full_bucket() {
    let (mut l, clock) = limiter(None, TokenBucket::new(10, 0, 1000));
    assert!(l.consume(10, TokenKind::Ops));
    l.give_back(4, TokenKind::Ops);
    assert_eq!(l.ops().map(|b| b.clone().available(clock.now())), Some(4));
    l.give_back(100, TokenKind::Ops);
    assert_eq!(l.ops().map(|b| b.clone().available(clock.now())), Some(10));
}

#[test]
fn the_timer_fires_when_the_tokens_are_there() {
    // 1000 bytes per 10 ms.
    let (mut l, clock) = limiter(TokenBucket::new(1000, 0, 10), None);
    assert!(l.consume(1000, TokenKind::Bytes));
    // An unarmed timer is not a wake-up.
    assert!(!l.on_timer());
    assert!(!l.consume(500, TokenKind::Bytes));
    // Still armed (5 ms): a spurious wake-up does not unblock.
    assert!(!l.on_timer());
    assert!(l.is_blocked());

    let mut fds = [libc::pollfd {
        fd: l.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    }];
    // SAFETY: `fds` is a valid array of one pollfd that outlives the call.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), 1, 5000) };
    assert_eq!(n, 1, "the timer never fired");
    assert!(l.on_timer());
    assert!(!l.is_blocked());
    clock.advance(5 * MS);
    assert!(l.consume(500, TokenKind::Bytes));
}
