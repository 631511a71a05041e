//! shipshape's control plane at run time: the Store actor over redb (objects, watch, audit),
//! and the GitSync actor that turns commits into desired state.
//!
//! Effects live here: the database, Git, clocks. Decisions do not: GitSync asks
//! `shipshape_reconciler::gitops` what to do and sends the answer to the Store as one batch.

pub mod api;
pub mod controller;
pub mod controllers;
pub mod events;
pub mod fleet;
pub mod gitsync;
pub mod health;
pub mod metrics;
pub mod service_view;
pub mod store;
pub mod store_actor;
pub mod supervision;

pub use gitsync::{GitRef, GitSource, GitSync, Mirror, SyncNow, SyncOptions, SyncReport};
pub use store::{Batch, Store, StoreError, Write};
pub use store_actor::StoreActor;
