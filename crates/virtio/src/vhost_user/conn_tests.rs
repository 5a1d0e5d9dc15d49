//! Connecting: each way it fails says what to fix, and a backend that is silent or answers
//! garbage gives an error, not a hang or a panic.

use super::conn::{classify, Connection};
use super::test_support::TempDir;
use super::{VhostUserBlk, VhostUserError};
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

fn message(e: VhostUserError) -> String {
    e.to_string()
}

#[test]
fn a_missing_socket_says_to_start_the_backend() {
    let dir = TempDir::new("missing");
    let sock = dir.join("nobody.sock");
    let err = VhostUserBlk::new(&sock).err().unwrap();
    assert!(matches!(err, VhostUserError::NoSocket { .. }));
    let m = message(err);
    assert!(
        m.contains("nobody.sock") && m.contains("start the backend"),
        "{m}"
    );
}

#[test]
fn a_regular_file_is_not_a_socket() {
    let dir = TempDir::new("file");
    let path = dir.join("file.sock");
    std::fs::write(&path, b"").unwrap();
    let err = VhostUserBlk::new(&path).err().unwrap();
    assert!(matches!(err, VhostUserError::NotASocket { .. }), "{err}");
    assert!(message(err).contains("file.sock"));
}

#[test]
fn a_stale_socket_is_refused() {
    let dir = TempDir::new("stale");
    let sock = dir.join("stale.sock");
    drop(UnixListener::bind(&sock).unwrap());
    let err = VhostUserBlk::new(&sock).err().unwrap();
    assert!(matches!(err, VhostUserError::Refused { .. }), "{err}");
    assert!(message(err).contains("start the backend"));
}

#[test]
fn permission_errors_name_the_fix() {
    // Root bypasses permissions, so the mapping is checked directly.
    let e = classify(
        Path::new("/run/x.sock"),
        std::io::Error::from_raw_os_error(libc::EACCES),
    );
    assert!(matches!(e, VhostUserError::Permission { .. }));
    let m = message(e);
    assert!(m.contains("/run/x.sock") && m.contains("permission"), "{m}");
}

#[test]
fn a_silent_backend_times_out() {
    let dir = TempDir::new("silent");
    let sock = dir.join("silent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // Read requests, never answer, until the frontend gives up.
        let mut buf = [0u8; 256];
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
    });
    let start = Instant::now();
    let err = Connection::open_with_timeout(&sock, 1, Duration::from_millis(200))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            VhostUserError::Timeout {
                request: "GET_FEATURES",
                ..
            }
        ),
        "{err}"
    );
    assert!(start.elapsed() < Duration::from_secs(5));
    t.join().unwrap();
}

#[test]
fn a_garbage_reply_is_an_error() {
    let dir = TempDir::new("garbage");
    let sock = dir.join("garbage.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let t = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        // SET_OWNER (header only), then GET_FEATURES: answer it with a bogus header.
        let mut buf = [0u8; 24];
        s.read_exact(&mut buf).unwrap();
        let mut junk = 99u32.to_le_bytes().to_vec();
        junk.extend_from_slice(&[0x5; 16]);
        let _ = s.write_all(&junk);
        let _ = s.read(&mut buf);
    });
    let err = Connection::open_with_timeout(&sock, 1, Duration::from_secs(5))
        .err()
        .unwrap();
    assert!(
        matches!(
            err,
            VhostUserError::Request {
                request: "GET_FEATURES",
                ..
            }
        ),
        "{err}"
    );
    t.join().unwrap();
}
