//! virtio-net and virtio-vsock seen by a booted Linux guest. The VMM runs inside a network
//! namespace that the test creates, so its tap device and all test traffic stay there: the
//! guest pings the namespace over the tap and measures TCP throughput to an iperf3 server in
//! it; a host program and the guest talk over vsock both ways through Firecracker's Unix-socket
//! convention. Tools the busybox guest lacks (iperf3, a vsock client/server) come on a
//! read-only ext4 disk.

mod common;

use common::guest::{boot_cmd, guest_tool, image, scratch, tools_disk, wait_exit, KillOnDrop};
use common::vireo_bin;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A network namespace, deleted when dropped.
struct Netns(String);

impl Netns {
    fn new(name: &str) -> Netns {
        // A namespace left by a killed earlier run of this test.
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        let ok = Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .expect("run ip (iproute2)");
        assert!(ok.success(), "ip netns add {name}");
        Netns(name.to_string())
    }

    /// A command run inside the namespace.
    fn cmd(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0, program]);
        c
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        self.cmd(args[0]).args(&args[1..]).output().unwrap()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .unwrap();
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        !path.is_empty(),
        "{program} is not installed (apt-get install {program})"
    );
    PathBuf::from(path)
}

fn net_and_vsock(accel: &str) {
    let dir = scratch("virtio-net", accel);
    let img = image(&dir.join("image"));
    let vsock_tool = guest_tool(&dir, "vsock");
    let tools = tools_disk(&dir, &[&which("iperf3"), &vsock_tool]);
    let ns = Netns::new(&format!("vireo-net-{}-{accel}", std::process::id()));
    let uds = dir.join("v.sock");
    let api = dir.join("api.sock");
    let tools_arg = format!("path={},readonly=on", tools.display());
    let vsock_arg = format!("cid=7,socket={}", uds.display());
    let (mut con, mut guard) = boot_cmd(
        ns.cmd(vireo_bin()),
        &img,
        accel,
        &[
            OsStr::new("--net"),
            OsStr::new("tap=vt0,mac=52:54:00:12:34:56"),
            OsStr::new("--disk"),
            OsStr::new(&tools_arg),
            OsStr::new("--vsock"),
            OsStr::new(&vsock_arg),
            OsStr::new("--api-socket"),
            api.as_os_str(),
        ],
    );
    con.run("dmesg -n 1");

    // The namespace's end of the tap, and the guest's.
    let out = ns.run(&["ip", "addr", "add", "10.77.0.1/24", "dev", "vt0"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        con.run("cat /sys/class/net/eth0/address"),
        "52:54:00:12:34:56"
    );
    con.run("ip link set eth0 up && ip addr add 10.77.0.2/24 dev eth0");
    let ping = con.run("ping -c 3 -W 5 10.77.0.1 | grep received");
    assert!(ping.contains("3 packets received"), "{ping}");

    // TCP from the guest to iperf3 in the namespace.
    let mut server = KillOnDrop(
        ns.cmd("iperf3")
            .args(["-s", "-1", "-B", "10.77.0.1"])
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    std::thread::sleep(Duration::from_millis(500));
    con.run("mkdir -p /t && mount -o ro /dev/vda /t");
    let iperf = con.run(
        "/t/lib/ld-linux-x86-64.so.2 --library-path /t/lib /t/iperf3 -c 10.77.0.1 -t 3 -f m | grep receiver",
    );
    eprintln!("iperf3 guest -> namespace: {iperf}");
    assert!(iperf.contains("Mbits/sec"), "{iperf}");
    let _ = server.0.wait();

    // vsock, host to guest: CONNECT <port>, then an echo.
    con.send("/t/vsock listen 1234 &");
    con.expect("listening on 1234", Duration::from_secs(30));
    let mut s = UnixStream::connect(&uds).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"CONNECT 1234\n").unwrap();
    let mut reader = BufReader::new(s.try_clone().unwrap());
    let mut ok = String::new();
    reader.read_line(&mut ok).unwrap();
    assert!(ok.starts_with("OK "), "{ok:?}");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut s = s.try_clone().unwrap();
        let payload = payload.clone();
        std::thread::spawn(move || {
            s.write_all(&payload).unwrap();
            s.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    reader.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert!(echoed == payload, "echo differs ({} bytes)", echoed.len());
    con.expect("echoed 200000 bytes", Duration::from_secs(30));

    // vsock, guest to host: CID 2 port 5000 reaches PATH_5000.
    let listener = UnixListener::bind(format!("{}_5000", uds.display())).unwrap();
    let host = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut got = Vec::new();
        c.read_to_end(&mut got).unwrap();
        c.write_all(b"reply-from-host:").unwrap();
        c.write_all(&got).unwrap();
    });
    assert_eq!(
        con.run("/t/vsock connect 2 5000 hello-from-guest"),
        "reply-from-host:hello-from-guest"
    );
    host.join().unwrap();

    let c = device_counters(&api);
    assert!(c["net0"]["tx_packets"].as_u64().unwrap() > 100, "{c}");
    assert!(c["net0"]["rx_packets"].as_u64().unwrap() > 100, "{c}");
    assert!(
        c["vsock0"]["connections_opened"].as_u64().unwrap() >= 2,
        "{c}"
    );

    con.send("poweroff");
    assert_eq!(wait_exit(&mut guard, Duration::from_secs(120)), Some(0));
    // The tap Vireo created is gone with it, and so is the vsock socket.
    assert!(!ns.run(&["ip", "link", "show", "vt0"]).status.success());
    assert!(!uds.exists());
}

fn device_counters(api: &std::path::Path) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = Command::new(vireo_bin())
            .args(["vm", "devices", "--api-socket"])
            .arg(api)
            .output()
            .unwrap();
        if out.status.success() {
            let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            return list
                .as_array()
                .unwrap()
                .iter()
                .map(|d| (d["id"].as_str().unwrap().to_string(), d["counters"].clone()))
                .collect::<serde_json::Map<_, _>>()
                .into();
        }
        assert!(
            Instant::now() < deadline,
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn net_and_vsock_under_the_emulator() {
    net_and_vsock("emu");
}
