//! The ReplicaSet controller: keeps each set's pods at its replicas and reports its status,
//! deciding with [`shipshape_reconciler::replicaset::decide_replica_set`].

use shipshape_api::pointer::At;
use std::time::Duration;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::replicaset::{
    PodView, ReplicaSetAction, ReplicaSetStatus, ReplicaSetView, decide_replica_set,
};

use super::{Owned, Owners, PodTemplate, number, pod_view, seed, status_count, text};
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, Precondition, WatchEvent, key_of, parse_storage_key};
use crate::{Write, store};

const COMPONENT: &str = "replicaset-controller";

/// Kubernetes' default grace period for a pod's containers to stop.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The ReplicaSet controller's cache: the sets, and their pods by owner uid.
pub struct ReplicaSetController {
    sets: Owners,
    pods: Owned<PodView>,
}

impl Default for ReplicaSetController {
    fn default() -> Self {
        Self {
            sets: Owners::default(),
            pods: Owned::new("ReplicaSet"),
        }
    }
}

impl ReplicaSetController {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The status a ReplicaSet reports, as written by [`status_json`].
fn parse_status(set: &Value) -> ReplicaSetStatus {
    let count = |field: &str| status_count(set, field);
    ReplicaSetStatus {
        replicas: count("replicas"),
        ready: count("readyReplicas"),
        available: count("availableReplicas"),
        observed_generation: number(set, "/status/observedGeneration").unwrap_or(0),
    }
}

fn status_json(status: &ReplicaSetStatus, labelled: u32) -> Value {
    json!({
        "replicas": status.replicas,
        "fullyLabeledReplicas": labelled,
        "readyReplicas": status.ready,
        "availableReplicas": status.available,
        "observedGeneration": status.observed_generation,
    })
}

fn list(names: &[String]) -> String {
    match names {
        [one] => format!("pod: {one}"),
        many => format!("pods: {}", many.join(", ")),
    }
}

impl Controller for ReplicaSetController {
    fn name(&self) -> &'static str {
        "replicaset"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::ReplicaSet, Kind::Pod]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::ReplicaSet => self.sets.observe(event, dirty),
            Kind::Pod => {
                let owner = self.pods.observe(event, pod_view);
                if let Some(set) = owner.and_then(|uid| self.sets.key_of(&uid)) {
                    dirty.mark(set.clone(), || because(event));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(set) = self.sets.get(key) else {
            return Reconciled::default();
        };
        if set.at("/metadata/deletionTimestamp").is_some() {
            return Reconciled::default();
        }
        let uid = text(set, "/metadata/uid").unwrap_or_default();
        let rv = text(set, "/metadata/resourceVersion").unwrap_or_default();
        let pods: Vec<PodView> = self.pods.of(uid).cloned().collect();
        let view = ReplicaSetView {
            name: text(set, "/metadata/name").unwrap_or_default().to_string(),
            replicas: number(set, "/spec/replicas")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            min_ready_seconds: number(set, "/spec/minReadySeconds").unwrap_or(0),
            generation: number(set, "/metadata/generation").unwrap_or(1),
            status: parse_status(set),
            pods,
        };
        let decision = decide_replica_set(&view, now.as_second(), seed(&[uid, rv]));
        let Ok(set_key) = key_of(set) else {
            return Reconciled::default();
        };
        let namespace = set_key.namespace.clone();
        let mut created = Vec::new();
        let mut deleted = Vec::new();
        let mut creates = Vec::new();
        let mut deletes = Vec::new();
        let mut status = Vec::new();
        // Built on the first create: one template expansion, then a copy per pod.
        let mut template: Option<PodTemplate> = None;
        for action in decision.actions {
            match action {
                ReplicaSetAction::CreatePod { name } => {
                    creates.push(Write::Create {
                        object: template
                            .get_or_insert_with(|| PodTemplate::new(set, &[]))
                            .pod(&name),
                        applied: None,
                        application: None,
                    });
                    created.push(name);
                }
                ReplicaSetAction::DeletePod { name, uid } => {
                    let pod_key = shipshape_api::ObjectKey {
                        kind: Kind::Pod,
                        namespace: namespace.clone(),
                        name: name.clone(),
                    };
                    let bound = self
                        .pods
                        .get(&store::storage_key(&pod_key))
                        .is_some_and(|pod| pod.node.is_some());
                    deletes.push(Write::delete(
                        pod_key,
                        Precondition::Uid(uid),
                        bound,
                        number(set, "/spec/template/spec/terminationGracePeriodSeconds")
                            .unwrap_or(DEFAULT_GRACE_SECONDS),
                    ));
                    deleted.push(name);
                }
                ReplicaSetAction::UpdateStatus(new) => {
                    status.push(Write::UpdateStatus {
                        key: set_key.clone(),
                        precondition: rv.parse().ok().map(Precondition::ResourceVersion),
                        status: status_json(&new, new.replicas),
                    });
                }
            }
        }
        let mut batches = Vec::new();
        for (mut writes, names, action, reason, verb) in [
            (
                creates,
                created,
                "create-pods",
                "SuccessfulCreate",
                "Created",
            ),
            (
                deletes,
                deleted,
                "delete-pods",
                "SuccessfulDelete",
                "Deleted",
            ),
        ] {
            if writes.is_empty() {
                continue;
            }
            writes.push(event(
                COMPONENT,
                set,
                "Normal",
                reason,
                format!("{verb} {}", list(&names)),
                now,
            ));
            batches.push(Batch {
                writes,
                audit: Some(AuditEntry {
                    actor: "controller/replicaset".into(),
                    action: action.into(),
                    subject: key.to_string(),
                    details: json!({ "pods": names }),
                }),
            });
        }
        if !status.is_empty() {
            batches.push(Batch {
                writes: status,
                audit: None,
            });
        }
        Reconciled {
            batches,
            requeue_after: decision
                .requeue_after
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(1))),
        }
    }
}
