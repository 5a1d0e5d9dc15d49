//! Checks of what clients send: names, VLAN ids, MACs, subnets. Each error names the bad
//! value and what would be accepted.

use crate::error::{NetError, Result};
use std::net::{IpAddr, Ipv4Addr};

/// Linux interface names are at most IFNAMSIZ - 1 = 15 bytes.
pub use vireo_virtio::net::MAX_NAME_LEN as MAX_TAP_NAME;
pub const MAX_NAME: usize = 64;

/// A network or port name: 1–64 of `A-Z a-z 0-9 _ . -` (they appear in URLs, JSON and
/// metric labels).
pub fn name(what: &str, s: &str) -> Result<()> {
    charset(what, s, MAX_NAME)
}

/// A tap name: what the kernel accepts as an interface name, narrowed to the same charset.
pub fn tap(s: &str) -> Result<()> {
    charset("tap", s, MAX_TAP_NAME)
}

fn charset(what: &str, s: &str, max: usize) -> Result<()> {
    let ok_chars = s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if s.is_empty() || s.len() > max || !ok_chars || s == "." || s == ".." {
        return Err(NetError::Invalid(format!(
            "bad {what} name {s:?}: use 1 to {max} of A-Z a-z 0-9 _ . -"
        )));
    }
    Ok(())
}

/// An 802.1Q VLAN id: 0 means "priority tag only" and 4095 is reserved.
pub fn vlan(v: u16) -> Result<()> {
    if (1..=4094).contains(&v) {
        Ok(())
    } else {
        Err(NetError::Invalid(format!(
            "VLAN {v} is out of range: use 1 to 4094"
        )))
    }
}

/// `aa:bb:cc:dd:ee:ff` (or with `-`), returned lower-case with colons.
pub fn mac(s: &str) -> Result<String> {
    let parts: Vec<&str> = s.split([':', '-']).collect();
    let good = parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.bytes().all(|b| b.is_ascii_hexdigit()));
    if !good {
        return Err(NetError::Invalid(format!(
            "bad MAC address {s:?}: use six hex pairs like 52:54:00:12:34:56"
        )));
    }
    Ok(parts.join(":").to_ascii_lowercase())
}

/// An IPv4 or IPv6 subnet in CIDR notation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn parse(s: &str) -> Result<Cidr> {
        let bad = |why: &str| {
            NetError::Invalid(format!(
                "bad subnet {s:?}: {why}; use CIDR notation like 10.0.1.0/24"
            ))
        };
        let (addr, prefix) = s.split_once('/').ok_or_else(|| bad("no /PREFIX"))?;
        let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
        let prefix: u8 = prefix.parse().map_err(|_| bad("bad prefix length"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(bad(&format!("the prefix is longer than {max}")));
        }
        Ok(Cidr { addr, prefix })
    }

    fn bits(addr: IpAddr) -> (bool, u128) {
        match addr {
            IpAddr::V4(a) => (true, u128::from(u32::from(a)) << 96),
            IpAddr::V6(a) => (false, u128::from(a)),
        }
    }

    /// The top `prefix` bits (both families are kept in the high bits by [`Cidr::bits`]).
    fn mask(prefix: u8) -> u128 {
        u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let (v4, net) = Cidr::bits(self.addr);
        let (ip_v4, ip) = Cidr::bits(ip);
        let mask = Cidr::mask(self.prefix);
        v4 == ip_v4 && net & mask == ip & mask
    }

    /// Two subnets overlap when the shorter prefix contains the other's address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        let shorter = if self.prefix <= other.prefix {
            self
        } else {
            other
        };
        let longer = if shorter == self { other } else { self };
        shorter.contains(longer.addr)
    }
}

/// A gateway: an address inside the subnet.
pub fn gateway(subnet: &Cidr, gw: &str) -> Result<IpAddr> {
    let ip: IpAddr = gw
        .parse()
        .map_err(|_| NetError::Invalid(format!("bad gateway {gw:?}: not an IP address")))?;
    if !subnet.contains(ip) {
        return Err(NetError::Invalid(format!(
            "the gateway {gw} is outside the subnet {}/{}",
            subnet.addr, subnet.prefix
        )));
    }
    Ok(ip)
}

/// A DHCP range `FIRST-LAST` (or `FIRST,LAST`) of IPv4 addresses inside the subnet: its
/// first and last address.
pub fn dhcp_range(subnet: &Cidr, range: &str) -> Result<(Ipv4Addr, Ipv4Addr)> {
    let bad = |why: String| {
        NetError::Invalid(format!(
            "bad DHCP range {range:?}: {why}; use FIRST-LAST like 10.0.1.100-10.0.1.200"
        ))
    };
    let (a, b) = range
        .split_once([',', '-'])
        .ok_or_else(|| bad("no separator".into()))?;
    let parse = |s: &str| -> Result<Ipv4Addr> {
        // The server hands out IPv4 addresses only.
        let ip: Ipv4Addr = s
            .trim()
            .parse()
            .map_err(|_| bad(format!("{s:?} is not an IPv4 address")))?;
        if subnet.contains(IpAddr::V4(ip)) {
            Ok(ip)
        } else {
            Err(bad(format!("{ip} is outside the subnet")))
        }
    };
    let (first, last) = (parse(a)?, parse(b)?);
    if first > last {
        return Err(bad("the first address is after the last".into()));
    }
    Ok((first, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_vlans_and_macs() {
        assert!(name("network", "blue-1.x_y").is_ok());
        assert!(name("network", "").is_err());
        assert!(name("network", &"a".repeat(65)).is_err());
        assert!(name("network", "a/b").is_err());
        assert!(tap("vt-abcdefghijkl").is_ok());
        assert!(tap("vt-abcdefghijklm").is_err());
        assert!(vlan(0).is_err() && vlan(4095).is_err() && vlan(4094).is_ok());
        assert_eq!(mac("52-54-00-AB-cd-01").unwrap(), "52:54:00:ab:cd:01");
        assert!(mac("52:54:00:ab:cd").is_err() && mac("52:54:00:ab:cd:0g").is_err());
    }

    #[test]
    fn subnets_gateways_and_ranges() {
        let a = Cidr::parse("10.1.0.0/16").unwrap();
        let b = Cidr::parse("10.1.2.0/24").unwrap();
        let c = Cidr::parse("10.2.0.0/24").unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a) && !a.overlaps(&c));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().overlaps(&c));
        let v6 = Cidr::parse("fd00::/64").unwrap();
        assert!(!v6.overlaps(&a) && v6.contains("fd00::1".parse().unwrap()));
        assert!(Cidr::parse("10.0.0.0/33").is_err() && Cidr::parse("10.0.0.0").is_err());
        assert!(gateway(&b, "10.1.2.1").is_ok() && gateway(&b, "10.1.3.1").is_err());
        assert!(dhcp_range(&b, "10.1.2.10-10.1.2.20").is_ok());
        assert!(dhcp_range(&b, "10.1.2.30-10.1.2.20").is_err());
        assert!(dhcp_range(&b, "10.1.2.10-10.9.2.20").is_err());
    }
}
