//! Rules for pod specs, wherever they appear (Pods and every workload's template).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{
    Container, EnvVar, LifecycleHandler, PodSpec, Probe, ResourceRequirements, Toleration, Volume,
};

use crate::names;
use crate::path::FieldPath;

use super::{Report, set_fields};

/// What differs between a bare Pod and the template of each workload kind.
pub(crate) struct PodRules {
    /// The restart policies the owner accepts (a Deployment's pods must restart; a Job's must not).
    pub restart_policies: &'static [&'static str],
    /// Whether an unset restartPolicy (meaning Always) is acceptable.
    pub restart_policy_optional: bool,
    /// Extra volume names a container may mount (a StatefulSet's volumeClaimTemplates).
    pub claim_templates: BTreeSet<String>,
}

impl PodRules {
    pub(crate) fn pod() -> Self {
        Self {
            restart_policies: &["Always", "OnFailure", "Never"],
            restart_policy_optional: true,
            claim_templates: BTreeSet::new(),
        }
    }

    pub(crate) fn long_running() -> Self {
        Self {
            restart_policies: &["Always"],
            restart_policy_optional: true,
            claim_templates: BTreeSet::new(),
        }
    }

    pub(crate) fn run_to_completion() -> Self {
        Self {
            restart_policies: &["OnFailure", "Never"],
            restart_policy_optional: false,
            claim_templates: BTreeSet::new(),
        }
    }
}

/// Volume types the kubelet can provide; others are refused up front rather than leaving a
/// pod stuck at start.
const SUPPORTED_VOLUMES: &[&str] = &[
    "emptyDir",
    "hostPath",
    "configMap",
    "secret",
    "persistentVolumeClaim",
    "projected",
    "downwardAPI",
];

pub(crate) fn pod_spec(report: &mut Report, path: &FieldPath, spec: &PodSpec, rules: &PodRules) {
    let volume_names = volumes(report, &path.field("volumes"), spec.volumes.as_deref());
    let mut mountable = volume_names;
    mountable.extend(rules.claim_templates.iter().cloned());

    if spec.containers.is_empty() {
        report.push(
            path.field("containers"),
            "at least one container is required",
        );
    }
    let mut seen_names = BTreeSet::new();
    let groups = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or(&[]),
            true,
        ),
        ("containers", spec.containers.as_slice(), false),
    ];
    for (field, containers, init) in groups {
        for (i, c) in containers.iter().enumerate() {
            let at = path.field(field).index(i);
            if !c.name.is_empty() && !seen_names.insert(c.name.clone()) {
                report.push(
                    at.field("name"),
                    format!("duplicate container name {:?}", c.name),
                );
            }
            container(report, &at, c, &mountable, init);
        }
    }

    let restart_path = path.field("restartPolicy");
    match spec.restart_policy.as_deref() {
        None if !rules.restart_policy_optional => report.push(
            restart_path,
            format!(
                "required field is missing: use {}",
                super::list_words(rules.restart_policies)
            ),
        ),
        value => report.one_of(&restart_path, value, rules.restart_policies),
    }
    report.one_of(
        &path.field("dnsPolicy"),
        spec.dns_policy.as_deref(),
        &["ClusterFirst", "ClusterFirstWithHostNet", "Default", "None"],
    );
    report.at_least(
        &path.field("terminationGracePeriodSeconds"),
        spec.termination_grace_period_seconds,
        0,
    );
    report.at_least(
        &path.field("activeDeadlineSeconds"),
        spec.active_deadline_seconds,
        1,
    );
    report.labels(&path.field("nodeSelector"), spec.node_selector.as_ref());
    for (field, value) in [("hostname", &spec.hostname), ("subdomain", &spec.subdomain)] {
        if let Some(value) = value {
            report.check(&path.field(field), names::dns1123_label(value));
        }
    }
    if let Some(account) = &spec.service_account_name {
        report.check(
            &path.field("serviceAccountName"),
            names::dns1123_subdomain(account),
        );
    }
    if let Some(context) = &spec.security_context {
        let at = path.field("securityContext");
        report.at_least(&at.field("runAsUser"), context.run_as_user, 0);
        report.at_least(&at.field("runAsGroup"), context.run_as_group, 0);
        report.at_least(&at.field("fsGroup"), context.fs_group, 0);
    }
    for (i, toleration) in spec.tolerations.iter().flatten().enumerate() {
        self::toleration(report, &path.field("tolerations").index(i), toleration);
    }
    if let Some(affinity) = &spec.affinity {
        let at = path.field("affinity");
        for (field, terms) in [
            (
                "podAffinity",
                affinity.pod_affinity.as_ref().and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
            ),
            (
                "podAntiAffinity",
                affinity.pod_anti_affinity.as_ref().and_then(|a| {
                    a.required_during_scheduling_ignored_during_execution
                        .as_ref()
                }),
            ),
        ] {
            for (i, term) in terms.into_iter().flatten().enumerate() {
                let term_path = at
                    .field(field)
                    .field("requiredDuringSchedulingIgnoredDuringExecution")
                    .index(i);
                report.required(&term_path.field("topologyKey"), Some(&term.topology_key));
                if let Some(selector) = &term.label_selector
                    && let Err(problems) = crate::selector::Selector::parse(
                        selector,
                        &term_path.field("labelSelector"),
                    )
                {
                    report.extend(problems);
                }
                // Only `{}` (every namespace) can be honoured: the scheduler does not read
                // namespace labels.
                if term.namespace_selector.as_ref().is_some_and(|selector| {
                    selector
                        .match_labels
                        .as_ref()
                        .is_some_and(|l| !l.is_empty())
                        || selector
                            .match_expressions
                            .as_ref()
                            .is_some_and(|e| !e.is_empty())
                }) {
                    report.push(
                        term_path.field("namespaceSelector"),
                        "selecting namespaces by label is not supported: list them in `namespaces`, or use {} for every namespace",
                    );
                }
            }
        }
        if let Some(required) = affinity.node_affinity.as_ref().and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        }) {
            let terms_path = at
                .field("nodeAffinity")
                .field("requiredDuringSchedulingIgnoredDuringExecution")
                .field("nodeSelectorTerms");
            for (i, term) in required.node_selector_terms.iter().enumerate() {
                for (j, expression) in term.match_expressions.iter().flatten().enumerate() {
                    let expr_path = terms_path.index(i).field("matchExpressions").index(j);
                    report.one_of(
                        &expr_path.field("operator"),
                        Some(&expression.operator),
                        &["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"],
                    );
                    report.check(
                        &expr_path.field("key"),
                        names::qualified_name(&expression.key),
                    );
                }
                for (j, field) in term.match_fields.iter().flatten().enumerate() {
                    let field_path = terms_path.index(i).field("matchFields").index(j);
                    if field.key != "metadata.name" {
                        report.push(
                            field_path.field("key"),
                            format!("{:?} is not a node field: only metadata.name is", field.key),
                        );
                    }
                    report.one_of(
                        &field_path.field("operator"),
                        Some(&field.operator),
                        &["In", "NotIn"],
                    );
                }
            }
        }
    }
}

