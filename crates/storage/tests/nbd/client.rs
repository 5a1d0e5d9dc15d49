//! A deliberately small NBD client speaking raw bytes, for what real peers cannot do:
//! check exact replies, and misbehave.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

pub const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_LIST: u32 = 3;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = (1 << 31) + 1;
pub const REP_ERR_INVALID: u32 = (1 << 31) + 3;
pub const REP_ERR_UNKNOWN: u32 = (1 << 31) + 6;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const FLAG_REQ_ONE: u16 = 1 << 3;
pub const CHUNK_NONE: u16 = 0;
pub const CHUNK_DATA: u16 = 1;
pub const CHUNK_HOLE: u16 = 2;
pub const CHUNK_BLOCK_STATUS: u16 = 5;
pub const CHUNK_ERROR: u16 = (1 << 15) + 1;
pub const EPERM: u32 = 1;
pub const EINVAL: u32 = 22;
pub const ENOSPC: u32 = 28;

pub struct Client {
    pub s: UnixStream,
    pub structured: bool,
}

/// One structured reply chunk.
#[derive(Debug)]
pub struct Chunk {
    pub flags: u16,
    pub kind: u16,
    pub handle: u64,
    pub data: Vec<u8>,
}

impl Client {
    /// Connects and reads the greeting; sends `client_flags` unless it is `None`.
    pub fn raw(path: &Path, client_flags: Option<u32>) -> Client {
        let s = UnixStream::connect(path).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut c = Client {
            s,
            structured: false,
        };
        let hello = c.read_n(18);
        assert_eq!(&hello[..8], b"NBDMAGIC");
        assert_eq!(&hello[8..16], b"IHAVEOPT");
        assert_eq!(
            u16::from_be_bytes([hello[16], hello[17]]),
            3,
            "fixed newstyle + no zeroes"
        );
        if let Some(f) = client_flags {
            c.send(&f.to_be_bytes());
        }
        c
    }

    /// Connects with fixed newstyle and no zeroes.
    pub fn connect(path: &Path) -> Client {
        Client::raw(path, Some(3))
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn read_n(&mut self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.s.read_exact(&mut v).unwrap();
        v
    }

    /// True once the server has closed the connection (reads EOF or a reset).
    pub fn closed(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.s.read(&mut b), Ok(0) | Err(_))
    }

    pub fn send_opt(&mut self, opt: u32, data: &[u8]) {
        self.send_opt_header(opt, data.len() as u32);
        self.send(data);
    }

    pub fn send_opt_header(&mut self, opt: u32, len: u32) {
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&opt.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        self.send(&v);
    }

    /// Reads one option reply: (option, type, data).
    pub fn opt_reply(&mut self) -> (u32, u32, Vec<u8>) {
        let h = self.read_n(20);
        assert_eq!(
            u64::from_be_bytes(h[..8].try_into().unwrap()),
            0x3_e889_0455_65a9
        );
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let kind = u32::from_be_bytes(h[12..16].try_into().unwrap());
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        assert!(len < 1 << 20);
        (opt, kind, self.read_n(len as usize))
    }

    /// Sends an option and reads replies up to the final one (ACK or an error).
    pub fn opt(&mut self, opt: u32, data: &[u8]) -> Vec<(u32, Vec<u8>)> {
        self.send_opt(opt, data);
        let mut out = Vec::new();
        loop {
            let (o, kind, d) = self.opt_reply();
            assert_eq!(o, opt);
            let last = kind == REP_ACK || kind & (1 << 31) != 0;
            out.push((kind, d));
            if last {
                return out;
            }
        }
    }

    pub fn structured_replies(&mut self) {
        let r = self.opt(OPT_STRUCTURED_REPLY, &[]);
        assert_eq!(r[0].0, REP_ACK);
        self.structured = true;
    }

    pub fn set_meta_context(&mut self, export: &str, queries: &[&str]) -> Vec<(u32, Vec<u8>)> {
        self.opt(OPT_SET_META_CONTEXT, &meta_data(export, queries))
    }

    /// NBD_OPT_SET_META_CONTEXT with `data` as is; the type of the first reply.
    pub fn set_meta_context_raw(&mut self, data: &[u8]) -> u32 {
        self.opt(OPT_SET_META_CONTEXT, data)[0].0
    }

    /// NBD_OPT_GO; returns (size, transmission flags).
    pub fn go(&mut self, export: &str) -> (u64, u16) {
        let replies = self.opt(OPT_GO, &info_data(export, &[]));
        assert_eq!(
            replies.last().unwrap().0,
            REP_ACK,
            "GO {export}: {replies:?}"
        );
        let info = replies
            .iter()
            .find(|(k, d)| *k == REP_INFO && d[..2] == [0, 0])
            .expect("NBD_INFO_EXPORT");
        (
            u64::from_be_bytes(info.1[2..10].try_into().unwrap()),
            u16::from_be_bytes(info.1[10..12].try_into().unwrap()),
        )
    }

