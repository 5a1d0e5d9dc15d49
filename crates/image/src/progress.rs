//! Human-facing progress lines on stderr (`[2/5] downloading ...`).
//!
//! Progress goes to stderr, not tracing: it is meant for the person running
//! `vireo image build` regardless of log filters; tracing carries the debug
//! detail.

pub(crate) struct Progress {
    step: usize,
    total: usize,
}

impl Progress {
    pub(crate) fn new(total: usize) -> Self {
        Self { step: 0, total }
    }

    /// Starts the next numbered step.
    pub(crate) fn step(&mut self, msg: impl std::fmt::Display) {
        self.step = (self.step + 1).min(self.total);
        eprintln!("[{}/{}] {msg}", self.step, self.total);
    }

    /// An indented detail line under the current step.
    pub(crate) fn note(&self, msg: impl std::fmt::Display) {
        eprintln!("      {msg}");
    }
}

/// Formats a byte count for humans, e.g. `26.7 MB`.
pub(crate) fn size(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["B", "kB", "MB", "GB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_are_readable() {
        assert_eq!(super::size(512), "512 B");
        assert_eq!(super::size(26_714_428), "26.7 MB");
        assert_eq!(super::size(928_188), "928.2 kB");
    }
}