fn toleration(report: &mut Report, path: &FieldPath, toleration: &Toleration) {
    report.one_of(
        &path.field("operator"),
        toleration.operator.as_deref(),
        &["Exists", "Equal"],
    );
    report.one_of(
        &path.field("effect"),
        toleration.effect.as_deref(),
        &["NoSchedule", "PreferNoSchedule", "NoExecute"],
    );
    if toleration.operator.as_deref() == Some("Exists")
        && toleration.value.as_deref().is_some_and(|v| !v.is_empty())
    {
        report.push(path.field("value"), "must be empty when operator is Exists");
    }
    if toleration.key.as_deref().is_none_or(str::is_empty)
        && toleration.operator.as_deref() != Some("Exists")
    {
        report.push(
            path.field("operator"),
            "must be Exists when key is empty (a toleration of every taint)",
        );
    }
    if let Some(key) = toleration.key.as_deref().filter(|k| !k.is_empty()) {
        report.check(&path.field("key"), names::qualified_name(key));
    }
    if toleration.toleration_seconds.is_some() && toleration.effect.as_deref() != Some("NoExecute")
    {
        report.push(
            path.field("tolerationSeconds"),
            "may only be set when effect is NoExecute",
        );
    }
}

/// Checks the pod's volumes and returns their names.
fn volumes(report: &mut Report, path: &FieldPath, volumes: Option<&[Volume]>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    for (i, volume) in volumes.unwrap_or(&[]).iter().enumerate() {
        let at = path.index(i);
        report.name(&at.field("name"), &volume.name, names::dns1123_label);
        if !seen.insert(volume.name.clone()) {
            report.push(
                at.field("name"),
                format!("duplicate volume name {:?}", volume.name),
            );
        }
        let sources: Vec<String> = set_fields(volume, None)
            .into_iter()
            .filter(|key| key != "name")
            .collect();
        match sources.as_slice() {
            [] => report.push(
                at.clone(),
                format!(
                    "a volume source is required: set one of {}",
                    SUPPORTED_VOLUMES.join(", ")
                ),
            ),
            [source] if !SUPPORTED_VOLUMES.contains(&source.as_str()) => report.push(
                at.field(source),
                format!(
                    "volume type {source} is not supported by shipshape: use one of {}",
                    SUPPORTED_VOLUMES.join(", ")
                ),
            ),
            [_] => {}
            many => report.push(
                at.clone(),
                format!(
                    "only one volume source may be set, found {}",
                    many.join(", ")
                ),
            ),
        }
        if let Some(host_path) = &volume.host_path {
            if !host_path.path.starts_with('/') {
                report.push(
                    at.field("hostPath").field("path"),
                    "must be an absolute path",
                );
            }
            report.one_of(
                &at.field("hostPath").field("type"),
                host_path.type_.as_deref(),
                &[
                    "",
                    "DirectoryOrCreate",
                    "Directory",
                    "FileOrCreate",
                    "File",
                    "Socket",
                    "CharDevice",
                    "BlockDevice",
                ],
            );
        }
        if let Some(empty_dir) = &volume.empty_dir {
            let at = at.field("emptyDir");
            report.one_of(
                &at.field("medium"),
                empty_dir.medium.as_deref(),
                &["", "Memory"],
            );
            if let Some(limit) = &empty_dir.size_limit
                && let Err(why) = limit.0.parse::<crate::quantity::Quantity>()
            {
                report.push(at.field("sizeLimit"), why.to_string());
            }
        }
        if let Some(config_map) = &volume.config_map {
            let at = at.field("configMap");
            report.required(&at.field("name"), Some(&config_map.name));
            key_paths(
                report,
                &at,
                config_map.items.as_deref(),
                config_map.default_mode,
            );
        }
        if let Some(secret) = &volume.secret {
            let at = at.field("secret");
            report.required(&at.field("secretName"), secret.secret_name.as_deref());
            key_paths(report, &at, secret.items.as_deref(), secret.default_mode);
        }
        if let Some(claim) = &volume.persistent_volume_claim {
            report.required(
                &at.field("persistentVolumeClaim").field("claimName"),
                Some(&claim.claim_name),
            );
        }
    }
    seen
}

