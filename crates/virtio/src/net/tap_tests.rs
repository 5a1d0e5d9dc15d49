//! Opening the tap: names, errors and their advice, link state, lifetime, and what the device
//! offers the driver.

use super::harness::{config, in_netns, tap_name, GUEST_MAC};
use super::host::{if_index, if_is_up, ip};
use super::*;
use crate::VirtioDevice;

fn err(cfg: NetConfig) -> NetError {
    match Net::new(cfg) {
        Ok(_) => panic!("Net::new succeeded"),
        Err(e) => e,
    }
}

#[test]
fn names_linux_refuses_are_errors_that_say_why() {
    // Checked before anything is opened, so this needs no privilege.
    let e = err(config("vireo-tap-name-too-long"));
    assert!(matches!(e, NetError::NameTooLong { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("vireo-tap-name-too-long") && msg.contains("15"),
        "{msg}"
    );
    for bad in ["", ".", "..", "a/b", "a b", "a:b", "tab\t"] {
        let e = err(config(bad));
        assert!(matches!(e, NetError::BadName { .. }), "{bad:?}: {e:?}");
    }
}

#[test]
fn tap_offloads_follow_the_negotiated_guest_features() {
    let f = |bits: &[u32]| bits.iter().fold(0u64, |a, &b| a | 1 << b);
    let all = f(&[
        VIRTIO_NET_F_GUEST_CSUM,
        VIRTIO_NET_F_GUEST_TSO4,
        VIRTIO_NET_F_GUEST_TSO6,
        VIRTIO_NET_F_GUEST_ECN,
    ]);
    let tun = libc::TUN_F_CSUM | libc::TUN_F_TSO4 | libc::TUN_F_TSO6 | libc::TUN_F_TSO_ECN;
    assert_eq!(tap_offloads(all), tun);
    assert_eq!(tap_offloads(0), 0);
    assert_eq!(
        tap_offloads(f(&[VIRTIO_NET_F_GUEST_CSUM])),
        libc::TUN_F_CSUM
    );
    // TSO without checksum offload is meaningless: nothing.
    assert_eq!(tap_offloads(f(&[VIRTIO_NET_F_GUEST_TSO4])), 0);
    // ECN only with TSO.
    let csum_ecn = f(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_ECN]);
    assert_eq!(tap_offloads(csum_ecn), libc::TUN_F_CSUM);
    let csum_tso6 = f(&[VIRTIO_NET_F_GUEST_CSUM, VIRTIO_NET_F_GUEST_TSO6]);
    assert_eq!(tap_offloads(csum_tso6), libc::TUN_F_CSUM | libc::TUN_F_TSO6);
    // Host-side features do not touch the tap's offloads.
    assert_eq!(
        tap_offloads(f(&[VIRTIO_NET_F_CSUM, VIRTIO_NET_F_HOST_TSO4])),
        0
    );
}

#[test]
fn a_created_tap_is_up_and_disappears_with_the_device() {
    in_netns(|| {
        let name = tap_name();
        let net = Net::new(config(&name)).unwrap();
        assert_eq!(net.tap_name(), name);
        assert_ne!(if_index(&name), 0);
        assert!(if_is_up(&name));
        drop(net);
        assert_eq!(if_index(&name), 0, "the tap outlived the device");
    });
}

#[test]
fn a_percent_d_name_lets_the_kernel_number_the_tap() {
    in_netns(|| {
        let net = Net::new(config("vt%d")).unwrap();
        assert_eq!(net.tap_name(), "vt0");
        assert_ne!(if_index("vt0"), 0);
    });
}

#[test]
fn a_tap_in_use_is_busy_and_an_existing_persistent_tap_is_kept() {
    in_netns(|| {
        let name = tap_name();
        let first = Net::new(config(&name)).unwrap();
        let e = err(config(&name));
        assert!(matches!(e, NetError::Busy { .. }), "{e:?}");
        assert!(e.to_string().contains(&name) && e.to_string().contains("another process"));
        drop(first);

        let persistent = tap_name();
        ip(&["tuntap", "add", "dev", &persistent, "mode", "tap"]);
        let net = Net::new(config(&persistent)).unwrap();
        assert!(if_is_up(&persistent));
        drop(net);
        assert_ne!(
            if_index(&persistent),
            0,
            "a tap Vireo did not create was deleted"
        );
        ip(&["tuntap", "del", "dev", &persistent, "mode", "tap"]);
    });
}

#[test]
fn an_interface_that_is_not_a_tap_is_refused() {
    in_netns(|| {
        let e = err(config("lo"));
        assert!(matches!(e, NetError::NotATap { .. }), "{e:?}");
        assert!(e.to_string().contains("lo exists"), "{e}");
    });
}

/// Drops CAP_NET_ADMIN from the calling thread's effective set (capabilities are per thread).
fn drop_net_admin() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut hdr = Header {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let mut data = [Data::default(); 2];
    // SAFETY: capget fills two Data structs for version 3; both are ours.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_capget, &mut hdr, data.as_mut_ptr()) },
        0
    );
    data[0].effective &= !(1 << 12); // CAP_NET_ADMIN
                                     // SAFETY: capset reads the header and two Data structs, ours.
    assert_eq!(
        unsafe { libc::syscall(libc::SYS_capset, &mut hdr, data.as_ptr()) },
        0
    );
}

