//! The node lifecycle controller: marks nodes whose leases lapse as unreachable and evicts
//! their pods after the eviction timeout, deciding with
//! [`shipshape_reconciler::nodes::decide_node`].
//!
//! A lease counts as renewed when this controller *sees* it change, not by the time written in
//! it (as Kubernetes does): clocks of different machines need not agree, and after a restart
//! every node gets a full grace period before it is judged.

use shipshape_api::pointer::At;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};
use shipshape_api::{Kind, ObjectKey};
use shipshape_reconciler::nodes::{
    NodeAction, NodeHealth, PodOnNode, UNREACHABLE_TAINT, decide_node,
};

use super::{condition, condition_is_true, pod_reference, rfc3339, seconds, text};
use crate::Write;
use crate::controller::{Controller, Dirty, Reconciled, because};
use crate::events::event;
use crate::store::{AuditEntry, Batch, EventType, Precondition, WatchEvent, parse_storage_key};

const COMPONENT: &str = "node-controller";

/// The reason on the Ready condition of a pod whose node stopped reporting; its kubelet,
/// when it reports again, knows by it to write the pod's status afresh.
pub const NODE_NOT_READY: &str = "NodeNotReady";

struct CachedNode {
    object: Value,
    resource_version: u64,
}

/// The node lifecycle controller's cache.
pub struct NodeLifecycle {
    grace: Duration,
    eviction_timeout: Duration,
    nodes: HashMap<String, CachedNode>,
    /// When each lease was last seen to change (seconds), and its renewTime then.
    leases: HashMap<String, (i64, Option<String>)>,
    pods: HashMap<String, (String, PodOnNode)>,
    pods_by_node: HashMap<String, BTreeMap<String, PodOnNode>>,
}

impl NodeLifecycle {
    /// Marks nodes silent for `grace`; evicts their pods after `eviction_timeout`.
    pub fn new(grace: Duration, eviction_timeout: Duration) -> Self {
        Self {
            grace,
            eviction_timeout,
            nodes: HashMap::new(),
            leases: HashMap::new(),
            pods: HashMap::new(),
            pods_by_node: HashMap::new(),
        }
    }
}

fn taints(node: &Value) -> Vec<Value> {
    node.at("/spec/taints")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default()
}

fn is_unreachable_taint(taint: &Value) -> bool {
    taint.get("key").and_then(Value::as_str) == Some(UNREACHABLE_TAINT)
}

fn tolerates_forever(pod: &Value) -> bool {
    pod.at("/spec/tolerations")
        .and_then(Value::as_array)
        .is_some_and(|list| {
            list.iter().any(|t| {
                let key = t.get("key").and_then(Value::as_str).unwrap_or_default();
                let operator = t.get("operator").and_then(Value::as_str).unwrap_or("Equal");
                let effect = t.get("effect").and_then(Value::as_str).unwrap_or_default();
                (key == UNREACHABLE_TAINT || (key.is_empty() && operator == "Exists"))
                    && (effect.is_empty() || effect == "NoExecute")
                    && t.get("tolerationSeconds").is_none_or(Value::is_null)
            })
        })
}

