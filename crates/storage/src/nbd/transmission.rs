//! The transmission phase of one connection: requests in, replies out, several in flight.
//!
//! The connection's thread reads requests (and WRITE payloads) and queues them; a few worker
//! threads run them against the device and queue the replies. Whichever worker finds no
//! write in progress becomes the writer and sends everything queued with one `writev`, so
//! replies that complete together leave together. Buffers are recycled, and the bytes of
//! requests in flight are capped, so a client cannot make us hold more than
//! [`BUDGET`] bytes of payload.

use super::handshake::Session;
use super::proto::*;
use super::stream::Stream;
use crate::block::BlockDevice;
use std::collections::VecDeque;
use std::io::{self, BufReader, IoSlice, Read};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Instant;

mod commands;

/// Worker threads per connection: enough to keep a few slow device calls (flushes, a real
/// disk) in flight while one of them sends replies.
const WORKERS: usize = 4;
/// Requests faster than this on average (page-cache hits) are "fast": a burst of them wakes
/// one more worker per FAST_BATCH queued, since one worker drains them faster than others
/// could be woken (measured: 4 workers woken per request halved 4 KiB IOPS on 2 cores).
const FAST_NS: u64 = 20_000;
const FAST_BATCH: usize = 16;
/// Bytes of READ/WRITE payload in flight per connection, at most (and one request always).
const BUDGET: usize = 64 << 20;
const MAX_INFLIGHT: usize = 256;
/// What a request without payload counts against the budget.
const SMALL_COST: usize = 64;
/// Recycled buffers kept per connection, and the largest kept.
const POOL_KEEP: usize = 64;
const POOL_MAX_BUF: usize = (4 << 20) + 64;
/// Slices per `writev` (the kernel's IOV_MAX).
const IOV_MAX: usize = 1024;

/// Serves `session` until the client disconnects (or breaks the protocol, or the
/// connection fails); returns once every reply has been sent.
pub fn serve(session: &Session, reader: &mut BufReader<Stream>, stream: &Stream) {
    let conn = Conn {
        s: session,
        dev: &*session.device,
        size: session.device.size(),
        stream,
        dead: AtomicBool::new(false),
        queue: Mutex::new(Queue::default()),
        work: Condvar::new(),
        room: Condvar::new(),
        outbox: Mutex::new(Outbox::default()),
        pool: Mutex::new(Vec::new()),
    };
    std::thread::scope(|scope| {
        let mut workers = 0;
        for i in 0..WORKERS {
            let spawned = std::thread::Builder::new()
                .name(format!("nbd-worker-{i}"))
                .spawn_scoped(scope, || conn.work());
            match spawned {
                Ok(_) => workers += 1,
                Err(e) => tracing::warn!("cannot start an NBD worker thread: {e}"),
            }
        }
        lock(&conn.queue).workers = workers;
        if workers > 0 {
            conn.read_requests(reader);
        }
        let mut q = lock(&conn.queue);
        q.done = true;
        conn.work.notify_all();
    });
}

struct Job {
    req: Request,
    /// The WRITE payload (its first `req.len` bytes), or an empty buffer.
    buf: Vec<u8>,
    /// Decided while reading: the request cannot be served.
    error: Option<u32>,
    cost: usize,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// The reader has stopped: workers leave once the queue is empty.
    done: bool,
    inflight: usize,
    inflight_bytes: usize,
    workers: usize,
    /// Workers waiting for a job, and how many of those were just woken.
    idle: usize,
    waking: usize,
    /// Recent time per request, in ns (a moving average).
    avg_ns: u64,
}

impl Queue {
    /// Whether a newly queued job should wake a sleeping worker. Fast requests (page-cache
    /// reads) are drained by one worker faster than more could be woken, and waking them
    /// only adds context switches; slow ones (flushes, a real disk) get a worker each.
    fn should_wake(&self) -> bool {
        let asleep = self.idle.saturating_sub(self.waking);
        if asleep == 0 {
            return false;
        }
        let awake = self.workers.saturating_sub(asleep);
        let per_worker = if self.avg_ns < FAST_NS { FAST_BATCH } else { 1 };
        awake == 0 || self.jobs.len() > awake * per_worker
    }
}

/// A reply ready to send: the first `len` bytes of `buf`.
struct Reply {
    buf: Vec<u8>,
    len: usize,
    cost: usize,
}

#[derive(Default)]
struct Outbox {
    pending: Vec<Reply>,
    /// A worker is sending: others leave their replies in `pending` for it.
    writing: bool,
    spare: Vec<Reply>,
}

