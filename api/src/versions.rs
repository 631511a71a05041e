//! Older API versions Kubernetes still serves for a kind, read into the one version shipshape
//! stores, as the API server converts every served version to its storage version.
//!
//! Repositories written years ago still say `autoscaling/v1`; refusing them would be a false
//! positive, since `kubectl apply` takes them on any Kubernetes since 1.23. The conversion
//! follows Kubernetes' own (`k8s.io/kubernetes/pkg/apis/autoscaling/v1/conversion.go`) and keeps
//! every field it does not convert, so a misspelt field is still reported as unknown.

use serde_json::{Map, Value, json};

/// A version served beside the stored one: `(apiVersion, kind, the stored apiVersion)`.
pub const ALSO_SERVED: &[(&str, &str, &str)] = &[(
    "autoscaling/v1",
    "HorizontalPodAutoscaler",
    "autoscaling/v2",
)];

/// The stored apiVersion for an older served `api_version` of `kind`, if it is one.
pub fn stored_version(api_version: &str, kind: &str) -> Option<&'static str> {
    ALSO_SERVED
        .iter()
        .find(|(served, served_kind, _)| *served == api_version && *served_kind == kind)
        .map(|(_, _, stored)| *stored)
}

/// Converts an object of an older served version to its stored version; anything else is
/// returned unchanged.
pub fn to_stored_version(mut value: Value) -> Value {
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_string);
    let (Some(api_version), Some(kind)) = (text("apiVersion"), text("kind")) else {
        return value;
    };
    let Some(stored) = stored_version(&api_version, &kind) else {
        return value;
    };
    if let Value::Object(object) = &mut value {
        object.insert("apiVersion".into(), Value::String(stored.into()));
        if kind == "HorizontalPodAutoscaler" {
            autoscaler_v1_to_v2(object);
        }
    }
    value
}

/// `spec.targetCPUUtilizationPercentage` becomes a CPU `Resource` metric with a `Utilization`
/// target; `status.currentCPUUtilizationPercentage` a current CPU metric.
fn autoscaler_v1_to_v2(object: &mut Map<String, Value>) {
    if let Some(Value::Object(spec)) = object.get_mut("spec")
        && let Some(target) = spec.remove("targetCPUUtilizationPercentage")
        && !target.is_null()
    {
        spec.insert(
            "metrics".into(),
            json!([{
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": target}},
            }]),
        );
    }
    if let Some(Value::Object(status)) = object.get_mut("status")
        && let Some(current) = status.remove("currentCPUUtilizationPercentage")
        && !current.is_null()
    {
        status.insert(
            "currentMetrics".into(),
            json!([{
                "type": "Resource",
                "resource": {"name": "cpu", "current": {"averageUtilization": current}},
            }]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_autoscaling_v1_target_becomes_a_v2_cpu_metric() {
        let v1 = json!({
            "apiVersion": "autoscaling/v1",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "web"},
            "spec": {
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
                "minReplicas": 1,
                "maxReplicas": 10,
                "targetCPUUtilizationPercentage": 50,
                "misspelt": true,
            },
        });
        let v2 = to_stored_version(v1);
        assert_eq!(v2["apiVersion"], "autoscaling/v2");
        assert_eq!(
            v2["spec"]["metrics"],
            json!([{"type": "Resource", "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 50}}}])
        );
        assert!(v2["spec"].get("targetCPUUtilizationPercentage").is_none());
        assert_eq!(
            v2["spec"]["misspelt"], true,
            "unknown fields are kept to be reported"
        );
        assert_eq!(v2["spec"]["maxReplicas"], 10);
    }

    #[test]
    fn other_versions_and_kinds_pass_through() {
        let deployment =
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "a"}});
        assert_eq!(to_stored_version(deployment.clone()), deployment);
        let beta = json!({"apiVersion": "autoscaling/v2beta2", "kind": "HorizontalPodAutoscaler"});
        assert_eq!(to_stored_version(beta.clone()), beta);
    }
}
