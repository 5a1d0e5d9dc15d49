//! Token buckets for I/O QoS, with the semantics of Firecracker's rate limiter.
//!
//! A [`TokenBucket`] holds up to `size` tokens and refills completely over `refill_time`; it
//! starts full, plus an optional `one_time_burst` that is spent first and never comes back. A
//! [`RateLimiter`] combines an optional bandwidth bucket (bytes) and an optional operations
//! bucket. When it refuses a request it arms its [`TimerFd`] for the moment enough tokens will be
//! there, so a device worker can park the request and add the timer to its epoll sources.
//!
//! A request larger than the whole bucket could never find enough tokens. It is let through
//! once the bucket is full and leaves the bucket in debt: what follows waits until the debt is
//! refilled, so the long-run rate is the configured one whatever the request sizes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vmm_sys_util::timerfd::TimerFd;

/// How often the per-second constructors refill: a bucket holds a tenth of a second's worth,
/// so a burst after idling adds at most 100 ms of traffic to any measurement window.
pub const DEFAULT_REFILL: Duration = Duration::from_millis(100);

/// Shortest timer the limiter arms: a zero duration would disarm a timerfd.
const MIN_WAIT: Duration = Duration::from_micros(100);

/// A source of monotonic time, faked in tests.
pub trait Clock: Send {
    /// Time since an arbitrary fixed origin; never goes backwards.
    fn now(&self) -> Duration;
}

/// The production clock: [`Instant`] (CLOCK_MONOTONIC, like the timerfd).
pub struct MonotonicClock {
    origin: Instant,
}

impl MonotonicClock {
    pub fn new() -> MonotonicClock {
        MonotonicClock {
            origin: Instant::now(),
        }
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Clone, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    pub fn new() -> FakeClock {
        FakeClock::default()
    }

    pub fn advance(&self, by: Duration) {
        let ns = u64::try_from(by.as_nanos()).unwrap_or(u64::MAX);
        self.0.fetch_add(ns, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Duration {
        Duration::from_nanos(self.0.load(Ordering::SeqCst))
    }
}

/// What a bucket counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenKind {
    Bytes,
    Ops,
}

/// A token bucket. Its level is kept in tokens × refill nanoseconds, so that refilling (elapsed
/// nanoseconds × size) is exact integer arithmetic and rounding never drifts the rate.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    size: u64,
    refill_ns: u64,
    one_time_burst: u64,
    burst_left: u64,
    /// Scaled tokens; negative while a request larger than the bucket is being paid back.
    level: i128,
    last_refill: Duration,
}

impl TokenBucket {
    /// `size` tokens refilled over `refill_time_ms`, plus a `one_time_burst` (Firecracker's
    /// configuration). `None` when `size` or `refill_time_ms` is 0: such a bucket limits nothing.
    pub fn new(size: u64, one_time_burst: u64, refill_time_ms: u64) -> Option<TokenBucket> {
        let refill = Duration::from_millis(refill_time_ms);
        TokenBucket::with_refill(size, one_time_burst, refill)
    }

    /// Like [`TokenBucket::new`] with the refill time at nanosecond precision.
    pub fn with_refill(size: u64, one_time_burst: u64, refill: Duration) -> Option<TokenBucket> {
        // Both below 2^63, so size × refill_ns (the capacity) fits an i128.
        let refill_ns = u64::try_from(refill.as_nanos()).ok()?.min(i64::MAX as u64);
        let size = size.min(i64::MAX as u64);
        if size == 0 || refill_ns == 0 {
            return None;
        }
        Some(TokenBucket {
            size,
            refill_ns,
            one_time_burst,
            burst_left: one_time_burst,
            level: i128::from(size) * i128::from(refill_ns),
            last_refill: Duration::ZERO,
        })
    }

