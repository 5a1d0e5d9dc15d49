//! The flow log: one JSON line per connection the firewall accepted (when it is created)
//! and per denied first packet, kept in memory (the most recent [`RING`]) and appended to
//! STATE_DIR/flows.jsonl, rotated to flows.jsonl.1 at a size limit.
//!
//! Port threads never touch the file: they hand records to a writer thread over a bounded
//! channel. A flood cannot fill the disk or the channel: at most [`ALLOW_PER_SEC`] accepted
//! and [`DENY_PER_SEC`] denied lines a second are logged, the rest only counted
//! ([`FlowLog::suppressed`]).

use super::rules::{Action, Direction};
use crate::datapath::packet::proto_name;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Mutex, OnceLock};
use std::time::{SystemTime, UNIX_EPOCH};

pub const FILE: &str = "flows.jsonl";
/// Where the file goes when rotated: 16 MiB.
pub const MAX_BYTES: u64 = 16 << 20;
/// Records kept in memory for `GET /api/v1/flows`.
pub const RING: usize = 1024;
pub const ALLOW_PER_SEC: u64 = 1000;
pub const DENY_PER_SEC: u64 = 100;
const CHANNEL: usize = 4096;

/// One logged connection or denied packet.
#[derive(Debug, Clone, PartialEq)]
pub struct FlowRecord {
    pub ts: SystemTime,
    pub action: Action,
    pub proto: u8,
    pub src: Ipv4Addr,
    pub sport: u16,
    pub dst: Ipv4Addr,
    pub dport: u16,
    pub network: String,
    /// Port names; `None`: the network's endpoint (router, load balancer, DHCP).
    pub from: Option<String>,
    pub to: Option<String>,
    /// The side that decided: its port and direction, and the rule (`None`: the default
    /// policy, or no rule anywhere).
    pub port: Option<String>,
    pub direction: Option<Direction>,
    pub rule: Option<u64>,
}

impl FlowRecord {
    pub fn json(&self) -> Value {
        json!({
            "ts": rfc3339(self.ts),
            "action": self.action,
            "proto": proto_name(self.proto),
            "src": self.src.to_string(), "sport": self.sport,
            "dst": self.dst.to_string(), "dport": self.dport,
            "network": self.network, "from": self.from, "to": self.to,
            "port": self.port, "direction": self.direction, "rule": self.rule,
        })
    }
}

/// At most `max` events a second (a window per second: cheap, two atomics).
struct Limiter {
    max: u64,
    window: AtomicU64,
    count: AtomicU64,
}

impl Limiter {
    fn new(max: u64) -> Limiter {
        Limiter {
            max,
            window: AtomicU64::new(u64::MAX),
            count: AtomicU64::new(0),
        }
    }

    fn admit(&self, sec: u64) -> bool {
        if self.window.swap(sec, Relaxed) != sec {
            self.count.store(0, Relaxed);
        }
        self.count.fetch_add(1, Relaxed) < self.max
    }
}

pub struct FlowLog {
    ring: Mutex<VecDeque<FlowRecord>>,
    tx: OnceLock<SyncSender<FlowRecord>>,
    allow: Limiter,
    deny: Limiter,
    suppressed: AtomicU64,
}

impl Default for FlowLog {
    fn default() -> Self {
        FlowLog {
            ring: Mutex::new(VecDeque::with_capacity(RING)),
            tx: OnceLock::new(),
            allow: Limiter::new(ALLOW_PER_SEC),
            deny: Limiter::new(DENY_PER_SEC),
            suppressed: AtomicU64::new(0),
        }
    }
}

impl FlowLog {
    /// Whether a record of this kind may be logged now; counts it as suppressed if not.
    pub fn admit(&self, action: Action, sec: u64) -> bool {
        let ok = match action {
            Action::Allow => self.allow.admit(sec),
            Action::Deny => self.deny.admit(sec),
        };
        if !ok {
            self.suppressed.fetch_add(1, Relaxed);
        }
        ok
    }

    /// Lines not logged: over the rate, or the writer fell behind.
    pub fn suppressed(&self) -> u64 {
        self.suppressed.load(Relaxed)
    }