impl Controller for NodeLifecycle {
    fn name(&self) -> &'static str {
        "node-lifecycle"
    }

    fn kinds(&self) -> Vec<Kind> {
        vec![Kind::Node, Kind::Lease, Kind::Pod]
    }

    fn reset(&mut self) {
        *self = Self::new(self.grace, self.eviction_timeout);
    }

    fn observe(&mut self, event: &WatchEvent, dirty: &mut Dirty) {
        let Some(key) = parse_storage_key(&event.key) else {
            return;
        };
        let deleted = event.kind == EventType::Deleted;
        match key.kind {
            Kind::Node => {
                if deleted {
                    self.nodes.remove(&key.name);
                } else {
                    self.nodes.insert(
                        key.name.clone(),
                        CachedNode {
                            object: event.object.clone(),
                            resource_version: event.resource_version,
                        },
                    );
                    dirty.mark(event.key.clone(), || because(event));
                }
            }
            Kind::Lease if key.namespace == "kube-node-lease" => {
                if deleted {
                    self.leases.remove(&key.name);
                    return;
                }
                let renew = text(&event.object, "/spec/renewTime").map(str::to_string);
                let seen = jiff::Timestamp::now().as_second();
                let changed = self.leases.get(&key.name).is_none_or(|(_, r)| *r != renew);
                if changed {
                    self.leases.insert(key.name.clone(), (seen, renew));
                    // Only a node that may have been marked needs a look on every renewal.
                    if self
                        .nodes
                        .get(&key.name)
                        .is_some_and(|n| taints(&n.object).iter().any(is_unreachable_taint))
                    {
                        dirty.mark(format!("Node//{}", key.name), || because(event));
                    }
                }
            }
            Kind::Pod => {
                if let Some((node, _)) = self.pods.remove(&event.key)
                    && let Some(on_node) = self.pods_by_node.get_mut(&node)
                {
                    on_node.remove(&event.key);
                }
                let node = text(&event.object, "/spec/nodeName").filter(|n| !n.is_empty());
                if let (false, Some(node)) = (deleted, node) {
                    let pod = PodOnNode {
                        name: event.key.clone(),
                        uid: text(&event.object, "/metadata/uid")
                            .unwrap_or_default()
                            .to_string(),
                        terminating: event.object.at("/metadata/deletionTimestamp").is_some(),
                        tolerates_forever: tolerates_forever(&event.object),
                        ready: condition_is_true(&event.object, "Ready"),
                    };
                    self.pods_by_node
                        .entry(node.to_string())
                        .or_default()
                        .insert(event.key.clone(), pod.clone());
                    self.pods.insert(event.key.clone(), (node.to_string(), pod));
                }
            }
            _ => {}
        }
    }

    fn reconcile(&mut self, key: &str, now: jiff::Timestamp) -> Reconciled {
        let Some(name) = key.strip_prefix("Node//") else {
            return Reconciled::default();
        };
        let Some(node) = self.nodes.get(name) else {
            return Reconciled::default();
        };
        let condition = condition(&node.object, "Ready");
        let ready = condition
            .and_then(|c| c.get("status"))
            .and_then(Value::as_str)
            == Some("True");
        let health = NodeHealth {
            ready,
            ready_changed: seconds(condition.and_then(|c| c.get("lastTransitionTime")))
                .unwrap_or(now.as_second()),
            lease_renewed: self.leases.get(name).map(|(seen, _)| *seen),
            tainted: taints(&node.object).iter().any(is_unreachable_taint),
        };
        let pods: Vec<PodOnNode> = self
            .pods_by_node
            .get(name)
            .map(|pods| pods.values().cloned().collect())
            .unwrap_or_default();
        let decision = decide_node(
            &health,
            &pods,
            now.as_second(),
            i64::try_from(self.grace.as_secs()).unwrap_or(i64::MAX),
            i64::try_from(self.eviction_timeout.as_secs()).unwrap_or(i64::MAX),
        );
        let node_key = ObjectKey {
            kind: Kind::Node,
            namespace: String::new(),
            name: name.to_string(),
        };
        let time = rfc3339(now.as_second());
        let mut batches = Vec::new();
        for action in decision.actions {
            match action {
                NodeAction::MarkUnreachable => {
                    let mut status = node
                        .object
                        .get("status")
                        .cloned()
                        .unwrap_or_else(|| json!({}));
                    let mut conditions: Vec<Value> = status
                        .get("conditions")
                        .and_then(Value::as_array)
                        .cloned()
                        .unwrap_or_default();
                    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some("Ready"));
                    if ready || condition.is_none() {
                        conditions.push(json!({
                            "type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                            "message": "Kubelet stopped posting node status.",
                            "lastHeartbeatTime": condition.and_then(|c| c.get("lastHeartbeatTime")),
                            "lastTransitionTime": time,
                        }));
                    } else if let Some(condition) = condition {
                        conditions.push(condition.clone());
                    }
                    status["conditions"] = json!(conditions);
                    let mut new_taints = taints(&node.object);
                    new_taints.push(
                        json!({"key": UNREACHABLE_TAINT, "effect": "NoExecute", "timeAdded": time}),
                    );
                    batches.push(Batch {
                        writes: vec![
                            Write::UpdateStatus {
                                key: node_key.clone(),
                                precondition: Some(Precondition::ResourceVersion(node.resource_version)),
                                status,
                            },
                            Write::Patch {
                                key: node_key.clone(),
                                precondition: None,
                                patch: json!({"spec": {"taints": new_taints}}),
                            },
                            event(COMPONENT, &node.object, "Normal", "NodeNotReady",
                                  format!("Node {name} status is now: NodeNotReady (its lease was not renewed for {}s)", self.grace.as_secs()), now),
                        ],
                        audit: Some(AuditEntry {
                            actor: "controller/node-lifecycle".into(),
                            action: "mark-unreachable".into(),
                            subject: key.to_string(),
                            details: json!({"graceSeconds": self.grace.as_secs()}),
                        }),
                    });
                }
                NodeAction::ClearUnreachable => {
                    let kept: Vec<Value> = taints(&node.object)
                        .into_iter()
                        .filter(|t| !is_unreachable_taint(t))
                        .collect();
                    batches.push(Batch {
                        writes: vec![Write::Patch {
                            key: node_key.clone(),
                            precondition: Some(Precondition::ResourceVersion(node.resource_version)),
                            patch: json!({"spec": {"taints": if kept.is_empty() { Value::Null } else { json!(kept) }}}),
                        }],
                        audit: None,
                    });
                }
                NodeAction::MarkPodNotReady { name: pod, uid } => {
                    let Some(pod_key) = parse_storage_key(&pod) else {
                        continue;
                    };
                    batches.push(Batch {
                        writes: vec![Write::SetCondition {
                            key: pod_key,
                            precondition: Some(Precondition::Uid(uid)),
                            condition: json!({
                                "type": "Ready", "status": "False", "reason": NODE_NOT_READY,
                                "message": format!("Node {name} is not ready: its kubelet stopped reporting."),
                                "lastTransitionTime": time,
                            }),
                        }],
                        audit: None,
                    });
                }
                NodeAction::Evict { name: pod, uid } => {
                    let Some(pod_key) = parse_storage_key(&pod) else {
                        continue;
                    };
                    let reference = pod_reference(&pod_key.namespace, &pod_key.name, &uid);
                    batches.push(Batch {
                        writes: vec![
                            Write::MarkDeleting {
                                key: pod_key.clone(),
                                precondition: Precondition::Uid(uid),
                                grace_seconds: 30,
                            },
                            event(
                                COMPONENT,
                                &reference,
                                "Normal",
                                "TaintManagerEviction",
                                format!(
                                    "Marking for deletion Pod {}/{} (node {name} unreachable)",
                                    pod_key.namespace, pod_key.name
                                ),
                                now,
                            ),
                        ],
                        audit: Some(AuditEntry {
                            actor: "controller/node-lifecycle".into(),
                            action: "evict".into(),
                            subject: pod,
                            details: json!({"node": name}),
                        }),
                    });
                }
            }
        }
        Reconciled {
            batches,
            requeue_after: decision
                .requeue_after
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(1))),
        }
    }
}
