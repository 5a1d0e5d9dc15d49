//! Shared helpers for the integration tests: building the PVH test payloads
//! (tests/payloads) and running the `vireo` binary with a hard timeout.
//!
//! Payloads are built with the system `gcc -m32` (binutils' `objcopy` for the
//! ELF64 variant); nothing from the 32-bit libc is linked, so `gcc-multilib`
//! is not required.

// Each test crate uses a different subset of these helpers.
#![allow(dead_code)]

pub mod guest;

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

/// How long one VM run may take before the test kills it and fails.
pub const RUN_TIMEOUT: Duration = Duration::from_secs(20);

/// The guest memory size the payload tests use, and its `--memory` spelling.
pub const MEMORY: u64 = 64 << 20;
pub const MEMORY_ARG: &str = "64M";
pub const CMDLINE: &str = "hello world";

pub fn vireo_bin() -> &'static str {
    env!("CARGO_BIN_EXE_vireo")
}

fn payload_src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/payloads")
}

fn payload_out_dir() -> PathBuf {
    // Cargo provides this scratch directory (inside target/) to integration tests.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("pvh-payloads");
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// The container the (always 32-bit) payload code is wrapped in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ElfClass {
    /// ELF64 with 32-bit code and an 8-byte PVH note, the shape of a Linux vmlinux.
    Elf64,
    /// Plain ELF32 (i386) with a 4-byte PVH note.
    Elf32,
}

/// Path to the ELF32 build of payload `name` (tests/payloads/NAME.c).
pub fn payload(name: &str) -> PathBuf {
    payload_as(name, ElfClass::Elf32)
}

/// Build payload `name` once per test process and return its path.
pub fn payload_as(name: &str, class: ElfClass) -> PathBuf {
    static CACHE: OnceLock<Mutex<HashMap<(String, ElfClass), PathBuf>>> = OnceLock::new();
    // Holding the lock while building also keeps parallel tests from racing on the same file.
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(path) = cache.get(&(name.to_string(), class)) {
        return path.clone();
    }
    let path = build_payload(name, class);
    cache.insert((name.to_string(), class), path.clone());
    path
}

fn run_tool(cmd: &mut Command, what: &str) {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run {:?}: {e} (is gcc/binutils installed?)",
            cmd.get_program()
        )
    });
    assert!(
        out.status.success(),
        "{what} failed ({}): {cmd:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn build_payload(name: &str, class: ElfClass) -> PathBuf {
    let src = payload_src_dir();
    let out = payload_out_dir();
    let suffix = match class {
        ElfClass::Elf32 => "elf",
        ElfClass::Elf64 => "elf64",
    };
    let final_path = out.join(format!("{name}.{suffix}"));
    // Build under a per-process name and rename into place: other test binaries
    // (or nextest processes) may build the same payload concurrently.
    let tmp32 = out.join(format!("{name}.{suffix}.{}.tmp32", std::process::id()));
    let tmp = out.join(format!("{name}.{suffix}.{}.tmp", std::process::id()));

    let mut gcc = Command::new("gcc");
    gcc.args([
        "-m32",
        "-march=i686",
        "-Os",
        "-Wall",
        "-ffreestanding",
        "-nostdlib",
        "-fno-pic",
        "-no-pie",
        "-fno-stack-protector",
        "-fno-asynchronous-unwind-tables",
        "-fcf-protection=none",
        "-static",
        "-Wl,--build-id=none",
    ])
    .arg(format!("-Wl,-T,{}", src.join("link.ld").display()));
    if class == ElfClass::Elf64 {
        gcc.arg("-DPVH_NOTE_DESC8");
    }
    gcc.arg(src.join("start.S"))
        .arg(src.join("lib.c"))
        .arg(src.join(format!("{name}.c")))
        .arg("-o")
        .arg(&tmp32);
    run_tool(&mut gcc, &format!("building payload {name}"));

    match class {
        ElfClass::Elf32 => fs::rename(&tmp32, &tmp).unwrap(),
        ElfClass::Elf64 => {
            // Same code and load addresses, 64-bit ELF container (like vmlinux).
            run_tool(
                Command::new("objcopy")
                    .args(["-O", "elf64-x86-64"])
                    .arg(&tmp32)
                    .arg(&tmp),
                &format!("objcopy of payload {name}"),
            );
            let _ = fs::remove_file(&tmp32);
        }
    }
    fs::rename(&tmp, &final_path).unwrap();
    final_path
}

