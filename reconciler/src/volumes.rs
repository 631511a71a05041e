//! Persistent volumes: binding claims to volumes, provisioning `local-path` volumes, and what
//! happens to a volume whose claim is gone.
//!
//! As Kubernetes' PersistentVolume controller with k3s' local-path provisioner: a claim binds
//! to the smallest Available volume of its class that is big enough and offers its access
//! modes; a claim of the `local-path` class (the default) waits for its first pod to be placed
//! (WaitForFirstConsumer) and then gets a new volume, a directory on that pod's node, with node
//! affinity so the pod's successors are placed where their data is. A volume whose claim was
//! deleted is Released, then deleted with its directory (reclaimPolicy Delete) or kept
//! (Retain).

use crate::decision::Decision;

/// The built-in StorageClass.
pub const LOCAL_PATH: &str = "local-path";

/// A claim as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ClaimView {
    /// Namespace and name.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid (a volume's claimRef names it).
    pub uid: String,
    /// Its StorageClass (`None`: the default, `local-path`; `Some("")`: no class).
    pub class: Option<String>,
    /// Requested bytes.
    pub request: u64,
    /// Requested access modes.
    pub access_modes: Vec<String>,
    /// `spec.volumeName`, once bound.
    pub volume: Option<String>,
    /// `status.phase` as written.
    pub phase: String,
    /// The node the first pod using it was placed on, if any.
    pub consumer_node: Option<String>,
}

impl ClaimView {
    /// The class it asks for, the default filled in.
    pub fn class(&self) -> &str {
        self.class.as_deref().unwrap_or(LOCAL_PATH)
    }
}

/// A volume as the decision sees it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct VolumeView {
    /// Its name.
    pub name: String,
    /// Its class (empty: none).
    pub class: String,
    /// Capacity in bytes.
    pub capacity: u64,
    /// Access modes offered.
    pub access_modes: Vec<String>,
    /// `claimRef`: (namespace, name, uid).
    pub claim: Option<(String, String, String)>,
    /// `Delete` or `Retain`.
    pub reclaim_delete: bool,
    /// `status.phase` as written.
    pub phase: String,
    /// Made by the local-path provisioner (its directory is ours to remove).
    pub provisioned: bool,
}

/// One step the volume controller takes.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum VolumeAction {
    /// Create a local-path volume for a claim on `node`, named `name`.
    Provision {
        /// The new volume's name (`pvc-<claim uid>`).
        name: String,
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
        /// The claim's uid.
        claim_uid: String,
        /// The node that holds it.
        node: String,
        /// Its capacity.
        capacity: u64,
        /// Its access modes.
        access_modes: Vec<String>,
    },
    /// Bind a claim and a volume to each other.
    Bind {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
        /// The claim's uid.
        claim_uid: String,
        /// The volume.
        volume: String,
    },
    /// Write a claim's phase (`Pending`, `Bound`, `Lost`).
    ClaimPhase {
        /// The claim's namespace.
        namespace: String,
        /// The claim's name.
        claim: String,
        /// The phase.
        phase: &'static str,
    },
    /// Write a volume's phase (`Available`, `Bound`, `Released`).
    VolumePhase {
        /// The volume.
        volume: String,
        /// The phase.
        phase: &'static str,
    },
    /// Delete a released volume (and, if provisioned, its directory).
    DeleteVolume {
        /// The volume.
        volume: String,
    },
}

fn offers(volume: &VolumeView, claim: &ClaimView) -> bool {
    volume.class == claim.class()
        && volume.capacity >= claim.request
        && claim
            .access_modes
            .iter()
            .all(|m| volume.access_modes.contains(m))
}

