//! Hostile clients: bad magic, absurd lengths, out-of-range requests, truncated messages.
//! The server must refuse them (with an error where the protocol allows, by hanging up where
//! it does not), never allocate what a length field claims, and keep serving others.

use crate::client::*;
use crate::common::{qemu_io, serve, socket, TmpDir, MIB};
use crate::device;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// The server still serves a well-behaved client.
fn still_serves(uri: &str) {
    qemu_io(uri, &["write -P 0x5e 0 4k", "read -P 0x5e 0 4k"]);
}

#[test]
fn garbage_during_the_handshake_hangs_up() {
    let dir = TmpDir::new("hostile-hs");
    let srv = serve(&dir, vec![("v", device(&dir, "v", MIB))]);
    let path = socket(&srv);
    // Unknown client flags.
    let mut c = Client::raw(&path, Some(0xffff_0000));
    assert!(c.closed());
    // Not an option magic.
    let mut c = Client::connect(&path);
    c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(c.closed());
    // Option lengths of 4 GiB and of 1 MiB: hung up on at once, not read nor allocated.
    for len in [u32::MAX, 1 << 20] {
        let mut c = Client::connect(&path);
        let mut v = IHAVEOPT.to_be_bytes().to_vec();
        v.extend_from_slice(&OPT_GO.to_be_bytes());
        v.extend_from_slice(&len.to_be_bytes());
        c.send(&v);
        let t = Instant::now();
        assert!(c.closed());
        assert!(t.elapsed() < Duration::from_secs(5));
    }
    still_serves(&srv.uri("v"));
}

#[test]
fn malformed_options_get_errors_and_negotiation_goes_on() {
    let dir = TmpDir::new("hostile-opt");
    let srv = serve(&dir, vec![("v", device(&dir, "v", MIB))]);
    let mut c = Client::connect(&socket(&srv));
    // Unknown options, STARTTLS included.
    assert_eq!(c.opt(42, b"whatever")[0].0, REP_ERR_UNSUP);
    assert_eq!(c.opt(5, &[])[0].0, REP_ERR_UNSUP);
    // A name length beyond the data; a request count beyond it; trailing bytes.
    let mut bad = info_data("v", &[]);
    bad[3] = 200;
    assert_eq!(c.opt(OPT_GO, &bad)[0].0, REP_ERR_INVALID);
    let mut bad = info_data("v", &[]);
    let n = bad.len();
    bad[n - 2..].copy_from_slice(&1000u16.to_be_bytes());
    assert_eq!(c.opt(OPT_INFO, &bad)[0].0, REP_ERR_INVALID);
    let mut bad = info_data("v", &[]);
    bad.push(0);
    assert_eq!(c.opt(OPT_GO, &bad)[0].0, REP_ERR_INVALID);
    assert_eq!(c.opt(OPT_GO, &[1, 2])[0].0, REP_ERR_INVALID);
    // An unknown export; data where none belongs.
    assert_eq!(c.opt(OPT_GO, &info_data("nope", &[]))[0].0, REP_ERR_UNKNOWN);
    assert_eq!(c.opt(OPT_LIST, b"x")[0].0, REP_ERR_INVALID);
    assert_eq!(c.opt(OPT_STRUCTURED_REPLY, b"x")[0].0, REP_ERR_INVALID);
    c.structured_replies();
    // A metadata query count of 4 billion in a few bytes; a query longer than the data.
    let mut bad = meta_data("v", &[]);
    let n = bad.len();
    bad[n - 4..].copy_from_slice(&u32::MAX.to_be_bytes());
    assert_eq!(c.set_meta_context_raw(&bad), REP_ERR_INVALID);
    let mut bad = meta_data("v", &["base:allocation"]);
    bad[9..13].copy_from_slice(&100_000u32.to_be_bytes());
    assert_eq!(c.set_meta_context_raw(&bad), REP_ERR_INVALID);
    // Not UTF-8.
    assert_eq!(
        c.opt(OPT_GO, &[0, 0, 0, 2, 0xff, 0xfe, 0, 0])[0].0,
        REP_ERR_INVALID
    );
    // After all that, the export is still there.
    let (size, _) = c.go("v");
    assert_eq!(size, MIB);
    assert_eq!(c.write(1, 0, &[1; 512]), 0);
}

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() {
    let dir = TmpDir::new("hostile-req");
    let srv = serve(&dir, vec![("v", device(&dir, "v", MIB))]);
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    c.go("v");
    let mut h = 0;
    let mut expect = |c: &mut Client, kind, flags, offset, len, payload: Option<&[u8]>, err| {
        h += 1;
        c.request(kind, flags, h, offset, len);
        if let Some(p) = payload {
            c.send(p);
        }
        if kind == CMD_READ {
            assert_eq!(c.read_structured_reply(h), Err(err), "read {offset}+{len}");
        } else {
            assert_eq!(c.status(h), err, "command {kind} {offset}+{len}");
        }
    };
    // Past the end, and offset + length overflowing.
    expect(&mut c, CMD_READ, 0, MIB - 4096, 8192, None, EINVAL);
    expect(&mut c, CMD_READ, 0, u64::MAX - 100, 4096, None, EINVAL);
    expect(&mut c, CMD_READ, 0, MIB + 1, 0, None, EINVAL);
    expect(&mut c, CMD_TRIM, 0, MIB, 1, None, EINVAL);
    expect(&mut c, CMD_WRITE_ZEROES, 0, u64::MAX, 2, None, ENOSPC);
    expect(&mut c, CMD_BLOCK_STATUS, 0, 0, 4096, None, EINVAL); // no context selected
                                                                // A write past the end: refused, and its payload consumed.
    expect(
        &mut c,
        CMD_WRITE,
        0,
        MIB - 100,
        200,
        Some(&[9; 200]),
        ENOSPC,
    );
    // Longer than 32 MiB: a read is refused; a write too, after reading its payload.
    expect(&mut c, CMD_READ, 0, 0, 64 << 20, None, EINVAL);
    expect(&mut c, CMD_READ, 0, 0, u32::MAX, None, EINVAL);
    let big = vec![3u8; (32 << 20) + 1];
    expect(
        &mut c,
        CMD_WRITE,
        0,
        0,
        big.len() as u32,
        Some(&big),
        EINVAL,
    );
    // Unknown commands and flags.
    expect(&mut c, 99, 0, 0, 0, None, EINVAL);
    expect(&mut c, CMD_READ, 1 << 12, 0, 512, None, EINVAL);
    expect(&mut c, CMD_WRITE, 1 << 3, 0, 4, Some(&[1; 4]), EINVAL);
    // Nothing above wrote anything.
    let (data, _) = c.read_structured(1000, 0, 4096).unwrap();
    assert!(data.iter().all(|&b| b == 0));
    assert_eq!(c.write(1001, MIB - 4096, &[4; 4096]), 0);
    // A bad request magic: the stream is out of sync, the server hangs up.
    c.send(&[0xde; 28]);
    assert!(c.closed());
    still_serves(&srv.uri("v"));
}

