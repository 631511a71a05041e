//! Name references: when a build renames an object (a prefix, a suffix, a generator's hash),
//! every field that refers to it by an earlier name is rewritten, as kustomize's name
//! reference transformer does for the built-in kinds, once, at the end of the build.

use serde_json::Value;

use crate::Resource;

/// Where each kind that holds a pod spec holds it.
const POD_SPEC: [(&str, &str); 9] = [
    ("Pod", "spec"),
    ("PodTemplate", "template/spec"),
    ("Deployment", "spec/template/spec"),
    ("ReplicaSet", "spec/template/spec"),
    ("DaemonSet", "spec/template/spec"),
    ("StatefulSet", "spec/template/spec"),
    ("ReplicationController", "spec/template/spec"),
    ("Job", "spec/template/spec"),
    ("CronJob", "spec/jobTemplate/spec/template/spec"),
];

/// Which pod-spec holders each kind of reference is fixed in (kustomize's table: ConfigMaps and
/// Secrets not in ReplicationControllers; accounts, claims and priority classes not in
/// ReplicaSets or PodTemplates).
const CONFIG_HOLDERS: &[&str] = &[
    "Pod",
    "PodTemplate",
    "Deployment",
    "ReplicaSet",
    "DaemonSet",
    "StatefulSet",
    "Job",
    "CronJob",
];
const OTHER_HOLDERS: &[&str] = &[
    "Pod",
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "ReplicationController",
    "Job",
    "CronJob",
];

/// Paths inside a pod spec, per kind referred to.
const POD_SPEC_PATHS: &[(&str, &[&str], &str)] = &[
    ("ConfigMap", CONFIG_HOLDERS, "volumes/configMap/name"),
    (
        "ConfigMap",
        CONFIG_HOLDERS,
        "containers/env/valueFrom/configMapKeyRef/name",
    ),
    (
        "ConfigMap",
        CONFIG_HOLDERS,
        "initContainers/env/valueFrom/configMapKeyRef/name",
    ),
    (
        "ConfigMap",
        CONFIG_HOLDERS,
        "containers/envFrom/configMapRef/name",
    ),
    (
        "ConfigMap",
        CONFIG_HOLDERS,
        "initContainers/envFrom/configMapRef/name",
    ),
    (
        "ConfigMap",
        CONFIG_HOLDERS,
        "volumes/projected/sources/configMap/name",
    ),
    ("Secret", CONFIG_HOLDERS, "volumes/secret/secretName"),
    (
        "Secret",
        CONFIG_HOLDERS,
        "containers/env/valueFrom/secretKeyRef/name",
    ),
    (
        "Secret",
        CONFIG_HOLDERS,
        "initContainers/env/valueFrom/secretKeyRef/name",
    ),
    (
        "Secret",
        CONFIG_HOLDERS,
        "containers/envFrom/secretRef/name",
    ),
    (
        "Secret",
        CONFIG_HOLDERS,
        "initContainers/envFrom/secretRef/name",
    ),
    ("Secret", CONFIG_HOLDERS, "imagePullSecrets/name"),
    (
        "Secret",
        CONFIG_HOLDERS,
        "volumes/projected/sources/secret/name",
    ),
    ("ServiceAccount", OTHER_HOLDERS, "serviceAccountName"),
    (
        "PersistentVolumeClaim",
        OTHER_HOLDERS,
        "volumes/persistentVolumeClaim/claimName",
    ),
    ("PriorityClass", OTHER_HOLDERS, "priorityClassName"),
];

