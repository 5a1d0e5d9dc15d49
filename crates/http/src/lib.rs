//! Just enough HTTP/1.1 for a local management API on a Unix socket: one request per
//! connection, a `Content-Length` body, `Connection: close` replies, JSON or text bodies.
//!
//! The storage and network services share it: [`HttpServer`] owns the listener (refusing to take over a socket
//! another service answers on, replacing a stale one, removing it when dropped) and calls a
//! handler per request, so a service only supplies `Fn(&Request) -> Reply`. The socket is
//! the host's, but a request is still checked and bounded: a malformed one gets a 4xx,
//! never a panic.

use serde_json::{json, Value};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// The largest request head and body: every request of a management API is small.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 64 * 1024;

pub struct Request {
    pub method: String,
    /// The path without the query string.
    pub path: String,
    pub body: Vec<u8>,
}

pub enum Body {
    None,
    Json(Value),
    /// Text with its content type (e.g. Prometheus exposition).
    Text(String, &'static str),
}

pub struct Reply {
    pub status: u16,
    pub body: Body,
}

impl Reply {
    pub fn ok(body: Value) -> Reply {
        Reply::with_status(200, body)
    }

    pub fn with_status(status: u16, body: Value) -> Reply {
        Reply {
            status,
            body: Body::Json(body),
        }
    }

    pub fn text(content_type: &'static str, text: String) -> Reply {
        Reply {
            status: 200,
            body: Body::Text(text, content_type),
        }
    }

    pub fn no_content() -> Reply {
        Reply {
            status: 204,
            body: Body::None,
        }
    }

