//! Strategic merge patches as kustomize applies them (kyaml's merge): maps merge, `null`
//! deletes, lists the Kubernetes schema marks mergeable merge item by item (by their merge
//! keys), other lists are replaced, and `$patch: delete/replace/merge` do what Kubernetes
//! defines. Lists of types no schema describes (custom resources) are replaced whole.
//!
//! Where kustomize leaves `$setElementOrder/…`, `$retainKeys` and `$deleteFromPrimitiveList/…`
//! in the output as if they were fields, they are honoured here as Kubernetes defines them
//! (a field named so could never be applied).

use serde_json::{Map, Value};

/// Where in an object a map sits, so its lists merge by the right keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Schema {
    /// A type this table does not describe: lists merge by kyaml's common keys.
    Unknown,
    /// A built-in type whose lists (other than those named below) are replaced.
    Atomic,
    Object(&'static str),
    ObjectMeta,
    WorkloadSpec,
    CronJobSpec,
    JobTemplate,
    PodTemplate,
    PodSpec,
    Container,
    ServiceSpec,
    ServiceAccount,
    Status,
}

/// How a list merges.
#[derive(Clone, Debug, PartialEq, Eq)]
enum ListMerge {
    /// The patch's list replaces the original.
    Replace,
    /// Items are maps matched by these fields (missing ones read as the default given).
    Keyed(Vec<(&'static str, Option<&'static str>)>),
    /// Items are scalars; the patch's are added to the original's.
    Union,
}

/// The schema at the top of an object of `kind`.
pub(crate) fn root_schema(kind: &str) -> Schema {
    match kind {
        "Pod"
        | "Deployment"
        | "ReplicaSet"
        | "DaemonSet"
        | "StatefulSet"
        | "ReplicationController"
        | "Job"
        | "CronJob"
        | "Service"
        | "PodTemplate" => Schema::Object(kind_static(kind)),
        "ServiceAccount" => Schema::ServiceAccount,
        "MutatingWebhookConfiguration" | "ValidatingWebhookConfiguration" => {
            Schema::Object("webhooks")
        }
        _ if shipshape_api::Kind::by_name(kind).is_some() => Schema::Object("builtin"),
        _ => Schema::Unknown,
    }
}

fn kind_static(kind: &str) -> &'static str {
    match kind {
        "Pod" => "Pod",
        "Deployment" => "Deployment",
        "ReplicaSet" => "ReplicaSet",
        "DaemonSet" => "DaemonSet",
        "StatefulSet" => "StatefulSet",
        "ReplicationController" => "ReplicationController",
        "Job" => "Job",
        "CronJob" => "CronJob",
        "Service" => "Service",
        "PodTemplate" => "PodTemplate",
        _ => "builtin",
    }
}

/// The schema of field `name` of a map whose schema is `parent`.
fn field_schema(parent: Schema, name: &str) -> Schema {
    use Schema::*;
    match (parent, name) {
        (Unknown, _) => Unknown,
        (Object(_) | ServiceAccount, "metadata") => ObjectMeta,
        (Object(_), "status") => Status,
        (Object("Pod"), "spec") => PodSpec,
        (Object("PodTemplate"), "template") => PodTemplate,
        (Object("CronJob"), "spec") => CronJobSpec,
        (Object("Service"), "spec") => ServiceSpec,
        (
            Object(
                "Deployment"
                | "ReplicaSet"
                | "DaemonSet"
                | "StatefulSet"
                | "ReplicationController"
                | "Job",
            ),
            "spec",
        ) => WorkloadSpec,
        (WorkloadSpec, "template") => PodTemplate,
        (CronJobSpec, "jobTemplate") => JobTemplate,
        (JobTemplate, "metadata") | (PodTemplate, "metadata") => ObjectMeta,
        (JobTemplate, "spec") => WorkloadSpec,
        (PodTemplate, "spec") => PodSpec,
        _ => Atomic,
    }
}

