//! The datapath with real Linux stacks: each port's tap is moved into a network namespace
//! of the test's own, with addresses from 10.2xx test ranges. Needs root, iproute2, iperf3.

mod common;

use common::*;
use std::time::Duration;
use vireo_net::datapath::{Datapath, PortConfig, PortVlan, QosConfig};
use vireo_net::NetError;

#[test]
fn one_network_connects_and_another_is_isolated() {
    let dp = Datapath::new();
    dp.add_network("red", None, Default::default()).unwrap();
    dp.add_network("blue", None, Default::default()).unwrap();
    port(&dp, "r1", "red", "ndpis1", untagged());
    port(&dp, "r2", "red", "ndpis2", untagged());
    port(&dp, "b1", "blue", "ndpis3", untagged());
    let (n1, n2, n3) = (Ns::new("is1"), Ns::new("is2"), Ns::new("is3"));
    n1.attach("ndpis1", Some("10.201.0.1/24"));
    n2.attach("ndpis2", Some("10.201.0.2/24"));
    // The same subnet on purpose: only the switch keeps it apart.
    n3.attach("ndpis3", Some("10.201.0.3/24"));

    assert!(
        n1.reach(&n2, "10.201.0.2"),
        "same network must connect: {:?} {:?} {:?}",
        dp.port_stats("r1"),
        dp.port_stats("r2"),
        dp.mac_table()
    );
    assert!(!n3.try_reach(&n1, "10.201.0.1"), "another network must not");
    assert!(!n1.try_reach(&n3, "10.201.0.3"), "another network must not");

    let table = dp.mac_table();
    let (m1, m3) = (n1.mac("ndpis1"), n3.mac("ndpis3"));
    assert!(table.contains(&(
        m1.clone(),
        "red".into(),
        "r1".into(),
        table_age(&table, &m1)
    )));
    assert!(table.iter().any(|e| e.0 == n2.mac("ndpis2") && e.2 == "r2"));
    assert!(table
        .iter()
        .any(|e| e.0 == m3 && e.1 == "blue" && e.2 == "b1"));
    assert!(
        !table.iter().any(|e| e.0 == m1 && e.1 == "blue"),
        "red's MAC leaked into blue: {table:?}"
    );

    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let tcp = tcp_bps(&n1.iperf(&n2, "10.201.0.2", &["-t", "3"]));
    println!("datapath iperf3 TCP: {:.2} Gbit/s", tcp / 1e9);
    assert!(tcp > 0.0);

    let s1 = dp.port_stats("r1").unwrap();
    let s2 = dp.port_stats("r2").unwrap();
    assert!(s1.rx_packets > 0 && s1.tx_packets > 0, "{s1:?}");
    assert!(
        s1.rx_bytes > 100_000_000,
        "iperf3's data entered at r1: {s1:?}"
    );
    assert!(s2.tx_bytes > 100_000_000, "and left at r2: {s2:?}");
    assert!(s2.tx_bytes <= s1.rx_bytes, "{s1:?} {s2:?}");
}

fn table_age(table: &[(String, String, String, u64)], mac: &str) -> u64 {
    table.iter().find(|e| e.0 == mac).map_or(0, |e| e.3)
}

/// An ARP request for `target` from `sha`/`spa`, tagged with `vid` if given.
fn arp_request(sha: [u8; 6], spa: [u8; 4], target: [u8; 4], vid: Option<u16>) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&sha);
    if let Some(v) = vid {
        f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
    }
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa);
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target);
    f
}

/// Waits up to a second for an ARP reply on the socket; its VLAN id as the kernel saw it
/// (AF_PACKET reports a received tag in PACKET_AUXDATA, not in the frame).
fn arp_reply_vlan(fd: i32) -> Option<Option<u16>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < deadline {
        let mut buf = [0u8; 2048];
        let mut ctl = [0u64; 16];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: msghdr is plain data, all zeroes valid; pointers set below.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&ctl);
        // SAFETY: msg and the buffers it points to live across the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, 0) };
        if n < 14 {
            continue;
        }
        let f = &buf[..n as usize];
        if f[12..14] != [0x08, 0x06] || f.get(20..22) != Some(&[0, 2]) {
            continue;
        }
        let mut vlan = None;
        // SAFETY: the CMSG_* walk stays within msg_control as the kernel filled it.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_PACKET && (*c).cmsg_type == libc::PACKET_AUXDATA {
                    let aux: libc::tpacket_auxdata =
                        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast());
                    if aux.tp_status & libc::TP_STATUS_VLAN_VALID != 0 {
                        vlan = Some(aux.tp_vlan_tci & 0x0fff);
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
        }
        return Some(vlan);
    }
    None
}