#[test]
fn truncated_messages_and_vanishing_clients() {
    let dir = TmpDir::new("hostile-trunc");
    let srv = serve(&dir, vec![("v", device(&dir, "v", MIB))]);
    let path = socket(&srv);
    // Gone before, during and after the client flags.
    drop(UnixStream::connect(&path).unwrap());
    let mut s = UnixStream::connect(&path).unwrap();
    s.write_all(&[0, 0]).unwrap();
    drop(s);
    // Half an option header; an option without all its data.
    let mut c = Client::connect(&path);
    c.send(&IHAVEOPT.to_be_bytes()[..5]);
    drop(c);
    let mut c = Client::connect(&path);
    c.send_opt_header(OPT_GO, 100);
    c.send(&[0; 10]);
    drop(c);
    // Half a request; a write without all its payload; a write whose reply is never read.
    let mut c = Client::connect(&path);
    c.go("v");
    c.send(&REQUEST_MAGIC.to_be_bytes());
    drop(c);
    let mut c = Client::connect(&path);
    c.go("v");
    c.request(CMD_WRITE, 0, 1, 0, 65536);
    c.send(&[1; 1000]);
    drop(c);
    let mut c = Client::connect(&path);
    c.go("v");
    for h in 0..64 {
        c.request(CMD_READ, 0, h, 0, 65536);
    }
    drop(c);
    still_serves(&srv.uri("v"));
    // The truncated write wrote nothing.
    qemu_io(&srv.uri("v"), &["read -P 0 4k 60k"]);
}

#[test]
fn a_flood_of_pipelined_requests_is_answered_in_full() {
    let dir = TmpDir::new("hostile-flood");
    let srv = serve(&dir, vec![("v", device(&dir, "v", 8 * MIB))]);
    let mut c = Client::connect(&socket(&srv));
    c.structured_replies();
    c.go("v");
    for i in 0..8 {
        assert_eq!(c.write(i, i * MIB, &vec![i as u8 + 1; MIB as usize]), 0);
    }
    // 1000 reads of 1 MiB (1 GiB of replies) sent without reading any reply: the server
    // must hold back rather than queue them all, and answer every one.
    let mut sender = c.s.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        for h in 0..1000u64 {
            buf.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
            buf.extend_from_slice(&0u16.to_be_bytes());
            buf.extend_from_slice(&CMD_READ.to_be_bytes());
            buf.extend_from_slice(&h.to_be_bytes());
            buf.extend_from_slice(&((h % 8) * MIB).to_be_bytes());
            buf.extend_from_slice(&(MIB as u32).to_be_bytes());
        }
        sender.write_all(&buf).unwrap();
    });
    let mut seen = vec![false; 1000];
    for _ in 0..1000 {
        let chunk = c.chunk();
        assert_eq!((chunk.flags & 1, chunk.kind), (1, CHUNK_DATA));
        assert_eq!(chunk.data[8], (chunk.handle % 8) as u8 + 1);
        assert!(!std::mem::replace(&mut seen[chunk.handle as usize], true));
    }
    t.join().unwrap();
    assert!(seen.iter().all(|&s| s));
}
