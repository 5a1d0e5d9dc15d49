//! Parsing what a tap hands the switch: the 12-byte virtio-net header (the taps use
//! IFF_VNET_HDR so that checksum and segmentation offloads survive the trip) and the Ethernet
//! header with at most one 802.1Q tag. Everything read from a tap is hostile: every access is
//! bounds-checked and anything odd is a [`Malformed`] the caller counts as a drop.

use vireo_virtio::net::{MAX_PACKET_LEN, VNET_HDR_LEN};

/// Destination and source MAC.
pub const MACS_LEN: usize = 12;
/// MACs and the EtherType (or the TPID of a tag).
pub const ETH_HDR_LEN: usize = 14;
/// An 802.1Q tag: TPID and TCI.
pub const VLAN_TAG_LEN: usize = 4;
pub const TPID_8021Q: u16 = 0x8100;
/// The QinQ outer tag: not carried in phase 1, so such frames are dropped rather than
/// confused with a frame of the VLAN of their outer tag.
pub const TPID_8021AD: u16 = 0x88a8;

/// `virtio_net_hdr` flags and GSO types the switch needs to know about.
const F_NEEDS_CSUM: u8 = 1;
const GSO_NONE: u8 = 0;

/// Why a frame was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than a virtio-net header and an Ethernet header (and the tag it announces).
    Short,
    /// Longer than any frame a tap can carry (the read was truncated).
    Oversize,
    /// VLAN id 4095 (reserved), or a QinQ tag.
    BadTag,
    /// A multicast source MAC: never a real sender; learning it would poison the table.
    BadSource,
}

/// Where the interesting parts of a packet (virtio-net header + frame) are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Frame {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    /// The 802.1Q VLAN id, if the frame is tagged (id 0, priority-only, counts as tagged).
    pub vlan: Option<u16>,
    /// Length of the Ethernet frame (without the virtio-net header).
    pub len: usize,
}

impl Frame {
    pub fn is_multicast(&self) -> bool {
        self.dst[0] & 1 != 0
    }

    /// Offset in the packet of what follows the MACs and the tag, if any: the inner
    /// EtherType and the payload.
    pub fn rest_offset(&self) -> usize {
        VNET_HDR_LEN + MACS_LEN + if self.vlan.is_some() { VLAN_TAG_LEN } else { 0 }
    }
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([*s.first()?, *s.get(1)?]))
}

fn mac(b: &[u8], at: usize) -> Option<[u8; 6]> {
    b.get(at..at.checked_add(6)?)?.try_into().ok()
}

/// Parses a packet as read from a tap: virtio-net header, then the Ethernet frame.
pub fn parse(packet: &[u8]) -> Result<Frame, Malformed> {
    if packet.len() > MAX_PACKET_LEN {
        return Err(Malformed::Oversize);
    }
    let eth = VNET_HDR_LEN;
    let dst = mac(packet, eth).ok_or(Malformed::Short)?;
    let src = mac(packet, eth + 6).ok_or(Malformed::Short)?;
    let ethertype = be16(packet, eth + MACS_LEN).ok_or(Malformed::Short)?;
    if src[0] & 1 != 0 {
        return Err(Malformed::BadSource);
    }
    let vlan = match ethertype {
        TPID_8021Q => {
            let tci = be16(packet, eth + ETH_HDR_LEN).ok_or(Malformed::Short)?;
            // The tag must be followed by the inner EtherType.
            be16(packet, eth + ETH_HDR_LEN + 2).ok_or(Malformed::Short)?;
            let vid = tci & 0x0fff;
            if vid == 0x0fff {
                return Err(Malformed::BadTag);
            }
            Some(vid)
        }
        TPID_8021AD => return Err(Malformed::BadTag),
        _ => None,
    };
    Ok(Frame {
        dst,
        src,
        vlan,
        len: packet.len() - VNET_HDR_LEN,
    })
}

