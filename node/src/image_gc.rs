//! The kubelet's image garbage collection: when the disk holding containerd's content passes
//! the high threshold, the node's unused images go, longest unused first, until usage is back
//! at the low threshold. What goes is decided by `shipshape_reconciler::images::images_to_remove`;
//! this module measures (images, containers, the disk) and removes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Instant;

use containerd_client::services::v1::DeleteImageRequest;
use containerd_client::services::v1::images_client::ImagesClient;
use shipshape_reconciler::images::{ImageGcPolicy, NodeImage, images_to_remove};

use crate::containerd::{Containerd, RuntimeError, request};
use crate::image;
use crate::runtime::NodeRuntime;

/// One node's image garbage collection: its policy, the disk it watches, and when it first saw
/// and last saw in use each image (by digest), as the kubelet keeps them in memory.
#[derive(Debug)]
pub struct ImageGc {
    policy: ImageGcPolicy,
    /// A directory on the filesystem containerd keeps content and snapshots on.
    root: PathBuf,
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Clone, Copy, Debug)]
struct Seen {
    first: Instant,
    last_used: Instant,
}

/// What one collection did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Collected {
    /// Image names removed.
    pub removed: Vec<String>,
    /// Bytes their layers take (what removing them may free).
    pub bytes: u64,
}

impl ImageGc {
    /// Collection by `policy`, measuring the filesystem `root` is on.
    pub fn new(policy: ImageGcPolicy, root: PathBuf) -> Self {
        ImageGc {
            policy,
            root,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Looks at the node's images and the disk once, and removes what the policy says.
    pub async fn collect(
        &self,
        containerd: &Containerd,
        runtime: &NodeRuntime,
    ) -> Result<Collected, RuntimeError> {
        let namespace = runtime.namespace();
        let images = image::list(containerd, namespace).await?;
        let used_names: HashSet<String> =
            runtime.list().await?.into_iter().map(|c| c.image).collect();
        // Every name pointing at one digest is one image: in use if any name is, pinned if
        // any is.
        let mut by_digest: BTreeMap<String, (Vec<String>, NodeImage)> = BTreeMap::new();
        for listed in &images {
            let entry = by_digest.entry(listed.digest.clone()).or_insert_with(|| {
                (
                    Vec::new(),
                    NodeImage {
                        id: listed.digest.clone(),
                        size: listed.size,
                        in_use: false,
                        pinned: false,
                        unused_for: std::time::Duration::ZERO,
                        seen_for: std::time::Duration::ZERO,
                    },
                )
            });
            entry.0.push(listed.name.clone());
            entry.1.in_use |= used_names.contains(&listed.name);
            entry.1.pinned |= listed.pinned;
        }
        let now = Instant::now();
        {
            let mut seen = self
                .seen
                .lock()
                .map_err(|_| RuntimeError::Invalid("the image GC lock is poisoned".into()))?;
            seen.retain(|digest, _| by_digest.contains_key(digest));
            for (digest, (_, node_image)) in by_digest.iter_mut() {
                let entry = seen.entry(digest.clone()).or_insert(Seen {
                    first: now,
                    last_used: now,
                });
                if node_image.in_use {
                    entry.last_used = now;
                }
                node_image.unused_for = now.duration_since(entry.last_used);
                node_image.seen_for = now.duration_since(entry.first);
            }
        }
        let Some((capacity, available)) = crate::volumes::filesystem_space(&self.root).await else {
            return Ok(Collected::default());
        };
        let candidates: Vec<NodeImage> = by_digest.values().map(|(_, i)| i.clone()).collect();
        let chosen = images_to_remove(&candidates, capacity, available, &self.policy);
        tracing::debug!(
            namespace,
            ?candidates,
            capacity,
            available,
            ?chosen,
            "image garbage collection looked"
        );
        let mut collected = Collected::default();
        for digest in chosen {
            let Some((names, node_image)) = by_digest.get(&digest) else {
                continue;
            };
            for name in names {
                let deleted = ImagesClient::new(containerd.channel())
                    .delete(request(
                        namespace,
                        DeleteImageRequest {
                            name: name.clone(),
                            sync: false,
                            target: None,
                        },
                        None,
                    ))
                    .await;
                match deleted {
                    Ok(_) => collected.removed.push(name.clone()),
                    Err(s) if s.code() == containerd_client::tonic::Code::NotFound => {}
                    Err(s) => return Err(RuntimeError::call(format!("images.Delete {name}"), s)),
                }
            }
            collected.bytes = collected.bytes.saturating_add(node_image.size);
        }
        if !collected.removed.is_empty() {
            let used = 100 - (u128::from(available) * 100 / u128::from(capacity.max(1))) as u64;
            tracing::info!(
                namespace,
                removed = ?collected.removed,
                bytes = collected.bytes,
                disk_used_percent = used,
                high = self.policy.high_percent,
                low = self.policy.low_percent,
                "image garbage collection"
            );
        }
        Ok(collected)
    }
}
