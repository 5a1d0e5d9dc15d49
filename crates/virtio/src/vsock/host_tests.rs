//! Host-initiated connections: `CONNECT <port>\n` on the device's socket, the guest's answer,
//! data and credit both ways, and how they end.

use super::conn::BUF_ALLOC;
use super::harness::*;
use super::muxer::FIRST_HOST_PORT;
use super::packet::*;
use std::io::Write;
use std::net::Shutdown;
use std::time::Duration;

#[test]
fn connect_handshake_then_data_both_ways() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 1234);
    let req = g.expect(OP_REQUEST);
    assert_eq!(req.hdr.dst_port, 1234);
    assert!(req.hdr.src_port >= FIRST_HOST_PORT);
    assert_eq!(req.hdr.buf_alloc, BUF_ALLOC);
    assert_eq!(req.hdr.fwd_cnt, 0);
    assert_eq!(req.used_len, HDR_LEN as u32);
    let host_port = req.hdr.src_port;
    // The receive buffer was reported as written before it was used.
    assert!(g
        .writes
        .0
        .lock()
        .unwrap()
        .iter()
        .any(|&(_, len)| len == u64::from(RX_BUF_LEN)));
    g.send(g.hdr(OP_RESPONSE, 1234, host_port), &[]);
    assert_eq!(read_line(&host), format!("OK {host_port}\n"));
    g.wait_counter("connections_opened", 1);

    (&host).write_all(b"hello guest").unwrap();
    let p = g.expect(OP_RW);
    assert_eq!((p.hdr.src_port, p.hdr.dst_port), (host_port, 1234));
    assert_eq!(p.data, b"hello guest");

    g.send(g.hdr(OP_RW, 1234, host_port), b"hello host");
    assert_eq!(read_n(&host, 10), b"hello host");
    g.wait_counter("rx_bytes", 11);
    g.wait_counter("tx_bytes", 10);
    assert_eq!(g.counter("bad_packets"), 0);
}

#[test]
fn data_sent_with_the_connect_line_waits_for_the_guest() {
    let mut g = Guest::new();
    let host = std::os::unix::net::UnixStream::connect(&g.uds).unwrap();
    host.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&host).write_all(b"CONNECT 80\r\nearly bytes").unwrap();
    let port = g.accept(80);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    let p = g.expect(OP_RW);
    assert_eq!(p.data, b"early bytes");
}

#[test]
fn each_host_connection_gets_its_own_port() {
    let mut g = Guest::new();
    let a = host_connect(&g.uds, 7);
    let pa = g.accept(7);
    let b = host_connect(&g.uds, 7);
    let pb = g.accept(7);
    assert_ne!(pa, pb);
    assert_eq!(read_line(&a), format!("OK {pa}\n"));
    assert_eq!(read_line(&b), format!("OK {pb}\n"));
    g.send(g.hdr(OP_RW, 7, pb), b"to b");
    g.send(g.hdr(OP_RW, 7, pa), b"to a");
    assert_eq!(read_n(&a, 4), b"to a");
    assert_eq!(read_n(&b, 4), b"to b");
}

#[test]
fn megabyte_to_the_guest_stays_within_its_credit() {
    let mut g = Guest::new();
    const GUEST_BUF: u32 = 64 * 1024;
    g.buf_alloc = GUEST_BUF;
    let host = host_connect(&g.uds, 9000);
    let port = g.accept(9000);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    let data = pattern(1 << 20);
    let writer = {
        let host = host.try_clone().unwrap();
        let data = data.clone();
        std::thread::spawn(move || (&host).write_all(&data).unwrap())
    };
    let mut got = Vec::new();
    while got.len() < data.len() {
        let p = g.recv();
        if p.hdr.op == OP_CREDIT_UPDATE {
            continue;
        }
        assert_eq!(p.hdr.op, OP_RW);
        got.extend_from_slice(&p.data);
        let unacked = got.len() as u32 - g.fwd_cnt;
        assert!(
            unacked <= GUEST_BUF,
            "{unacked} bytes beyond the guest's credit"
        );
        // The guest "reads" in 16 KiB steps and says so, as Linux does when room runs low.
        if unacked >= GUEST_BUF / 2 {
            g.fwd_cnt = got.len() as u32;
            g.send(g.hdr(OP_CREDIT_UPDATE, 9000, port), &[]);
        }
    }
    writer.join().unwrap();
    assert!(got == data, "the stream arrived corrupted");
    g.wait_counter("rx_bytes", 1 << 20);
}