    pub fn request(&mut self, kind: u16, flags: u16, handle: u64, offset: u64, len: u32) {
        let mut v = REQUEST_MAGIC.to_be_bytes().to_vec();
        v.extend_from_slice(&flags.to_be_bytes());
        v.extend_from_slice(&kind.to_be_bytes());
        v.extend_from_slice(&handle.to_be_bytes());
        v.extend_from_slice(&offset.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        self.send(&v);
    }

    /// Reads a simple reply header: (error, handle).
    pub fn simple_reply(&mut self) -> (u32, u64) {
        let magic = self.read_n(4);
        assert_eq!(
            u32::from_be_bytes(magic[..4].try_into().unwrap()),
            0x6744_6698
        );
        self.simple_rest()
    }

    fn simple_rest(&mut self) -> (u32, u64) {
        let h = self.read_n(12);
        (
            u32::from_be_bytes(h[..4].try_into().unwrap()),
            u64::from_be_bytes(h[4..12].try_into().unwrap()),
        )
    }

    pub fn chunk(&mut self) -> Chunk {
        let magic = self.read_n(4);
        assert_eq!(
            u32::from_be_bytes(magic[..4].try_into().unwrap()),
            0x668e_33ef
        );
        self.chunk_rest()
    }

    fn chunk_rest(&mut self) -> Chunk {
        let mut h = vec![0u8; 4];
        h.extend(self.read_n(16));
        let len = u32::from_be_bytes(h[16..20].try_into().unwrap());
        Chunk {
            flags: u16::from_be_bytes(h[4..6].try_into().unwrap()),
            kind: u16::from_be_bytes(h[6..8].try_into().unwrap()),
            handle: u64::from_be_bytes(h[8..16].try_into().unwrap()),
            data: self.read_n(len as usize),
        }
    }

    /// The error of a reply without payload, simple or structured (0: success).
    pub fn status(&mut self, handle: u64) -> u32 {
        let magic = self.read_n(4);
        let magic = u32::from_be_bytes(magic[..4].try_into().unwrap());
        if magic == 0x6744_6698 {
            let (err, h) = self.simple_rest();
            assert_eq!(h, handle);
            return err;
        }
        assert_eq!(magic, 0x668e_33ef, "reply magic");
        let c = self.chunk_rest();
        assert_eq!(c.handle, handle);
        assert_ne!(c.flags & 1, 0, "one-chunk reply must be final: {c:?}");
        match c.kind {
            CHUNK_NONE => 0,
            CHUNK_ERROR => u32::from_be_bytes(c.data[..4].try_into().unwrap()),
            k => panic!("unexpected chunk type {k}"),
        }
    }

    /// A structured READ: the data reassembled from its chunks, and the chunk types seen.
    pub fn read_structured(
        &mut self,
        handle: u64,
        offset: u64,
        len: u32,
    ) -> Result<(Vec<u8>, Vec<u16>), u32> {
        self.request(CMD_READ, 0, handle, offset, len);
        self.read_chunks(handle, offset, len)
    }

    /// The reply to a structured READ already sent: only its error, if any.
    pub fn read_structured_reply(&mut self, handle: u64) -> Result<(), u32> {
        self.read_chunks(handle, 0, 0).map(drop)
    }

    fn read_chunks(
        &mut self,
        handle: u64,
        offset: u64,
        len: u32,
    ) -> Result<(Vec<u8>, Vec<u16>), u32> {
        let mut data = vec![0xeeu8; len as usize];
        let mut kinds = Vec::new();
        loop {
            let c = self.chunk();
            assert_eq!(c.handle, handle);
            kinds.push(c.kind);
            match c.kind {
                CHUNK_DATA => {
                    let at = u64::from_be_bytes(c.data[..8].try_into().unwrap()) - offset;
                    data[at as usize..at as usize + c.data.len() - 8].copy_from_slice(&c.data[8..]);
                }
                CHUNK_HOLE => {
                    let at =
                        (u64::from_be_bytes(c.data[..8].try_into().unwrap()) - offset) as usize;
                    let n = u32::from_be_bytes(c.data[8..12].try_into().unwrap()) as usize;
                    data[at..at + n].fill(0);
                }
                CHUNK_ERROR => return Err(u32::from_be_bytes(c.data[..4].try_into().unwrap())),
                CHUNK_NONE => {}
                k => panic!("unexpected chunk type {k}"),
            }
            if c.flags & 1 != 0 {
                return Ok((data, kinds));
            }
        }
    }

    pub fn write(&mut self, handle: u64, offset: u64, data: &[u8]) -> u32 {
        self.request(CMD_WRITE, 0, handle, offset, data.len() as u32);
        self.send(data);
        self.status(handle)
    }
}

pub fn info_data(export: &str, requests: &[u16]) -> Vec<u8> {
    let mut v = (export.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(export.as_bytes());
    v.extend_from_slice(&(requests.len() as u16).to_be_bytes());
    for r in requests {
        v.extend_from_slice(&r.to_be_bytes());
    }
    v
}

pub fn meta_data(export: &str, queries: &[&str]) -> Vec<u8> {
    let mut v = (export.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(export.as_bytes());
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&(q.len() as u32).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}
