//! The ReplicaSet controller: keeps each set's pods at its replicas and reports its status,
//! deciding with [`shipshape_reconciler::replicaset::decide_replica_set`].
//!
//! ReplicationControllers run through the same controller (a second instance), as Kubernetes'
//! replication manager is its ReplicaSet controller over the older kind: the fields the
//! decision reads (`spec.replicas`, `minReadySeconds`, the status counts) are spelled alike,
//! and pods are found by their owner's uid, not by the selector, so its plain label map needs
//! no conversion.

use shipshape_api::pointer::At;
use std::time::Duration;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::projection::replica_set_view;
use shipshape_reconciler::replicaset::{
    PodView, ReplicaSetAction, ReplicaSetStatus, decide_replica_set,
};

use super::{Owned, Owners, PodTemplate, number, pod_view, seed, text};
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, Precondition, WatchEvent, key_of, parse_storage_key};
use crate::{Write, store};

/// Kubernetes' default grace period for a pod's containers to stop.
const DEFAULT_GRACE_SECONDS: i64 = 30;

/// The ReplicaSet controller's cache: the sets, and their pods by owner uid.
pub struct ReplicaSetController {
    /// `ReplicaSet`, or `ReplicationController` for the instance that runs those.
    kind: Kind,
    sets: Owners,
    pods: Owned<PodView>,
}

impl Default for ReplicaSetController {
    fn default() -> Self {
        Self::for_kind(Kind::ReplicaSet)
    }
}

impl ReplicaSetController {
    /// An empty cache of ReplicaSets.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty cache of ReplicationControllers (core/v1), run exactly as ReplicaSets.
    pub fn replication_controllers() -> Self {
        Self::for_kind(Kind::ReplicationController)
    }

    fn for_kind(kind: Kind) -> Self {
        Self {
            kind,
            sets: Owners::default(),
            pods: Owned::new(kind.info().kind),
        }
    }

    /// The name events give as their source, as Kubernetes' controllers sign them.
    fn component(&self) -> &'static str {
        match self.kind {
            Kind::ReplicationController => "replication-controller",
            _ => "replicaset-controller",
        }
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
        match self.kind {
            Kind::ReplicationController => "replicationcontroller",
            _ => "replicaset",
        }
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![self.kind, Kind::Pod]
    }

    fn reset(&mut self) {
        *self = Self::for_kind(self.kind);
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            kind if kind == self.kind => self.sets.observe(event, dirty),
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
        let view = replica_set_view(set, pods);
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
                self.component(),
                set,
                "Normal",
                reason,
                format!("{verb} {}", list(&names)),
                now,
            ));
            batches.push(Batch {
                writes,
                audit: Some(AuditEntry {
                    actor: format!("controller/{}", self.name()),
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
