//! `vireo vm ...`: a client of the VMM's API socket, like Cloud Hypervisor's `ch-remote`.

use crate::VmCmd;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

pub fn run(cmd: VmCmd) -> Result<(), String> {
    let mut body = String::new();
    let (method, action, sock) = match &cmd {
        VmCmd::Info(a) => ("GET", "vm.info", &a.api_socket),
        VmCmd::Devices(a) => ("GET", "vm.devices", &a.api_socket),
        VmCmd::Balloon { api, size: None } => ("GET", "vm.balloon", &api.api_socket),
        VmCmd::Balloon {
            api,
            size: Some(size),
        } => {
            body = format!("{{\"size\": {size}}}");
            ("PUT", "vm.balloon", &api.api_socket)
        }
        VmCmd::Pause(a) => ("PUT", "vm.pause", &a.api_socket),
        VmCmd::Resume(a) => ("PUT", "vm.resume", &a.api_socket),
        VmCmd::Shutdown(a) => ("PUT", "vm.shutdown", &a.api_socket),
        VmCmd::Stop(a) => ("PUT", "vm.stop", &a.api_socket),
    };
    let server = format!("vireo run --api-socket {}", sock.display());
    let (status, body) = request(sock, method, &format!("/api/v1/{action}"), &body, &server)?;
    if !(200..300).contains(&status) {
        let msg = serde_json::from_str::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(String::from))
            .unwrap_or(body);
        return Err(format!("{action}: {msg} (HTTP {status})"));
    }
    if !body.is_empty() {
        let pretty = serde_json::from_str::<serde_json::Value>(&body)
            .and_then(|v| serde_json::to_string_pretty(&v))
            .unwrap_or(body);
        println!("{pretty}");
    }
    Ok(())
}

/// One HTTP/1.1 request over the Unix socket; returns the status and the body. `server` is
/// the command that should be serving `sock`, for the error when nothing answers.
pub(crate) fn request(
    sock: &Path,
    method: &str,
    path: &str,
    body: &str,
    server: &str,
) -> Result<(u16, String), String> {
    let mut s = UnixStream::connect(sock).map_err(|e| {
        format!(
            "cannot connect to {}: {e} (is `{server}` running?)",
            sock.display()
        )
    })?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).map_err(|e| e.to_string())?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).map_err(|e| e.to_string())?;
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp.parse(&raw) {
        Ok(httparse::Status::Complete(n)) => Ok((
            resp.code.unwrap_or(0),
            String::from_utf8_lossy(&raw[n..]).trim().to_string(),
        )),
        _ => Err(format!("malformed reply from {}", sock.display())),
    }
}

/// A client of a service's JSON API (`vireo storage ...`, `vireo net ...`).
pub(crate) struct ServiceClient {
    pub socket: PathBuf,
    /// The command that starts the service (`vireo net serve`): the hint when nothing answers.
    pub serve: &'static str,
    pub default_socket: &'static str,
}

impl ServiceClient {
    /// One API call; a non-2xx answer becomes its `error` message.
    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, String> {
        use serde_json::Value;
        let body = body.map(|b| b.to_string()).unwrap_or_default();
        let server = if self.socket == Path::new(self.default_socket) {
            format!("{} --dir STATE_DIR", self.serve)
        } else {
            format!(
                "{} --dir STATE_DIR --socket {}",
                self.serve,
                self.socket.display()
            )
        };
        let (status, text) = request(&self.socket, method, path, &body, &server)?;
        let value = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        if (200..300).contains(&status) {
            return Ok(value);
        }
        match value.get("error").and_then(Value::as_str) {
            Some(msg) => Err(msg.to_string()),
            None => Err(format!("{method} {path}: HTTP {status}: {value}")),
        }
    }
}

/// Percent-encodes one path segment of an API URL.
pub(crate) fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'@' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
