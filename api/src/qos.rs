//! A pod's quality-of-service class, as Kubernetes derives it from its containers' resources.
//! It is set when the pod is made, not by the kubelet, so that `kubectl get pod -o yaml` shows
//! the class from the start and every writer agrees on it.

use serde_json::Value;

use crate::pointer::At;
use crate::quantity::Quantity;

/// Kubernetes' QoS class of a pod spec (`spec`, with `containers` and `initContainers`; a
/// missing spec, `Null`, has no containers):
/// `Guaranteed` when every container limits both cpu and memory and requests what it limits,
/// `BestEffort` when no container requests or limits either, `Burstable` otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers = ["containers", "initContainers"]
        .into_iter()
        .filter_map(|field| spec.get(field).and_then(Value::as_array))
        .flatten();
    let mut any = false;
    let mut guaranteed = true;
    for container in containers {
        let resources = container.at("/resources");
        for resource in ["cpu", "memory"] {
            let amount = |which: &str| {
                resources
                    .and_then(|r| r.get(which))
                    .and_then(|r| r.get(resource))
            };
            let limit = amount("limits");
            // An unset request defaults to the limit, as the API server defaults it.
            let request = amount("requests").or(limit);
            any |= request.is_some();
            guaranteed &= limit.is_some() && same_amount(limit, request);
        }
    }
    match (any, guaranteed) {
        (false, _) => "BestEffort",
        (true, true) => "Guaranteed",
        (true, false) => "Burstable",
    }
}

/// `1` and `1000m` are the same cpu: compare quantities, not their spelling.
fn same_amount(a: Option<&Value>, b: Option<&Value>) -> bool {
    let parse = |v: Option<&Value>| -> Option<Quantity> { Quantity::from_json(v?).ok() };
    match (parse(a), parse(b)) {
        (Some(a), Some(b)) => a.milli() == b.milli(),
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(resources: Value) -> Value {
        json!({"containers": [{"name": "app", "resources": resources}]})
    }

    #[test]
    fn classes_follow_kubernetes() {
        assert_eq!(
            qos_class(&json!({"containers": [{"name": "app"}]})),
            "BestEffort"
        );
        assert_eq!(qos_class(&spec(json!({}))), "BestEffort");
        assert_eq!(qos_class(&Value::Null), "BestEffort", "no spec at all");
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1", "memory": "1Gi"}}))),
            "Guaranteed",
            "requests default to limits"
        );
        assert_eq!(
            qos_class(&spec(json!({
                "requests": {"cpu": "1000m", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            }))),
            "Guaranteed",
            "1000m is 1"
        );
        assert_eq!(
            qos_class(&spec(json!({"requests": {"cpu": "100m"}}))),
            "Burstable"
        );
        assert_eq!(
            qos_class(&spec(json!({"limits": {"cpu": "1"}}))),
            "Burstable",
            "memory unlimited"
        );
        assert_eq!(
            qos_class(&spec(json!({
                "requests": {"cpu": "500m", "memory": "1Gi"},
                "limits": {"cpu": "1", "memory": "1Gi"},
            }))),
            "Burstable"
        );
    }

    #[test]
    fn an_init_container_counts_as_a_container() {
        let pod = json!({
            "initContainers": [{"name": "setup", "resources": {"requests": {"cpu": "100m"}}}],
            "containers": [{"name": "app"}],
        });
        assert_eq!(qos_class(&pod), "Burstable");
    }
}
