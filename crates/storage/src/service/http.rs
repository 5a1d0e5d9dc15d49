//! Just enough HTTP/1.1 for a local JSON API: one request per connection, a
//! `Content-Length` body, `Connection: close` replies. The socket is the host's, but a
//! request is still checked and bounded: a malformed one gets a 4xx, never a panic.

use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

/// The largest request head and body: every request of the API is a small JSON object.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

pub(crate) struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub body: Vec<u8>,
}

pub(crate) struct Reply {
    pub status: u16,
    pub body: Option<Value>,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply::with_status(200, body)
    }

    pub fn with_status(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Some(body),
        }
    }

    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            body: None,
        }
    }

    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::with_status(status, json!({ "error": msg.into() }))
    }
}

/// Reads one request. `Ok(Err(reply))` is a request we refuse (the reply says why).
pub(crate) fn read_request(conn: &mut UnixStream) -> io::Result<Result<Request, Reply>> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err(Reply::error(431, "request head too large")));
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the client closed the connection mid-request",
            ));
        }
        buf.extend_from_slice(chunk.get(..n).unwrap_or_default());
    };
    let head = match std::str::from_utf8(buf.get(..head_end).unwrap_or_default()) {
        Ok(h) => h,
        Err(_) => return Ok(Err(Reply::error(400, "the request head is not UTF-8"))),
    };
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let (method, target, version) = (first.next(), first.next(), first.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Ok(Err(Reply::error(400, "malformed request line")));
    };
    if !version.starts_with("HTTP/1.") || first.next().is_some() {
        return Ok(Err(Reply::error(400, "malformed request line")));
    }
    let mut body_len = 0usize;
    let mut expect_continue = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Ok(Err(Reply::error(400, format!("malformed header {line:?}"))));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) => body_len = n,
                Err(_) => return Ok(Err(Reply::error(400, "bad Content-Length"))),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Err(Reply::error(
                501,
                "chunked bodies are not supported: send a Content-Length",
            )));
        } else if name.eq_ignore_ascii_case("expect") && value.eq_ignore_ascii_case("100-continue")
        {
            expect_continue = true;
        }
    }
    if body_len > MAX_BODY {
        return Ok(Err(Reply::error(413, "request body too large")));
    }
    let (method, target) = (method.to_string(), target.to_string());
    if expect_continue {
        // curl waits for this before sending a larger body.
        conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
    }
    let mut body = buf.split_off(head_end + 4);
    while body.len() < body_len {
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Ok(Err(Reply::error(
                400,
                "request body shorter than Content-Length",
            )));
        }
        body.extend_from_slice(chunk.get(..n).unwrap_or_default());
    }
    body.truncate(body_len);
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Ok(Request { method, path, body }))
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub(crate) fn write_reply(conn: &mut UnixStream, r: Reply) -> io::Result<()> {
    let reason = match r.status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        507 => "Insufficient Storage",
        _ => "Error",
    };
    let body = r.body.map(|b| format!("{b}\n")).unwrap_or_default();
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", r.status);
    if !body.is_empty() {
        head.push_str("Content-Type: application/json\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}

/// Decodes `%XX` escapes in one path segment (names are sent percent-encoded).
pub(crate) fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| format!("bad %-escape in {s:?}"))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("{s:?} is not UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixStream;

    fn parse(raw: &[u8]) -> Result<Request, u16> {
        let (mut a, mut b) = UnixStream::pair().unwrap();
        b.write_all(raw).unwrap();
        drop(b);
        match read_request(&mut a) {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(reply)) => Err(reply.status),
            Err(_) => Err(0),
        }
    }

    #[test]
    fn requests_parse_and_bad_ones_are_refused() {
        let r = parse(
            b"POST /api/v1/pools?x=1 HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\n{}  extra",
        )
        .unwrap();
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/api/v1/pools");
        assert_eq!(r.body, b"{}  ");
        let r = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap();
        assert!(r.body.is_empty());
        assert_eq!(parse(b"GET /\r\n\r\n").err(), Some(400));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nbad\r\n\r\n").err(), Some(400));
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: x\r\n\r\n").err(),
            Some(400)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n").err(),
            Some(413)
        );
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nContent-Length: 10\r\n\r\nab").err(),
            Some(400)
        );
        assert_eq!(parse(&vec![b'a'; 20000]).err(), Some(431));
        assert_eq!(parse(b"GET / HTTP/1.1\r\n").err(), Some(0));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb%40c").unwrap(), "a/b@c");
        assert_eq!(percent_decode("plain-name_1.x").unwrap(), "plain-name_1.x");
        assert!(percent_decode("a%2").is_err());
        assert!(percent_decode("a%zz").is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
