//! The service's API plumbing, in process: routing, errors, the one-service rules and a
//! clean shutdown. (The pool operations behind the routes are driven end to end through
//! the CLI in crates/vireo/tests/storage_cli.rs.)

use super::*;
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixListener;

struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("vireo-svc-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn opts(dir: &TempDir) -> ServiceOptions {
    ServiceOptions {
        dir: dir.0.join("state"),
        socket: dir.0.join("run/storage.sock"),
        nbd: None,
    }
}

/// One raw HTTP request; returns the status and the JSON body (Null if none).
fn call(sock: &Path, method: &str, path: &str, body: &str) -> (u16, Value) {
    let mut s = UnixStream::connect(sock).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    let body = if body.trim().is_empty() {
        Value::Null
    } else {
        serde_json::from_str(body).unwrap()
    };
    (status, body)
}

fn error_of(v: &Value) -> &str {
    v["error"].as_str().unwrap_or_default()
}

#[test]
fn routes_answer_and_refuse_with_the_right_status() {
    let dir = TempDir::new("routes");
    let o = opts(&dir);
    let svc = Service::start(&o).unwrap();
    let s = &o.socket;

    let (st, v) = call(s, "GET", "/api/v1/ping", "");
    assert_eq!((st, v["service"].as_str()), (200, Some("vireo-storage")));
    assert_eq!(
        call(s, "GET", "/api/v1/pools", ""),
        (200, serde_json::json!([]))
    );
    let (st, v) = call(s, "GET", "/api/v1/stats", "");
    assert_eq!(st, 200);
    assert_eq!(v["pools"], serde_json::json!([]));

    let (st, v) = call(s, "GET", "/api/v1/pools/nope", "");
    assert_eq!(st, 404);
    assert!(error_of(&v).contains("no pool named nope"), "{v}");
    let (st, _) = call(s, "GET", "/api/v1/pools/nope/volumes/v/snapshots", "");
    assert_eq!(st, 404);
    let (st, v) = call(s, "GET", "/api/v1/nothing", "");
    assert_eq!(st, 404);
    assert!(error_of(&v).contains("no such endpoint"), "{v}");
    let (st, v) = call(s, "DELETE", "/api/v1/pools", "");
    assert_eq!(st, 405);
    assert!(error_of(&v).contains("GET or POST"), "{v}");
    let (st, _) = call(s, "GET", "/api/v1/pools/p/volumes/v/resize", "");
    assert_eq!(st, 405);

    // Bodies are checked before anything happens.
    let (st, v) = call(s, "POST", "/api/v1/pools", "{not json");
    assert_eq!(st, 400);
    assert!(error_of(&v).contains("expected JSON like"), "{v}");
    let (st, v) = call(s, "POST", "/api/v1/pools", r#"{"name":"p","devices":[]}"#);
    assert_eq!(st, 400);
    assert!(error_of(&v).contains("at least one device"), "{v}");
    let (st, v) = call(
        s,
        "POST",
        "/api/v1/pools",
        r#"{"name":"p","devices":[{"path":"rel/dev.img"}]}"#,
    );
    assert_eq!(st, 400);
    assert!(error_of(&v).contains("relative"), "{v}");
    let (st, v) = call(
        s,
        "POST",
        "/api/v1/pools",
        r#"{"name":"p","devices":[{"path":"/x"}],"colour":"red"}"#,
    );
    assert_eq!(st, 400);
    assert!(error_of(&v).contains("colour"), "{v}");
    let (st, v) = call(s, "POST", "/api/v1/pools/p/volumes", r#"{"name":"v"}"#);
    assert_eq!(st, 400);
    assert!(error_of(&v).contains("missing field `size`"), "{v}");
    let (st, _) = call(
        s,
        "POST",
        "/api/v1/pools/p/volumes/v/import",
        r#"{"file":"x.img"}"#,
    );
    assert_eq!(st, 400);
    let (st, _) = call(
        s,
        "POST",
        "/api/v1/pools/p/volumes/v/import",
        r#"{"file":"/x.img"}"#,
    );
    assert_eq!(st, 404);

    let (st, v) = call(s, "GET", "/api/v1/jobs/7", "");
    assert_eq!(st, 404);
    assert!(error_of(&v).contains("no job 7"), "{v}");
    let (st, _) = call(s, "GET", "/api/v1/jobs/x", "");
    assert_eq!(st, 400);
    assert_eq!(
        call(s, "GET", "/api/v1/jobs", ""),
        (200, serde_json::json!([]))
    );
    assert_eq!(
        call(s, "GET", "/api/v1/vhost-user", ""),
        (200, serde_json::json!([]))
    );
    let (st, v) = call(
        s,
        "DELETE",
        "/api/v1/vhost-user",
        r#"{"socket":"/nope.sock"}"#,
    );
    assert_eq!(st, 404);
    assert!(error_of(&v).contains("no vhost-user export"), "{v}");
    let (st, v) = call(
        s,
        "POST",
        "/api/v1/vhost-user",
        r#"{"volume":"novolume","socket":"/x.sock"}"#,
    );
    assert_eq!(st, 400);
    assert!(error_of(&v).contains("POOL/VOL"), "{v}");
    // A percent-encoded name arrives decoded.
    let (st, v) = call(s, "GET", "/api/v1/pools/a%20b", "");
    assert_eq!(st, 404);
    assert!(error_of(&v).contains("a b"), "{v}");

    svc.shutdown().unwrap();
    assert!(!s.exists(), "the socket is removed at shutdown");
}

#[test]
fn one_service_per_socket_and_per_state_dir() {
    let dir = TempDir::new("exclusive");
    let o = opts(&dir);
    let svc = Service::start(&o).unwrap();

    let e = Service::start(&o).err().unwrap();
    assert!(
        e.to_string().contains("another service is listening"),
        "{e}"
    );
    assert_eq!(e.http_status(), 409);
    // The first one still answers.
    assert_eq!(call(&o.socket, "GET", "/api/v1/ping", "").0, 200);

    let other_socket = ServiceOptions {
        socket: dir.0.join("other.sock"),
        ..o.clone()
    };
    let e = Service::start(&other_socket).err().unwrap();
    assert!(e.to_string().contains("owns"), "{e}");
    assert!(!other_socket.socket.exists());
    drop(svc);
    assert!(!o.socket.exists());

    // A stale socket (its service died) is replaced.
    let stale = UnixListener::bind(&o.socket).unwrap();
    drop(stale);
    assert!(o.socket.exists());
    let svc = Service::start(&o).unwrap();
    assert_eq!(call(&o.socket, "GET", "/api/v1/ping", "").0, 200);
    svc.shutdown().unwrap();
}

#[test]
fn raw_protocol_errors_get_answers() {
    let dir = TempDir::new("protocol");
    let o = opts(&dir);
    let _svc = Service::start(&o).unwrap();
    let mut s = UnixStream::connect(&o.socket).unwrap();
    s.write_all(b"NONSENSE\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    // A client that goes away mid-request does not disturb the service.
    let mut s = UnixStream::connect(&o.socket).unwrap();
    s.write_all(b"GET /api/v1/ping HTTP/1.1\r\n").unwrap();
    drop(s);
    assert_eq!(call(&o.socket, "GET", "/api/v1/ping", "").0, 200);
}