/// A raw socket on `dev` in the calling thread's namespace, with AUXDATA and a short
/// receive timeout.
fn raw_socket(dev: &str) -> (i32, i32) {
    let cname = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) } as i32;
    assert!(ifindex > 0, "no interface {dev}");
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(fd >= 0, "AF_PACKET: {}", std::io::Error::last_os_error());
    // SAFETY: sockaddr_ll is plain data, all zeroes valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = ifindex;
    let one: i32 = 1;
    let tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 200_000,
    };
    // SAFETY: the option values and address live across the calls, sizes given.
    unsafe {
        let sa_ptr = (&sa as *const libc::sockaddr_ll).cast();
        let sa_len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
        assert_eq!(libc::bind(fd, sa_ptr, sa_len), 0);
        let one_ptr = (&one as *const i32).cast();
        libc::setsockopt(fd, libc::SOL_PACKET, libc::PACKET_AUXDATA, one_ptr, 4);
        let tv_ptr = (&tv as *const libc::timeval).cast();
        let tv_len = std::mem::size_of::<libc::timeval>() as u32;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_RCVTIMEO, tv_ptr, tv_len);
    }
    (fd, ifindex)
}

#[test]
fn vlans_isolate_access_ports_and_a_trunk_reaches_its_vlan() {
    let dp = Datapath::new();
    dp.add_network("lan", None, Default::default()).unwrap();
    port(&dp, "a10", "lan", "ndpvl1", PortVlan::Access(Some(10)));
    port(&dp, "a20", "lan", "ndpvl2", PortVlan::Access(Some(20)));
    port(&dp, "t", "lan", "ndpvl3", PortVlan::Trunk(vec![10, 30]));
    let (n1, n2, n3) = (Ns::new("vl1"), Ns::new("vl2"), Ns::new("vl3"));
    n1.attach("ndpvl1", Some("10.202.0.1/24"));
    n2.attach("ndpvl2", Some("10.202.0.2/24"));
    // This kernel has no 802.1Q module, so the trunk's far end is a raw socket in n3.
    n3.attach("ndpvl3", None);

    let me = [2, 0, 0, 0, 0x77, 3];
    let replies = n3.within(move || {
        let (fd, _) = raw_socket("ndpvl3");
        let mut out = Vec::new();
        for (vid, target) in [
            (10, [10, 202, 0, 1]),
            (20, [10, 202, 0, 2]),
            (30, [10, 202, 0, 1]),
        ] {
            send_on(fd, &arp_request(me, [10, 202, 0, 3], target, Some(vid)));
            out.push(arp_reply_vlan(fd));
        }
        send_on(fd, &arp_request(me, [10, 202, 0, 3], [10, 202, 0, 1], None));
        out.push(arp_reply_vlan(fd));
        // SAFETY: fd is ours and closed once.
        unsafe { libc::close(fd) };
        out
    });
    assert_eq!(
        replies[0],
        Some(Some(10)),
        "VLAN 10 on the trunk reaches access VLAN 10, tagged back"
    );
    assert_eq!(replies[1], None, "VLAN 20 is not on the trunk");
    assert_eq!(replies[2], None, "nobody is in VLAN 30");
    assert_eq!(replies[3], None, "untagged frames do not pass a trunk");
    let t = dp.port_stats("t").unwrap();
    assert!(
        t.drops >= 2,
        "VLAN 20 and the untagged frame are drops: {t:?}"
    );
    assert!(dp
        .mac_table()
        .iter()
        .any(|e| e.0 == "02:00:00:00:77:03" && e.2 == "t"));

    assert!(
        !n2.try_reach(&n1, "10.202.0.1"),
        "VLAN 20 must not reach VLAN 10"
    );
}

fn send_on(fd: i32, frame: &[u8]) {
    // SAFETY: the frame lives across the call, its length given.
    let n = unsafe { libc::send(fd, frame.as_ptr().cast(), frame.len(), 0) };
    assert_eq!(
        n,
        frame.len() as isize,
        "{}",
        std::io::Error::last_os_error()
    );
}

