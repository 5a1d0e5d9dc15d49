//! The DHCP server against a real client: busybox udhcpc in network namespaces behind the
//! ports' taps gets its address, router and lease from the network's endpoint, keeps it
//! across a restart of the datapath (leases.json), and can then reach the gateway.

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vireo_net::datapath::dhcp::DhcpConfig;
use vireo_net::datapath::{Addressing, Datapath};

/// A scratch directory with the udhcpc script; removed at the end.
struct Dir(PathBuf);

impl Dir {
    fn new(tag: &str) -> Dir {
        let d = std::env::temp_dir().join(format!("vireo-dhcp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        // udhcpc calls the script with `bound`/`renew` and the lease in its environment.
        let script = d.join("apply.sh");
        std::fs::write(
            &script,
            "#!/bin/sh\n\
             case \"$1\" in bound|renew)\n\
             ip addr flush dev \"$interface\"\n\
             ip addr add \"$ip/$mask\" dev \"$interface\"\n\
             echo \"ip=$ip mask=$mask router=$router lease=$lease serverid=$serverid dns=$dns\" \
             > \"$(dirname \"$0\")/lease-$interface\"\n\
             ;; esac\n",
        )
        .unwrap();
        ok(&["chmod", "+x", script.to_str().unwrap()]);
        Dir(d)
    }

    fn leases(&self) -> PathBuf {
        self.0.join("leases.json")
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn datapath(leases: &Path) -> Arc<Datapath> {
    let dp = Datapath::new();
    dp.set_lease_file(leases).unwrap();
    let addressing = Addressing {
        subnet: Some((Ipv4Addr::new(10, 232, 0, 0), 24)),
        gateway: Some(Ipv4Addr::new(10, 232, 0, 1)),
    };
    dp.add_network("dh", None, addressing).unwrap();
    dp.set_dhcp(
        "dh",
        DhcpConfig {
            // The gateway inside the range on purpose: it must never be given.
            first: Ipv4Addr::new(10, 232, 0, 1),
            last: Ipv4Addr::new(10, 232, 0, 20),
            lease_secs: 600,
            dns: vec![Ipv4Addr::new(10, 232, 0, 53)],
        },
    )
    .unwrap();
    dp
}

/// Runs udhcpc once on `tap` in `ns`; returns what the script recorded as key=value.
fn udhcpc(ns: &Ns, dir: &Dir, tap: &str) -> std::collections::HashMap<String, String> {
    let script = dir.0.join("apply.sh");
    let o = ns.exec(&[
        "busybox",
        "udhcpc",
        "-i",
        tap,
        "-n",
        "-q",
        "-t",
        "5",
        "-T",
        "2",
        "-s",
        script.to_str().unwrap(),
    ]);
    assert!(
        o.status.success(),
        "udhcpc on {tap}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let rec = std::fs::read_to_string(dir.0.join(format!("lease-{tap}"))).unwrap();
    rec.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A namespace holding `tap` with a fixed MAC (so the client is the same after the tap is
/// re-created) and no address.
fn client(tag: &str, tap: &str, mac: &str) -> Ns {
    let ns = Ns::new(tag);
    ok(&["ip", "link", "set", tap, "address", mac]);
    ns.attach(tap, None);
    ns
}

#[test]
fn udhcpc_leases_distinct_addresses_and_reaches_the_gateway() {
    let dir = Dir::new("two");
    let dp = datapath(&dir.leases());
    let (ta, tb) = (
        format!("vdha{}", std::process::id()),
        format!("vdhb{}", std::process::id()),
    );
    port(&dp, "a", "dh", &ta, untagged());
    port(&dp, "b", "dh", &tb, untagged());
    let na = client("dha", &ta, "02:00:00:e8:00:0a");
    let nb = client("dhb", &tb, "02:00:00:e8:00:0b");
    let la = udhcpc(&na, &dir, &ta);
    let lb = udhcpc(&nb, &dir, &tb);
    for l in [&la, &lb] {
        assert_eq!(l["router"], "10.232.0.1", "{l:?}");
        assert_eq!(l["serverid"], "10.232.0.1", "{l:?}");
        assert_eq!(l["mask"], "24", "{l:?}");
        assert_eq!(l["lease"], "600", "{l:?}");
        assert_eq!(l["dns"], "10.232.0.53", "{l:?}");
        let ip: Ipv4Addr = l["ip"].parse().unwrap();
        let last = ip.octets()[3];
        assert!(
            ip.octets()[..3] == [10, 232, 0] && (2..=20).contains(&last),
            "{ip} is in the range and not the gateway"
        );
    }
    assert_ne!(la["ip"], lb["ip"], "two clients, two addresses");
    // The lease works: the gateway answers, and the two clients reach each other.
    let o = na.exec(&["busybox", "ping", "-c", "2", "-W", "2", "10.232.0.1"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    assert!(na.reach(&nb, &lb["ip"]));
    let srv = dp.dhcp("dh").unwrap();
    let leases = srv.leases();
    assert_eq!(leases.len(), 2, "{leases:?}");
    let st = srv.stats();
    assert!(
        st.acks >= 2 && st.offers >= 2 && st.malformed == 0,
        "{st:?}"
    );

    // Hostile messages to the server's port: counted, and the server carries on.
    let sent = na.within(|| {
        let u = std::net::UdpSocket::bind("0.0.0.0:68").unwrap();
        let mut bad: Vec<Vec<u8>> = vec![vec![], vec![1; 10], vec![2; 300]];
        let mut bootp = vec![0u8; 240];
        bootp[..3].copy_from_slice(&[1, 1, 6]);
        bootp[236..240].copy_from_slice(&[99, 130, 83, 99]);
        // An option running past the end, one cut after its code, no message type.
        for tail in [&[53u8, 200, 1][..], &[53], &[12, 2, b'a', b'b', 255]] {
            let mut m = bootp.clone();
            m.extend_from_slice(tail);
            bad.push(m);
        }
        for m in &bad {
            u.send_to(m, "10.232.0.1:67").unwrap();
        }
        bad.len() as u64
    });
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert_eq!(srv.stats().malformed, sent, "{:?}", srv.stats());
    let again = udhcpc(&na, &dir, &ta);
    assert_eq!(again["ip"], la["ip"], "the same client, the same address");
}

#[test]
fn a_restarted_datapath_gives_the_client_its_address_back() {
    let dir = Dir::new("restart");
    let tap = format!("vdhr{}", std::process::id());
    let first = {
        let dp = datapath(&dir.leases());
        port(&dp, "r", "dh", &tap, untagged());
        let ns = client("dhr", &tap, "02:00:00:e8:00:0c");
        // Another client first, so that the address is not simply the lowest free one.
        let other = format!("vdho{}", std::process::id());
        port(&dp, "o", "dh", &other, untagged());
        let no = client("dho", &other, "02:00:00:e8:00:0d");
        let lo = udhcpc(&no, &dir, &other);
        let l = udhcpc(&ns, &dir, &tap);
        assert_ne!(lo["ip"], l["ip"]);
        l["ip"].clone()
        // The datapath goes away here: taps deleted, leases flushed.
    };
    let saved = std::fs::read_to_string(dir.leases()).unwrap();
    assert!(saved.contains(&first), "{saved}");
    let dp = datapath(&dir.leases());
    port(&dp, "r", "dh", &tap, untagged());
    let ns = client("dhr2", &tap, "02:00:00:e8:00:0c");
    let again = udhcpc(&ns, &dir, &tap);
    assert_eq!(again["ip"], first, "the persisted lease");
    // A new client gets another address.
    let t2 = format!("vdhn{}", std::process::id());
    port(&dp, "n", "dh", &t2, untagged());
    let nn = client("dhn", &t2, "02:00:00:e8:00:0e");
    assert_ne!(udhcpc(&nn, &dir, &t2)["ip"], first);
}

#[test]
fn a_flood_of_discovers_exhausts_offers_not_memory_nor_leases() {
    let dir = Dir::new("flood");
    let dp = datapath(&dir.leases());
    let t = format!("vdhf{}", std::process::id());
    port(&dp, "f", "dh", &t, untagged());
    let ns = client("dhf", &t, "02:00:00:e8:00:0f");
    let mine = udhcpc(&ns, &dir, &t);
    // 3000 DISCOVERs to the subnet broadcast, each from another (invented) hardware address.
    ns.within(|| {
        let u = std::net::UdpSocket::bind("0.0.0.0:68").unwrap();
        u.set_broadcast(true).unwrap();
        for i in 0..3000u32 {
            let mut m = vec![0u8; 240];
            m[..3].copy_from_slice(&[1, 1, 6]);
            m[4..8].copy_from_slice(&i.to_be_bytes());
            m[28..34].copy_from_slice(&[0x02, 0xee, 0, (i >> 16) as u8, (i >> 8) as u8, i as u8]);
            m[236..240].copy_from_slice(&[99, 130, 83, 99]);
            m.extend_from_slice(&[53, 1, 1, 255]);
            u.send_to(&m, "10.232.0.255:67").unwrap();
        }
    });
    std::thread::sleep(std::time::Duration::from_millis(500));
    let srv = dp.dhcp("dh").unwrap();
    let st = srv.stats();
    // 19 addresses (.2-.20), one leased: 18 offers at most; every other DISCOVER that
    // arrived (the port's queue drops some of a burst) is counted as exhausted.
    assert!(st.discovers >= 500, "{st:?}");
    assert!(st.offers <= 1 + 18, "{st:?}");
    assert_eq!(st.exhausted + st.offers, st.discovers, "{st:?}");
    assert_eq!(srv.leases().len(), 1, "offers are not leases");
    // The leased client keeps its address through the flood.
    assert_eq!(udhcpc(&ns, &dir, &t)["ip"], mine["ip"]);
}

#[test]
fn a_network_delete_that_cannot_be_saved_keeps_its_dhcp_server_and_leases() {
    use vireo_net::datapath::dhcp::pool::Lease;
    use vireo_net::service::config::NetworkSpec;
    use vireo_net::service::Net;

    let dir = Dir::new("undo");
    let dp = Datapath::new();
    let net = Net::restore(dp.clone(), dir.0.join("net.json")).unwrap();
    net.create_network(&NetworkSpec {
        name: "undo".into(),
        vlan: None,
        subnet: Some("10.77.0.0/24".into()),
        gateway: Some("10.77.0.1".into()),
        dhcp: Some("10.77.0.10-10.77.0.20".into()),
    })
    .unwrap();
    let lease = Lease {
        ip: Ipv4Addr::new(10, 77, 0, 12),
        client: "mac:52:54:00:77:00:12".into(),
        mac: "52:54:00:77:00:12".into(),
        hostname: None,
        expires: u64::MAX / 2,
    };
    dp.dhcp("undo").unwrap().restore_leases(vec![lease.clone()]);

    // The save's temporary file cannot be created: the delete fails and is undone.
    let tmp = dir.0.join("net.json.tmp");
    std::fs::create_dir(&tmp).unwrap();
    assert!(net.delete_network("undo").is_err());
    let srv = dp.dhcp("undo").expect("the DHCP server is back");
    assert_eq!(srv.config().first, Ipv4Addr::new(10, 77, 0, 10));
    assert_eq!(srv.leases(), vec![lease], "with its leases");
    assert!(net.network("undo").is_ok());

    std::fs::remove_dir(&tmp).unwrap();
    net.delete_network("undo").unwrap();
    assert!(dp.dhcp("undo").is_err());
}