/// Other references: (kind referred to, referring kind, path).
const PATHS: &[(&str, &str, &str)] = &[
    ("ConfigMap", "Node", "spec/configSource/configMap"),
    ("ConfigMap", "Role", "rules/resourceNames"),
    ("ConfigMap", "ClusterRole", "rules/resourceNames"),
    (
        "ConfigMap",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/fastcgi-params-configmap",
    ),
    ("Secret", "Ingress", "spec/tls/secretName"),
    (
        "Secret",
        "Ingress",
        "metadata/annotations/ingress.kubernetes.io\\/auth-secret",
    ),
    (
        "Secret",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-secret",
    ),
    (
        "Secret",
        "Ingress",
        "metadata/annotations/nginx.ingress.kubernetes.io\\/auth-tls-secret",
    ),
    ("Secret", "ServiceAccount", "imagePullSecrets/name"),
    ("Secret", "StorageClass", "parameters/secretName"),
    ("Secret", "StorageClass", "parameters/adminSecretName"),
    ("Secret", "StorageClass", "parameters/userSecretName"),
    ("Secret", "StorageClass", "parameters/secretRef"),
    ("Secret", "Role", "rules/resourceNames"),
    ("Secret", "ClusterRole", "rules/resourceNames"),
    ("Secret", "PersistentVolume", "spec/azureFile/secretName"),
    ("Service", "StatefulSet", "spec/serviceName"),
    (
        "Service",
        "Ingress",
        "spec/rules/http/paths/backend/serviceName",
    ),
    ("Service", "Ingress", "spec/backend/serviceName"),
    (
        "Service",
        "Ingress",
        "spec/rules/http/paths/backend/service/name",
    ),
    ("Service", "Ingress", "spec/defaultBackend/service/name"),
    ("Service", "APIService", "spec/service/name"),
    (
        "Service",
        "ValidatingWebhookConfiguration",
        "webhooks/clientConfig/service",
    ),
    (
        "Service",
        "MutatingWebhookConfiguration",
        "webhooks/clientConfig/service",
    ),
    ("Role", "RoleBinding", "roleRef"),
    ("ClusterRole", "RoleBinding", "roleRef"),
    ("ClusterRole", "ClusterRoleBinding", "roleRef"),
    ("ServiceAccount", "RoleBinding", "subjects"),
    ("ServiceAccount", "ClusterRoleBinding", "subjects"),
    (
        "PersistentVolume",
        "PersistentVolumeClaim",
        "spec/volumeName",
    ),
    ("PersistentVolume", "ClusterRole", "rules/resourceNames"),
    ("StorageClass", "PersistentVolume", "spec/storageClassName"),
    (
        "StorageClass",
        "PersistentVolumeClaim",
        "spec/storageClassName",
    ),
    (
        "StorageClass",
        "StatefulSet",
        "spec/volumeClaimTemplates/spec/storageClassName",
    ),
    // kustomize declares this one with a group that can never match; fixed here on purpose.
    ("IngressClass", "Ingress", "spec/ingressClassName"),
    (
        "ValidatingAdmissionPolicy",
        "ValidatingAdmissionPolicyBinding",
        "spec/policyName",
    ),
    (
        "Deployment",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef",
    ),
    (
        "ReplicationController",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef",
    ),
    (
        "ReplicaSet",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef",
    ),
    (
        "StatefulSet",
        "HorizontalPodAutoscaler",
        "spec/scaleTargetRef",
    ),
];

/// What the fix-up knows of each object, taken before any rewrite.
struct Referee {
    kind: String,
    group: String,
    /// Every name it had before its current one.
    previous: Vec<String>,
    name: String,
    /// Its first and its current namespace, effective (`default` for none).
    original_namespace: String,
    namespace: String,
    /// Its namespace as written (`""` for none).
    raw_namespace: String,
    namespaced: bool,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
}

fn effective(namespace: &str) -> String {
    if namespace.is_empty() {
        "default".into()
    } else {
        namespace.to_string()
    }
}

/// Rewrites every reference to a renamed object; why not, when a reference could mean more
/// than one object.
pub(crate) fn fix(resources: &mut [Resource]) -> Result<(), (usize, String)> {
    let known: Vec<Referee> = resources
        .iter()
        .map(|r| Referee {
            kind: r.kind().to_string(),
            group: r.group().to_string(),
            // Its ids before the current one (a move to another namespace keeps the name).
            previous: if r.names.len() > 1 || r.namespaces.len() > 1 || r.transformed {
                r.names.clone()
            } else {
                Vec::new()
            },
            name: r.name().to_string(),
            original_namespace: effective(r.namespaces.first().map_or("", String::as_str)),
            namespace: effective(r.namespace()),
            raw_namespace: r.namespace().to_string(),
            namespaced: r.namespaced(),
            prefixes: r.prefixes.clone(),
            suffixes: r.suffixes.clone(),
        })
        .collect();
    for (index, resource) in resources.iter_mut().enumerate() {
        let kind = resource.kind().to_string();
        let mut jobs: Vec<(&str, String)> = Vec::new();
        for (holder, spec) in POD_SPEC {
            if holder != kind {
                continue;
            }
            for (referred, holders, path) in POD_SPEC_PATHS {
                if holders.contains(&holder) {
                    jobs.push((referred, format!("{spec}/{path}")));
                }
            }
        }
        for (referred, referrer, path) in PATHS {
            if *referrer == kind {
                jobs.push((referred, (*path).to_string()));
            }
        }
        if jobs.is_empty() {
            continue;
        }
        let scope = Scope::of(resource, &known);
        for (referred, path) in jobs {
            let mut problem = None;
            crate::fieldspecs::visit_path(&mut resource.object, &path, &mut |value| {
                if problem.is_none()
                    && let Err(why) = scope.rewrite(value, referred, &path)
                {
                    problem = Some(why);
                }
            });
            if let Some(why) = problem {
                return Err((index, why));
            }
        }
    }
    Ok(())
}

/// The referring object's view.
struct Scope<'a> {
    known: &'a [Referee],
    namespace: String,
    namespaced: bool,
    /// Namespaces a RoleBinding's ServiceAccount subjects name (they may be referred to there).
    subject_namespaces: Vec<String>,
    prefixes: Vec<String>,
    suffixes: Vec<String>,
}

