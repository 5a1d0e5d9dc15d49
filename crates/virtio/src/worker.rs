//! The thread an active device serves its queues on: it sleeps in epoll on the device's event
//! sources (queue notifications, a rate limiter's timer, a tap) and on a stop event, and calls
//! the device's handler for each source that became ready.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::thread::JoinHandle;
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

pub struct Worker {
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
}

impl Worker {
    /// Starts a thread named `name` that calls `on_ready(i)` whenever `sources[i]` is readable,
    /// until [`Worker::stop`]. The handler owns the sources (they must stay open while it runs)
    /// and must consume what made a source ready (read the eventfd), or it is called again.
    pub fn spawn<F>(name: &str, sources: &[RawFd], mut on_ready: F) -> io::Result<Worker>
    where
        F: FnMut(usize) + Send + 'static,
    {
        let stop = EventFd::new(libc::EFD_NONBLOCK)?;
        let epoll = Epoll::new()?;
        let stop_token = sources.len() as u64;
        epoll.ctl(
            ControlOperation::Add,
            stop.as_raw_fd(),
            EpollEvent::new(EventSet::IN, stop_token),
        )?;
        for (i, fd) in sources.iter().enumerate() {
            epoll.ctl(
                ControlOperation::Add,
                *fd,
                EpollEvent::new(EventSet::IN, i as u64),
            )?;
        }
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let mut events = vec![EpollEvent::default(); stop_token as usize + 1];
                loop {
                    let n = match epoll.wait(-1, &mut events) {
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => {
                            tracing::error!("device worker: epoll failed: {e}");
                            return;
                        }
                    };
                    for ev in &events[..n] {
                        if ev.data() == stop_token {
                            return;
                        }
                        on_ready(ev.data() as usize);
                    }
                }
            })?;
        Ok(Worker {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it: when this returns, the handler is dropped and no longer
    /// touches guest memory.
    pub fn stop(&mut self) {
        if let Some(t) = self.thread.take() {
            if let Err(e) = self.stop.write(1) {
                tracing::error!("cannot stop a device worker: {e}");
                return;
            }
            let _ = t.join();
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::channel;
    use std::time::Duration;

    #[test]
    fn calls_the_handler_per_ready_source_and_stops() {
        let a = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let b = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let (tx, rx) = channel();
        let fds = [a.as_raw_fd(), b.as_raw_fd()];
        let (a2, b2) = (a.try_clone().unwrap(), b.try_clone().unwrap());
        let mut w = Worker::spawn("test-worker", &fds, move |i| {
            let _ = [&a2, &b2][i].read();
            tx.send(i).unwrap();
        })
        .unwrap();
        b.write(1).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 1);
        a.write(1).unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(5)).unwrap(), 0);
        w.stop();
        // The handler (and its sender) is gone once stop returns.
        assert!(rx.recv_timeout(Duration::from_millis(100)).is_err());
    }
}
