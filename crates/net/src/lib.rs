//! Network virtualization (seed section 5): a service that owns virtual networks and
//! forwards frames between their ports in a datapath of its own.
//!
//! - [`datapath`]: networks (L2 segments with an optional VLAN), ports (taps), the switch
//!   that forwards between them, per-port QoS and counters.

pub mod datapath;
pub mod error;
pub mod service;

pub use error::{NetError, Result};