fn key_paths(
    report: &mut Report,
    path: &FieldPath,
    items: Option<&[k8s_openapi::api::core::v1::KeyToPath]>,
    default_mode: Option<i32>,
) {
    file_mode(report, &path.field("defaultMode"), default_mode);
    for (i, item) in items.unwrap_or(&[]).iter().enumerate() {
        let at = path.field("items").index(i);
        report.check(&at.field("key"), names::config_map_key(&item.key));
        relative_path(report, &at.field("path"), &item.path);
        file_mode(report, &at.field("mode"), item.mode);
    }
}

fn file_mode(report: &mut Report, path: &FieldPath, mode: Option<i32>) {
    if let Some(mode) = mode
        && !(0..=0o777).contains(&mode)
    {
        report.push(
            path.clone(),
            format!("{mode} is not a file mode: use 0 to 0777 (octal) / 511 (decimal)"),
        );
    }
}

fn relative_path(report: &mut Report, path: &FieldPath, value: &str) {
    if value.is_empty() {
        report.push(path.clone(), "required field is missing");
    } else if value.starts_with('/') {
        report.push(path.clone(), "must be a relative path");
    } else if value.split('/').any(|part| part == "..") {
        report.push(path.clone(), "must not contain '..'");
    }
}

fn container(
    report: &mut Report,
    path: &FieldPath,
    c: &Container,
    volumes: &BTreeSet<String>,
    init: bool,
) {
    report.name(&path.field("name"), &c.name, names::dns1123_label);
    match c.image.as_deref() {
        Some(image) if image.trim() != image => report.push(
            path.field("image"),
            "must not have leading or trailing whitespace",
        ),
        image => {
            report.required(&path.field("image"), image);
        }
    }
    report.one_of(
        &path.field("imagePullPolicy"),
        c.image_pull_policy.as_deref(),
        &["Always", "IfNotPresent", "Never"],
    );
    if let Some(dir) = &c.working_dir
        && !dir.is_empty()
        && !dir.starts_with('/')
    {
        report.push(path.field("workingDir"), "must be an absolute path");
    }

    let mut port_names = BTreeSet::new();
    for (i, port) in c.ports.iter().flatten().enumerate() {
        let at = path.field("ports").index(i);
        report.port(&at.field("containerPort"), port.container_port);
        if let Some(host_port) = port.host_port
            && host_port != 0
        {
            report.port(&at.field("hostPort"), host_port);
        }
        report.one_of(
            &at.field("protocol"),
            port.protocol.as_deref(),
            &["TCP", "UDP", "SCTP"],
        );
        if let Some(name) = &port.name {
            report.check(&at.field("name"), names::iana_svc_name(name));
            if !port_names.insert(name.clone()) {
                report.push(at.field("name"), format!("duplicate port name {name:?}"));
            }
        }
    }

    for (i, env) in c.env.iter().flatten().enumerate() {
        env_var(report, &path.field("env").index(i), env);
    }
    for (i, source) in c.env_from.iter().flatten().enumerate() {
        let at = path.field("envFrom").index(i);
        let set = set_fields(source, Some(&["configMapRef", "secretRef"]));
        report.exactly_one(&at, &set, "source", "configMapRef or secretRef");
        if let Some(prefix) = &source.prefix
            && !prefix.is_empty()
        {
            report.check(&at.field("prefix"), names::env_var_name(prefix));
        }
    }

    if let Some(resources) = &c.resources {
        self::resources(report, &path.field("resources"), resources);
    }

    let mut mount_paths = BTreeSet::new();
    for (i, mount) in c.volume_mounts.iter().flatten().enumerate() {
        let at = path.field("volumeMounts").index(i);
        if !volumes.contains(&mount.name) {
            report.push(
                at.field("name"),
                format!("no volume named {:?} in the pod's volumes", mount.name),
            );
        }
        if mount.mount_path.is_empty() {
            report.push(at.field("mountPath"), "required field is missing");
        } else if !mount.mount_path.starts_with('/') {
            report.push(at.field("mountPath"), "must be an absolute path");
        } else if !mount_paths.insert(mount.mount_path.clone()) {
            report.push(
                at.field("mountPath"),
                format!("{:?} is mounted twice in this container", mount.mount_path),
            );
        }
        if let Some(sub_path) = mount.sub_path.as_deref().filter(|s| !s.is_empty()) {
            if sub_path.starts_with('/') {
                report.push(at.field("subPath"), "must be a relative path");
            } else if sub_path.split('/').any(|part| part == "..") {
                report.push(at.field("subPath"), "must not contain '..'");
            }
        }
    }

    let probes = [
        ("livenessProbe", c.liveness_probe.as_ref(), true),
        ("readinessProbe", c.readiness_probe.as_ref(), false),
        ("startupProbe", c.startup_probe.as_ref(), true),
    ];
    for (field, probe, success_must_be_one) in probes {
        let Some(probe) = probe else { continue };
        let at = path.field(field);
        // Init containers run to completion; only restartable (sidecar) ones may be probed.
        if init && c.restart_policy.as_deref() != Some("Always") {
            report.push(
                at,
                "may not be set for init containers (unless restartPolicy is Always)",
            );
            continue;
        }
        self::probe(report, &at, probe, success_must_be_one);
    }
    if let Some(lifecycle) = &c.lifecycle {
        for (field, handler) in [
            ("postStart", lifecycle.post_start.as_ref()),
            ("preStop", lifecycle.pre_stop.as_ref()),
        ] {
            if let Some(handler) = handler {
                lifecycle_handler(report, &path.field("lifecycle").field(field), handler);
            }
        }
    }
    if let Some(context) = &c.security_context {
        let at = path.field("securityContext");
        report.at_least(&at.field("runAsUser"), context.run_as_user, 0);
        report.at_least(&at.field("runAsGroup"), context.run_as_group, 0);
        if context.allow_privilege_escalation == Some(false) && context.privileged == Some(true) {
            report.push(
                at.field("allowPrivilegeEscalation"),
                "cannot be false when privileged is true",
            );
        }
    }
    if init {
        report.one_of(
            &path.field("restartPolicy"),
            c.restart_policy.as_deref(),
            &["Always"],
        );
    } else if c.restart_policy.is_some() {
        report.push(
            path.field("restartPolicy"),
            "may only be set on init containers (sidecars); use the pod's restartPolicy",
        );
    }
}