/// How the list in field `name` of a map with schema `parent` merges.
fn list_merge(parent: Schema, name: &str) -> ListMerge {
    use Schema::*;
    let keyed = |keys: &[(&'static str, Option<&'static str>)]| ListMerge::Keyed(keys.to_vec());
    match (parent, name) {
        (PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            keyed(&[("name", None)])
        }
        (PodSpec, "volumes" | "imagePullSecrets" | "resourceClaims" | "schedulingGates") => {
            keyed(&[("name", None)])
        }
        (PodSpec, "hostAliases") => keyed(&[("ip", None)]),
        (PodSpec, "topologySpreadConstraints") => {
            keyed(&[("topologyKey", None), ("whenUnsatisfiable", None)])
        }
        (Container, "env") => keyed(&[("name", None)]),
        (Container, "ports") => keyed(&[("containerPort", None), ("protocol", None)]),
        (Container, "volumeMounts") => keyed(&[("mountPath", None)]),
        (Container, "volumeDevices") => keyed(&[("devicePath", None)]),
        (ServiceSpec, "ports") => keyed(&[("port", None), ("protocol", None)]),
        (ServiceAccount, "secrets") => keyed(&[("name", None)]),
        (Object("webhooks"), "webhooks") => keyed(&[("name", None)]),
        (ObjectMeta, "ownerReferences") => keyed(&[("uid", None)]),
        (ObjectMeta, "finalizers") => ListMerge::Union,
        (Status, "conditions") => keyed(&[("type", None)]),
        _ => ListMerge::Replace,
    }
}

fn is_directive_item(item: &Map<String, Value>) -> bool {
    item.len() == 1 && item.contains_key("$patch")
}

/// The schema of the items of list `name` in a map with schema `parent`.
fn item_schema(parent: Schema, name: &str) -> Schema {
    match (parent, name) {
        (Schema::PodSpec, "containers" | "initContainers" | "ephemeralContainers") => {
            Schema::Container
        }
        (Schema::Unknown, _) => Schema::Unknown,
        _ => Schema::Atomic,
    }
}

/// What a patch asks of the object it applies to.
#[derive(Debug, PartialEq)]
pub(crate) enum Outcome {
    /// The object, merged.
    Merged,
    /// `$patch: delete` at the top: the object goes.
    Delete,
}

/// Applies strategic merge patch `patch` to `object` (of `kind`).
pub(crate) fn apply(object: &mut Value, patch: &Value, kind: &str) -> Result<Outcome, String> {
    let Some(patch) = patch.as_object() else {
        return Err("a strategic merge patch must be a mapping".into());
    };
    if patch.get("$patch").and_then(Value::as_str) == Some("delete") {
        return Ok(Outcome::Delete);
    }
    let Some(original) = object.as_object_mut() else {
        return Err("the object is not a mapping".into());
    };
    merge_map(original, patch, root_schema(kind))?;
    Ok(Outcome::Merged)
}

fn merge_map(
    original: &mut Map<String, Value>,
    patch: &Map<String, Value>,
    schema: Schema,
) -> Result<(), String> {
    match patch.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            *original = strip(patch);
            return Ok(());
        }
        Some("merge") | None => {}
        Some("delete") => {
            original.clear();
            return Ok(());
        }
        Some(other) => return Err(format!("unknown $patch directive {other:?}")),
    }
    let mut orders = Vec::new();
    let mut deletes = Vec::new();
    for (key, value) in patch {
        if let Some(list) = key.strip_prefix("$setElementOrder/") {
            orders.push((list, value));
            continue;
        }
        if let Some(list) = key.strip_prefix("$deleteFromPrimitiveList/") {
            deletes.push((list, value));
            continue;
        }
        if key == "$patch" || key == "$retainKeys" {
            continue;
        }
        if key.starts_with('$') {
            return Err(format!("unknown patch directive {key:?}"));
        }
        match value {
            Value::Null => {
                original.remove(key);
            }
            Value::Object(inner) => {
                if inner.get("$patch").and_then(Value::as_str) == Some("delete") {
                    original.remove(key);
                    continue;
                }
                match original.get_mut(key) {
                    Some(Value::Object(existing)) => {
                        merge_map(existing, inner, field_schema(schema, key))?;
                    }
                    _ => {
                        let mut fresh = Map::new();
                        merge_map(&mut fresh, inner, field_schema(schema, key))?;
                        original.insert(key.clone(), Value::Object(fresh));
                    }
                }
            }
            Value::Array(items) => {
                let existing = match original.remove(key) {
                    Some(Value::Array(existing)) => existing,
                    _ => Vec::new(),
                };
                let merged = merge_list(existing, items, schema, key)?;
                original.insert(key.clone(), Value::Array(merged));
            }
            scalar => {
                original.insert(key.clone(), scalar.clone());
            }
        }
    }
    for (list, values) in deletes {
        let remove = values.as_array().cloned().unwrap_or_default();
        if let Some(Value::Array(items)) = original.get_mut(list) {
            items.retain(|item| !remove.contains(item));
        }
    }
    for (list, order) in orders {
        if let (Some(Value::Array(items)), Some(order)) = (original.get_mut(list), order.as_array())
        {
            reorder(items, order, schema, list);
        }
    }
    if let Some(retain) = patch.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = retain.iter().filter_map(Value::as_str).collect();
        original.retain(|key, _| keep.contains(&key.as_str()));
    }
    Ok(())
}