/// A file in the system temp dir that is deleted when dropped (also on test failure).
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(tag: &str) -> TempFile {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        TempFile(std::env::temp_dir().join(format!("vireo-test-{}-{n}-{tag}", std::process::id())))
    }

    pub fn with_contents(tag: &str, data: &[u8]) -> TempFile {
        let f = TempFile::new(tag);
        fs::write(&f.0, data).unwrap_or_else(|e| panic!("write {}: {e}", f.0.display()));
        f
    }

    /// A file of `len` zero bytes, sparse so it costs no disk space.
    pub fn sparse(tag: &str, len: u64) -> TempFile {
        let f = TempFile::new(tag);
        fs::File::create(&f.0)
            .and_then(|file| file.set_len(len))
            .unwrap();
        f
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn arg(&self) -> &str {
        self.0.to_str().expect("temp path is not UTF-8")
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// Deterministic pseudo-random bytes (xorshift), e.g. for a file that is not a kernel.
pub fn pseudo_random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// The outcome of one `vireo` run.
pub struct Run {
    pub args: Vec<String>,
    pub status: ExitStatus,
    /// Guest console output (with any '\r' removed).
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Run {
    /// Everything about the run, for assertion messages.
    pub fn dump(&self) -> String {
        format!(
            "vireo {:?}\nstatus: {} after {:.1?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.args, self.status, self.elapsed, self.stdout, self.stderr
        )
    }

    /// The lines of guest output that start with `prefix`, with the prefix removed.
    pub fn lines_with(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter_map(|l| l.strip_prefix(prefix))
            .collect()
    }

    /// The single guest output line starting with `prefix` (prefix removed); fails otherwise.
    pub fn line(&self, prefix: &str) -> &str {
        match self.lines_with(prefix)[..] {
            [one] => one,
            ref other => panic!(
                "expected exactly one line starting {prefix:?}, got {other:?}\n{}",
                self.dump()
            ),
        }
    }
}

/// Read a pipe to the end on a thread; the result arrives on the returned channel.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(mut p) = pipe {
            let _ = p.read_to_end(&mut buf);
        }
        let _ = tx.send(String::from_utf8_lossy(&buf).replace('\r', ""));
    });
    rx
}

/// Run `vireo ARGS`, killing it and failing the test if it is still running after `timeout`.
pub fn run_vireo<S: AsRef<str>>(args: &[S], timeout: Duration) -> Run {
    let args: Vec<String> = args.iter().map(|a| a.as_ref().to_string()).collect();
    let start = Instant::now();
    let mut child = Command::new(vireo_bin())
        .args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", vireo_bin()));
    // Drain both pipes concurrently so a chatty child never blocks on a full pipe.
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());

    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        thread::sleep(Duration::from_millis(20));
    };
    let elapsed = start.elapsed();
    // Bounded, in case a grandchild kept the pipes open.
    let deadline = Instant::now() + Duration::from_secs(2);
    let collect = |rx: mpsc::Receiver<String>| {
        let left = deadline.saturating_duration_since(Instant::now());
        rx.recv_timeout(left)
            .unwrap_or_else(|_| "<output not collected: pipe still open>".into())
    };
    let (stdout, stderr) = (collect(stdout), collect(stderr));

    match status {
        Some(status) => Run { args, status, stdout, stderr, elapsed },
        None => panic!(
            "vireo {args:?} did not exit within {timeout:?}; killed it\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}"
        ),
    }
}

/// Whether this machine's /dev/kvm is kvm_pvm, the nested software hypervisor that runs no
/// 64-bit guest code (the same fact Vireo's KVM backend reports as "no long mode").
pub fn kvm_is_pvm() -> bool {
    Path::new("/sys/module/kvm_pvm").exists()
}

/// A `vireo run --accel` backend the payload tests run under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Accel {
    /// This machine's /dev/kvm.
    Kvm,
    /// Vireo's own x86-64 emulator (crates/emu).
    Emu,
    /// KVM if it can run the guest, else the emulator.
    Auto,
}

impl Accel {
    /// The `--accel` value.
    pub fn arg(self) -> &'static str {
        match self {
            Accel::Kvm => "kvm",
            Accel::Emu => "emu",
            Accel::Auto => "auto",
        }
    }

    /// The signature in CPUID leaf 0x40000000 (EBX, ECX, EDX) under this backend, as the cpuid
    /// payload prints it (quoted, NULs as `\0`).
    pub fn hypervisor_signature(self) -> &'static str {
        match self {
            Accel::Kvm => r#""KVMKVMKVM\0\0\0""#,
            // crates/emu/src/cpu/cpuid.rs: HV_SIGNATURE.
            Accel::Emu => r#""VireoEmuVMM\0""#,
            Accel::Auto => {
                panic!("under --accel auto the signature is that of the backend it picks")
            }
        }
    }
}

/// Boot `kernel` under `accel` with `--memory MEMORY`, the standard test machine and `extra`
/// arguments (which must not repeat `--accel`).
pub fn run_kernel_on(accel: Accel, kernel: &Path, memory: &str, extra: &[&str]) -> Run {
    assert!(
        !extra.contains(&"--accel"),
        "pass the backend as `accel`, not in `extra`: {extra:?}"
    );
    let mut args = vec![
        "run",
        "--kernel",
        kernel.to_str().expect("payload path is not UTF-8"),
        "--accel",
        accel.arg(),
        "--memory",
        memory,
        "--cmdline",
        CMDLINE,
        "--console",
        "stdio",
    ];
    args.extend_from_slice(extra);
    run_vireo(&args, RUN_TIMEOUT)
}

/// [`run_kernel_on`] with `--accel kvm`.
pub fn run_kernel(kernel: &Path, memory: &str, extra: &[&str]) -> Run {
    run_kernel_on(Accel::Kvm, kernel, memory, extra)
}

/// Boot the ELF32 build of payload `name` under `accel` with 64 MiB; see [`run_kernel_on`].
pub fn run_payload_on(accel: Accel, name: &str, extra: &[&str]) -> Run {
    run_kernel_on(accel, &payload(name), MEMORY_ARG, extra)
}

/// [`run_payload_on`] with `--accel kvm`.
pub fn run_payload(name: &str, extra: &[&str]) -> Run {
    run_payload_on(Accel::Kvm, name, extra)
}
