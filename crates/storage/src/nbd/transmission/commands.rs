//! Running one request against the device, and building its reply.

use super::{Conn, Job, Reply};
use crate::block::Extent;
use crate::nbd::proto::*;
use std::io;

/// Structured READs at least this long ask the device where its holes are, and send those
/// as `NBD_REPLY_TYPE_OFFSET_HOLE` instead of zeros. Smaller ones are not worth the query.
const SPARSE_READ_MIN: u32 = 64 << 10;
/// Block status descriptors per reply, at most (the client asks again for the rest).
const MAX_EXTENTS: usize = 16384;

/// A failed request: the NBD error and a message for the client's user.
type Fail = (u32, String);

impl Conn<'_> {
    /// Runs a request, returning its reply.
    pub(super) fn run(&self, job: Job) -> Reply {
        let Job {
            req,
            buf,
            error,
            cost,
        } = job;
        let buf = if buf.is_empty() { self.take_buf() } else { buf };
        let mut out = Out { buf, len: 0 };
        let result = match error {
            Some(e) => Err((e, format!("requests carry at most {MAX_PAYLOAD} bytes"))),
            None => match req.kind {
                CMD_READ => self.read(&req, &mut out),
                CMD_WRITE => self.write(&req, &mut out),
                CMD_FLUSH => self
                    .flags(&req, CMD_FLAG_FUA)
                    .and_then(|()| io(self.dev.flush())),
                CMD_TRIM => self.trim(&req),
                CMD_WRITE_ZEROES => self.write_zeroes(&req),
                CMD_BLOCK_STATUS => self.block_status(&req, &mut out),
                k => Err((EINVAL, format!("unknown command {k}"))),
            },
        };
        match result {
            // READ and BLOCK_STATUS wrote their reply; the others have none yet.
            Ok(()) if out.len > 0 => {}
            Ok(()) => out.put(&simple_reply(0, req.handle)),
            Err((error, msg)) => {
                if error == EIO {
                    tracing::warn!(export = %self.s.name, "nbd request failed: {msg}");
                } else {
                    tracing::debug!(export = %self.s.name, error, "nbd request refused: {msg}");
                }
                out.len = 0;
                if self.s.structured {
                    error_chunk(req.handle, error, &msg, |b| out.put(b));
                } else {
                    out.put(&simple_reply(error, req.handle));
                }
            }
        }
        Reply {
            buf: out.buf,
            len: out.len,
            cost,
        }
    }

    fn read(&self, req: &Request, out: &mut Out) -> Result<(), Fail> {
        let df = if self.s.structured { CMD_FLAG_DF } else { 0 };
        self.flags(req, CMD_FLAG_FUA | df)?;
        if req.len > MAX_PAYLOAD {
            return Err((EINVAL, format!("reads are limited to {MAX_PAYLOAD} bytes")));
        }
        self.range(req, EINVAL)?;
        let len = req.len as usize;
        if !self.s.structured {
            out.put(&simple_reply(0, req.handle));
            return io(self.dev.read_at(out.space(len), req.offset));
        }
        if req.len == 0 {
            out.put(&chunk_header(
                REPLY_FLAG_DONE,
                REPLY_TYPE_NONE,
                req.handle,
                0,
            ));
            return Ok(());
        }
        if req.flags & CMD_FLAG_DF == 0
            && req.len >= SPARSE_READ_MIN
            && self.sparse_read(req, out)?
        {
            return Ok(());
        }
        out.put(&chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_OFFSET_DATA,
            req.handle,
            8 + req.len,
        ));
        out.put(&req.offset.to_be_bytes());
        io(self.dev.read_at(out.space(len), req.offset))
    }

    /// A READ answered with data and hole chunks; false (nothing written) when the range
    /// has no zero extents or the device cannot tell.
    fn sparse_read(&self, req: &Request, out: &mut Out) -> Result<bool, Fail> {
        let Ok(extents) = self.dev.block_status(req.offset, u64::from(req.len)) else {
            return Ok(false);
        };
        if !extents.iter().any(|e| e.zero && e.len > 0) {
            return Ok(false);
        }
        // Runs of (reads as zeros, length), merged, covering the request exactly.
        let mut runs: Vec<(bool, u64)> = Vec::new();
        let mut left = u64::from(req.len);
        for e in extents.iter().chain(std::iter::once(&Extent {
            len: u64::MAX,
            hole: false,
            zero: false,
        })) {
            let n = e.len.min(left);
            if n == 0 {
                continue;
            }
            left -= n;
            match runs.last_mut() {
                Some((z, l)) if *z == e.zero => *l += n,
                _ => runs.push((e.zero, n)),
            }
            if left == 0 {
                break;
            }
        }
        let mut pos = req.offset;
        let mut last = 0;
        for (zero, n) in runs {
            last = out.len;
            // `n` is at most `req.len`, a u32.
            let n32 = n as u32;
            if zero {
                out.put(&chunk_header(0, REPLY_TYPE_OFFSET_HOLE, req.handle, 12));
                out.put(&pos.to_be_bytes());
                out.put(&n32.to_be_bytes());
            } else {
                out.put(&chunk_header(
                    0,
                    REPLY_TYPE_OFFSET_DATA,
                    req.handle,
                    8 + n32,
                ));
                out.put(&pos.to_be_bytes());
                io(self.dev.read_at(out.space(n as usize), pos))?;
            }
            pos += n;
        }
        // Every read succeeded: the last chunk ends the reply.
        out.patch(last + 4, &REPLY_FLAG_DONE.to_be_bytes());
        Ok(true)
    }

    fn write(&self, req: &Request, out: &mut Out) -> Result<(), Fail> {
        self.flags(req, CMD_FLAG_FUA)?;
        self.writable()?;
        self.range(req, ENOSPC)?;
        let data = out.buf.get(..req.len as usize).unwrap_or(&[]);
        io(self
            .dev
            .write_at(data, req.offset, req.flags & CMD_FLAG_FUA != 0))
    }

    fn trim(&self, req: &Request) -> Result<(), Fail> {
        self.flags(req, CMD_FLAG_FUA)?;
        self.writable()?;
        self.range(req, EINVAL)?;
        io(self.dev.trim(req.offset, u64::from(req.len)))?;
        if req.flags & CMD_FLAG_FUA != 0 {
            io(self.dev.flush())?;
        }
        Ok(())
    }

    fn write_zeroes(&self, req: &Request) -> Result<(), Fail> {
        self.flags(req, CMD_FLAG_FUA | CMD_FLAG_NO_HOLE)?;
        self.writable()?;
        self.range(req, ENOSPC)?;
        io(self.dev.write_zeroes(
            req.offset,
            u64::from(req.len),
            req.flags & CMD_FLAG_NO_HOLE == 0,
            req.flags & CMD_FLAG_FUA != 0,
        ))
    }

    fn block_status(&self, req: &Request, out: &mut Out) -> Result<(), Fail> {
        self.flags(req, CMD_FLAG_FUA | CMD_FLAG_REQ_ONE)?;
        if !self.s.base_allocation {
            return Err((
                EINVAL,
                "select base:allocation with NBD_OPT_SET_META_CONTEXT first".to_string(),
            ));
        }
        if req.len == 0 {
            return Err((EINVAL, "block status of 0 bytes".to_string()));
        }
        self.range(req, EINVAL)?;
        let extents = io(self.dev.block_status(req.offset, u64::from(req.len)))?;
        let max = if req.flags & CMD_FLAG_REQ_ONE != 0 {
            1
        } else {
            MAX_EXTENTS
        };
        // (length, flags) descriptors: merged, non-empty, within the request.
        let mut descs: Vec<(u32, u32)> = Vec::new();
        let mut left = req.len;
        for e in &extents {
            let n = e.len.min(u64::from(left)) as u32;
            if n == 0 {
                continue;
            }
            let flags = if e.hole { STATE_HOLE } else { 0 } | if e.zero { STATE_ZERO } else { 0 };
            let full = descs.len() == max;
            match descs.last_mut() {
                Some((l, f)) if *f == flags => *l += n,
                _ if full => break,
                _ => descs.push((n, flags)),
            }
            left -= n;
            if left == 0 {
                break;
            }
        }
        if descs.is_empty() {
            // "Unknown" is always a correct answer.
            descs.push((req.len, 0));
        }
        let len = 4 + 8 * descs.len() as u32;
        out.put(&chunk_header(
            REPLY_FLAG_DONE,
            REPLY_TYPE_BLOCK_STATUS,
            req.handle,
            len,
        ));
        out.put(&BASE_ALLOCATION_ID.to_be_bytes());
        for (l, f) in descs {
            out.put(&l.to_be_bytes());
            out.put(&f.to_be_bytes());
        }
        Ok(())
    }

    fn flags(&self, req: &Request, allowed: u16) -> Result<(), Fail> {
        if req.flags & !allowed != 0 {
            return Err((
                EINVAL,
                format!(
                    "flags {:#x} are not valid for command {}",
                    req.flags, req.kind
                ),
            ));
        }
        Ok(())
    }

    fn writable(&self) -> Result<(), Fail> {
        if self.dev.read_only() {
            return Err((EPERM, format!("export {} is read-only", self.s.name)));
        }
        Ok(())
    }

    fn range(&self, req: &Request, error: u32) -> Result<(), Fail> {
        match req.offset.checked_add(u64::from(req.len)) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err((
                error,
                format!(
                    "{} bytes at {} are beyond the export's {} bytes",
                    req.len, req.offset, self.size
                ),
            )),
        }
    }
}

fn io<T>(r: io::Result<T>) -> Result<T, Fail> {
    r.map_err(|e| (errno(&e), e.to_string()))
}

/// A reply being built in a recycled buffer. The buffer keeps its full length between uses
/// (its bytes stay initialized), so that reusing it costs no zeroing: only `len` counts.
struct Out {
    buf: Vec<u8>,
    len: usize,
}

impl Out {
    fn put(&mut self, bytes: &[u8]) {
        let len = self.len;
        self.space(bytes.len()).copy_from_slice(bytes);
        debug_assert_eq!(self.len, len + bytes.len());
    }

    /// The next `n` bytes of the reply, to be filled in place.
    fn space(&mut self, n: usize) -> &mut [u8] {
        let start = self.len;
        let end = start + n;
        if self.buf.len() < end {
            self.buf.resize(end, 0);
        }
        self.len = end;
        &mut self.buf[start..end]
    }

    /// Overwrites bytes already put.
    fn patch(&mut self, at: usize, bytes: &[u8]) {
        if let Some(dst) = self.buf.get_mut(at..at + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
}