fn merge_list(
    original: Vec<Value>,
    patch: &[Value],
    schema: Schema,
    name: &str,
) -> Result<Vec<Value>, String> {
    let strategy = list_merge(schema, name);
    let directive = patch.iter().find_map(|item| {
        item.as_object()
            .filter(|m| is_directive_item(m))
            .and_then(|m| m.get("$patch"))
            .and_then(Value::as_str)
    });
    let items: Vec<&Value> = patch
        .iter()
        .filter(|item| !item.as_object().is_some_and(is_directive_item))
        .collect();
    if matches!(strategy, ListMerge::Keyed(_)) && directive == Some("replace") {
        return Ok(items.into_iter().map(strip_value).collect());
    }
    match strategy {
        ListMerge::Replace => Ok(items.into_iter().map(strip_value).collect()),
        ListMerge::Union => {
            // The patch's values first, then the original's not among them (as kyaml does).
            let mut merged: Vec<Value> = Vec::new();
            for item in items.into_iter().chain(original.iter()) {
                if !merged.contains(item) {
                    merged.push(item.clone());
                }
            }
            Ok(merged)
        }
        ListMerge::Keyed(keys) => {
            let inner = item_schema(schema, name);
            // kustomize's order: the items the patch names, in its order (existing ones moved
            // up), then the original's others in theirs.
            let mut rest: Vec<Option<Value>> = original.into_iter().map(Some).collect();
            let mut merged = Vec::new();
            for item in items {
                let Some(fields) = item.as_object() else {
                    return Err(format!(
                        "{name}: items are merged by {}, and this one is not a mapping",
                        keys[0].0
                    ));
                };
                let key = key_of(fields, &keys);
                let found = rest.iter().position(|o| {
                    o.as_ref()
                        .and_then(Value::as_object)
                        .is_some_and(|o| unifies(&key_of(o, &keys), &key))
                });
                let delete = fields.get("$patch").and_then(Value::as_str) == Some("delete");
                match (found, delete) {
                    (Some(at), true) => rest[at] = None,
                    (None, true) => {}
                    (Some(at), false) => {
                        if let Some(Value::Object(mut existing)) = rest[at].take() {
                            merge_map(&mut existing, fields, inner)?;
                            if !existing.is_empty() {
                                merged.push(Value::Object(existing));
                            }
                        }
                    }
                    (None, false) => {
                        let mut fresh = Map::new();
                        merge_map(&mut fresh, fields, inner)?;
                        merged.push(Value::Object(fresh));
                    }
                }
            }
            merged.extend(rest.into_iter().flatten());
            Ok(merged)
        }
    }
}

/// Whether two items' keys name the same item: equal where both have a value (a port without
/// `protocol` matches one with it).
fn unifies(a: &Option<Vec<Value>>, b: &Option<Vec<Value>>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a
            .iter()
            .zip(b)
            .all(|(x, y)| x.is_null() || y.is_null() || x == y),
        _ => false,
    }
}

/// The values of an item's merge key fields, defaults filled in; `None` when the first is
/// missing (such an item matches nothing).
fn key_of(item: &Map<String, Value>, keys: &[(&str, Option<&str>)]) -> Option<Vec<Value>> {
    let mut values = Vec::with_capacity(keys.len());
    for (index, (field, default)) in keys.iter().enumerate() {
        match (item.get(*field), default) {
            (Some(value), _) => values.push(value.clone()),
            (None, Some(default)) => values.push(Value::String((*default).to_string())),
            (None, None) if index == 0 => return None,
            (None, None) => values.push(Value::Null),
        }
    }
    Some(values)
}

/// Orders `items` as `order` lists them (by merge key, or by value for scalars); items the
/// order does not name keep their relative place after those it names.
fn reorder(items: &mut [Value], order: &[Value], schema: Schema, name: &str) {
    let keys = match list_merge(schema, name) {
        ListMerge::Keyed(keys) => Some(keys),
        _ => None,
    };
    let rank = |item: &Value| -> usize {
        let found =
            order.iter().position(
                |wanted| match (&keys, wanted.as_object(), item.as_object()) {
                    (Some(keys), Some(w), Some(i)) => unifies(&key_of(w, keys), &key_of(i, keys)),
                    _ => wanted == item,
                },
            );
        found.unwrap_or(usize::MAX)
    };
    items.sort_by_key(rank);
}

