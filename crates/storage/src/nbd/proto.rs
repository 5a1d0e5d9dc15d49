//! NBD wire format: constants and the encoding of the fixed-size messages, kept free of I/O
//! so that it can be tested on bytes alone. Everything is big-endian ("network order").
//!
//! Reference: the NBD protocol document (NetworkBlockDevice/nbd, doc/proto.md).

/// `NBDMAGIC`, the first 8 bytes a server sends.
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// `IHAVEOPT`: the newstyle magic, sent by the server after NBDMAGIC and by the client before
/// every option.
pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
/// Magic of every option reply.
pub const REPLY_MAGIC: u64 = 0x3_e889_0455_65a9;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;

// Handshake flags (server) and client flags.
pub const FLAG_FIXED_NEWSTYLE: u16 = 1 << 0;
pub const FLAG_NO_ZEROES: u16 = 1 << 1;
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 1 << 0;
pub const FLAG_C_NO_ZEROES: u32 = 1 << 1;

// Transmission flags.
pub const FLAG_HAS_FLAGS: u16 = 1 << 0;
pub const FLAG_READ_ONLY: u16 = 1 << 1;
pub const FLAG_SEND_FLUSH: u16 = 1 << 2;
pub const FLAG_SEND_FUA: u16 = 1 << 3;
pub const FLAG_SEND_TRIM: u16 = 1 << 5;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 1 << 6;
pub const FLAG_SEND_DF: u16 = 1 << 7;
pub const FLAG_CAN_MULTI_CONN: u16 = 1 << 8;

// Options.
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;

// Option replies.
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;

// NBD_REP_INFO types.
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

// Commands.
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;

// Command flags.
pub const CMD_FLAG_FUA: u16 = 1 << 0;
pub const CMD_FLAG_NO_HOLE: u16 = 1 << 1;
pub const CMD_FLAG_DF: u16 = 1 << 2;
pub const CMD_FLAG_REQ_ONE: u16 = 1 << 3;

// Structured reply flags and chunk types.
pub const REPLY_FLAG_DONE: u16 = 1 << 0;
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_ERROR: u16 = (1 << 15) + 1;

// Errors.
pub const EPERM: u32 = 1;
pub const EIO: u32 = 5;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

/// `base:allocation` block status flags.
pub const STATE_HOLE: u32 = 1 << 0;
pub const STATE_ZERO: u32 = 1 << 1;

/// The one metadata context we serve, and the id we give it.
pub const BASE_ALLOCATION: &str = "base:allocation";
pub const BASE_ALLOCATION_ID: u32 = 1;

/// The largest READ or WRITE payload we accept (the spec's interoperable maximum), and the
/// maximum block size we advertise.
pub const MAX_PAYLOAD: u32 = 32 << 20;
/// Longest string (export name, query) the spec allows.
pub const MAX_STRING: usize = 4096;

pub const REQUEST_LEN: usize = 28;
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const CHUNK_HEADER_LEN: usize = 20;

/// A transmission request header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub handle: u64,
    pub offset: u64,
    pub len: u32,
}

/// Parses a request header; `None` on a bad magic (the stream is out of sync: hang up).
pub fn parse_request(b: &[u8; REQUEST_LEN]) -> Option<Request> {
    let (magic, rest) = b.split_at(4);
    if u32::from_be_bytes(array(magic)) != REQUEST_MAGIC {
        return None;
    }
    Some(Request {
        flags: u16::from_be_bytes(array(&rest[0..2])),
        kind: u16::from_be_bytes(array(&rest[2..4])),
        handle: u64::from_be_bytes(array(&rest[4..12])),
        offset: u64::from_be_bytes(array(&rest[12..20])),
        len: u32::from_be_bytes(array(&rest[20..24])),
    })
}

/// Copies the first N bytes of `s` (which callers size exactly) into an array.
fn array<const N: usize>(s: &[u8]) -> [u8; N] {
    let mut a = [0u8; N];
    let n = s.len().min(N);
    a[..n].copy_from_slice(&s[..n]);
    a
}

