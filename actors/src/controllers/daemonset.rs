//! The DaemonSet controller: a pod on every node that should run the daemon, deciding with
//! [`shipshape_reconciler::daemonset::decide_daemon_set`]. Pods are tied to their node by
//! required node affinity and placed by the scheduler, as in Kubernetes; the template's
//! revision is the `controller-revision-hash` label.

use shipshape_api::pointer::At;
use std::collections::BTreeMap;

use serde_json::{Value, json};
use shipshape_api::Kind;
use shipshape_reconciler::daemonset::{
    DaemonNode, DaemonPod, DaemonSetAction, DaemonSetStatus, DaemonSetView, decide_daemon_set,
    default_tolerations, resolve_max_unavailable,
};

use super::scheduler::{node_view, pinned_node, tolerations};
use super::{
    Owned, Owners, number, pod_from_template, pod_view, seed, status_count, string_map,
    template_revision, text,
};
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{
    AuditEntry, Batch, EventType, Precondition, WatchEvent, key_of, parse_storage_key,
};
use crate::{Write, store};

const COMPONENT: &str = "daemonset-controller";

/// The label carrying the template revision a pod was made from (Kubernetes' name).
pub const REVISION_LABEL: &str = "controller-revision-hash";

/// The DaemonSet controller's cache: the sets, the nodes, and the sets' pods.
pub struct DaemonSetController {
    sets: Owners,
    nodes: BTreeMap<String, DaemonNode>,
    pods: Owned<Value>,
}

impl Default for DaemonSetController {
    fn default() -> Self {
        Self {
            sets: Owners::default(),
            nodes: BTreeMap::new(),
            pods: Owned::new("DaemonSet"),
        }
    }
}

impl DaemonSetController {
    /// An empty cache.
    pub fn new() -> Self {
        Self::default()
    }
}

fn parse_status(set: &Value) -> DaemonSetStatus {
    let count = |field: &str| status_count(set, field);
    DaemonSetStatus {
        desired: count("desiredNumberScheduled"),
        current: count("currentNumberScheduled"),
        misscheduled: count("numberMisscheduled"),
        ready: count("numberReady"),
        updated: count("updatedNumberScheduled"),
        available: count("numberAvailable"),
        observed_generation: number(set, "/status/observedGeneration").unwrap_or(0),
    }
}

fn status_json(status: &DaemonSetStatus) -> Value {
    json!({
        "desiredNumberScheduled": status.desired,
        "currentNumberScheduled": status.current,
        "numberMisscheduled": status.misscheduled,
        "numberReady": status.ready,
        "updatedNumberScheduled": status.updated,
        "numberAvailable": status.available,
        "numberUnavailable": status.desired.saturating_sub(status.available),
        "observedGeneration": status.observed_generation,
    })
}

/// A pod for `node`: the template, tied to the node, with the daemon tolerations added.
fn daemon_pod(set: &Value, name: &str, node: &str, revision: &str) -> Value {
    let mut pod = pod_from_template(set, name, &[(REVISION_LABEL, revision)]);
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"] = json!({
        "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}],
    });
    let mut list = pod["spec"]["tolerations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in default_tolerations() {
        list.push(json!({"key": t.key, "operator": t.operator, "effect": t.effect}));
    }
    pod["spec"]["tolerations"] = json!(list);
    pod
}

impl Controller for DaemonSetController {
    fn name(&self) -> &'static str {
        "daemonset"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::DaemonSet, Kind::Pod, Kind::Node]
    }

    fn reset(&mut self) {
        *self = Self::default();
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        match key.kind {
            Kind::DaemonSet => self.sets.observe(event, dirty),
            Kind::Node => {
                let node = (event.kind != EventType::Deleted).then(|| {
                    let view = node_view(&event.object);
                    DaemonNode {
                        name: view.name,
                        labels: view.labels,
                        taints: view.taints,
                    }
                });
                let changed = match node {
                    Some(node) => self.nodes.insert(key.name.clone(), node.clone()) != Some(node),
                    None => self.nodes.remove(&key.name).is_some(),
                };
                if changed {
                    for set in self.sets.keys() {
                        dirty.mark(set.clone(), || because(event));
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
        let revision = template_revision(set);
        let min_ready = number(set, "/spec/minReadySeconds").unwrap_or(0);
        let pods: Vec<DaemonPod> = self
            .pods
            .of(&uid)
            .map(|pod| {
                let view = pod_view(pod);
                DaemonPod {
                    name: view.name.clone(),
                    uid: view.uid.clone(),
                    node: pinned_node(pod).or(view.node.clone()).unwrap_or_default(),
                    current: text(pod, &format!("/metadata/labels/{REVISION_LABEL}"))
                        == Some(revision.as_str()),
                    available: view.is_available(min_ready, now.as_second()),
                    ready: view.ready,
                    failed: text(pod, "/status/phase") == Some("Failed"),
                    terminating: view.terminating,
                    created: view.created,
                }
            })
            .collect();
        let strategy = &set["spec"]["updateStrategy"];
        let nodes: Vec<DaemonNode> = self.nodes.values().cloned().collect();
        let mut view = DaemonSetView {
            name: set_key.name.clone(),
            nodes,
            node_selector: string_map(set.at("/spec/template/spec/nodeSelector")),
            tolerations: tolerations(set.at("/spec/template/spec/tolerations")),
            on_delete: strategy["type"] == "OnDelete",
            max_unavailable: 1,
            generation: number(set, "/metadata/generation").unwrap_or(1),
            status: parse_status(set),
            pods,
        };
        let desired = view.nodes.iter().filter(|n| view.wants(n)).count() as u32;
        let max = &strategy["rollingUpdate"]["maxUnavailable"];
        view.max_unavailable = resolve_max_unavailable(max.as_str(), max.as_i64(), desired);
        let decision = decide_daemon_set(&view, seed(&[&uid, &rv]));
        let namespace = set_key.namespace.clone();
        let mut writes = Vec::new();
        let mut changed = Vec::new();
        for action in decision.actions {
            match action {
                DaemonSetAction::CreatePod { name, node } => {
                    writes.push(Write::Create {
                        object: daemon_pod(set, &name, &node, &revision),
                        applied: None,
                        application: None,
                    });
                    writes.push(event(
                        COMPONENT,
                        set,
                        "Normal",
                        "SuccessfulCreate",
                        format!("Created pod: {name}"),
                        now,
                    ));
                    changed.push(format!("created {name} for {node}"));
                }
                DaemonSetAction::DeletePod { name, uid } => {
                    let pod_key = shipshape_api::ObjectKey {
                        kind: Kind::Pod,
                        namespace: namespace.clone(),
                        name: name.clone(),
                    };
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
                        format!("Deleted pod: {name}"),
                        now,
                    ));
                    changed.push(format!("deleted {name}"));
                }
                DaemonSetAction::UpdateStatus(status) => writes.push(Write::UpdateStatus {
                    key: set_key.clone(),
                    precondition: rv.parse().ok().map(Precondition::ResourceVersion),
                    status: status_json(&status),
                }),
            }
        }
        if writes.is_empty() {
            return Reconciled::default();
        }
        Reconciled {
            batches: vec![Batch {
                writes,
                audit: (!changed.is_empty()).then(|| AuditEntry {
                    actor: "controller/daemonset".into(),
                    action: "pods".into(),
                    subject: key.to_string(),
                    details: json!({ "pods": changed }),
                }),
            }],
            // A ready pod becomes available after minReadySeconds without an event.
            requeue_after: (min_ready > 0)
                .then(|| std::time::Duration::from_secs(u64::try_from(min_ready).unwrap_or(1))),
        }
    }
}