fn env_var(report: &mut Report, path: &FieldPath, env: &EnvVar) {
    report.name(&path.field("name"), &env.name, names::env_var_name);
    let Some(from) = &env.value_from else {
        return;
    };
    if env.value.as_deref().is_some_and(|v| !v.is_empty()) {
        report.push(
            path.field("valueFrom"),
            "may not be set when value is set: use one or the other",
        );
    }
    let at = path.field("valueFrom");
    let set = set_fields(
        from,
        Some(&[
            "configMapKeyRef",
            "secretKeyRef",
            "fieldRef",
            "resourceFieldRef",
            "fileKeyRef",
        ]),
    );
    report.exactly_one(
        &at,
        &set,
        "source",
        "configMapKeyRef, secretKeyRef, fieldRef or resourceFieldRef",
    );
    if let Some(selector) = &from.config_map_key_ref {
        let at = at.field("configMapKeyRef");
        report.required(&at.field("name"), Some(&selector.name));
        report.check(&at.field("key"), names::config_map_key(&selector.key));
    }
    if let Some(selector) = &from.secret_key_ref {
        let at = at.field("secretKeyRef");
        report.required(&at.field("name"), Some(&selector.name));
        report.check(&at.field("key"), names::config_map_key(&selector.key));
    }
    if let Some(field_ref) = &from.field_ref {
        report.required(
            &at.field("fieldRef").field("fieldPath"),
            Some(&field_ref.field_path),
        );
    }
}

