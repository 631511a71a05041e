//! shipshape's kubelet side: what makes pods bound to a node run and report.
//!
//! - [`simulated`]: nodes that register, renew leases and report pods Running without running
//!   anything (scale tests, trying shipshape without root). The containerd runtime is next.

pub mod containerd;
pub mod exec;
pub mod image;
pub mod image_gc;
pub mod kubelet;
pub mod network;
pub mod pod_worker;
pub mod portforward;
pub mod probe;
pub mod proxy;
pub mod pull;
pub mod registration;
pub mod runtime;
pub mod seccomp;
pub mod simulated;
pub mod spec;
pub mod volumes;

pub use simulated::{Cidr, SimulatedConfig, SimulatedNodes};
