//! The host side of the [`Muxer`]: the listener, host processes typing their `CONNECT` line,
//! and the edge-triggered events of every host stream.

use super::{
    Muxer, ACCEPT_BATCH, ACCEPT_RETRY, FIRST_HOST_PORT, LISTENER_TOKEN, MAX_CONNECTIONS, POLL_BATCH,
};
use crate::vsock::conn::{Conn, Key, Verdict};
use crate::vsock::host::{Command, PendingHost};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::time::Instant;
use vmm_sys_util::epoll::{ControlOperation, EpollEvent, EventSet};

impl Muxer {
    /// Handles what the connection epoll set reports.
    pub fn on_poll(&mut self) {
        let mut events = [EpollEvent::default(); POLL_BATCH];
        let n = match self.poll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!("virtio-vsock: polling host streams: {e}");
                return;
            }
        };
        for ev in events.iter().take(n) {
            let token = ev.data();
            if token == LISTENER_TOKEN {
                self.accept();
            } else if self.pending.contains_key(&token) {
                self.pending_ready(token);
            } else if let Some(&key) = self.tokens.get(&token) {
                if let Some(conn) = self.conns.get_mut(&key) {
                    let v = conn.on_host_event(ev.event_set());
                    self.after(key, v);
                }
            }
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.socket.accept() {
                Ok((stream, _)) => self.add_pending(stream),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Typically out of fds: the listener stays readable, so rest it a while.
                    tracing::warn!("virtio-vsock: accepting a host connection: {e}");
                    let _ = self.poll.ctl(
                        ControlOperation::Delete,
                        self.listener.socket.as_raw_fd(),
                        EpollEvent::default(),
                    );
                    let at = Instant::now() + ACCEPT_RETRY;
                    self.listener_resumes = Some(at);
                    self.note_deadline(Some(at));
                    return;
                }
            }
        }
    }

    fn add_pending(&mut self, stream: UnixStream) {
        if self.conns.len() + self.pending.len() >= MAX_CONNECTIONS {
            tracing::warn!("virtio-vsock: {MAX_CONNECTIONS} connections open, closing a new one");
            return;
        }
        let token = self.take_token();
        if let Err(e) = stream
            .set_nonblocking(true)
            .and_then(|()| self.watch(&stream, token))
        {
            tracing::warn!("virtio-vsock: cannot poll a host connection: {e}");
            return;
        }
        let p = PendingHost::new(stream);
        self.note_deadline(Some(p.deadline));
        self.pending.insert(token, p);
        // The command may have come with the connection.
        self.pending_ready(token);
    }

    fn pending_ready(&mut self, token: u64) {
        let Some(p) = self.pending.get_mut(&token) else {
            return;
        };
        match p.read_command() {
            Command::Incomplete => {}
            Command::Invalid => {
                tracing::debug!("virtio-vsock: a host connection sent no valid CONNECT line");
                self.drop_pending(token);
            }
            Command::Connect(port) => {
                if let Some(p) = self.pending.remove(&token) {
                    self.host_connect(p.stream, token, port);
                }
            }
        }
    }

    pub(super) fn drop_pending(&mut self, token: u64) {
        if let Some(p) = self.pending.remove(&token) {
            self.unwatch(&p.stream);
        }
    }

    /// A host process asked for guest port `port`: give it a local port and send the REQUEST.
    fn host_connect(&mut self, stream: UnixStream, token: u64, port: u32) {
        let Some(local_port) = self.allocate_port(port) else {
            self.unwatch(&stream);
            return;
        };
        let key = Key {
            local_port,
            peer_port: port,
        };
        self.host_ports.insert(local_port);
        self.tokens.insert(token, key);
        self.conns
            .insert(key, Conn::connecting(stream, token, key, self.guest_cid));
        self.after(key, Verdict::Keep);
    }

    fn allocate_port(&mut self, peer_port: u32) -> Option<u32> {
        // At most MAX_CONNECTIONS ports are taken, so this finds one within that many steps.
        for _ in 0..=MAX_CONNECTIONS {
            let p = self.next_port;
            self.next_port = p.checked_add(1).unwrap_or(FIRST_HOST_PORT);
            let key = Key {
                local_port: p,
                peer_port,
            };
            if !self.host_ports.contains(&p) && !self.conns.contains_key(&key) {
                return Some(p);
            }
        }
        None
    }

    pub(super) fn take_token(&mut self) -> u64 {
        let t = self.next_token;
        self.next_token = self.next_token.wrapping_add(1).max(LISTENER_TOKEN + 1);
        t
    }

    pub(super) fn watch(&self, stream: &UnixStream, token: u64) -> io::Result<()> {
        let events =
            EventSet::IN | EventSet::OUT | EventSet::READ_HANG_UP | EventSet::EDGE_TRIGGERED;
        self.poll.ctl(
            ControlOperation::Add,
            stream.as_raw_fd(),
            EpollEvent::new(events, token),
        )
    }

    pub(super) fn unwatch(&self, stream: &UnixStream) {
        let _ = self.poll.ctl(
            ControlOperation::Delete,
            stream.as_raw_fd(),
            EpollEvent::default(),
        );
    }
}
