//! Ordinary and hostile chains through `chain`, built with virtio-queue's mock split queue
//! in real guest memory.

use super::chain::{gather, scatter, Mem, RxPacket};
use vireo_virtio::net::{RxOffloads, MAX_PACKET_LEN, VNET_HDR_LEN};
use virtio_bindings::virtio_net::*;
use virtio_bindings::virtio_ring::VRING_DESC_F_WRITE;
use virtio_queue::desc::{split::Descriptor, RawDescriptor};
use virtio_queue::mock::MockSplitQueue;
use vm_memory::{Bytes, GuestAddress};

const MEM_SIZE: usize = 16 << 20;
const W: u16 = VRING_DESC_F_WRITE as u16;

fn mem() -> Mem {
    Mem::from_ranges(&[(GuestAddress(0), MEM_SIZE)]).unwrap()
}

fn d(addr: u64, len: u32, flags: u16) -> RawDescriptor {
    RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
}

/// A frame of `len` bytes after a header whose first byte is `flags`.
fn packet(len: usize) -> Vec<u8> {
    let mut p = vec![0u8; VNET_HDR_LEN];
    p.extend((0..len).map(|i| (i * 7 + 3) as u8));
    p
}

#[test]
fn a_transmit_chain_split_anywhere_is_gathered_whole() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    let p = packet(1000);
    // Header and the frame's first bytes in one buffer, the rest in two more.
    m.write_slice(&p[..20], GuestAddress(0x10_0000)).unwrap();
    m.write_slice(&p[20..500], GuestAddress(0x20_0000)).unwrap();
    m.write_slice(&p[500..], GuestAddress(0x30_0000)).unwrap();
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 20, 0),
            d(0x20_0000, 480, 0),
            d(0x30_0000, (p.len() - 500) as u32, 0),
        ])
        .unwrap();
    let mut buf = Vec::new();
    let n = gather(&m, chain, VNET_HDR_LEN, &mut buf).unwrap();
    assert_eq!(&buf[..n], &p[..]);
}

#[test]
fn a_legacy_header_is_widened_to_the_switch_header() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    let mut legacy = vec![1u8, 0, 0, 0, 0, 0, 14, 0, 16, 0];
    legacy.extend(std::iter::repeat_n(0xab, 60));
    m.write_slice(&legacy, GuestAddress(0x10_0000)).unwrap();
    let chain = q
        .build_desc_chain(&[d(0x10_0000, legacy.len() as u32, 0)])
        .unwrap();
    let mut buf = Vec::new();
    let n = gather(&m, chain, 10, &mut buf).unwrap();
    assert_eq!(n, 72);
    assert_eq!(&buf[..10], &legacy[..10]);
    assert_eq!(&buf[10..12], &[0, 0], "num_buffers zeroed");
    assert!(buf[12..72].iter().all(|b| *b == 0xab));
}

#[test]
fn hostile_transmit_chains_are_refused() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    let mut buf = Vec::new();
    let cases: Vec<(&str, Vec<RawDescriptor>)> = vec![
        (
            "outside guest memory",
            vec![d(MEM_SIZE as u64 - 10, 100, 0)],
        ),
        ("address overflow", vec![d(u64::MAX - 5, 100, 0)]),
        ("larger than a frame", vec![d(0x10_0000, u32::MAX, 0)]),
        (
            "larger than a frame in pieces",
            vec![
                d(0x10_0000, (MAX_PACKET_LEN / 2) as u32, 0),
                d(0x10_0000, (MAX_PACKET_LEN / 2) as u32, 0),
                d(0x10_0000, 100, 0),
            ],
        ),
        (
            "device-writable",
            vec![d(0x10_0000, 100, 0), d(0x20_0000, 100, W)],
        ),
        ("shorter than the headers", vec![d(0x10_0000, 20, 0)]),
    ];
    for (what, descs) in cases {
        let chain = q.build_desc_chain(&descs).unwrap();
        let r = gather(&m, chain, VNET_HDR_LEN, &mut buf);
        assert!(r.is_err(), "{what}: {r:?}");
        assert!(
            buf.len() <= MAX_PACKET_LEN,
            "{what}: the buffer stays bounded"
        );
    }
}

#[test]
fn a_looping_transmit_chain_ends() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 4);
    // Descriptor 0 -> 1 -> 0 -> ...: virtio-queue stops after the table size.
    let next = virtio_bindings::virtio_ring::VRING_DESC_F_NEXT as u16;
    let descs = [
        RawDescriptor::from(Descriptor::new(0x10_0000, 30, next, 1)),
        RawDescriptor::from(Descriptor::new(0x10_0000, 30, next, 0)),
    ];
    q.add_desc_chains(&descs, 0).unwrap();
    let mut queue: virtio_queue::Queue = q.create_queue().unwrap();
    use virtio_queue::QueueT;
    let chain = queue.pop_descriptor_chain(&m).unwrap();
    let mut buf = Vec::new();
    assert!(gather(&m, chain, VNET_HDR_LEN, &mut buf).is_err());
}