#[test]
fn megabyte_from_the_guest_waits_for_credit_updates() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 9001);
    let req = g.expect(OP_REQUEST);
    let port = req.hdr.src_port;
    g.send(g.hdr(OP_RESPONSE, 9001, port), &[]);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    let data = pattern(1 << 20);
    // The device's credit as the guest sees it: from the last header it sent.
    let (mut peer_alloc, mut peer_fwd) = (req.hdr.buf_alloc, req.hdr.fwd_cnt);
    let mut sent = 0usize;
    let mut updates = 0;
    // The host does not read yet: the guest sends within its credit until the socket and the
    // device's buffer are full and no more credit comes.
    loop {
        let credit = peer_alloc - (sent as u32 - peer_fwd);
        if credit > 0 {
            let n = (credit as usize).min(4096);
            g.send(g.hdr(OP_RW, 9001, port), &data[sent..sent + n]);
            sent += n;
            continue;
        }
        match g.try_recv(Duration::from_millis(200)) {
            Some(p) => {
                assert_eq!(p.hdr.op, OP_CREDIT_UPDATE);
                (peer_alloc, peer_fwd) = (p.hdr.buf_alloc, p.hdr.fwd_cnt);
                updates += 1;
            }
            None => break,
        }
    }
    assert!(
        sent >= BUF_ALLOC as usize && sent < data.len(),
        "sent {sent} without a reader"
    );
    let reader = {
        let host = host.try_clone().unwrap();
        std::thread::spawn(move || read_n(&host, 1 << 20))
    };
    while sent < data.len() {
        let credit = peer_alloc - (sent as u32 - peer_fwd);
        if credit == 0 {
            let p = g.expect(OP_CREDIT_UPDATE);
            assert!(p.hdr.fwd_cnt.wrapping_sub(peer_fwd) > 0);
            (peer_alloc, peer_fwd) = (p.hdr.buf_alloc, p.hdr.fwd_cnt);
            updates += 1;
            continue;
        }
        let n = (credit as usize).min(4096).min(data.len() - sent);
        g.send(g.hdr(OP_RW, 9001, port), &data[sent..sent + n]);
        sent += n;
    }
    let got = reader.join().unwrap();
    assert!(got == data, "the stream arrived corrupted");
    assert!(updates >= 3, "only {updates} credit updates");
    g.wait_counter("tx_bytes", 1 << 20);
}

#[test]
fn a_guest_sending_beyond_its_credit_is_reset() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 9002);
    let port = g.accept(9002);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    // More than the host socket and the device's buffer hold together: the host is not
    // reading, and the guest ignores its credit.
    let chunk = vec![1u8; 64 * 1024];
    let over = 16;
    let pkts: Vec<_> = (0..over)
        .map(|_| (g.hdr(OP_RW, 9002, port), &chunk[..]))
        .collect();
    g.send_all(&pkts);
    let rst = g.expect(OP_RST);
    assert_eq!((rst.hdr.src_port, rst.hdr.dst_port), (port, 9002));
    g.wait_counter("connections_closed", 1);
}

#[test]
fn credit_request_gets_an_update() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 42);
    let port = g.accept(42);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    g.send(g.hdr(OP_RW, 42, port), b"abc");
    assert_eq!(read_n(&host, 3), b"abc");
    g.send(g.hdr(OP_CREDIT_REQUEST, 42, port), &[]);
    let p = g.expect(OP_CREDIT_UPDATE);
    assert_eq!((p.hdr.buf_alloc, p.hdr.fwd_cnt), (BUF_ALLOC, 3));
}

#[test]
fn guest_refusal_closes_the_host_connection() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 1234);
    let req = g.expect(OP_REQUEST);
    g.send(g.hdr(OP_RST, 1234, req.hdr.src_port), &[]);
    // No `OK`: just EOF.
    expect_eof(&host);
    assert_eq!(g.counter("connections_opened"), 0);
    assert_eq!(g.counter("rst_sent"), 0);
}

#[test]
fn an_unanswered_request_times_out() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 555);
    let req = g.expect(OP_REQUEST);
    expect_eof(&host);
    let rst = g.expect(OP_RST);
    assert_eq!(rst.hdr.src_port, req.hdr.src_port);
    // A late answer is for a connection that no longer exists.
    g.send(g.hdr(OP_RESPONSE, 555, req.hdr.src_port), &[]);
    g.expect(OP_RST);
}

#[test]
fn a_bad_or_missing_connect_line_closes_the_connection() {
    let g = Guest::new();
    for line in [
        &b"HELLO 5\n"[..],
        b"CONNECT\n",
        b"CONNECT 99999999999\n",
        b"CONNECT -1\n",
    ] {
        let s = std::os::unix::net::UnixStream::connect(&g.uds).unwrap();
        s.set_read_timeout(Some(TIMEOUT)).unwrap();
        (&s).write_all(line).unwrap();
        expect_eof(&s);
    }
    // A line that never ends.
    let s = std::os::unix::net::UnixStream::connect(&g.uds).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    (&s).write_all(&[b'C'; 100]).unwrap();
    expect_closed(&s);
    // Silence: closed after the command timeout.
    let s = std::os::unix::net::UnixStream::connect(&g.uds).unwrap();
    s.set_read_timeout(Some(TIMEOUT)).unwrap();
    expect_eof(&s);
    assert_eq!(g.counter("connections_opened"), 0);
}