    pub fn push(&self, rec: FlowRecord) {
        if let Some(tx) = self.tx.get() {
            match tx.try_send(rec.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.suppressed.fetch_add(1, Relaxed);
                }
            }
        }
        let mut r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= RING {
            r.pop_front();
        }
        r.push_back(rec);
    }

    /// The most recent records, oldest first, at most `limit`.
    pub fn recent(&self, limit: usize) -> Vec<FlowRecord> {
        let r = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        r.iter()
            .skip(r.len().saturating_sub(limit))
            .cloned()
            .collect()
    }

    /// Starts appending to `dir`/flows.jsonl (once; later calls fail).
    pub fn start(&self, dir: &Path, max_bytes: u64) -> std::io::Result<()> {
        let path = dir.join(FILE);
        let file = open(&path)?;
        let (tx, rx) = sync_channel(CHANNEL);
        if self.tx.set(tx).is_err() {
            return Err(std::io::Error::other(
                "the flow log is already being written",
            ));
        }
        std::thread::Builder::new()
            .name("net-flowlog".into())
            .spawn(move || write_loop(rx, path, file, max_bytes))?;
        Ok(())
    }
}

fn open(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
}

/// Writes what comes until the datapath (the sender) goes away.
fn write_loop(rx: Receiver<FlowRecord>, path: PathBuf, file: std::fs::File, max: u64) {
    let mut size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut out = std::io::BufWriter::new(file);
    let mut failed = false;
    while let Ok(first) = rx.recv() {
        for rec in std::iter::once(first).chain(rx.try_iter()) {
            let mut line = rec.json().to_string();
            line.push('\n');
            if size > 0 && size + line.len() as u64 > max {
                let _ = out.flush();
                let rotated = path.with_extension("jsonl.1");
                match std::fs::rename(&path, &rotated).and_then(|()| open(&path)) {
                    Ok(f) => {
                        out = std::io::BufWriter::new(f);
                        size = 0;
                    }
                    Err(e) => tracing::warn!("rotating {}: {e}", path.display()),
                }
            }
            match out.write_all(line.as_bytes()) {
                Ok(()) => {
                    size += line.len() as u64;
                    failed = false;
                }
                Err(e) if !failed => {
                    tracing::warn!("writing {}: {e}", path.display());
                    failed = true;
                }
                Err(_) => {}
            }
        }
        let _ = out.flush();
    }
}

/// `2026-11-24T15:10:31.123Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let (days, rem) = (secs / 86400, secs % 86400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn rec(dport: u16) -> FlowRecord {
        FlowRecord {
            ts: UNIX_EPOCH + Duration::from_millis(1_795_964_431_123),
            action: Action::Deny,
            proto: 6,
            src: Ipv4Addr::new(10, 200, 0, 1),
            sport: 4000,
            dst: Ipv4Addr::new(10, 200, 0, 2),
            dport,
            network: "blue".into(),
            from: Some("a".into()),
            to: None,
            port: Some("a".into()),
            direction: Some(Direction::Out),
            rule: Some(3),
        }
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        assert_eq!(rec(1).json()["ts"], "2026-11-29T15:00:31.123Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000Z");
    }

    #[test]
    fn record_fields() {
        let j = rec(22).json();
        assert_eq!(j["action"], "deny");
        assert_eq!(j["proto"], "tcp");
        assert_eq!(j["dport"], 22);
        assert_eq!(j["direction"], "out");
        assert_eq!(j["rule"], 3);
        assert!(j["to"].is_null());
    }

    #[test]
    fn rate_limit_counts_what_it_suppresses() {
        let log = FlowLog::default();
        let admitted = (0..DENY_PER_SEC + 5)
            .filter(|_| log.admit(Action::Deny, 7))
            .count() as u64;
        assert_eq!(admitted, DENY_PER_SEC);
        assert_eq!(log.suppressed(), 5);
        assert!(log.admit(Action::Deny, 8), "a new second");
        assert!(
            log.admit(Action::Allow, 7),
            "allow lines have their own budget"
        );
    }

    #[test]
    fn ring_file_and_rotation() {
        let dir = std::env::temp_dir().join(format!("vireo-flowlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let log = FlowLog::default();
        let line = rec(1000).json().to_string().len() as u64 + 1;
        log.start(&dir, line * 3).unwrap();
        assert!(log.start(&dir, 1).is_err());
        for p in 1..=(RING as u16 + 4) {
            log.push(rec(p));
        }
        let recent = log.recent(2);
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[1].dport, RING as u16 + 4);
        assert_eq!(log.recent(usize::MAX).len(), RING);
        let path = dir.join(FILE);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let last = format!("\"dport\":{}", RING + 4);
        while !std::fs::read_to_string(&path)
            .unwrap_or_default()
            .contains(&last)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the writer never wrote"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let cur = std::fs::read_to_string(&path).unwrap();
        let old = std::fs::read_to_string(dir.join("flows.jsonl.1")).unwrap();
        assert!(cur.lines().count() <= 3 && old.lines().count() == 3);
        for l in cur.lines().chain(old.lines()) {
            let v: Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["network"], "blue");
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
