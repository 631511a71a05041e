//! Where a container image comes from and how its bytes are fetched: the registry
//! configuration (mirrors, rewrites, credentials and TLS per host, in k3s' `registries.yaml`
//! format), the credentials a pod's `imagePullSecrets` carry, and the OCI distribution protocol
//! itself (through `oci-client`), with every manifest and blob checked against its digest.
//!
//! Nothing here knows about containerd: the kubelet asks for an image's manifest and config,
//! then streams each layer it does not have into its content store.

pub mod config;
pub mod keyring;
pub mod pull;

pub use config::{Endpoint, RegistryConfig};
pub use keyring::{Credential, Keyring};
pub use pull::{PullError, Puller, Resolved};
