//! The console: guest output to stdout or a file, host stdin to the guest's UART or its
//! virtio-console.
//!
//! On a terminal, stdin is put in raw mode so that keys (Ctrl-C included) reach the guest;
//! `Ctrl-A x` quits, as in QEMU.

use crate::config::ConsoleConfig;
use crate::vm::Event;
use std::io::{Read, Write};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use vireo_devices::serial::Serial;
use vireo_virtio::console::ConsoleInput;

/// A writer that flushes every write: console output must appear as the guest writes it.
struct Unbuffered<W: Write>(W);

impl<W: Write> Write for Unbuffered<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.write_all(buf)?;
        self.0.flush()?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.flush()
    }
}

/// Where the guest's serial output goes.
pub fn output(cfg: &ConsoleConfig) -> std::io::Result<Box<dyn Write + Send>> {
    Ok(match cfg {
        ConsoleConfig::Stdio | ConsoleConfig::Virtio => Box::new(Unbuffered(std::io::stdout())),
        ConsoleConfig::File(p) => Box::new(Unbuffered(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)?,
        )),
    })
}

/// The input side of the console; restores the terminal when dropped.
pub struct Console {
    saved: Option<libc::termios>,
}

/// Where typed input goes.
pub enum InputTarget {
    Serial(Arc<Mutex<Serial>>),
    Virtio(Arc<ConsoleInput>),
}

impl InputTarget {
    /// Hands over as much of `data` as the device can take now.
    fn push(&self, data: &[u8]) -> usize {
        match self {
            InputTarget::Serial(s) => s
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .enqueue_input(data),
            InputTarget::Virtio(c) => c.push(data),
        }
    }
}

impl Console {
    /// Starts reading stdin into `target`, unless the console is a file (no input).
    pub fn start(
        cfg: &ConsoleConfig,
        target: InputTarget,
        events: Sender<Event>,
    ) -> std::io::Result<Console> {
        if let ConsoleConfig::File(_) = cfg {
            return Ok(Console { saved: None });
        }
        let saved = raw_mode()?;
        let interactive = saved.is_some();
        std::thread::Builder::new()
            .name("console".into())
            .spawn(move || input_loop(target, events, interactive))?;
        Ok(Console { saved })
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        if let Some(t) = self.saved {
            // SAFETY: restores the attributes read from fd 0 by raw_mode().
            unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) };
        }
    }
}

/// Puts a terminal stdin in raw mode; returns the previous attributes (None if not a tty).
fn raw_mode() -> std::io::Result<Option<libc::termios>> {
    // SAFETY: isatty only inspects fd 0.
    if unsafe { libc::isatty(0) } != 1 {
        return Ok(None);
    }
    // SAFETY: termios is plain data; tcgetattr fills it for fd 0 and its result is checked.
    let mut t: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: `t` is a valid termios to fill.
    if unsafe { libc::tcgetattr(0, &mut t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let saved = t;
    // SAFETY: `t` is a valid termios; cfmakeraw only edits it.
    unsafe { libc::cfmakeraw(&mut t) };
    t.c_oflag |= libc::OPOST | libc::ONLCR; // keep our own messages readable
                                            // SAFETY: `t` is a valid termios for fd 0.
    if unsafe { libc::tcsetattr(0, libc::TCSANOW, &t) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(Some(saved))
}

fn input_loop(target: InputTarget, events: Sender<Event>, interactive: bool) {
    const CTRL_A: u8 = 0x01;
    let mut stdin = std::io::stdin().lock();
    let mut buf = [0u8; 256];
    let mut escape = false;
    loop {
        let n = match stdin.read(&mut buf) {
            Ok(0) | Err(_) => return, // EOF: the guest simply gets no more input
            Ok(n) => n,
        };
        let mut data = Vec::with_capacity(n);
        for &b in &buf[..n] {
            if interactive && escape {
                escape = false;
                match b {
                    b'x' | b'X' => {
                        let _ = events.send(Event::ConsoleQuit);
                        return;
                    }
                    CTRL_A => data.push(CTRL_A),
                    _ => {}
                }
            } else if interactive && b == CTRL_A {
                escape = true;
            } else {
                data.push(b);
            }
        }
        let mut rest = &data[..];
        while !rest.is_empty() {
            let taken = target.push(rest);
            rest = &rest[taken..];
            if !rest.is_empty() {
                // The UART FIFO or the console's buffer is full: let the guest drain it.
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        }
    }
}