#[test]
fn without_cap_net_admin_the_error_says_what_is_needed() {
    in_netns(|| {
        drop_net_admin();
        let name = tap_name();
        let e = err(config(&name));
        assert!(matches!(e, NetError::Permission { .. }), "{e:?}");
        let msg = e.to_string();
        assert!(
            msg.contains(&name) && msg.contains("CAP_NET_ADMIN"),
            "{msg}"
        );
        assert!(
            msg.contains(&format!("ip tuntap add {name} mode tap user")),
            "{msg}"
        );
    });
}

#[test]
fn features_and_configuration_space() {
    in_netns(|| {
        let net = Net::new(config(&tap_name())).unwrap();
        assert_eq!(net.device_type(), crate::types::NET);
        assert_eq!(net.queue_max_sizes(), &[256, 256]);
        let f = net.features();
        for b in [
            VIRTIO_NET_F_MAC,
            VIRTIO_NET_F_STATUS,
            VIRTIO_NET_F_MRG_RXBUF,
            VIRTIO_NET_F_CSUM,
            VIRTIO_NET_F_GUEST_CSUM,
            VIRTIO_NET_F_HOST_TSO4,
            VIRTIO_NET_F_HOST_TSO6,
            VIRTIO_NET_F_HOST_ECN,
            VIRTIO_NET_F_GUEST_TSO4,
            VIRTIO_NET_F_GUEST_TSO6,
            VIRTIO_NET_F_GUEST_ECN,
        ] {
            assert_ne!(f & 1 << b, 0, "feature {b} not offered");
        }
        for b in [
            VIRTIO_NET_F_CTRL_VQ,
            VIRTIO_NET_F_MQ,
            VIRTIO_NET_F_GUEST_UFO,
            VIRTIO_NET_F_HOST_UFO,
            VIRTIO_NET_F_MTU,
        ] {
            assert_eq!(f & 1 << b, 0, "feature {b} offered");
        }
        let want = crate::features::VERSION_1
            | crate::features::RING_EVENT_IDX
            | crate::features::RING_INDIRECT_DESC;
        assert_eq!(f & want, want);

        let mut cfg = [0xaa; 16];
        net.read_config(0, &mut cfg);
        assert_eq!(&cfg[..6], &GUEST_MAC);
        assert_eq!(u16::from_le_bytes([cfg[6], cfg[7]]), 1, "link up");
        assert_eq!(u16::from_le_bytes([cfg[8], cfg[9]]), 1, "one queue pair");
        assert_eq!(&cfg[10..], &[0; 6]);
        let mut status = [0; 2];
        net.read_config(6, &mut status);
        assert_eq!(status, [1, 0]);
    });
}

#[test]
fn the_default_mac_is_locally_administered_and_multicast_is_refused() {
    in_netns(|| {
        let mut cfg = config(&tap_name());
        cfg.mac = None;
        let a = Net::new(cfg.clone()).unwrap().mac();
        assert_eq!(&a[..3], &[0x52, 0x54, 0x00]);
        cfg.tap = tap_name();
        let b = Net::new(cfg.clone()).unwrap().mac();
        assert_ne!(a, b, "two devices got the same random MAC");

        cfg.mac = Some([0x01, 0, 0x5e, 0, 0, 1]);
        let e = err(cfg);
        assert!(matches!(e, NetError::MulticastMac { .. }), "{e:?}");
        assert!(e.to_string().contains("01:00:5e:00:00:01"));
    });
}
