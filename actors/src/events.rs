//! Kubernetes Events: the short explanations of what happened to an object.

use serde_json::{Value, json};

use crate::store::Write;

/// A Kubernetes Event about `object` (which must carry its uid): what `kubectl describe` and
/// `kubectl get events` show. `component` is who reports it (`shipshape-gitsync`,
/// `replicaset-controller`, `default-scheduler`, as Kubernetes names its components).
pub fn event(
    component: &str,
    object: &Value,
    kind: &str,
    reason: &str,
    message: String,
    now: jiff::Timestamp,
) -> Write {
    let metadata = &object["metadata"];
    let name = metadata["name"].as_str().unwrap_or("object");
    // Events of cluster-scoped objects live in `default`, as in Kubernetes.
    let namespace = metadata["namespace"].as_str().unwrap_or("default");
    let time = jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string();
    Write::Create {
        object: json!({
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                "name": format!("{name}.{}", &uuid::Uuid::new_v4().simple().to_string()[..16]),
                "namespace": namespace,
            },
            "involvedObject": {
                "apiVersion": object["apiVersion"],
                "kind": object["kind"],
                "name": name,
                "namespace": metadata["namespace"],
                "uid": metadata["uid"],
            },
            "type": kind,
            "reason": reason,
            "message": message,
            "source": {"component": component},
            "reportingComponent": component,
            "reportingInstance": "shipshape",
            "firstTimestamp": time,
            "lastTimestamp": time,
            "count": 1,
        }),
        applied: None,
        application: None,
    }
}
