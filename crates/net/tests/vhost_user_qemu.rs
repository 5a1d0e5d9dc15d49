//! The real peer: two QEMU guests (Debian kernel, busybox initramfs: what `vireo image
//! build` makes) whose virtio-net devices are vhost-user-net ports of one network, and a
//! network namespace behind a tap port of the same network. The guests get their
//! addresses from the network's DHCP server with busybox udhcpc, ping each other and the
//! namespace, move files over TCP both ways (checksum and segmentation offloads pass
//! through the switch), and a guest that powers off and is started again on the same
//! socket (a restarted VM) gets its lease back and is reachable again. Vireo's own
//! frontend, given no MAC, takes the port's from its configuration space.
//!
//! Needs root, qemu-system-x86, iproute2, busybox-static, and the guest image's Debian
//! packages (cached in `.cache/image` of the workspace, or `VIREO_IMAGE_CACHE`).

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vireo_image::console::{cached_image, Qemu, QemuOptions};
use vireo_image::GuestImage;
use vireo_net::datapath::dhcp::DhcpConfig;
use vireo_net::datapath::{Addressing, Datapath, PortConfig, PortVlan};

const MACS: [&str; 2] = ["52:54:00:20:80:01", "52:54:00:20:80:02"];
/// The namespace on the tap port (the guests' addresses come from DHCP).
const NS_IP: &str = "10.208.0.5";

fn vhost_port(dp: &Datapath, name: &str, socket: &Path, mac: &str) {
    dp.add_port(&PortConfig {
        name: name.into(),
        network: "vu".into(),
        tap: String::new(),
        vhost_user: Some(socket.to_path_buf()),
        mac: Some(mac.into()),
        vlan: PortVlan::Access(None),
    })
    .unwrap_or_else(|e| panic!("port {name}: {e}"));
}

fn boot(img: &GuestImage, socket: &Path, mac: &str, name: &str) -> Qemu {
    let opts = QemuOptions {
        args: vec![
            "-chardev".into(),
            format!("socket,id=c0,path={}", socket.display()).into(),
            "-netdev".into(),
            "vhost-user,id=n0,chardev=c0".into(),
            "-device".into(),
            // No iPXE option ROM: the guest boots from -kernel. No MSI-X: QEMU 7.2 under
            // TCG crashes setting up a vhost device's MSI-X vectors (with KVM's irqfds it
            // does not); the guest takes a legacy interrupt instead.
            format!("virtio-net-pci,netdev=n0,mac={mac},romfile=,vectors=0").into(),
        ],
        name: name.into(),
        ..QemuOptions::default()
    };
    Qemu::boot(img, &opts)
}

/// Brings eth0 up and leases an address with udhcpc; returns it.
fn lease(q: &mut Qemu, mac: &str) -> String {
    assert_eq!(q.run("cat /sys/class/net/eth0/address"), mac);
    let (ip, router) = q.dhcp("eth0");
    assert_eq!(router, "10.208.0.1", "the gateway as router");
    ip
}

/// `busybox ping` from the guest: how many of `n` came back.
fn ping(q: &mut Qemu, ip: &str, n: u32) -> u32 {
    let out = q.run(&format!("ping -c {n} -i 0.2 -W 3 {ip} | grep received"));
    out.split(", ")
        .find_map(|s| s.strip_suffix(" packets received"))
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or_else(|| panic!("ping summary: {out}"))
}

/// Sends `mib` MiB of random data from guest `from` to guest `to` over TCP; asserts it
/// arrived intact and returns the throughput in Mbit/s.
fn transfer(from: &mut Qemu, to: &mut Qemu, to_ip: &str, mib: u32) -> f64 {
    from.run(&format!(
        "dd if=/dev/urandom of=/tmp/out bs=1M count={mib} 2>/dev/null"
    ));
    let sum = from.run("md5sum /tmp/out | cut -d' ' -f1");
    // nc ends when its stdin does: the sleep keeps the receiver's open.
    to.run("rm -f /tmp/in; { sleep 120 | nc -l -p 5001 > /tmp/in & }");
    std::thread::sleep(Duration::from_millis(500));
    let started = Instant::now();
    from.run(&format!("nc {to_ip} 5001 < /tmp/out"));
    let bytes = u64::from(mib) << 20;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let size: u64 = to.run("stat -c %s /tmp/in").parse().unwrap_or(0);
        if size >= bytes {
            break;
        }
        assert!(Instant::now() < deadline, "{size} of {bytes} bytes arrived");
        std::thread::sleep(Duration::from_millis(200));
    }
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(to.run("md5sum /tmp/in | cut -d' ' -f1"), sum);
    bytes as f64 * 8.0 / secs / 1e6
}