    /// A bucket for `rate` tokens per second, refilled every [`DEFAULT_REFILL`]: it holds a
    /// tenth of `rate` (at least one token). `None` when `rate` is 0.
    pub fn per_second(rate: u64) -> Option<TokenBucket> {
        if rate == 0 {
            return None;
        }
        let per_s = 1_000_000_000u128 / DEFAULT_REFILL.as_nanos();
        let size = u64::try_from(u128::from(rate) / per_s)
            .unwrap_or(u64::MAX)
            .max(1);
        // The refill time that makes size tokens per refill exactly `rate` per second.
        let refill_ns = u128::from(size) * 1_000_000_000 / u128::from(rate);
        let refill = Duration::from_nanos(u64::try_from(refill_ns).unwrap_or(u64::MAX).max(1));
        TokenBucket::with_refill(size, 0, refill)
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn one_time_burst(&self) -> u64 {
        self.one_time_burst
    }

    pub fn refill_time(&self) -> Duration {
        Duration::from_nanos(self.refill_ns)
    }

    /// Whole tokens available now (burst included, debt counting as zero).
    pub fn available(&mut self, now: Duration) -> u64 {
        self.refill(now);
        let level = u64::try_from(self.level / i128::from(self.refill_ns)).unwrap_or(0);
        level.saturating_add(self.burst_left)
    }

    fn capacity(&self) -> i128 {
        i128::from(self.size) * i128::from(self.refill_ns)
    }

    fn scaled(&self, tokens: u64) -> i128 {
        i128::from(tokens).saturating_mul(i128::from(self.refill_ns))
    }

    fn refill(&mut self, now: Duration) {
        let Some(elapsed) = now.checked_sub(self.last_refill) else {
            return;
        };
        self.last_refill = now;
        let elapsed = i128::try_from(elapsed.as_nanos()).unwrap_or(i128::MAX);
        let added = elapsed.saturating_mul(i128::from(self.size));
        self.level = self.level.saturating_add(added).min(self.capacity());
    }

    /// How long until `tokens` can be taken: zero if now.
    pub fn wait_time(&mut self, tokens: u64, now: Duration) -> Duration {
        self.refill(now);
        let rest = tokens.saturating_sub(self.burst_left);
        if rest == 0 {
            return Duration::ZERO;
        }
        // More than the bucket holds is allowed once it is full (see the module comment).
        let needed = self.scaled(rest.min(self.size));
        if self.level >= needed {
            return Duration::ZERO;
        }
        let missing = needed.saturating_sub(self.level);
        let size = i128::from(self.size);
        let ns = missing.saturating_add(size - 1) / size;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// Takes `tokens` unconditionally (after [`TokenBucket::wait_time`] said zero), the
    /// one-time burst first.
    pub fn take(&mut self, tokens: u64) {
        let from_burst = tokens.min(self.burst_left);
        self.burst_left -= from_burst;
        let rest = self.scaled(tokens - from_burst);
        self.level = self.level.saturating_sub(rest);
    }

    /// Takes `tokens` if they are there; otherwise takes nothing and says how long to wait.
    pub fn try_take(&mut self, tokens: u64, now: Duration) -> Result<(), Duration> {
        match self.wait_time(tokens, now) {
            Duration::ZERO => {
                self.take(tokens);
                Ok(())
            }
            wait => Err(wait),
        }
    }

    /// Gives back `tokens` (taken for a request that was not carried out), up to a full bucket.
    pub fn give_back(&mut self, tokens: u64) {
        self.level = self
            .level
            .saturating_add(self.scaled(tokens))
            .min(self.capacity());
    }
}

/// A bandwidth and an operations bucket, either optional, and the timer that says when a refused
/// request may be retried.
pub struct RateLimiter {
    bandwidth: Option<TokenBucket>,
    ops: Option<TokenBucket>,
    timer: TimerFd,
    /// The timer is armed (or fired and not yet handled): everything is refused until then.
    blocked: bool,
    throttled: u64,
    clock: Box<dyn Clock>,
}

impl RateLimiter {
    /// A limiter over the real clock.
    pub fn new(bandwidth: Option<TokenBucket>, ops: Option<TokenBucket>) -> io::Result<Self> {
        RateLimiter::with_clock(bandwidth, ops, Box::new(MonotonicClock::new()))
    }

    /// What the command line's `bps=N` and `iops=N` ask for (see [`TokenBucket::per_second`]).
    pub fn from_rates(bps: Option<u64>, iops: Option<u64>) -> io::Result<Self> {
        RateLimiter::new(
            bps.and_then(TokenBucket::per_second),
            iops.and_then(TokenBucket::per_second),
        )
    }

    pub fn with_clock(
        bandwidth: Option<TokenBucket>,
        ops: Option<TokenBucket>,
        clock: Box<dyn Clock>,
    ) -> io::Result<Self> {
        let now = clock.now();
        let start = |mut b: TokenBucket| {
            b.last_refill = now;
            b
        };
        Ok(RateLimiter {
            bandwidth: bandwidth.map(start),
            ops: ops.map(start),
            timer: TimerFd::new()?,
            blocked: false,
            throttled: 0,
            clock,
        })
    }

    /// Neither bucket is configured: every request passes.
    pub fn is_unlimited(&self) -> bool {
        self.bandwidth.is_none() && self.ops.is_none()
    }

    fn bucket(&mut self, kind: TokenKind) -> Option<&mut TokenBucket> {
        match kind {
            TokenKind::Bytes => self.bandwidth.as_mut(),
            TokenKind::Ops => self.ops.as_mut(),
        }
    }

    /// Takes `tokens` of `kind`, or takes nothing, arms the timer for when they will be there,
    /// and returns `false`. While the timer is pending everything is refused.
    pub fn consume(&mut self, tokens: u64, kind: TokenKind) -> bool {
        self.consume_all(&[(tokens, kind)])
    }

    /// One operation and `bytes` bytes, all or nothing: what one block request costs.
    pub fn consume_request(&mut self, bytes: u64) -> bool {
        self.consume_all(&[(1, TokenKind::Ops), (bytes, TokenKind::Bytes)])
    }

    /// How long until `tokens` of `kind` are available (zero if now), without taking them.
    pub fn wait_time(&mut self, tokens: u64, kind: TokenKind) -> Duration {
        let now = self.clock.now();
        self.bucket(kind)
            .map_or(Duration::ZERO, |b| b.wait_time(tokens, now))
    }

    fn consume_all(&mut self, wants: &[(u64, TokenKind)]) -> bool {
        if self.blocked {
            return false;
        }
        let now = self.clock.now();
        let mut wait = Duration::ZERO;
        for &(tokens, kind) in wants {
            if let Some(b) = self.bucket(kind) {
                wait = wait.max(b.wait_time(tokens, now));
            }
        }
        if wait.is_zero() {
            for &(tokens, kind) in wants {
                if let Some(b) = self.bucket(kind) {
                    b.take(tokens);
                }
            }
            return true;
        }
        self.throttled += 1;
        match self.timer.reset(wait.max(MIN_WAIT), None) {
            Ok(()) => {
                self.blocked = true;
                false
            }
            Err(e) => {
                // Without a timer nothing would wake the device again: let the request
                // through rather than stall the disk.
                tracing::warn!("rate limiter: cannot arm its timer, not limiting: {e}");
                true
            }
        }
    }

    /// Gives back tokens taken for a request that was not carried out.
    pub fn give_back(&mut self, tokens: u64, kind: TokenKind) {
        if let Some(b) = self.bucket(kind) {
            b.give_back(tokens);
        }
    }

    /// Call when the timer fd is readable. Returns `true` when the limiter is open again (the
    /// device should retry its parked request), `false` for a spurious wake-up.
    pub fn on_timer(&mut self) -> bool {
        if !self.blocked {
            return false;
        }
        // Reading an armed timer would block: only read one that expired.
        match self.timer.is_armed() {
            Ok(false) => {}
            Ok(true) => return false,
            Err(e) => tracing::warn!("rate limiter: cannot read its timer: {e}"),
        }
        if let Err(e) = self.timer.wait() {
            tracing::warn!("rate limiter: cannot read its timer: {e}");
        }
        self.blocked = false;
        true
    }

    /// Requests are refused until the timer fires.
    pub fn is_blocked(&self) -> bool {
        self.blocked
    }

    /// How many times a request was refused and the timer armed.
    pub fn throttled(&self) -> u64 {
        self.throttled
    }

    pub fn bandwidth(&self) -> Option<&TokenBucket> {
        self.bandwidth.as_ref()
    }

    pub fn ops(&self) -> Option<&TokenBucket> {
        self.ops.as_ref()
    }
}

impl AsRawFd for RateLimiter {
    /// The timer: readable when a refused request may be retried.
    fn as_raw_fd(&self) -> RawFd {
        self.timer.as_raw_fd()
    }
}

#[cfg(test)]
mod tests;
