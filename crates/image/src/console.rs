//! Driving a guest booted from the image in QEMU over its serial console: for tests that
//! put the guest in front of a real peer (a vhost-user backend, a virtual network).
//!
//! The guest's RAM is a shared memfd, which any vhost-user device needs; the caller adds
//! its devices' arguments. Commands are typed into a plain `read`/`eval` loop (ash's line
//! editor can swallow typed input while it queries the terminal) and their output is taken
//! between markers the guest's shell computes, so the echo of the typed line never matches.

use crate::{BuildOptions, GuestImage};
use std::ffi::OsString;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BOOT_TIMEOUT: Duration = Duration::from_secs(180);
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// The guest image in `out`, built like `vireo image build` does, its Debian packages
/// cached in the workspace's `.cache/image` (or `VIREO_IMAGE_CACHE`).
pub fn cached_image(out: &Path) -> GuestImage {
    let cache = std::env::var_os("VIREO_IMAGE_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.cache/image"));
    crate::build(&BuildOptions {
        out_dir: out.to_path_buf(),
        cache_dir: cache,
    })
    .expect("vireo image build")
}

/// How to boot the guest.
#[derive(Debug, Clone)]
pub struct QemuOptions {
    /// The guest's devices (e.g. `-chardev ... -device vhost-user-blk-pci,...`).
    pub args: Vec<OsString>,
    /// An in-guest reboot restarts the machine instead of ending QEMU.
    pub reboot: bool,
    /// Prefixes the console lines echoed to the test's output (two guests at once).
    pub name: String,
    /// Guest RAM in MiB.
    pub memory_mib: u32,
    /// The kernel command line after `console=ttyS0 panic=-1`.
    pub kernel_args: String,
}

impl Default for QemuOptions {
    fn default() -> QemuOptions {
        QemuOptions {
            args: Vec::new(),
            reboot: false,
            name: String::new(),
            memory_mib: 512,
            kernel_args: "quiet".into(),
        }
    }
}

/// A guest's serial console seen through a child process's stdio (QEMU's `-serial stdio`,
/// or `vireo run`'s console): what it printed so far, and its stdin to type into.
pub struct Console {
    out: Arc<Mutex<String>>,
    stdin: ChildStdin,
    seen: usize,
}

