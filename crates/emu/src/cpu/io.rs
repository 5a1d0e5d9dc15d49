//! Port I/O and MMIO that leave the emulator.
//!
//! The VMM's devices answer through `VcpuExit`s, as they do for KVM. A write is queued and
//! reported after the instruction completes. A read cannot complete the instruction, so the
//! instruction is abandoned (`Fault::Exit`, no state changed), the VMM supplies the data, and
//! the instruction runs again from the start: this time the read finds its data waiting.

use super::{Cpu, Fault, R};
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Pio,
    Mmio,
}

/// One access that needs the VMM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoAccess {
    pub kind: IoKind,
    pub addr: u64,
    pub len: usize,
    pub data: [u8; 8],
}

#[derive(Debug, Default)]
pub struct IoState {
    /// Reads the VMM has answered for the instruction being replayed, in order.
    completed: Vec<IoAccess>,
    /// How many of `completed` the current attempt has consumed.
    cursor: usize,
    /// The read the VMM must answer before the instruction can run again.
    pub pending_read: Option<IoAccess>,
    /// Writes to report to the VMM, oldest first.
    pub writes: VecDeque<IoAccess>,
}

impl IoState {
    /// The VMM answered `pending_read` with `data`.
    pub fn complete_read(&mut self, data: &[u8]) {
        if let Some(mut a) = self.pending_read.take() {
            let n = a.len.min(8).min(data.len());
            a.data[..n].copy_from_slice(&data[..n]);
            self.completed.push(a);
        }
    }

    /// The instruction (or one iteration of a repeated string instruction) completed: the
    /// answered reads are used up.
    #[inline]
    pub fn commit(&mut self) {
        if !self.completed.is_empty() {
            self.completed.clear();
        }
        self.cursor = 0;
    }

    /// The instruction is being abandoned or starts again: rewind to the first answered read.
    #[inline]
    pub fn rewind(&mut self, writes_before: usize) {
        self.cursor = 0;
        self.writes.truncate(writes_before);
    }

    fn read(&mut self, kind: IoKind, addr: u64, buf: &mut [u8]) -> R {
        if let Some(a) = self.completed.get(self.cursor) {
            if a.kind == kind && a.addr == addr && a.len == buf.len() {
                buf.copy_from_slice(&a.data[..buf.len()]);
                self.cursor += 1;
                return Ok(());
            }
            // The replay took another path than the first attempt (the guest changed memory
            // in between, or a device answer changed control flow): start over.
            self.completed.clear();
            self.cursor = 0;
        }
        self.pending_read = Some(IoAccess {
            kind,
            addr,
            len: buf.len(),
            data: [0; 8],
        });
        Err(Fault::Exit)
    }

    fn write(&mut self, kind: IoKind, addr: u64, buf: &[u8]) {
        let mut data = [0; 8];
        data[..buf.len()].copy_from_slice(buf);
        self.writes.push_back(IoAccess {
            kind,
            addr,
            len: buf.len(),
            data,
        });
    }
}

impl Cpu {
    /// Reads a port (1, 2 or 4 bytes). The caller has done the IOPL/TSS permission checks.
    pub fn port_in(&mut self, port: u16, size: usize) -> R<u32> {
        let mut b = [0u8; 4];
        if !self.platform.pio_read(port, &mut b[..size]) {
            self.io.read(IoKind::Pio, u64::from(port), &mut b[..size])?;
        }
        Ok(u32::from_le_bytes(b))
    }

    /// Writes a port (1, 2 or 4 bytes).
    pub fn port_out(&mut self, port: u16, size: usize, value: u32) -> R {
        let b = value.to_le_bytes();
        if !self.platform.pio_write(port, &b[..size]) {
            self.io.write(IoKind::Pio, u64::from(port), &b[..size]);
            self.end_block = true;
        }
        Ok(())
    }

    /// Reads a physical address outside RAM, in pieces of at most 8 bytes.
    pub fn mmio_read(&mut self, phys: u64, buf: &mut [u8]) -> R {
        for (i, chunk) in buf.chunks_mut(8).enumerate() {
            let a = phys + i as u64 * 8;
            if !self.platform.mmio_read(a, chunk) {
                self.io.read(IoKind::Mmio, a, chunk)?;
            }
        }
        Ok(())
    }

    pub fn mmio_write(&mut self, phys: u64, buf: &[u8]) -> R {
        for (i, chunk) in buf.chunks(8).enumerate() {
            let a = phys + i as u64 * 8;
            if !self.platform.mmio_write(a, chunk) {
                self.io.write(IoKind::Mmio, a, chunk);
                self.end_block = true;
            }
        }
        Ok(())
    }
}