/// A simple reply header (a READ's data follows it).
pub fn simple_reply(error: u32, handle: u64) -> [u8; SIMPLE_REPLY_LEN] {
    let mut b = [0u8; SIMPLE_REPLY_LEN];
    b[0..4].copy_from_slice(&SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b
}

/// A structured reply chunk header; its payload of `len` bytes follows.
pub fn chunk_header(flags: u16, kind: u16, handle: u64, len: u32) -> [u8; CHUNK_HEADER_LEN] {
    let mut b = [0u8; CHUNK_HEADER_LEN];
    b[0..4].copy_from_slice(&STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&handle.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// A final `NBD_REPLY_TYPE_ERROR` chunk, with a message for the user, as `put` pieces.
pub fn error_chunk(handle: u64, error: u32, msg: &str, mut put: impl FnMut(&[u8])) {
    let msg = truncate(msg, MAX_STRING);
    put(&chunk_header(
        REPLY_FLAG_DONE,
        REPLY_TYPE_ERROR,
        handle,
        6 + msg.len() as u32,
    ));
    put(&error.to_be_bytes());
    put(&(msg.len() as u16).to_be_bytes());
    put(msg.as_bytes());
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
pub fn truncate(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// A cursor over an option's data that fails (rather than panics) past its end.
pub struct Cursor<'a> {
    data: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub fn new(data: &'a [u8]) -> Cursor<'a> {
        Cursor { data }
    }
    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.data.len() {
            return None;
        }
        let (head, tail) = self.data.split_at(n);
        self.data = tail;
        Some(head)
    }
    pub fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes(array(b)))
    }
    pub fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_be_bytes(array(b)))
    }
    pub fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_be_bytes(array(b)))
    }
    /// A string preceded by its 32-bit length, at most [`MAX_STRING`] bytes of UTF-8.
    pub fn string(&mut self) -> Option<&'a str> {
        let len = self.u32()? as usize;
        if len > MAX_STRING {
            return None;
        }
        std::str::from_utf8(self.take(len)?).ok()
    }
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// The data of `NBD_OPT_INFO` / `NBD_OPT_GO`: an export name and the information requested.
#[derive(Debug, PartialEq, Eq)]
pub struct InfoRequest<'a> {
    pub name: &'a str,
    pub requests: Vec<u16>,
}

pub fn parse_info_request(data: &[u8]) -> Option<InfoRequest<'_>> {
    let mut c = Cursor::new(data);
    let name = c.string()?;
    let n = c.u16()?;
    let requests = (0..n).map(|_| c.u16()).collect::<Option<Vec<u16>>>()?;
    c.is_empty().then_some(InfoRequest { name, requests })
}

/// The data of `NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, PartialEq, Eq)]
pub struct MetaRequest<'a> {
    pub name: &'a str,
    pub queries: Vec<&'a str>,
}

pub fn parse_meta_request(data: &[u8]) -> Option<MetaRequest<'_>> {
    let mut c = Cursor::new(data);
    let name = c.string()?;
    let n = c.u32()?;
    // Each query takes at least its 4-byte length: a count beyond that is a lie, and must not
    // size an allocation.
    if n as usize > data.len() / 4 {
        return None;
    }
    let queries = (0..n).map(|_| c.string()).collect::<Option<Vec<&str>>>()?;
    c.is_empty().then_some(MetaRequest { name, queries })
}

