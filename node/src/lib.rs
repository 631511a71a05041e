//! shipshape's kubelet side: what makes pods bound to a node run and report.
//!
//! - [`simulated`]: nodes that register, renew leases and report pods Running without running
//!   anything (scale tests, trying shipshape without root). The containerd runtime is next.

pub mod simulated;

pub use simulated::{Cidr, SimulatedConfig, SimulatedNodes};
