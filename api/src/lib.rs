//! shipshape's API: the Kubernetes object types it serves, and the loading and validation of
//! manifests from a repository.
//!
//! Read it in this order:
//! - [`object`]: the supported kinds ([`Kind`]) and one [`Object`] type over them, with keys,
//!   labels, owner references and a stable serialisation. The structs are `k8s-openapi`'s, so
//!   real manifests and kubectl's JSON work unchanged.
//! - [`load`]: files (or a Git tree) in, validated [`Manifest`]s and one-line [`Problem`]s out.
//! - [`validate`]: the API server's rules for a decoded object.
//! - [`versions`]: older versions Kubernetes still serves (`autoscaling/v1`), read into the stored one.
//! - [`yaml`], [`path`]: the positioned YAML reader and field paths that let every problem name
//!   its line and field.
//! - [`names`], [`quantity`], [`selector`], [`qos`]: Kubernetes' name syntaxes, resource quantities,
//!   label selectors and QoS classes, shared with the scheduler, the controllers and the kubelets.
//!
//! This crate does no I/O beyond reading the files it is asked to load, and knows nothing of
//! the store, the actors or the runtime.

pub mod defaults;
pub mod fleet;
pub mod image_ref;
pub mod load;
pub mod names;
pub mod object;
pub mod path;
pub mod pointer;
pub mod qos;
pub mod quantity;
pub mod schema;
pub mod selector;
pub mod validate;
pub mod versions;
pub mod yaml;

pub use k8s_openapi;
pub use load::{LoadResult, Manifest, Problem, SourceFile};
pub use object::{Kind, Object, ObjectKey};
pub use path::FieldPath;
pub use quantity::Quantity;
pub use selector::Selector;