/// A patch's map with its directives removed, for where it is taken whole.
fn strip(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .filter(|(key, _)| !key.starts_with('$'))
        .map(|(key, value)| (key.clone(), strip_value(value)))
        .collect()
}

fn strip_value(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(strip(map)),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|item| !item.as_object().is_some_and(is_directive_item))
                .map(strip_value)
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn patched(kind: &str, mut object: Value, patch: Value) -> Value {
        assert_eq!(apply(&mut object, &patch, kind), Ok(Outcome::Merged));
        object
    }

    #[test]
    fn containers_merge_by_name_and_env_by_name() {
        let deployment = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "image": "a:1", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}]},
            {"name": "side", "image": "s:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "app", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}]},
            {"name": "new", "image": "n:1"}
        ]}}}});
        let out = patched("Deployment", deployment, patch);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            // kustomize's order: what the patch names first.
            json!([
                {"name": "app", "image": "a:1", "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}, {"name": "A", "value": "1"}]},
                {"name": "new", "image": "n:1"},
                {"name": "side", "image": "s:1"}
            ])
        );
    }

    #[test]
    fn directives_delete_replace_and_null() {
        let pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {
            "containers": [{"name": "app", "args": ["x", "y"]}, {"name": "gone"}],
            "tolerations": [{"key": "k"}],
            "volumes": [{"name": "v", "emptyDir": {}}]
        }});
        let patch = json!({"metadata": {"labels": {"b": null}}, "spec": {
            "containers": [{"name": "app", "args": ["z"]}, {"name": "gone", "$patch": "delete"}],
            "tolerations": [{"key": "other"}],
            "volumes": [{"$patch": "replace"}, {"name": "w", "configMap": {"name": "c"}}]
        }});
        let out = patched("Pod", pod, patch);
        assert_eq!(out["metadata"]["labels"], json!({"a": "1"}));
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "app", "args": ["z"]}])
        );
        assert_eq!(out["spec"]["tolerations"], json!([{"key": "other"}]));
        assert_eq!(
            out["spec"]["volumes"],
            json!([{"name": "w", "configMap": {"name": "c"}}])
        );
        let mut gone = json!({"kind": "Pod"});
        assert_eq!(
            apply(&mut gone, &json!({"$patch": "delete"}), "Pod"),
            Ok(Outcome::Delete)
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_protocol() {
        let service = json!({"spec": {"ports": [{"port": 53, "protocol": "UDP", "name": "u"}, {"port": 53, "name": "t"}]}});
        let patch = json!({"spec": {"ports": [{"port": 53, "targetPort": 5353}]}});
        let out = patched("Service", service, patch);
        assert_eq!(
            out["spec"]["ports"],
            // A port without a protocol matches the first port of that number.
            json!([{"port": 53, "protocol": "UDP", "name": "u", "targetPort": 5353}, {"port": 53, "name": "t"}])
        );
    }

    #[test]
    fn map_replace_retain_keys_and_primitive_lists() {
        let deployment = json!({"metadata": {"finalizers": ["a", "b"]}, "spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let patch = json!({"metadata": {"finalizers": ["c"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}});
        let out = patched("Deployment", deployment, patch);
        assert_eq!(out["metadata"]["finalizers"], json!(["c", "b"]));
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let replaced = patched(
            "ConfigMap",
            json!({"data": {"a": "1", "b": "2"}}),
            json!({"data": {"$patch": "replace", "c": "3"}}),
        );
        assert_eq!(replaced["data"], json!({"c": "3"}));
    }

    #[test]
    fn custom_resources_replace_their_lists() {
        let object = json!({"spec": {"items": [{"name": "a", "v": 1}], "plain": [1, 2]}});
        let patch = json!({"spec": {"items": [{"name": "b"}], "plain": [3]}});
        let out = patched("Widget", object, patch);
        assert_eq!(out["spec"]["items"], json!([{"name": "b"}]));
        assert_eq!(out["spec"]["plain"], json!([3]));
    }

    #[test]
    fn set_element_order_orders_the_merged_list() {
        let pod = json!({"spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "c"}, {"name": "b"}, {"name": "a"}],
            "containers": [{"name": "c"}]}});
        let out = patched("Pod", pod, patch);
        assert_eq!(
            out["spec"]["containers"],
            json!([{"name": "c"}, {"name": "b"}, {"name": "a"}])
        );
    }
}