/// The NBD error for an I/O error of a device (see `block.rs`).
pub fn errno(e: &std::io::Error) -> u32 {
    match e.kind() {
        std::io::ErrorKind::InvalidInput => EINVAL,
        std::io::ErrorKind::PermissionDenied => EPERM,
        std::io::ErrorKind::StorageFull => ENOSPC,
        _ => match e.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => ENOSPC,
            Some(libc::EPERM) | Some(libc::EROFS) => EPERM,
            _ => EIO,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request_bytes(
        magic: u32,
        flags: u16,
        kind: u16,
        handle: u64,
        off: u64,
        len: u32,
    ) -> [u8; 28] {
        let mut v = Vec::new();
        v.extend_from_slice(&magic.to_be_bytes());
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&off.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        array(&v)
    }

    #[test]
    fn parses_request() {
        let b = request_bytes(
            REQUEST_MAGIC,
            CMD_FLAG_FUA,
            CMD_WRITE,
            0xdead_beef,
            4096,
            512,
        );
        assert_eq!(
            parse_request(&b),
            Some(Request {
                flags: CMD_FLAG_FUA,
                kind: CMD_WRITE,
                handle: 0xdead_beef,
                offset: 4096,
                len: 512
            })
        );
        let bad = request_bytes(0x1234_5678, 0, CMD_READ, 1, 0, 512);
        assert_eq!(parse_request(&bad), None);
    }

    #[test]
    fn encodes_replies() {
        let v = simple_reply(EIO, 7);
        assert_eq!(&v[..4], &SIMPLE_REPLY_MAGIC.to_be_bytes());
        assert_eq!(&v[4..8], &5u32.to_be_bytes());
        assert_eq!(&v[8..], &7u64.to_be_bytes());
        let mut v = Vec::new();
        error_chunk(9, EINVAL, "bad", |b| v.extend_from_slice(b));
        assert_eq!(v.len(), CHUNK_HEADER_LEN + 6 + 3);
        assert_eq!(&v[4..6], &REPLY_FLAG_DONE.to_be_bytes());
        assert_eq!(&v[6..8], &REPLY_TYPE_ERROR.to_be_bytes());
        assert_eq!(&v[8..16], &9u64.to_be_bytes());
        assert_eq!(&v[16..20], &9u32.to_be_bytes());
        assert_eq!(&v[20..24], &22u32.to_be_bytes());
        assert_eq!(&v[26..], b"bad");
    }

    #[test]
    fn truncates_on_char_boundary() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("abc", 10), "abc");
    }

    fn info_bytes(name: &str, reqs: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(reqs.len() as u16).to_be_bytes());
        for r in reqs {
            v.extend_from_slice(&r.to_be_bytes());
        }
        v
    }

    #[test]
    fn parses_info_request() {
        let v = info_bytes("pool/vol", &[INFO_BLOCK_SIZE, INFO_NAME]);
        let r = parse_info_request(&v).unwrap();
        assert_eq!(r.name, "pool/vol");
        assert_eq!(r.requests, vec![INFO_BLOCK_SIZE, INFO_NAME]);
        // Truncated, trailing garbage, a name longer than the data, a lying count.
        assert!(parse_info_request(&v[..v.len() - 1]).is_none());
        let mut long = v.clone();
        long.push(0);
        assert!(parse_info_request(&long).is_none());
        let mut lying = v.clone();
        lying[3] = 200;
        assert!(parse_info_request(&lying).is_none());
        let mut count = info_bytes("x", &[]);
        count[5..7].copy_from_slice(&0xffffu16.to_be_bytes());
        assert!(parse_info_request(&count).is_none());
        assert!(parse_info_request(&[]).is_none());
    }

    fn meta_bytes(name: &str, queries: &[&str]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name.as_bytes());
        v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
        for q in queries {
            v.extend_from_slice(&(q.len() as u32).to_be_bytes());
            v.extend_from_slice(q.as_bytes());
        }
        v
    }

    #[test]
    fn parses_meta_request() {
        let v = meta_bytes("", &["base:allocation", "qemu:dirty-bitmap:x"]);
        let r = parse_meta_request(&v).unwrap();
        assert_eq!(r.name, "");
        assert_eq!(r.queries, vec!["base:allocation", "qemu:dirty-bitmap:x"]);
        assert!(parse_meta_request(&v[..v.len() - 1]).is_none());
        // A count of 4 billion queries in a few bytes: refused before allocating.
        let mut huge = meta_bytes("a", &[]);
        let n = huge.len();
        huge[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_meta_request(&huge).is_none());
        // A query length beyond the data.
        let mut q = meta_bytes("a", &["base:"]);
        let at = 4 + 1 + 4;
        q[at..at + 4].copy_from_slice(&1000u32.to_be_bytes());
        assert!(parse_meta_request(&q).is_none());
        // Not UTF-8.
        let mut u = meta_bytes("a", &["b"]);
        let last = u.len() - 1;
        u[last] = 0xff;
        assert!(parse_meta_request(&u).is_none());
    }

    #[test]
    fn maps_errors() {
        use std::io::{Error, ErrorKind};
        assert_eq!(errno(&Error::new(ErrorKind::InvalidInput, "x")), EINVAL);
        assert_eq!(errno(&Error::new(ErrorKind::PermissionDenied, "x")), EPERM);
        assert_eq!(errno(&Error::new(ErrorKind::StorageFull, "x")), ENOSPC);
        assert_eq!(errno(&Error::from_raw_os_error(libc::ENOSPC)), ENOSPC);
        assert_eq!(errno(&Error::other("x")), EIO);
    }
}
