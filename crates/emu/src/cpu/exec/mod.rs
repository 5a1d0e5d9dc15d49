//! Instruction handlers, one module per kind of instruction. `resolve` picks the handler of a
//! decoded instruction once, when its block is decoded.

pub mod control;
pub mod int;
#[cfg(test)]
mod native_fn;
pub mod sse;
pub mod string;
pub mod system;
pub mod x87;

use super::{Cpu, Exception, Handler, R};
use iced_x86::{Code, Instruction};
use std::collections::HashSet;
use std::sync::Mutex;

/// The handler for a decoded instruction; unknown instructions raise #UD.
pub fn resolve(ins: &Instruction) -> Handler {
    if ins.code() == Code::INVALID {
        return invalid;
    }
    int::resolve(ins)
        .or_else(|| control::resolve(ins))
        .or_else(|| string::resolve(ins))
        .or_else(|| system::resolve(ins))
        .or_else(|| sse::resolve(ins))
        .or_else(|| x87::resolve(ins))
        .unwrap_or(unimplemented)
}

/// Bytes the decoder does not recognize: #UD, as on hardware.
fn invalid(cpu: &mut Cpu, _: &Instruction) -> R {
    log_once(cpu, "invalid instruction");
    Err(Exception::ud().into())
}

/// A valid instruction the emulator does not implement: #UD in the guest, logged once per
/// instruction form with its address and bytes, never a host panic.
fn unimplemented(cpu: &mut Cpu, ins: &Instruction) -> R {
    static SEEN: Mutex<Option<HashSet<Code>>> = Mutex::new(None);
    let first = SEEN
        .lock()
        .map(|mut s| s.get_or_insert_with(HashSet::new).insert(ins.code()))
        .unwrap_or(false);
    if first {
        log_once(
            cpu,
            &format!("unimplemented instruction {ins} ({:?})", ins.code()),
        );
    }
    Err(Exception::ud().into())
}

fn log_once(cpu: &mut Cpu, what: &str) {
    let mut bytes = [0u8; 15];
    let n = cpu
        .linear(super::Seg::Cs, cpu.rip)
        .ok()
        .and_then(|lin| cpu.fetch(lin, &mut bytes).ok())
        .map(|(_, n)| n)
        .unwrap_or(0);
    tracing::warn!(
        "emu: {what} at {:#x}: bytes {:02x?}; raising #UD in the guest",
        cpu.rip,
        &bytes[..n]
    );
}
