//! Rules for configuration, storage and policy kinds.

use std::collections::BTreeSet;

use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, PersistentVolume, PersistentVolumeClaimSpec, Secret,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::storage::v1::StorageClass;

use crate::names;
use crate::path::FieldPath;
use crate::selector::Selector;

use super::{Report, set_fields};

/// Kubernetes' (etcd's) limit on the data one ConfigMap or Secret holds.
const MAX_DATA_BYTES: usize = 1024 * 1024;

const ACCESS_MODES: &[&str] = &[
    "ReadWriteOnce",
    "ReadOnlyMany",
    "ReadWriteMany",
    "ReadWriteOncePod",
];

fn data_keys(report: &mut Report, sections: &[(&str, Vec<(&String, usize)>)], what: &str) {
    let mut seen: BTreeSet<&String> = BTreeSet::new();
    let mut total = 0;
    for (field, entries) in sections {
        let at = FieldPath::parse(field);
        for (key, size) in entries {
            report.check(&at.key(key), names::config_map_key(key));
            if !seen.insert(key) {
                report.push(at.key(key), format!("key {key:?} is defined twice"));
            }
            total += key.len() + size;
        }
    }
    if total > MAX_DATA_BYTES {
        report.push(
            FieldPath::parse(sections.first().map_or("data", |(field, _)| field)),
            format!("{what} holds {total} bytes: the limit is {MAX_DATA_BYTES} (1 MiB)"),
        );
    }
}

pub(super) fn config_map(report: &mut Report, config_map: &ConfigMap) {
    let data = config_map
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.len()))
        .collect();
    let binary = config_map
        .binary_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.0.len()))
        .collect();
    data_keys(
        report,
        &[("data", data), ("binaryData", binary)],
        "ConfigMap",
    );
}

pub(super) fn secret(report: &mut Report, secret: &Secret) {
    let data: Vec<_> = secret
        .data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.0.len()))
        .collect();
    let string_data: Vec<_> = secret
        .string_data
        .iter()
        .flatten()
        .map(|(k, v)| (k, v.len()))
        .collect();
    let mut keys: BTreeSet<&str> = data.iter().map(|(k, _)| k.as_str()).collect();
    keys.extend(string_data.iter().map(|(k, _)| k.as_str()));
    // stringData overrides data on the same key by design, so each is checked on its own.
    data_keys(report, &[("data", data)], "Secret");
    data_keys(report, &[("stringData", string_data)], "Secret");
    let required: &[&str] = match secret.type_.as_deref() {
        Some("kubernetes.io/tls") => &["tls.crt", "tls.key"],
        Some("kubernetes.io/dockerconfigjson") => &[".dockerconfigjson"],
        Some("kubernetes.io/basic-auth") => &[],
        Some("kubernetes.io/ssh-auth") => &["ssh-privatekey"],
        _ => &[],
    };
    for key in required {
        if !keys.contains(key) {
            report.push(
                FieldPath::parse("data").key(key),
                format!(
                    "required for type {}",
                    secret.type_.as_deref().unwrap_or_default()
                ),
            );
        }
    }
}

/// A claim or volume names how it may be mounted; a claim cloned from a data source may omit it.
fn access_modes(report: &mut Report, path: &FieldPath, modes: Option<&[String]>, required: bool) {
    let modes = modes.unwrap_or(&[]);
    if modes.is_empty() && required {
        report.push(
            path.field("accessModes"),
            "at least one access mode is required (e.g. ReadWriteOnce)",
        );
    }
    for (i, mode) in modes.iter().enumerate() {
        report.one_of(
            &path.field("accessModes").index(i),
            Some(mode),
            ACCESS_MODES,
        );
    }
}

pub(super) fn claim_spec(report: &mut Report, path: &FieldPath, spec: &PersistentVolumeClaimSpec) {
    access_modes(
        report,
        path,
        spec.access_modes.as_deref(),
        spec.data_source.is_none(),
    );
    report.one_of(
        &path.field("volumeMode"),
        spec.volume_mode.as_deref(),
        &["Filesystem", "Block"],
    );
    let requests_path = path.field("resources").field("requests");
    let requests = spec.resources.as_ref().and_then(|r| r.requests.as_ref());
    let parsed = report.quantities(&requests_path, requests);
    match parsed.get("storage") {
        Some(storage) if storage.units() <= 0 => {
            report.push(requests_path.key("storage"), "must be greater than zero")
        }
        Some(_) => {}
        None if requests.is_some_and(|r| r.contains_key("storage")) => {}
        None => report.push(
            requests_path.key("storage"),
            "required field is missing: how much storage the claim needs (e.g. 1Gi)",
        ),
    }
    if let Some(limits) = spec.resources.as_ref().and_then(|r| r.limits.as_ref()) {
        report.quantities(&path.field("resources").field("limits"), Some(limits));
    }
    if let Some(selector) = &spec.selector
        && let Err(problems) = Selector::parse(selector, &path.field("selector"))
    {
        report.extend(problems);
    }
}

/// PersistentVolume sources the built-in provisioner and kubelet understand.
const SUPPORTED_PV_SOURCES: &[&str] = &["hostPath", "local"];