/// The virtio-net header of a frame that gains (`delta` 4) or loses (`delta` -4) a VLAN tag:
/// the checksum start and the GSO header length count from the frame's start, so they move
/// with everything behind the tag. `None` if the header points inside the Ethernet header
/// (hostile or broken): such a frame cannot be retagged and is dropped.
pub fn shift_vnet_hdr(hdr: &[u8], delta: i32) -> Option<[u8; VNET_HDR_LEN]> {
    let mut out: [u8; VNET_HDR_LEN] = hdr.get(..VNET_HDR_LEN)?.try_into().ok()?;
    let flags = *out.first()?;
    let gso_type = *out.get(1)?;
    // The Ethernet header of the frame as it comes in: with its tag when one is removed.
    let header_in = if delta > 0 {
        ETH_HDR_LEN
    } else {
        ETH_HDR_LEN + VLAN_TAG_LEN
    } as i32;
    let shift = |out: &mut [u8; VNET_HDR_LEN], at: usize| -> Option<()> {
        let v = i32::from(u16::from_le_bytes([*out.get(at)?, *out.get(at + 1)?]));
        // Linux fills hdr_len in (at least the MAC header); 0 means "unknown", left as is.
        if v == 0 && at == 2 {
            return Some(());
        }
        if v < header_in {
            return None;
        }
        let nv = v.checked_add(delta)?;
        let nv = u16::try_from(nv).ok()?;
        out.get_mut(at..at + 2)?.copy_from_slice(&nv.to_le_bytes());
        Some(())
    };
    if gso_type != GSO_NONE {
        shift(&mut out, 2)?; // hdr_len
    }
    if flags & F_NEEDS_CSUM != 0 {
        shift(&mut out, 6)?; // csum_start
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(dst: [u8; 6], src: [u8; 6], tag: Option<u16>, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; VNET_HDR_LEN];
        p.extend_from_slice(&dst);
        p.extend_from_slice(&src);
        if let Some(tci) = tag {
            p.extend_from_slice(&TPID_8021Q.to_be_bytes());
            p.extend_from_slice(&tci.to_be_bytes());
        }
        p.extend_from_slice(&0x0800u16.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    const A: [u8; 6] = [0x02, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [0x02, 0, 0, 0, 0, 2];
    const BCAST: [u8; 6] = [0xff; 6];

    #[test]
    fn parses_untagged_and_tagged() {
        let f = parse(&packet(B, A, None, &[0; 46])).unwrap();
        assert_eq!((f.dst, f.src, f.vlan, f.len), (B, A, None, 60));
        assert!(!f.is_multicast());
        assert_eq!(f.rest_offset(), VNET_HDR_LEN + 12);
        // PCP bits are not part of the VLAN id.
        let f = parse(&packet(BCAST, A, Some(0xe00a), &[0; 42])).unwrap();
        assert_eq!(f.vlan, Some(10));
        assert!(f.is_multicast());
        assert_eq!(f.rest_offset(), VNET_HDR_LEN + 16);
    }

    #[test]
    fn short_frames_are_malformed() {
        let full = packet(B, A, Some(10), &[]);
        for n in 0..full.len() {
            assert_eq!(parse(&full[..n]), Err(Malformed::Short), "length {n}");
        }
        assert!(parse(&full).is_ok());
        // An untagged header alone is enough (the payload may be empty on a tap).
        assert!(parse(&packet(B, A, None, &[])).is_ok());
    }

    #[test]
    fn bad_tags_sources_and_sizes_are_malformed() {
        assert_eq!(
            parse(&packet(B, A, Some(0x0fff), &[0; 46])),
            Err(Malformed::BadTag)
        );
        let mut qinq = packet(B, A, None, &[0; 46]);
        qinq[VNET_HDR_LEN + 12..VNET_HDR_LEN + 14].copy_from_slice(&TPID_8021AD.to_be_bytes());
        assert_eq!(parse(&qinq), Err(Malformed::BadTag));
        let mcast_src = [0x01, 0, 0x5e, 0, 0, 1];
        assert_eq!(
            parse(&packet(B, mcast_src, None, &[0; 46])),
            Err(Malformed::BadSource)
        );
        let huge = vec![0u8; MAX_PACKET_LEN + 1];
        assert_eq!(parse(&huge), Err(Malformed::Oversize));
    }

    fn hdr(flags: u8, gso: u8, hdr_len: u16, csum_start: u16) -> [u8; VNET_HDR_LEN] {
        let mut h = [0u8; VNET_HDR_LEN];
        h[0] = flags;
        h[1] = gso;
        h[2..4].copy_from_slice(&hdr_len.to_le_bytes());
        h[4..6].copy_from_slice(&1448u16.to_le_bytes());
        h[6..8].copy_from_slice(&csum_start.to_le_bytes());
        h[8..10].copy_from_slice(&16u16.to_le_bytes());
        h
    }

    #[test]
    fn vnet_hdr_offsets_follow_the_tag() {
        // TCPv4 TSO, checksum partial: Ethernet 14 + IP 20 + TCP 32.
        let plain = hdr(F_NEEDS_CSUM, 1, 66, 34);
        let tagged = shift_vnet_hdr(&plain, 4).unwrap();
        assert_eq!(tagged, hdr(F_NEEDS_CSUM, 1, 70, 38));
        assert_eq!(shift_vnet_hdr(&tagged, -4).unwrap(), plain);
        // Nothing to adjust without offloads.
        let none = hdr(0, 0, 0, 0);
        assert_eq!(shift_vnet_hdr(&none, 4).unwrap(), none);
        assert_eq!(shift_vnet_hdr(&none, -4).unwrap(), none);
    }

    #[test]
    fn vnet_hdr_pointing_into_the_ethernet_header_is_refused() {
        assert_eq!(shift_vnet_hdr(&hdr(F_NEEDS_CSUM, 0, 0, 10), -4), None);
        assert_eq!(shift_vnet_hdr(&hdr(F_NEEDS_CSUM, 0, 0, 16), -4), None);
        assert_eq!(shift_vnet_hdr(&hdr(F_NEEDS_CSUM, 0, 0, 0xfffe), 4), None);
        // Adding a tag to a frame whose checksum starts inside its (untagged) header.
        assert_eq!(shift_vnet_hdr(&hdr(F_NEEDS_CSUM, 0, 0, 12), 4), None);
        assert_eq!(shift_vnet_hdr(&[0u8; 5], 4), None);
    }
}
