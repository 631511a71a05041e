//! The volume controller: binds PersistentVolumeClaims to PersistentVolumes and provisions
//! `local-path` volumes (directories under the data directory, on the node of the claim's first
//! pod), deciding with [`shipshape_reconciler::volumes::decide_volumes`]. It also keeps the
//! built-in `local-path` StorageClass (the default) in the store.

use shipshape_api::pointer::At;
use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::{Value, json};
use shipshape_api::{Kind, ObjectKey};
use shipshape_reconciler::volumes::{
    ClaimView, LOCAL_PATH, VolumeAction, VolumeView, decide_volumes,
};

use super::scheduler::units;
use super::text;
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::store::{AuditEntry, Batch, EventType, Precondition, WatchEvent, parse_storage_key};

/// The annotation naming who provisioned a volume (Kubernetes' name).
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";

/// Our provisioner's name.
pub const PROVISIONER: &str = "shipshape.dev/local-path";

/// The node label a local volume's affinity names.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

const KEY: &str = "volumes";

/// Follows claims, volumes and the pods that use claims.
pub struct VolumeController {
    /// Where provisioned volumes' directories go (`DATA/volumes`).
    root: PathBuf,
    claims: BTreeMap<String, Value>,
    volumes: BTreeMap<String, Value>,
    /// (namespace, claim) → the node of the first bound pod using it.
    consumers: BTreeMap<(String, String), String>,
    /// Pod key → the claims it uses and its node (to forget it).
    pods: BTreeMap<String, (Vec<(String, String)>, String)>,
    storage_class_seen: bool,
}

impl VolumeController {
    /// A controller provisioning under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            claims: BTreeMap::new(),
            volumes: BTreeMap::new(),
            consumers: BTreeMap::new(),
            pods: BTreeMap::new(),
            storage_class_seen: false,
        }
    }

    fn recount_consumers(&mut self) {
        self.consumers.clear();
        for (claims, node) in self.pods.values() {
            for claim in claims {
                self.consumers
                    .entry(claim.clone())
                    .or_insert_with(|| node.clone());
            }
        }
    }
}

/// The claims a pod's volumes use.
pub fn pod_claims(pod: &Value) -> Vec<String> {
    pod.at("/spec/volumes")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| {
            v.at("/persistentVolumeClaim/claimName")?
                .as_str()
                .map(str::to_string)
        })
        .collect()
}

/// The node a volume's required node affinity names (`kubernetes.io/hostname In [node]`).
pub fn volume_node(volume: &Value) -> Option<String> {
    let terms = volume
        .at("/spec/nodeAffinity/required/nodeSelectorTerms")?
        .as_array()?;
    terms.iter().find_map(|term| {
        term["matchExpressions"].as_array()?.iter().find_map(|e| {
            (e["key"] == HOSTNAME_LABEL && e["operator"] == "In")
                .then(|| e["values"][0].as_str().map(str::to_string))
                .flatten()
        })
    })
}

fn modes(value: &Value) -> Vec<String> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect()
}

fn claim_view(claim: &Value, consumers: &BTreeMap<(String, String), String>) -> ClaimView {
    let namespace = text(claim, "/metadata/namespace")
        .unwrap_or("default")
        .to_string();
    let name = text(claim, "/metadata/name")
        .unwrap_or_default()
        .to_string();
    ClaimView {
        consumer_node: consumers.get(&(namespace.clone(), name.clone())).cloned(),
        uid: text(claim, "/metadata/uid").unwrap_or_default().to_string(),
        class: claim["spec"]["storageClassName"]
            .as_str()
            .map(str::to_string),
        request: units(claim.at("/spec/resources/requests/storage")),
        access_modes: modes(&claim["spec"]["accessModes"]),
        volume: text(claim, "/spec/volumeName")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        phase: text(claim, "/status/phase").unwrap_or_default().to_string(),
        namespace,
        name,
    }
}

fn volume_view(volume: &Value) -> VolumeView {
    let claim = volume.at("/spec/claimRef").map(|r| {
        (
            text(r, "/namespace").unwrap_or("default").to_string(),
            text(r, "/name").unwrap_or_default().to_string(),
            text(r, "/uid").unwrap_or_default().to_string(),
        )
    });
    VolumeView {
        name: text(volume, "/metadata/name")
            .unwrap_or_default()
            .to_string(),
        class: text(volume, "/spec/storageClassName")
            .unwrap_or_default()
            .to_string(),
        capacity: units(volume.at("/spec/capacity/storage")),
        access_modes: modes(&volume["spec"]["accessModes"]),
        claim,
        reclaim_delete: text(volume, "/spec/persistentVolumeReclaimPolicy") == Some("Delete"),
        phase: text(volume, "/status/phase")
            .unwrap_or_default()
            .to_string(),
        provisioned: volume
            .at(&format!(
                "/metadata/annotations/{}",
                PROVISIONED_BY.replace('/', "~1")
            ))
            .and_then(Value::as_str)
            == Some(PROVISIONER),
    }
}

