//! Where kustomize's built-in transformers write: its default field specs (which kinds, which
//! paths, and whether a missing field is created), as data.

use serde_json::{Map, Value};

use crate::Resource;

/// One field spec: a path (`/`-separated; a list on the way is walked item by item) in
/// objects of a kind (and group), created when missing if `create`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FieldSpec<'a> {
    pub group: Option<&'a str>,
    pub version: Option<&'a str>,
    pub kind: Option<&'a str>,
    pub path: &'a str,
    pub create: bool,
}

const fn spec(
    group: Option<&'static str>,
    kind: Option<&'static str>,
    path: &'static str,
    create: bool,
) -> FieldSpec<'static> {
    FieldSpec {
        group,
        version: None,
        kind,
        path,
        create,
    }
}

impl FieldSpec<'_> {
    pub fn applies_to(&self, resource: &Resource) -> bool {
        self.kind.is_none_or(|k| k == resource.kind())
            && self.group.is_none_or(|g| g == resource.group())
            && self.version.is_none_or(|v| v == resource.version())
    }

    /// Calls `f` on every value at this path in `object` (creating the last map, or the
    /// field, when `create`); `f` gets `None` for a field to create.
    pub fn visit(&self, object: &mut Value, f: &mut dyn FnMut(&mut Value)) {
        let parts: Vec<&str> = self.path.split('/').collect();
        visit(object, &parts, self.create, f);
    }
}

/// Calls `f` on every value at `path` (as a field spec writes it) without creating anything.
pub(crate) fn visit_path(object: &mut Value, path: &str, f: &mut dyn FnMut(&mut Value)) {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    visit(object, &parts, false, f);
}

fn visit(value: &mut Value, parts: &[&str], create: bool, f: &mut dyn FnMut(&mut Value)) {
    let Some((first, rest)) = parts.split_first() else {
        f(value);
        return;
    };
    let (key, list) = match first.strip_suffix("[]") {
        Some(key) => (key, true),
        None => (*first, false),
    };
    match value {
        Value::Array(items) => {
            for item in items {
                visit(item, parts, create, f);
            }
        }
        Value::Object(map) => {
            if !map.contains_key(key) {
                if !create || list {
                    return;
                }
                let fresh = if rest.is_empty() {
                    Value::Null
                } else {
                    Value::Object(Map::new())
                };
                map.insert(key.to_string(), fresh);
            }
            if let Some(next) = map.get_mut(key) {
                if next.is_null() && !rest.is_empty() {
                    if !create {
                        return;
                    }
                    *next = Value::Object(Map::new());
                }
                visit(next, rest, create, f);
            }
        }
        _ => {}
    }
}

/// The pod template label paths and selectors of kustomize's `commonLabels`.
pub(crate) const COMMON_LABELS: &[FieldSpec<'static>] = &[
    spec(None, None, "metadata/labels", true),
    spec(None, Some("Service"), "spec/selector", true),
    spec(None, Some("ReplicationController"), "spec/selector", true),
    spec(
        None,
        Some("ReplicationController"),
        "spec/template/metadata/labels",
        true,
    ),
    spec(None, Some("Deployment"), "spec/selector/matchLabels", true),
    spec(
        None,
        Some("Deployment"),
        "spec/template/metadata/labels",
        true,
    ),
    spec(
        Some("apps"),
        Some("Deployment"),
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("Deployment"),
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("Deployment"),
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("Deployment"),
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("Deployment"),
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ),
    spec(None, Some("ReplicaSet"), "spec/selector/matchLabels", true),
    spec(
        None,
        Some("ReplicaSet"),
        "spec/template/metadata/labels",
        true,
    ),
    spec(None, Some("DaemonSet"), "spec/selector/matchLabels", true),
    spec(
        None,
        Some("DaemonSet"),
        "spec/template/metadata/labels",
        true,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/selector/matchLabels",
        true,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/metadata/labels",
        true,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/spec/affinity/podAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/spec/affinity/podAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/spec/affinity/podAntiAffinity/preferredDuringSchedulingIgnoredDuringExecution/podAffinityTerm/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/spec/affinity/podAntiAffinity/requiredDuringSchedulingIgnoredDuringExecution/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/spec/topologySpreadConstraints/labelSelector/matchLabels",
        false,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/volumeClaimTemplates[]/metadata/labels",
        true,
    ),
    spec(
        Some("batch"),
        Some("Job"),
        "spec/selector/matchLabels",
        false,
    ),
    spec(
        Some("batch"),
        Some("Job"),
        "spec/template/metadata/labels",
        true,
    ),
    spec(
        Some("batch"),
        Some("CronJob"),
        "spec/jobTemplate/spec/selector/matchLabels",
        false,
    ),
    spec(
        Some("batch"),
        Some("CronJob"),
        "spec/jobTemplate/metadata/labels",
        true,
    ),
    spec(
        Some("batch"),
        Some("CronJob"),
        "spec/jobTemplate/spec/template/metadata/labels",
        true,
    ),
    spec(
        Some("policy"),
        Some("PodDisruptionBudget"),
        "spec/selector/matchLabels",
        false,
    ),
    spec(
        Some("networking.k8s.io"),
        Some("NetworkPolicy"),
        "spec/podSelector/matchLabels",
        false,
    ),
    spec(
        Some("networking.k8s.io"),
        Some("NetworkPolicy"),
        "spec/ingress/from/podSelector/matchLabels",
        false,
    ),
    spec(
        Some("networking.k8s.io"),
        Some("NetworkPolicy"),
        "spec/egress/to/podSelector/matchLabels",
        false,
    ),
];

/// Whether a label field spec writes a template's labels (not a selector).
pub(crate) fn is_template(spec: &FieldSpec<'_>) -> bool {
    spec.path.ends_with("metadata/labels") && spec.path != "metadata/labels"
}

/// kustomize's `commonAnnotations` field specs.
pub(crate) const COMMON_ANNOTATIONS: &[FieldSpec<'static>] = &[
    spec(None, None, "metadata/annotations", true),
    spec(
        None,
        Some("ReplicationController"),
        "spec/template/metadata/annotations",
        true,
    ),
    spec(
        None,
        Some("Deployment"),
        "spec/template/metadata/annotations",
        true,
    ),
    spec(
        None,
        Some("ReplicaSet"),
        "spec/template/metadata/annotations",
        true,
    ),
    spec(
        None,
        Some("DaemonSet"),
        "spec/template/metadata/annotations",
        true,
    ),
    spec(
        Some("apps"),
        Some("StatefulSet"),
        "spec/template/metadata/annotations",
        true,
    ),
    spec(
        Some("batch"),
        Some("Job"),
        "spec/template/metadata/annotations",
        true,
    ),
    spec(
        Some("batch"),
        Some("CronJob"),
        "spec/jobTemplate/metadata/annotations",
        true,
    ),
    spec(
        Some("batch"),
        Some("CronJob"),
        "spec/jobTemplate/spec/template/metadata/annotations",
        true,
    ),
];

/// kustomize's `replicas` field specs.
pub(crate) const REPLICAS: &[FieldSpec<'static>] = &[
    spec(None, Some("Deployment"), "spec/replicas", true),
    spec(None, Some("ReplicationController"), "spec/replicas", true),
    spec(None, Some("ReplicaSet"), "spec/replicas", true),
    spec(None, Some("StatefulSet"), "spec/replicas", true),
];
