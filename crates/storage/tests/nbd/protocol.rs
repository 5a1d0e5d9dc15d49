//! Exact replies, checked with the raw client: negotiation, structured and simple replies,
//! block status.

use crate::client::*;
use crate::common::{file_device, pattern, serve, socket, TmpDir, MIB};
use crate::device;
use std::io;
use std::sync::{Arc, Mutex};
use vireo_storage::{BlockDevice, Extent};

const HOLE_ZERO: u32 = 3;

#[test]
fn info_list_and_meta_context_negotiation() {
    let dir = TmpDir::new("info");
    let srv = serve(&dir, vec![("pool/vol", device(&dir, "vol", 4 * MIB))]);
    let mut c = Client::connect(&socket(&srv));
    // INFO on the default export (the only one) names it, and gives the block sizes.
    let r = c.opt(OPT_INFO, &info_data("", &[1, 2, 3]));
    assert_eq!(r.last().unwrap().0, REP_ACK);
    let info = |t: u16| {
        r.iter()
            .find(|(k, d)| *k == REP_INFO && d[..2] == t.to_be_bytes())
            .map(|(_, d)| d[2..].to_vec())
    };
    let export = info(0).unwrap();
    assert_eq!(u64::from_be_bytes(export[..8].try_into().unwrap()), 4 * MIB);
    assert_eq!(info(1).unwrap(), b"pool/vol");
    assert!(String::from_utf8(info(2).unwrap())
        .unwrap()
        .contains("pool/vol"));
    let bs = info(3).unwrap();
    let words: Vec<u32> = bs
        .chunks(4)
        .map(|w| u32::from_be_bytes(w.try_into().unwrap()))
        .collect();
    assert_eq!(words, vec![1, 4096, 32 << 20]);
    // Still negotiating: LIST.
    let r = c.opt(OPT_LIST, &[]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, REP_SERVER);
    assert_eq!(&r[0].1[4..], b"pool/vol");
    // Metadata contexts need structured replies first.
    let r = c.set_meta_context("pool/vol", &["base:allocation"]);
    assert_eq!(r[0].0, REP_ERR_INVALID);
    c.structured_replies();
    for queries in [&[][..], &["base:"], &["base:allocation", "x-other:thing"]] {
        let r = c.opt(OPT_LIST_META_CONTEXT, &meta_data("pool/vol", queries));
        assert_eq!(r.len(), 2, "{queries:?}: {r:?}");
        assert_eq!(r[0].0, REP_META_CONTEXT);
        assert_eq!(&r[0].1[4..], b"base:allocation");
    }
    let r = c.opt(
        OPT_LIST_META_CONTEXT,
        &meta_data("pool/vol", &["x-other:thing"]),
    );
    assert_eq!(r, vec![(REP_ACK, vec![])]);
    let r = c.set_meta_context("nope", &["base:allocation"]);
    assert_eq!(r[0].0, REP_ERR_UNKNOWN);
    let r = c.set_meta_context("pool/vol", &["base:", "base:allocation"]);
    assert_eq!(r.len(), 2);
    assert_eq!(r[0].0, REP_META_CONTEXT);
    let (size, flags) = c.go("pool/vol");
    assert_eq!(size, 4 * MIB);
    // HAS_FLAGS, FLUSH, FUA, TRIM, WRITE_ZEROES, DF, MULTI_CONN; not READ_ONLY.
    assert_eq!(flags, 1 | 4 | 8 | 32 | 64 | 128 | 256);
    c.request(CMD_BLOCK_STATUS, 0, 1, 0, 4096);
    let chunk = c.chunk();
    assert_eq!(chunk.kind, CHUNK_BLOCK_STATUS);
}

#[test]
fn default_export_and_export_name() {
    let dir = TmpDir::new("default");
    let one = serve(&dir, vec![("pool/vol", device(&dir, "vol", MIB))]);
    // NBD_OPT_EXPORT_NAME "" with one export, without NO_ZEROES: 124 zero bytes follow.
    let mut c = Client::raw(&socket(&one), Some(1));
    c.send_opt(OPT_EXPORT_NAME, b"");
    let r = c.read_n(8 + 2 + 124);
    assert_eq!(u64::from_be_bytes(r[..8].try_into().unwrap()), MIB);
    assert!(r[10..].iter().all(|&b| b == 0));
    c.request(CMD_READ, 0, 7, 0, 512);
    assert_eq!(c.simple_reply(), (0, 7));
    assert_eq!(c.read_n(512), vec![0; 512]);
    drop(one);
    let dir2 = TmpDir::new("default2");
    let two = serve(
        &dir2,
        vec![
            ("a", device(&dir2, "a", MIB)),
            ("b", device(&dir2, "b", MIB)),
        ],
    );
    let mut c = Client::connect(&socket(&two));
    let r = c.opt(OPT_GO, &info_data("", &[]));
    assert_eq!(r[0].0, REP_ERR_UNKNOWN);
    assert!(String::from_utf8_lossy(&r[0].1).contains("name one"));
    // EXPORT_NAME cannot report an error: the server hangs up.
    c.send_opt(OPT_EXPORT_NAME, b"nope");
    assert!(c.closed());
}

