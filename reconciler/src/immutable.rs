//! Fields the API server refuses to change once an object exists: a commit that changes one is
//! refused whole, as `kubectl apply` of it would fail, instead of being applied in a way
//! Kubernetes never would (a Deployment following a new selector, a running Job with a new
//! template, an immutable ConfigMap rewritten under the pods that mounted it).
//!
//! The comparison is between the manifest last applied from Git and the new one, as written:
//! a field Git never set is the same before and after.

use serde_json::Value;
use shipshape_api::Kind;

/// A change the API server would refuse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// The field, as kubectl names it (`spec.selector`).
    pub field: String,
    /// Why, in the API server's words where it has them, and the way out.
    pub reason: String,
}

/// What a rename does, the way out of every refusal here.
const WAY_OUT: &str = "give the object a new name (the old one is pruned)";

/// StatefulSet fields an update may change (Kubernetes' `ValidateStatefulSetUpdate`).
const STATEFULSET_MUTABLE: &[&str] = &[
    "replicas",
    "ordinals",
    "template",
    "updateStrategy",
    "revisionHistoryLimit",
    "persistentVolumeClaimRetentionPolicy",
    "minReadySeconds",
];

/// Job fields that cannot change once the Job exists.
const JOB_IMMUTABLE: &[&str] = &[
    "selector",
    "manualSelector",
    "template",
    "completions",
    "completionMode",
    "podFailurePolicy",
    "backoffLimitPerIndex",
];

/// The first change from `before` to `after` (two manifests of one `kind`) that Kubernetes
/// refuses on update, if any.
pub fn forbidden_update(kind: Kind, before: &Value, after: &Value) -> Option<Forbidden> {
    let immutable = |field: &str| Forbidden {
        field: field.to_string(),
        reason: format!("field is immutable: {WAY_OUT}"),
    };
    match kind {
        Kind::Deployment | Kind::ReplicaSet | Kind::DaemonSet => {
            changed(before, after, "/spec/selector").then(|| immutable("spec.selector"))
        }
        Kind::StatefulSet => {
            let field =
                spec_fields(before, after).find(|f| !STATEFULSET_MUTABLE.contains(&f.as_str()))?;
            Some(Forbidden {
                field: format!("spec.{field}"),
                reason: format!(
                    "updates to statefulset spec for fields other than {} are forbidden: {WAY_OUT}",
                    quoted(STATEFULSET_MUTABLE)
                ),
            })
        }
        Kind::Job => JOB_IMMUTABLE
            .iter()
            .find(|f| changed(before, after, &format!("/spec/{f}")))
            .map(|f| immutable(&format!("spec.{f}"))),
        Kind::Pod => {
            let field = spec_fields(before, after).next()?;
            Some(Forbidden {
                field: format!("spec.{field}"),
                reason: format!(
                    "a Pod's spec cannot change once it exists (shipshape restarts no container \
                     on a changed image yet): {WAY_OUT}, or run it from a Deployment"
                ),
            })
        }
        Kind::Service => {
            let ip = |v: &Value| {
                v.pointer("/spec/clusterIP")
                    .and_then(Value::as_str)
                    .filter(|ip| !ip.is_empty())
                    .map(str::to_string)
            };
            let external =
                |v: &Value| v.pointer("/spec/type").and_then(Value::as_str) == Some("ExternalName");
            match (ip(before), ip(after)) {
                (Some(old), Some(new)) if old != new && !external(before) && !external(after) => {
                    Some(immutable("spec.clusterIP"))
                }
                _ => None,
            }
        }
        Kind::ConfigMap | Kind::Secret => {
            if kind == Kind::Secret {
                let kind_of = |v: &Value| {
                    v.get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("Opaque")
                        .to_string()
                };
                if kind_of(before) != kind_of(after) {
                    return Some(immutable("type"));
                }
            }
            let frozen = |field: &str| Forbidden {
                field: field.into(),
                reason: format!("field is immutable when `immutable` is set: {WAY_OUT}"),
            };
            if before.get("immutable") != Some(&Value::Bool(true)) {
                return None;
            }
            if after.get("immutable") != Some(&Value::Bool(true)) {
                return Some(frozen("immutable"));
            }
            ["data", "binaryData", "stringData"]
                .into_iter()
                .find(|f| changed(before, after, &format!("/{f}")))
                .map(frozen)
        }
        Kind::PersistentVolumeClaim => {
            let field = spec_fields(before, after).next()?;
            let reason = if field == "resources" {
                format!(
                    "the claim's volume cannot be resized (shipshape's local-path volumes do not \
                     expand): {WAY_OUT}"
                )
            } else {
                format!("spec is immutable after creation: {WAY_OUT}")
            };
            Some(Forbidden {
                field: format!("spec.{field}"),
                reason,
            })
        }
        Kind::StorageClass => [
            "provisioner",
            "parameters",
            "reclaimPolicy",
            "volumeBindingMode",
        ]
        .into_iter()
        .find(|f| changed(before, after, &format!("/{f}")))
        .map(immutable),
        Kind::IngressClass => {
            changed(before, after, "/spec/controller").then(|| immutable("spec.controller"))
        }
        _ => None,
    }
}

/// Whether the value at `pointer` differs (absent and `null` are the same).
fn changed(before: &Value, after: &Value, pointer: &str) -> bool {
    let at = |v: &Value| v.pointer(pointer).filter(|v| !v.is_null()).cloned();
    at(before) != at(after)
}

