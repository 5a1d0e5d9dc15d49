use super::*;

/// A client message as udhcpc would send it, with `options` after the cookie.
pub fn client_msg(ty: u8, options: &[u8]) -> Vec<u8> {
    let mut m = vec![0u8; OPTIONS_AT];
    m[0] = 1;
    m[1] = 1;
    m[2] = 6;
    m[4..8].copy_from_slice(&0x1234_5678u32.to_be_bytes());
    m[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
    m[FIXED_LEN..OPTIONS_AT].copy_from_slice(&COOKIE);
    m.extend_from_slice(&[opt::MSG_TYPE, 1, ty]);
    m.extend_from_slice(options);
    m
}

#[test]
fn parses_a_request_with_its_options() {
    let m = client_msg(
        3,
        &[
            opt::PAD,
            opt::REQUESTED_IP,
            4,
            10,
            0,
            0,
            5,
            opt::SERVER_ID,
            4,
            10,
            0,
            0,
            1,
            opt::CLIENT_ID,
            7,
            1,
            2,
            0,
            0,
            0,
            0,
            7,
            opt::HOSTNAME,
            4,
            b'v',
            b'm',
            0,
            b'1',
            opt::END,
            0xde,
            0xad,
        ],
    );
    let r = parse(&m).unwrap();
    assert_eq!(r.ty, MsgType::Request);
    assert_eq!(r.xid, 0x1234_5678);
    assert_eq!(r.requested_ip, Some(Ipv4Addr::new(10, 0, 0, 5)));
    assert_eq!(r.server_id, Some(Ipv4Addr::new(10, 0, 0, 1)));
    assert_eq!(r.client_key(), "id:01020000000007");
    assert_eq!(r.hostname.as_deref(), Some("vm1"), "NUL filtered out");
    let no_id = parse(&client_msg(1, &[opt::END])).unwrap();
    assert_eq!(no_id.client_key(), "mac:02:00:00:00:00:07");
}

#[test]
fn malformed_messages_are_refused_not_panicked_on() {
    assert_eq!(parse(&[]), Err(Bad::Short));
    assert_eq!(parse(&[1; 239]), Err(Bad::Short));
    let mut reply = client_msg(1, &[]);
    reply[0] = 2;
    assert_eq!(parse(&reply), Err(Bad::NotRequest));
    let mut ib = client_msg(1, &[]);
    ib[1] = 32;
    assert_eq!(parse(&ib), Err(Bad::NotEthernet));
    let mut cookie = client_msg(1, &[]);
    cookie[FIXED_LEN] = 0;
    assert_eq!(parse(&cookie), Err(Bad::NoCookie));
    // An option whose length runs past the end, and one cut after its code.
    assert_eq!(
        parse(&client_msg(1, &[opt::HOSTNAME, 200, b'a'])),
        Err(Bad::Truncated)
    );
    assert_eq!(parse(&client_msg(1, &[opt::HOSTNAME])), Err(Bad::Truncated));
    // No message type, an unknown one, a wrong-sized address option.
    let mut none = client_msg(1, &[]);
    none.truncate(OPTIONS_AT);
    assert_eq!(parse(&none), Err(Bad::NoType));
    assert_eq!(parse(&client_msg(99, &[])), Err(Bad::NoType));
    let r = parse(&client_msg(3, &[opt::REQUESTED_IP, 3, 1, 2, 3])).unwrap();
    assert_eq!(r.requested_ip, None);
    // All pad, no END: fine, and the walk ends.
    let mut pads = client_msg(1, &[]);
    pads.extend_from_slice(&[0; 1000]);
    assert_eq!(parse(&pads).unwrap().ty, MsgType::Discover);
    // Every truncation of a good message and random garbage after the cookie: no panic.
    let good = client_msg(3, &[opt::REQUESTED_IP, 4, 10, 0, 0, 5, opt::END]);
    for n in 0..good.len() {
        let _ = parse(&good[..n]);
    }
    let mut x: u32 = 0x9e37_79b9;
    for _ in 0..2000 {
        let mut m = client_msg(1, &[]);
        for _ in 0..(x % 64) {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            m.push(x as u8);
        }
        let _ = parse(&m);
    }
}

#[test]
fn overloaded_file_field_carries_options() {
    let mut m = client_msg(1, &[opt::OVERLOAD, 1, 1, opt::END]);
    m[108..115].copy_from_slice(&[opt::REQUESTED_IP, 4, 10, 0, 0, 9, opt::END]);
    assert_eq!(
        parse(&m).unwrap().requested_ip,
        Some(Ipv4Addr::new(10, 0, 0, 9))
    );
    // A bad option in the overloaded area is caught too.
    m[108..110].copy_from_slice(&[opt::HOSTNAME, 250]);
    assert_eq!(parse(&m), Err(Bad::Truncated));
}

#[test]
fn built_replies_parse_back_and_are_bootp_sized() {
    let req = parse(&client_msg(1, &[opt::END])).unwrap();
    let long = vec![7u8; 300];
    let m = build(
        &req,
        MsgType::Offer,
        Ipv4Addr::new(10, 0, 0, 5),
        &[(opt::SERVER_ID, vec![10, 0, 0, 1]), (opt::HOSTNAME, long)],
    );
    assert!(m.len() >= MIN_LEN);
    assert_eq!(m[0], 2);
    assert_eq!(&m[4..8], &0x1234_5678u32.to_be_bytes());
    assert_eq!(&m[16..20], &[10, 0, 0, 5]);
    assert_eq!(&m[28..34], &[2, 0, 0, 0, 0, 7]);
    // Reading it back with the client-side walk: type, server id, 300 bytes of option 12.
    let mut opts = Vec::new();
    walk(&m[OPTIONS_AT..], &mut opts).unwrap();
    assert_eq!(opts[0], (opt::MSG_TYPE, vec![2]));
    assert_eq!(opts[1], (opt::SERVER_ID, vec![10, 0, 0, 1]));
    assert_eq!(opts[2].1.len(), 300);
}