#[test]
fn host_half_close_then_guest_close() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 77);
    let port = g.accept(77);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    (&host).write_all(b"request").unwrap();
    host.shutdown(Shutdown::Write).unwrap();
    assert_eq!(g.expect(OP_RW).data, b"request");
    let sd = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.hdr.flags, SHUTDOWN_SEND);
    // The guest can still answer a half-closed host.
    g.send(g.hdr(OP_RW, 77, port), b"reply");
    assert_eq!(read_n(&host, 5), b"reply");
    let mut sd = g.hdr(OP_SHUTDOWN, 77, port);
    sd.flags = SHUTDOWN_BOTH;
    g.send(sd, &[]);
    // The guest's full shutdown is acknowledged with RST and the host reads EOF.
    g.expect(OP_RST);
    expect_eof(&host);
    g.wait_counter("connections_closed", 1);
    assert_eq!(g.counter("rst_sent"), 1);
}

#[test]
fn host_close_asks_the_guest_to_close() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 78);
    let port = g.accept(78);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    (&host).write_all(b"bye").unwrap();
    drop(host);
    assert_eq!(g.expect(OP_RW).data, b"bye");
    let sd = g.expect(OP_SHUTDOWN);
    assert_eq!(sd.hdr.flags & SHUTDOWN_SEND, SHUTDOWN_SEND);
    g.send(g.hdr(OP_RST, 78, port), &[]);
    g.wait_counter("connections_closed", 1);
    // The connection is gone: more data gets a RST.
    g.send(g.hdr(OP_RW, 78, port), b"late");
    g.expect(OP_RST);
}

#[test]
fn guest_shutdown_send_reaches_the_host_as_eof() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 79);
    let port = g.accept(79);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    g.send(g.hdr(OP_RW, 79, port), b"last words");
    let mut sd = g.hdr(OP_SHUTDOWN, 79, port);
    sd.flags = SHUTDOWN_SEND;
    g.send(sd, &[]);
    assert_eq!(read_n(&host, 10), b"last words");
    expect_eof(&host);
    // The other direction still works.
    (&host).write_all(b"still here").unwrap();
    assert_eq!(g.expect(OP_RW).data, b"still here");
}

#[test]
fn no_data_beyond_the_guests_advertised_buffer() {
    let mut g = Guest::new();
    let host = host_connect(&g.uds, 4000);
    let req = g.expect(OP_REQUEST);
    let port = req.hdr.src_port;
    g.buf_alloc = 0;
    g.send(g.hdr(OP_RESPONSE, 4000, port), &[]);
    assert_eq!(read_line(&host), format!("OK {port}\n"));
    (&host).write_all(&pattern(1000)).unwrap();
    g.expect_quiet(Duration::from_millis(100));
    // Room for 100 bytes: exactly that much comes.
    g.buf_alloc = 100;
    g.send(g.hdr(OP_CREDIT_UPDATE, 4000, port), &[]);
    let p = g.expect(OP_RW);
    assert_eq!(p.data, pattern(1000)[..100]);
    g.expect_quiet(Duration::from_millis(100));
    // The guest consumed them: the next 100.
    g.fwd_cnt = 100;
    g.send(g.hdr(OP_CREDIT_UPDATE, 4000, port), &[]);
    assert_eq!(g.expect(OP_RW).data, pattern(1000)[100..200]);
}

#[test]
fn receive_buffers_split_in_header_and_data_work() {
    // Older Linux posts the header and the data as two descriptors.
    let dir = TempDir::new();
    let uds = dir.path("v.sock");
    let dev = super::Vsock::new(super::VsockConfig {
        guest_cid: GUEST_CID,
        uds_path: uds.clone(),
    })
    .unwrap();
    let mut g = Guest::activate(dev, dir, uds, false);
    let (hdr_at, data_at) = (0x90_0000, 0x91_0000);
    g.rx.write_desc(&g.mem, 200, hdr_at, HDR_LEN as u32, WRITE | NEXT, 201);
    g.rx.write_desc(&g.mem, 201, data_at, 4096, WRITE, 0);
    g.rx.publish(&g.mem, 200);
    let host = host_connect(&g.uds, 4001);
    g.rx.kick();
    let used = g.rx.wait_used(&g.mem, 1);
    assert_eq!(used, vec![(200, HDR_LEN as u32)]);
    let mut raw = [0u8; HDR_LEN];
    vm_memory::Bytes::read_slice(&g.mem, &mut raw, vm_memory::GuestAddress(hdr_at)).unwrap();
    let req = Header::from_bytes(&raw);
    assert_eq!((req.op, req.dst_port), (OP_REQUEST, 4001));
    g.send(g.hdr(OP_RESPONSE, 4001, req.src_port), &[]);
    assert_eq!(read_line(&host), format!("OK {}\n", req.src_port));
    (&host).write_all(b"split").unwrap();
    g.rx.publish(&g.mem, 200);
    g.rx.kick();
    let used = g.rx.wait_used(&g.mem, 1);
    assert_eq!(used, vec![(200, HDR_LEN as u32 + 5)]);
    let mut data = [0u8; 5];
    vm_memory::Bytes::read_slice(&g.mem, &mut data, vm_memory::GuestAddress(data_at)).unwrap();
    assert_eq!(&data, b"split");
    // Both descriptors were reported as written.
    let w = g.writes.0.lock().unwrap();
    assert!(w.contains(&(hdr_at, HDR_LEN as u64)) && w.contains(&(data_at, 4096)));
}
