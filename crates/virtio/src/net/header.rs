//! What a virtio-net device may hand its driver: the header of a received frame checked and
//! fixed against the receive offloads (GUEST_*) the driver accepted. Shared by the tap
//! device's worker and the network service's vhost-user-net ports, whose frames come from
//! taps and other guests with whatever header those gave them.

use virtio_bindings::virtio_net::*;

/// The receive offloads a driver accepted, taken from its features once (at activation, at
/// SET_FEATURES) for [`RxOffloads::fix_header`] on every frame.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxOffloads(u8);

impl RxOffloads {
    const CSUM: u8 = 1 << 0;
    const TSO4: u8 = 1 << 1;
    const TSO6: u8 = 1 << 2;
    const ECN: u8 = 1 << 3;
    const ALL: u8 = Self::CSUM | Self::TSO4 | Self::TSO6 | Self::ECN;

    pub fn from_features(features: u64) -> RxOffloads {
        let bits = [
            (VIRTIO_NET_F_GUEST_CSUM, Self::CSUM),
            (VIRTIO_NET_F_GUEST_TSO4, Self::TSO4),
            (VIRTIO_NET_F_GUEST_TSO6, Self::TSO6),
            (VIRTIO_NET_F_GUEST_ECN, Self::ECN),
        ]
        .into_iter()
        .filter(|(feature, _)| features & (1 << feature) != 0)
        .fold(0, |bits, (_, b)| bits | b);
        RxOffloads(bits)
    }

    /// As one byte, for a device that keeps it in an atomic.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Back from [`RxOffloads::bits`]; other bits are ignored.
    pub const fn from_bits(bits: u8) -> RxOffloads {
        RxOffloads(bits & Self::ALL)
    }

    /// Makes `hdr` (a received frame's virtio-net header, at least its `flags` and
    /// `gso_type`) what the driver may see: without GUEST_CSUM the flags are zero, as the
    /// spec requires (virtio 1.2, 5.1.6.4.1: a tap's DATA_VALID must not reach such a
    /// driver), and the frame is refused (`false`) if it needs a checksum or a segmentation
    /// (or ECN) the driver did not accept: such a frame cannot be made right here.
    pub fn fix_header(self, hdr: &mut [u8]) -> bool {
        let [flags, gso, ..] = hdr else {
            return false;
        };
        if self.0 & Self::CSUM == 0 {
            if *flags & VIRTIO_NET_HDR_F_NEEDS_CSUM as u8 != 0 {
                return false;
            }
            *flags = 0;
        }
        let ecn = VIRTIO_NET_HDR_GSO_ECN as u8;
        if *gso & ecn != 0 && self.0 & Self::ECN == 0 {
            return false;
        }
        match u32::from(*gso & !ecn) {
            VIRTIO_NET_HDR_GSO_NONE => true,
            VIRTIO_NET_HDR_GSO_TCPV4 => self.0 & Self::TSO4 != 0,
            VIRTIO_NET_HDR_GSO_TCPV6 => self.0 & Self::TSO6 != 0,
            // UDP (UFO) is never offered, and anything else is not a GSO type.
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn bit(b: u32) -> u64 {
        1 << b
    }

    const CSUM: u8 = VIRTIO_NET_HDR_F_NEEDS_CSUM as u8;
    const VALID: u8 = VIRTIO_NET_HDR_F_DATA_VALID as u8;
    const TCPV4: u8 = VIRTIO_NET_HDR_GSO_TCPV4 as u8;
    const TCPV6: u8 = VIRTIO_NET_HDR_GSO_TCPV6 as u8;
    const UDP: u8 = VIRTIO_NET_HDR_GSO_UDP as u8;
    const ECN: u8 = VIRTIO_NET_HDR_GSO_ECN as u8;

    fn fix(features: u64, flags: u8, gso: u8) -> Option<u8> {
        let mut hdr = [flags, gso, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        RxOffloads::from_features(features)
            .fix_header(&mut hdr)
            .then_some(hdr[0])
    }

    #[test]
    fn without_guest_csum_the_flags_are_zeroed_or_the_frame_refused() {
        assert_eq!(fix(0, VALID, 0), Some(0), "DATA_VALID is cleared");
        assert_eq!(fix(0, 0, 0), Some(0));
        assert_eq!(fix(0, CSUM, 0), None, "a partial checksum cannot go");
        let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
        assert_eq!(fix(csum, VALID, 0), Some(VALID), "kept with GUEST_CSUM");
        assert_eq!(fix(csum, CSUM, 0), Some(CSUM));
    }

    #[test]
    fn only_accepted_segmentation_goes() {
        let csum = bit(VIRTIO_NET_F_GUEST_CSUM);
        let tso4 = csum | bit(VIRTIO_NET_F_GUEST_TSO4);
        let tso6 = csum | bit(VIRTIO_NET_F_GUEST_TSO6);
        let ecn = tso4 | bit(VIRTIO_NET_F_GUEST_ECN);
        assert_eq!(fix(csum, CSUM, TCPV4), None);
        assert_eq!(fix(tso4, CSUM, TCPV4), Some(CSUM));
        assert_eq!(fix(tso4, CSUM, TCPV6), None);
        assert_eq!(fix(tso6, CSUM, TCPV6), Some(CSUM));
        assert_eq!(fix(tso4, CSUM, TCPV4 | ECN), None, "ECN needs GUEST_ECN");
        assert_eq!(fix(ecn, CSUM, TCPV4 | ECN), Some(CSUM));
        assert_eq!(fix(u64::MAX, CSUM, UDP), None, "UFO is never offered");
        assert_eq!(fix(u64::MAX, CSUM, 0x42), None, "not a GSO type");
    }

    #[test]
    fn bits_round_trip_and_short_headers_are_refused() {
        let o = RxOffloads::from_features(u64::MAX);
        assert_eq!(RxOffloads::from_bits(o.bits()), o);
        assert_eq!(RxOffloads::from_bits(0xff), o);
        assert!(!o.fix_header(&mut [0]));
    }
}
