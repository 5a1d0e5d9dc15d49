//! What the datapath tests share: network namespaces holding real Linux stacks behind the
//! ports' taps, with addresses from the 10.2xx test ranges. Needs root, iproute2, iperf3.
#![allow(dead_code)] // each test file uses a part

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Mutex;
use std::time::Duration;
use vireo_net::datapath::{Datapath, PortConfig, PortVlan};

/// iperf3 runs one at a time: they would skew each other's figures (and the QoS check).
pub static HEAVY: Mutex<()> = Mutex::new(());

pub fn run(args: &[&str]) -> Output {
    Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"))
}

pub fn ok(args: &[&str]) {
    let o = run(args);
    assert!(
        o.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

/// A network namespace, deleted on drop (even when the test fails).
pub struct Ns(pub String);

impl Ns {
    pub fn new(tag: &str) -> Ns {
        let name = format!("ndp-{}-{tag}", std::process::id());
        let _ = run(&["ip", "netns", "del", &name]);
        ok(&["ip", "netns", "add", &name]);
        ok(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        Ns(name)
    }

    /// Moves `tap` in, gives it `addr` (CIDR) unless None, and brings it up.
    pub fn attach(&self, tap: &str, addr: Option<&str>) {
        ok(&["ip", "link", "set", tap, "netns", &self.0]);
        if let Some(a) = addr {
            ok(&["ip", "-n", &self.0, "addr", "add", a, "dev", tap]);
        }
        ok(&["ip", "-n", &self.0, "link", "set", tap, "up"]);
    }

    pub fn exec(&self, args: &[&str]) -> Output {
        let mut v = vec!["ip", "netns", "exec", &self.0];
        v.extend_from_slice(args);
        run(&v)
    }

    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new("ip")
            .args(["netns", "exec", &self.0])
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn in namespace")
    }

    /// Runs `f` on a thread inside this namespace.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("namespace file");
            // SAFETY: setns on an fd we own; it moves only this thread.
            let r = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(r, 0, "setns: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .expect("thread in namespace")
    }

    /// Whether a TCP connection from here reaches `ip` in `peer`, in three tries: on a
    /// loaded machine a just-moved tap's first exchange can be slow. Isolation checks use
    /// one try (`try_reach`).
    pub fn reach(&self, peer: &Ns, ip: &str) -> bool {
        (0..3).any(|_| self.try_reach(peer, ip))
    }

    /// Whether one TCP connection from here reaches `ip` in `peer` (on a fresh port).
    pub fn try_reach(&self, peer: &Ns, ip: &str) -> bool {
        static NEXT: AtomicU16 = AtomicU16::new(31000);
        let port = NEXT.fetch_add(1, Ordering::Relaxed);
        let addr: SocketAddr = format!("{ip}:{port}").parse().unwrap();
        self.connect(peer, addr, Duration::from_secs(3)).is_some()
    }

    /// A TCP connection from here to a listener on `addr` in `peer`: both ends, or `None`
    /// if the client's connect fails within `timeout` or the server never sees it.
    pub fn connect(
        &self,
        peer: &Ns,
        addr: SocketAddr,
        timeout: Duration,
    ) -> Option<(TcpStream, TcpStream)> {
        let listener = peer.within(move || TcpListener::bind(addr).expect("bind in peer"));
        let client = self.within(move || TcpStream::connect_timeout(&addr, timeout).ok())?;
        // The client is connected once it has the SYN-ACK; the last ACK still has to cross
        // the userspace switch before the server's accept sees it, so poll for it.
        listener.set_nonblocking(true).unwrap();
        for _ in 0..100 {
            if let Ok((server, _)) = listener.accept() {
                server.set_nonblocking(false).unwrap();
                return Some((client, server));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    pub fn mac(&self, dev: &str) -> String {
        let o = self.exec(&["cat", &format!("/sys/class/net/{dev}/address")]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// iperf3 from here to `server` (running in `peer`); the receiver's JSON summary.
    pub fn iperf(&self, peer: &Ns, server: &str, extra: &[&str]) -> serde_json::Value {
        let mut srv = peer.spawn(&["iperf3", "-s", "-1", "-B", server]);
        std::thread::sleep(Duration::from_millis(500));
        let mut args = vec!["iperf3", "-c", server, "-J"];
        args.extend_from_slice(extra);
        let o = self.exec(&args);
        let _ = srv.kill();
        let _ = srv.wait();
        assert!(
            o.status.success(),
            "iperf3 failed: {}",
            String::from_utf8_lossy(&o.stdout)
        );
        serde_json::from_slice(&o.stdout).expect("iperf3 JSON")
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = run(&["ip", "netns", "del", &self.0]);
    }
}

pub fn tcp_bps(j: &serde_json::Value) -> f64 {
    j["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .expect("TCP result")
}

pub fn port(dp: &Datapath, name: &str, net: &str, tap: &str, vlan: PortVlan) {
    dp.add_port(&PortConfig {
        name: name.into(),
        network: net.into(),
        tap: tap.into(),
        vhost_user: None,
        mac: None,
        vlan,
    })
    .unwrap_or_else(|e| panic!("port {name}: {e}"));
}

pub fn untagged() -> PortVlan {
    PortVlan::Access(None)
}