#[test]
fn structured_reads_send_holes_as_hole_chunks() {
    let dir = TmpDir::new("holes");
    let srv = serve(&dir, vec![("v", device(&dir, "v", 4 * MIB))]);
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    c.go("v");
    let data = pattern(5, 65536);
    assert_eq!(c.write(1, MIB, &data), 0);
    let (got, kinds) = c.read_structured(2, MIB / 2, MIB as u32).unwrap();
    assert!(got[..MIB as usize / 2].iter().all(|&b| b == 0));
    assert_eq!(&got[MIB as usize / 2..][..65536], &data[..]);
    assert!(got[MIB as usize / 2 + 65536..].iter().all(|&b| b == 0));
    assert_eq!(kinds, vec![CHUNK_HOLE, CHUNK_DATA, CHUNK_HOLE]);
    // Small reads, and reads with "don't fragment", are one data chunk.
    let (got, kinds) = c.read_structured(3, MIB + 4096, 4096).unwrap();
    assert_eq!((&got[..], kinds), (&data[4096..8192], vec![CHUNK_DATA]));
    c.request(CMD_READ, 1 << 2, 4, MIB - 4096, 65536);
    let chunk = c.chunk();
    assert_eq!(
        (chunk.kind, chunk.flags & 1, chunk.handle),
        (CHUNK_DATA, 1, 4)
    );
    assert_eq!(&chunk.data[8 + 4096..], &data[..65536 - 4096]);
    // A zero-length read is one final "none" chunk.
    let (got, kinds) = c.read_structured(5, 0, 0).unwrap();
    assert_eq!((got.len(), kinds), (0, vec![CHUNK_NONE]));
}

#[test]
fn simple_replies_when_structured_was_not_negotiated() {
    let dir = TmpDir::new("simple");
    let srv = serve(&dir, vec![("v", device(&dir, "v", MIB))]);
    let mut c = Client::connect(&socket(&srv));
    c.go("v");
    let data = pattern(9, 8192);
    assert_eq!(c.write(1, 4096, &data), 0);
    c.request(CMD_READ, 0, 2, 4096, 8192);
    assert_eq!(c.simple_reply(), (0, 2));
    assert_eq!(c.read_n(8192), data);
    // An error has no payload; the connection goes on.
    c.request(CMD_READ, 0, 3, MIB - 512, 1024);
    assert_eq!(c.simple_reply(), (EINVAL, 3));
    c.request(CMD_BLOCK_STATUS, 0, 4, 0, 4096);
    assert_eq!(c.simple_reply(), (EINVAL, 4));
    c.request(CMD_FLUSH, 0, 5, 0, 0);
    assert_eq!(c.simple_reply(), (0, 5));
    c.request(CMD_READ, 0, 6, 4096, 4);
    assert_eq!(c.simple_reply(), (0, 6));
    assert_eq!(c.read_n(4), &data[..4]);
    c.request(CMD_DISC, 0, 7, 0, 0);
    assert!(c.closed());
}

