//! Impairment for testing, after tc netem's model: frames entering the switch from a port
//! are lost with a probability, or held back by a delay with jitter.
//!
//! Unlike netem, jitter never reorders: a frame is released at its arrival plus the delay
//! plus a uniform offset in ±jitter, but never before the frame ahead of it. Held frames
//! wait in a bounded queue (then they are dropped, counted), released by the port's delay
//! line, a thread started the first time the port gets a delay. A port without impairment
//! pays one relaxed load per frame.

use super::port::Port;
use super::switch::Switch;
use super::QosConfig;
use crate::error::{NetError, Result};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Frames held at most per port...
pub const MAX_HELD_FRAMES: usize = 10_000;
/// ...and bytes (a 64 KiB TSO frame counts whole).
pub const MAX_HELD_BYTES: usize = 64 << 20;

/// The longest delay or jitter accepted, in milliseconds.
pub const MAX_DELAY_MS: u64 = 60_000;

/// The impairment `qos` asks for on `port` (named in errors unless empty), checked.
pub fn from_qos(port: &str, qos: &QosConfig) -> Result<Impairment> {
    let port = if port.is_empty() {
        String::new()
    } else {
        format!("port {port:?}: ")
    };
    let ms = |what: &str, v: Option<u64>| match v.unwrap_or(0) {
        v if v <= MAX_DELAY_MS => Ok(Duration::from_millis(v)),
        v => Err(NetError::Invalid(format!(
            "{port}{what} {v} ms is too long; use 0 to {MAX_DELAY_MS} ms"
        ))),
    };
    let delay = ms("delay", qos.delay)?;
    let jitter = ms("jitter", qos.jitter)?;
    if !jitter.is_zero() && delay.is_zero() {
        return Err(NetError::Invalid(format!(
            "{port}a jitter varies a delay: give --delay too"
        )));
    }
    let loss = qos.loss.unwrap_or(0.0);
    if !(0.0..=100.0).contains(&loss) {
        return Err(NetError::Invalid(format!(
            "{port}loss {loss}% is out of range; use 0 to 100"
        )));
    }
    Ok(Impairment {
        delay,
        jitter,
        loss: loss / 100.0,
    })
}

/// What a port's ingress suffers.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Impairment {
    pub delay: Duration,
    pub jitter: Duration,
    /// Probability of a loss, 0 to 1.
    pub loss: f64,
}

impl Impairment {
    pub fn is_none(&self) -> bool {
        self.delay.is_zero() && self.jitter.is_zero() && self.loss <= 0.0
    }
}

pub struct Impair {
    /// Whether an impairment is set: the per-frame fast path.
    active: AtomicBool,
    state: Mutex<State>,
    /// Wakes the delay line: a frame queued, or the port stopping.
    wake: Condvar,
    thread: Mutex<Option<JoinHandle<()>>>,
}

struct State {
    cfg: Impairment,
    held: VecDeque<(Instant, Vec<u8>)>,
    held_bytes: usize,
    /// The release time of the last frame queued: no frame goes before it.
    last: Option<Instant>,
    rng: u64,
    stopping: bool,
}

impl Impair {
    /// `seed` makes two ports' random draws differ.
    pub fn new(seed: u32) -> Impair {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Impair {
            active: AtomicBool::new(false),
            state: Mutex::new(State {
                cfg: Impairment::default(),
                held: VecDeque::new(),
                held_bytes: 0,
                last: None,
                // Never zero: xorshift would stay there.
                rng: (now ^ (u64::from(seed) << 32)) | 1,
                stopping: false,
            }),
            wake: Condvar::new(),
            thread: Mutex::new(None),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn active(&self) -> bool {
        self.active.load(Relaxed)
    }

    /// Sets (or with a none impairment, clears) the port's impairment. Frames already held
    /// are still released at their time.
    pub fn set(&self, cfg: Impairment) {
        let mut s = self.lock();
        s.cfg = cfg;
        self.active.store(!cfg.is_none(), Relaxed);
    }

    /// Starts the port's delay line if it has none yet.
    pub fn ensure_thread(port: &Arc<Port>, switch: &Arc<Switch>) -> std::io::Result<()> {
        let mut t = port.impair.thread.lock().unwrap_or_else(|e| e.into_inner());
        if t.is_some() {
            return Ok(());
        }
        let (p, sw) = (port.clone(), switch.clone());
        *t = Some(
            std::thread::Builder::new()
                .name(format!("delay-{}", port.config.name))
                .spawn(move || delay_line(&p, &sw))?,
        );
        Ok(())
    }

    /// Takes the frame if the impairment decides its fate: lost (counted as a drop) or
    /// held for later. False: forward it now.
    pub fn hold(&self, port: &Port, packet: &[u8]) -> bool {
        let mut s = self.lock();
        let cfg = s.cfg;
        if cfg.loss > 0.0 && s.uniform() < cfg.loss {
            drop(s);
            port.drop_frame("impairment: lost");
            return true;
        }
        if cfg.delay.is_zero() && cfg.jitter.is_zero() {
            return false;
        }
        if s.held.len() >= MAX_HELD_FRAMES || s.held_bytes + packet.len() > MAX_HELD_BYTES {
            drop(s);
            port.drop_frame("impairment: delay queue full");
            return true;
        }
        let now = Instant::now();
        let mut at = now + cfg.delay;
        if !cfg.jitter.is_zero() {
            // Uniform in [-jitter, +jitter], not before the arrival.
            let span = cfg.jitter.as_secs_f64() * (2.0 * s.uniform() - 1.0);
            at = if span >= 0.0 {
                at + Duration::from_secs_f64(span)
            } else {
                at.checked_sub(Duration::from_secs_f64(-span))
                    .unwrap_or(now)
                    .max(now)
            };
        }
        if let Some(last) = s.last {
            at = at.max(last);
        }
        s.last = Some(at);
        s.held_bytes += packet.len();
        s.held.push_back((at, packet.to_vec()));
        drop(s);
        self.wake.notify_one();
        true
    }

    /// Ends the delay line (the held frames are dropped with the port).
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_all();
    }

    /// Waits for the delay line to end, after [`Impair::stop`].
    pub fn join(&self) {
        let t = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = t {
            if t.join().is_err() {
                tracing::error!("a delay line panicked");
            }
        }
    }
}

impl State {
    /// A uniform draw in [0, 1) (xorshift64*: statistics, not secrets).
    fn uniform(&mut self) -> f64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Releases held frames into the switch at their time, until the port stops.
fn delay_line(port: &Port, switch: &Switch) {
    let imp = &port.impair;
    let mut s = imp.lock();
    loop {
        if s.stopping {
            return;
        }
        let now = Instant::now();
        match s.held.front().map(|(at, _)| *at) {
            None => s = imp.wake.wait(s).unwrap_or_else(|e| e.into_inner()),
            Some(at) if at > now => {
                s = imp
                    .wake
                    .wait_timeout(s, at - now)
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
            Some(_) => {
                let Some((_, mut frame)) = s.held.pop_front() else {
                    continue;
                };
                s.held_bytes = s.held_bytes.saturating_sub(frame.len());
                drop(s);
                switch.forward(port, &mut frame);
                s = imp.lock();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draws_cover_the_unit_interval_evenly() {
        let imp = Impair::new(7);
        let mut s = imp.lock();
        let n = 100_000;
        let mut below = 0;
        for _ in 0..n {
            let u = s.uniform();
            assert!((0.0..1.0).contains(&u));
            if u < 0.3 {
                below += 1;
            }
        }
        let share = f64::from(below) / f64::from(n);
        assert!((0.29..0.31).contains(&share), "{share}");
    }
}