#[test]
fn qos_limits_the_rate_within_ten_percent() {
    let dp = Datapath::new();
    dp.add_network("q", None, Default::default()).unwrap();
    port(&dp, "q1", "q", "ndpqs1", untagged());
    port(&dp, "q2", "q", "ndpqs2", untagged());
    let (n1, n2) = (Ns::new("qs1"), Ns::new("qs2"));
    n1.attach("ndpqs1", Some("10.203.0.1/24"));
    n2.attach("ndpqs2", Some("10.203.0.2/24"));
    assert!(n1.reach(&n2, "10.203.0.2"));
    let rate = 50_000_000u64;
    let qos = QosConfig {
        rate: Some(rate),
        ..QosConfig::default()
    };
    dp.set_qos("q1", &qos).unwrap();
    let _heavy = HEAVY.lock().unwrap_or_else(|e| e.into_inner());
    let got = tcp_bps(&n1.iperf(&n2, "10.203.0.2", &["-t", "5"]));
    println!("QoS {rate} bit/s: iperf3 TCP measured {got:.0} bit/s");
    let ratio = got / rate as f64;
    assert!((0.9..=1.1).contains(&ratio), "measured {got} for {rate}");
}

/// Sends raw frames out of a tap that is still in this namespace (AF_PACKET): the switch
/// reads them from the tap's other end as hostile input.
fn send_raw(dev: &str, frames: &[Vec<u8>]) {
    let cname = std::ffi::CString::new(dev).unwrap();
    // SAFETY: a NUL-terminated name that outlives the call.
    let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    assert!(ifindex > 0, "no interface {dev}");
    // SAFETY: socket() takes no pointers.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: sockaddr_ll is plain data, all zeroes valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    for f in frames {
        // SAFETY: the frame and the address live across the call, their lengths given.
        let n = unsafe {
            libc::sendto(
                fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&sa as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        assert_eq!(n, f.len() as isize, "{}", std::io::Error::last_os_error());
    }
    // SAFETY: fd is ours and closed once.
    unsafe { libc::close(fd) };
}

fn eth(src: [u8; 6], ethertype: u16, rest: &[u8]) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&src);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(rest);
    f
}

#[test]
fn garbage_frames_are_counted_drops() {
    let dp = Datapath::new();
    dp.add_network("g", None, Default::default()).unwrap();
    port(&dp, "g0", "g", "ndpgb0", untagged());
    port(&dp, "g1", "g", "ndpgb1", untagged());
    port(&dp, "g2", "g", "ndpgb2", untagged());
    let (n1, n2) = (Ns::new("gb1"), Ns::new("gb2"));
    n1.attach("ndpgb1", Some("10.204.0.1/24"));
    n2.attach("ndpgb2", Some("10.204.0.2/24"));
    let me = [2, 0, 0, 0, 0x99, 1];
    let garbage = vec![
        eth(me, 0x8100, &[0, 10]),                    // a tag cut short
        eth(me, 0x8100, &[0x0f, 0xff, 8, 0]),         // VLAN 4095
        eth(me, 0x88a8, &[0, 5, 8, 0]),               // QinQ
        eth([1, 0, 0x5e, 0, 0, 1], 0x0800, &[0; 46]), // multicast source
        eth(me, 0x8100, &[0, 10, 8, 0]),              // tagged on an access port
    ];
    let before = dp.port_stats("g0").unwrap();
    send_raw("ndpgb0", &garbage);
    // The switch is still forwarding afterwards.
    assert!(n1.reach(&n2, "10.204.0.2"));
    let after = dp.port_stats("g0").unwrap();
    assert!(
        after.drops - before.drops >= garbage.len() as u64,
        "{before:?} -> {after:?}"
    );
    assert!(after.rx_packets - before.rx_packets >= garbage.len() as u64);
    assert!(
        !dp.mac_table().iter().any(|e| e.0 == "01:00:5e:00:00:01"),
        "a multicast source was learned"
    );
}

fn link_exists(name: &str) -> bool {
    run(&["ip", "link", "show", name]).status.success()
}