#[test]
fn vireos_frontend_takes_the_ports_mac() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vhost-user-net-mac-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let dp = Datapath::new();
    dp.add_network("vu", None, Addressing::default()).unwrap();
    let sock = dir.join("m.sock");
    let mac = "52:54:00:20:80:07";
    vhost_port(&dp, "m1", &sock, mac);
    let dev = vireo_virtio::vhost_user::VhostUserNet::new(&sock, None).unwrap();
    assert_eq!(vireo_virtio::net::format_mac(&dev.mac()), mac);
    drop(dev);
    dp.remove_port("m1").unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn two_qemu_guests_lease_addresses_ping_and_survive_a_restart() {
    let started = Instant::now();
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("vhost-user-net-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let img = cached_image(&dir.join("image"));
    eprintln!("image ready after {:?}", started.elapsed());

    let dp = Datapath::new();
    dp.set_lease_file(&dir.join("leases.json")).unwrap();
    let addressing = Addressing {
        subnet: Some((Ipv4Addr::new(10, 208, 0, 0), 24)),
        gateway: Some(Ipv4Addr::new(10, 208, 0, 1)),
    };
    dp.add_network("vu", None, addressing).unwrap();
    dp.set_dhcp(
        "vu",
        DhcpConfig {
            first: Ipv4Addr::new(10, 208, 0, 10),
            last: Ipv4Addr::new(10, 208, 0, 50),
            lease_secs: 600,
            dns: vec![],
        },
    )
    .unwrap();
    let sockets = [dir.join("g1.sock"), dir.join("g2.sock")];
    vhost_port(&dp, "g1", &sockets[0], MACS[0]);
    vhost_port(&dp, "g2", &sockets[1], MACS[1]);
    let tap = format!("nvu{}", std::process::id());
    port(&dp, "t1", "vu", &tap, PortVlan::Access(None));
    let ns = Ns::new("vu");
    ns.attach(&tap, Some(&format!("{NS_IP}/24")));

    // Both guests boot at once.
    let (mut g1, mut g2) = std::thread::scope(|s| {
        let a = s.spawn(|| boot(&img, &sockets[0], MACS[0], "g1"));
        let b = s.spawn(|| boot(&img, &sockets[1], MACS[1], "g2"));
        (a.join().unwrap(), b.join().unwrap())
    });
    eprintln!("guests up after {:?}", started.elapsed());
    // The kernel took the offloads and the MAC the port was given.
    let features = g1.run("cat /sys/class/net/eth0/device/features");
    eprintln!("virtio features: {features}");
    let ip1 = lease(&mut g1, MACS[0]);
    let ip2 = lease(&mut g2, MACS[1]);
    eprintln!("leases: g1 {ip1}, g2 {ip2}");
    assert_ne!(ip1, ip2);
    let leases = dp.dhcp("vu").unwrap().leases();
    assert_eq!(leases.len(), 2, "{leases:?}");

    assert_eq!(ping(&mut g1, &ip2, 5), 5, "g1 -> g2");
    assert_eq!(ping(&mut g2, &ip1, 5), 5, "g2 -> g1");
    assert_eq!(ping(&mut g1, NS_IP, 5), 5, "g1 -> the namespace on the tap");
    let from_ns = ns.exec(&["busybox", "ping", "-c", "3", "-W", "3", &ip2]);
    assert!(
        String::from_utf8_lossy(&from_ns.stdout).contains("3 packets received"),
        "the namespace -> g2: {}",
        String::from_utf8_lossy(&from_ns.stdout)
    );

    // TCP with the guests' offloads: 64 KiB segments cross the switch whole.
    let mbps = transfer(&mut g1, &mut g2, &ip2, 32);
    eprintln!("guest to guest over TCP: {mbps:.0} Mbit/s");
    let back = transfer(&mut g2, &mut g1, &ip1, 8);
    eprintln!("and back: {back:.0} Mbit/s");
    let (s1, s2) = (dp.port_stats("g1").unwrap(), dp.port_stats("g2").unwrap());
    eprintln!("g1 {s1:?}\ng2 {s2:?}");
    assert!(
        s1.rx_bytes > 32 << 20 && s2.tx_bytes > 32 << 20,
        "{s1:?} {s2:?}"
    );

    // A restarted VM: the same socket and MAC, a new QEMU.
    g1.poweroff();
    let mut g1 = boot(&img, &sockets[0], MACS[0], "g1'");
    let again = lease(&mut g1, MACS[0]);
    assert_eq!(again, ip1, "the same client gets its lease back");
    assert_eq!(ping(&mut g1, &ip2, 5), 5, "restarted g1 -> g2");
    assert_eq!(ping(&mut g2, &again, 3), 3, "g2 -> restarted g1");

    let s1 = dp.port_stats("g1").unwrap();
    assert_eq!(
        (s1.connected, s1.connections),
        (Some(true), Some(2)),
        "{s1:?}"
    );

    g1.poweroff();
    g2.poweroff();
    drop(dp);
    assert!(
        !sockets[0].exists() && !sockets[1].exists(),
        "removing the ports removes their sockets"
    );
    eprintln!("done after {:?}", started.elapsed());
    let _ = std::fs::remove_dir_all(&dir);
}
