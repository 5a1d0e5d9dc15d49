//! The virtual machine monitor (seed 3.1, 3.2): builds a VM from a [`config::VmConfig`] on a
//! CPU backend, runs its vCPUs, drives its lifecycle (Created, Running, Paused, Stopped) and
//! serves the management API.

pub mod api;
pub mod config;
pub mod console;
mod load;
pub mod memory;
mod platform;
pub mod state;
pub mod vcpu;
pub mod virtio;
pub mod vm;

pub use config::{Accel, ConsoleConfig, DiskConfig, VmConfig};
pub use state::VmState;
pub use vm::{run_vm, VmError, VmOutcome};