pub(super) fn persistent_volume(report: &mut Report, volume: &PersistentVolume) {
    let path = FieldPath::parse("spec");
    let Some(spec) = &volume.spec else {
        report.push(path, "required field is missing");
        return;
    };
    let capacity = report.quantities(&path.field("capacity"), spec.capacity.as_ref());
    if !capacity.contains_key("storage")
        && !spec
            .capacity
            .as_ref()
            .is_some_and(|c| c.contains_key("storage"))
    {
        report.push(
            path.field("capacity").key("storage"),
            "required field is missing",
        );
    }
    access_modes(report, &path, spec.access_modes.as_deref(), true);
    report.one_of(
        &path.field("persistentVolumeReclaimPolicy"),
        spec.persistent_volume_reclaim_policy.as_deref(),
        &["Retain", "Delete", "Recycle"],
    );
    let non_sources = [
        "accessModes",
        "capacity",
        "claimRef",
        "mountOptions",
        "nodeAffinity",
        "persistentVolumeReclaimPolicy",
        "storageClassName",
        "volumeAttributesClassName",
        "volumeMode",
    ];
    let sources: Vec<String> = set_fields(spec, None)
        .into_iter()
        .filter(|key| !non_sources.contains(&key.as_str()))
        .collect();
    match sources.as_slice() {
        [source] if !SUPPORTED_PV_SOURCES.contains(&source.as_str()) => report.push(
            path.field(source),
            format!("volume type {source} is not supported by shipshape: use hostPath or local"),
        ),
        _ => report.exactly_one(&path, &sources, "volume source", "hostPath or local"),
    }
}

pub(super) fn storage_class(report: &mut Report, class: &StorageClass) {
    report.required(&FieldPath::parse("provisioner"), Some(&class.provisioner));
    report.one_of(
        &FieldPath::parse("reclaimPolicy"),
        class.reclaim_policy.as_deref(),
        &["Retain", "Delete"],
    );
    report.one_of(
        &FieldPath::parse("volumeBindingMode"),
        class.volume_binding_mode.as_deref(),
        &["Immediate", "WaitForFirstConsumer"],
    );
}

pub(super) fn autoscaler(report: &mut Report, hpa: &HorizontalPodAutoscaler) {
    let path = FieldPath::parse("spec");
    let spec = &hpa.spec;
    let target = path.field("scaleTargetRef");
    report.required(&target.field("kind"), Some(&spec.scale_target_ref.kind));
    report.required(&target.field("name"), Some(&spec.scale_target_ref.name));
    report.at_least(
        &path.field("minReplicas"),
        spec.min_replicas.map(i64::from),
        1,
    );
    report.at_least(
        &path.field("maxReplicas"),
        Some(i64::from(spec.max_replicas)),
        1,
    );
    if let Some(min) = spec.min_replicas
        && spec.max_replicas < min
    {
        report.push(
            path.field("maxReplicas"),
            format!(
                "must be greater than or equal to minReplicas ({} < {min})",
                spec.max_replicas
            ),
        );
    }
}

pub(super) fn disruption_budget(report: &mut Report, pdb: &PodDisruptionBudget) {
    let path = FieldPath::parse("spec");
    let Some(spec) = &pdb.spec else {
        report.push(path, "required field is missing");
        return;
    };
    if spec.min_available.is_some() && spec.max_unavailable.is_some() {
        report.push(
            path.field("maxUnavailable"),
            "may not be set together with minAvailable: use one or the other",
        );
    }
    if let Some(min) = &spec.min_available {
        report.int_or_percent(&path.field("minAvailable"), min, Some(100));
    }
    if let Some(max) = &spec.max_unavailable {
        report.int_or_percent(&path.field("maxUnavailable"), max, Some(100));
    }
    if let Some(selector) = &spec.selector
        && let Err(problems) = Selector::parse(selector, &path.field("selector"))
    {
        report.extend(problems);
    }
    report.one_of(
        &path.field("unhealthyPodEvictionPolicy"),
        spec.unhealthy_pod_eviction_policy.as_deref(),
        &["IfHealthyBudget", "AlwaysAllow"],
    );
}

pub(super) fn network_policy(report: &mut Report, policy: &NetworkPolicy) {
    let path = FieldPath::parse("spec");
    let Some(spec) = &policy.spec else {
        return;
    };
    if let Some(selector) = &spec.pod_selector
        && let Err(problems) = Selector::parse(selector, &path.field("podSelector"))
    {
        report.extend(problems);
    }
    for (i, kind) in spec.policy_types.iter().flatten().enumerate() {
        report.one_of(
            &path.field("policyTypes").index(i),
            Some(kind),
            &["Ingress", "Egress"],
        );
    }
}

pub(super) fn limit_range(report: &mut Report, range: &LimitRange) {
    let Some(spec) = &range.spec else {
        return;
    };
    for (i, item) in spec.limits.iter().enumerate() {
        let at = FieldPath::parse("spec.limits").index(i);
        report.one_of(
            &at.field("type"),
            Some(&item.type_),
            &["Container", "Pod", "PersistentVolumeClaim"],
        );
        for (field, map) in [
            ("default", item.default.as_ref()),
            ("defaultRequest", item.default_request.as_ref()),
            ("max", item.max.as_ref()),
            ("min", item.min.as_ref()),
            (
                "maxLimitRequestRatio",
                item.max_limit_request_ratio.as_ref(),
            ),
        ] {
            report.quantities(&at.field(field), map);
        }
    }
}
