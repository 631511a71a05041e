//! The StatefulSet controller: ordinal pods with stable names, hostnames and claims, deciding
//! with [`shipshape_reconciler::statefulset::decide_stateful_set`].

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde_json::{Value, json};
use shipshape_api::{Kind, ObjectKey};
use shipshape_reconciler::statefulset::{
    OrdinalPod, StatefulSetAction, StatefulSetStatus, StatefulSetView, claim_name,
    decide_stateful_set, ordinal_of, pod_name,
};

use super::daemonset::REVISION_LABEL;
use super::{
    Owned, Owners, number, owner_reference, pod_from_template, pod_view, status_count,
    template_revision, text,
};
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{
    AuditEntry, Batch, EventType, Precondition, WatchEvent, key_of, parse_storage_key,
};
use crate::{Write, store};

const COMPONENT: &str = "statefulset-controller";

/// The label naming a StatefulSet pod (Kubernetes' name).
pub const POD_NAME_LABEL: &str = "statefulset.kubernetes.io/pod-name";
/// The label carrying a pod's ordinal.
pub const POD_INDEX_LABEL: &str = "apps.kubernetes.io/pod-index";

/// The StatefulSet controller's cache.
pub struct StatefulSetController {
    sets: Owners,
    pods: Owned<Value>,
    /// Claims by namespace: name → uid.
    claims: HashMap<String, BTreeMap<String, String>>,
}

impl Default for StatefulSetController {
    fn default() -> Self {
        Self {
            sets: Owners::default(),
            pods: Owned::new("StatefulSet"),
            claims: HashMap::new(),
        }
    }
}

impl StatefulSetController {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

/// The revision name of a set's template, as Kubernetes names them (`web-<hash>`).
fn revision(set: &Value) -> String {
    format!(
        "{}-{}",
        set["metadata"]["name"].as_str().unwrap_or_default(),
        template_revision(set)
    )
}

fn parse_status(set: &Value) -> StatefulSetStatus {
    let count = |field: &str| status_count(set, field);
    StatefulSetStatus {
        replicas: count("replicas"),
        ready: count("readyReplicas"),
        available: count("availableReplicas"),
        updated: count("updatedReplicas"),
        current: count("currentReplicas"),
        current_revision: text(set, "/status/currentRevision")
            .unwrap_or_default()
            .to_string(),
        update_revision: text(set, "/status/updateRevision")
            .unwrap_or_default()
            .to_string(),
        observed_generation: number(set, "/status/observedGeneration").unwrap_or(0),
    }
}

fn status_json(status: &StatefulSetStatus) -> Value {
    json!({
        "replicas": status.replicas,
        "readyReplicas": status.ready,
        "availableReplicas": status.available,
        "updatedReplicas": status.updated,
        "currentReplicas": status.current,
        "currentRevision": status.current_revision,
        "updateRevision": status.update_revision,
        "observedGeneration": status.observed_generation,
        "collisionCount": 0,
    })
}

fn claim_templates(set: &Value) -> Vec<&Value> {
    set.at("/spec/volumeClaimTemplates")
        .and_then(Value::as_array)
        .map(|list| list.iter().collect())
        .unwrap_or_default()
}

/// The pod for `ordinal`: the template, named and labelled by its ordinal, with its hostname
/// and subdomain (the governing Service) and its claims as volumes.
fn ordinal_pod(set: &Value, name: &str, ordinal: u32, revision: &str) -> Value {
    let index = ordinal.to_string();
    let mut pod = pod_from_template(
        set,
        name,
        &[
            (POD_NAME_LABEL, name),
            (POD_INDEX_LABEL, &index),
            (REVISION_LABEL, revision),
        ],
    );
    pod["spec"]["hostname"] = json!(name);
    if let Some(service) = set["spec"]["serviceName"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        pod["spec"]["subdomain"] = json!(service);
    }
    let set_name = set["metadata"]["name"].as_str().unwrap_or_default();
    let mut volumes = pod["spec"]["volumes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for template in claim_templates(set) {
        let Some(template_name) = template.at("/metadata/name").and_then(Value::as_str) else {
            continue;
        };
        volumes.retain(|v| v["name"] != template_name);
        volumes.push(json!({
            "name": template_name,
            "persistentVolumeClaim": {"claimName": claim_name(template_name, set_name, ordinal)},
        }));
    }
    if !volumes.is_empty() {
        pod["spec"]["volumes"] = json!(volumes);
    }
    pod
}

fn claim_object(set: &Value, name: &str, template: &str, delete_with_set: bool) -> Option<Value> {
    let source = claim_templates(set)
        .into_iter()
        .find(|t| t.at("/metadata/name").and_then(Value::as_str) == Some(template))?;
    let mut metadata = json!({
        "name": name,
        "namespace": set["metadata"]["namespace"],
        "labels": set.at("/spec/selector/matchLabels").cloned().unwrap_or_else(|| json!({})),
    });
    if let Some(labels) = source.at("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            metadata["labels"][k] = v.clone();
        }
    }
    if delete_with_set {
        let mut owner = owner_reference(set);
        owner["controller"] = json!(false);
        metadata["ownerReferences"] = json!([owner]);
    }
    Some(json!({
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": metadata,
        "spec": source.get("spec").cloned().unwrap_or_else(|| json!({})),
        "status": {"phase": "Pending"},
    }))
}

