//! DHCP messages (RFC 2131 §2) and their options (RFC 2132): parsing what clients send and
//! building what the server answers.
//!
//! Everything parsed here is hostile: each read is bounds-checked, every option's length
//! is checked against what is left of the packet, and the option walk always moves
//! forward, so no packet can make it loop or read out of bounds.

use std::net::Ipv4Addr;

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
/// RFC 2131 §3: the magic cookie that starts the options.
const COOKIE: [u8; 4] = [99, 130, 83, 99];
/// op .. file: the fixed part before the cookie.
const FIXED_LEN: usize = 236;
const OPTIONS_AT: usize = FIXED_LEN + 4;
/// BOOTP's minimum message; some old clients drop anything shorter (RFC 1542 §2.1).
const MIN_LEN: usize = 300;
/// The BROADCAST bit of `flags`.
pub const FLAG_BROADCAST: u16 = 0x8000;

/// Option codes used here (RFC 2132).
pub mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const BROADCAST: u8 = 28;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const OVERLOAD: u8 = 52;
    pub const MSG_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const MESSAGE: u8 = 56;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const END: u8 = 255;
}

/// Option 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MsgType {
    Discover = 1,
    Offer = 2,
    Request = 3,
    Decline = 4,
    Ack = 5,
    Nak = 6,
    Release = 7,
    Inform = 8,
}

impl MsgType {
    fn from_u8(v: u8) -> Option<MsgType> {
        Some(match v {
            1 => MsgType::Discover,
            2 => MsgType::Offer,
            3 => MsgType::Request,
            4 => MsgType::Decline,
            5 => MsgType::Ack,
            6 => MsgType::Nak,
            7 => MsgType::Release,
            8 => MsgType::Inform,
            _ => return None,
        })
    }
}

/// Why a message was not accepted (counted as malformed by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bad {
    Short,
    NotRequest,
    NotEthernet,
    NoCookie,
    /// An option runs past the end of the packet.
    Truncated,
    NoType,
}

/// What the server needs of a client's message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub ty: MsgType,
    pub xid: u32,
    pub flags: u16,
    pub ciaddr: Ipv4Addr,
    pub giaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    pub requested_ip: Option<Ipv4Addr>,
    pub server_id: Option<Ipv4Addr>,
    pub client_id: Option<Vec<u8>>,
    pub hostname: Option<String>,
}

impl Request {
    /// The key a client's lease is found by: its client identifier (option 61) when it
    /// sends one, its hardware address otherwise (RFC 2131 §4.2).
    pub fn client_key(&self) -> String {
        match &self.client_id {
            Some(id) => {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                format!("id:{hex}")
            }
            None => format!("mac:{}", crate::datapath::format_mac(&self.chaddr)),
        }
    }
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let s: [u8; 4] = b.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(Ipv4Addr::from(s))
}

/// The options of one area (the options field, or `file`/`sname` when overloaded), each
/// code's data concatenated across repeats (RFC 3396).
fn walk(area: &[u8], out: &mut Vec<(u8, Vec<u8>)>) -> Result<(), Bad> {
    let mut i = 0;
    while let Some(&code) = area.get(i) {
        match code {
            opt::PAD => i += 1,
            opt::END => return Ok(()),
            _ => {
                let len = usize::from(*area.get(i + 1).ok_or(Bad::Truncated)?);
                let data = area.get(i + 2..i + 2 + len).ok_or(Bad::Truncated)?;
                match out.iter_mut().find(|(c, _)| *c == code) {
                    Some((_, d)) => d.extend_from_slice(data),
                    None => out.push((code, data.to_vec())),
                }
                i += 2 + len;
            }
        }
    }
    // No END: accepted if every option was whole (some clients omit it).
    Ok(())
}

/// Parses the UDP payload of a message sent to the server's port.
pub fn parse(b: &[u8]) -> Result<Request, Bad> {
    if b.len() < OPTIONS_AT {
        return Err(Bad::Short);
    }
    if b[0] != 1 {
        return Err(Bad::NotRequest);
    }
    if b[1] != 1 || b[2] != 6 {
        return Err(Bad::NotEthernet);
    }
    if b[FIXED_LEN..OPTIONS_AT] != COOKIE {
        return Err(Bad::NoCookie);
    }
    let mut opts = Vec::new();
    walk(&b[OPTIONS_AT..], &mut opts)?;
    let get = |code: u8, opts: &[(u8, Vec<u8>)]| {
        opts.iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.clone())
    };
    // Option overload (52): more options in `file` (1), `sname` (2) or both (3).
    if let Some(&[o]) = get(opt::OVERLOAD, &opts).as_deref() {
        if o & 1 != 0 {
            walk(&b[108..236], &mut opts)?;
        }
        if o & 2 != 0 {
            walk(&b[44..108], &mut opts)?;
        }
    }
    let ty = get(opt::MSG_TYPE, &opts)
        .and_then(|d| d.first().copied())
        .and_then(MsgType::from_u8)
        .ok_or(Bad::NoType)?;
    let addr = |code| get(code, &opts).and_then(|d| ip_at(&d, 0).filter(|_| d.len() == 4));
    let chaddr: [u8; 6] = b[28..34].try_into().map_err(|_| Bad::Short)?;
    Ok(Request {
        ty,
        xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
        flags: u16::from_be_bytes([b[10], b[11]]),
        ciaddr: ip_at(b, 12).ok_or(Bad::Short)?,
        giaddr: ip_at(b, 24).ok_or(Bad::Short)?,
        chaddr,
        requested_ip: addr(opt::REQUESTED_IP),
        server_id: addr(opt::SERVER_ID),
        client_id: get(opt::CLIENT_ID, &opts).filter(|d| !d.is_empty()),
        hostname: get(opt::HOSTNAME, &opts).map(|d| {
            // Shown in listings: printable ASCII only.
            d.iter()
                .filter(|c| c.is_ascii_graphic())
                .map(|&c| char::from(c))
                .take(63)
                .collect()
        }),
    })
}

/// Builds a server message answering `req`: `yiaddr` the address given (unspecified for
/// NAK and INFORM), `options` after the message type (the END option is added).
pub fn build(req: &Request, ty: MsgType, yiaddr: Ipv4Addr, options: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut m = vec![0u8; OPTIONS_AT];
    m[0] = 2; // BOOTREPLY
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&req.xid.to_be_bytes());
    m[10..12].copy_from_slice(&req.flags.to_be_bytes());
    // ciaddr is echoed for INFORM and renewals (RFC 2131 table 3); 0 otherwise.
    if matches!(ty, MsgType::Ack) {
        m[12..16].copy_from_slice(&req.ciaddr.octets());
    }
    m[16..20].copy_from_slice(&yiaddr.octets());
    m[24..28].copy_from_slice(&req.giaddr.octets());
    m[28..34].copy_from_slice(&req.chaddr);
    m[FIXED_LEN..OPTIONS_AT].copy_from_slice(&COOKIE);
    m.extend_from_slice(&[opt::MSG_TYPE, 1, ty as u8]);
    for (code, data) in options {
        // Longer data is split into several options of the same code (RFC 3396).
        for chunk in data.chunks(255) {
            m.push(*code);
            m.push(chunk.len() as u8);
            m.extend_from_slice(chunk);
        }
    }
    m.push(opt::END);
    if m.len() < MIN_LEN {
        m.resize(MIN_LEN, opt::PAD);
    }
    m
}

#[cfg(test)]
#[path = "msg_tests.rs"]
mod tests;
