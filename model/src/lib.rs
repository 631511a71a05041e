//! stateright models of the reconciliation core.
//!
//! Each model's steps call the very decision functions the controller actors call
//! (`shipshape_reconciler`), so a property proven here is a property of the running code, under
//! every interleaving and fault the model allows. Bounds are on sizes and faults, never a depth
//! cut. `shipshape verify` runs them; so does `cargo test -p shipshape-model`.

pub mod converge;
pub mod fleet;
pub mod nodeloss;
pub mod readwrites;
pub mod rollout;
pub mod verify;
pub mod views;
pub mod workloads;