/// Bytes as Kubernetes writes a size: `1Gi`, `512Mi`, or plain bytes.
fn size(bytes: u64) -> String {
    for (unit, factor) in [
        ("Ti", 1u64 << 40),
        ("Gi", 1 << 30),
        ("Mi", 1 << 20),
        ("Ki", 1 << 10),
    ] {
        if bytes >= factor && bytes.is_multiple_of(factor) {
            return format!("{}{unit}", bytes / factor);
        }
    }
    bytes.to_string()
}

fn key(kind: Kind, namespace: &str, name: &str) -> ObjectKey {
    ObjectKey {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

impl Controller for VolumeController {
    fn name(&self) -> &'static str {
        "volumes"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![
            Kind::PersistentVolumeClaim,
            Kind::PersistentVolume,
            Kind::Pod,
            Kind::StorageClass,
        ]
    }

    fn reset(&mut self) {
        self.claims.clear();
        self.volumes.clear();
        self.consumers.clear();
        self.pods.clear();
        self.storage_class_seen = false;
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(object_key) = parse_storage_key(&event.key) else {
            return;
        };
        let deleted = event.kind == EventType::Deleted;
        match object_key.kind {
            Kind::PersistentVolumeClaim => {
                if deleted {
                    self.claims.remove(&event.key);
                } else {
                    self.claims.insert(event.key.clone(), event.object.clone());
                }
            }
            Kind::PersistentVolume => {
                if deleted {
                    self.volumes.remove(&object_key.name);
                } else {
                    self.volumes
                        .insert(object_key.name.clone(), event.object.clone());
                }
            }
            Kind::StorageClass => {
                if object_key.name == LOCAL_PATH {
                    self.storage_class_seen = !deleted;
                }
            }
            Kind::Pod => {
                let claims = if deleted {
                    Vec::new()
                } else {
                    pod_claims(&event.object)
                };
                let node = text(&event.object, "/spec/nodeName").filter(|n| !n.is_empty());
                let entry = match (claims.is_empty(), node) {
                    (false, Some(node)) => Some((
                        claims
                            .into_iter()
                            .map(|c| (object_key.namespace.clone(), c))
                            .collect(),
                        node.to_string(),
                    )),
                    _ => None,
                };
                let changed = match entry {
                    Some(entry) => {
                        self.pods.insert(event.key.clone(), entry.clone()) != Some(entry)
                    }
                    None => self.pods.remove(&event.key).is_some(),
                };
                if !changed {
                    return;
                }
                self.recount_consumers();
            }
            _ => return,
        }
        dirty.mark(KEY, || because(event));
    }

    fn listed(&mut self, dirty: &mut Dirty) {
        dirty.mark(KEY, || "listed".to_string());
    }

    fn reconcile(&mut self, _key: &str, _now: jiff::Timestamp) -> Reconciled {
        let claims: Vec<ClaimView> = self
            .claims
            .values()
            .filter(|c| c.at("/metadata/deletionTimestamp").is_none())
            .map(|c| claim_view(c, &self.consumers))
            .collect();
        let volumes: Vec<VolumeView> = self.volumes.values().map(volume_view).collect();
        let decision = decide_volumes(&claims, &volumes);
        let mut batches = Vec::new();
        if !self.storage_class_seen {
            batches.push(Batch {
                writes: vec![Write::Create {
                    object: json!({
                        "apiVersion": "storage.k8s.io/v1",
                        "kind": "StorageClass",
                        "metadata": {"name": LOCAL_PATH, "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
                        "provisioner": PROVISIONER,
                        "reclaimPolicy": "Delete",
                        "volumeBindingMode": "WaitForFirstConsumer",
                    }),
                    applied: None,
                    application: None,
                }],
                audit: None,
            });
            self.storage_class_seen = true;
        }
        for action in decision.actions {
            // Phase changes are bookkeeping; volumes made, bound or deleted are history.
            let what = match &action {
                VolumeAction::Provision { name, .. } => Some(format!("provisioned {name}")),
                VolumeAction::Bind { claim, volume, .. } => {
                    Some(format!("bound {claim} to {volume}"))
                }
                VolumeAction::DeleteVolume { volume } => Some(format!("deleted {volume}")),
                _ => None,
            };
            let writes = match action {
                VolumeAction::Provision {
                    name,
                    namespace,
                    claim,
                    claim_uid,
                    node,
                    capacity,
                    access_modes,
                } => {
                    let path = self.root.join(&name);
                    vec![Write::Create {
                        object: json!({
                            "apiVersion": "v1",
                            "kind": "PersistentVolume",
                            "metadata": {"name": name, "annotations": {PROVISIONED_BY: PROVISIONER}},
                            "spec": {
                                "capacity": {"storage": size(capacity)},
                                "accessModes": access_modes,
                                "persistentVolumeReclaimPolicy": "Delete",
                                "storageClassName": LOCAL_PATH,
                                "volumeMode": "Filesystem",
                                "hostPath": {"path": path.display().to_string(), "type": "DirectoryOrCreate"},
                                "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                                    {"key": HOSTNAME_LABEL, "operator": "In", "values": [node]}
                                ]}]}},
                                "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": claim, "uid": claim_uid},
                            },
                            "status": {"phase": "Pending"},
                        }),
                        applied: None,
                        application: None,
                    }]
                }
                VolumeAction::Bind {
                    namespace,
                    claim,
                    claim_uid,
                    volume,
                } => {
                    let Some(pv) = self.volumes.get(&volume) else {
                        continue;
                    };
                    let capacity = pv["spec"]["capacity"].clone();
                    let access = pv["spec"]["accessModes"].clone();
                    let mut writes = Vec::new();
                    if pv.at("/spec/claimRef").is_none() {
                        // Only the volume as it was seen free: a decision on a stale view
                        // cannot give a volume to a second claim.
                        let seen = text(pv, "/metadata/resourceVersion")
                            .and_then(|rv| rv.parse().ok())
                            .map(Precondition::ResourceVersion);
                        writes.push(Write::Patch {
                            key: key(Kind::PersistentVolume, "", &volume),
                            precondition: seen,
                            patch: json!({"spec": {"claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": namespace, "name": claim, "uid": claim_uid}}}),
                        });
                    }
                    writes.push(Write::Patch {
                        key: key(Kind::PersistentVolumeClaim, &namespace, &claim),
                        precondition: Some(Precondition::Uid(claim_uid.clone())),
                        patch: json!({"spec": {"volumeName": volume}}),
                    });
                    writes.push(Write::UpdateStatus {
                        key: key(Kind::PersistentVolumeClaim, &namespace, &claim),
                        precondition: None,
                        status: json!({"phase": "Bound", "capacity": capacity, "accessModes": access}),
                    });
                    writes.push(Write::UpdateStatus {
                        key: key(Kind::PersistentVolume, "", &volume),
                        precondition: None,
                        status: json!({"phase": "Bound"}),
                    });
                    writes
                }
                VolumeAction::ClaimPhase {
                    namespace,
                    claim,
                    phase,
                } => {
                    let claim_key = key(Kind::PersistentVolumeClaim, &namespace, &claim);
                    let mut status = self
                        .claims
                        .get(&crate::store::storage_key(&claim_key))
                        .map(|c| c["status"].clone())
                        .filter(Value::is_object)
                        .unwrap_or_else(|| json!({}));
                    status["phase"] = json!(phase);
                    vec![Write::UpdateStatus {
                        key: claim_key,
                        precondition: None,
                        status,
                    }]
                }
                VolumeAction::VolumePhase { volume, phase } => vec![Write::UpdateStatus {
                    key: key(Kind::PersistentVolume, "", &volume),
                    precondition: None,
                    status: json!({"phase": phase}),
                }],
                VolumeAction::DeleteVolume { volume } => {
                    // Only directories we made, under our root, are removed.
                    let provisioned = self
                        .volumes
                        .get(&volume)
                        .is_some_and(|v| volume_view(v).provisioned);
                    let path = self.root.join(&volume);
                    // Volume names are DNS subdomains: the path stays under the root.
                    if provisioned
                        && !volume.contains('/')
                        && let Err(error) = std::fs::remove_dir_all(&path)
                        && error.kind() != std::io::ErrorKind::NotFound
                    {
                        tracing::warn!(%error, path = %path.display(), "cannot remove a released volume's directory");
                    }
                    let uid = self
                        .volumes
                        .get(&volume)
                        .and_then(|v| text(v, "/metadata/uid"))
                        .unwrap_or_default()
                        .to_string();
                    vec![Write::Delete {
                        key: key(Kind::PersistentVolume, "", &volume),
                        precondition: Precondition::Uid(uid),
                    }]
                }
            };
            batches.push(Batch {
                writes,
                audit: what.map(|what| AuditEntry {
                    actor: "controller/volumes".into(),
                    action: "volumes".into(),
                    subject: KEY.into(),
                    details: json!({ "change": what }),
                }),
            });
        }
        Reconciled {
            batches,
            requeue_after: None,
        }
    }
}