/// Decides what the volume controller does now, for every claim and volume at once (binding
/// is a matching: two claims must not be given one volume).
pub fn decide_volumes(claims: &[ClaimView], volumes: &[VolumeView]) -> Decision<VolumeAction> {
    let mut decision = Decision::idle();
    let mut taken: Vec<&str> = volumes
        .iter()
        .filter(|v| v.claim.is_some())
        .map(|v| v.name.as_str())
        .collect();
    for claim in claims {
        let owner = |v: &VolumeView| {
            v.claim.as_ref().is_some_and(|(ns, name, uid)| {
                *ns == claim.namespace && *name == claim.name && *uid == claim.uid
            })
        };
        // Bound already (both sides agree).
        if let Some(volume) = claim
            .volume
            .as_ref()
            .and_then(|name| volumes.iter().find(|v| v.name == *name))
        {
            if owner(volume) {
                if claim.phase != "Bound" {
                    decision.actions.push(VolumeAction::ClaimPhase {
                        namespace: claim.namespace.clone(),
                        claim: claim.name.clone(),
                        phase: "Bound",
                    });
                }
                continue;
            }
        } else if claim.volume.is_some() {
            // Its volume is gone: the data is lost, as Kubernetes says.
            if claim.phase != "Lost" {
                decision.actions.push(VolumeAction::ClaimPhase {
                    namespace: claim.namespace.clone(),
                    claim: claim.name.clone(),
                    phase: "Lost",
                });
            }
            continue;
        }
        // A volume already reserved for it (provisioned, or a half-done bind).
        if let Some(volume) = volumes.iter().find(|v| owner(v)) {
            decision.actions.push(VolumeAction::Bind {
                namespace: claim.namespace.clone(),
                claim: claim.name.clone(),
                claim_uid: claim.uid.clone(),
                volume: volume.name.clone(),
            });
            continue;
        }
        // The smallest free volume that fits.
        let free = volumes
            .iter()
            .filter(|v| !taken.contains(&v.name.as_str()) && v.phase != "Released")
            .filter(|v| offers(v, claim))
            .min_by(|a, b| a.capacity.cmp(&b.capacity).then(a.name.cmp(&b.name)));
        if let Some(volume) = free {
            taken.push(volume.name.as_str());
            decision.actions.push(VolumeAction::Bind {
                namespace: claim.namespace.clone(),
                claim: claim.name.clone(),
                claim_uid: claim.uid.clone(),
                volume: volume.name.clone(),
            });
            continue;
        }
        if claim.class() == LOCAL_PATH
            && let Some(node) = &claim.consumer_node
        {
            decision.actions.push(VolumeAction::Provision {
                name: format!("pvc-{}", claim.uid),
                namespace: claim.namespace.clone(),
                claim: claim.name.clone(),
                claim_uid: claim.uid.clone(),
                node: node.clone(),
                capacity: claim.request,
                access_modes: claim.access_modes.clone(),
            });
            continue;
        }
        if claim.phase != "Pending" {
            decision.actions.push(VolumeAction::ClaimPhase {
                namespace: claim.namespace.clone(),
                claim: claim.name.clone(),
                phase: "Pending",
            });
        }
    }
    for volume in volumes {
        let claimed = volume.claim.as_ref().map(|(ns, name, uid)| {
            claims
                .iter()
                .any(|c| c.namespace == *ns && c.name == *name && c.uid == *uid)
        });
        match claimed {
            // Its claim is gone.
            Some(false) => {
                if volume.reclaim_delete {
                    decision.actions.push(VolumeAction::DeleteVolume {
                        volume: volume.name.clone(),
                    });
                } else if volume.phase != "Released" {
                    decision.actions.push(VolumeAction::VolumePhase {
                        volume: volume.name.clone(),
                        phase: "Released",
                    });
                }
            }
            Some(true) if volume.phase != "Bound" => {
                decision.actions.push(VolumeAction::VolumePhase {
                    volume: volume.name.clone(),
                    phase: "Bound",
                });
            }
            None if volume.phase != "Available" && volume.phase != "Released" => {
                decision.actions.push(VolumeAction::VolumePhase {
                    volume: volume.name.clone(),
                    phase: "Available",
                });
            }
            _ => {}
        }
    }
    decision
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn claim(name: &str, request: u64, node: Option<&str>) -> ClaimView {
        ClaimView {
            namespace: "db".into(),
            name: name.into(),
            uid: format!("uid-{name}"),
            class: None,
            request,
            access_modes: vec!["ReadWriteOnce".into()],
            volume: None,
            phase: "Pending".into(),
            consumer_node: node.map(str::to_string),
        }
    }

    fn volume(name: &str, capacity: u64) -> VolumeView {
        VolumeView {
            name: name.into(),
            class: LOCAL_PATH.into(),
            capacity,
            access_modes: vec!["ReadWriteOnce".into()],
            claim: None,
            reclaim_delete: false,
            phase: "Available".into(),
            provisioned: false,
        }
    }

    #[test]
    fn claims_wait_for_a_consumer_then_get_a_volume_on_its_node() {
        let waiting = decide_volumes(&[claim("data-0", 100, None)], &[]);
        assert!(
            waiting.actions.is_empty(),
            "Pending already: {:?}",
            waiting.actions
        );
        let placed = decide_volumes(&[claim("data-0", 100, Some("node-2"))], &[]);
        assert!(matches!(
            &placed.actions[..],
            [VolumeAction::Provision { name, node, capacity: 100, .. }] if name == "pvc-uid-data-0" && node == "node-2"
        ));
    }

    #[test]
    fn a_claim_binds_the_smallest_volume_that_fits_and_two_never_share_one() {
        let claims = [claim("a", 100, None), claim("b", 100, None)];
        let volumes = [
            volume("big", 1000),
            volume("small", 150),
            volume("tiny", 50),
        ];
        let decision = decide_volumes(&claims, &volumes);
        let bound: Vec<(&str, &str)> = decision
            .actions
            .iter()
            .filter_map(|a| match a {
                VolumeAction::Bind { claim, volume, .. } => Some((claim.as_str(), volume.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(bound, [("a", "small"), ("b", "big")]);
    }

    #[test]
    fn a_volume_whose_claim_is_gone_is_released_or_deleted() {
        let mut retained = volume("kept", 100);
        retained.claim = Some(("db".into(), "gone".into(), "uid-gone".into()));
        retained.phase = "Bound".into();
        let mut deleted = retained.clone();
        deleted.name = "scratch".into();
        deleted.reclaim_delete = true;
        let decision = decide_volumes(&[], &[retained, deleted]);
        assert!(decision.actions.contains(&VolumeAction::VolumePhase {
            volume: "kept".into(),
            phase: "Released"
        }));
        assert!(decision.actions.contains(&VolumeAction::DeleteVolume {
            volume: "scratch".into()
        }));
    }

    proptest! {
        /// However claims and volumes are arranged, one decision never binds two claims to one
        /// volume, nor a volume that another claim holds.
        #[test]
        fn a_volume_is_never_given_to_two_claims(
            requests in proptest::collection::vec(1u64..10, 0..6),
            capacities in proptest::collection::vec((1u64..10, proptest::option::of(0usize..6)), 0..6),
        ) {
            let claims: Vec<ClaimView> = requests.iter().enumerate().map(|(i, r)| claim(&format!("c{i}"), *r, None)).collect();
            let volumes: Vec<VolumeView> = capacities.iter().enumerate().map(|(i, (cap, holder))| {
                let mut v = volume(&format!("v{i}"), *cap);
                if let Some(h) = holder.filter(|h| *h < claims.len()) {
                    v.claim = Some(("db".into(), format!("c{h}"), format!("uid-c{h}")));
                }
                v
            }).collect();
            let decision = decide_volumes(&claims, &volumes);
            let mut given: Vec<&str> = Vec::new();
            for action in &decision.actions {
                if let VolumeAction::Bind { volume, claim, .. } = action {
                    prop_assert!(!given.contains(&volume.as_str()), "{volume} given twice");
                    given.push(volume);
                    let v = volumes.iter().find(|v| v.name == *volume).unwrap();
                    if let Some((_, holder, _)) = &v.claim {
                        prop_assert_eq!(holder, claim, "a held volume goes only to its holder");
                    }
                }
            }
        }
    }
}