#[test]
fn a_frame_is_scattered_over_receive_buffers_with_one_buffer_counted() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    let p = packet(3000);
    let chain = q
        .build_desc_chain(&[
            d(0x10_0000, 12, W),
            d(0x20_0000, 1500, W),
            d(0x30_0000, 4096, W),
        ])
        .unwrap();
    // The switch hands the packet in pieces (e.g. around a VLAN tag).
    let parts: [&[u8]; 3] = [&p[..5], &p[5..100], &p[100..]];
    let packet = RxPacket::new(&parts, RxOffloads::default()).unwrap();
    let n = scatter(&m, chain, VNET_HDR_LEN, &packet).unwrap() as usize;
    assert_eq!(n, p.len());
    let mut out = vec![0u8; n];
    m.read_slice(&mut out[..12], GuestAddress(0x10_0000))
        .unwrap();
    m.read_slice(&mut out[12..1512], GuestAddress(0x20_0000))
        .unwrap();
    m.read_slice(&mut out[1512..], GuestAddress(0x30_0000))
        .unwrap();
    assert_eq!(&out[12..], &p[12..]);
    assert_eq!(&out[..10], &p[..10]);
    assert_eq!(&out[10..12], &1u16.to_le_bytes(), "num_buffers");
}

#[test]
fn hostile_receive_chains_are_refused() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    let p = packet(1000);
    let cases: Vec<(&str, Vec<RawDescriptor>)> = vec![
        ("too small", vec![d(0x10_0000, 500, W)]),
        ("device-readable", vec![d(0x10_0000, 4096, 0)]),
        (
            "outside guest memory",
            vec![d(MEM_SIZE as u64 - 100, 4096, W)],
        ),
        ("address overflow", vec![d(u64::MAX - 5, 4096, W)]),
    ];
    for (what, descs) in cases {
        let chain = q.build_desc_chain(&descs).unwrap();
        let r = scatter(
            &m,
            chain,
            VNET_HDR_LEN,
            &RxPacket::new(&[&p], RxOffloads::default()).unwrap(),
        );
        assert!(r.is_err(), "{what}: {r:?}");
    }
}

/// A tap's header with DATA_VALID, split over the first parts as the switch may hand it.
fn valid_packet(flags: u8, gso: u8) -> Vec<u8> {
    let mut p = packet(100);
    p[0] = flags;
    p[1] = gso;
    p
}

#[test]
fn a_guest_without_guest_csum_gets_zero_flags() {
    let m = mem();
    let q = MockSplitQueue::new(&m, 16);
    let p = valid_packet(VIRTIO_NET_HDR_F_DATA_VALID as u8, 0);
    let parts: [&[u8]; 2] = [&p[..1], &p[1..]];
    let chain = q.build_desc_chain(&[d(0x10_0000, 4096, W)]).unwrap();
    let packet = RxPacket::new(&parts, RxOffloads::default()).unwrap();
    let n = scatter(&m, chain, VNET_HDR_LEN, &packet).unwrap() as usize;
    assert_eq!(n, p.len());
    let mut out = vec![0u8; n];
    m.read_slice(&mut out, GuestAddress(0x10_0000)).unwrap();
    assert_eq!(
        out[0], 0,
        "DATA_VALID does not reach a driver without GUEST_CSUM"
    );
    assert_eq!(&out[12..], &p[12..]);

    // With GUEST_CSUM it does.
    let chain = q.build_desc_chain(&[d(0x20_0000, 4096, W)]).unwrap();
    let csum = RxOffloads::from_features(1 << VIRTIO_NET_F_GUEST_CSUM);
    let packet = RxPacket::new(&parts, csum).unwrap();
    scatter(&m, chain, VNET_HDR_LEN, &packet).unwrap();
    m.read_slice(&mut out[..1], GuestAddress(0x20_0000))
        .unwrap();
    assert_eq!(out[0], VIRTIO_NET_HDR_F_DATA_VALID as u8);
}

#[test]
fn offloads_the_guest_did_not_accept_and_short_packets_are_refused() {
    let csum = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    let tso4 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    let p = valid_packet(csum, 0);
    assert!(RxPacket::new(&[&p], RxOffloads::default()).is_err());
    let p = valid_packet(csum, tso4);
    let only_csum = RxOffloads::from_features(1 << VIRTIO_NET_F_GUEST_CSUM);
    assert!(RxPacket::new(&[&p], only_csum).is_err());
    let tso =
        RxOffloads::from_features((1 << VIRTIO_NET_F_GUEST_CSUM) | (1 << VIRTIO_NET_F_GUEST_TSO4));
    assert!(RxPacket::new(&[&p], tso).is_ok());
    assert!(
        RxPacket::new(&[&p[..5], &p[5..11]], tso).is_err(),
        "shorter than a header"
    );
}
