//! Drives `qemu-system-x86_64 -nographic` over pipes: the guest's serial
//! console is QEMU's stdio, multiplexed with the monitor (Ctrl-A c).
//!
//! Every wait has a deadline and the QEMU process is killed on drop, so a
//! failing or hanging guest can never hang the test run.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vireo_image::GuestImage;

pub struct Qemu {
    child: Child,
    stdin: ChildStdin,
    output: Arc<Mutex<Vec<u8>>>,
    reader: Option<JoinHandle<()>>,
    /// Where the next `wait_for` starts searching.
    cursor: usize,
    pub started: Instant,
}

impl Qemu {
    /// Boots the image under TCG (no KVM needed) with extra QEMU arguments.
    pub fn boot(image: &GuestImage, extra: &[&str]) -> Qemu {
        Self::boot_with_cmdline(image, "console=ttyS0 panic=-1", extra)
    }

    /// Like [`Qemu::boot`] with a given kernel command line.
    pub fn boot_with_cmdline(image: &GuestImage, cmdline: &str, extra: &[&str]) -> Qemu {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-accel", "tcg", "-m", "512", "-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(&image.kernel)
            .arg("-initrd")
            .arg(&image.initrd)
            .args(["-append", cmdline])
            .args(extra)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("cannot start qemu ({e}); install it: apt-get install -y qemu-system-x86")
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        let reader = std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        // QEMU's own complaints (bad options) go into the same transcript.
        let err_sink = Arc::clone(&output);
        std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            err_sink.lock().unwrap().extend_from_slice(&text);
        });
        Qemu {
            child,
            stdin,
            output,
            reader: Some(reader),
            cursor: 0,
            started: Instant::now(),
        }
    }

    /// Everything the guest printed so far (lossy UTF-8).
    pub fn transcript(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    /// Waits until `needle` appears after the previous match; panics with
    /// the transcript on timeout or if QEMU exits first.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.output.lock().unwrap();
                let hay = &out[self.cursor.min(out.len())..];
                if let Some(i) = find(hay, needle.as_bytes()) {
                    let found = String::from_utf8_lossy(&hay[..i + needle.len()]).into_owned();
                    self.cursor += i + needle.len();
                    return found;
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Give the reader a moment to drain the pipe, then recheck once.
                std::thread::sleep(Duration::from_millis(200));
                if find(
                    &self.output.lock().unwrap()[self.cursor..],
                    needle.as_bytes(),
                )
                .is_none()
                {
                    panic!(
                        "qemu exited ({status}) before {needle:?}; transcript:\n{}",
                        self.transcript()
                    );
                }
                continue;
            }
            if Instant::now() > deadline {
                panic!(
                    "timed out after {timeout:?} waiting for {needle:?}; transcript:\n{}",
                    self.transcript()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Types `text` into the serial console.
    pub fn send(&mut self, text: &str) {
        self.stdin
            .write_all(text.as_bytes())
            .expect("write to qemu stdin");
        self.stdin.flush().expect("flush qemu stdin");
    }

    /// Waits for QEMU to exit on its own; `None` on timeout (QEMU is then
    /// killed by drop).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                if let Some(r) = self.reader.take() {
                    let _ = r.join();
                }
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Removes kernel log lines (`[    1.234567] message`) from console
/// output, including ones printed in the middle of a shell output line.
pub fn without_kernel_log(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find('[') {
        out.push_str(&rest[..start]);
        let after = &rest[start + 1..];
        let stamp_len = after.find(']').filter(|&end| {
            let stamp = after[..end].trim_start();
            !stamp.is_empty()
                && stamp.contains('.')
                && stamp.chars().all(|c| c.is_ascii_digit() || c == '.')
        });
        match stamp_len {
            Some(_) => {
                // Drop up to and including the end of the kernel's line.
                let line_end = after.find('\n').map_or(after.len(), |i| i + 1);
                rest = &after[line_end..];
            }
            None => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
