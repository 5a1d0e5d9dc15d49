//! Network virtualization (seed section 5): a service that owns virtual networks and
//! forwards frames between their ports in a datapath of its own.
//!
//! - [`datapath`]: networks (L2 segments with an optional VLAN), ports (taps and vhost-user),
//!   the switch that forwards between them, and what sits above it: each network's endpoint
//!   (gateway, neighbours), router and NAT, firewall with connection tracking, load
//!   balancer, DHCP server; per-port QoS, impairment and counters.
//! - [`service`]: the HTTP/JSON API, the persisted desired state, metrics.
//!
//! The design is described in docs/net.md.

pub mod datapath;
pub mod error;
pub mod service;

pub use error::{NetError, Result};