#[test]
fn ports_come_and_go_cleanly_and_bad_taps_are_refused() {
    let dp = Datapath::new();
    dp.add_network("c", Some(100), Default::default()).unwrap();
    port(&dp, "c1", "c", "ndprm0", untagged());
    assert!(link_exists("ndprm0"));
    let e = dp.remove_network("c").unwrap_err();
    assert!(matches!(e, NetError::Conflict(_)), "{e}");
    dp.remove_port("c1").unwrap();
    assert!(!link_exists("ndprm0"), "the port's tap must go with it");

    let cfg = |tap: &str| PortConfig {
        name: "c2".into(),
        network: "c".into(),
        tap: tap.into(),
        vhost_user: None,
        mac: None,
        vlan: untagged(),
    };
    let e = dp.add_port(&cfg("lo")).unwrap_err();
    assert!(
        matches!(e, NetError::Conflict(_)) && e.to_string().contains("lo"),
        "{e}"
    );
    let held = vireo_virtio::net::Tap::open("ndpbz0").unwrap();
    let e = dp.add_port(&cfg("ndpbz0")).unwrap_err();
    assert!(matches!(e, NetError::Conflict(_)), "{e}");
    assert!(e.to_string().contains("in use"), "{e}");
    drop(held);
    let e = dp.add_port(&cfg("bad/name")).unwrap_err();
    assert!(matches!(e, NetError::Invalid(_)), "{e}");
    let mut other = cfg("ndprm1");
    other.network = "nope".into();
    assert!(matches!(dp.add_port(&other), Err(NetError::NotFound(_))));
    other.network = "c".into();
    other.vlan = PortVlan::Trunk(vec![4095]);
    assert!(matches!(dp.add_port(&other), Err(NetError::Invalid(_))));
    assert!(!link_exists("ndprm1"));

    // Dropping the datapath removes the taps of the ports it still has.
    port(&dp, "c3", "c", "ndprm2", untagged());
    assert!(link_exists("ndprm2"));
    drop(dp);
    assert!(!link_exists("ndprm2"));
}

/// A port's thread stages small frames and writes them together, while larger ones go at
/// once: a burst mixing both, longer than a batch, must arrive whole, unchanged, in order,
/// and counted.
#[test]
fn a_burst_of_small_and_large_frames_arrives_whole_and_in_order() {
    let dp = Datapath::new();
    dp.add_network("o", None, Default::default()).unwrap();
    port(&dp, "o0", "o", "ndpob0", untagged());
    port(&dp, "o1", "o", "ndpob1", untagged());
    // Frames above the staging limit need a larger MTU on both taps (they stay in the
    // test's namespace: raw sockets send into one and read from the other).
    for tap in ["ndpob0", "ndpob1"] {
        ok(&["ip", "link", "set", "dev", tap, "mtu", "9000"]);
    }
    let (rx, _) = raw_socket("ndpob1");
    let big: i32 = 8 << 20;
    // SAFETY: the option value lives across the call, its size given.
    unsafe {
        let p = (&big as *const i32).cast();
        libc::setsockopt(rx, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, p, 4);
    }
    let src = [2, 0, 0, 0, 0x99, 2];
    let frames: Vec<Vec<u8>> = (0..600u32)
        .map(|i| {
            let mut rest = i.to_be_bytes().to_vec();
            // Every seventh frame is larger than what is staged.
            let len = if i % 7 == 3 { 4000 } else { 46 };
            rest.extend((4..len).map(|k| (i as usize * 31 + k) as u8));
            let mut f = eth(src, 0x88b5, &rest);
            f[..6].copy_from_slice(&[2, 0, 0, 0, 0x99, 3]); // unknown unicast: flooded
            f
        })
        .collect();
    let before = dp.port_stats("o1").unwrap();
    send_raw("ndpob0", &frames);

    let mut got = Vec::new();
    let mut buf = vec![0u8; 10_000];
    loop {
        // SAFETY: buf lives across the call, its length given.
        let n = unsafe { libc::recv(rx, buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            break; // the socket's 200 ms timeout: nothing more is coming
        }
        let f = &buf[..n as usize];
        if f.len() > 14 && f[12..14] == [0x88, 0xb5] {
            got.push(f.to_vec());
        }
    }
    // SAFETY: rx is ours and closed once.
    unsafe { libc::close(rx) };
    let seqs: Vec<u32> = got
        .iter()
        .map(|f| u32::from_be_bytes([f[14], f[15], f[16], f[17]]))
        .collect();
    assert_eq!(seqs, (0..600).collect::<Vec<_>>(), "lost or reordered");
    for (i, (g, f)) in got.iter().zip(&frames).enumerate() {
        assert!(g == f, "frame {i} changed on the way");
    }
    let after = dp.port_stats("o1").unwrap();
    assert!(after.tx_packets - before.tx_packets >= 600, "{after:?}");
    assert_eq!(after.drops, before.drops);
}
