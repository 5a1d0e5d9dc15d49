//! Guest-initiated connections: a REQUEST to CID 2 port P reaches the host listener at
//! `<uds_path>_P`, or is refused.

use super::conn::BUF_ALLOC;
use super::harness::*;
use super::host::port_path;
use super::packet::*;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};

/// A host service listening where guest connections to `port` go.
fn listen(g: &Guest, port: u32) -> UnixListener {
    UnixListener::bind(port_path(&g.uds, port)).unwrap()
}

fn accept(l: &UnixListener) -> UnixStream {
    let (s, _) = l.accept().unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    s
}

#[test]
fn guest_connects_to_a_host_service_and_gets_its_echo() {
    let mut g = Guest::new();
    let l = listen(&g, 5000);
    assert!(port_path(&g.uds, 5000)
        .to_string_lossy()
        .ends_with("v.sock_5000"));
    g.send(g.hdr(OP_REQUEST, 40000, 5000), &[]);
    let resp = g.expect(OP_RESPONSE);
    assert_eq!((resp.hdr.src_port, resp.hdr.dst_port), (5000, 40000));
    assert_eq!(resp.hdr.buf_alloc, BUF_ALLOC);
    let host = accept(&l);
    g.wait_counter("connections_opened", 1);

    g.send(g.hdr(OP_RW, 40000, 5000), b"ping");
    let got = read_n(&host, 4);
    (&host).write_all(&got).unwrap();
    let echo = g.expect(OP_RW);
    assert_eq!(echo.data, b"ping");
    assert_eq!((echo.hdr.src_port, echo.hdr.dst_port), (5000, 40000));
    // The device's fwd_cnt tells the guest its 4 bytes reached the host.
    assert_eq!(echo.hdr.fwd_cnt, 4);

    // The guest closes: SHUTDOWN both ways, acknowledged by RST; the host reads EOF.
    let mut sd = g.hdr(OP_SHUTDOWN, 40000, 5000);
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    g.expect(OP_RST);
    expect_eof(&host);
    g.wait_counter("connections_closed", 1);
    assert_eq!(g.counter("tx_bytes"), 4);
    assert_eq!(g.counter("rx_bytes"), 4);
}

#[test]
fn two_guest_connections_to_one_service_stay_apart() {
    let mut g = Guest::new();
    let l = listen(&g, 6000);
    g.send(g.hdr(OP_REQUEST, 1001, 6000), &[]);
    g.expect(OP_RESPONSE);
    let a = accept(&l);
    g.send(g.hdr(OP_REQUEST, 1002, 6000), &[]);
    g.expect(OP_RESPONSE);
    let b = accept(&l);
    g.send_all(&[
        (g.hdr(OP_RW, 1002, 6000), &b"second"[..]),
        (g.hdr(OP_RW, 1001, 6000), &b"first"[..]),
    ]);
    assert_eq!(read_n(&a, 5), b"first");
    assert_eq!(read_n(&b, 6), b"second");
    (&b).write_all(b"to 1002").unwrap();
    let p = g.expect(OP_RW);
    assert_eq!((p.hdr.dst_port, &p.data[..]), (1002, &b"to 1002"[..]));
}

#[test]
fn no_listener_means_rst() {
    let mut g = Guest::new();
    g.send(g.hdr(OP_REQUEST, 40001, 5001), &[]);
    let rst = g.expect(OP_RST);
    assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (5001, 40001));
    g.wait_counter("rst_sent", 1);
    assert_eq!(g.counter("connections_opened"), 0);
    // A listener that is gone (its socket file stays) refuses too.
    drop(listen(&g, 5002));
    g.send(g.hdr(OP_REQUEST, 40002, 5002), &[]);
    g.expect(OP_RST);
}

#[test]
fn a_request_for_another_cid_is_refused() {
    let mut g = Guest::new();
    let mut req = g.hdr(OP_REQUEST, 40003, 5000);
    req.dst_cid = 7;
    g.send(req, &[]);
    let rst = g.expect(OP_RST);
    // From where the guest aimed, so its connect() fails at once.
    assert_eq!(rst.hdr.src_cid, 7);
    assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (5000, 40003));
    assert_eq!(g.counter("bad_packets"), 1);
}

#[test]
fn guest_half_close_keeps_the_other_direction() {
    let mut g = Guest::new();
    let l = listen(&g, 5003);
    g.send(g.hdr(OP_REQUEST, 40004, 5003), &[]);
    g.expect(OP_RESPONSE);
    let host = accept(&l);
    let mut sd = g.hdr(OP_SHUTDOWN, 40004, 5003);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    expect_eof(&host);
    (&host).write_all(b"answer").unwrap();
    assert_eq!(g.expect(OP_RW).data, b"answer");
    // Then the host closes: the guest is asked to close and has a while to acknowledge.
    drop(host);
    let sd = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.hdr.flags, SHUTDOWN_BOTH);
    // No answer: after the close timeout the device resets it.
    g.expect(OP_RST);
    g.wait_counter("connections_closed", 1);
}

#[test]
fn guest_rst_closes_the_host_stream() {
    let mut g = Guest::new();
    let l = listen(&g, 5004);
    g.send(g.hdr(OP_REQUEST, 40005, 5004), &[]);
    g.expect(OP_RESPONSE);
    let host = accept(&l);
    g.send(g.hdr(OP_RST, 40005, 5004), &[]);
    expect_eof(&host);
    g.wait_counter("connections_closed", 1);
    assert_eq!(g.counter("rst_sent"), 0);
}
