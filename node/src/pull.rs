//! Image pulls shared by every node of this process: one pull of an image at a time, so pods
//! (on one node or several) that want the same new image wait for one download, and a node
//! that pulls an image another node already has only links its content.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use shipshape_api::image_ref::ImageRef;
use shipshape_registry::{Keyring, Puller, RegistryConfig};

use crate::containerd::Containerd;
use crate::image::{self, PullFailure, PullProgress, Pulled, resolve};

/// The pulls of one process (one containerd, many node namespaces).
pub struct ImagePuller {
    puller: Puller,
    images: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Done>>>>,
}

impl std::fmt::Debug for ImagePuller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImagePuller").finish_non_exhaustive()
    }
}

/// When each namespace last finished pulling one image.
#[derive(Default)]
struct Done {
    at: HashMap<String, Instant>,
}

impl ImagePuller {
    /// Pulls with `config` (mirrors, credentials and TLS per host).
    pub fn new(config: Arc<RegistryConfig>) -> Self {
        // The registry client's TLS uses the process's provider: ring, as the API server's.
        let _ = rustls::crypto::ring::default_provider().install_default();
        ImagePuller {
            puller: Puller::new(config),
            images: Mutex::new(HashMap::new()),
        }
    }

    /// Pulls `image` into `namespace`, unless a pull of it into `namespace` finished after
    /// `asked` (while this one waited its turn): that pull's result is as fresh as this
    /// one's would be.
    pub async fn pull(
        &self,
        containerd: &Containerd,
        namespace: &str,
        image: &ImageRef,
        keyring: &Keyring,
        asked: Instant,
        progress: &Arc<PullProgress>,
    ) -> Result<Pulled, PullFailure> {
        let name = image.to_string();
        let slot = {
            let mut images = self
                .images
                .lock()
                .map_err(|_| PullFailure::Runtime("the image pull lock is poisoned".into()))?;
            images.entry(name.clone()).or_default().clone()
        };
        let mut done = slot.lock().await;
        if done.at.get(namespace).is_some_and(|at| *at >= asked)
            && let Some(found) = resolve(containerd, namespace, &name).await?
        {
            return Ok(Pulled {
                image: found,
                downloaded: 0,
                size: 0,
                endpoint: String::new(),
            });
        }
        let pulled = image::pull(
            containerd,
            namespace,
            &self.puller,
            image,
            keyring,
            progress,
        )
        .await?;
        done.at.insert(namespace.to_string(), Instant::now());
        Ok(pulled)
    }
}