fn lock(m: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Console {
    /// Collects the child's stdout from a background thread, echoing it to the test's
    /// output (each line prefixed with `[name]` unless `name` is empty: two guests at once).
    pub fn attach(child: &mut Child, name: &str) -> Console {
        let out = Arc::new(Mutex::new(String::new()));
        let mut stdout = child.stdout.take().expect("piped stdout");
        let sink = out.clone();
        let name = name.to_string();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Whole lines only when prefixed, or two guests' output interleaves mid-line.
            let mut line = String::new();
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let s = String::from_utf8_lossy(&buf[..n]);
                if name.is_empty() {
                    print!("{s}");
                } else {
                    line.push_str(&s);
                    while let Some(i) = line.find('\n') {
                        let l: String = line.drain(..=i).collect();
                        if !l.trim().is_empty() {
                            print!("[{name}] {l}");
                        }
                    }
                }
                lock(&sink).push_str(&s);
            }
        });
        Console {
            out,
            stdin: child.stdin.take().expect("piped stdin"),
            seen: 0,
        }
    }

    /// Forgets what the console printed so far (e.g. before waiting for a reboot).
    pub fn skip_output(&mut self) {
        self.seen = lock(&self.out).len();
    }

    /// Waits until `needle` appears after what was consumed so far; returns the text up to it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = lock(&self.out);
                if let Some(i) = out[self.seen..].find(needle) {
                    let text = out[self.seen..self.seen + i + needle.len()].to_string();
                    self.seen += i + needle.len();
                    return text;
                }
            }
            if Instant::now() > deadline {
                let out = lock(&self.out);
                let mut from = out.len().saturating_sub(3000);
                while !out.is_char_boundary(from) {
                    from += 1;
                }
                panic!(
                    "timed out waiting for {needle:?}; console tail:\n{}",
                    &out[from..]
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn send(&mut self, line: &str) {
        self.stdin
            .write_all(line.as_bytes())
            .expect("write to the console");
        self.stdin.write_all(b"\n").expect("write to the console");
        self.stdin.flush().expect("write to the console");
    }

    /// Runs a shell command in the guest; returns what it printed.
    pub fn run(&mut self, cmd: &str) -> String {
        self.run_for(cmd, COMMAND_TIMEOUT)
    }

    /// [`Console::run`] with its own timeout.
    pub fn run_for(&mut self, cmd: &str, timeout: Duration) -> String {
        // The markers are computed by the shell, so the echo of the typed line never matches.
        self.send(&format!("echo BEGIN-$((1+1)); {cmd}; echo END-$((2+2))"));
        self.expect("BEGIN-2", timeout);
        let text = self.expect("END-4", timeout);
        text.trim_end_matches("END-4").trim().to_string()
    }

    /// Brings `iface` up and leases an address for it with the guest's `udhcpc`, which
    /// configures it; returns the address and the router the server gave (empty if none).
    /// Panics (this is test support) if no lease comes.
    pub fn dhcp(&mut self, iface: &str) -> (String, String) {
        self.run(&format!("ip link set {iface} up"));
        // udhcpc hands the lease to a script in its environment; a renewal replaces the
        // address instead of adding a second one.
        self.run(
            "printf '#!/bin/sh\\ncase \"$1\" in bound|renew) ip addr flush dev $interface; \
             ip addr add $ip/$mask dev $interface; echo \"LEASE=$ip ROUTER=$router\";; esac\\n' \
             > /tmp/dh.sh; chmod +x /tmp/dh.sh",
        );
        let out = self.run(&format!(
            "udhcpc -i {iface} -n -q -t 10 -T 2 -s /tmp/dh.sh 2>&1"
        ));
        let field = |key: &str| {
            out.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .map(str::to_string)
        };
        let ip = field("LEASE=").unwrap_or_else(|| panic!("no lease on {iface}: {out}"));
        let router = field("ROUTER=").unwrap_or_default();
        (ip, router)
    }
}

/// A guest in QEMU: its serial console (`Deref`s to [`Console`]) and the QEMU process
/// (killed on drop).
pub struct Qemu {
    child: Child,
    con: Console,
}

impl std::ops::Deref for Qemu {
    type Target = Console;
    fn deref(&self) -> &Console {
        &self.con
    }
}

impl std::ops::DerefMut for Qemu {
    fn deref_mut(&mut self) -> &mut Console {
        &mut self.con
    }
}

impl Qemu {
    /// Boots the image and waits for the shell. Panics (this is test support) if QEMU
    /// cannot start or the guest does not come up.
    pub fn boot(img: &GuestImage, opts: &QemuOptions) -> Qemu {
        let started = Instant::now();
        let mem = format!("{}M", opts.memory_mib);
        let mut cmd = Command::new("qemu-system-x86_64");
        // TCG: the test machines' KVM (nested) does not run this kernel reliably.
        cmd.args(["-accel", "tcg,thread=multi", "-smp", "2", "-m", &mem])
            .arg("-object")
            .arg(format!("memory-backend-memfd,id=m,size={mem},share=on"))
            .args(["-numa", "node,memdev=m"])
            .args(&opts.args)
            .args(["-nographic", "-nodefaults", "-serial", "stdio"])
            .arg("-kernel")
            .arg(&img.kernel)
            .arg("-initrd")
            .arg(&img.initrd)
            .arg("-append")
            .arg(format!("console=ttyS0 panic=-1 {}", opts.kernel_args));
        if !opts.reboot {
            cmd.arg("-no-reboot");
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64 (apt-get install qemu-system-x86)");
        let con = Console::attach(&mut child, &opts.name);
        let mut q = Qemu { child, con };
        q.shell();
        eprintln!("guest {} ready after {:?}", opts.name, started.elapsed());
        q
    }

    /// Waits for the guest's shell and swaps it for a plain read loop.
    pub fn shell(&mut self) {
        self.expect("vireo guest ready", BOOT_TIMEOUT);
        std::thread::sleep(Duration::from_secs(1));
        self.send("while read -r l; do eval \"$l\"; done");
        std::thread::sleep(Duration::from_millis(500));
        self.run("dmesg -n 1");
    }

    /// Whether QEMU has exited (with its status).
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Powers the guest off and waits for QEMU to exit successfully.
    pub fn poweroff(mut self) {
        self.send("poweroff");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.try_wait() {
                assert!(status.success(), "qemu exited with {status}");
                return;
            }
            assert!(
                Instant::now() < deadline,
                "qemu did not exit after poweroff"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
