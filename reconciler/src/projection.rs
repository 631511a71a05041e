//! From stored API objects to the views the decisions take.
//!
//! The controllers project the objects they watch through these functions, and the models in
//! `model/` project the objects their steps write through the same ones, so a field the
//! controllers read wrongly (a phase, a deletionTimestamp, a Ready condition) is read wrongly in
//! the models too, where the properties can see it. Objects are the JSON the store keeps; a
//! missing or ill-typed field reads as Kubernetes' default for it.

use serde_json::Value;
use shipshape_api::pointer::At;

use crate::replicaset::{PodPhase, PodView, ReplicaSetStatus, ReplicaSetView};

fn text<'a>(object: &'a Value, pointer: &str) -> Option<&'a str> {
    object.at(pointer).and_then(Value::as_str)
}

fn number(object: &Value, pointer: &str) -> Option<i64> {
    object.at(pointer).and_then(Value::as_i64)
}

fn count(object: &Value, field: &str) -> u32 {
    number(object, &format!("/status/{field}"))
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

/// Seconds since the epoch of an RFC 3339 time, as decisions take time.
pub fn seconds(time: Option<&Value>) -> Option<i64> {
    time.and_then(Value::as_str)
        .and_then(|text| text.parse::<jiff::Timestamp>().ok())
        .map(|t| t.as_second())
}

/// The `Ready` condition of a pod: whether it is true, and since when.
fn ready_condition(pod: &Value) -> (bool, Option<i64>) {
    let ready = pod
        .at("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready"));
    match ready {
        Some(c) if c.get("status").and_then(Value::as_str) == Some("True") => {
            (true, seconds(c.get("lastTransitionTime")))
        }
        _ => (false, None),
    }
}

/// A pod as the workload decisions see it.
pub fn pod_view(pod: &Value) -> PodView {
    let phase = match text(pod, "/status/phase") {
        Some("Running") => PodPhase::Running,
        Some("Succeeded") => PodPhase::Succeeded,
        Some("Failed") => PodPhase::Failed,
        Some("Unknown") => PodPhase::Unknown,
        _ => PodPhase::Pending,
    };
    let (ready, ready_since) = ready_condition(pod);
    let restarts = pod
        .at("/status/containerStatuses")
        .and_then(Value::as_array)
        .map(|statuses| {
            statuses
                .iter()
                .filter_map(|s| s.get("restartCount").and_then(Value::as_u64))
                .fold(0u64, u64::saturating_add)
        })
        .unwrap_or(0);
    PodView {
        name: text(pod, "/metadata/name").unwrap_or_default().to_string(),
        uid: text(pod, "/metadata/uid").unwrap_or_default().to_string(),
        node: text(pod, "/spec/nodeName")
            .filter(|n| !n.is_empty())
            .map(str::to_string),
        phase,
        ready,
        ready_since,
        restarts: u32::try_from(restarts).unwrap_or(u32::MAX),
        created: seconds(pod.at("/metadata/creationTimestamp")).unwrap_or(0),
        terminating: pod.at("/metadata/deletionTimestamp").is_some(),
    }
}

/// The status a ReplicaSet reports (`status.replicas`, `readyReplicas`, …).
pub fn replica_set_status(set: &Value) -> ReplicaSetStatus {
    ReplicaSetStatus {
        replicas: count(set, "replicas"),
        ready: count(set, "readyReplicas"),
        available: count(set, "availableReplicas"),
        observed_generation: number(set, "/status/observedGeneration").unwrap_or(0),
    }
}

/// A ReplicaSet and the pods it owns as its decision sees them. `spec.replicas` defaults to 1,
/// as in Kubernetes; a count that does not fit reads as that default too.
pub fn replica_set_view(set: &Value, pods: Vec<PodView>) -> ReplicaSetView {
    ReplicaSetView {
        name: text(set, "/metadata/name").unwrap_or_default().to_string(),
        replicas: number(set, "/spec/replicas")
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(1),
        min_ready_seconds: number(set, "/spec/minReadySeconds").unwrap_or(0),
        generation: number(set, "/metadata/generation").unwrap_or(1),
        status: replica_set_status(set),
        pods,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn projects_a_pod_as_the_decisions_see_it() {
        let pod = json!({
            "metadata": {"name": "web-abcde", "uid": "u1",
                         "creationTimestamp": "2026-11-21T10:00:00Z",
                         "deletionTimestamp": "2026-11-21T10:01:00Z"},
            "spec": {"nodeName": "node-1"},
            "status": {"phase": "Running",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastTransitionTime": "2026-11-21T10:00:05Z"}],
                       "containerStatuses": [{"restartCount": 2}, {"restartCount": 1}]},
        });
        let view = pod_view(&pod);
        assert_eq!(view.name, "web-abcde");
        assert_eq!(view.node.as_deref(), Some("node-1"));
        assert_eq!(view.phase, PodPhase::Running);
        assert!(view.ready);
        assert_eq!(view.ready_since, Some(view.created + 5));
        assert_eq!(view.restarts, 3);
        assert!(view.terminating);
        let bare = pod_view(&json!({"metadata": {"name": "p"}, "spec": {"nodeName": ""}}));
        assert_eq!(
            (bare.phase, bare.node, bare.ready),
            (PodPhase::Pending, None, false)
        );
    }

    #[test]
    fn projects_a_replica_set_with_kubernetes_defaults() {
        let set = json!({
            "metadata": {"name": "web-v1", "generation": 3},
            "spec": {"replicas": 4, "minReadySeconds": 10},
            "status": {"replicas": 2, "readyReplicas": 1, "availableReplicas": -1,
                       "observedGeneration": 2},
        });
        let view = replica_set_view(&set, Vec::new());
        assert_eq!(
            (view.replicas, view.min_ready_seconds, view.generation),
            (4, 10, 3)
        );
        assert_eq!(
            view.status,
            ReplicaSetStatus {
                replicas: 2,
                ready: 1,
                available: 0,
                observed_generation: 2,
            }
        );
        let defaulted = replica_set_view(&json!({"spec": {"replicas": -1}}), Vec::new());
        assert_eq!((defaulted.replicas, defaulted.generation), (1, 1));
    }
}