impl Controller for StatefulSetController {
    fn name(&self) -> &'static str {
        "statefulset"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::StatefulSet, Kind::Pod, Kind::PersistentVolumeClaim]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::StatefulSet => self.sets.observe(event, dirty),
            Kind::PersistentVolumeClaim => {
                let claims = self.claims.entry(key.namespace.clone()).or_default();
                if event.kind == EventType::Deleted {
                    claims.remove(&key.name);
                } else {
                    claims.insert(
                        key.name.clone(),
                        text(&event.object, "/metadata/uid")
                            .unwrap_or_default()
                            .to_string(),
                    );
                }
                // A claim belongs to the sets of its namespace whose name it carries.
                for set_key in self.sets.keys() {
                    if let Some(set) = parse_storage_key(set_key)
                        && set.namespace == key.namespace
                        && key.name.contains(&format!("-{}-", set.name))
                    {
                        dirty.mark(set_key.clone(), || because(event));
                    }
                }
            }
            Kind::Pod => {
                let owner = self.pods.observe(event, Value::clone);
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
        let Ok(set_key) = key_of(set) else {
            return Reconciled::default();
        };
        let uid = text(set, "/metadata/uid").unwrap_or_default().to_string();
        let rv = text(set, "/metadata/resourceVersion")
            .unwrap_or_default()
            .to_string();
        let revision = revision(set);
        let min_ready = number(set, "/spec/minReadySeconds").unwrap_or(0);
        let pods: Vec<OrdinalPod> = self
            .pods
            .of(&uid)
            .filter_map(|pod| {
                let view = pod_view(pod);
                Some(OrdinalPod {
                    ordinal: ordinal_of(&set_key.name, &view.name)?,
                    current: text(pod, &format!("/metadata/labels/{REVISION_LABEL}"))
                        == Some(revision.as_str()),
                    ready: view.ready
                        && view.phase == shipshape_reconciler::replicaset::PodPhase::Running,
                    available: view.is_available(min_ready, now.as_second()),
                    finished: matches!(
                        view.phase,
                        shipshape_reconciler::replicaset::PodPhase::Succeeded
                            | shipshape_reconciler::replicaset::PodPhase::Failed
                    ),
                    terminating: view.terminating,
                    name: view.name,
                    uid: view.uid,
                })
            })
            .collect();
        let spec = &set["spec"];
        let templates: Vec<String> = claim_templates(set)
            .iter()
            .filter_map(|t| {
                t.at("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect();
        let namespace_claims = self
            .claims
            .get(&set_key.namespace)
            .cloned()
            .unwrap_or_default();
        let claims: BTreeSet<String> = namespace_claims
            .keys()
            .filter(|name| {
                templates
                    .iter()
                    .any(|t| name.starts_with(&format!("{t}-{}-", set_key.name)))
            })
            .cloned()
            .collect();
        let retention = &spec["persistentVolumeClaimRetentionPolicy"];
        let view = StatefulSetView {
            name: set_key.name.clone(),
            replicas: spec["replicas"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(1),
            parallel: spec["podManagementPolicy"] == "Parallel",
            on_delete: spec["updateStrategy"]["type"] == "OnDelete",
            partition: spec["updateStrategy"]["rollingUpdate"]["partition"]
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
            claim_templates: templates,
            claims,
            delete_claims_when_scaled: retention["whenScaled"] == "Delete",
            revision: revision.clone(),
            generation: number(set, "/metadata/generation").unwrap_or(1),
            status: parse_status(set),
            pods,
        };
        let delete_with_set = retention["whenDeleted"] == "Delete";
        let decision = decide_stateful_set(&view);
        let namespace = set_key.namespace.clone();
        let object = |kind: Kind, name: &str| ObjectKey {
            kind,
            namespace: namespace.clone(),
            name: name.to_string(),
        };
        let mut claims_first = Vec::new();
        let mut writes = Vec::new();
        let mut changed = Vec::new();
        for action in decision.actions {
            match action {
                StatefulSetAction::CreateClaim { name, template, .. } => {
                    if let Some(claim) = claim_object(set, &name, &template, delete_with_set) {
                        claims_first.push(Write::Create {
                            object: claim,
                            applied: None,
                            application: None,
                        });
                        claims_first.push(event(
                            COMPONENT,
                            set,
                            "Normal",
                            "SuccessfulCreate",
                            format!(
                                "create Claim {name} in StatefulSet {} success",
                                set_key.name
                            ),
                            now,
                        ));
                        changed.push(format!("claim {name}"));
                    }
                }
                StatefulSetAction::CreatePod { ordinal } => {
                    let name = pod_name(&set_key.name, ordinal);
                    writes.push(Write::Create {
                        object: ordinal_pod(set, &name, ordinal, &revision),
                        applied: None,
                        application: None,
                    });
                    writes.push(event(
                        COMPONENT,
                        set,
                        "Normal",
                        "SuccessfulCreate",
                        format!(
                            "create Pod {name} in StatefulSet {} successful",
                            set_key.name
                        ),
                        now,
                    ));
                    changed.push(format!("created {name}"));
                }
                StatefulSetAction::DeletePod { name, uid } => {
                    let pod_key = object(Kind::Pod, &name);
                    let bound = self
                        .pods
                        .get(&store::storage_key(&pod_key))
                        .is_some_and(|p| text(p, "/spec/nodeName").is_some());
                    writes.push(Write::delete(
                        pod_key,
                        Precondition::Uid(uid),
                        bound,
                        number(set, "/spec/template/spec/terminationGracePeriodSeconds")
                            .unwrap_or(30),
                    ));
                    writes.push(event(
                        COMPONENT,
                        set,
                        "Normal",
                        "SuccessfulDelete",
                        format!(
                            "delete Pod {name} in StatefulSet {} successful",
                            set_key.name
                        ),
                        now,
                    ));
                    changed.push(format!("deleted {name}"));
                }
                StatefulSetAction::DeleteClaim { name } => {
                    if let Some(uid) = namespace_claims.get(&name) {
                        writes.push(Write::Delete {
                            key: object(Kind::PersistentVolumeClaim, &name),
                            precondition: Precondition::Uid(uid.clone()),
                        });
                        changed.push(format!("deleted claim {name}"));
                    }
                }
                StatefulSetAction::UpdateStatus(status) => writes.push(Write::UpdateStatus {
                    key: set_key.clone(),
                    precondition: rv.parse().ok().map(Precondition::ResourceVersion),
                    status: status_json(&status),
                }),
            }
        }
        let audit = |what: &[String]| AuditEntry {
            actor: "controller/statefulset".into(),
            action: "ordinals".into(),
            subject: key.to_string(),
            details: json!({ "changes": what }),
        };
        let mut batches = Vec::new();
        // Claims exist before the pods that mount them.
        if !claims_first.is_empty() {
            batches.push(Batch {
                writes: claims_first,
                audit: Some(audit(&changed)),
            });
        }
        if !writes.is_empty() {
            batches.push(Batch {
                writes,
                audit: (!changed.is_empty()).then(|| audit(&changed)),
            });
        }
        Reconciled {
            batches,
            requeue_after: None,
        }
    }
}
