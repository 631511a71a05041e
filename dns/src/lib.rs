//! shipshape's cluster DNS: authoritative for the cluster domain and the reverse zones of the
//! service and pod ranges, answering from a live view of Services, Endpoints and Pods.
//!
//! - [`zone`]: the records, a pure function of those objects.
//! - [`view`]: the controller that follows the store and swaps in a new zone after changes.
//! - [`server`]: the hickory-server request handler and the UDP/TCP listeners.

pub mod server;
pub mod view;
pub mod zone;

pub use server::{DnsError, DnsServer};
pub use view::{DnsView, ZoneCell};
pub use zone::{Zone, ZoneConfig};