struct Conn<'a> {
    s: &'a Session,
    dev: &'a dyn BlockDevice,
    size: u64,
    stream: &'a Stream,
    /// Sending failed: the client is gone, replies are dropped.
    dead: AtomicBool,
    queue: Mutex<Queue>,
    work: Condvar,
    room: Condvar,
    outbox: Mutex<Outbox>,
    pool: Mutex<Vec<Vec<u8>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking worker must not take the connection's other threads with it.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Conn<'_> {
    fn read_requests(&self, r: &mut BufReader<Stream>) {
        loop {
            let mut head = [0u8; REQUEST_LEN];
            if let Err(e) = r.read_exact(&mut head) {
                if e.kind() != io::ErrorKind::UnexpectedEof && !self.dead.load(Ordering::Relaxed) {
                    tracing::debug!("nbd connection read failed: {e}");
                }
                return;
            }
            let Some(req) = parse_request(&head) else {
                tracing::warn!("nbd client sent a request with a bad magic; hanging up");
                return;
            };
            if req.kind == CMD_DISC {
                return;
            }
            let data = matches!(req.kind, CMD_READ | CMD_WRITE) && req.len <= MAX_PAYLOAD;
            let cost = SMALL_COST + if data { req.len as usize } else { 0 };
            if !self.reserve(cost) {
                return;
            }
            let mut job = Job {
                req,
                buf: Vec::new(),
                error: None,
                cost,
            };
            if req.kind == CMD_WRITE {
                let got = if req.len > MAX_PAYLOAD {
                    // Consume the payload to stay in sync with the stream; refuse the write.
                    job.error = Some(EINVAL);
                    let want = u64::from(req.len);
                    io::copy(&mut r.by_ref().take(want), &mut io::sink())
                        .and_then(|n| eof_unless(n == want))
                } else {
                    let mut buf = self.take_buf();
                    let len = req.len as usize;
                    if buf.len() < len {
                        buf.resize(len, 0);
                    }
                    let got = r.read_exact(&mut buf[..len]);
                    job.buf = buf;
                    got
                };
                if let Err(e) = got {
                    tracing::debug!("nbd client hung up inside a write payload: {e}");
                    self.release(1, cost);
                    return;
                }
            }
            let mut q = lock(&self.queue);
            q.jobs.push_back(job);
            if q.should_wake() {
                q.waking += 1;
                self.work.notify_one();
            }
        }
    }

    /// Waits until `cost` more bytes fit in the budget; false if the connection died.
    fn reserve(&self, cost: usize) -> bool {
        let mut q = lock(&self.queue);
        while !self.dead.load(Ordering::Relaxed)
            && q.inflight > 0
            && (q.inflight_bytes + cost > BUDGET || q.inflight >= MAX_INFLIGHT)
        {
            q = self.room.wait(q).unwrap_or_else(|e| e.into_inner());
        }
        if self.dead.load(Ordering::Relaxed) {
            return false;
        }
        q.inflight += 1;
        q.inflight_bytes += cost;
        true
    }

    fn release(&self, n: usize, cost: usize) {
        let mut q = lock(&self.queue);
        q.inflight = q.inflight.saturating_sub(n);
        q.inflight_bytes = q.inflight_bytes.saturating_sub(cost);
        self.room.notify_one();
    }

    fn work(&self) {
        let mut took_ns = None;
        loop {
            let job = {
                let mut q = lock(&self.queue);
                if let Some(ns) = took_ns {
                    q.avg_ns = (q.avg_ns * 7 + ns) / 8;
                }
                loop {
                    if let Some(job) = q.jobs.pop_front() {
                        break job;
                    }
                    if q.done {
                        return;
                    }
                    q.idle += 1;
                    q = self.work.wait(q).unwrap_or_else(|e| e.into_inner());
                    q.idle -= 1;
                    q.waking = q.waking.saturating_sub(1);
                }
            };
            let start = Instant::now();
            let reply = if self.dead.load(Ordering::Relaxed) {
                // Nobody to answer: skip the work.
                Reply {
                    buf: job.buf,
                    len: 0,
                    cost: job.cost,
                }
            } else {
                self.run(job)
            };
            took_ns = Some(start.elapsed().as_nanos().min(u128::from(u32::MAX)) as u64);
            self.send(reply);
        }
    }

    /// Queues a reply; the first worker to find no send in progress sends everything queued.
    fn send(&self, reply: Reply) {
        let mut ob = lock(&self.outbox);
        ob.pending.push(reply);
        if ob.writing {
            return;
        }
        ob.writing = true;
        let mut batch = std::mem::take(&mut ob.spare);
        loop {
            std::mem::swap(&mut batch, &mut ob.pending);
            drop(ob);
            if !self.dead.load(Ordering::Relaxed) {
                if let Err(e) = self.write_batch(&batch) {
                    tracing::debug!("nbd connection write failed: {e}");
                    self.dead.store(true, Ordering::Relaxed);
                    // Wake the reader, blocked reading the socket or waiting for room.
                    self.stream.shutdown();
                    let _q = lock(&self.queue);
                    self.room.notify_all();
                }
            }
            let cost = batch.iter().map(|r| r.cost).sum();
            self.release(batch.len(), cost);
            for r in batch.drain(..) {
                self.put_buf(r.buf);
            }
            ob = lock(&self.outbox);
            if ob.pending.is_empty() {
                ob.writing = false;
                ob.spare = batch;
                return;
            }
        }
    }

    fn write_batch(&self, batch: &[Reply]) -> io::Result<()> {
        let mut slices: Vec<IoSlice<'_>> = batch
            .iter()
            .filter(|r| r.len > 0)
            .map(|r| IoSlice::new(r.buf.get(..r.len).unwrap_or(&[])))
            .collect();
        for chunk in slices.chunks_mut(IOV_MAX) {
            self.stream.write_all_vectored(chunk)?;
        }
        Ok(())
    }

    fn take_buf(&self) -> Vec<u8> {
        lock(&self.pool).pop().unwrap_or_default()
    }

    fn put_buf(&self, buf: Vec<u8>) {
        if buf.is_empty() || buf.len() > POOL_MAX_BUF {
            return;
        }
        let mut pool = lock(&self.pool);
        if pool.len() < POOL_KEEP {
            pool.push(buf);
        }
    }
}

fn eof_unless(ok: bool) -> io::Result<()> {
    if ok {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}