/// Resource names Kubernetes knows without a domain prefix.
const STANDARD_RESOURCES: &[&str] = &["cpu", "memory", "ephemeral-storage", "storage", "pods"];

fn resources(report: &mut Report, path: &FieldPath, resources: &ResourceRequirements) {
    let mut parsed: [BTreeMap<String, crate::quantity::Quantity>; 2] = Default::default();
    for (slot, (field, map)) in [
        ("requests", resources.requests.as_ref()),
        ("limits", resources.limits.as_ref()),
    ]
    .into_iter()
    .enumerate()
    {
        let at = path.field(field);
        for name in map.into_iter().flat_map(|m| m.keys()) {
            let known = STANDARD_RESOURCES.contains(&name.as_str())
                || name.starts_with("hugepages-")
                || (name.contains('/') && names::qualified_name(name).is_ok());
            if !known {
                report.push(
                    at.key(name),
                    format!(
                        "{name:?} is not a resource name: use cpu, memory, ephemeral-storage, hugepages-<size> or a domain-prefixed name (example.com/gpu)"
                    ),
                );
            }
        }
        parsed[slot] = report.quantities(&at, map);
    }
    let [requests, limits] = &parsed;
    for (name, request) in requests {
        if let Some(limit) = limits.get(name)
            && request > limit
        {
            report.push(
                path.field("requests").key(name),
                format!("must be less than or equal to the {name} limit ({request} > {limit})"),
            );
        }
    }
}

fn probe(report: &mut Report, path: &FieldPath, probe: &Probe, success_must_be_one: bool) {
    let set = set_fields(probe, Some(&["exec", "httpGet", "tcpSocket", "grpc"]));
    report.exactly_one(path, &set, "handler", "exec, httpGet, tcpSocket or grpc");
    if let Some(http) = &probe.http_get {
        report.port_or_name(&path.field("httpGet").field("port"), &http.port);
        report.one_of(
            &path.field("httpGet").field("scheme"),
            http.scheme.as_deref(),
            &["HTTP", "HTTPS"],
        );
    }
    if let Some(tcp) = &probe.tcp_socket {
        report.port_or_name(&path.field("tcpSocket").field("port"), &tcp.port);
    }
    if let Some(exec) = &probe.exec
        && exec.command.as_ref().is_none_or(Vec::is_empty)
    {
        report.push(
            path.field("exec").field("command"),
            "required field is missing",
        );
    }
    if let Some(grpc) = &probe.grpc {
        report.port(&path.field("grpc").field("port"), grpc.port);
    }
    report.at_least(
        &path.field("initialDelaySeconds"),
        probe.initial_delay_seconds.map(i64::from),
        0,
    );
    for (field, value) in [
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("failureThreshold", probe.failure_threshold),
        ("successThreshold", probe.success_threshold),
    ] {
        report.at_least(&path.field(field), value.map(i64::from), 1);
    }
    if success_must_be_one && probe.success_threshold.is_some_and(|s| s != 1) {
        report.push(
            path.field("successThreshold"),
            "must be 1 for liveness and startup probes",
        );
    }
}

fn lifecycle_handler(report: &mut Report, path: &FieldPath, handler: &LifecycleHandler) {
    let set = set_fields(handler, Some(&["exec", "httpGet", "tcpSocket", "sleep"]));
    report.exactly_one(path, &set, "handler", "exec, httpGet, tcpSocket or sleep");
    if let Some(http) = &handler.http_get {
        report.port_or_name(&path.field("httpGet").field("port"), &http.port);
    }
    if let Some(tcp) = &handler.tcp_socket {
        report.port_or_name(&path.field("tcpSocket").field("port"), &tcp.port);
    }
    if let Some(sleep) = &handler.sleep {
        report.at_least(
            &path.field("sleep").field("seconds"),
            Some(sleep.seconds),
            0,
        );
    }
}
