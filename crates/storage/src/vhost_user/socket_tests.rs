//! The socket's life: taking over stale sockets but not live ones, accepting frontends one
//! after another, and stopping with or without one connected.

use super::tests::{MemDevice, DISK};
use super::{VhostUserBlk, VhostUserOptions};
use crate::block::BlockDevice;
use std::io;
use std::sync::Arc;

fn socket_path(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("vireo-vhost-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn socket_life_cycle() {
    let sock = socket_path("life.sock");
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(DISK, 4096, false));
    let blk = VhostUserBlk::start(&sock, dev.clone(), "x").unwrap();
    assert_eq!(blk.num_queues(), 2);
    // A live socket is not taken over.
    let err = VhostUserBlk::start(&sock, dev.clone(), "y").err().unwrap();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    // Dropped while idle (blocked in accept).
    drop(blk);
    assert!(!sock.exists(), "the socket is removed on drop");

    // A stale socket (its backend died) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    drop(stale);
    let blk = VhostUserBlk::start(&sock, dev.clone(), "x").unwrap();
    // Dropped while a frontend is connected (one that never speaks).
    let _frontend = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    let t0 = std::time::Instant::now();
    while !blk.connected() {
        assert!(
            t0.elapsed().as_secs() < 10,
            "the connection was not accepted"
        );
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(blk.stats().connections, 1);
    drop(blk);
    assert!(!sock.exists());

    // Not a socket: refused, and left alone.
    std::fs::write(&sock, b"data").unwrap();
    let err = VhostUserBlk::start(&sock, dev.clone(), "x").err().unwrap();
    assert!(err.to_string().contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&sock).unwrap(), b"data");
    std::fs::remove_file(&sock).unwrap();

    let opts = VhostUserOptions { num_queues: 0 };
    assert!(VhostUserBlk::start_with(&sock, dev, "x", opts).is_err());
    // The directory goes with the last test that uses it.
    let _ = std::fs::remove_dir(sock.parent().unwrap());
}

/// The eventfds this process has open.
fn eventfds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("eventfd"))
        .count()
}

#[test]
fn frontends_come_and_go_without_leaking_descriptors() {
    use std::time::{Duration, Instant};
    let sock = socket_path("reconnect.sock");
    let dev: Arc<dyn BlockDevice> = Arc::new(MemDevice::new(DISK, 4096, false));
    let blk = VhostUserBlk::start(&sock, dev, "x").unwrap();
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let t0 = Instant::now();
        while !done() {
            assert!(t0.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    let mut before = 0;
    for i in 1..=20 {
        let frontend = std::os::unix::net::UnixStream::connect(&sock).unwrap();
        wait("accepted", &|| blk.stats().connections == i);
        drop(frontend);
        wait("disconnected", &|| !blk.connected());
        if i == 1 {
            before = eventfds();
        }
    }
    // Each session has a few eventfds (one per worker at least): a leak would show as 40.
    let after = eventfds();
    assert!(
        after < before + 10,
        "eventfds: {before} before, {after} after"
    );
    drop(blk);
    let _ = std::fs::remove_dir(sock.parent().unwrap());
}