/// The fields of `spec` that differ, in name order.
fn spec_fields<'a>(before: &'a Value, after: &'a Value) -> impl Iterator<Item = String> + 'a {
    let keys = |v: &'a Value| {
        v.get("spec")
            .and_then(Value::as_object)
            .into_iter()
            .flat_map(|spec| spec.keys())
    };
    let mut fields: Vec<String> = keys(before).chain(keys(after)).cloned().collect();
    fields.sort();
    fields.dedup();
    fields
        .into_iter()
        .filter(move |f| changed(before, after, &format!("/spec/{f}")))
}

fn quoted(fields: &[&str]) -> String {
    let quoted: Vec<String> = fields.iter().map(|f| format!("'{f}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => quoted.join(""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field(kind: Kind, before: Value, after: Value) -> Option<String> {
        forbidden_update(kind, &before, &after).map(|f| f.field)
    }

    #[test]
    fn a_workload_keeps_its_selector() {
        let deployment = |app: &str, image: &str| {
            json!({"spec": {"selector": {"matchLabels": {"app": app}},
                "template": {"spec": {"containers": [{"image": image}]}}}})
        };
        assert_eq!(
            field(
                Kind::Deployment,
                deployment("web", "a"),
                deployment("web", "b")
            ),
            None
        );
        assert_eq!(
            field(
                Kind::Deployment,
                deployment("web", "a"),
                deployment("api", "a")
            )
            .as_deref(),
            Some("spec.selector")
        );
        assert_eq!(
            field(
                Kind::DaemonSet,
                deployment("web", "a"),
                deployment("api", "a")
            )
            .as_deref(),
            Some("spec.selector")
        );
    }

    #[test]
    fn a_stateful_set_changes_only_what_kubernetes_lets_it() {
        let set = |replicas: u32, service: &str| json!({"spec": {"replicas": replicas, "serviceName": service, "template": {}}});
        assert_eq!(field(Kind::StatefulSet, set(1, "db"), set(3, "db")), None);
        let refused = forbidden_update(Kind::StatefulSet, &set(1, "db"), &set(1, "pg"));
        let refused = refused.expect("refused");
        assert_eq!(refused.field, "spec.serviceName");
        assert!(
            refused
                .reason
                .contains("'persistentVolumeClaimRetentionPolicy' and 'minReadySeconds'"),
            "{}",
            refused.reason
        );
    }

    #[test]
    fn a_job_keeps_its_template_but_not_its_parallelism() {
        let job = |image: &str, parallelism: u32| {
            json!({"spec": {"parallelism": parallelism,
                "template": {"spec": {"containers": [{"image": image}]}}}})
        };
        assert_eq!(field(Kind::Job, job("a", 1), job("a", 3)), None);
        assert_eq!(
            field(Kind::Job, job("a", 1), job("b", 1)).as_deref(),
            Some("spec.template")
        );
    }

    #[test]
    fn a_pod_spec_is_fixed_but_its_labels_are_not() {
        let pod = |label: &str, image: &str| {
            json!({"metadata": {"labels": {"v": label}},
                "spec": {"containers": [{"image": image}]}})
        };
        assert_eq!(field(Kind::Pod, pod("1", "a"), pod("2", "a")), None);
        assert_eq!(
            field(Kind::Pod, pod("1", "a"), pod("1", "b")).as_deref(),
            Some("spec.containers")
        );
    }

    #[test]
    fn an_immutable_config_map_keeps_its_data_and_its_flag() {
        let map = |value: &str, immutable: Option<bool>| {
            let mut map = json!({"data": {"k": value}});
            if let Some(flag) = immutable {
                map["immutable"] = json!(flag);
            }
            map
        };
        assert_eq!(field(Kind::ConfigMap, map("a", None), map("b", None)), None);
        assert_eq!(
            field(Kind::ConfigMap, map("a", None), map("b", Some(true))),
            None,
            "made immutable by the same commit that changes it"
        );
        assert_eq!(
            field(Kind::ConfigMap, map("a", Some(true)), map("b", Some(true))).as_deref(),
            Some("data")
        );
        assert_eq!(
            field(Kind::ConfigMap, map("a", Some(true)), map("a", None)).as_deref(),
            Some("immutable")
        );
        assert_eq!(
            field(
                Kind::Secret,
                json!({"stringData": {"k": "v"}}),
                json!({"type": "Opaque", "stringData": {"k": "w"}})
            ),
            None,
            "Opaque is the default type"
        );
        assert_eq!(
            field(
                Kind::Secret,
                json!({"type": "Opaque"}),
                json!({"type": "kubernetes.io/tls"})
            )
            .as_deref(),
            Some("type")
        );
    }

    #[test]
    fn a_service_keeps_its_cluster_ip_and_a_claim_its_size() {
        let service = |ip: &str| json!({"spec": {"clusterIP": ip, "ports": [{"port": 80}]}});
        assert_eq!(
            field(Kind::Service, service("10.43.0.10"), service("10.43.0.11")).as_deref(),
            Some("spec.clusterIP")
        );
        assert_eq!(
            field(Kind::Service, json!({"spec": {}}), service("10.43.0.11")),
            None
        );
        let claim = |size: &str| json!({"spec": {"resources": {"requests": {"storage": size}}}});
        let refused = forbidden_update(Kind::PersistentVolumeClaim, &claim("1Gi"), &claim("2Gi"));
        assert!(
            refused.is_some_and(|r| r.field == "spec.resources" && r.reason.contains("resized"))
        );
    }
}
