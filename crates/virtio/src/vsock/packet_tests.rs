use super::*;
use crate::vsock::host::{parse_connect, Command};

#[test]
fn header_fields_sit_at_the_spec_offsets() {
    let h = Header {
        src_cid: 0x0102_0304_0506_0708,
        dst_cid: 2,
        src_port: 0x1112_1314,
        dst_port: 0x2122_2324,
        len: 0x3132_3334,
        kind: TYPE_STREAM,
        op: OP_CREDIT_UPDATE,
        flags: 0x4142_4344,
        buf_alloc: 0x5152_5354,
        fwd_cnt: 0x6162_6364,
    };
    let b = h.to_bytes();
    assert_eq!(&b[0..8], &[8, 7, 6, 5, 4, 3, 2, 1]);
    assert_eq!(&b[8..16], &[2, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(&b[16..20], &[0x14, 0x13, 0x12, 0x11]);
    assert_eq!(&b[20..24], &[0x24, 0x23, 0x22, 0x21]);
    assert_eq!(&b[24..28], &[0x34, 0x33, 0x32, 0x31]);
    assert_eq!(&b[28..32], &[1, 0, 6, 0]);
    assert_eq!(&b[32..36], &[0x44, 0x43, 0x42, 0x41]);
    assert_eq!(&b[36..40], &[0x54, 0x53, 0x52, 0x51]);
    assert_eq!(&b[40..44], &[0x64, 0x63, 0x62, 0x61]);
    assert_eq!(Header::from_bytes(&b), h);
}

#[test]
fn header_checks() {
    let ok = Header {
        src_cid: 3,
        dst_cid: HOST_CID,
        kind: TYPE_STREAM,
        op: OP_RW,
        len: MAX_PAYLOAD as u32,
        ..Header::default()
    };
    assert_eq!(check(&ok, 3), Ok(()));
    assert_eq!(check(&ok, 4), Err(Malformed::SrcCid(3)));
    let bad = |f: fn(&mut Header)| {
        let mut h = ok;
        f(&mut h);
        check(&h, 3)
    };
    assert_eq!(bad(|h| h.kind = 2), Err(Malformed::Kind(2)));
    assert_eq!(bad(|h| h.op = 8), Err(Malformed::Op(8)));
    assert_eq!(bad(|h| h.op = 0), Err(Malformed::Op(0)));
    assert_eq!(
        bad(|h| h.len = MAX_PAYLOAD as u32 + 1),
        Err(Malformed::TooLong(MAX_PAYLOAD as u32 + 1))
    );
    assert_eq!(
        bad(|h| h.op = OP_SHUTDOWN),
        Err(Malformed::PayloadOnControl {
            op: OP_SHUTDOWN,
            len: MAX_PAYLOAD as u32
        })
    );
    // Another destination CID is well formed (the muxer refuses it).
    assert_eq!(bad(|h| h.dst_cid = 9), Ok(()));
}

#[test]
fn connect_lines() {
    assert_eq!(parse_connect(b"CONNECT 52"), Command::Connect(52));
    assert_eq!(
        parse_connect(b"CONNECT 4294967295\r"),
        Command::Connect(u32::MAX)
    );
    for bad in [
        &b"CONNECT 4294967296"[..],
        b"CONNECT",
        b"CONNECT ",
        b"CONNECT +5",
        b"CONNECT 5 ",
        b"connect 5",
        b"CONNECT  5",
        b"",
    ] {
        assert_eq!(parse_connect(bad), Command::Invalid, "{:?}", bad);
    }
}
