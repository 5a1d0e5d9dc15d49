//! Differential testing of the emulator against this machine's KVM: the same 32-bit code runs on
//! both from the same registers and memory, and the final state must match.
//!
//! - `layout`: the guest memory map both sides share (GDT, IDT with one stub per vector, code,
//!   stack, data page) and the case/outcome types.
//! - `kvm`: runs a case on `/dev/kvm` (kvm-ioctls directly, to read XMM state too).
//! - `emu`: runs a case on `vireo_emu::testutil::TestMachine`.
//! - `gen`: the random instruction-sequence generator.
//! - `compare`: compares two outcomes and formats a reproduction.

#![allow(dead_code)]

pub mod compare;
pub mod emu;
pub mod gen;
pub mod kvm;
pub mod layout;
pub mod rng;
