"""Shared by the benchmark scripts: the default guest image, building vireo, and a VMM process
driven over its serial console (stdin/stdout pipes)."""
import os, re, select, signal, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CMDLINE = "console=ttyS0 reboot=k panic=-1"  # vireo's default, passed to QEMU too
READY = b"vireo guest ready"
PROMPT = b"vireo:/# "
BOOT_TIMEOUT = 300
KERNEL_LOG = re.compile(r"^\[\s*\d+\.\d+\]")


def default_image():
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.environ.get("HOME", "/"), ".cache")
    built = os.path.join(cache, "vireo", "image")
    if os.path.exists(os.path.join(built, "vmlinuz")):
        return built
    return os.path.join(ROOT, "target/tmp/boot-test")


def build():
    for attempt in range(5):  # others may be editing the workspace: retry a failing build
        if subprocess.run(["cargo", "build", "--release", "-q", "-p", "vireo"], cwd=ROOT).returncode == 0:
            return
        print("build failed, retrying in 30 s", file=sys.stderr)
        time.sleep(30)
    sys.exit("cargo build failed")


class Guest:
    """A VMM process whose serial console is our pipe; always killed by `close`."""

    def __init__(self, cmd):
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, start_new_session=True)
        self.buf = b""
        self.last = self.t0  # arrival time of the latest chunk read

    def wait_for(self, pattern, timeout, start=0):
        """Seconds since process start when `pattern` (bytes regex) first appears after `start`."""
        rx = re.compile(pattern)
        deadline = time.perf_counter() + timeout
        while True:
            m = rx.search(self.buf, start)
            if m:
                return m
            left = deadline - time.perf_counter()
            if left <= 0:
                raise TimeoutError(f"no {pattern!r} within {timeout} s; console tail:\n"
                                   + self.buf[-1500:].decode(errors="replace"))
            r, _, _ = select.select([self.p.stdout], [], [], min(left, 1))
            if r:
                data = os.read(self.p.stdout.fileno(), 65536)
                if not data:
                    raise RuntimeError("VMM exited; console tail:\n"
                                       + self.buf[-1500:].decode(errors="replace"))
                self.last = time.perf_counter()
                self.buf += data

    def expect(self, pattern, timeout, start=0):
        """(match, seconds from process start to the arrival of the chunk completing it)."""
        m = self.wait_for(pattern, timeout, start)
        return m, self.last - self.t0

    def send(self, line):
        self.p.stdin.write(line.encode() + b"\n")
        self.p.stdin.flush()

    def status(self, key):
        with open(f"/proc/{self.p.pid}/status") as f:
            return next(int(l.split()[1]) for l in f if l.startswith(key + ":"))

    def cpu_seconds(self):
        with open(f"/proc/{self.p.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    def close(self):
        if self.p.poll() is None:
            try:
                os.killpg(self.p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.p.wait()


