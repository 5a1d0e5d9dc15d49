//! A tap port's thread gathers the small frames it forwards into other taps and writes them
//! together, with one `io_uring_enter` per batch instead of one `writev` per frame.
//!
//! Why: writing a frame into a tap runs the receiving namespace's whole stack in our
//! `writev` and wakes its reader. Returning to user space after each frame lets that reader
//! preempt the port's thread, take one or two packets and sleep again: on a 2-core host a
//! 64-byte UDP flood cost two context switches every few packets (a third of the thread's
//! time). Within one `io_uring_enter` the writes run back to back in the kernel, and the
//! reader, woken once, finds the whole batch.
//!
//! Only a port's forwarding loop batches (while the [`Batching`] that [`begin`] returns
//! lives): a tap port's thread, and a vhost-user port's transmit handler. Every other writer (the impairment
//! line, the endpoint's timers) writes at once. Frames larger than
//! [`SMALL`] (TSO frames) are written at once too, after what is pending, so a port's frames
//! leave in the order they came: copying 64 KiB to save a system call would not pay.

use super::port::Port;
use io_uring::{opcode, types, IoUring};
use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::Arc;

/// Frames up to this size (virtio-net header included) are staged.
pub const SMALL: usize = 2048;
/// Staged bytes at most; the batch is written when the next frame would not fit.
const STAGING: usize = 256 * 1024;
/// Writes at most in one submission (and the ring's size).
const MAX_OPS: usize = 256;

struct Pending {
    port: Arc<Port>,
    fd: RawFd,
    at: usize,
    len: usize,
}

struct Batch {
    ring: IoUring,
    /// The pending frames, back to back. Pointers into it reach the kernel only in
    /// `submit`, which waits for every write before anything touches it again.
    staging: Vec<u8>,
    pending: Vec<Pending>,
    active: bool,
}

/// A thread's batching: not tried yet, ready, or off for good (no io_uring here, or it
/// failed once).
enum State {
    Unopened,
    Open(Box<Batch>),
    Off,
}

thread_local! {
    static STATE: RefCell<State> = const { RefCell::new(State::Unopened) };
}

impl State {
    /// After a failed `io_uring_enter` the kernel may still hold pointers into the staging
    /// buffer: the batch is leaked rather than freed, and the thread writes directly from
    /// now on.
    fn turn_off(&mut self) {
        if let State::Open(b) = std::mem::replace(self, State::Off) {
            std::mem::forget(b);
        }
    }
}

/// Makes this thread gather its tap writes until the returned [`Batching`] is dropped,
/// which writes them. Where io_uring is not available (an old kernel, a seccomp profile,
/// `io_uring_disabled`), writes stay immediate.
#[must_use = "the batch is written when this is dropped"]
pub fn begin() -> Batching {
    STATE.with(|cell| {
        let mut state = cell.borrow_mut();
        if let State::Unopened = *state {
            *state = match IoUring::new(MAX_OPS as u32) {
                Ok(ring) => State::Open(Box::new(Batch {
                    ring,
                    staging: Vec::with_capacity(STAGING),
                    pending: Vec::with_capacity(MAX_OPS),
                    active: false,
                })),
                Err(e) => {
                    tracing::debug!("no io_uring ({e}): tap writes are not batched");
                    State::Off
                }
            };
        }
        if let State::Open(b) = &mut *state {
            b.active = true;
        }
    });
    Batching(())
}

/// A thread's batch of tap writes, open while this lives: dropping it writes what is pending
/// and ends the batch, on every way out of the forwarding loop.
pub struct Batching(());

impl Drop for Batching {
    fn drop(&mut self) {
        finish(false)
    }
}

/// Writes what is pending; the thread goes on batching.
pub fn flush() {
    finish(true)
}

fn finish(active: bool) {
    STATE.with(|cell| {
        let mut state = cell.borrow_mut();
        if let State::Open(b) = &mut *state {
            b.active = active;
            if !b.submit() {
                state.turn_off();
            }
        }
    })
}

/// Stages `parts` for `port`'s tap `fd` if this thread is batching and the frame is small:
/// true if staged ([`flush`] or the end of the batch writes and counts it). False if the caller must write
/// it itself; what was pending has then been written.
pub fn stage(port: &Arc<Port>, fd: RawFd, parts: &[&[u8]]) -> bool {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    STATE.with(|cell| {
        let mut state = cell.borrow_mut();
        let State::Open(b) = &mut *state else {
            return false;
        };
        if !b.active {
            return false;
        }
        let small = len <= SMALL;
        let room = b.staging.len() + len <= STAGING && b.pending.len() < MAX_OPS;
        // What is pending goes first: before a large frame, or to make room.
        if (!small || !room) && !b.submit() {
            state.turn_off();
            return false;
        }
        if !small {
            return false;
        }
        let at = b.staging.len();
        for p in parts {
            b.staging.extend_from_slice(p);
        }
        b.pending.push(Pending {
            port: port.clone(),
            fd,
            at,
            len,
        });
        true
    })
}

impl Batch {
    /// Writes every pending frame, waits for all of them, and counts each on its port.
    /// False if `io_uring_enter` failed with writes possibly still pending.
    fn submit(&mut self) -> bool {
        if self.pending.is_empty() {
            return true;
        }
        let base = self.staging.as_ptr();
        let mut sq = self.ring.submission();
        let mut want = 0;
        for (i, p) in self.pending.iter().enumerate() {
            // SAFETY: `at..at + len` lies inside `staging`, which is neither touched nor
            // reallocated until every write has completed below.
            let buf = unsafe { base.add(p.at) };
            let sqe = opcode::Write::new(types::Fd(p.fd), buf, p.len as u32)
                .build()
                .user_data(i as u64);
            // SAFETY: the buffer outlives the operation (see above); the fd belongs to a
            // port held by `pending` until completion.
            if unsafe { sq.push(&sqe) }.is_err() {
                // Cannot happen (the ring holds MAX_OPS entries and is empty here), but a
                // frame that was not submitted must not be waited for.
                p.port
                    .written(Err(io::Error::other("the io_uring queue is full")));
                continue;
            }
            want += 1;
        }
        drop(sq);
        let mut done = 0;
        while done < want {
            match self.ring.submit_and_wait(want - done) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::error!("tap writes: io_uring_enter failed, writing directly: {e}");
                    return false;
                }
            }
            for cqe in self.ring.completion() {
                done += 1;
                let Some(p) = self.pending.get(cqe.user_data() as usize) else {
                    continue;
                };
                let r = if cqe.result() < 0 {
                    Err(io::Error::from_raw_os_error(-cqe.result()))
                } else {
                    Ok(cqe.result() as usize)
                };
                p.port.written(r);
            }
        }
        self.pending.clear();
        self.staging.clear();
        true
    }
}
