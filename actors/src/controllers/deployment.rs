//! The Deployment controller: one ReplicaSet per pod template, rolled over as the strategy
//! says, deciding with [`shipshape_reconciler::deployment::decide_deployment`].

use shipshape_api::pointer::At;
use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::deployment::{
    DeploymentAction, DeploymentStatus, DeploymentView, IntOrPercent, Progress, ReplicaSetSummary,
    RolloutStrategy, decide_deployment, template_hash,
};

use super::{
    Owned, Owners, REVISION_ANNOTATION, TEMPLATE_HASH_LABEL, condition, condition_is_true, number,
    owner_reference, provenance, rfc3339, seconds, text,
};
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, Precondition, WatchEvent, key_of, parse_storage_key};

const COMPONENT: &str = "deployment-controller";

/// The Deployment controller's cache: Deployments and their ReplicaSets by owner uid.
pub struct DeploymentController {
    deployments: Owners,
    sets: Owned<Value>,
}

impl Default for DeploymentController {
    fn default() -> Self {
        Self {
            deployments: Owners::default(),
            sets: Owned::new("Deployment"),
        }
    }
}

impl DeploymentController {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

fn int_or_percent(value: Option<&Value>, default: IntOrPercent) -> IntOrPercent {
    match value {
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map_or(default, IntOrPercent::Count),
        Some(Value::String(text)) => text
            .strip_suffix('%')
            .and_then(|p| p.parse().ok())
            .map(IntOrPercent::Percent)
            .or_else(|| text.parse().ok().map(IntOrPercent::Count))
            .unwrap_or(default),
        _ => default,
    }
}

fn strategy(deployment: &Value) -> RolloutStrategy {
    if text(deployment, "/spec/strategy/type") == Some("Recreate") {
        return RolloutStrategy::Recreate;
    }
    let rolling = deployment.at("/spec/strategy/rollingUpdate");
    RolloutStrategy::RollingUpdate {
        max_surge: int_or_percent(
            rolling.and_then(|r| r.get("maxSurge")),
            IntOrPercent::Percent(25),
        ),
        max_unavailable: int_or_percent(
            rolling.and_then(|r| r.get("maxUnavailable")),
            IntOrPercent::Percent(25),
        ),
    }
}

/// The hash of a Deployment's pod template: what names its ReplicaSet.
pub fn deployment_template_hash(deployment: &Value) -> String {
    let template = deployment
        .at("/spec/template")
        .cloned()
        .unwrap_or(Value::Null);
    template_hash(&serde_json::to_vec(&template).unwrap_or_default())
}

/// The status a Deployment reports, as written by [`status_json`]; `None` before the first.
fn parse_status(deployment: &Value) -> Option<DeploymentStatus> {
    let status = deployment.get("status")?;
    let progressing = condition(deployment, "Progressing")?;
    let count = |field: &str| {
        status
            .get(field)
            .and_then(Value::as_u64)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    Some(DeploymentStatus {
        observed_generation: status
            .get("observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0),
        replicas: count("replicas"),
        updated: count("updatedReplicas"),
        ready: count("readyReplicas"),
        available: count("availableReplicas"),
        unavailable: count("unavailableReplicas"),
        minimum_available: condition_is_true(deployment, "Available"),
        progress: match progressing.get("reason").and_then(Value::as_str) {
            Some("NewReplicaSetAvailable") => Progress::Complete,
            Some("ProgressDeadlineExceeded") => Progress::DeadlineExceeded,
            Some("DeploymentPaused") => Progress::Paused,
            _ => Progress::Progressing,
        },
        progress_since: seconds(progressing.get("lastUpdateTime")).unwrap_or(0),
    })
}

fn status_json(status: &DeploymentStatus, new_set: &str) -> Value {
    let since = rfc3339(status.progress_since);
    let (available, available_reason, available_message) = if status.minimum_available {
        (
            "True",
            "MinimumReplicasAvailable",
            "Deployment has minimum availability.",
        )
    } else {
        (
            "False",
            "MinimumReplicasUnavailable",
            "Deployment does not have minimum availability.",
        )
    };
    let (progressing, reason, message) = match status.progress {
        Progress::Complete => (
            "True",
            "NewReplicaSetAvailable",
            format!("ReplicaSet \"{new_set}\" has successfully progressed."),
        ),
        Progress::Progressing => (
            "True",
            "ReplicaSetUpdated",
            format!("ReplicaSet \"{new_set}\" is progressing."),
        ),
        Progress::DeadlineExceeded => (
            "False",
            "ProgressDeadlineExceeded",
            format!("ReplicaSet \"{new_set}\" has timed out progressing."),
        ),
        // Kubernetes' words for a paused Deployment's Progressing condition.
        Progress::Paused => (
            "Unknown",
            "DeploymentPaused",
            "Deployment is paused".to_string(),
        ),
    };
    json!({
        "observedGeneration": status.observed_generation,
        "replicas": status.replicas,
        "updatedReplicas": status.updated,
        "readyReplicas": status.ready,
        "availableReplicas": status.available,
        "unavailableReplicas": status.unavailable,
        "conditions": [
            {"type": "Available", "status": available, "reason": available_reason,
             "message": available_message, "lastUpdateTime": since, "lastTransitionTime": since},
            {"type": "Progressing", "status": progressing, "reason": reason,
             "message": message, "lastUpdateTime": since, "lastTransitionTime": since},
        ],
    })
}

fn summary(set: &Value) -> ReplicaSetSummary {
    let count = |pointer: &str| {
        number(set, pointer)
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(0)
    };
    ReplicaSetSummary {
        name: text(set, "/metadata/name").unwrap_or_default().to_string(),
        template_hash: text(set, &format!("/metadata/labels/{TEMPLATE_HASH_LABEL}"))
            .unwrap_or_default()
            .to_string(),
        revision: text(
            set,
            &format!(
                "/metadata/annotations/{}",
                REVISION_ANNOTATION.replace('/', "~1")
            ),
        )
        .and_then(|r| r.parse().ok())
        .unwrap_or(0),
        resource_version: text(set, "/metadata/resourceVersion")
            .and_then(|r| r.parse().ok())
            .unwrap_or(0),
        created: seconds(set.at("/metadata/creationTimestamp")).unwrap_or(0),
        replicas: number(set, "/spec/replicas")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        active: count("/status/replicas"),
        ready: count("/status/readyReplicas"),
        available: count("/status/availableReplicas"),
    }
}

/// The ReplicaSet a Deployment's current template asks for.
fn replica_set(deployment: &Value, name: &str, hash: &str, replicas: u32, revision: u64) -> Value {
    let mut template = deployment
        .at("/spec/template")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let mut labels = template
        .at("/metadata/labels")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(map) = labels.as_object_mut() {
        map.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
    }
    if let Some(metadata) = template
        .as_object_mut()
        .map(|t| t.entry("metadata").or_insert_with(|| json!({})))
        .and_then(Value::as_object_mut)
    {
        metadata.insert("labels".into(), labels.clone());
    }
    let mut selector = deployment
        .at("/spec/selector")
        .cloned()
        .unwrap_or_else(|| json!({}));
    if let Some(map) = selector.as_object_mut() {
        let match_labels = map.entry("matchLabels").or_insert_with(|| json!({}));
        if let Some(match_labels) = match_labels.as_object_mut() {
            match_labels.insert(TEMPLATE_HASH_LABEL.into(), hash.into());
        }
    }
    let mut annotations = json!({ REVISION_ANNOTATION: revision.to_string() });
    for (key, value) in provenance(deployment) {
        annotations[key] = value.clone();
    }
    let mut spec = json!({
        "replicas": replicas,
        "selector": selector,
        "template": template,
    });
    if let Some(min_ready) = deployment.at("/spec/minReadySeconds") {
        spec["minReadySeconds"] = min_ready.clone();
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {
            "name": name,
            "namespace": deployment["metadata"]["namespace"],
            "labels": labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(deployment)],
        },
        "spec": spec,
    })
}

impl Controller for DeploymentController {
    fn name(&self) -> &'static str {
        "deployment"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Deployment, Kind::ReplicaSet]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::Deployment => self.deployments.observe(event, dirty),
            Kind::ReplicaSet => {
                let owner = self.sets.observe(event, Value::clone);
                if let Some(deployment) = owner.and_then(|uid| self.deployments.key_of(&uid)) {
                    dirty.mark(deployment.clone(), || because(event));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(deployment) = self.deployments.get(key) else {
            return Reconciled::default();
        };
        if deployment.at("/metadata/deletionTimestamp").is_some() {
            return Reconciled::default();
        }
        let Ok(deployment_key) = key_of(deployment) else {
            return Reconciled::default();
        };
        let uid = text(deployment, "/metadata/uid").unwrap_or_default();
        let sets: Vec<&Value> = self.sets.of(uid).collect();
        let hash = deployment_template_hash(deployment);
        let view = DeploymentView {
            name: text(deployment, "/metadata/name")
                .unwrap_or_default()
                .to_string(),
            generation: number(deployment, "/metadata/generation").unwrap_or(1),
            replicas: number(deployment, "/spec/replicas")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            template_hash: hash.clone(),
            strategy: strategy(deployment),
            revision_history_limit: number(deployment, "/spec/revisionHistoryLimit")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(10),
            progress_deadline_seconds: Some(
                number(deployment, "/spec/progressDeadlineSeconds").unwrap_or(600),
            ),
            paused: deployment.at("/spec/paused").and_then(Value::as_bool) == Some(true),
            replica_sets: sets.iter().map(|set| summary(set)).collect(),
            status: parse_status(deployment),
        };
        let decision = decide_deployment(&view, now.as_second());
        let new_set = format!("{}-{hash}", view.name);
        let by_name: HashMap<String, &Value> = sets
            .iter()
            .map(|set| {
                (
                    text(set, "/metadata/name").unwrap_or_default().to_string(),
                    *set,
                )
            })
            .collect();
        let mut writes = Vec::new();
        let mut changes = Vec::new();
        let mut status = None;
        for action in decision.actions {
            match action {
                DeploymentAction::CreateReplicaSet {
                    name,
                    template_hash,
                    replicas,
                    revision,
                } => {
                    writes.push(Write::Create {
                        object: replica_set(deployment, &name, &template_hash, replicas, revision),
                        applied: None,
                        application: None,
                    });
                    changes.push((
                        "ScalingReplicaSet",
                        format!("Scaled up replica set {name} from 0 to {replicas}"),
                    ));
                }
                DeploymentAction::ScaleReplicaSet {
                    name,
                    resource_version,
                    replicas,
                    revision,
                } => {
                    let from = by_name
                        .get(&name)
                        .and_then(|set| number(set, "/spec/replicas"))
                        .unwrap_or(0);
                    writes.push(Write::Patch {
                        key: shipshape_api::ObjectKey {
                            kind: Kind::ReplicaSet,
                            namespace: deployment_key.namespace.clone(),
                            name: name.clone(),
                        },
                        precondition: Some(Precondition::ResourceVersion(resource_version)),
                        patch: json!({
                            "metadata": {"annotations": {REVISION_ANNOTATION: revision.to_string()}},
                            "spec": {"replicas": replicas},
                        }),
                    });
                    if i64::from(replicas) != from {
                        let direction = if i64::from(replicas) > from {
                            "up"
                        } else {
                            "down"
                        };
                        changes.push((
                            "ScalingReplicaSet",
                            format!(
                                "Scaled {direction} replica set {name} from {from} to {replicas}"
                            ),
                        ));
                    }
                }
                DeploymentAction::DeleteReplicaSet {
                    name,
                    resource_version,
                } => {
                    writes.push(Write::Delete {
                        key: shipshape_api::ObjectKey {
                            kind: Kind::ReplicaSet,
                            namespace: deployment_key.namespace.clone(),
                            name: name.clone(),
                        },
                        precondition: Precondition::ResourceVersion(resource_version),
                    });
                    changes.push((
                        "DeletedReplicaSet",
                        format!("Deleted old replica set {name} (beyond revisionHistoryLimit)"),
                    ));
                }
                DeploymentAction::UpdateStatus(new) => {
                    status = Some(Write::UpdateStatus {
                        key: deployment_key.clone(),
                        precondition: text(deployment, "/metadata/resourceVersion")
                            .and_then(|rv| rv.parse().ok())
                            .map(Precondition::ResourceVersion),
                        status: status_json(&new, &new_set),
                    });
                }
            }
        }
        let mut batches = Vec::new();
        if !writes.is_empty() {
            for (reason, message) in &changes {
                writes.push(event(
                    COMPONENT,
                    deployment,
                    "Normal",
                    reason,
                    message.clone(),
                    now,
                ));
            }
            batches.push(Batch {
                writes,
                audit: Some(AuditEntry {
                    actor: "controller/deployment".into(),
                    action: "rollout".into(),
                    subject: key.to_string(),
                    details: json!({
                        "changes": changes.iter().map(|(_, m)| m).collect::<Vec<_>>(),
                    }),
                }),
            });
        }
        if let Some(status) = status {
            batches.push(Batch {
                writes: vec![status],
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_round_trips_through_its_json() {
        let status = DeploymentStatus {
            observed_generation: 3,
            replicas: 4,
            updated: 2,
            ready: 3,
            available: 3,
            unavailable: 1,
            minimum_available: true,
            progress: Progress::Progressing,
            progress_since: 1_800_000_000,
        };
        let deployment = json!({"status": status_json(&status, "web-abc")});
        assert_eq!(parse_status(&deployment), Some(status));
        let done = DeploymentStatus {
            progress: Progress::DeadlineExceeded,
            minimum_available: false,
            ..status
        };
        let deployment = json!({"status": status_json(&done, "web-abc")});
        assert_eq!(parse_status(&deployment), Some(done));
    }

    #[test]
    fn reads_the_rollout_strategy_as_kubernetes_defaults_it() {
        assert_eq!(
            strategy(&json!({"spec": {}})),
            RolloutStrategy::RollingUpdate {
                max_surge: IntOrPercent::Percent(25),
                max_unavailable: IntOrPercent::Percent(25),
            }
        );
        assert_eq!(
            strategy(
                &json!({"spec": {"strategy": {"rollingUpdate": {"maxSurge": 1, "maxUnavailable": "0%"}}}})
            ),
            RolloutStrategy::RollingUpdate {
                max_surge: IntOrPercent::Count(1),
                max_unavailable: IntOrPercent::Percent(0),
            }
        );
        assert_eq!(
            strategy(&json!({"spec": {"strategy": {"type": "Recreate"}}})),
            RolloutStrategy::Recreate
        );
    }
}