    pub fn error(status: u16, msg: impl Into<String>) -> Reply {
        Reply::with_status(status, json!({ "error": msg.into() }))
    }
}

/// What a service answers requests with.
pub type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

/// A Unix socket path this process listens on. Claiming it replaces a stale socket (left by
/// a process that died) but never a live one or a file that is not a socket; dropping it
/// removes the socket only if it is still ours (not replaced meanwhile).
pub struct SocketPath {
    path: PathBuf,
    id: (u64, u64),
}

impl SocketPath {
    /// Listens on `path`; `what` names the socket in errors (e.g. "vhost-user socket").
    pub fn bind(path: &Path, what: &str) -> io::Result<(UnixListener, SocketPath)> {
        let shown = path.display();
        if let Ok(meta) = std::fs::symlink_metadata(path) {
            if !meta.file_type().is_socket() {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!("{what} {shown} exists and is not a socket; remove it or choose another path"),
                ));
            }
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!("{what} {shown} is in use by another process; stop it or choose another path"),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot listen on {what} {shown}: {e}"))
        })?;
        let meta = std::fs::metadata(path)?;
        let claimed = SocketPath {
            path: path.to_path_buf(),
            id: (meta.dev(), meta.ino()),
        };
        Ok((listener, claimed))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SocketPath {
    fn drop(&mut self) {
        if let Ok(meta) = std::fs::symlink_metadata(&self.path) {
            if (meta.dev(), meta.ino()) == self.id {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

/// Makes a thread blocked in `accept()` on the listening socket that `dup` duplicates
/// return (with an error), whatever became of the socket's path.
pub fn wake_accept(dup: &UnixListener) {
    // SAFETY: shutdown(2) on a descriptor we own; it only ends the socket's listening.
    unsafe { libc::shutdown(dup.as_raw_fd(), libc::SHUT_RDWR) };
}

/// A listener on a Unix socket: a thread accepting connections and one short thread per
/// connection (one request each). Removes its socket when dropped.
pub struct HttpServer {
    stop: Arc<AtomicBool>,
    wake: UnixListener,
    thread: Option<JoinHandle<()>>,
    _socket: SocketPath,
}

impl HttpServer {
    /// Fails with `AddrInUse` when another process answers on `path`: a live socket is
    /// never taken over (a stale one, left by a crash, is replaced).
    pub fn start(path: &Path, handler: Handler) -> io::Result<HttpServer> {
        let (listener, socket) = SocketPath::bind(path, "API socket")?;
        let wake = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Relaxed) {
                        break;
                    }
                    match conn {
                        Ok(conn) => serve_connection(conn, handler.clone()),
                        Err(e) => {
                            tracing::warn!("API socket: {e}");
                            // Out of file descriptors, say: do not spin.
                            std::thread::sleep(Duration::from_millis(50));
                        }
                    }
                }
            })?;
        Ok(HttpServer {
            stop,
            wake,
            thread: Some(thread),
            _socket: socket,
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        wake_accept(&self.wake);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn serve_connection(mut conn: UnixStream, handler: Handler) {
    let spawned = std::thread::Builder::new()
        .name("api-conn".into())
        .spawn(move || {
            let result = read_request(&mut conn).and_then(|req| {
                let reply = match req {
                    Ok(req) => {
                        let reply = handler(&req);
                        tracing::debug!("API {} {} -> {}", req.method, req.path, reply.status);
                        reply
                    }
                    Err(refused) => refused,
                };
                write_reply(&mut conn, reply)
            });
            if let Err(e) = result {
                tracing::debug!("API connection: {e}");
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("API: cannot start a thread for a connection: {e}");
    }
}

/// Reads one request. `Ok(Err(reply))` is a request we refuse (the reply says why).
pub fn read_request(conn: &mut UnixStream) -> io::Result<Result<Request, Reply>> {
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
    let (Some(method), Some(target), Some(version), None) =
        (first.next(), first.next(), first.next(), first.next())
    else {
        return Ok(Err(Reply::error(400, "malformed request line")));
    };
    if !version.starts_with("HTTP/1.") {
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

pub fn write_reply(conn: &mut UnixStream, r: Reply) -> io::Result<()> {
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
        _ => "Error",
    };
    let (body, content_type) = match r.body {
        Body::None => (String::new(), None),
        Body::Json(v) => (format!("{v}\n"), Some("application/json")),
        Body::Text(t, ct) => (t, Some(ct)),
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\nConnection: close\r\n", r.status);
    if let Some(ct) = content_type {
        head.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    conn.write_all(head.as_bytes())?;
    conn.write_all(body.as_bytes())
}

/// Splits `/PREFIX/a/b%2Fc` into decoded segments `["a", "b/c"]`; `None` when the path is
/// not under `prefix`.
pub fn segments(path: &str, prefix: &str) -> Option<Result<Vec<String>, String>> {
    let rest = path.strip_prefix(prefix)?;
    Some(
        rest.trim_end_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect(),
    )
}

/// Decodes `%XX` escapes in one path segment (names are sent percent-encoded).
pub fn percent_decode(s: &str) -> Result<String, String> {
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

/// The answer to a request no route took: 404 for an unknown path, 405 naming the `allowed`
/// methods for a known one.
pub fn unrouted(req: &Request, allowed: &[&str]) -> Reply {
    if allowed.is_empty() {
        return Reply::error(404, format!("no such endpoint: {}", req.path));
    }
    Reply::error(
        405,
        format!(
            "{} is not allowed on {}; use {}",
            req.method,
            req.path,
            allowed.join(" or ")
        ),
    )
}

/// An error a route answers with: `{"error": message}` under its HTTP status.
pub trait HttpError: std::fmt::Display {
    fn http_status(&self) -> u16;
}

/// Serves the API under `prefix`: `route` gets the path's decoded segments and answers
/// `None` when no route takes this method and path. Its error goes out as
/// `{"error": message}` with the error's status; an unrouted request gets a 404, or a 405
/// naming the methods `methods` gives for its segments.
pub fn dispatch<E: HttpError>(
    req: &Request,
    prefix: &str,
    route: impl FnOnce(&[&str]) -> Option<Result<Reply, E>>,
    methods: impl FnOnce(&[&str]) -> &'static [&'static str],
) -> Reply {
    let segs = match segments(&req.path, prefix) {
        Some(Ok(s)) => s,
        Some(Err(e)) => return Reply::error(400, e),
        None => return Reply::error(404, format!("no such endpoint: {}", req.path)),
    };
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    match route(&s) {
        Some(Ok(reply)) => reply,
        Some(Err(e)) => Reply::error(e.http_status(), e.to_string()),
        None => unrouted(req, methods(&s)),
    }
}

/// A request's JSON body (an empty one is `{}`); the error says what was wrong and shows
/// `example`, what was expected.
pub fn json_body<T: serde::de::DeserializeOwned>(
    req: &Request,
    example: &str,
) -> Result<T, String> {
    let bytes: &[u8] = if req.body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &req.body
    };
    serde_json::from_slice(bytes)
        .map_err(|e| format!("bad request body: {e}; expected JSON like {example}"))
}

#[cfg(test)]
mod tests {
    use super::*;

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
        let r =
            parse(b"POST /api/v1/networks?x=1 HTTP/1.1\r\nContent-Length: 4\r\n\r\n{}  x").unwrap();
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/v1/networks")
        );
        assert_eq!(r.body, b"{}  ");
        assert_eq!(parse(b"GET /\r\n\r\n").err(), Some(400));
        assert_eq!(parse(b"GET / HTTP/1.1\r\nbad\r\n\r\n").err(), Some(400));
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
    fn paths_split_into_decoded_segments() {
        let s = segments("/api/v1/ports/a%2Fb/", "/api/v1/")
            .unwrap()
            .unwrap();
        assert_eq!(s, ["ports", "a/b"]);
        assert!(segments("/metrics", "/api/v1/").is_none());
        assert!(segments("/api/v1/x%zz", "/api/v1/").unwrap().is_err());
        assert!(percent_decode("%ff").is_err());
    }
}