impl<'a> Scope<'a> {
    fn of(resource: &Resource, known: &'a [Referee]) -> Scope<'a> {
        let subject_namespaces = if resource.kind() == "RoleBinding" {
            resource
                .object
                .get("subjects")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter(|s| s.get("kind").and_then(Value::as_str) == Some("ServiceAccount"))
                .filter_map(|s| s.get("namespace").and_then(Value::as_str))
                .map(effective)
                .collect()
        } else {
            Vec::new()
        };
        Scope {
            known,
            namespace: effective(resource.namespace()),
            namespaced: resource.namespaced(),
            subject_namespaces,
            prefixes: resource.prefixes.clone(),
            suffixes: resource.suffixes.clone(),
        }
    }

    /// The one object of `kind` once named `old` that this reference means (the map holding
    /// it, when the path ends at one, may narrow it with a namespace or a role's kind).
    fn find(
        &self,
        kind: &str,
        old: &str,
        holder: Option<&serde_json::Map<String, Value>>,
    ) -> Result<Option<&'a Referee>, String> {
        let text = |key: &str| holder.and_then(|h| h.get(key)).and_then(Value::as_str);
        let mut candidates: Vec<&Referee> = self
            .known
            .iter()
            .filter(|r| r.kind == kind && r.previous.iter().any(|n| n == old))
            .filter(|r| {
                !self.namespaced
                    || !r.namespaced
                    || r.namespace == self.namespace
                    || r.kind == "ServiceAccount"
                    || self.subject_namespaces.contains(&r.namespace)
            })
            .collect();
        if let Some(group) = text("apiGroup") {
            candidates.retain(|r| r.group == group);
        }
        if let Some(ns) = text("namespace") {
            let ns = effective(ns);
            let original: Vec<&Referee> = candidates
                .iter()
                .copied()
                .filter(|r| r.original_namespace == ns)
                .collect();
            candidates = if original.is_empty() {
                candidates
                    .into_iter()
                    .filter(|r| r.namespace == ns)
                    .collect()
            } else {
                original
            };
        }
        match candidates.as_slice() {
            [] => Ok(None),
            [one] => Ok(Some(one)),
            [first, rest @ ..] => {
                let here: Vec<&&Referee> = candidates
                    .iter()
                    .filter(|r| !r.namespaced || r.namespace == self.namespace)
                    .collect();
                if let [one] = here.as_slice() {
                    return Ok(Some(one));
                }
                // Objects that had one name before different prefixes: the one renamed as this
                // object was.
                let tail = |a: &[String], b: &[String]| a.ends_with(b) || b.ends_with(a);
                let loose: Vec<&&Referee> = candidates
                    .iter()
                    .filter(|r| {
                        tail(&r.prefixes, &self.prefixes) && tail(&r.suffixes, &self.suffixes)
                    })
                    .collect();
                if let [one] = loose.as_slice() {
                    return Ok(Some(one));
                }
                let both = |a: &[String], b: &[String]| a.is_empty() == b.is_empty() && tail(a, b);
                let exact: Vec<&&Referee> = loose
                    .iter()
                    .copied()
                    .filter(|r| {
                        both(&r.prefixes, &self.prefixes) && both(&r.suffixes, &self.suffixes)
                    })
                    .collect();
                if let [one] = exact.as_slice() {
                    return Ok(Some(one));
                }
                if loose.is_empty() {
                    return Ok(None);
                }
                if rest
                    .iter()
                    .all(|r| r.name == first.name && r.namespace == first.namespace)
                {
                    return Ok(Some(first));
                }
                Err(format!(
                    "{old} could be any of {}: give them distinct names",
                    candidates
                        .iter()
                        .map(|r| if r.namespaced {
                            format!("{kind} {}/{}", r.namespace, r.name)
                        } else {
                            format!("{kind} {}", r.name)
                        })
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
            }
        }
    }

    /// Rewrites the reference(s) in `value`: a name, a list of names, or a map with `name`.
    fn rewrite(&self, value: &mut Value, kind: &str, path: &str) -> Result<(), String> {
        match value {
            Value::String(old) => {
                let holder = None;
                if let Some(found) = self.find(kind, old, holder)? {
                    *old = found.name.clone();
                }
            }
            Value::Array(items) => {
                for item in items {
                    self.rewrite(item, kind, path)?;
                }
            }
            Value::Object(map) => {
                // A map naming its target's kind (roleRef, scaleTargetRef, subjects) must name
                // this one.
                if map
                    .get("kind")
                    .and_then(Value::as_str)
                    .is_some_and(|k| k != kind)
                {
                    return Ok(());
                }
                let Some(old) = map.get("name").and_then(Value::as_str).map(str::to_string) else {
                    return Ok(());
                };
                if map
                    .get("namespace")
                    .is_some_and(|ns| ns.as_str().is_none_or(str::is_empty))
                {
                    return Err(format!("{path}: the namespace of {old} is blank"));
                }
                let with_namespace =
                    !(path.ends_with("roleRef") || path.ends_with("scaleTargetRef"));
                if let Some(found) = self.find(kind, &old, Some(map))? {
                    map.insert("name".into(), Value::String(found.name.clone()));
                    if with_namespace && !found.raw_namespace.is_empty() {
                        map.insert(
                            "namespace".into(),
                            Value::String(found.raw_namespace.clone()),
                        );
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }
}
