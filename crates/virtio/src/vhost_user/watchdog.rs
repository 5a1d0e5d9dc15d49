//! Bounds how long one request to the backend may block.
//!
//! The `vhost` crate reads replies with blocking `recvmsg` and retries on EAGAIN, so a socket
//! timeout would turn a silent backend into a busy loop. Instead, a thread shuts the socket
//! down when a request outlives its deadline: the blocked read then sees end-of-file and the
//! request fails, and the connection is given up.

use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    fired: bool,
    quit: bool,
}

struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data that stays consistent even if a holder panicked.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

pub(crate) struct Watchdog {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Watches `sock` (a clone of the connection's socket).
    pub(crate) fn spawn(sock: UnixStream) -> std::io::Result<Watchdog> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            wake: Condvar::new(),
        });
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("vhost-user-watchdog".into())
            .spawn(move || watch(&s, &sock))?;
        Ok(Watchdog {
            shared,
            thread: Some(thread),
        })
    }

    /// Starts the clock for one request.
    pub(crate) fn arm(&self, timeout: Duration) {
        let mut st = self.shared.lock();
        st.deadline = Some(Instant::now() + timeout);
        st.fired = false;
        self.shared.wake.notify_all();
    }

    /// Stops the clock; returns whether the deadline passed (and the socket was shut down).
    pub(crate) fn disarm(&self) -> bool {
        let mut st = self.shared.lock();
        st.deadline = None;
        std::mem::take(&mut st.fired)
    }
}

fn watch(shared: &Shared, sock: &UnixStream) {
    let mut st = shared.lock();
    loop {
        if st.quit {
            return;
        }
        match st.deadline {
            None => st = shared.wake.wait(st).unwrap_or_else(|p| p.into_inner()),
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    tracing::warn!("vhost-user backend did not answer in time; disconnecting");
                    let _ = sock.shutdown(Shutdown::Both);
                    st.deadline = None;
                    st.fired = true;
                } else {
                    st = shared
                        .wake
                        .wait_timeout(st, d - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
            }
        }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.shared.lock().quit = true;
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