#[test]
fn block_status_reports_base_allocation() {
    let dir = TmpDir::new("status");
    let (_, dev) = file_device(&dir, "v", 4 * MIB, false);
    let srv = serve(&dir, vec![("v", dev), ("w", device(&dir, "w", MIB))]);
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    c.set_meta_context("v", &["base:allocation"]);
    c.go("v");
    assert_eq!(c.write(1, 65536, &pattern(1, 65536)), 0);
    let descs = |c: &mut Client, handle, flags, off, len| {
        c.request(CMD_BLOCK_STATUS, flags, handle, off, len);
        let chunk = c.chunk();
        assert_eq!(
            (chunk.kind, chunk.flags & 1, chunk.handle),
            (CHUNK_BLOCK_STATUS, 1, handle)
        );
        assert_eq!(&chunk.data[..4], &1u32.to_be_bytes(), "context id");
        chunk.data[4..]
            .chunks(8)
            .map(|d| {
                (
                    u32::from_be_bytes(d[..4].try_into().unwrap()),
                    u32::from_be_bytes(d[4..].try_into().unwrap()),
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(
        descs(&mut c, 2, 0, 0, MIB as u32),
        vec![
            (65536, HOLE_ZERO),
            (65536, 0),
            (MIB as u32 - 131072, HOLE_ZERO)
        ]
    );
    assert_eq!(
        descs(&mut c, 3, FLAG_REQ_ONE, 0, MIB as u32),
        vec![(65536, HOLE_ZERO)]
    );
    assert_eq!(
        descs(&mut c, 4, FLAG_REQ_ONE, 65536 + 4096, 4096),
        vec![(4096, 0)]
    );
    // A trim makes a hole.
    c.request(CMD_TRIM, 0, 5, 65536, 4096);
    assert_eq!(c.status(5), 0);
    assert_eq!(
        descs(&mut c, 6, 0, 65536, 16384),
        vec![(4096, HOLE_ZERO), (12288, 0)]
    );

    // Contexts selected for another export do not carry over to this one.
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    c.set_meta_context("w", &["base:allocation"]);
    c.go("v");
    c.request(CMD_BLOCK_STATUS, 0, 1, 0, 4096);
    assert_eq!(c.status(1), EINVAL);
}

#[test]
fn dropping_the_server_closes_connections() {
    let dir = TmpDir::new("drop");
    let srv = serve(&dir, vec![("v", device(&dir, "v", MIB))]);
    let path = socket(&srv);
    let mut live = Client::connect(&path);
    live.go("v");
    let mut negotiating = Client::connect(&path);
    drop(srv);
    assert!(live.closed());
    assert!(negotiating.closed());
    assert!(!path.exists());
}

/// Records what reaches the device, to check how request flags map onto it.
struct Spy {
    inner: Arc<dyn BlockDevice>,
    log: Mutex<Vec<String>>,
}

impl Spy {
    fn note(&self, s: String) {
        self.log.lock().unwrap().push(s);
    }
}

impl BlockDevice for Spy {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn block_size(&self) -> u32 {
        self.inner.block_size()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.inner.read_at(buf, offset)
    }
    fn write_at(&self, data: &[u8], offset: u64, fua: bool) -> io::Result<()> {
        self.note(format!("write {offset} {} fua={fua}", data.len()));
        self.inner.write_at(data, offset, fua)
    }
    fn flush(&self) -> io::Result<()> {
        self.note("flush".to_string());
        self.inner.flush()
    }
    fn trim(&self, offset: u64, len: u64) -> io::Result<()> {
        self.note(format!("trim {offset} {len}"));
        self.inner.trim(offset, len)
    }
    fn write_zeroes(&self, offset: u64, len: u64, may_unmap: bool, fua: bool) -> io::Result<()> {
        self.note(format!("zeroes {offset} {len} unmap={may_unmap} fua={fua}"));
        if offset == 666 {
            return Err(io::Error::new(io::ErrorKind::StorageFull, "pool full"));
        }
        self.inner.write_zeroes(offset, len, may_unmap, fua)
    }
    fn block_status(&self, offset: u64, len: u64) -> io::Result<Vec<Extent>> {
        self.inner.block_status(offset, len)
    }
}

#[test]
fn request_flags_reach_the_device() {
    let dir = TmpDir::new("flags");
    let spy = Arc::new(Spy {
        inner: device(&dir, "v", MIB),
        log: Mutex::new(Vec::new()),
    });
    let srv = serve(&dir, vec![("v", spy.clone() as Arc<dyn BlockDevice>)]);
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    c.go("v");
    let fua = 1;
    let no_hole = 1 << 1;
    c.request(CMD_WRITE, fua, 1, 0, 4096);
    c.send(&[7; 4096]);
    assert_eq!(c.status(1), 0);
    assert_eq!(c.write(2, 4096, &[8; 512]), 0);
    c.request(CMD_WRITE_ZEROES, no_hole | fua, 3, 8192, 4096);
    assert_eq!(c.status(3), 0);
    c.request(CMD_WRITE_ZEROES, 0, 4, 8192, 4096);
    assert_eq!(c.status(4), 0);
    c.request(CMD_TRIM, fua, 5, 0, 4096);
    assert_eq!(c.status(5), 0);
    c.request(CMD_FLUSH, 0, 6, 0, 0);
    assert_eq!(c.status(6), 0);
    // Device errors map by kind.
    c.request(CMD_WRITE_ZEROES, 0, 7, 666, 1);
    assert_eq!(c.status(7), ENOSPC);
    // Flags a command does not take are refused before the device sees anything.
    c.request(CMD_TRIM, no_hole, 8, 0, 4096);
    assert_eq!(c.status(8), EINVAL);
    assert_eq!(
        *spy.log.lock().unwrap(),
        vec![
            "write 0 4096 fua=true",
            "write 4096 512 fua=false",
            "zeroes 8192 4096 unmap=false fua=true",
            "zeroes 8192 4096 unmap=true fua=false",
            "trim 0 4096",
            "flush", // FUA on a trim: flushed after it
            "flush",
            "zeroes 666 1 unmap=true fua=false",
        ]
    );
}
